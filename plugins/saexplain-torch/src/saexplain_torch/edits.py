"""Hook functions: what a torch backend runs at a canonical site.

A hook function receives the activation at its site (canonical shape: attention `hook_z`
flattened) and returns a replacement tensor, or None to leave it as it is. Edits (`Clamp`, `Add`,
`Replace`) and captures (latent activations, probed residuals) are all built here as hook
functions; `TorchBackend` decides which to attach where, and each concrete backend only calls them
at its own locations (`run_hook_fns`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from saexplain.protocols import Clamp, SparseActivations, SparseCoder
from saexplain_torch.hooks import HookSite

HookFn = Callable[[torch.Tensor], torch.Tensor | None]
Hooks = dict[HookSite, list[HookFn]]
# The columns [lo, hi) of the full sequence that one forward pass computes (a KV-cached pass
# computes only the new columns).
Window = tuple[int, int]
# Edit positions inside a window: every column, or a list of column indices.
Positions = slice | list[int]
# The batch rows an edit applies to: every row (None), or a sorted list of row indices.
Rows = list[int] | None

__all__ = [
    "HookFn",
    "Hooks",
    "Positions",
    "Rows",
    "Window",
    "add_fn",
    "capture_fn",
    "clamp_fns",
    "in_window",
    "replace_fn",
    "run_hook_fns",
    "store_fn",
]


def run_hook_fns(fns: Sequence[HookFn], act: torch.Tensor) -> torch.Tensor | None:
    """Apply `fns` in order; the final activation if any of them replaced it, else None."""
    changed = False
    for fn in fns:
        new = fn(act)
        if new is not None:
            act, changed = new, True
    return act if changed else None


def in_window(positions: tuple[int, ...] | None, seq: int, window: Window) -> Positions | None:
    """Edit positions (None: all; negative: from the end of `seq` columns) that fall in the
    columns `[lo, hi)` of a pass, counted from `lo`; None when the edit misses the window."""
    if positions is None:
        return slice(None)
    lo, hi = window
    local = [p % seq - lo for p in positions if lo <= p % seq < hi]
    return local or None


def _add_rows(x: torch.Tensor, delta: torch.Tensor, rows: Rows) -> torch.Tensor:
    """`x + delta`, where `delta` holds only the `rows` of `x` (all rows when None)."""
    if rows is None:
        return x + delta
    x = x.clone()
    x[rows] = x[rows] + delta
    return x


def clamp_fns(
    edit: Clamp, pos: Positions, *, same: bool, rows: Rows = None
) -> tuple[HookFn, HookFn | None]:
    """The functions of a `Clamp`: `read` at the coder's input site, and `write` at its output
    site when that differs (`same=False`, transcoders), which adds the change `read` computed.

    Only the change of the decoded value is added, so the coder's reconstruction error stays in
    the activation. With `rows`, only those rows are encoded and changed."""
    coder = edit.coder
    pending: list[torch.Tensor] = []

    def read(x: torch.Tensor) -> torch.Tensor | None:
        z: torch.Tensor = coder.encode(x if rows is None else x[rows])
        edited = z.clone()
        column = edited[:, pos, edit.latent]
        if edit.mode == "set":
            edited[:, pos, edit.latent] = edit.value
        elif edit.mode == "add":
            edited[:, pos, edit.latent] = column + edit.value
        else:
            edited[:, pos, edit.latent] = column * edit.value
        delta: torch.Tensor = (coder.decode(edited) - coder.decode(z)).to(x.dtype)
        if same:
            return _add_rows(x, delta, rows)
        pending.append(delta)
        return None

    def write(x: torch.Tensor) -> torch.Tensor:
        return _add_rows(x, pending.pop(), rows)

    return read, (None if same else write)


def add_fn(delta: torch.Tensor, pos: Positions, rows: Rows = None) -> HookFn:
    """Steering: add `delta` at `pos` (of the batch `rows` only, when given)."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        if rows is None:
            x[:, pos] += delta
        else:
            part = x[rows]  # advanced indexing copies: edit the copy, then write it back
            part[:, pos] += delta
            x[rows] = part
        return x

    return fn


def replace_fn(vec: torch.Tensor, pos: Positions) -> HookFn:
    """Patching: overwrite `pos` with `vec` (d_model,) or one vector per row (batch, d_model)."""
    value = vec if vec.ndim == 1 else vec[:, None, :]

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, pos] = value
        return x

    return fn


def store_fn(
    captured: dict[str | int, torch.Tensor], key: str | int, positions: list[int]
) -> HookFn:
    """Copy the activation at `positions` into `captured[key]`."""

    def fn(x: torch.Tensor) -> None:
        captured[key] = x[:, positions].detach().clone()

    return fn


def capture_fn(
    coder: SparseCoder,
    keep: torch.Tensor,
    subset: torch.Tensor | None,
    out: dict[str, SparseActivations],
) -> HookFn:
    """Encode the activation with `coder` and store its positive values where `keep` (batch, seq)
    is true, as sparse (row, pos, latent, value) in `out[coder.id]`; `subset` limits the latents."""

    def fn(x: torch.Tensor) -> None:
        z = coder.encode(x)
        if subset is not None:
            z = z[..., subset]
        nz = (z > 0) & keep[:, :, None]
        row, pos, latent = nz.nonzero(as_tuple=True)
        values = z[row, pos, latent].float()
        if subset is not None:
            latent = subset[latent]
        out[coder.id] = SparseActivations(
            row=row.cpu().numpy().astype(np.int64),
            pos=pos.cpu().numpy().astype(np.int64),
            latent=latent.cpu().numpy().astype(np.int64),
            value=values.cpu().numpy().astype(np.float32),
        )

    return fn
