import numpy as np
import pytest
import saexplain_saelens
import torch
from saexplain_saelens import Neurons, SAELensCoder, as_coder
from saexplain_saelens.hooks import parse_hook, valid_hook_names
from saexplain_saelens.testing import make_sae

from saexplain.errors import ConfigError, HookNameError
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
    n = Neurons(0, 32)
    assert as_coder(n) is n


def test_neurons_topk_and_identity_decoder():
    n = Neurons(2, 8, k=2)
    assert n.hook == "blocks.2.mlp.hook_post" and n.d_sae == 8
    x = torch.tensor([[[3.0, -1.0, 2.0, 0.5, 1.0, -4.0, 0.0, 0.1]]])
    z = n.encode(x)
    assert torch.equal(z, torch.tensor([[[3.0, 0, 2.0, 0, 0, 0, 0, 0]]]))
    assert torch.equal(n.decode(z), z) and torch.equal(n.W_dec, torch.eye(8))
    assert torch.equal(Neurons(2, 8).encode(x), x.clamp(min=0))
    with pytest.raises(ConfigError):
        Neurons(0, 8, k=9)


def test_hook_names():
    site = parse_hook("blocks.3.attn.hook_z", 4)
    assert (site.layer, site.site, site.stop_layer) == (3, "attn.hook_z", 4)
    assert parse_hook("blocks.2.hook_resid_pre", 4).stop_layer == 2
    assert len(valid_hook_names(2)) == 18  # 9 sites per block
    with pytest.raises(HookNameError, match="hook_resid_pre"):
        parse_hook("blocks.9.hook_resid_pre", 4)
    with pytest.raises(HookNameError, match="valid names"):
        parse_hook("transformer.h.0", 4)


def test_plugin_is_light_and_detects_hooked_sae_transformer():
    import subprocess
    import sys

    code = "import sys, saexplain_saelens; print('torch' in sys.modules, 'sae_lens' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    check_plugin(saexplain_saelens, name="saelens-under-test")
    from sae_lens import HookedSAETransformer

    fake = HookedSAETransformer.__new__(HookedSAETransformer)
    assert saexplain_saelens.detect_backend(fake) == "transformerlens"
    assert saexplain_saelens.detect_backend(np.zeros(1)) is None
