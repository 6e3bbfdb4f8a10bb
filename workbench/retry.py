"""The one retry policy of the workbench's network clients (data sources and brokers), on tenacity.

A retried call raises `TemporaryError` for what may pass on a second try (rate limiting, 5xx,
timeouts, dropped connections) and any other error for what will not; only `TemporaryError` is
retried. The wait before retry *n* (1-based) is ``wait * backoff ** (n - 1)``, capped at
`max_wait`, and never shorter than the server's Retry-After (also capped at `max_wait`, so a
server asking for an hour does not stall a sync or a paper tick for an hour).

>>> policy = RetryPolicy(retries=2, wait=0.5, sleep=lambda s: None)
>>> policy.call(lambda attempt: attempt)
1

Every wait goes through `sleep`, so tests record the waits instead of sleeping them.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from workbench.errors import ConfigError, TemporaryError

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 60.0
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how long to retry a call that raised `TemporaryError`.

    `retries` is the number of attempts after the first; `wait` the first wait in seconds,
    multiplied by `backoff` per retry (1.0 waits the same each time); `max_wait` caps every wait,
    the server's Retry-After included; `sleep` does the waiting; `logger` receives one warning per
    retry (the caller's module logger, so its records keep their usual name).
    """

    retries: int = 3
    wait: float = 1.0
    backoff: float = 2.0
    max_wait: float = MAX_WAIT_SECONDS
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    logger: logging.Logger = field(default=log, compare=False)

    def __post_init__(self) -> None:
        if not (self.retries >= 0 and self.wait >= 0 and self.backoff >= 1 and self.max_wait >= 0):
            raise ConfigError(
                f"bad retry settings (retries={self.retries}, wait={self.wait}, backoff={self.backoff}, "
                f"max_wait={self.max_wait}): use retries >= 0, wait >= 0 seconds, backoff >= 1, "
                "max_wait >= 0 seconds")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (1-based), given the server's Retry-After."""
        backoff = min(self.wait * self.backoff ** (retry - 1), self.max_wait)
        asked = retry_after if retry_after is not None and math.isfinite(retry_after) else 0.0
        return max(backoff, min(max(asked, 0.0), self.max_wait))

    def call(self, fn: Callable[[int], T]) -> T:
        """Run `fn(attempt)` (attempt 1, 2, ...) until it returns or raises anything but
        `TemporaryError`; after `retries` retries the last `TemporaryError` is raised again with
        its `attempts` set."""
        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            retry=retry_if_exception_type(TemporaryError),
            wait=self._wait,
            sleep=self.sleep,
            before_sleep=self._log,
            reraise=True,
        )
        attempt = 0
        try:
            for state in retrying:
                with state:
                    attempt = state.retry_state.attempt_number
                    return fn(attempt)
        except TemporaryError as exc:
            exc.attempts = attempt
            raise
        raise AssertionError("unreachable")  # pragma: no cover: tenacity returns or raises

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = exc.retry_after if isinstance(exc, TemporaryError) else None
        return self.delay(state.attempt_number, after)

    def _log(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        self.logger.warning("%s; retry %d/%d in %.2fs", exc, state.attempt_number, self.retries, wait)


def retry_after(headers: Mapping[str, Any] | None, now: datetime | None = None) -> float | None:
    """The Retry-After of an HTTP reply in seconds (a number, or an HTTP date), else None."""
    value = next((v for k, v in (headers or {}).items() if str(k).lower() == "retry-after"), None)
    if value is None:
        return None
    text = str(value).strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


__all__ = ["MAX_WAIT_SECONDS", "RetryPolicy", "TemporaryError", "retry_after"]
