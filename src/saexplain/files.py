"""Crash-safe file writes, for the core and for plugins: a reader sees the old file (or folder)
or the new one, never a torn one. The run directory, the activation store, the cached demo SAE and
the dequantised local model all publish through these. A full disk or a read-only folder is a
one-line `StorageError` naming the file and the fix (`writing`), and a failed write leaves no
temporary file behind.

`cache_dir(kind)` is the one place that says where saexplain caches things on this machine.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from saexplain.errors import StorageError

log = logging.getLogger(__name__)

# errno -> (what went wrong, how to fix it), for the write failures a user can fix
_FULL = (
    "the disk is full",
    "free space on it (or set output_dir / store_dir to another disk), then rerun the same "
    "command to resume",
)
_READ_ONLY = (
    "the folder is not writable",
    "make it writable (or set output_dir / store_dir to a writable folder), then rerun the "
    "same command",
)
_FIXABLE = {
    errno.ENOSPC: _FULL,
    errno.EDQUOT: _FULL,
    errno.EROFS: _READ_ONLY,
    errno.EACCES: _READ_ONLY,
    errno.EPERM: _READ_ONLY,
}


def storage_error(path: Path | str, error: OSError) -> StorageError | None:
    """`error`, met while writing `path`, as a one-line `StorageError` naming the file and the
    fix; None when it is not a full disk or a read-only folder (pass it on as it is)."""
    if isinstance(error, StorageError):
        return error
    if error.errno not in _FIXABLE:
        return None
    problem, fix = _FIXABLE[error.errno]
    where = error.filename or path
    detail = error.strerror or os.strerror(error.errno)
    out = StorageError(f"cannot write {where}: {problem} ({detail}); {fix}")
    out.errno = error.errno  # only errno: a strerror or filename would replace the message
    return out


@contextlib.contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Turn a full disk or a read-only folder met while writing `path` into a `StorageError`
    (see `storage_error`); other errors pass through unchanged."""
    try:
        yield
    except OSError as error:
        typed = storage_error(path, error)
        if typed is None or typed is error:
            raise
        raise typed from error


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
    with writing(path):
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            # a full disk, a read-only folder, Ctrl-C: no half-written `.<name>.tmp-<pid>` stays
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, *, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def save(path: str | Path, data: bytes | str) -> Path:
    """Write a report or export file atomically (UTF-8 for text), creating its folder; returns
    the path. Files get the umask's permissions, so a report folder can be served as it is."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, data.encode("utf-8") if isinstance(data, str) else data)
    return target


def publish_dir(tmp: Path, final: Path, *, fsync: bool = True) -> None:
    """Atomically move a fully written directory `tmp` to `final` (replacing a stale one)."""
    with writing(final):
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    if fsync:
        fsync_dir(final.parent)


# --- caches ---------------------------------------------------------------------------------------

CACHE_ENV = "SAEXPLAIN_CACHE_DIR"
"""The one variable that moves every saexplain cache: `$SAEXPLAIN_CACHE_DIR/<kind>`."""
CACHE_KINDS = {
    "responses": "LLM answers (the provider middleware's response cache)",
    "models": "local models dequantised from GGUF (the local provider, the demo's SmolLM2)",
    "demo": "the demo's SAE (trained, or converted from the shipped one)",
}
# Older names users may still have set: (variable, the one kind it moved, or None for a root).
# SAEXPLAIN_MODEL_CACHE named the models folder itself; SAEXPLAIN_CACHE named the demo's root.
_DEPRECATED_CACHE_ENV = (("SAEXPLAIN_MODEL_CACHE", "models"), ("SAEXPLAIN_CACHE", None))
_warned: set[str] = set()


def _deprecated(name: str, instead: str) -> None:
    if name not in _warned:  # once per process: caches are looked up often
        _warned.add(name)
        log.warning("DeprecationWarning: %s is deprecated; %s", name, instead)


def cache_dir(kind: str) -> Path:
    """The folder where saexplain caches `kind` (a key of `CACHE_KINDS`):
    `$SAEXPLAIN_CACHE_DIR/kind`, else `$XDG_CACHE_HOME/saexplain/kind`, else
    `~/.cache/saexplain/kind`. Not created here.

    The older variables still work, with a deprecation line in the log: `SAEXPLAIN_MODEL_CACHE`
    (the models folder itself) and `SAEXPLAIN_CACHE` (a root, like `SAEXPLAIN_CACHE_DIR`). When
    `SAEXPLAIN_CACHE_DIR` is set it wins, and a set old name is ignored (with the same line).
    """
    if kind not in CACHE_KINDS:
        raise ValueError(f"unknown cache kind {kind!r}; expected one of {sorted(CACHE_KINDS)}")
    root = os.environ.get(CACHE_ENV)
    for name, only in _DEPRECATED_CACHE_ENV:
        old = os.environ.get(name)
        if not old or (only is not None and only != kind):
            continue
        if root:
            _deprecated(name, f"it is ignored because {CACHE_ENV} is set")
            continue
        target = Path(old).expanduser()
        _deprecated(name, f"set {CACHE_ENV} instead (each cache then lives in <that dir>/<kind>)")
        return target if only else target / kind
    if root:
        return Path(root).expanduser() / kind
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "saexplain" / kind
