"""`toptokens`: the latent's top activating tokens and their share of its activation mass.

No LLM and no model work: a baseline in the literature's sense, free to run beside every LLM
explainer, and often right for token-level latents. It reads the record's explanation examples
(never the held-out scoring examples, so a scorer judges it on text it did not see), adds up the
activation at each shown token by token, and renders the `k` heaviest tokens with their share of
the latent's total mass, e.g. `the tokens " because" (62%), " since" (11%)`.

With `ngrams`, a token that fires only after the same one or two tokens is shown with them:
the longest n-gram (n <= 3) ending at the token that occurs at least twice and holds at least
`ngram_hold` of the token's mass (` York` after ` New` becomes `" New York"`). A latent that
fires on many different tokens (a context or position latent) gets low shares, and the text says
that no token stands out, which is itself an honest explanation a scorer can judge.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field

from saexplain.methods import (
    Example,
    Explanation,
    LatentRecord,
    MethodContext,
    MethodSettings,
    Needs,
    Register,
    Status,
    bos_id,
    display_tokens,
    first_shown,
    one_line,
)

# An n-gram is (its shown tokens, oldest first); the last one is the token that fired.
Gram = tuple[str, ...]


@dataclass(frozen=True)
class TokenShare:
    """One entry of the explanation: the shown n-gram (ending at the activating token), the
    share of the latent's mass at that token in that n-gram, and how often it fired there."""

    gram: Gram
    share: float
    count: int

    def render(self) -> str:
        # JSON quoting keeps leading spaces and escapes visible; display_tokens already
        # neutralised angle brackets, one_line guards against any raw line break left.
        return f"{one_line(json.dumps(''.join(self.gram), ensure_ascii=False))} ({self.share:.0%})"

    def json(self) -> dict[str, Any]:
        return {"tokens": list(self.gram), "share": round(self.share, 4), "count": self.count}


class TopTokens:
    """Explain a latent by the tokens (and short n-grams) that carry its activation mass."""

    name: ClassVar[str] = "toptokens"
    # Reads the record's examples only: no provider, no model, no coder.
    needs: ClassVar[Needs] = Needs()

    class Settings(MethodSettings):
        """How many tokens to show, and which."""

        k: int = Field(3, ge=1, le=20, description="at most this many tokens in the explanation")
        min_share: float = Field(
            0.05,
            ge=0.0,
            le=1.0,
            description="leave out tokens holding less than this share of the activation mass "
            "(the heaviest token is always shown)",
        )
        ngrams: bool = Field(
            True,
            description="show a token with the one or two tokens before it when it fires only "
            "after them (n-grams up to 3 ending at the activating token)",
        )
        ngram_hold: float = Field(
            0.8,
            gt=0.0,
            le=1.0,
            description="an n-gram replaces its last token when it holds at least this share of "
            "that token's mass (and occurs at least twice)",
        )
        concentrated: float = Field(
            0.3,
            ge=0.0,
            le=1.0,
            description="below this share for the heaviest token the text says no token stands out",
        )

    settings: Settings

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings.parse(self.name, settings)

    async def explain(self, record: LatentRecord, ctx: MethodContext) -> Explanation:
        shares, total = token_shares(
            record.explanation_examples,
            bos_id(ctx),
            k=self.settings.k,
            min_share=self.settings.min_share,
            ngrams=self.settings.ngrams,
            ngram_hold=self.settings.ngram_hold,
        )
        settings = self.settings.model_dump(mode="json")
        if not shares:
            return Explanation(
                latent=record.latent,
                explainer=self.name,
                settings=settings,
                status=Status.FAILED,
                error="no explanation example has a positive activation on a shown token",
            )
        return Explanation(
            latent=record.latent,
            explainer=self.name,
            text=render(shares, self.settings.concentrated),
            settings=settings,
            evidence={
                "tokens": [s.json() for s in shares],
                "mass": round(total, 6),
                "examples": len(record.explanation_examples),
            },
        )


def render(shares: list[TokenShare], concentrated: float) -> str:
    """The explanation text: `the tokens "a" (62%), "b" (11%)` (or `the token ...` for one);
    `no token stands out (heaviest: "a" (2%))` when the heaviest share is below
    `concentrated`."""
    listed = ", ".join(s.render() for s in shares)
    if shares[0].share < concentrated:
        return f"no token stands out (heaviest: {listed})"
    return f"{'the token' if len(shares) == 1 else 'the tokens'} {listed}"


def token_shares(
    examples: tuple[Example, ...] | list[Example],
    bos: int | None,
    *,
    k: int,
    min_share: float,
    ngrams: bool,
    ngram_hold: float = 0.8,
) -> tuple[list[TokenShare], float]:
    """The `k` heaviest tokens of `examples` (by summed positive activation, shares of the total
    over every shown token) with at least `min_share` (the heaviest always kept), each as the
    longest n-gram ending at it that holds `ngram_hold` of its mass; and the total mass.
    A leading BOS is not counted (`first_shown`)."""
    mass: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    # gram -> (mass, count); grams of length 2 and 3 ending at an activating token
    grams: dict[Gram, list[float]] = defaultdict(lambda: [0.0, 0])
    total = 0.0
    for example in examples:
        start = first_shown(example, bos)
        shown = display_tokens(example, start)
        for i, value in enumerate(example.activations[start:]):
            if value <= 0:
                continue
            token = shown[i]
            mass[token] += value
            count[token] += 1
            total += value
            if ngrams:
                for n in (2, 3):
                    if i - n + 1 >= 0:  # only tokens that are shown; BOS never joins a gram
                        entry = grams[tuple(shown[i - n + 1 : i + 1])]
                        entry[0] += value
                        entry[1] += 1
    if total <= 0:
        return [], 0.0
    ranked = sorted(mass, key=lambda t: (-mass[t], t))  # ties by text: deterministic
    out: list[TokenShare] = []
    for token in ranked[:k]:
        share = mass[token] / total
        if out and share < min_share:
            break
        longer = _longest_gram(token, mass[token], grams, ngram_hold) if ngrams else None
        if longer is None:
            out.append(TokenShare(gram=(token,), share=share, count=count[token]))
        else:  # the n-gram's own mass: what is shown is what the share counts
            gram, (gram_mass, gram_count) = longer
            out.append(TokenShare(gram=gram, share=gram_mass / total, count=int(gram_count)))
    return out, total


def _longest_gram(
    token: str, token_mass: float, grams: dict[Gram, list[float]], hold: float
) -> tuple[Gram, list[float]] | None:
    """The longest gram ending at `token` seen at least twice and holding `hold` of its mass,
    with its (mass, count)."""
    best: Gram | None = None
    for gram, (gram_mass, gram_count) in grams.items():
        if gram[-1] != token or gram_count < 2 or gram_mass < hold * token_mass:
            continue
        if best is None or len(gram) > len(best) or (len(gram) == len(best) and gram < best):
            best = gram
    return None if best is None else (best, grams[best])


def register(register: Register) -> None:
    register(
        "toptokens",
        TopTokens,
        description="no LLM: the top activating tokens and n-grams with their share of the "
        "activation mass (a baseline)",
    )
