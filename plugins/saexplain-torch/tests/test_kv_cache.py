"""KV caching in the torch backends gives the numbers of full recomputation.

Rows that share a prefix compute it once (one row, its cache repeated for the others), `probe`
with `positions` unembeds only those positions, and generation of equal-length prompts runs one
new token per step. Each is compared with the same backend told not to cache (`caching = False`),
which recomputes everything, under every edit kind, on tiny GPT-2 and Llama models through
TransformerLens (HookedTransformer and TransformerBridge) and nnsight."""

import copy

import numpy as np
import pytest
import torch
from saexplain_torch.testing import gpt2_tokenizer, make_coder, tiny_gpt2, tiny_llama

from saexplain.errors import ConfigError
from saexplain.protocols import Add, Clamp, Replace, TokenBatch
from saexplain.testing import as_numpy

tl_backend = pytest.importorskip("saexplain_transformerlens.backend")
nn_backend = pytest.importorskip("saexplain_nnsight.backend")
convert = pytest.importorskip("saexplain_transformerlens.convert")

FAMILIES = {"gpt2": tiny_gpt2, "llama": tiny_llama}
SHARED, SEQ, ROWS = 7, 12, 4
PATCHED = (5, 9)  # the per-row Replace starts inside the shared tokens: the prefix ends at 5


def _pair(make):
    cached, plain = make(), make()
    plain.caching = False  # the same backend, recomputing everything
    return cached, plain


@pytest.fixture(
    scope="module", params=[(f, b) for f in sorted(FAMILIES) for b in ("tl", "nn", "bridge")]
)
def backends(request):
    family, which = request.param
    tok = gpt2_tokenizer()
    hf = FAMILIES[family](n_layer=3)
    if which == "tl":
        model = convert.hooked_transformer_from_hf(hf, tok)
        return _pair(lambda: tl_backend.TransformerLensBackend(model))
    if which == "bridge":
        from saexplain_transformerlens.bridge import TransformerBridgeBackend
        from transformer_lens.model_bridge import TransformerBridge

        # booting wraps the model's blocks in place: the bridge gets its own copy
        bridge = TransformerBridge.boot_transformers(
            f"tiny-{family}", hf_model=copy.deepcopy(hf), tokenizer=tok, device="cpu"
        )
        return _pair(lambda: TransformerBridgeBackend(bridge))
    return _pair(lambda: nn_backend.NNsightBackend(hf, tokenizer=tok))


def _edits(backend):
    d, rng = backend.d_model, np.random.default_rng(3)
    sae = make_coder(d, 64, "blocks.1.hook_resid_pre", seed=1)
    transcoder = make_coder(
        d, 64, "blocks.0.hook_resid_mid", seed=2, hook_out="blocks.0.hook_mlp_out"
    )
    return [
        Clamp(coder=sae, latent=3, value=20.0),  # every position, every row
        Clamp(coder=transcoder, latent=4, value=15.0, positions=(2, 10)),  # reads and writes
        Add(
            direction=rng.normal(size=d), scale=6.0, hook="blocks.1.hook_resid_mid", positions=(1,)
        ),
        Replace(vector=rng.normal(size=(ROWS, d)) * 4, positions=PATCHED, layer=1),
    ]


def _tokens():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 1000, size=(ROWS, SEQ))
    ids[:, :SHARED] = ids[0, :SHARED]
    return TokenBatch.from_lists(ids.tolist())


def test_shared_prefix_stops_at_the_first_difference(backends):
    cached, plain = backends
    ids = torch.as_tensor(_tokens().ids)
    assert cached._shared_prefix(ids, _edits(cached)) == PATCHED[0]
    assert cached._shared_prefix(ids, []) == SHARED
    assert cached._shared_prefix(ids[:1], []) == 0  # one row: nothing to share
    assert plain._shared_prefix(ids, []) == 0


def test_logits_and_probe_equal_full_recomputation(backends):
    cached, plain = backends
    tokens, edits = _tokens(), _edits(cached)
    want = as_numpy(plain.logits(tokens, edits))
    assert np.allclose(as_numpy(cached.logits(tokens, edits)), want, atol=1e-4)
    layers = [0, 2]
    cols = [SEQ - 1, 3, PATCHED[1]]
    got_logits, got_resid = cached.probe(tokens, edits, layers=layers, positions=cols)
    _, full_resid = plain.probe(tokens, edits, layers=layers)
    assert np.allclose(as_numpy(got_logits), want[:, cols], atol=1e-4)
    for layer in layers:
        assert np.allclose(
            as_numpy(got_resid[layer]), as_numpy(full_resid[layer])[:, cols], atol=1e-4
        )
    # the per-row patch really differs between rows (so sharing past it would be wrong)
    assert not np.allclose(want[0, SEQ - 1], want[1, SEQ - 1], atol=1e-3)


def test_cached_generation_equals_recomputation(backends):
    cached, plain = backends
    prompts = ["The cat sat on the mat because"] * 3
    n = len(cached.tokenize(prompts[:1]).rows()[0])
    d, rng = cached.d_model, np.random.default_rng(5)
    sae = make_coder(d, 64, "blocks.1.hook_resid_pre", seed=1)
    edits = [
        Replace(vector=rng.normal(size=(3, d)) * 5, positions=(2, 3), layer=0),
        Clamp(coder=sae, latent=7, value=12.0),  # also on every generated token
        Add(
            direction=rng.normal(size=d),
            scale=4.0,
            hook="blocks.2.hook_resid_pre",
            positions=(n - 1,),
        ),
    ]
    # a strong per-row patch of the last prompt token sends the rows different ways
    strong = [Replace(vector=rng.normal(size=(3, d)) * 50, positions=(n - 1,), layer=2)]
    for chosen in (edits, strong):
        for kwargs in ({}, {"temperature": 1.0, "seed": 11}):
            got = cached.generate(prompts, chosen, max_new_tokens=6, **kwargs)
            want = plain.generate(prompts, chosen, max_new_tokens=6, **kwargs)
            assert got == want, (len(chosen), kwargs)
    assert len(set(cached.generate(prompts, strong, max_new_tokens=6))) > 1


def test_generation_refuses_negative_positions(backends):
    cached, _ = backends
    edit = Replace(vector=np.ones(cached.d_model), positions=(-1,), layer=0)
    with pytest.raises(ConfigError, match="prompt's start"):
        cached.generate(["hello there"], [edit], max_new_tokens=2)


def test_probe_and_generate_equals_probe_then_generate(backends):
    cached, plain = backends
    prompt = "The cat sat on the mat because"
    tokens = cached.tokenize([prompt] * 3)
    n, d = tokens.shape[1], cached.d_model
    rng = np.random.default_rng(8)
    edits = [
        Replace(vector=rng.normal(size=(3, d)) * 5, positions=(2, 3), layer=0),
        Replace(vector=rng.normal(size=(3, d)) * 50, positions=(n - 1,), layer=2),
    ]
    want_logits, want_resid = plain.probe(tokens, edits, layers=[1], positions=[n - 1])
    want_texts = plain.generate([prompt] * 3, edits, max_new_tokens=6)
    for backend in (cached, plain):  # decoding from the probe's cache, and recomputing
        logits, resid, new = backend.probe_and_generate(tokens, edits, layers=[1], max_new_tokens=6)
        assert np.allclose(as_numpy(logits), as_numpy(want_logits)[:, 0], atol=1e-4)
        assert np.allclose(as_numpy(resid[1]), as_numpy(want_resid[1])[:, 0], atol=1e-4)
        assert [backend.decode(ids) for ids in new] == want_texts
    assert len(set(want_texts)) > 1


def test_probe_and_generate_over_rows_of_different_lengths_equals_each_row_alone(backends):
    cached, plain = backends
    prompts = ["The cat sat", "A longer prompt than the first one, by far", "The dog ran off"]
    d = cached.d_model
    sae = make_coder(d, 64, "blocks.1.hook_resid_pre", seed=1)
    rng = np.random.default_rng(3)
    edits = [
        Clamp(coder=sae, latent=7, value=12.0, rows=(1,)),  # the long row only
        Add(
            direction=rng.normal(size=d), scale=4.0, hook="blocks.2.hook_resid_pre", positions=(1,)
        ),
    ]
    ragged = cached.tokenize(prompts)
    assert not np.asarray(ragged.mask).all()
    for backend in (cached, plain):
        logits, resid, new = backend.probe_and_generate(ragged, edits, layers=[1], max_new_tokens=5)
        for i, prompt in enumerate(prompts):
            alone = [e for e in edits if not isinstance(e, Clamp)]
            if i == 1:
                alone.append(Clamp(coder=sae, latent=7, value=12.0))
            one = backend.probe_and_generate(
                backend.tokenize([prompt]), alone, layers=[1], max_new_tokens=5
            )
            assert np.allclose(as_numpy(logits)[i], as_numpy(one[0])[0], atol=1e-4), i
            assert np.allclose(as_numpy(resid[1])[i], as_numpy(one[1][1])[0], atol=1e-4), i
            assert new[i] == one[2][0], i
    # the long row's clamp is really there: without it that row's residual differs
    bare = cached.probe_and_generate(ragged, edits[1:], layers=[1], max_new_tokens=1)
    assert not np.allclose(as_numpy(bare[1][1])[1], as_numpy(resid[1])[1], atol=1e-3)
