"""Provider batch APIs: a run's requests sent as discounted asynchronous batches.

When a run's `ProviderSpec.batch` is set, `wrap_provider` puts a `BatchLayer` between the answer
cleaning and the retries. The layer collects the calls the pipeline makes concurrently (many
latents at once) for a window (`BatchOptions.window_s` seconds, or until `max_requests` are
waiting), submits them as ONE batch through the provider's `BatchSubmitting` capability, polls
it every `poll_s` seconds, and resolves each waiting call with its answer. Everything above it
is unchanged: the response cache keeps each answer, the `Ledger` records its (discounted) cost,
so the spend cap counts batch spend.

The batches of a run live in its run directory, beside the ledger's `spend.json`:
`<run>/batches.jsonl`, one line per submitted batch (`{"event": "submitted", "batch_id",
"keys", "model"}`, the keys being the requests' content keys, `cache_key`) and one per batch
that reached a final state (`{"event": "final", "batch_id", "status"}`). Each line is appended
whole and fsynced. A crashed or stopped run that restarts asks for the same requests: a request
whose content key belongs to a batch that has not failed is not submitted again; its batch is
polled (or its results fetched again) instead, so nothing is paid twice.

Decisions, documented in docs/providers.md:
- a batch that fails, expires or is cancelled: the requests it did not answer are asked
  interactively (the inner layers: retries, limits, the spend cap), at the interactive price;
  the batch is not submitted again. A submission the provider refuses falls back the same way,
  and so do requests a batch API cannot hold (`score_text`, `prefill`).
- one item whose output line is an error, or is malformed, makes that one call fail with a
  `ProviderError` (the method records an error for it); the rest of the batch is used.
- the spend cap is checked before a request joins a batch; a batch is paid for when it
  completes, so the cap can be passed by at most the batches in flight (as with calls in
  flight). A crash between the provider accepting a batch and its journal line being written
  is the one window in which a rerun submits again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from saexplain.errors import ConfigError, ProviderError
from saexplain.files import writing
from saexplain.models import BatchOptions, ChatRequest, ChatResponse, Usage
from saexplain.protocols import BatchState, BatchSubmitting, Provider
from saexplain.providers.accounting import Ledger
from saexplain.providers.cache import cache_key
from saexplain.providers.layers import ProviderLayer

log = logging.getLogger("saexplain.providers")

BATCHES_FILE = "batches.jsonl"
_FAILED = frozenset({"failed", "expired", "cancelled"})
# Poll errors in a row (network, 5xx) before the batch is given up for this process.
_MAX_POLL_ERRORS = 5


def batch_options(batch: BatchOptions | Mapping[str, Any] | bool | None) -> BatchOptions | None:
    """`BatchOptions` from what a config or caller gives (true: the defaults)."""
    if batch is None or batch is False:
        return None
    if batch is True:
        return BatchOptions()
    if isinstance(batch, BatchOptions):
        return batch
    return BatchOptions.model_validate(dict(batch))


class BatchJournal:
    """`<run>/batches.jsonl`: which batch holds which content keys, and which batches ended."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        """Every whole line; a last line a crash cut short is ignored (it was never committed).
        A damaged line elsewhere raises `ValueError`: it names a batch already paid for."""
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().split(b"\n")
        lines.pop()  # b"" after the last newline, or a torn line
        out = []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError as error:
                raise ValueError(
                    f"{self.path} line {n} is damaged ({error}): it records a submitted batch; "
                    "repair or delete that line (a deleted batch may be paid for again)"
                ) from error
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def open_batches(self) -> dict[str, str]:
        """content key -> batch id, for every batch that has not failed, expired or been
        cancelled (a completed one can be fetched again at no cost)."""
        keys: dict[str, list[str]] = {}
        failed: set[str] = set()
        for entry in self.read():
            batch_id = str(entry.get("batch_id"))
            if entry.get("event") == "submitted":
                keys[batch_id] = [str(k) for k in entry.get("keys") or ()]
            elif entry.get("event") == "final" and entry.get("status") in _FAILED:
                failed.add(batch_id)
        return {k: b for b, ks in keys.items() if b not in failed for k in ks}

    def _append(self, entry: Mapping[str, Any]) -> None:
        line = (json.dumps(entry) + "\n").encode("utf-8")
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())  # the batch id is what saves paying again: commit it

    def submitted(self, batch_id: str, keys: list[str], model: str) -> None:
        self._append({"event": "submitted", "batch_id": batch_id, "model": model, "keys": keys})

    def final(self, batch_id: str, status: str) -> None:
        self._append({"event": "final", "batch_id": batch_id, "status": status})


_Waiter = asyncio.Future[str | None]  # resolves to the batch id, or None: ask interactively


class BatchLayer(ProviderLayer):
    """Sends the calls it receives through `batcher`'s batch API (see the module docstring);
    `inner` (retries, limits, spend cap, the provider) answers what a batch could not.

    `journal` is the `batches.jsonl` to use; without one, the file beside `ledger`'s persisted
    `spend.json` (the run directory) once the pipeline attaches it; with neither, batches are
    kept in memory only (a warning says a rerun cannot resume them). `submissions` counts the
    batches this layer submitted, `resumed` the calls answered by a batch of an earlier process.
    """

    def __init__(
        self,
        inner: Provider,
        batcher: BatchSubmitting,
        options: BatchOptions,
        ledger: Ledger,
        *,
        scope: Mapping[str, Any] | None = None,
        journal: Path | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(inner)
        self.batcher = batcher
        self.options = options
        self.ledger = ledger
        self.scope = dict(scope or {})
        self._journal_path = journal
        self._journal: BatchJournal | None = None
        self._known: dict[str, str] | None = None  # content key -> batch id
        self._sleep = sleep
        self._waiting: dict[str, tuple[ChatRequest, list[_Waiter]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._polls: dict[str, asyncio.Task[BatchState]] = {}
        self._served: dict[str, set[str]] = {}  # batch id -> keys already handed out once
        self._tasks: set[asyncio.Task[None]] = set()
        self.submissions = 0
        self.resumed = 0

    # --- the journal ------------------------------------------------------------------------

    def _journal_now(self) -> BatchJournal | None:
        if self._journal is None:
            path = self._journal_path
            if path is None and self.ledger.path is not None:
                path = self.ledger.path.parent / BATCHES_FILE
            if path is not None:
                self._journal = BatchJournal(path)
        return self._journal

    def _open_batches(self) -> dict[str, str]:
        if self._known is None:
            journal = self._journal_now()
            self._known = journal.open_batches() if journal is not None else {}
            if journal is None:
                log.warning(
                    "batch ids of %s are kept in memory only (no run directory): a rerun cannot "
                    "resume its batches",
                    self.model,
                )
        return self._known

    # --- one call ---------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> ChatResponse:
        if request.score_text is not None or request.prefill is not None:
            # batch APIs hold plain chat completions only: these go interactively
            return await self.inner.complete(request)
        key = cache_key(self.name, self.model, request, self.scope)
        batch_id = self._open_batches().get(key)
        if batch_id is not None:  # submitted before (maybe by a crashed run): never again
            self.resumed += 1
            return await self._answer(batch_id, key, request)
        self.ledger.check_cap(self.model)
        waiter: _Waiter = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, (request, []))[1].append(waiter)
        if len(self._waiting) >= self.options.max_requests:
            self._flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.options.window_s, self._flush)
        batch_id = await waiter
        if batch_id is None:
            return await self.inner.complete(request)
        return await self._answer(batch_id, key, request)

    def _flush(self) -> None:
        """Submit what is waiting as one batch (in a task of its own: a cancelled caller does
        not cancel a submission other calls wait for)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._waiting = self._waiting, {}
        if items:
            task = asyncio.get_running_loop().create_task(self._submit(items))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _submit(self, items: dict[str, tuple[ChatRequest, list[_Waiter]]]) -> None:
        batch_id: str | None = None
        try:
            batch_id = await self.batcher.submit_batch({k: r for k, (r, _) in items.items()})
        except ProviderError as error:
            log.warning(
                "submitting a batch of %d requests to %s failed (%s): asking them one by one",
                len(items),
                self.model,
                error,
            )
        except Exception as error:  # never leave the waiting calls hanging
            for _, waiters in items.values():
                for w in waiters:
                    if not w.done():
                        w.set_exception(error)
            raise
        if batch_id is not None:
            self.submissions += 1
            keys = list(items)
            journal = self._journal_now()
            if journal is not None:
                journal.submitted(batch_id, keys, self.model)
            self._open_batches().update(dict.fromkeys(keys, batch_id))
            log.info("submitted batch %s of %d requests to %s", batch_id, len(keys), self.model)
        for _, waiters in items.values():
            for w in waiters:
                if not w.done():
                    w.set_result(batch_id)

    async def _answer(self, batch_id: str, key: str, request: ChatRequest) -> ChatResponse:
        poll = self._polls.get(batch_id)
        if poll is None:
            poll = asyncio.get_running_loop().create_task(self._poll(batch_id))
            self._polls[batch_id] = poll
        state = await asyncio.shield(poll)  # one caller cancelled: the others keep polling
        result = state.results.get(key)
        if result is None and state.status == "completed":
            # a completed batch answers every request: this one's line was unreadable
            raise ProviderError(
                f"batch {batch_id} completed without a readable answer to this request",
                model=self.model,
            )
        if result is None:  # the batch failed or expired without this answer
            return await self.inner.complete(request)
        if isinstance(result, Exception):
            raise ProviderError(f"batch {batch_id}: {result}", model=self.model)
        served = self._served.setdefault(batch_id, set())
        if key in served:  # the same request twice in one batch: paid once
            free = Usage(
                prompt_tokens=result.usage.prompt_tokens,
                completion_tokens=result.usage.completion_tokens,
                cached_calls=1,
            )
            return result.model_copy(update={"usage": free})
        served.add(key)
        return result.model_copy()

    async def _poll(self, batch_id: str) -> BatchState:
        errors = 0
        while True:
            try:
                state = await self.batcher.poll_batch(batch_id)
                errors = 0
            except ProviderError as error:
                errors += 1
                if not error.retryable or errors >= _MAX_POLL_ERRORS:
                    # not journaled as final: a rerun polls this batch again
                    log.warning(
                        "polling batch %s failed (%s): asking interactively", batch_id, error
                    )
                    return BatchState("failed", detail=str(error))
                await self._sleep(self.options.poll_s)
                continue
            if state.done:
                journal = self._journal_now()
                if journal is not None:
                    journal.final(batch_id, state.status)
                if state.status in _FAILED:
                    log.warning(
                        "batch %s %s (%s): its %d unanswered requests are asked interactively",
                        batch_id,
                        state.status,
                        state.detail or "no detail",
                        sum(1 for k, b in self._open_batches().items() if b == batch_id)
                        - len(state.results),
                    )
                return state
            await self._sleep(self.options.poll_s)


def make_batch_layer(
    inner: Provider,
    provider: Provider,
    batch: BatchOptions | Mapping[str, Any] | bool | None,
    ledger: Ledger,
    *,
    scope: Mapping[str, Any] | None = None,
    journal: Path | None = None,
) -> Provider:
    """`inner` inside a `BatchLayer` when `batch` asks for one, else `inner` itself; a
    `ConfigError` when `provider` (the one under every layer) has no batch API to use."""
    options = batch_options(batch)
    if options is None:
        return inner
    factor = provider.batch_price_factor() if isinstance(provider, BatchSubmitting) else None
    if factor is None:
        raise ConfigError(
            f"batch: the {provider.name} provider has no batch API for {provider.model!r}; "
            "remove `batch` from its provider settings (batch APIs: OpenAI and OpenAI-compatible "
            "servers through litellm)"
        )
    assert isinstance(provider, BatchSubmitting)
    return BatchLayer(inner, provider, options, ledger, scope=scope, journal=journal)
