"""What plugins implement: sparse coders, backends, providers, explainers and scorers.

These are structural (`typing.Protocol`): a plugin satisfies one by having the attributes and
methods below, with no base class to inherit. Arrays are whatever the backend uses (torch tensors,
numpy arrays); the core never imports torch, so they are typed `Array` here.

Optional capabilities are small protocols of their own (`ChatTemplating`, `ProbeAndGenerate`,
`ModelLocking`, `Transcoder`, `ReadinessCheck`, `CostEstimator`, `TokenCounter`, `DeclaresNeeds`):
the core asks `isinstance(obj, Capability)` instead of reading attributes by name, so every
optional part of the contract is declared, documented and type-checked here.

Edits (`Clamp`, `Add`, `Replace`) are plain data. A backend applies them for the duration of one
call only: its hooks are removed in `finally`, also when the forward pass raises.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from saexplain.models import (
    ChatRequest,
    ChatResponse,
    Explanation,
    LatentRecord,
    Message,
    Score,
)

Array = Any
"""A tensor-like value owned by a backend (a torch tensor for the bundled backends)."""


# --- data exchanged with backends -----------------------------------------------------------------


@dataclass(frozen=True)
class TokenBatch:
    """Token ids of a batch of contexts, right-padded; `mask` is True at real tokens."""

    ids: npt.NDArray[np.int64]  # (batch, seq)
    mask: npt.NDArray[np.bool_]  # (batch, seq)

    def __post_init__(self) -> None:
        if self.ids.ndim != 2 or self.ids.shape != self.mask.shape:
            raise ValueError(
                f"ids {self.ids.shape} and mask {self.mask.shape} must be equal 2-D shapes"
            )

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]], pad_id: int = 0) -> TokenBatch:
        width = max((len(r) for r in rows), default=0)
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.bool_)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = True
        return cls(ids=ids, mask=mask)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.ids.shape[0]), int(self.ids.shape[1]))

    def rows(self) -> list[list[int]]:
        return [row[m].tolist() for row, m in zip(self.ids, self.mask, strict=True)]


@dataclass(frozen=True)
class SparseActivations:
    """Nonzero latent activations of one coder over a batch, in coordinate form."""

    row: npt.NDArray[np.int64]
    pos: npt.NDArray[np.int64]
    latent: npt.NDArray[np.int64]
    value: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        n = len(self.value)
        if not (len(self.row) == len(self.pos) == len(self.latent) == n):
            raise ValueError("row, pos, latent and value must have the same length")

    def __len__(self) -> int:
        return len(self.value)

    @classmethod
    def empty(cls) -> SparseActivations:
        z = np.zeros(0, dtype=np.int64)
        return cls(row=z, pos=z, latent=z, value=np.zeros(0, dtype=np.float32))

    @classmethod
    def from_dense(
        cls, acts: npt.NDArray[np.floating[Any]], mask: npt.NDArray[np.bool_] | None = None
    ) -> SparseActivations:
        """From a dense (batch, seq, d_sae) array; positions where `mask` is False are dropped."""
        keep = acts > 0
        if mask is not None:
            keep &= mask[:, :, None]
        row, pos, latent = np.nonzero(keep)
        return cls(
            row=row.astype(np.int64),
            pos=pos.astype(np.int64),
            latent=latent.astype(np.int64),
            value=acts[row, pos, latent].astype(np.float32),
        )

    def to_dense(self, shape: tuple[int, int, int]) -> npt.NDArray[np.float32]:
        out = np.zeros(shape, dtype=np.float32)
        out[self.row, self.pos, self.latent] = self.value
        return out


# --- edits ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clamp:
    """Set (or add to, or scale) one latent of `coder` in the coder's path at `hook`.

    The coder's reconstruction error is kept: the residual becomes
    `x - decode(encode(x)) + decode(encode(x) with the latent edited)`.
    `positions=None` edits every position. `rows`: apply to these rows of the batch only (row
    `i` of a `generate` call is prompt `i`); None: every row. Rows outside the batch are refused.
    One call can then hold a clean and an edited arm (the prompts twice, the edit on the second
    half), sharing one batch and one KV-cached decode.
    """

    coder: SparseCoder
    latent: int
    value: float
    positions: tuple[int, ...] | None = None
    mode: Literal["set", "add", "scale"] = "set"
    rows: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Add:
    """Steer: add `scale * direction` to the activation at `hook` (all or given positions).

    `rows`: apply to these rows of the batch only; None: every row (as for `Clamp`)."""

    direction: Array
    scale: float
    hook: str
    positions: tuple[int, ...] | None = None
    rows: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Replace:
    """Overwrite the residual stream entering block `layer` at `positions` with `vector`.

    The self-explanation primitive: the same positions in every row of the batch. `vector` is one
    `(d_model,)` vector for every row, or `(batch, d_model)`: one vector per row, so a sweep over
    scales is one batch (in `generate`, one row per prompt).
    """

    vector: Array
    positions: tuple[int, ...]
    layer: int


Edit = Clamp | Add | Replace


# --- the protocols --------------------------------------------------------------------------------


@runtime_checkable
class SparseCoder(Protocol):
    """A dictionary of latents reading activations at one hook (SAE, transcoder, neurons).

    A transcoder reads `hook` and writes elsewhere; it says where with `hook_out` (the
    `Transcoder` capability; backends apply a Clamp at `write_hook(coder)`).
    `exclude_bos` drops position 0 when it holds the BOS token, not later tokens with that id.
    """

    id: str  # unique within a run, e.g. "gpt2-small-res-jb/blocks.8.hook_resid_pre"
    hook: str  # canonical TransformerLens-style hook name it reads
    d_in: int
    d_sae: int
    exclude_bos: bool  # drop the BOS position from collected activations

    @property
    def W_dec(self) -> Array:  # (d_sae, d_in)
        ...

    def encode(self, x: Array) -> Array: ...

    def decode(self, z: Array) -> Array: ...


@runtime_checkable
class Transcoder(Protocol):
    """Capability of a sparse coder that writes somewhere other than where it reads.

    A transcoder encodes the activation at `hook` and its decoder writes at `hook_out` (for
    example `blocks.0.hook_mlp_out`); a Clamp edits the activation at `hook_out`. An SAE may set
    `hook_out` equal to `hook`.
    """

    hook_out: str


@runtime_checkable
class Fingerprinted(Protocol):
    """Capability of a backend or coder that can fingerprint its weights.

    `fingerprint()` returns a short digest of the weights' content (`saexplain.fingerprint`:
    names, shapes, dtypes and a strided sample of every array). A run records it in its
    identity, so a model or SAE whose weights changed in place, or another SAE under the same
    name, never reuses the data computed from the old weights.
    """

    def fingerprint(self) -> str: ...


def write_hook(coder: SparseCoder) -> str:
    """Where `coder`'s decoder writes: `hook_out` for a transcoder, else `hook`."""
    return coder.hook_out if isinstance(coder, Transcoder) else coder.hook


@runtime_checkable
class Backend(Protocol):
    """A model stack adapter: tokenization, early-stopping activation capture, edited runs.

    Optional capabilities, each its own protocol below: `ChatTemplating` (the model's chat
    template), `ProbeAndGenerate` (probe and decode from one edited pass) and `ModelLocking` (the
    lock that serialises model work; `saexplain.concurrency.run_model` takes it).
    """

    name: str  # the backend plugin's registered name
    model_id: str
    d_model: int
    n_layers: int
    bos_token_id: int | None

    def tokenize(
        self, texts: Sequence[str], *, prepend_bos: bool = True, max_length: int | None = None
    ) -> TokenBatch: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def str_tokens(self, ids: Sequence[int]) -> list[str]: ...

    def latent_acts(
        self,
        tokens: TokenBatch,
        coders: Sequence[SparseCoder],
        *,
        latents: Mapping[str, Sequence[int]] | None = None,
    ) -> dict[str, SparseActivations]:
        """Run the model only as far as the deepest coder's hook; sparse acts by coder id.

        `latents` optionally restricts each coder (by id) to a subset of latent indices.
        """
        ...

    def logits(self, tokens: TokenBatch, edits: Sequence[Edit] = ()) -> Array:
        """Final logits (batch, seq, vocab) with `edits` applied for this call only."""
        ...

    def generate(
        self,
        prompts: Sequence[str],
        edits: Sequence[Edit] = (),
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> list[str]:
        """Continuations (new text only) of each prompt; greedy when temperature is 0.

        Edit positions count from the start of each (BOS-prefixed) prompt, so a `Replace` patches
        prompt tokens only; a per-row `Replace` vector has one row per prompt.
        """
        ...

    def unembed(self, direction: Array) -> Array:
        """Logit lens: the final norm (where the model has one) and unembedding of a direction."""
        ...

    def probe(
        self,
        tokens: TokenBatch,
        edits: Sequence[Edit] = (),
        *,
        layers: Sequence[int] = (),
        positions: Sequence[int] | None = None,
    ) -> tuple[Array, dict[int, Array]]:
        """One edited forward pass: the final logits (batch, seq, vocab), as `logits` gives, and
        the residual stream entering each block in `layers` (`blocks.L.hook_resid_pre`, after any
        edit at that site), each (batch, seq, d_model). `0 <= L < n_layers`. With `positions`,
        only those positions (in that order) are returned, and a backend may skip the rest of
        the unembedding.

        Self-explanation reads the patched prompt's last-token residual at a deeper layer and the
        first answer token's distribution from the same pass.
        """
        ...


@runtime_checkable
class ChatTemplating(Protocol):
    """Capability of a backend whose model has a chat template."""

    def chat_prompt(self, messages: Sequence[Message], prefill: str = "") -> str | None:
        """`messages` in the model's chat template, the assistant's answer opened and `prefill`
        (the start of that answer) appended; `tokenize` of the result (BOS prepended) gives the
        template's tokens. None when this model has no template: methods then fall back to a
        plain "User: ...\nAssistant: ..." layout."""
        ...


@runtime_checkable
class ProbeAndGenerate(Protocol):
    """Capability of a backend that probes and decodes from the same edited pass.

    Self-explanation's sweep uses it to decode every scale from its metrics pass; without it, it
    calls `probe` and then `generate`.
    """

    def probe_and_generate(
        self,
        tokens: TokenBatch,
        edits: Sequence[Edit] = (),
        *,
        layers: Sequence[int] = (),
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> tuple[Array, dict[int, Array], list[list[int]]]:
        """`(logits (batch, vocab), {layer: residual (batch, d_model)}, [new ids per row])`:
        `probe` at each row's last token and each row's continuation (up to end-of-text), from
        one edited pass (rows of different lengths, in a padded batch, may run as one pass per
        length); edits as in `generate`."""
        ...


@runtime_checkable
class ModelLocking(Protocol):
    """Capability of a backend that owns the lock serialising work on its model.

    Torch backends attach hooks to one shared model: two edited passes at once would see each
    other's hooks. Every method's model work, and the pipeline's collection and record stages,
    therefore run under this lock (`saexplain.concurrency.run_model`, `model_lock`). It is
    re-entrant, so model work may nest. A backend without it shares one process-wide lock.
    """

    model_lock: threading.RLock


@dataclass(frozen=True)
class ProviderCapabilities:
    logprobs: bool = False
    max_top_logprobs: int = 0
    max_n: int = 1  # the largest `n` served in one call (larger ones are split by the caller)
    # scores `ChatRequest.score_text` (its tokens' log-probabilities after the prompt)
    prompt_logprobs: bool = False
    # continues `ChatRequest.prefill` (a prefilled start of the assistant's reply)
    prefill: bool = False


@runtime_checkable
class Provider(Protocol):
    """An LLM behind a chat interface. Retries, caching, concurrency and spend live here."""

    name: str
    model: str
    capabilities: ProviderCapabilities

    async def complete(self, request: ChatRequest) -> ChatResponse: ...


@runtime_checkable
class Preflight(Protocol):
    """Capability of an explainer or scorer that can tell, once the run's components exist and
    before any collection or LLM call, whether it will be able to run with them (e.g. `surprisal`
    on a provider without prompt logprobs): the pipeline calls `preflight` while preparing."""

    def preflight(self, ctx: MethodContext) -> None:
        """Raise a `saexplain.errors.ConfigError` naming what to change if the method cannot run
        with `ctx`'s backend, coder and providers."""
        ...


@runtime_checkable
class PromptWording(Protocol):
    """Capability of an explainer that asks an LLM with a prompt of its own: `prompt_wording`
    is the instruction text and few-shot answers it shows, which the run's generic-explanation
    flags compare explanations with (an explanation repeating it is an instruction echo)."""

    def prompt_wording(self) -> str:
        """The prompt's own wording (no live evidence)."""
        ...


@runtime_checkable
class ReadinessCheck(Protocol):
    """Capability of a provider (or other component) that can tell before any work whether it
    will be able to run: the pipeline calls `check_ready` while preparing a run."""

    def check_ready(self) -> None:
        """Raise a clear `saexplain.errors` error (e.g. a missing API key) if not ready."""
        ...


@runtime_checkable
class CostEstimator(Protocol):
    """Capability of a provider that knows its prices (`saexplain estimate` uses it)."""

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """US dollars for that many tokens; None when the price is unknown."""
        ...


@dataclass(frozen=True)
class BatchState:
    """Where a submitted batch stands (`BatchSubmitting.poll_batch`).

    `status` is "pending" (validating, in progress, finalising) or final: "completed",
    "failed", "expired" or "cancelled". When final, `results` maps each request's key to its
    answer, or to the `ProviderError` of that one item (an error line, a malformed line); a key
    left out got no answer (a failed or expired batch), so the caller asks it interactively.
    """

    status: Literal["pending", "completed", "failed", "expired", "cancelled"]
    results: Mapping[str, ChatResponse | Exception] = field(default_factory=dict)
    detail: str = ""

    @property
    def done(self) -> bool:
        return self.status != "pending"


@runtime_checkable
class BatchSubmitting(Protocol):
    """Capability of a provider with an asynchronous batch API at a discount (OpenAI's
    `/v1/batches` and compatible servers): `saexplain.providers.batch.BatchLayer` sends a run's
    requests through it when the run's `ProviderSpec.batch` is set. Answers carry the batch
    price in their `Usage.cost_usd`."""

    def batch_price_factor(self) -> float | None:
        """The batch price as a fraction of the interactive one (0.5: half price); None when
        this provider's model has no batch API it can use."""
        ...

    async def submit_batch(self, requests: Mapping[str, ChatRequest]) -> str:
        """Submit `requests` (by key; the keys come back in `BatchState.results`) as one batch
        and return its id; a `ProviderError` when it cannot be submitted."""
        ...

    async def poll_batch(self, batch_id: str) -> BatchState:
        """The batch's state now; its results once final."""
        ...


@runtime_checkable
class TokenCounter(Protocol):
    """Capability of a provider with its own tokenizer (`saexplain estimate` counts with it;
    without it, about four characters make a token)."""

    def count_tokens(self, text: str) -> int:
        """The number of tokens `text` takes for this provider's model."""
        ...


@dataclass
class MethodContext:
    """What a method may use. Methods never import a model stack or LLM client directly."""

    backend: Backend | None = None
    coder: SparseCoder | None = None
    providers: Mapping[str, Provider] = field(default_factory=dict)
    store: Any = None
    seed: int = 0
    settings: Mapping[str, Any] = field(default_factory=dict)
    # a folder of the run where a method may cache what it computed (the pipeline gives
    # `<run>/cache`); None outside a run: cache in memory or not at all
    work_dir: Path | None = None

    def provider(self, role: str = "explainer") -> Provider:
        """The provider for a role ("explainer", "scorer", ...); falls back to "default"."""
        for key in (role, "default"):
            if key in self.providers:
                return self.providers[key]
        raise LookupError(f"no provider for role {role!r}; configured: {sorted(self.providers)}")


@runtime_checkable
class Explainer(Protocol):
    name: str

    async def explain(self, record: LatentRecord, ctx: MethodContext) -> Explanation: ...


@runtime_checkable
class Scorer(Protocol):
    name: str

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score: ...


@runtime_checkable
class MethodCalls(Protocol):
    """Where one explainer or scorer call runs, by the run's method name: what an executor
    hands `saexplain.pipeline.explain_and_score(..., calls=...)`, which keeps everything else
    (pending pairs, resume, phases, writing each result once)."""

    async def explain(self, name: str, record: LatentRecord) -> Explanation: ...

    async def score(self, name: str, record: LatentRecord, explanation: Explanation) -> Score: ...


@runtime_checkable
class Executor(Protocol):
    """Runs a prepared run's explain-and-score stage somewhere else than in this process (a
    `register_executors` plugin, chosen by the run config's `executor`). `p` is the run's
    `saexplain.pipeline.Prepared`. The run directory keeps one writer, this process: an executor
    returns results to it, typically through `explain_and_score(p, ..., calls=...)`."""

    async def explain_and_score(
        self, p: Any, records: Sequence[LatentRecord], store: object, *, progress: bool
    ) -> None: ...


@runtime_checkable
class CollectingExecutor(Protocol):
    """An executor that also collects the run's activation store elsewhere (optional capability
    of an `Executor`; `saexplain-ray` shards collection over its workers). `p` is the run's
    `saexplain.pipeline.Prepared`, `path` the store directory (on storage the workers see).
    Returns True once the store at `path` holds every context (the driver then reads it and
    computes its statistics), or False to let the run collect in this process (e.g. the
    model was passed as an object, which the workers cannot build again)."""

    def collect(self, p: Any, path: Path, *, progress: bool) -> bool: ...


@dataclass(frozen=True)
class Needs:
    """What a method uses from the run, declared as data: the pipeline builds only what some
    chosen method needs (a `selfexplain`-only run builds no provider, and collects nothing).

    `records`: the method reads the record's examples or statistics, which the run builds from
    activations collected over the dataset. True unless declared otherwise; when no chosen
    method reads them, the run collects nothing and each method gets a record holding only the
    latent (no examples, zero statistics)."""

    provider: bool = False
    backend: bool = False
    coder: bool = False
    records: bool = True


LEGACY_NEEDS = Needs(provider=True, backend=True, coder=True)
"""What a method without a `needs` attribute is assumed to use: everything."""


@runtime_checkable
class DeclaresNeeds(Protocol):
    """Capability of an explainer or scorer that declares what it uses (see `Needs`)."""

    needs: Needs


@runtime_checkable
class RecordsSettings(Protocol):
    """Capability of an explainer or scorer that says which settings it records with every
    result (resolved, prompts by `name@version`): the run keys its results by a digest of them,
    so a changed setting or prompt version makes new results."""

    def recorded_settings(self) -> dict[str, Any]: ...


def needs_of(method: object) -> Needs:
    """A method's declared `needs`, or everything for a method that declares none."""
    if isinstance(method, DeclaresNeeds) and isinstance(method.needs, Needs):
        return method.needs
    return LEGACY_NEEDS


def check_latent_request(
    coders: Sequence[SparseCoder], latents: Mapping[str, Sequence[int]] | None
) -> None:
    """The checks every backend's `latent_acts` makes before model work, so all backends reject
    a bad request with the same error types: at least one coder, unique coder ids, `latents`
    keyed by those ids, every latent index in `[0, d_sae)`."""
    from saexplain.errors import ConfigError, LatentIndexError

    if not coders:
        raise ConfigError("latent_acts needs at least one coder")
    ids_seen = [c.id for c in coders]
    if len(set(ids_seen)) != len(ids_seen):
        raise ConfigError(f"coder ids must be unique, got {ids_seen}")
    unknown = set(latents or {}) - set(ids_seen)
    if unknown:
        raise ConfigError(f"latents given for unknown coders {sorted(unknown)}")
    for c in coders:
        subset = np.asarray((latents or {}).get(c.id, ()), dtype=np.int64)
        if subset.size and (subset.min() < 0 or subset.max() >= c.d_sae):
            raise LatentIndexError(f"latents out of range [0, {c.d_sae}) for {c.id}")
