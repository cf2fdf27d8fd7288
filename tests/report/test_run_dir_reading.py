"""A resumed run and the report read a run directory with one policy: a last line cut short by a
crash is dropped, a damaged line in the middle raises the same error naming file and line."""

import pytest

from saexplain.errors import RunDirError
from saexplain.models import Explanation, LatentRecord, Score
from saexplain.report import RunResults
from saexplain.rundir import (
    LatentEntry,
    RunDir,
    TruncatedLineWarning,
    explanation_key,
    is_final,
    latent_key,
    read_jsonl,
    score_key,
)

MODELS = {
    "explanations": Explanation,
    "scores": Score,
    "records": LatentRecord,
    "latents": LatentEntry,
}
KEY = {
    "explanations": explanation_key,
    "scores": score_key,
    "records": lambda r: latent_key(r.latent),
    "latents": lambda e: latent_key(e.latent),
}


def resumed(run_dir, name):
    """What a resumed run reads of a file, by key."""
    rd = RunDir(run_dir)
    readers = {
        "explanations": rd.done_explanations,
        "scores": rd.done_scores,
        "records": rd.stored_records,
        "latents": lambda: {KEY["latents"](e): e for e in rd.latents.read(LatentEntry)},
    }
    return set(readers[name]())


def reported(results, name):
    """What the report reads of a file, by key (results a resumed run would redo left out)."""
    if name == "latents":
        return {latent_key(r.latent) for r in results if r.status is not None}
    return {KEY[name](x) for x in getattr(results, name) if name == "records" or is_final(x)}


@pytest.mark.parametrize("name", list(MODELS))
def test_a_torn_last_line_is_dropped_at_resume_and_at_report(run, tmp_path, name):
    run_dir = run.write(tmp_path / "run")
    path = run_dir / f"{name}.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    kept = [MODELS[name].model_validate_json(line) for line in lines[:-1]]
    whole = {KEY[name](x) for x in kept if name in ("records", "latents") or is_final(x)}
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # crash mid-write

    with pytest.warns(TruncatedLineWarning, match=f"{name}.jsonl: dropped line {len(lines)}"):
        results = RunResults.load(run_dir)
    assert reported(results, name) == whole
    assert path.read_text().endswith(lines[-1][: len(lines[-1]) // 2])  # reading changes nothing

    with pytest.warns(TruncatedLineWarning, match=f"{name}.jsonl: dropped line {len(lines)}"):
        keys = resumed(run_dir, name)
    assert keys == whole
    assert path.read_text() == "".join(lines[:-1])  # the resumed run appends on a clean line


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("damage", ['{"latent": {"coder_id"', '{"not": "a line of this file"}'])
def test_a_damaged_middle_line_raises_the_same_error_at_resume_and_at_report(
    run, tmp_path, name, damage
):
    run_dir = run.write(tmp_path / "run")
    path = run_dir / f"{name}.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = damage + "\n"
    path.write_text("".join(lines))

    with pytest.raises(RunDirError) as at_report:
        RunResults.load(run_dir)
    with pytest.raises(RunDirError) as at_resume:
        resumed(run_dir, name)
    message = str(at_report.value)
    assert message == str(at_resume.value)
    assert f"{name}.jsonl:2: " in message and "delete line 2" in message
    assert len(message.splitlines()) == 1  # the CLI prints it as its one-line error


def test_a_damaged_config_raises_alike(run, tmp_path):
    from saexplain.models import RunConfig

    run_dir = run.write(tmp_path / "run")
    (run_dir / "config.json").write_text('{"model": "fake", ')
    with pytest.raises(RunDirError, match=r"config\.json") as at_report:
        RunResults.load(run_dir)
    with pytest.raises(RunDirError, match=r"config\.json") as at_resume:
        RunDir(run_dir).check_same_run(RunConfig(model="fake", coder="fake", dataset="d"))
    assert str(at_report.value) == str(at_resume.value)


def test_latents_of_two_coders_at_one_hook_are_kept_apart(run, tmp_path):
    run_dir = tmp_path / "run"
    rd = RunDir(run_dir)
    first = run.explanations[0]
    other = first.model_copy(
        update={"latent": first.latent.model_copy(update={"coder_id": "another-sae"})}
    )
    assert first.latent.key == other.latent.key  # the file-name key cannot tell them apart
    rd.explanations.append(first)
    rd.explanations.append(other)
    rd.records.append(run.records[0])
    rd.records.append(
        run.records[0].model_copy(
            update={"latent": run.records[0].latent.model_copy(update={"coder_id": "b"})}
        )
    )
    assert len(rd.done_explanations()) == 2 and len(rd.stored_records()) == 2
    assert len(RunResults.load(run_dir).explanations) == 2


def test_blank_lines_and_a_missing_file_read_as_nothing(tmp_path):
    path = tmp_path / "scores.jsonl"
    assert read_jsonl(path, Score) == []
    path.write_text("\n\n")
    assert read_jsonl(path, Score) == []
