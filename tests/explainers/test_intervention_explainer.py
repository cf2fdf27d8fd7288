"""The `intervention` explainer on the numpy FakeBackend: a planted output latent (decoder row
along a word's embedding, unembedding tied) is calibrated, its clean and intervened
continuations and promoted tokens reach the LLM, and the evidence records the strength."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from saexplain.explainers.ensemble import Ensemble
from saexplain.explainers.intervention import Intervention
from saexplain.models import Status
from saexplain.protocols import MethodContext
from saexplain.testing import (
    FakeBackend,
    FakeCoder,
    ScriptedProvider,
    competent_explainer,
    make_record,
)

TEXTS = ["The cat sat on the mat", "A cat chased the dog", "We walked by the river"]


@pytest.fixture
def world():
    backend = FakeBackend(d_model=32, n_layers=2, vocab_size=1024, seed=0)
    backend._unembed = backend._embed.T.copy()  # tied embeddings: the decoder row promotes " cat"
    coder = FakeCoder.planted(backend, {3: " cat"}, d_sae=8)
    record = make_record(backend, coder, 3, TEXTS)
    return backend, coder, record


def explain(explainer, backend, coder, record, provider, work_dir=None):
    ctx = MethodContext(
        backend=backend, coder=coder, providers={"explainer": provider}, work_dir=work_dir
    )
    return asyncio.run(explainer.explain(record, ctx))


def test_prompt_shows_pairs_and_promoted_token(world, tmp_path):
    backend, coder, record = world
    provider = ScriptedProvider(competent_explainer)
    result = explain(Intervention(target_kl=1.0), backend, coder, record, provider, tmp_path)
    assert result.status is Status.OK, result.error
    prompt = provider.requests[-1].messages[-1].content
    raised = prompt.split("Tokens the intervention raised most:\n")[1].splitlines()[0]
    assert raised.startswith('" cat"')  # the planted output token leads the promoted list
    assert "with the latent:" in prompt and prompt.count("Prompt ") == 8
    assert "cat" in result.text.lower()
    strength = result.evidence["strength"]
    assert strength["reached"] is True and abs(strength["kl"] - 1.0) <= 0.1
    assert result.evidence["promoted"][0]["token"] == " cat"
    pairs = result.evidence["pairs"]
    assert any(p["clean"] != p["intervened"] for p in pairs)
    # the intervened continuations say the promoted word; the clean ones do not
    assert sum(" cat" in p["intervened"] for p in pairs) > sum(" cat" in p["clean"] for p in pairs)
    assert list((tmp_path / "calibration").glob("*.json"))  # the strength was cached


def test_dead_direction_fails_without_asking(world):
    backend, coder, record = world
    coder = FakeCoder.planted(backend, {3: " cat"}, d_sae=8)
    coder.W_dec[3] = 0.0  # an intervention that changes nothing
    provider = ScriptedProvider(competent_explainer)
    result = explain(Intervention(max_steps=4), backend, coder, record, provider)
    assert result.status is Status.FAILED and "changed no prediction" in (result.error or "")
    assert provider.requests == []


def test_joins_ensemble_as_evidence_source(world):
    backend, coder, record = world
    provider = ScriptedProvider(competent_explainer)
    ensemble = Ensemble(components=["vocabproj", "intervention"], intervention={"top": 5})
    assert ensemble.needs.backend and not ensemble.needs.records
    result = explain(ensemble, backend, coder, record, provider)
    assert result.status is Status.OK, result.error
    prompt = provider.requests[-1].messages[-1].content
    assert "with the latent:" in prompt and "Tokens the intervention raised most" in prompt
    assert result.evidence["intervention"]["strength"]["target_kl"] == 0.5
    assert result.settings["intervention"]["top"] == 5


def test_shots_render_and_settings_recorded():
    explainer = Intervention(top=3, prompts=["Hello there"])
    shot = explainer.shot_messages()[0].content
    assert shot.count('"') >= 6 and '" sea", " ocean", " beach"\n' in shot
    recorded = explainer.recorded_settings()
    assert recorded["prompts"] == ["Hello there"]
    assert recorded["prompt"] == "intervention_explainer@1"
    assert np.isclose(recorded["target_kl"], 0.5)
