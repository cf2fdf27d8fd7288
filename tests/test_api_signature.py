"""`sx.explain` / `sx.aexplain` / `sx.score` have real, typed, keyword-only signatures: a typo'd
keyword names the closest valid one, a bad value is a one-line ConfigError, paths may be
`pathlib.Path`s, and texts may come as a list, a pandas Series or DataFrame, a Hugging Face
Dataset or any iterable."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

import saexplain as sx
from saexplain.errors import ConfigError
from saexplain.models import RunConfig
from saexplain.testing import FakeBackend, PlantedValuesCoder, synthetic_corpus

# RunConfig fields the API spells otherwise
RENAMED = {
    "model": "model",
    "coders": "sae",  # one coder or a list of them
    "explainer_model": "provider",
    "scorer_model": "scorer_provider",
}
# filled in by the pipeline, not set by a user
INTERNAL = {"fingerprints"}


@pytest.mark.parametrize("fn", [sx.explain, sx.aexplain])
def test_every_run_setting_is_a_typed_keyword(fn):
    params = inspect.signature(fn).parameters
    assert not [p for p in params.values() if p.kind is p.VAR_KEYWORD]
    for field, info in RunConfig.model_fields.items():
        if field in INTERNAL:
            continue
        name = RENAMED.get(field, field)
        assert name in params, f"RunConfig.{field} has no keyword"
        param = params[name]
        assert param.annotation is not inspect.Parameter.empty, name
        if name in RENAMED.values() or info.is_required():
            continue
        assert param.kind is param.KEYWORD_ONLY, name
        default = info.get_default(call_default_factory=True)
        if isinstance(default, dict):
            assert param.default is None, name  # None: an empty mapping
        elif field in ("latents", "explainers", "scorers"):
            continue  # the notebook's shorthand forms
        else:
            assert param.default == default, name


def test_explain_and_score_keep_their_names_and_docs():
    assert sx.explain.__name__ == "explain" and "pandas Series" in (sx.explain.__doc__ or "")
    assert sx.score.__name__ == "score" and "already have" in (sx.score.__doc__ or "")
    explain_params = inspect.signature(sx.explain).parameters
    score_params = inspect.signature(sx.score).parameters
    shared = set(explain_params) - {"latents", "explainers", "provider", "scorer_provider"}
    assert shared <= set(score_params)


def test_a_typo_names_the_closest_keyword():
    with pytest.raises(
        TypeError, match=r"unexpected keyword argument 'n_token'; did you mean 'n_tokens'\?"
    ):
        sx.explain(object(), object(), n_token=5)
    with pytest.raises(TypeError, match=r"'scorer'; did you mean 'scorers'\?"):
        sx.score(object(), object(), {1: "x"}, scorer=["detection"])


def test_a_bad_value_is_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"n_tokens: .*greater than or equal to 1") as info:
        sx.explain(object(), object(), n_tokens=0, output_dir=tmp_path)
    assert "\n" not in str(info.value)


WORDS = {1: "cat", 2: "dog"}
VOCAB = ["cat", "dog", "sat", "on", "the", "mat", "ran", "far"]


def run(tmp_path: Path, dataset: Any, name: str, **kw: Any) -> Any:
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=256, seed=0)
    coder = PlantedValuesCoder(backend, {i: {f" {w}": 1.0} for i, w in WORDS.items()}, d_sae=4)
    return sx.explain(
        backend,
        coder,
        latents=sorted(WORDS),
        explainers=[{"name": "given", "settings": {"explanations": {"1": "cats"}}}],
        scorers=[],
        dataset=dataset,
        n_tokens=32 * 40,
        context_length=32,
        records={"rare_below": 2},
        output_dir=tmp_path,  # a Path
        name=name,
        progress=False,
        **kw,
    )


def texts() -> list[str]:
    return synthetic_corpus(120, seed=0, vocab=VOCAB, min_words=8, max_words=30)


def counts(results: Any) -> list[int]:
    return [results[i].stats.count for i in sorted(WORDS)]


def test_datasets_in_every_form_give_the_same_data(tmp_path):
    pd = pytest.importorskip("pandas")
    datasets = pytest.importorskip("datasets")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts()) + "\n")

    expected = counts(run(tmp_path, texts(), "list"))
    assert all(expected)
    assert counts(run(tmp_path, pd.Series(texts()), "series")) == expected
    frame = pd.DataFrame({"body": texts(), "n": range(120)})
    assert counts(run(tmp_path, frame, "frame", text_field="body")) == expected
    hf = datasets.Dataset.from_dict({"body": texts()})
    assert counts(run(tmp_path, hf, "hf", text_field="body")) == expected
    assert (
        counts(run(tmp_path, hf.to_iterable_dataset(), "hfstream", text_field="body")) == expected
    )
    assert counts(run(tmp_path, (t for t in texts()), "generator")) == expected
    assert counts(run(tmp_path, corpus, "path")) == expected  # a pathlib.Path


def test_a_missing_text_column_names_the_columns(tmp_path):
    datasets = pytest.importorskip("datasets")
    hf = datasets.Dataset.from_dict({"body": texts()})
    with pytest.raises(ConfigError, match=r"no column 'text' \(columns: \['body'\]\).*text_field="):
        run(tmp_path, hf, "hf")
    with pytest.raises(ConfigError, match=r"DatasetDict with splits \['train'\]"):
        run(tmp_path, datasets.DatasetDict({"train": hf}), "dd")
