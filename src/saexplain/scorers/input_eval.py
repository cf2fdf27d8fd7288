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
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, JsonValue

from saexplain.methods import (
    ChatRequest,
    Explanation,
    LatentRecord,
    Message,
    MethodContext,
    MethodSettings,
    Needs,
    ParseError,
    Prediction,
    Register,
    SaexplainError,
    Score,
    call,
    classification_metrics,
    discard_cached,
    error_score,
    input_error,
    load_prompt,
    one_line_explanation,
    total_usage,
)
from saexplain.scorers.written import (
    Group,
    dedupe,
    error_after_call,
    model_problem,
    numbered_groups,
    text_activations,
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


class InputEvalScorer:
    """Input-based evaluation: is the latent more active on sentences written to activate it?"""

    class Settings(MethodSettings):
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
        max_length: int = Field(
            64, ge=2, description="token cap of each sentence for the subject model (BOS included)"
        )
        temperature: float = Field(
            0.0, ge=0.0, le=2.0, description="sampling temperature of the writing call"
        )
        max_tokens: int = Field(1000, ge=16, description="completion budget of the writing call")
        prompt: str | Path | None = Field(
            None, description='a bundled prompt name or a TOML path; `None`: "input_eval"'
        )

    name = "input_eval"
    needs: ClassVar[Needs] = Needs(provider=True, backend=True, coder=True)

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings.parse(self.name, settings)
        self.prompt = load_prompt(self.settings.prompt or "input_eval")

    def recorded_settings(self) -> dict[str, JsonValue]:
        """The declared settings, with the prompt by `name@version`."""
        return self.settings.model_dump(mode="json") | {"prompt": self.prompt.id}

    def request(self, explanation: Explanation) -> ChatRequest:
        counts = {"n_activating": self.settings.n_activating, "n_neutral": self.settings.n_neutral}
        user = self.prompt.render_user(explanation=one_line_explanation(explanation), **counts)
        return ChatRequest(
            messages=(
                Message(role="system", content=self.prompt.render_system(**counts)),
                Message(role="user", content=user),
            ),
            temperature=self.settings.temperature,
            max_tokens=self.settings.max_tokens,
        )

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        settings = self.recorded_settings()
        # every check before the LLM is paid
        problem = input_error(record, explanation) or model_problem(record, ctx, self.name)
        if problem is not None:
            return error_score(record, explanation, self.name, settings, problem)

        outcome = await call(ctx, self.request(explanation))
        usage = total_usage([outcome])
        if outcome.response is None:
            message = outcome.error or "provider call failed"
            return error_score(record, explanation, self.name, settings, message)
        try:
            activating, neutral = split_sets(numbered_groups(outcome.response.text))
        except ParseError as e:
            discard_cached(outcome.response)  # a rerun asks again instead of replaying it
            return error_after_call(
                record, explanation, self.name, settings, f"ParseError: {e}", usage
            )
        activating = activating[: self.settings.n_activating]
        neutral = neutral[: self.settings.n_neutral]
        try:
            acts = await text_activations(
                ctx, record.latent.index, activating + neutral, max_length=self.settings.max_length
            )
        except SaexplainError as e:  # the backend refused the sentences
            problem = f"{type(e).__name__}: {e}"
            return error_after_call(record, explanation, self.name, settings, problem, usage)

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
            settings=settings,
            evidence={
                "activating": [a.json(latent_max) for a in on],
                "neutral": [a.json(latent_max) for a in off],
            },
            usage=usage,
        )


def register(register: Register) -> None:
    register(
        "input_eval",
        InputEvalScorer,
        description="The LLM writes activating and neutral sentences from the explanation; "
        "success when the latent is more active on the first (output-centric paper).",
    )
