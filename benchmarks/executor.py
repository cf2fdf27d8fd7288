"""In-process against the Ray executor: explaining and scoring a few hundred latents with a
scripted LLM that answers after a served model's latency, and a method that spends some CPU per
call (building prompts, parsing answers: what a worker process parallelises).

Each latent: one explanation (one call) and one score (`--score-calls` calls, one after another).
The same run is made in-process, on Ray with one worker (the executor's overhead), on Ray with
`--workers` workers, and on Ray with `--workers` workers and one call per Ray task (what the
executor did before it sent calls in batches of `--latents-per-task`); the local Ray cluster is
started once, before timing, as a running cluster is (worker start-up is inside the timings).
The runs need no activations (the methods read no records), so only the explain-and-score stage
is timed. A task's calls hold their places under `concurrency` until the task returns, so the
default concurrency (64) is several times workers x latents per task.

Figures (2-core machine shared with other jobs, load average 7-8 during these runs; seconds
noisy, ratios from one run):

    300 latents, 900 calls of 50 ms, 10 ms CPU per call, concurrency 64, 8 calls per task:
      in-process 15.20 s; Ray, 1 worker 14.11 s (0.93x); Ray, 2 workers 11.96 s (1.27x faster
      than in-process); 2 workers, one call per task 12.07 s (batching: 1.01x)
    400 latents, 1200 calls of 5 ms, 1 ms CPU per call, concurrency 64, 8 calls per task:
      in-process 5.91 s; Ray, 1 worker 6.46 s (1.09x); 2 workers 7.08 s; 2 workers, one call
      per task 8.42 s (batching: 1.19x faster)
    (the first figures at concurrency 16: in-process 16.13 s, 2 workers 16.71 s, one call per
      task 13.36 s: two tasks of 8 in flight leave slots idle until their slowest call ends)

    python benchmarks/executor.py [--latents 300] [--latency 0.05] [--cpu-ms 10] [--workers 2]
        [--concurrency 64] [--latents-per-task 8]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import saexplain
from saexplain.hookspecs import Register
from saexplain.models import (
    ChatRequest,
    Explanation,
    LatentRecord,
    LatentSelection,
    Message,
    RunConfig,
    Score,
)
from saexplain.pipeline import arun
from saexplain.protocols import MethodContext, Needs
from saexplain.testing import FakeBackend, FakeCoder, ScriptedProvider, fresh_plugin_manager


def burn(ms: float) -> None:
    """Hold the CPU for `ms` milliseconds (pure Python, holds the GIL as prompt code does)."""
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


class Explainer:
    name = "bench"
    needs = Needs(provider=True, records=False)

    def __init__(self, cpu_ms: float = 0.0) -> None:
        self.cpu_ms = cpu_ms

    async def explain(self, record: LatentRecord, ctx: MethodContext) -> Explanation:
        burn(self.cpu_ms)
        request = ChatRequest(messages=(Message(role="user", content=f"E {record.latent.index}"),))
        response = await ctx.provider("explainer").complete(request)
        return Explanation(latent=record.latent, explainer=self.name, text=response.choices[0].text)


class Scorer:
    name = "benchscore"
    needs = Needs(provider=True, records=False)

    def __init__(self, cpu_ms: float = 0.0, calls: int = 2) -> None:
        self.cpu_ms = cpu_ms
        self.calls = calls

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        answers = []
        for i in range(self.calls):
            burn(self.cpu_ms)
            content = f"S {explanation.text} {i}"
            request = ChatRequest(messages=(Message(role="user", content=content),))
            answers.append((await ctx.provider("scorer").complete(request)).choices[0].text)
        value = sum(a == "1" for a in answers) / len(answers)
        return Score(latent=record.latent, scorer=self.name, explainer=self.name, value=value)


class Methods:
    def __init__(self, cpu_ms: float, score_calls: int) -> None:
        self.cpu_ms, self.score_calls = cpu_ms, score_calls

    @saexplain.hookimpl
    def register_explainers(self, register: Register) -> None:
        register("bench", lambda: Explainer(self.cpu_ms))

    @saexplain.hookimpl
    def register_scorers(self, register: Register) -> None:
        register("benchscore", lambda: Scorer(self.cpu_ms, self.score_calls))


def answer(request: ChatRequest) -> str:
    text = request.messages[-1].content
    return f"feature {text.split()[1]}" if text.startswith("E ") else "1"


def coder(d_sae: int) -> FakeCoder:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, d_sae)).astype(np.float32)
    return FakeCoder(
        w,
        np.zeros(d_sae, np.float32),
        w.T.copy(),
        np.zeros(16, np.float32),
        hook="blocks.0.hook_resid_pre",
    )


def one_run(args: argparse.Namespace, out: Path, name: str, executor: Any) -> float:
    cfg = RunConfig(
        model="fake",
        coders=["fake"],
        dataset="none",
        latents=LatentSelection(start=0, stop=args.latents),
        explainers=["bench"],
        scorers=["benchscore"],
        concurrency=args.concurrency,
        output_dir=str(out),
        name=name,
        executor=executor,
    )
    llm = ScriptedProvider(answer, latency_s=args.latency)
    with fresh_plugin_manager() as pm:
        pm.register_plugin(Methods(args.cpu_ms, args.score_calls), name="bench")
        backend = FakeBackend(d_model=16, n_layers=2, vocab_size=64, seed=0)
        start = time.perf_counter()
        asyncio.run(
            arun(
                cfg,
                model=backend,
                coder=coder(args.latents),
                providers={"default": llm},
                progress=False,
                manager=pm,
            )
        )
        seconds = time.perf_counter() - start
    lines = (out / name / "scores.jsonl").read_text().count("\n")
    assert lines == args.latents, (name, lines)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latents", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--cpu-ms", type=float, default=10.0)
    parser.add_argument("--score-calls", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latents-per-task", type=int, default=8)
    args = parser.parse_args()

    import ray

    per_task = args.latents_per_task
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            local = one_run(args, out, "local", None)
            ray_n = {"name": "ray", "workers": args.workers}
            one = one_run(
                args, out, "ray1", {"name": "ray", "workers": 1, "latents_per_task": per_task}
            )
            many = one_run(args, out, "rayN", {**ray_n, "latents_per_task": per_task})
            # one call per Ray task: what the executor did before it sent batches
            unbatched = one_run(args, out, "rayN1", {**ray_n, "latents_per_task": 1})
    finally:
        ray.shutdown()
    calls = args.latents * (1 + args.score_calls)
    print(
        f"{args.latents} latents, {calls} calls of {args.latency * 1000:.0f} ms with "
        f"{args.cpu_ms:g} ms CPU each, concurrency {args.concurrency}, "
        f"{per_task} calls per Ray task"
    )
    print(
        f"in-process: {local:.2f} s; ray 1 worker: {one:.2f} s; ray {args.workers}: {many:.2f} s; "
        f"ray {args.workers}, one call per task: {unbatched:.2f} s"
    )
    print(
        f"RESULT executor latents={args.latents} in_process_s={local:.2f} ray1_s={one:.2f} "
        f"ray{args.workers}_s={many:.2f} ray{args.workers}_unbatched_s={unbatched:.2f} "
        f"speedup_vs_in_process={local / many:.2f}x ray1_overhead={one / local:.2f}x "
        f"batching_gain={unbatched / many:.2f}x"
    )


if __name__ == "__main__":
    main()
