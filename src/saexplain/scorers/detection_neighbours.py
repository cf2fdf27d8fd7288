"""`detection_neighbours`: detection against the contexts of the latent's nearest neighbours.

Plain detection asks whether each context matches the explanation, with random contexts as
negatives, so an over-broad explanation ("animals" for a cat latent) still scores high: random
text rarely holds any animal. Here the negatives are only the record's neighbour contexts
(`ExampleKind.NEIGHBOUR`): windows where the latents with the most similar decoder directions
fire and this one does not (the record builder's `neighbours` negatives). An explanation that
also covers the neighbours (a split or vague feature) falls toward chance; one that names what
sets this latent apart stays high. Same prompt, parser and metrics as detection; its own name, so
it sits beside plain detection in the summary.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import JsonValue

from saexplain.methods import (
    ExampleKind,
    Explanation,
    LatentRecord,
    MethodContext,
    Register,
    Score,
    error_score,
    input_error,
)
from saexplain.scorers.detection import DetectionScorer

HOW_TO_ADD = (
    "build records with neighbour negatives, e.g. "
    "records={'negatives': ['random:50', 'neighbours:50']} (RecordConfig.negatives; the "
    "store needs the coder's decoder, which collection saves by default)"
)


class NeighbourDetectionScorer(DetectionScorer):
    """Detection whose negatives are the contexts where the latent's decoder neighbours fire."""

    name = "detection_neighbours"
    default_prompt = "detection"
    negative_kinds: ClassVar[frozenset[ExampleKind] | None] = frozenset({ExampleKind.NEIGHBOUR})

    def recorded_settings(self) -> dict[str, JsonValue]:
        return super().recorded_settings() | {"negatives": ExampleKind.NEIGHBOUR.value}

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        # before any LLM call: a record without neighbour negatives cannot be scored here, and
        # the error says which setting adds them (plain detection would silently use others)
        if input_error(record, explanation) is None and not self.shown_negatives(record):
            message = (
                f"{self.name} needs neighbour negatives and the record has none"
                f"{_builder_note(record)}: {HOW_TO_ADD}"
            )
            return error_score(record, explanation, self.name, self.recorded_settings(), message)
        return await super().score(record, explanation, ctx)


def _builder_note(record: LatentRecord) -> str:
    """What the record builder said about its neighbour negatives, when it tried."""
    reports: Any = record.sampling.get("negatives")
    for entry in reports if isinstance(reports, list) else ():
        if isinstance(entry, dict) and entry.get("builder") == "neighbours":
            why = entry.get("skipped") or f"it asked for {entry.get('requested')}, found none"
            return f" (the record builder: {why})"
    return ""


def register(register: Register) -> None:
    register(
        "detection_neighbours",
        NeighbourDetectionScorer,
        description="Detection against contexts where the decoder-nearest latents fire: "
        "over-broad explanations fall toward chance.",
    )
