"""Built-in scorers. Each method lives in its own module here and is registered below,
through the same plugin manager and hooks as third-party plugins."""

from __future__ import annotations

import importlib

from saexplain.methods import Register, hookimpl

# Modules that each define `register(register)`, imported only when the registry is first used.
METHOD_MODULES: tuple[str, ...] = (
    "saexplain.scorers.detection",
    "saexplain.scorers.detection_neighbours",
    "saexplain.scorers.fuzzing",
    "saexplain.scorers.generation",
    "saexplain.scorers.input_eval",
    "saexplain.scorers.intervention",
    "saexplain.scorers.output_eval",
    "saexplain.scorers.simulation",
    "saexplain.scorers.surprisal",
)


@hookimpl
def register_scorers(register: Register) -> None:
    for module_name in METHOD_MODULES:
        importlib.import_module(module_name).register(register)
