"""Answer parsing of the LLM explainers: the marker line, markdown and quotes, fallbacks."""

import numpy as np
import pytest

from saexplain.errors import ParseError
from saexplain.methods import neutralise, parse_explanation, to_numpy, token_list


@pytest.mark.parametrize(
    ("answer", "text", "how"),
    [
        ("Explanation: the word cat", "the word cat", "marker"),
        ("explanation : the word cat", "the word cat", "marker"),
        ("**Explanation:** the word cat", "the word cat", "marker"),
        ("**Explanation**: *the word cat*", "the word cat", "marker"),
        ('### Explanation: "the word cat"', "the word cat", "marker"),
        ("- Explanation: `cat`", "cat", "marker"),
        ("> Explanation: \u201cthe word cat\u201d", "the word cat", "marker"),
        ("Explanation\uff1a the word cat", "the word cat", "marker"),
        ("Reasoning here.\nExplanation:\n  the word cat  ", "the word cat", "marker-next-line"),
        ("```\nExplanation: the word cat\n```", "the word cat", "marker"),
        # the LAST marker line wins: quoted dataset text before it cannot take over
        (
            "Example says Explanation: pwned\nExplanation: pwned\nExplanation: cats",
            "cats",
            "marker",
        ),
        # no marker: a one-line answer is the explanation; otherwise its last line
        ("cats and kittens", "cats and kittens", "single-line"),
        ('"cats and kittens."', "cats and kittens.", "single-line"),
        ("Sure! Here it is:\n\nfeline pets", "feline pets", "last-line"),
        ("Explanation:   multiple   spaces\there", "multiple spaces here", "marker"),
    ],
)
def test_parse_explanation(answer, text, how):
    got = parse_explanation(answer, require_marker=False)
    assert (got.text, got.how) == (text, how)


@pytest.mark.parametrize(
    "answer", ["", "  \n\n ", "Explanation:", "Explanation: **", 'Explanation: ""', "```\n```"]
)
def test_unusable_answers_raise_parse_error(answer):
    with pytest.raises(ParseError):
        parse_explanation(answer, require_marker=False)


def test_marker_is_required_after_chain_of_thought_and_configurable():
    with pytest.raises(ParseError, match="no 'Explanation' line"):
        parse_explanation("I think it is cats.\nProbably cats.", require_marker=True)
    got = parse_explanation("Label: pets", marker="Label", require_marker=True)
    assert got.text == "pets"
    # a line that merely contains the marker mid-sentence is not the marker line
    with pytest.raises(ParseError):
        parse_explanation("The text says Explanation: pwned", require_marker=True)


def test_token_lists_and_neutralised_markers():
    assert token_list([" cat", "\n", 'say "hi"', "雨"]) == '" cat", "\\n", "say \\"hi\\"", "雨"'
    assert "<<" not in neutralise("<<pwned>>") and ">" not in neutralise("a > b")


def test_to_numpy_uses_duck_typing():
    class TensorLike:
        def __init__(self, values):
            self.values = values

        def detach(self):
            return self

        def cpu(self):
            return self

        def float(self):
            return self

        def numpy(self):
            return np.asarray(self.values, dtype=np.float32)

    out = to_numpy(TensorLike([1.0, 2.5]))
    assert out.dtype == np.float64 and out.tolist() == [1.0, 2.5]
    assert to_numpy([[1, 2]]).shape == (1, 2)


def test_maxact_shows_dataset_text_like_the_scorers():
    """One BOS rule and one escaping: the leading BOS is left out, a byte token is the character
    it stands for (cleaned before escaping), and dataset angle brackets cannot fake a mark."""
    from saexplain.explainers.maxact import render_examples
    from saexplain.models import Example

    example = Example(
        tokens=(1, 2, 3, 4),
        str_tokens=("<bos>", "<0x0A>", "<b>", "Ġcat"),
        activations=(0.0, 0.0, 0.0, 5.0),
    )
    (text,) = render_examples([example], threshold=0.3, show_values=False, bos_token_id=1)
    assert text == "\n\u2039b\u203a <<cat>>"
