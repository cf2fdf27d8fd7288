"""A fake OpenAI-compatible chat-completions server on loopback that answers like a competent
LLM, except when a seeded random draw injects a fault.

Standard library only (`http.server` in a thread). Faults, each drawn per request:

- transient: HTTP 429 / 500 / 503, a reply slower than the client's timeout, JSON cut short,
  a reply without `choices`;
- hostile answers (status 200): a lone surrogate (`"\\ud800"` in the JSON), a 1 MB answer,
  HTML and script text, and the request's secret header values echoed back. Error bodies echo
  them too.

The draw for a request depends only on the seed, the request's messages and how many times the
server has seen them, so a fault pattern does not depend on the order in which concurrent
requests arrive. The server is bounded: it answers at most `max_requests` requests (503 after
that, counted in `overflow`), listens on 127.0.0.1 only, and stops when its `with` block ends.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from saexplain.models import ChatRequest, Message
from saexplain.testing import competent_explainer, competent_scorer

from .loopback import LoopbackServer, send_reply

TRANSIENT = ("429", "500", "503", "timeout", "truncated", "no_choices")
HOSTILE = ("surrogate", "huge", "html", "echo")
FAULTS = TRANSIENT + HOSTILE
HUGE_CHARS = 1_000_000
HTML = "<script>alert('pwned')</script><img src=x onerror=alert(1)>"


@dataclass
class Faults:
    """What the server injects: `rate` of requests get a fault, chosen by `weights`."""

    seed: int
    rate: float = 0.3
    weights: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(FAULTS, 1.0))
    timeout_s: float = 1.0  # how long a "timeout" reply waits (past the client's timeout)

    def draw(self, messages: Any, seen: int) -> str | None:
        """The fault for the `seen`-th sighting of a request with these messages, or None."""
        digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
        rng = random.Random(f"{self.seed}:{digest}:{seen}")
        if rng.random() >= self.rate:
            return None
        names = sorted(self.weights)
        return rng.choices(names, weights=[self.weights[n] for n in names])[0]


@dataclass
class Usage:
    """The usage every answered request reports (a fixed price per call)."""

    prompt_tokens: int = 2000
    completion_tokens: int = 500


class FakeOpenAI(LoopbackServer):
    """The server; use `with FakeOpenAI(...).running() as server:` and `server.url`."""

    def __init__(self, faults: Faults, *, max_requests: int = 2000, usage: Usage | None = None):
        self.faults = faults
        self.max_requests = max_requests
        self.usage = usage or Usage()
        self.requests = 0
        self.overflow = 0
        self.billed = 0  # answers that carried usage the client could read
        self.injected: Counter[str] = Counter()
        self.headers_seen: list[dict[str, str]] = []
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()

    # --- one request ------------------------------------------------------------------------------

    def handle_post(self, h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers.get("Content-Length") or 0)) or b"{}")
        with self._lock:
            self.requests += 1
            over = self.requests > self.max_requests
            self.overflow += over
            self.headers_seen.append(dict(h.headers.items()))
            key = json.dumps(body.get("messages"), sort_keys=True)
            seen = self._seen[key]
            self._seen[key] += 1
        if h.path != "/v1/chat/completions" or over:
            return _send(h, 503 if over else 404, "request budget spent" if over else "no route")
        fault = self.faults.draw(body.get("messages"), seen)
        if fault is not None:
            with self._lock:
                self.injected[fault] += 1
        echoed = " ".join(_secrets_in(h, body))
        if fault in ("429", "500", "503"):
            return _send(h, int(fault), f"upstream failed; request headers were: {echoed}")
        if fault == "timeout":
            time.sleep(self.faults.timeout_s)
            return _send(h, 504, "too late")
        if fault == "truncated":
            return _send(h, 200, '{"model": "m", "choices": [{"index": 0, "mess', json_body=True)
        if fault == "no_choices":
            return _send(h, 200, json.dumps({"model": "m", "usage": {}}), json_body=True)
        text = _answer(body.get("messages") or [])
        if fault == "surrogate":
            text = text.replace("the", "the\ud800", 1) if "the" in text else text + "\ud800"
        elif fault == "huge":
            text = ("Explanation: " if "Explanation:" in text else "") + "x" * HUGE_CHARS
        elif fault == "html":
            text = text.replace("Explanation: ", f"Explanation: {HTML} ") + f" {HTML}"
        elif fault == "echo":
            text = f"{text} (you sent: {echoed})"
        usage = {
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
        }
        choice = {"index": 0, "message": {"role": "assistant", "content": text}}
        reply = {"model": body.get("model"), "choices": [choice | {"finish_reason": "stop"}]}
        # ensure_ascii (the default) writes a lone surrogate as the escape "\ud800"
        if _send(h, 200, json.dumps(reply | {"usage": usage}), json_body=True):
            with self._lock:
                self.billed += 1


def _answer(messages: list[Mapping[str, Any]]) -> str:
    request = ChatRequest(
        messages=tuple(Message(role=m["role"], content=m["content"]) for m in messages)
    )
    if "Description:" in (messages[-1]["content"] if messages else ""):
        return competent_scorer(request)
    return competent_explainer(request)


def _secrets_in(h: BaseHTTPRequestHandler, body: Mapping[str, Any]) -> list[str]:
    """Every header value a careless server might echo: the HTTP headers that carry
    credentials, and `extra_headers` if the client sent them in the body."""
    values = [v for k, v in h.headers.items() if k.lower() not in _PLAIN_HEADERS]
    extra = body.get("extra_headers")
    if isinstance(extra, Mapping):
        values += [str(v) for v in extra.values()]
    return values


_PLAIN_HEADERS = {"host", "content-length", "content-type", "accept", "accept-encoding"}
_PLAIN_HEADERS |= {"user-agent", "connection"}


def _send(h: BaseHTTPRequestHandler, status: int, text: str, *, json_body: bool = False) -> bool:
    """Write a reply; False when the client hung up (it was killed, or gave up waiting)."""
    kind = "application/json" if json_body else "text/plain"
    return send_reply(h, status, text.encode("utf-8"), kind)
