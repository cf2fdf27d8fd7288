"""Collection into the store: planted features, agreement with the backend, sources, errors."""

import json

import numpy as np
import pytest

from saexplain.errors import ConfigError, EmptyDatasetError, LatentIndexError
from saexplain.protocols import TokenBatch
from saexplain.store import ActivationStore, Manifest, collect
from saexplain.testing import FakeBackend, FakeCoder, PlantedValuesCoder, synthetic_corpus

VOCAB = ["cat", "dog", "sat", "on", "the", "mat", "ran", "far", "big", "red", "old", "new"]


def corpus(n=200, seed=0):
    return synthetic_corpus(n, seed=seed, vocab=VOCAB, min_words=3, max_words=40)


@pytest.fixture
def backend():
    return FakeBackend(d_model=16, n_layers=3, vocab_size=512)


def test_planted_latents_fire_exactly_on_their_tokens(tmp_path, backend):
    coder = PlantedValuesCoder(backend, {1: {" cat": 1.0}, 2: {" dog": 2.5, " mat": 0.5}}, d_sae=8)
    store = collect(
        backend,
        coder,
        corpus(),
        tmp_path / "s",
        context_length=32,
        shard_contexts=5,
        batch_size=2,
        progress=False,
    )
    assert store.complete and len(store.manifest.shards) > 3
    cat, dog, mat = (backend._ids[w] for w in (" cat", " dog", " mat"))
    tokens = store.tokens(np.arange(store.n_contexts))
    for latent, table in {1: {cat: 1.0}, 2: {dog: 2.5, mat: 0.5}}.items():
        acts = store.activations(latent)
        expected = np.isin(tokens, list(table))
        rows, pos = np.nonzero(expected)  # row-major: sorted by (row, pos) like the store
        assert acts.rows.tolist() == rows.tolist() and acts.pos.tolist() == pos.tolist()
        want = np.asarray([table[t] for t in tokens[rows, pos]])
        np.testing.assert_allclose(acts.values, want, rtol=1e-3)
        st = store.latent_stats(latent)
        assert st.count == len(rows) and st.n_tokens == store.n_tokens
        assert st.max == pytest.approx(max(table.values()), rel=1e-3)
        assert st.mean == pytest.approx(want.mean(), rel=1e-3)
    assert store.latent_stats(3).dead and store.latent_stats(3).quantiles == ()


def test_store_matches_direct_encode_of_the_residual(tmp_path, backend):
    """Guard against storing reconstructions (`forward`) instead of latents (`encode`)."""
    coder = FakeCoder.random(16, 64, hook="blocks.2.hook_resid_pre", seed=3)
    store = collect(
        backend,
        coder,
        corpus(60),
        tmp_path / "s",
        context_length=16,
        shard_contexts=4,
        batch_size=3,
        value_dtype="float32",
        progress=False,
    )
    tokens = store.tokens(np.arange(store.n_contexts))
    z = coder.encode(backend.residual(TokenBatch(tokens, np.ones_like(tokens, bool)), coder.hook))
    z[tokens == backend.bos_token_id] = 0.0  # exclude_bos
    dense = np.zeros_like(z, dtype=np.float32)
    for latent in range(coder.d_sae):
        a = store.activations(latent)
        dense[a.rows, a.pos, latent] = a.values
    np.testing.assert_allclose(dense, z, rtol=1e-5, atol=1e-6)
    assert store.nnz() == int((z > 0).sum()) > 0


def test_several_coders_in_one_pass(tmp_path, backend):
    early = PlantedValuesCoder(backend, {0: {" cat": 1.0}}, d_sae=4, id="early")
    late = FakeCoder.random(16, 32, hook="blocks.1.hook_resid_post", seed=1)
    texts = corpus(40)
    ref = collect(
        backend,
        late,
        texts,
        tmp_path / "one",
        context_length=16,
        progress=False,
        batch_size=4,
        shard_contexts=8,
    )
    backend.layers_run = 0
    both = collect(
        backend,
        [early, late],
        texts,
        tmp_path / "two",
        context_length=16,
        progress=False,
        batch_size=4,
        shard_contexts=8,
    )
    n_batches = sum(-(-s.n_contexts // 4) for s in both.manifest.shards)
    assert backend.layers_run == 2 * n_batches  # stops at the deepest hook, one pass for both
    assert {c.id for c in both.coders} == {"early", late.id}
    for latent in range(32):
        a, b = ref.activations(latent, late.id), both.activations(latent, late.id)
        assert a.rows.tolist() == b.rows.tolist() and np.array_equal(a.values, b.values)
    assert (
        both.latent_stats(0, "early").count
        == ref.tokens(np.arange(ref.n_contexts)).__eq__(backend._ids[" cat"]).sum()
    )
    with pytest.raises(ConfigError, match="name one"):
        both.activations(0)


def test_manifest_records_the_run(tmp_path, backend):
    coder = FakeCoder.random(16, 8, hook="blocks.0.hook_resid_pre")
    store = collect(
        backend,
        coder,
        corpus(30),
        tmp_path / "s",
        context_length=16,
        n_tokens=100,
        seed=7,
        progress=False,
    )
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    s = m["settings"]
    assert s["model_id"] == backend.model_id and s["seed"] == 7 and s["context_length"] == 16
    assert s["coders"][0]["hook"] == coder.hook and s["coders"][0]["d_sae"] == 8
    assert s["token_budget"] == 100 and "bos" in s["bos_policy"] and s["bos_token_id"] == 0
    assert s["dataset"].startswith("texts n=30")
    assert m["saexplain_version"] and m["complete"] and m["stats_complete"]
    assert store.n_tokens == 96  # budget rounded down to whole contexts
    assert (store.tokens(np.arange(store.n_contexts))[:, 0] == 0).all()  # BOS first
    assert Manifest.load(tmp_path / "s") == store.manifest


def test_contexts_are_the_concatenated_documents(tmp_path, backend):
    coder = FakeCoder.random(16, 8, hook="blocks.0.hook_resid_pre")
    texts = ["a b c", "d e", "f g h i j k l m n"]
    store = collect(backend, coder, texts, tmp_path / "s", context_length=5, progress=False)
    ids = backend.tokenize([" ".join(texts)], prepend_bos=False)  # warm the vocabulary
    del ids
    t = store.tokens(np.arange(store.n_contexts))
    words = [backend.str_tokens(r.tolist()) for r in t]
    assert words[0] == ["<bos>", "a", " b", " c", "<bos>"]
    assert words[1] == ["<bos>", "d", " e", "<bos>", "f"]
    assert store.n_contexts == 4  # 3 + 2 + 9 tokens + 2 separators = 16 -> 4 bodies of 4
    nobos = collect(
        backend,
        coder,
        texts,
        tmp_path / "n",
        context_length=5,
        progress=False,
        prepend_bos=False,
        doc_separator=False,
    )
    assert backend.str_tokens(nobos.tokens([0])[0].tolist()) == ["a", " b", " c", "d", " e"]


def test_file_sources(tmp_path, backend):
    coder = FakeCoder.random(16, 8, hook="blocks.0.hook_resid_pre")
    texts = corpus(20)
    (tmp_path / "c.txt").write_text("\n".join(texts) + "\n\n")
    (tmp_path / "c.jsonl").write_text(
        "\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(texts))
    )
    ref = collect(backend, coder, texts, tmp_path / "ref", context_length=16, progress=False)
    for name in ("c.txt", "c.jsonl"):
        s = collect(
            backend,
            coder,
            tmp_path / name,
            tmp_path / f"s-{name}",
            context_length=16,
            progress=False,
        )
        assert np.array_equal(
            s.tokens(np.arange(s.n_contexts)), ref.tokens(np.arange(ref.n_contexts))
        )
        assert "file:" in s.settings.dataset
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts}), tmp_path / "c.parquet")
    s = collect(
        backend, coder, tmp_path / "c.parquet", tmp_path / "s-pq", context_length=16, progress=False
    )
    assert s.n_contexts == ref.n_contexts
    with pytest.raises(ConfigError, match="no field 'body'"):
        collect(
            backend,
            coder,
            tmp_path / "c.jsonl",
            tmp_path / "bad",
            context_length=16,
            progress=False,
            text_field="body",
        )


def test_pretokenized_sources(tmp_path, backend):
    coder = FakeCoder.random(16, 8, hook="blocks.0.hook_resid_pre")
    arr = np.arange(1, 1 + 6 * 8).reshape(6, 8) % 50
    s = collect(backend, coder, arr, tmp_path / "a", context_length=8, progress=False)
    assert np.array_equal(s.tokens(np.arange(6)), arr)
    assert s.settings.bos_policy.startswith("pre-tokenized contexts used as given")
    with pytest.raises(ConfigError, match="width 8"):
        collect(backend, coder, arr, tmp_path / "b", context_length=4, progress=False)
    docs = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14]]
    s = collect(backend, coder, docs, tmp_path / "c", context_length=4, progress=False)
    assert s.tokens([0, 1]).tolist() == [[0, 5, 6, 7], [0, 0, 8, 9]]


def test_errors_are_typed_and_clear(tmp_path, backend):
    coder = FakeCoder.random(16, 8, hook="blocks.0.hook_resid_pre")
    with pytest.raises(EmptyDatasetError, match="empty"):
        collect(backend, coder, [], tmp_path / "a", context_length=8, progress=False)
    with pytest.raises(EmptyDatasetError, match="tokenizes to nothing"):
        collect(backend, coder, ["", ""], tmp_path / "b", context_length=8, progress=False)
    with pytest.raises(EmptyDatasetError, match="shorter than one context"):
        collect(backend, coder, ["a b c"], tmp_path / "c", context_length=8, progress=False)
    assert not (tmp_path / "c").exists()
    with pytest.raises(ConfigError, match="smaller than one context"):
        collect(backend, coder, corpus(5), tmp_path / "d", context_length=8, n_tokens=4)
    with pytest.raises(ConfigError, match="unique"):
        collect(backend, [coder, coder], corpus(5), tmp_path / "e", context_length=8)
    wide = FakeCoder.random(17, 8, hook="blocks.0.hook_resid_pre")
    with pytest.raises(ConfigError, match="width"):
        collect(backend, wide, corpus(5), tmp_path / "f", context_length=8)
    store = collect(backend, coder, corpus(20), tmp_path / "g", context_length=8, progress=False)
    for bad in (-1, 8, 100):
        with pytest.raises(LatentIndexError):
            store.activations(bad)
        with pytest.raises(LatentIndexError):
            store.latent_stats(bad)
    with pytest.raises(ConfigError, match="settings differ"):
        collect(backend, coder, corpus(20), tmp_path / "g", context_length=16, progress=False)
    with pytest.raises(ConfigError, match="resume=True"):
        collect(backend, coder, corpus(20), tmp_path / "g", context_length=8, resume=False)
    with pytest.raises(ConfigError, match="not an activation store"):
        ActivationStore(tmp_path / "nothing")


def test_float16_values_overflow_falls_back_to_float32(tmp_path, backend):
    coder = PlantedValuesCoder(backend, {0: {" cat": 1e6}, 1: {" dog": 3.0}}, d_sae=4)
    store = collect(backend, coder, corpus(30), tmp_path / "s", context_length=16, progress=False)
    assert set(store.manifest.shards[0].value_dtypes.values()) == {"float32"}
    assert store.latent_stats(0).max == 1e6 and np.isfinite(store.activations(0).values).all()


def test_progress_bar_reports_tokens(tmp_path, backend, capsys):
    coder = FakeCoder.random(16, 8, hook="blocks.0.hook_resid_pre")
    collect(backend, coder, corpus(30), tmp_path / "s", context_length=16, progress=True)
    err = capsys.readouterr().err
    assert "tok" in err and "collect" in err


def test_memory_is_bounded_by_the_shard_not_the_dataset(tmp_path, backend):
    """The writer holds one shard's sparse activations: nnz in memory never exceeds a shard."""
    import saexplain.store.writer as mod

    coder = FakeCoder.random(16, 64, hook="blocks.0.hook_resid_pre")
    seen = []
    real = mod._write_shard

    def spy(root, number, start, shard, settings, fsync):
        seen.append(sum(len(v[0]) for v in shard[1].values()))
        return real(root, number, start, shard, settings, fsync)

    mod._write_shard = spy
    try:
        store = collect(
            backend,
            coder,
            corpus(300),
            tmp_path / "s",
            context_length=16,
            shard_contexts=10,
            progress=False,
        )
    finally:
        mod._write_shard = real
    assert len(seen) == len(store.manifest.shards) > 10
    assert max(seen) < store.nnz() / 5


def test_shard_buffer_orders_by_latent_then_index_for_wide_coders():
    from saexplain.store.writer import _ShardBuffer

    rng = np.random.default_rng(0)
    d = 200_000  # two 16-bit radix digits
    buf = _ShardBuffer(d)
    lat, idx = [], []
    for b in range(4):
        n = 5000
        index = rng.permutation(np.arange(b * 10_000, b * 10_000 + n)).astype(np.uint32)
        latent = rng.integers(0, d, n)
        latent[:50] = 70_000  # many entries of one latent in every batch
        buf.add(latent, index, index.astype(np.float32))
        lat.append(latent)
        idx.append(index)
    index, value, offsets = buf.finish()
    latent, want_idx = np.concatenate(lat), np.concatenate(idx)
    order = np.lexsort((want_idx, latent))
    assert np.array_equal(index, want_idx[order]) and np.array_equal(value, index)
    assert np.array_equal(
        offsets, np.concatenate([[0], np.cumsum(np.bincount(latent, minlength=d))])
    )


def test_hub_names_need_datasets_and_fail_clearly(tmp_path, backend, monkeypatch):
    import sys

    coder = FakeCoder.random(16, 8, hook="blocks.0.hook_resid_pre")
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(ConfigError, match="pip install datasets"):
        collect(backend, coder, "someone/some-dataset", tmp_path / "a", context_length=8)

    class Broken:
        @staticmethod
        def load_dataset(*args, **kwargs):
            raise ConnectionError("offline")

    monkeypatch.setitem(sys.modules, "datasets", Broken)
    with pytest.raises(ConfigError, match="ConnectionError: offline"):
        collect(backend, coder, "someone/some-dataset", tmp_path / "b", context_length=8)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


class _TensorLike:
    """Quacks like a torch tensor (detach/cpu/numpy) without torch."""

    def __init__(self, array):
        self._array = array

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self._array

    def __len__(self):
        return len(self._array)


class _ShuffledTensorBackend:
    """Wraps a backend: returns activations as tensor-likes, in a scrambled order."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def latent_acts(self, tokens, coders, *, latents=None):
        from saexplain.protocols import SparseActivations

        out = {}
        for cid, a in self._inner.latent_acts(tokens, coders, latents=latents).items():
            perm = np.random.default_rng(len(a)).permutation(len(a))
            out[cid] = SparseActivations(
                *(_TensorLike(x[perm]) for x in (a.row, a.pos, a.latent, a.value))
            )
        return out


def test_tensor_like_and_unordered_backend_output(tmp_path, backend):
    coder = FakeCoder.random(16, 32, hook="blocks.1.hook_resid_pre", seed=4)
    texts = corpus(40)
    ref = collect(backend, coder, texts, tmp_path / "ref", context_length=16, progress=False)
    odd = collect(
        _ShuffledTensorBackend(backend),
        coder,
        texts,
        tmp_path / "odd",
        context_length=16,
        progress=False,
    )
    for latent in range(32):
        a, b = ref.activations(latent), odd.activations(latent)
        assert np.array_equal(a.rows, b.rows) and np.array_equal(a.pos, b.pos)
        assert np.array_equal(a.values, b.values)


def test_bos_activations_follow_the_coder_policy(tmp_path, backend):
    keep = FakeCoder.random(16, 32, hook="blocks.0.hook_resid_pre", seed=6)
    keep.exclude_bos = False
    keep.id = "keeps-bos"
    drop = FakeCoder.random(16, 32, hook="blocks.0.hook_resid_pre", seed=6)
    store = collect(
        backend, [keep, drop], corpus(30), tmp_path / "s", context_length=16, progress=False
    )
    tokens = store.tokens(np.arange(store.n_contexts))
    at_bos = {"keeps-bos": 0, drop.id: 0}
    for cid in at_bos:
        for latent in range(32):
            a = store.activations(latent, cid)
            at_bos[cid] += int((tokens[a.rows, a.pos] == backend.bos_token_id).sum())
    assert at_bos["keeps-bos"] > 0 and at_bos[drop.id] == 0
    assert "exclude_bos" in store.settings.bos_policy
