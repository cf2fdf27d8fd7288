"""Runs whose methods read no records (selfexplain, vocabproj, given) collect nothing: no dataset
is read, no store is made, and latents that never fire are explained like any other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import saexplain as sx
from saexplain.errors import ConfigError
from saexplain.explainers.selfexplain import SelfExplainer
from saexplain.models import LatentSelection
from saexplain.pipeline import arun, prepare
from saexplain.protocols import Needs, needs_of
from saexplain.report import RunResults
from saexplain.testing import (
    FakeBackend,
    PlantedValuesCoder,
    ScriptedProvider,
    competent_explainer,
)

from . import toy
from .test_pipeline import config

SELFEXPLAIN = {"name": "selfexplain", "settings": {"n_scales": 4, "max_new_tokens": 2}}
NEVER_FIRE = (0, 4, 11)  # no word is planted on these latents (toy.WORDS)


def world() -> tuple[FakeBackend, PlantedValuesCoder]:
    backend = FakeBackend(d_model=16, n_layers=4)
    coder = PlantedValuesCoder(backend, {i: {f" {w}": 1.0} for i, w in toy.WORDS.items()}, d_sae=12)
    return backend, coder


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_methods_declare_whether_they_read_records():
    assert Needs().records  # a method that says nothing else reads records, as before
    assert not needs_of(SelfExplainer()).records


async def test_selfexplain_only_run_reads_no_dataset_and_explains_latents_that_never_fire(
    tmp_path,
):
    backend, coder = world()
    latents = (1, *NEVER_FIRE)
    missing = str(tmp_path / "no-such-corpus.txt")  # collecting it would fail
    cfg = config(
        tmp_path,
        dataset=missing,
        latents=LatentSelection(indices=latents),
        explainers=[SELFEXPLAIN],
        scorers=[],
    )
    results = await arun(cfg, model=backend, coder=coder, progress=False)
    run = tmp_path / "run"
    assert not (run / "store").exists()
    assert not (run / "records.jsonl").exists()  # a later run with maxact builds real ones
    explanations = lines(run / "explanations.jsonl")
    assert sorted(e["latent"]["index"] for e in explanations) == sorted(latents)
    assert {e["status"] for e in explanations} <= {"ok", "failed"}, explanations
    assert json.loads((run / "manifest.json").read_text())["collected"] is False
    # the report renders without records, and the results read back
    assert (run / "report.html").is_file() and (run / "summary.json").is_file()
    assert results[0].explanations["selfexplain"].status in ("ok", "failed")
    assert sorted(ref.index for ref in RunResults.load(run).latents) == sorted(latents)

    # resume: nothing is explained twice, still nothing collected
    await arun(cfg, model=backend, coder=coder, progress=False)
    assert len(lines(run / "explanations.jsonl")) == len(latents)
    assert not (run / "store").exists()


async def test_a_run_that_also_needs_records_collects(tmp_path):
    backend, coder = world()
    texts = toy.world()[2]
    llm = {"default": ScriptedProvider(competent_explainer)}
    cfg = config(tmp_path, explainers=[SELFEXPLAIN], scorers=[])
    await arun(cfg, model=backend, coder=coder, dataset=texts, progress=False)
    run = tmp_path / "run"
    assert not (run / "store").exists()

    # the same run directory with maxact added: collected now, with real records
    mixed = config(tmp_path, explainers=[SELFEXPLAIN, "maxact"], scorers=[])
    await arun(mixed, model=backend, coder=coder, dataset=texts, providers=llm, progress=False)
    assert (run / "store").is_dir()
    assert json.loads((run / "manifest.json").read_text())["collected"] is True
    records = lines(run / "records.jsonl")
    assert {r["latent"]["index"] for r in records} == set(toy.WORDS)
    assert all(r["explanation_examples"] for r in records)
    by_method: dict[str, int] = {}
    for e in lines(run / "explanations.jsonl"):
        by_method[e["explainer"]] = by_method.get(e["explainer"], 0) + 1
    assert by_method == {"selfexplain": len(toy.WORDS), "maxact": len(toy.WORDS)}  # resumed


def test_sampled_latents_are_drawn_from_the_coders_width_with_the_run_seed(tmp_path):
    from saexplain.pipeline.stages import bare_records

    backend, coder = world()
    cfg = config(tmp_path, latents=LatentSelection(sample=5), explainers=[SELFEXPLAIN], scorers=[])
    p = prepare(cfg, model=backend, coder=coder)
    first = [r.latent.index for r in bare_records(p)]
    assert len(set(first)) == 5 and all(0 <= i < coder.d_sae for i in first)
    assert first == [r.latent.index for r in bare_records(p)]  # the run seed decides
    reseeded = prepare(cfg.model_copy(update={"seed": 1}), model=backend, coder=coder)
    assert first != [r.latent.index for r in bare_records(reseeded)]
    ranged = cfg.model_copy(update={"latents": LatentSelection(start=3, stop=6)})
    assert [r.latent.index for r in bare_records(prepare(ranged, model=backend, coder=coder))] == [
        3,
        4,
        5,
    ]


def test_a_frequency_band_needs_statistics(tmp_path):
    backend, coder = world()
    band = LatentSelection(sample=5, min_frequency=0.01)
    cfg = config(tmp_path, latents=band, explainers=[SELFEXPLAIN], scorers=[])
    with pytest.raises(ConfigError, match=r"min_frequency/max_frequency.*indices"):
        prepare(cfg, model=backend, coder=coder)


def test_notebook_selfexplain_shorthand_collects_nothing(tmp_path):
    backend, coder = world()
    results = sx.explain(
        backend,
        coder,
        latents=[2, 4],
        explainers="selfexplain",
        scorers=[],
        output_dir=tmp_path,  # the default dataset ("demo") is never read
        progress=False,
    )
    assert results.explainers == ["selfexplain"]
    assert {r.latent.index for r in results} == {2, 4}
    (run,) = tmp_path.iterdir()
    assert not (run / "store").exists()
