"""Special tokens inside an example (document separators such as `<|endoftext|>`, chat-template
markers such as `<|im_start|>`) reach no prompt as template markers: every rendering path shows
them as a neutral `[name]`."""

import pytest

from saexplain.explainers.maxact import render_examples
from saexplain.methods import display_tokens, token_list
from saexplain.models import Example
from saexplain.render import clean_token, render_example, render_token_values
from saexplain.scorers.simulation import show_token

TOKENS = ("The", "Ġcat", "<|endoftext|>", "<|im_start|>", "user", "Ġcat", "<0x0A>")
EXAMPLE = Example(
    tokens=tuple(range(len(TOKENS))), str_tokens=TOKENS, activations=(0, 5, 0, 0, 0, 4, 0)
)


def no_template_marker(text: str) -> bool:
    return not any(mark in text for mark in ("<|", "|>", "\u2039|", "|\u203a"))


@pytest.mark.parametrize(
    ("token", "shown"),
    [("<|endoftext|>", "[endoftext]"), ("<|im_start|>", "[im_start]"), ("<|eot_id|>", "[eot_id]")],
)
def test_a_special_token_is_shown_as_a_neutral_marker(token, shown):
    assert clean_token(token) == shown
    assert clean_token("<0x0A>") == "\n" and clean_token("<b>") == "<b>"  # text stays text


def test_every_prompt_path_shows_separators_neutrally():
    shown = [
        render_example(EXAMPLE),
        render_example(EXAMPLE, show_values=True),
        render_token_values(EXAMPLE),
        "".join(display_tokens(EXAMPLE)),
        token_list(display_tokens(EXAMPLE)),
        "".join(show_token(t) for t in EXAMPLE.str_tokens),
        *render_examples([EXAMPLE], threshold=0.3, show_values=True),
    ]
    for text in shown:
        assert no_template_marker(text), text
        assert "[endoftext]" in text and "[im_start]" in text, text
