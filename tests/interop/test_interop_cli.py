import pytest

from saexplain.api import read_explanations
from saexplain.cli import main
from saexplain.report import RunResults

from .conftest import FIXTURES


def test_export_then_import_gives_the_score_file(run_dir, tmp_path, capsys):
    out = tmp_path / "np"
    args = ["export", str(run_dir), "--format", "neuronpedia", str(out)]
    assert main([*args, "--model-id", "gpt2-small", "--source", "8-res-jb"]) == 0
    given = tmp_path / "given.jsonl"
    pick = ["-o", str(given), "--explainer", "saexplain_maxact"]
    code = main(["import", "--format", "neuronpedia", str(out), *pick])
    assert code == 0
    printed = capsys.readouterr().out
    assert "8-res-jb\tsaexplain_maxact\t" in printed and "saexplain score CONFIG" in printed
    results = RunResults.load(run_dir)
    expected = {r.index: r.explanation("maxact") for r in results if r.explanation("maxact")}
    assert read_explanations(given) == expected


@pytest.mark.parametrize("fmt", ["saebench", "delphi", "neuron-explainer", "parquet"])
def test_every_export_format_writes_files(run_dir, tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pandas")
        pytest.importorskip("pyarrow")
    extra = ["--release", "r", "--sae-id", "s"] if fmt == "saebench" else []
    explainer = [] if fmt in ("delphi", "parquet") else ["--explainer", "maxact"]
    code = main(["export", str(run_dir), "--format", fmt, str(tmp_path / "o"), *explainer, *extra])
    assert code == 0
    assert any(p.is_file() for p in (tmp_path / "o").rglob("*"))


def test_cli_errors_are_one_line(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--format", "neuronpedia", str(tmp_path)]) == 2
    assert "needs --model-id and --source" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--format", "saebench", str(tmp_path)]) == 2
    assert "choose one with --explainer" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), "--format", "delphi", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["import", "--format", "saebench", str(bad)]) == 2
    assert f"{bad}: not JSON" in capsys.readouterr().err


def test_import_lists_each_format(capsys):
    assert (
        main(
            [
                "import",
                "--format",
                "saebench",
                str(
                    FIXTURES
                    / next(
                        p.name for p in FIXTURES.iterdir() if p.name.endswith("_eval_results.json")
                    )
                ),
            ]
        )
        == 0
    )
    assert (
        "blocks.4.hook_resid_post\tsaebench_autointerp\t2 explanations" in capsys.readouterr().out
    )
    assert main(["import", "--format", "delphi", str(FIXTURES / "delphi")]) == 0
    assert "layers.6.mlp\tdelphi\t2 explanations" in capsys.readouterr().out
    path = FIXTURES / "neuron_explanations.json"
    assert main(["import", "--format", "neuron-explainer", str(path)]) == 0
    assert "layer5\tneuron_explainer\t1 explanations" in capsys.readouterr().out
