"""Methods that ask an LLM: the explainer base class and the scorers' provider call.

An LLM explainer subclasses `LLMExplainer`: its `gather` returns the `Evidence` (prompt fields
plus a JSON record of what was shown), and the base turns it into one chat request (system text,
few-shot turns rendered by the same code as live evidence, the final user turn) and one
`Explanation` (a subclass reads the answer its own way by overriding `parse_answer`, as
maxact's prefilled `keywords` style does). Provider failures and unparseable answers become a
typed status (`ask`), never an exception escaping `explain`; so do an answer cut off by the
completion budget (`finish_reason == "length"`) before its explanation ended, a run-on answer
beyond the style's bound (`bound_explanation`: a marked one is cut at its first sentence) and an
answer longer than the explainer's `max_chars` (each a `failed` explanation with the reason: it
would be sent whole in every scoring prompt).
A scorer calls the provider through `call`, which turns provider failures into an `Outcome`
carrying the error, so the items it covers become error predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, ClassVar, Literal

from pydantic import Field, JsonValue, model_validator

from saexplain.errors import ConfigError, ParseError, ProviderError, SaexplainError
from saexplain.methods.parsing import Parsed, bound_explanation, parse_explanation
from saexplain.methods.settings import MethodSettings
from saexplain.methods.text import truncate
from saexplain.models import (
    ChatRequest,
    ChatResponse,
    Explanation,
    LatentRecord,
    Message,
    Status,
    Usage,
)
from saexplain.prompts import PromptTemplate, load_prompt
from saexplain.protocols import MethodContext
from saexplain.providers.cache import discard_cached

__all__ = [
    "Evidence",
    "EvidenceUnavailable",
    "LLMExplainer",
    "Outcome",
    "Style",
    "ask",
    "call",
    "check_prompt",
    "partial_result",
    "table",
    "total_usage",
]

Style = Literal["sentence", "label", "keywords"]

# --- settings checks ------------------------------------------------------------------------------


def check_prompt(value: object, default: str, required: Iterable[str] = ()) -> PromptTemplate:
    """Load the `prompt` setting (a bundled name or a path to a .toml) and check its tables."""
    if value is None:
        value = default
    if not isinstance(value, str | Path):
        raise ConfigError(f"setting 'prompt' must be a prompt name or a .toml path, got {value!r}")
    prompt = load_prompt(value)
    missing = [key for key in required if key not in prompt.data]
    if missing:
        raise ConfigError(f"prompt {prompt.id} ({prompt.source}) lacks the tables/keys {missing}")
    return prompt


def table(prompt: PromptTemplate, key: str, sub: str | None = None) -> str:
    """A string from the prompt file's extra data (`key`, or `key.sub`), or a clear ConfigError."""
    value: Any = prompt.data.get(key)
    if sub is not None:
        value = value.get(sub) if isinstance(value, Mapping) else None
    if not isinstance(value, str):
        where = key if sub is None else f"{key}.{sub}"
        raise ConfigError(f"prompt {prompt.id} ({prompt.source}) needs a string {where!r}")
    return value


# --- evidence -------------------------------------------------------------------------------------


class EvidenceUnavailable(Exception):
    """The evidence an explainer needs cannot be gathered (no backend, no examples, ...)."""

    def __init__(self, message: str, status: Status = Status.ERROR) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Evidence:
    """What an explainer gathered for one latent, ready for the prompt."""

    fields: dict[str, str]  # values for the prompt's $fields
    shown: dict[str, JsonValue]  # what the LLM was shown, recorded in Explanation.evidence
    settings: dict[str, JsonValue] = field(default_factory=dict)  # derived settings to record


# --- scorer calls ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """A provider call's response, or the error that replaced it."""

    response: ChatResponse | None
    error: str | None = None


async def call(ctx: MethodContext, request: ChatRequest, role: str = "scorer") -> Outcome:
    """One provider call for `role`. Provider failures become an error outcome (the items it
    covers become error predictions); anything else is a bug and propagates."""
    try:
        response = await ctx.provider(role).complete(request)
    except ProviderError as e:
        return Outcome(None, f"{type(e).__name__}: {e}")
    return Outcome(response)


def total_usage(outcomes: Iterable[Outcome]) -> Usage:
    """The usage of every answered call, added up."""
    usage = Usage()
    for o in outcomes:
        if o.response is not None:
            usage = usage + o.response.usage
    return usage


# --- the LLM explainer base -----------------------------------------------------------------------


class LLMExplainer:
    """Common settings and the explain loop: gather evidence, ask once, parse, record.

    A subclass declares its own settings as `class Settings(LLMExplainer.Settings)` and is built
    from keywords (`MaxAct(max_examples=20, cot=True)`); `self.settings` holds them validated."""

    class Settings(MethodSettings):
        """The settings every LLM explainer has."""

        prompt: str | Path | None = Field(
            None,
            description="a bundled prompt name, or a path to your own `.toml` prompt file; "
            "`None`: the method's own prompt",
        )
        style: Style = Field(
            "sentence",
            description='`"sentence"` (a phrase, at most ~25 words) or `"label"` (1-6 words, '
            'Neuronpedia style); `maxact` also has `"keywords"` (for small local models: no '
            "few-shot answer, the marked tokens listed, the reply prefilled up to a short label; "
            "needs a provider that continues a prefilled reply)",
        )
        cot: bool = Field(
            False, description="chain of thought: reason first, then the final marker line"
        )
        temperature: float = Field(
            0.0, ge=0.0, le=2.0, description="sampling temperature of the explanation call"
        )
        max_tokens: int | None = Field(
            None,
            ge=1,
            description="completion budget; `None`: 200, 60 for labels, 16 for keywords, 1000 "
            "with `cot`",
        )
        max_chars: int = Field(
            1000,
            ge=1,
            description="the longest explanation accepted, in characters (the reasoning of "
            "`cot` not counted); a longer one is `failed`",
        )

        @model_validator(mode="before")
        @classmethod
        def _default_budget(cls, data: Any) -> Any:
            # the budget follows the answer's shape; recorded resolved, so a result says it
            if isinstance(data, dict) and data.get("max_tokens") is None:
                cot, style = data.get("cot") is True, data.get("style")
                budget = 1000 if cot else {"label": 60, "keywords": 16}.get(str(style), 200)
                data = {**data, "max_tokens": budget}
            return data

    name: ClassVar[str]
    default_prompt: ClassVar[str]
    required_tables: ClassVar[tuple[str, ...]] = ("style", "reasoning")
    # the styles this explainer offers (`"keywords"` needs a prompt of its own: maxact's)
    styles: ClassVar[tuple[str, ...]] = ("sentence", "label")
    settings: Settings

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings.parse(self.name, settings)
        if self.settings.style not in self.styles:
            raise ConfigError(
                f"{self.name}: style {self.settings.style!r} is not one of {list(self.styles)}"
            )
        self.prompt = check_prompt(self.settings.prompt, self.default_prompt, self.required_tables)
        self.marker = str(self.prompt.data.get("marker", "Explanation"))
        for sub in ("sentence", "label"):
            table(self.prompt, "style", sub)
        for sub in ("cot", "direct"):
            table(self.prompt, "reasoning", sub)

    # subclasses --------------------------------------------------------------------------------

    async def gather(self, record: LatentRecord, ctx: MethodContext) -> Evidence:
        raise NotImplementedError

    def shot_fields(self, shot: Mapping[str, Any]) -> dict[str, str]:
        """Prompt fields for one few-shot example of the prompt file (rendered like live ones)."""
        raise NotImplementedError

    # shared ------------------------------------------------------------------------------------

    def recorded_settings(self) -> dict[str, JsonValue]:
        """The settings recorded with every explanation: the declared ones, the prompt by its
        `name@version` and source. Subclasses add what they derive."""
        declared = self.settings.model_dump(mode="json")
        del declared["prompt"]
        return {"prompt": self.prompt.id, "prompt_source": self.prompt.source, **declared}

    def system_text(self) -> str:
        def part(key: str, sub: str) -> str:  # the tables may name $marker themselves
            return Template(table(self.prompt, key, sub)).safe_substitute(marker=self.marker)

        return self.prompt.render_system(
            style=part("style", self.settings.style),
            reasoning=part("reasoning", "cot" if self.settings.cot else "direct"),
            marker=self.marker,
        )

    def prompt_wording(self) -> str:
        """The system text and the few-shot answers (`PromptWording`): what an explanation
        that echoes its instructions repeats."""
        answers = [m.content for m in self.shot_messages() if m.role == "assistant"]
        return "\n".join([self.system_text(), *answers])

    def parse_answer(self, answer: str, *, cut_off: bool) -> Parsed:
        """The explanation in an answer, held to the style's bound (`parse_explanation`,
        `bound_explanation`); `cut_off`: the completion budget stopped it. ParseError if none."""
        parsed = parse_explanation(answer, marker=self.marker, require_marker=self.settings.cot)
        return bound_explanation(parsed, self.settings.style, cut_off=cut_off)

    def shot_answer(self, shot: Mapping[str, Any]) -> str:
        style = self.settings.style
        answer = shot.get(style)
        if not isinstance(answer, str):
            raise ConfigError(f"prompt {self.prompt.id}: a shot lacks its {style!r} answer")
        reasoning = shot.get("reasoning")
        if self.settings.cot and isinstance(reasoning, str):
            return f"{reasoning.strip()}\n{self.marker}: {answer}"
        return f"{self.marker}: {answer}"

    def validate_prompt(self) -> None:
        """Subclasses call this at the end of `__init__`: a malformed prompt file is then a
        ConfigError when the explainer is built, not midway through a run."""
        self.system_text()
        self.shot_messages()

    def shot_messages(self) -> list[Message]:
        """The few-shot turns, rendered by the same code as live evidence."""
        shots = self.prompt.data.get("shots", [])
        if not isinstance(shots, list) or not all(isinstance(s, Mapping) for s in shots):
            raise ConfigError(f"prompt {self.prompt.id}: 'shots' must be an array of tables")
        out = []
        for shot in shots:
            out.append(
                Message(role="user", content=self.prompt.render_user(**self.shot_fields(shot)))
            )
            out.append(Message(role="assistant", content=self.shot_answer(shot)))
        return out

    def messages(self, fields: Mapping[str, str]) -> tuple[Message, ...]:
        system = Message(role="system", content=self.system_text())
        final = Message(role="user", content=self.prompt.render_user(**fields))
        return (system, *self.shot_messages(), final)

    def request(self, fields: Mapping[str, str]) -> ChatRequest:
        budget = self.settings.max_tokens
        assert budget is not None  # the settings fill in the default budget
        return ChatRequest(
            messages=self.messages(fields),
            temperature=self.settings.temperature,
            max_tokens=budget,
        )

    def result(
        self,
        record: LatentRecord,
        *,
        status: Status = Status.OK,
        text: str = "",
        error: str | None = None,
        evidence: Mapping[str, JsonValue] | None = None,
        settings: Mapping[str, JsonValue] | None = None,
        usage: Usage | None = None,
    ) -> Explanation:
        return Explanation(
            latent=record.latent,
            explainer=self.name,
            status=status,
            text=text,
            error=error,
            settings={**self.recorded_settings(), **(settings or {})},
            evidence=dict(evidence or {}),
            usage=usage or Usage(),
        )

    async def explain(self, record: LatentRecord, ctx: MethodContext) -> Explanation:
        try:
            gathered = await self.gather(record, ctx)
        except EvidenceUnavailable as e:
            return self.result(record, status=e.status, error=str(e))
        except SaexplainError as e:  # a backend refused the work (bad hook, index, ...)
            return self.result(record, status=Status.ERROR, error=f"{type(e).__name__}: {e}")
        return await ask(self, record, ctx, gathered)


async def ask(
    explainer: LLMExplainer,
    record: LatentRecord,
    ctx: MethodContext,
    gathered: Evidence,
) -> Explanation:
    """One LLM call for gathered evidence; provider failures and unparseable answers become a
    typed status, with the usage spent recorded."""
    usage = Usage()
    request = explainer.request(gathered.fields)
    done = partial_result(explainer, record, gathered)
    try:
        provider = ctx.provider("explainer")
    except LookupError as e:
        return done(Status.ERROR, "", f"{e}", usage, None)
    try:
        response = await provider.complete(request)
    except ProviderError as e:
        return done(Status.ERROR, "", f"{type(e).__name__}: {e}", usage, None)
    usage = usage + response.usage
    answer = response.text
    # stopped by the completion budget: kept only if its explanation ended before the cut
    cut_off = response.choices[0].finish_reason == "length"
    try:
        parsed = explainer.parse_answer(answer, cut_off=cut_off)
    except ParseError as e:
        discard_cached(response)  # an answer not used is not replayed by a rerun
        reason = f"ParseError: {e}"
        if cut_off:  # "The example is an": say which budget cut it
            reason += f" (finish_reason=length at max_tokens={request.max_tokens}: raise it)"
        return done(Status.FAILED, "", reason, usage, answer)
    limit = explainer.settings.max_chars
    if len(parsed.text) > limit:  # a runaway answer, sent whole in every scoring prompt if kept
        reason = f"the explanation has {len(parsed.text)} characters, over max_chars={limit}"
        return done(Status.FAILED, "", reason, usage, answer)
    gathered.shown["parse"] = parsed.how
    return done(Status.OK, parsed.text, None, usage, answer)


def partial_result(
    explainer: LLMExplainer, record: LatentRecord, gathered: Evidence
) -> Callable[[Status, str, str | None, Usage, str | None], Explanation]:
    def done(
        status: Status, text: str, error: str | None, usage: Usage, answer: str | None
    ) -> Explanation:
        shown = dict(gathered.shown)
        if answer is not None:
            shown["answer"] = truncate(answer, 4000)
        return explainer.result(
            record,
            status=status,
            text=text,
            error=error,
            evidence=shown,
            settings=gathered.settings,
            usage=usage,
        )

    return done
