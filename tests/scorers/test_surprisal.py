"""surprisal on planted latents: a base-LM double through the provider, the fake subject model
through its backend, the errors, a pipeline run and `saexplain estimate`."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from pipeline import toy
from pipeline.test_cli_run import CONFIG
from pipeline.test_pipeline import config as pipeline_config

import saexplain
from saexplain._async import run_sync
from saexplain.cli import main
from saexplain.errors import ConfigError, ProviderServerError
from saexplain.hookspecs import Register
from saexplain.methods import Needs, first_shown, needs_of
from saexplain.models import (
    ChatRequest,
    ChatResponse,
    Choice,
    Explanation,
    Score,
    Status,
    TokenLogprob,
    Usage,
)
from saexplain.pipeline import arun
from saexplain.plugins import PluginManager
from saexplain.protocols import MethodContext
from saexplain.scorers.surprisal import SurprisalScorer, context_text
from saexplain.testing import (
    ScriptedProvider,
    check_scorer,
    competent_explainer,
    explanation_keywords,
    failing_every,
    fresh_plugin_manager,
)

from .planted import WORDS, explanation

NAMED, OTHER = -1.0, -4.0  # the double's log p of a word the description names, of any other


def base_lm(request: ChatRequest) -> ChatResponse:
    """A base-LM double: scores `score_text` word by word, each word likelier when the prompt's
    `Description:` names it (it reads only the prompt, never the truth)."""
    assert request.score_text is not None, "surprisal only scores text"
    user = request.messages[-1].content
    described = re.search(r"^Description: (.*)$", user, re.MULTILINE)
    keywords = explanation_keywords(described.group(1) if described else "")
    scored = tuple(
        TokenLogprob(token=w, logprob=NAMED if w.strip().lower() in keywords else OTHER)
        for w in re.findall(r"\s*(?:\w+|[^\w\s]+)", request.score_text)
    )
    prompt = sum(len(m.content.split()) for m in request.messages) + len(scored)
    return ChatResponse(
        model="base",
        choices=(Choice(text="", finish_reason="scored"),),
        scored=scored,
        usage=Usage(prompt_tokens=prompt, calls=1),
    )


def base_provider(**kwargs) -> ScriptedProvider:
    provider = ScriptedProvider(base_lm, **kwargs)
    provider.capabilities = dataclasses.replace(provider.capabilities, prompt_logprobs=True)
    return provider


def run(scorer, record, expl, ctx) -> Score:
    return run_sync(scorer.score(record, expl, ctx))


@pytest.mark.parametrize("latent", sorted(WORDS))
def test_true_explanation_scores_high_and_shuffled_near_chance(latent, planted):
    backend, _, records = planted
    record = records[latent]
    provider = base_provider()
    ctx = MethodContext(backend=backend, providers={"scorer": provider}, seed=7)
    true = check_scorer(SurprisalScorer(), record, explanation(record, latent), ctx)
    # (the fake coder leaks a little: a weak activation on a context without the word, scored 0)
    assert true.status is Status.OK and true.value > 0.95, true.metrics
    assert true.metrics["mean_gain_activating"] > 0.9 * (NAMED - OTHER)  # a named word each
    assert true.metrics["mean_gain_negatives"] == 0.0
    assert true.metrics["balanced_accuracy"] > 0.95 and true.metrics["n_errors"] == 0
    assert (
        true.evidence["base"] == "provider" and true.evidence["base_model"] == "scripted:scripted"
    )
    n_items = len(record.scoring_examples) + len(record.non_activating)
    assert true.usage.calls == 2 * n_items == len(provider.requests)  # explained and generic
    assert true.usage.prompt_tokens > 0 and true.usage.completion_tokens == 0
    other = (latent + 1) % len(WORDS)
    shuffled = run(SurprisalScorer(), record, explanation(record, other), ctx)
    # the other word is in none of the activating contexts and some negatives: chance or below
    assert 0.3 <= shuffled.value <= 0.6, shuffled.metrics


def test_generic_prompt_and_contexts_sent(planted):
    backend, _, records = planted
    record = records[0]
    provider = base_provider()
    ctx = MethodContext(backend=backend, providers={"scorer": provider}, seed=7)
    score = run(SurprisalScorer(max_negatives=5), record, explanation(record, 0), ctx)
    users = [r.messages[-1].content for r in provider.requests]
    assert sum('Description: The word "cat"' in u for u in users) == len(users) // 2
    assert sum("Description: Various unrelated sentences." in u for u in users) == len(users) // 2
    sent = {r.score_text for r in provider.requests}
    held_out = {context_text(e, 0) for e in (*record.scoring_examples, *record.non_activating)}
    shown_to_explainer = {context_text(e, 0) for e in record.explanation_examples}
    assert sent <= held_out and not sent & shown_to_explainer
    assert len(score.predictions) == len(record.scoring_examples) + 5
    assert score.settings["prompt"] == "surprisal@1"
    assert score.evidence["generic"] == "Various unrelated sentences."


def direct_logprob(backend, prefix: str, context: list[int]) -> float:
    """log p(context | prefix) straight from the fake model's logits, one unpadded row, one
    position at a time."""
    head = backend.tokenize([prefix]).rows()[0]
    ids = head + context
    from saexplain.methods import TokenBatch

    logits = np.asarray(backend.logits(TokenBatch.from_lists([ids])))[0]
    total = 0.0
    for k, token in enumerate(context):
        row = logits[len(head) + k - 1]
        total += row[token] - np.log(np.sum(np.exp(row - row.max()))) - row.max()
    return float(total)


def test_subject_base_is_the_subject_models_own_log_probabilities(planted):
    backend, _, records = planted
    record = records[1]
    ctx = MethodContext(backend=backend, seed=7)  # no provider at all
    scorer = SurprisalScorer(base="subject", max_negatives=6)
    expl = explanation(record, 1)
    score = check_scorer(scorer, record, expl, ctx)
    assert score.status is Status.OK and 0.0 <= score.value <= 1.0
    assert score.evidence["base"] == "subject"
    assert score.evidence["base_model"] == f"fake:{backend.model_id}"
    assert score.usage.calls == 0
    prompt = scorer.prompt
    items = [*record.scoring_examples, *record.non_activating]
    by_index = dict(zip((p.item for p in score.predictions), score.evidence["gains"], strict=True))
    for index, gain in list(by_index.items())[:4] + list(by_index.items())[-2:]:
        example = items[index]
        context = list(example.tokens[first_shown(example, 0) :])
        prefix = "{}\n\n{}\n"
        with_e = direct_logprob(
            backend,
            prefix.format(prompt.render_system(), prompt.render_user(explanation=expl.text)),
            context,
        )
        generic = direct_logprob(
            backend,
            prefix.format(prompt.render_system(), prompt.render_user(explanation=scorer.generic)),
            context,
        )
        assert gain == pytest.approx(with_e - generic, abs=1e-3)
    one_by_one = run(
        SurprisalScorer(base="subject", max_negatives=6, batch_size=1), record, expl, ctx
    )
    assert one_by_one.evidence["gains"] == score.evidence["gains"]  # padding changes nothing


def test_auto_uses_the_provider_with_prompt_logprobs_else_the_subject(planted):
    backend, _, records = planted
    record = records[2]
    expl = explanation(record, 2)
    able = MethodContext(backend=backend, providers={"scorer": base_provider()}, seed=1)
    assert run(SurprisalScorer(), record, expl, able).evidence["base"] == "provider"
    plain = ScriptedProvider(["never asked"])
    unable = MethodContext(backend=backend, providers={"scorer": plain}, seed=1)
    assert run(SurprisalScorer(), record, expl, unable).evidence["base"] == "subject"
    assert plain.requests == []


def test_a_base_that_cannot_score_is_a_config_error_before_any_call(planted):
    backend, _, records = planted
    record = records[0]
    plain = ScriptedProvider(["never asked"])
    ctx = MethodContext(backend=backend, providers={"scorer": plain}, seed=1)
    with pytest.raises(ConfigError, match="no prompt logprobs; use base='subject'"):
        run(SurprisalScorer(base="provider"), record, explanation(record, 0), ctx)
    assert plain.requests == []
    with pytest.raises(ConfigError, match="no subject model"):
        run(SurprisalScorer(base="subject"), record, explanation(record, 0), MethodContext())


def test_provider_errors_are_excluded_and_counted(planted):
    backend, _, records = planted
    record = records[3]
    provider = base_provider(fail_on=failing_every(7))
    ctx = MethodContext(backend=backend, providers={"scorer": provider}, seed=3)
    score = run(SurprisalScorer(), record, explanation(record, 3), ctx)
    assert score.status is Status.OK and score.partial
    assert 0 < score.metrics["n_errors"] < score.metrics["n_items"]
    assert score.value == 1.0  # the answered contexts still separate perfectly
    assert all("ProviderServerError" in p.error for p in score.predictions if p.error is not None)
    everything_fails = base_provider(fail_on=lambda i, r: ProviderServerError("down", model="base"))
    ctx = MethodContext(backend=backend, providers={"scorer": everything_fails}, seed=3)
    failed = run(SurprisalScorer(), record, explanation(record, 3), ctx)
    assert failed.status is Status.ERROR and "all" in failed.error


def test_an_answer_without_prompt_logprobs_is_an_error_prediction(planted):
    backend, _, records = planted
    record = records[0]
    empty = ChatResponse(model="x", choices=(Choice(text=""),))
    provider = ScriptedProvider(lambda r: empty)
    provider.capabilities = dataclasses.replace(provider.capabilities, prompt_logprobs=True)
    ctx = MethodContext(backend=backend, providers={"scorer": provider}, seed=3)
    score = run(SurprisalScorer(), record, explanation(record, 0), ctx)
    assert score.status is Status.ERROR
    assert all(p.error == "the provider returned no prompt logprobs" for p in score.predictions)


def test_failed_explanation_is_not_scored(planted):
    backend, _, records = planted
    record = records[0]
    bad = Explanation(latent=record.latent, explainer="x", status=Status.FAILED, error="no")
    ctx = MethodContext(backend=backend, providers={"scorer": base_provider()}, seed=3)
    score = run(SurprisalScorer(), record, bad, ctx)
    assert score.status is Status.ERROR and "failed" in score.error


def test_settings_needs_and_registration():
    assert needs_of(SurprisalScorer(base="subject")) == Needs(backend=True)
    assert needs_of(SurprisalScorer(base="provider")) == Needs(provider=True)
    assert needs_of(SurprisalScorer()) == Needs(provider=True, backend=True)
    with pytest.raises(ConfigError, match="surprisal"):
        SurprisalScorer(base="llm")
    s = SurprisalScorer(generic="Text.", aggregate="mean").recorded_settings()
    assert s["generic"] == "Text." and s["aggregate"] == "mean" and s["prompt"] == "surprisal@1"
    pm = PluginManager()
    assert "surprisal" in pm.scorers
    assert isinstance(pm.scorers.create("surprisal", base="subject"), SurprisalScorer)


async def test_pipeline_runs_surprisal_on_both_bases(tmp_path):
    backend, coder, texts = toy.world()
    for base in ("provider", "subject"):
        cfg = pipeline_config(
            tmp_path,
            name=f"run-{base}",
            explainers=["maxact"],
            scorers=[{"name": "surprisal", "settings": {"base": base}}],
        )
        providers = {"explainer": ScriptedProvider(competent_explainer)}
        if base == "provider":
            providers["scorer"] = base_provider()
        await arun(
            cfg, model=backend, coder=coder, dataset=texts, providers=providers, progress=False
        )
        lines = (tmp_path / f"run-{base}" / "scores.jsonl").read_text().splitlines()
        scores = [Score.model_validate(json.loads(x)) for x in lines]
        assert len(scores) == len(toy.WORDS)
        for s in scores:
            assert s.status is Status.OK and s.evidence["base"] == base, s.error
            if base == "provider":  # the double reads the explanation: perfect separation
                assert s.value == 1.0, (s.latent.index, s.metrics)


async def test_a_base_that_cannot_score_fails_the_run_before_any_work(tmp_path):
    """`preflight`: a provider without prompt logprobs stops the run while preparing, in one
    error naming the alternatives, before any collection or LLM call (not once per latent)."""
    backend, coder, texts = toy.world()
    cfg = pipeline_config(
        tmp_path,
        name="no-logprobs",
        explainers=["maxact"],
        scorers=[{"name": "surprisal", "settings": {"base": "provider"}}],
    )
    explainer, plain = ScriptedProvider(competent_explainer), ScriptedProvider(["never asked"])
    providers = {"explainer": explainer, "scorer": plain}
    with pytest.raises(ConfigError, match="no prompt logprobs; use base='subject'"):
        await arun(
            cfg, model=backend, coder=coder, dataset=texts, providers=providers, progress=False
        )
    assert explainer.requests == [] and plain.requests == []
    assert not (tmp_path / "no-logprobs" / "store").exists()


class BaseLMPlugin:
    """Registers the base-LM double as a provider `baselm`, keeping every instance made."""

    def __init__(self) -> None:
        self.made: list[ScriptedProvider] = []

    @saexplain.hookimpl
    def register_providers(self, register: Register) -> None:
        def make(model: str, **settings: object) -> ScriptedProvider:
            self.made.append(base_provider())
            return self.made[-1]

        register("baselm", make)


def test_estimate_counts_the_calls_a_run_makes(tmp_path, capsys):
    _, _, texts = toy.world()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(texts))
    cfg = tmp_path / "run.yaml"
    text = CONFIG.format(corpus=corpus, out=tmp_path / "runs").replace(
        "scorers: [toyscore]", "scorers: [surprisal]\nscorer_model: {provider: baselm, model: b}"
    )
    cfg.write_text(text)
    base = BaseLMPlugin()
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        pm.register_plugin(toy.Stack(), name="toystack")
        pm.register_plugin(base, name="baselm")
        assert main(["estimate", str(cfg), "--json", "-q", "--latents", "3"]) == 0
        est = json.loads(capsys.readouterr().out)["methods"]["toy/surprisal"]
        assert main(["run", str(cfg), "-q"]) == 0
    lines = (tmp_path / "runs" / "clirun" / "scores.jsonl").read_text().splitlines()
    scores = [Score.model_validate(json.loads(x)) for x in lines]
    made = sum(s.usage.calls + s.usage.cached_calls for s in scores)  # the cache answers repeats
    assert est["calls"] == made == sum(2 * len(s.predictions) for s in scores)
    assert sum(len(p.requests) for p in base.made) == sum(s.usage.calls for s in scores)
    assert est["completion_tokens"] == 0 and est["prompt_tokens"] > 0
