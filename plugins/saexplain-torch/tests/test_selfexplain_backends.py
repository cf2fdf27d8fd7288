"""Self-explanation's backend primitives on tiny GPT-2 and Llama models: a per-row `Replace` and
`probe` give the same patched logits and probe residuals through TransformerLens and nnsight, and
the same numbers as an independent computation with plain torch hooks on the transformers model;
generation patches the prompt positions only; the explainer runs end to end on both backends."""

import numpy as np
import pytest
import torch
from saexplain_torch.testing import gpt2_tokenizer, make_coder, tiny_gpt2, tiny_llama

from saexplain import run_sync
from saexplain.explainers.selfexplain import SelfExplainer, sweep
from saexplain.models import LatentRecord, LatentRef, LatentStats, Status
from saexplain.protocols import MethodContext, Replace, TokenBatch
from saexplain.testing import as_numpy

tl_backend = pytest.importorskip("saexplain_transformerlens.backend")
nn_backend = pytest.importorskip("saexplain_nnsight.backend")
convert = pytest.importorskip("saexplain_transformerlens.convert")

FAMILIES = {"gpt2": tiny_gpt2, "llama": tiny_llama}
PATCH, PROBE = 1, 2  # 3-layer models


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    tok = gpt2_tokenizer()
    hf = FAMILIES[request.param](n_layer=3)
    backends = [
        tl_backend.TransformerLensBackend(convert.hooked_transformer_from_hf(hf, tok)),
        nn_backend.NNsightBackend(hf, tokenizer=tok),
    ]
    return hf, tok, backends


def blocks(hf):
    return hf.transformer.h if hf.config.model_type == "gpt2" else hf.model.layers


def reference(hf, ids, vectors, positions, patch, probe):
    """Patched logits and probe residual with plain torch forward pre-hooks (no saexplain)."""
    seen = {}

    def replace(module, args, kwargs):
        hidden = (args[0] if args else kwargs["hidden_states"]).clone()
        hidden[:, list(positions)] = vectors[:, None, :]
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    def read(module, args, kwargs):
        seen["resid"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    handles = [
        blocks(hf)[patch].register_forward_pre_hook(replace, with_kwargs=True),
        blocks(hf)[probe].register_forward_pre_hook(read, with_kwargs=True),
    ]
    try:
        with torch.no_grad():
            logits = hf(torch.as_tensor(ids)).logits
    finally:
        for h in handles:
            h.remove()
    return logits.numpy().astype(np.float64), seen["resid"].numpy().astype(np.float64)


def test_per_row_replace_and_probe_agree_with_plain_torch(family):
    hf, _, backends = family
    tokens = backends[0].tokenize(['What is the meaning of the word "X"? It is "'] * 5)
    rng = np.random.default_rng(0)
    direction = rng.normal(size=backends[0].d_model)
    direction /= np.linalg.norm(direction)
    vectors = np.linspace(0.0, 12.0, 5)[:, None] * direction[None, :]
    positions = (3, 7)
    edit = Replace(vector=vectors, positions=positions, layer=PATCH)
    want_logits, want_resid = reference(
        hf, tokens.ids, torch.as_tensor(vectors, dtype=torch.float32), positions, PATCH, PROBE
    )
    clean = as_numpy(backends[0].logits(tokens))
    assert not np.allclose(want_logits[1:], clean[1:], atol=1e-3), "the patch must matter"
    for backend in backends:
        logits, resid = backend.probe(tokens, [edit], layers=[PATCH, PROBE])
        np.testing.assert_allclose(as_numpy(logits), want_logits, atol=1e-4)
        np.testing.assert_allclose(as_numpy(resid[PROBE]), want_resid, atol=1e-4)
        np.testing.assert_allclose(
            as_numpy(resid[PATCH])[:, positions], vectors[:, None].repeat(2, 1), atol=1e-5
        )
        np.testing.assert_allclose(as_numpy(backend.logits(tokens, [edit])), want_logits, atol=1e-4)
        # row k of the batch equals a single-vector Replace on that row alone
        one = TokenBatch.from_lists([tokens.rows()[3]])
        single = as_numpy(backend.logits(one, [Replace(vectors[3], positions, PATCH)]))
        np.testing.assert_allclose(single[0], want_logits[3], atol=1e-4)
        assert np.allclose(as_numpy(backend.logits(tokens)), clean, atol=1e-5), "the patch leaked"


def test_generation_patches_prompt_positions_per_row(family):
    _, _, backends = family
    prompts = ["The word X means", "The word X means"]
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(2, backends[0].d_model)) * 6.0
    edit = Replace(vector=vectors, positions=(3,), layer=PATCH)
    outs = [b.generate(prompts, [edit], max_new_tokens=5) for b in backends]
    assert outs[0] == outs[1]
    assert outs[0][0] != outs[0][1], "different vectors per row must give different text"
    for row in range(2):  # each row's text equals generating that row alone with its vector
        alone = backends[0].generate(
            [prompts[row]], [Replace(vectors[row], (3,), PATCH)], max_new_tokens=5
        )
        assert alone == [outs[0][row]]
    with pytest.raises(Exception, match="expected"):
        backends[0].generate(prompts * 2, [edit], max_new_tokens=1)  # 4 prompts, 2 vectors


def test_selfexplain_runs_the_same_on_both_backends(family):
    _, _, backends = family
    coder = make_coder(backends[0].d_model, 16, "blocks.1.hook_resid_pre")
    record = LatentRecord(
        latent=LatentRef(coder_id=coder.id, hook=coder.hook, index=5),
        stats=LatentStats(n_tokens=0, count=0),
    )
    explainer = SelfExplainer(n_scales=8, top_k=2, max_new_tokens=4, min_selfsim=-1.0)
    results = [
        run_sync(explainer.explain(record, MethodContext(backend=b, coder=coder))) for b in backends
    ]
    assert all(r.status is Status.OK for r in results)
    a, b = (r.evidence["prompts"]["selfexplain_meaning"] for r in results)
    assert a["prompt"] == b["prompt"] and a["chat_template"] == "plain"  # GPT-2 BPE: no template
    np.testing.assert_allclose(a["selfsim"], b["selfsim"], atol=1e-4)
    np.testing.assert_allclose(a["entropy"], b["entropy"], atol=1e-3)
    assert [g["text"] for g in a["generations"]] == [g["text"] for g in b["generations"]]


class WithoutProbeAndGenerate:
    """A backend seen without its optional `probe_and_generate` (the sweep's fallback path)."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name):
        if name == "probe_and_generate":
            raise AttributeError(name)
        return getattr(self._backend, name)


def test_sweep_generations_from_the_metrics_pass_equal_probe_then_generate(family):
    _, _, backends = family
    rng = np.random.default_rng(4)
    direction = rng.normal(size=backends[0].d_model)
    explainer = SelfExplainer(n_scales=6, top_k=2, max_new_tokens=5, min_selfsim=-1.0)
    for backend in backends:
        prompt, norm = explainer.prepared(backend, explainer.templates[0])
        scales = np.linspace(0.0, 8.0, 6) * norm
        kwargs = {"patch_layer": PATCH, "probe_layer": PROBE, "max_new_tokens": 5}
        fast = sweep(backend, prompt, direction, scales, batch_size=4, **kwargs)
        slow = sweep(WithoutProbeAndGenerate(backend), prompt, direction, scales, **kwargs)
        np.testing.assert_allclose(fast.selfsim, slow.selfsim, atol=1e-5)
        np.testing.assert_allclose(fast.entropy, slow.entropy, atol=1e-4)
        assert fast.generations == slow.generations and len(fast.generations) == 6
        assert len(set(fast.generations)) > 1, "the scales must lead to different answers"
        metrics_only = sweep(backend, prompt, direction, scales, **{**kwargs, "max_new_tokens": 0})
        assert metrics_only.generations == ()
        np.testing.assert_allclose(metrics_only.selfsim, fast.selfsim, atol=1e-5)
