"""`workbench schedule`: every pipeline on its cron, through APScheduler, each run in its own process.

A run is a child process (`workbench pipeline run ... --trigger schedule`), so a failing, crashing or
hanging job cannot stop the others: the scheduler logs it, records it in the history when the child
could not, and goes on. Each run's output goes to ``<data dir>/pipelines/logs/<pipeline>/<time>.log``.
A compressed clock (simulated start and speed) runs the same crons faster, for demos and tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.config import DATA_DIR_ENV, data_dir
from workbench.errors import ConfigError
from workbench.pipelines.run import append_history, read_history
from workbench.pipelines.spec import Pipeline, parse_cron

log = logging.getLogger("workbench.pipelines")


@dataclass(frozen=True)
class Clock:
    """Simulated time: ``start`` at the wall time ``wall0``, running ``speed`` times faster."""

    start: datetime
    speed: float
    wall0: float

    @classmethod
    def compressed(cls, start: Any, speed: float) -> Clock:
        """A clock starting now at `start` (UTC), `speed` simulated seconds per real second."""
        if not speed > 0:
            raise ConfigError(f"clock speed {speed!r} must be positive, e.g. 3600 (an hour a second)")
        try:
            t = pd.Timestamp(start)
        except (TypeError, ValueError):
            raise ConfigError(f"clock start {start!r} is not a time; write e.g. 2026-01-05T00:00") from None
        t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
        return cls(t.to_pydatetime(), float(speed), time.time())

    def to_sim(self, real: datetime) -> datetime:
        """The simulated time at a wall time."""
        return self.start + timedelta(seconds=(real.timestamp() - self.wall0) * self.speed)

    def to_real(self, sim: datetime) -> datetime:
        """The wall time at which the simulated time `sim` comes."""
        return datetime.fromtimestamp(self.wall0 + (sim - self.start).total_seconds() / self.speed, UTC)


class ClockTrigger:
    """Wraps a cron trigger: fires on its times in simulated time (or wall time without a clock), and
    remembers which cron time each fire stands for."""

    def __init__(self, cron: Any, clock: Clock | None) -> None:
        from apscheduler.triggers.base import BaseTrigger

        owner = self

        class _Trigger(BaseTrigger):
            def get_next_fire_time(self, previous_fire_time: Any, now: Any) -> Any:
                return owner.next_fire(previous_fire_time, now)

            def __str__(self) -> str:
                speed = (
                    f" at {owner.clock.speed:g}x from {owner.clock.start.isoformat()}" if owner.clock else ""
                )
                return f"{cron}{speed}"

        self.cron = cron
        self.clock = clock
        self.trigger = _Trigger()
        self._fired: dict[datetime, datetime] = {}
        self._lock = threading.Lock()

    def next_fire(self, previous: datetime | None, now: datetime) -> datetime | None:
        """The next wall time to fire, after `previous` (a wall time this trigger returned)."""
        if self.clock is None:
            nxt = self.cron.get_next_fire_time(previous, now)
            if nxt is not None:
                with self._lock:
                    self._fired[nxt] = nxt
            return nxt
        with self._lock:
            sim_prev = self._fired.get(previous) if previous is not None else None
        if previous is not None and sim_prev is None:
            sim_prev = self.clock.to_sim(previous).replace(microsecond=0)
        sim = self.cron.get_next_fire_time(sim_prev, self.clock.to_sim(now))
        if sim is None:
            return None
        real = self.clock.to_real(sim)
        with self._lock:
            self._fired[real] = sim
            if len(self._fired) > 256:
                for k in sorted(self._fired)[:-64]:
                    del self._fired[k]
        return real

    def due(self) -> datetime:
        """The cron time of the fire that is running now (the latest one not in the future)."""
        now = datetime.now(UTC)
        with self._lock:
            past = [k for k in self._fired if k <= now + timedelta(milliseconds=50)]
            if past:
                return self._fired[max(past)]
        return self.clock.to_sim(now) if self.clock else now


class Scheduler:
    """Runs pipelines on their crons until stopped (SIGTERM/SIGINT, `stop`, or `max_runs` runs)."""

    def __init__(
        self,
        pipelines: list[Pipeline],
        *,
        data_root: str | Path | None = None,
        reports: str | Path = "reports",
        clock: Clock | None = None,
        max_runs: int | None = None,
        misfire_grace: float = 300.0,
    ) -> None:
        scheduled = [p for p in pipelines if p.schedule]
        if not scheduled:
            raise ConfigError("no pipeline has a schedule: add `schedule: '0 2 * * *'` to one")
        self.pipelines = scheduled
        self.root = data_dir(data_root)
        self.reports = Path(reports)
        self.clock = clock
        self.max_runs = max_runs
        self.misfire_grace = misfire_grace
        self.triggers = {
            p.name: ClockTrigger(parse_cron(p.schedule or "", f"{p.path}: schedule"), clock)
            for p in scheduled
        }
        self.runs = 0
        self._stop = threading.Event()
        self._interrupt = True
        self._count = threading.Lock()
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def next_runs(self) -> dict[str, datetime | None]:
        """When each pipeline fires next (simulated time with a compressed clock)."""
        now = datetime.now(UTC)
        out = {}
        for name, t in self.triggers.items():
            ref = t.clock.to_sim(now) if t.clock else now
            out[name] = t.cron.get_next_fire_time(None, ref)
        return out

    # ------------------------------------------------------------------ one run
    def run_one(self, pipeline: Pipeline, scheduled_for: datetime) -> dict[str, Any]:
        """Run one pipeline in a child process; return its history record (written here if the child
        could not write it)."""
        stamp = pd.Timestamp(scheduled_for).strftime("%Y%m%dT%H%M%SZ")
        logs = self.root / "pipelines" / "logs" / pipeline.name
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{stamp}-{os.getpid()}-{time.monotonic_ns() % 10**9}.log"
        cmd = [
            sys.executable,
            "-m",
            "workbench",
            "--data-dir",
            str(self.root),
            "pipeline",
            "run",
            str(pipeline.path),
            "--trigger",
            "schedule",
            "--scheduled-for",
            scheduled_for.isoformat(),
            "--reports",
            str(self.reports),
        ]
        log.info(
            "pipeline %s: starting the run for %s (log %s)",
            pipeline.name,
            scheduled_for.isoformat(),
            log_path,
        )
        t0 = time.perf_counter()
        status = None
        with open(log_path, "wb") as out:
            child = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, DATA_DIR_ENV: str(self.root)},
            )
            self._children[child.pid] = child
            try:
                code = child.wait(timeout=pipeline.timeout)
            except subprocess.TimeoutExpired:
                _kill(child)
                code, status = child.wait(), "timeout"
            finally:
                self._children.pop(child.pid, None)
        duration = time.perf_counter() - t0
        mine = [r for r in read_history(self.root, pipeline.name) if r.get("pid") == child.pid]
        if mine:
            rec = mine[-1]
        else:  # the child died before recording its run (killed, crashed, timed out, bad environment)
            status = status or ("interrupted" if self._stop.is_set() and self._interrupt else "crashed")
            rec = {
                "run_id": f"{pipeline.name}-{stamp}-{child.pid}",
                "pipeline": pipeline.name,
                "path": str(pipeline.path),
                "trigger": "schedule",
                "scheduled_for": scheduled_for.isoformat(),
                "status": status,
                "exit_code": code,
                "duration_s": round(duration, 3),
                "pid": child.pid,
                "steps": [],
                "error": {"type": status, "message": _why(status, code, pipeline.timeout, log_path)},
            }
            append_history(rec, self.root)
        level = logging.INFO if rec.get("status") == "ok" else logging.ERROR
        err = rec.get("error") or {}
        log.log(
            level,
            "pipeline %s: %s for %s in %.1f s%s (exit %s, log %s)",
            pipeline.name,
            rec.get("status"),
            scheduled_for.isoformat(),
            duration,
            ((f" at step {err['step']}: " if err.get("step") else ": ") + str(err.get("message")))
            if err
            else "",
            code,
            log_path,
        )
        rec["log"] = str(log_path)
        return rec

    def _job(self, pipeline: Pipeline) -> None:
        if self._stop.is_set():
            return
        try:
            self.run_one(pipeline, self.triggers[pipeline.name].due())
        except Exception:  # the scheduler itself must go on whatever one run does
            log.exception("pipeline %s: the scheduler could not run it", pipeline.name)
        with self._count:
            self.runs += 1
            if self.max_runs is not None and self.runs >= self.max_runs:
                self.stop(interrupt=False)  # the runs under way finish

    # ------------------------------------------------------------------ loop
    def stop(self, interrupt: bool = True) -> None:
        """Ask `serve` to return: no new runs; running children are asked to stop (SIGTERM, recorded as
        interrupted) or, with ``interrupt=False``, waited for."""
        self._interrupt = interrupt
        self._stop.set()

    def serve(self) -> int:
        """Block, running pipelines on their schedules; return the number of runs."""
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        sched = BackgroundScheduler(
            timezone="UTC", executors={"default": ThreadPoolExecutor(len(self.pipelines))}
        )

        def skipped(event: Any) -> None:
            why = "still running" if event.code == EVENT_JOB_MAX_INSTANCES else "missed (scheduler busy)"
            log.warning("pipeline %s: a run was skipped: %s", event.job_id, why)

        sched.add_listener(skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        if self.clock is not None:  # simulated time starts now, not when the clock was made
            from dataclasses import replace

            self.clock = replace(self.clock, wall0=time.time())
            for t in self.triggers.values():
                t.clock = self.clock
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        for p in self.pipelines:
            sched.add_job(
                self._job,
                self.triggers[p.name].trigger,
                args=[p],
                id=p.name,
                name=p.name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=int(max(self.misfire_grace, 1)),
            )
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        main = threading.current_thread() is threading.main_thread()
        if main:
            for sig in previous:
                signal.signal(sig, lambda *_: self.stop())
        sched.start()
        for p in self.pipelines:
            job = sched.get_job(p.name)
            log.info(
                "pipeline %s: scheduled '%s', next run %s",
                p.name,
                p.schedule,
                job.next_run_time.isoformat() if job and job.next_run_time else "never",
            )
        try:
            while not self._stop.wait(0.2):
                pass
        finally:
            sched.pause()
            if self._interrupt:
                for child in list(self._children.values()):
                    _kill(child, signal.SIGTERM)
            sched.shutdown(wait=True)
            if main:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        return self.runs


def _kill(child: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, sig)


def _why(status: str, code: int, timeout: float | None, log_path: Path) -> str:
    if status == "timeout":
        return f"killed after the pipeline's timeout of {timeout:g} s"
    if status == "interrupted":
        return "stopped with the scheduler (SIGTERM)"
    return f"exit code {code} before the run was recorded: {_tail(log_path)}"


def _tail(path: Path, n: int = 1) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip() and "───" not in ln]
    except OSError:
        return ""
    return " | ".join(lines[-n:])[:300]
