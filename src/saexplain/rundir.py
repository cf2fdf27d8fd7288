"""The run directory: the one owner of what a run writes and of how it is read back.

    <run>/config.json          the resolved RunConfig, secrets redacted
    <run>/manifest.json        saexplain and plugin versions, seeds, model, coder, BOS policy,
                               and each method's configuration id (`MethodIds`)
    <run>/run.lock             held (flock) by the process running the run
    <run>/latents.jsonl        one `LatentEntry` per selected latent: its fate (ok / rare / dead)
    <run>/records.jsonl        one `LatentRecord` per latent
    <run>/explanations.jsonl   one `Explanation` per (latent, explainer, configuration)
    <run>/scores.jsonl         one `Score` per (latent, explainer, scorer, configuration)
    <run>/logs/<latent>.jsonl  prompts and responses, when `log_prompts` is on
    <run>/flags.json           generic answers many latents share, per explainer; scores
                               that gave one answer to every item, per scorer
    <run>/summary.json, <run>/report/ (the HTML report), <run>/report.html (points to it)
    <run>/spend.json           money, calls, retries and provider errors of every attempt at the
                               run (the run's `Ledger`): the spend cap covers reruns too
    <run>/batches.jsonl        with a provider's `batch` on: each submitted batch's id and the
                               content keys of its requests (`saexplain.providers.batch`)

Writing: each JSONL line is written with one `write` and flushed (and fsynced) before the next,
so a line is committed once its newline is on disk. JSON files are replaced atomically.

Reading (`read_jsonl`), with one policy for the resumed run and for the report alike:
- a last line without its newline is a write cut short by a crash: it is dropped, with a
  `TruncatedLineWarning` (a reopened log also truncates it, so the next append starts cleanly);
- any other line that is not JSON, or that the file's line model rejects, is damage no crash
  causes: `RunDirError` names the file and line and says how to recover. Skipping it would
  silently pay for its results again, or report a run with a hole in it.
- when a key appears twice, the last line wins.

Keys: a latent is keyed by `latent_key(ref)`, `(coder id, hook, index)`. `LatentRef.key`
(`<hook>_latent<i>`, delphi style) names files and seeds; it is unique within one coder only.
A result is keyed by its latent, its method names and its `method_id`: a digest of the method's
configuration (its recorded settings, prompt versions included, and the provider and model it
asks), so a rerun with another model or setting makes new results beside the old ones, never
relabels them. `MethodIds` (in `manifest.json`) names the current configuration; the report
shows its results.

Final results (`is_final`) are skipped on resume: `ok` and `failed`, except a partial score (ok
with errored items, `Score.partial`), which is retried like an `error`.

Identity: two configs are the same run when the settings in `DATA_FIELDS` (what the store and
the records hold) agree, the fingerprints of the weights and data passed as objects included
(`RunConfig.fingerprints`, `saexplain.fingerprint`); `config_digest` hashes them (so an unnamed
run of other weights gets another directory) and `RunDir.check_same_run` refuses a run
directory that holds another run's data (while it holds none, the identity may change).

One run at a time: `RunDir.lock` holds an exclusive lock on `run.lock` for the run (released by
the OS when the process ends, however it ends); a second process fails at once, naming the pid.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, NonNegativeInt, ValidationError

from saexplain.errors import ConfigError, RunDirBusyError, RunDirError
from saexplain.files import atomic_write_text, writing
from saexplain.models import (
    Explanation,
    Frozen,
    LatentRecord,
    LatentRef,
    LatentStats,
    RunConfig,
    Score,
    Status,
)
from saexplain.secrets import redact_secrets

CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
LATENTS_FILE = "latents.jsonl"
RECORDS_FILE = "records.jsonl"
EXPLANATIONS_FILE = "explanations.jsonl"
SCORES_FILE = "scores.jsonl"
SUMMARY_FILE = "summary.json"
FLAGS_FILE = "flags.json"
REPORT_FILE = "report.html"  # points to REPORT_DIR/index.html
REPORT_DIR = "report"  # the HTML report folder (saexplain.report.html)
SPEND_FILE = "spend.json"
LOCK_FILE = "run.lock"
LOGS_DIR = "logs"
STORE_DIR = "store"  # the run's own activation store, unless `store_dir` puts it elsewhere

FILES = {
    "config": CONFIG_FILE,
    "manifest": MANIFEST_FILE,
    "latents": LATENTS_FILE,
    "records": RECORDS_FILE,
    "explanations": EXPLANATIONS_FILE,
    "scores": SCORES_FILE,
    "summary": SUMMARY_FILE,
    "flags": FLAGS_FILE,
    "report": REPORT_FILE,
    "spend": SPEND_FILE,
    "lock": LOCK_FILE,
}

# Settings that decide what the store and the records hold: a run directory keeps them fixed.
DATA_FIELDS = (
    "model",
    "coder",  # a one-coder run (see `identity`)
    "coder_settings",
    "coders",  # a run of several coders: each one's spec and settings, in order
    "dataset",
    "text_field",
    "split",
    "n_tokens",
    "context_length",
    "prepend_bos",
    "seed",
    "records",
    "fingerprints",  # of the weights and data passed as objects (`saexplain.fingerprint`)
)

M = TypeVar("M", bound=BaseModel)
LatentKey = tuple[str, str, int]  # (coder_id, hook, index): unique across coders


class TruncatedLineWarning(UserWarning):
    """The last line of a JSONL file was cut short by a crash mid-write; it was dropped."""


def latent_key(ref: LatentRef) -> LatentKey:
    """The key of a latent in a run directory: its coder id, hook and index."""
    return (ref.coder_id, ref.hook, ref.index)


# The run-level chance baseline: `<explainer>~shuffled` holds, for each latent, the explanation
# that explainer gave another latent (evidence "shuffled_from"), scored like any explanation.
SHUFFLED_SUFFIX = "~shuffled"
# the error text of a score line the run skipped because its explanation was flagged generic
SKIPPED_GENERIC = "skipped: generic explanation"


def control_name(explainer: str) -> str:
    """The pseudo explainer holding `explainer`'s shuffled-explanation controls."""
    return f"{explainer}{SHUFFLED_SUFFIX}"


def control_of(explainer: str) -> str | None:
    """The explainer whose controls `explainer` holds; None when it is not a control."""
    return explainer.removesuffix(SHUFFLED_SUFFIX) if explainer.endswith(SHUFFLED_SUFFIX) else None


ExplanationKey = tuple[LatentKey, str, str | None]  # (latent, explainer, method id)
ScoreKey = tuple[LatentKey, str, str, str | None]  # (latent, explainer, scorer, method id)


def explanation_key(e: Explanation) -> ExplanationKey:
    """The key a resumed run skips an explanation by: latent, explainer, configuration."""
    return (latent_key(e.latent), e.explainer, e.method_id)


def score_key(s: Score) -> ScoreKey:
    """The key a resumed run skips a score by: latent, explainer, scorer, configuration."""
    return (latent_key(s.latent), s.explainer, s.scorer, s.method_id)


def is_final(result: Explanation | Score) -> bool:
    """OK and FAILED results are final; ERROR (an outage, a crash) is retried on resume, and so
    is a partial score (ok, but some items errored), which counts until it is replaced."""
    if isinstance(result, Score) and result.partial:
        return False
    return result.status != Status.ERROR


def _digest(data: object) -> str:
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def method_id(name: str, settings: Mapping[str, Any], llm: str | None) -> str:
    """A short digest of a method's configuration: its name, the settings it records (prompt
    versions included) and the LLM it asks ("<provider>:<model>", None when it asks none)."""
    return _digest({"name": name, "settings": dict(settings), "llm": llm})


def score_method_id(scorer_id: str, explanation_id: str | None) -> str:
    """The configuration id of a score: the scorer's, and the one of the explanation it scored
    (a new explanation needs a new score)."""
    return _digest({"scorer": scorer_id, "explanation": explanation_id})


class MethodIdentity(Frozen):
    """A method's configuration as the run records it: its id and the LLM it asks."""

    id: str
    llm: str | None = None


class MethodIds(Frozen):
    """The configuration ids of a run's methods (`manifest.json`'s "methods"): which results
    belong to the current configuration."""

    explainers: dict[str, MethodIdentity] = Field(default_factory=dict)
    scorers: dict[str, MethodIdentity] = Field(default_factory=dict)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any] | None) -> MethodIds | None:
        """The ids a manifest records; None for a run written before they were recorded."""
        data = (manifest or {}).get("methods")
        if not isinstance(data, Mapping):
            return None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise RunDirError(f"{MANIFEST_FILE}: methods: {_reason(exc)}") from exc

    def score_id(self, explainer: str, scorer: str) -> str | None:
        """The id a score of the current configuration has; None if either method is gone."""
        e, s = self.explainers.get(explainer), self.scorers.get(scorer)
        return None if e is None or s is None else score_method_id(s.id, e.id)

    def is_current(self, result: Explanation | Score) -> bool:
        """Whether `result` was made by the current configuration of its method. Results of a
        method the run no longer configures are current (nothing newer replaces them)."""
        if isinstance(result, Explanation):
            if result.explainer not in self.explainers:
                return True
            return result.method_id == self.explainers[result.explainer].id
        if result.explainer not in self.explainers or result.scorer not in self.scorers:
            return True
        return result.method_id == self.score_id(result.explainer, result.scorer)


def identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a config (as JSON) that decide the run's data (`DATA_FIELDS`).

    The coders count by their specs and settings (a coder's `latents` only chooses which latents
    to explain, as the run's `latents` does). A run of one coder is identified as before runs had
    `coders` (`coder`, `coder_settings`), so their directories and names stay valid; a run of
    several by the list: adding, removing or changing any coder changes the identity."""
    data = dict(config)
    specs = data.pop("coders", None)
    if specs is not None:
        coders = [{"coder": c["coder"], "settings": c.get("settings") or {}} for c in specs]
        if len(coders) == 1:
            data["coder"], data["coder_settings"] = coders[0]["coder"], coders[0]["settings"]
        else:
            data["coders"] = coders
    return {k: data[k] for k in DATA_FIELDS if k in data}


def config_digest(config: RunConfig) -> str:
    """A short hash of the settings that decide the run's data (`identity`)."""
    data = identity(config.model_dump(mode="json"))
    return hashlib.blake2b(json.dumps(data, sort_keys=True).encode(), digest_size=4).hexdigest()


class LatentEntry(Frozen):
    """One line of `latents.jsonl`: a selected latent's fate, with or without a record."""

    latent: LatentRef
    status: str = "ok"  # ok, rare, dead (older runs: skipped)
    reason: str | None = None  # why there is no record
    count: NonNegativeInt | None = None  # activating tokens in the store
    n_windows: NonNegativeInt | None = None  # non-overlapping activating windows
    stats: LatentStats | None = None
    # the latent filters' findings (`saexplain.analysis.LatentFilters.to_json`), when computed
    filters: dict[str, Any] | None = None

    @property
    def extra(self) -> dict[str, Any]:
        """The counts, when known, and the filters' flags, when computed (reports show them
        beside the status)."""
        counts = {"count": self.count, "n_windows": self.n_windows}
        out: dict[str, Any] = {k: v for k, v in counts.items() if v is not None}
        if self.filters is not None:
            out["flags"] = list(self.filters.get("flags", []))
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LatentEntry:
        return cls.model_validate(data)

    def to_json(self) -> dict[str, Any]:
        dumped: dict[str, Any] = self.model_dump(mode="json", exclude_unset=True)
        return dumped


# --- reading --------------------------------------------------------------------------------------


def _reason(exc: ValidationError) -> str:
    """What is wrong with a line, on one line (the CLI prints errors on one line)."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    more = exc.error_count() - 1
    text = f"{where}: {first['msg']}" if where else first["msg"]
    return text + (f" (and {more} more)" if more else "")


def _damaged(path: Path, lineno: int, reason: str) -> RunDirError:
    return RunDirError(
        f"{path}:{lineno}: {reason}. Only a last line can be cut short by a crash, so this line "
        f"was damaged otherwise: delete line {lineno} (rerunning the run redoes the work it held) "
        "or restore the file, or start a new run under another `name`"
    )


def _torn(path: Path, lineno: int) -> str:
    return f"{path}: dropped line {lineno}, cut short by a crash mid-write (no newline)"


def read_jsonl(path: Path, model: type[M], *, notes: list[str] | None = None) -> list[M]:
    """Every line of a JSONL file as `model`, under the run directory's one policy: a torn last
    line is dropped (warned, and added to `notes`); a damaged line anywhere else raises
    `RunDirError`. A missing file reads as empty."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    # after the final newline comes b"" or, when a crash cut the last write short, a torn line
    tail = lines.pop()
    out: list[M] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(model.model_validate_json(line))
        except ValidationError as exc:
            raise _damaged(path, lineno, _reason(exc)) from exc
    if tail.strip():
        message = _torn(path, len(lines) + 1)
        warnings.warn(message, TruncatedLineWarning, stacklevel=2)
        if notes is not None:
            notes.append(message)
    return out


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file of the run directory as a dict: None when missing, `RunDirError` when
    damaged (it is written atomically, so no crash tears it)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(
            f"{path}: {exc}; delete it (a rerun writes it again) or restore it"
        ) from exc
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


# --- writing --------------------------------------------------------------------------------------


class JsonlLog:
    """An append-only JSONL file: whole lines only, safe to reopen after a crash."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self._lock = threading.Lock()
        self._repair()

    def _repair(self) -> None:
        """Drop a final line that a crash cut short (no trailing newline), as `read_jsonl` does,
        so that the next append starts on a line of its own."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                kept = data.rfind(b"\n") + 1
                if data[kept:].strip():
                    message = _torn(self.path, data.count(b"\n") + 1)
                    warnings.warn(message, TruncatedLineWarning, stacklevel=3)
                f.truncate(kept)

    @staticmethod
    def encode(obj: BaseModel | Mapping[str, Any]) -> bytes:
        """`obj` as one line; raises (writing nothing) for what JSON in UTF-8 cannot hold, such
        as a lone surrogate in a string."""
        text = obj.model_dump_json() if isinstance(obj, BaseModel) else json.dumps(obj)
        return (text.replace("\n", " ") + "\n").encode("utf-8")

    def append(self, obj: BaseModel | Mapping[str, Any]) -> None:
        """Append `obj` as one line (see `encode`)."""
        self.write_line(self.encode(obj))

    def write_line(self, line: bytes) -> None:
        """Append one line made by `encode`, committed to disk before this returns."""
        with self._lock, writing(self.path), open(self.path, "ab") as f:  # full disk: one line
            f.write(line)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())

    def read(self, model: type[M]) -> list[M]:
        """Every line as `model` (see `read_jsonl`: a damaged line raises `RunDirError`)."""
        return read_jsonl(self.path, model)


def _other_weights(path: Path, old: object, new: Mapping[str, Any]) -> str:
    """Why a run directory made from other weights (or data) cannot be resumed, and what to do."""
    now: Mapping[str, Any] = new.get("fingerprints") or {}
    if not isinstance(old, Mapping):
        what = "records no fingerprints of its weights (an older saexplain made it)"
    else:
        roles = sorted(r for r in {*old, *now} if old.get(r) != now.get(r))
        what = f"was computed from another {' and '.join(roles)} (other weights or data)"
    return (
        f"run directory {path} {what}: its data cannot be reused for the {new.get('model')} / "
        f"{new.get('coder') or ', '.join(c['coder'] for c in new.get('coders', ()))} given now "
        "(weights edited in place, or another object under the "
        "same name); choose another `name` (or omit it) for a new run, or delete the directory"
    )


class RunDir:
    """Paths and append-only logs of one run directory."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.latents = JsonlLog(self.file("latents"), fsync=fsync)
        self.records = JsonlLog(self.file("records"), fsync=fsync)
        self.explanations = JsonlLog(self.file("explanations"), fsync=fsync)
        self.scores = JsonlLog(self.file("scores"), fsync=fsync)
        self.fsync = fsync

    def file(self, kind: str) -> Path:
        return self.path / FILES[kind]

    def log(self, latent_key: str) -> JsonlLog:
        """The prompt log of a latent (named by `LatentRef.key`)."""
        folder = self.path / LOGS_DIR
        folder.mkdir(exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", latent_key)
        return JsonlLog(folder / f"{safe}.jsonl", fsync=False)

    def done_explanations(self) -> dict[ExplanationKey, Explanation]:
        """Final explanations already in the run, by `explanation_key`."""
        latest = {explanation_key(e): e for e in self.explanations.read(Explanation)}
        return {k: e for k, e in latest.items() if is_final(e)}

    def latest_scores(self) -> dict[ScoreKey, Score]:
        """The last score per `score_key`, final or not."""
        return {score_key(s): s for s in self.scores.read(Score)}

    def done_scores(self) -> dict[ScoreKey, Score]:
        """Final scores already in the run, by `score_key`."""
        return {k: s for k, s in self.latest_scores().items() if is_final(s)}

    def method_ids(self) -> MethodIds | None:
        """The configuration ids `manifest.json` records (None: none recorded)."""
        return MethodIds.from_manifest(self.read_json("manifest"))

    def stored_records(self) -> dict[LatentKey, LatentRecord]:
        """Records already built, by `latent_key`."""
        return {latent_key(r.latent): r for r in self.records.read(LatentRecord)}

    def read_json(self, kind: str) -> dict[str, Any] | None:
        return read_json(self.file(kind))

    def write_json(self, kind: str, data: Mapping[str, Any]) -> None:
        atomic_write_text(
            self.file(kind), json.dumps(data, indent=2, default=str), fsync=self.fsync
        )

    def holds_data(self) -> bool:
        """Whether the run directory holds anything a run made: its store, latents, records or
        results (a run that failed on its dataset leaves only config.json and manifest.json)."""
        store = self.path / STORE_DIR
        if store.is_dir() and any(store.iterdir()):
            return True
        logs = (self.latents, self.records, self.explanations, self.scores)
        return any(log.path.exists() and log.path.stat().st_size > 0 for log in logs)

    def check_same_run(self, config: RunConfig) -> None:
        """Refuse to resume a run directory that holds a run with other data settings. While it
        holds no data the identity may change (a corrected dataset after a failed start)."""
        old = self.read_json("config")
        if old is None or not self.holds_data():
            return
        old = identity(old)
        new = identity(redact_secrets(config.model_dump(mode="json")))
        changed = [k for k in DATA_FIELDS if old.get(k) != new.get(k)]
        if changed == ["fingerprints"]:
            raise ConfigError(_other_weights(self.path, old.get("fingerprints"), new))
        if changed:
            raise ConfigError(
                f"run directory {self.path} holds a run with different {changed}; "
                "choose another `name` (or output_dir) for a new run"
            )

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory for one process: an exclusive `flock` on `run.lock`, which
        the OS releases when the process ends, however it ends. A second process gets
        `RunDirBusyError` at once, naming the holder's pid. (No lock where `flock` is missing.)"""
        if sys.platform == "win32":  # no flock; Windows users keep to one process per run
            yield
            return
        import fcntl

        path = self.file("lock")
        with writing(path):  # a read-only run directory: a one-line error naming it
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                raise RunDirBusyError(
                    f"run directory {self.path} is in use by another saexplain process "
                    f"(pid {holder}); wait for it to finish or stop it, then run again"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
