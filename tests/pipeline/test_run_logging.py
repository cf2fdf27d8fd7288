"""A run tells the standard `logging` module what it does (stages, counts, skipped latents,
errors) under `saexplain.*`, and prints nothing itself."""

from __future__ import annotations

import logging

from saexplain.models import LatentSelection
from saexplain.pipeline import run
from saexplain.testing import ScriptedProvider, failing_every, fresh_plugin_manager

from . import toy
from .test_pipeline import config


def test_a_run_logs_its_stages_counts_and_errors(tmp_path, caplog, capsys):
    backend, coder, texts = toy.world()
    llm = ScriptedProvider(toy.answer, fail_on=failing_every(4))  # some scores error
    selected = LatentSelection(indices=(*sorted(toy.WORDS), 11))  # latent 11 never fires
    with fresh_plugin_manager() as pm, caplog.at_level(logging.DEBUG, logger="saexplain"):
        pm.register_plugin(toy, name="toy")
        run(
            config(tmp_path, latents=selected),
            model=backend,
            coder=coder,
            dataset=texts,
            providers={"default": llm},
            progress=False,
        )
    records = [r for r in caplog.records if r.name.startswith("saexplain")]
    text = "\n".join(r.getMessage() for r in records)
    info = "\n".join(r.getMessage() for r in records if r.levelno >= logging.INFO)
    for stage in ("collecting", "collected", "records", "explain and score", "report"):
        assert stage in info, (stage, info)
    assert "6 latents selected" in info and "1 dead" in info
    assert "latent 11" in text and "never fired" in text  # the skipped latent, at DEBUG
    assert any(r.levelno == logging.WARNING and "failed" in r.getMessage() for r in records)
    assert capsys.readouterr().out == ""  # no prints from library code
