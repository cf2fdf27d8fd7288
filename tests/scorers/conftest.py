"""Fixtures: a FakeBackend with planted latents and records for each."""

import pytest

from saexplain.protocols import MethodContext
from saexplain.testing import FakeBackend, FakeCoder, competent_scorer_provider, make_record

from .planted import WORDS, corpus


@pytest.fixture(scope="session")
def planted():
    backend = FakeBackend()
    coder = FakeCoder.planted(backend, WORDS, d_sae=8)
    texts = corpus()
    records = {i: make_record(backend, coder, i, texts) for i in WORDS}
    return backend, coder, records


@pytest.fixture
def ctx(planted):
    backend = planted[0]
    return MethodContext(backend=backend, providers={"scorer": competent_scorer_provider()}, seed=7)
