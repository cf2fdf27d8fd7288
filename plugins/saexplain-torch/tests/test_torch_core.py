import subprocess
import sys

import pytest
import saexplain_torch
import torch
from saexplain_torch import Neurons
from saexplain_torch.coders import neurons_coder
from saexplain_torch.hooks import parse_hook, valid_hook_names
from saexplain_torch.testing import TinySAE, make_coder

from saexplain.errors import ConfigError, HookNameError
from saexplain.protocols import SparseCoder
from saexplain.testing import check_plugin


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


def test_plugin_is_light_and_registers_the_neurons_source():
    code = "import sys, saexplain_torch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
    check_plugin(saexplain_torch, name="torch-under-test")


def test_neurons_source_reads_the_width_from_the_backend():
    class Widths:  # the two TorchBackend methods the source uses
        def site(self, hook):
            return parse_hook(hook, 4)

        def width(self, site):
            return 256 if site.site == "mlp.hook_post" else 64

    coder = neurons_coder("blocks.2.mlp.hook_post", backend=Widths(), k=8)
    assert (coder.hook, coder.d_sae, coder.k) == ("blocks.2.mlp.hook_post", 256, 8)
    with pytest.raises(ConfigError, match=r"mlp\.hook_post"):
        neurons_coder("blocks.2.hook_resid_pre", backend=Widths())
    with pytest.raises(ConfigError, match="torch backend"):
        neurons_coder("blocks.2.mlp.hook_post")


def test_tiny_sae_is_a_sparse_coder_and_a_transcoder_when_asked():
    sae = make_coder(16, 64, "blocks.1.hook_resid_pre", seed=3)
    assert isinstance(sae, SparseCoder) and sae.hook_out == sae.hook
    x = torch.randn(2, 5, 16)
    z = sae.encode(x)
    assert z.shape == (2, 5, 64) and (z > 0).any() and (z == 0).any()
    assert torch.allclose(sae.decode(z), z @ sae.W_dec + sae.b_dec)
    top = TinySAE(16, 64, "blocks.1.hook_resid_pre", k=4)
    assert int((top.encode(x) > 0).sum(-1).max()) <= 4
    transcoder = make_coder(16, 64, "blocks.0.hook_resid_mid", hook_out="blocks.0.hook_mlp_out")
    assert transcoder.hook_out == "blocks.0.hook_mlp_out"
    assert make_coder(16, 64, "h", seed=1).id != make_coder(16, 64, "h", seed=2).id
