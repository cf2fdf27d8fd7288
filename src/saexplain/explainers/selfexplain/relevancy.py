"""Relevancy of an answer's tokens: how much the patch raises each one's probability."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from saexplain.explainers.selfexplain._arrays import Floats, as_floats
from saexplain.explainers.selfexplain.prompt import PreparedPrompt
from saexplain.methods import Backend, TokenBatch

__all__ = ["relevancy"]


def relevancy(
    backend: Backend,
    prompt: PreparedPrompt,
    answers: Sequence[Sequence[int]],
    vectors: Floats,
    *,
    patch_layer: int,
) -> list[list[float]]:
    """Per answer token: its probability with the patch (row `i` uses `vectors[i]`) minus its
    probability on the unpatched prompt (SelfIE's relevancy). Two batched passes."""
    rows = [list(prompt.ids) + list(a) for a in answers]
    if not any(answers):
        return [[] for _ in answers]
    tokens = TokenBatch.from_lists(rows)
    start = len(prompt.ids)
    # only the positions predicting answer tokens are unembedded
    predicting = list(range(start - 1, start - 1 + max(len(a) for a in answers)))
    probs = []
    for edits in ([prompt.patch(vectors, patch_layer)], []):
        logits, _ = backend.probe(tokens, edits, positions=predicting)
        z = as_floats(logits)
        z -= z.max(axis=-1, keepdims=True)
        np.exp(z, out=z)
        probs.append(z / z.sum(axis=-1, keepdims=True))
    out = []
    for i, answer in enumerate(answers):
        pos = np.arange(len(answer))
        ids = np.asarray(answer, dtype=np.int64)
        out.append([float(x) for x in probs[0][i, pos, ids] - probs[1][i, pos, ids]])
    return out
