"""A record that holds fewer examples than the samplers asked for says so (`shortfall`, missing
examples per split), and the summary counts such records."""

import pytest

from saexplain.models import LatentRecord
from saexplain.report import RunResults, summarize
from saexplain.sampling import RecordConfig, build_records
from saexplain.store import collect
from saexplain.testing import FakeBackend, PlantedValuesCoder, make_record, synthetic_corpus

VOCAB = ["cat", "sat", "on", "the", "mat", "ran", "far", "big", "red", "tree", "house", "a"]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=256)
    coder = PlantedValuesCoder(backend, {1: {" cat": 1.0}, 4: {" zebra": 1.5}}, d_sae=8)
    texts = synthetic_corpus(200, seed=0, vocab=VOCAB, min_words=10, max_words=40)
    texts[5] += " zebra"  # latent 4 fires once or twice: rare
    store = collect(
        backend,
        coder,
        texts,
        tmp_path_factory.mktemp("s") / "store",
        context_length=32,
        progress=False,
    )
    config = RecordConfig(
        window=8, explanation=["top:4"], scoring=["random:3"], negatives=["random:3"]
    )
    outcomes = build_records(store, backend, [1, 4], config)
    return {o.latent.index: o.record for o in outcomes}


def test_a_record_says_how_many_examples_it_lacks(records):
    full, short = records[1], records[4]
    assert full.shortfall == {}
    assert len(short.explanation_examples) < 4 and len(short.scoring_examples) < 3
    assert short.shortfall == {
        "explanation": 4 - len(short.explanation_examples),
        "scoring": 3 - len(short.scoring_examples),
    }
    # written and read back like any record; a record written before the field reads as full
    assert LatentRecord.model_validate_json(short.model_dump_json()) == short
    legacy = short.model_dump(mode="json")
    del legacy["shortfall"]
    assert LatentRecord.model_validate(legacy).shortfall == {}


def test_the_summary_counts_records_that_fell_short(records):
    summary = summarize(RunResults(records=list(records.values())), n_resamples=10)
    short = records[4].shortfall
    assert summary["records"] == {
        "n": 2,
        "short": {split: 1 for split in short},
        "missing": dict(short),
    }


def test_records_made_by_hand_have_no_shortfall():
    backend = FakeBackend(seed=0)
    from saexplain.testing import FakeCoder

    coder = FakeCoder.planted(backend, {3: " cat"}, d_sae=8)
    assert make_record(backend, coder, 3, ["the cat sat"]).shortfall == {}
