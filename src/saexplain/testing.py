"""Fakes and contract checks for saexplain and its plugins' test suites.

- `FakeBackend`: a tiny deterministic numpy "language model" implementing the Backend protocol
  (word-level tokenizer, residual stream, hooks, edits, greedy generation). No torch needed.
- `FakeCoder`: a ReLU sparse autoencoder in numpy; `FakeCoder.planted` builds one whose latents
  fire exactly on chosen words.
- `ScriptedProvider`: an LLM provider answering from a list or a function, failing on demand,
  reporting token usage, optionally with logprobs.
- `check_*`: contract tests that plugin suites call on their own implementations.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from saexplain.errors import (
    DimensionMismatchError,
    HookNameError,
    LatentIndexError,
    ProviderServerError,
)
from saexplain.models import (
    ChatRequest,
    ChatResponse,
    Choice,
    Example,
    Explanation,
    LatentRecord,
    LatentRef,
    LatentStats,
    Message,
    Score,
    Status,
    TokenLogprob,
    Usage,
)
from saexplain.plugins import PluginManager, set_plugin_manager
from saexplain.protocols import (
    Add,
    Backend,
    Clamp,
    Edit,
    Explainer,
    MethodContext,
    Provider,
    ProviderCapabilities,
    Replace,
    Scorer,
    SparseActivations,
    SparseCoder,
    TokenBatch,
)

FloatArray = npt.NDArray[np.float64]

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",  # without it, every hub-name load retries for a minute before failing
    "TRANSFORMERS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # litellm would fetch its price list at import
    "WANDB_MODE": "disabled",
}


def set_offline_env() -> None:
    """Keep tests, benchmarks and the demo off the network; call before heavy imports."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


_WORD = re.compile(r"\s*\S+|\s+$")
_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


# --- fake model stack -----------------------------------------------------------------------------


class FakeBackend:
    """A deterministic toy transformer-shaped model in numpy.

    Tokens are words with their leading whitespace (`" cat"`), ids assigned on first sight.
    Block `l` maps the residual `h` to `h + 0.1 * tanh(h W_l) + 0.1 * (h shifted one position)`,
    so activations depend a little on context, causally. Hooks: `blocks.L.hook_resid_pre` and
    `blocks.L.hook_resid_post`. `layers_run` counts block evaluations, to test early stopping;
    `forward_calls` counts edited forward passes (`logits`, `probe`, each generation step), to
    test batching.
    """

    name = "fake"

    def __init__(
        self, *, d_model: int = 32, n_layers: int = 4, vocab_size: int = 4096, seed: int = 0
    ) -> None:
        self.model_id = f"fake-d{d_model}-l{n_layers}-s{seed}"
        self.d_model, self.n_layers, self.vocab_size = d_model, n_layers, vocab_size
        self.bos_token_id: int | None = 0
        rng = np.random.default_rng(seed)
        self._embed = rng.normal(size=(vocab_size, d_model)) / np.sqrt(d_model) * 4.0
        self._blocks = [
            rng.normal(size=(d_model, d_model)) / np.sqrt(d_model) for _ in range(n_layers)
        ]
        self._unembed = rng.normal(size=(d_model, vocab_size)) / np.sqrt(d_model)
        self._vocab: list[str] = ["<bos>"]
        self._ids: dict[str, int] = {"<bos>": 0}
        self.layers_run = 0
        self.forward_calls = 0

    # tokenization
    def _id(self, word: str) -> int:
        if word not in self._ids:
            if len(self._vocab) >= self.vocab_size:
                raise ValueError(f"FakeBackend vocabulary is full ({self.vocab_size} words)")
            self._ids[word] = len(self._vocab)
            self._vocab.append(word)
        return self._ids[word]

    def tokenize(
        self, texts: Sequence[str], *, prepend_bos: bool = True, max_length: int | None = None
    ) -> TokenBatch:
        rows = []
        for text in texts:
            ids = [self._id(w) for w in _WORD.findall(text)]
            if prepend_bos:
                ids.insert(0, 0)
            rows.append(ids[:max_length] if max_length else ids)
        return TokenBatch.from_lists(rows)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self._vocab[i] for i in ids if i != 0)

    def str_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self._vocab[i] for i in ids]

    # forward
    def hook_layer(self, hook: str) -> int:
        """Index of the residual `h_L` a canonical hook name reads."""
        m = _HOOK.match(hook)
        if not m or int(m.group(1)) >= self.n_layers:
            valid = [
                f"blocks.{i}.hook_resid_{k}" for i in range(self.n_layers) for k in ("pre", "post")
            ]
            raise HookNameError(f"unknown hook {hook!r} for {self.model_id}; valid: {valid}")
        return int(m.group(1)) + (m.group(2) == "post")

    def _block(self, layer: int, h: FloatArray) -> FloatArray:
        """One block: a little nonlinearity plus a causal mix of the previous position."""
        self.layers_run += 1
        shifted = np.zeros_like(h)
        shifted[:, 1:] = h[:, :-1]
        out: FloatArray = h + 0.1 * np.tanh(h @ self._blocks[layer]) + 0.1 * shifted
        return out

    def _run(
        self,
        ids: npt.NDArray[np.int64],
        until: int,
        edits: Sequence[Edit],
        capture: dict[int, FloatArray] | None = None,
    ) -> FloatArray:
        """Residual stream `h_until` (batch, seq, d_model), edits applied where they hook in;
        `h_L` (after edits) is stored in `capture` for each layer key it has."""
        self.forward_calls += 1
        h: FloatArray = self._embed[ids].copy()
        for layer in range(until + 1):
            for edit in edits:
                h = self._apply(edit, layer, h)
            if capture is not None and layer in capture:
                capture[layer] = h.copy()
            if layer == until:
                break
            h = self._block(layer, h)
        return h

    def _apply(self, edit: Edit, layer: int, h: FloatArray) -> FloatArray:
        pos = slice(None)
        if isinstance(edit, Replace):
            if edit.layer != layer:
                return h
            vec = np.asarray(edit.vector, dtype=np.float64)
            if vec.shape not in ((self.d_model,), (h.shape[0], self.d_model)):
                raise DimensionMismatchError(
                    f"Replace vector {vec.shape} != ({self.d_model},) or "
                    f"(batch={h.shape[0]}, {self.d_model})"
                )
            h = h.copy()
            h[:, list(edit.positions)] = vec if vec.ndim == 1 else vec[:, None, :]
            return h
        if isinstance(edit, Add):
            if self.hook_layer(edit.hook) != layer:
                return h
            pos = slice(None) if edit.positions is None else list(edit.positions)  # type: ignore[assignment]
            h = h.copy()
            h[:, pos] += edit.scale * np.asarray(edit.direction, dtype=np.float64)
            return h
        if isinstance(edit, Clamp):
            if self.hook_layer(edit.coder.hook) != layer:
                return h
            if not 0 <= edit.latent < edit.coder.d_sae:
                raise LatentIndexError(f"latent {edit.latent} not in [0, {edit.coder.d_sae})")
            z = np.asarray(edit.coder.encode(h))
            error = h - np.asarray(edit.coder.decode(z))
            z = z.copy()
            pos = slice(None) if edit.positions is None else list(edit.positions)  # type: ignore[assignment]
            col = z[:, pos, edit.latent]
            z[:, pos, edit.latent] = {
                "set": edit.value,
                "add": col + edit.value,
                "scale": col * edit.value,
            }[edit.mode]
            edited: FloatArray = np.asarray(edit.coder.decode(z)) + error
            return edited
        raise TypeError(f"unknown edit {edit!r}")

    def latent_acts(
        self,
        tokens: TokenBatch,
        coders: Sequence[SparseCoder],
        *,
        latents: Mapping[str, Sequence[int]] | None = None,
    ) -> dict[str, SparseActivations]:
        if not coders:
            raise ValueError("latent_acts needs at least one coder")
        layers = {c.id: self.hook_layer(c.hook) for c in coders}
        for c in coders:
            if c.d_in != self.d_model:
                raise DimensionMismatchError(
                    f"coder {c.id} d_in={c.d_in} != d_model={self.d_model}"
                )
        # one pass, stopping at the deepest hook
        h = self._embed[tokens.ids].copy()
        out: dict[str, SparseActivations] = {}
        for layer in range(max(layers.values()) + 1):
            for c in coders:
                if layers[c.id] == layer:
                    out[c.id] = self._sparse(c, h, tokens, (latents or {}).get(c.id))
            if layer == max(layers.values()):
                break
            h = self._block(layer, h)
        return out

    def _sparse(
        self, coder: SparseCoder, h: FloatArray, tokens: TokenBatch, subset: Sequence[int] | None
    ) -> SparseActivations:
        z = np.asarray(coder.encode(h))
        mask = tokens.mask.copy()
        if coder.exclude_bos:  # only a leading BOS: the same id may occur mid-text (GPT-2's EOS)
            mask[:, 0] &= tokens.ids[:, 0] != self.bos_token_id
        if subset is not None:
            idx = np.asarray(subset, dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= coder.d_sae):
                raise LatentIndexError(f"latents out of range [0, {coder.d_sae}) for {coder.id}")
            sparse = SparseActivations.from_dense(z[:, :, idx], mask)
            return SparseActivations(sparse.row, sparse.pos, idx[sparse.latent], sparse.value)
        return SparseActivations.from_dense(z, mask)

    def logits(self, tokens: TokenBatch, edits: Sequence[Edit] = ()) -> FloatArray:
        out: FloatArray = self._run(tokens.ids, self.n_layers, edits) @ self._unembed
        return out

    def probe(
        self,
        tokens: TokenBatch,
        edits: Sequence[Edit] = (),
        *,
        layers: Sequence[int] = (),
        positions: Sequence[int] | None = None,
    ) -> tuple[FloatArray, dict[int, FloatArray]]:
        for layer in layers:
            if not 0 <= layer < self.n_layers:
                raise HookNameError(f"probe layer {layer} not in [0, {self.n_layers})")
        capture: dict[int, FloatArray] = dict.fromkeys(layers, np.zeros(0))
        out: FloatArray = self._run(tokens.ids, self.n_layers, edits, capture) @ self._unembed
        if positions is None:
            return out, capture
        cols = list(positions)
        return out[:, cols], {layer: x[:, cols] for layer, x in capture.items()}

    def generate(
        self,
        prompts: Sequence[str],
        edits: Sequence[Edit] = (),
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> list[str]:
        rng = np.random.default_rng(seed)
        results = []
        for i, prompt in enumerate(prompts):
            ids = self.tokenize([prompt]).rows()[0]
            start = len(ids)
            mine = [_row_edit(e, i, len(prompts), self.d_model) for e in edits]
            for _ in range(max_new_tokens):
                logits = self.logits(TokenBatch.from_lists([ids]), mine)[0, -1, : len(self._vocab)]
                if temperature > 0:
                    p = np.exp((logits - logits.max()) / temperature)
                    nxt = int(rng.choice(len(p), p=p / p.sum()))
                else:
                    nxt = int(np.argmax(logits))
                ids.append(nxt)
            results.append(self.decode(ids[start:]))
        return results

    def unembed(self, direction: Any) -> FloatArray:
        out: FloatArray = np.asarray(direction, dtype=np.float64) @ self._unembed
        return out

    def residual(self, tokens: TokenBatch, hook: str) -> FloatArray:
        """The residual at a hook (for tests and planting features)."""
        return self._run(tokens.ids, self.hook_layer(hook), ())


def _row_edit(edit: Edit, row: int, batch: int, d_model: int) -> Edit:
    """`edit` as it applies to prompt `row` alone (a per-row Replace keeps that row's vector)."""
    if not isinstance(edit, Replace):
        return edit
    vec = np.asarray(edit.vector, dtype=np.float64)
    if vec.ndim == 2:
        if vec.shape != (batch, d_model):
            raise DimensionMismatchError(
                f"per-row Replace vector {vec.shape} != (prompts={batch}, {d_model})"
            )
        return Replace(vector=vec[row], positions=edit.positions, layer=edit.layer)
    return edit


class FakeCoder:
    """A ReLU sparse autoencoder in numpy: `z = relu((x - b_dec) W_enc + b_enc)`."""

    def __init__(
        self,
        W_enc: FloatArray,
        b_enc: FloatArray,
        W_dec: FloatArray,
        b_dec: FloatArray,
        *,
        hook: str,
        id: str | None = None,
        exclude_bos: bool = True,
    ) -> None:
        self.W_enc, self.b_enc, self._W_dec, self.b_dec = W_enc, b_enc, W_dec, b_dec
        self.d_in, self.d_sae = W_enc.shape
        if W_dec.shape != (self.d_sae, self.d_in):
            raise DimensionMismatchError(f"W_dec {W_dec.shape} != {(self.d_sae, self.d_in)}")
        self.hook = hook
        self.id = id or f"fake-sae/{hook}"
        self.exclude_bos = exclude_bos

    @property
    def W_dec(self) -> FloatArray:
        return self._W_dec

    def encode(self, x: Any) -> FloatArray:
        pre = (np.asarray(x) - self.b_dec) @ self.W_enc + self.b_enc
        out: FloatArray = np.maximum(pre, 0.0)
        return out

    def decode(self, z: Any) -> FloatArray:
        out: FloatArray = np.asarray(z) @ self._W_dec + self.b_dec
        return out

    @classmethod
    def random(cls, d_in: int, d_sae: int, *, hook: str, seed: int = 0) -> FakeCoder:
        rng = np.random.default_rng(seed)
        W_dec = rng.normal(size=(d_sae, d_in))
        W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
        return cls(W_dec.T.copy(), np.full(d_sae, -0.5), W_dec, np.zeros(d_in), hook=hook)

    @classmethod
    def planted(
        cls,
        backend: FakeBackend,
        words: Mapping[int, str],
        *,
        d_sae: int = 16,
        hook: str = "blocks.0.hook_resid_pre",
        seed: int = 0,
    ) -> FakeCoder:
        """Latent `i` fires (value ~1) exactly where `words[i]` occurs; other latents stay silent.

        Works at layer 0 (`blocks.0.hook_resid_pre`), where the residual is the token embedding.
        """
        if backend.hook_layer(hook) != 0:
            raise ValueError("planted features are exact only at blocks.0.hook_resid_pre")
        coder = cls.random(backend.d_model, d_sae, hook=hook, seed=seed)
        coder.W_enc[:] = 0.0
        coder.b_enc[:] = 0.0
        for latent, word in words.items():
            e = backend._embed[backend._id(word)]
            coder.W_enc[:, latent] = 2.0 * e / (e @ e)
            coder.b_enc[latent] = -1.0  # embedding of `word` -> 2 - 1 = 1; others ~ -1 + noise
            coder._W_dec[latent] = e / np.linalg.norm(e)
        return coder


# --- fake provider --------------------------------------------------------------------------------

Answer = str | ChatResponse | BaseException


def _count_tokens(text: str) -> int:
    return len(text.split())


class ScriptedProvider:
    """A provider whose answers come from a list (in order) or a function of the request.

    `fail_on(call_index, request)` may return an exception to raise instead of answering.
    `logprobs(request, text)` may return per-token logprobs; setting it advertises the capability.
    """

    name = "scripted"

    def __init__(
        self,
        answers: Sequence[Answer] | Callable[[ChatRequest], Answer],
        *,
        model: str = "scripted",
        fail_on: Callable[[int, ChatRequest], BaseException | None] | None = None,
        logprobs: Callable[[ChatRequest, str], Sequence[TokenLogprob]] | None = None,
        cost_per_token: float = 0.0,
        latency_s: float = 0.0,
    ) -> None:
        self.model = model
        self._answers = answers if callable(answers) else list(answers)
        self._fail_on = fail_on
        self._logprobs = logprobs
        self._cost = cost_per_token
        self._latency = latency_s
        self.capabilities = ProviderCapabilities(
            logprobs=logprobs is not None, max_top_logprobs=20 if logprobs else 0, max_n=8
        )
        self.requests: list[ChatRequest] = []
        self.usage = Usage()

    def _answer(self, index: int, request: ChatRequest) -> Answer:
        if callable(self._answers):
            return self._answers(request)
        if index >= len(self._answers):
            raise AssertionError(f"ScriptedProvider has only {len(self._answers)} answers")
        return self._answers[index]

    async def complete(self, request: ChatRequest) -> ChatResponse:
        index = len(self.requests)
        self.requests.append(request)
        if self._latency:
            await asyncio.sleep(self._latency)
        if self._fail_on is not None and (exc := self._fail_on(index, request)) is not None:
            raise exc
        answer = self._answer(index, request)
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, ChatResponse):
            response = answer
        else:
            prompt_tokens = sum(_count_tokens(m.content) for m in request.messages)
            completion_tokens = _count_tokens(answer) * request.n
            lp = None
            if request.logprobs and self._logprobs is not None:
                lp = tuple(self._logprobs(request, answer))
            response = ChatResponse(
                model=self.model,
                choices=tuple(
                    Choice(text=answer, logprobs=lp, finish_reason="stop") for _ in range(request.n)
                ),
                usage=Usage(
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    cost_usd=self._cost * (prompt_tokens + completion_tokens),
                    calls=1,
                ),
            )
        self.usage = self.usage + response.usage
        return response


def failing_every(
    k: int, error: Callable[[], BaseException] | None = None
) -> Callable[[int, ChatRequest], BaseException | None]:
    """A `fail_on` for ScriptedProvider that fails calls 0, k, 2k, ... with a server error."""
    make = error or (lambda: ProviderServerError("scripted outage", model="scripted"))
    return lambda index, _request: make() if index % k == 0 else None


# --- records --------------------------------------------------------------------------------------


def make_record(
    backend: FakeBackend,
    coder: SparseCoder,
    latent: int,
    texts: Sequence[str],
    *,
    n_explain: int | None = None,
) -> LatentRecord:
    """A LatentRecord from whole texts: those where the latent fires are activating examples
    (split alternately into explanation and scoring sets), the rest non-activating."""
    tokens = backend.tokenize(texts)
    acts = backend.latent_acts(tokens, [coder], latents={coder.id: [latent]})[coder.id]
    dense = np.zeros(tokens.shape, dtype=np.float64)
    dense[acts.row, acts.pos] = acts.value
    active: list[Example] = []
    inactive: list[Example] = []
    for r, ids in enumerate(tokens.rows()):
        ex = Example(
            tokens=tuple(ids),
            str_tokens=tuple(backend.str_tokens(ids)),
            activations=tuple(float(v) for v in dense[r, : len(ids)]),
            row=r,
            start=0,
        )
        (active if ex.max_activation > 0 else inactive).append(ex)
    values = acts.value[acts.latent == latent]
    n_tokens = int(tokens.mask.sum())
    stats = LatentStats(
        n_tokens=n_tokens,
        count=len(values),
        max=float(values.max()) if len(values) else 0.0,
        mean=float(values.mean()) if len(values) else 0.0,
    )
    explain = active[0::2] if n_explain is None else active[:n_explain]
    score = active[1::2] if n_explain is None else active[n_explain:]
    negatives = tuple(e.model_copy(update={"kind": "random"}) for e in inactive)
    return LatentRecord(
        latent=LatentRef(coder_id=coder.id, hook=coder.hook, index=latent),
        stats=stats,
        explanation_examples=tuple(explain),
        scoring_examples=tuple(score),
        non_activating=negatives,
        sampling={"source": "saexplain.testing.make_record"},
    )


@contextlib.contextmanager
def fresh_plugin_manager(**kwargs: Any) -> Iterator[PluginManager]:
    """Swap in a new process-wide plugin manager for the duration of a test."""
    manager = PluginManager(**kwargs)
    previous = set_plugin_manager(manager)
    try:
        yield manager
    finally:
        set_plugin_manager(previous)


# --- contract checks ------------------------------------------------------------------------------


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


# --- store and sampling helpers (issue 4) ---------------------------------------------------------


def synthetic_corpus(
    n_docs: int,
    *,
    seed: int = 0,
    vocab: Sequence[str] | None = None,
    min_words: int = 5,
    max_words: int = 60,
) -> list[str]:
    """Deterministic pseudo-text: `n_docs` documents of random words drawn from `vocab`."""
    words = list(vocab) if vocab is not None else [f"w{i}" for i in range(200)]
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(min_words, max_words + 1))
        docs.append(" ".join(words[i] for i in rng.integers(0, len(words), size=n)))
    return docs


class PlantedValuesCoder:
    """A sparse coder at `blocks.0.hook_resid_pre` whose latent `l` takes exactly the value
    `values[l][word]` wherever `word` occurs, and 0 elsewhere (a lookup on token embeddings).

    Unlike `FakeCoder.planted`, one latent can fire on several words with different strengths,
    which makes activation quantiles, top examples and thresholds exactly predictable.
    `W_dec` is a writable (d_sae, d_model) array of unit rows (set rows to plant neighbours).
    """

    def __init__(
        self,
        backend: FakeBackend,
        values: Mapping[int, Mapping[str, float]],
        *,
        d_sae: int = 16,
        hook: str = "blocks.0.hook_resid_pre",
        id: str | None = None,
        exclude_bos: bool = True,
        seed: int = 0,
    ) -> None:
        if backend.hook_layer(hook) != 0:
            raise ValueError("planted values are exact only at blocks.0.hook_resid_pre")
        self.hook, self.d_in, self.d_sae = hook, backend.d_model, d_sae
        self.id = id or f"planted-values/{hook}"
        self.exclude_bos = exclude_bos
        self._entries: list[tuple[int, FloatArray, float]] = []
        for latent, table in values.items():
            if not 0 <= latent < d_sae:
                raise LatentIndexError(f"latent {latent} not in [0, {d_sae})")
            for word, value in table.items():
                self._entries.append((latent, backend._embed[backend._id(word)].copy(), value))
        rng = np.random.default_rng(seed)
        w = rng.normal(size=(d_sae, self.d_in))
        self._W_dec: FloatArray = w / np.linalg.norm(w, axis=1, keepdims=True)

    @property
    def W_dec(self) -> FloatArray:
        return self._W_dec

    def encode(self, x: Any) -> FloatArray:
        h = np.asarray(x, dtype=np.float64)
        z = np.zeros((*h.shape[:-1], self.d_sae))
        for latent, e, value in self._entries:
            hit = np.abs(h - e).max(axis=-1) < 1e-9
            z[..., latent] += value * hit
        return z

    def decode(self, z: Any) -> FloatArray:
        out: FloatArray = np.asarray(z) @ self._W_dec
        return out


# --- cross-backend agreement (issue 3) ------------------------------------------------------------
# Appended for the backend plugins: every backend must give the same numbers for the same request.
# Arrays are converted by duck typing (`.detach().cpu().float()` where present), so this module
# never imports torch.


def as_numpy(x: Any) -> npt.NDArray[np.float64]:
    """A float64 numpy copy of a numpy array or a tensor-like (torch) value."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().float()
    return np.asarray(x, dtype=np.float64)


def default_edits(backend: Backend, coder: SparseCoder, *, seed: int = 0) -> list[Edit]:
    """One edit of each kind, strong enough to change the logits: a Clamp of `coder`'s latent 0
    to a large value, an Add of a random direction after block 0, a Replace at position 1 of the
    last layer's input."""
    rng = np.random.default_rng(seed)
    d = backend.d_model
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    vector = rng.normal(size=d) * 3.0
    return [
        Clamp(coder=coder, latent=0, value=20.0),
        Add(direction=direction, scale=20.0, hook="blocks.0.hook_resid_post"),
        Replace(vector=vector, positions=(1,), layer=backend.n_layers - 1),
    ]


def check_backends_agree(
    backends: Sequence[Backend],
    coders: Sequence[SparseCoder],
    texts: Sequence[str] = ("The cat sat on the mat.", "Dogs bark at night", "A"),
    *,
    edits: Sequence[Edit] | None = None,
    prompts: Sequence[str] = ("Once upon a time", "The meaning of life is"),
    max_new_tokens: int = 6,
    atol: float = 1e-4,
) -> dict[str, float]:
    """Assert that `backends` (wrapping the same weights) agree on tokens, latent activations of
    every coder, logits with no edit and under each edit, greedy generations with no edit and under
    the first edit of each kind, and that no edit survives its call. Returns the largest
    differences seen, by check."""
    assert len(backends) >= 2, "need at least two backends to compare"
    ref, others = backends[0], list(backends[1:])
    worst: dict[str, float] = {}

    def record(key: str, diff: float) -> None:
        worst[key] = max(worst.get(key, 0.0), diff)

    tokens = ref.tokenize(list(texts))
    for other in others:
        t = other.tokenize(list(texts))
        assert np.array_equal(t.ids, tokens.ids) and np.array_equal(t.mask, tokens.mask), (
            f"{other.name} tokenizes differently from {ref.name}"
        )
        assert other.bos_token_id == ref.bos_token_id, "BOS ids differ"
    batch, seq = tokens.shape
    mask = tokens.mask

    ref_acts = ref.latent_acts(tokens, coders)
    for coder in coders:
        a = ref_acts[coder.id].to_dense((batch, seq, coder.d_sae))
        assert len(ref_acts[coder.id]) > 0, f"{coder.id} never fires: the comparison is vacuous"
        for other in others:
            b = other.latent_acts(tokens, coders)[coder.id].to_dense((batch, seq, coder.d_sae))
            diff = float(np.abs(a - b).max())
            record("latent_acts", diff)
            assert diff <= atol * max(1.0, float(np.abs(a).max())), (
                f"{coder.id}: latent acts differ between {ref.name} and {other.name} by {diff}"
            )

    base = as_numpy(ref.logits(tokens))
    plan = list(edits) if edits is not None else default_edits(ref, coders[0])
    generated: set[str] = set()
    for edit in [None, *plan]:
        kind = "none" if edit is None else type(edit).__name__
        applied = [] if edit is None else [edit]
        want = as_numpy(ref.logits(tokens, applied))
        if edit is not None:
            assert not np.allclose(want[mask], base[mask], atol=atol), (
                f"{edit!r} leaves the logits as they are: the comparison is vacuous"
            )
        for other in others:
            got_logits = as_numpy(other.logits(tokens, applied))
            diff = float(np.abs(want - got_logits)[mask].max())
            record(f"logits[{kind}]", diff)
            assert diff <= atol * max(1.0, float(np.abs(want[mask]).max())), (
                f"logits under {kind} differ between {ref.name} and {other.name} by {diff}"
            )
        if edit is not None and kind in generated:
            continue  # greedy generations: once per edit kind (each step is a full forward)
        generated.add(kind)
        gen = ref.generate(list(prompts), applied, max_new_tokens=max_new_tokens)
        for other in others:
            got = other.generate(list(prompts), applied, max_new_tokens=max_new_tokens)
            assert got == gen, (
                f"greedy generations under {kind}: {ref.name} {gen} != {other.name} {got}"
            )

    # self-explanation's primitives: per-row Replace vectors, and `probe`'s residuals
    rng = np.random.default_rng(11)
    vectors = rng.normal(size=(batch, ref.d_model)) * 4.0
    row_edit = Replace(vector=vectors, positions=(1,), layer=min(1, ref.n_layers - 1))
    layers = sorted({0, ref.n_layers - 1})
    want_logits, want_resid = ref.probe(tokens, [row_edit], layers=layers)
    want_l = as_numpy(want_logits)
    for other in others:
        got_logits, got_resid = other.probe(tokens, [row_edit], layers=layers)
        diff = float(np.abs(as_numpy(got_logits) - want_l)[mask].max())
        record("probe[logits]", diff)
        assert diff <= atol * max(1.0, float(np.abs(want_l[mask]).max())), (
            f"probe logits differ between {ref.name} and {other.name} by {diff}"
        )
        for layer in layers:
            w, g = as_numpy(want_resid[layer]), as_numpy(got_resid[layer])
            diff = float(np.abs(w - g)[mask].max())
            record("probe[resid]", diff)
            assert diff <= atol * max(1.0, float(np.abs(w[mask]).max())), (
                f"probe residual at layer {layer} differs between {ref.name} and {other.name}"
            )
    gen_vectors = rng.normal(size=(len(prompts), ref.d_model)) * 4.0
    gen_edit = Replace(vector=gen_vectors, positions=(1,), layer=row_edit.layer)
    gen = ref.generate(list(prompts), [gen_edit], max_new_tokens=max_new_tokens)
    for other in others:
        got = other.generate(list(prompts), [gen_edit], max_new_tokens=max_new_tokens)
        assert got == gen, f"per-row Replace generations: {ref.name} {gen} != {other.name} {got}"

    for backend in backends:
        after = as_numpy(backend.logits(tokens))
        assert np.allclose(after[mask], base[mask], atol=atol), f"an edit leaked in {backend.name}"
    return worst


def check_planted(
    backend: Backend, coder: SparseCoder, planted: Mapping[int, int], texts: Sequence[str]
) -> None:
    """Assert latent `i` of `coder` fires exactly where token id `planted[i]` occurs in `texts`
    (BOS excluded when the coder asks), and no other latent fires."""
    tokens = backend.tokenize(list(texts))
    acts = backend.latent_acts(tokens, [coder])[coder.id]
    fired = {
        (int(r), int(p), int(lat))
        for r, p, lat in zip(acts.row, acts.pos, acts.latent, strict=True)
    }
    expected = set()
    for r, row in enumerate(tokens.rows()):
        for p, tok in enumerate(row):
            if p == 0 and coder.exclude_bos and tok == backend.bos_token_id:
                continue
            expected |= {(r, p, lat) for lat, t in planted.items() if t == tok}
    assert expected, "no planted token occurs in the texts: the check is vacuous"
    assert fired == expected, (
        f"{backend.name}: fired {sorted(fired - expected)} extra, missed {sorted(expected - fired)}"
    )


# --- competent explainer double (issue 6: explainers) -------------------------------------------

_HIGHLIGHT = re.compile(r"<<(.+?)>>", re.DOTALL)
_JSON_STRING = r'"(?:[^"\\]|\\.)*"'
_TOKEN_LIST_LINE = re.compile(rf"\s*(?:{_JSON_STRING}\s*,\s*)+{_JSON_STRING}\s*")
_ANSWER_FORMAT = re.compile(r'"([A-Z][A-Za-z ]{2,30}):\s*<')


def _concept_key(text: str) -> str:
    """Group surface variants of one word: case, edge punctuation, a plural -s."""
    word = re.sub(r"^\W+|\W+$", "", text.strip().lower()) or text.strip()
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def competent_explainer(request: ChatRequest) -> str:
    """A `ScriptedProvider` responder that explains like a competent LLM.

    It reads only the LAST user message (few-shot turns before it are examples, not evidence):
    every `<<highlighted>>` span counts as one vote, and so does each of the first ten tokens of
    the first token list (a line of comma-separated JSON strings; prompts list promoted tokens
    first). Votes are grouped by word (case, punctuation and a plural -s ignored); the winner,
    ties going to the first seen, is the concept. It answers in the format the prompt asks for:
    the marker it names (`"Explanation: <...>"`), a short label when asked for 1 to 6 words,
    and a line of reasoning first when asked to think step by step.
    """
    import json  # local: the module's import block is shared with other sections

    users = [m.content for m in request.messages if m.role == "user"]
    last = users[-1] if users else ""
    system = "\n".join(m.content for m in request.messages if m.role == "system")
    votes: dict[str, list[str]] = {}
    for span in _HIGHLIGHT.findall(last):
        votes.setdefault(_concept_key(span), []).append(span.strip())
    for line in last.splitlines():
        if _TOKEN_LIST_LINE.fullmatch(line):
            for quoted in re.findall(_JSON_STRING, line)[:10]:
                token = str(json.loads(quoted))
                if token.strip():
                    votes.setdefault(_concept_key(token), []).append(token.strip())
            break
    if not votes:
        return "I could not find a pattern in this evidence."
    key = max(votes, key=lambda k: len(votes[k]))  # max keeps the first of equal counts
    forms = votes[key]
    surface = max(dict.fromkeys(f.lower() for f in forms), key=[f.lower() for f in forms].count)
    found = _ANSWER_FORMAT.search(system + "\n" + last)
    marker = found.group(1) if found else "Explanation"
    if re.search(r"\b1 to 6 words\b", system):
        answer = surface
    else:
        answer = f'the word "{surface}" and its close variants'
    lines = []
    if "step by step" in system.lower():
        total = sum(len(v) for v in votes.values())
        lines.append(f'Most of the evidence ({len(forms)} of {total} items) is "{surface}".')
    lines.append(f"{marker}: {answer}")
    return "\n".join(lines)


# --- competent scorer double (issue 6: scorers) -------------------------------------------------

# Double, curly double, curly single quotes and backticks; not ' (it is also an apostrophe).
_SCORER_QUOTES = re.compile(
    r'"([^"]+)"|\u201c([^\u201d]+)\u201d|\u2018([^\u2019]+)\u2019|`([^`]+)`'
)
_SCORER_STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "the a an and or of in on at to for with by from as is are be this that these those it "
        "its word words token tokens latent feature neuron fires activates activating activation "
        "text texts about mentions mention related relating containing contains like such when "
        "where which who whose any all some more most very other only also not",
    )
)
_SCORER_EXAMPLE = re.compile(r"^Example (\d+): ?(.*)$")
_SCORER_NUMBERED = re.compile(r"^(\d+)\t(.*)$")
_SCORER_ECHO = re.compile(r"^(.*)\tunknown$")
_SCORER_MARK = re.compile(r"<<(.*?)>>")
_SCORER_LP_TOKEN = re.compile(r"\d+|\s+|[^\d\s]+")


def explanation_keywords(explanation: str) -> list[str]:
    """What a careful reader would look for: the quoted words of an explanation (`the word
    "cat"` -> `cat`), else its content words."""
    quoted = [next(g for g in m.groups() if g) for m in _SCORER_QUOTES.finditer(explanation)]
    if quoted:
        return [q.strip().lower() for q in quoted if q.strip()]
    words = re.findall(r"[A-Za-z0-9]+", explanation)
    return [w.lower() for w in words if len(w) > 2 and w.lower() not in _SCORER_STOPWORDS]


def _scorer_mentions(text: str, keywords: Sequence[str]) -> bool:
    return any(
        re.search(rf"(?<![A-Za-z0-9]){re.escape(k)}(?![A-Za-z0-9])", text, re.IGNORECASE)
        for k in keywords
    )


def competent_scorer(request: ChatRequest) -> str:
    """A `ScriptedProvider` responder that answers the bundled scorer prompts like a competent
    LLM: it reads the `Description:` line and judges each item by the explanation's keywords
    (`explanation_keywords`), never by the truth.

    - detection (`Example k: text` lines): 1 where the text mentions a keyword;
    - fuzzing (lines with `<<marks>>`): 1 where every mark mentions a keyword;
    - simulation (`k<TAB>token` lines): `k<TAB>10` on tokens that mention a keyword, else 0;
    - simulation echo (`token<TAB>unknown` lines): the token copied, a tab, 10 or 0.

    Detection and fuzzing answers are lists like `[1, 0, 0, 1, 0]`.
    """
    user = next(m.content for m in reversed(request.messages) if m.role == "user")
    lines = user.splitlines()
    described = next((ln.split(":", 1)[1] for ln in lines if ln.startswith("Description:")), "")
    keywords = explanation_keywords(described)
    echo = [m.group(1) for ln in lines if (m := _SCORER_ECHO.match(ln))]
    numbered = [(m.group(1), m.group(2)) for ln in lines if (m := _SCORER_NUMBERED.match(ln))]
    if echo and len(echo) >= len(numbered):  # a token may itself be a number or "unknown"
        return "\n".join(f"{t}\t{10 if _scorer_mentions(t, keywords) else 0}" for t in echo)
    if numbered:
        return "\n".join(f"{k}\t{10 if _scorer_mentions(t, keywords) else 0}" for k, t in numbered)
    answers = []
    for ln in lines:
        m = _SCORER_EXAMPLE.match(ln)
        if m is None:
            continue
        text = m.group(2)
        spans = _SCORER_MARK.findall(text)
        if "<<" in text:
            answers.append(int(bool(spans) and all(_scorer_mentions(s, keywords) for s in spans)))
        else:
            answers.append(int(_scorer_mentions(text, keywords)))
    return "[" + ", ".join(map(str, answers)) + "]"


def competent_logprobs(request: ChatRequest, text: str) -> list[TokenLogprob]:
    """Logprobs for `competent_scorer`'s answers: numbers are single tokens; an answer value v
    in 0..10 gets probability 0.8 and its neighbours v-1 and v+1 share the rest, so P(1) is
    about 0.89 where the answer is 1 and 0.2 where it is 0 (a confident, calibrated reader)."""
    out = []
    for tok in _SCORER_LP_TOKEN.findall(text):
        top: tuple[tuple[str, float], ...] = ()
        logprob = 0.0
        if tok.isdigit() and int(tok) <= 10:
            v = int(tok)
            others = [u for u in (v - 1, v + 1) if 0 <= u <= 10]
            logprob = float(np.log(0.8))
            top = ((tok, logprob), *((str(u), float(np.log(0.2 / len(others)))) for u in others))
        out.append(TokenLogprob(token=tok, logprob=logprob, top=top))
    return out


def competent_scorer_provider(*, logprobs: bool = True, **kwargs: Any) -> ScriptedProvider:
    """A ScriptedProvider answering with `competent_scorer` (and `competent_logprobs`)."""
    return ScriptedProvider(
        competent_scorer, logprobs=competent_logprobs if logprobs else None, **kwargs
    )
