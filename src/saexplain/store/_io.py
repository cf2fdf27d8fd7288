"""Small file-system helpers: atomic writes, array conversion, stable names and seeds."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

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
    "derive_seed",
    "publish_dir",
    "safe_key",
    "save_npy",
    "to_numpy",
]


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


def save_npy(path: Path, array: npt.NDArray[Any], *, fsync: bool = True) -> None:
    """np.save to `path` (inside a directory that is itself published atomically)."""
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def atomic_save_npy(path: Path, array: npt.NDArray[Any], *, fsync: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_npy(tmp, array, fsync=fsync)
    os.replace(tmp, path)


def safe_key(name: str) -> str:
    """A file-name-safe, collision-free key for an arbitrary id (e.g. a coder id with slashes)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "coder"
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=4).hexdigest()
    return f"{slug}-{digest}"
