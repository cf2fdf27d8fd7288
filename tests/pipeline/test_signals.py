"""Ctrl-C on `saexplain run`: the first stops at the next batch boundary with one line saying how
to resume, the second stops at once; exit status 130, no traceback, and rerunning resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from . import toy
from .test_cli_run import CONFIG

JOB = Path(__file__).with_name("cli_job.py")

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")


def start(tmp_path: Path, batch_s: float, llm_s: float, *overrides: str) -> subprocess.Popen[str]:
    _, _, texts = toy.world()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(texts))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(CONFIG.format(corpus=corpus, out=tmp_path / "runs"))
    args = [str(tmp_path / "collecting"), str(batch_s), str(llm_s), "run", str(cfg)]
    args += ["backend=toyslow", "explainer_model={provider: toyslowllm, model: scripted}"]
    return subprocess.Popen(
        [sys.executable, str(JOB), *args, *overrides, "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(proc: subprocess.Popen[str], condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the job never got there"
        time.sleep(0.02)


def finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def results(path: Path) -> list[tuple[int, str]]:
    if not path.exists():
        return []
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [(x["latent"]["index"], x["status"]) for x in lines]


def test_first_ctrl_c_stops_collection_at_the_next_batch_and_a_rerun_resumes(tmp_path):
    proc = start(tmp_path, 0.1, 0.0)
    wait_for(proc, (tmp_path / "collecting").exists)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    code, out, err = finish(proc)
    assert time.monotonic() - sent < 10, "Ctrl-C waited for the whole collection"
    assert code == 130, err
    assert "Traceback" not in err and out == ""
    assert len(err.strip().splitlines()) == 1 and "rerun the same command" in err
    assert results(tmp_path / "runs" / "clirun" / "explanations.jsonl") == []

    code, out, err = finish(start(tmp_path, 0.0, 0.0))
    assert code == 0, err
    assert "the word cat" in out and "the word bird" in out


def test_first_ctrl_c_lets_running_jobs_finish_and_a_rerun_does_only_the_rest(tmp_path):
    explanations = tmp_path / "runs" / "clirun" / "explanations.jsonl"
    proc = start(tmp_path, 0.0, 0.3, "concurrency=1")
    wait_for(proc, lambda: len(results(explanations)) >= 1)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    assert code == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    before = results(explanations)
    assert 1 <= len(before) < 3 and all(status == "ok" for _, status in before)

    code, _, err = finish(start(tmp_path, 0.0, 0.0, "concurrency=1"))
    assert code == 0, err
    after = results(explanations)
    assert after[: len(before)] == before and sorted(i for i, _ in after) == [1, 2, 3]


def test_second_ctrl_c_stops_at_once(tmp_path):
    proc = start(tmp_path, 60.0, 0.0)
    wait_for(proc, (tmp_path / "collecting").exists)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc, timeout=20)
    assert code == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
