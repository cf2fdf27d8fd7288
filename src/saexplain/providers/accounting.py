"""Token and cost accounting, tagged by latent / method / run, and the spend cap.

Every call a wrapped provider makes (or serves from its cache) is recorded in a `Ledger` with the
tags active at the call site. Tags travel in context variables, so they follow asyncio tasks: the
pipeline sets `current_latent` and `current_method` for each method call, and any code may add
more with `usage_tags`:

    with usage_tags(run="r1"):
        await provider.complete(request)
    ledger.by("latent")  # {"res/8:123": Usage(...), ...}

A ledger may carry a spend cap: once the money recorded reaches it, `check_cap` raises
`SpendCapReached` and no new call starts (calls already in flight finish and are recorded, so
the cap can be passed by at most the calls in flight). The first refusal logs one warning. The
pipeline makes one ledger per run and shares it by every provider of the run.

A ledger given a `path` (the run's `spend.json`) persists what it counted there, atomically,
after every paid call and on `save()`, and starts from what the file holds: the money spent by
earlier attempts at the same run counts toward the cap, so reruns cannot spend it again. The
file also keeps the calls, retries and provider errors (by type) of every attempt together
(`stats()`); the pipeline copies them into `summary.json` and the manifest.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saexplain.errors import SpendCapReached
from saexplain.files import atomic_write_text
from saexplain.models import Usage
from saexplain.providers.retry import RetryStats

log = logging.getLogger("saexplain.providers")
STATS_FORMAT = 1

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


def load_stats(path: Path) -> dict[str, Any]:
    """What a ledger persisted at `path` (`Ledger.stats()`); empty when there is no such file.
    A damaged file raises `ValueError`: the money it recorded must not silently count as $0."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{path} is unreadable ({error}): it holds the run's spend so far; restore it, or "
            "delete it to start counting from $0"
        ) from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def spend_cap_stop(stats: Mapping[str, Any] | None) -> str | None:
    """A one-line message when the spend cap stopped work in the run these `Ledger.stats()`
    describe (some call or method was refused); None otherwise."""
    if not stats or not stats.get("refused"):
        return None
    cap = float(stats.get("spend_cap_usd") or 0.0)
    return (
        f"spend cap of ${cap:.4f} reached (spent ${float(stats.get('spent_usd', 0.0)):.4f} over "
        f"every attempt at this run); {stats['refused']} LLM calls or methods were not started: "
        f"rerun with a higher cap to finish, e.g. spend_cap_usd={2 * cap:g}"
    )


class Ledger:
    """Usage of every call, summable by any tag; optionally capped in US dollars; optionally
    persisted in a file (`path`) so that the cap covers every rerun of a run."""

    def __init__(self, spend_cap_usd: float | None = None, *, path: Path | None = None) -> None:
        if spend_cap_usd is not None and spend_cap_usd <= 0:
            raise ValueError(f"spend_cap_usd must be positive, got {spend_cap_usd}")
        self.spend_cap_usd = spend_cap_usd
        self.path = path
        self._before = load_stats(path) if path is not None else {}
        self._records: list[CallRecord] = []
        self._total = Usage()
        self._errors: Counter[str] = Counter()
        self._retry_stats: list[RetryStats] = []
        self.refused = 0  # calls the cap refused in this process
        self._lock = threading.Lock()

    def attach(self, path: Path) -> None:
        """Persist in `path` from now on, counting what earlier attempts there spent. For a
        ledger made before its run's directory was known (the pipeline checks the providers
        before the weights that name an unnamed run's directory are loaded)."""
        with self._lock:
            self.path = path
            self._before = load_stats(path)

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
        self.keep(rec)
        return rec

    def keep(self, rec: CallRecord) -> None:
        """Where `record` puts each call: this ledger's records and totals (and `spend.json`).
        The hook a ledger that keeps nothing itself overrides (the Ray executor's workers hand
        each call to the driver, which keeps the run's one ledger)."""
        with self._lock:
            self._records.append(rec)
            self._total = self._total + rec.usage
            if rec.usage.calls or rec.usage.cost_usd:  # persist money as soon as it is spent
                self._save_locked()

    def record_error(self, error: BaseException) -> None:
        """Count a call that failed (after its retries), by error type. Cap refusals are not
        provider errors: `check_cap` counts them (`refused`)."""
        if isinstance(error, SpendCapReached):
            return
        self.keep_error(type(error).__name__)

    def keep_error(self, error_type: str) -> None:
        """Where `record_error` counts a failed call, by its error type's name (the hook that
        goes with `keep`)."""
        with self._lock:
            self._errors[error_type] += 1

    def track_retries(self, stats: RetryStats) -> None:
        """Include a retry layer's counters in `stats()` (`wrap_provider` does this)."""
        with self._lock:
            self._retry_stats.append(stats)

    def stats(self) -> dict[str, Any]:
        """Everything counted, earlier attempts at the run (the file at `path`) included:
        money, tokens, calls, attempts, retries, failed calls and provider errors by type, and
        the calls the cap refused in this process (`refused`)."""
        with self._lock:
            return self._stats_locked()

    def _stats_locked(self) -> dict[str, Any]:
        before = self._before
        total = self._total
        errors = Counter({str(k): int(v) for k, v in (before.get("errors") or {}).items()})
        errors.update(self._errors)
        retry: Counter[str] = Counter()
        for rs in self._retry_stats:
            retry.update({"attempts": rs.attempts, "retries": rs.retries})

        def add(key: str, now: float) -> Any:
            return before.get(key, 0) + now

        return {
            "format": STATS_FORMAT,
            "spend_cap_usd": self.spend_cap_usd,
            "spent_usd": add("spent_usd", total.cost_usd),
            "calls": add("calls", total.calls),
            "cached_calls": add("cached_calls", total.cached_calls),
            "prompt_tokens": add("prompt_tokens", total.prompt_tokens),
            "completion_tokens": add("completion_tokens", total.completion_tokens),
            "attempts": add("attempts", retry["attempts"]),
            "retries": add("retries", retry["retries"]),
            "failed_calls": add("failed_calls", sum(self._errors.values())),
            "errors": dict(sorted(errors.items())),
            "refused": self.refused,
        }

    def save(self) -> None:
        """Write `stats()` to `path` atomically (nothing without a path)."""
        with self._lock:
            self._save_locked()

    def _save_locked(self) -> None:
        if self.path is None:
            return
        try:
            text = json.dumps(self._stats_locked(), indent=2)
            atomic_write_text(self.path, text, fsync=False)
        except OSError as error:  # a full disk must not fail a call already paid for
            log.warning("could not write %s: %s", self.path, error)

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
        """US dollars recorded so far, earlier attempts at the run (the file at `path`) included."""
        return float(self._before.get("spent_usd", 0.0)) + self.total.cost_usd

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

    def cap_message(self) -> str:
        """What the cap stopped, and how to raise it."""
        cap, spent = self.spend_cap_usd or 0.0, self.spent_usd
        where = " over every attempt at this run" if self._before else ""
        return (
            f"spend cap of ${cap:.4f} reached (spent ${spent:.4f}{where}); no new LLM calls "
            f"are made: rerun with a higher cap to finish, e.g. spend_cap_usd={2 * cap:g}"
        )

    def check_cap(self, model: str | None = None) -> None:
        """Raise `SpendCapReached` when the cap is reached; call before starting any call. The
        first refusal logs one warning (and saves the ledger); later ones are silent."""
        if not self.cap_reached:
            return
        message = self.cap_message()
        with self._lock:
            first = self.refused == 0
            self.refused += 1
            if first:
                self._save_locked()
        if first:
            log.warning("%s", message)
        raise SpendCapReached(message, model=model)

    def __repr__(self) -> str:
        return f"Ledger(spend_cap_usd={self.spend_cap_usd}, spent_usd={self.spent_usd:.6f})"
