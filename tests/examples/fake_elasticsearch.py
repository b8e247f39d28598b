"""A loopback HTTP server that answers ``POST /<index>/_bulk`` the way Elasticsearch does.

No Elasticsearch can be installed from the package indexes the project's machines reach, so the
bulk loader is tested against this stand-in. It speaks only what the loader uses, with
Elasticsearch's semantics: NDJSON action/document pairs, ``create`` answering 409
``version_conflict_engine_exception`` for an existing ``_id``, ``index`` answering 201 or 200,
per-item errors with ``errors: true``, and 401 without the expected credentials. It records every
request so tests can assert the exact bodies the loader sent.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeElasticsearch:
    """State and behaviour knobs of the fake cluster."""

    authorization: str | None = None  # the Authorization header to require, if any
    reject: dict[str, dict[str, Any]] = field(default_factory=dict)  # _id -> error object (status 400)
    throttle: dict[str, int] = field(default_factory=dict)  # _id -> how many more times to answer 429
    unavailable: int = 0  # how many more whole requests to answer 503
    documents: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # index -> _id -> source
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def handle_bulk(self, index: str, body: bytes) -> tuple[int, dict[str, Any]]:
        lines = [line for line in body.split(b"\n") if line]
        if len(lines) % 2:
            return 400, {"error": {"type": "illegal_argument_exception", "reason": "odd line count"}, "status": 400}
        stored = self.documents.setdefault(index, {})
        items = []
        for action_line, source_line in zip(lines[::2], lines[1::2], strict=True):
            ((op, meta),) = json.loads(action_line).items()
            doc_id = meta["_id"]
            result: dict[str, Any] = {"_index": index, "_id": doc_id}
            if self.throttle.get(doc_id, 0) > 0:
                self.throttle[doc_id] -= 1
                result.update(status=429, error={"type": "es_rejected_execution_exception", "reason": "queue full"})
            elif doc_id in self.reject:
                result.update(status=400, error=self.reject[doc_id])
            elif op == "create" and doc_id in stored:
                result.update(
                    status=409,
                    error={
                        "type": "version_conflict_engine_exception",
                        "reason": f"[{doc_id}]: version conflict, document already exists (current version [1])",
                    },
                )
            elif op in ("create", "index"):
                existed = doc_id in stored
                stored[doc_id] = json.loads(source_line)
                result.update(status=200 if existed else 201, result="updated" if existed else "created")
            else:
                result.update(status=400, error={"type": "illegal_argument_exception", "reason": f"op {op}"})
            items.append({op: result})
        errors = any("error" in next(iter(item.values())) for item in items)
        return 200, {"took": 1, "errors": errors, "items": items}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (the name http.server dispatches to)
        fake = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        fake.requests.append(Request("POST", self.path, dict(self.headers.items()), body))
        parts = self.path.split("?")[0].strip("/").split("/")
        if fake.authorization is not None and self.headers.get("Authorization") != fake.authorization:
            self._answer(401, {"error": {"type": "security_exception", "reason": "unable to authenticate"}})
        elif fake.unavailable > 0:
            fake.unavailable -= 1
            self._answer(
                503, {"error": {"type": "unavailable_shards_exception", "reason": "primary shard is not active"}}
            )
        elif len(parts) == 2 and parts[1] == "_bulk":
            self._answer(*fake.handle_bulk(parts[0], body))
        else:
            self._answer(404, {"error": {"type": "no_handler", "reason": self.path}})

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        """Keep pytest's output clean."""


class _Server(ThreadingHTTPServer):
    fake: FakeElasticsearch


def serve(fake: FakeElasticsearch) -> _Server:
    """Start the fake on a free loopback port (``fake.url`` is set); call ``shutdown()`` to stop it."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = fake
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server
