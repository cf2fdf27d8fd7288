import gzip
import json
import warnings

import pytest

from saexplain.errors import ConfigError
from saexplain.models import Explanation, LatentRef, Prediction, Score, Status
from saexplain.report import (
    ExportGapWarning,
    RunResults,
    export_delphi,
    export_neuronpedia,
    item_examples,
)

NP_KEYS = {"modelId", "layer", "index", "description", "typeName", "explanationModelName"}
DELPHI_KEYS = {
    "str_tokens",
    "activations",
    "quantile",
    "distance",
    "activating",
    "prediction",
    "probability",
    "correct",
    "error",
}


def read_batches(paths):
    rows = []
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows += [json.loads(line) for line in f]
    return rows


def test_neuronpedia_batches(run, run_dir, tmp_path):
    results = RunResults.load(run_dir)
    out = tmp_path / "np"
    paths = export_neuronpedia(
        results, out, model_id="gpt2-small", source="0-res-test", batch_size=3
    )
    assert [p.name for p in paths] == ["batch-0.jsonl.gz", "batch-1.jsonl.gz", "batch-2.jsonl.gz"]
    assert all(p.parent == out / "gpt2-small" / "0-res-test" / "explanations" for p in paths)
    rows = read_batches(paths)
    ok = [e for e in run.explanations if e.status is Status.OK]
    assert len(rows) == len(ok) == 7
    assert all(set(r) == NP_KEYS for r in rows)
    assert {(r["index"], r["typeName"], r["description"]) for r in rows} == {
        (str(e.latent.index), f"saexplain_{e.explainer}", e.text) for e in ok
    }
    assert all(r["modelId"] == "gpt2-small" and r["layer"] == "0-res-test" for r in rows)
    assert all(r["explanationModelName"] == "local/<smollm2>" for r in rows)  # from settings
    manifest = json.loads((out / "saexplain_export.json").read_text())
    assert manifest["format"] == "neuronpedia" and manifest["rows"] == 7
    assert manifest["skipped_not_ok"] == 1 and manifest["run_manifest"]["seed"] == 7
    # reproducible bytes
    again = export_neuronpedia(
        results, out, model_id="gpt2-small", source="0-res-test", batch_size=3
    )
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]


def test_neuronpedia_options_and_errors(run_dir, tmp_path):
    results = RunResults.load(run_dir)
    paths = export_neuronpedia(
        results,
        tmp_path,
        model_id="m",
        source="s",
        explainer_model="gpt-4o-mini",
        type_names={"maxact": "np_max-act"},
    )
    rows = read_batches(paths)
    assert {r["typeName"] for r in rows} == {"np_max-act", "saexplain_vocabproj"}
    assert {r["explanationModelName"] for r in rows} == {"gpt-4o-mini"}
    with pytest.raises(ConfigError):
        export_neuronpedia(results, tmp_path, model_id="a/b", source="s")
    ref = LatentRef(coder_id="other", hook="h", index=0)
    mixed = RunResults(
        explanations=[*results.explanations, Explanation(latent=ref, explainer="e", text="t")]
    )
    with pytest.raises(ConfigError, match="several coders"):
        export_neuronpedia(mixed, tmp_path, model_id="m", source="s")
    only = export_neuronpedia(mixed, tmp_path / "o", model_id="m", source="s", coder_id="other")
    assert [r["description"] for r in read_batches(only)] == ["t"]
    # the config's explainer model is the fallback
    plain = [e.model_copy(update={"settings": {}}) for e in results.explanations]
    cfg = RunResults(explanations=plain, config=results.config)
    rows = read_batches(export_neuronpedia(cfg, tmp_path / "c", model_id="m", source="s"))
    assert {r["explanationModelName"] for r in rows} == {"scripted-1"}


def test_delphi_layout_and_per_example_records(run, run_dir, tmp_path):
    results = RunResults.load(run_dir)
    out = tmp_path / "delphi"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the classifier layout is inferred: no gap
        paths = export_delphi(results, out)
    assert len(paths) > 0
    for explainer in ("maxact", "vocabproj"):
        for exp in (e for e in run.explanations if e.explainer == explainer):
            f = out / explainer / "explanations" / f"{exp.latent.key}.txt"
            if exp.status is Status.OK:
                assert json.loads(f.read_text()) == exp.text
            else:
                assert not f.exists()
    for score in (s for s in run.scores if s.status is Status.OK):
        f = out / score.explainer / "scores" / score.scorer / f"{score.latent.key}.txt"
        rows = json.loads(f.read_text())
        assert len(rows) == len(score.predictions)
        record = results[score.latent].record
        examples = [*record.scoring_examples, *record.non_activating]
        for row, p in zip(rows, score.predictions, strict=True):
            assert set(row) == DELPHI_KEYS
            assert row["activating"] == p.truth and row["prediction"] == p.predicted
            assert row["correct"] == p.correct and row["probability"] == p.probability
            assert row["str_tokens"] == list(examples[p.item].str_tokens)
            # the mapping is right: activating rows are the ones where the latent fires
            assert (max(row["activations"]) > 0) == p.truth
            if p.error is not None:
                assert row["prediction"] is None and row["correct"] is None
    manifest = json.loads((out / "saexplain_export.json").read_text())
    assert manifest["layout"] == "per-explainer"
    assert manifest["gaps"]["maxact"]["item_mapping"]["detection"] == {"inferred": 4}
    assert manifest["gaps"]["maxact"]["scores_without_predictions"] == {}
    assert manifest["gaps"]["maxact"]["failed_scores"] == {"fuzzing": 1}


def test_delphi_single_explainer_is_flat(run_dir, tmp_path):
    results = RunResults.load(run_dir)
    export_delphi(results, tmp_path, explainer="maxact")
    assert (tmp_path / "explanations").is_dir() and (tmp_path / "scores" / "fuzzing").is_dir()
    assert not (tmp_path / "maxact").exists()
    with pytest.raises(ConfigError, match="not in this run"):
        export_delphi(results, tmp_path, explainer="nope")


def _score(ref, predictions, settings):
    return Score(
        latent=ref, scorer="s", explainer="e", value=0.5, predictions=predictions, settings=settings
    )


def test_item_mapping_declared_and_missing(run, tmp_path):
    record = run.records[0]
    ref = record.latent
    preds = (
        Prediction(item=0, truth=True, predicted=True),
        Prediction(item=1, truth=False, predicted=True),
        Prediction(item=2, truth=False, predicted=False),
    )
    inline = record.non_activating[2].model_dump(mode="json")
    items = [
        {"source": "explanation_examples", "index": 0},
        {"source": "non_activating", "index": 1},
        {"example": inline},
    ]
    examples, how = item_examples(_score(ref, preds, {"items": items}), record)
    assert how == "items"
    assert examples == [
        record.explanation_examples[0],
        record.non_activating[1],
        record.non_activating[2],
    ]
    declared = _score(ref, preds, {"item_index": "non_activating+scoring_examples"})
    examples, how = item_examples(declared, record)
    assert how == "item_index" and examples[0] == record.non_activating[0]
    # truths that contradict the classifier layout: not inferred
    wrong = (Prediction(item=0, truth=False, predicted=True),)
    assert item_examples(_score(ref, wrong, {}), record) == (None, None)
    assert item_examples(_score(ref, preds, {}), None) == (None, None)

    results = RunResults(
        explanations=[Explanation(latent=ref, explainer="e", text="t")],
        scores=[_score(ref, wrong, {})],
    )
    with pytest.warns(ExportGapWarning, match="s: 1"):
        export_delphi(results, tmp_path)
    rows = json.loads((tmp_path / "scores" / "s" / f"{ref.key}.txt").read_text())
    assert rows[0]["str_tokens"] is None and rows[0]["activating"] is False
    gaps = json.loads((tmp_path / "saexplain_export.json").read_text())["gaps"]["e"]
    assert gaps["unmapped_items"] == {"s": 1} and gaps["item_mapping"] == {"s": {"none": 1}}


def test_scores_without_predictions_are_counted(tmp_path):
    ref = LatentRef(coder_id="c", hook="h", index=0)
    results = RunResults(scores=[_score(ref, (), {})])
    assert export_delphi(results, tmp_path) == []
    gaps = json.loads((tmp_path / "saexplain_export.json").read_text())["gaps"]["e"]
    assert gaps["scores_without_predictions"] == {"s": 1}


def test_neuronpedia_names_the_model_that_wrote_each_explanation(tmp_path):
    """Each row names the LLM of its own explanation (results carry `llm`), not the config's
    default model; an LLM-free explainer is named by its method, selfexplain by the subject
    model that explained itself."""
    ref = LatentRef(coder_id="c", hook="h", index=0)

    def exp(explainer: str, llm: str | None) -> Explanation:
        return Explanation(latent=ref, explainer=explainer, text="t", llm=llm, method_id="id")

    results = RunResults(
        explanations=[
            exp("maxact", "litellm:gpt-4o-mini"),
            exp("vocabproj", "scripted:scripted-1"),
            exp("selfexplain", None),
            exp("mine", None),
        ],
        config={"explainer_model": {"provider": "litellm", "model": "local/smollm2"}},
        manifest={"model": "HuggingFaceTB/SmolLM2-135M"},
    )
    rows = read_batches(export_neuronpedia(results, tmp_path, model_id="m", source="s"))
    assert {r["typeName"]: r["explanationModelName"] for r in rows} == {
        "saexplain_maxact": "gpt-4o-mini",
        "saexplain_vocabproj": "scripted-1",
        "saexplain_selfexplain": "HuggingFaceTB/SmolLM2-135M",
        "saexplain_mine": "mine",
    }
