"""The demo SAE's trainer and cache, on planted data and a tiny random Llama (seconds)."""

import json

import numpy as np
import pytest
import torch
from saexplain_demo import train as demo
from saexplain_demo.corpus import demo_corpus
from saexplain_torch.testing import gpt2_tokenizer, tiny_llama

from saexplain.errors import ConfigError

nn_backend = pytest.importorskip("saexplain_nnsight.backend")


def planted_data(n, d_in, n_features, active, seed=0):
    """Each row: `active` of `n_features` known unit directions with magnitudes in [1, 3], plus
    a common offset and a little noise."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(n_features, d_in, generator=g), dim=-1)
    idx = torch.stack([torch.randperm(n_features, generator=g)[:active] for _ in range(n)])
    mags = 1 + 2 * torch.rand(n, active, generator=g)
    x = (mags[..., None] * dirs[idx]).sum(1) + 0.5 + 0.01 * torch.randn(n, d_in, generator=g)
    return 7.0 * x, dirs  # not unit scale: the trainer must normalise and fold it back


def test_trainer_recovers_planted_directions():
    x, dirs = planted_data(20_000, 32, 48, 3)
    sae, stats = demo.train_topk_sae(
        x, d_sae=96, k=4, hook="blocks.0.hook_resid_pre", n_samples=150_000, batch_size=256, lr=4e-3
    )
    w = sae.W_dec.detach()
    assert torch.allclose(w.norm(dim=-1), torch.ones(96), atol=1e-4)
    best = (torch.nn.functional.normalize(w, dim=-1) @ dirs.T).max(0).values
    assert (best > 0.95).float().mean() >= 0.9, best
    # The saved SAE reads raw (unscaled) activations: scaling was folded into its biases.
    held, _ = planted_data(2_000, 32, 48, 3, seed=0)
    with torch.no_grad():
        z = sae.encode(held)
        fvu = ((sae.decode(z) - held) ** 2).sum() / ((held - held.mean(0)) ** 2).sum()
    assert fvu < 0.1 and stats.final_fvu < 0.1
    assert ((z > 0).sum(-1) <= 4).all()
    assert stats.n_steps == 150_000 // 256 and stats.dead_fraction < 0.2


def test_trainer_rejects_bad_settings():
    x = torch.randn(100, 8)
    with pytest.raises(ConfigError, match="fewer than one batch"):
        demo.train_topk_sae(x, d_sae=16, k=2, hook="h", n_samples=10, batch_size=256)
    with pytest.raises(ConfigError, match="k="):
        demo.train_topk_sae(x, d_sae=16, k=20, hook="h", n_samples=10, batch_size=50)


@pytest.fixture(scope="module")
def tiny_backend():
    return nn_backend.NNsightBackend(tiny_llama(n_layer=2, d_model=64), tokenizer=gpt2_tokenizer())


SMALL = {"layer": 1, "expansion": 2, "k": 8, "n_train_tokens": 6_000, "context_length": 32}


def test_demo_coder_trains_caches_and_matches_direct_encode(tiny_backend, tmp_path, monkeypatch):
    corpus = demo_corpus(150)
    coder = demo.demo_coder_for(
        tiny_backend, cache_dir=tmp_path, corpus=corpus, progress=False, batch_size=256, **SMALL
    )
    assert coder.hook == "blocks.1.hook_resid_pre" and coder.d_sae == 128
    assert coder.architecture == "topk" and coder.exclude_bos
    record = demo.demo_train_record(coder, tmp_path)
    assert record["settings"]["n_train_tokens"] == 6_000 and record["stats"]["n_steps"] == 23
    assert json.loads((tmp_path / "demo-sae" / coder.id.split("/")[1] / "cfg.json").read_text())

    # Second call: loaded from the cache, never trained again, identical weights.
    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(demo, "_train_into", no_training)
    again = demo.demo_coder_for(
        tiny_backend, cache_dir=tmp_path, corpus=corpus, progress=False, batch_size=256, **SMALL
    )
    assert again.id == coder.id
    assert torch.equal(again.sae.W_enc, coder.sae.W_enc)
    assert torch.equal(again.sae.b_dec, coder.sae.b_dec)
    # Any other setting, corpus or model is another SAE.
    with pytest.raises(AssertionError, match="trained again"):
        demo.demo_coder_for(tiny_backend, cache_dir=tmp_path, corpus=corpus, seed=1, **SMALL)
    with pytest.raises(AssertionError, match="trained again"):
        demo.demo_coder_for(tiny_backend, cache_dir=tmp_path, corpus=corpus[:100], **SMALL)
    other = nn_backend.NNsightBackend(
        tiny_llama(n_layer=2, d_model=64, seed=1), tokenizer=gpt2_tokenizer()
    )
    assert demo.model_fingerprint(other) != demo.model_fingerprint(tiny_backend)

    # The backend's sparse activations equal a direct encode of the activations at the hook.
    contexts = demo.demo_contexts(tiny_backend, demo_corpus(300)[200:], 32, 8)
    tokens = tiny_backend.tokenize([tiny_backend.decode(row[1:]) for row in contexts.tolist()])
    ids = torch.as_tensor(tokens.ids)
    with torch.no_grad():
        hidden = tiny_backend.hf(ids, output_hidden_states=True).hidden_states[1]
        dense = coder.encode(hidden).numpy()
    dense[:, 0] = 0  # BOS is excluded
    dense[~tokens.mask] = 0
    sparse = tiny_backend.latent_acts(tokens, [coder])[coder.id]
    rebuilt = np.zeros_like(dense)
    rebuilt[sparse.row, sparse.pos, sparse.latent] = sparse.value
    np.testing.assert_allclose(rebuilt, dense, atol=1e-4)
    alive = np.unique(sparse.latent)
    assert len(alive) > 0.3 * coder.d_sae  # held-out text lights up a good share of latents


def test_demo_coder_bad_input(tiny_backend, tmp_path):
    with pytest.raises(ConfigError, match="hook_resid_pre"):
        demo.demo_coder_for(tiny_backend, "blocks.1.mlp.hook_post", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown demo SAE settings"):
        demo.demo_coder_for(tiny_backend, cache_dir=tmp_path, n_tokens=5)
    with pytest.raises(ConfigError, match="layer"):
        demo.demo_coder_for(tiny_backend, "blocks.7.hook_resid_pre", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="backend"):
        demo.demo_coder_for(None, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="shorter than one context"):
        demo.demo_coder_for(tiny_backend, cache_dir=tmp_path, corpus=["tiny"], **SMALL)
