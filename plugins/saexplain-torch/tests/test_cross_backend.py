"""The cross-backend contract of the torch core on tiny random GPT-2 and Llama models, with plain
torch coders at every canonical site: TransformerLens (HookedTransformer) and nnsight (a plain
transformers model and an nnsight LanguageModel) must agree on latent activations, logits under
every edit kind and greedy generations, and planted features must fire exactly where planted,
through each of them. (SAELens coders through the same backends: saexplain-saelens's tests.)"""

import numpy as np
import pytest
from saexplain_torch.testing import (
    check_acts_match_hidden_states,
    check_one_pass_equals_one_at_a_time,
    coders_at_every_site,
    gpt2_tokenizer,
    make_coder,
    plant,
    tiny_gpt2,
    tiny_llama,
)

from saexplain.protocols import Add, Clamp, Replace
from saexplain.testing import check_backends_agree, check_planted

tl_backend = pytest.importorskip("saexplain_transformerlens.backend")
nn_backend = pytest.importorskip("saexplain_nnsight.backend")
convert = pytest.importorskip("saexplain_transformerlens.convert")

FAMILIES = {"gpt2": tiny_gpt2, "llama": tiny_llama}


def build_backends(hf, tok):
    from nnsight import LanguageModel

    return [
        tl_backend.TransformerLensBackend(convert.hooked_transformer_from_hf(hf, tok)),
        nn_backend.NNsightBackend(hf, tokenizer=tok),
        nn_backend.NNsightBackend(LanguageModel(hf, tokenizer=tok)),
    ]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    tok = gpt2_tokenizer()
    hf = FAMILIES[request.param]()
    return request.param, hf, build_backends(hf, tok)


def coders_for(backend):
    return coders_at_every_site(backend.d_model, backend.d_mlp)


def test_backends_agree_on_acts_logits_and_generations(family):
    _, _, backends = family
    backends = [backends[0], backends[1]]  # HookedTransformer vs plain transformers (nnsight)
    coders = coders_for(backends[0])
    rng = np.random.default_rng(0)
    d = backends[0].d_model
    edits = [Clamp(coder=c, latent=int(rng.integers(c.d_sae)), value=25.0) for c in coders]
    edits += [
        Clamp(coder=coders[0], latent=5, value=30.0, mode="add", positions=(1, 2)),
        Add(
            direction=rng.normal(size=d), scale=8.0, hook="blocks.1.hook_resid_mid", positions=(2,)
        ),
        Add(direction=rng.normal(size=d), scale=8.0, hook="blocks.0.hook_resid_post"),
        Replace(vector=rng.normal(size=d) * 4, positions=(1,), layer=1),
        Replace(vector=rng.normal(size=d) * 4, positions=(0, 2), layer=0),
    ]
    worst = check_backends_agree(backends, coders, edits=edits, atol=1e-4)
    assert set(worst) >= {
        "latent_acts",
        "logits[none]",
        "logits[Clamp]",
        "logits[Add]",
        "logits[Replace]",
    }, worst


def test_default_edits_agree(family):
    _, _, backends = family
    coders = coders_for(backends[0])[:1]
    check_backends_agree(backends, coders, atol=1e-4)  # all three wrappings


def test_several_coders_in_one_pass_equal_one_at_a_time(family):
    _, _, backends = family
    for backend in (backends[0], backends[1]):
        check_one_pass_equals_one_at_a_time(backend, coders_for(backends[0]))


def test_acts_match_a_direct_encode_of_the_hf_hidden_state(family):
    _, hf, backends = family
    for backend in backends:
        check_acts_match_hidden_states(backend, hf)


def test_planted_features_fire_exactly_where_planted(family):
    name, _, _ = family
    tok = gpt2_tokenizer()
    hf = FAMILIES[name](seed=1)
    planted = {
        3: tok.encode(" cat")[0],
        7: tok.encode(" dog")[0],
        11: tok.encode(" apple")[0],
    }
    d_model = hf.config.hidden_size if name == "llama" else hf.config.n_embd
    coder = make_coder(d_model, 32, "blocks.0.hook_resid_pre")
    plant(coder, hf.get_input_embeddings().weight.data, planted)
    texts = ["The cat and the dog ate an apple.", "No pets here", "dog cat dog, apple cat"]
    for backend in build_backends(hf, tok):
        check_planted(backend, coder, planted, texts)
