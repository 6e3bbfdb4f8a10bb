"""`workbench pipeline run|ls|check|history` and `workbench schedule`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

pipeline_app = typer.Typer(
    help="Declarative jobs in pipelines/*.yaml: run one now, list, check, history.", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(help="A pipeline name (see `pipeline ls`) or a .yaml path.")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p", help="Override a parameter: key=value.")]
ReportsOpt = Annotated[Path, typer.Option("--reports", help="Where report steps write (default ./reports).")]


def _root() -> Path | None:
    from workbench.cli.common import _State

    return _State.data_dir


def run_and_print(
    name: str,
    params: list[str] | None,
    *,
    reports: Path,
    trigger: str = "manual",
    scheduled_for: str | None = None,
) -> None:
    """Run a pipeline now, printing each step; a failed run exits 1 with the step and error named."""
    from workbench.cli.common import out
    from workbench.pipelines.run import run_pipeline
    from workbench.pipelines.spec import load_pipeline
    from workbench.reports import parse_parameters

    pipe = load_pipeline(name)
    overrides = parse_parameters(params or [])

    def on_step(i: int, n: int, sid: str, kind: str) -> None:
        out.rule(f"pipeline {pipe.name}: step {i}/{n} {sid} ({kind})")

    if trigger == "manual":
        logging.getLogger("workbench.pipelines").setLevel(logging.INFO)
    run = run_pipeline(
        pipe,
        overrides,
        trigger=trigger,
        scheduled_for=scheduled_for,
        data_root=_root(),
        reports=reports,
        on_step=on_step,
    )
    rec = run.record
    out.print(
        f"pipeline {pipe.name}: ok in {rec['duration_s']:.1f} s ({len(rec['steps'])} steps)", highlight=False
    )
    for s in rec["steps"]:
        shown = {k: v for k, v in (s.get("outputs") or {}).items() if v not in (None, "", [])}
        out.print(f"  {s['id']}: " + ", ".join(f"{k}={v}" for k, v in shown.items()), highlight=False)


@pipeline_app.command("run")
def pipeline_run_cmd(
    name: NameArg,
    param: ParamOpt = None,
    reports: ReportsOpt = Path("reports"),
    trigger: Annotated[str, typer.Option(hidden=True)] = "manual",
    scheduled_for: Annotated[
        str | None,
        typer.Option(
            help="Run as of this cron time (default now): what ${scheduled_for} and ${date} give the steps."
        ),
    ] = None,
) -> None:
    """Run one pipeline now; the run is recorded in the pipeline history."""
    run_and_print(name, param, reports=reports, trigger=trigger, scheduled_for=scheduled_for)


@pipeline_app.command("ls")
def pipeline_ls_cmd(
    folder: Annotated[
        Path | None, typer.Option("--dir", help="Pipelines folder (default ./pipelines).")
    ] = None,
) -> None:
    """The pipelines, their schedules, next run and steps."""
    from datetime import UTC, datetime

    from rich.table import Table

    from workbench.cli.common import out
    from workbench.pipelines.spec import load_pipelines, parse_cron, pipeline_files, pipelines_dir

    if not pipeline_files(folder):
        out.print(f"no pipelines in {folder or pipelines_dir()}")
        return
    pipes, bad = load_pipelines(folder)
    table = Table(title="pipelines", title_justify="left")
    for c in ("name", "schedule (UTC)", "next run", "steps", "description"):
        table.add_column(c)
    for p in pipes:
        nxt = parse_cron(p.schedule).get_next_fire_time(None, datetime.now(UTC)) if p.schedule else None
        table.add_row(
            p.name,
            p.schedule or "-",
            nxt.strftime("%Y-%m-%d %H:%M") if nxt else "-",
            ", ".join(f"{s.id}" if s.id == s.kind else f"{s.id} ({s.kind})" for s in p.steps),
            p.description,
        )
    if pipes:
        out.print(table)
    _report_bad(bad)
    if bad:
        raise typer.Exit(1)


def _report_bad(bad: dict[Path, str]) -> None:
    """One line per pipeline file that does not read, on stderr; the others go on."""
    from workbench.cli.common import err

    for path, message in bad.items():
        err.print(f"error: skipped {path.name}: {message}", markup=False, highlight=False, soft_wrap=True)


@pipeline_app.command("check")
def pipeline_check_cmd(name: NameArg) -> None:
    """Check a pipeline without running it: schedule, parameters, steps, options, references, the
    strategies and timeframes against the registry and the symbols against the lake."""
    from workbench.cli.common import _lake, out
    from workbench.pipelines.spec import check_data, load_pipeline

    p = load_pipeline(name)
    check_data(p, _lake())
    out.print(f"{p.path}: ok, {len(p.steps)} step(s), schedule {p.schedule or 'none'}", highlight=False)


@pipeline_app.command("history")
def pipeline_history_cmd(
    name: Annotated[str | None, typer.Argument(help="Only this pipeline.")] = None,
    last: Annotated[int, typer.Option(help="Show this many runs.")] = 20,
) -> None:
    """The recorded runs, newest last: trigger, cron time, status, duration, the failed step."""
    import pandas as pd

    from workbench.cli.common import out, print_frame
    from workbench.pipelines.run import read_history

    runs = read_history(_root(), name)[-last:]
    if not runs:
        out.print("no pipeline runs recorded yet: `workbench pipeline run NAME` or `workbench schedule`")
        return
    rows = [
        {
            "pipeline": r["pipeline"],
            "trigger": r.get("trigger"),
            "scheduled_for": r.get("scheduled_for"),
            "status": r.get("status"),
            "duration_s": r.get("duration_s"),
            "failed": (
                f"{r['error'].get('step') or ''} {r['error'].get('message', '')}".strip()
                if r.get("error")
                else ""
            ),
        }
        for r in runs
    ]
    print_frame(pd.DataFrame(rows), title="pipeline runs")


def schedule_cmd(
    folder: Annotated[
        Path | None, typer.Option("--dir", help="Pipelines folder (default ./pipelines).")
    ] = None,
    only: Annotated[str | None, typer.Option(help="Comma-separated pipeline names (default: all).")] = None,
    reports: ReportsOpt = Path("reports"),
    clock_start: Annotated[
        str | None, typer.Option(help="Compressed clock: simulated start time (UTC), e.g. 2026-01-05T00:00.")
    ] = None,
    clock_speed: Annotated[
        float | None, typer.Option(help="Compressed clock: simulated seconds per real second, e.g. 3600.")
    ] = None,
    max_runs: Annotated[
        int | None, typer.Option(help="Stop after this many runs (default: run until stopped).")
    ] = None,
) -> None:
    """Run every scheduled pipeline on its cron (UTC) until SIGTERM/Ctrl-C; each run in its own process."""
    from workbench.cli.common import out
    from workbench.errors import ConfigError
    from workbench.pipelines.schedule import Clock, Scheduler
    from workbench.pipelines.spec import load_pipeline, load_pipelines, pipelines_dir

    pipes, bad = load_pipelines(folder)  # every file is checked before anything runs
    if only:
        wanted = [n.strip() for n in only.split(",") if n.strip()]
        broken = {f.stem: f for f in bad}
        for n in wanted:
            if n in broken:
                load_pipeline(broken[n])  # a broken pipeline asked for by name: its error, exit 1
        names = [p.name for p in pipes]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            from workbench.errors import did_you_mean

            raise ConfigError(
                f"unknown pipeline {unknown[0]!r}{did_you_mean(unknown[0], names)}; "
                f"available in {folder or pipelines_dir()}: {', '.join(names) or 'none'}"
            )
        pipes = [p for p in pipes if p.name in wanted]
        bad = {}
    _report_bad(bad)
    if bad and not pipes:
        raise ConfigError(f"no pipeline to schedule in {folder or pipelines_dir()}: fix the files above")
    if (clock_start is None) != (clock_speed is None):
        raise ConfigError("a compressed clock needs both --clock-start and --clock-speed")
    if max_runs is not None and max_runs < 1:
        raise ConfigError(f"--max-runs {max_runs} must be at least 1")
    clock = (Clock.compressed(clock_start, clock_speed)
             if clock_start is not None and clock_speed is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
    logging.getLogger("workbench.pipelines").setLevel(logging.INFO)
    sched = Scheduler(pipes, data_root=_root(), reports=reports, clock=clock, max_runs=max_runs)
    for name, nxt in sched.next_runs().items():
        out.print(f"{name}: next run {nxt.isoformat() if nxt else 'never'}", highlight=False)
    runs = sched.serve()
    out.print(f"scheduler stopped after {runs} run(s)", highlight=False)
