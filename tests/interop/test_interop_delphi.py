import pytest

from saexplain.interop import (
    InteropFormatError,
    export_delphi,
    load_delphi_explanations,
    load_delphi_scores,
)
from saexplain.report import RunResults

from .conftest import FIXTURES


def ok_texts(results, explainer):
    return {
        (res.latent.hook, res.latent.index): res.explanation(explainer)
        for res in results
        if res.explanation(explainer) is not None
    }


def test_round_trip_per_explainer_layout(run_dir, tmp_path):
    results = RunResults.load(run_dir)
    export_delphi(results, tmp_path / "delphi")
    imported = load_delphi_explanations(tmp_path / "delphi")
    assert imported.explainers == ["maxact", "vocabproj"]
    for name in ("maxact", "vocabproj"):
        assert imported.by_key(name) == ok_texts(results, name)
        assert imported.by_key(name)  # not vacuous


def test_round_trip_flat_layout_and_scores(run, run_dir, tmp_path):
    results = RunResults.load(run_dir)
    export_delphi(results, tmp_path / "flat", explainer="maxact")
    imported = load_delphi_explanations(tmp_path / "flat")
    assert imported.by_key("delphi") == ok_texts(results, "maxact")
    scores = {(s.hook, s.index, s.scorer): s for s in load_delphi_scores(tmp_path / "flat")}
    for score in run.scores:
        if score.explainer != "maxact" or not score.predictions:
            continue
        back = scores[(score.latent.hook, score.latent.index, score.scorer)]
        assert [r["prediction"] for r in back.records] == [p.predicted for p in score.predictions]
        judged = [p for p in score.predictions if p.predicted is not None]
        assert back.accuracy == pytest.approx(sum(p.correct for p in judged) / len(judged))


def test_real_layout_fixture():
    imported = load_delphi_explanations(FIXTURES / "delphi")
    assert imported.given() == {3: "Words about rivers and water", 10: "Closing brackets in code"}
    assert imported.sources == ["layers.6.mlp"]
    (score,) = load_delphi_scores(FIXTURES / "delphi")
    assert (score.hook, score.index, score.scorer) == ("layers.6.mlp", 3, "fuzz")
    assert score.accuracy == pytest.approx(2 / 3)  # the null prediction is not judged


def test_malformed_input_names_the_file_and_problem(tmp_path):
    folder = tmp_path / "run" / "explanations"
    folder.mkdir(parents=True)
    bad_name = folder / "latent3.txt"
    bad_name.write_text('"x"')
    with pytest.raises(InteropFormatError, match=r"named <hook>_latent<index>\.txt") as err:
        load_delphi_explanations(tmp_path / "run")
    assert str(bad_name) in str(err.value)
    bad_name.unlink()
    not_text = folder / "h_latent1.txt"
    not_text.write_text('{"text": 1}')
    with pytest.raises(InteropFormatError, match=f"{not_text}: a delphi explanation is"):
        load_delphi_explanations(tmp_path / "run")
    (tmp_path / "other").mkdir()
    with pytest.raises(InteropFormatError, match="no `explanations/` folder"):
        load_delphi_explanations(tmp_path / "other")
    scores = tmp_path / "run" / "scores" / "detection"
    scores.mkdir(parents=True)
    (scores / "h_latent1.txt").write_text('{"not": "a list"}')
    with pytest.raises(InteropFormatError, match="a JSON list of objects"):
        load_delphi_scores(tmp_path / "run")
    (scores / "h_latent1.txt").write_text('[{"activating": true}')
    with pytest.raises(InteropFormatError, match=r"h_latent1\.txt: not JSON"):
        load_delphi_scores(tmp_path / "run")
    (scores / "h_latent1.txt").write_text('[{"activating": true}]')
    with pytest.raises(InteropFormatError, match="record 0 lacks"):
        load_delphi_scores(tmp_path / "run")
