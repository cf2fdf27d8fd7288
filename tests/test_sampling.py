"""Records from a store: planted windows and values, samplers, held-out split, negatives."""

import itertools

import numpy as np
import pytest

from saexplain.errors import LatentIndexError
from saexplain.models import ExampleKind, LatentRecord, LatentSelection
from saexplain.sampling import (
    RecordBuilder,
    RecordConfig,
    SamplerSpec,
    build_records,
    select_latents,
)
from saexplain.store import collect
from saexplain.testing import FakeBackend, PlantedValuesCoder, synthetic_corpus

LEVELS = {f" v{i}": round(0.1 * i, 1) for i in range(1, 11)}  # latent 2: ten strengths
TABLE = {
    1: {" cat": 1.0},
    2: LEVELS,
    3: {" dog": 2.0},
    4: {" zebra": 1.5},  # rare
    6: {" bird": 1.0},  # decoder neighbour of latent 3
}
VOCAB = [
    "cat",
    "dog",
    "bird",
    "sat",
    "on",
    "the",
    "mat",
    "ran",
    "far",
    "big",
    "red",
    "old",
    "new",
    "tree",
    "house",
    "a",
    "in",
    "of",
    "to",
    "is",
    *[f"v{i}" for i in range(1, 11)],
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=512)
    coder = PlantedValuesCoder(backend, TABLE, d_sae=12)
    coder.W_dec[6] = coder.W_dec[3] + 0.05 * coder.W_dec[6]  # 6 is 3's nearest neighbour
    coder.W_dec[6] /= np.linalg.norm(coder.W_dec[6])
    texts = synthetic_corpus(700, seed=0, vocab=VOCAB, min_words=10, max_words=80)
    texts[5] += " zebra"
    texts[300] += " zebra zebra"
    store = collect(
        backend,
        coder,
        texts,
        tmp_path_factory.mktemp("s") / "store",
        context_length=64,
        shard_contexts=40,
        batch_size=8,
        progress=False,
        seed=11,
    )
    return backend, coder, store


def value_of(backend, latent, token_id):
    return TABLE.get(latent, {}).get(backend.str_tokens([token_id])[0], 0.0)


def all_examples(record: LatentRecord):
    return [*record.explanation_examples, *record.scoring_examples]


def test_records_hold_exactly_the_planted_tokens_and_values(world):
    backend, _coder, store = world
    builder = RecordBuilder(store, backend, RecordConfig(window=16))
    for latent in (1, 2, 3):
        outcome = builder.build(latent)
        record = outcome.record
        assert outcome.status == "ok" and record is not None
        assert len(record.explanation_examples) == 40 and len(record.scoring_examples) == 50
        for ex in all_examples(record):
            assert ex.kind == ExampleKind.ACTIVATING and len(ex.tokens) == 16
            window = store.tokens([ex.row])[0][ex.start : ex.start + 16]
            assert list(ex.tokens) == window.tolist()  # the right window of the right context
            assert list(ex.str_tokens) == backend.str_tokens(window.tolist())
            want = [value_of(backend, latent, t) for t in ex.tokens]
            np.testing.assert_allclose(ex.activations, want, rtol=1e-3)
            assert ex.max_activation > 0
        # the top examples are the strongest windows of the store
        tops = [e for e in record.explanation_examples if e.sampler == "top"]
        assert min(e.max_activation for e in tops) == pytest.approx(
            max(TABLE[latent].values()), rel=1e-3
        )


def test_windows_never_overlap_and_splits_are_disjoint(world):
    backend, _, store = world
    builder = RecordBuilder(store, backend, RecordConfig(window=16))
    for latent in (1, 2, 3, 6):
        record = builder.build(latent).record
        explain = {(e.row, e.start) for e in record.explanation_examples}
        scoring = {(e.row, e.start) for e in record.scoring_examples}
        assert not explain & scoring
        spans = sorted((e.row, e.start) for e in all_examples(record))
        for (r1, s1), (r2, s2) in itertools.pairwise(spans):
            assert r1 != r2 or s2 - s1 >= 16, "overlapping windows share tokens"
        negs = [(e.row, e.start) for e in record.non_activating]
        assert len(set(negs)) == len(negs)


def test_quantile_samples_fall_in_their_deciles(world):
    backend, _, store = world
    cfg = RecordConfig(window=8, explanation=("quantile:20",), scoring=("quantile:50",))
    record = RecordBuilder(store, backend, cfg).build(2).record
    edges = record.sampling["bin_edges"]
    assert len(edges) == 11 and edges == sorted(edges)
    assert edges[0] < edges[-1]
    for ex in all_examples(record):
        q = ex.quantile
        assert 0 <= q < 10
        assert edges[q] - 1e-6 <= ex.max_activation <= edges[q + 1] + 1e-6
    per_bin = np.bincount([e.quantile for e in record.scoring_examples], minlength=10)
    assert per_bin.tolist() == [5] * 10  # 50 scoring examples, 5 per decile
    # strongest decile is really stronger than the weakest one
    lo = [e.max_activation for e in record.scoring_examples if e.quantile == 0]
    hi = [e.max_activation for e in record.scoring_examples if e.quantile == 9]
    assert max(lo) <= min(hi) and min(hi) > max(lo) - 1e-9


def test_samplers_and_their_record(world):
    backend, _, store = world
    cfg = RecordConfig(
        window=8,
        explanation=("top:10", "importance:10", "random:5"),
        scoring=("random:10",),
        negatives=(),
    )
    record = RecordBuilder(store, backend, cfg).build(2).record
    by = {}
    for ex in record.explanation_examples:
        by.setdefault(ex.sampler, []).append(ex.max_activation)
    assert {k: len(v) for k, v in by.items()} == {"top": 10, "importance": 10, "random": 5}
    assert all(v == pytest.approx(1.0, rel=1e-3) for v in by["top"])
    assert record.sampling["explanation"][0] == {"sampler": "top", "requested": 10, "got": 10}
    assert {e.sampler for e in record.scoring_examples} == {"random"}
    assert LatentRecord.model_validate_json(record.model_dump_json()) == record
    with pytest.raises(ValueError):
        SamplerSpec.parse("bogus:3")


def test_importance_sampling_prefers_strong_windows(world):
    backend, _, store = world
    means = {}
    for name in ("importance", "random"):
        cfg = RecordConfig(window=4, explanation=(f"{name}:200",), scoring=(), negatives=())
        record = RecordBuilder(store, backend, cfg).build(2).record
        means[name] = np.mean([e.max_activation for e in record.explanation_examples])
    assert means["importance"] > means["random"] + 0.05


def test_seeds_are_per_latent_and_reproducible(world):
    backend, _, store = world
    cfg = RecordConfig(window=16, negatives=("random:20",))
    a = RecordBuilder(store, backend, cfg).build(1).record
    again = RecordBuilder(store, backend, cfg).build(1).record
    assert a == again
    other = RecordBuilder(store, backend, cfg).build(3).record
    na = {(e.row, e.start) for e in a.non_activating}
    no = {(e.row, e.start) for e in other.non_activating}
    assert len(na & no) < 5, "two latents got the same random negatives"
    assert a.sampling["latent_seed"] != other.sampling["latent_seed"]
    reseeded = RecordBuilder(store, backend, cfg.model_copy(update={"seed": 99})).build(1).record
    assert reseeded.sampling["seed"] == 99 and reseeded != a
    assert a.sampling["seed"] == 11  # the store's seed by default


def test_random_negatives_are_silent_windows(world):
    backend, _, store = world
    record = RecordBuilder(store, backend, RecordConfig(window=16)).build(1).record
    negs = record.negatives(ExampleKind.RANDOM)
    assert len(negs) == 50
    cat = backend._ids[" cat"]
    for e in negs:
        assert cat not in e.tokens and set(e.activations) == {0.0} and e.sampler == "random"


def test_neighbour_negatives_come_from_similar_latents(world):
    backend, _, store = world
    cfg = RecordConfig(window=8, negatives=("neighbours:10",), n_neighbours=2)
    builder = RecordBuilder(store, backend, cfg)
    assert builder.neighbours(3, 1)[0][0] == 6
    record = builder.build(3).record
    negs = record.negatives(ExampleKind.NEIGHBOUR)
    assert len(negs) == 10
    dog, bird = backend._ids[" dog"], backend._ids[" bird"]
    from_six = [e for e in negs if e.sampler == "neighbour:6"]
    assert len(from_six) == 5
    for e in negs:
        assert dog not in e.tokens and set(e.activations) == {0.0}
    for e in from_six:
        assert bird in e.tokens  # latent 6 fires there, latent 3 does not
    assert record.sampling["negatives"][0]["neighbours"][0][0] == 6


def test_similar_text_negatives_are_closer_than_random_ones(world):
    backend, _, store = world
    cfg = RecordConfig(window=8, negatives=("random:30", "similar_text:30"))
    record = RecordBuilder(store, backend, cfg).build(1).record
    sim, rnd = record.negatives(ExampleKind.SIMILAR_TEXT), record.negatives(ExampleKind.RANDOM)
    assert len(sim) == 30 and len(rnd) == 30
    pos = {t for e in record.explanation_examples for t in e.tokens}

    def overlap(examples):
        return np.mean([len(set(e.tokens) & pos) / len(set(e.tokens)) for e in examples])

    assert overlap(sim) > overlap(rnd)
    assert all(set(e.activations) == {0.0} for e in sim)
    assert not {(e.row, e.start) for e in sim} & {(e.row, e.start) for e in rnd}

    seen = []

    def embed(texts):
        seen.append(len(texts))
        return np.asarray([[t.count(" v"), t.count(" cat"), 1.0] for t in texts])

    record = (
        RecordBuilder(
            store, backend, RecordConfig(window=8, negatives=("similar_text:5",)), embed=embed
        )
        .build(3)
        .record
    )
    assert seen and record.sampling["negatives"][0]["embedder"] == "embed"
    assert len(record.negatives(ExampleKind.SIMILAR_TEXT)) == 5


def test_dead_and_rare_latents_are_reported(world):
    backend, _, store = world
    outcomes = {
        o.latent.index: o
        for o in build_records(store, backend, [0, 4, 1], RecordConfig(window=8, negatives=()))
    }
    assert outcomes[0].status == "dead" and outcomes[0].record is None and outcomes[0].count == 0
    assert "never fired" in outcomes[0].message
    assert outcomes[4].status == "rare" and outcomes[4].count == 3
    assert outcomes[4].record is not None and len(all_examples(outcomes[4].record)) == 2
    assert outcomes[1].status == "ok"
    with pytest.raises(LatentIndexError):
        RecordBuilder(store, backend).build(12)


def test_latent_selection(world):
    backend, _, store = world
    everything = select_latents(store)
    assert everything.latents == tuple(range(12))
    assert set(everything.dead) == {0, 5, 7, 8, 9, 10, 11} and everything.rare == (4,)
    assert select_latents(store, LatentSelection(indices=(3, 1, 3))).latents == (1, 3)
    assert select_latents(store, LatentSelection(start=2, stop=5)).latents == (2, 3, 4)
    sample = select_latents(store, LatentSelection(sample=3), seed=1)
    assert len(sample.latents) == 3 and set(sample.latents) <= {1, 2, 3, 4, 6}
    assert sample == select_latents(store, LatentSelection(sample=3), seed=1)
    assert select_latents(store, LatentSelection(sample=100)).latents == (1, 2, 3, 4, 6)
    freq = store.stats().frequency
    band = select_latents(
        store, LatentSelection(min_frequency=float(freq[4]) * 1.01, max_frequency=float(freq[2]))
    )
    assert 4 not in band.latents and 2 in band.latents and band.outside_band > 0
    assert all(freq[i] <= freq[2] for i in band.latents)
    with pytest.raises(LatentIndexError):
        select_latents(store, LatentSelection(indices=(12,)))
    with pytest.raises(LatentIndexError):
        select_latents(store, LatentSelection(start=3, stop=13))
    by_selection = list(
        build_records(
            store, backend, LatentSelection(start=0, stop=3), RecordConfig(window=8, negatives=())
        )
    )
    assert [o.latent.index for o in by_selection] == [0, 1, 2]


def test_stats_quantiles_match_numpy(world):
    _, _, store = world
    for latent in (1, 2, 3, 4):
        values = store.activations(latent).values.astype(np.float64)
        st = store.latent_stats(latent)
        np.testing.assert_allclose(st.quantiles, np.quantile(values, np.linspace(0, 1, 11)))
        assert st.count == len(values) and st.frequency == len(values) / store.n_tokens
