"""A SAELens SAE named by release and id that cannot be loaded: one line saying which and what to
do, at once (issue 21). The conftest sets HF_HUB_OFFLINE=1; no SAE named here is in the cache."""

import time

import pytest
from saexplain_saelens.sources import saelens_coder

from saexplain.errors import ConfigError

RELEASE, SAE_ID = "gpt2-small-res-jb", "blocks.8.hook_resid_pre"


def _one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and len(message) < 500, message
    return message


@pytest.mark.parametrize("spec", [(RELEASE, SAE_ID), f"{RELEASE}/{SAE_ID}"])
def test_a_hub_sae_missing_offline_fails_at_once_in_one_line(spec):
    start = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        saelens_coder(spec)
    message = _one_line(raised.value)
    assert f"{RELEASE}/{SAE_ID}" in message and "HF_HUB_OFFLINE" in message
    assert time.monotonic() - start < 10


def test_an_unknown_release_or_id_is_named():
    with pytest.raises(ConfigError) as raised:
        saelens_coder(("no-such-release", SAE_ID))
    assert "no-such-release" in _one_line(raised.value)
    with pytest.raises(ConfigError) as raised:
        saelens_coder((RELEASE, "blocks.99.hook_resid_pre"))
    message = _one_line(raised.value)
    assert "blocks.99.hook_resid_pre" in message and RELEASE in message
