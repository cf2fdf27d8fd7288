"""Token-by-token generation loops, KV caching and left padding, independent of the model stack.

`TorchBackend.generate` and `probe_and_generate` hand these loops one callable that runs an edited
forward pass; the loops only pick tokens and stop at the end-of-text token. `TransformersCache`
gives a backend over a transformers model its KV cache.

Prompts of different lengths decode in one KV-cached batch when left-padded (`left_pad`): every
row's last prompt token then sits in the same column, so each step appends one column to all
rows. `LeftPadding` gives the attention mask that hides the pads and the position ids that start
each row at 0 on its first real token, so a real token sees exactly what it would see alone.
Edits at every position also touch the pad columns; that is harmless because no real token
attends to them. Edits at given positions count from each row's first real token and are moved
by `shift_edits` (one copy per pad width, restricted to those rows with `rows=`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from saexplain.protocols import Add, Clamp, Edit, Replace

Picker = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "LeftPadding",
    "Picker",
    "TransformersCache",
    "decode_cached",
    "decode_recompute",
    "left_pad",
    "picker",
    "shift_edits",
]


@dataclass(frozen=True)
class LeftPadding:
    """Where the pads of a left-padded batch are: `pads[i]` pad columns open row `i`."""

    pads: torch.Tensor  # (batch,) long, on the model's device

    def mask(self, hi: int) -> torch.Tensor:
        """The attention mask of the columns `[0, hi)` (generated columns included): 1 on real
        tokens, 0 on pads, shape (batch, hi)."""
        cols = torch.arange(hi, device=self.pads.device)
        return (cols[None, :] >= self.pads[:, None]).long()

    def positions(self, lo: int, hi: int) -> torch.Tensor:
        """Position ids of the columns `[lo, hi)`, shape (batch, hi - lo): a row's first real
        token is position 0 (pads get 0 too; they are masked, so their value does not matter)."""
        cols = torch.arange(lo, hi, device=self.pads.device)
        return (cols[None, :] - self.pads[:, None]).clamp(min=0)


def left_pad(
    rows: Sequence[Sequence[int]], pad_token_id: int, device: torch.device
) -> tuple[torch.Tensor, LeftPadding]:
    """`rows` of any lengths as one (batch, longest) id tensor, padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
    pads = torch.tensor([width - len(r) for r in rows], dtype=torch.long)
    return ids.to(device), LeftPadding(pads.to(device))


def shift_edits(edits: Sequence[Edit], pads: Sequence[int]) -> list[Edit] | None:
    """`edits`, whose positions count from each row's first real token, in the columns of the
    left-padded batch with `pads` pad columns per row.

    An edit at every position is kept as it is. A `Clamp` or `Add` at given positions becomes one
    copy per pad width, moved right by it and restricted (`rows=`) to the rows with that width and
    the edit's own rows. A `Replace` has no `rows`: it is moved when every row has the same pads,
    and None is returned when they differ (the caller then cannot pad this batch)."""
    widths: dict[int, list[int]] = {}
    for row, pad in enumerate(pads):
        widths.setdefault(int(pad), []).append(row)
    out: list[Edit] = []
    for edit in edits:
        positions = getattr(edit, "positions", None)
        if positions is None:
            out.append(edit)
        elif isinstance(edit, Replace):
            if len(widths) > 1:
                return None
            (pad,) = widths
            out.append(dataclasses.replace(edit, positions=tuple(p + pad for p in positions)))
        elif isinstance(edit, Clamp | Add):
            mine = set(range(len(pads)) if edit.rows is None else edit.rows)
            for pad, group in widths.items():
                rows = tuple(r for r in group if r in mine)
                if rows:
                    moved = tuple(p + pad for p in positions)
                    out.append(dataclasses.replace(edit, positions=moved, rows=rows))
        else:
            out.append(edit)  # unknown: the backend refuses it with its own message
    return out


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
