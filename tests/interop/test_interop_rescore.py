"""Imported explanations are scored like any others: the `given` explainer on a planted world."""

import gzip
import json

import saexplain as sx
from saexplain.interop import load_neuronpedia_explanations
from saexplain.testing import (
    FakeBackend,
    PlantedValuesCoder,
    competent_scorer_provider,
    synthetic_corpus,
)

WORDS = {1: "cat", 2: "dog", 5: "tree"}
VOCAB = ["cat", "dog", "tree", "sat", "on", "the", "mat", "ran", "far", "red"]


def test_neuronpedia_explanations_rescore_as_given(tmp_path):
    rows = [
        {"modelId": "fake", "layer": "0-res", "index": str(i), "description": f'the word "{w}"'}
        | {"typeName": "np_max-act", "explanationModelName": "gpt-4o-mini"}
        for i, w in WORDS.items()
    ]
    batch = tmp_path / "batch-0.jsonl.gz"
    batch.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    texts = load_neuronpedia_explanations(batch).given()

    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=256, seed=0)
    coder = PlantedValuesCoder(backend, {i: {f" {w}": 1.0} for i, w in WORDS.items()}, d_sae=8)
    results = sx.score(
        backend,
        coder,
        explanations=texts,
        scorers=["detection"],
        provider=competent_scorer_provider(logprobs=False),
        dataset=synthetic_corpus(300, seed=0, vocab=VOCAB, min_words=8, max_words=40),
        n_tokens=32 * 200,
        context_length=32,
        records={"window": 16, "explanation": ["top:5"], "scoring": ["quantile:6"]}
        | {"negatives": ["random:6"], "rare_below": 2},
        output_dir=tmp_path,
        progress=False,
    )
    for i, word in WORDS.items():
        assert results[i].explanation("given") == f'the word "{word}"'
        assert (results[i].score("given", "detection") or 0) > 0.9
