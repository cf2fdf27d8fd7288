"""Reading LLM answers: the explanation line, lists of 0/1 answers, and probabilities from token
logprobs. Every parser raises `ParseError` when the answer holds nothing usable; callers turn
that into a typed status or an error prediction, never a guessed answer.

`bound_explanation` holds an explanation to its style's length (`STYLE_MAX_WORDS`): a run-on
answer is cut at its first sentence when the answer marked its explanation, and refused
otherwise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from saexplain.errors import ParseError
from saexplain.methods.text import truncate
from saexplain.models import TokenLogprob

__all__ = [
    "STYLE_MAX_WORDS",
    "Parsed",
    "bound_explanation",
    "expected_value",
    "p_one",
    "parse_binary",
    "parse_explanation",
    "token_at_offsets",
    "value_mass",
]

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
    """An explanation found in an answer, and how it was found."""

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


# --- the style's length bound --------------------------------------------------------------------

# The most words an explanation of each style may have. The prompts ask for 1-6 words (label,
# keywords) and one sentence of at most 25-30 words (sentence); twice that is a run-on, not the
# answer asked for.
STYLE_MAX_WORDS = {"label": 12, "keywords": 12, "sentence": 60}

# "e.g.", "U.S.", "Mr." and the like end with a period but do not end a sentence.
_ABBREVIATION = re.compile(
    r"(?:[A-Za-z]\.)*[A-Za-z]|etc|vs|cf|al|approx|incl|mr|mrs|ms|dr|st|no|fig", re.IGNORECASE
)
# a sentence's end: punctuation, space, then a capital (perhaps quoted), a bullet or a number
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)]*\s+(?=[\"'\u201c\u2018(]?[A-Z]|[-*•\d])")


def _first_sentence_end(text: str) -> int | None:
    """Where the first sentence ends (after its punctuation) when another one follows; None
    when the text is one sentence."""
    for m in _SENTENCE_END.finditer(text):
        before = text[: m.start()].split()
        word = before[-1].lstrip("(\"'").lower() if before else ""
        if text[m.start()] == "." and _ABBREVIATION.fullmatch(word):
            continue
        end = m.start() + len(m.group(0).rstrip())
        if not any(c.isalpha() for c in text[:end]):  # "1." numbering a list is no sentence
            continue
        return end
    return None


def bound_explanation(parsed: Parsed, style: str, *, cut_off: bool = False) -> Parsed:
    """The explanation held to its style's bound: one sentence of at most
    `STYLE_MAX_WORDS[style]` words. An answer that marked its explanation (the marker line) and
    ran on is cut at its first sentence, when that sentence fits; an unmarked answer of several
    sentences, or one too long, raises ParseError saying so (the answer is not the one asked
    for, and guessing where it starts could keep a preamble).

    `cut_off`: the answer stopped at the completion budget. Its explanation is kept only when it
    is marked and its first sentence ended before the cut (the rest ran on); otherwise, as with
    "The example is an", ParseError."""
    limit = STYLE_MAX_WORDS.get(style, STYLE_MAX_WORDS["sentence"])
    text, how = parsed.text, parsed.how
    if cut_off:
        end = _first_sentence_end(text)
        whole = text[:end] if end is not None else text
        if not how.startswith("marker") or not whole.rstrip("\"'\u201d\u2019)").endswith(
            (".", "!", "?")
        ):
            raise ParseError(
                f"the answer was cut off before its explanation ended: {truncate(text, 200)!r}"
            )
    end = _first_sentence_end(text)
    if end is not None:
        if not how.startswith("marker"):
            raise ParseError(
                f"an unmarked answer of several sentences ({len(text.split())} words), not one "
                f"{style}: {truncate(text, 200)!r}"
            )
        text, how = text[:end], f"{how}, first sentence"
    n_words = len(text.split())
    if n_words > limit:
        raise ParseError(
            f"the explanation has {n_words} words, over the {style} style's {limit}: "
            f"{truncate(text, 200)!r}"
        )
    return Parsed(text, how)


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
