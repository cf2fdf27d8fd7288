"""Exports to the formats other tools read: Neuronpedia explanation batches and delphi results.

Neuronpedia (`export_neuronpedia`): `<out>/<modelId>/<source>/explanations/batch-<n>.jsonl.gz`,
one JSON object per line with `modelId`, `layer` (the source id, e.g. `8-res-jb`), `index` (a
string), `description`, `typeName` and `explanationModelName`. Only ok explanations are exported;
scores are not part of Neuronpedia's explanation export. `explanationModelName` is the model that
wrote each explanation: the model of its `llm` (`"litellm:gpt-4o-mini"` gives `gpt-4o-mini`); for
an explainer that asks no LLM, the subject model for `selfexplain` (the model explains itself) and
the explainer's name otherwise.

delphi (`export_delphi`): `<out>/explanations/<hook>_latent<i>.txt` holds the explanation as a
JSON string; `<out>/scores/<scorer>/<hook>_latent<i>.txt` a JSON list with one record per scored
item: `str_tokens`, `activations`, `quantile` (and `distance`, its older name), `activating`,
`prediction` (bool or null on error), `probability`, `correct`, `error`.

Mapping scored items back to examples: `Prediction.item` indexes the scorer's own item list.
`item_examples` recovers it from, in order: `Score.settings["items"]` (one entry per item, each
`{"source": "<LatentRecord field>", "index": i}` or `{"example": <Example JSON>}` for text not in
the record); `Score.settings["item_index"]` naming record fields whose concatenation the items
index (e.g. `"scoring_examples+non_activating"`); else, inferred, the built-in classifier
scorers' layout (scoring examples then non-activating ones) when every prediction's truth agrees
with it. Otherwise (or without the record) `str_tokens` and `activations` are null; the gap is
counted in the export manifest and reported with an `ExportGapWarning`.

Every export writes `saexplain_export.json` beside its files: the saexplain version, the run's
manifest (plugin versions, seeds) and what could not be exported.
"""

from __future__ import annotations

import gzip
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from saexplain.errors import ConfigError
from saexplain.models import Example, Explanation, LatentRecord, Score, Status
from saexplain.report._io import atomic_write_bytes, atomic_write_text
from saexplain.report.results import LatentResult, RunResults

EXPORT_MANIFEST = "saexplain_export.json"
ITEM_SOURCES = ("explanation_examples", "scoring_examples", "non_activating")
DEFAULT_ITEM_LAYOUT = ("scoring_examples", "non_activating")  # the classifier scorers' items


class ExportGapWarning(UserWarning):
    """Part of a result could not be exported (e.g. scored items without their examples)."""


def _check_name(kind: str, value: str) -> None:
    if not value or "/" in value or "\\" in value or value in (".", ".."):
        raise ConfigError(f"{kind} {value!r} must be a non-empty name without path separators")


def _latents(results: RunResults, coder_id: str | None) -> list[LatentResult]:
    coders = sorted({ref.coder_id for ref in results.latents})
    if coder_id is None:
        if len(coders) > 1:
            raise ConfigError(
                f"this run has several coders ({', '.join(coders)}); choose one with coder_id="
            )
        return list(results)
    if coder_id not in coders:
        raise ConfigError(f"coder {coder_id!r} not in this run; coders: {', '.join(coders)}")
    return [res for res in results if res.latent.coder_id == coder_id]


def _write_manifest(out_dir: Path, results: RunResults, fmt: str, extra: Mapping[str, Any]) -> Path:
    from saexplain import __version__

    data = {
        "format": fmt,
        "saexplain_version": __version__,
        "seed": results.seed,
        "run_dir": None if results.run_dir is None else str(results.run_dir),
        "run_manifest": results.manifest,
        **extra,
    }
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    return atomic_write_text(out_dir / EXPORT_MANIFEST, text)


# --- Neuronpedia ----------------------------------------------------------------------------------


def neuronpedia_type_name(explainer: str, type_names: Mapping[str, str] | None = None) -> str:
    """The `typeName` of an explainer: an explicit mapping wins, else `saexplain_<name>`."""
    if type_names and explainer in type_names:
        return type_names[explainer]
    return f"saexplain_{explainer}"


# Explainers whose text the subject model itself writes (no LLM): named after that model.
SUBJECT_MODEL_EXPLAINERS = frozenset({"selfexplain"})


def _explanation_model(results: RunResults, exp: Explanation) -> str:
    if exp.llm:  # "<provider>:<model>": Neuronpedia names the model alone
        return exp.llm.split(":", 1)[-1]
    if exp.method_id is not None:  # provenance recorded and no LLM: an LLM-free explainer
        subject = results.manifest.get("model")
        if exp.explainer in SUBJECT_MODEL_EXPLAINERS and isinstance(subject, str) and subject:
            return subject
        return exp.explainer
    # a result written before saexplain recorded provenance: what its settings or config say
    model = exp.settings.get("model")
    if isinstance(model, str) and model:
        return model
    spec = results.config.get("explainer_model")
    if isinstance(spec, Mapping) and isinstance(spec.get("model"), str):
        return str(spec["model"])
    return "unknown"


def export_neuronpedia(
    results: RunResults,
    out_dir: str | Path,
    *,
    model_id: str,
    source: str,
    explainer_model: str | None = None,
    coder_id: str | None = None,
    type_names: Mapping[str, str] | None = None,
    batch_size: int = 1000,
) -> list[Path]:
    """Write gzipped JSONL batches of explanation rows; return the batch paths.

    `model_id` and `source` are Neuronpedia's ids (e.g. `gpt2-small`, `8-res-jb`).
    `explainer_model` overrides the explanation model name (default: the model of each
    explanation's `llm`; for an LLM-free explainer the subject model (`selfexplain`) or the
    explainer's name; for results without provenance, `settings["model"]`, else the run
    config's `explainer_model.model`). `type_names` maps
    explainer names to Neuronpedia type names (e.g. `{"maxact": "np_max-act"}` if your
    settings match that method); the default is `saexplain_<explainer>`.
    """
    _check_name("model_id", model_id)
    _check_name("source", source)
    if batch_size < 1:
        raise ConfigError("batch_size must be at least 1")
    rows = []
    skipped = 0
    for res in _latents(results, coder_id):
        for name, exp in res.explanations.items():
            if exp.status is not Status.OK:
                skipped += 1
                continue
            rows.append(
                {
                    "modelId": model_id,
                    "layer": source,
                    "index": str(res.latent.index),
                    "description": exp.text,
                    "typeName": neuronpedia_type_name(name, type_names),
                    "explanationModelName": explainer_model or _explanation_model(results, exp),
                }
            )
    folder = Path(out_dir) / model_id / source / "explanations"
    paths = []
    for n, start in enumerate(range(0, len(rows), batch_size)):
        lines = "".join(
            json.dumps(r, ensure_ascii=False) + "\n" for r in rows[start : start + batch_size]
        )
        data = gzip.compress(lines.encode("utf-8"), mtime=0)  # mtime=0: reproducible bytes
        paths.append(atomic_write_bytes(folder / f"batch-{n}.jsonl.gz", data))
    _write_manifest(
        Path(out_dir),
        results,
        "neuronpedia",
        {"model_id": model_id, "source": source, "rows": len(rows), "skipped_not_ok": skipped},
    )
    return paths


# --- delphi ---------------------------------------------------------------------------------------


def _layout_examples(record: LatentRecord, layout: Sequence[str]) -> list[Example | None]:
    return [ex for source in layout for ex in getattr(record, source)]


def _parse_layout(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, str):
        return None
    parts = tuple(p.strip() for p in value.split("+"))
    return parts if parts and all(p in ITEM_SOURCES for p in parts) else None


def item_examples(
    score: Score, record: LatentRecord | None
) -> tuple[list[Example | None] | None, str | None]:
    """The examples behind a scorer's items and how they were found, or (None, None).

    In order: `settings["items"]` (one entry per item), `settings["item_index"]` (record fields
    concatenated, e.g. `"scoring_examples+non_activating"`), else the built-in classifier
    scorers' layout (scoring examples, then non-activating ones) when every prediction's truth
    agrees with it ("inferred").
    """
    items = score.settings.get("items")
    if isinstance(items, list):
        out: list[Example | None] = []
        for entry in items:
            out.append(_item_entry(entry, record))
        return out, "items"
    if record is None:
        return None, None
    layout = _parse_layout(score.settings.get("item_index"))
    if layout is not None:
        return _layout_examples(record, layout), "item_index"
    n_pos = len(record.scoring_examples)
    n_all = n_pos + len(record.non_activating)
    if score.predictions and all(
        p.item < n_all and p.truth == (p.item < n_pos) for p in score.predictions
    ):
        return _layout_examples(record, DEFAULT_ITEM_LAYOUT), "inferred"
    return None, None


def _item_entry(entry: object, record: LatentRecord | None) -> Example | None:
    if not isinstance(entry, dict):
        return None
    inline = entry.get("example")
    if isinstance(inline, dict):
        try:
            return Example.model_validate(inline)
        except ValidationError:
            return None
    source, index = entry.get("source"), entry.get("index")
    if record is None or source not in ITEM_SOURCES:
        return None
    if not isinstance(index, int) or isinstance(index, bool):
        return None
    pool: Sequence[Example] = getattr(record, str(source))
    return pool[index] if 0 <= index < len(pool) else None


def delphi_records(
    score: Score, record: LatentRecord | None
) -> tuple[list[dict[str, Any]], int, str | None]:
    """delphi's per-example records of one score, how many lack their example, and how the
    items were mapped (see `item_examples`)."""
    examples, how = item_examples(score, record)
    rows, missing = [], 0
    for p in score.predictions:
        ex = examples[p.item] if examples is not None and p.item < len(examples) else None
        missing += ex is None
        quantile = p.quantile if p.quantile is not None else (ex.quantile if ex else None)
        rows.append(
            {
                "str_tokens": None if ex is None else list(ex.str_tokens),
                "activations": None if ex is None else list(ex.activations),
                "quantile": quantile,
                "distance": quantile,  # delphi's older name for the same field
                "activating": p.truth,
                "prediction": p.predicted,
                "probability": p.probability,
                "correct": p.correct,
                "error": p.error,
            }
        )
    return rows, missing, how


def _export_delphi_one(
    latents: Sequence[LatentResult], out_dir: Path, explainer: str
) -> tuple[list[Path], dict[str, Any]]:
    paths: list[Path] = []
    unmapped: dict[str, int] = {}
    no_predictions: dict[str, int] = {}
    mapping: dict[str, dict[str, int]] = {}
    failed: dict[str, int] = {}  # scores that errored before answering anything
    for res in latents:
        key = res.latent.key
        exp = res.explanations.get(explainer)
        if exp is not None and exp.status is Status.OK:
            text = json.dumps(exp.text, ensure_ascii=False)
            paths.append(atomic_write_text(out_dir / "explanations" / f"{key}.txt", text))
        for (e, scorer), score in res.scores.items():
            if e != explainer:
                continue
            _check_name("scorer", scorer)
            if not score.predictions:
                bucket = no_predictions if score.status is Status.OK else failed
                bucket[scorer] = bucket.get(scorer, 0) + 1
                continue
            rows, missing, how = delphi_records(score, res.record)
            per = mapping.setdefault(scorer, {})
            per[how or "none"] = per.get(how or "none", 0) + 1
            if missing:
                unmapped[scorer] = unmapped.get(scorer, 0) + missing
            text = json.dumps(rows, ensure_ascii=False)
            paths.append(atomic_write_text(out_dir / "scores" / scorer / f"{key}.txt", text))
    gaps = {
        "item_mapping": mapping,  # scorer -> {how items were mapped: number of scores}
        "unmapped_items": unmapped,
        "scores_without_predictions": no_predictions,
        "failed_scores": failed,
    }
    return paths, gaps


def export_delphi(
    results: RunResults,
    out_dir: str | Path,
    *,
    explainer: str | None = None,
    coder_id: str | None = None,
) -> list[Path]:
    """Write delphi's results layout; return the written paths.

    delphi keeps one explanation per latent: with one explainer (or `explainer=` given) the
    files go straight into `out_dir`; with several, each explainer gets `out_dir/<explainer>/`.
    """
    latents = _latents(results, coder_id)
    names = [explainer] if explainer is not None else results.explainers
    if explainer is not None and explainer not in results.explainers:
        raise ConfigError(
            f"explainer {explainer!r} not in this run; explainers: {', '.join(results.explainers)}"
        )
    root = Path(out_dir)
    flat = len(names) == 1
    paths: list[Path] = []
    gaps: dict[str, Any] = {}
    for name in names:
        _check_name("explainer", name)
        folder = root if flat else root / name
        written, gap = _export_delphi_one(latents, folder, name)
        paths += written
        gaps[name] = gap
        if gap["unmapped_items"]:
            counts = ", ".join(f"{s}: {n}" for s, n in gap["unmapped_items"].items())
            warnings.warn(
                f"delphi export ({name}): scored items without their examples ({counts}); "
                "their str_tokens/activations are null (the scorer did not record "
                'settings["items"] or the run has no records)',
                ExportGapWarning,
                stacklevel=2,
            )
    _write_manifest(
        root,
        results,
        "delphi",
        {"explainers": names, "layout": "flat" if flat else "per-explainer", "gaps": gaps},
    )
    return paths
