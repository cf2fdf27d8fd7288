"""delphi (EleutherAI) results layout, both ways.

Export (`export_delphi`): `<out>/explanations/<hook>_latent<i>.txt` holds the explanation as a
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

Import (`load_delphi_explanations`): a delphi results folder holding `explanations/` (delphi's
own layout, or one explainer of ours), or a folder whose subfolders each hold one (our export of
several explainers: the subfolder names the explainer). Each file is `<hook>_latent<i>.txt` with
a JSON string (a bare text file is read as its text). Keyed by (hook, latent), to be rescored
here as the `given` explainer. `load_delphi_scores` reads the `scores/<scorer>/` files back:
delphi's per-example records and their accuracy.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from saexplain.files import save
from saexplain.interop._common import (
    ExportGapWarning,
    ImportedExplanation,
    ImportedExplanations,
    InteropFormatError,
    check_name,
    coder_latents,
    collect,
    exported_explainers,
    read_json_file,
    write_manifest,
)
from saexplain.models import Example, LatentRecord, Score, Status

if TYPE_CHECKING:
    from saexplain.report.results import LatentResult, RunResults

__all__ = [
    "DEFAULT_ITEM_LAYOUT",
    "ITEM_SOURCES",
    "DelphiScore",
    "delphi_records",
    "export_delphi",
    "item_examples",
    "load_delphi_explanations",
    "load_delphi_scores",
]

ITEM_SOURCES = ("explanation_examples", "scoring_examples", "non_activating")
DEFAULT_ITEM_LAYOUT = ("scoring_examples", "non_activating")  # the classifier scorers' items


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
            paths.append(save(out_dir / "explanations" / f"{key}.txt", text))
        for (e, scorer), score in res.scores.items():
            if e != explainer:
                continue
            check_name("scorer", scorer)
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
            paths.append(save(out_dir / "scores" / scorer / f"{key}.txt", text))
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
    include_controls: bool = False,
) -> list[Path]:
    """Write delphi's results layout; return the written paths.

    delphi keeps one explanation per latent: with one explainer (or `explainer=` given) the
    files go straight into `out_dir`; with several, each explainer gets `out_dir/<explainer>/`.
    Shuffled controls (`<explainer>~shuffled`) are left out unless `include_controls`.
    """
    latents = coder_latents(results, coder_id)
    names = exported_explainers(results, explainer, include_controls=include_controls)
    root = Path(out_dir)
    flat = len(names) == 1
    paths: list[Path] = []
    gaps: dict[str, Any] = {}
    for name in names:
        check_name("explainer", name)
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
    write_manifest(
        root,
        results,
        "delphi",
        {"explainers": names, "layout": "flat" if flat else "per-explainer", "gaps": gaps},
    )
    return paths


# --- import ---------------------------------------------------------------------------------------

_NAME = re.compile(r"^(?P<hook>.+)_latent(?P<index>\d+)\.txt$")


def _parse_name(path: Path) -> tuple[str, int]:
    match = _NAME.match(path.name)
    if match is None:
        raise InteropFormatError(f"{path}: a delphi result file is named <hook>_latent<index>.txt")
    return match["hook"], int(match["index"])


def _explanation_text(path: Path) -> str:
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InteropFormatError(f"{path}: cannot read this delphi explanation ({e})") from e
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # some delphi versions wrote the bare text
    if not isinstance(value, str) or not value.strip():
        raise InteropFormatError(f"{path}: a delphi explanation is a non-empty (JSON) string")
    return value.strip()


def _explanation_folders(root: Path) -> list[tuple[str, Path]]:
    if not root.is_dir():
        raise InteropFormatError(f"{root}: no such folder (delphi results)")
    if (root / "explanations").is_dir():
        return [("delphi", root / "explanations")]
    found = [
        (sub.name, sub / "explanations")
        for sub in sorted(root.iterdir())
        if (sub / "explanations").is_dir()
    ]
    if not found:
        raise InteropFormatError(
            f"{root}: no `explanations/` folder here or in its subfolders (delphi results)"
        )
    return found


def load_delphi_explanations(path: str | Path) -> ImportedExplanations:
    """Explanations from a delphi results folder, keyed by (hook, latent).

    delphi's own layout (or one explainer of ours) is named `delphi`; a folder of per-explainer
    subfolders (our export of several explainers) is named by subfolder."""
    root = Path(path)
    items = []
    for explainer, folder in _explanation_folders(root):
        for file in sorted(folder.glob("*.txt")):
            hook, index = _parse_name(file)
            text = _explanation_text(file)
            items.append(ImportedExplanation(hook, index, text, explainer))
    return collect(items, root)


@dataclass(frozen=True)
class DelphiScore:
    """One delphi score file: its per-example records and their accuracy (correct among the
    records with a prediction; None when none has one)."""

    hook: str
    index: int
    scorer: str
    records: tuple[dict[str, Any], ...]

    @property
    def accuracy(self) -> float | None:
        judged = [r for r in self.records if r.get("prediction") is not None]
        if not judged:
            return None
        return sum(bool(r.get("correct")) for r in judged) / len(judged)


def load_delphi_scores(path: str | Path) -> list[DelphiScore]:
    """The score files under `path/scores/<scorer>/` (delphi's per-example records)."""
    root = Path(path) / "scores"
    if not root.is_dir():
        raise InteropFormatError(f"{Path(path)}: no `scores/` folder (delphi results)")
    out = []
    for scorer_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(scorer_dir.glob("*.txt")):
            hook, index = _parse_name(file)
            rows = read_json_file(file, "delphi score")
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise InteropFormatError(f"{file}: a delphi score is a JSON list of objects")
            bad = [n for n, r in enumerate(rows) if "correct" not in r or "activating" not in r]
            if bad:
                raise InteropFormatError(f"{file}: record {bad[0]} lacks `activating` or `correct`")
            out.append(DelphiScore(hook, index, scorer_dir.name, tuple(rows)))
    return out
