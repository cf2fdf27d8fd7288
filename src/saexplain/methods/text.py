"""Showing dataset text to an LLM: the one BOS rule, the one escaping, one-line layout.

Explainers and scorers show examples through these helpers, so an example looks the same in an
explanation prompt and in a scoring prompt:

- `first_shown` / `bos_id`: a leading BOS token is never shown (it is not text);
- `neutralise`: dataset angle brackets cannot forge the `<<highlight>>` marks;
- `display_tokens`: cleaned tokenizer glyphs (special tokens such as `<|endoftext|>` shown as a
  neutral `[endoftext]`, see `saexplain.render.clean_token`), then neutralised, from the first
  shown token;
- `one_line`: dataset newlines cannot start a line of their own and forge the prompt's layout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from saexplain.models import Example, Explanation
from saexplain.protocols import MethodContext
from saexplain.render import clean_token

__all__ = [
    "bos_id",
    "display_tokens",
    "first_shown",
    "neutralise",
    "one_line",
    "one_line_explanation",
    "token_list",
    "truncate",
]

# A special token's look: <bos>, <s>, <|endoftext|>, <|begin_of_text|>. Letters and underscores
# only, so a byte token such as <0x0A> (a newline) is text, not a special token.
_SPECIAL = re.compile(r"<\|?[A-Za-z_]+\|?>")
_NEWLINES = re.compile(r"\r\n|\r|\n")


def bos_id(ctx: MethodContext) -> int | None:
    """The subject model's BOS token id, when the context has a backend that knows it."""
    return ctx.backend.bos_token_id if ctx.backend is not None else None


def first_shown(example: Example, bos: int | None) -> int:
    """Index of the first token to show: a leading BOS token is left out of every prompt. It is
    known by id when the context has a backend (`bos_id`), else by its special-token look."""
    if not example.tokens:
        return 0
    if bos is not None:
        return 1 if example.tokens[0] == bos else 0
    return 1 if _SPECIAL.fullmatch(example.str_tokens[0].strip()) else 0


def neutralise(text: str) -> str:
    """Angle brackets in dataset text shown as single guillemets (U+2039, U+203A), so that only
    the method's own marks read `<<...>>`."""
    return text.replace("<", "\u2039").replace(">", "\u203a")


def display_tokens(example: Example, start: int = 0, *, marks_safe: bool = True) -> list[str]:
    """The example's tokens from `start`, as the text they stand for (`clean_token`), with angle
    brackets neutralised unless `marks_safe=False`. Cleaning comes first: a byte token such as
    `<0x0A>` is a newline, not brackets."""
    out = [clean_token(t) for t in example.str_tokens[start:]]
    return [neutralise(t) for t in out] if marks_safe else out


def one_line(text: str) -> str:
    """Dataset text on a single line (newlines shown as `\\n`), so no example can start a line of
    its own and forge the prompt's layout (`Example 3: ...`)."""
    return _NEWLINES.sub(r"\\n", text).replace("\t", " ")


def one_line_explanation(explanation: Explanation) -> str:
    """The explanation's text with its whitespace collapsed, for a prompt line."""
    return " ".join(explanation.text.split())


def token_list(tokens: Sequence[str]) -> str:
    """Tokens as one line of JSON strings (whitespace, newlines and any script stay visible),
    neutralised like every other dataset text."""
    return ", ".join(json.dumps(neutralise(t), ensure_ascii=False) for t in tokens)


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
