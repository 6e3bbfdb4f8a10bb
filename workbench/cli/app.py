"""The `workbench` command line: the typer app that gathers the command groups, the root options, and
the CLI-wide last resort that turns any error into one line and an exit code.

A thin face over the Python API (all logic lives in the package); nothing outside `workbench.cli`
imports it.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from workbench import __version__
from workbench.cli.backtest import backtest_cmd
from workbench.cli.collect import collect_app
from workbench.cli.common import _State, err, out
from workbench.cli.dashboard import dashboard_cmd
from workbench.cli.data import data_app
from workbench.cli.demo import demo
from workbench.cli.model import model_app
from workbench.cli.optimize import optimize_app
from workbench.cli.paper import paper_app
from workbench.cli.pipeline import pipeline_app, schedule_cmd
from workbench.cli.portfolio import portfolio_cmd
from workbench.cli.promote import promote_app
from workbench.cli.report import report_app
from workbench.cli.strategies import strategies_cmd
from workbench.cli.sweep import sweep_cmd
from workbench.cli.tickfills import tickfills_cmd
from workbench.errors import WorkbenchError
from workbench.files import os_reason

app = typer.Typer(help="Quant research workbench: data lake, backtests, walk-forward, paper "
                  "trading.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
# commands list in this order in --help, then the groups
app.command("strategies")(strategies_cmd)
app.command("backtest")(backtest_cmd)
app.command("portfolio")(portfolio_cmd)
app.command("tickfills")(tickfills_cmd)
app.command("sweep")(sweep_cmd)
app.command("schedule")(schedule_cmd)
app.command("demo")(demo)
app.command("dashboard")(dashboard_cmd)
app.add_typer(data_app, name="data")
app.add_typer(collect_app, name="collect")
app.add_typer(model_app, name="model")
app.add_typer(optimize_app, name="optimize")
app.add_typer(promote_app, name="promote")
app.add_typer(paper_app, name="paper")
app.add_typer(report_app, name="report")
app.add_typer(pipeline_app, name="pipeline")


def _print_version(value: bool) -> None:
    if value:
        from workbench.version import code_version

        out.print(f"workbench {__version__} ({code_version()})")
        raise typer.Exit()


@app.callback()
def _root(
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Data root (default: $WORKBENCH_DATA_DIR or ./data).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show the full traceback of an unexpected error.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.",
                                          callback=_print_version, is_eager=True)] = False,
) -> None:
    _State.data_dir = data_dir
    _State.debug = debug
    if data_dir is not None:  # everything below (notebook kernels, child processes) sees the same lake
        from workbench.config import DATA_DIR_ENV

        os.environ[DATA_DIR_ENV] = str(data_dir.expanduser().resolve())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def _crash_log(exc: BaseException) -> Path | None:
    """Write the traceback of an unexpected error to a log file; returns it (None if nowhere is writable)."""
    import time
    import traceback

    from workbench.config import data_dir

    text = "".join(traceback.format_exception(exc))
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (data_dir(_State.data_dir) / "logs", Path(tempfile.gettempdir()) / "workbench-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(f"workbench {__version__}: workbench {' '.join(_State.argv)}\n{text}")
            return path
        except OSError:
            continue
    return None


def _one_line(exc: BaseException) -> str:
    """The line printed for an error that is not a WorkbenchError."""
    if isinstance(exc, OSError) and exc.strerror:
        # unwritable/missing paths (--data-dir, --out, export targets) and full disks
        where = f" {exc.filename}" if exc.filename else ""
        return (f"cannot use{where}: {os_reason(exc)}; choose a path you can write (or free space) "
                "and run again")
    log = _crash_log(exc)
    where = f"the traceback is in {log}" if log else "no log could be written"
    return (f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:200]}; {where} "
            "(run again with --debug to see it, and report it)")


def _handle(exc: BaseException) -> int:
    """Last resort of the CLI: one line on stderr and the exit code (KeyboardInterrupt: see item 11)."""
    if isinstance(exc, WorkbenchError):
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    if _State.debug:
        raise exc
    err.print(f"[bold red]error:[/] {escape(_one_line(exc))}", highlight=False, soft_wrap=True)
    return 1


def run(argv: list[str]) -> int:
    """Run the command line on `argv` in this process and return its exit code; what `main` (and the
    tests, through typer's CliRunner) call, so both go through the same last resort."""
    _State.debug = "--debug" in argv
    _State.argv = list(argv)
    try:
        app(args=argv, prog_name="workbench")
    except KeyboardInterrupt:  # outside a command (typer turns one inside into SystemExit(130))
        return _interrupted()
    except SystemExit as exc:
        if exc.code == 130 and _caused_by_interrupt(exc):  # typer's Exit(130) from a KeyboardInterrupt
            return _interrupted()
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        err.print(str(exc.code), markup=False, highlight=False)
        return 1
    except Exception as exc:  # the CLI's last resort: no traceback reaches a user
        if _caused_by_interrupt(exc):
            return _interrupted()
        return _handle(exc)
    return 0


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether Ctrl-C started this error: a library's cleanup can fail while a KeyboardInterrupt
    unwinds (optuna's journal lock unlinks a file already gone), and the user pressed Ctrl-C."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def main() -> None:
    """Entry point: run the app; any error ends as one line and a non-zero exit (`--debug`: traceback)."""
    sys.exit(run(sys.argv[1:]))


def _interrupted() -> int:
    """Ctrl-C: one line on what was kept, exit 130 (the shell's code for SIGINT)."""
    err.print("interrupted: nothing is half-written (files are replaced whole); bars synced, walk-forward "
              "trials and paper orders journalled so far are kept and the same command resumes from them "
              "(a backtest or sweep starts over)", highlight=False, soft_wrap=True)
    return 130


__all__ = ["app", "main", "run"]


if __name__ == "__main__":
    main()
