"""Small file-system helpers: atomic writes, checksums, array conversion, stable names, seeds."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from saexplain.errors import StoreCorruptError
from saexplain.files import (
    atomic_write_bytes,
    atomic_write_text,
    publish_dir,
)
from saexplain.methods.seeds import derive_seed  # re-exported: the one seed function

__all__ = [
    "atomic_save_npy",
    "atomic_write_bytes",
    "atomic_write_text",
    "bytes_checksum",
    "derive_seed",
    "file_checksum",
    "publish_dir",
    "safe_key",
    "save_npy",
    "to_numpy",
    "verify_file",
]

# crc32 detects every flipped bit and burst of damage up to 32 bits, and hashes at several GB/s
# (blake2b: about 1 GB/s); it guards against damage on disk, not against forgery
CHECKSUM_PREFIX = "crc32:"
_CHUNK = 8 * 1024 * 1024
# files verified by this process, keyed by their identity and size at the time: a store opened
# many times (records, scoring, benchmarks) hashes each file once
_verified: set[tuple[str, int, int, int, str]] = set()


def _format(crc: int) -> str:
    return f"{CHECKSUM_PREFIX}{crc:08x}"


def bytes_checksum(data: bytes) -> str:
    """The checksum recorded in the manifest for a file holding `data`."""
    return _format(zlib.crc32(data))


def file_checksum(path: Path) -> str:
    """The checksum of the file at `path`, read in chunks."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return _format(crc)


class _ChecksumWriter:
    """A file wrapper that checksums the bytes written through it (for np.save)."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.crc = 0

    def write(self, data: bytes) -> int:
        self.crc = zlib.crc32(data, self.crc)
        written: int = self.file.write(data)
        return written


def verify_file(path: Path, expected: str | None, fix: str) -> None:
    """Raise `StoreCorruptError` (one line: the file and `fix`) if `path` is missing or does not
    match the recorded checksum. `expected=None` (a file written before checksums) checks only
    that the file exists. Each file is hashed once per process while it stays unchanged."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise StoreCorruptError(f"store file {path} is missing; {fix}") from None
    if expected is None:
        return
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, expected)
    if key in _verified:
        return
    actual = file_checksum(path)
    if actual != expected:
        raise StoreCorruptError(
            f"store file {path} is corrupt (checksum {actual}, recorded {expected}); {fix}"
        )
    _verified.add(key)


def to_numpy(x: Any) -> npt.NDArray[Any]:
    """A numpy view of an array or a tensor-like value (torch, jax), without importing torch."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach()
    if hasattr(x, "cpu"):
        x = x.cpu()
    if hasattr(x, "numpy"):
        with contextlib.suppress(TypeError, RuntimeError):  # e.g. bfloat16 has no numpy dtype
            return np.asarray(x.numpy())
        if hasattr(x, "float"):
            return np.asarray(x.float().numpy())
    return np.asarray(x)


def save_npy(path: Path, array: npt.NDArray[Any], *, fsync: bool = True) -> str:
    """np.save to `path` (inside a directory that is itself published atomically); returns the
    checksum of the bytes written, computed as they are written."""
    with open(path, "wb") as f:
        writer = _ChecksumWriter(f)
        np.save(writer, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    return _format(writer.crc)


def atomic_save_npy(path: Path, array: npt.NDArray[Any], *, fsync: bool = True) -> str:
    """`save_npy` through a temporary file renamed into place; returns the checksum."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    checksum = save_npy(tmp, array, fsync=fsync)
    os.replace(tmp, path)
    return checksum


def safe_key(name: str) -> str:
    """A file-name-safe, collision-free key for an arbitrary id (e.g. a coder id with slashes)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "coder"
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=4).hexdigest()
    return f"{slug}-{digest}"
