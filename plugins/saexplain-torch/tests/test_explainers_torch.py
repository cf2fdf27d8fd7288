"""The built-in explainers on real torch backends: a tiny random GPT-2 (tied embeddings) with a
plain torch SAE whose latents are planted on a word and its surface variants, through the
TransformerLens and nnsight backends, with a scripted provider that answers like a competent LLM.

The planted token embeddings are `8 * u` for a fresh unit direction `u` per latent, and the SAE's
decoder row is `u`: the latent fires on those tokens, its logit lens (final LayerNorm, tied
unembedding) promotes them, and clamping it raises their next-token logits.
"""

import pytest
import torch
from saexplain_torch.testing import gpt2_tokenizer, make_coder, plant, tiny_gpt2
from torch_stacks import BACKENDS

from saexplain.explainers.ensemble import Ensemble
from saexplain.explainers.maxact import MaxAct
from saexplain.explainers.tokenchange import TokenChange
from saexplain.explainers.vocabproj import VocabProj
from saexplain.models import Status
from saexplain.protocols import MethodContext
from saexplain.testing import ScriptedProvider, check_explainer, competent_explainer, make_record

CONCEPTS = {3: "cat", 7: "river"}
VARIANTS = {3: [" cat", " Cat", " cats", "cat"], 7: [" river", " River", " rivers", "river"]}
TEXTS = [
    "The cat sat on the warm mat.",
    "We walked along the river at dawn.",
    "A black cat chased the small dog.",
    "Boats drift down the river slowly.",
    "My cat likes fish and milk.",
    "The river was cold and fast.",
    "Her old cat slept all day.",
    "A bridge crosses the river here.",
    "Birds sing in the morning light.",
    "The market opens at nine.",
]


@pytest.fixture(scope="module")
def planted():
    tok = gpt2_tokenizer()
    hf = tiny_gpt2(seed=1)
    sae = make_coder(hf.config.n_embd, 32, "blocks.0.hook_resid_pre")
    ids = {latent: [tok.encode(w)[0] for w in forms] for latent, forms in VARIANTS.items()}
    embed = hf.get_input_embeddings().weight.data  # tied to the unembedding in GPT-2
    plant(sae, embed, {latent: v[0] for latent, v in ids.items()})
    with torch.no_grad():
        for variants in ids.values():
            # the variants share the planted direction
            embed[variants[1:]] = embed[variants[0]].clone()
    return hf, tok, sae


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def world(request, planted):
    hf, tok, coder = planted
    backend = BACKENDS[request.param](hf, tok)
    records = {latent: make_record(backend, coder, latent, TEXTS) for latent in CONCEPTS}
    for latent, record in records.items():
        assert len(record.explanation_examples) >= 2, f"latent {latent} did not fire"
    return backend, coder, records


EXPLAINERS = {
    "maxact": lambda: MaxAct(show_values=True, top_logits=10),
    "vocabproj": lambda: VocabProj(),
    "tokenchange": lambda: TokenChange(),
    "ensemble": lambda: Ensemble(),
}


@pytest.mark.parametrize("latent", sorted(CONCEPTS))
@pytest.mark.parametrize("which", sorted(EXPLAINERS))
def test_explainers_name_the_planted_concept_on_torch_backends(world, which, latent):
    backend, coder, records = world
    provider = ScriptedProvider(competent_explainer)
    ctx = MethodContext(backend=backend, coder=coder, providers={"explainer": provider})
    result = check_explainer(EXPLAINERS[which](), records[latent], ctx)
    assert result.status is Status.OK, result.error
    assert CONCEPTS[latent] in result.text.lower()
    assert result.usage.calls == 1
    prompt = provider.requests[0].messages[-1].content
    assert "<|endoftext|>" not in prompt  # the BOS token is not shown as text
    if which in ("vocabproj", "tokenchange", "ensemble"):
        tokens = result.evidence.get("promoted") or result.evidence.get("raised_high")
        if which == "ensemble":
            tokens = result.evidence["vocabproj"]["promoted"]
        top4 = {t["token"].strip().lower() for t in tokens[:4]}
        assert top4 <= {CONCEPTS[latent], CONCEPTS[latent] + "s"}, tokens[:6]
