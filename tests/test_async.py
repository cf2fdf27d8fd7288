import asyncio
import contextvars

import pytest

from saexplain._async import bounded_map, run_sync, syncify


async def add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def test_run_sync_without_a_loop():
    assert run_sync(add(1, 2)) == 3


async def test_sync_wrapper_inside_a_running_loop():
    # What a Jupyter cell does: a loop is already running in this thread.
    asyncio.get_running_loop()
    assert syncify(add)(2, 3) == 5


VAR = contextvars.ContextVar("VAR", default="unset")


async def read_var() -> str:
    return VAR.get()


async def test_context_variables_reach_the_worker_thread():
    VAR.set("from caller")
    assert run_sync(read_var()) == "from caller"


def test_syncify_keeps_name_and_propagates_errors():
    async def boom() -> None:
        raise KeyError("x")

    wrapped = syncify(boom)
    assert wrapped.__name__ == "boom" and "Blocking form" in (wrapped.__doc__ or "")
    with pytest.raises(KeyError):
        wrapped()


async def test_bounded_map_limits_concurrency_and_keeps_order():
    running = peak = 0

    async def work(x: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return x * 2

    assert await bounded_map(work, range(10), limit=3) == [x * 2 for x in range(10)]
    assert peak == 3
    with pytest.raises(ValueError):
        await bounded_map(work, [1], limit=0)
