"""SAEBench autointerp results JSON, both ways.

One file per SAE, `<release>_<sae_id>_eval_results.json` (`/` replaced by `_`):
`eval_type_id` (`"autointerp"`), `eval_config`, `eval_id`, `datetime_epoch_millis`,
`eval_result_metrics.autointerp.{autointerp_score, autointerp_std_dev}`, `eval_result_details`
(empty), `eval_result_unstructured` mapping each latent index (a string) to `{explanation,
predictions, "correct seqs", score, logs}`, and `sae_lens_id`, `sae_lens_release_id`,
`sae_lens_version`, `sae_cfg_dict`.

Export (`export_saebench`) writes one explainer's explanations with one scorer's values (e.g.
`detection`, the closest to SAEBench's own scoring; SAEBench defines accuracy its own way, so
compare figures, not identities). `predictions` and `"correct seqs"` list the 1-based numbers of
the items predicted activating and of the activating items, as SAEBench does; the summary is
the mean and (population) standard deviation of the exported scores.

Import (`load_saebench`) returns the per-latent explanations and scores and the summary figures;
`.explanations` rescore here as the `given` explainer (keyed by (`sae_lens_id`, latent)).
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saexplain.errors import ConfigError
from saexplain.files import save
from saexplain.interop._common import (
    ImportedExplanation,
    ImportedExplanations,
    InteropFormatError,
    coder_latents,
    collect,
    exported_explainers,
    read_json_file,
    valid_value,
)
from saexplain.models import Score

if TYPE_CHECKING:
    from saexplain.report.results import RunResults

__all__ = ["SAEBenchLatent", "SAEBenchResults", "export_saebench", "load_saebench"]

EXPLAINER_NAME = "saebench_autointerp"  # the explainer name imported explanations get


def saebench_file_name(release: str, sae_id: str) -> str:
    """SAEBench's results file name for an SAE."""
    return f"{release}_{sae_id}_eval_results.json".replace("/", "_")


def _numbers(score: Score | None, *, predicted: bool) -> list[int]:
    if score is None:
        return []
    if predicted:
        return [p.item + 1 for p in score.predictions if p.predicted]
    return [p.item + 1 for p in score.predictions if p.truth]


def export_saebench(
    results: RunResults,
    out_dir: str | Path,
    *,
    release: str,
    sae_id: str,
    explainer: str,
    scorer: str = "detection",
    coder_id: str | None = None,
    include_controls: bool = False,
) -> Path:
    """Write SAEBench's autointerp results JSON for one explainer and scorer; return its path.

    Latents with an ok explanation are exported; one without a valid score has `score` null
    and is left out of the summary. A shuffled control is refused unless `include_controls`."""
    if not release or not sae_id:
        raise ConfigError("release and sae_id (SAELens ids) must be non-empty")
    exported_explainers(results, explainer, include_controls=include_controls)
    per_latent: dict[str, dict[str, Any]] = {}
    values: list[float] = []
    for res in coder_latents(results, coder_id):
        text = res.explanation(explainer)
        if text is None:
            continue
        score = res.scores.get((explainer, scorer))
        value = None if score is None else valid_value(score)
        if value is not None:
            values.append(value)
        per_latent[str(res.latent.index)] = {
            "explanation": text,
            "predictions": _numbers(score, predicted=True),
            "correct seqs": _numbers(score, predicted=False),
            "score": value,
            "logs": f"saexplain {explainer}/{scorer}"
            + ("" if score is None or score.error is None else f": {score.error}"),
        }
    mean = std = None
    if values:
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    from saexplain import __version__

    data = {
        "eval_type_id": "autointerp",
        "eval_config": {
            "model_name": results.manifest.get("model") or results.config.get("model"),
            "explainer": explainer,
            "scorer": scorer,
            "saexplain_version": __version__,
            "seed": results.seed,
        },
        # stable for the same content, so re-exporting an unchanged run gives the same file
        "eval_id": str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(per_latent, sort_keys=True))),
        "datetime_epoch_millis": _run_millis(results),
        "eval_result_metrics": {
            "autointerp": {"autointerp_score": mean, "autointerp_std_dev": std}
        },
        "eval_result_details": [],
        "eval_result_unstructured": per_latent,
        "sae_bench_commit_hash": None,
        "sae_lens_id": sae_id,
        "sae_lens_release_id": release,
        "sae_lens_version": None,
        "sae_cfg_dict": {},
    }
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return save(Path(out_dir) / saebench_file_name(release, sae_id), text)


def _run_millis(results: RunResults) -> int:
    """When the run was made (its directory's mtime), else now; SAEBench wants epoch millis."""
    import time

    if results.run_dir is not None and results.run_dir.exists():
        return int(results.run_dir.stat().st_mtime * 1000)
    return int(time.time() * 1000)


@dataclass(frozen=True)
class SAEBenchLatent:
    """One latent of a SAEBench autointerp result."""

    index: int
    explanation: str
    score: float | None
    predictions: tuple[int, ...] = ()
    correct_seqs: tuple[int, ...] = ()


@dataclass(frozen=True)
class SAEBenchResults:
    """A SAEBench autointerp results file: per-latent explanations and scores, the summary."""

    path: Path
    release: str | None
    sae_id: str | None
    score: float | None  # autointerp_score
    std_dev: float | None  # autointerp_std_dev
    latents: dict[int, SAEBenchLatent] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def scores(self) -> dict[int, float | None]:
        return {i: lat.score for i, lat in self.latents.items()}

    @property
    def explanations(self) -> ImportedExplanations:
        """The explanations, keyed by (`sae_lens_id`, latent), to rescore as `given`."""
        source = self.sae_id or "saebench"
        items = [
            ImportedExplanation(source, i, lat.explanation, EXPLAINER_NAME, score=lat.score)
            for i, lat in sorted(self.latents.items())
            if lat.explanation.strip()
        ]
        return collect(items, self.path)


def _float(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InteropFormatError(f"{where}: expected a number or null, got {value!r}")
    return float(value)


def _ints(value: object, where: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise InteropFormatError(f"{where}: expected a list of sequence numbers")
    return tuple(value)


def load_saebench(path: str | Path) -> SAEBenchResults:
    """Read a SAEBench autointerp results JSON; malformed input raises `InteropFormatError`
    naming the file and the problem."""
    file = Path(path)
    data = read_json_file(file, "SAEBench results")
    if not isinstance(data, dict):
        raise InteropFormatError(f"{file}: SAEBench results are a JSON object")
    if data.get("eval_type_id") != "autointerp":
        raise InteropFormatError(
            f"{file}: eval_type_id is {data.get('eval_type_id')!r}, not 'autointerp'"
        )
    metrics = data.get("eval_result_metrics")
    auto = metrics.get("autointerp") if isinstance(metrics, dict) else None
    if not isinstance(auto, dict):
        raise InteropFormatError(f"{file}: missing eval_result_metrics.autointerp")
    unstructured = data.get("eval_result_unstructured")
    if not isinstance(unstructured, dict):
        raise InteropFormatError(
            f"{file}: eval_result_unstructured must map latent indices to results"
        )
    latents: dict[int, SAEBenchLatent] = {}
    for key, entry in unstructured.items():
        where = f"{file}: latent {key!r}"
        if not key.isdigit():
            raise InteropFormatError(f"{where}: not a latent index")
        if not isinstance(entry, dict) or not isinstance(entry.get("explanation"), str):
            raise InteropFormatError(f"{where}: needs an `explanation` string")
        latents[int(key)] = SAEBenchLatent(
            index=int(key),
            explanation=entry["explanation"],
            score=_float(entry.get("score"), where),
            predictions=_ints(entry.get("predictions"), where),
            correct_seqs=_ints(entry.get("correct seqs"), where),
        )
    config = data.get("eval_config")
    release, sae_id = data.get("sae_lens_release_id"), data.get("sae_lens_id")
    return SAEBenchResults(
        path=file,
        release=release if isinstance(release, str) else None,
        sae_id=sae_id if isinstance(sae_id, str) else None,
        score=_float(auto.get("autointerp_score"), f"{file}: autointerp_score"),
        std_dev=_float(auto.get("autointerp_std_dev"), f"{file}: autointerp_std_dev"),
        latents=latents,
        config=config if isinstance(config, dict) else {},
    )
