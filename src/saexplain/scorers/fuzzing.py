"""`fuzzing`: are the marked tokens the ones the explanation predicts?

Activating examples are marked at their true tokens (activation >= `threshold` x the example's
max); non-activating examples are marked at `ceil(mean marked count)` random visible tokens,
drawn with the latent's own seed. The LLM answers per example whether every mark is right.
Headline: balanced accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import Field

from saexplain.methods import (
    BinaryScorer,
    Item,
    MethodContext,
    Register,
    bos_id,
    display_tokens,
    first_shown,
    highlight,
    marked,
    one_line,
)


class FuzzingScorer(BinaryScorer):
    """Fuzzing: the LLM says whether the marked tokens are the right ones (balanced accuracy)."""

    class Settings(BinaryScorer.Settings):
        """Detection's settings, and which tokens are marked."""

        threshold: float = Field(
            0.3,
            ge=0.0,
            le=1.0,
            description="marked tokens: activation >= threshold x the example's max",
        )

    name = "fuzzing"
    default_prompt = "fuzzing"
    settings: Settings

    def render_items(
        self, items: Sequence[Item], rng: np.random.Generator, ctx: MethodContext
    ) -> list[str]:
        bos = bos_id(ctx)
        shown = [first_shown(it.example, bos) for it in items]
        true_marks = {
            it.index: marked(it.example.activations[s:], threshold=self.settings.threshold)
            for it, s in zip(items, shown, strict=True)
            if it.truth
        }
        counts = [sum(m) for m in true_marks.values()]
        n_fake = max(1, math.ceil(sum(counts) / len(counts))) if counts else 1
        lines = []
        for it, s in zip(items, shown, strict=True):
            tokens = display_tokens(it.example, s)
            if it.truth:
                marks = true_marks[it.index]
            else:
                # Random visible tokens: a mark on whitespace would be invisible.
                visible = [i for i, t in enumerate(tokens) if t.strip()]
                pick = rng.choice(len(visible), size=min(n_fake, len(visible)), replace=False)
                chosen = {visible[int(i)] for i in pick}
                marks = [i in chosen for i in range(len(tokens))]
            lines.append(one_line(highlight(tokens, marks).strip()))
        return lines


def register(register: Register) -> None:
    register(
        "fuzzing",
        FuzzingScorer,
        description="Are the marked tokens the activating ones? Balanced accuracy, AUROC.",
    )
