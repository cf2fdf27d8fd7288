"""SAELens coders of every architecture through the torch backends, on tiny random GPT-2 and
Llama models: TransformerLens (HookedTransformer and SAELens's HookedSAETransformer) and nnsight
must agree on latent activations and on logits under a Clamp of each coder, and a planted JumpReLU
SAE must fire exactly where planted. Skipped unless both backend plugins are installed."""

import numpy as np
import pytest
from saexplain_saelens import SAELensCoder
from saexplain_saelens.testing import coders_at_every_site, make_sae

from saexplain.protocols import Clamp
from saexplain.testing import check_backends_agree, check_planted

tl_backend = pytest.importorskip("saexplain_transformerlens.backend")
nn_backend = pytest.importorskip("saexplain_nnsight.backend")
convert = pytest.importorskip("saexplain_transformerlens.convert")
torch_testing = pytest.importorskip("saexplain_torch.testing")

FAMILIES = {"gpt2": torch_testing.tiny_gpt2, "llama": torch_testing.tiny_llama}


def build_backends(hf, tok):
    from sae_lens import HookedSAETransformer

    return [
        tl_backend.TransformerLensBackend(convert.hooked_transformer_from_hf(hf, tok)),
        tl_backend.TransformerLensBackend(
            convert.hooked_transformer_from_hf(hf, tok, cls=HookedSAETransformer)
        ),
        nn_backend.NNsightBackend(hf, tokenizer=tok),
    ]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    tok = torch_testing.gpt2_tokenizer()
    hf = FAMILIES[request.param]()
    return request.param, hf, build_backends(hf, tok)


def test_backends_agree_on_every_saelens_architecture(family):
    _, _, backends = family
    coders = coders_at_every_site(backends[0].d_model)
    rng = np.random.default_rng(0)
    edits = [Clamp(coder=c, latent=int(rng.integers(c.d_sae)), value=25.0) for c in coders]
    worst = check_backends_agree(backends, coders, edits=edits, atol=1e-4)
    assert set(worst) >= {"latent_acts", "logits[none]", "logits[Clamp]"}, worst


def test_acts_match_a_direct_encode_of_the_hf_hidden_state(family):
    _, hf, backends = family
    coder = SAELensCoder(make_sae("standard", backends[0].d_model, 128, "blocks.1.hook_resid_pre"))
    for backend in backends:
        torch_testing.check_acts_match_hidden_states(backend, hf, coder)


def test_planted_jumprelu_features_fire_exactly_where_planted(family):
    name, _, _ = family
    tok = torch_testing.gpt2_tokenizer()
    hf = FAMILIES[name](seed=1)
    planted = {3: tok.encode(" cat")[0], 7: tok.encode(" dog")[0], 11: tok.encode(" apple")[0]}
    d_model = hf.config.hidden_size if name == "llama" else hf.config.n_embd
    sae = make_sae("jumprelu", d_model, 32, "blocks.0.hook_resid_pre")
    torch_testing.plant(sae, hf.get_input_embeddings().weight.data, planted)
    coder = SAELensCoder(sae)
    texts = ["The cat and the dog ate an apple.", "No pets here", "dog cat dog, apple cat"]
    for backend in build_backends(hf, tok):
        check_planted(backend, coder, planted, texts)
