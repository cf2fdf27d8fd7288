"""Generic answers: explanations that so many latents share that they say nothing about one."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from saexplain.methods import ConfigError, Explanation, Status

__all__ = ["flag_generic"]


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def flag_generic(
    explanations: Sequence[Explanation | str], *, min_share: float = 0.1, min_count: int = 3
) -> list[bool]:
    """True for each answer (lower-cased, punctuation dropped) that at least `min_count` latents
    and a `min_share` fraction of them share: a generic answer ("a word or phrase") says nothing
    about any one latent. Failed explanations are never flagged and do not count."""
    if not 0 < min_share <= 1:
        raise ConfigError(f"min_share must be in (0, 1], got {min_share}")
    if min_count < 2:
        raise ConfigError(f"min_count must be >= 2, got {min_count}")
    keys: list[str | None] = []
    for e in explanations:
        if isinstance(e, Explanation):
            keys.append(_normalise(e.text) if e.status is Status.OK else None)
        else:
            keys.append(_normalise(e))
    counts = Counter(k for k in keys if k is not None)
    n = sum(counts.values())
    return [k is not None and counts[k] >= min_count and counts[k] >= min_share * n for k in keys]
