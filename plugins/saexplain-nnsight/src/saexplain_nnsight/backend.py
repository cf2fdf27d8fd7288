"""The nnsight backend: an nnsight `TransformersModel` / `LanguageModel`, or a plain transformers
causal LM (wrapped here).

Canonical hook names are translated to module inputs and outputs of the transformers model for the
GPT-2 and Llama layouts (Llama, Mistral, Qwen2/3 share one). The residual stream between attention
and MLP (`hook_resid_mid`) is not a module boundary in transformers, so it is computed as
`resid_pre + attention output` and edits to it are written back through the attention output.
Early stopping: `tracer.stop()` right after the deepest hooked module. KV caching: a transformers
`DynamicCache` passed as `past_key_values`; a left-padded batch passes transformers its
`attention_mask` (cached and new columns) and `position_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from saexplain_torch.backend import TorchBackend
from saexplain_torch.edits import Hooks, run_hook_fns
from saexplain_torch.generation import TransformersCache

from saexplain.errors import BackendError, ConfigError


@dataclass(frozen=True)
class Layout:
    """Where a family keeps its blocks and their parts (attribute paths from the root)."""

    blocks: str
    attn_out: str  # module whose input is hook_z and output is hook_attn_out
    mlp: str
    mlp_out_proj: str  # module whose input is mlp.hook_post
    final_norm: str
    ln1: str  # the norms before attention and before the MLP (in a block)
    ln2: str


GPT2 = Layout(
    "transformer.h", "attn.c_proj", "mlp", "mlp.c_proj", "transformer.ln_f", "ln_1", "ln_2"
)
LLAMA = Layout(
    "model.layers",
    "self_attn.o_proj",
    "mlp",
    "mlp.down_proj",
    "model.norm",
    "input_layernorm",
    "post_attention_layernorm",
)


def _normalized(norm: Any, x: torch.Tensor) -> torch.Tensor:
    """What TransformerLens's `lnN.hook_normalized` holds: `norm`'s input normalised, before its
    scale (and bias), computed as the transformers module does."""
    if isinstance(norm, torch.nn.LayerNorm):
        return torch.nn.functional.layer_norm(x, norm.normalized_shape, None, None, norm.eps)
    eps = float(getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", None) or 1e-6)
    h = x.to(torch.float32)
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _scaled(norm: Any, normalized: torch.Tensor) -> torch.Tensor:
    """`norm`'s output for a (possibly edited) normalised input: its scale and bias applied."""
    out: torch.Tensor = normalized * norm.weight
    bias = getattr(norm, "bias", None)
    return out + bias if bias is not None else out


LAYOUTS = {"gpt2": GPT2, "llama": LLAMA, "mistral": LLAMA, "qwen2": LLAMA, "qwen3": LLAMA}


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _dims(config: Any) -> dict[str, int]:
    if config.model_type == "gpt2":
        return {
            "d_model": config.n_embd,
            "n_layers": config.n_layer,
            "d_mlp": config.n_inner or 4 * config.n_embd,
            "n_heads": config.n_head,
            "d_head": config.n_embd // config.n_head,
        }
    d_head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {
        "d_model": config.hidden_size,
        "n_layers": config.num_hidden_layers,
        "d_mlp": config.intermediate_size,
        "n_heads": config.num_attention_heads,
        "d_head": d_head,
    }


class NNsightBackend(TransformersCache, TorchBackend):
    name = "nnsight"

    def __init__(self, model: Any, *, tokenizer: Any = None, model_id: str | None = None) -> None:
        module = type(model).__module__
        if module.startswith("nnsight"):
            lm = model
            if getattr(lm, "dispatched", True) is False:
                lm.dispatch()  # a lazily loaded model: this backend reads and calls its modules
            hf = getattr(model, "_module", None)
        elif module.startswith("transformers") and hasattr(model, "config"):
            if tokenizer is None:
                raise ConfigError(
                    f"wrapping a plain {type(model).__name__} needs tokenizer= (a transformers "
                    "tokenizer)"
                )
            from nnsight import TransformersModel

            hf = model
            lm = TransformersModel(model, task="text-generation", tokenizer=tokenizer)
        else:
            raise BackendError(
                f"the nnsight backend wraps an nnsight LanguageModel/TransformersModel or a "
                f"transformers causal LM, got {module}.{type(model).__name__}"
            )
        config = getattr(hf, "config", None)
        model_type = getattr(config, "model_type", None)
        if hf is None or model_type not in LAYOUTS:
            raise BackendError(
                f"the nnsight backend knows the layouts of {sorted(LAYOUTS)} models, "
                f"got model_type={model_type!r}"
            )
        self.lm, self.hf, self.layout = lm, hf, LAYOUTS[model_type]
        self.hf_config = config
        param = next(hf.parameters())
        super().__init__(
            model_id=model_id or str(getattr(config, "name_or_path", "") or model_type),
            tokenizer=tokenizer if tokenizer is not None else getattr(lm, "tokenizer", None),
            device=param.device,
            dtype=param.dtype,
            **_dims(config),
        )

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
        kwargs: dict[str, Any] = (
            {"past_key_values": cache, "use_cache": True} if cache is not None else {}
        )
        if attention_mask is not None:  # a left-padded batch: mask over cached + new columns
            kwargs.update(attention_mask=attention_mask, position_ids=position_ids)
        if not hooks and stop_layer is None:  # nothing to intervene on: skip the tracer
            logits: torch.Tensor = self.hf(ids, **kwargs).logits
            return logits
        by_layer: dict[int, dict[str, list[Any]]] = {}
        for site, fns in hooks.items():
            by_layer.setdefault(site.layer, {})[site.site] = fns
        last = max(by_layer) if by_layer else -1
        blocks = _get(self.lm, self.layout.blocks)
        layout = self.layout
        result: list[torch.Tensor] = []
        with self.lm.trace(ids, **kwargs) as tracer:
            for layer in range(last + 1):
                sites = by_layer.get(layer)
                if not sites:
                    continue
                block = blocks[layer]
                needs_mid = "hook_resid_mid" in sites
                pre = None
                if "hook_resid_pre" in sites or needs_mid:
                    pre = block.input
                    new = run_hook_fns(sites.get("hook_resid_pre", []), pre)
                    if new is not None:
                        block.input = new
                        pre = new
                if "ln1.hook_normalized" in sites:
                    self._norm_site(_get(block, layout.ln1), sites["ln1.hook_normalized"])
                if "attn.hook_z" in sites:
                    attn = _get(block, layout.attn_out)
                    new = run_hook_fns(sites["attn.hook_z"], attn.input)
                    if new is not None:
                        attn.input = new
                if "hook_attn_out" in sites or needs_mid:
                    attn = _get(block, layout.attn_out)
                    out = attn.output
                    new = run_hook_fns(sites.get("hook_attn_out", []), out)
                    if new is not None:
                        out = new
                    if needs_mid:
                        assert pre is not None
                        mid = run_hook_fns(sites["hook_resid_mid"], pre + out)
                        if mid is not None:
                            out, new = mid - pre, mid
                    if new is not None:
                        attn.output = out
                if "ln2.hook_normalized" in sites:
                    self._norm_site(_get(block, layout.ln2), sites["ln2.hook_normalized"])
                if "mlp.hook_post" in sites:
                    proj = _get(block, layout.mlp_out_proj)
                    new = run_hook_fns(sites["mlp.hook_post"], proj.input)
                    if new is not None:
                        proj.input = new
                if "hook_mlp_out" in sites:
                    mlp = _get(block, layout.mlp)
                    new = run_hook_fns(sites["hook_mlp_out"], mlp.output)
                    if new is not None:
                        mlp.output = new
                if "hook_resid_post" in sites:
                    new = run_hook_fns(sites["hook_resid_post"], block.output)
                    if new is not None:
                        block.output = new
            if stop_layer is not None:
                tracer.stop()
            else:
                result.append(self.lm.output.logits.save())
        return result[0] if result else None

    @staticmethod
    def _norm_site(norm: Any, fns: list[Any]) -> None:
        """Run hooks on a norm's normalised input (inside a trace); an edit is written back as
        the norm's output, scaled as the module would."""
        module = norm._module  # the torch module behind the nnsight envoy
        new = run_hook_fns(fns, _normalized(module, norm.input))
        if new is not None:
            norm.output = _scaled(module, new)

    def _unembed(self, x: torch.Tensor) -> torch.Tensor:
        x = _get(self.hf, self.layout.final_norm)(x)
        out: torch.Tensor = self.hf.get_output_embeddings()(x)
        return out
