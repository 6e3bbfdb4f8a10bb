"""The dashboard of one paper journal: the Live, Controls and Research pages in one responsive layout,
refreshed in place every two seconds from `LiveView.update()` (an increment, never a full re-read).

The same `Dashboard` renders inline in JupyterLab (`workbench.dashboard.view`) and is served per browser
session by `DashboardServer`; each has its own `LiveView` (a read-only journal connection) and closes it
when the session ends. The Research page (`research.py`) reads the data and reports folders when its tab
is first shown.
"""

from __future__ import annotations

import html
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import panel as pn

from workbench.config import data_dir
from workbench.dashboard.controls import TOKEN_NEEDED, ControlsPage, one_line
from workbench.dashboard.live import LivePage
from workbench.dashboard.research import ResearchPage
from workbench.paper.live import LiveView
from workbench.paper.monitor import journal_file
from workbench.reports.catalog import reports_dir

log = logging.getLogger(__name__)

REFRESH_SECONDS = 2.0
EXTENSIONS = ("plotly", "tabulator")
# what keeps the page within a phone's width: nothing may be wider than the window
CSS = """
:host { max-width: 100%; }
.wb-header { font-size: 14px; }
"""


class Dashboard:
    """The pages of one journal for one viewer (`allowed`: may see it and use the controls; `origin`: where
    the viewer is, journaled with a halt or resume). The Research page reads `data` and `reports`, links a
    report by `report_link` (None: shows its path) and, with `background` (a served page), reads off the
    event loop."""

    def __init__(self, journal: str | Path, *, allowed: bool = True, origin: str = "notebook",
                 refresh: float = REFRESH_SECONDS, data: str | Path | None = None,
                 reports: str | Path | None = None, report_link: Callable[[str], str] | None = None,
                 background: bool = False, lake: Any = None) -> None:
        self.path = journal_file(journal)
        self.allowed = allowed
        self.refresh_ms = max(int(refresh * 1000), 250)
        self.data = data
        self.lake = lake  # what the shadow backtests read and the collectors write (default: `data`'s lake)
        self._statuses: list[dict[str, Any]] | None = None
        self.view: LiveView | None = LiveView(self.path) if allowed else None
        self.live = LivePage(shadow=self._shadow, collectors=self._collectors) if allowed else LivePage()
        self.controls = ControlsPage(self.path, allowed=allowed, origin=origin, on_change=self.refresh,
                                     data=data)
        # the research sources: `data` (runs, registry, models, lake; default the configured data folder)
        # and `reports`; read when the tab is first shown, so opening the Live page costs nothing more
        self.research = ResearchPage(data_dir(data), reports_dir(reports), allowed=allowed,
                                     background=background, report_link=report_link)
        self.status = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["wb-status"])
        self._callback: Any = None
        self._shown = False
        where = (f"<code style='word-break:break-all'>{html.escape(str(self.path))}</code>" if allowed
                 else "withheld")
        header = pn.pane.HTML(
            f"<div class='wb-header'><b>workbench dashboard</b> &middot; journal {where}</div>",
            sizing_mode="stretch_width")
        live: Any = self.live.layout if allowed else pn.pane.Alert(
            TOKEN_NEEDED, alert_type="warning", sizing_mode="stretch_width", css_classes=["wb-token-needed"])
        self.tabs = pn.Tabs(
            ("Live", live),
            ("Controls", self.controls.layout),
            ("Research", self.research.layout),
            sizing_mode="stretch_width", dynamic=False,
        )
        self.tabs.param.watch(self._tab, "active")
        self.layout = pn.Column(header, self.status, self.tabs, sizing_mode="stretch_width",
                                stylesheets=[CSS], css_classes=["wb-dashboard"])
        if self.view is not None:
            self._show(self.view.load())

    def refresh(self) -> None:
        """Fold in what the journal gained since the last read and update the widgets in place; a read
        that fails (the journal locked or gone) is one line on the page, and the next refresh retries."""
        if self.view is None:
            return
        if self._gone():
            self.close()
            return
        try:
            self._show(self.view.update())
        except Exception as exc:  # never a traceback: one line on the page (and in the log), then retry
            what = (f"could not read the journal: {one_line(exc)}" if isinstance(exc, sqlite3.Error | OSError)
                    else f"could not show the journal ({one_line(exc)})")
            log.warning("dashboard: %s", what)
            log.debug("dashboard: refreshing %s failed", self.path, exc_info=True)
            self.status.object = (f"<span class='wb-stale' style='color:#b00020'>{html.escape(what)} at "
                                  f"{time.strftime('%H:%M:%S', time.gmtime())} UTC; retrying every "
                                  f"{self.refresh_ms / 1000:g} s</span>")

    def _tab(self, event: Any) -> None:
        if self.tabs.objects[event.new] is self.research.layout:
            self.research.shown()

    def _show(self, state: Any) -> None:
        self.live.update(state)
        self.controls.update(state)
        read = time.strftime("%H:%M:%S", time.gmtime(state.updated))
        self.status.object = (
            f"<small class='wb-updated'>read {read} UTC &middot; refreshed every {self.refresh_ms / 1000:g} s"
            f" &middot; {state.n_fills} fills, {state.n_decisions} decisions in the journal</small>")

    def _lake(self) -> Any:
        if self.lake is None:
            from workbench.data.lake import Lake

            self.lake = Lake(data_dir(self.data))
        return self.lake

    def _shadow(self, strategy: str) -> tuple[Any, Any]:
        """A strategy's shadow backtest over the bars it traded: (parity, equity curve)."""
        from workbench.errors import ConfigError
        from workbench.paper.journal import Journal
        from workbench.paper.replay import shadow
        from workbench.paper.runner import specs_in

        with Journal(self.path) as j:
            specs = {spec.name: spec for spec in specs_in(j)}
            if strategy not in specs:
                raise ConfigError(f"the journal records no spec of {strategy}")
            return shadow(j, specs[strategy], self._lake())

    def _collectors(self) -> list[dict[str, Any]]:
        """The lake's collector streams, their rates taken between two refreshes."""
        from workbench.data.collector import read_status, stream_rows

        statuses = read_status(self._lake())
        rows = stream_rows(statuses, self._statuses)
        if statuses != self._statuses:
            self._statuses = statuses
        return rows

    def _gone(self) -> bool:
        """Whether a notebook view was shown and is no longer (its cell re-run or cleared): then nobody
        sees it and it stops refreshing. A served page stops when its session ends instead."""
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            return False
        shown = bool(getattr(self.layout, "_models", None))  # Panel's rendered views of this layout
        self._shown |= shown
        return self._shown and not shown

    def start(self) -> None:
        """Refresh every `refresh` seconds in the current Panel session (or notebook) from now on."""
        if self.view is not None and self._callback is None:
            self._callback = pn.state.add_periodic_callback(self.refresh, period=self.refresh_ms, start=True)

    def close(self) -> None:
        """Stop refreshing and release the journal."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        if self.view is not None:
            self.view.close()
            self.view = None
