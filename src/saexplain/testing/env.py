"""Keeping tests, benchmarks and the demo off the network."""

from __future__ import annotations

import os

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
