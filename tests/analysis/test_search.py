"""Semantic search over a run's explanations."""

from __future__ import annotations

import pytest

from saexplain.analysis import search
from saexplain.analysis.search import default_embedder, explanations_of
from saexplain.errors import ConfigError
from saexplain.models import Explanation, LatentRef, Status
from saexplain.report.results import RunResults
from tests.analysis.planted import hash_embed

TEXTS = {
    0: "cats and kittens",
    1: "python code and programming",
    2: "money, prices and banks",
    3: "rivers and lakes",
}


def ref(i: int) -> LatentRef:
    return LatentRef(coder_id="sae", hook="blocks.0.hook_resid_pre", index=i)


@pytest.fixture
def run() -> RunResults:
    exps = [Explanation(latent=ref(i), explainer="maxact", text=t) for i, t in TEXTS.items()]
    exps.append(Explanation(latent=ref(9), explainer="maxact", status=Status.ERROR, error="x"))
    return RunResults(explanations=exps)


def test_the_nearest_explanation_comes_first(run):
    hits = search(run, "programming code", k=2, embed=hash_embed)
    assert hits[0].latent.index == 1
    assert len(hits) == 2 and hits[0].similarity > hits[1].similarity
    assert hits[0].to_json()["explanation"] == TEXTS[1]
    assert search(run, "rivers", k=10, embed=hash_embed)[0].latent.index == 3


def test_only_ok_explanations_are_searched(run):
    assert sorted(r.index for r in explanations_of(run)) == [0, 1, 2, 3]
    assert len(search(run, "anything", k=10, embed=hash_embed)) == 4


def test_bad_queries_are_refused(run):
    with pytest.raises(ConfigError, match="empty"):
        search(run, "  ", embed=hash_embed)
    with pytest.raises(ConfigError, match="k must"):
        search(run, "cats", k=0, embed=hash_embed)
    with pytest.raises(ConfigError, match="no explainer"):
        search(run, "cats", explainer="vocabproj", embed=hash_embed)


def test_without_the_embeddings_plugin_the_error_says_what_to_install(monkeypatch):
    from saexplain.plugins import get_plugin_manager

    scorers = get_plugin_manager().scorers
    if "embedding" in scorers:
        monkeypatch.setattr(type(scorers), "__contains__", lambda self, name: False)
    with pytest.raises(ConfigError, match="saexplain-embeddings"):
        default_embedder()
