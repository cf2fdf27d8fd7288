"""Token-by-token generation loops and KV caching, independent of the model stack.

`TorchBackend.generate` and `probe_and_generate` hand these loops one callable that runs an edited
forward pass; the loops only pick tokens and stop at the end-of-text token. `TransformersCache`
gives a backend over a transformers model its KV cache.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

Picker = Callable[[torch.Tensor], torch.Tensor]

__all__ = ["Picker", "TransformersCache", "decode_cached", "decode_recompute", "picker"]


class TransformersCache:
    """KV caching through a transformers `DynamicCache`, for backends over a transformers model
    (mixed in before `TorchBackend`; the subclass sets `hf_config`)."""

    caching = True
    hf_config: Any

    def _new_cache(self, batch: int) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.hf_config)

    def _repeat_cache(self, cache: Any, n: int) -> Any:
        repeated = copy.deepcopy(cache)
        repeated.batch_repeat_interleave(n)
        return repeated


def picker(temperature: float, seed: int | None) -> Picker:
    """The next-token rule: argmax at temperature 0, else seeded sampling."""
    generator = torch.Generator(device="cpu")
    if seed is not None:
        generator.manual_seed(seed)

    def pick(last: torch.Tensor) -> torch.Tensor:
        last = last.float().cpu()
        if temperature > 0:
            probs = torch.softmax(last / temperature, dim=-1)
            return torch.multinomial(probs, 1, generator=generator)[:, 0]
        return last.argmax(dim=-1)

    return pick


def until_eos(ids: list[int], eos_token_id: int | None) -> list[int]:
    """`ids` cut before the first end-of-text token."""
    if eos_token_id is not None and eos_token_id in ids:
        return ids[: ids.index(eos_token_id)]
    return ids


def decode_cached(
    last: torch.Tensor,
    step: Callable[[torch.Tensor, int], torch.Tensor],
    *,
    max_new_tokens: int,
    pick: Picker,
    eos_token_id: int | None,
) -> list[list[int]]:
    """Continue every row from the logits of its last token, one new token per step.

    `step(new_tokens, column)` runs the cached pass over the column `column` (the new tokens,
    shape (batch, 1)) and returns its logits (batch, 1, vocab). Stops early once every row has
    produced the end-of-text token."""
    batch = last.shape[0]
    new: list[torch.Tensor] = []
    ended = torch.zeros(batch, dtype=torch.bool)
    for i in range(max_new_tokens):
        nxt = pick(last)
        new.append(nxt)
        if eos_token_id is not None:
            ended |= nxt == eos_token_id
        if i == max_new_tokens - 1 or bool(ended.all()):
            break
        last = step(nxt[:, None], i)[:, -1]
    if not new:
        return [[] for _ in range(batch)]
    return [[int(t) for t in row] for row in torch.stack(new, dim=1).tolist()]


def decode_recompute(
    rows: list[list[int]],
    forward: Callable[[torch.Tensor], torch.Tensor],
    *,
    pad_token_id: int,
    max_new_tokens: int,
    pick: Picker,
) -> list[list[int]]:
    """Continue `rows` (of any lengths) by recomputing the whole right-padded context at each
    step: `forward(ids)` returns the logits of an edited pass over `ids` (batch, seq)."""
    lengths = [len(r) for r in rows]
    width = max(lengths) + max_new_tokens
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    current = torch.tensor(lengths)
    arange = torch.arange(len(rows))
    for _ in range(max_new_tokens):
        logits = forward(ids[:, : int(current.max())])
        ids[arange, current] = pick(logits[arange, current - 1])
        current += 1
    return [ids[i, start : start + max_new_tokens].tolist() for i, start in enumerate(lengths)]
