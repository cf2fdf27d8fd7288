"""The data model: plain, frozen, JSON round-trippable records. No tensors live here.

Everything saexplain writes to disk or passes between plugins is one of these models, so a run
directory can be read back into the same objects (`Model.model_validate_json(line)`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    NonNegativeInt,
    field_validator,
    model_validator,
)

Settings = dict[str, JsonValue]
"""Method settings: JSON values only, so they can be recorded beside every result."""


class Frozen(BaseModel):
    """Base of every saexplain model: immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --- identity -----------------------------------------------------------------------------------


class LatentRef(Frozen):
    """Which latent: a coder (by id), the hook it reads, and the latent's index."""

    coder_id: str = Field(min_length=1)
    hook: str = Field(min_length=1)
    index: NonNegativeInt

    @property
    def key(self) -> str:
        """A stable file-name-safe key, delphi style: `<hook>_latent<i>`."""
        return f"{self.hook}_latent{self.index}"

    def __str__(self) -> str:
        return f"{self.coder_id}:{self.index}"


# --- examples and records -------------------------------------------------------------------------


class ExampleKind(StrEnum):
    ACTIVATING = "activating"
    RANDOM = "random"  # contexts where the latent is zero
    NEIGHBOUR = "neighbour"  # contexts where similar latents fire and this one does not
    SIMILAR_TEXT = "similar_text"  # hard negatives near activating examples in embedding space
    GENERATED = "generated"  # text written by an LLM or the model (generation scorers)


class Example(Frozen):
    """A window of tokens with this latent's activation at every token."""

    tokens: tuple[int, ...]
    str_tokens: tuple[str, ...]
    activations: tuple[float, ...]
    kind: ExampleKind = ExampleKind.ACTIVATING
    row: NonNegativeInt | None = None  # context index in the store
    start: NonNegativeInt | None = None  # first token position inside that context
    quantile: Annotated[int, Field(ge=0)] | None = None  # activation decile/bin, when sampled so
    sampler: str | None = None  # which sampler chose it: top, random, quantile, importance...

    @model_validator(mode="after")
    def _aligned(self) -> Self:
        n = len(self.tokens)
        if len(self.str_tokens) != n or len(self.activations) != n:
            raise ValueError(
                f"tokens ({n}), str_tokens ({len(self.str_tokens)}) and activations "
                f"({len(self.activations)}) must have the same length"
            )
        return self

    @property
    def max_activation(self) -> float:
        return max(self.activations, default=0.0)

    @property
    def text(self) -> str:
        return "".join(self.str_tokens)


class LatentStats(Frozen):
    """Activation statistics of one latent over the collected tokens."""

    n_tokens: NonNegativeInt  # tokens seen
    count: NonNegativeInt  # tokens where the latent fired (> 0)
    max: float = 0.0
    mean: float = 0.0  # mean over firing tokens
    quantiles: tuple[float, ...] = ()  # boundaries of the activation bins, ascending

    @property
    def frequency(self) -> float:
        return self.count / self.n_tokens if self.n_tokens else 0.0

    @property
    def dead(self) -> bool:
        return self.count == 0


class LatentRecord(Frozen):
    """Everything the explainers and scorers know about one latent.

    `explanation_examples` and `scoring_examples` are disjoint by construction (the samplers keep
    a held-out split); `non_activating` carries negatives of every kind, tagged by `Example.kind`.
    """

    latent: LatentRef
    stats: LatentStats
    explanation_examples: tuple[Example, ...] = ()
    scoring_examples: tuple[Example, ...] = ()
    non_activating: tuple[Example, ...] = ()
    sampling: Settings = Field(default_factory=dict)  # sampler names, counts, seeds, windows
    # examples missing per split ("explanation", "scoring", "negatives") when the store held
    # fewer than the samplers asked for; empty when complete (and in records written before it)
    shortfall: dict[str, NonNegativeInt] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _held_out(self) -> Self:
        """The held-out invariant, here so that no scorer can skip it: no scoring example is
        also an explanation example (the same context row, start and tokens)."""
        seen = {(e.row, e.start, e.tokens) for e in self.explanation_examples if e.row is not None}
        leaked = [e for e in self.scoring_examples if (e.row, e.start, e.tokens) in seen]
        if leaked:
            raise ValueError(
                f"{len(leaked)} scoring examples of {self.latent} are also explanation examples; "
                "the splits must be disjoint"
            )
        return self

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; with `update`, validated again (pydantic's copy skips validators, which would
        let a copy break the held-out invariant)."""
        copy = super().model_copy(update=update, deep=deep)
        if update:
            return type(self).model_validate(dict(copy))
        return copy

    def negatives(self, kind: ExampleKind | None = None) -> tuple[Example, ...]:
        if kind is None:
            return self.non_activating
        return tuple(e for e in self.non_activating if e.kind == kind)


# --- LLM traffic ----------------------------------------------------------------------------------


class Message(Frozen):
    role: Literal["system", "user", "assistant"]
    content: str


def _unset(value: object) -> bool:
    """Left out of the serialised form (an optional field added later keeps old keys)."""
    return value is None


class ChatRequest(Frozen):
    """One chat completion request, in provider-neutral form (also the response-cache key)."""

    messages: tuple[Message, ...] = Field(min_length=1)
    n: Annotated[int, Field(ge=1)] = 1
    temperature: Annotated[float, Field(ge=0.0)] = 0.0
    max_tokens: Annotated[int, Field(ge=1)] = 512
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Score, not generate: the log-probability of each token of this text as the continuation of
    # the prompt (the start of the assistant's reply), returned in `ChatResponse.scored`; only
    # for providers with `ProviderCapabilities.prompt_logprobs`. Left out of the serialised form
    # when unset, so the cache keys of ordinary requests stay what they were.
    score_text: str | None = Field(default=None, min_length=1, exclude_if=_unset)
    # The start of the assistant's reply, written for the model: it continues from here, and the
    # response (text, logprobs) holds only what follows; only for providers with
    # `ProviderCapabilities.prefill`. Left out of the serialised form when unset, as above.
    prefill: str | None = Field(default=None, min_length=1, exclude_if=_unset)


class TokenLogprob(Frozen):
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()  # alternatives (token, logprob), best first


class Usage(Frozen):
    """Tokens and money spent; adds up across calls."""

    prompt_tokens: NonNegativeInt = 0
    completion_tokens: NonNegativeInt = 0
    cost_usd: Annotated[float, Field(ge=0.0)] = 0.0
    calls: NonNegativeInt = 0
    cached_calls: NonNegativeInt = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            calls=self.calls + other.calls,
            cached_calls=self.cached_calls + other.cached_calls,
        )

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Choice(Frozen):
    text: str
    logprobs: tuple[TokenLogprob, ...] | None = None
    finish_reason: str | None = None


class ChatResponse(Frozen):
    model: str
    choices: tuple[Choice, ...] = Field(min_length=1)
    usage: Usage = Usage()
    # the tokens of `ChatRequest.score_text` with their log-probabilities (None otherwise)
    scored: tuple[TokenLogprob, ...] | None = Field(default=None, exclude_if=_unset)

    @property
    def text(self) -> str:
        return self.choices[0].text


# --- results --------------------------------------------------------------------------------------


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"  # the method ran and could not produce a result (e.g. unparseable answer)
    ERROR = "error"  # the method could not run (provider outage, spend cap, bad input)


class _Result(Frozen):
    status: Status = Status.OK
    error: str | None = None
    # Provenance, filled in by the pipeline (None in lines written before it recorded them):
    # the LLM that produced the result as "<provider>:<model>" (None: the method used none) and
    # a digest of the method's configuration (`saexplain.rundir.method_id`), part of the key
    # a resumed run skips finished results by, so a changed configuration makes new results.
    llm: str | None = None
    method_id: str | None = None

    @model_validator(mode="after")
    def _error_iff_not_ok(self) -> Self:
        if (self.status is Status.OK) == (self.error is not None):
            raise ValueError("error must be set exactly when status is not 'ok'")
        return self


class Explanation(_Result):
    latent: LatentRef
    text: str = ""
    explainer: str
    settings: Settings = Field(default_factory=dict)
    evidence: dict[str, JsonValue] = Field(default_factory=dict)  # what the explainer was shown
    usage: Usage = Usage()

    @model_validator(mode="after")
    def _text_when_ok(self) -> Self:
        if self.status is Status.OK and not self.text.strip():
            raise ValueError("an ok explanation needs non-empty text")
        return self


class Prediction(Frozen):
    """One scored item: the truth, and the answer or the error that replaced it."""

    item: NonNegativeInt  # index of the example (or token) within the scorer's items
    truth: bool
    predicted: bool | None = None
    probability: Annotated[float, Field(ge=0.0, le=1.0)] | None = None  # P(yes), from logprobs
    error: str | None = None
    quantile: int | None = None  # activation decile of the example; None for negatives

    @model_validator(mode="after")
    def _answer_or_error(self) -> Self:
        if (self.predicted is None) == (self.error is None):
            raise ValueError("a prediction has either an answer or an error, not both or neither")
        return self

    @property
    def correct(self) -> bool | None:
        return None if self.predicted is None else self.predicted == self.truth


class Score(_Result):
    latent: LatentRef
    scorer: str
    explainer: str  # which explanation was scored
    value: float | None = None  # the headline metric (e.g. balanced accuracy)
    metrics: dict[str, float | None] = Field(default_factory=dict)
    predictions: tuple[Prediction, ...] = ()
    settings: Settings = Field(default_factory=dict)
    evidence: dict[str, JsonValue] = Field(default_factory=dict)  # what the score rests on
    usage: Usage = Usage()

    @property
    def n_errors(self) -> int:
        return sum(p.error is not None for p in self.predictions)

    @property
    def partial(self) -> bool:
        """An ok score computed from fewer items than asked: some predictions errored (a short
        outage, an unparseable batch). A resumed run scores it again; it counts until then."""
        return self.status is Status.OK and self.n_errors > 0


# --- configuration --------------------------------------------------------------------------------


class MethodSpec(Frozen):
    """A method chosen by name, with its settings."""

    name: str = Field(min_length=1)
    settings: Settings = Field(default_factory=dict)

    @classmethod
    def parse(cls, value: str | MethodSpec | dict[str, Any]) -> MethodSpec:
        if isinstance(value, MethodSpec):
            return value
        if isinstance(value, str):
            return cls(name=value)
        return cls.model_validate(value)


class BatchOptions(Frozen):
    """How a provider's requests go through its batch API (`ProviderSpec.batch`): requests
    arriving within `window_s` seconds, at most `max_requests` of them, make one batch, whose
    state is asked every `poll_s` seconds (`saexplain.providers.batch`)."""

    max_requests: Annotated[int, Field(ge=1, le=50_000)] = 1000
    window_s: Annotated[float, Field(gt=0.0)] = 5.0
    poll_s: Annotated[float, Field(gt=0.0)] = 30.0


class ProviderSpec(Frozen):
    """Which LLM: a provider plugin by name and a model string it understands; `batch` (true,
    or `BatchOptions`) sends its requests through the provider's discounted batch API."""

    provider: str = "litellm"
    model: str = "local/smollm2"
    settings: Settings = Field(default_factory=dict)
    batch: BatchOptions | None = Field(default=None, exclude_if=_unset)

    @field_validator("batch", mode="before")
    @classmethod
    def _batch_flag(cls, value: Any) -> Any:
        # `batch: true` means the default options, `batch: false` none
        if value is True:
            return BatchOptions()
        return None if value is False else value


class ExecutorSpec(Frozen):
    """Where a run's explainers and scorers run: an executor plugin by name (`register_executors`,
    e.g. `ray`) with its settings. A config may give the settings beside the name
    (`{name: ray, address: local, workers: 4}`) or a bare name (`ray`); a run without one runs
    in-process."""

    name: str = Field(min_length=1)
    settings: Settings = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _flat_settings(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, Mapping) and set(data) - {"name", "settings"}:
            data = dict(data)
            settings = dict(data.pop("settings", None) or {})
            moved = {k: data.pop(k) for k in list(data) if k != "name"}
            data["settings"] = {**settings, **moved}
        return data


class LatentSelection(Frozen):
    """Which latents to run: explicit indices, a range, or a random sample of alive ones."""

    indices: tuple[NonNegativeInt, ...] | None = None
    start: NonNegativeInt | None = None
    stop: NonNegativeInt | None = None
    sample: Annotated[int, Field(ge=1)] | None = None
    min_frequency: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    max_frequency: Annotated[float, Field(ge=0.0, le=1.0)] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        ways = [self.indices is not None, self.start is not None or self.stop is not None]
        if sum(ways) > 1:
            raise ValueError("select latents by indices or by a range, not both")
        if self.start is not None and self.stop is not None and self.stop <= self.start:
            raise ValueError(f"empty latent range [{self.start}, {self.stop})")
        return self


class CoderSpec(Frozen):
    """One coder of a run: a `"<source>:<spec>"` string, the settings its source gets, and the
    latents to run on it (None: the run's `latents`). A bare string reads as `{coder: ...}`."""

    coder: str = Field(min_length=1)
    settings: Settings = Field(default_factory=dict)
    latents: LatentSelection | None = None

    @classmethod
    def parse(cls, value: Any) -> CoderSpec:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(coder=value)
        return cls.model_validate(value)


class RunConfig(Frozen):
    """One run, fully described: what to load, which latents, which methods, where to write.

    The coders are `coders`, a list; `coder` (with `coder_settings`) is the one-coder shorthand,
    turned into a one-element `coders` when the config is read (giving both is an error)."""

    model: str = Field(min_length=1)  # model name or local path, as the backend understands it
    backend: str | None = None  # None: the backend plugin that claims the loaded model
    backend_settings: Settings = Field(default_factory=dict)
    # each "<source>:<spec>": "saelens:<release>/<sae_id>" (a `*` in the id: every match in the
    # release), "saelens:<local dir>", "neurons:blocks.L.mlp.hook_post"; no prefix: claimed by a
    # plugin (`detect_coder`). `coder: ...` / `coder_settings: ...` is the one-coder shorthand.
    coders: tuple[CoderSpec, ...] = Field(min_length=1)
    dataset: str = Field(min_length=1)  # hub dataset name, local file or directory, or "demo"
    text_field: str = "text"
    split: str = "train"
    n_tokens: Annotated[int, Field(ge=1)] = 1_000_000
    context_length: Annotated[int, Field(ge=2)] = 256
    prepend_bos: bool = True
    batch_size: Annotated[int, Field(ge=1)] = 16  # contexts per forward pass when collecting
    latents: LatentSelection = LatentSelection(sample=100)
    records: Settings = Field(default_factory=dict)  # saexplain.sampling.RecordConfig fields
    # latent filters (saexplain.analysis.FilterConfig fields); None: not computed
    filters: Settings | None = None
    explainers: tuple[MethodSpec, ...] = (MethodSpec(name="maxact"),)
    scorers: tuple[MethodSpec, ...] = (MethodSpec(name="detection"), MethodSpec(name="fuzzing"))
    explainer_model: ProviderSpec = ProviderSpec()
    scorer_model: ProviderSpec | None = None  # None: same as explainer_model
    seed: int = 0
    concurrency: Annotated[int, Field(ge=1)] = 8
    spend_cap_usd: Annotated[float, Field(gt=0.0)] | None = None
    # `saexplain run` exits non-zero when more of a method's results than this are errors
    max_error_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    # score every explainer's explanations again on deranged latents ("<explainer>~shuffled"),
    # the chance baseline shown beside each score; off by default: it doubles scoring spend
    shuffled_controls: bool = False
    # do not score generic explanations (near-duplicates, instruction echoes; flags.json)
    skip_generic: bool = False
    output_dir: str = "runs"
    name: str | None = None  # run directory name inside output_dir; None: derived from the config
    store_dir: str | None = None  # reuse an activation store elsewhere; None: <run dir>/store
    log_prompts: bool = False  # write every prompt and response to <run dir>/logs/
    # where explainers and scorers run (`ExecutorSpec`, e.g. `{name: ray, address: local}`);
    # None: in this process. Not part of the run's identity: a run may resume on another.
    executor: ExecutorSpec | None = None
    # Content fingerprints of what was passed as objects, by role ("model", "coder", "dataset";
    # `saexplain.fingerprint`). `prepare` fills them in: part of the run's identity, so changed
    # weights or data never reuse a run's data. Not a setting: `prepare` replaces what is here.
    fingerprints: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _one_coder_shorthand(cls, data: Any) -> Any:
        """`coder` (+ `coder_settings`) -> a one-element `coders`; giving both is an error."""
        if not isinstance(data, Mapping) or ("coder" not in data and "coder_settings" not in data):
            return data
        data = dict(data)
        if data.get("coders"):
            raise ValueError("give `coder` (one coder) or `coders` (a list), not both")
        if "coder" not in data:
            raise ValueError("`coder_settings` needs `coder` (or give `coders`)")
        coder = data.pop("coder")
        settings = data.pop("coder_settings", None) or {}
        data["coders"] = [{"coder": coder, "settings": settings}]
        return data

    @field_validator("coders", mode="before")
    @classmethod
    def _coder_specs(cls, value: Any) -> Any:
        if isinstance(value, str | CoderSpec | Mapping):
            value = [value]
        return tuple(CoderSpec.parse(v) for v in value)

    @property
    def coder(self) -> str:
        """The coder spec of a one-coder run (`coders[0].coder`); several coders: `ValueError`."""
        if len(self.coders) != 1:
            specs = ", ".join(c.coder for c in self.coders)
            raise ValueError(f"this run has {len(self.coders)} coders ({specs}): read `coders`")
        return self.coders[0].coder

    @property
    def coder_settings(self) -> Settings:
        """The settings of a one-coder run's coder (`coders[0].settings`)."""
        if len(self.coders) != 1:
            raise ValueError(f"this run has {len(self.coders)} coders: read `coders`")
        return self.coders[0].settings

    @field_validator("explainers", "scorers", mode="before")
    @classmethod
    def _names_as_specs(cls, value: Any) -> Any:
        if isinstance(value, str | MethodSpec | dict):
            value = [value]
        return tuple(MethodSpec.parse(v) for v in value)

    @model_validator(mode="after")
    def _unique_methods(self) -> Self:
        for kind, specs in (("explainer", self.explainers), ("scorer", self.scorers)):
            names = [s.name for s in specs]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind}s listed twice: {', '.join(dupes)}")
        return self
