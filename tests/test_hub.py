"""`saexplain.hub`: a model or SAE that cannot be loaded from the Hugging Face hub fails at once,
in one line (issue 21). No network: the unreachable hub is a closed port on loopback."""

from __future__ import annotations

import socket
import time

import pytest

from saexplain.errors import ConfigError
from saexplain.hub import check_hub_access, hub_load_error

pytest.importorskip("huggingface_hub")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_offline_and_not_cached_fails_at_once(empty_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE") as raised:
        check_hub_access("model", "org/model")
    assert "'org/model'" in str(raised.value) and "\n" not in str(raised.value)


def test_an_unreachable_hub_fails_at_once(empty_cache, monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    with pytest.raises(ConfigError, match="cannot be reached"):
        check_hub_access("model", "org/model")
    assert time.monotonic() - start < 5


def test_a_cached_model_or_a_local_folder_passes(empty_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (empty_cache / "models--org--model" / "snapshots" / "abc").mkdir(parents=True)
    check_hub_access("model", "org/model")
    check_hub_access("model", str(tmp_path))


def test_a_loader_error_becomes_one_line():
    error = OSError("We couldn't connect to 'https://huggingface.co'.\nCheck your connection.")
    message = str(hub_load_error("model", "gpt2", error))
    assert "\n" not in message and "'gpt2'" in message and "couldn't connect" in message
