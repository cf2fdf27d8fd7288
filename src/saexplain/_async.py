"""Async inside, notebook-safe outside.

Library code is async; `run_sync` drives a coroutine to completion from ordinary code, also when
an event loop already runs in this thread (Jupyter, IPython), where `asyncio.run` would refuse.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion and return its result, whether or not a loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A loop is already running here: run ours on a worker thread with its own loop, carrying
    # the caller's context variables along.
    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="saexplain-sync") as pool:
        return pool.submit(context.run, asyncio.run, coro).result()


def syncify(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Make a blocking twin of an async function (`explain` from `aexplain`)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(fn(*args, **kwargs))

    wrapper.__doc__ = (
        f"Blocking form of `{fn.__name__}`; safe inside Jupyter.\n\n{fn.__doc__ or ''}"
    )
    return wrapper


async def bounded_map(
    fn: Callable[[T], Awaitable[R]], items: Iterable[T], *, limit: int
) -> list[R]:
    """`[await fn(x) for x in items]`, running at most `limit` calls at once, order kept."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    semaphore = asyncio.Semaphore(limit)

    async def one(item: T) -> R:
        async with semaphore:
            return await fn(item)

    return list(await asyncio.gather(*(one(item) for item in items)))
