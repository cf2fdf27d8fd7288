"""The run directory: what a run writes, append-only and crash-safe, so a rerun resumes it.

    <run>/config.json          the resolved RunConfig, secrets redacted
    <run>/manifest.json        saexplain and plugin versions, seeds, model, coder, BOS policy
    <run>/latents.jsonl        the fate of every selected latent (ok / rare / dead / error)
    <run>/records.jsonl        one LatentRecord per latent
    <run>/explanations.jsonl   one Explanation per (latent, explainer)
    <run>/scores.jsonl         one Score per (latent, explainer, scorer)
    <run>/logs/<latent>.jsonl  prompts and responses, when `log_prompts` is on
    <run>/flags.json           generic answers many latents share, per explainer
    <run>/summary.json, <run>/report.html

Each JSONL line is written with one `write` and flushed (and fsynced) before the next; a line
cut short by a crash is dropped when the file is reopened, so a resumed run appends cleanly.
On reading, the last line for a key wins.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from saexplain.models import Explanation, LatentRecord, Score, Status

FILES = {
    "config": "config.json",
    "manifest": "manifest.json",
    "latents": "latents.jsonl",
    "records": "records.jsonl",
    "explanations": "explanations.jsonl",
    "scores": "scores.jsonl",
    "summary": "summary.json",
    "flags": "flags.json",
    "report": "report.html",
}

M = TypeVar("M", bound=BaseModel)

_SECRET_KEY = re.compile(
    r"(^|_)(api_?key|secret|password|passwd|auth|access_token|hf_token)$", re.I
)
_SECRET_VALUE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|hf_[A-Za-z0-9]{16,}|AIza[0-9A-Za-z_\-]{20,})")
REDACTED = "***"


def redact_secrets(value: Any) -> Any:
    """A copy of a JSON-like value with secret-looking keys and key-looking strings masked."""
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if _SECRET_KEY.search(str(k)) and v else redact_secrets(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_secrets(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    return value


def explanation_key(e: Explanation) -> tuple[str, str]:
    return (e.latent.key, e.explainer)


def score_key(s: Score) -> tuple[str, str, str]:
    return (s.latent.key, s.explainer, s.scorer)


def is_final(result: Explanation | Score) -> bool:
    """OK and FAILED results are final; ERROR (an outage, a crash) is retried on resume."""
    return result.status != Status.ERROR


class JsonlLog:
    """An append-only JSONL file: whole lines only, safe to reopen after a crash."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self._lock = threading.Lock()
        self._repair()

    def _repair(self) -> None:
        """Drop a final line that a crash cut short (no trailing newline)."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def append(self, obj: BaseModel | Mapping[str, Any]) -> None:
        text = obj.model_dump_json() if isinstance(obj, BaseModel) else json.dumps(obj)
        line = (text.replace("\n", " ") + "\n").encode("utf-8")
        with self._lock, open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())

    def lines(self) -> Iterator[str]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if line.endswith("\n") and line.strip():
                    yield line

    def read(self, model: type[M]) -> list[M]:
        out: list[M] = []
        for line in self.lines():
            try:
                out.append(model.model_validate_json(line))
            except ValidationError:
                continue  # a line from another version or a foreign edit: skip, never crash
        return out


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
        folder = self.path / "logs"
        folder.mkdir(exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", latent_key)
        return JsonlLog(folder / f"{safe}.jsonl", fsync=False)

    def done_explanations(self) -> dict[tuple[str, str], Explanation]:
        latest = {explanation_key(e): e for e in self.explanations.read(Explanation)}
        return {k: e for k, e in latest.items() if is_final(e)}

    def done_scores(self) -> dict[tuple[str, str, str], Score]:
        latest = {score_key(s): s for s in self.scores.read(Score)}
        return {k: s for k, s in latest.items() if is_final(s)}

    def stored_records(self) -> dict[str, LatentRecord]:
        return {r.latent.key: r for r in self.records.read(LatentRecord)}

    def read_json(self, kind: str) -> dict[str, Any] | None:
        path = self.file(kind)
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None

    def write_json(self, kind: str, data: Mapping[str, Any]) -> None:
        from saexplain.store._io import atomic_write_text

        atomic_write_text(
            self.file(kind), json.dumps(data, indent=2, default=str), fsync=self.fsync
        )
