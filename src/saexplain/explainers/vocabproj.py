"""`vocabproj`: the logit lens of the latent's decoder direction, read by an LLM.

`backend.unembed(W_dec[latent])` applies the model's final norm and unembedding; the top and
bottom `k` tokens (the ones the latent promotes and suppresses) go to the LLM, which must see
through noisy, multilingual and fragmentary tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from saexplain.methods import (
    ConfigError,
    Evidence,
    LatentRecord,
    LLMExplainer,
    MethodContext,
    Needs,
    Register,
    logit_lens,
    require_model,
    run_model,
    token_list,
    top_tokens,
)

NOT_SHOWN = "(not shown)"


class VocabProj(LLMExplainer):
    """Explain a latent from the tokens its decoder direction promotes and suppresses."""

    name: ClassVar[str] = "vocabproj"
    default_prompt: ClassVar[str] = "vocabproj"
    needs: ClassVar[Needs] = Needs(provider=True, backend=True, coder=True, records=False)

    class Settings(LLMExplainer.Settings):
        """The common LLM explainer settings, and how many tokens vocabproj shows."""

        k: int = Field(
            50, ge=1, le=500, description="tokens in each list (the output-centric paper's value)"
        )
        bottom: bool = Field(True, description="also show the suppressed tokens")

    settings: Settings

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.validate_prompt()

    def shot_fields(self, shot: Mapping[str, Any]) -> dict[str, str]:
        promoted, suppressed = shot.get("promoted"), shot.get("suppressed")
        if not isinstance(promoted, list) or not isinstance(suppressed, list):
            raise ConfigError(f"prompt {self.prompt.id}: shots need 'promoted' and 'suppressed'")
        return {
            "k": str(len(promoted)),
            "promoted": token_list([str(t) for t in promoted]),
            "suppressed": (
                token_list([str(t) for t in suppressed]) if self.settings.bottom else NOT_SHOWN
            ),
        }

    async def gather(self, record: LatentRecord, ctx: MethodContext) -> Evidence:
        backend, coder = require_model(ctx, self.name)
        lens = await run_model(backend, logit_lens, backend, coder, record.latent.index)
        k, bottom = self.settings.k, self.settings.bottom
        top, skipped_top = top_tokens(backend, lens, k)
        low, skipped_low = top_tokens(backend, lens, k, largest=False) if bottom else ([], 0)
        return Evidence(
            fields={
                "k": str(k),
                "promoted": token_list([t.token for t in top]),
                "suppressed": token_list([t.token for t in low]) if bottom else NOT_SHOWN,
            },
            shown={
                "promoted": [t.json() for t in top],
                "suppressed": [t.json() for t in low],
                "undecodable_skipped": skipped_top + skipped_low,
                "vocab": int(lens.shape[0]),
            },
        )


def register(register: Register) -> None:
    register(
        "vocabproj",
        VocabProj,
        description="LLM reads the top/bottom logit-lens tokens of the decoder direction",
    )
