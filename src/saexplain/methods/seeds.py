"""Seeds: the one way a random stream is derived from the run seed.

Every per-latent random choice (which examples a scorer shows, in which order, which contexts an
explainer samples, sampled generations) takes its seed from `latent_seed`, so two latents never
share a stream by accident and a rerun makes the same choices.
"""

from __future__ import annotations

import hashlib

from saexplain.models import LatentRecord
from saexplain.protocols import MethodContext

__all__ = ["derive_seed", "latent_seed"]


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from a run seed and any identifying parts (coder id, latent, purpose).

    Stable across processes and Python versions (unlike `hash`), so each latent gets its own
    reproducible random stream and no two latents share negatives by accident. 63 bits fit the
    seed of every generator (numpy, torch, `random`).
    """
    text = ":".join([str(seed), *map(str, parts)])
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def latent_seed(ctx: MethodContext, record: LatentRecord, purpose: str) -> int:
    """The seed of one method's random choices for one latent: the context's seed, the latent
    (coder id and index) and a `purpose` naming the method (and the choice, if it makes several).
    The samplers derive their per-latent streams from the same parts."""
    return derive_seed(ctx.seed, record.latent.coder_id, record.latent.index, purpose)
