"""`input_eval` (output-centric feature descriptions, the input-based evaluation): from the
explanation alone, the scorer LLM writes `n_activating` sentences that should make the latent
fire and `n_neutral` unrelated ones; the subject model reads all of them through the backend.
The explanation succeeds (value 1.0, else 0.0) when the mean over sentences of the latent's
largest activation is higher on the activating set than on the neutral one. Averaged over
latents, the value is the paper's success rate.

The margin (mean activating - mean neutral) is reported too, in activation units and divided by
the latent's max activation in the store, since a bare success hides how clear it was. One
provider call per latent (the "scorer" role); an answer without both lists is dropped from the
response cache and the score is an error, so a rerun asks again.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from saexplain.methods import (
    Explanation,
    LatentRecord,
    MethodContext,
    ParseError,
    Prediction,
    Register,
    Score,
    classification_metrics,
)
from saexplain.scorers.written import (
    Group,
    WritingScorer,
    WritingSettings,
    dedupe,
    numbered_groups,
)


def _kind(header: str | None) -> str | None:
    """ "neutral", "activating" or None (no header, or one naming both, like a preamble)."""
    if header is None:
        return None
    low = header.lower()
    neutral = any(w in low for w in ("neutral", "unrelated", "non-activating", "nonactivating"))
    activating = "activat" in low.replace("non-activating", "").replace("nonactivating", "")
    if neutral == activating:
        return None
    return "neutral" if neutral else "activating"


def split_sets(groups: Sequence[Group]) -> tuple[list[str], list[str]]:
    """The activating and the neutral sentences of an answer's lists: by their headers, else in
    the order asked (activating first). `ParseError` unless there are exactly two lists."""
    if len(groups) != 2:
        raise ParseError(f"expected an activating and a neutral list, found {len(groups)} lists")
    first, second = groups
    if _kind(first.header) == "neutral" or _kind(second.header) == "activating":
        first, second = second, first
    if _kind(first.header) == _kind(second.header) is not None:
        raise ParseError(f"both lists are headed {_kind(first.header)!r}")
    return dedupe(first.items), dedupe(second.items)


class InputEvalScorer(WritingScorer):
    """Input-based evaluation: is the latent more active on sentences written to activate it?"""

    class Settings(WritingSettings):
        """The input_eval scorer's settings."""

        n_activating: int = Field(
            5, ge=1, le=25, description="sentences written to activate the latent"
        )
        n_neutral: int = Field(5, ge=1, le=25, description="unrelated (neutral) sentences")
        threshold: float = Field(
            0.3,
            ge=0.0,
            lt=1.0,
            description="for the per-sentence predictions only: a sentence fires when the "
            "latent's largest activation on it is above threshold x its max in the store",
        )

    name = "input_eval"
    settings: Settings

    def prompt_counts(self) -> dict[str, int]:
        return {"n_activating": self.settings.n_activating, "n_neutral": self.settings.n_neutral}

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        answer = await self.ask(record, explanation, ctx)
        if isinstance(answer, Score):
            return answer
        try:
            activating, neutral = split_sets(numbered_groups(answer.response.text))
        except ParseError as e:
            return self.unreadable(record, explanation, answer, f"ParseError: {e}")
        activating = activating[: self.settings.n_activating]
        neutral = neutral[: self.settings.n_neutral]
        acts = await self.read(record, explanation, ctx, activating + neutral, answer)
        if isinstance(acts, Score):
            return acts

        latent_max = record.stats.max
        on, off = acts[: len(activating)], acts[len(activating) :]
        mean_on = sum(a.max_activation for a in on) / len(on)
        mean_off = sum(a.max_activation for a in off) / len(off)
        margin = mean_on - mean_off
        cut = self.settings.threshold * latent_max
        predictions = [
            Prediction(item=i, truth=i < len(on), predicted=a.max_activation > cut)
            for i, a in enumerate(acts)
        ]
        separation = classification_metrics(predictions)
        success = float(mean_on > mean_off)
        return Score(
            latent=record.latent,
            scorer=self.name,
            explainer=explanation.explainer,
            value=success,
            metrics={
                "success": success,
                "margin": margin,
                "margin_normalised": margin / latent_max,
                "mean_activating": mean_on,
                "mean_neutral": mean_off,
                "n_activating": float(len(on)),
                "n_neutral": float(len(off)),
                "sentence_balanced_accuracy": separation["balanced_accuracy"],
                "threshold_activation": cut,
                "latent_max": latent_max,
            },
            predictions=tuple(predictions),
            settings=answer.settings,
            evidence={
                "activating": [a.json(latent_max) for a in on],
                "neutral": [a.json(latent_max) for a in off],
            },
            usage=answer.usage,
        )


def register(register: Register) -> None:
    register(
        "input_eval",
        InputEvalScorer,
        description="The LLM writes activating and neutral sentences from the explanation; "
        "success when the latent is more active on the first (output-centric paper).",
    )
