"""Random SAELens SAEs for test suites (no hub access).

- `make_sae(architecture, d_in, d_sae, hook)`: a SAELens SAE of any architecture, random weights.
- `coders_at_every_site(d_model)`: one of each architecture at the canonical sites.

The tiny models, tokenizer and backend checks are in `saexplain_torch.testing` (install
saexplain-torch[test] to use them with these SAEs).
"""

from __future__ import annotations

from typing import Any

import torch


def make_sae(
    architecture: str, d_in: int, d_sae: int, hook: str, *, seed: int = 0, **cfg: Any
) -> Any:
    """A SAELens SAE with random weights (encoder biases shifted so a fraction of latents fire)."""
    from sae_lens import SAE

    torch.manual_seed(seed)
    cfg_dict: dict[str, Any] = {
        "architecture": architecture,
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "metadata": {"hook_name": hook, "model_name": "tiny", "release": "test"},
    }
    if architecture == "topk":
        cfg_dict["k"] = max(1, d_sae // 8)
    if architecture in ("transcoder", "jumprelu_transcoder", "skip_transcoder"):
        cfg_dict["d_out"] = cfg.pop("d_out", d_in)
        cfg_dict["apply_b_dec_to_input"] = False
    cfg_dict.update(cfg)
    sae = SAE.from_dict(cfg_dict)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name in ("W_enc", "W_dec", "W_skip"):
                p.copy_(torch.randn_like(p) / p.shape[0] ** 0.5)
            elif name.startswith("b_"):
                p.copy_(0.01 * torch.randn_like(p))
            elif name in ("threshold", "log_threshold"):
                p.copy_(torch.full_like(p, 0.05 if name == "threshold" else -3.0))
            elif name == "r_mag":
                p.zero_()
    return sae.eval()


def coders_at_every_site(d_model: int) -> list[Any]:
    """One random SAELens coder at each canonical site a residual-width SAE reads, covering every
    SAELens architecture (standard, top-k, JumpReLU, gated, transcoders, a `hook_z` SAE): what the
    cross-backend agreement tests run through each backend."""
    from saexplain_saelens.coders import SAELensCoder

    d = d_model
    zsae = make_sae("standard", d, 96, "blocks.1.attn.hook_z", seed=6, reshape_activations="hook_z")
    return [
        SAELensCoder(make_sae("standard", d, 128, "blocks.1.hook_resid_pre", seed=1)),
        SAELensCoder(make_sae("topk", d, 128, "blocks.0.hook_resid_post", seed=2)),
        SAELensCoder(make_sae("jumprelu", d, 128, "blocks.1.hook_mlp_out", seed=3)),
        SAELensCoder(make_sae("gated", d, 128, "blocks.0.hook_attn_out", seed=4)),
        SAELensCoder(make_sae("transcoder", d, 128, "blocks.1.hook_resid_mid", seed=5)),
        SAELensCoder(zsae),
        # the GPT-2 transcoders' input (normalised MLP input, before the norm's scale)
        SAELensCoder(make_sae("transcoder", d, 128, "blocks.0.ln2.hook_normalized", seed=7)),
        SAELensCoder(make_sae("standard", d, 128, "blocks.1.ln1.hook_normalized", seed=8)),
    ]
