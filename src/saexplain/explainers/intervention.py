"""`intervention` (explainer): what the latent does to the model's output, read by an LLM.

The latent is intervened on at a calibrated strength (`calibrate`: the clamp value, or steering
scale, at which the mean KL between the clean and the intervened next-token distributions over
neutral prompts reaches `target_kl`), so every latent is shown at the same strength. The LLM sees,
for each prompt, the clean and the intervened continuation (`generate_pairs`), and the tokens
whose next-token logit the intervention raised and lowered most (averaged over the prompts' last
tokens). The section on interventions of "Automatically interpreting millions of features"
describes the method; the evidence records the strength, reached or not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, JsonValue

from saexplain.methods import (
    NEUTRAL_PROMPTS,
    Backend,
    ConfigError,
    Evidence,
    EvidenceUnavailable,
    LatentRecord,
    LLMExplainer,
    MethodContext,
    Needs,
    Register,
    SparseCoder,
    Status,
    Strength,
    TokenScore,
    calibrate,
    generate_pairs,
    latent_seed,
    neutralise,
    one_line,
    run_model,
    to_numpy,
    token_list,
    top_tokens,
    truncate,
)

NOT_SHOWN = "(not shown)"
MIN_KL = 1e-6  # below this the intervention changes nothing: no evidence to show


class Intervention(LLMExplainer):
    """Explain a latent from clean and intervened continuations of neutral prompts."""

    name: ClassVar[str] = "intervention"
    default_prompt: ClassVar[str] = "intervention_explainer"
    needs: ClassVar[Needs] = Needs(provider=True, backend=True, coder=True, records=False)

    class Settings(LLMExplainer.Settings):
        """The common LLM explainer settings, the strength and the generations shown."""

        target_kl: float = Field(
            0.5, gt=0.0, description="intervention strength: mean KL (nats) to calibrate to"
        )
        kind: Literal["clamp", "steer"] = Field(
            "clamp",
            description='`"clamp"`: set the latent at every position; `"steer"`: add its '
            "decoder row, scaled",
        )
        prompts: list[Annotated[str, Field(min_length=1)]] | None = Field(
            None,
            min_length=1,
            strict=False,  # a tuple of prompts is fine
            description="neutral prompts for calibration and generation; `None`: the kit's "
            "`NEUTRAL_PROMPTS`",
        )
        max_new_tokens: int = Field(24, ge=1, le=256, description="tokens per continuation")
        sample_temperature: float = Field(
            0.7, ge=0.0, le=2.0, description="temperature of the subject model's continuations"
        )
        top: int = Field(10, ge=0, le=100, description="raised and lowered tokens shown (0: none)")
        tol: float = Field(
            0.1, gt=0.0, lt=1.0, description="calibration: relative tolerance on the KL"
        )
        max_steps: int = Field(16, ge=2, le=64, description="calibration: forward passes at most")
        max_chars_per_text: int = Field(
            300, ge=20, description="each continuation cut to this many characters"
        )

    settings: Settings

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.validate_prompt()

    @property
    def prompts(self) -> tuple[str, ...]:
        given = self.settings.prompts
        return tuple(given) if given is not None else NEUTRAL_PROMPTS

    def recorded_settings(self) -> dict[str, JsonValue]:
        """The declared settings and the prompts used (the default set resolved)."""
        return super().recorded_settings() | {"prompts": list(self.prompts)}

    # rendering ---------------------------------------------------------------------------------

    def _text(self, text: str) -> str:
        return json.dumps(
            neutralise(one_line(truncate(text, self.settings.max_chars_per_text))),
            ensure_ascii=False,
        )

    def _fields(
        self,
        kind: str,
        target: float,
        pairs: Sequence[tuple[str, str, str]],
        promoted: Sequence[str],
        suppressed: Sequence[str],
    ) -> dict[str, str]:
        blocks = [
            f"Prompt {i}: {self._text(prompt)}\n"
            f"  normal: {self._text(clean)}\n"
            f"  with the latent: {self._text(edited)}"
            for i, (prompt, clean, edited) in enumerate(pairs, 1)
        ]
        shown = self.settings.top > 0
        return {
            "kind": kind,
            "target": f"{target:g}",
            "pairs": "\n".join(blocks),
            "promoted": token_list(promoted) if shown else NOT_SHOWN,
            "suppressed": token_list(suppressed) if shown else NOT_SHOWN,
        }

    def shot_fields(self, shot: Mapping[str, Any]) -> dict[str, str]:
        pairs, promoted, suppressed = (
            shot.get("pairs"),
            shot.get("promoted"),
            shot.get("suppressed"),
        )
        if not (
            isinstance(pairs, list)
            and all(isinstance(p, list) and len(p) == 3 for p in pairs)
            and isinstance(promoted, list)
            and isinstance(suppressed, list)
        ):
            raise ConfigError(
                f"prompt {self.prompt.id}: shots need 'pairs' ([prompt, clean, intervened] "
                "lists), 'promoted' and 'suppressed'"
            )
        top = self.settings.top
        return self._fields(
            str(shot.get("kind", "clamp")),
            float(shot.get("target", 0.5)),
            [(str(a), str(b), str(c)) for a, b, c in pairs],
            [str(t) for t in promoted][:top],
            [str(t) for t in suppressed][:top],
        )

    # evidence ----------------------------------------------------------------------------------

    @staticmethod
    def logit_change(
        backend: Backend, coder: SparseCoder, strength: Strength, prompts: Sequence[str]
    ) -> npt.NDArray[np.float64]:
        """Mean over prompts of the intervened minus the clean logits of the next token after
        each prompt (two batched passes)."""
        tokens = backend.tokenize(list(prompts))
        rows = np.arange(tokens.shape[0])
        last = tokens.mask.sum(axis=1) - 1
        clean = to_numpy(backend.logits(tokens), np.float64)[rows, last]
        edited = to_numpy(backend.logits(tokens, strength.edits(coder)), np.float64)[rows, last]
        out: npt.NDArray[np.float64] = (edited - clean).mean(axis=0)
        return out

    async def gather(self, record: LatentRecord, ctx: MethodContext) -> Evidence:
        if ctx.backend is None or ctx.coder is None:
            raise EvidenceUnavailable("intervention needs a backend and a sparse coder")
        backend, coder = ctx.backend, ctx.coder
        latent = record.latent.index
        if not 0 <= latent < coder.d_sae:
            raise EvidenceUnavailable(f"latent {latent} outside [0, {coder.d_sae})")
        s = self.settings
        strength = await calibrate(
            ctx,
            latent,
            target_kl=s.target_kl,
            prompts=self.prompts,
            kind=s.kind,
            tol=s.tol,
            max_steps=s.max_steps,
        )
        if strength.kl < MIN_KL:
            raise EvidenceUnavailable(
                f"intervening on latent {latent} ({s.kind}, up to {strength.value:g}) changed "
                "no prediction",
                status=Status.FAILED,
            )
        pairs = await generate_pairs(
            ctx,
            strength,
            self.prompts,
            max_new_tokens=s.max_new_tokens,
            temperature=s.sample_temperature,
            seed=latent_seed(ctx, record, "intervention"),
        )
        promoted: list[TokenScore] = []
        suppressed: list[TokenScore] = []
        if s.top:
            change = await run_model(
                backend, self.logit_change, backend, coder, strength, self.prompts
            )
            promoted, _ = top_tokens(backend, change, s.top)
            suppressed, _ = top_tokens(backend, change, s.top, largest=False)
        triples = [(p, c, e) for p, (c, e) in zip(self.prompts, pairs, strict=True)]
        return Evidence(
            fields=self._fields(
                s.kind,
                s.target_kl,
                triples,
                [t.token for t in promoted],
                [t.token for t in suppressed],
            ),
            shown={
                "strength": strength.to_json(),
                "pairs": [{"prompt": p, "clean": c, "intervened": e} for p, c, e in triples],
                "promoted": [t.json() for t in promoted],
                "suppressed": [t.json() for t in suppressed],
            },
        )


def register(register: Register) -> None:
    register(
        "intervention",
        Intervention,
        description="clean vs intervened continuations at a calibrated KL; LLM says what changes",
    )
