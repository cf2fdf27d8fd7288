"""The dequantized-model cache is keyed by the GGUF's content, not its path: every checkout or CI
clone holding the same file shares one copy (~540 MB for SmolLM2), and the digest is computed once
per (path, size, mtime)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from saexplain_litellm.local import (
    DIGEST_INDEX,
    dequantized_dir,
    dequantized_target,
    gguf_digest,
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SAEXPLAIN_CACHE_DIR", str(tmp_path))
    root = tmp_path / "models"
    return root


def gguf_file(folder: Path, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.Q4.gguf"
    path.write_bytes(content)
    return path


def test_two_clones_of_one_file_share_a_folder_and_other_bytes_do_not(cache, tmp_path):
    first = gguf_file(tmp_path / "checkout-a" / ".venv", b"GGUF" + bytes(range(256)) * 40)
    second = gguf_file(tmp_path / "ci-clone" / ".venv", first.read_bytes())
    other = gguf_file(tmp_path / "other", first.read_bytes()[:-1] + b"\x00")
    assert dequantized_target(first) == dequantized_target(second)
    assert dequantized_target(other) != dequantized_target(first)
    assert dequantized_target(first).parent == cache
    # a folder published from the first clone is reused for the second: nothing is converted
    done = dequantized_target(first)
    done.mkdir(parents=True)
    (done / "model.safetensors").write_bytes(b"weights")
    (done / "config.json").write_text("{}")
    assert dequantized_dir(second) == done


def test_the_digest_is_memoised_per_path_size_and_mtime(cache, tmp_path):
    path = gguf_file(tmp_path / "a", b"GGUF first")
    real = gguf_digest(path)
    index_path = cache / DIGEST_INDEX
    index = json.loads(index_path.read_text())
    assert list(index.values()) == [real] and str(path.resolve()) in next(iter(index))
    # the memo is what is read back (the file is not hashed again) ...
    index = {k: "memoised" for k in index}
    index_path.write_text(json.dumps(index))
    assert gguf_digest(path) == "memoised"
    # ... until the file changes (new size and mtime): then it is hashed again
    path.write_bytes(b"GGUF second, longer")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert gguf_digest(path) not in ("memoised", real)
    assert len(json.loads(index_path.read_text())) == 2


def test_an_unreadable_index_is_rebuilt(cache, tmp_path):
    path = gguf_file(tmp_path / "a", b"GGUF bytes")
    cache.mkdir(parents=True)
    (cache / DIGEST_INDEX).write_text("not json{")
    digest = gguf_digest(path)
    assert json.loads((cache / DIGEST_INDEX).read_text()) == {
        f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}": digest
    }
