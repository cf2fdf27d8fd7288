"""Planted latents on the FakeBackend: latent i fires exactly on WORDS[i]."""

import re

import numpy as np

from saexplain.models import Explanation, LatentRecord

WORDS = {0: " cat", 1: " river", 2: " violin", 3: " copper"}
FILLER = re.findall(
    r"\w+",
    "the a one small big old new quiet loud morning evening city road house garden table "
    "window paper story music light water stone green blue red north south early late",
)


def corpus(seed: int = 0, per_word: int = 24, n_filler: int = 60) -> list[str]:
    rng = np.random.default_rng(seed)

    def sentence(extra: str | None = None) -> str:
        words = [str(w) for w in rng.choice(FILLER, size=int(rng.integers(6, 12)))]
        if extra is not None:
            words.insert(int(rng.integers(1, len(words))), extra.strip())
        return " ".join(words).capitalize()

    texts = [sentence(w) for w in WORDS.values() for _ in range(per_word)]
    texts += [sentence() for _ in range(n_filler)]
    return [texts[i] for i in rng.permutation(len(texts))]


def explanation(record: LatentRecord, latent: int) -> Explanation:
    """The planted concept of `latent`, stated as an explainer would, for `record`'s latent."""
    return Explanation(
        latent=record.latent, text=f'The word "{WORDS[latent].strip()}"', explainer="planted"
    )
