"""Alerts through apprise: one URL scheme for email, Slack, Telegram, Discord and webhooks.

A sender knows nothing of what it reports: this package imports only `workbench.config` and
`workbench.errors`; the paper runner and the collector describe their conditions as `Alert`s.

>>> alerts = Alerter(AlertSettings(urls=("json://127.0.0.1:8123/hook",)),  # doctest: +SKIP
...                  source="workbench paper demo")
>>> alerts.fire(Alert(key="halt:sma_cross", title="halted: daily loss limit",  # doctest: +SKIP
...                   facts={"loss": "-5.2%"}, action="workbench paper resume sma_cross --reason ..."))

Rules (the clock is `Alerter`'s `clock`, monotonic seconds):

- `fire(alert)` for a key not alerted sends one ALERT message at once. While the key stays
  alerted, more `fire` calls send nothing (dedup), except one reminder when `remind_after` has
  passed since the key's last message.
- `clear(key)` sends nothing at once: the key is *clearing*. `poll()` sends ONE recovery
  message (saying how long the condition lasted) once the key has stayed clear for
  `recover_after`; a `fire` before then makes it alerted again, silently. So a flapping
  condition sends one alert and, once it settles clear, one recovery. Clearing a key that is not
  alerted does nothing.
- `max_per_hour` caps the messages of all keys in any sliding hour. A message over the cap is
  dropped and counted, and the next message that goes out says how many were dropped; an alert
  dropped this way is sent by a later `fire`/`poll` once the hour has room (counted once), and a
  condition that clears before its alert ever went out sends no recovery.
- Titles read ``[<source>] WARNING: <title>``; bodies list the facts as ``name: value`` lines
  and end with ``To act: <action>``.

Delivery never blocks or raises into the caller: each URL has a daemon worker thread and a
bounded queue (the oldest waiting message is dropped when it is full, logged). A notify that fails
(returns False or raises) is logged and retried `retries` times, the first wait `retry_wait`
seconds, doubled each time up to 300 s; then the message is dropped with an error log.

URLs hold tokens and passwords: logs, errors and reprs name a channel only by scheme and host
(`url_label`). Apprise's own debug records spell out URLs, so this package drops the ``apprise``
logger's records below WARNING (its warnings and errors name hosts only).
"""

from workbench.alerts.alerter import Alerter, AlertSettings
from workbench.alerts.config import AlertsSection, UrlsSection
from workbench.alerts.message import LEVELS, Alert, Message
from workbench.alerts.urls import check_urls, url_label

__all__ = ["LEVELS", "Alert", "AlertSettings", "Alerter", "AlertsSection", "Message", "UrlsSection",
           "check_urls", "url_label"]
