"""Running a pipeline: its steps in order, each result recorded in the pipeline history.

A failing step fails the run (the steps after it are skipped: they may need its outputs) and the run
is still recorded, with the step and the error named. The history is one JSON line per run in
``<data dir>/pipelines/history.jsonl``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.config import data_dir
from workbench.errors import WorkbenchError
from workbench.pipelines.spec import Pipeline, load_pipeline, resolve
from workbench.pipelines.steps import KINDS, RunContext
from workbench.version import code_version

log = logging.getLogger("workbench.pipelines")


class PipelineFailed(WorkbenchError):
    """A step of a pipeline raised; the run is recorded as failed with the step and the error."""

    run: PipelineRun  # the failed run as recorded, set where it is raised


@dataclass
class PipelineRun:
    """One run of a pipeline: status, timing and what each step did."""

    record: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every step succeeded."""
        return self.record.get("status") == "ok"

    def outputs(self, step: str) -> dict[str, Any]:
        """What a step returned."""
        return next(s["outputs"] for s in self.record["steps"] if s["id"] == step)


def history_path(root: str | Path | None = None) -> Path:
    """The pipeline history file: one JSON line per run."""
    return data_dir(root) / "pipelines" / "history.jsonl"


def append_history(record: Mapping[str, Any], root: str | Path | None = None) -> Path:
    """Append one run to the history in a single write (a reader never sees half a line)."""
    path = history_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, default=str, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_history(root: str | Path | None = None, pipeline: str | None = None) -> list[dict[str, Any]]:
    """The recorded runs, oldest first (optionally of one pipeline)."""
    path = history_path(root)
    if not path.exists():
        return []
    runs = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            log.warning("skipping an unreadable line in %s", path)
            continue
        if pipeline is None or rec.get("pipeline") == pipeline:
            runs.append(rec)
    return runs


def _alert(p: Pipeline, record: Mapping[str, Any], previous: Mapping[str, Any] | None) -> None:
    """Tell the pipeline's alert channels about a failure that follows a good run (or none), and about
    the first good run after failures (the history is the state: repeated failures say nothing more).
    A channel that fails is logged; it never fails the run."""
    from workbench.alerts import Alert, Alerter

    failed, before = record["status"] == "failed", (previous or {}).get("status")
    if failed == (before == "failed"):
        return  # still failing (already alerted), or still fine
    last = record if failed else previous
    assert last is not None
    error = last.get("error") or {}
    alert = Alert(key=f"pipeline:{p.name}", title=f"pipeline {p.name} failed at step {error.get('step')}",
                  level="error",
                  facts={"pipeline": p.name, "run": last["run_id"], "scheduled for": last["scheduled_for"],
                         "step": error.get("step"), "error": f"{error.get('type')}: {error.get('message')}"},
                  action=f"see `workbench pipeline history {p.name}`, fix the step's input, then re-run it: "
                         f"workbench pipeline run {p.name} --scheduled-for {last['scheduled_for']}")
    try:
        alerter = Alerter(p.alerts.settings(), source=f"workbench pipeline {p.name}")  # type: ignore[union-attr]
    except WorkbenchError as exc:
        log.error("pipeline %s: alerts not sent: %s", p.name, exc)
        return
    try:
        if failed:
            alerter.fire(alert)
        else:
            age = (pd.Timestamp(record["finished"]) - pd.Timestamp(last["finished"])).total_seconds()
            alerter.adopt(alert, age=age)
            alerter.clear(alert.key, note=f"run {record['run_id']} went through every step")
            alerter.poll()
    finally:
        alerter.close(timeout=10.0)


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def run_pipeline(
    pipeline: Pipeline | str | Path,
    params: Mapping[str, Any] | None = None,
    *,
    trigger: str = "manual",
    scheduled_for: Any = None,
    data_root: str | Path | None = None,
    reports: str | Path = "reports",
    on_step: Callable[[int, int, str, str], None] | None = None,
) -> PipelineRun:
    """Run every step of a pipeline now; record the run; raise `PipelineFailed` if a step fails.

    `scheduled_for` (the cron time that fired it, default now) is what ``${scheduled_for}`` and
    ``${date}`` give the steps, so a re-run of a scheduled time sees the same inputs.
    """
    p = pipeline if isinstance(pipeline, Pipeline) else load_pipeline(pipeline)
    p = p.with_params(params or {})
    when = pd.Timestamp(scheduled_for) if scheduled_for is not None else _now().floor("s")
    when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    started = _now()
    record: dict[str, Any] = {
        "run_id": f"{p.name}-{started.strftime('%Y%m%dT%H%M%S%fZ')}",
        "pipeline": p.name,
        "path": str(p.path),
        "trigger": trigger,
        "scheduled_for": when.isoformat(),
        "started": started.isoformat(),
        "params": p.params,
        "code_version": code_version(),
        "pid": os.getpid(),
        "steps": [],
    }
    scope: dict[str, Any] = {**p.params, "scheduled_for": when.isoformat(), "date": when.strftime("%Y-%m-%d")}
    # steps see the cron time through ${scheduled_for}
    ctx = RunContext(reports=Path(reports), data_root=Path(data_root) if data_root is not None else None)
    failure: tuple[str, BaseException] | None = None
    t0 = time.perf_counter()
    log.info("pipeline %s: %d step(s), %s run for %s", p.name, len(p.steps), trigger, when.isoformat())
    for i, step in enumerate(p.steps, 1):
        entry: dict[str, Any] = {"id": step.id, "kind": step.kind}
        record["steps"].append(entry)
        if failure is not None:
            entry["status"] = "skipped"
            continue
        if on_step is not None:
            on_step(i, len(p.steps), step.id, step.kind)
        s0 = time.perf_counter()
        try:
            options = resolve(step.options, scope)
            KINDS[step.kind].check(options, f"{p.path}: step {step.id} ({step.kind})")
            outputs = KINDS[step.kind].run(options, ctx)
        except Exception as exc:  # recorded with the step named; the run fails, the process goes on
            failure = (step.id, exc)
            entry.update(
                status="failed",
                duration_s=round(time.perf_counter() - s0, 3),
                error={"type": type(exc).__name__, "message": str(exc).splitlines()[0] if str(exc) else ""},
            )
            if not isinstance(exc, WorkbenchError):
                entry["error"]["traceback"] = traceback.format_exc(limit=8)
            log.error(
                "pipeline %s: step %s (%s) failed: %s: %s",
                p.name,
                step.id,
                step.kind,
                type(exc).__name__,
                exc,
            )
            continue
        entry.update(status="ok", duration_s=round(time.perf_counter() - s0, 3), outputs=outputs)
        scope[step.id] = outputs
        log.info(
            "pipeline %s: step %s (%s) ok in %.1f s: %s",
            p.name,
            step.id,
            step.kind,
            entry["duration_s"],
            outputs,
        )
    record["finished"] = _now().isoformat()
    record["duration_s"] = round(time.perf_counter() - t0, 3)
    record["status"] = "ok" if failure is None else "failed"
    if failure is not None:
        record["error"] = {
            "step": failure[0],
            "type": type(failure[1]).__name__,
            "message": str(failure[1]).splitlines()[0] if str(failure[1]) else "",
        }
    previous = next((r for r in reversed(read_history(data_root, p.name)) if r.get("status")), None)
    append_history(record, data_root)
    if p.alerts is not None:
        _alert(p, record, previous)
    run = PipelineRun(record)
    if failure is not None:
        sid, cause = failure
        error = PipelineFailed(
            f"pipeline {p.name} failed at step {sid}: {type(cause).__name__}: {record['error']['message']}"
        )
        error.run = run
        raise error from cause
    log.info("pipeline %s: ok in %.1f s", p.name, record["duration_s"])
    return run
