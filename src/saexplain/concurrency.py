"""One lock per model: how methods and pipeline stages share a backend safely.

Torch backends attach hooks to one shared model, so two edited passes running at once would see
each other's hooks. The backend owns a re-entrant lock (`saexplain.protocols.ModelLocking`), and
all model work takes it:

    logits = await run_model(ctx.backend, ctx.backend.logits, tokens, [edit])   # in a method

    with model_lock(backend):                                                  # synchronous code
        acts = backend.latent_acts(tokens, [coder])

`run_model` also keeps the event loop free while the model computes, so LLM calls of other
latents proceed meanwhile. A backend without its own lock shares one process-wide lock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from saexplain.protocols import ModelLocking

__all__ = ["model_lock", "run_model"]

P = ParamSpec("P")
T = TypeVar("T")

# For backends that bring no lock: serialising all of them together is safe, if slower.
_SHARED_LOCK = threading.RLock()


def model_lock(backend: object) -> threading.RLock:
    """The lock serialising work on `backend`'s model: its own, else the process-wide one."""
    if isinstance(backend, ModelLocking):
        return backend.model_lock
    return _SHARED_LOCK


async def run_model(backend: object, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` in a worker thread, holding `backend`'s model lock."""
    lock = model_lock(backend)

    def locked() -> T:
        with lock:
            return fn(*args, **kwargs)

    return await asyncio.to_thread(locked)
