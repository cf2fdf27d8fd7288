"""The plugin manager: lazy loading, isolation, allow/deny, collisions, provenance."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Any

import pytest

from saexplain import hookimpl
from saexplain.errors import (
    AmbiguousComponentError,
    DuplicateComponentError,
    PluginLoadError,
    PluginLoadWarning,
    UnknownComponentError,
)
from saexplain.plugins import PluginManager, get_plugin_manager, register_plugin
from saexplain.testing import fresh_plugin_manager


@dataclass
class FakeDist:
    name: str
    version: str


class FakeEntryPoint:
    """Stands in for importlib.metadata.EntryPoint: no installation needed."""

    def __init__(self, name: str, target: Any, dist: str | None = None, version: str = "1.0"):
        self.name = name
        self.dist = FakeDist(dist or f"saexplain-{name}", version)
        self._target = target
        self.loads = 0

    def load(self) -> Any:
        self.loads += 1
        if isinstance(self._target, BaseException):
            raise self._target
        return self._target


def make_plugin(**components: list[str]) -> types.SimpleNamespace:
    """A plugin object registering the given names per kind (kind -> names)."""
    hooks: dict[str, Any] = {}
    for kind, names in components.items():

        def impl(register, _names=tuple(names), _kind=kind):
            for n in _names:
                register(n, lambda *a, _n=n, **k: (_n, a, k), description=f"{_kind} {n}")

        impl.__name__ = f"register_{kind}s"
        hooks[f"register_{kind}s"] = hookimpl(impl)
    return types.SimpleNamespace(**hooks)


def manager(*eps: FakeEntryPoint, env: dict[str, str] | None = None) -> PluginManager:
    return PluginManager(entry_points=eps, builtins=(), environ=env or {})


def test_good_plugin_loads_with_provenance():
    ep = FakeEntryPoint("good", make_plugin(explainer=["maxact2"], scorer=["fuzz2"]), version="2.3")
    pm = manager(ep)
    component = pm.explainers.get("maxact2")
    assert component.provenance.plugin == "good"
    assert component.provenance.distribution == "saexplain-good"
    assert component.provenance.version == "2.3"
    assert pm.scorers.create("fuzz2", 1, x=2) == ("fuzz2", (1,), {"x": 2})
    (info,) = pm.info()
    assert info.state == "loaded" and info.components == {
        "explainer": ["maxact2"],
        "scorer": ["fuzz2"],
    }
    assert info.hooks == ["register_explainers", "register_scorers"]


def test_loading_is_lazy_and_happens_once():
    ep = FakeEntryPoint("good", make_plugin(explainer=["a"]))
    pm = manager(ep)
    assert ep.loads == 0  # constructing the manager imports nothing
    pm.explainers.names()
    pm.scorers.names()
    pm.info()
    assert ep.loads == 1


def test_broken_plugin_is_skipped_with_a_warning_naming_dist_version_and_hint():
    broken = FakeEntryPoint(
        "broken", ModuleNotFoundError("No module named 'torch'", name="torch"), version="0.9"
    )
    good = FakeEntryPoint("good", make_plugin(explainer=["a"]))
    pm = manager(broken, good)
    with pytest.warns(PluginLoadWarning) as caught:
        names = pm.explainers.names()
    assert names == ["a"]  # the host survives and loads the others
    message = str(caught[0].message)
    assert "saexplain-broken 0.9" in message and "torch" in message and "pip install" in message
    info = {i.name: i for i in pm.info()}["broken"]
    assert info.state == "failed" and "torch" in (info.hint or "")


def test_strict_mode_raises_on_broken_plugin():
    broken = FakeEntryPoint("broken", ImportError("boom"))
    pm = manager(broken, env={"SAEXPLAIN_STRICT_PLUGINS": "1"})
    with pytest.raises(PluginLoadError, match="boom"):
        pm.explainers.names()


def test_plugin_whose_register_hook_raises_leaves_nothing_behind():
    @hookimpl
    def register_explainers(register):
        register("half", lambda: None)
        raise RuntimeError("bug in plugin")

    ep = FakeEntryPoint("buggy", types.SimpleNamespace(register_explainers=register_explainers))
    pm = manager(ep)
    with pytest.warns(PluginLoadWarning, match="bug in plugin"):
        assert "half" not in pm.explainers
    assert pm.explainers.names() == []


def test_unknown_hook_name_is_reported_with_suggestion():
    @hookimpl
    def register_explainer(register):  # missing "s"
        pass

    ep = FakeEntryPoint("typo", types.SimpleNamespace(register_explainer=register_explainer))
    pm = manager(ep)
    with pytest.warns(PluginLoadWarning, match="did you mean 'register_explainers'"):
        info = pm.info()
    assert info[0].state == "failed"


def test_duplicate_name_between_installed_plugins_is_ambiguous_not_order_dependent():
    a = FakeEntryPoint("a", make_plugin(scorer=["detection"]))
    b = FakeEntryPoint("b", make_plugin(scorer=["detection", "other"]))
    for order in ((a, b), (b, a)):
        pm = manager(*order)
        with pytest.warns(PluginLoadWarning, match="already registered"):
            assert "other" in pm.scorers
        with pytest.raises(AmbiguousComponentError) as err:
            pm.scorers.get("detection")
        assert "saexplain-a" in str(err.value) and "saexplain-b" in str(err.value)


def test_strict_mode_raises_on_duplicate():
    a = FakeEntryPoint("a", make_plugin(scorer=["detection"]))
    b = FakeEntryPoint("b", make_plugin(scorer=["detection"]))
    pm = manager(a, b, env={"SAEXPLAIN_STRICT_PLUGINS": "true"})
    with pytest.raises(PluginLoadError, match="already registered"):
        pm.scorers.names()


def test_override_replaces_explicitly_and_records_it():
    @hookimpl
    def register_scorers(register):
        register("detection", lambda: "mine", override=True)

    base = FakeEntryPoint("base", make_plugin(scorer=["detection"]))
    over = FakeEntryPoint("over", types.SimpleNamespace(register_scorers=register_scorers))
    pm = manager(base, over)
    component = pm.scorers.get("detection")
    assert component.factory() == "mine"
    assert component.provenance.plugin == "over"
    assert component.replaced is not None and component.replaced.plugin == "base"


def test_deny_list_blocks_without_importing():
    ep = FakeEntryPoint("blocked", make_plugin(explainer=["x"]))
    pm = manager(ep, env={"SAEXPLAIN_DISABLE_PLUGINS": "blocked"})
    assert pm.explainers.names() == []
    assert ep.loads == 0
    assert pm.info()[0].state == "blocked"


def test_allow_list_matches_entry_point_or_distribution_name():
    a = FakeEntryPoint("a", make_plugin(explainer=["from_a"]))
    b = FakeEntryPoint("b", make_plugin(explainer=["from_b"]), dist="other-dist")
    pm = manager(a, b, env={"SAEXPLAIN_PLUGINS": " other-dist "})
    assert pm.explainers.names() == ["from_b"]
    assert a.loads == 0


def test_unknown_name_lists_known_names_and_suggests():
    pm = manager(FakeEntryPoint("p", make_plugin(explainer=["maxact", "vocabproj"])))
    with pytest.raises(UnknownComponentError) as err:
        pm.explainers.get("maxakt")
    assert err.value.suggestion == "maxact"
    assert "Did you mean 'maxact'?" in str(err.value) and "vocabproj" in str(err.value)


def test_builtins_register_through_the_same_manager(monkeypatch):
    module = types.ModuleType("fake_builtin_methods")
    module.register_explainers = hookimpl(lambda register: register("builtin-x", lambda: 1))
    monkeypatch.setitem(sys.modules, "fake_builtin_methods", module)
    pm = PluginManager(entry_points=[], builtins=("fake_builtin_methods",), environ={})
    component = pm.explainers.get("builtin-x")
    assert component.provenance.distribution == "saexplain"
    assert pm.info()[0].source == "builtin"


def test_real_builtin_method_packages_are_plugins():
    pm = PluginManager(entry_points=[], environ={})
    infos = {i.name: i for i in pm.info()}
    assert infos["saexplain.explainers"].state == "loaded"
    assert "register_explainers" in infos["saexplain.explainers"].hooks
    assert "register_scorers" in infos["saexplain.scorers"].hooks


def test_register_plugin_in_a_notebook_session():
    with fresh_plugin_manager(entry_points=[], builtins=(), environ={}) as pm:
        name = register_plugin(make_plugin(explainer=["mine"]), name="notebook-plugin")
        assert get_plugin_manager() is pm
        assert pm.explainers.get("mine").provenance.plugin == name
        with pytest.raises(DuplicateComponentError):
            register_plugin(make_plugin(explainer=["mine"]), name="again")
        assert "again" not in {i.name for i in pm.info()}
        pm.unregister_plugin(name)
        assert "mine" not in pm.explainers


def test_register_plugin_is_all_or_nothing():
    pm = manager(FakeEntryPoint("p", make_plugin(scorer=["taken"])))
    with pytest.raises(DuplicateComponentError):
        pm.register_plugin(make_plugin(explainer=["fresh"], scorer=["taken"]), name="nb")
    assert "fresh" not in pm.explainers


def test_detect_backend_first_result_wins():
    class Model:
        pass

    @hookimpl
    def detect_backend(model):
        return "mine" if isinstance(model, Model) else None

    pm = manager(FakeEntryPoint("det", types.SimpleNamespace(detect_backend=detect_backend)))
    assert pm.detect_backend(Model()) == "mine"
    assert pm.detect_backend(object()) is None


def test_invalid_component_name_fails_the_plugin():
    pm = manager(FakeEntryPoint("bad", make_plugin(explainer=["has space"])))
    with pytest.warns(PluginLoadWarning, match="invalid explainer name"):
        assert pm.explainers.names() == []


def test_detect_coder_first_result_wins():
    class SAE:
        pass

    @hookimpl
    def detect_coder(coder):
        if isinstance(coder, SAE) or (isinstance(coder, str) and coder.startswith("rel/")):
            return "mine"
        return None

    pm = manager(FakeEntryPoint("det", types.SimpleNamespace(detect_coder=detect_coder)))
    assert pm.detect_coder(SAE()) == "mine"
    assert pm.detect_coder("rel/blocks.0") == "mine"
    assert pm.detect_coder(object()) is None
    assert {i.name: i for i in pm.info()}["det"].hooks == ["detect_coder"]


def test_info_records_descriptions_and_overrides_both_ways():
    @hookimpl
    def register_scorers(register):
        register("detection", lambda: "mine", description="my detection", override=True)

    base = FakeEntryPoint("base", make_plugin(scorer=["detection", "fuzzing"]))
    over = FakeEntryPoint("over", types.SimpleNamespace(register_scorers=register_scorers))
    infos = {i.name: i for i in manager(base, over).info()}
    assert infos["base"].descriptions == {
        "scorer": {"detection": "scorer detection", "fuzzing": "scorer fuzzing"}
    }
    assert infos["over"].descriptions == {"scorer": {"detection": "my detection"}}
    assert infos["over"].overrides == {"scorer": {"detection": "base (saexplain-base 1.0)"}}
    assert infos["base"].overridden_by == {"scorer": {"detection": "over (saexplain-over 1.0)"}}
    assert infos["base"].overrides == {} and infos["over"].overridden_by == {}
    data = infos["over"].as_dict()
    assert data["overrides"] == {"scorer": {"detection": "base (saexplain-base 1.0)"}}


def test_unregistering_an_override_brings_the_replaced_component_back():
    @hookimpl
    def register_scorers(register):
        register("detection", lambda: "notebook", override=True)

    pm = manager(FakeEntryPoint("base", make_plugin(scorer=["detection"])))
    name = pm.register_plugin(types.SimpleNamespace(register_scorers=register_scorers), "nb")
    assert pm.scorers.create("detection") == "notebook"
    assert {i.name: i for i in pm.info()}["base"].overridden_by == {"scorer": {"detection": "nb"}}
    pm.unregister_plugin(name)
    assert pm.scorers.get("detection").provenance.plugin == "base"
    assert pm.scorers.create("detection")[0] == "detection"
    assert pm.info()[0].overridden_by == {"scorer": {}}
