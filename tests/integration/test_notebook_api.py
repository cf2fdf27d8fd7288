"""`sx.explain` with the live objects a SAELens analysis session has: a HookedSAETransformer, an
nnsight LanguageModel or a plain transformers model, plus a SAELens SAE object."""

import pytest

pytest.importorskip("saexplain_transformerlens")
pytest.importorskip("saexplain_nnsight")
torch = pytest.importorskip("torch")

import saexplain as sx  # noqa: E402
from saexplain.testing import (  # noqa: E402
    ScriptedProvider,
    competent_explainer,
    competent_scorer_provider,
    synthetic_corpus,
)

WORDS = {3: " cat", 7: " river"}


@pytest.fixture(scope="module")
def session():
    from saexplain_saelens.testing import make_sae
    from saexplain_torch.testing import gpt2_tokenizer, plant, tiny_gpt2

    tok = gpt2_tokenizer()
    hf = tiny_gpt2()
    sae = make_sae("standard", 64, 16, "blocks.0.hook_resid_pre", seed=1)
    ids = {latent: tok(word)["input_ids"][0] for latent, word in WORDS.items()}
    plant(sae, hf.transformer.wte.weight, ids)
    texts = synthetic_corpus(
        200, seed=0, vocab=["cat", "river", "the", "a", "sat", "ran", "on", "red", "big", "tree"]
    )
    return hf, tok, sae, texts


def model_for(kind, hf, tok):
    if kind == "hooked_sae_transformer":
        from sae_lens import HookedSAETransformer
        from saexplain_transformerlens.convert import hooked_transformer_from_hf

        return hooked_transformer_from_hf(hf, tok, cls=HookedSAETransformer), {}
    if kind == "nnsight":
        from nnsight import LanguageModel

        return LanguageModel(hf, tokenizer=tok), {}
    return hf, {"tokenizer": tok}


@pytest.mark.parametrize("kind", ["hooked_sae_transformer", "nnsight", "transformers"])
def test_explain_with_live_objects(kind, session, tmp_path):
    hf, tok, sae, texts = session
    model, extra = model_for(kind, hf, tok)
    results = sx.explain(
        model,
        sae,
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
        **extra,
    )
    df = results.to_dataframe()
    assert len(df) == len(WORDS)
    for latent, word in WORDS.items():
        row = results[latent]
        assert word.strip() in (row.explanation("maxact") or "").lower()
        assert (row.score("maxact", "detection") or 0) > 0.8
    assert "<table" in results._repr_html_()


def test_selfexplain_shorthand_needs_no_llm(session, tmp_path):
    hf, tok, sae, texts = session
    results = sx.explain(
        model=hf,
        sae=sae,
        tokenizer=tok,
        latents=sorted(WORDS),
        explainers="selfexplain",
        scorers=[],
        dataset=texts,
        n_tokens=32 * 100,
        context_length=32,
        records={"rare_below": 2},
        output_dir=str(tmp_path),
        progress=False,
    )
    assert results.explainers == ["selfexplain"] and results.scorers == []
    for latent in WORDS:
        entry = results[latent].explanations["selfexplain"]
        assert entry.status in ("ok", "failed") and "selfsim" in str(entry.evidence)
