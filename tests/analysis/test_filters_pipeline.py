"""The `filters:` run config section: flags in latents.jsonl and the summary, skipped latents
never explained, and the skipped count logged before any LLM call."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from saexplain.errors import ConfigError
from saexplain.models import LatentSelection, RunConfig
from saexplain.pipeline import arun, prepare
from saexplain.testing import FakeBackend, fresh_plugin_manager
from tests.analysis.planted import (
    DEAD,
    ORDINARY,
    POSITIONAL,
    UNIGRAM,
    PlantedKindsCoder,
    planted_corpus,
)
from tests.pipeline import toy


def config(tmp_path: Path, **kw: object) -> RunConfig:
    fields: dict[str, object] = dict(
        model="fake",
        coder="fake",
        dataset="planted corpus",
        n_tokens=32 * 150,
        context_length=32,
        latents=LatentSelection(indices=(*ORDINARY, UNIGRAM, POSITIONAL, DEAD)),
        explainers=["toy"],
        scorers=["toyscore"],
        records={
            "window": 16,
            "explanation": ["top:5"],
            "scoring": ["quantile:4"],
            "negatives": ["random:4"],
            "rare_below": 2,
        },
        filters={"skip": ["dead", "positional", "unigram"]},
        output_dir=str(tmp_path),
        name="run",
        concurrency=2,
    )
    fields.update(kw)
    return RunConfig.model_validate(fields)


@pytest.fixture
def manager():
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        yield pm


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


async def test_flagged_latents_are_skipped_before_any_llm_call(tmp_path, manager, caplog):
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=256)
    coder = PlantedKindsCoder(backend)
    llm = toy.llm()
    cfg = config(tmp_path)
    with caplog.at_level(logging.INFO, logger="saexplain"):
        await arun(
            cfg,
            model=backend,
            coder=coder,
            dataset=planted_corpus(),
            providers={"default": llm},
            progress=False,
        )
    run = tmp_path / "run"
    entries = {e["latent"]["index"]: e for e in lines(run / "latents.jsonl")}
    assert entries[UNIGRAM]["status"] == "filtered" and "unigram" in entries[UNIGRAM]["reason"]
    assert entries[POSITIONAL]["status"] == "filtered"
    assert entries[POSITIONAL]["filters"]["positional_mi"] > 0.05
    assert entries[DEAD]["filters"]["flags"] == ["dead"]
    for latent in ORDINARY:
        assert entries[latent]["status"] == "ok"
        assert entries[latent]["filters"]["flags"] == []
    explained = {e["latent"]["index"] for e in lines(run / "explanations.jsonl")}
    assert explained == set(ORDINARY)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["filters"] == {
        "n_checked": 5,
        "flagged": {"dead": 1, "positional": 1, "unigram": 1},
        "n_skipped": 3,
    }
    # the skipped count is logged before the first explanation is asked for
    messages = [r.getMessage() for r in caplog.records]
    at = next(i for i, m in enumerate(messages) if "skipped before any LLM call" in m)
    assert "3 of 5 latents skipped" in messages[at]
    first_llm = next(i for i, m in enumerate(messages) if m.startswith("explain and score"))
    assert at < first_llm


async def test_no_filters_section_computes_nothing(tmp_path, manager):
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=256)
    cfg = config(tmp_path, filters=None, latents=LatentSelection(indices=ORDINARY))
    await arun(
        cfg,
        model=backend,
        coder=PlantedKindsCoder(backend),
        dataset=planted_corpus(),
        providers={"default": toy.llm()},
        progress=False,
    )
    entries = lines(tmp_path / "run" / "latents.jsonl")
    assert entries and all(e.get("filters") is None for e in entries)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["filters"] is None


def test_bad_filters_fail_when_the_run_is_prepared(tmp_path, manager):
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=256)
    cfg = config(tmp_path, filters={"skip": ["positionl"]})
    with pytest.raises(ConfigError, match=r"filters\.skip"):
        prepare(cfg, model=backend, coder=PlantedKindsCoder(backend), dataset=planted_corpus())
