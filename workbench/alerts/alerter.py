"""`Alerter`: turns fire/clear calls into deduplicated, rate-limited messages (rules in the package doc)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import apprise

from workbench.alerts.channel import Channel
from workbench.alerts.message import Alert, Message, render
from workbench.alerts.urls import check_urls, url_label
from workbench.errors import ConfigError

log = logging.getLogger(__name__)

HOUR = 3600.0


@dataclass(frozen=True, kw_only=True)
class AlertSettings:
    """Where alerts go (apprise URLs, checked here) and how often they may be sent.

    `recover_after`: seconds a cleared condition must stay clear before its one recovery message;
    `remind_after`: while a condition stays active, a reminder at most this often (None: never);
    `max_per_hour`: messages over all keys in any hour, beyond it they are dropped and counted;
    `retries` and `retry_wait`: delivery attempts after the first, and the first wait (doubled
    each time, at most 300 s). The URLs hold secrets: `repr` shows only their scheme and host.
    """

    urls: tuple[str, ...]
    recover_after: float = 300.0
    remind_after: float | None = 21600.0
    max_per_hour: int = 30
    retries: int = 5
    retry_wait: float = 2.0

    def __post_init__(self) -> None:
        check_urls(self.urls)
        object.__setattr__(self, "urls", tuple(self.urls))
        _check("recover_after", self.recover_after, 0, "seconds a cleared condition stays clear "
               "before the recovery message; 0 sends it at the next poll")
        if self.remind_after is not None:
            _check("remind_after", self.remind_after, 0, "seconds between reminders while a condition "
                   "stays active; use None for no reminders", strict=True)
        _check("max_per_hour", self.max_per_hour, 1, "messages per hour over all alerts", integer=True)
        _check("retries", self.retries, 0, "delivery attempts after the first", integer=True)
        _check("retry_wait", self.retry_wait, 0, "seconds before the first retry, doubled each time")

    def __repr__(self) -> str:
        return (f"AlertSettings(urls=({', '.join(repr(url_label(u)) for u in self.urls)}), "
                f"recover_after={self.recover_after}, remind_after={self.remind_after}, "
                f"max_per_hour={self.max_per_hour}, retries={self.retries}, retry_wait={self.retry_wait})")


def _check(name: str, value: object, low: float, what: str, *, integer: bool = False,
           strict: bool = False) -> None:
    number = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if not (number and isinstance(value, int | float) and math.isfinite(value)
            and (value > low if strict else value >= low)):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"alert setting {name}={value!r} is out of range: use {kind} {bound} ({what})")


@dataclass
class _State:
    """One alerted key: its latest alert, when it began, its last message, whether it is clearing."""

    alert: Alert
    since: float
    last_sent: float | None = None  # None: the alert itself has not gone out yet (the cap dropped it)
    cleared_at: float | None = None  # None: active; else clear since then
    note: str = ""
    drop_counted: bool = False  # its pending message was already counted as dropped


class Alerter:
    """Send alerts for one `source` (e.g. ``"workbench paper demo"``) through apprise.

    Call `fire` each time a condition is seen, `clear` each time it is not, and `poll` each tick.
    Delivery runs on one daemon thread per URL; `sent` records every message handed to them.
    """

    def __init__(self, settings: AlertSettings, *, source: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(settings, AlertSettings):
            raise ConfigError(f"Alerter needs AlertSettings, got {type(settings).__name__}")
        self.settings = settings
        self.source = source
        self.clock = clock
        self.sent: list[Message] = []  # every message handed to the channels, in order
        self.dropped = 0  # messages dropped by the hourly cap, not yet reported in a message
        self._states: dict[str, _State] = {}
        self._times: deque[float] = deque()  # when each message of the last hour went out
        self._lock = threading.RLock()
        asset = apprise.AppriseAsset(app_id="workbench", app_desc=f"workbench alerts ({source})")
        self._channels: list[Channel] = []
        try:
            for url in settings.urls:
                self._channels.append(Channel(url, retries=settings.retries,
                                              retry_wait=settings.retry_wait, asset=asset))
        except BaseException:
            for channel in self._channels:
                channel.close(0)
            raise

    def __repr__(self) -> str:
        return f"Alerter(source={self.source!r}, channels={[c.label for c in self._channels]})"

    def fire(self, alert: Alert) -> None:
        """The condition `alert.key` is active now: alert once, then remind at most every `remind_after`."""
        with self._lock:
            now = self.clock()
            state = self._states.get(alert.key)
            if state is None:
                state = self._states[alert.key] = _State(alert=alert, since=now)
            else:
                state.alert = alert
                state.cleared_at = None
                state.note = ""
            self._due(state, now)

    def adopt(self, alert: Alert, *, age: float = 0.0) -> None:
        """Take over a condition another process alerted `age` seconds ago, sending nothing now: a
        one-shot process (a pipeline run) that keeps its state elsewhere then `clear`s it for the
        recovery, or `fire`s it for the reminders."""
        with self._lock:
            now = self.clock()
            self._states[alert.key] = _State(alert=alert, since=now - max(age, 0.0), last_sent=now)

    def clear(self, key: str, note: str = "") -> None:
        """The condition `key` is not active now; `poll` sends the recovery once it stays clear."""
        with self._lock:
            state = self._states.get(key)
            if state is None:
                return
            if state.cleared_at is None:
                state.cleared_at = self.clock()
            if note:
                state.note = note

    def poll(self) -> None:
        """Send what is due: recoveries of keys clear for `recover_after`, reminders, held-back alerts."""
        with self._lock:
            now = self.clock()
            for key, state in list(self._states.items()):
                if state.cleared_at is None:
                    self._due(state, now)
                elif now - state.cleared_at >= self.settings.recover_after:
                    if state.last_sent is None:  # nobody was told it began: no recovery either
                        log.info("alert %r cleared before its message could go out", key)
                        del self._states[key]
                    elif self._send("recovery", state, now):
                        del self._states[key]

    def active(self) -> list[str]:
        """The keys alerted now (clearing ones included, until their recovery goes out)."""
        with self._lock:
            return list(self._states)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every channel has delivered (or given up on) its queue; False on timeout."""
        deadline = time.monotonic() + timeout
        return all([channel.flush(deadline - time.monotonic()) for channel in self._channels])

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued within `timeout`, then stop the workers (the rest is dropped, logged)."""
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        for channel in self._channels:
            channel.close(deadline - time.monotonic())

    def __enter__(self) -> Alerter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _due(self, state: _State, now: float) -> None:
        if state.last_sent is None:
            self._send("alert", state, now)
        elif (self.settings.remind_after is not None
              and now - state.last_sent >= self.settings.remind_after):
            self._send("reminder", state, now)

    def _send(self, kind: str, state: _State, now: float) -> bool:
        """Hand one message to the channels unless the hourly cap is reached (then count it dropped)."""
        while self._times and self._times[0] <= now - HOUR:
            self._times.popleft()
        if len(self._times) >= self.settings.max_per_hour:
            if not state.drop_counted:
                state.drop_counted = True
                self.dropped += 1
                log.warning("%s message for %r dropped: %d messages went out in the last hour, the limit",
                            kind, state.alert.key, len(self._times))
            return False
        ended = state.cleared_at if state.cleared_at is not None else now
        message = render(kind, state.alert, source=self.source, active_for=ended - state.since,
                         note=state.note, dropped=self.dropped, cap=self.settings.max_per_hour)
        self.dropped = 0
        self._times.append(now)
        state.last_sent = now
        state.drop_counted = False
        self.sent.append(message)
        for channel in self._channels:
            channel.put(message)
        return True

