"""saexplain: explain and score the latents of sparse autoencoders, automatically.

Importing this package does no work: no plugin is loaded and no heavy library is imported until
a registry or a method is first used.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from saexplain.hookspecs import hookimpl

try:
    __version__ = version("saexplain")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from saexplain import errors, models
    from saexplain._async import run_sync
    from saexplain.api import aexplain, ascore, explain, score
    from saexplain.models import RunConfig
    from saexplain.pipeline import arun, run
    from saexplain.plugins import (
        PluginManager,
        get_plugin_manager,
        register_plugin,
        unregister_plugin,
    )

_LAZY = {
    "explain": ("saexplain.api", "explain"),
    "aexplain": ("saexplain.api", "aexplain"),
    "score": ("saexplain.api", "score"),
    "ascore": ("saexplain.api", "ascore"),
    "run": ("saexplain.pipeline", "run"),
    "arun": ("saexplain.pipeline", "arun"),
    "RunConfig": ("saexplain.models", "RunConfig"),
    "errors": ("saexplain.errors", None),
    "models": ("saexplain.models", None),
    "run_sync": ("saexplain._async", "run_sync"),
    "PluginManager": ("saexplain.plugins", "PluginManager"),
    "get_plugin_manager": ("saexplain.plugins", "get_plugin_manager"),
    "register_plugin": ("saexplain.plugins", "register_plugin"),
    "unregister_plugin": ("saexplain.plugins", "unregister_plugin"),
}

__all__ = [
    "PluginManager",
    "RunConfig",
    "__version__",
    "aexplain",
    "arun",
    "ascore",
    "errors",
    "explain",
    "get_plugin_manager",
    "hookimpl",
    "models",
    "register_plugin",
    "run",
    "run_sync",
    "score",
    "unregister_plugin",
]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'saexplain' has no attribute {name!r}") from None
    module = import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
