"""Errors of the `saexplain` command a user understands: one line, what was wrong and what to do,
no traceback (issue 21)."""

from __future__ import annotations

from typing import Any

import pytest

from saexplain.cli import main
from saexplain.errors import PluginLoadError
from saexplain.plugins import PluginManager
from saexplain.testing import fresh_plugin_manager


class _Dist:
    name, version = "saexplain-broken", "0.9"


class BrokenEntryPoint:
    """An installed plugin whose import fails (a missing dependency)."""

    name = "broken"
    dist = _Dist()

    def load(self) -> Any:
        raise ImportError("No module named 'torch'")


def test_strict_plugins_failure_is_one_truthful_line(capsys):
    strict = {"SAEXPLAIN_STRICT_PLUGINS": "1"}
    with fresh_plugin_manager(entry_points=[BrokenEntryPoint()], builtins=(), environ=strict):
        assert main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("saexplain: error: ")
    assert "broken" in err and "torch" in err and "SAEXPLAIN_STRICT_PLUGINS" in err
    assert "skipped" not in err  # strict mode stops: nothing was skipped


def test_lenient_plugins_failure_still_says_skipped():
    pm = PluginManager(entry_points=[BrokenEntryPoint()], builtins=(), environ={})  # type: ignore[list-item]
    with pytest.warns(UserWarning, match="was skipped"):
        pm.load()
    strict = PluginManager(
        entry_points=[BrokenEntryPoint()],  # type: ignore[list-item]
        builtins=(),
        environ={"SAEXPLAIN_STRICT_PLUGINS": "1"},
    )
    with pytest.raises(PluginLoadError) as raised:
        strict.load()
    assert "skipped" not in str(raised.value) and "stopped" in str(raised.value)


@pytest.mark.parametrize(
    ("kind", "name", "distribution"),
    [
        ("backend", "transformerlens", "saexplain-transformerlens"),
        ("backend", "nnsight", "saexplain-nnsight"),
        ("coder", "saelens", "saexplain-saelens"),
    ],
)
def test_a_missing_backend_or_coder_plugin_names_its_install(kind, name, distribution):
    from saexplain.errors import ConfigError
    from saexplain.models import RunConfig
    from saexplain.pipeline.resolve import build_backend, build_coder
    from saexplain.testing import FakeBackend

    bare = PluginManager(entry_points=[], builtins=(), environ={})
    config = RunConfig(model="gpt2", coder=f"{name}:release/id", dataset="d", backend=name)
    with pytest.raises(ConfigError) as raised:
        if kind == "backend":
            build_backend("gpt2", config, bare)
        else:
            build_coder(config.coder, config, bare, FakeBackend())
    message = str(raised.value)
    assert "\n" not in message and name in message and f"pip install {distribution}" in message
