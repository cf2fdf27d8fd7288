"""Edits on some batch rows only (`Clamp.rows`, `Add.rows`) in the torch core, through
TransformerLens and nnsight on tiny GPT-2 and Llama models: one batch holding a clean and an
edited arm (the prompts twice, the edit on the second copy) gives exactly the two per-arm calls,
in `logits` (also when the two copies share every token, where a shared prefix would otherwise
run once) and in greedy `generate` (KV-cached for prompts of one length, recomputed for mixed)."""

import asyncio

import numpy as np
import pytest
from saexplain_torch.testing import gpt2_tokenizer, make_coder, tiny_gpt2, tiny_llama

from saexplain.errors import ConfigError
from saexplain.methods import MethodContext, Strength, generate_pairs
from saexplain.protocols import Add, Clamp
from saexplain.testing import as_numpy, check_row_edits

tl_backend = pytest.importorskip("saexplain_transformerlens.backend")
nn_backend = pytest.importorskip("saexplain_nnsight.backend")
convert = pytest.importorskip("saexplain_transformerlens.convert")

FAMILIES = {"gpt2": tiny_gpt2, "llama": tiny_llama}
SAME = ["Once upon a time there", "The cat sat on the"]  # one token length (checked below)
MIXED = ["Once upon a time there", "Dogs bark"]


@pytest.fixture(scope="module", params=[(f, b) for f in sorted(FAMILIES) for b in ("tl", "nn")])
def backend(request):
    family, which = request.param
    tok = gpt2_tokenizer()
    hf = FAMILIES[family](n_layer=3)
    if which == "tl":
        return tl_backend.TransformerLensBackend(convert.hooked_transformer_from_hf(hf, tok))
    return nn_backend.NNsightBackend(hf, tokenizer=tok)


def _edits(backend, rows):
    d = backend.d_model
    sae = make_coder(d, 64, "blocks.1.hook_resid_pre", seed=1)
    transcoder = make_coder(
        d, 64, "blocks.0.hook_resid_mid", seed=2, hook_out="blocks.0.hook_mlp_out"
    )
    direction = np.random.default_rng(3).normal(size=d)
    return {
        "clamp": Clamp(coder=sae, latent=3, value=40.0, rows=rows),
        "transcoder": Clamp(coder=transcoder, latent=4, value=30.0, rows=rows),
        "add": Add(direction=direction, scale=8.0, hook="blocks.1.hook_resid_mid", rows=rows),
    }


def _all_rows(edit):
    return type(edit)(**{**edit.__dict__, "rows": None})


@pytest.mark.parametrize("name", ["clamp", "transcoder", "add"])
@pytest.mark.parametrize("prompts", [SAME, SAME[:1]], ids=["two-prompts", "one-prompt"])
def test_one_batch_of_both_arms_equals_the_per_arm_logits(backend, name, prompts):
    n = len(prompts)
    edit = _edits(backend, tuple(range(n, 2 * n)))[name]
    both = as_numpy(backend.logits(backend.tokenize(prompts * 2), [edit]))
    tokens = backend.tokenize(prompts)
    clean = as_numpy(backend.logits(tokens))
    edited = as_numpy(backend.logits(tokens, [_all_rows(edit)]))
    scale = float(np.abs(clean).max())
    assert np.abs(both[:n] - clean).max() <= 1e-4 * scale
    assert np.abs(both[n:] - edited).max() <= 1e-4 * scale
    assert np.abs(edited - clean).max() > 0.05 * scale  # the edit matters


@pytest.mark.parametrize("name", ["clamp", "transcoder", "add"])
@pytest.mark.parametrize("prompts", [SAME, MIXED], ids=["kv-cached", "recomputed"])
def test_one_generate_call_of_both_arms_equals_the_per_arm_calls(backend, name, prompts):
    lengths = {len(r) for r in backend.tokenize(prompts).rows()}
    assert len(lengths) == (1 if prompts is SAME else 2)
    n = len(prompts)
    edit = _edits(backend, tuple(range(n, 2 * n)))[name]
    both = backend.generate(prompts * 2, [edit], max_new_tokens=6)
    clean = backend.generate(prompts, max_new_tokens=6)
    edited = backend.generate(prompts, [_all_rows(edit)], max_new_tokens=6)
    assert both == clean + edited
    assert clean != edited, "the edit should change a greedy continuation"


def test_the_contract_and_refusals(backend):
    check_row_edits(
        backend, make_coder(backend.d_model, 64, "blocks.1.hook_resid_pre"), backend.tokenize(MIXED)
    )
    tokens = backend.tokenize(MIXED)
    for bad in [(2,), (-1,), ()]:
        with pytest.raises(ConfigError, match="rows"):
            backend.logits(tokens, [_edits(backend, bad)["clamp"]])


def test_generate_pairs_is_one_call_equal_to_the_per_arm_calls(backend, monkeypatch):
    coder = make_coder(backend.d_model, 64, "blocks.1.hook_resid_pre", seed=1)
    strength = Strength(
        latent=3, target_kl=1.0, value=40.0, kl=1.0, reached=True, steps=0, kind="clamp"
    )
    calls = []
    generate = backend.generate

    def counted(texts, edits=(), **kwargs):
        calls.append(len(texts))
        return generate(texts, edits, **kwargs)

    monkeypatch.setattr(backend, "generate", counted)
    ctx = MethodContext(backend=backend, coder=coder)
    pairs = asyncio.run(
        generate_pairs(ctx, strength, SAME, max_new_tokens=6, temperature=0.0, seed=0)
    )
    assert calls == [4]
    monkeypatch.setattr(backend, "generate", generate)
    clean = backend.generate(SAME, max_new_tokens=6)
    edited = backend.generate(SAME, strength.edits(coder), max_new_tokens=6)
    assert pairs == list(zip(clean, edited, strict=True))
