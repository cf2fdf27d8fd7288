"""Strength calibration on a tiny real GPT-2 through TransformerLens and nnsight, with a planted
output latent (its decoder row is a token's unembedding direction, so intervening on it promotes
that token): both reach the KL target within 10% and agree; the promoted token leads the
intervention explainer's list; and an edited generation that raises mid-way leaves no hook."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from saexplain_torch.testing import TinySAE, gpt2_tokenizer, make_coder, tiny_gpt2

from saexplain.explainers.intervention import Intervention
from saexplain.methods import NEUTRAL_PROMPTS, MethodContext, calibrate, generate_pairs, top_tokens
from saexplain.protocols import Clamp

tl_backend = pytest.importorskip("saexplain_transformerlens.backend")
nn_backend = pytest.importorskip("saexplain_nnsight.backend")
convert = pytest.importorskip("saexplain_transformerlens.convert")

LATENT, TOKEN = 7, 1110  # any token id of the GPT-2 vocabulary
HOOK = "blocks.1.hook_resid_pre"


def torch_hooks(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


@pytest.fixture(scope="module")
def stack():
    tok = gpt2_tokenizer()
    hf = tiny_gpt2()
    with torch.no_grad():
        # a random tiny model predicts almost uniformly, so no edit moves its KL far; a longer
        # (tied) unembedding row for TOKEN lets the planted direction make it likely
        row = torch.randn(hf.config.n_embd, generator=torch.Generator().manual_seed(0))
        hf.get_output_embeddings().weight[TOKEN] = 4.0 * row / row.norm()
    tl = tl_backend.TransformerLensBackend(convert.hooked_transformer_from_hf(hf, tok))
    nn = nn_backend.NNsightBackend(hf, tokenizer=tok)
    coder = make_coder(tl.d_model, 32, HOOK, seed=3)
    with torch.no_grad():  # the planted output latent: decoder row = TOKEN's unembedding
        coder.W_dec[LATENT] = row / row.norm()
    return hf, tl, nn, coder


@pytest.mark.parametrize("kind", ["clamp", "steer"])
def test_both_backends_reach_the_target_and_agree(stack, kind):
    _, tl, nn, coder = stack
    found = {}
    for backend in (tl, nn):
        ctx = MethodContext(backend=backend, coder=coder)
        for target in (0.25, 0.5):
            s = asyncio.run(calibrate(ctx, LATENT, target_kl=target, kind=kind))
            assert s.reached and abs(s.kl - target) <= 0.1 * target, (backend.name, s)
            found[backend.name, target] = s
    for target in (0.25, 0.5):
        a, b = found[tl.name, target], found[nn.name, target]
        assert a.value == pytest.approx(b.value, rel=0.02), (a, b)
        assert a.kl == pytest.approx(b.kl, rel=0.02)


def test_planted_token_is_promoted(stack):
    _, tl, _, coder = stack
    ctx = MethodContext(backend=tl, coder=coder)
    strength = asyncio.run(calibrate(ctx, LATENT, target_kl=0.5))
    change = Intervention.logit_change(tl, coder, strength, NEUTRAL_PROMPTS)
    (first, *_), _ = top_tokens(tl, change, 3)
    assert first.id == TOKEN
    pairs = asyncio.run(
        generate_pairs(
            ctx, strength, NEUTRAL_PROMPTS[:2], max_new_tokens=5, temperature=0.0, seed=0
        )
    )
    assert len(pairs) == 2 and all(isinstance(c, str) and isinstance(e, str) for c, e in pairs)


class RaisesLater(TinySAE):
    """Encodes normally `ok_calls` times, then raises: an error inside a forward hook midway
    through generation (the prompt pass succeeds, a later decoding step fails)."""

    def __init__(self, *args, ok_calls: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls, self.ok_calls = 0, ok_calls

    def encode(self, x):
        self.calls += 1
        if self.calls > self.ok_calls:
            raise RuntimeError("boom mid-generation")
        return super().encode(x)


def test_generation_raising_midway_leaves_no_hook(stack):
    hf, tl, nn, _ = stack
    tokens = tl.tokenize(["a clean pass before and after"])
    for backend, hooks in ((tl, tl.hook_count), (nn, lambda: torch_hooks(hf))):
        before_hooks = hooks()
        clean = np.asarray(backend.logits(tokens))
        bad = RaisesLater(tl.d_model, 32, HOOK, seed=3, ok_calls=2)
        edit = Clamp(coder=bad, latent=LATENT, value=20.0)
        with pytest.raises(RuntimeError, match="boom"):
            backend.generate(["one", "two words"], [edit], max_new_tokens=6)
        assert bad.calls == 3  # it did fail midway, after two edited passes
        assert hooks() == before_hooks, backend.name
        assert np.allclose(np.asarray(backend.logits(tokens)), clean, atol=1e-6), backend.name
