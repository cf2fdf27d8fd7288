"""A coder with planted latents of every kind the filters look for, over the numpy FakeBackend."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from saexplain.testing import FakeBackend

WORDS = [f" w{i}" for i in range(60)] + [" the", " cat", " big", " dog", " zebra"]

ORDINARY_BIGRAM = 0  # " cat" right after " the": one token, but only in that context
ORDINARY_AFTER = 1  # any token right after " big": many tokens
UNIGRAM = 2  # " dog", whatever surrounds it
POSITIONAL = 3  # position 3 of every context, whatever the token
DEAD = 4  # never
RARE = 5  # " zebra", which the corpus holds a few times
ORDINARY = (ORDINARY_BIGRAM, ORDINARY_AFTER)


class PlantedKindsCoder:
    """Reads `blocks.0.hook_resid_pre` (the token embeddings), recovers the token ids and fires by
    rule: context-dependent, context-free, positional, dead and rare latents."""

    hook = "blocks.0.hook_resid_pre"
    exclude_bos = True

    def __init__(self, backend: FakeBackend, *, d_sae: int = 8) -> None:
        self.backend, self.d_in, self.d_sae = backend, backend.d_model, d_sae
        self.id = "planted-kinds"
        self.ids = {w: backend._id(w) for w in WORDS}
        rng = np.random.default_rng(0)
        w = rng.normal(size=(d_sae, self.d_in))
        self._W_dec = w / np.linalg.norm(w, axis=1, keepdims=True)

    @property
    def W_dec(self) -> Any:
        return self._W_dec

    def encode(self, x: Any) -> Any:
        h = np.asarray(x, dtype=np.float64)
        emb = self.backend._embed
        ids = np.argmin(((h[..., None, :] - emb) ** 2).sum(-1), axis=-1)  # (..., seq)
        prev = np.full_like(ids, -1)
        prev[..., 1:] = ids[..., :-1]
        z = np.zeros((*ids.shape, self.d_sae))
        z[..., ORDINARY_BIGRAM] = (ids == self.ids[" cat"]) & (prev == self.ids[" the"])
        z[..., ORDINARY_AFTER] = 0.5 * (prev == self.ids[" big"])
        z[..., UNIGRAM] = 2.0 * (ids == self.ids[" dog"])
        if ids.shape[-1] > 3:
            z[..., 3, POSITIONAL] = 1.5  # (..., seq, latent)
        z[..., RARE] = ids == self.ids[" zebra"]
        return z

    def decode(self, z: Any) -> Any:
        return np.asarray(z) @ self._W_dec


def planted_corpus(n_docs: int = 120, seed: int = 0) -> list[str]:
    """Random words, with " the cat", " big <word>" and " dog" sprinkled in, " zebra" 5 times."""
    rng = np.random.default_rng(seed)
    plain = [w for w in WORDS[:60]]
    docs = []
    for d in range(n_docs):
        words = list(rng.choice(plain, size=40))
        for _ in range(2):
            at = int(rng.integers(0, 38))
            words[at : at + 2] = [" the", " cat"]
        at = int(rng.integers(0, 39))
        words[at] = " big"
        words[int(rng.integers(0, 40))] = " dog"
        if d < 5:
            words[10] = " zebra"
        docs.append("".join(words).strip())
    return docs


def hash_embed(texts):
    """Deterministic bag-of-words embedding: shared words give similar vectors."""
    out = np.zeros((len(texts), 256))
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i, int(hashlib.sha1(word.encode()).hexdigest(), 16) % 256] += 1.0
    return out
