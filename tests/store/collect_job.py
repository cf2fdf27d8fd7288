"""A collection run as a separate process, for the crash test: `python collect_job.py OUT [DELAY]`.

DELAY seconds are slept in every `latent_acts` call so the parent can kill the run mid-shard.
"""

import sys
import time

from saexplain.store import collect
from saexplain.testing import FakeBackend, FakeCoder, PlantedValuesCoder, synthetic_corpus


def main(out: str, delay: float) -> None:
    backend = FakeBackend(d_model=16, n_layers=3, vocab_size=512)
    coders = [
        PlantedValuesCoder(backend, {1: {" cat": 1.0}, 2: {" dog": 2.0, " mat": 0.25}}, d_sae=8),
        FakeCoder.random(16, 48, hook="blocks.1.hook_resid_pre", seed=5),
    ]
    real = backend.latent_acts

    def slow(*args, **kwargs):
        time.sleep(delay)
        return real(*args, **kwargs)

    backend.latent_acts = slow  # type: ignore[method-assign]
    texts = synthetic_corpus(
        400, seed=1, vocab=["cat", "dog", "mat", "sat", "on", "a", "the", "ran", "far", "red"]
    )
    collect(
        backend,
        coders,
        texts,
        out,
        context_length=16,
        batch_size=4,
        shard_contexts=12,
        n_tokens=16 * 150,
        progress=False,
    )


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
