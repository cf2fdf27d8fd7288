import json

import pytest

from saexplain.interop import (
    InteropFormatError,
    export_neuron_explanations,
    export_neuron_record,
    load_neuron_explanations,
    load_neuron_record,
)
from saexplain.models import ExampleKind
from saexplain.report import RunResults

from .conftest import FIXTURES


def test_record_fixture_maps_to_a_latent_record():
    record = load_neuron_record(FIXTURES / "neuron_record.json", coder_id="gpt2-mlp")
    assert (record.latent.coder_id, record.latent.hook, record.latent.index) == (
        "gpt2-mlp",
        "layer5",
        131,
    )
    top = record.explanation_examples
    assert [e.str_tokens for e in top] == [("the", " dogs", " ran"), (" puppy", "!")]
    assert top[0].activations == (0.0, 3.0, 0.5) and top[0].tokens == (-1, -1, -1)
    assert [(e.quantile, e.text) for e in record.scoring_examples] == [
        (0, "A small dog"),
        (1, "my dog barks"),
    ]
    assert [e.kind for e in record.non_activating] == [ExampleKind.RANDOM]
    assert record.stats.quantiles == (0.0, 0.5, 3.0)
    assert record.stats.max == 3.0
    assert record.stats.n_tokens == 14 and record.stats.count == 6


def test_record_round_trip(run, tmp_path):
    original = run.records[0]
    path = export_neuron_record(original, tmp_path / "r.json", layer=2)
    back = load_neuron_record(path, coder_id=original.latent.coder_id, hook=original.latent.hook)
    assert back.latent == original.latent
    for field in ("explanation_examples", "scoring_examples", "non_activating"):
        ours, theirs = getattr(original, field), getattr(back, field)
        assert [(e.str_tokens, e.activations) for e in ours] == [
            (e.str_tokens, e.activations) for e in theirs
        ]
    assert [e.quantile or 0 for e in original.scoring_examples] == [
        e.quantile for e in back.scoring_examples
    ]


def test_explanations_round_trip_and_fixture(run_dir, tmp_path):
    results = RunResults.load(run_dir)
    paths = export_neuron_explanations(results, tmp_path / "ne", explainer="maxact", layer=3)
    assert all(p.parent.name == "3" for p in paths)
    back = load_neuron_explanations(tmp_path / "ne")
    expected = {
        ("layer3", r.latent.index): r.explanation("maxact")
        for r in results
        if r.explanation("maxact") is not None
    }
    assert back.by_key() == expected
    assert {e.score for e in back} == {None}  # the run has no simulation scorer
    fixture = load_neuron_explanations(FIXTURES / "neuron_explanations.json")
    (item,) = fixture
    assert (item.source, item.index, item.text, item.score) == (
        "layer5",
        131,
        "dogs and puppies",
        0.42,
    )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d.update(dataclass_name="Other"), "dataclass_name is 'Other'"),
        (lambda d: d["neuron_id"].update(neuron_index=-1), "neuron_index must be a non-neg"),
        (lambda d: d.update(random_sample={}), "`random_sample` must be a list"),
        (
            lambda d: d["most_positive_activation_records"][0].update(activations=[1.0]),
            r"most_positive_activation_records\[0\]: .*same length",
        ),
        (lambda d: d["random_sample_by_quantile"][1][0].update(tokens=[1, 2, 3]), "strings"),
        (lambda d: d.update(quantile_boundaries="x"), "list of numbers"),
    ],
)
def test_malformed_record_names_the_file_and_problem(tmp_path, change, problem):
    data = json.loads((FIXTURES / "neuron_record.json").read_text())
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InteropFormatError, match=problem) as err:
        load_neuron_record(path)
    assert str(path) in str(err.value)


def test_malformed_explanations(tmp_path):
    data = json.loads((FIXTURES / "neuron_explanations.json").read_text())
    data["scored_explanations"][0]["explanation"] = ""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InteropFormatError, match=r"scored_explanations\[0\]: `explanation`"):
        load_neuron_explanations(path)
    with pytest.raises(InteropFormatError, match="no such file or folder"):
        load_neuron_explanations(tmp_path / "missing")
