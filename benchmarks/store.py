"""Activation store benchmark: storage overhead, memory flatness, bytes on disk, record building.

Run from the repository root: `python benchmarks/store.py` (a few minutes on 2 CPU cores).

- overhead: wall time of `collect` (tokenizing, running the backend, sorting, writing shards)
  plus the statistics pass, over the time the backend's `latent_acts` took inside that same
  call (best of `--repeats`). Measured batch by batch in one run, it is robust to other load on
  a shared machine. Printed beside it: the same wall time over a bare `latent_acts` loop on the
  same contexts and batches run just before (median of the pairs), and the CPU-time ratio.
  Target < 1.1.
- mem_ratio: peak RSS of a collection child process on `--large-factor` times more tokens over
  the peak RSS on the base size. Target: flat (about 1.0).
- bytes_per_nnz: bytes on disk (everything: tokens, activations, offsets, stats, manifest) per
  stored nonzero activation.
- record_ms: milliseconds per `LatentRecord` (default sampling: 40 explanation + 50 scoring
  examples + 50 random negatives) over 1,000 alive latents.
- multi_coder: `--coders` coders (one at each residual hook of the model, `--multi-d-sae`
  latents each) collected in one pass per batch, against one collection per coder, in the same
  run, interleaved, best of `--repeats`: the k separate passes' total wall time over the one
  pass's. One pass runs the model once (to the deepest hook) instead of k times, but still
  encodes and stores every coder, so the ratio is below k. `--multi-only` runs just this case.

The subject model is saexplain.testing.FakeBackend (numpy, d_model 256, 2 layers), the coder a
random ReLU SAE with 8192 latents (expansion 32) whose firing rates are spread log-uniformly
between 2e-4 and 0.1 (mean L0 about 130). A numpy toy model is far cheaper per token than a real
transformer, so the storage share of the time is larger here than in real use; for a harsher
case still, run `--d-model 64 --d-sae 2048` (L0 about 33 on a model 16x cheaper per token).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from saexplain.protocols import TokenBatch
from saexplain.sampling import RecordBuilder, RecordConfig
from saexplain.store import ActivationStore, ContextStream, collect
from saexplain.store.stats import compute_all_stats
from saexplain.testing import FakeBackend, FakeCoder

HOOK = "blocks.1.hook_resid_pre"


class TimedBackend:
    """The backend, with the wall time spent inside `latent_acts` added up."""

    def __init__(self, inner):
        self._inner = inner
        self.seconds = 0.0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def latent_acts(self, tokens, coders, *, latents=None):
        t = time.perf_counter()
        try:
            return self._inner.latent_acts(tokens, coders, latents=latents)
        finally:
            self.seconds += time.perf_counter() - t


def documents(n_tokens: int, seed: int = 0):
    """A deterministic stream of Zipf-distributed pseudo-text (about n_tokens words)."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(3000)]
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()
    made = 0
    while made < n_tokens:
        n = int(rng.integers(20, 400))
        made += n
        yield " ".join(words[i] for i in rng.choice(len(words), size=n, p=p))


def setup(args):
    backend = FakeBackend(d_model=args.d_model, n_layers=2, vocab_size=4096, seed=0)
    coder = FakeCoder.random(args.d_model, args.d_sae, hook=HOOK, seed=0)
    # calibrate thresholds so latent firing rates spread log-uniformly over [2e-4, 0.1]
    calib = ContextStream(backend, documents(20_000, seed=123), args.ctx)
    ids = np.stack([c for _, c in zip(range(64), calib, strict=False)])
    h = backend.residual(TokenBatch(ids, np.ones_like(ids, dtype=bool)), HOOK).reshape(
        -1, args.d_model
    )
    pre = (h - coder.b_dec) @ coder.W_enc
    rates = np.exp(np.random.default_rng(1).uniform(np.log(2e-4), np.log(0.1), args.d_sae))
    coder.b_enc[:] = -np.array([np.quantile(pre[:, j], 1 - r) for j, r in enumerate(rates)])
    return backend, coder


def calibrated_coder(backend, hook: str, d_model: int, d_sae: int, ctx: int, seed: int):
    """A random ReLU coder at `hook` with firing rates spread log-uniformly over [2e-4, 0.1]."""
    coder = FakeCoder.random(d_model, d_sae, hook=hook, seed=seed)
    coder.id = f"fake-sae/{hook}/s{seed}"
    calib = ContextStream(backend, documents(20_000, seed=123), ctx)
    ids = np.stack([c for _, c in zip(range(64), calib, strict=False)])
    h = backend.residual(TokenBatch(ids, np.ones_like(ids, dtype=bool)), hook)
    pre = (h.reshape(-1, d_model) - coder.b_dec) @ coder.W_enc
    rates = np.exp(np.random.default_rng(seed + 1).uniform(np.log(2e-4), np.log(0.1), d_sae))
    coder.b_enc[:] = -np.array([np.quantile(pre[:, j], 1 - r) for j, r in enumerate(rates)])
    return coder


def multi_coder(args, work: Path) -> dict:
    """k coders in one collection pass vs k collections of one coder each (see the docstring)."""
    backend = FakeBackend(d_model=args.d_model, n_layers=2, vocab_size=4096, seed=0)
    hooks = [f"blocks.{layer}.hook_resid_{site}" for layer in (0, 1) for site in ("pre", "post")]
    hooks = (hooks * args.coders)[: args.coders]
    coders = [
        calibrated_coder(backend, h, args.d_model, args.multi_d_sae, args.ctx, seed=i)
        for i, h in enumerate(hooks)
    ]

    def timed_collect(chosen, out: Path) -> tuple[float, int]:
        t = time.perf_counter()
        store = collect(
            backend,
            chosen,
            documents(args.n_tokens + 10_000),
            out,
            context_length=args.ctx,
            n_tokens=args.n_tokens,
            batch_size=args.batch,
            shard_contexts=args.shard,
            progress=False,
        )
        return time.perf_counter() - t, sum(store.nnz(c.id) for c in chosen)

    one_pass, separate = [], []
    for r in range(args.repeats):  # interleaved: other load on the machine slows both alike
        dt, nnz_one = timed_collect(coders, work / f"multi{r}")
        one_pass.append(dt)
        runs = [timed_collect([c], work / f"multi{r}-{i}") for i, c in enumerate(coders)]
        separate.append(sum(dt for dt, _ in runs))
        assert nnz_one == sum(n for _, n in runs), "one pass stored other activations"
        for i in range(len(coders)):
            shutil.rmtree(work / f"multi{r}-{i}", ignore_errors=True)
        shutil.rmtree(work / f"multi{r}", ignore_errors=True)
    return {
        "k": len(coders),
        "one_pass_s": min(one_pass),
        "separate_s": min(separate),
        "ratio": min(separate) / min(one_pass),
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    backend, coder = setup(args)
    t = time.perf_counter()
    store = collect(
        backend,
        coder,
        documents(args.n_tokens + 10_000),
        args.out,
        context_length=args.ctx,
        n_tokens=args.n_tokens,
        batch_size=args.batch,
        shard_contexts=args.shard,
        progress=False,
    )
    print(
        json.dumps(
            {
                "peak_rss_mb": peak_rss_mb(),
                "seconds": time.perf_counter() - t,
                "tokens": store.n_tokens,
                "nnz": store.nnz(),
            }
        )
    )


def run_child(args, n_tokens: int, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", "--n-tokens", str(n_tokens), "--out", str(out)]
    for flag in ("d_model", "d_sae", "ctx", "batch", "shard"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-tokens", type=int, default=32_768)
    ap.add_argument("--large-factor", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--d-sae", type=int, default=8192)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--shard", type=int, default=128)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--coders", type=int, default=4, help="coders in the multi-coder case")
    ap.add_argument("--multi-d-sae", type=int, default=2048)
    ap.add_argument("--multi-only", action="store_true", help="run only the multi-coder case")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--out", type=str, default="")
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    work = Path(tempfile.mkdtemp(prefix="saexplain-bench-store-"))
    try:
        multi = multi_coder(args, work)
        multi_result = (
            f"multi_coder_ratio={multi['ratio']:.2f} (k={multi['k']}: {multi['separate_s']:.2f} s "
            f"in {multi['k']} passes / {multi['one_pass_s']:.2f} s in one)"
        )
        if args.multi_only:
            print(f"RESULT store {multi_result}")
            return
        backend, coder = setup(args)
        n_ctx = args.n_tokens // args.ctx
        stream = ContextStream(backend, documents(args.n_tokens + 10_000), args.ctx)
        contexts = np.stack([c for _, c in zip(range(n_ctx), stream, strict=False)])
        mask = np.ones((args.batch, args.ctx), dtype=bool)

        def bare() -> tuple[float, float, int]:
            t, cpu, outs = time.perf_counter(), time.process_time(), []
            for lo in range(0, n_ctx, args.batch):
                ids = contexts[lo : lo + args.batch]
                batch = TokenBatch(ids, mask[: len(ids)])
                outs.append((ids, backend.latent_acts(batch, [coder])[coder.id]))
            wall, cpu = time.perf_counter() - t, time.process_time() - cpu
            # what the store must hold: everything but the BOS document separators (exclude_bos)
            nnz = sum(int((ids[a.row, a.pos] != backend.bos_token_id).sum()) for ids, a in outs)
            return wall, cpu, nnz

        timed = TimedBackend(backend)
        # interleaved repeats: other processes on a shared machine only add time
        bare_s, bare_cpu, collect_s, collect_cpu, stats_s, inner_s = [], [], [], [], [], []
        store = None
        for r in range(args.repeats):
            dt, dcpu, bare_nnz = bare()
            bare_s.append(dt)
            bare_cpu.append(dcpu)
            out = work / f"run{r}"
            t, cpu = time.perf_counter(), time.process_time()
            timed.seconds = 0.0
            collect(
                timed,
                coder,
                documents(args.n_tokens + 10_000),
                out,
                context_length=args.ctx,
                n_tokens=args.n_tokens,
                batch_size=args.batch,
                shard_contexts=args.shard,
                progress=False,
                compute_stats=False,
            )
            collect_s.append(time.perf_counter() - t)
            inner_s.append(timed.seconds)
            t = time.perf_counter()
            compute_all_stats(ActivationStore(out))
            stats_s.append(time.perf_counter() - t)
            collect_cpu.append(time.process_time() - cpu)
            store = ActivationStore(out)
        assert store is not None and store.nnz() == bare_nnz, "collection lost activations"
        b, c, s = min(bare_s), min(collect_s), min(stats_s)
        # primary: within each collect call, its wall time (plus the statistics pass) over the
        # time spent inside the backend's latent_acts, interleaved batch by batch, so a busy
        # machine slows numerator and denominator alike; best of the repeats
        overhead = min(
            (ci + si) / ii for ci, si, ii in zip(collect_s, stats_s, inner_s, strict=True)
        )
        # cross-checks: each collect against the bare loop run just before it (median), CPU time
        paired = float(
            np.median(
                [(ci + si) / bi for ci, si, bi in zip(collect_s, stats_s, bare_s, strict=True)]
            )
        )
        cpu_overhead = float(np.median([x / y for x, y in zip(collect_cpu, bare_cpu, strict=True)]))

        small = run_child(args, args.n_tokens, work / "mem-small")
        large = run_child(args, args.n_tokens * args.large_factor, work / "mem-large")
        mem_ratio = large["peak_rss_mb"] / small["peak_rss_mb"]

        large_store = ActivationStore(work / "mem-large")
        disk = large_store.disk_bytes()
        nnz = large_store.nnz()
        act_bytes = sum(
            p.stat().st_size
            for p in (work / "mem-large" / "shards").rglob("*.npy")
            if not p.name.startswith("tokens")
        )
        bytes_per_nnz = disk / nnz

        large_tokens = args.n_tokens * args.large_factor
        for _ in ContextStream(backend, documents(large_tokens + 10_000), args.ctx):
            pass  # the toy tokenizer numbers words on first sight: let it see what the child saw
        alive = np.flatnonzero(large_store.stats().count > 0)[: args.records]
        builder = RecordBuilder(large_store, backend, RecordConfig())
        t = time.perf_counter()
        fates = [builder.build(int(i)).status for i in alive]
        record_ms = (time.perf_counter() - t) * 1000 / len(alive)

        rows = [
            ("tokens per timing run", f"{n_ctx * args.ctx:,}"),
            (
                "nonzero activations (L0)",
                f"{bare_nnz:,} ({bare_nnz / (n_ctx * args.ctx):.1f}/token)",
            ),
            ("bare latent_acts", f"{b:.2f} s  {n_ctx * args.ctx / b:,.0f} tok/s"),
            ("collect (tokenize+run+write)", f"{c:.2f} s  {n_ctx * args.ctx / c:,.0f} tok/s"),
            ("statistics pass", f"{s:.2f} s"),
            ("latent_acts inside collect", " ".join(f"{x:.2f}" for x in inner_s) + " s"),
            ("overhead (same run, with stats)", f"{overhead:.3f}"),
            ("overhead vs bare loop (paired median)", f"{paired:.3f}"),
            ("CPU-time ratio (paired median)", f"{cpu_overhead:.3f}"),
            (
                "wall times (bare | collect)",
                " ".join(f"{x:.1f}" for x in bare_s)
                + " | "
                + " ".join(f"{x:.1f}" for x in collect_s),
            ),
            (f"peak RSS {small['tokens']:,} tokens", f"{small['peak_rss_mb']:.0f} MiB"),
            (f"peak RSS {large['tokens']:,} tokens", f"{large['peak_rss_mb']:.0f} MiB"),
            ("memory ratio (large/small)", f"{mem_ratio:.3f}"),
            ("disk bytes / nnz (all files)", f"{bytes_per_nnz:.2f}"),
            ("disk bytes / nnz (activations)", f"{act_bytes / nnz:.2f}"),
            (f"record build, {len(alive)} latents", f"{record_ms:.1f} ms/latent"),
            ("record fates", ", ".join(f"{k}={fates.count(k)}" for k in sorted(set(fates)))),
            (
                f"{multi['k']} coders: k passes / one pass",
                f"{multi['separate_s']:.2f} s / {multi['one_pass_s']:.2f} s = {multi['ratio']:.2f}",
            ),
        ]
        width = max(len(k) for k, _ in rows)
        print(
            f"saexplain store benchmark (FakeBackend d_model={args.d_model}, d_sae={args.d_sae}, "
            f"ctx={args.ctx}, batch={args.batch}, shard={args.shard} contexts)"
        )
        for k, v in rows:
            print(f"  {k:<{width}}  {v}")
        print(
            f"RESULT store overhead={overhead:.3f} mem_ratio={mem_ratio:.3f} "
            f"bytes_per_nnz={bytes_per_nnz:.2f} record_ms={record_ms:.1f} "
            f"{multi_result} target overhead<1.1 mem flat"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
