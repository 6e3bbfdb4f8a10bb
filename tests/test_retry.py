"""The one retry policy: what it retries, how long it waits, when it gives up."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests

from workbench.errors import ConfigError, TemporaryError
from workbench.retry import RetryPolicy, retry_after


def _policy(sleeps: list[float], **kw: float) -> RetryPolicy:
    return RetryPolicy(**{"retries": 3, "wait": 1.0, **kw}, sleep=sleeps.append)  # type: ignore[arg-type]


def test_temporary_errors_are_retried_with_exponential_backoff_until_success() -> None:
    sleeps: list[float] = []
    seen: list[int] = []

    def flaky(attempt: int) -> str:
        seen.append(attempt)
        if attempt < 3:
            raise TemporaryError(f"busy ({attempt})")
        return "ok"

    assert _policy(sleeps).call(flaky) == "ok"
    assert seen == [1, 2, 3] and sleeps == [1.0, 2.0]


def test_retry_after_is_honoured_and_capped() -> None:
    sleeps: list[float] = []
    asks = iter([7.0, 3600.0, 0.5])

    def rate_limited(attempt: int) -> int:
        if attempt <= 3:
            raise TemporaryError("429", retry_after=next(asks))
        return attempt

    assert _policy(sleeps, max_wait=60.0).call(rate_limited) == 4
    # 7 s outweighs the 1 s backoff; an hour is cut to the cap; 0.5 s is below the 4 s backoff
    assert sleeps == [7.0, 60.0, 4.0]


def test_giving_up_raises_the_last_temporary_error_with_its_attempts() -> None:
    sleeps: list[float] = []

    def down(attempt: int) -> None:
        raise TemporaryError(f"503 on attempt {attempt}")

    with pytest.raises(TemporaryError, match="503 on attempt 3") as info:
        _policy(sleeps, retries=2).call(down)
    assert info.value.attempts == 3 and sleeps == [1.0, 2.0]


def test_other_errors_are_not_retried() -> None:
    sleeps: list[float] = []
    calls: list[int] = []

    def refused(attempt: int) -> None:
        calls.append(attempt)
        raise ConfigError("bad symbol")

    with pytest.raises(ConfigError, match="bad symbol"):
        _policy(sleeps).call(refused)
    assert calls == [1] and sleeps == []


def test_fixed_waits_and_bad_settings() -> None:
    sleeps: list[float] = []
    with pytest.raises(TemporaryError):
        _policy(sleeps, backoff=1.0, wait=0.25).call(lambda n: (_ for _ in ()).throw(TemporaryError("x")))
    assert sleeps == [0.25, 0.25, 0.25]
    with pytest.raises(ConfigError, match="retries >= 0"):
        RetryPolicy(retries=-1)


def test_retry_after_header_values() -> None:
    now = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)
    assert retry_after({"Retry-After": "7"}) == 7.0
    assert retry_after({"retry-after": " 2.5 "}) == 2.5
    assert retry_after({"Retry-After": "Sat, 05 Dec 2026 12:00:30 GMT"}, now=now) == 30.0
    assert retry_after({"Retry-After": "Sat, 05 Dec 2026 11:00:00 GMT"}, now=now) == 0.0  # past
    assert retry_after({"Retry-After": "soon"}) is None
    assert retry_after({"Content-Type": "text/plain"}) is None and retry_after(None) is None


class _RateLimited(http.server.BaseHTTPRequestHandler):
    """Answers 429 with Retry-After: 3 twice, then 200."""

    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        if type(self).hits <= 2:
            self.send_response(429)
            self.send_header("Retry-After", "3")
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def rate_limited_url() -> Iterator[str]:
    _RateLimited.hits = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RateLimited)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.network
def test_a_real_429_with_retry_after_is_waited_out(rate_limited_url: str) -> None:
    sleeps: list[float] = []

    def get(attempt: int) -> int:
        reply = requests.get(rate_limited_url, timeout=5)
        if reply.status_code == 429:
            raise TemporaryError("HTTP 429", retry_after=retry_after(reply.headers))
        return reply.status_code

    assert _policy(sleeps, wait=0.1).call(get) == 200
    assert sleeps == [3.0, 3.0] and _RateLimited.hits == 3
