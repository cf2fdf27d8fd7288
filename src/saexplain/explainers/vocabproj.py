"""`vocabproj`: the logit lens of the latent's decoder direction, read by an LLM.

`backend.unembed(W_dec[latent])` applies the model's final norm and unembedding; the top and
bottom `k` tokens (the ones the latent promotes and suppresses) go to the LLM, which must see
through noisy, multilingual and fragmentary tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import JsonValue

from saexplain.checks import check_bool, check_int
from saexplain.errors import ConfigError
from saexplain.explainers._llm import (
    Evidence,
    LLMExplainer,
    logit_lens,
    require_model,
    token_list,
    top_tokens,
)
from saexplain.hookspecs import Register
from saexplain.models import LatentRecord
from saexplain.protocols import MethodContext

NOT_SHOWN = "(not shown)"


class VocabProj(LLMExplainer):
    """Explain a latent from the tokens its decoder direction promotes and suppresses."""

    name: ClassVar[str] = "vocabproj"
    default_prompt: ClassVar[str] = "vocabproj"

    def __init__(
        self,
        *,
        k: int = 50,
        bottom: bool = True,
        **common: Any,  # prompt, style, cot, temperature, max_tokens: see LLMExplainer
    ) -> None:
        super().__init__(**common)
        self.k = check_int("k", k, low=1, high=500)
        self.bottom = check_bool("bottom", bottom)
        self.validate_prompt()

    def method_settings(self) -> dict[str, JsonValue]:
        return {"k": self.k, "bottom": self.bottom}

    def shot_fields(self, shot: Mapping[str, Any]) -> dict[str, str]:
        promoted, suppressed = shot.get("promoted"), shot.get("suppressed")
        if not isinstance(promoted, list) or not isinstance(suppressed, list):
            raise ConfigError(f"prompt {self.prompt.id}: shots need 'promoted' and 'suppressed'")
        return {
            "k": str(len(promoted)),
            "promoted": token_list([str(t) for t in promoted]),
            "suppressed": token_list([str(t) for t in suppressed]) if self.bottom else NOT_SHOWN,
        }

    async def gather(self, record: LatentRecord, ctx: MethodContext) -> Evidence:
        backend, coder = require_model(ctx, self.name)
        lens = logit_lens(backend, coder, record.latent.index)
        top, skipped_top = top_tokens(backend, lens, self.k)
        low, skipped_low = (
            top_tokens(backend, lens, self.k, largest=False) if self.bottom else ([], 0)
        )
        return Evidence(
            fields={
                "k": str(self.k),
                "promoted": token_list(top),
                "suppressed": token_list(low) if self.bottom else NOT_SHOWN,
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
