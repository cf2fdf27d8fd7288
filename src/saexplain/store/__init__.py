"""The activation store: collect sparse latent activations once, read them many times.

    from saexplain.store import collect, ActivationStore
    store = collect(backend, coder, texts, "runs/acts", context_length=128, n_tokens=1_000_000)
    acts = store.activations(42)            # one latent, without scanning the others
    stats = store.latent_stats(42)          # count, frequency, max, mean, quantile edges

See docs/store.md for the on-disk layout and the resumption guarantees.
"""

from __future__ import annotations

from saexplain.store.datasets import ContextStream, describe_dataset, iter_documents
from saexplain.store.manifest import CoderInfo, CollectionSettings, Manifest, ShardInfo
from saexplain.store.reader import ActivationStore, LatentActivations, open_store
from saexplain.store.stats import StoreStats, compute_stats
from saexplain.store.writer import collect

__all__ = [
    "ActivationStore",
    "CoderInfo",
    "CollectionSettings",
    "ContextStream",
    "LatentActivations",
    "Manifest",
    "ShardInfo",
    "StoreStats",
    "collect",
    "compute_stats",
    "describe_dataset",
    "iter_documents",
    "open_store",
]
