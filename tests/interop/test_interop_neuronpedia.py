import gzip
import json

import pytest

from saexplain.api import given_explanations, read_explanations
from saexplain.errors import ConfigError
from saexplain.interop import (
    InteropFormatError,
    export_neuronpedia,
    load_neuronpedia_explanations,
)
from saexplain.models import Status
from saexplain.report import RunResults

from .conftest import FIXTURES


def ok_texts(results, explainer):
    return {
        ("8-res-jb", res.latent.index): res.explanation(explainer)
        for res in results
        if res.explanation(explainer) is not None
    }


def test_round_trip_gives_the_same_explanations_and_keys(run_dir, tmp_path):
    results = RunResults.load(run_dir)
    export_neuronpedia(
        results, tmp_path / "np", model_id="gpt2-small", source="8-res-jb", batch_size=2
    )
    imported = load_neuronpedia_explanations(tmp_path / "np")
    assert imported.explainers == ["saexplain_maxact", "saexplain_vocabproj"]
    for name in ("maxact", "vocabproj"):
        assert imported.by_key(f"saexplain_{name}") == ok_texts(results, name)
    # the hostile text survives unchanged (escaping is the renderer's job, not the format's)
    assert any('onmouseover="alert' in t for t in imported.by_key("saexplain_maxact").values())
    assert {e.model for e in imported} == {"local/<smollm2>"}


def test_real_shape_fixture_feeds_the_given_explainer(tmp_path):
    imported = load_neuronpedia_explanations(FIXTURES / "neuronpedia")
    assert imported.sources == ["8-res-jb", "9-res-jb"]
    assert imported.explainers == ["np_max-act", "oai_token-act-pair"]
    texts = imported.given(source="8-res-jb", explainer="oai_token-act-pair")
    assert texts == {1041: "references to the Roman Empire", 7: 'the token "the" after a comma'}
    spec = given_explanations(texts)  # what sx.score runs
    assert spec.name == "given" and spec.settings["explanations"]["1041"].startswith("refer")
    path = imported.write_jsonl(tmp_path / "given.jsonl", "9-res-jb", "oai_token-act-pair")
    assert read_explanations(path) == {12: "<script>alert(1)</script> HTML tags"}
    with pytest.raises(ConfigError, match="2 sources"):
        imported.given(explainer="np_max-act")
    with pytest.raises(ConfigError, match="no explainer 'nope'"):
        imported.given(source="8-res-jb", explainer="nope")


def write_gz(path, lines):
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    return path


ROW = {"modelId": "m", "layer": "0-res", "index": "3", "description": "x", "typeName": "t"}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "a JSON object"),
        (json.dumps({**ROW, "description": ""}), "`description` must be a non-empty string"),
        (json.dumps({k: v for k, v in ROW.items() if k != "index"}), "missing `index`"),
        (json.dumps({**ROW, "index": "-4"}), "not a non-negative integer"),
    ],
)
def test_malformed_rows_name_the_file_line_and_problem(tmp_path, line, problem):
    path = write_gz(tmp_path / "batch-0.jsonl.gz", [json.dumps(ROW), line])
    with pytest.raises(InteropFormatError, match=problem) as err:
        load_neuronpedia_explanations(path)
    assert f"{path}:2" in str(err.value)


def test_malformed_files_and_ambiguity(tmp_path):
    bad = tmp_path / "batch-1.jsonl.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(InteropFormatError, match=f"{bad}: cannot read"):
        load_neuronpedia_explanations(bad)
    with pytest.raises(InteropFormatError, match="no such file or folder"):
        load_neuronpedia_explanations(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InteropFormatError, match="no Neuronpedia batch files"):
        load_neuronpedia_explanations(empty)
    twice = write_gz(tmp_path / "twice.jsonl.gz", [json.dumps(ROW), json.dumps(ROW)])
    with pytest.raises(InteropFormatError, match="two 't' explanations"):
        load_neuronpedia_explanations(twice)
    two_models = write_gz(
        tmp_path / "models.jsonl.gz", [json.dumps(ROW), json.dumps({**ROW, "modelId": "n"})]
    )
    with pytest.raises(ConfigError, match="several models"):
        load_neuronpedia_explanations(two_models)
    assert len(load_neuronpedia_explanations(two_models, model_id="n")) == 1


def test_failed_explanations_are_not_exported(run, run_dir, tmp_path):
    results = RunResults.load(run_dir)
    export_neuronpedia(results, tmp_path / "np", model_id="m", source="s")
    imported = load_neuronpedia_explanations(tmp_path / "np")
    failed = [e for e in run.explanations if e.status is not Status.OK]
    assert failed
    keys = imported.by_key("saexplain_vocabproj")
    assert all(("s", e.latent.index) not in keys for e in failed)
