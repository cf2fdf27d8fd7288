"""Loading a model or an SAE by name from the Hugging Face hub, for plugins: fail fast, in one line.

Without hub access, the hub libraries retry for about a minute and then raise an error whose
traceback runs to a hundred lines. A plugin that loads by name calls `check_hub_access` first: a
name that is neither a local folder nor in the local cache fails at once when the hub cannot be
reached (offline mode set, or no connection within a few seconds), with one line naming what
could not be loaded and what to do. Whatever the loader raises after that, `hub_load_error`
turns into one line.

The core does not depend on huggingface_hub: it is imported only when a plugin, which has it,
calls these functions.
"""

from __future__ import annotations

import importlib
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from saexplain.errors import ConfigError

__all__ = ["check_hub_access", "hub_load_error", "hub_offline", "in_hub_cache"]

_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
PROBE_TIMEOUT_S = 3.0  # one connection attempt, instead of the hub libraries' minute of retries


def hub_offline() -> bool:
    """Whether the Hugging Face libraries are told to stay offline (`HF_HUB_OFFLINE=1`)."""
    return any(
        os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
        for name in _OFFLINE_VARIABLES
    )


def _cache_dir() -> Path:
    constants = importlib.import_module("huggingface_hub.constants")
    return Path(constants.HF_HUB_CACHE)


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def in_hub_cache(repo_id: str) -> bool:
    """Whether the local hub cache holds (some of) the model repository `repo_id`."""
    folder = _cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return folder.is_dir() and any(folder.iterdir())


def _hub_reachable() -> bool:
    parts = urlsplit(_endpoint())
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def check_hub_access(what: str, repo_id: str) -> None:
    """Before loading `repo_id` (a `what`: "model", "SAE release ...") from the hub: return when
    it is a local folder, in the local cache, or the hub can be reached; else raise a one-line
    `ConfigError` at once, saying why and what to do."""
    if Path(repo_id).is_dir() or in_hub_cache(repo_id):
        return
    if hub_offline():
        why = "HF_HUB_OFFLINE is set"
    elif not _hub_reachable():
        why = f"the hub ({_endpoint()}) cannot be reached"
    else:
        return
    raise ConfigError(
        f"cannot load {what} {repo_id!r}: it is not in the local Hugging Face cache "
        f"({_cache_dir()}) and {why}; download it once with hub access, or give a local folder"
    )


def hub_load_error(what: str, name: str, error: BaseException) -> ConfigError:
    """One line for `error`, raised while loading `what` `name` (a model, an SAE) by name: the
    first line of the loader's message, and what to check."""
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    reason = f"{type(error).__name__}: {first}"[:300]
    return ConfigError(
        f"cannot load {what} {name!r} ({reason}); check the name, that it exists on the "
        "Hugging Face hub or as a local folder, and the hub access (HF_HUB_OFFLINE, HF_TOKEN "
        "for gated models)"
    )
