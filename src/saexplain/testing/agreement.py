"""Cross-backend agreement: every backend must give the same numbers for the same request.

Arrays are converted by duck typing (`.detach().cpu().float()` where present), so this module
never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from saexplain.protocols import (
    Add,
    Backend,
    Clamp,
    Edit,
    Replace,
    SparseCoder,
)


def as_numpy(x: Any) -> npt.NDArray[np.float64]:
    """A float64 numpy copy of a numpy array or a tensor-like (torch) value."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().float()
    return np.asarray(x, dtype=np.float64)


def default_edits(backend: Backend, coder: SparseCoder, *, seed: int = 0) -> list[Edit]:
    """One edit of each kind, strong enough to change the logits: a Clamp of `coder`'s latent 0
    to a large value, an Add of a random direction after block 0, a Replace at position 1 of the
    last layer's input."""
    rng = np.random.default_rng(seed)
    d = backend.d_model
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    vector = rng.normal(size=d) * 3.0
    return [
        Clamp(coder=coder, latent=0, value=20.0),
        Add(direction=direction, scale=20.0, hook="blocks.0.hook_resid_post"),
        Replace(vector=vector, positions=(1,), layer=backend.n_layers - 1),
    ]


def check_backends_agree(
    backends: Sequence[Backend],
    coders: Sequence[SparseCoder],
    texts: Sequence[str] = ("The cat sat on the mat.", "Dogs bark at night", "A"),
    *,
    edits: Sequence[Edit] | None = None,
    prompts: Sequence[str] = ("Once upon a time", "The meaning of life is"),
    max_new_tokens: int = 6,
    atol: float = 1e-4,
) -> dict[str, float]:
    """Assert that `backends` (wrapping the same weights) agree on tokens, latent activations of
    every coder, logits with no edit and under each edit, greedy generations with no edit and under
    the first edit of each kind, and that no edit survives its call. Returns the largest
    differences seen, by check."""
    assert len(backends) >= 2, "need at least two backends to compare"
    ref, others = backends[0], list(backends[1:])
    worst: dict[str, float] = {}

    def record(key: str, diff: float) -> None:
        worst[key] = max(worst.get(key, 0.0), diff)

    tokens = ref.tokenize(list(texts))
    for other in others:
        t = other.tokenize(list(texts))
        assert np.array_equal(t.ids, tokens.ids) and np.array_equal(t.mask, tokens.mask), (
            f"{other.name} tokenizes differently from {ref.name}"
        )
        assert other.bos_token_id == ref.bos_token_id, "BOS ids differ"
    batch, seq = tokens.shape
    mask = tokens.mask

    ref_acts = ref.latent_acts(tokens, coders)
    for coder in coders:
        a = ref_acts[coder.id].to_dense((batch, seq, coder.d_sae))
        assert len(ref_acts[coder.id]) > 0, f"{coder.id} never fires: the comparison is vacuous"
        for other in others:
            b = other.latent_acts(tokens, coders)[coder.id].to_dense((batch, seq, coder.d_sae))
            diff = float(np.abs(a - b).max())
            record("latent_acts", diff)
            assert diff <= atol * max(1.0, float(np.abs(a).max())), (
                f"{coder.id}: latent acts differ between {ref.name} and {other.name} by {diff}"
            )

    base = as_numpy(ref.logits(tokens))
    plan = list(edits) if edits is not None else default_edits(ref, coders[0])
    generated: set[str] = set()
    for edit in [None, *plan]:
        kind = "none" if edit is None else type(edit).__name__
        applied = [] if edit is None else [edit]
        want = as_numpy(ref.logits(tokens, applied))
        if edit is not None:
            assert not np.allclose(want[mask], base[mask], atol=atol), (
                f"{edit!r} leaves the logits as they are: the comparison is vacuous"
            )
        for other in others:
            got_logits = as_numpy(other.logits(tokens, applied))
            diff = float(np.abs(want - got_logits)[mask].max())
            record(f"logits[{kind}]", diff)
            assert diff <= atol * max(1.0, float(np.abs(want[mask]).max())), (
                f"logits under {kind} differ between {ref.name} and {other.name} by {diff}"
            )
        if edit is not None and kind in generated:
            continue  # greedy generations: once per edit kind (each step is a full forward)
        generated.add(kind)
        gen = ref.generate(list(prompts), applied, max_new_tokens=max_new_tokens)
        for other in others:
            got = other.generate(list(prompts), applied, max_new_tokens=max_new_tokens)
            assert got == gen, (
                f"greedy generations under {kind}: {ref.name} {gen} != {other.name} {got}"
            )

    # self-explanation's primitives: per-row Replace vectors, and `probe`'s residuals
    rng = np.random.default_rng(11)
    vectors = rng.normal(size=(batch, ref.d_model)) * 4.0
    row_edit = Replace(vector=vectors, positions=(1,), layer=min(1, ref.n_layers - 1))
    layers = sorted({0, ref.n_layers - 1})
    want_logits, want_resid = ref.probe(tokens, [row_edit], layers=layers)
    want_l = as_numpy(want_logits)
    for other in others:
        got_logits, got_resid = other.probe(tokens, [row_edit], layers=layers)
        diff = float(np.abs(as_numpy(got_logits) - want_l)[mask].max())
        record("probe[logits]", diff)
        assert diff <= atol * max(1.0, float(np.abs(want_l[mask]).max())), (
            f"probe logits differ between {ref.name} and {other.name} by {diff}"
        )
        for layer in layers:
            w, g = as_numpy(want_resid[layer]), as_numpy(got_resid[layer])
            diff = float(np.abs(w - g)[mask].max())
            record("probe[resid]", diff)
            assert diff <= atol * max(1.0, float(np.abs(w[mask]).max())), (
                f"probe residual at layer {layer} differs between {ref.name} and {other.name}"
            )
    gen_vectors = rng.normal(size=(len(prompts), ref.d_model)) * 4.0
    gen_edit = Replace(vector=gen_vectors, positions=(1,), layer=row_edit.layer)
    gen = ref.generate(list(prompts), [gen_edit], max_new_tokens=max_new_tokens)
    for other in others:
        got = other.generate(list(prompts), [gen_edit], max_new_tokens=max_new_tokens)
        assert got == gen, f"per-row Replace generations: {ref.name} {gen} != {other.name} {got}"

    for backend in backends:
        after = as_numpy(backend.logits(tokens))
        assert np.allclose(after[mask], base[mask], atol=atol), f"an edit leaked in {backend.name}"
    return worst


def check_planted(
    backend: Backend, coder: SparseCoder, planted: Mapping[int, int], texts: Sequence[str]
) -> None:
    """Assert latent `i` of `coder` fires exactly where token id `planted[i]` occurs in `texts`
    (BOS excluded when the coder asks), and no other latent fires."""
    tokens = backend.tokenize(list(texts))
    acts = backend.latent_acts(tokens, [coder])[coder.id]
    fired = {
        (int(r), int(p), int(lat))
        for r, p, lat in zip(acts.row, acts.pos, acts.latent, strict=True)
    }
    expected = set()
    for r, row in enumerate(tokens.rows()):
        for p, tok in enumerate(row):
            if p == 0 and coder.exclude_bos and tok == backend.bos_token_id:
                continue
            expected |= {(r, p, lat) for lat, t in planted.items() if t == tok}
    assert expected, "no planted token occurs in the texts: the check is vacuous"
    assert fired == expected, (
        f"{backend.name}: fired {sorted(fired - expected)} extra, missed {sorted(expected - fired)}"
    )
