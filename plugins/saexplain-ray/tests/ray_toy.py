"""The toy world of the Ray tests: `saexplain.testing.toy` (importable by the workers), with the
two more planted latents of `WIDE_WORDS`."""

from __future__ import annotations

from saexplain.testing import toy
from saexplain.testing.toy import *  # noqa: F403
from saexplain.testing.toy import (  # noqa: F401  (hook implementations, found by pluggy)
    register_explainers,
    register_scorers,
)

WORDS = toy.WIDE_WORDS


def world() -> tuple[toy.FakeBackend, toy.PlantedValuesCoder, list[str]]:
    return toy.world(words=WORDS)
