"""The TransformerLens backend: HookedTransformer (and HookedSAETransformer).

Canonical hook names are TransformerLens's own, so translation is the identity; attention
`hook_z` is flattened to `n_heads * d_head` for coders. Early stopping uses `stop_at_layer`;
hooks are attached with `model.hooks(...)`, which removes them in `finally`.
"""

from __future__ import annotations

from typing import Any

import torch
from saexplain_saelens.torch_backend import HookFn, Hooks, TorchBackend, run_hook_fns

from saexplain.errors import BackendError


def _tl_hook(fns: list[HookFn], flat_z: bool) -> Any:
    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor | None:
        shape = act.shape
        x = act.flatten(-2) if flat_z else act
        new = run_hook_fns(fns, x)
        if new is None:
            return None
        return new.reshape(shape) if flat_z else new

    return hook


class TransformerLensBackend(TorchBackend):
    name = "transformerlens"

    def __init__(self, model: Any, *, tokenizer: Any = None, model_id: str | None = None) -> None:
        if not (hasattr(model, "run_with_hooks") and hasattr(model, "cfg")):
            raise BackendError(
                f"the transformerlens backend wraps a HookedTransformer, got {type(model).__name__}"
            )
        cfg = model.cfg
        if not hasattr(model, "blocks") or not hasattr(model, "unembed"):
            raise BackendError(f"{type(model).__name__} has no blocks/unembed to hook")
        self.model = model
        param = next(model.parameters())
        super().__init__(
            model_id=model_id or str(getattr(cfg, "model_name", type(model).__name__)),
            tokenizer=tokenizer if tokenizer is not None else model.tokenizer,
            d_model=int(cfg.d_model),
            n_layers=int(cfg.n_layers),
            d_mlp=int(cfg.d_mlp or 0),
            n_heads=int(cfg.n_heads),
            d_head=int(cfg.d_head),
            device=param.device,
            dtype=param.dtype,
        )

    def _forward(
        self, ids: torch.Tensor, hooks: Hooks, stop_layer: int | None
    ) -> torch.Tensor | None:
        deferred: list[HookFn] = []
        fwd_hooks = []
        for site, fns in sorted(hooks.items()):
            if site.site == "hook_resid_pre" and site.layer == stop_layer:
                deferred.extend(fns)  # the block is not run: apply to the returned residual
                continue
            fwd_hooks.append((site.name, _tl_hook(fns, site.site == "attn.hook_z")))
        with self.model.hooks(fwd_hooks=fwd_hooks):
            if stop_layer is None:
                logits: torch.Tensor = self.model(ids, return_type="logits")
                return logits
            resid = self.model(ids, stop_at_layer=stop_layer)
        run_hook_fns(deferred, resid)
        return None

    def _unembed(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self.model, "ln_final", None) is not None:
            x = self.model.ln_final(x)
        out: torch.Tensor = self.model.unembed(x)
        return out

    def hook_count(self) -> int:
        """Hooks currently attached to the model (0 between calls; used by tests)."""
        return sum(len(hp._forward_hooks) for hp in self.model.hook_dict.values())
