"""Generic explanations: answers that say nothing about the one latent they were given for.

Two kinds, found over all of one explainer's explanations in a run:

- **near-duplicates**: explanations whose content-word sets (`word_set`: lower-cased,
  punctuation and stop words dropped, plural "s" removed) have a Jaccard similarity of at least
  `similarity` are linked, and linked explanations form clusters (single linkage, so "month
  names" ~ "names of months" ~ "the names of months"). A cluster is generic when it covers at
  least `min_count` latents and a `min_share` fraction of the explainer's ok explanations.
  Exact duplicates are the case `similarity = 1`.
- **instruction echoes**: an explanation that repeats its explainer's own prompt ("The
  explanation is a short label of 1 to 6 words."): at least `echo_share` of its word `echo_n`-grams
  occur in the prompt's wording (`PromptWording`: its instructions and few-shot answers).
  Explanations shorter than `echo_n` words are never echoes: a two-word label shared with a
  few-shot answer may well be right. An echo is reported as one even when echoes of the same
  few-shot answer also form a near-duplicate cluster: the reason says where it came from.

Failed explanations are never flagged and do not count.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from saexplain.errors import ConfigError
from saexplain.models import Explanation, Status

__all__ = [
    "DUPLICATE",
    "ECHO",
    "GenericFlags",
    "echoes_prompt",
    "flag_generic",
    "generic_reasons",
    "word_set",
]

DUPLICATE = "near-duplicate"  # the reasons `generic_reasons` gives
ECHO = "instruction-echo"


@dataclass(frozen=True)
class GenericFlags:
    """The thresholds of `generic_reasons` (documented in docs/running.md)."""

    similarity: float = 0.8  # Jaccard of word sets that links two explanations
    min_count: int = 3  # latents a cluster must cover to be generic
    min_share: float = 0.1  # and this share of the explainer's ok explanations
    echo_n: int = 3  # n-gram length of the echo check
    echo_share: float = 0.5  # share of an explanation's n-grams found in the prompt

    def __post_init__(self) -> None:
        if not 0 < self.similarity <= 1:
            raise ConfigError(f"similarity must be in (0, 1], got {self.similarity}")
        if not 0 < self.min_share <= 1:
            raise ConfigError(f"min_share must be in (0, 1], got {self.min_share}")
        if self.min_count < 2:
            raise ConfigError(f"min_count must be >= 2, got {self.min_count}")
        if self.echo_n < 1:
            raise ConfigError(f"echo_n must be >= 1, got {self.echo_n}")
        if not 0 < self.echo_share <= 1:
            raise ConfigError(f"echo_share must be in (0, 1], got {self.echo_share}")


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


# words that carry no meaning in a label: "the names of months" says what "month names" says
_STOP = frozenset(
    {"a", "an", "and", "are", "as", "at", "by", "for", "from", "in", "is", "it", "its", "of"}
    | {"on", "or", "that", "the", "this", "to", "with"}
)


def _stem(word: str) -> str:
    # a plural's "s" only ("months" -> "month"); anything cleverer needs a language's rules
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def word_set(text: str) -> frozenset[str]:
    """The content words of `text`: lower-cased, punctuation and stop words dropped, a plural's
    "s" removed. Near-duplicates are compared on these."""
    return frozenset(_stem(w) for w in _words(text) if w not in _STOP)


def _compared(text: str) -> frozenset[str]:
    """What near-duplicates are compared on: the content words, or, for an explanation of stop
    words only (a token label such as "by" or "is"), all its words: two such labels alike in
    having no content word are not alike."""
    return word_set(text) or frozenset(_words(text))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def echoes_prompt(text: str, prompt: str, *, n: int = 3, share: float = 0.5) -> bool:
    """Whether `text` repeats `prompt`'s wording: at least `share` of its word n-grams occur in
    the prompt. Texts of fewer than `n` words never do."""
    words = _words(text)
    grams = _ngrams(words, n)
    if not grams:
        return False
    found = grams & _ngrams(_words(prompt), n)
    return len(found) >= share * len(grams)


def _clusters(sets: Sequence[frozenset[str]], similarity: float) -> list[int]:
    """The cluster (a representative index) of each word set, linking pairs at `similarity`."""
    parent = list(range(len(sets)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # identical sets first (one representative each), then pairs of the distinct ones: runs
    # have hundreds of latents, so the quadratic pass over distinct sets stays cheap
    first: dict[frozenset[str], int] = {}
    for i, s in enumerate(sets):
        parent[i] = first.setdefault(s, i)
    distinct = list(first.items())
    if similarity < 1:
        for a in range(len(distinct)):
            for b in range(a + 1, len(distinct)):
                if _jaccard(distinct[a][0], distinct[b][0]) >= similarity:
                    ra, rb = root(distinct[a][1]), root(distinct[b][1])
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
    return [root(i) for i in range(len(sets))]


def generic_reasons(
    explanations: Sequence[Explanation | str],
    *,
    prompt: str | None = None,
    flags: GenericFlags | None = None,
) -> list[str | None]:
    """For each explanation, why it is generic (`DUPLICATE` or `ECHO`), or None.

    `explanations` are one explainer's answers for the run's latents; `prompt` is that
    explainer's prompt wording (None: no echo check)."""
    flags = flags or GenericFlags()
    texts: list[str | None] = []
    for e in explanations:
        if isinstance(e, Explanation):
            texts.append(e.text if e.status is Status.OK else None)
        else:
            texts.append(e)
    ok = [i for i, t in enumerate(texts) if t is not None]
    roots = _clusters([_compared(texts[i] or "") for i in ok], flags.similarity)
    size = Counter(roots)
    out: list[str | None] = [None] * len(texts)
    for i, r in zip(ok, roots, strict=True):
        # the echo first: copies of a few-shot answer are near-duplicates too, but the prompt
        # is why they are alike
        if prompt and echoes_prompt(texts[i] or "", prompt, n=flags.echo_n, share=flags.echo_share):
            out[i] = ECHO
        elif size[r] >= flags.min_count and size[r] >= flags.min_share * len(ok):
            out[i] = DUPLICATE
    return out


def flag_generic(
    explanations: Sequence[Explanation | str], *, min_share: float = 0.1, min_count: int = 3
) -> list[bool]:
    """True for each answer (lower-cased, punctuation dropped) that at least `min_count` latents
    and a `min_share` fraction of them share exactly: a generic answer ("a word or phrase") says
    nothing about any one latent. `generic_reasons` also finds near-duplicates and echoes."""
    flags = GenericFlags(similarity=1.0, min_share=min_share, min_count=min_count)
    return [r is not None for r in generic_reasons(explanations, flags=flags)]
