"""Machinery shared by the built-in scorers: items, per-latent seeds, provider calls that turn
failures into per-item errors, robust parsing of 0/1 answers, and reading probabilities out of
token logprobs.

Every scorer draws only from `record.scoring_examples` (activating) and `record.non_activating`;
`record.explanation_examples` are never shown to a scorer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from saexplain.errors import ParseError, ProviderError
from saexplain.models import (
    ChatRequest,
    ChatResponse,
    Example,
    Explanation,
    LatentRecord,
    Score,
    Settings,
    Status,
    TokenLogprob,
    Usage,
)
from saexplain.protocols import MethodContext
from saexplain.render import clean_token
from saexplain.store._io import derive_seed

# --- settings validation --------------------------------------------------------------------------


# --- items ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One example to score. `index` is its position in scoring_examples + non_activating (the
    record's order, not the shuffled one), so predictions map back to the record."""

    index: int
    example: Example
    truth: bool

    @property
    def quantile(self) -> int | None:
        return self.example.quantile if self.truth else None


def latent_seed(ctx: MethodContext, record: LatentRecord, purpose: str) -> int:
    """A seed of its own for every latent (and scorer): never the same order for all latents."""
    return derive_seed(ctx.seed, record.latent.coder_id, record.latent.index, purpose)


def select_items(
    record: LatentRecord,
    rng: np.random.Generator,
    *,
    max_activating: int | None = None,
    max_negatives: int | None = None,
) -> list[Item]:
    """Scoring examples (truth True) and non-activating examples (truth False), each capped at a
    random subset of the given size, in record order."""
    items: list[Item] = []
    groups = (
        (record.scoring_examples, True, max_activating),
        (record.non_activating, False, max_negatives),
    )
    offset = 0
    for examples, truth, cap in groups:
        keep: list[int] = list(range(len(examples)))
        if cap is not None and cap < len(examples):
            keep = sorted(int(i) for i in rng.choice(len(examples), size=cap, replace=False))
        items.extend(Item(offset + i, examples[i], truth) for i in keep)
        offset += len(examples)
    return items


def input_error(record: LatentRecord, explanation: Explanation) -> str | None:
    """Why this (record, explanation) pair cannot be scored, or None."""
    if explanation.status is not Status.OK:
        return f"explanation has status {explanation.status.value}: {explanation.error}"
    if explanation.latent != record.latent:
        return f"explanation is for {explanation.latent}, record for {record.latent}"
    seen = {(e.row, e.start, e.tokens) for e in record.explanation_examples if e.row is not None}
    leaked = [e for e in record.scoring_examples if (e.row, e.start, e.tokens) in seen]
    if leaked:
        return (
            f"{len(leaked)} scoring examples are also explanation examples; the splits must be "
            "disjoint"
        )
    return None


def error_score(
    record: LatentRecord, explanation: Explanation, scorer: str, settings: Settings, message: str
) -> Score:
    return Score(
        latent=record.latent,
        scorer=scorer,
        explainer=explanation.explainer,
        status=Status.ERROR,
        error=message,
        settings=settings,
    )


def bos_id(ctx: MethodContext) -> int | None:
    return ctx.backend.bos_token_id if ctx.backend is not None else None


_SPECIAL = re.compile(r"^<\|?[^<>\s|]+\|?>$")  # <bos>, <s>, <|endoftext|>, <|begin_of_text|>


def first_shown(example: Example, bos: int | None) -> int:
    """Index of the first token to show: a leading BOS token is left out of every prompt (known
    by id when the context has a backend, else by its special-token look)."""
    if not example.tokens:
        return 0
    if bos is not None:
        return 1 if example.tokens[0] == bos else 0
    return 1 if _SPECIAL.match(example.str_tokens[0]) else 0


# --- rendering ------------------------------------------------------------------------------------

_NEWLINES = re.compile(r"\r\n|\r|\n")


def one_line(text: str) -> str:
    """Dataset text on a single line (newlines shown as `\\n`), so no example can start a line of
    its own and forge the prompt's layout (`Example 3: ...`)."""
    return _NEWLINES.sub(r"\\n", text).replace("\t", " ")


def neutralize_marks(token: str) -> str:
    """Angle brackets in dataset text, replaced so that only the scorer's marks read `<<...>>`."""
    return token.replace("<", "\u2039").replace(">", "\u203a")  # single angle quotes


def display_tokens(example: Example, start: int = 0, *, marks_safe: bool = True) -> list[str]:
    out = [clean_token(t) for t in example.str_tokens[start:]]
    return [neutralize_marks(t) for t in out] if marks_safe else out


def one_line_explanation(explanation: Explanation) -> str:
    return " ".join(explanation.text.split())


# --- provider calls -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """A provider call's response, or the error that replaced it."""

    response: ChatResponse | None
    error: str | None = None


async def call(ctx: MethodContext, request: ChatRequest) -> Outcome:
    """One scorer call. Provider failures become an error outcome (the items it covers become
    error predictions); anything else is a bug and propagates."""
    try:
        response = await ctx.provider("scorer").complete(request)
    except ProviderError as e:
        return Outcome(None, f"{type(e).__name__}: {e}")
    return Outcome(response)


def total_usage(outcomes: Iterable[Outcome]) -> Usage:
    usage = Usage()
    for o in outcomes:
        if o.response is not None:
            usage = usage + o.response.usage
    return usage


# --- parsing 0/1 answers --------------------------------------------------------------------------

_FENCE = re.compile(r"```[a-zA-Z]*")
_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
_VALUE = re.compile(r"""["']?\s*(0|1|true|false|yes|no)\s*["']?""", re.IGNORECASE)
_BARE = re.compile(r"(?<![\w.])[01](?:[ \t]*[,;][ \t]*[01]|[ \t]+[01])*(?![\w.])")
_TRUE = {"1", "true", "yes"}


def _values(body: str, base: int) -> list[tuple[bool, int]] | None:
    """`body` as a comma/space separated list of 0/1 values with their offsets, or None."""
    parts = [p for p in re.split(r"[,;\s]+", body.strip()) if p]
    if not parts:
        return None
    out: list[tuple[bool, int]] = []
    pos = 0
    for part in parts:
        m = _VALUE.fullmatch(part)
        if m is None:
            return None
        at = body.index(part, pos)
        pos = at + len(part)
        out.append((m.group(1).lower() in _TRUE, base + at + m.start(1)))
    return out


def parse_binary(text: str, n: int) -> list[tuple[bool, int]]:
    """The answer's list of `n` 0/1 values, each with its character offset in `text`.

    Accepts `[1, 0, 1, 0, 0]`, `1,0,1,0,0`, `1 0 1 0 0`, markdown fences and prose around the
    list. When several lists appear (a model quoting the examples, or injected text echoed back),
    the last one of the right length wins. Raises ParseError when none has `n` values.
    """
    cleaned = _FENCE.sub(lambda m: " " * len(m.group(0)), text)
    candidates: list[list[tuple[bool, int]]] = []
    for m in _BRACKETS.finditer(cleaned):
        values = _values(m.group(1), m.start(1))
        if values is not None:
            candidates.append(values)
    if not candidates:
        for m in _BARE.finditer(cleaned):
            values = _values(m.group(0), m.start(0))
            if values is not None:
                candidates.append(values)
    right = [c for c in candidates if len(c) == n]
    if right:
        return right[-1]
    if candidates:
        raise ParseError(f"expected {n} values, got {len(candidates[-1])} in {text[:200]!r}")
    raise ParseError(f"no list of 0/1 values in {text[:200]!r}")


# --- logprobs -------------------------------------------------------------------------------------


def token_at_offsets(
    logprobs: Sequence[TokenLogprob], text: str, offsets: Sequence[int]
) -> list[int | None]:
    """For each character offset into `text`, the index of the logprob token whose visible
    content starts there (`" 1"` counts at the `1`). Tokens are located by searching `text` in
    order, so providers that strip the answer or decode leading spaces differently still align.
    None where no token's content starts at the offset."""
    starts: dict[int, int] = {}
    pos = 0
    for k, t in enumerate(logprobs):
        content = t.token.strip()
        if not content:
            continue
        at = text.find(content, pos)
        if at < 0:
            break  # the tokens do not spell the text from here on
        starts[at] = k
        pos = at + len(content)
    return [starts.get(off) for off in offsets]


def value_mass(t: TokenLogprob) -> dict[str, float]:
    """Probability by stripped token text, from the chosen token and its top alternatives."""
    seen: dict[str, float] = {t.token: t.logprob}
    for tok, lp in t.top:
        seen.setdefault(tok, lp)
    mass: dict[str, float] = {}
    for tok, lp in seen.items():
        key = tok.strip().rstrip(",;.)]}")  # "1," and "1" are the same answer
        mass[key] = mass.get(key, 0.0) + math.exp(lp)
    return mass


def p_one(t: TokenLogprob) -> float | None:
    """P(1) / (P(0) + P(1)) at a 0/1 answer position; None without mass on either."""
    mass = value_mass(t)
    p0, p1 = mass.get("0", 0.0), mass.get("1", 0.0)
    return p1 / (p0 + p1) if p0 + p1 > 0 else None


def expected_value(
    first: TokenLogprob, following: TokenLogprob | None, max_value: int
) -> float | None:
    """Expected value of an integer 0..max_value answer from the top logprobs at its position.

    Values that are one token ("10") are read directly. Tokenizers that split numbers into
    digits put the mass of "10" on "1"; when the sampled token was "1" and the next token's
    distribution is known, that mass is split by P("0" next); otherwise it stays on 1 (a small
    downward bias, documented).
    """
    mass = value_mass(first)
    probs = {v: mass.get(str(v), 0.0) for v in range(max_value + 1)}
    if (
        max_value >= 10
        and "10" not in mass
        and following is not None
        and first.token.strip() == "1"
    ):
        p_zero_next = value_mass(following).get("0", 0.0)
        probs[10] = probs[1] * p_zero_next
        probs[1] -= probs[10]
    total = sum(probs.values())
    if total <= 0:
        return None
    return sum(v * p for v, p in probs.items()) / total
