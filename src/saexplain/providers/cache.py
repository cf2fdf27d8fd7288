"""On-disk response cache keyed by (provider, model, request, scope), so a rerun pays nothing twice.

One JSON file per response, under `<dir>/<key[:2]>/<key>.json`, written atomically
(`saexplain.files.atomic_write_bytes`), so a crash never leaves half a file behind. An entry that
cannot be read back (truncated, edited, from an incompatible version) is ignored and counted,
never fatal. Entries hold the request and the response only: no credentials, and credentials are
left out of the key as well.

The default directory is `saexplain.files.cache_dir("responses")`: `$SAEXPLAIN_CACHE_DIR/responses`,
else `$XDG_CACHE_HOME/saexplain/responses`, else `~/.cache/saexplain/responses`;
`SAEXPLAIN_NO_CACHE=1` switches every default cache off.

The cache keeps only answers that were used: an answer that does not serialise is never written
(the `CleanLayer` inside the cache repairs such answers and marks them `do_not_cache`), and a
method that cannot parse an answer drops its entry with `discard_cached(response)` (the methods
kit does this on every parse failure), so a rerun asks again instead of replaying it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from saexplain.files import atomic_write_bytes, cache_dir
from saexplain.models import ChatRequest, ChatResponse
from saexplain.secrets import is_secret_name

log = logging.getLogger(__name__)
FORMAT = 1
V = TypeVar("V")


def default_cache_dir() -> Path:
    """Where responses are cached unless a directory is given (see the module docstring)."""
    return cache_dir("responses")


def cache_key(
    provider: str, model: str, request: ChatRequest, scope: Mapping[str, Any] | None = None
) -> str:
    """A stable hash of everything that determines the answer.

    `scope` holds the provider's settings that change answers (a server URL, a dtype); entries
    named like credentials are left out, so a rotated key does not empty the cache.
    """
    params = {k: v for k, v in (scope or {}).items() if not is_secret_name(str(k))}
    payload = {
        "format": FORMAT,
        "provider": provider,
        "model": model,
        "request": request.model_dump(mode="json"),
        "params": dict(sorted(params.items())),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """A directory of cached `ChatResponse`s; `hits`, `misses` and `corrupt` count lookups."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    def path(self, key: str) -> Path:
        """The file of the entry `key`."""
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> ChatResponse | None:
        """The cached response for `key`, or None (missing or unreadable)."""
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
        """Store `response` under `key`, atomically. An answer that does not serialise (a lone
        surrogate) raises `ValueError` and nothing is written."""
        response.model_dump_json()  # raises on what the run directory could not write either
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "format": FORMAT,
            "key": key,
            "request": request.model_dump(mode="json"),
            "response": response.model_dump(mode="json"),
        }
        atomic_write_bytes(path, json.dumps(entry).encode("utf-8"))

    def delete(self, key: str) -> bool:
        """Remove the entry `key`; whether there was one."""
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*.json"))

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.directory)!r})"


CacheSetting = ResponseCache | str | os.PathLike[str] | bool | None


def make_cache(cache: CacheSetting) -> ResponseCache | None:
    """`True`/`None`: the default directory; `False`: no cache; a path or a cache: that one.

    `SAEXPLAIN_NO_CACHE=1` turns every cache off, whatever the setting.
    """
    if cache is False or os.environ.get("SAEXPLAIN_NO_CACHE") == "1":
        return None
    if isinstance(cache, ResponseCache):
        return cache
    if cache is None or cache is True:
        return ResponseCache()
    return ResponseCache(cache)


class _ByIdentity(Generic[V]):
    """A value attached to live objects by identity (not equality), forgotten when the object is
    garbage collected. Frozen models compare by value: two equal answers are still two calls."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[weakref.ref[Any], V]] = {}
        self._lock = threading.Lock()

    def set(self, obj: object, value: V) -> None:
        key = id(obj)

        def forget(_: object) -> None:
            with self._lock:
                self._items.pop(key, None)

        with self._lock:
            self._items[key] = (weakref.ref(obj, forget), value)

    def pop(self, obj: object) -> V | None:
        with self._lock:
            item = self._items.get(id(obj))
            if item is None or item[0]() is not obj:
                return None
            del self._items[id(obj)]
            return item[1]

    def __contains__(self, obj: object) -> bool:
        with self._lock:
            item = self._items.get(id(obj))
            return item is not None and item[0]() is obj


# The cache entry each answer handed out came from (by identity), and the answers never to cache.
_origins: _ByIdentity[tuple[ResponseCache, str]] = _ByIdentity()
_uncacheable: _ByIdentity[bool] = _ByIdentity()


def remember_origin(response: ChatResponse, cache: ResponseCache, key: str) -> None:
    """Note that `response` is (or was just written as) the entry `key` of `cache`."""
    _origins.set(response, (cache, key))


def do_not_cache(response: ChatResponse) -> None:
    """Mark an answer that must not be cached (it was repaired: the original was broken)."""
    _uncacheable.set(response, True)


def cacheable(response: ChatResponse) -> bool:
    """Whether `response` may be cached (not marked by `do_not_cache`)."""
    return response not in _uncacheable


def discard_cached(response: ChatResponse) -> bool:
    """Drop the cache entry `response` came from, when a method could not use the answer (it
    did not parse), so that a rerun asks the provider again. Whether an entry was removed; a
    response that came from no cache is ignored."""
    origin = _origins.pop(response)
    if origin is None:
        return False
    cache, key = origin
    try:
        return cache.delete(key)
    except OSError as error:  # a read-only cache: the rerun replays it, nothing worse
        log.warning("could not drop response cache entry %s: %s", key, error)
        return False
