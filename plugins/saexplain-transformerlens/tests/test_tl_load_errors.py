"""Loading a model by name that cannot be loaded: one line saying which and what to do, at once
(issue 21). The conftest sets HF_HUB_OFFLINE=1; no model named here is in the test cache."""

import time

import pytest
import saexplain_transformerlens

from saexplain.errors import ConfigError
from saexplain.models import RunConfig
from saexplain.pipeline.resolve import build_backend
from saexplain.plugins import PluginManager


def _one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and len(message) < 500, message
    return message


def _manager() -> PluginManager:
    pm = PluginManager(entry_points=[], builtins=(), environ={})
    pm.register_plugin(saexplain_transformerlens, name="transformerlens")
    return pm


def test_a_model_transformerlens_does_not_know_names_the_other_backends():
    config = RunConfig(model="local/smollm2", coder="x:y", dataset="d", backend="transformerlens")
    with pytest.raises(ConfigError) as raised:
        build_backend("local/smollm2", config, _manager())
    message = _one_line(raised.value)
    assert "local/smollm2" in message and "transformerlens-bridge" in message
    assert "gpt2-xl" not in message  # not TransformerLens's list of ~300 model names


def test_a_known_model_missing_from_the_cache_fails_at_once_offline():
    start = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        saexplain_transformerlens.make_backend("gpt2-xl")
    message = _one_line(raised.value)
    assert "gpt2-xl" in message and "HF_HUB_OFFLINE" in message
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("name", ["local/smollm2", "no-such-org/no-such-model"])
def test_the_bridge_names_the_model_it_cannot_load(name, tmp_path):
    with pytest.raises(ConfigError) as raised:
        saexplain_transformerlens.make_bridge_backend(name)
    message = _one_line(raised.value)
    assert name in message and "HF_HUB_OFFLINE" in message


def test_the_bridge_turns_a_broken_local_folder_into_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{}")  # a folder, but no model in it
    with pytest.raises(ConfigError) as raised:
        saexplain_transformerlens.make_bridge_backend(str(tmp_path))
    assert str(tmp_path) in _one_line(raised.value)
