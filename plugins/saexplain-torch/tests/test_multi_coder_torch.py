"""Several coders collected in ONE forward pass per batch on the real stacks (issue 17): a tiny
three-layer GPT-2 with TinySAE coders at two layers, through TransformerLens and nnsight. Counted
with torch hooks: one embedding call per batch for both coders (as many as for one coder alone),
the block after the deepest hook never runs, and each coder's stored activations equal those of
a collection of that coder alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from saexplain_torch.testing import gpt2_tokenizer, make_coder, tiny_gpt2

from saexplain.store import ActivationStore, collect
from saexplain.testing import synthetic_corpus

pytest.importorskip("saexplain_transformerlens")
pytest.importorskip("saexplain_nnsight")

D = 64
TEXTS = synthetic_corpus(40, seed=3, min_words=10, max_words=30)


def stack(name: str) -> tuple[Any, torch.nn.Module, torch.nn.Module]:
    """The backend, its embedding module (called once per forward pass) and its last block."""
    hf, tok = tiny_gpt2(n_layer=3, d_model=D), gpt2_tokenizer()
    if name == "transformerlens":
        from saexplain_transformerlens.backend import TransformerLensBackend
        from saexplain_transformerlens.convert import hooked_transformer_from_hf

        model = hooked_transformer_from_hf(hf, tok)
        return TransformerLensBackend(model), model.embed, model.blocks[2]
    from saexplain_nnsight.backend import NNsightBackend

    return NNsightBackend(hf, tokenizer=tok), hf.transformer.wte, hf.transformer.h[2]


def counted(module: torch.nn.Module, calls: list[int]) -> Any:
    return module.register_forward_hook(lambda *_: calls.append(1))


@pytest.mark.parametrize("backend_name", ["transformerlens", "nnsight"])
def test_two_coders_collect_in_one_pass_stopping_at_the_deepest_hook(backend_name, tmp_path):
    backend, embed, last_block = stack(backend_name)
    coders = [
        make_coder(D, 48, "blocks.0.hook_resid_pre", seed=1),
        make_coder(D, 48, "blocks.1.hook_resid_post", seed=2),
    ]

    def run(name: str, chosen: list[Any]) -> tuple[ActivationStore, int, int]:
        passes: list[int] = []
        beyond: list[int] = []
        hooks = [counted(embed, passes), counted(last_block, beyond)]
        try:
            store = collect(
                backend,
                chosen,
                TEXTS,
                tmp_path / name,
                context_length=16,
                n_tokens=16 * 24,
                batch_size=8,
                progress=False,
            )
        finally:
            for h in hooks:
                h.remove()
        return store, len(passes), len(beyond)

    both, both_passes, both_beyond = run("both", coders)
    assert both_passes == 3 and both_beyond == 0  # 24 contexts / 8 per batch; block 2 never
    for i, coder in enumerate(coders):
        alone, passes, beyond = run(f"alone{i}", [coder])
        assert passes == both_passes and beyond == 0
        assert np.array_equal(both.counts(coder.id), alone.counts(coder.id))
        assert both.nnz(coder.id) > 0
        for latent in range(coder.d_sae):
            x, y = both.activations(latent, coder.id), alone.activations(latent, coder.id)
            assert np.array_equal(x.rows, y.rows) and np.array_equal(x.pos, y.pos)
            np.testing.assert_allclose(x.values, y.values, rtol=1e-3, atol=1e-4)
