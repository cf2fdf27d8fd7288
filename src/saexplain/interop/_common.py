"""What every format module shares: the imported-explanation model, file reading with errors that
name the file, the export manifest, and the run's latents of one coder."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saexplain import files
from saexplain.errors import ConfigError
from saexplain.models import Score, Status
from saexplain.rundir import control_of

if TYPE_CHECKING:  # saexplain.report imports this package (its exports live here): no cycle
    from saexplain.report.results import LatentResult, RunResults

EXPORT_MANIFEST = "saexplain_export.json"


class InteropFormatError(ConfigError):
    """A file is not in the format it was read as; the message names the file and the problem."""


class ExportGapWarning(UserWarning):
    """Part of a result could not be exported (e.g. scored items without their examples)."""


def valid_value(score: Score) -> float | None:
    """A score's headline value if it counts as an answer: ok and finite (as the report)."""
    if score.status is not Status.OK or score.value is None or not math.isfinite(score.value):
        return None
    return float(score.value)


def check_name(kind: str, value: str) -> None:
    """A value that becomes a file or folder name: non-empty, no path separators."""
    if not value or "/" in value or "\\" in value or value in (".", ".."):
        raise ConfigError(f"{kind} {value!r} must be a non-empty name without path separators")


def exported_explainers(
    results: RunResults, explainer: str | None, *, include_controls: bool = False
) -> list[str]:
    """The explainers an export writes: `explainer` if given (it must be in the run), else
    every explainer of the run. Shuffled controls (`<explainer>~shuffled`, another latent's
    explanation on purpose) are never exported as explanations unless `include_controls`."""
    names = results.explainers
    if explainer is not None:
        if explainer not in names:
            raise ConfigError(
                f"explainer {explainer!r} not in this run; explainers: {', '.join(names)}"
            )
        if control_of(explainer) is not None and not include_controls:
            raise ConfigError(
                f"{explainer!r} is a shuffled control (another latent's explanation), not an "
                "explanation; pass include_controls=True to export it anyway"
            )
        return [explainer]
    return [n for n in names if include_controls or control_of(n) is None]


def coder_latents(results: RunResults, coder_id: str | None) -> list[LatentResult]:
    """The run's latents of `coder_id` (None: the run's only coder)."""
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


def write_manifest(out_dir: Path, results: RunResults, fmt: str, extra: Mapping[str, Any]) -> Path:
    """`saexplain_export.json` beside an export: versions, the run's manifest, what was left out."""
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
    return files.save(out_dir / EXPORT_MANIFEST, text)


def read_json_file(path: Path, what: str) -> Any:
    """The JSON value in `path`; an unreadable or invalid file is an `InteropFormatError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InteropFormatError(f"{path}: cannot read this {what} file ({e})") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InteropFormatError(f"{path}: not JSON ({e.msg}, line {e.lineno}); {what}") from e


def latent_index(value: object, where: str) -> int:
    """A latent index given as an int or a string of digits (Neuronpedia, SAEBench keys)."""
    if isinstance(value, bool):
        raise InteropFormatError(f"{where}: latent index {value!r} is not an integer")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise InteropFormatError(f"{where}: latent index {value!r} is not a non-negative integer")


@dataclass(frozen=True)
class ImportedExplanation:
    """One explanation read from another tool's files.

    `source` is the SAE (or layer) the latent belongs to as that tool names it: Neuronpedia's
    source id (`8-res-jb`), delphi's hook, SAEBench's `sae_id`, neuron-explainer's layer.
    """

    source: str
    index: int
    text: str
    explainer: str  # the method as the other tool names it (typeName, delphi folder, ...)
    model: str | None = None  # the model that wrote it, when recorded
    score: float | None = None  # the other tool's own score, when the format carries one

    @property
    def key(self) -> tuple[str, int]:
        return (self.source, self.index)


@dataclass(frozen=True)
class ImportedExplanations:
    """Explanations read from a file or folder, keyed by (source, latent index).

    `given()` turns them into what the `given` explainer takes (`sx.score(..., explanations=)`,
    `saexplain.api.given_explanations`): latent index -> text for one source and one explainer;
    `write_jsonl(path)` writes the file `saexplain score CONFIG FILE.jsonl` reads.
    """

    items: tuple[ImportedExplanation, ...]
    path: Path

    def __iter__(self) -> Iterator[ImportedExplanation]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def sources(self) -> list[str]:
        return sorted({e.source for e in self.items})

    @property
    def explainers(self) -> list[str]:
        return sorted({e.explainer for e in self.items})

    def by_key(self, explainer: str | None = None) -> dict[tuple[str, int], str]:
        """(source, latent index) -> text, for one explainer (None: the only one)."""
        name = self._one("explainer", self.explainers, explainer)
        return {e.key: e.text for e in self.items if e.explainer == name}

    def given(self, source: str | None = None, explainer: str | None = None) -> dict[int, str]:
        """Latent index -> text for one source and one explainer (None: the only one), ready
        for `sx.score(model, sae, explanations=...)`."""
        src = self._one("source", self.sources, source)
        name = self._one("explainer", self.explainers, explainer)
        return {e.index: e.text for e in self.items if e.source == src and e.explainer == name}

    def write_jsonl(
        self, path: str | Path, source: str | None = None, explainer: str | None = None
    ) -> Path:
        """The explanations of `given()` as JSONL, one `{"latent": i, "explanation": text}` a
        line: the input of `saexplain score CONFIG FILE.jsonl`."""
        texts = self.given(source, explainer)
        lines = "".join(
            json.dumps({"latent": i, "explanation": t}, ensure_ascii=False) + "\n"
            for i, t in sorted(texts.items())
        )
        return files.save(path, lines)

    def _one(self, kind: str, options: list[str], chosen: str | None) -> str:
        if chosen is not None:
            if chosen not in options:
                raise ConfigError(
                    f"{self.path}: no {kind} {chosen!r}; {kind}s: {', '.join(options) or 'none'}"
                )
            return chosen
        if len(options) != 1:
            raise ConfigError(
                f"{self.path} holds {len(options)} {kind}s ({', '.join(options) or 'none'}); "
                f"choose one with {kind}="
            )
        return options[0]


def collect(items: Iterable[ImportedExplanation], path: Path) -> ImportedExplanations:
    """The imported explanations; a latent explained twice by one explainer is an error."""
    seen: dict[tuple[str, int, str], ImportedExplanation] = {}
    for item in items:
        key = (item.source, item.index, item.explainer)
        if key in seen:
            raise InteropFormatError(
                f"{path}: latent {item.index} of {item.source} has two {item.explainer!r} "
                "explanations"
            )
        seen[key] = item
    if not seen:
        raise InteropFormatError(f"{path}: holds no explanations")
    return ImportedExplanations(items=tuple(seen.values()), path=path)
