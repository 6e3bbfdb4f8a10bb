"""Pipelines: file checks, runs with step outputs, the history, the CLI, and the scheduler on a
compressed clock (real APScheduler, real child processes, one failing and one hanging job)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from cli_runner import CliResult, invoke, run_process

from workbench.data.lake import Lake
from workbench.data.sources.synthetic import SyntheticSource
from workbench.errors import ConfigError
from workbench.pipelines import Clock, PipelineFailed, load_pipeline, parse_cron, read_history, run_pipeline
from workbench.pipelines.schedule import ClockTrigger

REPO = Path(__file__).resolve().parents[1]


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{name}.yaml"
    p.write_text(text)
    return p


def _cli(*args: str, cwd: Path, data: Path) -> CliResult:
    """`workbench <args>` in this process, with `cwd/pipes` as the pipelines folder."""
    return invoke(args, data=data, cwd=cwd, env=_dirs(cwd))


def _dirs(cwd: Path) -> dict[str, str | None]:
    """The repository's notebooks and `cwd/pipes` as the pipelines folder."""
    return {"WORKBENCH_NOTEBOOKS_DIR": str(REPO / "notebooks"), "WORKBENCH_PIPELINES_DIR": str(cwd / "pipes")}


def _child_cpu_seconds(parent: int) -> float:
    """CPU seconds used so far by `parent`'s child processes running a pipeline (read from Linux /proc)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == parent and b"pipeline" in cmdline:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


SYNC = """
schedule: "0 * * * *"
params:
  symbols: BTC/USDT
steps:
  - sync:
      source: synthetic
      symbols: ${symbols}
      timeframe: 1h
      start: "2025-01-01"
      end: ${scheduled_for}
"""


# ---------------------------------------------------------------------- reading a pipeline
def _refused_in_one_line(tmp_path: Path, text: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a pipeline file with `text` fails with one line matching `message` and naming the file."""
    monkeypatch.setenv("WORKBENCH_NOTEBOOKS_DIR", str(REPO / "notebooks"))
    p = _write(tmp_path, "bad", text)
    with pytest.raises(ConfigError, match=message) as info:
        load_pipeline(p)
    assert "\n" not in str(info.value) and str(p) in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'schedule: "61 * * * *"\nsteps: [{sync: {source: synthetic, symbols: X}}]',
            r"schedule '61 \* \* \* \*' is not a valid cron expression \(.*59",
        ),
        (
            'schedule: "0 2 * *"\nsteps: [{sync: {source: synthetic, symbols: X}}]',
            r"needs 5 fields \(minute hour day month weekday\), got 4",
        ),
        (
            'schedule: "0 2 * * 9"\nsteps: [{sync: {source: synthetic, symbols: X}}]',
            r"weekday '9' is out of range",
        ),
        (
            "steps: [{report: {notebok: data_lake}}]",
            r"unknown option 'notebok' \(did you mean 'notebook'\?\)",
        ),
        (
            "steps: [{reprot: {notebook: data_lake}}]",
            r"unknown job kind 'reprot' \(did you mean 'report'\?\)",
        ),
        (
            "steps: [{sync: {source: synthetic, symbol: X}}]",
            r"unknown option 'symbol' \(did you mean 'symbols'\?\)",
        ),
        ("steps: [{sync: {source: synthetic}}]", r"missing option\(s\) symbols"),
        ("steps: [{walk_forward: {strategy: s, symbols: X, trials: many}}]", r"trials must be a number"),
        ("steps: [{report: {notebook: nope}}]", r"unknown notebook 'nope'"),
        (
            "steps: [{report: {notebook: data_lake, parameters: {symbl: X}}}]",
            r"takes no parameter 'symbl' \(did you mean 'symbol'\?\)",
        ),
        ("steps: [{report: {notebook: data_lake, parameters: {api_key: X}}}]", r"looks like a credential"),
        ('steps: [{sync: {source: synthetic, symbols: "${sym}"}}]', r"\$\{sym\} is not a parameter"),
        ('steps: [{promote: {run: "${walk_forward.run_id}"}}]', r"refers to no earlier step"),
        (
            "steps: [{walk_forward: {strategy: sma_cross, symbols: X}},\n"
            '        {promote: {run: "${walk_forward.runid}"}}]',
            r"has no output 'runid' \(did you mean 'run_id'\?\)",
        ),
        (
            "steps: [{sync: {source: synthetic, symbols: X}}, {sync: {source: synthetic, symbols: Y}}]",
            r"a second step with id 'sync'",
        ),
        ("steps: [{promote: {run: r1, force: true}}]", r"force: true needs a reason"),
        ("schedual: x\nsteps: [{sync: {source: synthetic, symbols: X}}]", r"unknown key 'schedual'"),
        ("steps: []", r"steps must be a non-empty list"),
        (
            "steps: [{sync: {source: synthetic, symbols: X}, report: {notebook: data_lake}}]",
            r"exactly one job kind",
        ),
        ("steps:\n  - sync: {source: synthetic\n", r"not valid YAML"),
        ("name: demo\nbroker: {kind: sim}", r"is not a pipeline \(it has no steps:\)"),
    ],
)
def test_a_bad_pipeline_file_fails_before_any_work_with_one_line(
    tmp_path: Path, text: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _refused_in_one_line(tmp_path, text, message, monkeypatch)


def test_unknown_pipeline_and_undeclared_parameter(tmp_path: Path) -> None:
    _write(tmp_path / "pipes", "hourly_sync", SYNC)
    with pytest.raises(
        ConfigError,
        match=r"unknown pipeline 'hourly_snyc' \(did you mean 'hourly_sync'\?\); "
        r"available in .*: hourly_sync",
    ):
        load_pipeline("hourly_snyc", tmp_path / "pipes")
    p = load_pipeline("hourly_sync", tmp_path / "pipes")
    with pytest.raises(
        ConfigError, match=r"has no parameter 'symbol' \(did you mean 'symbols'\?\); it takes symbols"
    ):
        p.with_params({"symbol": "ETH/USDT"})


def test_the_shipped_pipelines_are_valid_and_scheduled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    names = {}
    for name in ("nightly_data", "weekly_research", "daily_paper"):
        p = load_pipeline(name, REPO / "pipelines")
        assert p.schedule and p.steps
        names[name] = [s.kind for s in p.steps]
    assert names["nightly_data"] == ["sync", "report"]
    assert names["weekly_research"] == ["walk_forward", "promote", "report"]
    assert names["daily_paper"] == ["report"]


def test_cron_weekdays_count_sunday_as_zero_like_cron() -> None:
    sunday = datetime(2026, 11, 22, tzinfo=UTC)  # a Sunday
    nxt = {
        e: parse_cron(e).get_next_fire_time(None, sunday)
        for e in ("0 6 * * 0", "0 6 * * 7", "0 6 * * 1", "0 6 * * 1-5", "0 6 * * sat", "0 6 * * 6")
    }
    assert nxt["0 6 * * 0"] == nxt["0 6 * * 7"] == datetime(2026, 11, 22, 6, tzinfo=UTC)
    assert nxt["0 6 * * 1"] == nxt["0 6 * * 1-5"] == datetime(2026, 11, 23, 6, tzinfo=UTC)
    assert nxt["0 6 * * sat"] == nxt["0 6 * * 6"] == datetime(2026, 11, 28, 6, tzinfo=UTC)
    # day of month and weekday both given: either one fires, as in cron
    either = parse_cron("0 6 1 * 5")
    fires, t = [], sunday
    for _ in range(3):
        t = either.get_next_fire_time(t, t)
        fires.append(t.strftime("%a %d"))
    assert fires == ["Fri 27", "Tue 01", "Fri 04"]


def test_a_compressed_clock_fires_every_cron_time_once_in_order() -> None:
    start = datetime(2025, 1, 1, 0, 59, 59, tzinfo=UTC)
    clock = Clock(start=start, speed=3600.0, wall0=1_000.0)  # an hour per real second
    trig = ClockTrigger(parse_cron("*/30 * * * *"), clock)
    now = datetime.fromtimestamp(1_000.0, UTC)
    fires, prev = [], None
    for _ in range(6):
        real = trig.next_fire(prev, now)
        fires.append((real.timestamp() - 1_000.0, clock.to_sim(real)))
        prev = now = real
    sims = [s.replace(microsecond=0) for _, s in fires]
    assert [s.strftime("%H:%M") for s in sims] == ["01:00", "01:30", "02:00", "02:30", "03:00", "03:30"]
    assert [round(t, 3) for t, _ in fires] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


# ---------------------------------------------------------------------- running a pipeline
def test_a_pipeline_chains_real_jobs_through_step_outputs(
    tmp_path: Path, lake_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(lake_root))
    monkeypatch.setenv("WORKBENCH_NOTEBOOKS_DIR", str(REPO / "notebooks"))
    monkeypatch.chdir(tmp_path)
    p = _write(
        tmp_path,
        "research",
        """
description: sweep, walk-forward, promotion and its report
params:
  symbol: BTC/USDT
  end: "2025-06-01"
steps:
  - sweep:
      strategy: sma_cross
      symbols: ["${symbol}"]
      timeframe: 4h
      end: ${end}
      grid: {fast: [5, 10], slow: "40:60:20"}
      fixed: short=false
      out: sweep.parquet
  - id: wf
    walk_forward:
      strategy: sma_cross
      symbols: ${symbol}
      timeframe: 1h
      end: ${end}
      folds: 2
      trials: 4
      fixed: short=false
      seed: 3
  - promote:
      run: ${wf.run_id}
  - report:
      notebook: walk_forward_report
      name: wf_report
      parameters: {run_id: "${wf.run_id}"}
""",
    )
    run = run_pipeline(p, {"end": "2025-05-01"}, scheduled_for="2025-05-02T00:00Z")
    rec = run.record
    assert rec["status"] == "ok" and rec["params"] == {"symbol": "BTC/USDT", "end": "2025-05-01"}
    assert run.outputs("sweep")["runs"] == 4 and pd.read_parquet(tmp_path / "sweep.parquet").shape[0] == 4
    run_id = run.outputs("wf")["run_id"]
    assert run_id.startswith("wf-sma_cross-")
    assert run.outputs("promote")["status"] in ("refused", "promoted")  # a verdict either way
    folder = Path(run.outputs("report")["folder"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["parameters"] == {"run_id": run_id} and manifest["recorded"]["run_id"] == run_id
    assert folder.parent == tmp_path / "reports" / "wf_report"
    [hist] = read_history(lake_root, "research")
    assert hist["scheduled_for"] == "2025-05-02T00:00:00+00:00" and hist["trigger"] == "manual"
    assert [s["status"] for s in hist["steps"]] == ["ok"] * 4 and hist["code_version"]


def test_a_failing_step_fails_the_run_skips_the_rest_and_is_recorded(
    tmp_path: Path, lake_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    p = _write(
        tmp_path,
        "broken",
        """
steps:
  - sync: {source: synthetic, symbols: BTC/USDT, timeframe: 1h, start: "2025-01-01", end: "2025-01-02"}
  - walk_forward: {strategy: sma_cross, symbols: NOPE/USDT, folds: 2, trials: 2}
  - promote: {run: "${walk_forward.run_id}"}
""",
    )
    with pytest.raises(
        PipelineFailed,
        match=r"pipeline broken failed at step walk_forward: DataError: no data "
        r"for symbol 'NOPE/USDT'",
    ) as info:
        run_pipeline(p)
    rec = info.value.run.record  # type: ignore[attr-defined]
    assert [s["status"] for s in rec["steps"]] == ["ok", "failed", "skipped"]
    assert rec["steps"][0]["outputs"] == {"rows_added": 24, "symbols": ["BTC/USDT"]}
    [hist] = read_history(tmp_path / "data")
    assert hist["status"] == "failed" and hist["error"]["step"] == "walk_forward"


def test_cli_runs_checks_and_lists_pipelines(tmp_path: Path) -> None:
    _write(tmp_path / "pipes", "hourly_sync", SYNC)
    data = tmp_path / "data"
    res = _cli(
        "pipeline",
        "run",
        "hourly_sync",
        "--scheduled-for",
        "2025-01-01T05:00Z",
        "-p",
        "symbols=ETH/USDT",
        cwd=tmp_path,
        data=data,
    )
    assert res.returncode == 0, res.stderr
    assert "rows_added=5" in res.stdout
    cov = Lake(data).series_coverage("synthetic", "ETH/USDT", "1h")
    assert cov is not None and cov.last == pd.Timestamp("2025-01-01T04:00Z")
    # a pipeline file given to `report run` runs the pipeline
    res = _cli(
        "report",
        "run",
        str(tmp_path / "pipes" / "hourly_sync.yaml"),
        "-p",
        "symbols=SOL/USDT",
        cwd=tmp_path,
        data=data,
    )
    assert res.returncode == 0, res.stderr
    assert Lake(data).series_coverage("synthetic", "SOL/USDT", "1h") is not None
    res = _cli("pipeline", "ls", cwd=tmp_path, data=data)
    assert res.returncode == 0 and "hourly_sync" in res.stdout and "0 * * * *" in res.stdout
    res = _cli("pipeline", "history", cwd=tmp_path, data=data)
    assert res.returncode == 0 and res.stdout.count("hourly_sync") == 2
    for args, message in [
        (("pipeline", "run", "nope"), "error: unknown pipeline 'nope'; available in"),
        (("pipeline", "run", "hourly_sync", "-p", "symbol=X"), "has no parameter 'symbol'"),
        (("report", "run", "nope.yaml"), "error: unknown pipeline 'nope.yaml'"),
        (("schedule", "--only", "hourly"), "unknown pipeline 'hourly'"),
        (("schedule", "--clock-start", "2025-01-01"), "needs both --clock-start and --clock-speed"),
    ]:
        res = _cli(*args, cwd=tmp_path, data=data)
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


# ---------------------------------------------------------------------- the scheduler
def test_the_scheduler_runs_pipelines_on_their_cron_and_survives_failing_and_hanging_jobs(
    tmp_path: Path,
) -> None:
    pipes = tmp_path / "pipes"
    _write(pipes, "hourly_sync", SYNC)
    _write(
        pipes,
        "broken",
        """
schedule: "30 * * * *"
steps:
  - walk_forward: {strategy: sma_cross, symbols: NOPE/USDT, folds: 2, trials: 2}
""",
    )
    _write(
        pipes,
        "hangs",
        """
schedule: "45 1 * * *"
timeout: 0.5
steps:
  - sync: {source: synthetic, symbols: ETH/USDT, timeframe: 1m, start: "2020-01-01", end: "2025-01-01"}
""",
    )
    data = tmp_path / "data"
    # another series in the lake, so `broken` fails on its unknown symbol even when it runs before the
    # first hourly sync has written anything (it did on a loaded machine: "the lake is empty")
    day = pd.Timestamp("2025-01-01", tz="UTC")
    Lake(data).write_bars("synthetic", "SOL/USDT", "1h", SyntheticSource(seed=1).bars(
        "SOL/USDT", "1h", day, day + pd.Timedelta(hours=2)))
    # the group's real-process smoke test: `workbench schedule` started as cron or systemd would
    # simulated 00:59:30 onwards at 450x: an hour every 8 s; stop after six runs
    res = run_process(["schedule", "--clock-start", "2025-01-01T00:59:30Z", "--clock-speed", "450",
                       "--max-runs", "6"], data=data, cwd=tmp_path, env=_dirs(tmp_path), timeout=180)
    assert res.returncode == 0, res.stderr
    assert re.search(r"scheduler stopped after ([6-9]) run\(s\)", res.stdout)  # runs under way finish
    runs = read_history(data)
    by = {name: [r for r in runs if r["pipeline"] == name] for name in ("hourly_sync", "broken", "hangs")}
    ok = by["hourly_sync"]
    assert len(ok) >= 2 and all(r["status"] == "ok" and r["trigger"] == "schedule" for r in ok)
    times = [pd.Timestamp(r["scheduled_for"]) for r in ok]
    assert times[0] == pd.Timestamp("2025-01-01T01:00Z")
    assert all(t.minute == 0 and t.second == 0 for t in times) and times == sorted(set(times))
    assert by["broken"] and all(
        r["status"] == "failed"
        and r["error"]["step"] == "walk_forward"
        and pd.Timestamp(r["scheduled_for"]).minute == 30
        for r in by["broken"]
    )
    [hung] = by["hangs"]
    assert hung["status"] == "timeout" and hung["scheduled_for"] == "2025-01-01T01:45:00+00:00"
    # the hourly job went on after the others failed, and fetched exactly the bars its cron time allowed
    assert max(times) > pd.Timestamp(by["broken"][0]["scheduled_for"])
    cov = Lake(data).series_coverage("synthetic", "BTC/USDT", "1h")
    assert cov is not None and cov.last == max(times) - pd.Timedelta(hours=1)
    logs = sorted((data / "pipelines" / "logs" / "broken").glob("*.log"))
    assert logs and "no data for symbol 'NOPE/USDT'" in logs[0].read_text()
    for line in (
        "pipeline hourly_sync: ok for 2025-01-01T01:00:00+00:00",
        "pipeline broken: failed for 2025-01-01T01:30:00+00:00",
        "pipeline hangs: timeout for 2025-01-01T01:45:00+00:00",
    ):
        assert line in res.stderr, res.stderr


def test_sigterm_stops_the_scheduler_and_the_run_under_way_is_recorded(tmp_path: Path) -> None:
    import signal
    import time

    _write(
        tmp_path / "pipes",
        "slow",
        """
schedule: "0 * * * *"
steps:
  - sync: {source: synthetic, symbols: ETH/USDT, timeframe: 1m, start: "2020-01-01", end: "2025-01-01"}
""",
    )
    data = tmp_path / "data"
    env = {**os.environ, "WORKBENCH_DATA_DIR": str(data), "WORKBENCH_PIPELINES_DIR": str(tmp_path / "pipes")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workbench.cli",
            "schedule",
            "--clock-start",
            "2025-01-01T00:59:59Z",
            "--clock-speed",
            "60",
        ],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # SIGTERM while the run's child is under way: started, and still importing (0.2 s of CPU out of the
    # ~2 s its imports take), so it has written nothing yet however loaded the machine is
    deadline = time.monotonic() + 120
    while _child_cpu_seconds(proc.pid) < 0.2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "scheduler stopped after 1 run(s)" in out
    [rec] = read_history(data, "slow")
    assert rec["status"] == "interrupted" and rec["scheduled_for"] == "2025-01-01T01:00:00+00:00"
    assert Lake(data).series_coverage("synthetic", "ETH/USDT", "1m") is None  # nothing half-written


# ---------------------------------------------------------------------- checks against registry and lake
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "steps: [{sweep: {strategy: sma_crss, symbols: BTC/USDT, out: t.parquet}}]",
            r"unknown strategy 'sma_crss' \(did you mean 'sma_cross'\?\)",
        ),
        (
            "params: {strategy: sma_crss}\n"
            'steps: [{walk_forward: {strategy: "${strategy}", symbols: BTC/USDT}}]',
            r"unknown strategy 'sma_crss'",
        ),
        (
            "steps: [{walk_forward: {strategy: sma_cross, symbols: BTC/USDT, timeframe: 1hr}}]",
            r"unknown timeframe '1hr'",
        ),
        (
            "steps: [{sync: {source: synthetic, symbols: BTC/USDT, timeframe: 1hr}}]",
            r"unknown timeframe '1hr'",
        ),
        (
            "steps: [{sweep: {strategy: sma_cross, symbols: X, out: t.parquet, grid: {fst: 5:50:5}}}]",
            r"unknown parameter 'fst' \(did you mean 'fast'\?\)",
        ),
        (  # a weight strategy is found, and its parameters checked
            "steps: [{sweep: {strategy: allocate, symbols: X, out: t.parquet, grid: {windw: 21:42}}}]",
            r"unknown parameter 'windw' \(did you mean 'window'\?\)",
        ),
        (
            "steps: [{walk_forward: {strategy: sma_cross, symbols: X, fixed: shrt=false}}]",
            r"unknown parameter 'shrt' \(did you mean 'short'\?\)",
        ),
        (
            "steps: [{report: {notebook: strategy_research, parameters: {strategy: rsi_mrr}}}]",
            r"unknown strategy 'rsi_mrr' \(did you mean 'rsi_mr'\?\)",
        ),
        (
            "steps: [{report: {notebook: strategy_research, parameters: {timeframe: 1hr}}}]",
            r"unknown timeframe '1hr'",
        ),
    ],
)
def test_pipeline_check_finds_unknown_strategies_parameters_and_timeframes(
    tmp_path: Path, text: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _refused_in_one_line(tmp_path, text, message, monkeypatch)


def test_pipeline_check_finds_symbols_the_lake_does_not_hold(tmp_path: Path) -> None:
    data = tmp_path / "data"
    Lake(data).write_bars(
        "synthetic",
        "BTC/USDT",
        "1h",
        SyntheticSource(seed=1).bars(
            "BTC/USDT", "1h", pd.Timestamp("2025-01-01", tz="UTC"), pd.Timestamp("2025-01-03", tz="UTC")
        ),
    )
    wf = "steps: [{walk_forward: {strategy: sma_cross, symbols: %s, timeframe: %s}}]"
    _write(tmp_path / "pipes", "held", wf % ("BTC/USDT", "4h"))  # resampled from 1h
    _write(tmp_path / "pipes", "typo", wf % ("BTC/USTD", "1h"))
    _write(tmp_path / "pipes", "finer", wf % ("BTC/USDT", "15m"))
    _write(
        tmp_path / "pipes",
        "synced_first",  # a symbol the pipeline syncs itself before reading it
        "steps: [{sync: {source: synthetic, symbols: ETH/USDT, timeframe: 1h}},\n"
        "        {walk_forward: {strategy: sma_cross, symbols: ETH/USDT, timeframe: 1h}}]",
    )
    for name in ("held", "synced_first"):
        res = _cli("pipeline", "check", name, cwd=tmp_path, data=data)
        assert res.returncode == 0 and ": ok," in res.stdout, (name, res.stdout, res.stderr)
    res = _cli("pipeline", "check", "typo", cwd=tmp_path, data=data)
    assert res.returncode == 1, res.stdout
    want = "(walk_forward): the lake holds no 1h bars of BTC/USTD (did you mean 'BTC/USDT'?)"
    assert want in res.stderr, res.stderr
    assert "workbench data sync" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = _cli("pipeline", "check", "finer", cwd=tmp_path, data=data)
    assert res.returncode == 1 and "no 15m bars of BTC/USDT" in res.stderr, res.stderr


def test_one_malformed_pipeline_does_not_stop_ls_or_schedule_of_the_others(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write(tmp_path / "pipes", "hourly_sync", SYNC)
    _write(tmp_path / "pipes", "broken", "steps:\n  - sync: {source: synthetic\n")
    bad_cron = 'schedule: "0 25 * * *"\nsteps: [{sync: {source: synthetic, symbols: X}}]'
    _write(tmp_path / "pipes", "bad_cron", bad_cron)
    res = _cli("pipeline", "ls", cwd=tmp_path, data=data)
    assert res.returncode == 1 and "hourly_sync" in res.stdout and "0 * * * *" in res.stdout, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("error: skipped bad_cron.yaml:") and "not a valid cron expression" in lines[0]
    assert lines[1].startswith("error: skipped broken.yaml:") and "not valid YAML" in lines[1]
    res = _cli(
        "schedule",
        "--clock-start",
        "2025-01-01T00:30",
        "--clock-speed",
        "3600",
        "--max-runs",
        "1",
        cwd=tmp_path,
        data=data,
    )
    assert res.returncode == 0, res.stderr
    assert "hourly_sync: next run" in res.stdout and "scheduler stopped after 1 run(s)" in res.stdout
    assert "skipped broken.yaml" in res.stderr and "skipped bad_cron.yaml" in res.stderr
    assert [r["pipeline"] for r in read_history(data)] == ["hourly_sync"]
    res = _cli("schedule", "--only", "bad_cron", cwd=tmp_path, data=data)
    assert res.returncode == 1 and "schedule '0 25 * * *' is not a valid cron expression" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_yaml_syntax_error_gets_the_cron_hint_only_on_the_schedule_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "flow", 'schedule: "0 1 * * *"\nsteps:\n  - sync: {source: synthetic\n')
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_pipeline(p)
    assert "cron" not in str(info.value), info.value
    p = _write(tmp_path, "cron", "schedule: */5 * * * *\nsteps: [{sync: {source: synthetic, symbols: X}}]\n")
    with pytest.raises(ConfigError, match=r"line 1: not valid YAML .* \(quote a cron expression"):
        load_pipeline(p)


@pytest.mark.parametrize(
    ("kind", "path"),
    [("sync", ("data", "sync")), ("sweep", ("sweep",)), ("walk_forward", ("optimize", "walk-forward"))],
)
def test_a_command_like_step_takes_exactly_the_options_of_its_command(
    kind: str, path: tuple[str, ...]
) -> None:
    """The step's options come from the job the command builds (`from_options`), not from the CLI: this
    keeps the two lists equal, with the same defaults, as options are added to either."""
    import inspect

    import typer

    from workbench.cli.app import app
    from workbench.pipelines.steps import COMMANDS, _command

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    cli = {
        max((o for o in p.opts if o.startswith("--")), key=len)[2:].replace("-", "_"): (p.required, p.default)
        for p in command.params
        if p.param_type_name == "option"
    }
    job = {
        n: (p.default is inspect.Parameter.empty, None if p.default is inspect.Parameter.empty else p.default)
        for n, p in inspect.signature(_command(COMMANDS[kind])).parameters.items()
    }
    assert job == cli


@pytest.mark.network
@pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")
def test_a_failed_run_alerts_once_and_the_next_good_run_recovers(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipeline with ``alerts:``: its first failure alerts with the step, the error and the command to
    re-run it; a second failure says nothing more (the history is the state); the first good run after
    them sends one recovery."""
    from servers.loopback import guard_loopback
    from servers.webhook import WebhookServer

    guard_loopback(monkeypatch)
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    p = _write(tmp_path, "watched", """
alerts: {urls: ["${WB_TEST_PIPELINE_ALERT}"]}
params:
  symbols: BTC/USDT
steps:
  - sync: {source: synthetic, symbols: "${symbols}", timeframe: 1h, start: "2025-01-01", end: "2025-01-02"}
""")
    with WebhookServer() as hook:
        monkeypatch.setenv("WB_TEST_PIPELINE_ALERT", hook.json_url())
        for _ in range(2):
            with pytest.raises(PipelineFailed):
                run_pipeline(p, {"symbols": "BTCUSDT"}, scheduled_for="2025-01-02")
        run_pipeline(p, scheduled_for="2025-01-02")
        run_pipeline(p, scheduled_for="2025-01-02")
    titles = [b["title"] for b in hook.bodies]
    assert titles == ["[workbench pipeline watched] ERROR: pipeline watched failed at step sync",
                      "[workbench pipeline watched] RECOVERED: pipeline watched failed at step sync"]
    body = hook.bodies[0]["message"]
    assert "step: sync" in body and "error: " in body
    assert "To act: see `workbench pipeline history watched`, fix the step's input, then re-run it: " \
           "workbench pipeline run watched --scheduled-for 2025-01-02T00:00:00+00:00" in body
