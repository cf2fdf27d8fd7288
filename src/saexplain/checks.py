"""Validators for method settings: a bad value raises a ConfigError naming the setting, when the
method is built, before any work. Built-in explainers and scorers use them; plugins may too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeVar, overload

import numpy as np

from saexplain.errors import ConfigError

T = TypeVar("T")


@overload
def check_int(
    name: str, value: object, *, low: int, high: int | None = ..., optional: Literal[False] = ...
) -> int: ...


@overload
def check_int(
    name: str, value: object, *, low: int, high: int | None = ..., optional: bool
) -> int | None: ...


def check_int(
    name: str, value: object, *, low: int, high: int | None = None, optional: bool = False
) -> int | None:
    """`value` as an int in [low, high]; None passes when `optional`."""
    if value is None and optional:
        return None
    kind = "None or an integer" if optional else "an integer"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"setting {name!r} must be {kind}, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"setting {name!r} must be {kind} {bound}, got {value}")
    return value


def check_float(
    name: str, value: object, *, low: float | None = None, high: float | None = None
) -> float:
    """`value` as a finite float in [low, high] (either bound optional)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"setting {name!r} must be a number, got {value!r}")
    x = float(value)
    if not np.isfinite(x) or (low is not None and x < low) or (high is not None and x > high):
        raise ConfigError(f"setting {name!r} must be a finite number in [{low}, {high}], got {x}")
    return x


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"setting {name!r} must be true or false, got {value!r}")
    return value


def check_choice(name: str, value: object, choices: Sequence[T]) -> T:
    for c in choices:
        if value == c:
            return c
    raise ConfigError(f"setting {name!r} must be one of {list(choices)}, got {value!r}")
