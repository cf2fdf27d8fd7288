"""Contract checks that plugin test suites run on their own implementations."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from saexplain.errors import (
    ConfigError,
    DimensionMismatchError,
    EmptyDatasetError,
    HookNameError,
    LatentIndexError,
)
from saexplain.models import (
    ChatRequest,
    ChatResponse,
    Explanation,
    LatentRecord,
    Message,
    Score,
    Status,
)
from saexplain.plugins import PluginManager, set_plugin_manager
from saexplain.protocols import (
    Add,
    Backend,
    Clamp,
    Explainer,
    MethodContext,
    Provider,
    Replace,
    Scorer,
    SparseCoder,
    TokenBatch,
    write_hook,
)
from saexplain.testing.agreement import as_numpy


@contextlib.contextmanager
def fresh_plugin_manager(**kwargs: Any) -> Iterator[PluginManager]:
    """Swap in a new process-wide plugin manager for the duration of a test."""
    manager = PluginManager(**kwargs)
    previous = set_plugin_manager(manager)
    try:
        yield manager
    finally:
        set_plugin_manager(previous)


def check_backend(
    backend: Backend,
    coder: SparseCoder,
    texts: Sequence[str] = ("The cat sat on the mat.", "Dogs bark"),
) -> None:
    """Assert the Backend protocol's contract on `backend` with `coder` at its hook."""
    assert isinstance(backend, Backend), f"{type(backend).__name__} lacks Backend members"
    assert isinstance(coder, SparseCoder), f"{type(coder).__name__} lacks SparseCoder members"
    tokens = backend.tokenize(list(texts))
    batch, seq = tokens.shape
    assert batch == len(texts) and seq > 0
    assert tokens.mask[:, 0].all(), "every row must start with a real token"
    acts = backend.latent_acts(tokens, [coder])
    assert set(acts) == {coder.id}, f"latent_acts keys {set(acts)} != {{{coder.id!r}}}"
    a = acts[coder.id]
    if len(a):
        assert a.row.max() < batch and a.pos.max() < seq and a.latent.max() < coder.d_sae
        assert tokens.mask[a.row, a.pos].all(), "activations reported at padding positions"
        assert (a.value > 0).all(), "sparse activations must be nonzero"
        subset = sorted({int(x) for x in a.latent[:3]})
        sub = backend.latent_acts(tokens, [coder], latents={coder.id: subset})[coder.id]
        assert set(sub.latent.tolist()) <= set(subset), "latent subset not respected"
    base = np.asarray(backend.logits(tokens))
    assert base.shape[:2] == (batch, seq), f"logits shape {base.shape} for tokens {tokens.shape}"
    edited = np.asarray(backend.logits(tokens, [Clamp(coder=coder, latent=0, value=50.0)]))
    assert not np.allclose(edited, base), "a strong Clamp must change the logits"
    bad = Replace(vector=np.zeros(backend.d_model + 1), positions=(0,), layer=0)
    with contextlib.suppress(Exception):
        backend.logits(tokens, [bad])
    after = np.asarray(backend.logits(tokens))
    assert np.allclose(after, base), "an edit survived its call (a hook leaked)"
    assert np.asarray(backend.unembed(np.asarray(coder.W_dec)[0])).ndim == 1
    outs = backend.generate(["Once upon a time"], max_new_tokens=3)
    assert len(outs) == 1 and isinstance(outs[0], str)
    assert outs == backend.generate(["Once upon a time"], max_new_tokens=3), "greedy must repeat"
    check_probe_and_row_replace(backend, tokens)
    check_row_edits(backend, coder, tokens)


class _Variant:
    """`coder` seen at another hook or width: a wrong coder for `check_backend_errors`. Backends
    refuse it before any model work, so its encode and decode are never called."""

    def __init__(
        self, coder: SparseCoder, *, hook: str | None = None, d_in: int | None = None
    ) -> None:
        self.hook = coder.hook if hook is None else hook
        self.d_in = coder.d_in if d_in is None else d_in
        self.d_sae, self.W_dec, self.exclude_bos = coder.d_sae, coder.W_dec, coder.exclude_bos
        self.id = f"{coder.id}/variant"
        self.encode, self.decode = coder.encode, coder.decode


def check_backend_errors(backend: Backend, coder: SparseCoder) -> None:
    """Assert that bad calls raise the typed errors every backend raises for them (those of the
    torch backends), and that none leaves an edit behind. `coder` must read a residual hook of
    `backend`, with at least two latents."""
    tokens = backend.tokenize(["Bad calls raise typed errors"])
    seq = tokens.shape[1]
    base = as_numpy(backend.logits(tokens))
    d, layers = backend.d_model, backend.n_layers
    wrong_hook = _Variant(coder, hook=f"blocks.{layers + 5}.hook_resid_pre")
    calls: list[tuple[type[Exception], str, Callable[[], object]]] = [
        # a str is a Sequence[str] to the type checker: only the backend can refuse it
        (ConfigError, "tokenize(one string)", lambda: backend.tokenize("a string")),
        (ConfigError, "latent_acts(no coders)", lambda: backend.latent_acts(tokens, [])),
        (
            ConfigError,
            "latent_acts(twice one coder)",
            lambda: backend.latent_acts(tokens, [coder, coder]),
        ),
        (
            ConfigError,
            "latent_acts(latents of an unknown coder)",
            lambda: backend.latent_acts(tokens, [coder], latents={"no-such-coder": [0]}),
        ),
        (
            HookNameError,
            "latent_acts(unknown hook)",
            lambda: backend.latent_acts(tokens, [wrong_hook]),
        ),
        (
            DimensionMismatchError,
            "latent_acts(wrong width)",
            lambda: backend.latent_acts(tokens, [_Variant(coder, d_in=d + 1)]),
        ),
        (
            LatentIndexError,
            "latent_acts(latent out of range)",
            lambda: backend.latent_acts(tokens, [coder], latents={coder.id: [coder.d_sae]}),
        ),
        (
            EmptyDatasetError,
            "latent_acts(no rows)",
            lambda: backend.latent_acts(TokenBatch.from_lists([]), [coder]),
        ),
        (
            EmptyDatasetError,
            "logits(an empty row)",
            lambda: backend.logits(TokenBatch.from_lists([[]])),
        ),
        (
            LatentIndexError,
            "Clamp(latent out of range)",
            lambda: backend.logits(tokens, [Clamp(coder, coder.d_sae, 1.0)]),
        ),
        (
            ConfigError,
            "Clamp(unknown mode)",
            lambda: backend.logits(tokens, [Clamp(coder, 0, 1.0, mode="double")]),  # type: ignore[arg-type]
        ),
        (
            ConfigError,
            "Clamp(positions outside the sequence)",
            lambda: backend.logits(tokens, [Clamp(coder, 0, 1.0, positions=(seq + 3,))]),
        ),
        (
            HookNameError,
            "Clamp(unknown hook)",
            lambda: backend.logits(tokens, [Clamp(wrong_hook, 0, 1.0)]),
        ),
        (
            DimensionMismatchError,
            "Add(wrong width)",
            lambda: backend.logits(tokens, [Add(np.zeros(d + 1), 1.0, coder.hook)]),
        ),
        (
            HookNameError,
            "Add(unknown hook)",
            lambda: backend.logits(tokens, [Add(np.zeros(d), 1.0, wrong_hook.hook)]),
        ),
        (
            DimensionMismatchError,
            "Replace(wrong width)",
            lambda: backend.logits(tokens, [Replace(np.zeros(d + 1), (0,), 0)]),
        ),
        (
            ConfigError,
            "Replace(layer out of range)",
            lambda: backend.logits(tokens, [Replace(np.zeros(d), (0,), layers)]),
        ),
        (ConfigError, "logits(not an edit)", lambda: backend.logits(tokens, ["edit"])),  # type: ignore[list-item]
        (ConfigError, "probe(layer out of range)", lambda: backend.probe(tokens, layers=[layers])),
        (
            ConfigError,
            "Clamp(rows outside the batch)",
            lambda: backend.logits(tokens, [Clamp(coder, 0, 1.0, rows=(1,))]),
        ),
        (
            ConfigError,
            "generate(negative temperature)",
            lambda: backend.generate(["Once"], max_new_tokens=1, temperature=-1.0),
        ),
        (
            ConfigError,
            "generate(negative edit positions)",
            lambda: backend.generate(
                ["Once upon"], [Replace(np.zeros(d), (-1,), 0)], max_new_tokens=1
            ),
        ),
    ]
    for error, call, run in calls:
        try:
            run()
        except Exception as e:
            # the exact type: HookNameError is a ConfigError, yet callers catch the two apart
            if type(e) is not error:
                raise AssertionError(
                    f"{call} raised {type(e).__name__}: {e}; expected {error.__name__}"
                ) from e
        else:
            raise AssertionError(f"{call} did not raise; expected {error.__name__}")
    after = as_numpy(backend.logits(tokens))
    assert np.array_equal(after, base), "a refused edit survived its call (a hook leaked)"


def check_probe_and_row_replace(backend: Backend, tokens: TokenBatch, atol: float = 1e-4) -> None:
    """`probe` returns `logits`'s logits and the residual entering the asked blocks, from one
    pass; a per-row `Replace` vector patches each row with its own vector (row `i` equals a
    single-vector Replace), in `logits`, `probe` and `generate`. Needs >= 2 tokens per row."""
    batch, seq = tokens.shape
    d, last = backend.d_model, backend.n_layers - 1
    scale = max(1.0, float(np.abs(as_numpy(backend.logits(tokens))).max()))
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(batch, d)) * 4.0
    patch = min(1, last)
    edit = Replace(vector=vectors, positions=(1,), layer=patch)
    want = as_numpy(backend.logits(tokens, [edit]))
    logits, resid = backend.probe(tokens, [edit], layers=sorted({0, patch, last}))
    assert set(resid) == {0, patch, last}, f"probe returned layers {sorted(resid)}"
    assert np.allclose(as_numpy(logits), want, atol=atol * scale), "probe logits != logits"
    for r in resid.values():
        assert as_numpy(r).shape == (batch, seq, d), f"probe residual {as_numpy(r).shape}"
    assert np.allclose(as_numpy(resid[patch])[:, 1], vectors, atol=atol), "resid misses the patch"
    cols = [seq - 1, 0]  # `positions` keeps the caller's order
    few_logits, few_resid = backend.probe(tokens, [edit], layers=[last], positions=cols)
    assert np.allclose(as_numpy(few_logits), want[:, cols], atol=atol * scale), "probe positions"
    assert np.allclose(as_numpy(few_resid[last]), as_numpy(resid[last])[:, cols], atol=atol)
    for i in range(batch):
        single = as_numpy(backend.logits(tokens, [Replace(vectors[i], (1,), patch)]))[i]
        assert np.allclose(single, want[i], atol=atol * scale), f"per-row Replace row {i} wrong"
    bad = Replace(vector=np.zeros((batch + 1, d)), positions=(1,), layer=patch)
    try:
        backend.logits(tokens, [bad])
    except (ValueError, DimensionMismatchError):
        pass
    else:
        raise AssertionError("a per-row Replace with the wrong number of rows must raise")
    prompts = ["Once upon a time", "Once upon a time"]
    row_edit = Replace(vector=vectors[:1].repeat(2, axis=0), positions=(1,), layer=patch)
    outs = backend.generate(prompts, [row_edit], max_new_tokens=3)
    alone = backend.generate(prompts[:1], [Replace(vectors[0], (1,), patch)], max_new_tokens=3)
    assert outs == alone * 2, f"per-row generation {outs} != single-vector generation {alone}"


def check_row_edits(
    backend: Backend, coder: SparseCoder, tokens: TokenBatch, atol: float = 1e-4
) -> None:
    """A `Clamp` or an `Add` restricted to `rows` changes only those rows of a batch, each equal
    to that row run alone with the edit on every row: in `logits`, and in greedy `generate`
    over prompts of one length (a KV-cached decode, where a backend caches) and of two."""
    batch, _ = tokens.shape
    base = as_numpy(backend.logits(tokens))
    scale = max(1.0, float(np.abs(base).max()))
    last = batch - 1
    row = as_numpy(coder.W_dec)[0].astype(np.float64)
    direction = row / max(float(np.linalg.norm(row)), 1e-12)
    edits: list[Clamp | Add] = [
        Clamp(coder=coder, latent=0, value=50.0, rows=(last,)),
        Add(direction=direction, scale=50.0, hook=write_hook(coder), rows=(last,)),
    ]
    alone = TokenBatch(ids=tokens.ids[last:], mask=tokens.mask[last:])
    real = tokens.mask[last]
    for edit in edits:
        kind = type(edit).__name__
        got = as_numpy(backend.logits(tokens, [edit]))
        assert np.allclose(got[:last], base[:last], atol=atol * scale), f"{kind} rows leaked"
        want = as_numpy(backend.logits(alone, [replace(edit, rows=None)]))[0]
        assert np.allclose(got[last][real], want[real], atol=atol * scale), (
            f"a row-restricted {kind} differs from its row run alone"
        )
        assert not np.allclose(got[last], base[last]), f"a strong {kind} on a row must change it"
    for prompts in (["Once upon a time", "Once upon a time"], ["Once upon a time", "Dogs bark"]):
        for edit in edits:
            outs = backend.generate(prompts, [replace(edit, rows=(1,))], max_new_tokens=3)
            clean = backend.generate(prompts[:1], max_new_tokens=3)
            edited = backend.generate(prompts[1:], [replace(edit, rows=None)], max_new_tokens=3)
            assert outs == clean + edited, (
                f"generate with a {type(edit).__name__} on row 1: {outs} != {clean + edited}"
            )


def check_provider(provider: Provider) -> None:
    """Assert the Provider protocol's contract with one small request (uses the provider)."""
    from saexplain._async import run_sync

    assert isinstance(provider, Provider), f"{type(provider).__name__} lacks Provider members"
    request = ChatRequest(messages=(Message(role="user", content="Say yes."),), max_tokens=8)
    response = run_sync(provider.complete(request))
    assert isinstance(response, ChatResponse) and len(response.choices) == request.n
    assert response.usage.prompt_tokens >= 0
    if provider.capabilities.logprobs:
        with_lp = request.model_copy(update={"logprobs": True, "top_logprobs": 2})
        response = run_sync(provider.complete(with_lp))
        assert response.choices[0].logprobs, "provider claims logprobs but returned none"
    assert ChatResponse.model_validate_json(response.model_dump_json()) == response


def check_explainer(explainer: Explainer, record: LatentRecord, ctx: MethodContext) -> Explanation:
    """Run `explainer` once and assert the Explainer contract on its result."""
    from saexplain._async import run_sync

    assert isinstance(explainer, Explainer)
    result = run_sync(explainer.explain(record, ctx))
    assert isinstance(result, Explanation), f"explain returned {type(result).__name__}"
    assert result.latent == record.latent and result.explainer == explainer.name
    assert result.status in Status
    assert Explanation.model_validate_json(result.model_dump_json()) == result
    return result


def check_scorer(
    scorer: Scorer, record: LatentRecord, explanation: Explanation, ctx: MethodContext
) -> Score:
    """Run `scorer` once and assert the Scorer contract on its result."""
    from saexplain._async import run_sync

    assert isinstance(scorer, Scorer)
    result = run_sync(scorer.score(record, explanation, ctx))
    assert isinstance(result, Score), f"score returned {type(result).__name__}"
    assert result.latent == record.latent and result.scorer == scorer.name
    assert result.explainer == explanation.explainer
    assert Score.model_validate_json(result.model_dump_json()) == result
    return result


def check_plugin(plugin: object, name: str = "plugin-under-test") -> PluginManager:
    """Register `plugin` in a fresh manager (no entry points); assert it loads and registers."""
    manager = PluginManager(entry_points=[], builtins=())
    manager.register_plugin(plugin, name=name)
    (info,) = [i for i in manager.info() if i.name == name]
    assert info.state == "loaded", info.error
    assert info.hooks, "the plugin implements no saexplain hook"
    return manager
