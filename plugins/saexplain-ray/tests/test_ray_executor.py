"""The Ray executor on a local cluster of 2 worker processes started here: a Ray run writes what
an in-process run writes, a worker killed mid-run loses and duplicates nothing, and the spend cap
holds across workers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

ray = pytest.importorskip("ray")

import ray_toy  # noqa: E402

from saexplain.errors import ConfigError  # noqa: E402
from saexplain.models import Explanation, LatentSelection, RunConfig, Score, Status  # noqa: E402
from saexplain.pipeline import arun  # noqa: E402
from saexplain.testing import ScriptedProvider, fresh_plugin_manager  # noqa: E402

WORKERS = 2


@pytest.fixture(scope="module")
def cluster():
    ray.cloudpickle.register_pickle_by_value(ray_toy)  # workers cannot import the test package
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def manager():
    with fresh_plugin_manager() as pm:
        pm.register_plugin(ray_toy, name="ray_toy")
        yield pm


def config(tmp_path: Path, name: str, **kw: Any) -> RunConfig:
    fields: dict[str, Any] = dict(
        model="fake",
        coder="fake",
        dataset="toy corpus",
        n_tokens=32 * 200,
        context_length=32,
        latents=LatentSelection(indices=tuple(ray_toy.WORDS)),
        explainers=["toy"],
        scorers=["toyscore"],
        records={
            "window": 16,
            "explanation": ["top:5"],
            "scoring": ["quantile:4"],
            "negatives": ["random:4"],
            "rare_below": 2,
        },
        output_dir=str(tmp_path),
        name=name,
        concurrency=4,
    )
    fields.update(kw)
    return RunConfig.model_validate(fields)


async def run(cfg: RunConfig, provider: Any, manager: Any) -> Path:
    backend, coder, texts = ray_toy.world()
    await arun(
        cfg,
        model=backend,
        coder=coder,
        dataset=texts,
        providers={"default": provider},
        progress=False,
        manager=manager,
    )
    return Path(cfg.output_dir) / str(cfg.name)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def results(run_dir: Path) -> tuple[Counter[tuple[Any, ...]], Counter[tuple[Any, ...]]]:
    """Every written line as (latent, explainer[, scorer], text or value, status), counted."""
    explanations = Counter(
        (e.latent.index, e.explainer, e.text, e.status)
        for e in map(Explanation.model_validate, lines(run_dir / "explanations.jsonl"))
    )
    scores = Counter(
        (s.latent.index, s.explainer, s.scorer, s.value, s.status)
        for s in map(Score.model_validate, lines(run_dir / "scores.jsonl"))
    )
    return explanations, scores


RAY = {"name": "ray", "address": "local", "workers": WORKERS}


async def test_a_ray_run_writes_what_an_in_process_run_writes(tmp_path, cluster, manager):
    # shuffled controls: the phased path (explain all, derange, score all) runs on Ray too
    local = await run(config(tmp_path, "local", shuffled_controls=True), ray_toy.llm(), manager)
    remote_cfg = config(tmp_path, "ray", shuffled_controls=True, executor=RAY)
    remote = await run(remote_cfg, ray_toy.llm(), manager)
    local_e, local_s = results(local)
    ray_e, ray_s = results(remote)
    assert ray_e == local_e and ray_s == local_s
    n = len(ray_toy.WORDS)
    assert sum(ray_e.values()) == 2 * n and set(ray_e.values()) == {1}  # toy + toy~shuffled
    assert sum(ray_s.values()) == 2 * n and set(ray_s.values()) == {1}
    assert all(status is Status.OK for *_, status in ray_s)
    # the usage came back to the run's one ledger: same money as in-process
    assert json.loads((remote / "spend.json").read_text())["spent_usd"] == pytest.approx(
        json.loads((local / "spend.json").read_text())["spent_usd"]
    )
    # resume: a second Ray run finds every pair done and submits nothing (the same LLM, one
    # without a single answer: any call would write an error line)
    before = (remote / "scores.jsonl").read_text()
    await run(remote_cfg, ScriptedProvider([]), manager)
    assert (remote / "explanations.jsonl").read_text().count("\n") == 2 * n
    assert (remote / "scores.jsonl").read_text() == before


async def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(tmp_path, cluster, manager):
    flag = tmp_path / "killed"
    # each worker's copy of the provider kills its process at its 6th call; the flag makes it
    # happen once: Ray restarts that worker and retries its unfinished calls there
    provider = ray_toy.KillingProvider(flag, at=6, latency_s=0.02)
    remote = await run(config(tmp_path, "ray", executor=RAY), provider, manager)
    assert flag.exists()  # a worker did die mid-run
    local = await run(config(tmp_path, "local"), ray_toy.llm(), manager)
    ray_e, ray_s = results(remote)
    local_e, local_s = results(local)
    n = len(ray_toy.WORDS)
    assert sum(ray_e.values()) == n and set(ray_e.values()) == {1}
    assert sum(ray_s.values()) == n and set(ray_s.values()) == {1}
    assert ray_e == local_e and ray_s == local_s


async def test_the_spend_cap_holds_across_workers(tmp_path, cluster, manager):
    cost, cap, concurrency = 0.01, 0.1, 4
    # 7 latents x (1 + 8) calls = $0.63 uncapped. Each job makes its calls one after another,
    # so at most `concurrency` calls are in flight when the cap is reached: as in-process, the
    # spend stays within cap + concurrency x cost.
    cfg = config(tmp_path, "ray", executor=RAY, spend_cap_usd=cap, concurrency=concurrency)
    remote = await run(cfg, ray_toy.PricedProvider(cost, latency_s=0.01), manager)
    spent = json.loads((remote / "spend.json").read_text())["spent_usd"]
    assert cap <= spent <= cap + concurrency * cost + 1e-9
    scores = [Score.model_validate(x) for x in lines(remote / "scores.jsonl")]
    explanations = [Explanation.model_validate(x) for x in lines(remote / "explanations.jsonl")]
    refused = [r for r in [*scores, *explanations] if "SpendCapReached" in (r.error or "")]
    assert refused, "the cap refused no call"


class BillingKiller(ray_toy.PricedProvider):
    """`PricedProvider` that bills each answered call (one line in `bill`, as the provider's
    invoice) and, once per run, kills its worker (SIGKILL) at the second call of a job that was
    already billed for one: that paid answer never returns to the driver."""

    def __init__(self, bill: Path, flag: Path, cost_usd: float, latency_s: float) -> None:
        super().__init__(cost_usd, latency_s)
        self.bill, self.flag = bill, flag
        self.billed: Counter[tuple[str, str]] = Counter()

    async def complete(self, request: Any) -> Any:
        import os
        import signal

        from saexplain.providers import current_latent, current_method

        job = (current_latent.get(), current_method.get())
        if self.billed[job] and not self.flag.exists():
            try:  # one process only, even if both workers get here at once
                os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        response = await super().complete(request)
        with self.bill.open("a") as f:
            f.write(f"{job}\n")
        self.billed[job] += 1
        return response


async def test_a_paid_call_whose_worker_died_is_in_spend_json_once(tmp_path, cluster, manager):
    import sys

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # ships BillingKiller
    bill, flag, cost = tmp_path / "bill", tmp_path / "killed", 0.01
    provider = BillingKiller(bill, flag, cost, latency_s=0.01)
    remote = await run(config(tmp_path, "ray", executor=RAY), provider, manager)
    assert flag.exists()  # a worker died holding a paid answer
    billed = bill.read_text().count("\n")
    n = len(ray_toy.WORDS)
    uninterrupted = n * (1 + 2 * ray_toy.N_SCORED)
    assert billed > uninterrupted  # the lost answer was paid for, and asked again
    spend = json.loads((remote / "spend.json").read_text())
    # every paid call, the dead worker's included, exactly once
    assert spend["calls"] == billed
    assert spend["spent_usd"] == pytest.approx(billed * cost)
    ray_e, ray_s = results(remote)
    assert sum(ray_e.values()) == n and set(ray_e.values()) == {1}
    assert sum(ray_s.values()) == n and set(ray_s.values()) == {1}


async def test_prompt_logs_under_ray_are_the_in_process_ones(tmp_path, cluster, manager):
    local = await run(config(tmp_path, "local", log_prompts=True), ray_toy.llm(), manager)
    cfg = config(tmp_path, "ray", log_prompts=True, executor={**RAY, "latents_per_task": 3})
    remote = await run(cfg, ray_toy.llm(), manager)

    def logs(run_dir: Path) -> dict[str, list[str]]:
        return {
            f.name: sorted(f.read_text().splitlines()) for f in (run_dir / "logs").glob("*.jsonl")
        }

    local_logs, ray_logs = logs(local), logs(remote)
    assert len(ray_logs) == len(ray_toy.WORDS)
    assert ray_logs == local_logs
    first = json.loads(next(iter(ray_logs.values()))[0])
    assert {"method", "provider", "model", "request", "response"} <= first.keys()


def test_provider_batches_under_ray_are_a_config_error_saying_what_to_do(tmp_path):
    from saexplain_ray.executor import provider_plans

    from saexplain.models import ProviderSpec
    from saexplain.providers import wrap_provider

    spec = ProviderSpec(provider="litellm", model="gpt-4o-mini", batch=True)

    built = SimpleNamespace(  # what `provider_plans` reads of a prepared run
        config=config(tmp_path, "batch", explainer_model=spec),
        providers={"explainer": wrap_provider(ScriptedProvider(["x"]), cache=False)},
    )
    with pytest.raises(ConfigError, match=r"drop `executor` to send batches in-process"):
        provider_plans(built)


def test_bad_settings_are_one_line_config_errors():
    from saexplain_ray import make_ray_executor

    with pytest.raises(ConfigError, match=r"executor 'ray': workers: .*greater than or equal to 1"):
        make_ray_executor(workers=0)
    with pytest.raises(ConfigError, match=r"executor 'ray': adress: Extra inputs"):
        make_ray_executor(adress="auto")
    with pytest.raises(ConfigError, match=r"executor 'ray': latents_per_task: .*greater"):
        make_ray_executor(latents_per_task=0)


def test_the_plugin_registers_the_executor_and_imports_no_ray():
    import subprocess
    import sys

    code = (
        "import sys; from saexplain.plugins import get_plugin_manager;"
        "pm = get_plugin_manager(); assert 'ray' in pm.executors.names(), pm.executors.names();"
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
