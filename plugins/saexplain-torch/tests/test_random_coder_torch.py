"""The intervention scorer's `RandomCoder` (the `random_coder` baseline) on real torch backends:
its encode/decode take the backends' tensors (numpy-free), a Clamp of its latent adds the value
times its random row exactly as steering does, and the calibration reaches the target through
the backend's edits."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from saexplain_torch.testing import gpt2_tokenizer, make_coder, tiny_gpt2
from torch_stacks import nnsight, transformerlens

from saexplain.methods import calibrate
from saexplain.protocols import Add, Clamp, MethodContext
from saexplain.scorers.intervention import RandomCoder

HOOK = "blocks.1.hook_resid_post"
LATENT = 5


@pytest.fixture(scope="module")
def model():
    hf = tiny_gpt2(seed=3)
    with torch.no_grad():
        hf.transformer.ln_f.weight.mul_(10.0)  # sharper logits, so a KL of 0.25 is reachable
    return hf, gpt2_tokenizer()


@pytest.mark.parametrize("make", [transformerlens, nnsight], ids=["transformerlens", "nnsight"])
def test_the_random_coder_clamps_as_it_steers_and_calibrates(model, make):
    hf, tok = model
    backend = make(hf, tok)
    real = make_coder(hf.config.n_embd, 16, HOOK, seed=4)
    random = RandomCoder(real, LATENT, seed=11)
    tokens = backend.tokenize(["The cat sat", "I think that"])
    base = np.asarray(backend.logits(tokens, []))
    clamped = np.asarray(backend.logits(tokens, [Clamp(coder=random, latent=LATENT, value=4.0)]))
    steered = np.asarray(backend.logits(tokens, [Add(direction=random.row, scale=4.0, hook=HOOK)]))
    assert not np.allclose(clamped, base, atol=1e-3)
    np.testing.assert_allclose(clamped, steered, atol=1e-4)
    ctx = MethodContext(backend=backend, coder=random)
    strength = asyncio.run(calibrate(ctx, LATENT, target_kl=0.25))
    assert strength.reached and abs(strength.kl - 0.25) <= 0.025, strength
