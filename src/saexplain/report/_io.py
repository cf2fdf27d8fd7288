"""Atomic file writes for reports: a reader (or a crash) never sees a half-written report.

Thin wrappers over `saexplain.files` (the one implementation) that create the folder and return
the path; files get the usual permissions (the umask's), so a report can be served as it is.
"""

from __future__ import annotations

from pathlib import Path

from saexplain import files


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically, creating its folder; returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write_bytes(target, data)
    return target


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically, creating its folder; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))
