"""Serving the dashboard over HTTP: one `Dashboard` per browser session, 127.0.0.1 unless a token is set.

`DashboardServer` checks everything before it listens (the journal exists, the bind needs a token or
not, the port is free) and says what is wrong in one line. Each session's page is given the journal
only if its address carried the token (``?token=...``); the token is never logged: the addresses the
web server logs have it masked. The rendered reports the Research page links to are served from the
reports folder under ``/reports/``; when a token is set, only to a request that carries it or the
report's signature (derived from the token, so the page never renders the token itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import panel as pn
import tornado.web

from workbench.config import data_dir
from workbench.dashboard.access import Access, is_loopback
from workbench.dashboard.app import EXTENSIONS, REFRESH_SECONDS, Dashboard
from workbench.dashboard.controls import one_line
from workbench.errors import ConfigError
from workbench.paper.monitor import journal_file
from workbench.reports.catalog import report_file, reports_dir

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8050
TITLE = "workbench dashboard"
REPORTS_ROUTE = "/reports/"
# a report is a self-contained page: it may run its own scripts but reach nothing beyond this server
REPORT_POLICY = ("default-src 'self' 'unsafe-inline' 'unsafe-eval' data: blob:; connect-src 'self'; "
                 "frame-ancestors 'self'")
_TOKEN_ARG = re.compile(r"(token=)[^&\s\"']*", re.IGNORECASE)
# loggers that write request addresses (tornado's access log) or session details (bokeh, panel)
_REQUEST_LOGGERS = ("tornado.access", "tornado.application", "tornado.general", "bokeh.server",
                    "bokeh.server.views.ws", "bokeh.server.views.doc_handler", "bokeh.server.tornado",
                    "panel")


class _MaskToken(logging.Filter):
    """Masks ``token=...`` in a record's message before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "token=" in text.lower():
            record.msg, record.args = _TOKEN_ARG.sub(r"\1***", text), ()
        return True


_MASK = _MaskToken()


def _mask_logs() -> None:
    for name in _REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if _MASK not in logger.filters:
            logger.addFilter(_MASK)


def _client(request: Any) -> str:
    ip = getattr(request, "remote_ip", None) if request is not None else None
    return str(ip) if ip else "an unknown client"


class _ReportHandler(tornado.web.RequestHandler):
    """One rendered report (an HTML page under the reports folder), for a request the access allows."""

    def initialize(self, root: Path, access: Access) -> None:
        self.root, self.access = root, access

    def get(self, path: str) -> None:
        allowed = self.access.allows_path(path, signature=self.get_query_argument("sig", None),
                                          token=self.get_query_argument("token", None))
        if not allowed:
            log.info("dashboard: a report was refused to %s: no token or signature", self.request.remote_ip)
            self._say(403, "a token is needed: open the report from the dashboard's Research page")
            return
        found = report_file(path, self.root)
        try:
            body = found.read_bytes() if found is not None else None
        except OSError:
            body = None
        if body is None:
            self._say(404, "no such report: the Research page lists the reports there are (Reload it)")
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", REPORT_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")
        self.write(body)

    def _say(self, status: int, text: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(text + "\n")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Whatever went wrong, one plain line (never a traceback)."""
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}: the report could not be served\n")


class DashboardServer:
    """The dashboard of `journal` (a journal.sqlite, its folder or a paper config) served on `host:port`.

    ``run()`` serves until Ctrl-C or SIGTERM; ``start()`` serves from a background thread (for notebooks
    and tests) until ``stop()``.
    """

    def __init__(self, journal: str | Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 access: Access | None = None, refresh: float = REFRESH_SECONDS,
                 data: str | Path | None = None, reports: str | Path | None = None, lake: Any = None) -> None:
        self.journal = journal_file(journal)
        self.data, self.reports = data_dir(data), reports_dir(reports)  # what the Research page reads
        self.lake = lake  # shadow backtests and collector streams (default: the data folder's lake)
        self.access = access if access is not None else Access()
        self.access.check_bind(host)
        if not 0 <= port <= 65535:
            raise ConfigError(f"--port {port} is not a TCP port; choose one in 1024-65535 (default "
                              f"{DEFAULT_PORT})")
        self.host, self.port, self.refresh = host.strip(), port, refresh
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The address to open (without the token)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    # ------------------------------------------------------------------ the app
    def _session(self) -> Any:
        """One browser session's page: the journal only for a request that carried the token."""
        pn.extension(*EXTENSIONS)
        args = pn.state.session_args or {}
        given = next(iter(args.get("token") or []), None)
        request = getattr(getattr(pn.state.curdoc, "session_context", None), "request", None)
        origin = _client(request)
        allowed = self.access.allows(given)
        if not allowed:
            log.info("dashboard: a page opened from %s without the token: journal and controls withheld",
                     origin)
        try:
            board = Dashboard(self.journal, allowed=allowed, origin=origin, refresh=self.refresh,
                              data=self.data, reports=self.reports, report_link=self.report_link,
                              background=True, lake=self.lake)
        except Exception as exc:  # the journal went away, or cannot be read: one line on the page
            log.warning("dashboard: the page for %s could not be built: %s", origin, one_line(exc))
            log.debug("dashboard: why", exc_info=True)
            return pn.pane.Alert(one_line(exc), alert_type="danger", sizing_mode="stretch_width")
        board.start()
        pn.state.on_session_destroyed(lambda _ctx: board.close())
        return board.layout

    def report_link(self, path: str) -> str:
        """The address of the report at `path` (relative to the reports folder), signed when a token is
        set."""
        signature = self.access.sign(path)
        return REPORTS_ROUTE + quote(path) + (f"?sig={signature}" if signature else "")

    def _origins(self) -> list[str]:
        if is_loopback(self.host):  # pages of this port only (bokeh's allowlist cannot spell [::1])
            return [f"{h}:{self.port}" for h in ("127.0.0.1", "localhost")]
        if self.host not in ("0.0.0.0", "::") and ":" not in self.host:
            return [f"{self.host}:{self.port}"]  # the one address it listens on
        # every address of the machine, under names the server cannot know: any origin, as the token is
        # required (a page without it gets neither the journal nor the controls)
        return ["*"]

    def _build(self) -> Any:
        _mask_logs()
        if self.port == 0:  # any free port (the websocket allowlist needs to know which)
            self.port = _free_port(self.host)
        try:
            server = pn.io.server.get_server(
                {"/": self._session}, port=self.port, address=self.host, websocket_origin=self._origins(),
                show=False, start=False, title=TITLE, location=False,
                extra_patterns=[(rf"{REPORTS_ROUTE}(.*)", _ReportHandler,
                                 {"root": self.reports, "access": self.access})],
            )
        except OSError as exc:
            raise _bind_error(exc, self.host, self.port) from None
        self.port = int(server.port or self.port)
        return server

    # ------------------------------------------------------------------ running
    def run(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve until Ctrl-C (KeyboardInterrupt reaches the caller) or SIGTERM; `on_ready` is called
        with the address once the server listens."""
        import signal

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            server = self._server = self._build()
        except BaseException:
            loop.close()
            raise
        server.start()
        if on_ready is not None:
            on_ready(self.url)
        # not in the main thread, or no signals on this platform: Ctrl-C or stop() end it
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, loop.stop)
        try:
            loop.run_forever()
        finally:
            self._shutdown()

    def start(self) -> str:
        """Serve from a background thread; returns the address once the server listens (a port in use, a
        bad host: the same one-line error as `run`)."""
        ready = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                self._server = self._build()
                self._server.start()
            except BaseException as exc:
                failed.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                self._shutdown()

        self._thread = threading.Thread(target=serve, name="workbench-dashboard", daemon=True)
        self._thread.start()
        ready.wait(60)
        if failed:
            raise failed[0]
        return self.url

    def stop(self) -> None:
        """Stop a server started with `start` (or `run` from another thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def _shutdown(self) -> None:
        loop = self._loop
        if self._server is not None:
            with contextlib.suppress(AssertionError):  # stopped already
                self._server.stop()
            self._server = None
        if loop is not None and not loop.is_closed():
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()


def _free_port(host: str) -> int:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            return int(sock.getsockname()[1])
    except OSError as exc:
        raise _bind_error(exc, host, 0) from None


def _bind_error(exc: OSError, host: str, port: int) -> ConfigError:
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(f"port {port} is in use: choose --port (another dashboard, or another server, "
                           f"already listens on {host}:{port})")
    if exc.errno == errno.EACCES:
        return ConfigError(f"not allowed to listen on port {port}: choose --port 1024 or above")
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"--host {host} is not an address of this machine; use 127.0.0.1 or one of its "
                           "addresses")
    return ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --host or "
                       "--port")
