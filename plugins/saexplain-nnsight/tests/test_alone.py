"""The core, the torch core and this plugin alone explain latents of a plain torch coder.

In the `plugin-saexplain-nnsight` nox session (which sets SAEXPLAIN_PLUGIN_SESSION) only those
three distributions and their declared dependencies are installed: sae-lens and TransformerLens
must not be importable there, proving the nnsight backend does not pull them in. In the shared
development environment (the integration session) they are installed on purpose, so that one
assertion is skipped there; the explain run below runs everywhere.
"""

import importlib.util
import os

from saexplain_torch.testing import gpt2_tokenizer, make_coder, plant, tiny_gpt2

import saexplain as sx
from saexplain.testing import (
    ScriptedProvider,
    competent_explainer,
    competent_scorer_provider,
    synthetic_corpus,
)

WORDS = {3: " cat", 7: " river"}
HEAVY = ("sae_lens", "transformer_lens")


def test_no_saelens_or_transformerlens_in_this_plugins_own_environment():
    import pytest

    installed = [name for name in HEAVY if importlib.util.find_spec(name) is not None]
    if os.environ.get("SAEXPLAIN_PLUGIN_SESSION") != "saexplain-nnsight" and installed:
        pytest.skip(f"shared environment: {installed} installed on purpose for other plugins")
    assert installed == []


def test_explain_a_plain_torch_coder_with_nnsight_alone(tmp_path):
    tok = gpt2_tokenizer()
    hf = tiny_gpt2()
    coder = make_coder(64, 16, "blocks.0.hook_resid_pre", seed=1)
    plant(coder, hf.transformer.wte.weight, {k: tok(w)["input_ids"][0] for k, w in WORDS.items()})
    texts = synthetic_corpus(
        200, seed=0, vocab=["cat", "river", "the", "a", "sat", "ran", "on", "red", "big", "tree"]
    )
    results = sx.explain(
        hf,
        coder,
        tokenizer=tok,
        backend="nnsight",
        latents=sorted(WORDS),
        explainers=["maxact"],
        scorers=["detection"],
        provider=ScriptedProvider(competent_explainer),
        scorer_provider=competent_scorer_provider(),
        dataset=texts,
        n_tokens=32 * 150,
        context_length=32,
        records={
            "window": 16,
            "explanation": ["top:8"],
            "scoring": ["quantile:6"],
            "negatives": ["random:6"],
            "rare_below": 2,
        },
        output_dir=str(tmp_path),
        progress=False,
    )
    assert len(results.table()) == len(WORDS)  # (to_dataframe needs pandas, not installed here)
    for latent, word in WORDS.items():
        row = results[latent]
        assert word.strip() in (row.explanation("maxact") or "").lower()
        assert (row.score("maxact", "detection") or 0) > 0.8
