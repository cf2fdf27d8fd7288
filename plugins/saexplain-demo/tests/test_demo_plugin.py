"""The demo plugin's registrations: the dataset `demo` (resolved by the core through the
`register_datasets` hook), the coder source `demo:`, and `saexplain demo` without the plugin."""

import subprocess
import sys

import saexplain_demo
from saexplain_demo.corpus import demo_corpus

from saexplain.pipeline import resolve_dataset
from saexplain.plugins import PluginManager
from saexplain.testing import check_plugin


def manager_with_demo():
    manager = PluginManager(builtins=(), entry_points=[])
    manager.register_plugin(saexplain_demo, name="demo-under-test")
    return manager


def test_plugin_is_light_and_registers_the_dataset_and_the_coder_source():
    code = (
        "import sys, saexplain_demo; "
        "print([m for m in ('torch', 'sae_lens', 'nnsight', 'litellm') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]"]
    check_plugin(saexplain_demo, name="demo-check")
    manager = manager_with_demo()
    assert "demo" in manager.datasets and "demo" in manager.coders


def test_the_core_resolves_a_registered_dataset_name_through_the_plugin():
    manager = manager_with_demo()
    assert resolve_dataset("demo", manager) == demo_corpus()
    # other names and objects pass through to the store untouched
    assert resolve_dataset("wikitext", manager) == "wikitext"
    texts = ["a", "b"]
    assert resolve_dataset(texts, manager) is texts
    bare = PluginManager(builtins=(), entry_points=[])
    assert resolve_dataset("demo", bare) == "demo"


def test_cli_demo_without_the_plugin_says_what_to_install(monkeypatch, capsys):
    from saexplain.cli import main

    monkeypatch.setitem(sys.modules, "saexplain_demo.config", None)  # import fails
    assert main(["demo", "--quick", "-q"]) == 2
    assert "pip install saexplain-demo" in capsys.readouterr().err
