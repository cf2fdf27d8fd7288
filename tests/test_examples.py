"""Every example config in examples/ is a valid RunConfig (so the documented commands start)."""

from pathlib import Path

import pytest

from saexplain.config import load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_is_valid(path):
    config = load_config(path)
    assert config.explainers and config.model


def test_there_are_examples():
    assert EXAMPLES
