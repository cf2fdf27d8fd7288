"""Fakes and contract checks for saexplain and its plugins' test suites.

Import everything from here (`from saexplain.testing import FakeBackend`); the submodules are
the places the pieces live:

- `fakes`: `FakeBackend`, a tiny deterministic numpy "language model" implementing the Backend
  protocol (no torch), and sparse coders with known answers (`FakeCoder`, `PlantedValuesCoder`);
- `providers`: `ScriptedProvider`, an LLM provider answering from a list or a function, failing
  on demand, reporting token usage, optionally with logprobs;
- `data`: `synthetic_corpus` and `make_record`;
- `contracts`: `check_*` contract tests that plugin suites call on their own implementations,
  and `fresh_plugin_manager`;
- `agreement`: `check_backends_agree` and `check_planted`, across backends;
- `competent`: provider responders that explain, score and write texts like a competent LLM;
- `env`: `set_offline_env`, `isolated_cache` (a test's own response cache; shared model builds).
"""

from __future__ import annotations

from saexplain.testing.agreement import (
    as_numpy,
    check_backends_agree,
    check_planted,
    default_edits,
)
from saexplain.testing.competent import (
    competent_explainer,
    competent_logprobs,
    competent_scorer,
    competent_scorer_provider,
    competent_writer,
    explanation_keywords,
)
from saexplain.testing.contracts import (
    check_backend,
    check_backend_errors,
    check_explainer,
    check_plugin,
    check_probe_and_row_replace,
    check_provider,
    check_row_edits,
    check_scorer,
    fresh_plugin_manager,
)
from saexplain.testing.data import make_record, synthetic_corpus
from saexplain.testing.env import OFFLINE_ENV, isolated_cache, set_offline_env
from saexplain.testing.fakes import FakeBackend, FakeCoder, PlantedValuesCoder
from saexplain.testing.providers import Answer, ScriptedProvider, failing_every

__all__ = [
    "OFFLINE_ENV",
    "Answer",
    "FakeBackend",
    "FakeCoder",
    "PlantedValuesCoder",
    "ScriptedProvider",
    "as_numpy",
    "check_backend",
    "check_backend_errors",
    "check_backends_agree",
    "check_explainer",
    "check_planted",
    "check_plugin",
    "check_probe_and_row_replace",
    "check_provider",
    "check_row_edits",
    "check_scorer",
    "competent_explainer",
    "competent_logprobs",
    "competent_scorer",
    "competent_scorer_provider",
    "competent_writer",
    "default_edits",
    "explanation_keywords",
    "failing_every",
    "fresh_plugin_manager",
    "isolated_cache",
    "make_record",
    "set_offline_env",
    "synthetic_corpus",
]
