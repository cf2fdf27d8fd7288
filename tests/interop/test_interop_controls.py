"""Shuffled controls (`<explainer>~shuffled`: another latent's explanation, on purpose) are never
exported as real explanations unless asked for; the tidy table marks their rows."""

import gzip
import json

import pytest

from saexplain.cli import main
from saexplain.errors import ConfigError
from saexplain.interop import (
    export_delphi,
    export_neuron_explanations,
    export_neuronpedia,
    export_saebench,
    load_delphi_explanations,
)
from saexplain.report import RunResults
from tests.report.conftest import with_controls


@pytest.fixture
def controlled(run, tmp_path):
    explanations, scores, _latents, _ = with_controls(run)
    run_dir = run.write(tmp_path / "run")
    (run_dir / "explanations.jsonl").write_text(
        "".join(e.model_dump_json() + "\n" for e in explanations)
    )
    (run_dir / "scores.jsonl").write_text("".join(s.model_dump_json() + "\n" for s in scores))
    results = RunResults.load(run_dir)
    assert "maxact~shuffled" in results.explainers
    return run_dir, results


def test_neuronpedia_and_delphi_leave_controls_out(controlled, tmp_path):
    _, results = controlled
    paths = export_neuronpedia(results, tmp_path / "np", model_id="m", source="s")
    rows = [
        json.loads(line) for p in paths for line in gzip.decompress(p.read_bytes()).splitlines()
    ]
    assert {r["typeName"] for r in rows} == {"saexplain_maxact", "saexplain_vocabproj"}
    export_delphi(results, tmp_path / "delphi")
    assert sorted(p.name for p in (tmp_path / "delphi").iterdir() if p.is_dir()) == [
        "maxact",
        "vocabproj",
    ]
    assert load_delphi_explanations(tmp_path / "delphi").explainers == ["maxact", "vocabproj"]
    # asked for, they are exported (named as what they are)
    paths = export_neuronpedia(
        results, tmp_path / "np2", model_id="m", source="s", include_controls=True
    )
    rows = [
        json.loads(line) for p in paths for line in gzip.decompress(p.read_bytes()).splitlines()
    ]
    assert "saexplain_maxact~shuffled" in {r["typeName"] for r in rows}


def test_a_control_named_explicitly_is_refused(controlled, tmp_path):
    _, results = controlled
    with pytest.raises(ConfigError, match="shuffled control"):
        export_saebench(
            results, tmp_path / "sb", release="r", sae_id="i", explainer="maxact~shuffled"
        )
    with pytest.raises(ConfigError, match="include_controls"):
        export_neuron_explanations(results, tmp_path / "ne", explainer="maxact~shuffled")
    with pytest.raises(ConfigError, match="shuffled control"):
        export_delphi(results, tmp_path / "d", explainer="vocabproj~shuffled")
    path = export_saebench(
        results,
        tmp_path / "sb",
        release="r",
        sae_id="i",
        explainer="maxact~shuffled",
        include_controls=True,
    )
    assert path.is_file()


def test_cli_default_explainer_ignores_controls(controlled, tmp_path, capsys):
    run_dir, _results = controlled
    # the run has two real explainers: the controls do not make four
    args = ["export", str(run_dir), "--format", "neuron-explainer", str(tmp_path / "ne")]
    assert main(args) == 2
    assert "maxact, vocabproj; choose one" in capsys.readouterr().err


def test_tidy_table_marks_control_rows(controlled):
    pytest.importorskip("pandas")
    _, results = controlled
    frame = results.to_pandas()
    controls = frame[frame["control_of"].notna()]
    assert set(controls["explainer"]) == {"maxact~shuffled", "vocabproj~shuffled"}
    assert (controls["control_of"] == controls["explainer"].str.removesuffix("~shuffled")).all()
    real = frame[frame["control_of"].isna()]
    assert not real["explainer"].str.contains("~").any() and len(real) > 0
    assert len(frame) == len(real) + len(controls)  # marked, not dropped
