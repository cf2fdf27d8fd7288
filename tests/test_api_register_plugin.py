"""`register_plugin` in a notebook: running the cell again is harmless (the same object, or a
new one under the same name, replaces the old), a plugin that is also installed is not
registered twice, and nobody takes a built-in method's name without `override=True`."""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import pytest

from saexplain import hookimpl
from saexplain.errors import DuplicateComponentError, PluginLoadError, PluginLoadWarning
from saexplain.plugins import PluginManager, register_plugin
from saexplain.testing import fresh_plugin_manager


def explainer_plugin(name: str, answer: str, **options: Any) -> types.SimpleNamespace:
    @hookimpl
    def register_explainers(register: Any) -> None:
        register(name, lambda: answer, **options)

    return types.SimpleNamespace(register_explainers=register_explainers)


class Mine:
    """A plugin class, as a notebook cell defines it."""

    answer = "first"

    @hookimpl
    def register_explainers(self, register: Any) -> None:
        register("from-class", lambda: self.answer)


def test_registering_the_same_plugin_again_does_nothing():
    with fresh_plugin_manager(entry_points=[], builtins=(), environ={}) as pm:
        plugin = explainer_plugin("mine", "a")
        name = register_plugin(plugin, name="nb")
        assert register_plugin(plugin, name="nb") == name
        assert register_plugin(plugin) == name  # by object: the name it has
        assert pm.explainers.create("mine") == "a"
        assert [i.name for i in pm.info()] == ["nb"]


def test_rerunning_a_cell_replaces_the_plugin_of_that_name():
    with fresh_plugin_manager(entry_points=[], builtins=(), environ={}) as pm:
        register_plugin(explainer_plugin("mine", "old"), name="nb")
        register_plugin(explainer_plugin("mine", "new"), name="nb")  # the edited cell
        assert pm.explainers.create("mine") == "new"
        first = register_plugin(Mine())  # no name: instances of one class share one
        again = Mine()
        again.answer = "second"
        assert register_plugin(again) == first
        assert pm.explainers.create("from-class") == "second"
        assert [i.name for i in pm.info()] == ["nb", first]


def test_a_failed_replacement_keeps_the_plugin_it_would_replace():
    with fresh_plugin_manager(entry_points=[], builtins=(), environ={}) as pm:
        register_plugin(explainer_plugin("mine", "old"), name="nb")
        register_plugin(explainer_plugin("theirs", "x"), name="other")
        with pytest.raises(DuplicateComponentError):
            register_plugin(explainer_plugin("theirs", "new"), name="nb")
        assert pm.explainers.create("mine") == "old"


@dataclass
class Dist:
    name: str
    version: str


class EntryPoint:
    def __init__(self, name: str, target: object) -> None:
        self.name, self.dist, self.target = name, Dist(f"saexplain-{name}", "1.0"), target

    def load(self) -> object:
        return self.target


def test_a_plugin_also_installed_is_not_registered_twice():
    module = types.ModuleType("saexplain_mine")
    module.register_explainers = explainer_plugin("mine", "a").register_explainers  # type: ignore[attr-defined]
    pm = PluginManager(entry_points=[EntryPoint("mine", module)], builtins=(), environ={})
    assert pm.register_plugin(module) == "mine"  # pluggy used to raise a raw ValueError
    assert pm.register_plugin(module, name="saexplain_mine") == "mine"
    with pytest.raises(DuplicateComponentError, match="installed"):
        pm.register_plugin(explainer_plugin("other", "b"), name="mine")


def test_an_installed_plugin_cannot_take_a_built_in_name_without_override():
    taker = EntryPoint("taker", explainer_plugin("maxact", "not maxact"))
    pm = PluginManager(entry_points=[taker], environ={})
    with pytest.warns(PluginLoadWarning, match=r"built-in.*override=True"):
        component = pm.explainers.get("maxact")
    assert component.provenance.plugin == "saexplain.explainers"  # the built-in still works

    strict = PluginManager(entry_points=[taker], environ={"SAEXPLAIN_STRICT_PLUGINS": "1"})
    with pytest.raises(PluginLoadError, match="built-in"):
        strict.explainers.names()

    over = EntryPoint("over", explainer_plugin("maxact", "mine", override=True))
    pm = PluginManager(entry_points=[over], environ={})
    assert pm.explainers.create("maxact") == "mine"


def test_a_notebook_plugin_cannot_take_a_built_in_name_without_override():
    with fresh_plugin_manager(entry_points=[], environ={}) as pm:
        with pytest.raises(DuplicateComponentError, match="override=True"):
            register_plugin(explainer_plugin("maxact", "x"), name="nb")
        assert pm.explainers.get("maxact").provenance.plugin == "saexplain.explainers"
        register_plugin(explainer_plugin("maxact", "mine", override=True), name="nb")
        assert pm.explainers.create("maxact") == "mine"
        pm.unregister_plugin("nb")  # the built-in comes back
        assert pm.explainers.get("maxact").provenance.plugin == "saexplain.explainers"
