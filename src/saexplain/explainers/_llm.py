"""Shared machinery of the LLM-backed explainers: settings checks, prompt assembly, the provider
call (provider failures become a typed status, never an exception escaping `explain`), answer
parsing, and the numeric helpers the output-centric methods share (logit lens, token decoding).

An explainer here gathers *evidence* (a dict of prompt fields plus a JSON record of what was shown)
and `LLMExplainer.explain` turns it into one chat request and one `Explanation`.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import JsonValue

from saexplain.checks import check_bool, check_choice, check_float, check_int
from saexplain.errors import ConfigError, ParseError, ProviderError, SaexplainError
from saexplain.models import (
    ChatRequest,
    Explanation,
    LatentRecord,
    Message,
    Settings,
    Status,
    Usage,
)
from saexplain.prompts import PromptTemplate, load_prompt
from saexplain.protocols import Backend, MethodContext, SparseCoder
from saexplain.render import clean_token
from saexplain.store import _io as store_io

Style = Literal["sentence", "label"]
T = TypeVar("T")

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
    fields: dict[str, str]  # values for the prompt's $fields
    shown: dict[str, JsonValue]  # what the LLM was shown, recorded in Explanation.evidence
    settings: dict[str, JsonValue] = field(default_factory=dict)  # derived settings to record


def require_model(ctx: MethodContext, method: str) -> tuple[Backend, SparseCoder]:
    if ctx.backend is None or ctx.coder is None:
        missing = [n for n, v in (("backend", ctx.backend), ("coder", ctx.coder)) if v is None]
        raise EvidenceUnavailable(
            f"{method} needs a backend and a sparse coder in the method context "
            f"(missing: {', '.join(missing)})"
        )
    return ctx.backend, ctx.coder


def neutralise(token: str) -> str:
    """Dataset text must not forge highlight markers: angle brackets are shown as single
    guillemets (U+2039, U+203A)."""
    return token.replace("<", "\u2039").replace(">", "\u203a")


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def latent_seed(ctx: MethodContext, record: LatentRecord, purpose: str) -> int:
    """A seed derived from the run seed and the latent id (never the same for every latent)."""
    key = f"{ctx.seed}|{record.latent.coder_id}|{record.latent.index}|{purpose}"
    return zlib.crc32(key.encode())


# --- numbers --------------------------------------------------------------------------------------


def to_numpy(x: Any, dtype: type[np.floating[Any]] = np.float64) -> npt.NDArray[Any]:
    """A numpy copy of a numpy array or a tensor-like value, without importing torch."""
    return np.asarray(store_io.to_numpy(x), dtype=dtype)


@dataclass(frozen=True)
class TokenScore:
    id: int
    token: str  # cleaned display text
    value: float

    def json(self) -> dict[str, JsonValue]:
        return {"id": self.id, "token": self.token, "value": round(self.value, 4)}


def top_tokens(
    backend: Backend, scores: npt.NDArray[Any], k: int, *, largest: bool = True
) -> tuple[list[TokenScore], int]:
    """The `k` best-scoring token ids that decode to a non-empty string, and how many ids were
    skipped because the backend cannot decode them (padded vocabularies, unused ids)."""
    order = np.argsort(-scores if largest else scores, kind="stable")
    found: list[TokenScore] = []
    skipped = 0
    for i in order.tolist():
        if len(found) >= k:
            break
        try:
            (text,) = backend.str_tokens([int(i)])
        except (IndexError, KeyError, ValueError):
            skipped += 1
            continue
        text = clean_token(text)
        if not text:
            skipped += 1
            continue
        found.append(TokenScore(int(i), text, float(scores[i])))
    return found, skipped


def token_list(tokens: Sequence[TokenScore] | Sequence[str]) -> str:
    """Tokens as one line of JSON strings (whitespace, newlines and any script stay visible)."""
    texts = [t.token if isinstance(t, TokenScore) else t for t in tokens]
    return ", ".join(json.dumps(neutralise(t), ensure_ascii=False) for t in texts)


def logit_lens(backend: Backend, coder: SparseCoder, latent: int) -> npt.NDArray[np.float64]:
    """The decoder direction of `latent` through the final norm and unembedding."""
    if not 0 <= latent < coder.d_sae:
        raise EvidenceUnavailable(f"latent {latent} is outside [0, {coder.d_sae}) of {coder.id}")
    return to_numpy(backend.unembed(coder.W_dec[latent])).reshape(-1)


# --- answer parsing -------------------------------------------------------------------------------

_DECOR = "*_#>`~-• \t"
_QUOTES = [
    ('"', '"'),
    ("'", "'"),
    ("\u201c", "\u201d"),
    ("\u2018", "\u2019"),
    ("`", "`"),
    ("«", "»"),
]


@dataclass(frozen=True)
class Parsed:
    text: str
    how: str  # "marker", "marker-next-line", "single-line", "last-line"


def _clean(text: str) -> str:
    text = " ".join(text.split())
    for _ in range(3):  # peel nested decoration: **"..."**
        before = text
        text = text.strip(_DECOR.replace("-", "")).strip()
        for a, b in _QUOTES:
            if len(text) >= 2 and text.startswith(a) and text.endswith(b):
                text = text[len(a) : -len(b)].strip()
        if text == before:
            break
    return text


def parse_explanation(answer: str, *, marker: str = "Explanation", require_marker: bool) -> Parsed:
    """The explanation in an LLM answer: the text after the LAST line that starts with the marker
    (markdown, bullets and quotes around it tolerated). Without a marker line, a one-line answer
    is taken whole and otherwise its last line, unless `require_marker` (chain of thought, where
    the last line may be reasoning). Raises ParseError when nothing usable remains."""
    line_re = re.compile(
        rf"^[\s*_#>`\-•]*{re.escape(marker)}[\s*_`]*[:\uff1a][\s*_`]*(.*)$", re.IGNORECASE
    )
    lines = [ln.strip() for ln in answer.strip().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("```")]
    for i in range(len(lines) - 1, -1, -1):
        m = line_re.match(lines[i])
        if not m:
            continue
        text, how = _clean(m.group(1)), "marker"
        if not text and i + 1 < len(lines):  # "Explanation:" alone, the answer below it
            text, how = _clean(" ".join(lines[i + 1 :])), "marker-next-line"
        if text:
            return Parsed(text, how)
        raise ParseError(f"the answer's {marker!r} line is empty: {truncate(answer, 200)!r}")
    if require_marker:
        raise ParseError(f"no {marker!r} line in the answer: {truncate(answer, 200)!r}")
    if not lines:
        raise ParseError("the answer is empty")
    text = _clean(lines[-1])
    if not text:
        raise ParseError(f"no explanation in the answer: {truncate(answer, 200)!r}")
    return Parsed(text, "single-line" if len(lines) == 1 else "last-line")


# --- the LLM explainer base -----------------------------------------------------------------------


class LLMExplainer:
    """Common settings and the explain loop: gather evidence, ask once, parse, record."""

    name: ClassVar[str]
    default_prompt: ClassVar[str]
    required_tables: ClassVar[tuple[str, ...]] = ("style", "reasoning")

    def __init__(
        self,
        *,
        prompt: str | None = None,
        style: str = "sentence",
        cot: bool = False,
        temperature: float = 0.0,
        max_tokens: int | None = None,
    ) -> None:
        self.prompt = check_prompt(prompt, self.default_prompt, self.required_tables)
        self.style: Style = check_choice("style", style, ("sentence", "label"))
        self.cot = check_bool("cot", cot)
        self.temperature = check_float("temperature", temperature, low=0.0, high=2.0)
        default_tokens = 1000 if self.cot else (60 if self.style == "label" else 200)
        self.max_tokens = check_int(
            "max_tokens", default_tokens if max_tokens is None else max_tokens, low=1
        )
        self.marker = str(self.prompt.data.get("marker", "Explanation"))
        for sub in ("sentence", "label"):
            table(self.prompt, "style", sub)
        for sub in ("cot", "direct"):
            table(self.prompt, "reasoning", sub)

    # subclasses --------------------------------------------------------------------------------

    def method_settings(self) -> dict[str, JsonValue]:
        """The subclass's own settings, recorded with every explanation."""
        return {}

    async def gather(self, record: LatentRecord, ctx: MethodContext) -> Evidence:
        raise NotImplementedError

    def shot_fields(self, shot: Mapping[str, Any]) -> dict[str, str]:
        """Prompt fields for one few-shot example of the prompt file (rendered like live ones)."""
        raise NotImplementedError

    # shared ------------------------------------------------------------------------------------

    def settings(self) -> Settings:
        return {
            "prompt": self.prompt.id,
            "prompt_source": self.prompt.source,
            "style": self.style,
            "cot": self.cot,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            **self.method_settings(),
        }

    def system_text(self) -> str:
        def part(key: str, sub: str) -> str:  # the tables may name $marker themselves
            return Template(table(self.prompt, key, sub)).safe_substitute(marker=self.marker)

        return self.prompt.render_system(
            style=part("style", self.style),
            reasoning=part("reasoning", "cot" if self.cot else "direct"),
            marker=self.marker,
        )

    def shot_answer(self, shot: Mapping[str, Any]) -> str:
        answer = shot.get(self.style)
        if not isinstance(answer, str):
            raise ConfigError(f"prompt {self.prompt.id}: a shot lacks its {self.style!r} answer")
        reasoning = shot.get("reasoning")
        if self.cot and isinstance(reasoning, str):
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
        return ChatRequest(
            messages=self.messages(fields),
            temperature=self.temperature,
            max_tokens=self.max_tokens,
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
            settings={**self.settings(), **(settings or {})},
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
    try:
        parsed = parse_explanation(answer, marker=explainer.marker, require_marker=explainer.cot)
    except ParseError as e:
        return done(Status.FAILED, "", f"ParseError: {e}", usage, answer)
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
