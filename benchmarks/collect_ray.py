"""Collection in-process against collection sharded over Ray workers, on the toy model.

The toy world of `saexplain.testing.toy` (loaded by name, as the workers load it) over a larger
synthetic corpus, the whole corpus collected once in-process and once on a local Ray cluster
(started before timing, as a running cluster is; the collectors' start-up is inside the time).
`--batch-seconds` makes each forward pass of the fake model sleep, as a real model's takes time.

Figures (2-core machine shared with other jobs, load average ~7; 6,000 documents: 151,488 tokens
in 2,367 contexts of 64, batches of 16, 8 slices, 2 workers):

    --batch-seconds 0     in-process 0.24 s, Ray 1.39 s (5.7x: Ray's overhead, ~1.2 s)
    --batch-seconds 0.02  in-process 3.22 s, Ray 3.18 s (0.99x)
    --batch-seconds 0.05  in-process 7.67 s, Ray 5.34 s (0.70x)

    python benchmarks/collect_ray.py --docs 6000 --batch-seconds 0.05 --workers 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from saexplain.models import RunConfig
from saexplain.pipeline.resolve import prepare
from saexplain.pipeline.stages import collect_store
from saexplain.testing import fresh_plugin_manager, synthetic_corpus, toy


def config(out: Path, name: str, n_tokens: int, batch_seconds: float) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": "toy",
            "backend": "toyfake",
            "backend_settings": {"batch_seconds": batch_seconds},
            "coder": "toyplanted:all",
            "dataset": "benchmark corpus",
            "n_tokens": n_tokens,
            "context_length": 64,
            "batch_size": 16,
            "latents": {"indices": [1]},
            "explainers": ["toy"],
            "scorers": [],
            "explainer_model": {"provider": "toyllm", "model": "scripted"},
            "output_dir": str(out),
            "name": name,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=6000)
    parser.add_argument("--batch-seconds", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import ray
    from saexplain_ray import make_ray_executor

    texts = synthetic_corpus(args.docs, seed=0, vocab=toy.VOCAB, min_words=8, max_words=40)
    out = Path(tempfile.mkdtemp(prefix="saexplain-collect-"))
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    try:
        with fresh_plugin_manager() as pm:
            pm.register_plugin(toy, name="toy")
            pm.register_plugin(toy.Stack(), name="toystack")
            # the in-process run collects the whole corpus; the Ray run the same tokens
            p = prepare(config(out, "local", 10**9, args.batch_seconds), dataset=texts, manager=pm)
            t0 = time.perf_counter()
            local = collect_store(p, progress=False)
            t_local = time.perf_counter() - t0
            cfg = config(out, "ray", local.n_tokens, args.batch_seconds)
            p = prepare(cfg, dataset=texts, manager=pm)
            executor: Any = make_ray_executor(address="auto", workers=args.workers)
            t0 = time.perf_counter()
            collect_store(p, progress=False, executor=executor)
            t_ray = time.perf_counter() - t0
    finally:
        ray.shutdown()
    done = executor.last_collect
    print(
        f"{local.n_tokens} tokens ({local.n_contexts} contexts of 64), "
        f"{args.batch_seconds * 1000:g} ms per batch: in-process {t_local:.2f} s, "
        f"Ray with {args.workers} workers {t_ray:.2f} s ({done['slices']} slices of "
        f"<= {done['slice_contexts']} contexts), ratio {t_ray / t_local:.2f}"
    )


if __name__ == "__main__":
    main()
