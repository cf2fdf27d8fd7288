"""`generation` (EleutherAI blog, "generation"): from the explanation alone, the scorer LLM writes
`n_texts` texts that should make the latent fire; the subject model reads them through the
backend, and the score is the fraction of texts on which the latent fires above `threshold` x
its maximum activation in the store (`record.stats.max`).

The texts are a test of precision the held-out examples cannot give: an explanation that names
the wrong thing, or something too broad, makes texts the latent ignores. One provider call per
latent (the "scorer" role); an answer with no numbered list is dropped from the response cache
and the score is an error, so a rerun asks again. Texts written twice count once.
"""

from __future__ import annotations

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
    Prediction,
    Register,
    SaexplainError,
    Score,
    call,
    discard_cached,
    error_score,
    input_error,
    load_prompt,
    one_line_explanation,
    total_usage,
)
from saexplain.scorers.written import (
    dedupe,
    error_after_call,
    model_problem,
    numbered_groups,
    text_activations,
)


class GenerationScorer:
    """Generation: the fraction of LLM-written texts on which the latent fires."""

    class Settings(MethodSettings):
        """The generation scorer's settings."""

        n_texts: int = Field(10, ge=1, le=50, description="texts the scorer LLM writes")
        threshold: float = Field(
            0.3,
            ge=0.0,
            lt=1.0,
            description="a text counts when the latent's largest activation on it is above "
            "threshold x the latent's max activation in the store; `0`: any activation",
        )
        max_length: int = Field(
            64, ge=2, description="token cap of each text for the subject model (BOS included)"
        )
        temperature: float = Field(
            0.0, ge=0.0, le=2.0, description="sampling temperature of the writing call"
        )
        max_tokens: int = Field(1000, ge=16, description="completion budget of the writing call")
        prompt: str | Path | None = Field(
            None, description='a bundled prompt name or a TOML path; `None`: "generation"'
        )

    name = "generation"
    needs: ClassVar[Needs] = Needs(provider=True, backend=True, coder=True)

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings.parse(self.name, settings)
        self.prompt = load_prompt(self.settings.prompt or "generation")

    def recorded_settings(self) -> dict[str, JsonValue]:
        """The declared settings, with the prompt by `name@version`."""
        return self.settings.model_dump(mode="json") | {"prompt": self.prompt.id}

    def request(self, explanation: Explanation) -> ChatRequest:
        n = self.settings.n_texts
        user = self.prompt.render_user(explanation=one_line_explanation(explanation), n=n)
        return ChatRequest(
            messages=(
                Message(role="system", content=self.prompt.render_system(n=n)),
                Message(role="user", content=user),
            ),
            temperature=self.settings.temperature,
            max_tokens=self.settings.max_tokens,
        )

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        settings = self.recorded_settings()
        # every check before the LLM is paid: nothing to compare with is an error, not a zero
        problem = input_error(record, explanation) or model_problem(record, ctx, self.name)
        if problem is not None:
            return error_score(record, explanation, self.name, settings, problem)

        outcome = await call(ctx, self.request(explanation))
        usage = total_usage([outcome])
        if outcome.response is None:
            message = outcome.error or "provider call failed"
            return error_score(record, explanation, self.name, settings, message)
        written = [t for g in numbered_groups(outcome.response.text) for t in g.items]
        texts = dedupe(written)[: self.settings.n_texts]
        if not texts:
            discard_cached(outcome.response)  # a rerun asks again instead of replaying it
            problem = "ParseError: the answer has no numbered list of texts"
            return error_after_call(record, explanation, self.name, settings, problem, usage)
        try:
            acts = await text_activations(
                ctx, record.latent.index, texts, max_length=self.settings.max_length
            )
        except SaexplainError as e:  # the backend refused the texts
            problem = f"{type(e).__name__}: {e}"
            return error_after_call(record, explanation, self.name, settings, problem, usage)

        latent_max = record.stats.max
        cut = self.settings.threshold * latent_max
        fired = [a.max_activation > cut for a in acts]
        # each text is written to activate (truth) and the model says whether it does
        predictions = tuple(
            Prediction(item=i, truth=True, predicted=f) for i, f in enumerate(fired)
        )
        value = sum(fired) / len(fired)
        relative = [a.max_activation / latent_max for a in acts]
        return Score(
            latent=record.latent,
            scorer=self.name,
            explainer=explanation.explainer,
            value=value,
            metrics={
                "fraction_firing": value,
                "n_texts": float(len(acts)),
                "n_firing": float(sum(fired)),
                "n_duplicates": float(len(written) - len(dedupe(written))),
                "mean_relative_activation": sum(relative) / len(relative),
                "threshold_activation": cut,
                "latent_max": latent_max,
            },
            predictions=predictions,
            settings=settings,
            evidence={"texts": [a.json(latent_max) for a in acts]},
            usage=usage,
        )


def register(register: Register) -> None:
    register(
        "generation",
        GenerationScorer,
        description="The LLM writes texts from the explanation; the fraction on which the "
        "latent fires.",
    )
