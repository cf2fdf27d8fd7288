"""The selfexplain prompt: a chat prompt with its answer prefilled, rendered in the backend's chat
format, and the placeholder tokens where the latent's direction is patched in."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from saexplain.explainers.selfexplain._arrays import Floats
from saexplain.methods import (
    Backend,
    BackendError,
    ChatTemplating,
    ConfigError,
    Message,
    PromptTemplate,
    Replace,
)

__all__ = ["PreparedPrompt", "plain_chat", "prepare_prompt"]


@dataclass(frozen=True)
class PreparedPrompt:
    """A rendered self-explanation prompt: its text, tokens (BOS prepended) and where to patch."""

    template: PromptTemplate
    text: str
    ids: tuple[int, ...]
    positions: tuple[int, ...]  # placeholder tokens (patched)
    chat_template: str  # "model" (the backend's `chat_prompt`) or "plain" (`plain_chat`)

    @property
    def last(self) -> int:
        """The last prompt token (its residual gives self-similarity, its logits the entropy)."""
        return len(self.ids) - 1

    @property
    def stops(self) -> tuple[str, ...]:
        return tuple(str(s) for s in self.template.data.get("stop", ()))

    def patch(self, vectors: Floats, layer: int) -> Replace:
        """The edit that writes `vectors` (row `i` for batch row `i`) over the placeholder
        tokens entering block `layer`."""
        return Replace(vector=vectors, positions=self.positions, layer=layer)


def plain_chat(messages: Sequence[Message], prefill: str) -> str:
    """The fallback chat layout for backends without `chat_prompt`."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    lines = [f"{names[m.role]}: {m.content}" for m in messages]
    return "\n".join([*lines, f"Assistant: {prefill}"])


def prepare_prompt(backend: Backend, template: PromptTemplate) -> PreparedPrompt:
    """Render `template` in the backend's chat format and locate its placeholder tokens.

    The template needs `user`, `prefill` (the start of the answer) and `placeholder` (a word that
    tokenizes on its own, default "X"); `$placeholder` marks where it goes.
    """
    placeholder = str(template.data.get("placeholder", "X"))
    if "prefill" not in template.data:
        raise ConfigError(f"prompt {template.id} needs a `prefill` (the start of the answer)")
    if not placeholder.strip():
        raise ConfigError(f"prompt {template.id}: empty placeholder")
    system = template.render_system(placeholder=placeholder)
    messages = [Message(role="system", content=system)] if system.strip() else []
    messages.append(Message(role="user", content=template.render_user(placeholder=placeholder)))
    prefill = PromptTemplate(
        name=template.name, version=template.version, system="", user=str(template.data["prefill"])
    ).render_user(placeholder=placeholder)
    rendered = (
        backend.chat_prompt(messages, prefill) if isinstance(backend, ChatTemplating) else None
    )
    if rendered is not None:
        text, kind = str(rendered), "model"
    else:
        text, kind = plain_chat(messages, prefill), "plain"
    ids = tuple(backend.tokenize([text]).rows()[0])
    bare = backend.tokenize([text], prepend_bos=False).rows()[0]
    shift = len(ids) - len(bare)  # the BOS the backend prepends, if any
    pieces = backend.str_tokens(bare)
    if "".join(pieces) != text:
        raise BackendError(
            f"{backend.name}: the tokens of prompt {template.id} do not spell its text, so the "
            "placeholder cannot be located"
        )
    # Patch the placeholder where the prompt put it (the user turn and the prefill), as a whole
    # word: never inside a template's own text (a default system prompt may contain "X").
    user = messages[-1].content
    u0 = text.rfind(user, 0, len(text) - len(prefill))
    regions = [(len(text) - len(prefill), len(text))]
    regions += [(u0, u0 + len(user))] if u0 >= 0 else [(0, len(text))]
    word = re.compile(rf"(?<!\w){re.escape(placeholder)}(?!\w)")
    spans = [
        (m.start(), m.end())
        for m in word.finditer(text)
        if any(a <= m.start() and m.end() <= b for a, b in regions)
    ]
    positions, start = [], 0
    for i, piece in enumerate(pieces):
        end = start + len(piece)
        if any(start < e and s < end for s, e in spans):
            positions.append(i + shift)
        start = end
    if not positions:
        raise ConfigError(f"prompt {template.id}: placeholder {placeholder!r} not found")
    return PreparedPrompt(template, text, ids, tuple(positions), kind)
