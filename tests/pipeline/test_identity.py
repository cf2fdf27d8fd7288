"""The identity of a run and of its inputs (issue 21): weights are identified by content, live
objects by their real names, pre-tokenized datasets are accepted, a short dataset is reported,
and the notebook API has the command line's defaults."""

from __future__ import annotations

import json
import logging
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import saexplain as sx
from saexplain.errors import ConfigError
from saexplain.models import RunConfig
from saexplain.pipeline import arun, prepare, run_path
from saexplain.plugins import PluginManager
from saexplain.testing import FakeBackend, PlantedValuesCoder, fresh_plugin_manager

from . import toy
from .test_pipeline import config

world = toy.world


@pytest.fixture
def manager() -> Iterator[PluginManager]:
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        yield pm


def quick(tmp_path: Path, **kw: Any) -> RunConfig:
    return config(tmp_path, **{"scorers": [], "n_tokens": 32 * 60, **kw})


async def run(cfg: RunConfig, backend: Any, coder: Any, dataset: Any) -> dict[int, str]:
    """Explanation text per latent index of one run."""
    results = await arun(
        cfg,
        model=backend,
        coder=coder,
        dataset=dataset,
        providers={"default": toy.llm()},
        progress=False,
    )
    lines = (Path(results.path) / "explanations.jsonl").read_text().splitlines()
    return {json.loads(x)["latent"]["index"]: json.loads(x)["text"] for x in lines}


def swap_cat_and_dog(coder: PlantedValuesCoder) -> None:
    """Edit the coder in place: latent 1 now fires on "dog", latent 2 on "cat"."""
    swap = {1: 2, 2: 1}
    coder._entries[:] = [(swap.get(i, i), e, v) for i, e, v in coder._entries]


# --- 1. weights are identified by content ---------------------------------------------------------


async def test_an_unnamed_run_after_editing_the_weights_in_place_is_a_new_run(tmp_path, manager):
    backend, coder, texts = world()
    first = await run(quick(tmp_path, name=None), backend, coder, texts)
    assert first[1] == "the word cat"
    swap_cat_and_dog(coder)
    second = await run(quick(tmp_path, name=None), backend, coder, texts)
    assert second[1] == "the word dog"  # not the stale "cat" of the first run
    assert len([d for d in tmp_path.iterdir() if d.is_dir()]) == 2


async def test_a_named_run_refuses_data_computed_from_other_weights(tmp_path, manager):
    backend, coder, texts = world()
    await run(quick(tmp_path), backend, coder, texts)
    swap_cat_and_dog(coder)
    with pytest.raises(ConfigError, match=r"computed from another coder .*choose another `name`"):
        await run(quick(tmp_path), backend, coder, texts)
    backend._blocks[0] *= 2.0  # the model's weights, edited in place
    swap_cat_and_dog(coder)  # the coder as it was: only the model differs now
    with pytest.raises(ConfigError, match=r"computed from another model "):
        await run(quick(tmp_path), backend, coder, texts)


async def test_another_sae_object_under_the_same_name_is_another_run(tmp_path, manager):
    backend, coder, texts = world()
    other = PlantedValuesCoder(backend, {1: {" dog": 1.0}, 2: {" cat": 1.0}}, d_sae=12)
    assert other.id == coder.id  # same id and hook: only the weights tell them apart
    await run(quick(tmp_path, name=None), backend, coder, texts)
    assert (await run(quick(tmp_path, name=None), backend, other, texts))[1] == "the word dog"


def test_fingerprints_are_recorded_and_stable(tmp_path, manager):
    backend, coder, texts = world()
    llm = {"default": toy.llm()}  # the core alone has no provider plugin
    p = prepare(
        quick(tmp_path), model=backend, coder=coder, dataset=texts, manager=manager, providers=llm
    )
    again = prepare(
        quick(tmp_path), model=backend, coder=coder, dataset=texts, manager=manager, providers=llm
    )
    assert set(p.config.fingerprints) == {"model", "coder", "dataset"}
    assert p.config.fingerprints == again.config.fingerprints
    assert run_path(p.config) == run_path(again.config)


# --- 2. real names --------------------------------------------------------------------------------


def test_live_saes_and_models_are_named_by_what_they_are():
    from saexplain.api import _coder_name, _model_name

    def sae(hook: str, **meta: str) -> Any:  # SAELens 6 style: cfg.metadata
        return types.SimpleNamespace(
            cfg=types.SimpleNamespace(
                metadata=types.SimpleNamespace(hook_name=hook, model_name="gpt2-small", **meta)
            )
        )

    assert _coder_name(sae("blocks.8.hook_resid_pre")) == "gpt2-small/blocks.8.hook_resid_pre"
    assert _coder_name(sae("blocks.8.hook_resid_pre", release="res-jb", sae_id="8")) == "res-jb/8"
    older = types.SimpleNamespace(cfg=types.SimpleNamespace(hook_name="blocks.3.hook_mlp_out"))
    assert _coder_name(older) == "SimpleNamespace/blocks.3.hook_mlp_out"
    assert _coder_name(sae("a")) != _coder_name(sae("b"))
    hf = types.SimpleNamespace(name_or_path="HuggingFaceTB/SmolLM2-135M")
    assert _model_name(hf) == "HuggingFaceTB/SmolLM2-135M"
    tl = types.SimpleNamespace(cfg=types.SimpleNamespace(model_name="gpt2"))
    assert _model_name(tl) == "gpt2"
    assert _model_name(object()) == "object"  # never the placeholder "model"


# --- 3. pre-tokenized datasets --------------------------------------------------------------------


class TensorLike:
    """What a torch tensor offers a core that imports no torch: the array protocol."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self._array if dtype is None else self._array.astype(dtype)


def token_rows(backend: FakeBackend, texts: list[str], width: int) -> np.ndarray:
    ids = [i for row in backend.tokenize(texts, prepend_bos=False).rows() for i in row]
    n = len(ids) // (width - 1)
    body = np.asarray(ids[: n * (width - 1)], dtype=np.int64).reshape(n, width - 1)
    return np.concatenate([np.zeros((n, 1), dtype=np.int64), body], axis=1)  # BOS first


@pytest.mark.parametrize("kind", ["numpy", "array protocol", "lists of ints"])
async def test_pre_tokenized_datasets_are_accepted(tmp_path, manager, kind):
    backend, coder, texts = world()
    rows = token_rows(backend, texts, 32)
    dataset: Any = {
        "numpy": rows,
        "array protocol": TensorLike(rows),
        "lists of ints": [list(map(int, r[1:])) for r in rows],  # documents, no BOS
    }[kind]
    explanations = await run(quick(tmp_path), backend, coder, dataset)
    assert explanations[1] == "the word cat"


def test_pre_tokenized_datasets_are_identified_by_content(tmp_path, manager):
    backend, coder, texts = world()
    rows = token_rows(backend, texts, 32)
    llm = {"default": toy.llm()}  # the core alone has no provider plugin
    a = prepare(
        quick(tmp_path, name=None),
        model=backend,
        coder=coder,
        dataset=rows,
        manager=manager,
        providers=llm,
    )
    b = prepare(
        quick(tmp_path, name=None),
        model=backend,
        coder=coder,
        dataset=TensorLike(rows[::-1].copy()),
        manager=manager,
        providers=llm,
    )
    assert a.config.fingerprints["dataset"].startswith("token-array")
    assert run_path(a.config) != run_path(b.config)


# --- 4. a dataset shorter than n_tokens -----------------------------------------------------------


async def test_a_short_dataset_says_how_many_tokens_it_gave(tmp_path, manager, caplog):
    backend, coder, texts = world()
    cfg = quick(tmp_path, n_tokens=10_000_000)
    with caplog.at_level(logging.INFO, logger="saexplain.store"):
        await run(cfg, backend, coder, texts)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    collected = manifest["tokens"]["collected"]
    assert manifest["tokens"]["requested"] == 10_000_000 and 0 < collected < 10_000_000
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning and f"after {collected} of the 10000000 tokens" in warning[0].getMessage()


# --- 5. one set of defaults -----------------------------------------------------------------------


def test_explain_has_the_command_lines_defaults(monkeypatch):
    seen: list[RunConfig] = []

    async def fake_arun(config: RunConfig, **kwargs: Any) -> None:
        seen.append(config)

    monkeypatch.setattr("saexplain.pipeline.arun", fake_arun)
    sx.explain(object(), object(), explainers="selfexplain", scorers=[], progress=False)
    cli = RunConfig(model="m", coder="c", dataset="d")
    assert (seen[0].n_tokens, seen[0].context_length) == (cli.n_tokens, cli.context_length)
