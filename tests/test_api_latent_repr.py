"""`results[latent]` in a notebook: a short repr and an escaped HTML card, never the record's
hundreds of examples (a user saw a 141,700-character repr)."""

from __future__ import annotations

import re

from saexplain.models import Explanation, Score, Status
from saexplain.report.results import LatentResult
from saexplain.testing import FakeBackend, FakeCoder, make_record, synthetic_corpus


def result(text: str = 'the word "cat"') -> LatentResult:
    backend = FakeBackend()
    coder = FakeCoder.planted(backend, {1: " cat"})
    texts = synthetic_corpus(400, seed=0, vocab=["cat", "dog", "the", "sat", "on", "mat"])
    record = make_record(backend, coder, 1, texts)
    assert len(record.explanation_examples) > 150  # a big record
    ok = Explanation(latent=record.latent, explainer="maxact", text=text)
    failed = Explanation(
        latent=record.latent, explainer="vocabproj", status=Status.FAILED, error="no answer"
    )
    score = Score(latent=record.latent, scorer="detection", explainer="maxact", value=0.875)
    return LatentResult(
        latent=record.latent,
        status="ok",
        stats=record.stats,
        record=record,
        explanations={"maxact": ok, "vocabproj": failed},
        scores={("maxact", "detection"): score},
    )


def test_repr_is_short_and_says_what_matters():
    text = repr(result())
    assert len(text) < 600, len(text)
    assert text.startswith("LatentResult(") and ":1" in text
    assert 'maxact: the word "cat"' in text and "detection=0.875" in text
    assert "vocabproj: failed (no answer)" in text


def test_long_explanations_are_clipped_in_the_repr():
    assert len(repr(result("word " * 500))) < 600


def test_html_card_is_short_and_escaped():
    card = result("<script>alert(1)</script> & cats")._repr_html_()
    assert len(card) < 20_000, len(card)
    assert "<script>" not in card and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; cats" in card
    assert "0.875" in card and "detection" in card
    # the top examples shown, every token coloured, the strongest one outlined
    assert card.count('class="tok"') > 3 and card.count("outline:1px") == 3
    alphas = {float(a) for a in re.findall(r"rgba\(255, 140, 0, ([0-9.]+)\)", card)}
    assert 0.0 in alphas and max(alphas) > 0.5  # silent tokens clear, " cat" strongly shaded
