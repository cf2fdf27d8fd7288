"""`detection`: does each context contain what the explanation describes?

Held-out activating examples (from every activation decile, when the sampler recorded them) and
non-activating examples are shuffled with the latent's own seed and shown `batch_size` per
prompt, without highlights; the LLM answers a list of 0/1. Headline: balanced accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from saexplain.methods import (
    BinaryScorer,
    Item,
    MethodContext,
    Register,
    bos_id,
    display_tokens,
    first_shown,
    one_line,
)


class DetectionScorer(BinaryScorer):
    """Detection: the LLM says which contexts match the explanation (balanced accuracy)."""

    name = "detection"
    default_prompt = "detection"

    def render_items(
        self, items: Sequence[Item], rng: np.random.Generator, ctx: MethodContext
    ) -> list[str]:
        bos = bos_id(ctx)
        return [
            one_line("".join(display_tokens(it.example, first_shown(it.example, bos))).strip())
            for it in items
        ]


def register(register: Register) -> None:
    register(
        "detection",
        DetectionScorer,
        description="Which contexts match the explanation? Balanced accuracy, AUROC with logprobs.",
    )
