"""The one secret redactor: keeps credentials out of run directories, logs, errors and reports.

- `redact(text)` masks, inside free text, every value it knows to be secret (values registered
  with `register_secret`, and values of environment variables named like credentials, e.g.
  `OPENAI_API_KEY` or `HF_TOKEN`) and every string shaped like a common API key (`sk-...`,
  `sk-ant-...`, `sk-proj-...`, `hf_...`, `AIza...`, `gsk_...`, `xai-...`, `Bearer <token>`, ...).
- `redact_secrets(value)` copies a JSON-like value (mappings, lists, strings) with the values of
  secret-named keys (`api_key`, `token`, `password`, `authorization`, `cookie`, ...) masked, and
  `redact` applied to every other string.
- `register_secrets_in(value)` registers the values of every secret-named key of a JSON-like
  value (a provider's settings, its `params.extra_headers`, ...), so that a server echoing one
  into an answer or an error is masked too. The provider builder calls it for every provider.

Both replace what they hide with `REDACTED`. Only the standard library is used.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

REDACTED = "***"

# Setting names whose value is a credential: the whole name, or its last part after `_`, `-` or
# `.` (`OPENAI_API_KEY`, `x-api-key`, `hf_token`). A bare `token` is a credential, but
# `bos_token` or `pad_token` are tokenizer settings, so `..._token` needs a credential prefix.
_SECRET_NAME = re.compile(
    r"(?:^|[_\-.])(?:api[_-]?key|apikey|access[_-]?key|private[_-]?key|secret(?:[_-]?key)?"
    r"|password|passwd|auth|authorization|bearer|cookie|credentials?|subscription[_-]?key"
    r"|(?:access|auth|api|bearer|hf|refresh|session|id|private|personal)[_-]?token)$"
    r"|^token$",
    re.IGNORECASE,
)
# Environment variables holding credentials also include any `*_TOKEN` (`GITHUB_TOKEN`).
_SECRET_ENV = re.compile(r"_TOKEN$", re.IGNORECASE)

# Strings shaped like the API keys of common providers, wherever they appear.
_KEY_SHAPES = re.compile(
    r"\b(?:"
    r"sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{8,}"  # OpenAI, Anthropic, OpenAI project keys
    r"|hf_[A-Za-z0-9]{16,}"  # Hugging Face
    r"|AIza[0-9A-Za-z_\-]{20,}"  # Google
    r"|gsk_[A-Za-z0-9]{16,}"  # Groq
    r"|xai-[A-Za-z0-9]{16,}"  # xAI
    r"|r8_[A-Za-z0-9]{16,}"  # Replicate
    r"|pplx-[A-Za-z0-9]{16,}"  # Perplexity
    r"|nvapi-[A-Za-z0-9_\-]{16,}"  # NVIDIA
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"  # GitHub
    r"|AKIA[0-9A-Z]{16}"  # AWS access key ids
    r")"
)
_BEARER = re.compile(r"\b(Bearer\s+)[A-Za-z0-9._~+/\-]{8,}=*", re.IGNORECASE)

# Shorter values are too likely to occur in ordinary text to be masked wherever they appear.
_MIN_SECRET_LEN = 8
# A credential header's scheme ("Bearer abc", "Basic abc") or a cookie's name ("sid=abc"):
# the value after it is registered as well, since a server may echo either part alone.
_SCHEME = re.compile(r"^[A-Za-z][\w-]*\s+(\S+)$")
_COOKIE_VALUE = re.compile(r"[^=;\s]+=([^;\s]+)")
_registered: set[str] = set()
_lock = threading.Lock()


def is_secret_name(name: str) -> bool:
    """Whether a setting or header called `name` holds a credential (`api_key`, `token`, ...)."""
    return bool(_SECRET_NAME.search(name))


def register_secret(value: str | None) -> None:
    """Remember a secret (e.g. an `api_key=` setting) so that `redact` hides it everywhere."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _registered.add(value)


def register_secrets_in(value: Any) -> None:
    """Register the value of every secret-named key in a JSON-like value, at any depth.

    `{"params": {"extra_headers": {"X-Api-Key": "k..."}}}` registers `k...`; a header value
    `"Bearer t..."` registers it whole and `t...`; a cookie `"sid=c...; theme=dark"` registers
    it whole and each value (those long enough to mask safely).
    """
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, str) and is_secret_name(str(key)):
                register_secret(item)
                scheme = _SCHEME.match(item.strip())
                if scheme:
                    register_secret(scheme.group(1))
                for cookie in _COOKIE_VALUE.finditer(item):
                    register_secret(cookie.group(1))
            else:
                register_secrets_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            register_secrets_in(item)


def _known_secrets() -> list[str]:
    found = {
        value
        for name, value in os.environ.items()
        if (is_secret_name(name) or _SECRET_ENV.search(name)) and len(value) >= _MIN_SECRET_LEN
    }
    with _lock:
        found |= _registered
    return sorted(found, key=len, reverse=True)  # longest first: no partial leftovers


def redact(text: str) -> str:
    """`text` with every known secret and key-shaped string replaced by `REDACTED`."""
    return _redact(text, _known_secrets())


def redactor() -> Callable[[str], str]:
    """`redact` bound to the secrets known now: for masking many strings at once (the tokens of
    an answer) without looking the secrets up again for each one."""
    known = _known_secrets()
    return lambda text: _redact(text, known)


def _redact(text: str, known: list[str]) -> str:
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _KEY_SHAPES.sub(REDACTED, text)


def redact_secrets(value: Any) -> Any:
    """A copy of a JSON-like value with secret-named keys' values and key-like strings masked."""
    return _redact_value(value, _known_secrets())


def _redact_value(value: Any, known: list[str]) -> Any:
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if v and is_secret_name(str(k)) else _redact_value(v, known))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v, known) for v in value]
    if isinstance(value, str):
        return _redact(value, known)
    return value
