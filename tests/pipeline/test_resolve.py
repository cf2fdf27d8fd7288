"""Resolving a run: only what the chosen methods need is built, coders are found by a hook, and
the notebook API has one spelling for its explainers."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest

import saexplain as sx
from saexplain import hookimpl
from saexplain.errors import ConfigError, UnknownComponentError
from saexplain.hookspecs import Register
from saexplain.models import Explanation, LatentRecord
from saexplain.pipeline import arun, build_coder, parse_coder_spec, prepare
from saexplain.plugins import PluginManager
from saexplain.protocols import MethodContext, Needs
from saexplain.testing import FakeBackend, FakeCoder, PlantedValuesCoder, fresh_plugin_manager

from . import toy
from .test_pipeline import config


class ModelOnly:
    """An explainer that reads only the model: it declares so, and asks for no LLM."""

    name = "modelonly"
    needs = Needs(backend=True, coder=True)

    async def explain(self, record: LatentRecord, ctx: MethodContext) -> Explanation:
        assert ctx.backend is not None
        return Explanation(latent=record.latent, explainer=self.name, text="from the model")


class Undeclared(ModelOnly):
    """The same explainer without `needs`: assumed to use everything, an LLM included."""

    name = "undeclared"
    needs = None  # type: ignore[assignment]


@hookimpl
def register_explainers(register: Register) -> None:
    register("modelonly", ModelOnly)
    register("undeclared", Undeclared)


def builtins_only() -> PluginManager:
    """Built-in methods and nothing installed: no provider plugin at all."""
    return PluginManager(entry_points=[], environ={})


def test_methods_that_need_no_llm_build_no_provider(tmp_path):
    pm = builtins_only()
    pm.register_plugin(types.SimpleNamespace(register_explainers=register_explainers), "m")
    backend, coder, _ = toy.world()
    llm = {"provider": "nosuch"}
    no_llm = config(tmp_path, explainers=["modelonly"], scorers=[], explainer_model=llm)
    prepared = prepare(no_llm, model=backend, coder=coder, manager=pm)
    assert prepared.providers == {}
    undeclared = config(tmp_path, explainers=["undeclared"], scorers=[], explainer_model=llm)
    with pytest.raises(UnknownComponentError, match="nosuch"):
        prepare(undeclared, model=backend, coder=coder, manager=pm)


async def test_selfexplain_only_run_succeeds_without_any_provider_plugin(tmp_path):
    pm = builtins_only()
    assert pm.providers.names() == []
    backend = FakeBackend(d_model=16, n_layers=4)
    coder = PlantedValuesCoder(backend, {i: {f" {w}": 1.0} for i, w in toy.WORDS.items()}, d_sae=12)
    texts = toy.world()[2]
    selfexplain = {"name": "selfexplain", "settings": {"n_scales": 4, "max_new_tokens": 2}}
    cfg = config(tmp_path, explainers=[selfexplain], scorers=[])  # default explainer_model: litellm
    results = await arun(cfg, model=backend, coder=coder, dataset=texts, manager=pm, progress=False)
    run = tmp_path / "run"
    explanations = [json.loads(x) for x in (run / "explanations.jsonl").read_text().splitlines()]
    assert {e["latent"]["index"] for e in explanations} == set(toy.WORDS)
    assert {e["status"] for e in explanations} <= {"ok", "failed"}, explanations
    assert json.loads((run / "manifest.json").read_text())["providers"] == {}
    assert results.explainers == ["selfexplain"]


# --- coders found by detect_coder -----------------------------------------------------------------


class Source:
    """A coder source `mine` that claims SAE objects of its own and `rel/...` specs."""

    class SAE:
        pass

    def __init__(self) -> None:
        self.loaded: list[Any] = []
        self.asked: list[Any] = []

    @hookimpl
    def detect_coder(self, coder: object) -> str | None:
        self.asked.append(coder)
        if isinstance(coder, Source.SAE) or (isinstance(coder, str) and coder.startswith("rel/")):
            return "mine"
        return None

    @hookimpl
    def register_coders(self, register: Register) -> None:
        def load(spec: Any, *, backend: Any = None) -> FakeCoder:
            self.loaded.append(spec)
            return FakeCoder.random(16, 8, hook="blocks.0.hook_resid_pre")

        register("mine", load)
        register("other", load)


@pytest.fixture
def source(tmp_path):
    with fresh_plugin_manager(entry_points=[], builtins=(), environ={}) as pm:
        src = Source()
        pm.register_plugin(src, name="source")
        yield src, pm, config(tmp_path)


def test_bare_specs_pairs_and_live_objects_go_where_detect_coder_says(source):
    src, pm, cfg = source
    backend = FakeBackend(d_model=16, n_layers=2)
    sae = Source.SAE()
    for given in ("rel/blocks.0", ("rel", "blocks.0"), sae):
        build_coder(given, cfg, pm, backend)
    assert src.loaded == ["rel/blocks.0", "rel/blocks.0", sae]


def test_an_explicit_source_is_not_asked_about(source):
    src, pm, cfg = source
    build_coder("other:rel/x", cfg, pm, FakeBackend(d_model=16, n_layers=2))
    assert src.loaded == ["rel/x"] and src.asked == []


def test_unclaimed_coders_fail_listing_the_sources(source):
    _, pm, cfg = source
    backend = FakeBackend(d_model=16, n_layers=2)
    with pytest.raises(ConfigError, match=r"no coder source claims 'gpt2/x'.*\['mine', 'other'\]"):
        build_coder("gpt2/x", cfg, pm, backend)
    with pytest.raises(ConfigError, match="no coder source claims an object of type object"):
        build_coder(object(), cfg, pm, backend)


def test_parse_coder_spec():
    assert parse_coder_spec("saelens:rel/id") == ("saelens", "rel/id")
    assert parse_coder_spec("rel/id") == (None, "rel/id")
    assert parse_coder_spec("./dir:with/colon") == (None, "./dir:with/colon")


# --- the notebook API -----------------------------------------------------------------------------


def test_explain_has_one_spelling_for_its_explainers():
    with pytest.raises(TypeError, match=r"`explainers=`.*scorers=\[\]"):
        sx.explain(object(), object(), explainer="selfexplain")


def test_explain_takes_one_explainer_name_and_runs_it(tmp_path):
    backend, coder, texts = toy.world()
    with fresh_plugin_manager() as pm:
        pm.register_plugin(types.SimpleNamespace(register_explainers=register_explainers), "m")
        results = sx.explain(
            backend,
            coder,
            latents=sorted(toy.WORDS),
            explainers="modelonly",
            scorers=[],
            dataset=texts,
            n_tokens=32 * 100,
            context_length=32,
            records={"rare_below": 2},
            output_dir=str(tmp_path),
            progress=False,
        )
    assert results.explainers == ["modelonly"] and results.scorers == []
    assert Path(results.path).parent == tmp_path
