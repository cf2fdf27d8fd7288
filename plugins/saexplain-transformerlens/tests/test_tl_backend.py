from importlib.metadata import entry_points

import numpy as np
import pytest
import saexplain_transformerlens
import torch
from saexplain_torch.testing import (
    check_scoping_and_errors,
    gpt2_tokenizer,
    make_coder,
    tiny_gpt2,
    tiny_llama,
)
from saexplain_transformerlens.backend import TransformerLensBackend
from saexplain_transformerlens.convert import hooked_transformer_from_hf

from saexplain.errors import BackendError
from saexplain.plugins import PluginManager
from saexplain.testing import check_backend, check_plugin


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def backend(request):
    hf = {"gpt2": tiny_gpt2, "llama": tiny_llama}[request.param]()
    return TransformerLensBackend(hooked_transformer_from_hf(hf, gpt2_tokenizer()))


def sae(backend, hook="blocks.1.hook_resid_pre", **kw):
    return make_coder(backend.d_model, 128, hook, **kw)


def test_entry_point_and_plugin():
    eps = {ep.name: ep for ep in entry_points(group="saexplain")}
    assert eps["transformerlens"].load() is saexplain_transformerlens
    info = {i.name: i for i in PluginManager(builtins=()).info()}["transformerlens"]
    assert info.state == "loaded", info.error
    check_plugin(saexplain_transformerlens, name="tl-under-test")


def test_detect_backend(backend):
    from transformer_lens import HookedTransformer

    detect = saexplain_transformerlens.detect_backend
    assert detect(backend.model) == "transformerlens"
    # SAELens's HookedSAETransformer, told by its MRO without importing sae_lens
    sae_cls = type(
        "HookedSAETransformer",
        (HookedTransformer,),
        {"__module__": "sae_lens.analysis.hooked_sae_transformer"},
    )
    assert detect(sae_cls.__new__(sae_cls)) == "transformerlens"
    assert detect(tiny_gpt2()) is None and detect(object()) is None
    assert saexplain_transformerlens.make_backend(backend.model).name == "transformerlens"
    with pytest.raises(BackendError, match="HookedTransformer"):
        TransformerLensBackend(tiny_gpt2())


def test_contract(backend):
    check_backend(backend, sae(backend))


def test_tokens_bos_and_padding(backend):
    t = backend.tokenize(["Hello world", "Hi"])
    assert t.ids[0, 0] == t.ids[1, 0] == backend.bos_token_id == 50256
    assert t.mask.sum(1).tolist() == [3, 2] and t.ids[1, 2] == backend.pad_token_id
    assert backend.tokenize(["Hi"], prepend_bos=False).ids[0, 0] != 50256
    assert backend.str_tokens(t.rows()[0][1:]) == ["Hello", " world"]
    # padding never changes real positions
    alone = np.asarray(backend.logits(backend.tokenize(["Hi"])))
    assert np.allclose(np.asarray(backend.logits(t))[1, :2], alone[0], atol=1e-5)


def test_stops_at_the_deepest_hook(backend):
    calls = []
    handles = [
        b.register_forward_hook(lambda *a, i=i: calls.append(i))
        for i, b in enumerate(backend.model.blocks)
    ]
    handles.append(backend.model.unembed.register_forward_hook(lambda *a: calls.append("unembed")))
    try:
        tokens = backend.tokenize(["early stopping"])
        backend.latent_acts(tokens, [sae(backend, "blocks.0.hook_resid_pre")])
        assert calls == []
        backend.latent_acts(tokens, [sae(backend, "blocks.1.hook_resid_pre")])
        assert calls == [0]
        calls.clear()
        backend.latent_acts(
            tokens,
            [
                sae(backend, "blocks.0.hook_mlp_out"),
                sae(backend, "blocks.1.hook_resid_post", seed=1),
            ],
        )
        assert calls == [0, 1]
    finally:
        for h in handles:
            h.remove()


def test_scoping_and_clear_errors(backend):
    check_scoping_and_errors(backend, backend.hook_count)
    assert backend.hook_count() == 0


def test_subset_and_unembed(backend):
    c = sae(backend)
    tokens = backend.tokenize(["a subset of latents"])
    full = backend.latent_acts(tokens, [c])[c.id]
    some = sorted(set(full.latent.tolist()))[:3]
    sub = backend.latent_acts(tokens, [c], latents={c.id: some})[c.id]
    keep = np.isin(full.latent, some)
    assert np.array_equal(sub.latent, full.latent[keep])
    assert np.allclose(sub.value, full.value[keep])
    v = torch.randn(backend.d_model)
    m = backend.model
    assert torch.allclose(backend.unembed(v), m.unembed(m.ln_final(v[None, None]))[0, 0])
