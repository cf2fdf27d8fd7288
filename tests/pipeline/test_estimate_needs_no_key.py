"""`saexplain estimate` calls no LLM, so it must not need the provider's API key (issue 21)."""

from __future__ import annotations

import json

import pytest

import saexplain
from saexplain.cli import main
from saexplain.errors import ProviderAuthError
from saexplain.hookspecs import Register
from saexplain.testing import ScriptedProvider, fresh_plugin_manager

from . import toy
from .test_cli_run import CONFIG


class KeyedProvider(ScriptedProvider):
    """The toy LLM behind a provider that, like a hosted one, needs a key nobody has set."""

    def check_ready(self) -> None:
        raise ProviderAuthError("model 'scripted' needs TOY_API_KEY in the environment")


class KeyedStack:
    @saexplain.hookimpl
    def register_providers(self, register: Register) -> None:
        register("keyedllm", lambda model, **settings: KeyedProvider(toy.answer))


@pytest.fixture
def keyed_config(tmp_path):
    _, _, texts = toy.world()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(texts))
    cfg = tmp_path / "run.yaml"
    text = CONFIG.format(corpus=corpus, out=tmp_path / "runs").replace("toyllm", "keyedllm")
    cfg.write_text(text)
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        pm.register_plugin(toy.Stack(), name="toystack")
        pm.register_plugin(KeyedStack(), name="keyedstack")
        yield cfg


def test_estimate_runs_without_the_key_a_run_needs(keyed_config, capsys):
    assert main(["run", str(keyed_config), "-q"]) == 2  # the run still checks the key first
    assert "TOY_API_KEY" in capsys.readouterr().err
    assert main(["estimate", str(keyed_config), "--json", "-q"]) == 0
    captured = capsys.readouterr()
    assert "TOY_API_KEY" not in captured.err
    result = json.loads(captured.out)
    assert result["latents"] == 3 and result["total"]["calls"] > 0


def test_estimate_of_a_run_that_reads_no_records_reads_no_dataset(keyed_config, capsys):
    """selfexplain reads no records: its estimate collects nothing, so a missing corpus is fine."""
    missing = keyed_config.parent / "no-such-corpus.txt"
    args = [f"dataset={missing}", "explainers=[selfexplain]", "scorers=[]", "--json", "-q"]
    assert main(["estimate", str(keyed_config), *args]) == 0
    assert json.loads(capsys.readouterr().out)["latents"] == 3
    assert not (keyed_config.parent / "runs" / "clirun" / "store").exists()
