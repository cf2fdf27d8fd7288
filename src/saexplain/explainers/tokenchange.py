"""`tokenchange`: clamp the latent on sample contexts and describe which predictions move.

The latent is clamped to `+value` (and `-value`) at every position through the backend, with the
coder's reconstruction error kept (the backend's `Clamp` edit). The change of the next-token
logits (or log-probabilities) against the clean run is averaged over contexts and positions; the
`top` tokens raised by each clamp go to the LLM.

Contexts (setting `contexts`): by default the record's *explanation* examples, which the
explainer may see anyway, so nothing of the held-out scoring split leaks into the explanation;
`"random"` uses the record's random (non-activating) contexts, as the paper did with random text
(the LLM sees only averaged token changes, never that text); `texts` supplies your own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, JsonValue

from saexplain.methods import (
    Backend,
    Clamp,
    ConfigError,
    Evidence,
    EvidenceUnavailable,
    ExampleKind,
    LatentRecord,
    LLMExplainer,
    MethodContext,
    Needs,
    Register,
    SparseCoder,
    Status,
    TokenBatch,
    latent_seed,
    require_model,
    run_model,
    to_numpy,
    token_list,
    top_tokens,
)

NOT_SHOWN = "(not shown)"
ClampMode = Literal["set", "add", "scale"]


def log_softmax(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    m = x.max(axis=-1, keepdims=True)
    shifted = x - m
    out: npt.NDArray[np.float32] = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return out


class TokenChange(LLMExplainer):
    """Explain a latent from the next-token predictions that move when it is clamped."""

    name: ClassVar[str] = "tokenchange"
    default_prompt: ClassVar[str] = "tokenchange"
    needs: ClassVar[Needs] = Needs(provider=True, backend=True, coder=True)

    class Settings(LLMExplainer.Settings):
        """The common LLM explainer settings, and how tokenchange clamps."""

        n_contexts: int = Field(
            32, ge=1, description="contexts sampled (per-latent seed from the run seed and latent)"
        )
        value: float = Field(
            10.0, gt=0.0, description="clamp strength v, in the coder's activation space"
        )
        mode: ClampMode = Field(
            "set",
            description='`"set"` the latent to ±v, `"add"` ±v to it, or `"scale"` it by ±v',
        )
        negative: bool = Field(True, description="also clamp to -v and show what that raises")
        top: int = Field(10, ge=1, le=200, description="tokens per list")
        measure: Literal["logit", "logprob"] = Field(
            "logit", description='average the change of `"logit"`s (paper) or `"logprob"`s'
        )
        contexts: Literal["explanation", "random", "explanation+random"] = Field(
            "explanation", description="where contexts come from (below)"
        )
        texts: list[Annotated[str, Field(min_length=1)]] | None = Field(
            None,
            min_length=1,
            strict=False,  # a tuple of texts is fine
            description="your own texts instead (tokenized by the backend, BOS prepended)",
        )
        max_length: int = Field(64, ge=2, description="token cap for `texts`")
        batch_size: int = Field(8, ge=1, description="contexts per forward pass")

    settings: Settings

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.validate_prompt()

    def recorded_settings(self) -> dict[str, JsonValue]:
        """The declared settings, where the contexts came from, and the error term kept."""
        return super().recorded_settings() | {
            "contexts": "texts" if self.settings.texts is not None else self.settings.contexts,
            "error_term": "kept",  # the backend's Clamp keeps x - decode(encode(x))
        }

    def shot_fields(self, shot: Mapping[str, Any]) -> dict[str, str]:
        high, low = shot.get("raised_high"), shot.get("raised_low")
        if not isinstance(high, list) or not isinstance(low, list):
            raise ConfigError(f"prompt {self.prompt.id}: shots need 'raised_high', 'raised_low'")
        return self._fields([str(t) for t in high], [str(t) for t in low])

    def _fields(self, high: Sequence[str], low: Sequence[str]) -> dict[str, str]:
        return {
            "value": f"{self.settings.value:g}",
            "mode": self.settings.mode,
            "measure": self.settings.measure,
            "high": token_list(high),
            "low": token_list(low) if self.settings.negative else NOT_SHOWN,
        }

    def context_rows(
        self, record: LatentRecord, ctx: MethodContext, backend: Backend
    ) -> list[list[int]]:
        contexts = self.settings.contexts
        if self.settings.texts is not None:
            texts, cap = self.settings.texts, self.settings.max_length
            rows = backend.tokenize(texts, max_length=cap).rows()
        else:
            pool = []
            if contexts in ("explanation", "explanation+random"):
                pool += list(record.explanation_examples)
            if contexts in ("random", "explanation+random"):
                pool += list(record.negatives(ExampleKind.RANDOM))
            rows = [list(e.tokens) for e in pool if e.tokens]
        if not rows:
            raise EvidenceUnavailable(
                f"tokenchange found no contexts (contexts={contexts!r}) for {record.latent}"
            )
        n_contexts = self.settings.n_contexts
        if len(rows) > n_contexts:
            rng = np.random.default_rng(latent_seed(ctx, record, "tokenchange"))
            keep = np.sort(rng.choice(len(rows), n_contexts, replace=False))
            rows = [rows[i] for i in keep.tolist()]
        bos = backend.bos_token_id
        if bos is not None:  # windows cut from mid-context get a BOS, as the model saw in training
            rows = [r if r[0] == bos else [bos, *r] for r in rows]
        return rows

    def mean_changes(
        self, backend: Backend, coder: SparseCoder, latent: int, rows: Sequence[Sequence[int]]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None, int]:
        """Mean change per token under +value (and -value), over contexts and positions."""
        sums: dict[float, npt.NDArray[np.float64]] = {}
        value, mode, size = self.settings.value, self.settings.mode, self.settings.batch_size
        signs = (1.0, -1.0) if self.settings.negative else (1.0,)
        n_positions = 0
        bos = backend.bos_token_id
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            batch = TokenBatch.from_lists(chunk)
            keep = batch.mask.copy()
            if bos is not None:
                keep[:, 0] &= batch.ids[:, 0] != bos  # the prediction after BOS alone is generic
            n_positions += int(keep.sum())
            clean = self._measure(backend.logits(batch))
            for sign in signs:
                edit = Clamp(coder=coder, latent=latent, value=sign * value, mode=mode)
                delta = self._measure(backend.logits(batch, [edit])) - clean
                total = delta[keep].sum(axis=0, dtype=np.float64)
                sums[sign] = sums[sign] + total if sign in sums else total
        if n_positions == 0:
            raise EvidenceUnavailable("tokenchange contexts have no positions after BOS")
        high = sums[1.0] / n_positions
        low = sums[-1.0] / n_positions if self.settings.negative else None
        return high, low, n_positions

    def _measure(self, logits: Any) -> npt.NDArray[np.float32]:
        x = to_numpy(logits, np.float32)
        return log_softmax(x) if self.settings.measure == "logprob" else x

    async def gather(self, record: LatentRecord, ctx: MethodContext) -> Evidence:
        backend, coder = require_model(ctx, self.name)
        if not 0 <= record.latent.index < coder.d_sae:
            raise EvidenceUnavailable(f"latent {record.latent.index} outside [0, {coder.d_sae})")
        rows = self.context_rows(record, ctx, backend)
        # Clamped passes hook the shared model: under its lock, in a worker thread.
        high, low, n_positions = await run_model(
            backend, self.mean_changes, backend, coder, record.latent.index, rows
        )
        scale = max(float(np.abs(high).max()), float(np.abs(low).max()) if low is not None else 0.0)
        if scale < 1e-9:
            raise EvidenceUnavailable(
                f"clamping with mode={self.settings.mode!r} value={self.settings.value:g} "
                "changed no prediction",
                status=Status.FAILED,
            )
        top = self.settings.top
        raised_high, _ = top_tokens(backend, high, top)
        lowered_high, _ = top_tokens(backend, high, top, largest=False)
        raised_low = top_tokens(backend, low, top)[0] if low is not None else []
        return Evidence(
            fields=self._fields([t.token for t in raised_high], [t.token for t in raised_low]),
            shown={
                "raised_high": [t.json() for t in raised_high],
                "raised_low": [t.json() for t in raised_low],
                "lowered_high": [t.json() for t in lowered_high],  # recorded, not shown
                "n_contexts": len(rows),
                "n_positions": n_positions,
            },
        )


def register(register: Register) -> None:
    register(
        "tokenchange",
        TokenChange,
        description="clamp the latent +/-v on sample contexts; LLM reads the most moved tokens",
    )
