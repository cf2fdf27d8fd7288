"""`detection_neighbours`: detection against the contexts where the decoder-nearest latents fire.

The world: latent 1 fires on " cat", latent 2 on " dog" with a decoder direction close to latent
1's (cosine ~0.995: its nearest neighbour), latent 3 on " bird". Records come from a real store
through the record builder, with random and neighbour negatives, as a run builds them. The LLM
double reads like a careful person who knows that cats, dogs and birds are animals.
"""

import json
import re

import numpy as np
import pytest
from pipeline import toy

from saexplain._async import run_sync
from saexplain.cli import main
from saexplain.models import ChatRequest, ExampleKind, Explanation, Status
from saexplain.plugins import get_plugin_manager
from saexplain.protocols import MethodContext
from saexplain.report.exports import item_examples
from saexplain.sampling import RecordBuilder, RecordConfig
from saexplain.scorers.detection import DetectionScorer
from saexplain.scorers.detection_neighbours import NeighbourDetectionScorer
from saexplain.store import collect
from saexplain.testing import (
    FakeBackend,
    PlantedValuesCoder,
    ScriptedProvider,
    check_scorer,
    competent_logprobs,
    explanation_keywords,
    fresh_plugin_manager,
)

FILLER = re.findall(
    r"\w+",
    "the a one small big old new quiet loud morning evening city road house garden table "
    "window paper story music light water stone green blue red",
)
CATEGORIES = {"animal": ("cat", "dog", "bird")}  # what the reader knows a broad word covers
CONFIG = RecordConfig(
    window=16,
    explanation=("top:10", "quantile:10"),
    scoring=("quantile:20",),
    negatives=("random:50", "neighbours:20"),
    n_neighbours=1,
)


def corpus(seed: int = 0) -> list[str]:
    """Long filler documents, some holding one animal word: random windows rarely hold one."""
    rng = np.random.default_rng(seed)
    texts = []
    for word, n in (("cat", 100), ("dog", 40), ("bird", 20), (None, 250)):
        for _ in range(n):
            words = [str(w) for w in rng.choice(FILLER, size=int(rng.integers(25, 40)))]
            if word is not None:
                words.insert(int(rng.integers(1, len(words))), word)
            texts.append(" ".join(words))
    return [texts[i] for i in rng.permutation(len(texts))]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=512)
    table = {1: {" cat": 1.0}, 2: {" dog": 1.0}, 3: {" bird": 1.0}}
    coder = PlantedValuesCoder(backend, table, d_sae=8)
    coder.W_dec[2] = coder.W_dec[1] + 0.1 * coder.W_dec[2]  # dog: the cat latent's neighbour
    coder.W_dec[2] /= np.linalg.norm(coder.W_dec[2])
    store = collect(
        backend,
        coder,
        corpus(),
        tmp_path_factory.mktemp("contrastive") / "store",
        context_length=64,
        shard_contexts=40,
        batch_size=8,
        progress=False,
        seed=3,
    )
    builder = RecordBuilder(store, backend, CONFIG)
    assert builder.neighbours(1, 1)[0][0] == 2
    record = builder.build(1).record
    plain = RecordBuilder(
        store, backend, CONFIG.model_copy(update={"negatives": CONFIG.negatives[:1]})
    )
    return backend, record, plain.build(1).record


def reader(request: ChatRequest) -> str:
    """Detection answers of a careful reader: an example matches when it holds a keyword of the
    description, a broad word ("animals") counting for each thing it covers."""
    user = request.messages[-1].content
    described = next(
        ln.split(":", 1)[1] for ln in user.splitlines() if ln.startswith("Description")
    )
    keywords = [
        w for k in explanation_keywords(described) for w in CATEGORIES.get(k.rstrip("s"), (k,))
    ]
    answers = [
        int(any(re.search(rf"\b{re.escape(k)}\b", m.group(1), re.IGNORECASE) for k in keywords))
        for ln in user.splitlines()
        if (m := re.match(r"Example \d+: (.*)$", ln))
    ]
    return "[" + ", ".join(map(str, answers)) + "]"


def context(backend) -> MethodContext:
    provider = ScriptedProvider(reader, logprobs=competent_logprobs)
    return MethodContext(backend=backend, providers={"scorer": provider}, seed=7)


def score(cls, record, text, backend, **settings):
    expl = Explanation(latent=record.latent, text=text, explainer="given")
    return run_sync(cls(**settings).score(record, expl, context(backend)))


def test_the_record_holds_both_kinds_of_negatives(world):
    _, record, _ = world
    assert len(record.negatives(ExampleKind.RANDOM)) == 50
    neighbours = record.negatives(ExampleKind.NEIGHBOUR)
    assert len(neighbours) == 20 and all(" dog" in e.str_tokens for e in neighbours)


def test_an_over_broad_explanation_falls_to_chance_against_the_neighbours(world):
    backend, record, _ = world
    exact = {
        c: score(c, record, 'The word "cat"', backend)
        for c in (DetectionScorer, NeighbourDetectionScorer)
    }
    broad = {
        c: score(c, record, "animals", backend) for c in (DetectionScorer, NeighbourDetectionScorer)
    }
    # the exact explanation stays high on both
    assert all(s.value == 1.0 and s.metrics["auroc"] == 1.0 for s in exact.values())
    # "animals" passes plain detection (random windows rarely hold an animal: 0.83 here) ...
    plain, contrastive = broad[DetectionScorer], broad[NeighbourDetectionScorer]
    assert plain.value == pytest.approx(0.829, abs=0.01) and plain.metrics["auroc"] > 0.8
    # ... and falls to chance where the negatives are the neighbour's dog contexts: 0.50, every
    # answer "yes", which the score says
    assert contrastive.value == 0.5 and contrastive.metrics["auroc"] == 0.5
    assert contrastive.metrics["specificity"] == 0.0
    assert contrastive.evidence == {"constant_predictions": "yes"}
    assert plain.value - contrastive.value > 0.3


def test_a_shuffled_explanation_is_near_chance_on_both(world):
    backend, record, _ = world
    for cls in (DetectionScorer, NeighbourDetectionScorer):
        shuffled = score(cls, record, 'The word "bird"', backend)  # another latent's word
        assert 0.4 <= shuffled.value <= 0.6, (cls.name, shuffled.metrics)


def test_only_neighbour_negatives_are_shown_and_predictions_map_back_to_the_record(world):
    backend, record, _ = world
    ctx = context(backend)
    expl = Explanation(latent=record.latent, text='The word "cat"', explainer="given")
    result = check_scorer(NeighbourDetectionScorer(), record, expl, ctx)
    n_pos = len(record.scoring_examples)
    shown = [
        ln
        for r in ctx.provider("scorer").requests
        for ln in r.messages[-1].content.splitlines()
        if ln.startswith("Example ")
    ]
    assert len(shown) == len(result.predictions) == n_pos + 20
    negatives = [p for p in result.predictions if not p.truth]
    assert all(
        record.non_activating[p.item - n_pos].kind is ExampleKind.NEIGHBOUR for p in negatives
    )
    # exports read the examples back by the record's layout
    examples, how = item_examples(result, record)
    assert how == "item_index"
    assert all(examples[p.item].kind is ExampleKind.NEIGHBOUR for p in negatives)
    assert (
        result.settings["negatives"] == "neighbour" and result.settings["prompt"] == "detection@2"
    )


def test_max_negatives_caps_the_neighbour_negatives(world):
    backend, record, _ = world
    result = score(NeighbourDetectionScorer, record, 'The word "cat"', backend, max_negatives=5)
    negatives = [p for p in result.predictions if not p.truth]
    assert len(negatives) == 5
    n_pos = len(record.scoring_examples)
    assert all(
        record.non_activating[p.item - n_pos].kind is ExampleKind.NEIGHBOUR for p in negatives
    )


def test_a_record_without_neighbour_negatives_fails_before_any_call(world):
    backend, _, plain = world
    ctx = context(backend)
    expl = Explanation(latent=plain.latent, text='The word "cat"', explainer="given")
    result = run_sync(NeighbourDetectionScorer().score(plain, expl, ctx))
    assert result.status is Status.ERROR and not ctx.provider("scorer").requests
    assert "needs neighbour negatives" in result.error and "'neighbours:50'" in result.error
    assert "records=" in result.error
    # plain detection scores the same record
    assert run_sync(DetectionScorer().score(plain, expl, ctx)).status is Status.OK
    # when the builder tried and could not, the error says why
    skipped = {"builder": "neighbours", "requested": 20, "got": 0, "skipped": "no decoder saved"}
    tried = plain.model_copy(update={"sampling": {"negatives": [skipped]}})
    result = run_sync(NeighbourDetectionScorer().score(tried, expl, ctx))
    assert "(the record builder: no decoder saved)" in result.error


def test_registered_by_name_beside_detection():
    manager = get_plugin_manager()
    made = manager.scorers.create("detection_neighbours", batch_size=10)
    assert isinstance(made, NeighbourDetectionScorer) and made.settings.batch_size == 10
    assert "detection" in manager.scorers


ESTIMATE_CONFIG = """
model: toy
backend: toyfake
coder: "toyplanted:all"
dataset: {corpus}
n_tokens: 6400
context_length: 32
latents: {{indices: [1, 2, 3]}}
explainers: [toy]
scorers: [detection, detection_neighbours]
explainer_model: {{provider: toyllm, model: scripted}}
records: {{window: 16, explanation: ["top:5"], scoring: ["quantile:4"],
           negatives: ["random:4", "neighbours:4"], n_neighbours: 2}}
output_dir: {out}
name: estimated
"""


def test_estimate_counts_its_calls_beside_plain_detection(tmp_path, capsys):
    _, _, texts = toy.world()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(texts))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(ESTIMATE_CONFIG.format(corpus=corpus, out=tmp_path / "runs"))
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        pm.register_plugin(toy.Stack(), name="toystack")
        assert main(["estimate", str(cfg), "--json", "-q"]) == 0
    methods = json.loads(capsys.readouterr().out)["methods"]
    # per latent: 4 activating items, and 4 neighbour (8 with the random ones) negatives, 5 a call
    assert methods["toy/detection_neighbours"]["calls"] == 3 * 2
    assert methods["toy/detection"]["calls"] == 3 * 3
    per_call = {m: v["prompt_tokens"] / v["calls"] for m, v in methods.items() if "detection" in m}
    assert per_call["toy/detection_neighbours"] > 0
