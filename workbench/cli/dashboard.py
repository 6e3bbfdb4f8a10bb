"""`workbench dashboard`: serve the monitoring dashboard of a paper journal in a browser."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from workbench.cli.common import err, out


def dashboard_cmd(
    journal: Annotated[Path | None, typer.Argument(
        help="A journal.sqlite, its folder, or a paper config (default: the latest journal under the data "
        "folder).")] = None,
    host: Annotated[str, typer.Option(
        help="Address to listen on: 127.0.0.1 keeps it on this machine; any other needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8050,
    token_env: Annotated[str | None, typer.Option(
        "--token-env", help="NAME of the environment variable (or .env entry) holding the token that pages "
        "must carry as ?token=... (default WORKBENCH_DASHBOARD_TOKEN; required beyond 127.0.0.1). The token "
        "itself is never taken on the command line.")] = None,
    refresh: Annotated[float, typer.Option(help="Seconds between refreshes of an open page.")] = 2.0,
    reports: Annotated[Path | None, typer.Option(
        help="The rendered reports (and saved sweeps) the Research page lists and serves (default "
        "./reports).")] = None,
) -> None:
    """Live books, equity, orders, fills, decisions and halts of paper trading, refreshed every 2 s, with
    halt/resume controls (journaled with source "dashboard"); a Research page with the walk-forward runs,
    promoted artifacts, sweeps, models, the lake and the reports of the data folder."""
    from workbench.cli.paper import _use_data_dir
    from workbench.dashboard import Access, DashboardServer
    from workbench.errors import ConfigError
    from workbench.paper.monitor import latest_journal

    _use_data_dir()
    if not 0.25 <= refresh <= 3600:
        raise ConfigError(f"--refresh {refresh:g} is out of range; give seconds between 0.25 and 3600")
    access = Access.from_env(token_env)
    server = DashboardServer(latest_journal() if journal is None else journal, host=host, port=port,
                             access=access, refresh=refresh, reports=reports)

    def listening(url: str) -> None:
        out.print(f"dashboard of {server.journal} on {url}"
                  + (f" (open it with ?token=<the value of ${access.env}>)" if access.required else "")
                  + "; Ctrl-C stops it", highlight=False, soft_wrap=True)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it is meant to stop
        server.run(on_ready=listening)
    err.print("dashboard stopped", highlight=False)
