"""Shared by the `generation` and `input_eval` scorers: texts an LLM writes from an explanation,
read back from its answer and run through the subject model.

- `numbered_groups` reads the numbered lists of an answer (`1. text`, `2) text`, `(3) text`,
  `- 4: text`, `**5.** text`), split into groups at header lines (`Neutral:`) or where the
  numbering starts again; prose around the lists is ignored.
- `text_activations` runs texts through the backend (tokenized with BOS, capped at a token
  length) under the model lock and returns each text's largest activation of one latent, with
  the token where it peaks. A leading BOS never counts, as everywhere else (the BOS rule).
- `model_problem` says, before any LLM call, why the texts could not be scored: no backend or
  coder in the context, or no maximum activation in the record to compare with.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, JsonValue

from saexplain.methods import (
    Backend,
    ChatRequest,
    ChatResponse,
    EvidenceUnavailable,
    Explanation,
    LatentRecord,
    Message,
    MethodContext,
    MethodSettings,
    Needs,
    SaexplainError,
    Score,
    Settings,
    SparseCoder,
    Status,
    Usage,
    call,
    clean_token,
    discard_cached,
    error_score,
    input_error,
    load_prompt,
    one_line_explanation,
    require_model,
    run_model,
    to_numpy,
    total_usage,
)

__all__ = [
    "Answer",
    "Group",
    "TextActivation",
    "WritingScorer",
    "WritingSettings",
    "dedupe",
    "error_after_call",
    "model_problem",
    "numbered_groups",
    "text_activations",
]

# `1. text`, `2) text`, `(3) text`, `[4] text`, `- 5: text`, `**6.** text`, `Text 7: text`
_ITEM = re.compile(
    r"^\s*(?:[-*\u2022]\s*)?(?:\*\*)?(?:(?:text|sentence|example)\s*)?[(\[]?(\d{1,3})"
    r"(?:[.):\]]|\s*-)+(?:\*\*)?\s*(.*?)\s*$",
    re.IGNORECASE,
)
_QUOTES = {'"': '"', "\u201c": "\u201d", "'": "'", "\u2018": "\u2019", "`": "`"}


@dataclass(frozen=True)
class Group:
    """One numbered list of an answer and the header line above it (None without one)."""

    header: str | None
    items: tuple[str, ...]


def _unquote(text: str) -> str:
    text = text.strip().strip("*").strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def _is_header(line: str) -> bool:
    """A line naming the list below it: `Neutral:`, `## Activating`, `**Unrelated sentences**`."""
    bare = line.strip()
    if not bare or len(bare.split()) > 8:
        return False
    return bare.startswith("#") or bare.rstrip("*_ ").endswith(":") or bare.startswith("**")


def numbered_groups(text: str) -> list[Group]:
    """The numbered lists of `text`, in order; empty when it has none."""
    groups: list[Group] = []
    header: str | None = None
    items: list[str] = []
    last = 0

    def close() -> None:
        nonlocal items, header
        if items:
            groups.append(Group(header, tuple(items)))
        items, header = [], None

    for line in text.replace("\r\n", "\n").split("\n"):
        m = _ITEM.match(line)
        if m is None:
            if _is_header(line):
                if items:  # a header after items starts the next list
                    close()
                header = line.strip().strip("#*_: ").strip()
            continue
        k, body = int(m.group(1)), _unquote(m.group(2))
        if items and k <= last:  # the numbering starts again: the next list
            close()
        last = k
        if body:
            items.append(body)
    close()
    return groups


def dedupe(texts: Sequence[str]) -> list[str]:
    """The texts without repeats (case and surrounding spaces ignored), first kept: a text
    written twice must not count twice."""
    seen: set[str] = set()
    out = []
    for t in texts:
        key = " ".join(t.lower().split())
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


@dataclass(frozen=True)
class TextActivation:
    """One written text and the latent's largest activation on it (0.0: it never fires)."""

    text: str
    max_activation: float
    peak_token: str | None  # where it peaks; None when it never fires
    n_tokens: int  # tokens the subject model read (after the cap)

    def json(self, latent_max: float) -> dict[str, JsonValue]:
        """As recorded in a score's evidence, with the activation relative to the latent's max."""
        return {
            "text": self.text,
            "max_activation": round(self.max_activation, 6),
            "relative": round(self.max_activation / latent_max, 4) if latent_max > 0 else None,
            "peak_token": self.peak_token,
            "n_tokens": self.n_tokens,
        }


def model_problem(record: LatentRecord, ctx: MethodContext, method: str) -> str | None:
    """Why the subject model cannot score written texts for this latent, or None."""
    try:
        _, coder = require_model(ctx, method)
    except EvidenceUnavailable as e:
        return str(e)
    if not 0 <= record.latent.index < coder.d_sae:
        return f"latent {record.latent.index} is not in the coder {coder.id} (width {coder.d_sae})"
    if record.stats.max <= 0:
        return (
            f"{method} compares activations with the latent's maximum in the store, and the "
            f"record of {record.latent} has none (a dead latent, or a record without statistics)"
        )
    return None


def error_after_call(
    record: LatentRecord,
    explanation: Explanation,
    scorer: str,
    settings: Settings,
    message: str,
    usage: Usage,
) -> Score:
    """A `Status.ERROR` score once the LLM was paid: its usage stays accounted."""
    return Score(
        latent=record.latent,
        scorer=scorer,
        explainer=explanation.explainer,
        status=Status.ERROR,
        error=message,
        settings=settings,
        usage=usage,
    )


def _activations(
    backend: Backend, coder: SparseCoder, latent: int, texts: Sequence[str], max_length: int
) -> list[TextActivation]:
    tokens = backend.tokenize(list(texts), max_length=max_length)
    acts = backend.latent_acts(tokens, [coder], latents={coder.id: [latent]})[coder.id]
    rows, pos = to_numpy(acts.row, np.float64), to_numpy(acts.pos, np.float64)
    lat, value = to_numpy(acts.latent, np.float64), to_numpy(acts.value)
    ids = tokens.rows()
    bos = backend.bos_token_id
    out = []
    for r, text in enumerate(texts):
        keep = (rows == r) & (lat == latent) & (value > 0)
        if bos is not None and ids[r] and ids[r][0] == bos:
            keep &= pos != 0  # a leading BOS is not the text (the BOS rule)
        if not keep.any():
            out.append(TextActivation(text, 0.0, None, len(ids[r])))
            continue
        best = int(np.argmax(np.where(keep, value, -np.inf)))
        token = clean_token(backend.str_tokens([ids[r][int(pos[best])]])[0])
        out.append(TextActivation(text, float(value[best]), token, len(ids[r])))
    return out


async def text_activations(
    ctx: MethodContext, latent: int, texts: Sequence[str], *, max_length: int
) -> list[TextActivation]:
    """Each text's largest activation of `latent`, from the context's backend and coder, under
    the backend's model lock (`run_model`)."""
    if not texts:
        return []
    backend, coder = require_model(ctx, "text_activations")
    return await run_model(backend, _activations, backend, coder, latent, texts, max_length)


# --- the scorers' shared flow ---------------------------------------------------------------


class WritingSettings(MethodSettings):
    """Settings every writing scorer has: how the texts are written and read by the model."""

    max_length: int = Field(
        64, ge=2, description="token cap of each text for the subject model (BOS included)"
    )
    temperature: float = Field(
        0.0, ge=0.0, le=2.0, description="sampling temperature of the writing call"
    )
    max_tokens: int = Field(1000, ge=16, description="completion budget of the writing call")
    prompt: str | Path | None = Field(
        None, description="a bundled prompt name or a TOML path; `None`: the scorer's own prompt"
    )


@dataclass(frozen=True)
class Answer:
    """The writing call's answer, what it cost, and the settings the score records."""

    response: ChatResponse
    usage: Usage
    settings: Settings


class WritingScorer:
    """Base of the scorers whose LLM (the "scorer" role) writes texts from the explanation that
    the subject model then reads: settings, the prompt, the writing call, reading the texts.
    Subclasses say what the prompt is told (`prompt_counts`) and score the texts."""

    Settings: ClassVar[type[WritingSettings]] = WritingSettings
    name: ClassVar[str] = "writing"
    needs: ClassVar[Needs] = Needs(provider=True, backend=True, coder=True)

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings.parse(self.name, settings)
        self.prompt = load_prompt(self.settings.prompt or self.name)

    def recorded_settings(self) -> dict[str, JsonValue]:
        """The declared settings, with the prompt by `name@version`."""
        return self.settings.model_dump(mode="json") | {"prompt": self.prompt.id}

    def prompt_counts(self) -> dict[str, int]:
        """How many texts of each kind the prompt asks for (its placeholders)."""
        raise NotImplementedError

    def request(self, explanation: Explanation) -> ChatRequest:
        counts = self.prompt_counts()
        user = self.prompt.render_user(explanation=one_line_explanation(explanation), **counts)
        return ChatRequest(
            messages=(
                Message(role="system", content=self.prompt.render_system(**counts)),
                Message(role="user", content=user),
            ),
            temperature=self.settings.temperature,
            max_tokens=self.settings.max_tokens,
        )

    async def ask(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Answer | Score:
        """The writing call's answer, or the error score: every check comes before the LLM is
        paid (nothing to compare with is an error, not a zero)."""
        settings = self.recorded_settings()
        problem = input_error(record, explanation) or model_problem(record, ctx, self.name)
        if problem is not None:
            return error_score(record, explanation, self.name, settings, problem)
        outcome = await call(ctx, self.request(explanation))
        usage = total_usage([outcome])
        if outcome.response is None:
            message = outcome.error or "provider call failed"
            return error_score(record, explanation, self.name, settings, message)
        return Answer(outcome.response, usage, settings)

    def unreadable(
        self, record: LatentRecord, explanation: Explanation, answer: Answer, problem: str
    ) -> Score:
        """The error score of an answer without the texts asked for; it leaves the response
        cache, so a rerun asks again instead of replaying it."""
        discard_cached(answer.response)
        return error_after_call(
            record, explanation, self.name, answer.settings, problem, answer.usage
        )

    async def read(
        self,
        record: LatentRecord,
        explanation: Explanation,
        ctx: MethodContext,
        texts: Sequence[str],
        answer: Answer,
    ) -> list[TextActivation] | Score:
        """Each text's largest activation of the latent, or the error score when the backend
        refuses the texts."""
        try:
            return await text_activations(
                ctx, record.latent.index, texts, max_length=self.settings.max_length
            )
        except SaexplainError as e:
            problem = f"{type(e).__name__}: {e}"
            return error_after_call(
                record, explanation, self.name, answer.settings, problem, answer.usage
            )
