import json
import statistics

import pytest

from saexplain.errors import ConfigError
from saexplain.interop import InteropFormatError, export_saebench, load_saebench
from saexplain.report import RunResults

from .conftest import FIXTURES

FIXTURE = FIXTURES / "saebench_release_blocks.4.hook_resid_post_eval_results.json"


def test_round_trip_explanations_scores_and_summary(run_dir, tmp_path):
    results = RunResults.load(run_dir)
    path = export_saebench(
        results, tmp_path, release="my/release", sae_id="blocks.4/x", explainer="maxact"
    )
    assert path.name == "my_release_blocks.4_x_eval_results.json"  # SAEBench's naming
    back = load_saebench(path)
    assert (back.release, back.sae_id) == ("my/release", "blocks.4/x")
    expected = {
        res.latent.index: (res.explanation("maxact"), res.score("maxact", "detection"))
        for res in results
        if res.explanation("maxact") is not None
    }
    assert {i: (lat.explanation, lat.score) for i, lat in back.latents.items()} == expected
    values = [v for _, v in expected.values() if v is not None]
    assert back.score == pytest.approx(statistics.mean(values))
    assert back.std_dev == pytest.approx(statistics.pstdev(values))
    assert back.explanations.by_key() == {("blocks.4/x", i): t for i, (t, _) in expected.items()}
    # the item numbers are SAEBench's: 1-based, activating items as "correct seqs"
    res = next(iter(results))
    score = res.scores[("maxact", "detection")]
    lat = back.latents[res.latent.index]
    assert lat.correct_seqs == tuple(p.item + 1 for p in score.predictions if p.truth)
    assert lat.predictions == tuple(p.item + 1 for p in score.predictions if p.predicted)
    data = json.loads(path.read_text())
    assert data["eval_type_id"] == "autointerp" and data["eval_result_details"] == []
    assert set(next(iter(data["eval_result_unstructured"].values()))) == {
        "explanation",
        "predictions",
        "correct seqs",
        "score",
        "logs",
    }


def test_export_errors(run_dir, tmp_path):
    results = RunResults.load(run_dir)
    with pytest.raises(ConfigError, match="explainer 'nope' not in this run"):
        export_saebench(results, tmp_path, release="r", sae_id="s", explainer="nope")


def test_real_shape_fixture():
    back = load_saebench(FIXTURE)
    assert back.score == 0.85 and back.std_dev == 0.05
    assert back.scores == {17: 0.8, 402: 0.9}
    assert back.latents[17].predictions == (1, 3, 5, 9)
    assert back.latents[17].correct_seqs == (1, 3, 5, 7)
    assert back.config["model_name"] == "pythia-70m-deduped"
    assert back.explanations.given() == {17: "numbers in dates", 402: "the word 'however'"}


def mutate(tmp_path, change):
    data = json.loads(FIXTURE.read_text())
    change(data)
    path = tmp_path / "bad_eval_results.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d.update(eval_type_id="core"), "eval_type_id is 'core', not 'autointerp'"),
        (lambda d: d.pop("eval_result_metrics"), "missing eval_result_metrics.autointerp"),
        (lambda d: d.update(eval_result_unstructured=[]), "must map latent indices"),
        (lambda d: d["eval_result_unstructured"].update(x={}), "latent 'x': not a latent index"),
        (lambda d: d["eval_result_unstructured"]["17"].pop("explanation"), "needs an `expl"),
        (lambda d: d["eval_result_unstructured"]["17"].update(score="high"), "a number or null"),
        (lambda d: d["eval_result_unstructured"]["17"].update(predictions="1"), "sequence num"),
    ],
)
def test_malformed_input_names_the_file_and_problem(tmp_path, change, problem):
    path = mutate(tmp_path, change)
    with pytest.raises(InteropFormatError, match=problem) as err:
        load_saebench(path)
    assert str(path) in str(err.value)


def test_not_json(tmp_path):
    path = tmp_path / "x_eval_results.json"
    path.write_text("{")
    with pytest.raises(InteropFormatError, match=f"{path}: not JSON"):
        load_saebench(path)
