"""A live SAELens SAE is recorded under its real name, not a placeholder (issue 21)."""

import pytest

pytest.importorskip("saexplain_saelens")

from saexplain_saelens.testing import make_sae

from saexplain.api import _coder_name


def test_saes_at_two_hooks_get_two_real_names():
    a = make_sae("standard", 16, 64, "blocks.0.hook_resid_pre")
    b = make_sae("standard", 16, 64, "blocks.1.hook_resid_pre")
    assert _coder_name(a) == "tiny/blocks.0.hook_resid_pre"
    assert _coder_name(b) == "tiny/blocks.1.hook_resid_pre"
    b.cfg.metadata.neuronpedia_id = "tiny/1-res-test"
    assert _coder_name(b) == "tiny/1-res-test"
