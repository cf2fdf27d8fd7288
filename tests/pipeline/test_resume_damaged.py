"""A rerun resumes a run directory under the report's policy: a torn last line is dropped and its
work redone once; a damaged middle line stops the run before anything is paid again."""

from pathlib import Path

import pytest

from saexplain.errors import RunDirError
from saexplain.pipeline import arun
from saexplain.report import RunResults
from saexplain.testing import fresh_plugin_manager

from . import toy
from .test_pipeline import config, lines


@pytest.fixture
def manager():
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        yield pm


async def run_toy(tmp_path: Path, llm):
    backend, coder, texts = toy.world()
    return await arun(
        config(tmp_path),
        model=backend,
        coder=coder,
        dataset=texts,
        providers={"default": llm},
        progress=False,
    )


async def test_a_torn_last_line_is_redone_once(tmp_path, manager):
    await run_toy(tmp_path, toy.llm())
    scores = tmp_path / "run" / "scores.jsonl"
    full = scores.read_text().splitlines(keepends=True)
    scores.write_text("".join(full[:-1]) + full[-1][:20])  # a crash mid-append
    llm = toy.llm()
    with pytest.warns(match="scores.jsonl: dropped line"):
        results = await run_toy(tmp_path, llm)
    assert len(lines(scores)) == len(full) and len(results.scores) == len(full)
    # only the lost score was paid for again: scoring calls about one explanation, nothing else
    asked = {r.messages[0].content.splitlines()[0] for r in llm.requests}
    assert len(asked) == 1 and asked.pop().startswith("SCORE")


async def test_a_damaged_middle_line_stops_the_rerun(tmp_path, manager):
    await run_toy(tmp_path, toy.llm())
    run_dir = tmp_path / "run"
    explanations = run_dir / "explanations.jsonl"
    text = explanations.read_text().splitlines(keepends=True)
    text[0] = '{"latent": "not a latent"}\n'
    explanations.write_text("".join(text))
    before = {p.name: p.read_bytes() for p in run_dir.glob("*.jsonl")}
    llm = toy.llm()
    with pytest.raises(RunDirError, match=r"explanations\.jsonl:1: .*delete line 1"):
        await run_toy(tmp_path, llm)
    assert llm.requests == []  # nothing paid again
    assert {p.name: p.read_bytes() for p in run_dir.glob("*.jsonl")} == before
    with pytest.raises(RunDirError, match=r"explanations\.jsonl:1: "):
        RunResults.load(run_dir)  # the report says the same
