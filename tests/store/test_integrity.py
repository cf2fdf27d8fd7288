"""Store integrity: every damaged file fails with one line naming it and how to rebuild."""

import json
import warnings

import numpy as np
import pytest

from saexplain.errors import SaexplainError, StoreCorruptError
from saexplain.store import ActivationStore, Manifest, collect
from saexplain.store import _io as store_io
from saexplain.testing import FakeBackend, PlantedValuesCoder, synthetic_corpus

VOCAB = ["cat", "dog", "sat", "on", "the", "mat", "ran", "far"]
KW = dict(context_length=16, shard_contexts=4, batch_size=2, progress=False)


def build(path):
    """A small store of a few shards (the same bytes on every call)."""
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=512)
    coder = PlantedValuesCoder(backend, {1: {" cat": 1.0}, 2: {" dog": 2.5, " mat": 0.5}}, d_sae=8)
    texts = synthetic_corpus(60, seed=0, vocab=VOCAB, min_words=3, max_words=30)
    return collect(backend, coder, texts, path, **KW)


def same_data(a, b):
    """Two stores hold the same shards (statistics files carry zip timestamps: not compared)."""
    x, y = a.manifest, b.manifest
    assert (x.shards, x.complete, x.stats_complete) == (y.shards, y.complete, y.stats_complete)
    for latent in range(8):
        p, q = a.activations(latent), b.activations(latent)
        assert np.array_equal(p.rows, q.rows) and np.array_equal(p.values, q.values)


def read_everything(path):
    store = ActivationStore(path)
    for latent in range(8):
        store.activations(latent)
    store.tokens(np.arange(store.n_contexts))
    store.decoder()
    return store.stats()


def assert_one_line(error, *names):
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, SaexplainError)
    for name in names:
        assert name in message, message
    assert "rerun" in message, message


def flip_byte(file, at=-3):
    data = bytearray(file.read_bytes())
    data[at] ^= 0xFF
    file.write_bytes(bytes(data))


@pytest.fixture
def store(tmp_path):
    return build(tmp_path / "s")


@pytest.mark.parametrize("kind", ["values", "offsets", "index", "tokens"])
def test_a_flipped_byte_in_a_shard_file_names_the_file(store, kind):
    key = store.coder().key
    name = "tokens.npy" if kind == "tokens" else f"{key}.{kind}.npy"
    file = store.path / "shards" / "00001" / name
    flip_byte(file)
    with pytest.raises(StoreCorruptError) as error:
        read_everything(store.path)
    assert_one_line(error, str(file), str(file.parent))


def test_a_flipped_byte_in_the_decoder_or_the_stats_names_the_file(store):
    decoder = store.path / "coders" / store.coder().key / "W_dec.npy"
    flip_byte(decoder)
    with pytest.raises(StoreCorruptError) as error:
        ActivationStore(store.path).decoder()
    assert_one_line(error, str(decoder))

    stats = store.path / "stats" / f"{store.coder().key}.npz"
    flip_byte(stats, at=len(stats.read_bytes()) // 2)
    with pytest.raises(StoreCorruptError) as error:
        ActivationStore(store.path).stats()
    assert_one_line(error, str(stats))


def test_verification_hashes_each_file_once_per_process(store, monkeypatch):
    calls = []
    real = store_io.file_checksum
    monkeypatch.setattr(store_io, "file_checksum", lambda path: calls.append(path) or real(path))
    read_everything(store.path)
    read_everything(store.path)  # a second store object on the same files: nothing re-hashed
    assert calls and len(calls) == len(set(calls))


def test_a_truncated_manifest_is_one_line(store):
    manifest = store.path / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    with pytest.raises(StoreCorruptError) as error:
        ActivationStore(store.path)
    assert_one_line(error, str(manifest), str(store.path))
    with pytest.raises(StoreCorruptError):  # collect says the same instead of a traceback
        build(store.path)


def test_a_deleted_shard_is_one_line_and_a_rerun_rebuilds_it(store, tmp_path):
    reference = build(tmp_path / "ref")
    shard = store.path / "shards" / "00002"
    for file in shard.iterdir():
        file.unlink()
    shard.rmdir()
    with pytest.raises(StoreCorruptError) as error:
        read_everything(store.path)
    assert_one_line(error, str(shard))

    with pytest.warns(UserWarning, match="00002"):
        rebuilt = build(store.path)
    same_data(rebuilt, reference)


def test_a_corrupt_shard_deleted_as_the_error_says_is_rebuilt(store, tmp_path):
    reference = build(tmp_path / "ref")
    file = store.path / "shards" / "00001" / f"{store.coder().key}.values.npy"
    flip_byte(file)
    file.unlink()  # what the message asks for (the file or its shard directory)
    with pytest.warns(UserWarning, match="00001"):
        rebuilt = build(store.path)
    same_data(rebuilt, reference)
    read_everything(store.path)


def test_truncated_or_deleted_stats(store):
    stats = store.path / "stats" / f"{store.coder().key}.npz"
    expected = store.stats()
    stats.write_bytes(stats.read_bytes()[:50])
    with pytest.raises(StoreCorruptError) as error:
        ActivationStore(store.path).stats()
    assert_one_line(error, str(stats))

    stats.unlink()  # the fix the message gives: the next collect recomputes and saves them
    rebuilt = build(store.path)
    assert stats.exists()
    assert np.array_equal(rebuilt.stats().quantiles, expected.quantiles)


def test_a_truncated_shard_file_is_one_line(store):
    file = store.path / "shards" / "00000" / f"{store.coder().key}.index.npy"
    file.write_bytes(file.read_bytes()[:-4])
    with pytest.raises(StoreCorruptError) as error:
        read_everything(store.path)
    assert_one_line(error, str(file))


def strip_checksums(path):
    """Make the store look like one written before checksums existed."""
    data = json.loads((path / "manifest.json").read_text())
    data.pop("checksums", None)
    for shard in data["shards"]:
        shard.pop("checksums", None)
    (path / "manifest.json").write_text(json.dumps(data))


def test_stores_without_checksums_are_read_with_one_warning(store):
    expected = [store.activations(latent).values for latent in range(8)]
    strip_checksums(store.path)
    with pytest.warns(UserWarning, match="no checksums") as caught:
        old = ActivationStore(store.path)
        got = [old.activations(latent).values for latent in range(8)]
        old.stats()
    assert len(caught) == 1
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))

    # damage is still one line in an old store, when it shows (a missing or truncated file)
    stats = store.path / "stats" / f"{store.coder().key}.npz"
    stats.write_bytes(stats.read_bytes()[:50])
    shard = store.path / "shards" / "00000" / "tokens.npy"
    shard.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(StoreCorruptError) as error:
            ActivationStore(store.path).stats()
        assert_one_line(error, str(stats))
        with pytest.raises(StoreCorruptError) as error:
            ActivationStore(store.path).tokens([0])
        assert_one_line(error, str(shard))


def test_manifest_lists_a_checksum_for_every_file(store):
    manifest = Manifest.load(store.path)
    for shard in manifest.shards:
        folder = store.path / "shards" / f"{shard.index:05d}"
        assert set(shard.checksums) == {p.name for p in folder.iterdir()}
    others = {
        str(p.relative_to(store.path))
        for p in store.path.rglob("*")
        if p.is_file() and "shards" not in p.parts and p.name != "manifest.json"
    }
    assert set(manifest.checksums) == others
