"""Highlight rendering shared by every prompt: the same code renders few-shots and live examples.

    render_example(example)                       -> "the <<cat>> sat"
    render_example(example, show_values=True)     -> "the <<cat>> sat\nActivations: cat (10)"
    render_token_values(example)                  -> "the\t0\n cat\t10\n sat\t0" (Bills et al.)

Tokens are marked when their activation is at least `threshold` times the example's max
(`relative_to="example"`) or the latent's max (`relative_to="latent"`, needs `latent_max`).
Adjacent marked tokens form one span; whitespace stays outside the markers. Tokenizer byte
artefacts (`Ġ` space, `Ċ` newline, `ĉ` tab, `▁` SentencePiece space, `<0x0A>` byte tokens) are
turned back into the characters they stand for, and special tokens in the chat-template form
(`<|endoftext|>` between documents, `<|im_start|>`, `<|eot_id|>`) are shown as a neutral
`[endoftext]`: a prompt never holds a template marker, which a local model's chat template could
read as a real turn boundary and which suggests the example is a conversation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from saexplain.models import Example

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_GLYPHS = str.maketrans({"Ġ": " ", "Ċ": "\n", "ĉ": "\t", "▁": " ", "č": "\r"})
_TEMPLATE_MARKER = re.compile(r"<\|([A-Za-z_][\w.-]*)\|>")


def clean_token(token: str) -> str:
    """A tokenizer's display string turned back into the text it stands for; a special token
    such as `<|endoftext|>` becomes the neutral marker `[endoftext]`."""

    def byte(m: re.Match[str]) -> str:
        value = int(m.group(1), 16)
        return chr(value) if value < 128 else m.group(0)

    text = _BYTE_TOKEN.sub(byte, token.translate(_GLYPHS))
    return _TEMPLATE_MARKER.sub(r"[\1]", text)


def clean_tokens(tokens: Sequence[str]) -> list[str]:
    return [clean_token(t) for t in tokens]


def scale_values(activations: Sequence[float], max_value: float, top: int = 10) -> list[int]:
    """Activations as integers 0..top relative to `max_value` (negative values count as 0)."""
    if max_value <= 0:
        return [0 for _ in activations]
    return [min(top, max(0, round(top * a / max_value))) for a in activations]


def marked(
    activations: Sequence[float],
    *,
    threshold: float = 0.3,
    relative_to: Literal["example", "latent"] = "example",
    latent_max: float | None = None,
) -> list[bool]:
    """Which tokens are marked: activation > 0 and >= threshold x the reference max."""
    if relative_to == "latent":
        if latent_max is None:
            raise ValueError("relative_to='latent' needs latent_max")
        ref = latent_max
    else:
        ref = max(activations, default=0.0)
    if ref <= 0:
        return [False for _ in activations]
    cut = threshold * ref
    return [a > 0 and a >= cut for a in activations]


def highlight(
    str_tokens: Sequence[str],
    marks: Sequence[bool],
    *,
    open_mark: str = "<<",
    close_mark: str = ">>",
) -> str:
    """Join cleaned tokens, wrapping each run of marked tokens in one `<<...>>` span."""
    if len(str_tokens) != len(marks):
        raise ValueError("str_tokens and marks must have the same length")
    out: list[str] = []
    i, n = 0, len(str_tokens)
    tokens = clean_tokens(str_tokens)
    while i < n:
        if not marks[i]:
            out.append(tokens[i])
            i += 1
            continue
        j = i
        while j < n and marks[j]:
            j += 1
        span = "".join(tokens[i:j])
        core = span.strip()
        if not core:  # a whitespace-only span: nothing visible to mark
            out.append(span)
        else:
            lead = span[: len(span) - len(span.lstrip())]
            trail = span[len(span.rstrip()) :]
            out.append(f"{lead}{open_mark}{core}{close_mark}{trail}")
        i = j
    return "".join(out)


def render_example(
    example: Example,
    *,
    threshold: float = 0.3,
    relative_to: Literal["example", "latent"] = "example",
    latent_max: float | None = None,
    show_values: bool = False,
    value_scale: int = 10,
    marks: Sequence[bool] | None = None,
    open_mark: str = "<<",
    close_mark: str = ">>",
) -> str:
    """One example as highlighted text; with `show_values`, a line of (token, 0-10 value) pairs.

    `marks` overrides the threshold (fuzzing marks chosen tokens, right or wrong).
    """
    acts = example.activations
    if marks is None:
        marks = marked(acts, threshold=threshold, relative_to=relative_to, latent_max=latent_max)
    text = highlight(example.str_tokens, marks, open_mark=open_mark, close_mark=close_mark)
    if not show_values:
        return text
    ref = latent_max if relative_to == "latent" and latent_max else max(acts, default=0.0)
    scaled = scale_values(acts, ref, value_scale)
    tokens = clean_tokens(example.str_tokens)
    pairs = [
        f"{tokens[i].strip() or repr(tokens[i])} ({scaled[i]})"
        for i in range(len(acts))
        if marks[i]
    ]
    return f"{text}\nActivations: {', '.join(pairs) if pairs else 'none'}"


def render_token_values(
    example: Example, *, latent_max: float | None = None, value_scale: int = 10
) -> str:
    """Bills et al. format: one `token<TAB>value` line per token, values 0..value_scale."""
    ref = latent_max if latent_max else max(example.activations, default=0.0)
    scaled = scale_values(example.activations, ref, value_scale)
    return "\n".join(
        f"{clean_token(t)}\t{v}" for t, v in zip(example.str_tokens, scaled, strict=True)
    )
