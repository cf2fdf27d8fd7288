"""A fake OpenAI-compatible server on loopback with the batch API and chat completions.

Standard library only (`http.server` in a thread), listening on 127.0.0.1 only:

- `POST /v1/files` (multipart, as the OpenAI SDK uploads) keeps a JSONL file;
- `POST /v1/batches` makes a batch of an uploaded file (counted in `batch_posts`);
- `GET /v1/batches/{id}`: `validating`, then `in_progress`, then after `polls_to_finish`
  retrieves the batch's `outcome`: `completed` (an output file in OpenAI's batch format),
  `failed`, or `expired` (the first `expired_answers` items answered, the rest not);
- `GET /v1/files/{id}/content`: the file's bytes;
- `POST /v1/chat/completions`: the same deterministic answer an item of a batch gets
  (counted in `chat_posts`), so batch and interactive results can be compared.

Answers come from the competent fakes of `saexplain.testing`; every answer reports `usage`.
`malformed` output lines (the first ones) are cut short, as a broken upload would be. The server
tracks the most chat requests it held at once (`max_in_flight`); `chat_delay_s` holds each one.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from .fake_openai import _answer
from .loopback import LoopbackServer, send_reply

PROMPT_TOKENS = 1000
COMPLETION_TOKENS = 100


@dataclass
class FakeBatchServer(LoopbackServer):
    """Use `with FakeBatchServer(...).running() as server:` and `server.url`."""

    protocol_version = "HTTP/1.1"

    outcome: str = "completed"  # completed | failed | expired
    polls_to_finish: int = 2
    expired_answers: int = 0
    malformed: int = 0
    chat_delay_s: float = 0.0
    batch_posts: int = 0
    chat_posts: int = 0
    retrieves: int = 0
    max_in_flight: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    _in_flight: int = 0
    _ids: Iterator[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}-{next(self._ids)}"

    # --- routes -------------------------------------------------------------------------------

    def handle_post(self, h: BaseHTTPRequestHandler) -> None:
        data = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        path = h.path.split("?")[0]
        if path == "/v1/chat/completions":
            return self._chat(h, json.loads(data))
        if path == "/v1/files":
            return self._upload(h, data)
        if path == "/v1/batches":
            body = json.loads(data)
            if body.get("input_file_id") not in self.files:
                return _send(h, 404, {"error": {"message": "no such file"}})
            batch_id = self._new_id("batch")
            batch = {
                "id": batch_id,
                "object": "batch",
                "endpoint": body.get("endpoint"),
                "input_file_id": body["input_file_id"],
                "completion_window": body.get("completion_window", "24h"),
                "status": "validating",
                "created_at": int(time.time()),
                "output_file_id": None,
                "error_file_id": None,
                "metadata": body.get("metadata"),
            }
            with self._lock:
                self.batch_posts += 1
                self.batches[batch_id] = batch | {"_polls": 0}
            return _send(h, 200, batch)
        return _send(h, 404, {"error": {"message": f"no route {path}"}})

    def handle_get(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?")[0]
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["v1", "batches"] and parts[2] in self.batches:
            return _send(h, 200, self._advance(parts[2]))
        if len(parts) == 4 and parts[:2] == ["v1", "files"] and parts[3] == "content":
            content = self.files.get(parts[2])
            if content is None:
                return _send(h, 404, {"error": {"message": "no such file"}})
            return _send_bytes(h, 200, content, "application/octet-stream")
        return _send(h, 404, {"error": {"message": f"no route {path}"}})

    # --- behaviour ----------------------------------------------------------------------------

    def _upload(self, h: BaseHTTPRequestHandler, data: bytes) -> None:
        head = f"Content-Type: {h.headers.get('Content-Type')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + data)
        content = b""
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "file":
                content = part.get_payload(decode=True) or b""
        file_id = self._new_id("file")
        self.files[file_id] = content
        return _send(
            h,
            200,
            {
                "id": file_id,
                "object": "file",
                "bytes": len(content),
                "created_at": int(time.time()),
                "filename": "batch.jsonl",
                "purpose": "batch",
                "status": "processed",
            },
        )

    def _advance(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            self.retrieves += 1
            batch = self.batches[batch_id]
            batch["_polls"] += 1
            polls = batch["_polls"]
        if batch["status"] in ("completed", "failed", "expired"):
            pass
        elif polls < self.polls_to_finish:
            batch["status"] = "validating" if polls == 1 else "in_progress"
        elif self.outcome == "failed":
            batch["status"] = "failed"
            batch["errors"] = {"data": [{"code": "invalid", "message": "bad input"}]}
        else:
            lines = self.files[batch["input_file_id"]].decode().splitlines()
            if self.outcome == "expired":
                lines = lines[: self.expired_answers]
            out = [self._output_line(json.loads(line)) for line in lines if line.strip()]
            for i in range(min(self.malformed, len(out))):
                out[i] = out[i][: len(out[i]) // 2]  # a line cut short
            file_id = self._new_id("file")
            self.files[file_id] = ("\n".join(out) + "\n").encode() if out else b""
            batch["output_file_id"] = file_id
            batch["status"] = self.outcome
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _output_line(self, item: Mapping[str, Any]) -> str:
        body = self._completion(item["body"])
        return json.dumps(
            {
                "id": self._new_id("req"),
                "custom_id": item["custom_id"],
                "response": {"status_code": 200, "request_id": "r", "body": body},
                "error": None,
            }
        )

    def _completion(self, body: Mapping[str, Any]) -> dict[str, Any]:
        text = _answer(list(body.get("messages") or []))
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            },
        }

    def _chat(self, h: BaseHTTPRequestHandler, body: Mapping[str, Any]) -> None:
        with self._lock:
            self.chat_posts += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.chat_delay_s:
                time.sleep(self.chat_delay_s)
            reply = self._completion(body)
        finally:
            with self._lock:
                self._in_flight -= 1
        _send(h, 200, reply)


def _send(h: BaseHTTPRequestHandler, status: int, obj: Any) -> None:
    _send_bytes(h, status, json.dumps(obj).encode(), "application/json")


def _send_bytes(h: BaseHTTPRequestHandler, status: int, data: bytes, kind: str) -> None:
    send_reply(h, status, data, kind)
