"""Bad input and a failing disk are one-line errors naming the file and the fix, not tracebacks;
a failed write leaves no temporary file behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from saexplain import files
from saexplain.config import load_config
from saexplain.errors import ConfigError, StorageError
from saexplain.store.datasets import iter_documents


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text, text
    return text


def test_a_config_that_is_not_utf8_names_the_file_and_the_fix(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_bytes("model: café\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    text = one_line(info.value)
    assert str(cfg) in text and "UTF-8" in text


@pytest.mark.parametrize(
    "body", ["model: [a, b\ncoder: x\n", "model: a\n  coder: b: c\n", "model: \x07\n"]
)
def test_invalid_yaml_is_one_line_with_its_place(tmp_path, body):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    text = one_line(info.value)
    assert str(cfg) in text and "not valid YAML" in text
    where = text.split("YAML:")[1]
    assert " line " in where or " offset " in where, where


@pytest.mark.parametrize("name", ["corpus.txt", "corpus.jsonl", "folder/part.txt"])
def test_a_dataset_file_that_is_not_utf8_names_the_file_and_the_fix(tmp_path, name):
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    line = '{"text": "café"}' if name.endswith(".jsonl") else "café au lait"
    path.write_bytes(f"{line}\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        list(iter_documents(path.parent if name.startswith("folder") else path))
    text = one_line(info.value)
    assert str(path) in text and "UTF-8" in text and "iconv" in text


def test_a_damaged_json_line_in_a_dataset_names_the_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "cut\n')
    with pytest.raises(ConfigError) as info:
        list(iter_documents(path))
    assert f"{path}:2" in one_line(info.value)


def fail(code: int):
    def raiser(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    return raiser


def test_a_full_disk_names_the_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    target.write_text("the old page")
    monkeypatch.setattr(os, "fsync", fail(errno.ENOSPC))
    with pytest.raises(StorageError) as info:
        files.atomic_write_text(target, "the new page")
    text = one_line(info.value)
    assert str(target) in text and "disk is full" in text and "free" in text
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert target.read_text() == "the old page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EPERM])
def test_a_read_only_folder_names_the_file_and_the_fix(tmp_path, monkeypatch, code):
    monkeypatch.setattr(os, "replace", fail(code))
    target = tmp_path / "config.json"
    with pytest.raises(StorageError) as info:
        files.atomic_write_text(target, "{}")
    text = one_line(info.value)
    assert str(target) in text and "writable" in text and "output_dir" in text
    assert list(tmp_path.iterdir()) == []


def test_other_os_errors_pass_through_unchanged(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", fail(errno.EIO))
    with pytest.raises(OSError) as info:
        files.atomic_write_text(tmp_path / "x.json", "{}")
    assert not isinstance(info.value, StorageError) and info.value.errno == errno.EIO
    assert list(tmp_path.iterdir()) == []


def test_a_report_that_fails_to_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    from saexplain.report import write_report

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setattr(os, "fsync", fail(errno.ENOSPC))
    with pytest.raises(StorageError):
        write_report(run_dir)
    assert [p.name for p in run_dir.iterdir() if ".tmp-" in p.name] == []


def test_storage_errors_are_os_errors_for_callers_that_tolerate_a_full_disk(tmp_path):
    error = files.storage_error(Path("runs/x/scores.jsonl"), OSError(errno.EDQUOT, "quota"))
    assert isinstance(error, OSError) and isinstance(error, StorageError)
    assert error.errno == errno.EDQUOT and "runs/x/scores.jsonl" in str(error)
    assert files.storage_error(Path("x"), OSError(errno.EIO, "io")) is None
