"""Provider batch APIs (`saexplain.providers.batch` and the litellm plugin's `batch.py`) against
a loopback fake of OpenAI's files and batches endpoints (`tests/faults/fake_batch.py`).

Each test sends concurrent calls through a wrapped `LiteLLMProvider` with `batch` on, as the
pipeline does, and checks what the fake server saw (batch and chat POSTs), the answers, the
ledger (the discounted price, the spend cap) and the run directory's `batches.jsonl`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("saexplain_litellm")  # the core-alone session skips these
pytest.importorskip("litellm")

from faults.fake_batch import COMPLETION_TOKENS, PROMPT_TOKENS, FakeBatchServer

from saexplain.errors import ConfigError, ProviderError, SpendCapReached
from saexplain.models import BatchOptions, ChatRequest, ChatResponse, Message
from saexplain.providers import Ledger, wrap_provider
from saexplain.providers.batch import BATCHES_FILE, BatchLayer
from saexplain.testing import ScriptedProvider

MODEL = "openai/gpt-4o-mini"  # priced in litellm's offline table
FAST = BatchOptions(window_s=0.2, poll_s=0.02)


def requests(n: int) -> list[ChatRequest]:
    return [
        ChatRequest(
            messages=(Message(role="user", content=f"Examples: the <<word{i}>> here.\nExplain"),)
        )
        for i in range(n)
    ]


def provider(server: FakeBatchServer) -> Any:
    from saexplain_litellm.litellm_provider import LiteLLMProvider

    return LiteLLMProvider(MODEL, api_base=server.url, api_key="sk-batch-test", timeout=10)


def wrapped(
    server: FakeBatchServer,
    run: Path,
    *,
    batch: BatchOptions | None = FAST,
    cap: float | None = None,
    cache: Any = False,
) -> Any:
    ledger = Ledger(cap, path=run / "spend.json")
    return wrap_provider(
        provider(server), cache=cache, ledger=ledger, batch=batch, retry={"base_delay": 0.01}
    )


async def ask(p: Any, reqs: list[ChatRequest]) -> list[ChatResponse | BaseException]:
    return await asyncio.gather(*(p.complete(r) for r in reqs), return_exceptions=True)


def batch_layer(p: Any) -> BatchLayer:
    while not isinstance(p, BatchLayer):
        p = p.inner
    return p


def journal(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / BATCHES_FILE).read_text().splitlines()]


def interactive_price() -> float:
    from saexplain_litellm.costs import price_per_token

    prices = price_per_token(MODEL)
    assert prices is not None
    return PROMPT_TOKENS * prices[0] + COMPLETION_TOKENS * prices[1]


async def test_batch_answers_equal_interactive_ones_at_half_the_price(tmp_path):
    reqs = requests(6)
    with FakeBatchServer().running() as server:
        batched = await ask(wrapped(server, tmp_path / "b"), reqs)
        assert (server.batch_posts, server.chat_posts) == (1, 0)  # one batch, no chat call
        interactive = await ask(wrapped(server, tmp_path / "i", batch=None), reqs)
        assert server.chat_posts == 6
    assert all(isinstance(r, ChatResponse) for r in batched + interactive)
    assert [r.text for r in batched] == [r.text for r in interactive]  # type: ignore[union-attr]
    for b, i in zip(batched, interactive, strict=True):
        assert isinstance(b, ChatResponse) and isinstance(i, ChatResponse)
        assert b.usage.calls == 1 and b.usage.prompt_tokens == PROMPT_TOKENS
        assert i.usage.cost_usd == pytest.approx(interactive_price())
        assert b.usage.cost_usd == pytest.approx(0.5 * interactive_price())
    spend = json.loads((tmp_path / "b" / "spend.json").read_text())
    assert spend["spent_usd"] == pytest.approx(6 * 0.5 * interactive_price())
    (submitted,) = journal(tmp_path / "b")[:1]
    assert submitted["event"] == "submitted" and len(submitted["keys"]) == 6


async def test_a_run_killed_after_submission_resumes_polling_without_paying_again(tmp_path):
    reqs = requests(5)
    run, cache = tmp_path / "run", tmp_path / "cache"
    with FakeBatchServer(polls_to_finish=1000).running() as server:
        first = wrapped(server, run, cache=cache)
        task = asyncio.ensure_future(ask(first, reqs))
        for _ in range(500):  # until the batch is submitted and journaled
            await asyncio.sleep(0.01)
            if server.batch_posts and (run / BATCHES_FILE).exists():
                break
        task.cancel()  # the run is stopped while its batch is in progress
        with pytest.raises(asyncio.CancelledError):
            await task
        for poll in batch_layer(first)._polls.values():  # its process is gone
            poll.cancel()
        assert server.batch_posts == 1
        server.polls_to_finish = server.retrieves + 2  # the provider finishes the batch later

        second = wrapped(server, run, cache=cache)  # the rerun: a new process, same run dir
        answers = await ask(second, reqs)
        assert all(isinstance(a, ChatResponse) for a in answers), answers
        assert server.batch_posts == 1, "the rerun submitted the batch again"
        assert server.chat_posts == 0
        layer = batch_layer(second)
        assert layer.resumed == 5 and layer.submissions == 0
        assert [e["event"] for e in journal(run)] == ["submitted", "final"]

        retrieves = server.retrieves
        third = wrapped(server, run, cache=cache)  # the answers landed in the response cache
        again = await ask(third, reqs)
        assert server.retrieves == retrieves and server.batch_posts == 1
    assert [a.text for a in again] == [a.text for a in answers]  # type: ignore[union-attr]
    assert all(a.usage.cached_calls == 1 for a in again)  # type: ignore[union-attr]


async def test_a_failed_batch_falls_back_to_interactive_calls(tmp_path):
    reqs = requests(4)
    with FakeBatchServer(outcome="failed").running() as server:
        answers = await ask(wrapped(server, tmp_path), reqs)
        assert (server.batch_posts, server.chat_posts) == (1, 4)
    assert all(isinstance(a, ChatResponse) for a in answers)
    assert all(
        a.usage.cost_usd == pytest.approx(interactive_price())  # type: ignore[union-attr]
        for a in answers
    )
    assert journal(tmp_path)[-1] == {"event": "final", "batch_id": "batch-1", "status": "failed"}


async def test_an_expired_batch_keeps_its_answers_and_asks_the_rest(tmp_path):
    reqs = requests(5)
    with FakeBatchServer(outcome="expired", expired_answers=2).running() as server:
        answers = await ask(wrapped(server, tmp_path), reqs)
        assert (server.batch_posts, server.chat_posts) == (1, 3)
    costs = sorted(round(a.usage.cost_usd / interactive_price(), 6) for a in answers)  # type: ignore[union-attr]
    assert costs == [0.5, 0.5, 1.0, 1.0, 1.0]


async def test_one_malformed_output_line_is_one_error_not_the_run(tmp_path):
    reqs = requests(5)
    with FakeBatchServer(malformed=1).running() as server:
        answers = await ask(wrapped(server, tmp_path), reqs)
        assert server.chat_posts == 0
    errors = [a for a in answers if isinstance(a, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], ProviderError)
    assert "without a readable answer" in str(errors[0])
    assert sum(isinstance(a, ChatResponse) for a in answers) == 4


async def test_the_spend_cap_counts_batch_spend(tmp_path):
    half = 0.5 * interactive_price()
    with FakeBatchServer().running() as server:
        p = wrapped(server, tmp_path, cap=2.5 * half)
        answers = await ask(p, requests(4))  # checked before joining: all four go
        assert all(isinstance(a, ChatResponse) for a in answers)
        assert p.ledger.spent_usd == pytest.approx(4 * half)
        with pytest.raises(SpendCapReached):
            await p.complete(requests(5)[4])
        assert server.batch_posts == 1


async def test_a_full_window_is_submitted_at_once(tmp_path):
    options = BatchOptions(max_requests=2, window_s=0.2, poll_s=0.02)
    with FakeBatchServer().running() as server:
        answers = await ask(wrapped(server, tmp_path, batch=options), requests(5))
        assert server.batch_posts == 3  # 2 + 2 when full, the last one when its window ends
    assert all(isinstance(a, ChatResponse) for a in answers)
    assert sorted(len(e["keys"]) for e in journal(tmp_path) if e["event"] == "submitted") == [
        1,
        2,
        2,
    ]


def test_batch_on_a_provider_without_a_batch_api_is_a_config_error():
    with pytest.raises(ConfigError, match="no batch API"):
        wrap_provider(ScriptedProvider(lambda r: "x"), cache=False, batch=True)
    from saexplain_litellm.litellm_provider import LiteLLMProvider

    mocked = LiteLLMProvider(MODEL, mock_response="hi")  # litellm's offline mock has no server
    with pytest.raises(ConfigError, match="no batch API"):
        wrap_provider(mocked, cache=False, batch={"window_s": 1})
