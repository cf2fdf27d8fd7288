"""Build a HookedTransformer from a transformers model object, offline and without processing.

`HookedTransformer.from_pretrained` looks the model's name up on the hub; this path only needs the
in-memory model, so it also works for tiny random models and locally converted checkpoints.
Weights are loaded without folding or centering, so residual-stream values equal the
transformers model's (what SAEs trained on unprocessed models expect).
"""

from __future__ import annotations

from typing import Any

from saexplain.errors import BackendError

_GPT2 = {"GPT2LMHeadModel"}
_LLAMA = {"LlamaForCausalLM"}


def _architecture(hf_model: Any) -> str:
    archs = getattr(hf_model.config, "architectures", None) or [type(hf_model).__name__]
    return str(archs[0])


def hooked_config_from_hf(hf_model: Any) -> Any:
    """A HookedTransformerConfig for a GPT-2 or Llama-family transformers model."""
    from transformer_lens import HookedTransformerConfig

    c = hf_model.config
    arch = _architecture(hf_model)
    if arch in _GPT2:
        d = {
            "d_model": c.n_embd,
            "d_head": c.n_embd // c.n_head,
            "n_heads": c.n_head,
            "d_mlp": c.n_inner or 4 * c.n_embd,
            "n_layers": c.n_layer,
            "n_ctx": c.n_positions,
            "eps": c.layer_norm_epsilon,
            "d_vocab": c.vocab_size,
            "act_fn": c.activation_function,
            "use_attn_scale": getattr(c, "scale_attn_weights", True),
            "scale_attn_by_inverse_layer_idx": c.scale_attn_by_inverse_layer_idx,
            "normalization_type": "LN",
        }
    elif arch in _LLAMA:
        d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        rope = getattr(c, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))
        if rope.get("rope_type", "default") not in ("default", None):
            raise BackendError(f"rope scaling {rope.get('rope_type')!r} is not supported here")
        kv = c.num_key_value_heads
        d = {
            "d_model": c.hidden_size,
            "d_head": d_head,
            "n_heads": c.num_attention_heads,
            "d_mlp": c.intermediate_size,
            "n_layers": c.num_hidden_layers,
            "n_ctx": c.max_position_embeddings,
            "eps": c.rms_norm_eps,
            "d_vocab": c.vocab_size,
            "act_fn": c.hidden_act,
            "n_key_value_heads": kv if kv != c.num_attention_heads else None,
            "normalization_type": "RMS",
            "positional_embedding_type": "rotary",
            "rotary_adjacent_pairs": False,
            "rotary_dim": d_head,
            "rotary_base": theta,
            "final_rms": True,
            "gated_mlp": True,
        }
    else:
        raise BackendError(
            f"cannot convert {arch} to a HookedTransformer here (GPT-2 and Llama families are "
            "supported); use HookedTransformer.from_pretrained or the nnsight backend"
        )
    dtype = next(hf_model.parameters()).dtype
    return HookedTransformerConfig(
        **d,
        original_architecture=arch,
        tokenizer_prepends_bos=False,
        dtype=dtype,
        device=str(next(hf_model.parameters()).device),
    )


def hooked_transformer_from_hf(hf_model: Any, tokenizer: Any = None, *, cls: Any = None) -> Any:
    """A HookedTransformer (or `cls`, e.g. SAELens's HookedSAETransformer) with `hf_model`'s
    weights (GPT-2 or Llama family), without processing."""
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions import (
        convert_gpt2_weights,
        convert_llama_weights,
    )

    cfg = hooked_config_from_hf(hf_model)
    convert = convert_gpt2_weights if cfg.original_architecture in _GPT2 else convert_llama_weights
    state = convert(hf_model, cfg)
    model = (cls or HookedTransformer)(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
    )
    return model.eval()
