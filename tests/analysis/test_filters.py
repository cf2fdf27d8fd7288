"""Latent filters on planted latents: dead, rare, positional and unigram are flagged, ordinary
latents are not."""

from __future__ import annotations

import numpy as np
import pytest

from saexplain.analysis.filters import (
    RARE_PRESETS,
    FilterConfig,
    compute_filters,
    positional_mi,
    skipped,
)
from saexplain.errors import ConfigError
from saexplain.store import collect
from saexplain.testing import FakeBackend
from tests.analysis.planted import (
    DEAD,
    ORDINARY,
    ORDINARY_BIGRAM,
    POSITIONAL,
    RARE,
    UNIGRAM,
    PlantedKindsCoder,
    planted_corpus,
)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=256)
    coder = PlantedKindsCoder(backend)
    store = collect(
        backend,
        coder,
        planted_corpus(),
        tmp_path_factory.mktemp("s") / "store",
        context_length=32,
        shard_contexts=64,
        batch_size=32,
        progress=False,
        fsync=False,
    )
    return backend, coder, store


def test_planted_kinds_are_flagged_and_ordinary_latents_are_not(planted):
    backend, coder, store = planted
    found = compute_filters(store, range(6), FilterConfig(), backend=backend, coder=coder)
    assert found[DEAD].flags == ("dead",)
    assert "rare" in found[RARE].flags and found[RARE].count == 5
    assert found[POSITIONAL].flags == ("positional",)
    assert found[POSITIONAL].positional_mi > 0.05
    assert found[UNIGRAM].flags == ("unigram",)
    assert found[UNIGRAM].unigram_tokens == 1 and found[UNIGRAM].unigram_fraction == 1.0
    for latent in ORDINARY:
        assert found[latent].flags == (), (latent, found[latent])
        assert found[latent].count >= RARE_PRESETS["saebench"]
        assert found[latent].positional_mi < 0.01
    # the bigram latent is a one-token candidate, rejected by the random-context check
    assert found[ORDINARY_BIGRAM].unigram_tokens == 1
    assert found[ORDINARY_BIGRAM].unigram_fraction is not None
    assert found[ORDINARY_BIGRAM].unigram_fraction < 0.2


def test_without_a_backend_nothing_is_flagged_unigram(planted):
    _, _, store = planted
    found = compute_filters(store, [UNIGRAM, POSITIONAL], FilterConfig())
    assert found[UNIGRAM].flags == () and found[UNIGRAM].unigram_fraction is None
    assert found[POSITIONAL].flags == ("positional",)


def test_presets_and_explicit_threshold(planted):
    _, _, store = planted
    assert FilterConfig(rare_preset="eleuther").threshold == 200
    eleuther = compute_filters(store, [UNIGRAM], FilterConfig(rare_preset="eleuther"))
    assert eleuther[UNIGRAM].count < 200 and "rare" in eleuther[UNIGRAM].flags
    low = compute_filters(store, [RARE], FilterConfig(min_firings=5))
    assert "rare" not in low[RARE].flags


def test_skipped_names_the_flags_that_skip(planted):
    backend, coder, store = planted
    found = compute_filters(store, range(6), backend=backend, coder=coder)
    assert skipped(found, ["dead", "positional"]) == {DEAD: ["dead"], POSITIONAL: ["positional"]}


def test_mutual_information_in_nats():
    # fires at one position of four, every time: I = H(1/4) in nats
    mi = positional_mi([10, 0, 0, 0], [10, 10, 10, 10])
    assert mi == pytest.approx(-(0.25 * np.log(0.25) + 0.75 * np.log(0.75)))
    assert positional_mi([5, 5, 5, 5], [10, 10, 10, 10]) == pytest.approx(0.0)
    assert positional_mi([0, 0], [10, 10]) == 0.0


def test_bad_filter_settings_are_one_line_config_errors():
    with pytest.raises(ConfigError, match=r"filters\.skip"):
        FilterConfig.parse({"skip": ["deadish"]})
    with pytest.raises(ConfigError, match=r"filters\.position_bins"):
        FilterConfig.parse({"position_bins": 1})
    with pytest.raises(ConfigError, match="unigram"):
        FilterConfig.parse({"skip": ["unigram"], "unigram": False})
