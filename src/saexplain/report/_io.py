"""Atomic file writes: a reader (or a crash) never sees a half-written report.

Thin wrappers over the store's writer (one implementation), creating the folder and returning
the path; files get the usual permissions (the umask's), so a report can be served as it is.
"""

from __future__ import annotations

from pathlib import Path

from saexplain.store import _io


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _io.atomic_write_bytes(target, data)
    return target


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
