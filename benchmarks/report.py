"""The HTML report of a 2,000-latent run: how long it takes to build, and to open in chromium.

Writes a synthetic run directory through the run directory's own line models (`RunDir`,
`LatentEntry`, `LatentRecord`, `Explanation`, `Score`): 2,000 latents, each with 20 explanation,
20 held-out scoring and 10 non-activating examples of 32 tokens, two explainers and two scorers
whose predictions carry activation deciles. Then times `RunResults.load`, `write_report`
(summary.json and the report folder), and chromium (Debian's, through Playwright) opening
`report/index.html` until the page sets `window.sxReady`, and rendering one latent section.
Saves a screenshot. Run from the repository root: `python benchmarks/report.py [OUT_DIR]`.
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from saexplain.testing import set_offline_env

set_offline_env()  # before any heavy import

from saexplain.models import (  # noqa: E402
    Example,
    ExampleKind,
    Explanation,
    LatentRecord,
    LatentRef,
    LatentStats,
    Prediction,
    Score,
    Usage,
)
from saexplain.report import RunResults, write_report  # noqa: E402
from saexplain.rundir import LatentEntry, RunDir  # noqa: E402

N_LATENTS = 2000
WINDOW = 32
WORDS = [" the", " cat", " river", " of", " and", " mill", " <b>", " a", " ran", " dog", "."]
EXPLAINERS = ("maxact", "vocabproj")
SCORERS = ("detection", "fuzzing")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def example(rng: random.Random, row: int, peak: float, quantile: int | None) -> Example:
    tokens = [rng.randrange(len(WORDS)) for _ in range(WINDOW)]
    acts = [0.0] * WINDOW
    if peak > 0:
        at = rng.randrange(WINDOW)
        for i in range(max(0, at - 2), min(WINDOW, at + 3)):
            acts[i] = round(peak * rng.uniform(0.2, 1.0), 4)
        acts[at] = peak
    kind = ExampleKind.ACTIVATING if peak > 0 else ExampleKind.RANDOM
    return Example(
        tokens=tuple(tokens),
        str_tokens=tuple(WORDS[t] for t in tokens),
        activations=tuple(acts),
        kind=kind,
        row=row,
        start=0,
        quantile=quantile,
    )


def write_run(path: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    run = RunDir(path, fsync=False)
    path.mkdir(parents=True, exist_ok=True)
    run.write_json("config", {"model": "synthetic", "seed": seed, "name": "bench-report"})
    for index in range(N_LATENTS):
        ref = LatentRef(coder_id="bench-sae", hook="blocks.6.hook_resid_post", index=index)
        top = rng.uniform(1.0, 20.0)
        stats = LatentStats(
            n_tokens=1_000_000, count=rng.randrange(10, 20_000), max=top, mean=top / 4
        )
        row = 0
        explain, scoring, negative = [], [], []
        for i in range(20):
            explain.append(example(rng, row, top * (1 - i / 40), None))
            row += 1
        for i in range(20):
            scoring.append(example(rng, row, top * rng.uniform(0.05, 1.0), i % 10))
            row += 1
        for _ in range(10):
            negative.append(example(rng, row, 0.0, None))
            row += 1
        record = LatentRecord(
            latent=ref,
            stats=stats,
            explanation_examples=tuple(explain),
            scoring_examples=tuple(scoring),
            non_activating=tuple(negative),
        )
        run.latents.append(LatentEntry(latent=ref, status="ok", stats=stats))
        run.records.append(record)
        for explainer in EXPLAINERS:
            usage = Usage(prompt_tokens=960, completion_tokens=20, cost_usd=0.0003, calls=1)
            word = rng.choice(WORDS).strip()
            text = f"the token '{word}' after {rng.choice(WORDS).strip()} (latent {index})"
            run.explanations.append(
                Explanation(latent=ref, explainer=explainer, text=text, usage=usage)
            )
            for scorer in SCORERS:
                skill = rng.uniform(0.5, 0.95)
                preds = [
                    Prediction(
                        item=i,
                        truth=i < 20,
                        predicted=(rng.random() < skill) == (i < 20),
                        quantile=i % 10 if i < 20 else None,
                    )
                    for i in range(30)
                ]
                correct = sum(p.correct is True for p in preds) / len(preds)
                run.scores.append(
                    Score(
                        latent=ref,
                        scorer=scorer,
                        explainer=explainer,
                        value=correct,
                        metrics={"balanced_accuracy": correct},
                        predictions=tuple(preds),
                        usage=Usage(prompt_tokens=780, completion_tokens=5, calls=6),
                    )
                )


def open_in_chromium(index: Path, shot: Path) -> tuple[float, float]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        t0 = time.perf_counter()
        page.goto(index.as_uri())
        page.wait_for_function("window.sxReady === true", timeout=120_000)
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        page.keyboard.press("j")
        page.wait_for_selector("#latent-detail .tok")
        latent = time.perf_counter() - t0
        page.screenshot(path=str(shot), full_page=False)
        browser.close()
    if errors:
        raise SystemExit(f"console errors: {errors[:3]}")
    return load, latent


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="sx-report-"))
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    write_run(run_dir)
    print(f"synthetic run: {N_LATENTS} latents written in {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    results = RunResults.load(run_dir)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    paths = write_report(run_dir, results=results)
    build_s = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in paths["html"].parent.iterdir()) / 1e6
    index_mb = paths["html"].stat().st_size / 1e6
    print(f"RunResults.load {load_s:.2f}s; write_report {build_s:.2f}s")
    print(f"report folder {size:.1f} MB (index.html {index_mb:.1f} MB): {paths['html']}")
    shot = out / "report-2000.png"
    open_s, latent_s = open_in_chromium(paths["html"], shot)
    print(f"chromium: ready in {open_s:.2f}s, one latent section in {latent_s:.3f}s")
    print(f"screenshot: {shot}")
    print(
        f"RESULT report latents={N_LATENTS} load_s={load_s:.2f} build_s={build_s:.2f} "
        f"open_s={open_s:.2f} latent_s={latent_s:.3f} index_mb={index_mb:.1f} "
        "target build_s<10 open_s<5"
    )


if __name__ == "__main__":
    main()
