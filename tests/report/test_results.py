import json
import sys
import warnings

import pytest

from saexplain.models import Explanation, LatentRef, Score, Status
from saexplain.report import RunFormatError, RunResults, TruncatedLineWarning
from saexplain.report.results import LatentEntry

from .conftest import XSS


def test_load_matches_in_memory(run, run_dir):
    loaded = RunResults.load(run_dir)
    memory = RunResults(
        records=run.records,
        explanations=run.explanations,
        scores=run.scores,
        latents=run.latents,
        config=run.config,
        manifest=run.manifest,
    )
    assert loaded.table() == memory.table()
    assert loaded.explanations == memory.explanations and loaded.scores == memory.scores
    assert loaded.config == run.config and loaded.manifest == run.manifest
    assert loaded.path == run_dir and loaded.notes == []
    with pytest.raises(ValueError, match="in memory"):
        _ = memory.path


def test_order_and_names(run_dir):
    results = RunResults.load(run_dir)
    assert [ref.index for ref in results.latents] == [1, 2, 3, 4, 5]
    assert results.explainers == ["maxact", "vocabproj"]
    assert results.scorers == ["detection", "fuzzing"]
    assert results.methods == [
        ("maxact", "detection"),
        ("maxact", "fuzzing"),
        ("vocabproj", "detection"),
        ("vocabproj", "fuzzing"),
    ]
    assert results.seed == 7


def test_per_latent_access(run_dir):
    results = RunResults.load(run_dir)
    three = results[3]
    assert three is not None and three.explanation("maxact").startswith("the word " + XSS)
    assert three.record is not None and three.stats is not None and three.stats.count == 2
    assert results[three.latent].latent == three.latent
    assert results[three.latent.key].latent == three.latent
    # errors are None, never a number
    assert results[2].explanation("vocabproj") is None
    assert results[2].explanations["vocabproj"].status is Status.ERROR
    assert results[4].score("maxact", "fuzzing") is None
    assert results[4].scores[("maxact", "fuzzing")].status is Status.ERROR
    dead = results[5]
    assert dead.status == "skipped" and "dead" in dead.reason and dead.record is None
    assert dead.stats is not None and dead.stats.count == 0
    with pytest.raises(KeyError):
        results[99]
    with pytest.raises(TypeError):
        results[1.5]  # type: ignore[index]
    assert len(results) == 5 and [r.index for r in results] == [1, 2, 3, 4, 5]


def test_index_ambiguous_across_coders(run):
    other = [
        e.model_copy(update={"latent": e.latent.model_copy(update={"coder_id": "b"})})
        for e in run.explanations
    ]
    results = RunResults(explanations=[*run.explanations, *other])
    with pytest.raises(KeyError, match="ambiguous"):
        results[1]
    ref = LatentRef(coder_id="b", hook=run.explanations[0].latent.hook, index=1)
    assert results[ref].latent.coder_id == "b"


def test_table_rows(run_dir, run):
    rows = RunResults.load(run_dir).table()
    assert [r["latent"] for r in rows] == [1, 2, 3, 4, 5]
    by_latent = {r["latent"]: r for r in rows}
    expected = {
        (s.latent.index, s.explainer, s.scorer): s.value for s in run.scores if s.value is not None
    }
    for (index, e, s), value in expected.items():
        assert by_latent[index][f"{e}/{s}"] == value
    assert by_latent[4]["maxact/fuzzing"] is None  # an error
    assert by_latent[1]["maxact"] == "word 1" and by_latent[2]["vocabproj"] is None
    assert by_latent[5]["status"] == "skipped" and by_latent[5]["maxact/detection"] is None


def test_last_line_wins(run, tmp_path):
    run_dir = run.write(tmp_path / "run")
    first = run.explanations[0]
    newer = first.model_copy(update={"text": "a better explanation"})
    score = next(s for s in run.scores if s.latent == first.latent and s.explainer == "maxact")
    newer_score = score.model_copy(update={"value": 0.123})
    with open(run_dir / "explanations.jsonl", "a") as f:
        f.write(newer.model_dump_json() + "\n")
    with open(run_dir / "scores.jsonl", "a") as f:
        f.write(newer_score.model_dump_json() + "\n")
    results = RunResults.load(run_dir)
    res = results[first.latent]
    assert res.explanation("maxact") == "a better explanation"
    assert res.score("maxact", score.scorer) == 0.123
    # still one entry per key
    assert len(results.explanations) == len(run.explanations)
    assert len(results.scores) == len(run.scores)
    # the same key in memory resolves the same way
    memory = RunResults(explanations=[first, newer], scores=[score, newer_score])
    assert memory[first.latent].explanation("maxact") == "a better explanation"


@pytest.mark.parametrize("name", ["explanations", "scores", "records", "latents"])
def test_truncated_last_line_is_skipped_with_a_warning(run, tmp_path, name):
    run_dir = run.write(tmp_path / "run")
    path = run_dir / f"{name}.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # crash mid-write
    with pytest.warns(TruncatedLineWarning, match=f"{name}.jsonl"):
        results = RunResults.load(run_dir)
    assert len(results.notes) == 1 and "line" in results.notes[0]
    complete = RunResults.load(run.write(tmp_path / "full"))
    counts = {
        "explanations": (len(results.explanations), len(complete.explanations) - 1),
        "scores": (len(results.scores), len(complete.scores) - 1),
        "records": (len(results.records), len(complete.records) - 1),
    }
    if name in counts:
        assert counts[name][0] == counts[name][1]
    assert results.table()  # still renders


def test_corrupt_middle_line_raises(run, tmp_path):
    run_dir = run.write(tmp_path / "run")
    path = run_dir / "scores.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = '{"not": "a score"}\n'
    path.write_text("".join(lines))
    with pytest.raises(RunFormatError, match=r"scores.jsonl:2"):
        RunResults.load(run_dir)


def test_missing_files_and_directory(tmp_path):
    empty = tmp_path / "in-progress"
    empty.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = RunResults.load(empty)
    assert len(results) == 0 and results.table() == [] and results.explainers == []
    assert "0 latents" in repr(results)
    (empty / "latents.jsonl").write_text(
        json.dumps({"latent": {"coder_id": "c", "hook": "h", "index": 3}, "status": "ok"}) + "\n"
    )
    only = RunResults.load(empty)
    assert [r.index for r in only] == [3] and only[3].explanations == {}
    with pytest.raises(FileNotFoundError):
        RunResults.load(tmp_path / "nope")
    (empty / "config.json").write_text("[1, 2]")
    with pytest.raises(RunFormatError, match="JSON object"):
        RunResults.load(empty)


def test_latent_entry_round_trip(run):
    data = {**run.latents[0], "count": 4, "n_windows": 3}
    entry = LatentEntry.from_json(data)
    assert entry.extra == {"count": 4, "n_windows": 3}
    assert entry.to_json() == data and LatentEntry.from_json(entry.to_json()) == entry
    results = RunResults(latents=[data])
    assert results[entry.latent].info == {"count": 4, "n_windows": 3}


def test_to_dataframe(run_dir):
    pd = pytest.importorskip("pandas")
    df = RunResults.load(run_dir).to_dataframe()
    assert isinstance(df, pd.DataFrame)
    assert list(df["latent"]) == [1, 2, 3, 4, 5]
    assert {"maxact", "vocabproj", "maxact/detection", "vocabproj/fuzzing"} <= set(df.columns)
    assert df["maxact/fuzzing"].isna().sum() == 2  # the error and the skipped latent


def test_to_dataframe_without_pandas(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        RunResults.load(run_dir).to_dataframe()


def test_reprs_escape(run_dir):
    results = RunResults.load(run_dir)
    page = results._repr_html_()
    assert XSS not in page and "&lt;script&gt;" in page
    text = repr(results)
    assert text.startswith("RunResults(5 latents") and "word 1" in text


def test_non_finite_and_failed_scores_are_errors():
    ref = LatentRef(coder_id="c", hook="h", index=0)
    scores = [
        Score(latent=ref, scorer="s", explainer="e", value=float("nan")),
        Score(latent=ref.model_copy(update={"index": 1}), scorer="s", explainer="e", value=None),
        Score(
            latent=ref.model_copy(update={"index": 2}),
            scorer="s",
            explainer="e",
            status=Status.FAILED,
            error="x",
            value=0.9,
        ),
    ]
    results = RunResults(
        scores=scores, explanations=[Explanation(latent=ref, explainer="e", text="t")]
    )
    assert [results[i].score("e", "s") for i in range(3)] == [None, None, None]
