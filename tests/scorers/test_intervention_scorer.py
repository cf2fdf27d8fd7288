"""intervention on a planted *output* latent of the fake model: a decoder row along one word's
unembedding, so clamping it makes the model write that word. A competent scorer-model double
(the explanation's named word is likelier after a text that contains it) makes the true
explanation beat both baselines, while another word's explanation beats neither."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from pipeline import toy
from pipeline.test_pipeline import config as pipeline_config

from saexplain._async import run_sync
from saexplain.errors import ConfigError, ProviderServerError
from saexplain.methods import Needs, needs_of
from saexplain.models import (
    ChatRequest,
    ChatResponse,
    Choice,
    Explanation,
    LatentRecord,
    LatentRef,
    LatentStats,
    Score,
    Status,
    TokenLogprob,
    Usage,
)
from saexplain.pipeline import arun
from saexplain.protocols import Add, Clamp, MethodContext, write_hook
from saexplain.report import RunResults, summarize
from saexplain.scorers.intervention import InterventionScorer, RandomCoder
from saexplain.testing import (
    FakeBackend,
    FakeCoder,
    ScriptedProvider,
    check_scorer,
    competent_explainer,
    explanation_keywords,
    fresh_plugin_manager,
)

NAMED, OTHER = -1.0, -4.0  # the double's log p of a named word seen in the text, of any other
LATENT, D_SAE = 3, 8
HOOK = "blocks.1.hook_resid_post"  # the last residual of a 2-layer fake: straight to the logits
VOCAB = [f" w{i}" for i in range(120)] + [" cat", " dog"]
FAST = {"max_new_tokens": 12, "n_random_latents": 2, "target_kl": [0.25, 0.5]}


def competent_pm(request: ChatRequest) -> ChatResponse:
    """log p_M(explanation | text): each of the explanation's keywords is likelier when the text
    it reads contains that word (it never knows which arm the text came from)."""
    assert request.score_text is not None, "intervention only scores text"
    text = re.search(r"^Text: (.*)$", request.messages[-1].content, re.MULTILINE)
    seen = {w.lower() for w in re.findall(r"\w+", text.group(1) if text else "")}
    keywords = set(explanation_keywords(request.score_text))
    scored = tuple(
        TokenLogprob(token=w, logprob=NAMED if w.lower() in keywords & seen else OTHER)
        for w in re.findall(r"\w+|[^\w\s]+", request.score_text)
    )
    return ChatResponse(
        model="pm",
        choices=(Choice(text="", finish_reason="scored"),),
        scored=scored,
        usage=Usage(prompt_tokens=10 + len(scored), calls=1),
    )


def pm_provider(**kwargs) -> ScriptedProvider:
    provider = ScriptedProvider(competent_pm, **kwargs)
    provider.capabilities = dataclasses.replace(provider.capabilities, prompt_logprobs=True)
    return provider


@pytest.fixture(scope="module")
def world():
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=256, seed=1)
    backend.tokenize(["".join(VOCAB)])  # the words the model may write
    coder = FakeCoder.random(backend.d_model, D_SAE, hook=HOOK, seed=2)
    u = backend._unembed[:, backend._id(" cat")]
    coder._W_dec[LATENT] = u / np.linalg.norm(u)  # clamping it promotes " cat"
    coder.W_enc[:, LATENT] = coder._W_dec[LATENT]
    return backend, coder


def record(coder) -> LatentRecord:
    ref = LatentRef(coder_id=coder.id, hook=coder.hook, index=LATENT)
    return LatentRecord(latent=ref, stats=LatentStats(n_tokens=0, count=0))


def about(rec: LatentRecord, word: str) -> Explanation:
    return Explanation(latent=rec.latent, text=f'The word "{word}"', explainer="planted")


SEEDS = tuple(range(7, 27))  # temperature-1 sampling: judged over enough latent seeds that the
# means do not hang on one sampling order (5 seeds sat within noise of the margins)


def test_true_explanation_beats_both_baselines_and_a_shuffled_one_does_not(world):
    backend, coder = world
    rec = record(coder)
    scorer = InterventionScorer(**{**FAST, "max_new_tokens": 24})
    true: dict[str, list[float]] = {}
    shuffled: dict[str, list[float]] = {}
    for seed in SEEDS:
        ctx = MethodContext(
            backend=backend, coder=coder, providers={"scorer": pm_provider()}, seed=seed
        )
        score = check_scorer(scorer, rec, about(rec, "cat"), ctx)
        assert score.status is Status.OK and score.n_errors == 0, score.error
        m = score.metrics
        for t in ("kl=0.25", "kl=0.5"):
            assert m[f"{t}/reached"] == 1.0  # the calibration met the target within 10%
            target = float(t.split("=")[1])
            assert abs(m[f"{t}/kl"] - target) <= 0.1 * target
            # the intervened texts say "cat" more often than the clean ones, every time
            assert m[f"{t}/score"] > m[f"{t}/random_latents"], (seed, m)
        assert score.value == pytest.approx((m["kl=0.25/score"] + m["kl=0.5/score"]) / 2)
        assert m["decoys"] == 0.0  # no decoy names a word, so the decoys gain exactly nothing
        other = run_sync(scorer.score(rec, about(rec, "dog"), ctx)).metrics
        for name, metrics in (("true", m), ("shuffled", other)):
            into = true if name == "true" else shuffled
            for key, value in metrics.items():
                into.setdefault(key, []).append(float(value or 0.0))

    def mean(values: dict[str, list[float]], key: str) -> float:
        return float(np.mean(values[key]))

    print({k: round(mean(true, k), 3) for k in true if "/" in k})
    for t in ("kl=0.25", "kl=0.5"):
        assert mean(true, f"{t}/score") > mean(true, f"{t}/random_latents") + 1.0, true
        assert mean(true, f"{t}/score") > mean(true, f"{t}/decoys") + 1.0, true
        # "dog" is no likelier after the cat texts than after any latent's
        assert abs(mean(shuffled, f"{t}/score")) < 0.5, shuffled
    assert mean(true, "kl=0.5/score") >= mean(true, "kl=0.25/score")  # a stronger push
    assert mean(true, "kl=0.5/score") > mean(shuffled, "kl=0.5/score") + 1.5


def test_evidence_usage_and_the_calls_made(world):
    backend, coder = world
    rec = record(coder)
    provider = pm_provider()
    ctx = MethodContext(backend=backend, coder=coder, providers={"scorer": provider}, seed=7)
    scorer = InterventionScorer(**FAST, decoys=["Numbers."], prompts=["The", "I think that"])
    score = run_sync(scorer.score(rec, about(rec, "cat"), ctx))
    # per target and prompt: 2 calls (clean, intervened) for the explanation, 1 decoy, 2
    # random latents and the random coder
    assert len(provider.requests) == score.usage.calls == 2 * 2 * 2 * (1 + 1 + 2 + 1)
    assert {r.score_text for r in provider.requests} == {'The word "cat"', "Numbers."}
    assert len(score.predictions) == 2 * 2 and all(p.truth for p in score.predictions)
    targets = score.evidence["targets"]
    assert [t["target_kl"] for t in targets] == [0.25, 0.5]
    for t in targets:
        assert t["strength"]["latent"] == LATENT and t["strength"]["reached"] is True
        assert len(t["pairs"]) == 2 and len(t["random_strengths"]) == 2
        assert {r["latent"] for r in t["random_strengths"]} == set(score.settings["random_latents"])
        assert LATENT not in score.settings["random_latents"]
    assert score.settings["prompt"] == "intervention@1" and "latent_seed" in score.settings
    # the same run seed repeats the score exactly (the calibration is cached by then)
    again = run_sync(scorer.score(rec, about(rec, "cat"), ctx))
    assert (
        again.value == score.value and again.evidence["targets"][0]["pairs"] == targets[0]["pairs"]
    )


def test_a_provider_without_prompt_logprobs_is_refused_before_any_work(world):
    backend, coder = world
    rec = record(coder)
    calls = backend.forward_calls
    plain = ScriptedProvider(["never asked"])
    ctx = MethodContext(backend=backend, coder=coder, providers={"scorer": plain})
    with pytest.raises(ConfigError, match=r"no prompt logprobs.*local in-process provider"):
        InterventionScorer().preflight(ctx)
    with pytest.raises(ConfigError, match="no scorer provider"):
        InterventionScorer().preflight(MethodContext(backend=backend, coder=coder))
    with pytest.raises(ConfigError, match="no prompt logprobs"):
        run_sync(InterventionScorer().score(rec, about(rec, "cat"), ctx))
    assert backend.forward_calls == calls and plain.requests == []


def test_failed_calls_are_error_predictions_and_all_failed_is_an_error(world):
    backend, coder = world
    rec = record(coder)
    settings = {**FAST, "n_random_latents": 0, "decoys": []}

    def every_other(index: int, request: ChatRequest):
        return ProviderServerError("outage", model="pm") if index % 4 == 0 else None

    ctx = MethodContext(
        backend=backend, coder=coder, providers={"scorer": pm_provider(fail_on=every_other)}
    )
    partial = run_sync(InterventionScorer(**settings).score(rec, about(rec, "cat"), ctx))
    assert partial.status is Status.OK and partial.partial and partial.value is not None
    assert partial.metrics["n_errors"] == partial.n_errors > 0
    assert all("outage" in p.error for p in partial.predictions if p.error)

    down = MethodContext(
        backend=backend,
        coder=coder,
        providers={"scorer": pm_provider(fail_on=lambda i, r: ProviderServerError("down"))},
    )
    failed = run_sync(InterventionScorer(**settings).score(rec, about(rec, "cat"), down))
    assert failed.status is Status.ERROR and failed.value is None and "down" in failed.error


def test_settings_needs_and_registration():
    assert needs_of(InterventionScorer()) == Needs(
        provider=True, backend=True, coder=True, records=False
    )
    with pytest.raises(ConfigError, match="target_kl"):
        InterventionScorer(target_kl=[0.5, -1.0])
    with pytest.raises(ConfigError, match="tol"):
        InterventionScorer(tol=1.5)
    assert InterventionScorer().decoys  # the prompt's decoys
    with fresh_plugin_manager() as pm:
        assert isinstance(pm.scorers.create("intervention"), InterventionScorer)


def test_the_summary_shows_the_score_beside_its_baselines_per_target(world):
    backend, coder = world
    rec = record(coder)
    ctx = MethodContext(backend=backend, coder=coder, providers={"scorer": pm_provider()}, seed=7)
    scorer = InterventionScorer(**FAST)
    scores = [
        run_sync(scorer.score(rec, about(rec, word), ctx)).model_copy(update={"explainer": word})
        for word in ("cat", "dog")
    ]
    methods = summarize(RunResults(scores=scores))["methods"]
    for word, score in zip(("cat", "dog"), scores, strict=True):
        by_target = methods[f"{word}/intervention"]["by_target"]
        assert sorted(by_target) == ["kl=0.25", "kl=0.5"]
        for target, row in by_target.items():
            for name in ("score", "random_latents", "decoys", "reached"):
                assert row[name]["n"] == 1
                assert row[name]["mean"] == score.metrics[f"{target}/{name}"]
    cat = methods["cat/intervention"]["by_target"]["kl=0.5"]
    assert cat["score"]["mean"] > cat["random_latents"]["mean"] and cat["reached"]["mean"] == 1.0
    assert methods["cat/intervention"]["by_target"] != methods["dog/intervention"]["by_target"]


async def test_a_run_scores_caches_the_calibration_and_summarises_per_target(tmp_path):
    backend, coder, texts = toy.world()
    cfg = pipeline_config(
        tmp_path,
        explainers=["maxact"],
        scorers=[{"name": "intervention", "settings": {**FAST, "max_new_tokens": 4}}],
        latents={"indices": [1, 2]},
    )
    providers = {"explainer": ScriptedProvider(competent_explainer), "scorer": pm_provider()}
    await arun(cfg, model=backend, coder=coder, dataset=texts, providers=providers, progress=False)
    run = tmp_path / "run"
    lines = (run / "scores.jsonl").read_text().splitlines()
    scores = [Score.model_validate_json(x) for x in lines]
    assert len(scores) == 2 and all(s.status is Status.OK for s in scores), scores
    # two targets for each latent, random latent and latent's random coder: each strength found
    # once, kept on disk (a latent that is another's random latent is calibrated once)
    cached = list((run / "cache" / "calibration").glob("*.json"))
    used = {i for s in scores for i in (s.latent.index, *s.settings["random_latents"])}
    assert len(cached) == 2 * (len(used) + len(scores))
    summary = json.loads((run / "summary.json").read_text())
    by_target = summary["methods"]["maxact/intervention"]["by_target"]
    assert sorted(by_target) == ["kl=0.25", "kl=0.5"]
    assert by_target["kl=0.5"]["score"]["n"] == 2 and by_target["kl=0.5"]["decoys"]["n"] == 2


def test_the_true_explanation_beats_the_random_coder_baseline_over_the_seeds(world):
    backend, coder = world
    rec = record(coder)
    scorer = InterventionScorer(**{**FAST, "n_random_latents": 0, "decoys": []})
    found: dict[str, list[float]] = {}
    coder_seeds = set()
    for seed in SEEDS:
        ctx = MethodContext(
            backend=backend, coder=coder, providers={"scorer": pm_provider()}, seed=seed
        )
        score = run_sync(scorer.score(rec, about(rec, "cat"), ctx))
        assert score.status is Status.OK, score.error
        coder_seeds.add(score.settings["random_coder_seed"])
        for t in score.evidence["targets"]:
            # calibrated through the backend's edits to the same strength as the real latent
            strength = t["random_coder_strength"]
            assert strength["latent"] == LATENT and strength["reached"] is True, strength
            assert abs(strength["kl"] - t["target_kl"]) <= 0.1 * t["target_kl"]
            assert strength["score"] == t["random_coder"]
        for key, value in score.metrics.items():
            found.setdefault(key, []).append(float(value or 0.0))
    assert len(coder_seeds) == len(SEEDS)  # a new random coder for each latent seed
    means = {k: round(float(np.mean(v)), 3) for k, v in found.items()}
    print(means)
    for t in ("kl=0.25", "kl=0.5"):
        assert means[f"{t}/score"] > means[f"{t}/random_coder"] + 1.0, means
    assert means["score"] > means["random_coder"] + 1.0, means


def test_the_random_coder_baseline_can_be_turned_off(world):
    backend, coder = world
    rec = record(coder)
    provider = pm_provider()
    ctx = MethodContext(backend=backend, coder=coder, providers={"scorer": provider}, seed=7)
    settings = {**FAST, "n_random_latents": 0, "decoys": [], "random_coder": False}
    score = run_sync(InterventionScorer(**settings).score(rec, about(rec, "cat"), ctx))
    assert score.status is Status.OK
    assert len(provider.requests) == 2 * 2 * len(InterventionScorer().prompts)  # the explanation
    assert score.metrics["random_coder"] is None and score.metrics["kl=0.5/random_coder"] is None
    assert all(t["random_coder_strength"] is None for t in score.evidence["targets"])
    assert "random_coder_seed" not in score.settings
    assert InterventionScorer(random_coder=False).recorded_settings()["random_coder"] is False


def test_the_random_coder_has_the_shape_and_hooks_and_clamps_as_it_steers(world):
    backend, coder = world
    random = RandomCoder(coder, LATENT, seed=5)
    assert (random.d_in, random.d_sae, random.hook) == (coder.d_in, coder.d_sae, coder.hook)
    assert write_hook(random) == write_hook(coder) and random.id != coder.id
    row = random.W_dec[LATENT]
    assert random.W_dec.shape == (D_SAE, coder.d_in) and np.linalg.norm(row) == pytest.approx(1)
    assert not np.allclose(row, RandomCoder(coder, LATENT, seed=6).row)  # seeded
    x = np.ones((2, 3, coder.d_in), dtype=np.float32)
    assert random.encode(x).shape == (2, 3, D_SAE) and not random.encode(x).any()
    z = random.encode(x)
    z[..., LATENT] = 2.0
    assert np.allclose(random.decode(z), 2.0 * row)
    # through the backend's Clamp: clamping the latent to v adds v times its row
    tokens = backend.tokenize(["The cat", "I think that"])
    clamped = np.asarray(backend.logits(tokens, [Clamp(coder=random, latent=LATENT, value=3.0)]))
    steered = np.asarray(backend.logits(tokens, [Add(direction=row, scale=3.0, hook=HOOK)]))
    assert np.allclose(clamped, steered, atol=1e-5)
    assert not np.allclose(clamped, np.asarray(backend.logits(tokens, [])))


def test_the_random_coder_of_a_transcoder_writes_where_it_writes(world):
    _, coder = world

    class Transcoder(FakeCoder):
        hook_out = "blocks.1.hook_mlp_out"

    real = Transcoder(coder.W_enc, coder.b_enc, coder.W_dec, coder.b_dec, hook=HOOK)
    random = RandomCoder(real, LATENT, seed=5)
    assert random.hook == HOOK and write_hook(random) == "blocks.1.hook_mlp_out"
