"""Highlight rendering: spans, thresholds, values, tokenizer byte artefacts."""

import pytest

from saexplain.models import Example
from saexplain.render import (
    clean_token,
    highlight,
    marked,
    render_example,
    render_token_values,
    scale_values,
)


def ex(tokens, acts):
    return Example(
        tokens=tuple(range(len(tokens))), str_tokens=tuple(tokens), activations=tuple(acts)
    )


def test_clean_token_replaces_byte_artefacts():
    assert clean_token("Ġcat") == " cat"
    assert clean_token("Ċ") == "\n"
    assert clean_token("▁the") == " the"
    assert clean_token("<0x0A>") == "\n"
    assert clean_token("ĉx") == "\tx"
    assert clean_token("plain") == "plain"


def test_spans_merge_adjacent_tokens_and_keep_spaces_outside():
    e = ex(["The", "Ġbig", "Ġcat", "Ġsat", "Ċ", "Ġdown"], [0, 0.5, 1.0, 0.1, 0, 0.9])
    assert render_example(e) == "The <<big cat>> sat\n <<down>>"
    assert render_example(e, threshold=0.6) == "The big <<cat>> sat\n <<down>>"
    assert render_example(e, threshold=0.05) == "The <<big cat sat>>\n <<down>>"


def test_threshold_relative_to_latent_max():
    e = ex([" a", " b"], [0.2, 0.4])
    assert render_example(e) == " <<a b>>"  # 0.2 >= 0.3 * 0.4
    assert render_example(e, relative_to="latent", latent_max=1.0) == " a <<b>>"
    assert render_example(e, relative_to="latent", latent_max=10.0) == " a b"
    with pytest.raises(ValueError):
        render_example(e, relative_to="latent")


def test_values_and_token_value_format():
    e = ex(["▁the", "▁cat", "▁sat"], [0.0, 2.0, 1.0])
    assert render_example(e, show_values=True) == " the <<cat sat>>\nActivations: cat (10), sat (5)"
    assert render_example(e, show_values=True, threshold=0.9).endswith("Activations: cat (10)")
    assert render_token_values(e) == " the\t0\n cat\t10\n sat\t5"
    assert render_token_values(e, latent_max=4.0) == " the\t0\n cat\t5\n sat\t2"
    silent = ex([" x"], [0.0])
    assert render_example(silent, show_values=True) == " x\nActivations: none"


def test_explicit_marks_and_custom_markers():
    e = ex([" a", " b", " c"], [0, 0, 0])
    assert render_example(e, marks=[False, True, False]) == " a <<b>> c"
    assert highlight([" a", " b"], [True, True], open_mark="[", close_mark="]") == " [a b]"
    assert highlight([" ", "x"], [True, False]) == " x"  # whitespace-only span: nothing marked
    with pytest.raises(ValueError):
        highlight([" a"], [True, False])


def test_helpers():
    assert marked([0, 0.3, 1.0], threshold=0.3) == [False, True, True]
    assert marked([0, 0], threshold=0.3) == [False, False]
    assert scale_values([-1, 0.5, 1.0], 1.0) == [0, 5, 10]
    assert scale_values([1.0], 0.0) == [0]
