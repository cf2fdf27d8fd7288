"""`given`: explanations the user already has (their own, or imported ones), as an explainer.

`sx.score(model, sae, explanations={latent: text, ...}, scorers=[...])` and `saexplain score
CONFIG FILE.jsonl` run it: its results are the user's texts, so the scorers see the same
records, seeds and held-out examples as in any run, and resume, report and provenance work
unchanged. It asks no LLM and runs no model.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar

from pydantic import Field

from saexplain.methods import (
    Explanation,
    LatentRecord,
    MethodContext,
    MethodSettings,
    Needs,
    Register,
    Status,
)


class GivenExplanations:
    """Return the text given for each latent; a latent without one is `failed`."""

    name: ClassVar[str] = "given"
    needs: ClassVar[Needs] = Needs()

    class Settings(MethodSettings):
        """The texts to score, by latent index."""

        explanations: dict[str, str] = Field(
            default_factory=dict,
            description="the explanation of each latent, keyed by its index (as a string in "
            "JSON and YAML)",
        )

    settings: Settings

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings.parse(self.name, settings)
        bad = [key for key in self.settings.explanations if not key.isdigit()]
        if bad:
            raise ValueError(f"latent indices must be non-negative integers, got {bad[:5]}")

    def recorded_settings(self) -> dict[str, Any]:
        # A digest, not the texts: it keys the results, so changing any text makes new results
        # (scores of unchanged texts are answered by the response cache), while each result
        # records only its own text.
        texts = json.dumps(self.settings.explanations, sort_keys=True).encode()
        return {"texts": hashlib.blake2b(texts, digest_size=8).hexdigest()}

    async def explain(self, record: LatentRecord, ctx: MethodContext) -> Explanation:
        text = self.settings.explanations.get(str(record.latent.index), "").strip()
        if not text:
            return Explanation(
                latent=record.latent,
                explainer=self.name,
                status=Status.FAILED,
                error=f"no explanation was given for latent {record.latent.index}",
            )
        return Explanation(latent=record.latent, explainer=self.name, text=text)


def register(register: Register) -> None:
    register(
        "given",
        GivenExplanations,
        description="explanations you already have (sx.score, saexplain score): no LLM, no model",
    )
