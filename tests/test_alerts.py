"""workbench.alerts: dedup, recovery, reminders and the hourly cap; delivery by email and webhook to
local servers through apprise, retries, a hung channel, and no secret in any log, error or repr."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import apprise
import pytest
from servers.loopback import guard_loopback
from servers.smtp import SmtpServer
from servers.webhook import WebhookServer

from workbench.alerts import Alert, Alerter, AlertSettings, check_urls, url_label
from workbench.alerts import channel as channel_module
from workbench.errors import ConfigError

pytestmark = [
    pytest.mark.network,
    # apprise's PGP helper (loaded with its email plugin) imports the stdlib's deprecated imghdr
    pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning"),
]

SOURCE = "workbench paper demo"
PASSWORD = "hunter2-pw"
TOKEN = "tok-S3CRET-123"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    guard_loopback(monkeypatch)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    with WebhookServer() as server:
        yield server


def halt(**changes: Any) -> Alert:
    fields: dict[str, Any] = dict(
        key="halt:sma_cross", title="halted: daily loss limit",
        facts={"strategy": "sma_cross", "daily loss": "-5.2%", "limit": "-5.0%"},
        action="workbench paper resume sma_cross --reason '...'")
    fields.update(changes)
    return Alert(**fields)


def make(urls: list[str], clock: FakeClock | None = None, **settings: Any) -> Alerter:
    settings.setdefault("retry_wait", 0.01)
    if clock is None:
        return Alerter(AlertSettings(urls=tuple(urls), **settings), source=SOURCE)
    return Alerter(AlertSettings(urls=tuple(urls), **settings), source=SOURCE, clock=clock)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- delivery ------------------------------------------------------------------------------------

def test_an_alert_arrives_by_email() -> None:
    with SmtpServer() as smtp, make([smtp.mailto()]) as alerts:
        alerts.fire(halt())
        assert alerts.flush(10)
        assert smtp.wait_for(1)
    [mail] = smtp.messages
    assert mail.subject == "[workbench paper demo] WARNING: halted: daily loss limit"
    assert mail.rcpt_tos == ["ops@example.com"]
    text = mail.text()
    assert "daily loss: -5.2%" in text and "strategy: sma_cross" in text
    assert "To act: workbench paper resume sma_cross --reason '...'" in text


def test_an_alert_arrives_by_webhook(webhook: WebhookServer) -> None:
    with make([webhook.json_url()]) as alerts:
        alerts.fire(halt(level="error"))
        assert alerts.flush(10)
    [body] = webhook.bodies
    assert body["title"] == "[workbench paper demo] ERROR: halted: daily loss limit"
    assert body["type"] == "failure"
    assert body["message"].splitlines() == [
        "strategy: sma_cross", "daily loss: -5.2%", "limit: -5.0%",
        "To act: workbench paper resume sma_cross --reason '...'"]


def test_every_url_gets_the_message(webhook: WebhookServer) -> None:
    with SmtpServer() as smtp, make([webhook.json_url(), smtp.mailto()]) as alerts:
        alerts.fire(halt())
        assert alerts.flush(10) and smtp.wait_for(1)
    assert len(webhook.bodies) == 1 and len(smtp.messages) == 1


# --- dedup, recovery, reminders ------------------------------------------------------------------

def test_a_flapping_condition_sends_one_alert_and_one_recovery(webhook: WebhookServer,
                                                               clock: FakeClock) -> None:
    with make([webhook.json_url()], clock, recover_after=300, remind_after=None) as alerts:
        for _ in range(20):
            alerts.fire(halt())
            alerts.poll()
            clock.advance(10)
            alerts.clear("halt:sma_cross", note="loss back within the limit")
            alerts.poll()
            clock.advance(10)
        clock.advance(299 - 10)
        alerts.poll()  # clear for 299 s: not yet
        assert [m.kind for m in alerts.sent] == ["alert"]
        clock.advance(1)
        alerts.poll()
        alerts.poll()
        assert alerts.flush(10)
    assert [m.kind for m in alerts.sent] == ["alert", "recovery"]
    alert, recovery = webhook.bodies
    assert alert["title"] == "[workbench paper demo] WARNING: halted: daily loss limit"
    assert recovery["title"] == "[workbench paper demo] RECOVERED: halted: daily loss limit"
    assert recovery["type"] == "success"
    # from the first fire (t=0) to the clear that stuck (t=390)
    assert recovery["message"].splitlines() == ["Cleared after 6m 30s.", "loss back within the limit"]
    assert alerts.active() == []


def test_a_key_alerts_again_after_its_recovery(clock: FakeClock, webhook: WebhookServer) -> None:
    with make([webhook.json_url()], clock, recover_after=0) as alerts:
        alerts.fire(halt())
        alerts.clear("halt:sma_cross")
        alerts.poll()
        alerts.fire(halt())
        assert alerts.flush(10)
    assert [m.kind for m in alerts.sent] == ["alert", "recovery", "alert"]


def test_clearing_a_key_never_alerted_does_nothing(clock: FakeClock, webhook: WebhookServer) -> None:
    with make([webhook.json_url()], clock, recover_after=0) as alerts:
        alerts.clear("stale:BTC/USDT", note="fine")
        alerts.poll()
        assert alerts.flush(10)
    assert alerts.sent == [] and webhook.attempts == 0


def test_reminders_honour_remind_after(clock: FakeClock, webhook: WebhookServer) -> None:
    with make([webhook.json_url()], clock, remind_after=100) as alerts:
        for t in range(0, 260, 10):  # fire every 10 s for 250 s: alert at 0, reminders at 100, 200
            clock.now = t
            alerts.fire(halt())
        clock.now = 299
        alerts.poll()
        clock.now = 300
        alerts.poll()  # poll sends a due reminder too, without a fire
        assert alerts.flush(10)
    assert [m.kind for m in alerts.sent] == ["alert", "reminder", "reminder", "reminder"]
    titles = [b["title"] for b in webhook.bodies]
    assert titles[1] == ("[workbench paper demo] WARNING: halted: daily loss limit "
                         "(still active after 1m 40s)")
    assert titles[3].endswith("(still active after 5m 00s)")
    assert "To act: workbench paper resume" in webhook.bodies[1]["message"]


def test_no_reminders_when_remind_after_is_none(clock: FakeClock, webhook: WebhookServer) -> None:
    with make([webhook.json_url()], clock, remind_after=None) as alerts:
        for _ in range(100):
            alerts.fire(halt())
            alerts.poll()
            clock.advance(3600)
    assert [m.kind for m in alerts.sent] == ["alert"]


def test_the_hourly_cap_drops_and_reports_the_count(clock: FakeClock, webhook: WebhookServer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with make([webhook.json_url()], clock, max_per_hour=3, remind_after=None) as alerts:
        for i in range(5):
            alerts.fire(halt(key=f"stale:S{i}", title=f"no bars from S{i}"))
            clock.advance(1)
        for _ in range(10):  # the held-back alerts are not counted twice
            alerts.fire(halt(key="stale:S4", title="no bars from S4"))
            alerts.poll()
        assert [m.key for m in alerts.sent] == ["stale:S0", "stale:S1", "stale:S2"]
        assert alerts.dropped == 2
        clock.now = 3600.5  # the first message (t=0) left the sliding hour: room for one
        alerts.poll()
        assert alerts.flush(10)
    assert [m.key for m in alerts.sent] == ["stale:S0", "stale:S1", "stale:S2", "stale:S3"]
    assert webhook.bodies[-1]["message"].splitlines()[-1] == (
        "(2 earlier alert messages dropped by the limit of 3 per hour.)")
    assert alerts.dropped == 0
    assert sum("dropped" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING) == 2


# --- a failing or dead channel -------------------------------------------------------------------

def test_a_webhook_failing_twice_gets_the_message_on_retry(webhook: WebhookServer,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    webhook.fail_next(2)
    with make([webhook.json_url()], retries=5, retry_wait=0.01) as alerts:
        alerts.fire(halt())
        assert alerts.flush(10)
    assert webhook.attempts == 3 and len(webhook.bodies) == 1
    retries = [r.getMessage() for r in caplog.records if r.name == "workbench.alerts.channel"]
    assert len(retries) == 2
    assert f"json://127.0.0.1:{webhook.port} failed (attempt 1 of 6); retrying in 0.01s" in retries[0]
    assert "attempt 2 of 6); retrying in 0.02s" in retries[1]


def test_a_dead_channel_drops_the_message_after_the_last_retry(caplog: pytest.LogCaptureFixture) -> None:
    port = closed_port()
    with make([f"json://127.0.0.1:{port}/hook"], retries=2, retry_wait=0.01) as alerts:
        alerts.fire(halt())  # never raises
        assert alerts.flush(10)
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("workbench")]
    assert error.getMessage().startswith(
        f"alert '[workbench paper demo] WARNING: halted: daily loss limit' to json://127.0.0.1:{port} "
        "dropped: delivery failed after 3 attempt(s)")


def test_a_notify_that_raises_is_logged_without_its_text_and_retried(
        webhook: WebhookServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    real_notify = apprise.Apprise.notify
    calls = []

    def notify(self: apprise.Apprise, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError(f"boom at {url}")  # what a library may put in its message
        return real_notify(self, *args, **kwargs)

    url = webhook.json_url(auth=f"alerts:{PASSWORD}@")
    monkeypatch.setattr(apprise.Apprise, "notify", notify)
    with make([url]) as alerts:
        alerts.fire(halt())
        assert alerts.flush(10)
    assert len(calls) == 2 and len(webhook.bodies) == 1
    assert "raised RuntimeError (attempt 1 of 6)" in caplog.text
    assert PASSWORD not in caplog.text and "boom" not in caplog.text


def test_a_hung_channel_never_blocks_fire(clock: FakeClock) -> None:
    """While the server holds the first post, fire/clear/poll keep returning, and a second
    channel keeps delivering; once released, the held channel delivers everything, once."""
    with WebhookServer() as hung, WebhookServer() as healthy:
        hung.hold()
        with make([hung.json_url(query="rto=30"), healthy.json_url()], clock, recover_after=0) as alerts:
            alerts.fire(halt())
            assert hung.held.wait(10)  # the worker is inside the post, waiting for the server
            alerts.fire(halt(key="stale:BTC/USDT", title="no bars from BTC/USDT"))
            alerts.clear("halt:sma_cross")
            alerts.poll()
            assert healthy.wait_for(3)
            assert hung.bodies == [] and hung.held.is_set()  # still held
            hung.release()
            assert alerts.flush(10)
        titles = [b["title"] for b in hung.bodies]
        assert titles == [b["title"] for b in healthy.bodies]
        assert [t.split("] ")[1] for t in titles] == [
            "WARNING: halted: daily loss limit", "WARNING: no bars from BTC/USDT",
            "RECOVERED: halted: daily loss limit"]
        assert hung.attempts == 3


def test_a_full_queue_drops_the_oldest_waiting_message(webhook: WebhookServer,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(channel_module, "QUEUE_SIZE", 2)
    webhook.hold()
    with make([webhook.json_url(query="rto=30")]) as alerts:
        for i in range(4):
            alerts.fire(halt(key=f"k{i}", title=f"t{i}"))
            if i == 0:
                assert webhook.held.wait(10)  # t0 is in flight; t1..t3 wait in a queue of 2
        webhook.release()
        assert alerts.flush(10)
    assert [b["title"].rsplit(": ", 1)[1] for b in webhook.bodies] == ["t0", "t2", "t3"]
    assert "is full (2 waiting): dropped the oldest, '[workbench paper demo] WARNING: t1'" in caplog.text


def test_after_close_fire_logs_and_does_not_raise(webhook: WebhookServer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    alerts = make([webhook.json_url()])
    alerts.close()
    alerts.fire(halt())
    assert "not sent to json://127.0.0.1" in caplog.text and webhook.attempts == 0


# --- bad settings and secrets --------------------------------------------------------------------

@pytest.mark.parametrize(("url", "says"), [
    (f"nosuchscheme://user:{PASSWORD}@host/x", "'nosuchscheme://***' is not a URL apprise can send to "
                                               "(unknown scheme 'nosuchscheme')"),
    (f"mailt://user:{PASSWORD}@gmail.com", "(unknown scheme 'mailt' (did you mean 'mailto'?))"),
    ("mailto://", "'mailto://' is not a URL apprise can send to (missing or malformed parts for mailto://)"),
    (f"json://alerts:{PASSWORD}@127.0.0.1:notaport/{TOKEN}", "'json://***' is not a URL"),
    (f"slack://{TOKEN}", "'slack://***' is not a URL apprise can send to"),
    (f"{TOKEN}@nowhere", "'<not a URL>' is not a URL apprise can send to (no scheme://)"),
])
def test_a_bad_url_is_one_line_without_its_secrets(url: str, says: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as err:
        AlertSettings(urls=(url,))
    message = str(err.value)
    assert says in message
    assert "\n" not in message and PASSWORD not in message and TOKEN not in message
    assert "see the apprise URL formats, e.g. mailto://user:pass@host" in message
    assert PASSWORD not in caplog.text and TOKEN not in caplog.text


@pytest.mark.parametrize(("settings", "says"), [
    (dict(urls=()), "no alert URL given"),
    (dict(urls="json://127.0.0.1/hook"), "alert urls must be a list of apprise URLs, not one string"),
    (dict(recover_after=-1), "recover_after=-1 is out of range: use a number >= 0"),
    (dict(remind_after=0), "remind_after=0 is out of range: use a number > 0"),
    (dict(max_per_hour=0), "max_per_hour=0 is out of range: use an integer >= 1"),
    (dict(max_per_hour=2.5), "max_per_hour=2.5 is out of range: use an integer >= 1"),
    (dict(retries=-1), "retries=-1 is out of range: use an integer >= 0"),
    (dict(retry_wait=float("nan")), "retry_wait=nan is out of range"),
])
def test_settings_out_of_range_are_one_line_errors(settings: dict[str, Any], says: str) -> None:
    settings.setdefault("urls", ("json://127.0.0.1/hook",))
    with pytest.raises(ConfigError) as err:
        AlertSettings(**settings)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_bad_alert_level_says_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"level 'warn' is not one of info, warning, error "
                                          r"\(did you mean 'warning'\?\)"):
        halt(level="warn")


def test_check_urls_accepts_the_usual_services() -> None:
    check_urls(["mailtos://user:pass@gmail.com", "json://127.0.0.1:8123/hook",
                "slack://TokenA/TokenB/TokenC", "tgram://123456:ABCDEF/12345",
                "discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js"])


@pytest.mark.parametrize(("url", "label"), [
    ("json://user:pw@127.0.0.1:8123/hook?+X-Token=t", "json://127.0.0.1:8123"),
    ("mailtos://user:pw@gmail.com?to=a@b.c", "mailtos://gmail.com"),
    ("slack://TokenA/TokenB/TokenC", "slack://***"),
    ("tgram://123456:ABCDEF/12345", "tgram://***"),
    ("json://[::1]:80/x", "json://[::1]:80"),
    ("mailto://", "mailto://"),
    ("mailto://user:pw@gmail.com/ops@example.com", "mailto://gmail.com"),
    ("mailto://john.doe:12/34@gmail.com", "mailto://***"),  # a password holding "/"
    ("json://127.0.0.1:notaport/x", "json://***"),
])
def test_url_label_keeps_only_scheme_and_host(url: str, label: str) -> None:
    assert url_label(url) == label


def test_no_secret_in_logs_or_reprs(webhook: WebhookServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    webhook.fail_next(1)
    url = webhook.json_url(auth=f"alerts:{PASSWORD}@", query=f"+X-Token={TOKEN}")
    dead = f"json://alerts:{PASSWORD}@127.0.0.1:{closed_port()}/hook?+X-Token={TOKEN}"
    settings = AlertSettings(urls=(url, dead), retries=1, retry_wait=0.01)
    with Alerter(settings, source=SOURCE) as alerts:
        alerts.fire(halt())
        assert alerts.flush(10)
        shown = repr(settings) + repr(alerts) + str(alerts.sent)
    assert len(webhook.bodies) == 1
    request = webhook.loopback.hits("/hook")[-1]
    assert request.headers["x-token"] == TOKEN and request.headers["authorization"].startswith("Basic ")
    assert "failed (attempt 1 of 2)" in caplog.text and "dropped" in caplog.text
    for secret in (PASSWORD, TOKEN):
        assert secret not in caplog.text and secret not in shown
        for record in caplog.records:
            assert secret not in record.getMessage()
    assert f"json://127.0.0.1:{webhook.port}" in repr(settings)
