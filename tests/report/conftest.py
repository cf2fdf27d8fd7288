"""A synthetic run: planted latents on the fake backend, explanations and scores built directly
with saexplain.models, hostile text (script tags, quotes) in examples, explanations and errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from saexplain.models import (
    ExampleKind,
    Explanation,
    LatentRecord,
    Prediction,
    Score,
    Status,
    Usage,
)
from saexplain.testing import FakeBackend, FakeCoder, make_record

XSS = "<script>alert(1)</script>"
QUOTES = "\" onmouseover=\"alert('x')"
WORDS = {1: " cat", 2: ' "dog"', 3: " " + XSS, 4: " river", 5: " never"}  # 5 never appears
TEXTS = [
    "the cat sat on the mat",
    'a "dog" barked at the cat',
    f"page says {XSS} loudly",
    "the river ran past the mill",
    f"then {XSS} and the cat",
    "nothing here at all",
    "plain words only today",
    "the river and the cat",
    'one "dog" two "dog" three',
]
EXPLAINERS = ("maxact", "vocabproj")
SCORERS = ("detection", "fuzzing")


@dataclass
class Run:
    records: list[LatentRecord]
    explanations: list[Explanation]
    scores: list[Score]
    latents: list[dict[str, Any]]
    config: dict[str, Any]
    manifest: dict[str, Any]
    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # valid, per method
    totals: dict[tuple[str, str], int] = field(default_factory=dict)

    def write(self, run_dir: Path) -> Path:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(self.config))
        (run_dir / "manifest.json").write_text(json.dumps(self.manifest))
        for name, items in (
            ("records", self.records),
            ("explanations", self.explanations),
            ("scores", self.scores),
        ):
            with open(run_dir / f"{name}.jsonl", "w") as f:
                for item in items:
                    f.write(item.model_dump_json() + "\n")
        with open(run_dir / "latents.jsonl", "w") as f:
            for entry in self.latents:
                f.write(json.dumps(entry) + "\n")
        return run_dir


def predictions_for(record: LatentRecord, rng: np.random.Generator) -> tuple[Prediction, ...]:
    """Items laid out as the classifier scorers do: scoring examples, then non-activating."""
    preds = []
    n_pos = len(record.scoring_examples)
    for i in range(n_pos + len(record.non_activating)):
        truth = i < n_pos
        if rng.random() < 0.1:
            preds.append(Prediction(item=i, truth=truth, error="unparseable <b>answer</b>"))
            continue
        predicted = bool(rng.random() < (0.8 if truth else 0.2))
        preds.append(
            Prediction(item=i, truth=truth, predicted=predicted, probability=float(rng.random()))
        )
    return tuple(preds)


def build_run(seed: int = 0) -> Run:
    backend = FakeBackend(seed=0)
    coder = FakeCoder.planted(backend, WORDS)
    rng = np.random.default_rng(seed)
    records, explanations, scores, latents = [], [], [], []
    values: dict[tuple[str, str], list[float]] = {}
    totals: dict[tuple[str, str], int] = {}
    for index in sorted(WORDS):
        record = make_record(backend, coder, index, TEXTS)
        # make_record tags negatives with the plain string "random"; use the enum so that
        # serialising does not warn
        negatives = tuple(
            e.model_copy(update={"kind": ExampleKind.RANDOM}) for e in record.non_activating
        )
        record = record.model_copy(update={"non_activating": negatives})
        entry: dict[str, Any] = {
            "latent": record.latent.model_dump(mode="json"),
            "status": "ok",
            "reason": None,
            "stats": record.stats.model_dump(mode="json"),
        }
        if record.stats.dead:
            entry |= {"status": "skipped", "reason": "dead: never fired <0 tokens>"}
            latents.append(entry)
            continue
        latents.append(entry)
        records.append(record)
        for explainer in EXPLAINERS:
            usage = Usage(prompt_tokens=100 + index, completion_tokens=10, cost_usd=0.001, calls=1)
            if explainer == "vocabproj" and index == 2:
                explanations.append(
                    Explanation(
                        latent=record.latent,
                        explainer=explainer,
                        status=Status.ERROR,
                        error=f"provider said {XSS}",
                        usage=usage,
                    )
                )
                continue
            text = f"the word {WORDS[index].strip()} {QUOTES}" if index == 3 else f"word {index}"
            explanations.append(
                Explanation(
                    latent=record.latent,
                    explainer=explainer,
                    text=text,
                    usage=usage,
                    evidence={"shown": [XSS]},
                    settings={"model": "local/<smollm2>"},
                )
            )
            for scorer in SCORERS:
                key = (explainer, scorer)
                totals[key] = totals.get(key, 0) + 1
                s_usage = Usage(prompt_tokens=50, completion_tokens=5, cost_usd=0.0005, calls=2)
                if scorer == "fuzzing" and index == 4 and explainer == "maxact":
                    scores.append(
                        Score(
                            latent=record.latent,
                            scorer=scorer,
                            explainer=explainer,
                            status=Status.ERROR,
                            error=f"outage {XSS}",
                            usage=s_usage,
                        )
                    )
                    continue
                value = float(rng.uniform(0.4, 1.0))
                values.setdefault(key, []).append(value)
                scores.append(
                    Score(
                        latent=record.latent,
                        scorer=scorer,
                        explainer=explainer,
                        value=value,
                        metrics={"balanced_accuracy": value, "auroc": None},
                        predictions=predictions_for(record, rng),
                        usage=s_usage,
                    )
                )
    config = {
        "model": "fake<b>model</b>",
        "coder": "planted",
        "seed": 7,
        "explainers": [{"name": "maxact", "settings": {}}, {"name": "vocabproj", "settings": {}}],
        "scorers": [{"name": "detection", "settings": {}}, {"name": "fuzzing", "settings": {}}],
        "explainer_model": {"provider": "scripted", "model": "scripted-1", "settings": {}},
    }
    manifest = {"saexplain_version": "0.1.0", "plugins": [], "seed": 7, "model": "fake"}
    return Run(records, explanations, scores, latents, config, manifest, values, totals)


@pytest.fixture
def run() -> Run:
    return build_run()


@pytest.fixture
def run_dir(tmp_path: Path, run: Run) -> Path:
    return run.write(tmp_path / "run")


def with_controls(
    run: Run, *, coder: str | None = None
) -> tuple[list[Explanation], list[Score], list[dict[str, Any]], dict[str, Any]]:
    """`run` plus shuffled controls of both explainers for the detection scorer (maxact's
    controls score 0.1, below every true score; vocabproj's 1.0, never below: at chance), a generic
    vocabproj explanation whose detection score was skipped, a positional latent and a
    flags.json naming a generic explanation; `coder` renames the coder (a second coder)."""
    from saexplain.rundir import SKIPPED_GENERIC

    def recode(item: Any) -> Any:
        if coder is None:
            return item
        return item.model_copy(
            update={"latent": item.latent.model_copy(update={"coder_id": coder})}
        )

    explanations = [recode(e) for e in run.explanations]
    scores = [recode(s) for s in run.scores]
    ok = {(e.latent, e.explainer): e for e in explanations if e.status is Status.OK}
    refs = sorted({ref for ref, _ in ok}, key=lambda r: r.index)
    for name, value in (("maxact", 0.1), ("vocabproj", 1.0)):
        mine = [r for r in refs if (r, name) in ok]
        for i, ref in enumerate(mine):
            source = ok[mine[(i + 1) % len(mine)], name]
            control = f"{name}~shuffled"
            explanations.append(
                Explanation(
                    latent=ref,
                    explainer=control,
                    text=source.text,
                    evidence={"shuffled_from": source.latent.key},
                )
            )
            scores.append(Score(latent=ref, scorer="detection", explainer=control, value=value))
    # vocabproj's explanation of the first latent was generic: its detection score skipped
    first = refs[0]
    skipped = Score(
        latent=first,
        scorer="detection",
        explainer="vocabproj",
        status=Status.FAILED,
        error=f"{SKIPPED_GENERIC} (near-duplicate)",
    )
    scores = [
        s for s in scores if (s.latent, s.explainer, s.scorer) != (first, "vocabproj", "detection")
    ]
    scores.append(skipped)
    latents = []
    for entry in run.latents:
        entry = dict(entry)
        if coder is not None:
            entry["latent"] = {**entry["latent"], "coder_id": coder}
        if entry["latent"]["index"] == first.index:
            entry["filters"] = {"flags": ["positional"], "positional_mi": 0.2}
        latents.append(entry)
    flags = {
        "generic": {
            "vocabproj": [
                {
                    "latent": first.key,
                    "coder": first.coder_id,
                    "text": "x",
                    "reason": "near-duplicate",
                }
            ]
        }
    }
    return explanations, scores, latents, flags
