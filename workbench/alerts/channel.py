"""One apprise URL with its own daemon worker and bounded queue, so a dead channel delays only itself."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import apprise

from workbench.alerts.message import Message
from workbench.alerts.urls import URL_FORMATS, quiet_apprise, url_label
from workbench.errors import ConfigError

log = logging.getLogger(__name__)

QUEUE_SIZE = 100  # messages waiting per channel; beyond it the oldest is dropped (and logged)
MAX_RETRY_WAIT = 300.0  # seconds: the cap of the doubling wait between delivery attempts

_NOTIFY_TYPES = {
    "info": apprise.NotifyType.INFO,
    "warning": apprise.NotifyType.WARNING,
    "error": apprise.NotifyType.FAILURE,
}


class Channel:
    """Deliver messages to one apprise URL from a daemon thread, retrying with a doubling wait.

    `put` never blocks and never raises; a notify that returns False or raises is logged (the
    channel by `label` only: the URL holds secrets) and tried again `retries` times, the first
    wait `retry_wait` seconds, doubled each time up to `MAX_RETRY_WAIT`.
    """

    def __init__(self, url: str, *, retries: int, retry_wait: float, asset: apprise.AppriseAsset) -> None:
        self.label = url_label(url)
        self.retries = retries
        self.retry_wait = retry_wait
        self._apprise = apprise.Apprise(asset=asset)
        with quiet_apprise():
            added = self._apprise.add(url)
        if not added:
            raise ConfigError(f"alert URL {self.label!r} is not a URL apprise can send to; {URL_FORMATS}")
        self._queue: deque[Message] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closing = False
        self._abandon = threading.Event()  # set by close(): stop retrying, drop what is left
        self._thread = threading.Thread(target=self._run, name=f"alerts to {self.label}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"Channel({self.label})"

    def put(self, message: Message) -> None:
        """Queue `message` for delivery; when the queue is full the oldest waiting one is dropped."""
        with self._cond:
            if self._closing:
                log.warning("alert %r not sent to %s: the alerter is closed", message.title, self.label)
                return
            if len(self._queue) >= QUEUE_SIZE:
                oldest = self._queue.popleft()
                log.warning("alert queue to %s is full (%d waiting): dropped the oldest, %r",
                            self.label, QUEUE_SIZE, oldest.title)
            self._queue.append(message)
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is queued or being delivered; False if `timeout` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, max(0.0, timeout))

    def close(self, timeout: float) -> None:
        """Stop the worker: deliveries still pending are dropped (logged); waits up to `timeout`."""
        with self._cond:
            left = len(self._queue) + self._busy
            self._closing = True
            self._abandon.set()
            self._cond.notify_all()
        if left:
            log.warning("%d alert message(s) to %s not delivered before close", left, self.label)
        self._thread.join(max(0.0, timeout))

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if self._closing:
                    self._queue.clear()
                    self._cond.notify_all()
                    return
                message = self._queue.popleft()
                self._busy = True
            try:
                self._deliver(message)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _deliver(self, message: Message) -> bool:
        attempts = self.retries + 1
        wait = self.retry_wait
        problem = ""
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                ok = bool(self._apprise.notify(
                    body=message.body, title=message.title, body_format=apprise.NotifyFormat.TEXT,
                    notify_type=apprise.NotifyType.SUCCESS if message.kind == "recovery"
                    else _NOTIFY_TYPES[message.level]))
                problem = "failed"
            except Exception as exc:  # a channel's failure is logged here, never raised to the caller
                ok, problem = False, f"raised {type(exc).__name__}"  # not str(exc): it may quote the URL
            if ok:
                log.debug("alert %r delivered to %s in %.2fs", message.title, self.label,
                          time.monotonic() - started)
                return True
            if attempt == attempts or self._abandon.is_set():
                break
            log.warning("alert %r to %s %s (attempt %d of %d); retrying in %gs",
                        message.title, self.label, problem, attempt, attempts, wait)
            if self._abandon.wait(wait):
                break
            wait = min(wait * 2, MAX_RETRY_WAIT)
        log.error("alert %r to %s dropped: delivery %s after %d attempt(s); check the channel "
                  "(its URL, credentials and reachability)", message.title, self.label, problem, attempt)
        return False
