"""One variable, `SAEXPLAIN_CACHE_DIR`, places every cache (`saexplain.files.cache_dir`); the
older names still work and say they are deprecated."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from saexplain import files
from saexplain.files import CACHE_KINDS, cache_dir
from saexplain.providers import ResponseCache, default_cache_dir
from saexplain.testing import isolated_cache

OLD = ("SAEXPLAIN_CACHE", "SAEXPLAIN_MODEL_CACHE")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean environment: no cache variable set, a fake home, warnings not yet given."""
    for name in (files.CACHE_ENV, "XDG_CACHE_HOME", *OLD):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(files, "_warned", set())
    return monkeypatch


def deprecation_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "DeprecationWarning" in r.getMessage()]


def test_the_new_name_places_every_kind_in_its_subfolder(env, tmp_path, caplog):
    env.setenv("SAEXPLAIN_CACHE_DIR", str(tmp_path / "c"))
    assert set(CACHE_KINDS) == {"responses", "models", "demo"}
    for kind in CACHE_KINDS:
        assert cache_dir(kind) == tmp_path / "c" / kind
    assert default_cache_dir() == tmp_path / "c" / "responses"
    assert ResponseCache().directory == tmp_path / "c" / "responses"
    assert deprecation_lines(caplog) == []


def test_without_a_variable_the_user_cache_holds_them(env, tmp_path):
    assert cache_dir("models") == tmp_path / "home" / ".cache" / "saexplain" / "models"
    env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("demo") == tmp_path / "xdg" / "saexplain" / "demo"


def test_the_old_model_variable_still_names_the_models_folder_and_warns_once(env, tmp_path, caplog):
    env.setenv("SAEXPLAIN_MODEL_CACHE", str(tmp_path / "old-models"))
    with caplog.at_level(logging.WARNING, logger="saexplain.files"):
        assert cache_dir("models") == tmp_path / "old-models"
        assert cache_dir("models") == tmp_path / "old-models"
        # it only ever moved the models: the other kinds stay in the default root
        assert cache_dir("responses") == tmp_path / "home" / ".cache" / "saexplain" / "responses"
    (line,) = deprecation_lines(caplog)
    assert "SAEXPLAIN_MODEL_CACHE is deprecated" in line and "SAEXPLAIN_CACHE_DIR" in line


def test_the_old_root_variable_still_works_as_a_root_and_warns(env, tmp_path, caplog):
    env.setenv("SAEXPLAIN_CACHE", str(tmp_path / "old"))
    with caplog.at_level(logging.WARNING, logger="saexplain.files"):
        assert cache_dir("demo") == tmp_path / "old" / "demo"
        assert cache_dir("responses") == tmp_path / "old" / "responses"
    (line,) = deprecation_lines(caplog)
    assert "SAEXPLAIN_CACHE is deprecated" in line


def test_the_new_name_wins_over_an_old_one_and_says_it_is_ignored(env, tmp_path, caplog):
    env.setenv("SAEXPLAIN_CACHE_DIR", str(tmp_path / "new"))
    env.setenv("SAEXPLAIN_MODEL_CACHE", str(tmp_path / "old-models"))
    with caplog.at_level(logging.WARNING, logger="saexplain.files"):
        assert cache_dir("models") == tmp_path / "new" / "models"
    (line,) = deprecation_lines(caplog)
    assert "ignored" in line


def test_an_unknown_kind_is_a_clear_error(env):
    with pytest.raises(ValueError, match=r"unknown cache kind 'model'.*'models'"):
        cache_dir("model")


def test_a_test_cache_owns_its_responses_and_shares_the_model_builds(env, tmp_path):
    env.setenv("SAEXPLAIN_CACHE_DIR", str(tmp_path / "user"))
    root = isolated_cache(tmp_path / "test")
    env.setenv("SAEXPLAIN_CACHE_DIR", str(root))
    assert cache_dir("models").resolve() == (tmp_path / "user" / "models").resolve()
    assert cache_dir("demo").resolve() == (tmp_path / "user" / "demo").resolve()
    assert not cache_dir("responses").is_symlink()
    assert not (tmp_path / "user" / "responses").exists()
    assert isolated_cache(root) == root  # idempotent: the links are kept
