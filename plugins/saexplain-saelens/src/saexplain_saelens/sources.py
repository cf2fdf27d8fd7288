"""Coder sources for run configs (`"saelens:<release>/<sae_id>"`, `"neurons:<hook>"`, `"demo:"`)
and the offline subject model (`local/smollm2`) the backends load by name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from saexplain.errors import ConfigError

SMOLLM2_NAMES = ("local/smollm2", "smollm2", "SmolLM2-135M-Instruct")


def _device(backend: Any) -> str:
    return str(getattr(backend, "device", "cpu"))


def saelens_coder(spec: Any, *, backend: Any = None, **settings: Any) -> Any:
    """A SAELens SAE object, a local SAE folder, or `<release>/<sae_id>` from the hub."""
    from saexplain_saelens.coders import SAELensCoder

    if not isinstance(spec, str):
        return SAELensCoder(spec, **settings)
    if Path(spec).exists():
        return SAELensCoder.from_disk(spec, device=_device(backend), **settings)
    release, sep, sae_id = spec.partition("/")
    if not (sep and release and sae_id):
        raise ConfigError(
            f"SAELens coder {spec!r}: give '<release>/<sae_id>' (e.g. "
            "'gpt2-small-res-jb/blocks.8.hook_resid_pre') or an existing local SAE folder"
        )
    return SAELensCoder.from_pretrained(release, sae_id, device=_device(backend), **settings)


def neurons_coder(spec: str, *, backend: Any = None, **settings: Any) -> Any:
    """The neurons of `blocks.L.mlp.hook_post` of the backend's model (optionally `k=` top-k)."""
    from saexplain_saelens.coders import Neurons

    match = re.fullmatch(r"blocks\.(\d+)\.mlp\.hook_post", spec.strip())
    if match is None:
        raise ConfigError(f"neurons coder {spec!r}: give 'blocks.<layer>.mlp.hook_post'")
    if backend is None or not hasattr(backend, "site"):
        raise ConfigError("the neurons coder needs a torch backend to read the MLP width from")
    width = int(backend.width(backend.site(spec.strip())))
    return Neurons(int(match.group(1)), width, **settings)


def demo_coder(spec: str, *, backend: Any = None, **settings: Any) -> Any:
    """The SAE the demo trains on SmolLM2 (trained once, then loaded from the cache)."""
    from saexplain_saelens.demo import demo_coder_for

    return demo_coder_for(backend, spec, **settings)


def load_smollm2() -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct and its tokenizer; shares the local LLM provider's dequantized copy
    when saexplain-litellm is installed (one conversion per machine, not two)."""
    import importlib

    try:  # optional: the saelens plugin does not depend on saexplain-litellm
        resolve_model = importlib.import_module("saexplain_litellm.local").resolve_model
    except ImportError:
        from saexplain_saelens.testing import smollm2

        return smollm2()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return model.eval(), tokenizer
