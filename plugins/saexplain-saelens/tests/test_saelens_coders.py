import numpy as np
import pytest
import saexplain_saelens
import torch
from saexplain_saelens import SAELensCoder, as_coder
from saexplain_saelens.testing import make_sae

from saexplain.errors import ConfigError
from saexplain.protocols import SparseCoder
from saexplain.testing import check_plugin

ARCHS = ["standard", "topk", "jumprelu", "gated"]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_adapts_and_matches_direct_encode(arch, tmp_path):
    sae = make_sae(arch, 16, 64, "blocks.1.hook_resid_pre")
    coder = SAELensCoder(sae)
    assert isinstance(coder, SparseCoder)
    assert coder.hook == "blocks.1.hook_resid_pre" and coder.d_in == 16 and coder.d_sae == 64
    x = torch.randn(2, 5, 16)
    z = coder.encode(x)
    assert z.shape == (2, 5, 64) and (z > 0).any() and (z == 0).any()
    assert torch.equal(z, sae.encode(x))  # latents, not reconstructions
    assert torch.allclose(coder.decode(z), sae.decode(z))
    assert coder.W_dec.shape == (64, 16)
    # round trip through the real on-disk format
    sae.save_model(tmp_path / arch)
    loaded = SAELensCoder.from_disk(tmp_path / arch)
    assert loaded.architecture == arch and loaded.hook == coder.hook
    assert torch.allclose(loaded.encode(x), z)


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder", "jumprelu_transcoder"])
def test_transcoders_read_one_hook_and_write_another(arch, tmp_path):
    sae = make_sae(arch, 16, 64, "blocks.0.hook_resid_mid")
    coder = SAELensCoder(sae)
    assert coder.is_transcoder
    assert (coder.hook, coder.hook_out) == ("blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out")
    sae.save_model(tmp_path / arch)
    assert SAELensCoder.from_disk(tmp_path / arch).hook_out == "blocks.0.hook_mlp_out"
    explicit = SAELensCoder(
        make_sae(arch, 16, 64, "blocks.0.hook_attn_out"), hook_out="blocks.0.hook_resid_post"
    )
    assert explicit.hook_out == "blocks.0.hook_resid_post"
    with pytest.raises(ConfigError, match="hook_out"):
        SAELensCoder(make_sae(arch, 16, 64, "blocks.0.hook_attn_out"))


def test_from_pretrained_keeps_the_hub_path(monkeypatch):
    import sae_lens

    calls = []

    def fake(release, sae_id, device="cpu", **kw):
        calls.append((release, sae_id, device))
        return make_sae("standard", 8, 16, "blocks.3.hook_resid_pre")

    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", staticmethod(fake))
    coder = SAELensCoder.from_pretrained("gpt2-small-res-jb", "blocks.3.hook_resid_pre")
    assert calls == [("gpt2-small-res-jb", "blocks.3.hook_resid_pre", "cpu")]
    assert coder.id == "gpt2-small-res-jb/blocks.3.hook_resid_pre"


def test_missing_hook_name_is_a_clear_error():
    sae = make_sae("standard", 8, 16, "x")
    sae.cfg.metadata.hook_name = None
    with pytest.raises(ConfigError, match="hook_name"):
        SAELensCoder(sae)
    assert SAELensCoder(sae, hook="blocks.0.hook_resid_pre").hook == "blocks.0.hook_resid_pre"


def test_as_coder_wraps_saes_and_passes_coders_through():
    sae = make_sae("standard", 8, 16, "blocks.0.hook_resid_pre")
    assert isinstance(as_coder(sae), SAELensCoder)
    coder = SAELensCoder(sae)
    assert as_coder(coder) is coder


def test_plugin_is_light_and_detects_saelens_coders(tmp_path):
    import subprocess
    import sys

    code = "import sys, saexplain_saelens; print('torch' in sys.modules, 'sae_lens' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    check_plugin(saexplain_saelens, name="saelens-under-test")
    detect = saexplain_saelens.detect_coder
    assert detect(make_sae("standard", 8, 16, "blocks.0.hook_resid_pre")) == "saelens"
    assert detect("gpt2-small-res-jb/blocks.8.hook_resid_pre") == "saelens"
    assert detect(("gpt2-small-res-jb", "blocks.8.hook_resid_pre")) == "saelens"
    make_sae("standard", 8, 16, "blocks.0.hook_resid_pre").save_model(tmp_path / "sae")
    assert detect(str(tmp_path / "sae")) == "saelens"
    # not SAELens: other objects, folders without an SAE config, named sources, bare words
    assert detect(np.zeros(1)) is None and detect(torch.zeros(1)) is None
    assert detect(str(tmp_path)) is None
    assert detect("neurons:blocks.0.mlp.hook_post") is None
    assert detect("no-slash") is None


def test_detect_coder_decides_the_pipeline_source(tmp_path):
    from saexplain.plugins import PluginManager

    manager = PluginManager(builtins=(), entry_points=[])
    manager.register_plugin(saexplain_saelens, name="saelens-under-test")
    assert manager.detect_coder(make_sae("standard", 8, 16, "blocks.0.hook_resid_pre")) == "saelens"
    assert manager.detect_coder(object()) is None
