"""A run's results, read from a run directory or built from in-memory lists.

    results = RunResults.load("runs/demo")       # tolerant of a run still in progress
    results[12].explanation("maxact")            # per-latent access
    results.table()                              # one dict per latent
    results.to_dataframe()                       # needs pandas
    results.to_pandas(); results.to_parquet(out) # tidy: a row per score (saexplain[pandas])
    results.summary()                            # per-method statistics (see summary.py)

Run directory files (any may be missing): `config.json`, `manifest.json`, `records.jsonl`,
`latents.jsonl`, `explanations.jsonl`, `scores.jsonl`, read as a resumed run reads them (see
`saexplain.rundir`): when a key appears twice the last line wins; a last line cut short by a
crash mid-write is dropped with a `TruncatedLineWarning`; a damaged line anywhere else raises
`RunFormatError` (`saexplain.errors.RunDirError`) naming the file and line.

When the manifest names the methods' current configurations (`saexplain.rundir.MethodIds`),
only their results are shown: results of an earlier configuration (another model, prompt
version or setting) stay in the files but are not attributed to the current one.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from saexplain.errors import RunDirError
from saexplain.models import Explanation, LatentRecord, LatentRef, LatentStats, Score, Status
from saexplain.rundir import (
    CONFIG_FILE,
    EXPLANATIONS_FILE,
    LATENTS_FILE,
    MANIFEST_FILE,
    RECORDS_FILE,
    REPORT_FILE,
    SCORES_FILE,
    SUMMARY_FILE,
    LatentEntry,
    LatentKey,
    MethodIds,
    TruncatedLineWarning,
    latent_key,
    read_json,
    read_jsonl,
)

__all__ = [
    "CONFIG_FILE",
    "EXPLANATIONS_FILE",
    "LATENTS_FILE",
    "MANIFEST_FILE",
    "RECORDS_FILE",
    "REPORT_FILE",
    "SCORES_FILE",
    "SUMMARY_FILE",
    "LatentEntry",
    "LatentKey",
    "LatentResult",
    "RunFormatError",
    "RunResults",
    "TruncatedLineWarning",
    "latent_key",
    "read_jsonl",
    "valid_value",
]

RunFormatError = RunDirError  # the report's name for it, kept for callers


def valid_value(score: Score) -> float | None:
    """A score's headline value if it counts as an answer: status ok and a finite number."""
    if score.status is not Status.OK or score.value is None or not math.isfinite(score.value):
        return None
    return float(score.value)


def _clip(text: str, limit: int = 80) -> str:
    """`text` on one line, cut to `limit` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass(frozen=True, repr=False)  # the record holds hundreds of examples: a short repr below
class LatentResult:
    """Everything known about one latent in a run."""

    latent: LatentRef
    status: str | None = None  # from latents.jsonl; None when the run did not record it
    reason: str | None = None
    stats: LatentStats | None = None
    info: Mapping[str, Any] = field(default_factory=dict)  # latents.jsonl's other fields
    record: LatentRecord | None = None
    explanations: Mapping[str, Explanation] = field(default_factory=dict)  # by explainer
    scores: Mapping[tuple[str, str], Score] = field(default_factory=dict)  # (explainer, scorer)

    @property
    def index(self) -> int:
        return self.latent.index

    def explanation(self, explainer: str) -> str | None:
        """The explanation text of an explainer, or None when it is missing or failed."""
        exp = self.explanations.get(explainer)
        return exp.text if exp is not None and exp.status is Status.OK else None

    def score(self, explainer: str, scorer: str) -> float | None:
        """A scorer's headline value for an explainer's explanation (None: missing or error)."""
        s = self.scores.get((explainer, scorer))
        return None if s is None else valid_value(s)

    def _lines(self) -> list[tuple[str, str, str]]:
        """(explainer, explanation or why there is none, its scores) for each explainer."""
        lines = []
        for name, exp in self.explanations.items():
            if exp.status is Status.OK:
                text = _clip(exp.text)
            else:
                text = f"{exp.status.value} ({_clip(exp.error or '', 60)})"
            scores = ", ".join(
                f"{scorer}={'-' if (v := self.score(name, scorer)) is None else f'{v:.3g}'}"
                for (explainer, scorer) in self.scores
                if explainer == name
            )
            lines.append((name, text, scores))
        return lines

    def __repr__(self) -> str:
        """A few lines: the latent, its status and firing count, each explanation (clipped)
        and its scores; the examples are in `record` (and in `_repr_html_`)."""
        head = f"LatentResult({self.latent} at {self.latent.hook}, status {self.status or '-'}"
        if self.stats is not None:
            head += f", fired on {self.stats.count} of {self.stats.n_tokens} tokens"
        lines = [head + ")"]
        for name, text, scores in self._lines():
            lines.append(f"  {name}: {text}" + (f"  [{scores}]" if scores else ""))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """A card for Jupyter: the explanations, their scores and the top explanation
        examples, every token coloured by its activation as in the HTML report (the value on
        hover); everything from the data escaped."""
        from html import escape

        from saexplain.report.html import example_html

        ref = self.latent
        facts = [f"status {self.status or '-'}"]
        if self.stats is not None:
            facts.append(f"fired on {self.stats.count} of {self.stats.n_tokens} tokens")
        rows = "".join(
            f"<tr><td>{escape(name)}</td><td>{escape(text)}</td><td>{escape(scores)}</td></tr>"
            for name, text, scores in self._lines()
        )
        parts = [
            f"<div><strong>Latent {ref.index}</strong> "
            f"<span>{escape(ref.coder_id)} · {escape(ref.hook)} · {escape(', '.join(facts))}"
            "</span>",
            f"<table><tr><th>explainer</th><th>explanation</th><th>scores</th></tr>{rows}</table>"
            if rows
            else "",
        ]
        if self.record is not None and self.record.explanation_examples:
            top = sorted(self.record.explanation_examples, key=lambda e: -e.max_activation)[:3]
            latent_max = self.stats.max if self.stats is not None else None
            examples = "".join(example_html(e, latent_max=latent_max) for e in top)
            parts.append(f"<div>{examples}</div>")
        parts.append("</div>")
        return "".join(parts)


def _as_dict(value: Mapping[str, Any] | BaseModel | None) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, BaseModel):
        dumped: dict[str, Any] = value.model_dump(mode="json")
        return dumped
    return dict(value)


def _names_in_order(configured: Iterable[str], seen: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*configured, *seen]))  # first occurrence wins, order kept


def _configured(config: Mapping[str, Any], key: str) -> list[str]:
    specs = config.get(key) or []
    if isinstance(specs, str | dict):
        specs = [specs]
    names = []
    for spec in specs:
        name = spec.get("name") if isinstance(spec, dict) else spec
        if isinstance(name, str):
            names.append(name)
    return names


class RunResults:
    """The results of one run: latents, records, explanations and scores, keyed and de-duplicated.

    Duplicates resolve as on disk: the last explanation per (latent, explainer), the last score
    per (latent, scorer, explainer), the last record and latents.jsonl entry per latent win.
    Results of a method configuration other than the one the manifest names are left out.
    """

    def __init__(
        self,
        *,
        records: Iterable[LatentRecord] = (),
        explanations: Iterable[Explanation] = (),
        scores: Iterable[Score] = (),
        latents: Iterable[LatentEntry | Mapping[str, Any]] = (),
        config: Mapping[str, Any] | BaseModel | None = None,
        manifest: Mapping[str, Any] | BaseModel | None = None,
        run_dir: str | Path | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        self.config: dict[str, Any] = _as_dict(config)
        self.manifest: dict[str, Any] = _as_dict(manifest)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.notes: list[str] = list(notes)  # problems met while loading (skipped lines)
        self._entries: dict[LatentKey, LatentEntry] = {}
        for entry in latents:
            e = entry if isinstance(entry, LatentEntry) else LatentEntry.model_validate(entry)
            self._entries[latent_key(e.latent)] = e
        self._records: dict[LatentKey, LatentRecord] = {latent_key(r.latent): r for r in records}
        # every line read, earlier attempts and configurations included: what the run paid for
        self.explanation_lines: list[Explanation] = list(explanations)
        self.score_lines: list[Score] = list(scores)
        explanations, scores = self.explanation_lines, self.score_lines
        ids = MethodIds.from_manifest(self.manifest)
        if ids is not None:
            explanations = [e for e in explanations if ids.is_current(e)]
            scores = [s for s in scores if ids.is_current(s)]
        self._explanations: dict[LatentKey, dict[str, Explanation]] = {}
        for exp in explanations:
            self._explanations.setdefault(latent_key(exp.latent), {})[exp.explainer] = exp
        self._scores: dict[LatentKey, dict[tuple[str, str], Score]] = {}
        for s in scores:
            self._scores.setdefault(latent_key(s.latent), {})[(s.explainer, s.scorer)] = s
        self._refs: dict[LatentKey, LatentRef] = {}
        # order: the pipeline's selection order, then anything else in order of appearance
        for key, entry in self._entries.items():
            self._refs[key] = entry.latent
        for source in (self._records, self._explanations, self._scores):
            for key in source:
                if key not in self._refs:
                    self._refs[key] = LatentRef(coder_id=key[0], hook=key[1], index=key[2])

    # --- loading ----------------------------------------------------------------------------

    @classmethod
    def load(cls, run_dir: str | Path) -> RunResults:
        """Read a run directory as a resumed run reads it: missing files are empty, a torn last
        line is dropped, a damaged line raises `RunFormatError`."""
        path = Path(run_dir)
        if not path.is_dir():
            raise FileNotFoundError(f"run directory not found: {path}")
        notes: list[str] = []
        return cls(
            records=read_jsonl(path / RECORDS_FILE, LatentRecord, notes=notes),
            explanations=read_jsonl(path / EXPLANATIONS_FILE, Explanation, notes=notes),
            scores=read_jsonl(path / SCORES_FILE, Score, notes=notes),
            latents=read_jsonl(path / LATENTS_FILE, LatentEntry, notes=notes),
            config=read_json(path / CONFIG_FILE),
            manifest=read_json(path / MANIFEST_FILE),
            run_dir=path,
            notes=notes,
        )

    # --- access -----------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The run directory these results were loaded from."""
        if self.run_dir is None:
            raise ValueError("these results were built in memory and have no run directory")
        return self.run_dir

    @property
    def latents(self) -> list[LatentRef]:
        return list(self._refs.values())

    @property
    def explainers(self) -> list[str]:
        """Explainer names: the configured order first, then any others found."""
        seen = dict.fromkeys(name for per in self._explanations.values() for name in per)
        seen |= dict.fromkeys(e for per in self._scores.values() for (e, _) in per)
        return _names_in_order(_configured(self.config, "explainers"), seen)

    @property
    def scorers(self) -> list[str]:
        seen = dict.fromkeys(s for per in self._scores.values() for (_, s) in per)
        return _names_in_order(_configured(self.config, "scorers"), seen)

    @property
    def methods(self) -> list[tuple[str, str]]:
        """(explainer, scorer) pairs that have at least one score, in configured order."""
        present = {pair for per in self._scores.values() for pair in per}
        return [(e, s) for e in self.explainers for s in self.scorers if (e, s) in present]

    @property
    def explanations(self) -> list[Explanation]:
        return [e for per in self._explanations.values() for e in per.values()]

    @property
    def scores(self) -> list[Score]:
        return [s for per in self._scores.values() for s in per.values()]

    @property
    def records(self) -> list[LatentRecord]:
        return list(self._records.values())

    @property
    def seed(self) -> int:
        for source in (self.manifest, self.config):
            value = source.get("seed")
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return 0

    def result(self, latent: LatentRef | LatentKey) -> LatentResult:
        key = latent_key(latent) if isinstance(latent, LatentRef) else latent
        if key not in self._refs:
            raise KeyError(f"latent {key} is not in this run")
        entry = self._entries.get(key)
        record = self._records.get(key)
        stats = entry.stats if entry is not None and entry.stats is not None else None
        if stats is None and record is not None:
            stats = record.stats
        return LatentResult(
            latent=self._refs[key],
            status=None if entry is None else entry.status,
            reason=None if entry is None else entry.reason,
            stats=stats,
            info={} if entry is None else dict(entry.extra),
            record=record,
            explanations=dict(self._explanations.get(key, {})),
            scores=dict(self._scores.get(key, {})),
        )

    def __getitem__(self, item: int | str | LatentRef) -> LatentResult:
        """By latent index (when unique across coders), `LatentRef`, or key `<hook>_latent<i>`."""
        if isinstance(item, LatentRef):
            return self.result(item)
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise TypeError(f"index results by int, str or LatentRef, not {type(item).__name__}")
        if isinstance(item, int):
            matches = [k for k in self._refs if k[2] == item]
        else:
            matches = [k for k, ref in self._refs.items() if ref.key == item or str(ref) == item]
        if not matches:
            raise KeyError(f"latent {item!r} is not in this run")
        if len(matches) > 1:
            options = ", ".join(str(self._refs[k]) for k in matches)
            raise KeyError(f"latent {item!r} is ambiguous ({options}); index by LatentRef")
        return self.result(matches[0])

    def __iter__(self) -> Iterator[LatentResult]:
        for key in self._refs:
            yield self.result(key)

    def __len__(self) -> int:
        return len(self._refs)

    # --- views ------------------------------------------------------------------------------

    @property
    def latent_filters(self) -> dict[LatentRef, dict[str, Any]]:
        """Each latent's filter findings (flags, positional MI, unigram check), for the latents
        the run computed them for (`filters:` in the config)."""
        return {
            self._refs[key]: dict(e.filters)
            for key, e in self._entries.items()
            if e.filters is not None
        }

    def search(self, query: str, k: int = 10, **kwargs: Any) -> list[Any]:
        """The `k` explanations nearest to `query` (`saexplain.analysis.search`)."""
        from saexplain.analysis.search import search

        return list(search(self, query, k, **kwargs))

    def table(self) -> list[dict[str, Any]]:
        """One row per latent: coder, hook, latent index, status, each explainer's text
        (column named after the explainer) and each `explainer/scorer` value (None: missing
        or error)."""
        explainers, methods = self.explainers, self.methods
        rows = []
        for res in self:
            row: dict[str, Any] = {
                "coder": res.latent.coder_id,
                "hook": res.latent.hook,
                "latent": res.latent.index,
                "status": res.status,
            }
            for name in explainers:
                row[name] = res.explanation(name)
            for e, s in methods:
                row[f"{e}/{s}"] = res.score(e, s)
            rows.append(row)
        return rows

    def to_dataframe(self) -> Any:
        """The `table()` rows as a pandas DataFrame (pandas is optional: `pip install pandas`)."""
        try:
            pd = importlib.import_module("pandas")  # optional dependency, imported on use
        except ImportError as exc:
            raise ImportError(
                "RunResults.to_dataframe needs pandas; install it with `pip install pandas`"
            ) from exc
        rows = self.table()
        columns = ["coder", "hook", "latent", "status", *self.explainers]
        columns += [f"{e}/{s}" for e, s in self.methods]
        return pd.DataFrame(rows, columns=columns)

    def to_pandas(self) -> Any:
        """Explanations and scores as one tidy DataFrame: a row per (latent, explainer, scorer),
        and one with `scorer` missing per unscored explanation (`saexplain.interop.tables`;
        needs `saexplain[pandas]`). `to_dataframe` is the wide table, a row per latent."""
        from saexplain.interop.tables import to_pandas

        return to_pandas(self)

    def to_parquet(self, out_dir: str | Path) -> Path:
        """Write `to_pandas()` to `<out_dir>/results.parquet` (needs `saexplain[pandas]`)."""
        from saexplain.interop.tables import to_parquet

        return to_parquet(self, out_dir)

    def summary(self, *, n_resamples: int = 2000, seed: int | None = None) -> dict[str, Any]:
        """Per-method statistics (see `saexplain.report.summary.summarize`)."""
        from saexplain.report.summary import summarize

        return summarize(self, n_resamples=n_resamples, seed=seed)

    def _repr_html_(self) -> str:
        from saexplain.report.html import results_table_html

        return results_table_html(self, max_rows=50)

    def __repr__(self) -> str:
        from saexplain.report.table import format_table

        head = (
            f"RunResults({len(self)} latents; explainers: {', '.join(self.explainers) or '-'}; "
            f"scorers: {', '.join(self.scorers) or '-'})"
        )
        return f"{head}\n{format_table(self, width=100, max_rows=20, summary=False)}"
