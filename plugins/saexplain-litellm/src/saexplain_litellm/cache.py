"""On-disk response cache keyed by (provider, model, messages, parameters).

One JSON file per response, under `<dir>/<key[:2]>/<key>.json`. Writes are atomic (a temporary
file in the same directory, then `os.replace`), so a crash never leaves half a file behind. An
entry that cannot be read back (truncated, edited, from an incompatible version) is ignored and
counted, never fatal. Entries hold the request and the response only: no credentials.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from saexplain.models import ChatRequest, ChatResponse

log = logging.getLogger(__name__)
FORMAT = 1


def default_cache_dir() -> Path:
    """`$SAEXPLAIN_CACHE_DIR/responses`, else `<user cache dir>/saexplain/responses`."""
    root = os.environ.get("SAEXPLAIN_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "responses"
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("saexplain")) / "responses"
    except ImportError:  # pragma: no cover - platformdirs is a dependency
        return Path.home() / ".cache" / "saexplain" / "responses"


def cache_key(
    provider: str, model: str, request: ChatRequest, params: Mapping[str, Any] | None = None
) -> str:
    """A stable hash of everything that determines the answer (never of credentials)."""
    payload = {
        "format": FORMAT,
        "provider": provider,
        "model": model,
        "request": request.model_dump(mode="json"),
        "params": dict(sorted((params or {}).items())),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """A directory of cached `ChatResponse`s."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> ChatResponse | None:
        path = self.path(key)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.misses += 1
            return None
        except OSError as error:
            log.warning("response cache entry %s unreadable (%s); ignoring it", path, error)
            self.corrupt += 1
            self.misses += 1
            return None
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT or data.get("key") != key:
                raise ValueError("format or key mismatch")
            response = ChatResponse.model_validate(data["response"])
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as error:
            log.warning("response cache entry %s is corrupt (%s); ignoring it", path, error)
            self.corrupt += 1
            self.misses += 1
            return None
        self.hits += 1
        return response

    def put(self, key: str, request: ChatRequest, response: ChatResponse) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "format": FORMAT,
            "key": key,
            "request": request.model_dump(mode="json"),
            "response": response.model_dump(mode="json"),
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entry, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*.json"))
