"""Provider throughput against a fake OpenAI-compatible server with fixed latency.

A child process serves `/v1/chat/completions` on 127.0.0.1, answering every request after a fixed
200 ms; it stops itself after a bounded number of requests or a deadline. The saexplain litellm
provider (real litellm client, HTTP over loopback, no cache) sends bursts of requests with
concurrency 1, 16 and 64. The ideal throughput at concurrency c is c / latency; the ratio printed
is achieved / ideal (1.0 = the provider layer adds no overhead and no serialization). A bare
aiohttp client is measured in the same run as a baseline (what loopback and the server allow).

Run from the repository root: `python benchmarks/providers.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import socket
import sys
import time

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "WANDB_MODE": "disabled",
}.items():
    os.environ.setdefault(_key, _value)

LATENCY_S = 0.2
CONCURRENCIES = (1, 16, 64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int, latency: float, max_requests: int, deadline_s: float, ready) -> None:
    """The fake server (child process): fixed latency, bounded requests, stops itself."""
    from aiohttp import web

    state = {"served": 0}

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(latency)
        state["served"] += 1
        if state["served"] >= max_requests:
            stop.set()
        n = int(body.get("n", 1))
        payload = {
            "id": f"chatcmpl-{state['served']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": "fake answer"},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
                for i in range(n)
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        }
        return web.json_response(payload)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", completions)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        ready.set()
        with contextlib.suppress(TimeoutError):  # the deadline: stop even if requests stop coming
            await asyncio.wait_for(stop.wait(), timeout=deadline_s)
        await asyncio.sleep(0.5)  # let the last responses flush
        await runner.cleanup()

    stop = asyncio.Event()
    asyncio.run(main())


async def burst(provider, concurrency: int, rounds: int) -> tuple[int, float]:
    """`concurrency` workers each sending `rounds` requests back to back; (requests, seconds)."""
    from saexplain.models import ChatRequest, Message

    async def worker(w: int) -> None:
        for r in range(rounds):
            request = ChatRequest(
                messages=(Message(role="user", content=f"c{concurrency} w{w} r{r}"),), max_tokens=8
            )
            response = await provider.complete(request)
            assert response.text == "fake answer"

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return concurrency * rounds, time.perf_counter() - start


async def raw_burst(port: int, concurrency: int, rounds: int) -> tuple[int, float]:
    """Baseline: a bare aiohttp client posting the same requests (no provider layer)."""
    import aiohttp

    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(w: int) -> None:
            for r in range(rounds):
                body = {"model": "fake", "messages": [{"role": "user", "content": f"{w} {r}"}]}
                async with session.post(url, json=body) as resp:
                    data = await resp.json()
                    assert data["choices"][0]["message"]["content"] == "fake answer"

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return concurrency * rounds, time.perf_counter() - start


async def run(port: int, rounds: int) -> dict[str, dict[int, tuple[int, float]]]:
    import litellm
    from saexplain_litellm.litellm_provider import LiteLLMProvider

    from saexplain.providers import wrap_provider

    # price the fake model like a hosted one, so cost accounting runs as it does in real use
    litellm.register_model(
        {
            "openai/fake-model": {
                "input_cost_per_token": 1e-7,
                "output_cost_per_token": 4e-7,
                "litellm_provider": "openai",
                "mode": "chat",
            }
        }
    )
    providers = {
        label: wrap_provider(  # the core's middleware, as a run uses it (without the cache)
            LiteLLMProvider(
                "openai/fake-model",
                api_base=f"http://127.0.0.1:{port}/v1",
                api_key="sk-fake-benchmark-key-000000",
                direct_http=direct,
            ),
            cache=False,
            max_concurrency=max(CONCURRENCIES),
        )
        for label, direct in (("provider", True), ("via litellm", False))
    }
    results: dict[str, dict[int, tuple[int, float]]] = {"bare client": {}}
    for label, provider in providers.items():
        await burst(provider, 4, 1)  # warm-up: client construction, imports, connections
        results[label] = {}
    for c in CONCURRENCIES:
        results["bare client"][c] = await raw_burst(port, c, rounds)
        for label, provider in providers.items():
            results[label][c] = await burst(provider, c, rounds)
    for provider in providers.values():
        assert provider.retry_stats.retries == 0, provider.retry_stats
        assert provider.usage.cost_usd > 0, "cost accounting did not run"
        await provider.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="requests per worker per level")
    args = parser.parse_args()
    port = _free_port()
    total = 8 + 3 * sum(c * args.rounds for c in CONCURRENCIES)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    server = ctx.Process(target=serve, args=(port, LATENCY_S, total, 240.0, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(60):
            sys.exit("fake server did not start")
        results = asyncio.run(run(port, args.rounds))
    finally:
        server.join(10)
        if server.is_alive():
            server.terminate()
    print(f"fake OpenAI-compatible server, fixed latency {LATENCY_S * 1000:.0f} ms, loopback")
    header = f"{'client':>12} {'concurrency':>11} {'requests':>8} {'seconds':>8} {'req/s':>8}"
    print(f"{header} {'ideal':>8} {'ratio':>6}")
    ratios: dict[int, float] = {}
    for label, rows in results.items():
        for c, (n, seconds) in rows.items():
            achieved = n / seconds
            ideal = c / LATENCY_S
            if label == "provider":  # direct_http=True, the OpenAI-compatible fast path
                ratios[c] = achieved / ideal
            print(
                f"{label:>12} {c:>11} {n:>8} {seconds:>8.2f} {achieved:>8.1f} {ideal:>8.1f} "
                f"{achieved / ideal:>6.3f}"
            )
    print(json.dumps({f"c{c}": round(r, 3) for c, r in ratios.items()}))
    print(
        "RESULT providers "
        + " ".join(f"c{c}={r:.3f}" for c, r in ratios.items())
        + " target >=0.9 of ideal concurrency/latency"
    )


if __name__ == "__main__":
    main()
