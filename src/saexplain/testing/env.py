"""Keeping tests, benchmarks and the demo off the network."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",  # without it, every hub-name load retries for a minute before failing
    "TRANSFORMERS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # litellm would fetch its price list at import
    "WANDB_MODE": "disabled",
}


def set_offline_env() -> None:
    """Keep tests, benchmarks and the demo off the network; call before heavy imports."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def isolated_cache(folder: Path, shared: Iterable[str] = ("models", "demo")) -> Path:
    """`folder` made into a cache root for one test (set `SAEXPLAIN_CACHE_DIR` to it): its own
    response cache, so no answer is replayed from another test or from the user, while the
    `shared` kinds, deterministic builds keyed by their inputs (the dequantised local model, the
    demo SAE), link to this machine's cache, so no test rebuilds them. Call it before setting the
    variable: the links point to the cache the environment names now."""
    from saexplain.files import cache_dir

    folder.mkdir(parents=True, exist_ok=True)
    for kind in shared:
        real = cache_dir(kind)
        real.mkdir(parents=True, exist_ok=True)
        link = folder / kind
        if not link.exists():
            link.symlink_to(real, target_is_directory=True)
    return folder
