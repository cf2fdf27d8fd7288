import importlib

import pytest

from saexplain.report import RunResults

pd = pytest.importorskip("pandas")


def test_tidy_frame_has_a_row_per_score_and_per_unscored_explanation(run, run_dir):
    frame = RunResults.load(run_dir).to_pandas()
    scored = frame[frame["scorer"].notna()]
    assert len(scored) == len(run.scores)
    unscored = frame[frame["scorer"].isna()]
    assert set(unscored["explanation_status"]) == {"error"}  # the failed explanation
    assert len(frame) == len(run.scores) + len(unscored)
    for score in run.scores:
        row = scored[
            (scored["latent"] == score.latent.index)
            & (scored["explainer"] == score.explainer)
            & (scored["scorer"] == score.scorer)
        ].iloc[0]
        if score.status.value == "ok":
            assert row["score"] == pytest.approx(score.value)
            assert row["metric.balanced_accuracy"] == pytest.approx(score.value)
        else:
            assert pd.isna(row["score"]) and "outage" in row["error"]
    assert str(frame["latent"].dtype) == "int64"


def test_parquet_round_trip(run_dir, tmp_path):
    pytest.importorskip("pyarrow")
    results = RunResults.load(run_dir)
    path = results.to_parquet(tmp_path / "out")
    assert path.name == "results.parquet"
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, results.to_pandas(), check_dtype=False)


def test_missing_pandas_names_the_extra(run_dir, monkeypatch):
    real = importlib.import_module

    def no_pandas(name, *args):
        if name == "pandas":
            raise ImportError("No module named 'pandas'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_pandas)
    with pytest.raises(ImportError, match=r"saexplain\[pandas\]"):
        RunResults.load(run_dir).to_pandas()
