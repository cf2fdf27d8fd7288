"""Keep secrets out of messages, logs and files.

`redact(text)` replaces every secret-looking value it knows of with `***`: the values of
environment variables whose names look like credentials (`*_API_KEY`, `*_TOKEN`, `*_SECRET`, ...),
values registered with `register_secret`, and strings shaped like common API keys.
"""

from __future__ import annotations

import os
import re
import threading

_SECRET_NAME = re.compile(r"(API_KEY|APIKEY|_TOKEN|_SECRET|SECRET_KEY|ACCESS_KEY|PASSWORD)$", re.I)
_KEY_SHAPES = re.compile(
    r"\b(sk-[A-Za-z0-9_\-]{8,}|sk-ant-[A-Za-z0-9_\-]{8,}|hf_[A-Za-z0-9]{16,}|"
    r"AIza[0-9A-Za-z_\-]{20,}|gsk_[A-Za-z0-9]{16,}|xai-[A-Za-z0-9]{16,})"
)
_MIN_SECRET_LEN = 6
_registered: set[str] = set()
_lock = threading.Lock()
MASK = "***"


def register_secret(value: str | None) -> None:
    """Remember a secret (e.g. an `api_key=` setting) so that `redact` hides it."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _registered.add(value)


def _known_secrets() -> list[str]:
    found = {
        value
        for name, value in os.environ.items()
        if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LEN
    }
    with _lock:
        found |= _registered
    return sorted(found, key=len, reverse=True)  # longest first: no partial leftovers


def redact(text: str) -> str:
    """`text` with every known secret and key-shaped string replaced by `***`."""
    for secret in _known_secrets():
        if secret in text:
            text = text.replace(secret, MASK)
    return _KEY_SHAPES.sub(MASK, text)
