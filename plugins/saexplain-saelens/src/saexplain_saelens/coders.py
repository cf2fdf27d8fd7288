"""SAELens SAEs and transcoders as saexplain sparse coders.

`SAELensCoder` satisfies `saexplain.protocols.SparseCoder`. Transcoders also carry `hook_out`, the
canonical hook their decoder writes to; backends apply a `Clamp` of a transcoder latent there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from saexplain.errors import ConfigError
from saexplain.fingerprint import fingerprint_arrays

if TYPE_CHECKING:
    from sae_lens import SAE

_TRANSCODER_OUT = {"hook_resid_mid": "hook_mlp_out", "hook_mlp_in": "hook_mlp_out"}


def _default_hook_out(hook: str) -> str | None:
    layer, _, site = hook.partition(".")[2].partition(".")
    if site in _TRANSCODER_OUT or site == "ln2.hook_normalized":
        return f"blocks.{layer}.{_TRANSCODER_OUT.get(site, 'hook_mlp_out')}"
    return None


class SAELensCoder:
    """A SAELens SAE (standard, top-k, JumpReLU, gated, ..., or a transcoder) as a SparseCoder.

    The hook point comes from the SAE's own metadata (`sae.cfg.metadata.hook_name`) unless
    `hook=` overrides it. Encoding runs without gradients in the SAE's dtype; the backend casts
    decoded values back to the model's dtype.
    """

    def __init__(
        self,
        sae: SAE[Any],
        *,
        id: str | None = None,
        hook: str | None = None,
        hook_out: str | None = None,
        exclude_bos: bool = True,
    ) -> None:
        cfg = sae.cfg
        meta = cfg.metadata
        name = hook or meta.hook_name
        if not name:
            raise ConfigError(
                "this SAE's config has no metadata.hook_name: pass hook='blocks.L.hook_resid_pre'"
            )
        self.sae = sae
        self.hook: str = str(name)
        self.d_in: int = int(cfg.d_in)
        self.d_sae: int = int(cfg.d_sae)
        self.exclude_bos = exclude_bos
        self.architecture: str = str(cfg.architecture())
        self.is_transcoder = hasattr(cfg, "d_out")
        self.hook_out: str = self.hook
        if self.is_transcoder:
            out = hook_out or meta.get("hook_name_out") or _default_hook_out(self.hook)
            if out is None:
                raise ConfigError(
                    f"transcoder reading {self.hook!r}: pass hook_out= (where its decoder writes)"
                )
            self.hook_out = str(out)
        release = meta.get("release") or meta.get("model_name") or "sae"
        sae_id = meta.get("sae_id") or self.hook
        self.id: str = id or f"{release}/{sae_id}"

    @property
    def W_dec(self) -> torch.Tensor:
        w: torch.Tensor = self.sae.W_dec.detach()
        return w

    @property
    def _hook_z(self) -> bool:
        # SAELens hook_z SAEs expect (..., n_heads, d_head); backends pass hook_z flattened.
        return bool(getattr(self.sae, "hook_z_reshaping_mode", False))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.sae.dtype)
        z: torch.Tensor = self.sae.encode(x.unsqueeze(-2) if self._hook_z else x)
        return z.to_dense() if z.is_sparse else z

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if self._hook_z and getattr(self.sae, "d_head", None) is None:
            self.sae.d_head = self.d_in  # flat layout, as `encode` feeds it
        out: torch.Tensor = self.sae.decode(z.to(self.sae.dtype))
        return out.squeeze(-2) if self._hook_z else out

    @torch.no_grad()
    def fingerprint(self) -> str:
        """`Fingerprinted`: a digest of the SAE's weights (`saexplain.fingerprint`), so another
        SAE under the same name, or weights edited in place, make another run."""
        return fingerprint_arrays(self.sae.state_dict())

    @classmethod
    def from_disk(cls, path: str | Path, *, device: str = "cpu", **kwargs: Any) -> SAELensCoder:
        """Load with `SAE.load_from_disk(path)` (a folder written by `sae.save_model`)."""
        from sae_lens import SAE

        return cls(SAE.load_from_disk(str(path), device=device), **kwargs)

    @classmethod
    def from_pretrained(
        cls, release: str, sae_id: str, *, device: str = "cpu", **kwargs: Any
    ) -> SAELensCoder:
        """Load with `SAE.from_pretrained(release, sae_id)` (downloads from the hub)."""
        from sae_lens import SAE

        sae = SAE.from_pretrained(release, sae_id, device=device)
        kwargs.setdefault("id", f"{release}/{sae_id}")
        return cls(sae, **kwargs)

    def __repr__(self) -> str:
        return f"SAELensCoder({self.id!r}, {self.architecture}, {self.hook}, d_sae={self.d_sae})"


def as_coder(obj: object, **kwargs: Any) -> Any:
    """Wrap a SAELens SAE as a coder; pass anything else (already a coder) through."""
    module = type(obj).__module__
    if module.startswith("sae_lens"):
        return SAELensCoder(obj, **kwargs)
    return obj
