import json

import pytest

from saexplain.cli import main
from saexplain.testing import fresh_plugin_manager

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
