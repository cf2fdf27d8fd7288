"""generation on planted latents: a competent scripted writer, the fake model reading its texts;
also the numbered-list reader both writing scorers share, a pipeline run and its estimate."""

from __future__ import annotations

import asyncio
import json

import pytest

import saexplain
from saexplain.cli import main
from saexplain.errors import ConfigError, ProviderServerError
from saexplain.hookspecs import Register
from saexplain.models import Explanation, LatentRecord, RunConfig, Score, Status
from saexplain.pipeline import arun
from saexplain.protocols import MethodContext
from saexplain.providers import ResponseCache, wrap_provider
from saexplain.scorers.generation import GenerationScorer
from saexplain.scorers.written import dedupe, numbered_groups
from saexplain.testing import (
    FakeBackend,
    PlantedValuesCoder,
    ScriptedProvider,
    check_scorer,
    competent_explainer,
    competent_writer,
    fresh_plugin_manager,
)

from .planted import corpus

# latent -> {word: value}; " kitten" is a weak mode of latent 0 (0.2 x its max of 2.0)
VALUES = {0: {" cat": 2.0, " kitten": 0.4}, 1: {" river": 3.0}, 2: {" violin": 1.5}}
WORD = {0: "cat", 1: "river", 2: "violin"}


def world() -> tuple[FakeBackend, PlantedValuesCoder]:
    backend = FakeBackend()
    return backend, PlantedValuesCoder(backend, VALUES, d_sae=8)


def make_records(backend: FakeBackend, coder: PlantedValuesCoder) -> dict[int, LatentRecord]:
    from saexplain.testing import make_record

    texts = corpus()
    return {i: make_record(backend, coder, i, texts) for i in VALUES}


@pytest.fixture(scope="module")
def planted_values():
    backend, coder = world()
    return backend, coder, make_records(backend, coder)


def said(record: LatentRecord, text: str) -> Explanation:
    return Explanation(latent=record.latent, text=text, explainer="planted")


def context(backend, coder, provider) -> MethodContext:
    return MethodContext(backend=backend, coder=coder, providers={"scorer": provider}, seed=5)


def score(scorer, record, explanation, ctx) -> Score:
    return asyncio.run(scorer.score(record, explanation, ctx))


@pytest.mark.parametrize("latent", sorted(VALUES))
def test_true_explanation_writes_firing_texts_and_shuffled_does_not(latent, planted_values):
    """Figures: the true explanation 1.0 (10 of 10 texts fire), a shuffled one 0.0."""
    backend, coder, records = planted_values
    record = records[latent]
    writer = ScriptedProvider(competent_writer)
    ctx = context(backend, coder, writer)
    true = check_scorer(GenerationScorer(), record, said(record, f'the word "{WORD[latent]}"'), ctx)
    assert true.status is Status.OK and true.value == 1.0, true.metrics
    assert true.metrics["n_texts"] == 10 and true.metrics["n_firing"] == 10
    texts = true.evidence["texts"]
    assert all(WORD[latent] in t["text"] and t["peak_token"].strip() == WORD[latent] for t in texts)
    assert {t["max_activation"] for t in texts} == {VALUES[latent][f" {WORD[latent]}"]}
    assert all(p.truth and p.predicted for p in true.predictions)
    assert true.usage.calls == 1 and true.usage.prompt_tokens > 0

    other = WORD[(latent + 1) % len(WORD)]
    shuffled = score(GenerationScorer(), record, said(record, f'the word "{other}"'), ctx)
    assert shuffled.status is Status.OK and shuffled.value == 0.0, shuffled.metrics
    assert {t["max_activation"] for t in shuffled.evidence["texts"]} == {0.0}
    assert len(writer.requests) == 2  # one writing call per score


def test_the_threshold_is_relative_to_the_latent_max(planted_values):
    """ " kitten" fires at 0.4 = 0.2 x max: below the default 0.3 x max, above 0.1 x max."""
    backend, coder, records = planted_values
    record = records[0]
    assert record.stats.max == 2.0
    ctx = context(backend, coder, ScriptedProvider(competent_writer))
    weak = said(record, 'the word "kitten"')
    strict = score(GenerationScorer(), record, weak, ctx)
    assert strict.value == 0.0 and strict.metrics["threshold_activation"] == pytest.approx(0.6)
    assert strict.metrics["mean_relative_activation"] == pytest.approx(0.2)
    loose = score(GenerationScorer(threshold=0.1), record, weak, ctx)
    assert loose.value == 1.0


def test_texts_written_twice_count_once(planted_values):
    backend, coder, records = planted_values
    record = records[1]
    answer = "Here you go:\n1. a river ran\n2. A river  ran\n3. the old road\n4. by the river"
    ctx = context(backend, coder, ScriptedProvider([answer]))
    s = score(GenerationScorer(n_texts=4), record, said(record, "rivers"), ctx)
    assert s.metrics["n_texts"] == 3 and s.metrics["n_duplicates"] == 1
    assert s.value == pytest.approx(2 / 3)


def test_an_unreadable_answer_is_an_error_dropped_from_the_cache(planted_values, tmp_path):
    backend, coder, records = planted_values
    record = records[0]
    llm = ScriptedProvider(lambda r: "I would rather not write anything.")
    provider = wrap_provider(llm, cache=ResponseCache(tmp_path), retry={"base_delay": 0.001})
    s = score(GenerationScorer(), record, said(record, "cats"), context(backend, coder, provider))
    assert s.status is Status.ERROR and "ParseError" in (s.error or "")
    assert s.usage.calls == 1  # the call was paid for: accounted
    assert len(llm.requests) == 1 and len(provider.cache) == 0


def test_missing_model_or_statistics_fail_before_any_call(planted_values):
    backend, coder, records = planted_values
    record = records[0]
    writer = ScriptedProvider(competent_writer)
    no_model = score(
        GenerationScorer(),
        record,
        said(record, "cats"),
        MethodContext(providers={"scorer": writer}),
    )
    assert no_model.status is Status.ERROR and "backend" in (no_model.error or "")
    dead = record.model_copy(update={"stats": record.stats.model_copy(update={"max": 0.0})})
    no_max = score(GenerationScorer(), dead, said(dead, "cats"), context(backend, coder, writer))
    assert no_max.status is Status.ERROR and "maximum" in (no_max.error or "")
    assert writer.requests == []


def test_a_provider_outage_is_an_error_score(planted_values):
    backend, coder, records = planted_values
    record = records[0]
    down = ScriptedProvider([ProviderServerError("scripted outage", model="scripted")])
    s = score(GenerationScorer(), record, said(record, "cats"), context(backend, coder, down))
    assert s.status is Status.ERROR and "outage" in (s.error or "")


def test_settings_are_checked_and_recorded():
    with pytest.raises(ConfigError, match="n_texts"):
        GenerationScorer(n_texts=0)
    with pytest.raises(ConfigError, match="threshold"):
        GenerationScorer(threshold=1.5)
    recorded = GenerationScorer(n_texts=3).recorded_settings()
    assert recorded["n_texts"] == 3 and recorded["prompt"] == "generation@1"


@pytest.mark.parametrize(
    ("answer", "want"),
    [
        ("1. one\n2. two\n3. three", [["one", "two", "three"]]),
        (
            "Sure! Here they are:\n1) one\n(2) two\n- 3: three\nHope this helps.",
            [["one", "two", "three"]],
        ),
        ('**1.** "one"\n**2.** \u201ctwo\u201d\n[3] `three`', [["one", "two", "three"]]),
        ("Text 1: one\nText 2: two", [["one", "two"]]),
        ("Activating:\n1. a\n2. b\nNeutral:\n1. c\n2. d", [["a", "b"], ["c", "d"]]),
        ("1. a\n2. b\n1. c", [["a", "b"], ["c"]]),  # numbering starts again
        ("no list at all\n1990 was a year", []),
    ],
)
def test_numbered_lists_are_read_robustly(answer, want):
    assert [list(g.items) for g in numbered_groups(answer)] == want


def test_group_headers_are_kept_and_duplicates_dropped():
    groups = numbered_groups("## Activating sentences\n1. a\n\n**Unrelated:**\n1. b\n2. B ")
    assert [(g.header, g.items) for g in groups] == [
        ("Activating sentences", ("a",)),
        ("Unrelated", ("b", "B")),
    ]
    assert dedupe(["b", "B ", " b"]) == ["b"]


# --- a pipeline run and its estimate ------------------------------------------------------------


def run_config(tmp_path, **kw) -> RunConfig:
    fields = dict(
        model="k2fake",
        backend="k2fake",
        coder="k2planted:all",
        dataset=str(tmp_path / "corpus.txt"),
        n_tokens=32 * 200,
        context_length=32,
        latents={"indices": sorted(VALUES)},
        explainers=["maxact"],
        scorers=["generation", "input_eval"],
        explainer_model={"provider": "k2llm", "model": "scripted"},
        records={
            "window": 16,
            "explanation": ["top:5"],
            "scoring": ["quantile:4"],
            "negatives": ["random:4"],
            "rare_below": 2,
        },
        output_dir=str(tmp_path / "runs"),
        name="k2",
    )
    fields.update(kw)
    return RunConfig.model_validate(fields)


class Stack:
    """The planted world by name, as `saexplain run` and `saexplain estimate` load it."""

    def __init__(self) -> None:
        self.backend, self.coder = world()

    @saexplain.hookimpl
    def register_backends(self, register: Register) -> None:
        register("k2fake", lambda model, **settings: self.backend)

    @saexplain.hookimpl
    def register_coders(self, register: Register) -> None:
        register("k2planted", lambda spec, *, backend=None: self.coder)

    @saexplain.hookimpl
    def register_providers(self, register: Register) -> None:
        register("k2llm", lambda model, **settings: ScriptedProvider(competent_writer))


@pytest.fixture
def stack(tmp_path):
    (tmp_path / "corpus.txt").write_text("\n\n".join(corpus()))
    with fresh_plugin_manager() as pm:
        world_stack = Stack()
        pm.register_plugin(world_stack, name="k2stack")
        yield world_stack


def test_a_pipeline_run_scores_the_explanations_it_made(tmp_path, stack):
    """maxact explains each planted latent; generation 1.0 and input_eval 1.0 on all three."""
    providers = {
        "explainer": ScriptedProvider(competent_explainer),
        "scorer": ScriptedProvider(competent_writer),
    }
    cfg = run_config(tmp_path)
    results = asyncio.run(
        arun(cfg, model=stack.backend, coder=stack.coder, providers=providers, progress=False)
    )
    run = tmp_path / "runs" / "k2"
    scores = [
        Score.model_validate(json.loads(line))
        for line in (run / "scores.jsonl").read_text().splitlines()
    ]
    assert {(s.latent.index, s.scorer) for s in scores} == {
        (i, name) for i in VALUES for name in ("generation", "input_eval")
    }
    for s in scores:
        assert s.status is Status.OK and s.value == 1.0, (s.latent.index, s.scorer, s.metrics)
        assert s.evidence  # the texts and their activations are kept in the run directory
    methods = results.summary()["methods"]
    assert {"maxact/generation", "maxact/input_eval"} <= set(methods)


def test_estimate_counts_the_writing_calls_and_tokens(tmp_path, stack, capsys):
    cfg_path = tmp_path / "run.json"
    cfg_path.write_text(run_config(tmp_path).model_dump_json())
    assert main(["estimate", str(cfg_path), "--json", "-q"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["latents"] == 3
    for name in ("maxact/generation", "maxact/input_eval"):
        counted = est["methods"][name]
        assert counted["calls"] == 3  # one writing call per latent
        assert counted["prompt_tokens"] > 3 * 100 and counted["completion_tokens"] > 0
