"""Explanation quality on planted-concept latents of SmolLM2: does each explainer name the concept,
and does each scorer tell the true explanation from a shuffled one?

Latents with known meanings: for each concept (month names, colour words, animal names, ...), a
probe at a middle layer of SmolLM2-135M-Instruct, the mean residual on the concept's tokens minus
the mean on every other token of a generated template corpus, thresholded half-way between the
two means. The probes are the encoder rows of a plain torch coder (`TinySAE`), so latent i fires
on concept i's words. Everything runs through the public API (`sx.explain`, `sx.score`):

- explainers: `maxact` on the local SmolLM2, `toptokens` (LLM-free, when installed), and a
  scripted ceiling that names the planted concept (it answers from the truth);
- scorers: detection in `list`, `first_token` and `prefill` answer modes, fuzzing (`prefill`),
  `embedding` (MiniLM, when the embeddings plugin loads), each on the local SmolLM2 and on a
  competent scripted scorer (the ceiling);
- the floor: the same explanations shuffled across latents (each latent scored with another
  latent's explanation), scored on the same records.

Measured per explainer x scorer x provider: recovery (the explanation names the concept: a word
of its list), the median true and shuffled score (balanced accuracy; AUROC for embedding), and the
fraction of latents where true > shuffled. A binary scorer's figure is its AUROC where it gave a
probability for every item (else its balanced accuracy): SmolLM2 answers "1" to almost
everything, so its balanced accuracy is 0.5 for every explanation while the ranking of its
P(1) may still carry signal. Results go to `benchmarks/results/quality.json` (the
record that the demo's scorer choice rests on: `scorers_at_chance` lists the combinations below
0.75); the demo itself marks a column at chance from its own shuffled controls.
`--demo-run DIR` adds `demo_true_gt_shuffled` (and one figure per explainer) to the RESULT line,
computed from a finished demo run (`saexplain demo` writes runs/demo) by `demo_true_gt_shuffled`.

    python benchmarks/quality.py [--quick] [--concepts N] [--layer L] [--keep] [--out PATH]
                                 [--demo-run runs/demo]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from saexplain.testing import set_offline_env

set_offline_env()  # before any heavy import
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402

import saexplain as sx  # noqa: E402
from saexplain.models import ChatRequest  # noqa: E402
from saexplain.testing import ScriptedProvider, competent_logprobs, competent_scorer  # noqa: E402

CONCEPTS: dict[str, list[str]] = {
    "month": ["January", "March", "April", "June", "July", "August", "October", "December"],
    "colour": ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"],
    "animal": ["dog", "cat", "horse", "cow", "sheep", "lion", "tiger", "rabbit"],
    "number": ["two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "country": ["France", "Germany", "Japan", "Brazil", "Canada", "India", "Spain", "Italy"],
    "fruit": ["apple", "banana", "cherry", "lemon", "grape", "peach", "mango", "pear"],
    "weekday": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Sunday"],
    "family": ["mother", "father", "sister", "brother", "uncle", "aunt", "cousin", "grandmother"],
}
NAMES = {c: [c, c + "s"] for c in CONCEPTS} | {
    "colour": ["colour", "colours", "color", "colors"],
    "weekday": ["weekday", "weekdays", "day of the week", "days of the week"],
    "family": ["family", "relative", "relatives", "kinship"],
}
TEMPLATES = [
    "She told me about the {} before we left the house.",
    "In the old story, the {} was mentioned only once.",
    "We talked about {} for a while and then went home.",
    "The letter said that {} would matter in the end.",
    "He wrote the word {} on the board and smiled.",
    "Nobody expected {} to come up at the meeting.",
]
CONTEXT = 24  # tokens per context (BOS included)
FILLER = [
    "The train left the station a little after noon.",
    "They walked along the river and talked about work.",
    "The report was finished late in the evening.",
    "A small bridge crossed the stream near the village.",
    "He opened the window to let some fresh air in.",
    "The committee will review the proposal next time.",
    "Our teacher explained the rules of the game slowly.",
    "The kitchen was quiet except for the ticking clock.",
]


def corpus(rng: np.random.Generator, per_word: int, n_filler: int) -> list[str]:
    texts = [
        t.format(w)
        for words in CONCEPTS.values()
        for w in words
        for t in rng.choice(TEMPLATES, per_word)
    ]
    texts += [str(s) for s in rng.choice(FILLER, n_filler)]
    return [texts[i] for i in rng.permutation(len(texts))]


def contexts(tok: Any, texts: Sequence[str], bos: int, length: int) -> Any:
    """The contexts collection will see: documents joined by BOS, cut into windows of
    `length - 1` tokens, each after a BOS (as `saexplain.store` packs them)."""
    import torch

    stream: list[int] = []
    for text in texts:
        stream += [bos, *tok.encode(text, add_special_tokens=False)]
    body = length - 1
    rows = [[bos, *stream[i : i + body]] for i in range(0, len(stream) - body + 1, body)]
    return torch.tensor(rows)


def build_probes(
    hf: Any, tok: Any, texts: Sequence[str], concepts: Sequence[str], layer: int, bos: int
) -> Any:
    """A coder whose latent i is concept i's probe at `layer` (see the module docstring)."""
    import torch
    from saexplain_torch.testing import TinySAE

    class ProbeCoder(TinySAE):
        """`TinySAE` that ignores positions with massive activations (SmolLM2's BOS and a few
        delimiters have residual norms ~100x the others: every probe would fire there)."""

        norm_cap = float("inf")

        @torch.no_grad()
        def encode(self, x: torch.Tensor) -> torch.Tensor:
            keep = (x.to(self.W_enc.dtype).norm(dim=-1, keepdim=True) < self.norm_cap).to(x.dtype)
            return super().encode(x) * keep

    ids_of = {
        c: torch.tensor(
            sorted({tok.encode(" " + w, add_special_tokens=False)[0] for w in CONCEPTS[c]})
        )
        for c in concepts
    }
    ids = contexts(tok, texts, bos, CONTEXT)
    with torch.no_grad():
        hidden = torch.cat(
            [
                hf(input_ids=ids[i : i + 32], output_hidden_states=True).hidden_states[layer]
                for i in range(0, len(ids), 32)
            ]
        )
    norms = hidden.norm(dim=-1)
    usable = (ids != bos) & (norms < 10 * norms.median())
    hits = {c: usable & torch.isin(ids, ids_of[c]) for c in concepts}
    any_hit = torch.stack(list(hits.values())).any(0)
    rest = hidden[usable & ~any_hit]
    centre = rest.mean(0)
    sae = ProbeCoder(
        rest.shape[1],
        len(concepts),
        f"blocks.{layer}.hook_resid_pre",
        id=f"quality/probes-L{layer}",
    )
    sae.norm_cap = float(10 * norms.median())
    sae.b_dec.copy_(centre)
    for j, c in enumerate(concepts):
        on_proj_raw = hidden[hits[c]] - centre
        direction = on_proj_raw.mean(0) - (rest - centre).mean(0)
        direction = direction / direction.norm()
        on_proj, rest_proj = on_proj_raw @ direction, (rest - centre) @ direction
        # fire on the concept's tokens, almost never elsewhere: above the other tokens' 99.9th
        # permille and half-way to the concept tokens' mean
        threshold = max(
            float(torch.quantile(rest_proj, 0.999)), 0.5 * float(on_proj.mean() + rest_proj.mean())
        )
        sae.W_enc[:, j] = direction
        sae.b_enc[j] = -threshold
        sae.W_dec[j] = direction
    return sae


def concept_of(text: str, concepts: Sequence[str]) -> str | None:
    """The concept an explanation names (its name or one of its words), or None."""
    low = text.lower()
    for c in concepts:
        words = [w.lower() for w in CONCEPTS[c]] + NAMES[c]
        if any(re.search(rf"\b{re.escape(w)}\b", low) for w in words):
            return c
    return None


def ceiling_explainer(concepts: Sequence[str]):
    """A scripted explainer that names the planted concept of the highlighted words."""

    def answer(request: ChatRequest) -> str:
        last = [m.content for m in request.messages if m.role == "user"][-1]
        marked = " ".join(re.findall(r"<<(.*?)>>", last)) or last
        votes = {c: sum(marked.lower().count(w.lower()) for w in CONCEPTS[c]) for c in concepts}
        best = max(votes, key=lambda c: votes[c])
        return f"{best} words: " + ", ".join(f'"{w}"' for w in CONCEPTS[best])

    return answer


def figure(score: Any) -> float | None:
    """A score's figure of merit: its AUROC where the scorer gave a probability for every item
    (prefill, first_token, lists with logprobs: it ranks, where balanced accuracy is 0.5 for a
    model that answers "1" to everything), else its value."""
    if score is None:
        return None
    auroc = score.metrics.get("auroc")
    value = auroc if auroc is not None and not math.isnan(auroc) else score.value
    return None if value is None or math.isnan(value) else float(value)


def values(run: Any, scorer: str, n: int) -> list[float | None]:
    return [figure(run[i].scores.get(("given", scorer))) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="4 concepts, few examples, smoke")
    parser.add_argument("--concepts", type=int, default=8)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--out", default="benchmarks/results/quality.json")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("--demo-run", default=None, help="a finished demo run: its figure too")
    args = parser.parse_args()
    start = time.perf_counter()
    from saexplain_demo.model import load_smollm2
    from saexplain_litellm.local import LocalProvider
    from saexplain_nnsight.backend import NNsightBackend

    n = 4 if args.quick else min(args.concepts, len(CONCEPTS))
    concepts = list(CONCEPTS)[:n]
    rng = np.random.default_rng(0)
    texts = corpus(rng, per_word=2 if args.quick else 4, n_filler=20 if args.quick else 80)
    hf, tok = load_smollm2()
    backend = NNsightBackend(hf, tokenizer=tok)
    coder = build_probes(hf, tok, texts, concepts, args.layer, int(backend.bos_token_id))
    local = LocalProvider("smollm2")
    per_side = 4 if args.quick else 6
    common: dict[str, Any] = {
        "dataset": texts,
        "n_tokens": 12 * len(texts),
        "context_length": CONTEXT,
        "records": {
            "window": 16,
            "explanation": [f"top:{per_side}"],
            "scoring": [f"quantile:{per_side}"],
            "negatives": [f"random:{per_side}"],
            "n_bins": 4,
            "rare_below": 2,
        },
        "progress": False,
        "concurrency": 16,
        "seed": 0,
    }
    work = Path(tempfile.mkdtemp(prefix="sx-quality-"))
    common |= {"output_dir": work, "store_dir": work / "store"}

    explainers: dict[str, tuple[Any, Any]] = {
        "scripted": ("maxact", ScriptedProvider(ceiling_explainer(concepts))),
        "maxact": ("maxact", local),
    }
    try:
        import saexplain.explainers.toptokens  # noqa: F401

        explainers["toptokens"] = ("toptokens", None)
    except ImportError:
        pass
    scorers: dict[str, dict[str, Any]] = {
        "detection-list": {"name": "detection", "settings": {"answer": "list"}},
        "detection-first": {
            "name": "detection",
            "settings": {"answer": "first_token", "batch_size": 1},
        },
        "detection-prefill": {"name": "detection", "settings": {"answer": "prefill"}},
        "fuzzing-prefill": {"name": "fuzzing", "settings": {"answer": "prefill"}},
    }
    if args.quick:
        scorers.pop("detection-first")
    try:
        import saexplain_embeddings  # noqa: F401

        scorers["embedding"] = {"name": "embedding", "settings": {}}
    except ImportError:
        pass
    providers = {
        "local": local,
        "scripted": ScriptedProvider(competent_scorer, logprobs=competent_logprobs, prefill=True),
    }

    explained: dict[str, dict[int, str]] = {}
    for label, (method, provider) in explainers.items():
        run = sx.explain(
            backend,
            coder,
            latents=list(range(n)),
            explainers=[method],
            scorers=[],
            provider=provider,
            name=f"explain-{label}",
            **common,
        )
        explained[label] = {i: run[i].explanation(method) or "" for i in range(n)}
    rows: list[dict[str, Any]] = []
    for label, expl in explained.items():
        recovery = sum(concept_of(expl[i], concepts) == concepts[i] for i in range(n)) / n
        shuffled = {i: expl[(i + 1) % n] for i in range(n)}
        for s_label, spec in scorers.items():
            for p_label, provider in providers.items():
                if spec["name"] == "embedding" and p_label != "local":
                    continue  # no LLM: one row
                p_name = "minilm" if spec["name"] == "embedding" else p_label
                kw = dict(common, scorers=[spec], provider=provider)
                true = sx.score(backend, coder, expl, name=f"t-{label}-{s_label}-{p_name}", **kw)
                shuf = sx.score(
                    backend, coder, shuffled, name=f"s-{label}-{s_label}-{p_name}", **kw
                )
                tv = values(true, spec["name"], n)
                sv = values(shuf, spec["name"], n)
                pairs = [
                    (a, b) for a, b in zip(tv, sv, strict=True) if a is not None and b is not None
                ]
                rows.append(
                    {
                        "explainer": label,
                        "scorer": s_label,
                        "provider": p_name,
                        "recovery": recovery,
                        "median_true": statistics.median(a for a, _ in pairs) if pairs else None,
                        "median_shuffled": statistics.median(b for _, b in pairs)
                        if pairs
                        else None,
                        "true_gt_shuffled": sum(a > b for a, b in pairs) / len(pairs)
                        if pairs
                        else None,
                        "n": len(pairs),
                    }
                )
    elapsed = time.perf_counter() - start
    head = ("explainer", "scorer", "provider", "recov", "med true", "med shuf", "true>shuf")
    print(f"{head[0]:10} {head[1]:18} {head[2]:9} " + " ".join(f"{h:>9}" for h in head[3:]))
    for r in rows:
        f = lambda v: "  -  " if v is None else f"{v:.2f}"  # noqa: E731
        print(
            f"{r['explainer']:10} {r['scorer']:18} {r['provider']:9} {f(r['recovery']):>9} "
            f"{f(r['median_true']):>9} {f(r['median_shuffled']):>9} {f(r['true_gt_shuffled']):>9}"
        )
    for label, expl in explained.items():
        print(f"  {label}: " + " | ".join(f"{concepts[i]} -> {expl[i][:50]!r}" for i in range(n)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "quick": args.quick,
                "concepts": concepts,
                "layer": args.layer,
                "seconds": round(elapsed, 1),
                "rows": rows,
            },
            indent=1,
        )
    )
    fields = " ".join(
        f"true_gt_shuffled_{r['explainer']}_{r['scorer'].replace('-', '_')}_{r['provider']}="
        f"{'nan' if r['true_gt_shuffled'] is None else format(r['true_gt_shuffled'], '.2f')}"
        for r in rows
    )
    if args.keep:
        print(f"runs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(f"({elapsed:.0f} s)")
    if args.demo_run is not None:
        fields += demo_fields(args.demo_run)
    print(f"RESULT quality {fields} target true_gt_shuffled>=0.75 for the demo's scorer")


def demo_fields(run_dir: str | Path) -> str:
    """` demo_true_gt_shuffled=<all explainers> demo_true_gt_shuffled_<explainer>=...` for a
    finished demo run."""
    from saexplain.report import RunResults

    def fmt(value: float | None) -> str:
        return "nan" if value is None else f"{value:.2f}"

    out = f" demo_true_gt_shuffled={fmt(demo_true_gt_shuffled(run_dir))}"
    for explainer in RunResults.load(run_dir).explainers:
        if not explainer.endswith("~shuffled"):
            value = demo_true_gt_shuffled(run_dir, explainers=[explainer])
            out += f" demo_true_gt_shuffled_{explainer}={fmt(value)}"
    return out


def demo_true_gt_shuffled(
    run_dir: str | Path, scorer: str | None = None, explainers: Sequence[str] | None = None
) -> float | None:
    """The fraction of (latent, explainer) pairs of a finished run (the demo's) where `scorer`
    (default: the run's first) rates the explanation above its `<explainer>~shuffled` control,
    by the same figure as the benchmark (`figure`); None when the run has no controls."""
    from saexplain.report import RunResults

    run = RunResults.load(run_dir)
    scorer = scorer or (run.scorers[0] if run.scorers else None)
    if scorer is None:
        return None
    wins: list[bool] = []
    for result in run:
        for explainer in explainers or run.explainers:
            if explainer.endswith("~shuffled"):
                continue
            true = figure(result.scores.get((explainer, scorer)))
            control = figure(result.scores.get((f"{explainer}~shuffled", scorer)))
            if true is not None and control is not None:
                wins.append(true > control)
    return sum(wins) / len(wins) if wins else None


def scorers_at_chance(results: Mapping[str, Any], threshold: float = 0.75) -> set[tuple[str, str]]:
    """(scorer, provider) pairs whose fraction true > shuffled stays under `threshold` for every
    explainer in a `quality.json`: the demo marks their columns as at chance."""
    best: dict[tuple[str, str], float] = {}
    for r in results.get("rows", []):
        key = (r["scorer"], r["provider"])
        best[key] = max(best.get(key, 0.0), r["true_gt_shuffled"] or 0.0)
    return {k for k, v in best.items() if v < threshold}


if __name__ == "__main__":
    main()
