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
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import JsonValue

from saexplain.checks import check_bool, check_choice, check_float, check_int
from saexplain.errors import ConfigError
from saexplain.explainers._llm import (
    Evidence,
    EvidenceUnavailable,
    LLMExplainer,
    latent_seed,
    require_model,
    to_numpy,
    token_list,
    top_tokens,
)
from saexplain.hookspecs import Register
from saexplain.models import ExampleKind, LatentRecord, Status
from saexplain.protocols import Backend, Clamp, MethodContext, SparseCoder, TokenBatch

NOT_SHOWN = "(not shown)"
ClampMode = Literal["set", "add", "scale"]
MODES: tuple[ClampMode, ...] = ("set", "add", "scale")
CONTEXTS = ("explanation", "random", "explanation+random")


def log_softmax(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    m = x.max(axis=-1, keepdims=True)
    shifted = x - m
    out: npt.NDArray[np.float32] = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return out


class TokenChange(LLMExplainer):
    """Explain a latent from the next-token predictions that move when it is clamped."""

    name: ClassVar[str] = "tokenchange"
    default_prompt: ClassVar[str] = "tokenchange"

    def __init__(
        self,
        *,
        n_contexts: int = 32,
        value: float = 10.0,
        mode: str = "set",
        negative: bool = True,
        top: int = 10,
        measure: str = "logit",
        contexts: str = "explanation",
        texts: Sequence[str] | None = None,
        max_length: int = 64,
        batch_size: int = 8,
        **common: Any,  # prompt, style, cot, temperature, max_tokens: see LLMExplainer
    ) -> None:
        super().__init__(**common)
        self.n_contexts = check_int("n_contexts", n_contexts, low=1)
        self.value = check_float("value", value, low=0.0)
        if self.value == 0:
            raise ConfigError("setting 'value' must be > 0 (the clamp strength)")
        self.mode = check_choice("mode", mode, MODES)
        self.negative = check_bool("negative", negative)
        self.top = check_int("top", top, low=1, high=200)
        self.measure = check_choice("measure", measure, ("logit", "logprob"))
        self.contexts = check_choice("contexts", contexts, CONTEXTS)
        if texts is not None and (
            isinstance(texts, str) or not all(isinstance(t, str) and t for t in texts) or not texts
        ):
            raise ConfigError("setting 'texts' must be a non-empty list of non-empty strings")
        self.texts = None if texts is None else list(texts)
        self.max_length = check_int("max_length", max_length, low=2)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.validate_prompt()

    def method_settings(self) -> dict[str, JsonValue]:
        return {
            "n_contexts": self.n_contexts,
            "value": self.value,
            "mode": self.mode,
            "negative": self.negative,
            "error_term": "kept",  # the backend's Clamp keeps x - decode(encode(x))
            "top": self.top,
            "measure": self.measure,
            "contexts": "texts" if self.texts is not None else self.contexts,
            "max_length": self.max_length,
            "batch_size": self.batch_size,
        }

    def shot_fields(self, shot: Mapping[str, Any]) -> dict[str, str]:
        high, low = shot.get("raised_high"), shot.get("raised_low")
        if not isinstance(high, list) or not isinstance(low, list):
            raise ConfigError(f"prompt {self.prompt.id}: shots need 'raised_high', 'raised_low'")
        return self._fields([str(t) for t in high], [str(t) for t in low])

    def _fields(self, high: Sequence[Any], low: Sequence[Any]) -> dict[str, str]:
        return {
            "value": f"{self.value:g}",
            "mode": self.mode,
            "measure": self.measure,
            "high": token_list(high),
            "low": token_list(low) if self.negative else NOT_SHOWN,
        }

    def context_rows(
        self, record: LatentRecord, ctx: MethodContext, backend: Backend
    ) -> list[list[int]]:
        if self.texts is not None:
            rows = backend.tokenize(self.texts, max_length=self.max_length).rows()
        else:
            pool = []
            if self.contexts in ("explanation", "explanation+random"):
                pool += list(record.explanation_examples)
            if self.contexts in ("random", "explanation+random"):
                pool += list(record.negatives(ExampleKind.RANDOM))
            rows = [list(e.tokens) for e in pool if e.tokens]
        if not rows:
            raise EvidenceUnavailable(
                f"tokenchange found no contexts (contexts={self.contexts!r}) for {record.latent}"
            )
        if len(rows) > self.n_contexts:
            rng = np.random.default_rng(latent_seed(ctx, record, "tokenchange"))
            keep = np.sort(rng.choice(len(rows), self.n_contexts, replace=False))
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
        signs = (1.0, -1.0) if self.negative else (1.0,)
        n_positions = 0
        bos = backend.bos_token_id
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            batch = TokenBatch.from_lists(chunk)
            keep = batch.mask.copy()
            if bos is not None:
                keep[:, 0] &= batch.ids[:, 0] != bos  # the prediction after BOS alone is generic
            n_positions += int(keep.sum())
            clean = self._measure(backend.logits(batch))
            for sign in signs:
                edit = Clamp(coder=coder, latent=latent, value=sign * self.value, mode=self.mode)
                delta = self._measure(backend.logits(batch, [edit])) - clean
                total = delta[keep].sum(axis=0, dtype=np.float64)
                sums[sign] = sums[sign] + total if sign in sums else total
        if n_positions == 0:
            raise EvidenceUnavailable("tokenchange contexts have no positions after BOS")
        high = sums[1.0] / n_positions
        low = sums[-1.0] / n_positions if self.negative else None
        return high, low, n_positions

    def _measure(self, logits: Any) -> npt.NDArray[np.float32]:
        x = to_numpy(logits, np.float32)
        return log_softmax(x) if self.measure == "logprob" else x

    async def gather(self, record: LatentRecord, ctx: MethodContext) -> Evidence:
        backend, coder = require_model(ctx, self.name)
        if not 0 <= record.latent.index < coder.d_sae:
            raise EvidenceUnavailable(f"latent {record.latent.index} outside [0, {coder.d_sae})")
        rows = self.context_rows(record, ctx, backend)
        # Backend calls run inline: hooks on a shared model must not interleave across threads.
        high, low, n_positions = self.mean_changes(backend, coder, record.latent.index, rows)
        scale = max(float(np.abs(high).max()), float(np.abs(low).max()) if low is not None else 0.0)
        if scale < 1e-9:
            raise EvidenceUnavailable(
                f"clamping with mode={self.mode!r} value={self.value:g} changed no prediction",
                status=Status.FAILED,
            )
        raised_high, _ = top_tokens(backend, high, self.top)
        lowered_high, _ = top_tokens(backend, high, self.top, largest=False)
        raised_low = top_tokens(backend, low, self.top)[0] if low is not None else []
        return Evidence(
            fields=self._fields(raised_high, raised_low),
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
