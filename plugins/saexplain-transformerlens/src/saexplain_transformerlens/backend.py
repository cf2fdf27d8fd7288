"""The TransformerLens backend: HookedTransformer (and HookedSAETransformer).

Canonical hook names are TransformerLens's own, so translation is the identity; attention
`hook_z` is flattened to `n_heads * d_head` for coders. Early stopping uses `stop_at_layer`;
hooks are attached with `model.hooks(...)`, which removes them in `finally`. KV caching:
TransformerLens's own `TransformerLensKeyValueCache` passed as `past_kv_cache`; a left-padded batch
passes its attention mask, from which TransformerLens also takes the positions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from saexplain_torch.backend import TorchBackend
from saexplain_torch.edits import HookFn, Hooks, run_hook_fns

from saexplain.errors import BackendError
from saexplain_transformerlens import is_bridge


def _tl_hook(fns: list[HookFn], flat_z: bool) -> Any:
    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor | None:
        shape = act.shape
        x = act.flatten(-2) if flat_z else act
        new = run_hook_fns(fns, x)
        if new is None:
            return None
        return new.reshape(shape) if flat_z else new

    return hook


def torch_backend_args(model: Any, tokenizer: Any, model_id: str | None) -> dict[str, Any]:
    """`TorchBackend`'s settings for a TransformerLens model (HookedTransformer or bridge): its
    `cfg` dimensions, its parameters' device and dtype, and its own tokenizer unless given one."""
    cfg = model.cfg
    param = next(model.parameters())
    return {
        "model_id": model_id or str(getattr(cfg, "model_name", None) or type(model).__name__),
        "tokenizer": tokenizer if tokenizer is not None else model.tokenizer,
        "d_model": int(cfg.d_model),
        "n_layers": int(cfg.n_layers),
        "d_mlp": int(cfg.d_mlp or 0),
        "n_heads": int(cfg.n_heads),
        "d_head": int(cfg.d_head),
        "device": param.device,
        "dtype": param.dtype,
    }


def tl_unembed(model: Any, x: torch.Tensor) -> torch.Tensor:
    """A TransformerLens model's final norm (where it has one) and unembedding."""
    if getattr(model, "ln_final", None) is not None:
        x = model.ln_final(x)
    out: torch.Tensor = model.unembed(x)
    return out


class TransformerLensBackend(TorchBackend):
    name = "transformerlens"

    def __init__(self, model: Any, *, tokenizer: Any = None, model_id: str | None = None) -> None:
        if is_bridge(model):
            raise BackendError(
                "this is a TransformerBridge: use the transformerlens-bridge backend "
                "(saexplain_transformerlens.bridge.TransformerBridgeBackend), whose "
                "hook_resid_mid edits reach the residual stream"
            )
        if not (hasattr(model, "run_with_hooks") and hasattr(model, "cfg")):
            raise BackendError(
                f"the transformerlens backend wraps a HookedTransformer, got {type(model).__name__}"
            )
        if not hasattr(model, "blocks") or not hasattr(model, "unembed"):
            raise BackendError(f"{type(model).__name__} has no blocks/unembed to hook")
        self.model = model
        super().__init__(**torch_backend_args(model, tokenizer, model_id))

    caching = True

    def _new_cache(self, batch: int) -> Any:
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        return TransformerLensKeyValueCache.init_cache(self.model.cfg, self.device, batch)

    def _repeat_cache(self, cache: Any, n: int) -> Any:
        entries = [
            dataclasses.replace(
                e,
                past_keys=e.past_keys.repeat_interleave(n, dim=0),
                past_values=e.past_values.repeat_interleave(n, dim=0),
            )
            for e in cache.entries
        ]
        mask = cache.previous_attention_mask.repeat_interleave(n, dim=0)
        return dataclasses.replace(cache, entries=entries, previous_attention_mask=mask)

    left_padding = True

    def _forward(
        self,
        ids: torch.Tensor,
        hooks: Hooks,
        stop_layer: int | None,
        cache: Any = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        # With a cache TransformerLens builds an attention mask; from the tokens, it would hide
        # real tokens that share the pad id (GPT-2's BOS), so every column is marked attended
        # unless a left-padded batch gives its mask. The cache keeps the mask of the columns
        # before, so only the new columns' part is passed; TransformerLens derives the positions
        # from the mask itself (`position_ids` is not needed).
        del position_ids
        if cache is not None:
            mask = torch.ones_like(ids) if attention_mask is None else attention_mask
            kwargs: dict[str, Any] = {
                "past_kv_cache": cache,
                "attention_mask": mask[:, -ids.shape[1] :],
            }
        else:
            kwargs = {}
        deferred: list[HookFn] = []
        fwd_hooks = []
        for site, fns in sorted(hooks.items()):
            if site.site == "hook_resid_pre" and site.layer == stop_layer:
                deferred.extend(fns)  # the block is not run: apply to the returned residual
                continue
            fwd_hooks.append((site.name, _tl_hook(fns, site.site == "attn.hook_z")))
        with self.model.hooks(fwd_hooks=fwd_hooks):
            if stop_layer is None:
                logits: torch.Tensor = self.model(ids, return_type="logits", **kwargs)
                return logits
            resid = self.model(ids, stop_at_layer=stop_layer, **kwargs)
        run_hook_fns(deferred, resid)
        return None

    def _unembed(self, x: torch.Tensor) -> torch.Tensor:
        return tl_unembed(self.model, x)

    def hook_count(self) -> int:
        """Hooks currently attached to the model (0 between calls; used by tests)."""
        return sum(len(hp._forward_hooks) for hp in self.model.hook_dict.values())
