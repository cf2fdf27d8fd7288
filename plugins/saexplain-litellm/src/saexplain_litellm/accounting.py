"""Token and cost accounting, tagged by latent / method / run, and the spend cap.

Every call a provider makes (or serves from its cache) is recorded in a `Ledger` with the tags
active at the call site. Tags travel in a context variable, so they follow asyncio tasks:

    with usage_tags(run="r1", method="maxact", latent="res/8:123"):
        await provider.complete(request)
    ledger.by("latent")  # {"res/8:123": Usage(...), ...}

A ledger may carry a spend cap: once the money recorded reaches it, `check_cap` raises
`SpendCapReached` and no new call starts (calls already in flight finish and are recorded).
Share one ledger between providers (`ledger=` setting) to cap a whole run.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from saexplain.errors import SpendCapReached
from saexplain.models import ChatRequest, Usage

_TAGS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "saexplain_usage_tags", default=None
)


def current_tags() -> dict[str, str]:
    return dict(_TAGS.get() or {})


@contextlib.contextmanager
def usage_tags(**tags: object) -> Iterator[dict[str, str]]:
    """Tag every provider call made inside this block (nested blocks add to the outer tags)."""
    merged = {**current_tags(), **{k: str(v) for k, v in tags.items()}}
    token = _TAGS.set(merged)
    try:
        yield merged
    finally:
        _TAGS.reset(token)


@dataclass(frozen=True)
class CallRecord:
    provider: str
    model: str
    usage: Usage
    tags: tuple[tuple[str, str], ...]
    cached: bool = False


class Ledger:
    """Usage of every call, summable by any tag; optionally capped in US dollars."""

    def __init__(self, spend_cap_usd: float | None = None) -> None:
        if spend_cap_usd is not None and spend_cap_usd <= 0:
            raise ValueError(f"spend_cap_usd must be positive, got {spend_cap_usd}")
        self.spend_cap_usd = spend_cap_usd
        self._records: list[CallRecord] = []
        self._total = Usage()
        self._lock = threading.Lock()

    def record(
        self,
        provider: str,
        model: str,
        usage: Usage,
        tags: Mapping[str, str] | None = None,
        *,
        cached: bool = False,
    ) -> CallRecord:
        rec = CallRecord(
            provider=provider,
            model=model,
            usage=usage,
            tags=tuple(sorted((tags if tags is not None else current_tags()).items())),
            cached=cached,
        )
        with self._lock:
            self._records.append(rec)
            self._total = self._total + usage
        return rec

    @property
    def records(self) -> list[CallRecord]:
        with self._lock:
            return list(self._records)

    @property
    def total(self) -> Usage:
        with self._lock:
            return self._total

    @property
    def spent_usd(self) -> float:
        return self.total.cost_usd

    def by(self, tag: str) -> dict[str, Usage]:
        """Usage summed per value of `tag`; calls without that tag are left out."""
        out: dict[str, Usage] = {}
        for rec in self.records:
            value = dict(rec.tags).get(tag)
            if value is not None:
                out[value] = out.get(value, Usage()) + rec.usage
        return out

    def by_model(self) -> dict[str, Usage]:
        out: dict[str, Usage] = {}
        for rec in self.records:
            out[rec.model] = out.get(rec.model, Usage()) + rec.usage
        return out

    def where(self, **tags: str) -> Usage:
        """Usage of the calls carrying all of these tag values."""
        total = Usage()
        for rec in self.records:
            have = dict(rec.tags)
            if all(have.get(k) == v for k, v in tags.items()):
                total = total + rec.usage
        return total

    @property
    def cap_reached(self) -> bool:
        return self.spend_cap_usd is not None and self.spent_usd >= self.spend_cap_usd

    def check_cap(self, model: str | None = None) -> None:
        """Raise `SpendCapReached` when the cap is reached; call before starting any call."""
        if self.cap_reached:
            raise SpendCapReached(
                f"spend cap of ${self.spend_cap_usd:.4f} reached (spent ${self.spent_usd:.4f}); "
                "no new LLM calls are made",
                model=model,
            )


# --- dry-run estimates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CostEstimate:
    """What a batch of requests would cost at most, before making any call."""

    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int  # upper bound: max_tokens * n per request, unless given
    cost_usd: float
    priced: bool  # False when the model is not in litellm's price table (cost_usd is then 0)

    def __str__(self) -> str:
        price = f"${self.cost_usd:.4f}" if self.priced else "unknown price"
        return (
            f"{self.model}: {self.requests} requests, {self.prompt_tokens} prompt + "
            f"<= {self.completion_tokens} completion tokens, {price}"
        )


def price_per_token(model: str) -> tuple[float, float] | None:
    """(USD per prompt token, USD per completion token) from litellm's offline table, or None."""
    if model.startswith("local/"):
        return (0.0, 0.0)
    import litellm

    try:
        prompt, completion = litellm.cost_per_token(
            model=model, prompt_tokens=1, completion_tokens=1
        )
    except Exception:  # litellm raises a bare Exception for unmapped models
        return None
    return float(prompt), float(completion)


def count_prompt_tokens(model: str, request: ChatRequest) -> int:
    messages = [m.model_dump() for m in request.messages]
    try:
        import litellm

        return int(litellm.token_counter(model=model, messages=messages))
    except Exception:  # tokenizer unavailable offline: ~4 characters a token
        return sum(len(m.content) // 4 + 4 for m in request.messages)


def estimate_cost(
    model: str,
    requests: Iterable[ChatRequest],
    *,
    completion_tokens: int | None = None,
) -> CostEstimate:
    """Estimate, without calling anything, what `requests` cost on `model`.

    Prompt tokens are counted with litellm's tokenizer for the model; completion tokens are
    `completion_tokens` per choice when given, else each request's `max_tokens` (an upper bound).
    """
    n_req = n_prompt = n_completion = 0
    for request in requests:
        n_req += 1
        n_prompt += count_prompt_tokens(model, request)
        per_choice = request.max_tokens if completion_tokens is None else completion_tokens
        n_completion += per_choice * request.n
    prices = price_per_token(model)
    cost = 0.0 if prices is None else n_prompt * prices[0] + n_completion * prices[1]
    return CostEstimate(
        model=model,
        requests=n_req,
        prompt_tokens=n_prompt,
        completion_tokens=n_completion,
        cost_usd=cost,
        priced=prices is not None,
    )
