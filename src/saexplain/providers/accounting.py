"""Token and cost accounting, tagged by latent / method / run, and the spend cap.

Every call a wrapped provider makes (or serves from its cache) is recorded in a `Ledger` with the
tags active at the call site. Tags travel in context variables, so they follow asyncio tasks: the
pipeline sets `current_latent` and `current_method` for each method call, and any code may add
more with `usage_tags`:

    with usage_tags(run="r1"):
        await provider.complete(request)
    ledger.by("latent")  # {"res/8:123": Usage(...), ...}

A ledger may carry a spend cap: once the money recorded reaches it, `check_cap` raises
`SpendCapReached` and no new call starts (calls already in flight finish and are recorded). The
pipeline makes one ledger per run and shares it by every provider of the run.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from saexplain.errors import SpendCapReached
from saexplain.models import Usage

# The latent and method a coroutine works for: prompt logs and the ledger are tagged with them.
current_latent: contextvars.ContextVar[str] = contextvars.ContextVar("latent", default="run")
current_method: contextvars.ContextVar[str] = contextvars.ContextVar("method", default="")

_TAGS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "saexplain_usage_tags", default=None
)


def current_tags() -> dict[str, str]:
    """The tags a call made here is recorded with: latent, method, then any `usage_tags`."""
    tags: dict[str, str] = {}
    if (latent := current_latent.get()) != "run":
        tags["latent"] = latent
    if method := current_method.get():
        tags["method"] = method
    return {**tags, **(_TAGS.get() or {})}


@contextlib.contextmanager
def usage_tags(**tags: object) -> Iterator[dict[str, str]]:
    """Tag every provider call made inside this block (nested blocks add to the outer tags)."""
    merged = {**(_TAGS.get() or {}), **{k: str(v) for k, v in tags.items()}}
    token = _TAGS.set(merged)
    try:
        yield merged
    finally:
        _TAGS.reset(token)


@dataclass(frozen=True)
class CallRecord:
    """One call as the ledger saw it."""

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
        """Add one call's usage; `tags` default to the ones active here (`current_tags`)."""
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
        """Every call recorded so far, oldest first."""
        with self._lock:
            return list(self._records)

    @property
    def total(self) -> Usage:
        """The usage of every call together."""
        with self._lock:
            return self._total

    @property
    def spent_usd(self) -> float:
        """US dollars recorded so far."""
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
        """Usage summed per model."""
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
        """Whether the money recorded has reached the spend cap."""
        return self.spend_cap_usd is not None and self.spent_usd >= self.spend_cap_usd

    def check_cap(self, model: str | None = None) -> None:
        """Raise `SpendCapReached` when the cap is reached; call before starting any call."""
        if self.cap_reached:
            raise SpendCapReached(
                f"spend cap of ${self.spend_cap_usd:.4f} reached (spent ${self.spent_usd:.4f}); "
                "no new LLM calls are made",
                model=model,
            )

    def __repr__(self) -> str:
        return f"Ledger(spend_cap_usd={self.spend_cap_usd}, spent_usd={self.spent_usd:.6f})"
