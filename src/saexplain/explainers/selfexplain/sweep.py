"""The scale sweep: self-similarity and first-answer-token entropy of one prompt at every scale,
from batched patched passes (and each scale's answer when it generates), and their composite."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from saexplain.explainers.selfexplain._arrays import Floats, as_floats
from saexplain.explainers.selfexplain.prompt import PreparedPrompt
from saexplain.methods import Backend, ProbeAndGenerate, TokenBatch

__all__ = ["Sweep", "composite", "sweep"]


@dataclass(frozen=True)
class Sweep:
    """Metrics of one prompt over the scales, from batched patched passes, and each scale's
    continuation when the sweep generated."""

    scales: Floats
    selfsim: Floats
    entropy: Floats
    forward_calls: int
    generations: tuple[str, ...] = ()

    def composite(self, alpha: float) -> Floats:
        return composite(self.selfsim, self.entropy, alpha)


def _minmax(x: Floats) -> Floats:
    span = float(x.max() - x.min()) if x.size else 0.0
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def composite(selfsim: Floats, entropy: Floats, alpha: float) -> Floats:
    """`alpha * norm(selfsim) - (1 - alpha) * norm(entropy)`, min-max normalised over scales."""
    out: Floats = alpha * _minmax(np.asarray(selfsim, dtype=np.float64)) - (1 - alpha) * _minmax(
        np.asarray(entropy, dtype=np.float64)
    )
    return out


def _entropy(logits: Floats) -> Floats:
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    out: Floats = -(np.exp(logp) * logp).sum(axis=-1)
    return out


def sweep(
    backend: Backend,
    prompt: PreparedPrompt,
    direction: Floats,
    scales: Sequence[float] | Floats,
    *,
    patch_layer: int,
    probe_layer: int,
    batch_size: int = 32,
    max_new_tokens: int = 0,
    temperature: float = 0.0,
    seed: int | None = None,
) -> Sweep:
    """Self-similarity and first-answer-token entropy at every scale, `batch_size` scales per
    forward pass (each row: the prompt with `scale * direction` at the placeholders).

    With `max_new_tokens`, every scale also generates its answer. A backend with
    `probe_and_generate` decodes from the metrics' own pass (its KV cache); otherwise a batched
    `generate` follows each pass."""
    unit = direction / np.linalg.norm(direction)
    scales_arr = np.asarray(scales, dtype=np.float64)
    selfsim, entropy, texts, calls = [], [], [], 0
    for lo in range(0, len(scales_arr), batch_size):
        chunk = scales_arr[lo : lo + batch_size]
        tokens = TokenBatch.from_lists([list(prompt.ids)] * len(chunk))
        edit = prompt.patch(chunk[:, None] * unit[None, :], patch_layer)
        if max_new_tokens and isinstance(backend, ProbeAndGenerate):
            logits, resid, new = backend.probe_and_generate(
                tokens,
                [edit],
                layers=[probe_layer],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                seed=seed,
            )
            last, last_logits = as_floats(resid[probe_layer]), as_floats(logits)
            texts += [backend.decode(ids) for ids in new]
        else:
            logits, resid = backend.probe(
                tokens, [edit], layers=[probe_layer], positions=[prompt.last]
            )
            last, last_logits = as_floats(resid[probe_layer][:, 0]), as_floats(logits[:, 0])
            if max_new_tokens:
                texts += backend.generate(
                    [prompt.text] * len(chunk),
                    [edit],
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    seed=seed,
                )
        calls += 1
        norms = np.linalg.norm(last, axis=-1)
        selfsim.append(last @ unit / np.where(norms > 0, norms, 1.0))
        entropy.append(_entropy(last_logits))
    return Sweep(scales_arr, np.concatenate(selfsim), np.concatenate(entropy), calls, tuple(texts))
