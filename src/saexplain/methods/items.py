"""What a scorer may show: the held-out items, the input check and the error result.

Every scorer draws only from `record.scoring_examples` (activating) and `record.non_activating`;
`record.explanation_examples` are never shown to a scorer. That the two activating splits are
disjoint is checked by `LatentRecord` itself, when the record is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import JsonValue

from saexplain.methods.seeds import latent_seed
from saexplain.models import (
    Example,
    Explanation,
    LatentRecord,
    Prediction,
    Score,
    Settings,
    Status,
    Usage,
)
from saexplain.protocols import MethodContext

__all__ = [
    "Item",
    "draw_items",
    "error_score",
    "final_score",
    "input_error",
    "select_items",
]


@dataclass(frozen=True)
class Item:
    """One example to score. `index` is its position in scoring_examples + non_activating (the
    record's order, not the shuffled one), so predictions map back to the record."""

    index: int
    example: Example
    truth: bool

    @property
    def quantile(self) -> int | None:
        """The activation bin of an activating item (None for a negative)."""
        return self.example.quantile if self.truth else None


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
    return None


def error_score(
    record: LatentRecord, explanation: Explanation, scorer: str, settings: Settings, message: str
) -> Score:
    """A `Status.ERROR` score saying why nothing was scored."""
    return Score(
        latent=record.latent,
        scorer=scorer,
        explainer=explanation.explainer,
        status=Status.ERROR,
        error=message,
        settings=settings,
    )


def final_score(
    record: LatentRecord,
    explanation: Explanation,
    scorer: str,
    *,
    value: float | None,
    answered: bool,
    why_no_value: str,
    metrics: Mapping[str, float | None],
    predictions: Sequence[Prediction],
    settings: Settings,
    usage: Usage,
    evidence: Mapping[str, JsonValue] | None = None,
) -> Score:
    """The score a scorer returns once its calls are done: `value` when there is one; without
    one, `why_no_value` with status ERROR when nothing was answered (an outage: a rerun retries
    it) or FAILED when answers came but give no value (final)."""
    outcome: dict[str, object] = {"value": value}
    if value is None:
        status = Status.FAILED if answered else Status.ERROR
        outcome = {"status": status, "error": why_no_value}
    return Score.model_validate(
        {
            "latent": record.latent,
            "scorer": scorer,
            "explainer": explanation.explainer,
            **outcome,
            "metrics": dict(metrics),
            "predictions": tuple(predictions),
            "settings": settings,
            "evidence": dict(evidence or {}),
            "usage": usage,
        }
    )


def draw_items(
    record: LatentRecord,
    ctx: MethodContext,
    purpose: str,
    *,
    max_activating: int | None = None,
    max_negatives: int | None = None,
) -> tuple[int, np.random.Generator, list[Item]]:
    """The latent's own seed for `purpose` (a scorer's name), a random stream from it, and the
    capped items drawn with that stream (`select_items`); keep using the stream for the order."""
    seed = latent_seed(ctx, record, purpose)
    rng = np.random.default_rng(seed)
    items = select_items(record, rng, max_activating=max_activating, max_negatives=max_negatives)
    return seed, rng, items
