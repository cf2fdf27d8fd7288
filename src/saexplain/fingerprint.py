"""Content fingerprints of weights: what a run's identity records about the live objects it used.

A model or SAE passed as an object is identified by its weights, not only by a name: editing
the weights in place, or passing another SAE with the same name, makes another fingerprint, so
a run never reuses activations or explanations computed from other weights.

A fingerprint is cheap: a digest of each array's name, shape and dtype and of a strided sample
of at most `SAMPLE` of its elements (every region larger than 1/`SAMPLE` of an array is
sampled). Backends and coders that can compute one implement `fingerprint()`
(`saexplain.protocols.Fingerprinted`), usually as `fingerprint_arrays(<their arrays>)`: numpy
arrays, or torch tensors (a module's `state_dict()`), sampled on their device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["SAMPLE", "WeightsDigest", "fingerprint_arrays", "sample_step"]

SAMPLE = 65_536  # elements sampled per array at most


def sample_step(numel: int) -> int:
    """The stride that samples at most `SAMPLE` elements of an array of `numel` elements."""
    return max(1, -(-numel // SAMPLE))


class WeightsDigest:
    """Accumulates named arrays into one short hex fingerprint (`hexdigest`)."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=8)

    def add(self, name: str, shape: Iterable[int], dtype: str, sample: bytes) -> None:
        """One array: its name, shape, dtype and the bytes of its strided sample."""
        head = f"{name}|{tuple(int(n) for n in shape)}|{dtype}|{len(sample)}\n"
        self._hash.update(head.encode())
        self._hash.update(sample)

    def add_array(self, name: str, array: Any) -> None:
        """One array, sampled with `sample_step`: a numpy array (or anything `np.asarray`
        reads) or a torch tensor, sampled where it lives (only the sample is copied)."""
        if hasattr(array, "detach"):  # a torch tensor (duck-typed: the core imports no torch)
            flat = array.detach().reshape(-1)
            sample = flat[:: sample_step(int(flat.numel()))].cpu()
            try:
                values = sample.numpy()
            except TypeError:  # bfloat16 has no numpy dtype; float32 holds it exactly
                values = sample.float().numpy()
            self.add(name, array.shape, str(array.dtype), np.ascontiguousarray(values).tobytes())
            return
        a = np.asarray(array)
        flat_a = a.reshape(-1)
        sample_a = np.ascontiguousarray(flat_a[:: sample_step(flat_a.size)])
        self.add(name, a.shape, str(a.dtype), sample_a.tobytes())

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def fingerprint_arrays(arrays: Mapping[str, Any]) -> str:
    """The fingerprint of named arrays (numpy arrays or torch tensors), in name order."""
    digest = WeightsDigest()
    for name in sorted(arrays):
        digest.add_array(name, arrays[name])
    return digest.hexdigest()
