"""SAE-to-SAE matching benchmark: exact Hungarian vs blockwise top-k + sparse matching.

Run from the repository root: `python benchmarks/similarity.py` (about a minute on 2 CPU cores;
needs scipy, `pip install 'saexplain[analysis]'`).

Two coders of `--d-sae` latents over `--d-model` (default 16384 x 768, an SAE and a permuted
noisy copy of it, as two seeds of one SAE are) are matched both ways; printed: wall time, peak
traced memory (numpy allocations, tracemalloc), and whether each recovers the planted
permutation. Then the width the blockwise matcher reaches: it doubles d_sae (same d_model)
until a step exceeds `--max-seconds` or its estimated memory exceeds `--ram-gib`, and reports
the largest width done. The exact matcher's limit is its (d_sae, d_sae) float32 cosine matrix
plus scipy's float64 copy: 12 * d_sae**2 bytes.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from saexplain.analysis.similarity import match_blockwise, match_exact


def pair(d_sae: int, d_model: int, noise: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d_sae, d_model), dtype=np.float32)
    perm = rng.permutation(d_sae)
    b = np.empty_like(a)
    b[perm] = a + noise * rng.standard_normal((d_sae, d_model), dtype=np.float32)
    return a, b, perm


def timed(fn, *args, **kw):  # type: ignore[no-untyped-def]
    tracemalloc.start()
    t = time.perf_counter()
    out = fn(*args, **kw)
    seconds = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, seconds, peak / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-sae", type=int, default=16384)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--noise", type=float, default=0.5)
    ap.add_argument("-k", type=int, default=8)
    ap.add_argument("--skip-exact", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="scaling: stop after this")
    ap.add_argument("--ram-gib", type=float, default=24.0, help="scaling: the machine's RAM")
    args = ap.parse_args()

    a, b, perm = pair(args.d_sae, args.d_model, args.noise, 0)
    exact_s = exact_gib = float("nan")
    exact_ok = None
    if not args.skip_exact:
        m, exact_s, exact_gib = timed(match_exact, a, b)
        exact_ok = bool((m.b == perm).all())
        print(f"exact:     {exact_s:7.1f} s  peak {exact_gib:6.2f} GiB  recovered={exact_ok}")
    m, block_s, block_gib = timed(match_blockwise, a, b, k=args.k)
    block_ok = bool((m.b == perm).all())
    print(f"blockwise: {block_s:7.1f} s  peak {block_gib:6.2f} GiB  recovered={block_ok}")

    # scaling of the blockwise matcher: memory ~ 2 decoders + d_sae * k * 16 B + one block
    width, largest, largest_s = args.d_sae, args.d_sae, block_s
    while True:
        width *= 2
        need_gib = (2 * width * args.d_model * 4 + width * args.k * 24) / 2**30 + 1.0
        if need_gib > args.ram_gib or largest_s * 2.2 > args.max_seconds:
            break
        a, b, perm = pair(width, args.d_model, args.noise, 1)
        m, seconds, _ = timed(match_blockwise, a, b, k=args.k)
        print(f"blockwise d_sae={width}: {seconds:.1f} s recovered={bool((m.b == perm).all())}")
        largest, largest_s = width, seconds
        del a, b
    exact_limit = int(np.sqrt(args.ram_gib * 2**30 / 12))
    print(
        f"RESULT similarity d_sae={args.d_sae} d_model={args.d_model} exact_s={exact_s:.1f} "
        f"exact_peak_gib={exact_gib:.2f} blockwise_s={block_s:.1f} "
        f"blockwise_peak_gib={block_gib:.2f} recovered_exact={exact_ok} "
        f"recovered_blockwise={block_ok} blockwise_largest_done={largest} "
        f"({largest_s:.0f} s) exact_ram_limit~{exact_limit}"
    )


if __name__ == "__main__":
    main()
