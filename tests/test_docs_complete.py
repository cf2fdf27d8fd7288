"""Every built-in method setting and every run-config key is documented, and each method's
settings table in docs/methods is the one its declaration renders (one source of truth)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from saexplain.methods import MethodSettings, settings_table
from saexplain.models import LatentSelection, RunConfig
from saexplain.sampling import RecordConfig
from saexplain.testing import fresh_plugin_manager

DOCS = Path(__file__).resolve().parents[1] / "docs"
METHOD_DOCS = "\n".join(p.read_text(encoding="utf-8") for p in (DOCS / "methods").glob("*.md"))
RUNNING = (DOCS / "running.md").read_text(encoding="utf-8")


def builtin_methods() -> list[tuple[str, str, Any]]:
    """(kind, name, component) of every built-in explainer and scorer."""
    with fresh_plugin_manager() as pm:
        out: list[tuple[str, str, Any]] = []
        for kind, registry in (("explainer", pm.explainers), ("scorer", pm.scorers)):
            for name in registry.names():
                if registry.get(name).provenance.distribution == "saexplain":
                    out.append((kind, name, registry.create(name)))
        return out


METHODS = builtin_methods()


def test_the_builtins_are_all_found():
    names = {name for _, name, _ in METHODS}
    assert {"maxact", "vocabproj", "selfexplain", "detection", "fuzzing", "surprisal"} <= names


@pytest.mark.parametrize(("kind", "name", "method"), METHODS, ids=[n for _, n, _ in METHODS])
def test_each_method_declares_documented_settings(kind, name, method):
    settings = type(method).Settings
    assert issubclass(settings, MethodSettings), name
    missing = [f for f, info in settings.model_fields.items() if not info.description]
    assert not missing, f"{name}: settings without a description: {missing}"
    # a table per level of the declaration: the settings a family shares (every LLM explainer,
    # every binary scorer) in one table, each method's own in its section
    for level in settings.__mro__:
        if not (isinstance(level, type) and issubclass(level, MethodSettings)):
            continue
        own = settings_table(level, inherited=False).strip()
        if level is MethodSettings or own.count("\n") < 2:  # no fields of its own
            continue
        assert own in METHOD_DOCS, (
            f"docs/methods has no up-to-date table of {level.__qualname__}'s settings (used by "
            f"{kind} {name!r}); paste saexplain.methods.settings_table({level.__qualname__}, "
            "inherited=False)"
        )


def documented_keys(text: str) -> set[str]:
    """Names in the first column of markdown tables: `| `key` |` or `| `a`, `b` |`."""
    cells = re.findall(r"^\|([^|\n]*)\|", text, re.MULTILINE)
    return {key for cell in cells for key in re.findall(r"`([A-Za-z_][\w.]*)`", cell)}


@pytest.mark.parametrize("model", [RunConfig, LatentSelection, RecordConfig])
def test_every_config_key_is_in_a_table_of_running_md(model: type[BaseModel]):
    missing = sorted(set(model.model_fields) - documented_keys(RUNNING))
    assert not missing, f"{model.__name__} keys missing from docs/running.md tables: {missing}"
