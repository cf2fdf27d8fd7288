import errno
import json
import os
from pathlib import Path

import pytest

import saexplain
from saexplain.cli import main
from saexplain.errors import ProviderBadRequestError
from saexplain.plugins import get_plugin_manager
from saexplain.testing import ScriptedProvider, fresh_plugin_manager

from . import toy

CONFIG = """
model: toy
backend: toyfake
coder: "toyplanted:all"
dataset: {corpus}
n_tokens: 6400
context_length: 32
latents: {{indices: [1, 2, 3]}}
explainers: [toy]
scorers: [toyscore]
explainer_model: {{provider: toyllm, model: scripted}}
records: {{window: 16, explanation: ["top:5"], scoring: ["quantile:4"], negatives: ["random:4"]}}
output_dir: {out}
name: clirun
"""


@pytest.fixture
def project(tmp_path):
    _, _, texts = toy.world()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(texts))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(CONFIG.format(corpus=corpus, out=tmp_path / "runs"))
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        pm.register_plugin(toy.Stack(), name="toystack")
        yield tmp_path, cfg


def test_run_show_and_estimate_from_a_config_file(project, capsys):
    tmp_path, cfg = project
    assert main(["estimate", str(cfg), "--json", "-q"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["latents"] == 3 and est["total"]["calls"] > 0
    assert set(est["methods"]) == {"toy", "toy/toyscore"}
    assert (
        not (tmp_path / "runs" / "clirun" / "explanations.jsonl").exists()
        or not (tmp_path / "runs" / "clirun" / "explanations.jsonl").read_text()
    )  # the dry run writes no results

    assert main(["run", str(cfg), "latents.indices=[1,2]", "-q"]) == 0
    out = capsys.readouterr().out
    assert "the word cat" in out and "the word dog" in out and "clirun" in out
    assert main(["show", str(tmp_path / "runs" / "clirun")]) == 0
    assert "the word cat" in capsys.readouterr().out


def test_cli_errors_are_one_line_messages(project, capsys):
    tmp_path, cfg = project
    assert main(["run", str(cfg), "explainers=[nosuch]", "-q"]) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "toy" in err and "Traceback" not in err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["run", str(cfg), "n_tokens=-5"]) == 2
    assert "n_tokens" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "nowhere")]) == 2


def test_show_reports_a_run_damaged_mid_file_in_one_line(project, capsys):
    tmp_path, cfg = project
    assert main(["run", str(cfg), "-q"]) == 0
    run_dir = tmp_path / "runs" / "clirun"
    scores = run_dir / "scores.jsonl"
    lines = scores.read_text().splitlines()
    assert len(lines) >= 2
    lines[0] = lines[0][: len(lines[0]) // 2]  # torn in the middle, not at the end
    scores.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["show", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "damaged" in err and "scores.jsonl:1" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_options_are_accepted_after_the_overrides(project, capsys):
    _, cfg = project
    assert main(["run", str(cfg), "latents.indices=[1]", "-q", "concurrency=2"]) == 0
    assert "the word cat" in capsys.readouterr().out


def test_out_of_range_latents_fail_before_any_work(project, capsys):
    tmp_path, cfg = project
    assert main(["run", str(cfg), "latents.indices=[1,99,12]", "-q"]) == 2
    err = capsys.readouterr().err
    assert "[12, 99]" in err and "12" in err and len(err.strip().splitlines()) == 1
    assert main(["run", str(cfg), "latents={start: 10, stop: 20}", "-q"]) == 2
    assert "[10, 20)" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "clirun" / "store").exists(), "collected before the check"


class Refusing:
    """A provider plugin whose model refuses every request (never retried)."""

    @saexplain.hookimpl
    def register_providers(self, register):
        def refusing(model, **settings):
            down = ProviderBadRequestError("this model refuses everything", model=model)
            return ScriptedProvider(toy.answer, fail_on=lambda i, request: down)

        register("refusing", refusing)


def test_a_run_with_too_many_method_errors_exits_nonzero_with_the_counts(project, capsys):
    tmp_path, cfg = project
    get_plugin_manager().register_plugin(Refusing(), name="refusing")
    llm = "explainer_model={provider: refusing, model: m}"
    assert main(["run", str(cfg), llm, "-q"]) == 1
    captured = capsys.readouterr()
    assert "clirun" in captured.out  # the table is printed and the results are written
    assert (tmp_path / "runs" / "clirun" / "report.html").is_file()
    err = captured.err.strip().splitlines()
    assert "max_error_rate" in err[0] and "Traceback" not in captured.err
    assert any("toy:" in line and "3 of 3" in line for line in err[1:])
    # the scores of those explanations are their consequence, not scorer errors: not counted
    assert not any("toy/toyscore:" in line for line in err[1:])
    assert main(["run", str(cfg), llm, "max_error_rate=1.0", "-q"]) == 0


def fail_writes(monkeypatch, under: Path, code: int) -> None:
    """Opening a file under `under` for writing fails with `code`, as on a read-only disk."""
    import builtins

    real = builtins.open

    def fake(file, mode="r", *args, **kwargs):
        if Path(file).is_relative_to(under) and any(c in mode for c in "wax+"):
            raise OSError(code, os.strerror(code), str(file))
        return real(file, mode, *args, **kwargs)

    for module in ("saexplain.files", "saexplain.rundir"):
        monkeypatch.setattr(f"{module}.open", fake, raising=False)


def test_a_read_only_run_directory_is_a_one_line_error(project, capsys, monkeypatch):
    tmp_path, cfg = project
    run_dir = tmp_path / "runs" / "clirun"
    assert main(["run", str(cfg), "latents.indices=[1]", "-q"]) == 0
    capsys.readouterr()
    for code in (errno.EROFS, errno.EACCES):
        with monkeypatch.context() as m:
            fail_writes(m, run_dir, code)
            assert main(["run", str(cfg), "-q"]) == 2
        err = capsys.readouterr().err
        assert str(run_dir) in err and "writable" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_full_disk_is_a_one_line_error_naming_the_file(project, capsys, monkeypatch):
    tmp_path, cfg = project
    run_dir = tmp_path / "runs" / "clirun"
    assert main(["run", str(cfg), "latents.indices=[1]", "-q"]) == 0  # the store is complete
    capsys.readouterr()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    assert main(["run", str(cfg), "-q"]) == 2
    err = capsys.readouterr().err
    assert str(run_dir) in err and "disk is full" in err and "rerun" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list(run_dir.glob(".*.tmp-*")), "a temporary file was left behind"
