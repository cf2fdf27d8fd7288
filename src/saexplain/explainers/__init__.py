"""Built-in explainers. Each method lives in its own module here and is registered below,
through the same plugin manager and hooks as third-party plugins."""

from __future__ import annotations

import importlib

from saexplain.methods import Register, hookimpl

# Modules that each define `register(register)`, imported only when the registry is first used.
METHOD_MODULES: tuple[str, ...] = (
    "saexplain.explainers.maxact",
    "saexplain.explainers.vocabproj",
    "saexplain.explainers.tokenchange",
    "saexplain.explainers.intervention",
    "saexplain.explainers.ensemble",
    "saexplain.explainers.selfexplain",
    "saexplain.explainers.given",
    "saexplain.explainers.toptokens",
)


@hookimpl
def register_explainers(register: Register) -> None:
    for module_name in METHOD_MODULES:
        importlib.import_module(module_name).register(register)
