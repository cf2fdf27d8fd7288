"""The `generation` and `input_eval` scorers on real torch backends: a tiny random GPT-2 with a
plain torch SAE whose latents are planted on a word (and its surface variants), read through the
TransformerLens and nnsight backends, the texts written by the competent scripted writer."""

import asyncio

import pytest
import torch
from saexplain_torch.testing import gpt2_tokenizer, make_coder, plant, tiny_gpt2
from torch_stacks import BACKENDS

from saexplain.models import Explanation, Status
from saexplain.protocols import MethodContext
from saexplain.scorers.generation import GenerationScorer
from saexplain.scorers.input_eval import InputEvalScorer
from saexplain.testing import ScriptedProvider, check_scorer, competent_writer, make_record

CONCEPTS = {3: "cat", 7: "river"}
VARIANTS = {3: [" cat", " Cat", " cats"], 7: [" river", " River", " rivers"]}
TEXTS = [
    "The cat sat on the warm mat.",
    "We walked along the river at dawn.",
    "A black cat chased the small dog.",
    "Boats drift down the river slowly.",
    "Birds sing in the morning light.",
    "The market opens at nine.",
]


@pytest.fixture(scope="module")
def planted():
    tok = gpt2_tokenizer()
    hf = tiny_gpt2(seed=1)
    sae = make_coder(hf.config.n_embd, 32, "blocks.0.hook_resid_pre")
    ids = {latent: [tok.encode(w)[0] for w in forms] for latent, forms in VARIANTS.items()}
    embed = hf.get_input_embeddings().weight.data
    plant(sae, embed, {latent: v[0] for latent, v in ids.items()})
    with torch.no_grad():
        for variants in ids.values():
            embed[variants[1:]] = embed[variants[0]].clone()  # the variants share the direction
    return hf, tok, sae


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def world(request, planted):
    hf, tok, coder = planted
    backend = BACKENDS[request.param](hf, tok)
    records = {latent: make_record(backend, coder, latent, TEXTS) for latent in CONCEPTS}
    for latent, record in records.items():
        assert record.stats.max > 1.0, f"latent {latent} did not fire"
    return backend, coder, records


@pytest.mark.parametrize("latent", sorted(CONCEPTS))
def test_true_explanations_make_firing_texts_and_shuffled_do_not(world, latent):
    """Figures: generation 1.0 (true) vs 0.0 (shuffled); input_eval success 1.0 with a margin of
    about the latent's max (normalised > 0.8) vs success 0.0 with margin 0."""
    backend, coder, records = world
    record = records[latent]
    ctx = MethodContext(
        backend=backend, coder=coder, providers={"scorer": ScriptedProvider(competent_writer)}
    )

    def said(word: str) -> Explanation:
        return Explanation(latent=record.latent, text=f'the word "{word}"', explainer="planted")

    other = CONCEPTS[next(k for k in CONCEPTS if k != latent)]
    generation = check_scorer(GenerationScorer(), record, said(CONCEPTS[latent]), ctx)
    assert generation.status is Status.OK and generation.value == 1.0, generation.evidence
    peaks = {t["peak_token"].strip() for t in generation.evidence["texts"]}
    assert peaks == {CONCEPTS[latent]}
    shuffled = asyncio.run(GenerationScorer().score(record, said(other), ctx))
    assert shuffled.status is Status.OK and shuffled.value == 0.0, shuffled.evidence

    true_eval = check_scorer(InputEvalScorer(), record, said(CONCEPTS[latent]), ctx)
    assert true_eval.value == 1.0 and true_eval.metrics["margin_normalised"] > 0.8
    wrong_eval = asyncio.run(InputEvalScorer().score(record, said(other), ctx))
    assert wrong_eval.value == 0.0 and wrong_eval.metrics["margin"] == 0.0
