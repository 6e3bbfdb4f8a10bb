"""The monitoring dashboard of paper trading, a face like the command line (nothing in the package
imports it): `view(journal)` inline in JupyterLab, `workbench dashboard` (`DashboardServer`) in a browser.

>>> from workbench.dashboard import view
>>> view("data/paper/demo/journal.sqlite")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.dashboard.access import TOKEN_ENV, Access, is_loopback
from workbench.dashboard.app import REFRESH_SECONDS, Dashboard
from workbench.dashboard.server import DEFAULT_HOST, DEFAULT_PORT, DashboardServer


def view(journal: str | Path | None = None, *, refresh: float = REFRESH_SECONDS,
         data: str | Path | None = None, reports: str | Path | None = None) -> Any:
    """The dashboard of `journal` (a journal.sqlite, its folder or a paper config; default: the latest
    journal under the data folder) as a Panel layout that renders inline in JupyterLab and refreshes itself
    every `refresh` seconds. Halts and resumes from it are journaled with source ``dashboard``. Its
    Research page reads `data` (default: the data folder) and `reports` (default: ./reports)."""
    import panel as pn

    from workbench.dashboard.app import EXTENSIONS
    from workbench.paper.monitor import latest_journal

    pn.extension(*EXTENSIONS)
    board = Dashboard(latest_journal() if journal is None else journal, allowed=True, origin="notebook",
                      refresh=refresh, data=data, reports=reports)
    board.start()
    return board.layout


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "TOKEN_ENV", "Access", "Dashboard", "DashboardServer",
           "is_loopback", "view"]
