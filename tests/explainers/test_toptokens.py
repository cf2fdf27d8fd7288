"""`toptokens`: the LLM-free explainer, on planted records with known activation mass."""

from __future__ import annotations

import pytest

from saexplain.errors import ConfigError
from saexplain.explainers.toptokens import TopTokens
from saexplain.methods import (
    Example,
    LatentRecord,
    LatentRef,
    MethodContext,
    Status,
    needs_of,
)
from saexplain.models import LatentStats
from saexplain.testing import check_explainer

BOS = "<|endoftext|>"


def example(pairs: list[tuple[str, float]], row: int) -> Example:
    """An example from (token, activation) pairs, led by a BOS that fires hard (an attention
    sink), which must never be counted."""
    words = [BOS, *(w for w, _ in pairs)]
    acts = [50.0, *(a for _, a in pairs)]
    return Example(
        tokens=tuple(range(len(words))),
        str_tokens=tuple(words),
        activations=tuple(acts),
        row=row,
        start=0,
    )


def record(explain: list[Example], score: tuple[Example, ...] = ()) -> LatentRecord:
    return LatentRecord(
        latent=LatentRef(coder_id="sae", hook="blocks.0.hook_resid_pre", index=7),
        stats=LatentStats(n_tokens=1000, count=len(explain)),
        explanation_examples=tuple(explain),
        scoring_examples=score,
    )


def explain(rec: LatentRecord, **settings: object):
    return check_explainer(TopTokens(**settings), rec, MethodContext())


def because_latent() -> LatentRecord:
    # mass: " because" 10 x 3.0 = 30, " since" 3 x 2.0 = 6, " it" 4 x 0.5 = 2; total 38
    explain_examples = [
        example([(" I", 0), (" left", 0), (" because", 3.0), (" it", 0.5 if i < 4 else 0)], i)
        for i in range(10)
    ]
    explain_examples += [
        example([(" We", 0), (" since", 2.0), (" then", 0)], 10 + i) for i in range(3)
    ]
    # held-out scoring examples fire on another token: the explainer must not read them
    held_out = tuple(example([(" therefore", 9.0)], 100 + i) for i in range(5))
    return record(explain_examples, held_out)


def test_a_because_latent_gives_its_tokens_with_their_shares():
    result = explain(because_latent(), ngrams=False)
    assert result.status is Status.OK
    assert result.text == 'the tokens " because" (79%), " since" (16%), " it" (5%)'
    shares = {tuple(t["tokens"]): t["share"] for t in result.evidence["tokens"]}
    assert shares == {
        (" because",): pytest.approx(30 / 38, abs=1e-4),
        (" since",): pytest.approx(6 / 38, abs=1e-4),
        (" it",): pytest.approx(2 / 38, abs=1e-4),
    }
    assert result.evidence["mass"] == pytest.approx(38.0)  # the BOS sink (50 each) not counted
    assert "therefore" not in result.text


def test_k_and_min_share_cut_the_list_but_keep_the_heaviest():
    assert explain(because_latent(), k=1, ngrams=False).text == 'the token " because" (79%)'
    assert explain(because_latent(), min_share=0.1, ngrams=False).text == (
        'the tokens " because" (79%), " since" (16%)'
    )
    assert explain(because_latent(), min_share=0.95, ngrams=False).text == (
        'the token " because" (79%)'
    )


def test_a_token_that_fires_after_the_same_words_is_shown_as_an_ngram():
    # " York" fires after " New" 4 times (4 x 2.0) and once alone (1.0): the bigram holds 8/9
    examples = [
        example([(w, 0), (" New", 0), (" York", 2.0)], i)
        for i, w in enumerate([" in", " to", " of", " at"])
    ]
    examples.append(example([(" York", 1.0), (" is", 0)], 4))
    # " because" follows different words each time: it stays a single token
    examples += [
        example([(w, 0), (" because", 1.0)], 5 + i) for i, w in enumerate([" a", " b", " c"])
    ]
    result = explain(record(examples))
    assert result.text == 'the tokens " New York" (67%), " because" (25%)'
    assert result.evidence["tokens"][0] == {
        "tokens": [" New", " York"],
        "share": 0.6667,
        "count": 4,
    }
    # trigrams too, when the two words before repeat as well
    examples = [example([(" in", 0), (" New", 0), (" York", 2.0)], i) for i in range(4)]
    assert explain(record(examples)).text == 'the token " in New York" (100%)'
    assert explain(record(examples), ngrams=False).text == 'the token " York" (100%)'


def test_a_context_latent_gets_low_shares_and_says_so():
    # fires a little on every token of varied prose: no token carries the mass
    words = [f" w{i}" for i in range(60)]
    examples = [example([(w, 1.0) for w in words[i * 12 : (i + 1) * 12]], i) for i in range(5)]
    result = explain(record(examples))
    assert result.text == 'no token stands out (heaviest: " w0" (2%))'
    assert explain(record(examples), min_share=0.0, k=2).text == (
        'no token stands out (heaviest: " w0" (2%), " w1" (2%))'
    )


def test_dataset_text_is_escaped_and_kept_on_one_line():
    examples = [example([("<<forged>>", 2.0), ("\n", 1.0)], i) for i in range(3)]
    text = explain(record(examples), ngrams=False).text
    assert "<" not in text and "\n" not in text
    assert "\u2039\u2039forged\u203a\u203a" in text and '"\\n"' in text


def test_nothing_activating_is_a_failed_result_not_an_exception():
    result = explain(record([example([(" a", 0.0)], 0)]))
    assert result.status is Status.FAILED and "no explanation example" in (result.error or "")


def test_it_needs_no_llm_model_or_coder_and_rejects_bad_settings():
    needs = needs_of(TopTokens())
    assert not (needs.provider or needs.backend or needs.coder) and needs.records
    with pytest.raises(ConfigError, match="toptokens"):
        TopTokens(k=0)
    with pytest.raises(ConfigError, match="min_share"):
        TopTokens(min_share=1.5)


def test_it_is_registered_as_a_builtin():
    from saexplain.testing import fresh_plugin_manager

    with fresh_plugin_manager() as pm:
        assert isinstance(pm.explainers.create("toptokens"), TopTokens)
