"""Float arrays shared by the selfexplain modules, converted without importing torch."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from saexplain.methods import to_numpy

Floats = npt.NDArray[np.float64]


def as_floats(x: Any) -> Floats:
    """A float64 numpy copy of a numpy array or tensor-like value (no torch import)."""
    return to_numpy(x, np.float64)
