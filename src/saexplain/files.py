"""Crash-safe file writes, for the core and for plugins: a reader sees the old file (or folder)
or the new one, never a torn one. The run directory, the activation store, the cached demo SAE and
the dequantised local model all publish through these."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / file system
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, *, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def publish_dir(tmp: Path, final: Path, *, fsync: bool = True) -> None:
    """Atomically move a fully written directory `tmp` to `final` (replacing a stale one)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if fsync:
        fsync_dir(final.parent)
