"""Canonical (TransformerLens / SAELens style) hook names: parsing, widths and execution order.

Pure Python (no torch), shared by every torch backend. A canonical name is
`blocks.{layer}.{site}` with `site` one of `SITES`, listed in the order a block evaluates them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from saexplain.errors import HookNameError

SITES: tuple[str, ...] = (
    "hook_resid_pre",  # residual stream entering the block (d_model)
    "ln1.hook_normalized",  # attention's input norm, before its scale (and bias) (d_model)
    "attn.hook_z",  # per-head attention values before the output projection (n_heads, d_head)
    "hook_attn_out",  # attention output after the output projection (d_model)
    "hook_resid_mid",  # residual stream between attention and MLP (d_model)
    "ln2.hook_normalized",  # the MLP's input norm before its scale: what transcoders read
    "mlp.hook_post",  # MLP hidden activations, the neurons (d_mlp)
    "hook_mlp_out",  # MLP output (d_model)
    "hook_resid_post",  # residual stream leaving the block (d_model)
)
_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")


@dataclass(frozen=True, order=True)
class HookSite:
    """A parsed canonical hook name; ordering is execution order."""

    layer: int
    order: int
    site: str

    @property
    def name(self) -> str:
        return f"blocks.{self.layer}.{self.site}"

    @property
    def stop_layer(self) -> int:
        """How many blocks must run for this hook to have been reached."""
        return self.layer if self.site == "hook_resid_pre" else self.layer + 1


def valid_hook_names(n_layers: int) -> list[str]:
    return [f"blocks.{layer}.{site}" for layer in range(n_layers) for site in SITES]


def parse_hook(name: str, n_layers: int, *, model_id: str = "model") -> HookSite:
    """Parse `name`, raising `HookNameError` listing the valid names when it is not one."""
    m = _NAME.match(name)
    if m is None or m.group(2) not in SITES or int(m.group(1)) >= n_layers:
        sample = valid_hook_names(min(n_layers, 2))
        raise HookNameError(
            f"unknown hook {name!r} for {model_id}: valid names are blocks.L.<site> with "
            f"0 <= L < {n_layers} and <site> in {list(SITES)} (e.g. {sample})"
        )
    return HookSite(layer=int(m.group(1)), order=SITES.index(m.group(2)), site=m.group(2))


def hook_width(site: HookSite, *, d_model: int, d_mlp: int, n_heads: int, d_head: int) -> int:
    """The flat width a coder reading `site` must have (`d_in`)."""
    if site.site == "mlp.hook_post":
        return d_mlp
    if site.site == "attn.hook_z":
        return n_heads * d_head
    return d_model
