from importlib.metadata import entry_points

import numpy as np
import pytest
import saexplain_nnsight
import torch
from saexplain_nnsight.backend import NNsightBackend
from saexplain_torch.testing import (
    check_scoping_and_errors,
    gpt2_tokenizer,
    make_coder,
    tiny_gpt2,
    tiny_llama,
)

from saexplain.errors import BackendError, ConfigError
from saexplain.plugins import PluginManager
from saexplain.testing import check_backend, check_plugin

FAMILIES = {
    "gpt2": (tiny_gpt2, "transformer.h", "lm_head"),
    "llama": (tiny_llama, "model.layers", "lm_head"),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    make, blocks, head = FAMILIES[request.param]
    hf = make()
    return hf, NNsightBackend(hf, tokenizer=gpt2_tokenizer()), blocks, head


def sae(backend, hook="blocks.1.hook_resid_pre", seed=0):
    return make_coder(backend.d_model, 128, hook, seed=seed)


def torch_hooks(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_entry_point_and_plugin():
    eps = {ep.name: ep for ep in entry_points(group="saexplain")}
    assert eps["nnsight"].load() is saexplain_nnsight
    info = {i.name: i for i in PluginManager(builtins=()).info()}["nnsight"]
    assert info.state == "loaded", info.error
    check_plugin(saexplain_nnsight, name="nnsight-under-test")


def test_detect_and_wrap(family):
    from nnsight import LanguageModel

    hf, backend, _, _ = family
    detect = saexplain_nnsight.detect_backend
    lm = LanguageModel(hf, tokenizer=gpt2_tokenizer())
    assert detect(hf) == detect(lm) == detect(backend.lm) == "nnsight"
    assert detect(object()) is None and detect(np.zeros(2)) is None
    assert saexplain_nnsight.make_backend(lm).hf is hf
    with pytest.raises(ConfigError, match="tokenizer"):
        NNsightBackend(hf)
    with pytest.raises(BackendError, match="nnsight"):
        NNsightBackend(torch.nn.Linear(2, 2))


def test_contract(family):
    _, backend, _, _ = family
    check_backend(backend, sae(backend))


def test_stops_at_the_deepest_hook(family):
    hf, backend, blocks_path, head = family
    blocks = hf.get_submodule(blocks_path)
    calls = []
    handles = [
        b.register_forward_hook(lambda *a, i=i: calls.append(i)) for i, b in enumerate(blocks)
    ]
    handles.append(hf.get_submodule(head).register_forward_hook(lambda *a: calls.append("head")))
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
                sae(backend, "blocks.1.hook_resid_mid", seed=1),
            ],
        )
        assert calls == [0]  # block 1 started (its attention ran) but never returned
        calls.clear()
        backend.logits(tokens)
        assert calls == [0, 1, "head"]
    finally:
        for h in handles:
            h.remove()


def test_scoping_and_clear_errors(family):
    hf, backend, _, _ = family
    check_scoping_and_errors(backend, lambda: torch_hooks(hf))


def test_padding_and_unembed(family):
    hf, backend, _, _ = family
    t = backend.tokenize(["Hello world", "Hi"])
    alone = np.asarray(backend.logits(backend.tokenize(["Hi"])))
    assert np.allclose(np.asarray(backend.logits(t))[1, :2], alone[0], atol=1e-5)
    with torch.no_grad():
        ref = hf(torch.as_tensor(t.ids)).logits
    assert torch.allclose(backend.logits(t), ref, atol=1e-5)
    v = torch.randn(backend.d_model)
    assert backend.unembed(v).shape == (hf.config.vocab_size,)


def test_a_lazily_loaded_language_model_is_dispatched_when_wrapped(family, tmp_path):
    """nnsight loads a model named by path on the meta device until first use; the backend reads
    devices and calls modules directly, so it dispatches the model first."""
    from nnsight import LanguageModel

    hf, backend, _, _ = family
    hf.save_pretrained(tmp_path / "model")
    lm = LanguageModel(str(tmp_path / "model"), tokenizer=gpt2_tokenizer())
    assert lm.dispatched is False
    lazy = NNsightBackend(lm)
    assert lm.dispatched and lazy.device.type != "meta"
    tokens = backend.tokenize(["a model loaded lazily from a folder"])
    assert torch.allclose(lazy.logits(tokens), backend.logits(tokens), atol=1e-5)
