"""Sparse coders that need nothing but torch: an MLP layer's neurons (the usual baseline).

`Neurons` satisfies `saexplain.protocols.SparseCoder`; `neurons_coder` is the `neurons:` coder
source a run config names (`coder: "neurons:blocks.3.mlp.hook_post"`).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from saexplain.errors import ConfigError, DimensionMismatchError

__all__ = ["Neurons", "neurons_coder"]


class Neurons:
    """The neurons of one MLP layer (`blocks.L.mlp.hook_post`) as a coder, the usual baseline.

    The decoder is the identity; with `k` only each position's top-k neurons stay nonzero (the
    rest goes into the reconstruction error that a `Clamp` keeps). Negative values never count
    as activations.
    """

    def __init__(
        self,
        layer: int,
        d_mlp: int,
        *,
        k: int | None = None,
        exclude_bos: bool = True,
        id: str | None = None,
    ) -> None:
        if k is not None and not 0 < k <= d_mlp:
            raise ConfigError(f"k={k} must be in [1, {d_mlp}]")
        self.hook = f"blocks.{layer}.mlp.hook_post"
        self.d_in = self.d_sae = d_mlp
        self.k = k
        self.exclude_bos = exclude_bos
        self.id = id or (f"neurons/{self.hook}" + (f"/top{k}" if k else ""))

    @property
    def W_dec(self) -> torch.Tensor:
        return torch.eye(self.d_sae)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_in:
            raise DimensionMismatchError(f"{self.id}: input width {x.shape[-1]} != {self.d_in}")
        z = x.clamp(min=0)
        if self.k is None:
            return z
        values, index = torch.topk(z, self.k, dim=-1)
        return torch.zeros_like(z).scatter_(-1, index, values)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def __repr__(self) -> str:
        return f"Neurons({self.hook!r}, d_mlp={self.d_in}, k={self.k})"


def neurons_coder(spec: str, *, backend: Any = None, **settings: Any) -> Neurons:
    """The neurons of `blocks.L.mlp.hook_post` of a torch backend's model (optionally `k=` top-k);
    the width comes from the backend."""
    match = re.fullmatch(r"blocks\.(\d+)\.mlp\.hook_post", spec.strip())
    if match is None:
        raise ConfigError(f"neurons coder {spec!r}: give 'blocks.<layer>.mlp.hook_post'")
    if backend is None or not hasattr(backend, "site"):
        raise ConfigError("the neurons coder needs a torch backend to read the MLP width from")
    width = int(backend.width(backend.site(spec.strip())))
    return Neurons(int(match.group(1)), width, **settings)
