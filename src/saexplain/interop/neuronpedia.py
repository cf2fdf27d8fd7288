"""Neuronpedia: explanation batches, both ways.

Export (`export_neuronpedia`): `<out>/<modelId>/<source>/explanations/batch-<n>.jsonl.gz`, one
JSON object per line with `modelId`, `layer` (the source id, e.g. `8-res-jb`), `index` (a
string), `description`, `typeName` and `explanationModelName`. Only ok explanations are exported;
scores are not part of Neuronpedia's explanation export. `explanationModelName` is the model that
wrote each explanation: the model of its `llm` (`"litellm:gpt-4o-mini"` gives `gpt-4o-mini`); for
an explainer that asks no LLM, the subject model for `selfexplain` (the model explains itself) and
the explainer's name otherwise.

Import (`load_neuronpedia_explanations`): a batch file (`.jsonl.gz` or `.jsonl`) or a folder
holding them (searched recursively), as Neuronpedia's bulk export lays them out. Each row needs
`layer`, `index` and `description`; `typeName` (the explainer, e.g. `oai_token-act-pair`) and
`explanationModelName` are kept; other fields (ids, dates) are ignored. The explanations are
keyed by (`layer`, index) and score like any others as the `given` explainer.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saexplain.errors import ConfigError
from saexplain.files import save
from saexplain.interop._common import (
    ImportedExplanation,
    ImportedExplanations,
    InteropFormatError,
    check_name,
    coder_latents,
    collect,
    exported_explainers,
    latent_index,
    write_manifest,
)
from saexplain.models import Explanation, Status

if TYPE_CHECKING:
    from saexplain.report.results import RunResults

__all__ = [
    "SUBJECT_MODEL_EXPLAINERS",
    "export_neuronpedia",
    "load_neuronpedia_explanations",
    "neuronpedia_type_name",
]


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
    include_controls: bool = False,
) -> list[Path]:
    """Write gzipped JSONL batches of explanation rows; return the batch paths.

    `model_id` and `source` are Neuronpedia's ids (e.g. `gpt2-small`, `8-res-jb`).
    `explainer_model` overrides the explanation model name (default: the model of each
    explanation's `llm`; for an LLM-free explainer the subject model (`selfexplain`) or the
    explainer's name; for results without provenance, `settings["model"]`, else the run
    config's `explainer_model.model`). `type_names` maps
    explainer names to Neuronpedia type names (e.g. `{"maxact": "np_max-act"}` if your
    settings match that method); the default is `saexplain_<explainer>`. Shuffled controls
    (`<explainer>~shuffled`) are left out unless `include_controls`.
    """
    check_name("model_id", model_id)
    check_name("source", source)
    if batch_size < 1:
        raise ConfigError("batch_size must be at least 1")
    rows = []
    skipped = 0
    names = set(exported_explainers(results, None, include_controls=include_controls))
    for res in coder_latents(results, coder_id):
        for name, exp in res.explanations.items():
            if name not in names:
                continue
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
        paths.append(save(folder / f"batch-{n}.jsonl.gz", data))
    write_manifest(
        Path(out_dir),
        results,
        "neuronpedia",
        {"model_id": model_id, "source": source, "rows": len(rows), "skipped_not_ok": skipped},
    )
    return paths


# --- import ---------------------------------------------------------------------------------------

_BATCH_SUFFIXES = (".jsonl.gz", ".jsonl")


def _batch_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InteropFormatError(f"{path}: no such file or folder (Neuronpedia explanations)")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(_BATCH_SUFFIXES))
    if not files:
        raise InteropFormatError(f"{path}: no Neuronpedia batch files (*.jsonl.gz, *.jsonl)")
    return files


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                yield from enumerate(f.read().splitlines(), 1)
        else:
            yield from enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
    except (OSError, EOFError, UnicodeDecodeError) as e:  # gzip errors are OSErrors
        raise InteropFormatError(f"{path}: cannot read this Neuronpedia batch ({e})") from e


def _row(path: Path, number: int, line: str) -> dict[str, Any]:
    where = f"{path}:{number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise InteropFormatError(f"{where}: not JSON ({e.msg})") from e
    if not isinstance(row, dict):
        raise InteropFormatError(f"{where}: a Neuronpedia row is a JSON object")
    for key in ("layer", "description"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise InteropFormatError(f"{where}: `{key}` must be a non-empty string")
    if "index" not in row:
        raise InteropFormatError(f"{where}: missing `index` (the latent)")
    return row


def load_neuronpedia_explanations(
    path: str | Path, *, model_id: str | None = None
) -> ImportedExplanations:
    """Explanations from Neuronpedia explanation batches (a file, or a folder of them).

    Keyed by (source, latent): `result.given(source="8-res-jb")` is what `sx.score(...,
    explanations=)` takes. With rows of several models, choose one with `model_id`.
    Malformed input raises `InteropFormatError` naming the file, line and problem.
    """
    root = Path(path)
    items: list[ImportedExplanation] = []
    models: set[str] = set()
    for file in _batch_files(root):
        for number, line in _lines(file):
            if not line.strip():
                continue
            row = _row(file, number, line)
            row_model = row.get("modelId")
            if isinstance(row_model, str):
                models.add(row_model)
            if model_id is not None and row_model != model_id:
                continue
            type_name = row.get("typeName")
            author = row.get("explanationModelName")
            items.append(
                ImportedExplanation(
                    source=row["layer"],
                    index=latent_index(row["index"], f"{file}:{number}"),
                    text=row["description"].strip(),
                    explainer=type_name if isinstance(type_name, str) and type_name else "unknown",
                    model=author if isinstance(author, str) and author else None,
                )
            )
    if model_id is None and len(models) > 1:
        raise ConfigError(
            f"{root} holds explanations of several models ({', '.join(sorted(models))}); "
            "choose one with model_id="
        )
    return collect(items, root)
