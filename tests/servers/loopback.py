"""A tiny threaded HTTP server on 127.0.0.1 with a route table, a request log and injectable faults.

Service fakes (Binance, Alpaca) register handlers that return real response bodies; tests queue
faults (429, 5xx, a dropped connection) to be served instead of the next matching requests, or
after them (`after=True`: the server acts on the request, then its reply is lost, late or replaced).
Route paths may hold ``{name}`` segments (``/v2/orders/{id}``); the matched values are in
`Request.params`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # values of a route's {name} segments
    raw_query: str = ""  # the query string as sent (signed APIs hash it byte for byte)

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering (a lost response)
    delay: float = 0.0  # seconds to wait before answering (or dropping): a slow reply

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


Handler = Callable[[Request], Response]


@dataclass
class Fault:
    method: str
    path_prefix: str
    response: Response | Callable[[Response], Response]
    remaining: int = 1
    after: bool = False  # handle the request first, then serve `response` instead of its reply


class LoopbackServer:
    """Serve `routes` ({(METHOD, path): handler}) on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, routes: dict[tuple[str, str], Handler]) -> None:
        self.routes = dict(routes)  # exact paths, and patterns with {name} segments
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        server = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                req = Request(
                    self.command, parts.path,
                    {k: v[-1] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                    raw_query=parts.query,
                )
                resp = server._dispatch(req)
                if resp.delay > 0:
                    time.sleep(resp.delay)
                if resp.drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                body = resp.encoded()
                try:
                    self.send_response(resp.status)
                    headers = {"Content-Type": "application/json", **resp.headers}
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up waiting (a slow reply): nobody to answer
                    self.close_connection = True

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def _dispatch(self, req: Request) -> Response:
        fault: Fault | None = None
        with self._lock:
            self.requests.append(req)
            for f in self.faults:
                if f.remaining > 0 and f.method in (req.method, "*") and req.path.startswith(
                    f.path_prefix
                ):
                    f.remaining -= 1
                    fault = f
                    break
        if fault is not None and not fault.after:
            assert isinstance(fault.response, Response)
            return fault.response
        reply = self._route(req)
        if fault is None:
            return reply
        return fault.response(reply) if callable(fault.response) else fault.response

    def _route(self, req: Request) -> Response:
        handler = self.routes.get((req.method, req.path))
        if handler is None:
            parts = req.path.split("/")
            for (method, pattern), candidate in self.routes.items():
                if method != req.method or "{" not in pattern:
                    continue
                names = pattern.split("/")
                if len(names) == len(parts) and all(
                        n == p or (n.startswith("{") and n.endswith("}") and p)
                        for n, p in zip(names, parts, strict=True)):
                    req.params = {n[1:-1]: p for n, p in zip(names, parts, strict=True)
                                  if n.startswith("{")}
                    handler = candidate
                    break
        if handler is None:
            return Response(404, {"error": f"no route {req.method} {req.path}"})
        return handler(req)

    def fail_next(self, path_prefix: str, response: Response | Callable[[Response], Response],
                  times: int = 1, method: str = "*", *, after: bool = False) -> None:
        """Serve `response` instead of the next `times` requests whose path starts with prefix.

        With `after=True` each request is handled first (the server acts on it) and then
        `response` replaces its reply: ``Response(drop=True)`` loses the reply, a function of the
        real reply (e.g. ``lambda r: replace(r, delay=2.0)``) makes it late.
        """
        with self._lock:
            self.faults.append(Fault(method, path_prefix, response, times, after))

    def hits(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def guard_loopback(monkeypatch: Any) -> None:
    """Fail any test that connects anywhere but 127.0.0.1 / ::1 (the fakes live there)."""
    import socket

    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) else address
            if host not in ("127.0.0.1", "::1"):
                raise AssertionError(f"test tried to connect to {address!r}: loopback only")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
