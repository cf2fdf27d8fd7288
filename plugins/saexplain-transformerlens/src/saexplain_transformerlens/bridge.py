"""The TransformerLens backend over a `TransformerBridge` (TransformerLens 3.9's wrapper around a
transformers model; TransformerLens 4 keeps only this one).

Canonical hook names are the bridge's own TransformerLens-style aliases (`blocks.L.hook_resid_pre`
is the block's `hook_in`, `attn.hook_z` the output projection's input, ...), looked up in
`bridge.hook_dict` (read once, when the backend is built: wrap the bridge after any weight
processing); hooks are attached to those hook points directly.
Attention `hook_z` arrives as (batch, pos, n_heads, d_head) and is flattened to
`n_heads * d_head`. Both a plain bridge and one in compatibility mode work; weight processing
(`enable_compatibility_mode()` folds and centers by default) changes the residual stream exactly as
it does for a `HookedTransformer`.

Two places where the bridge differs from `HookedTransformer` are handled here:

- `hook_resid_mid` is the input of the block's second norm (`ln2.hook_in`). Reading it there is
  exact, but a value returned there only reaches the norm, not the residual stream the MLP output
  is added to. So an edit at `hook_resid_mid` also adds its change (`edited - original`) to the
  block's `hook_mlp_out` (after the functions hooked there), which makes `hook_resid_post` equal
  `edited resid_mid + mlp_out` as in `HookedTransformer`. Only blocks of the plain sequential
  layout (`BlockBridge`: attention, then MLP, each added to the residual) have it; elsewhere (e.g.
  parallel attention/MLP blocks) the name raises `HookNameError`.
- Early stopping: a private exception is raised right after the functions at the deepest hooked
  site have run, and caught here; the hooks (plain torch forward hooks on the hook points) are
  removed in `finally`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from saexplain_torch.backend import TorchBackend
from saexplain_torch.edits import HookFn, Hooks, run_hook_fns
from saexplain_torch.generation import TransformersCache
from saexplain_torch.hooks import SITES, HookSite

from saexplain.errors import BackendError, HookNameError
from saexplain_transformerlens import BRIDGE_NAME, is_bridge
from saexplain_transformerlens.backend import tl_unembed, torch_backend_args

# TransformerLens-style names the bridge registers as aliases of its own hook points.
_MID = "hook_resid_mid"
_MLP_OUT = "hook_mlp_out"
_Z = "attn.hook_z"


class _StopForward(Exception):
    """Raised from a hook after the deepest hooked site; never leaves `_forward`."""


def _bridge_hook(
    fns: Sequence[HookFn],
    *,
    flat_z: bool = False,
    pending: list[torch.Tensor] | None = None,
    record_delta: bool = False,
    stop: bool = False,
) -> Callable[..., torch.Tensor | None]:
    """A bridge hook function running `fns` on the activation (flattened when `flat_z`).

    `record_delta` (at `hook_resid_mid`): push `edited - original` onto `pending` when the
    functions changed the activation. With `pending` and not `record_delta` (at the same block's
    `hook_mlp_out`): add the pushed change, if any, to the output after the functions.
    `stop`: raise `_StopForward` once the functions have run."""

    def hook(act: torch.Tensor, hook: Any = None) -> torch.Tensor | None:
        shape = act.shape
        flatten = flat_z and act.ndim == 4
        x = act.flatten(-2) if flatten else act
        new = run_hook_fns(fns, x)
        if pending is not None and record_delta and new is not None:
            pending.append(new - x)
        elif pending is not None and not record_delta and pending:
            new = (x if new is None else new) + pending.pop()
        if stop:
            raise _StopForward
        if new is None:
            return None
        return new.reshape(shape) if flatten else new

    return hook


class TransformerBridgeBackend(TransformersCache, TorchBackend):
    """The `transformerlens-bridge` backend: a `TransformerBridge`.

    Same contract and numbers as `TransformerLensBackend` over the same weights (a bridge gives
    the transformers model's own residual stream unless its weights were processed, e.g. by
    `enable_compatibility_mode()` with its default folding and centering)."""

    name = BRIDGE_NAME

    def __init__(self, model: Any, *, tokenizer: Any = None, model_id: str | None = None) -> None:
        if not is_bridge(model):
            raise BackendError(
                f"TransformerBridgeBackend wraps a TransformerLens TransformerBridge, got "
                f"{type(model).__name__}"
            )
        blocks = getattr(model, "blocks", None)
        if blocks is None or getattr(model, "unembed", None) is None:
            raise BackendError(
                f"this TransformerBridge ({getattr(model.cfg, 'architecture', '?')}) has no "
                "blocks/unembed to hook (encoder-decoder and non-text models are not supported)"
            )
        self.model = model
        self.hf_config = model.original_model.config  # KV caching: a transformers DynamicCache
        # `bridge.hook_dict` rebuilds its aliases on every access (~10 ms on a 30-layer model)
        self.hook_points: dict[str, Any] = dict(model.hook_dict)
        super().__init__(**torch_backend_args(model, tokenizer, model_id))

    # --- hook names ------------------------------------------------------------------------------

    def _mid_supported(self, layer: int) -> bool:
        """Whether edits at `hook_resid_mid` can be written through (see the module doc)."""
        block = self.model.blocks[layer]
        return type(block).__name__ == "BlockBridge" and not getattr(
            block, "mlp_reads_resid_directly", False
        )

    def supported_sites(self, layer: int) -> list[str]:
        """The canonical sites of block `layer` this bridge can hook."""
        names = self.hook_points
        return [
            s
            for s in SITES
            if f"blocks.{layer}.{s}" in names and (s != _MID or self._mid_supported(layer))
        ]

    def site(self, hook: str) -> HookSite:
        site = super().site(hook)
        valid = self.supported_sites(site.layer)
        if site.site not in valid:
            block = type(self.model.blocks[site.layer]).__name__
            arch = getattr(self.model.cfg, "architecture", None) or self.model_id
            raise HookNameError(
                f"hook {hook!r} is not available on this TransformerBridge ({arch}, {block} "
                f"blocks): valid names are blocks.L.<site> with 0 <= L < {self.n_layers} and "
                f"<site> in {valid}"
            )
        return site

    # --- the two primitives ----------------------------------------------------------------------

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
        if stop_layer is not None and not hooks:
            return None  # nothing to observe
        kwargs: dict[str, Any] = {}
        if cache is not None:  # the mask must cover the cached columns too
            seen = cache.get_seq_length()
            mask = torch.ones(
                ids.shape[0], seen + ids.shape[1], dtype=torch.long, device=ids.device
            )
            kwargs = {"past_key_values": cache, "use_cache": True, "attention_mask": mask}
            if attention_mask is not None:  # a left-padded batch
                kwargs.update(attention_mask=attention_mask, position_ids=position_ids)
        names = self.hook_points
        deepest = max(hooks) if stop_layer is not None else None
        # resid_mid changes by layer, written through at that block's hook_mlp_out
        pending: dict[int, list[torch.Tensor]] = {s.layer: [] for s in hooks if s.site == _MID}
        fwd_hooks: list[tuple[Any, Callable[..., torch.Tensor | None]]] = []
        for site in sorted(hooks):
            fn = _bridge_hook(
                hooks[site],
                flat_z=site.site == _Z,
                pending=pending.get(site.layer) if site.site in (_MID, _MLP_OUT) else None,
                record_delta=site.site == _MID,
                stop=site == deepest,
            )
            fwd_hooks.append((names[site.name], fn))
        for layer, changes in pending.items():
            if HookSite(layer, SITES.index(_MLP_OUT), _MLP_OUT) not in hooks:
                fwd_hooks.append(
                    (names[f"blocks.{layer}.{_MLP_OUT}"], _bridge_hook((), pending=changes))
                )
        # Plain torch hooks on the hook points: `bridge.hooks(...)` rebuilds `hook_dict` for every
        # hook it adds, which costs more than a shallow forward pass.
        handles = [
            point.register_forward_hook(lambda _module, _inputs, out, fn=fn: fn(out))
            for point, fn in fwd_hooks
        ]
        try:
            logits: torch.Tensor = self.model(ids, return_type="logits", **kwargs)
        except _StopForward:
            return None
        finally:
            for handle in handles:
                handle.remove()
        return None if stop_layer is not None else logits

    def _unembed(self, x: torch.Tensor) -> torch.Tensor:
        return tl_unembed(self.model, x)

    def hook_count(self) -> int:
        """Hooks currently attached to the bridge's hook points (0 between calls; for tests)."""
        points = {id(hp): hp for hp in self.hook_points.values()}
        return sum(len(hp._forward_hooks) for hp in points.values())
