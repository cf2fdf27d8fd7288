"""The worked example in docs/writing-a-plugin.md must run as written."""

import re
import sys
import types
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def test_worked_example_plugin_and_its_test_run(monkeypatch):
    module_src, notebook_src, test_src = [
        b for b in python_blocks() if "register(" in b or "import" in b
    ]
    module = types.ModuleType("saexplain_toptoken")
    exec(compile(module_src, "saexplain_toptoken.py", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "saexplain_toptoken", module)

    namespace: dict[str, object] = {}
    exec(compile(test_src, "test_toptoken.py", "exec"), namespace)
    namespace["test_toptoken_finds_the_planted_word"]()  # type: ignore[operator]

    from saexplain.testing import fresh_plugin_manager

    with fresh_plugin_manager(entry_points=[], builtins=(), environ={}) as manager:
        exec(compile(notebook_src, "notebook.py", "exec"), {})
        assert manager.explainers.get("toptoken").provenance.plugin == "saexplain_toptoken"


def test_worked_example_fails_when_no_token_dominates():
    module = types.ModuleType("m")
    exec(compile(python_blocks()[0], "m.py", "exec"), module.__dict__)
    from saexplain._async import run_sync
    from saexplain.protocols import MethodContext
    from saexplain.testing import FakeBackend, FakeCoder, make_record

    backend = FakeBackend()
    coder = FakeCoder.planted(backend, {1: " cat", 2: " dog"})
    # latent 1 only fires on cat; make a record whose examples peak on different words
    record = make_record(backend, coder, 1, ["cat", "a cat"])
    explanation = run_sync(module.TopTokenExplainer(min_share=0.5).explain(record, MethodContext()))
    assert explanation.status.value == "ok"
    empty = record.model_copy(update={"explanation_examples": ()})
    failed = run_sync(module.TopTokenExplainer().explain(empty, MethodContext()))
    assert failed.status.value == "failed" and failed.error == "no activating examples"
