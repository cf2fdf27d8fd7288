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

from pydantic import Field

from saexplain.methods import (
    Explanation,
    LatentRecord,
    MethodContext,
    Prediction,
    Register,
    Score,
)
from saexplain.scorers.written import WritingScorer, WritingSettings, dedupe, numbered_groups


class GenerationScorer(WritingScorer):
    """Generation: the fraction of LLM-written texts on which the latent fires."""

    class Settings(WritingSettings):
        """The generation scorer's settings."""

        n_texts: int = Field(10, ge=1, le=50, description="texts the scorer LLM writes")
        threshold: float = Field(
            0.3,
            ge=0.0,
            lt=1.0,
            description="a text counts when the latent's largest activation on it is above "
            "threshold x the latent's max activation in the store; `0`: any activation",
        )

    name = "generation"
    settings: Settings

    def prompt_counts(self) -> dict[str, int]:
        return {"n": self.settings.n_texts}

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        answer = await self.ask(record, explanation, ctx)
        if isinstance(answer, Score):
            return answer
        written = [t for g in numbered_groups(answer.response.text) for t in g.items]
        texts = dedupe(written)[: self.settings.n_texts]
        if not texts:
            problem = "ParseError: the answer has no numbered list of texts"
            return self.unreadable(record, explanation, answer, problem)
        acts = await self.read(record, explanation, ctx, texts, answer)
        if isinstance(acts, Score):
            return acts

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
            settings=answer.settings,
            evidence={"texts": [a.json(latent_max) for a in acts]},
            usage=answer.usage,
        )


def register(register: Register) -> None:
    register(
        "generation",
        GenerationScorer,
        description="The LLM writes texts from the explanation; the fraction on which the "
        "latent fires.",
    )
