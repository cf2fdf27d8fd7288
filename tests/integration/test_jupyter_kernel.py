"""saexplain in a real Jupyter kernel, as a notebook user runs it: `sx.explain` inside the kernel's
running event loop, top-level `await sx.aexplain`, the rich displays Jupyter shows, and cells
re-run (plugin registration twice). Each cell goes through ipykernel exactly as a notebook front
end sends it; nothing is called in-process."""

from __future__ import annotations

import json
import os
import queue
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ipykernel")
jupyter_client = pytest.importorskip("jupyter_client")

ROOT = Path(__file__).resolve().parents[2]


class Notebook:
    """A kernel and a way to run one cell: its stream output, displays and error."""

    def __init__(self, kernel_dir: Path) -> None:
        spec = kernel_dir / "kernels" / "saexplain-test"
        spec.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
        env = {**os.environ, "JUPYTER_PATH": str(kernel_dir), "PYTHONPATH": str(ROOT)}
        self.manager = jupyter_client.KernelManager(kernel_name="saexplain-test")
        self.manager.kernel_spec_manager.kernel_dirs = [str(kernel_dir / "kernels")]
        self.manager.start_kernel(cwd=str(ROOT), env=env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 120) -> dict[str, Any]:
        msg_id = self.client.execute(textwrap.dedent(code))
        out: dict[str, Any] = {"stdout": "", "stderr": "", "data": [], "error": None}
        while True:
            try:
                msg = self.client.get_iopub_msg(timeout=timeout)
            except queue.Empty:  # pragma: no cover - a hung cell fails the test below
                out["error"] = f"no answer from the kernel in {timeout} s"
                return out
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out[content["name"]] += content["text"]
            elif kind in ("execute_result", "display_data"):
                out["data"].append(content["data"])
            elif kind == "error":
                out["error"] = "\n".join(content["traceback"])
            elif kind == "status" and content["execution_state"] == "idle":
                return out

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture
def notebook(tmp_path):
    nb = Notebook(tmp_path / "jupyter")
    yield nb
    nb.close()


SETUP = """
import logging
import saexplain as sx
from saexplain.testing import (
    ScriptedProvider, competent_explainer, competent_scorer_provider, set_offline_env,
)
from tests.pipeline import toy

set_offline_env()
backend, coder, texts = toy.world()
common = dict(
    latents=sorted(toy.WORDS), explainers=["maxact"], scorers=["detection"],
    provider=ScriptedProvider(competent_explainer), scorer_provider=competent_scorer_provider(),
    dataset=texts, n_tokens=32 * 150, context_length=32,
    records={"window": 16, "explanation": ["top:8"], "scoring": ["quantile:6"],
             "negatives": ["random:6"], "rare_below": 2},
    output_dir=OUT, progress=False,
)
"""


def ok(cell: dict[str, Any]) -> dict[str, Any]:
    assert cell["error"] is None, cell["error"]
    return cell


def test_explain_displays_and_reruns_in_a_real_kernel(notebook, tmp_path):
    ok(notebook.run(f"OUT = {str(tmp_path / 'runs')!r}\n" + SETUP))

    # sx.explain inside the kernel's running loop; the last expression is displayed
    cell = ok(notebook.run("results = sx.explain(backend, coder, name='nb', **common)\nresults"))
    (shown,) = cell["data"]
    assert "<table" in shown["text/html"] and "text/plain" in shown
    assert "Traceback" not in cell["stderr"]

    # the scores are real: every planted word is found and detected
    cell = ok(
        notebook.run(
            """
            print({i: (results[i].explanation("maxact"), results[i].score("maxact", "detection"))
                   for i in sorted(toy.WORDS)})
            """
        )
    )
    found = eval(cell["stdout"])  # a dict literal printed by the cell
    for latent, word in {1: "cat", 2: "dog", 3: "bird", 5: "tree", 7: "house"}.items():
        text, score = found[latent]
        assert word in text.lower() and score > 0.8, found

    # one latent: a short repr and an escaped HTML card, not the whole record
    (shown,) = ok(notebook.run("results[1]"))["data"]
    assert len(shown["text/plain"]) < 1000, len(shown["text/plain"])
    assert "<mark" in shown["text/html"] or "maxact" in shown["text/html"]

    # re-running a cell that registers a plugin is harmless
    register = """
    class Mine:
        @sx.hookimpl
        def register_scorers(self, register):
            pass
    mine = Mine()
    sx.register_plugin(mine, name="mine")
    """
    ok(notebook.run(register))
    ok(notebook.run('sx.register_plugin(mine, name="mine")'))

    # top-level await in a cell, on the same run directory: a resume that redoes nothing
    cell = ok(
        notebook.run(
            """
            again = await sx.aexplain(backend, coder, name='nb', **common)
            print(len(again), again[1].score("maxact", "detection"))
            """
        )
    )
    n, score = cell["stdout"].split()
    assert int(n) == 5 and float(score) > 0.8
