"""Whole runs against loopback fakes of OpenAI-compatible servers, through the litellm plugin:
a run whose provider spec says `batch: true` equals the same run made interactively, and a run
against a served model (vLLM-style `hosted_vllm/<model>` with `api_base`) at concurrency 16 keeps
about 16 requests in flight. The toy world of `tests/pipeline` (no torch) with the built-in
`maxact` explainer and `detection` scorer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("saexplain_litellm")  # the core-alone session skips these

from faults.fake_batch import FakeBatchServer
from pipeline import toy

from saexplain.models import RunConfig
from saexplain.pipeline import arun
from saexplain.providers.batch import BATCHES_FILE
from saexplain.testing import fresh_plugin_manager


def config(tmp_path: Path, name: str, spec: dict[str, Any], concurrency: int = 4) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": "fake",
            "coder": "fake",
            "dataset": "toy corpus",
            "n_tokens": 32 * 200,
            "context_length": 32,
            "latents": {"indices": list(toy.WORDS)},
            "explainers": ["maxact"],
            "scorers": [{"name": "detection", "settings": {"batch_size": 1}}],
            "records": {
                "window": 16,
                "explanation": ["top:5"],
                "scoring": ["quantile:4"],
                "negatives": ["random:4"],
            },
            "explainer_model": spec,
            "output_dir": str(tmp_path),
            "name": name,
            "concurrency": concurrency,
            "max_error_rate": 1.0,
        }
    )


async def run(cfg: RunConfig) -> dict[str, list[dict[str, Any]]]:
    backend, coder, texts = toy.world()
    with fresh_plugin_manager():
        await arun(cfg, model=backend, coder=coder, dataset=texts, progress=False)
    out = Path(cfg.output_dir) / cfg.name
    return {
        kind: [json.loads(x) for x in (out / f"{kind}.jsonl").read_text().splitlines()]
        for kind in ("explanations", "scores")
    }


def essence(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """What must not depend on how the requests were sent."""
    return {
        "explanations": sorted((e["latent"]["index"], e["text"]) for e in results["explanations"]),
        "scores": sorted(
            (s["latent"]["index"], s["status"], s["value"], len(s["predictions"]))
            for s in results["scores"]
        ),
    }


async def test_a_batch_run_equals_an_interactive_run(tmp_path):
    with FakeBatchServer().running() as server:
        settings = {"api_base": server.url, "api_key": "sk-test", "logprobs": False}
        spec = {"provider": "litellm", "model": "openai/gpt-4o-mini", "settings": settings}
        batch = {**spec, "batch": {"window_s": 0.3, "poll_s": 0.02}}
        batched = await run(config(tmp_path, "batched", batch))
        posts = server.batch_posts
        assert server.chat_posts == 0
        # its own answers, not the batched run's from the response cache
        fresh = {**spec, "settings": {**settings, "cache": False}}
        interactive = await run(config(tmp_path, "interactive", fresh))
        assert server.chat_posts > 0 and server.batch_posts == posts
    assert 2 <= posts <= 4  # explanations, then scoring: a few windows, not one per call
    assert essence(batched) == essence(interactive)
    assert all(s["status"] == "ok" for s in batched["scores"])
    assert len(batched["scores"]) == len(toy.WORDS)
    batch_cost = json.loads((tmp_path / "batched" / "spend.json").read_text())["spent_usd"]
    full_cost = json.loads((tmp_path / "interactive" / "spend.json").read_text())["spent_usd"]
    assert batch_cost == pytest.approx(0.5 * full_cost)
    lines = (tmp_path / "batched" / BATCHES_FILE).read_text().splitlines()
    assert sum('"submitted"' in x for x in lines) == posts


async def test_a_served_model_is_kept_busy_at_concurrency_16(tmp_path):
    with FakeBatchServer(chat_delay_s=0.4).running() as server:
        settings = {"api_base": server.url, "max_concurrency": 16, "logprobs": False}
        spec = {"provider": "litellm", "model": "hosted_vllm/smollm2", "settings": settings}
        results = await run(config(tmp_path, "served", spec, concurrency=16))
        in_flight, calls = server.max_in_flight, server.chat_posts
    assert calls >= 40
    assert 14 <= in_flight <= 16, in_flight  # the server was kept busy, and never flooded
    assert len(results["scores"]) == len(toy.WORDS)
    assert all(s["status"] == "ok" for s in results["scores"])


def test_estimate_shows_the_interactive_and_the_batch_price(tmp_path, capsys):
    from saexplain.cli import main

    _, _, texts = toy.world()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(texts))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"""
model: toy
backend: toyfake
coder: "toyplanted:all"
dataset: {corpus}
n_tokens: 6400
context_length: 32
latents: {{indices: [1, 2, 3]}}
explainers: [maxact]
scorers: [detection]
explainer_model:
  provider: litellm
  model: openai/gpt-4o-mini
  settings: {{api_base: "http://127.0.0.1:9/v1", logprobs: false}}
records: {{window: 16, explanation: ["top:5"], scoring: ["quantile:4"], negatives: ["random:4"]}}
output_dir: {tmp_path / "runs"}
name: estimated
"""
    )
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy.Stack(), name="toystack")
        assert main(["estimate", str(cfg), "--json", "-q"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert main(["estimate", str(cfg), "-q"]) == 0
        table = capsys.readouterr().out
    total = result["total"]
    assert total["cost_usd"] > 0
    assert total["batch_cost_usd"] == pytest.approx(0.5 * total["cost_usd"])
    assert "batch $" in table and f"{total['batch_cost_usd']:.4f}" in table
