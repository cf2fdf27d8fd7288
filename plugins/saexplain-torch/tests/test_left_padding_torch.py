"""Prompts of different lengths generate in one left-padded, KV-cached batch, with the numbers of
one prompt at a time: on tiny GPT-2 and Llama models through TransformerLens and nnsight (and the
TransformerBridge), greedy
continuations are equal token for token, with and without a Clamp (at every position, so it also
edits the pad columns, and at given positions on some rows only); the last prompt token's logits
are equal; the attention mask is what makes them equal (a batch without it differs); a Replace
at given positions, which cannot follow pads of different widths, falls back to one batch per
length; `generate_pairs` is one call; and the calibration's batched KL is the mean of the
one-prompt KLs."""

from __future__ import annotations

import asyncio
import copy
import dataclasses

import numpy as np
import pytest
import torch
from saexplain_torch import generation
from saexplain_torch.backend import TorchBackend
from saexplain_torch.generation import left_pad, shift_edits
from saexplain_torch.testing import gpt2_tokenizer, make_coder, tiny_gpt2, tiny_llama
from torch_stacks import BACKENDS

from saexplain.methods import MethodContext, Strength, generate_pairs, mean_kl
from saexplain.protocols import Clamp, Edit, Replace
from saexplain.testing import as_numpy

FAMILIES = {"gpt2": tiny_gpt2, "llama": tiny_llama}
# token lengths (with BOS) 2, 4, 6, 4, 6 and 7: four pad widths in one batch
PROMPTS = [
    "The",
    "I think that",
    "Here is a short story:",
    "She said that",
    "Let me tell you about",
    "The most important thing is",
]
HOOK = "blocks.1.hook_resid_pre"
TOKENS = 8


@pytest.fixture(scope="module", params=[(f, b) for f in sorted(FAMILIES) for b in sorted(BACKENDS)])
def backend(request):
    family, stack = request.param
    return BACKENDS[stack](FAMILIES[family](n_layer=3), gpt2_tokenizer())


def _coder(backend):
    return make_coder(backend.d_model, 64, HOOK, seed=1)


def _alone(edits: list[Edit], row: int) -> list[Edit]:
    """The edits that apply to batch row `row`, for that row run alone."""
    out: list[Edit] = []
    for edit in edits:
        if isinstance(edit, Replace):
            per_row = np.ndim(edit.vector) == 2
            out.append(dataclasses.replace(edit, vector=edit.vector[row]) if per_row else edit)
        elif edit.rows is None or row in edit.rows:
            out.append(dataclasses.replace(edit, rows=None))
    return out


def _one_at_a_time(backend, prompts, edits, **kwargs):
    return [
        backend.generate([p], _alone(edits, i), max_new_tokens=TOKENS, **kwargs)[0]
        for i, p in enumerate(prompts)
    ]


def _only_padded(monkeypatch) -> list[int]:
    """Fail on the per-length and recompute paths; count the padded batches run."""
    runs: list[int] = []
    padded = TorchBackend._generate_padded

    def counted(self, rows, *args):  # type: ignore[no-untyped-def]
        runs.append(len(rows))
        return padded(self, rows, *args)

    def refuse(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("prompts of different lengths left the padded batch")

    monkeypatch.setattr(TorchBackend, "_generate_padded", counted)
    monkeypatch.setattr(TorchBackend, "_generate_by_length", refuse)
    monkeypatch.setattr(TorchBackend, "_generate_recompute", refuse)
    return runs


def test_prompts_have_several_lengths(backend):
    lengths = [len(r) for r in backend.tokenize(PROMPTS).rows()]
    assert len(set(lengths)) == 4, lengths


@pytest.mark.parametrize("which", ["clean", "clamp", "clamp_rows_positions"])
def test_one_padded_batch_equals_one_prompt_at_a_time(backend, which, monkeypatch):
    coder = _coder(backend)
    n = len(PROMPTS)
    edits: list[Edit] = {
        "clean": [],
        # mild: strong enough to change every continuation, not to make them all one
        "clamp": [Clamp(coder=coder, latent=3, value=0.3)],
        # both arms in one batch (the prompts twice), the edit at the first two real tokens of
        # the second copy only
        "clamp_rows_positions": [
            Clamp(coder=coder, latent=3, value=5.0, positions=(0, 1), rows=tuple(range(n, 2 * n)))
        ],
    }[which]
    prompts = PROMPTS * 2 if which == "clamp_rows_positions" else PROMPTS
    want = _one_at_a_time(backend, prompts, edits)
    runs = _only_padded(monkeypatch)
    got = backend.generate(prompts, edits, max_new_tokens=TOKENS)
    assert runs == [len(prompts)]  # one batch for every prompt
    assert got == want
    assert all(got) and len(set(got)) > 1  # real, different continuations
    if edits:
        clean = _one_at_a_time(backend, prompts, [])
        assert got != clean  # the edit changed something, so its columns mattered


def test_the_last_prompt_tokens_logits_equal_one_prompt_at_a_time(backend):
    """Float-level check: a Clamp at every position edits the pad columns too, and the real
    tokens' logits do not move."""
    coder = _coder(backend)
    edits = [Clamp(coder=coder, latent=5, value=25.0)]
    rows = backend.tokenize(PROMPTS).rows()
    ids, padding = left_pad(rows, backend.pad_token_id, backend.device)
    width = ids.shape[1]
    shifted = shift_edits(edits, [width - len(r) for r in rows])
    logits, _, _ = backend._pass(
        ids, shifted, positions=[width - 1], keep_cache=True, padding=padding
    )
    for i, prompt in enumerate(PROMPTS):
        alone = as_numpy(backend.logits(backend.tokenize([prompt]), edits))[0, -1]
        assert np.allclose(as_numpy(logits[i, -1]), alone, atol=1e-4), prompt


def test_without_the_mask_the_batch_differs(backend, monkeypatch):
    """The control: the same left-padded batch attending to its pads changes continuations, so
    the equality above is the mask's doing."""
    want = _one_at_a_time(backend, PROMPTS, [])
    monkeypatch.setattr(
        generation.LeftPadding, "mask", lambda self, hi: torch.ones_like(self.positions(0, hi))
    )
    assert backend.generate(PROMPTS, max_new_tokens=TOKENS) != want


def test_replace_at_positions_falls_back_to_one_batch_per_length(backend, monkeypatch):
    rng = np.random.default_rng(2)
    edits: list[Edit] = [
        Replace(vector=rng.normal(size=backend.d_model) * 5, positions=(1,), layer=1)
    ]
    assert shift_edits(edits, [0, 2]) is None  # pads of two widths: it cannot be moved
    want = _one_at_a_time(backend, PROMPTS, edits)
    lengths: list[int] = []
    cached = TorchBackend._generate_cached

    def counted(self, rows, *args):  # type: ignore[no-untyped-def]
        lengths.append(len(rows[0]))
        return cached(self, rows, *args)

    monkeypatch.setattr(TorchBackend, "_generate_cached", counted)
    assert backend.generate(PROMPTS, edits, max_new_tokens=TOKENS) == want
    assert sorted(lengths) == [2, 4, 6, 7]  # one cached batch per length


def test_a_stack_without_left_padding_runs_one_batch_per_length(backend, monkeypatch):
    """The fallback for a stack that cannot take a mask and positions: rows of a Clamp and a
    per-row Replace vector follow their prompts into the batch of their length."""
    coder = _coder(backend)
    n, rng = len(PROMPTS), np.random.default_rng(4)
    edits: list[Edit] = [
        Clamp(coder=coder, latent=3, value=0.3, rows=tuple(range(n, 2 * n))),
        Replace(vector=rng.normal(size=(2 * n, backend.d_model)) * 5, positions=(1,), layer=1),
    ]
    want = _one_at_a_time(backend, PROMPTS * 2, edits)
    monkeypatch.setattr(backend, "left_padding", False)
    monkeypatch.setattr(TorchBackend, "_generate_padded", None)  # never reached
    assert backend.generate(PROMPTS * 2, edits, max_new_tokens=TOKENS) == want


def test_generate_pairs_is_one_padded_call(backend, monkeypatch):
    coder = _coder(backend)
    strength = Strength(
        latent=3, target_kl=1.0, value=40.0, kl=1.0, reached=True, steps=0, kind="clamp"
    )
    clean = _one_at_a_time(backend, PROMPTS, [])
    edited = _one_at_a_time(backend, PROMPTS, strength.edits(coder))
    runs = _only_padded(monkeypatch)
    ctx = MethodContext(backend=backend, coder=coder)
    pairs = asyncio.run(
        generate_pairs(ctx, strength, PROMPTS, max_new_tokens=TOKENS, temperature=0.0, seed=0)
    )
    assert runs == [2 * len(PROMPTS)]
    assert pairs == list(zip(clean, edited, strict=True))
    assert any(c != e for c, e in pairs)


def test_calibration_kl_of_the_batch_is_the_mean_of_one_prompt_kls(backend):
    coder = _coder(backend)
    edits = Strength(
        latent=3, target_kl=1.0, value=20.0, kl=1.0, reached=True, steps=0, kind="clamp"
    ).edits(coder)
    batched = mean_kl(backend, coder, PROMPTS, edits)
    alone = [mean_kl(backend, coder, [p], edits) for p in PROMPTS]
    assert batched > 0.01
    assert batched == pytest.approx(float(np.mean(alone)), rel=1e-4)


def test_shift_edits_moves_given_positions_per_pad_width():
    coder = make_coder(8, 16, HOOK, seed=0)
    every = Clamp(coder=coder, latent=1, value=2.0)
    some = Clamp(coder=coder, latent=1, value=2.0, positions=(0, 2), rows=(0, 1, 3))
    moved = shift_edits([every, some], [3, 0, 3, 1])
    assert moved is not None and moved[0] is every  # every position: pads included, unchanged
    assert {(e.positions, e.rows) for e in moved[1:]} == {
        ((3, 5), (0,)),  # row 2 has pads of width 3 too, but the edit is not on it
        ((0, 2), (1,)),
        ((1, 3), (3,)),
    }
    replace = Replace(vector=np.zeros(8), positions=(1,), layer=0)
    assert shift_edits([replace], [2, 2]) == [dataclasses.replace(replace, positions=(3,))]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_transformer_bridge_pads_too(family, monkeypatch):
    bridge_mod = pytest.importorskip("saexplain_transformerlens.bridge")
    from transformer_lens.model_bridge import TransformerBridge

    hf, tok = FAMILIES[family](n_layer=3), gpt2_tokenizer()
    # booting wraps the model's blocks in place: the bridge gets its own copy
    bridge = TransformerBridge.boot_transformers(
        f"tiny-{family}", hf_model=copy.deepcopy(hf), tokenizer=tok, device="cpu"
    )
    backend = bridge_mod.TransformerBridgeBackend(bridge)
    for edits in ([], [Clamp(coder=_coder(backend), latent=3, value=0.3)]):
        want = _one_at_a_time(backend, PROMPTS, edits)
        with monkeypatch.context() as m:
            runs = _only_padded(m)
            assert backend.generate(PROMPTS, edits, max_new_tokens=TOKENS) == want
        assert runs == [len(PROMPTS)] and len(set(want)) > 1
