"""A webhook receiver on 127.0.0.1: records the JSON bodies POSTed to it, can fail or hang.

Built on `LoopbackServer`: `fail_next(n)` answers 500 to the next n posts, `hold()` makes the next
post wait inside the server until `release()` (a dead or slow channel, proven with events rather
than timings: `held` is set while a post is being held).
"""

from __future__ import annotations

import threading
from typing import Any

from servers.loopback import LoopbackServer, Request, Response


class WebhookServer:
    """Accept POSTs on `path`; `bodies` holds the JSON of every post answered 200, in order."""

    def __init__(self, path: str = "/hook") -> None:
        self.path = path
        self.bodies: list[Any] = []
        self.held = threading.Event()  # a post is waiting inside the server for release()
        self._open = threading.Event()
        self._open.set()
        self._received = threading.Condition()
        self.loopback = LoopbackServer({("POST", path): self._receive})
        self.port = self.loopback.port

    def _receive(self, req: Request) -> Response:
        if not self._open.is_set():
            self.held.set()
            self._open.wait(timeout=60)
        with self._received:
            self.bodies.append(req.json())
            self._received.notify_all()
        return Response(200, {"ok": True})

    def json_url(self, *, auth: str = "", query: str = "") -> str:
        """The apprise URL that posts to this server (`auth` as ``user:password@``)."""
        return f"json://{auth}127.0.0.1:{self.port}{self.path}" + (f"?{query}" if query else "")

    def fail_next(self, times: int, status: int = 500) -> None:
        """Answer the next `times` posts with `status` (their bodies are not recorded)."""
        self.loopback.fail_next(self.path, Response(status, {"error": "injected"}), times=times)

    def hold(self) -> None:
        """Make the next posts wait inside the server until `release()`."""
        self.held.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    @property
    def attempts(self) -> int:
        """Every post that reached the server, failed ones included."""
        return len(self.loopback.hits(self.path))

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until `count` bodies were accepted; False if they were not within `timeout`."""
        with self._received:
            return self._received.wait_for(lambda: len(self.bodies) >= count, timeout)

    def __enter__(self) -> WebhookServer:
        self.loopback.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.loopback.__exit__(*exc)
