"""What the fake servers of these tests share: an HTTP server on 127.0.0.1 only, in a thread,
for the length of a `with server.running():` block, and one way to write a reply.

A subclass answers requests in `handle_post(h)` and/or `handle_get(h)` (`h` is the request's
`BaseHTTPRequestHandler`); a verb it does not define is answered 501 by `http.server`. Standard
library only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["LoopbackServer", "send_reply"]


class LoopbackServer:
    """Base of the fake servers: `with Fake(...).running() as server:` and `server.url`."""

    protocol_version = "HTTP/1.0"  # of each reply; "HTTP/1.1" keeps connections open
    _httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The OpenAI-style base URL (`http://127.0.0.1:<port>/v1`) while running."""
        assert self._httpd is not None, "the server is not running"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @contextmanager
    def running(self) -> Iterator[Self]:
        attrs: dict[str, Any] = {
            "protocol_version": self.protocol_version,
            "log_message": lambda handler, format, *args: None,  # quiet
        }
        for verb in ("GET", "POST"):
            handle = getattr(self, f"handle_{verb.lower()}", None)
            if handle is not None:
                attrs[f"do_{verb}"] = lambda handler, handle=handle: handle(handler)
        handler = type("Handler", (BaseHTTPRequestHandler,), attrs)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True  # a reply still sleeping does not hold shutdown
        self._httpd = httpd
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            yield self
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=10)


def send_reply(h: BaseHTTPRequestHandler, status: int, data: bytes, content_type: str) -> bool:
    """Write a reply; False when the client hung up (it was killed, or gave up waiting)."""
    try:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()
    except OSError:
        return False
    return True
