"""The CLI's `data` group end to end, as a user runs it: exit codes, one-line errors, the lake it leaves.

Commands run in this process through `cli_runner.invoke` (the console script's own `run`, so the same
last resort and exit codes) to pay the imports once; real processes remain where only a process shows
the behaviour: one smoke test of the group, `python -m workbench`, and Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from cli_runner import CliResult, invoke

from workbench import Lake

WB = [sys.executable, "-m", "workbench.cli"]


def run(data: Path, *args: str, cwd: Path | None = None) -> CliResult:
    return invoke(args, data=data, cwd=cwd)


def snapshot(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def one_line_error(proc: CliResult, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("cli") / "data"
    proc = run(data, "data", "sync", "--source", "synthetic", "--symbols", "BTC/USDT,SPY",
               "--timeframe", "1m", "--start", "2025-01-06", "--end", "2025-01-08")
    assert proc.returncode == 0, proc.stderr
    return data


def test_help_lists_the_data_commands() -> None:
    proc = invoke(["data", "--help"])
    assert proc.returncode == 0, proc.stderr
    for cmd in ("demo", "sync", "import-csv", "ls", "check", "export"):
        assert cmd in proc.stdout


def test_sync_then_ls_and_rerun_adds_nothing(synced: Path) -> None:
    ls = run(synced, "data", "ls")
    assert ls.returncode == 0
    assert "BTC/USDT" in ls.stdout and "2,880" in ls.stdout and "SPY" in ls.stdout
    before = snapshot(synced)
    again = run(synced, "data", "sync", "--source", "synthetic", "--symbols", "BTC/USDT,SPY",
                "--timeframe", "1m", "--start", "2025-01-06", "--end", "2025-01-08")
    assert again.returncode == 0
    assert snapshot(synced) == before


def test_check_passes_on_clean_data(synced: Path) -> None:
    proc = run(synced, "data", "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok" in proc.stdout


def test_export_and_import_roundtrip(synced: Path, tmp_path: Path) -> None:
    out = tmp_path / "slice.csv"
    proc = run(synced, "data", "export", str(out), "--source", "synthetic", "--symbols",
               "BTC/USDT", "--timeframe", "1h")
    assert proc.returncode == 0, proc.stderr
    assert "sha256:" in proc.stdout
    other = tmp_path / "other"
    imp = run(other, "data", "import-csv", str(out), "--timeframe", "1h", "--source", "copy")
    assert imp.returncode == 0, imp.stderr
    a = Lake(synced).read_bars("synthetic", "BTC/USDT", "1h")
    b = Lake(other).read_bars("copy", "BTC/USDT", "1h")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)


def test_import_user_csv_with_mapping_and_zone(tmp_path: Path) -> None:
    csv = tmp_path / "aapl.csv"
    csv.write_text("Date;Open;High;Low;Close;Vol\n"
                   "2024-07-01 09:30;10;11;9;10.5;100\n"
                   "2024-07-01 09:31;10.5;11;10;10.8;120\n")
    data = tmp_path / "data"
    # the data group's smoke test in a real process, as a user's shell runs it
    env = {**os.environ, "WORKBENCH_DATA_DIR": str(data), "COLUMNS": "200"}
    proc = subprocess.run([*WB, "data", "import-csv", str(csv), "--symbol", "AAPL", "--timeframe", "1m",
                           "--map", "ts=Date,volume=Vol", "--tz", "America/New_York", "--delimiter", ";"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    bars = Lake(data).read_bars("csv", "AAPL", "1m")
    assert list(bars["ts"].astype(str)) == ["2024-07-01 13:30:00+00:00",
                                            "2024-07-01 13:31:00+00:00"]
    assert bars["volume"].tolist() == [100.0, 120.0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["data", "sync", "--source", "synthetik", "--symbols", "BTC/USDT", "--start",
          "2025-01-01"], ["unknown source", "did you mean 'synthetic'"]),
        (["data", "sync", "--source", "synthetic", "--symbols", "BTC/USTD", "--start",
          "2025-01-01"], ["BTC/USTD", "did you mean 'BTC/USDT'"]),
        (["data", "sync", "--source", "synthetic", "--symbols", "BTC/USDT", "--timeframe", "7x",
          "--start", "2025-01-01"], ["unknown timeframe '7x'"]),
        (["data", "sync", "--source", "synthetic", "--symbols", "BTC/USDT", "--start",
          "2025-02-01", "--end", "2025-01-01"], ["is not before end"]),
        (["data", "sync", "--source", "synthetic", "--symbols", "BTC/USDT", "--start",
          "2025-01-01", "--end", "2025-01-01"], ["is not before end"]),
        (["data", "sync", "--source", "synthetic", "--symbols", "ETH/USDT"],
         ["no stored bars to resume from", "--start"]),
        (["data", "sync", "--source", "alpaca", "--symbols", "AAPL", "--start", "2025-01-01",
          "--end", "2025-01-02"], ["ALPACA_API_KEY"]),
        (["data", "sync", "--source", "synthetic", "--symbols", "BTC/USDT", "--start",
          "2025-01-01", "--policy", "gap=drop"], ["cannot be dropped"]),
        (["data", "export", "x.txt", "--source", "synthetic", "--symbols", "BTC/USDT",
          "--timeframe", "1h"], [".parquet or .csv"]),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    synced: Path, tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    data = tmp_path / "data"
    shutil.copytree(synced, data)
    before = snapshot(data)
    no_keys: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("ALPACA", "APCA"))}
    proc = invoke(args, data=data, env=no_keys, cwd=tmp_path)
    one_line_error(proc, *needles)
    assert snapshot(data) == before


def test_a_corrupt_lake_file_is_quarantined_named_and_rebuilt_by_a_resync(
        synced: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(synced, data)
    victim = next((data / "lake").rglob("symbol=BTC%2FUSDT/year=*/data.parquet"))
    victim.write_bytes(b"PAR1 not really parquet")
    ls = run(data, "data", "ls")
    assert ls.returncode == 0 and "SPY" in ls.stdout and "Traceback" not in ls.stderr
    assert str(victim) in ls.stderr
    check = run(data, "data", "check")
    assert check.returncode == 1 and "Traceback" not in check.stdout + check.stderr
    flat = " ".join(check.stdout.split())
    assert "damaged" in flat and str(victim) in flat
    assert "workbench data sync --source synthetic --symbols BTC/USDT --timeframe 1m" in flat
    assert "ok synthetic:SPY:1m" in flat
    spy = run(data, "data", "export", str(tmp_path / "spy.csv"), "--source", "synthetic",
              "--symbols", "SPY", "--timeframe", "1h")
    assert spy.returncode == 0, spy.stderr  # the other series still reads
    again = run(data, "data", "sync", "--source", "synthetic", "--symbols", "BTC/USDT,SPY",
                "--timeframe", "1m", "--start", "2025-01-06", "--end", "2025-01-08")
    assert again.returncode == 0, again.stderr
    assert run(data, "data", "check").returncode == 0
    assert snapshot(data / "lake")[str(victim.relative_to(data / "lake"))] == \
        snapshot(synced / "lake")[str(victim.relative_to(data / "lake"))]


def test_malformed_csv_and_corrupt_lake_file(synced: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(synced, data)
    bad = tmp_path / "bad.csv"
    bad.write_text("ts,open,high,low,close,volume\n2024-01-01T00:00Z,1,2,0.5,1.5,10\n"
                   "2024-01-01T00:01Z,1,2,oops,1.5,10\n")
    before = snapshot(data)
    one_line_error(run(data, "data", "import-csv", str(bad), "--symbol", "BTC/USDT",
                       "--timeframe", "1m"), "non-numeric")
    assert snapshot(data) == before
    victim = next((data / "lake").rglob("data.parquet"))
    victim.write_bytes(b"PAR1 not really parquet")
    before = snapshot(data)
    proc = run(data, "data", "export", str(tmp_path / "x.parquet"), "--source", "synthetic",
               "--symbols", "BTC/USDT,SPY", "--timeframe", "1m")
    one_line_error(proc, "unreadable", "re-sync")
    assert snapshot(data) == before
    assert not (tmp_path / "x.parquet").exists()


def test_python_dash_m_workbench_runs_the_command_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "workbench", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr


def test_ctrl_c_says_what_was_kept_and_exits_130(tmp_path: Path) -> None:
    import signal

    journal = tmp_path / "x.journal"
    env = {**os.environ, "WORKBENCH_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    # `python -m workbench.cli` with Python's own Ctrl-C handler: pytest-xdist workers ignore SIGINT
    # and a child inherits an ignored signal (as a shell's background job does), so without this the
    # signal never reaches the command when the suite runs in parallel
    cli = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
           "runpy.run_module('workbench.cli', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", cli, "optimize", "worker", "nope", "--storage",
                             str(journal), "--wait", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    assert "joining nope" in proc.stdout.readline()  # the command is under way
    deadline = time.monotonic() + 60
    while not journal.exists():  # the worker opened the study storage: it is waiting for the run
        assert proc.poll() is None and time.monotonic() < deadline, "the worker never opened its storage"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted:") and "resumes" in lines[0], err


def test_an_error_raised_while_ctrl_c_unwinds_still_reads_as_interrupted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Optuna's journal lock, interrupted between its rename and unlink, raises FileNotFoundError
    over the KeyboardInterrupt; the user pressed Ctrl-C, so that is what the command says."""
    import optuna.storages

    def interrupted_open(*_: object, **__: object) -> None:
        try:
            raise KeyboardInterrupt
        except BaseException:
            os.unlink(tmp_path / "already-gone.lock")  # the library's cleanup fails in turn

    monkeypatch.setattr(optuna.storages, "JournalStorage", interrupted_open)
    res = invoke(["optimize", "worker", "nope", "--storage", str(tmp_path / "x.journal")],
                 data=tmp_path / "data")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 130 and len(lines) == 1 and lines[0].startswith("interrupted:"), res.stderr


def test_a_csv_timestamp_error_is_whole_and_names_the_value(tmp_path: Path) -> None:
    bad = tmp_path / "BTC.csv"
    bad.write_text("ts,open,high,low,close,volume\n2025-01-01 00:00,1,2,0.5,1.5,10\n"
                   "2025-01-01 01:00,1,2,0.5,1.5,10\n13/01/2025 02:00,1,2,0.5,1.5,10\n")
    proc = run(tmp_path / "data", "data", "import-csv", str(bad), "--symbol", "BTC/USDT", "--timeframe", "1h")
    one_line_error(proc, "'13/01/2025 02:00' on data row 3 does not match", "pass --ts-format")
    assert not proc.stderr.strip().endswith(":") and "You might want" not in proc.stderr


def test_make_test_lints_only_what_the_project_ships() -> None:
    repo = Path(__file__).resolve().parents[1]
    lint = [ln for ln in (repo / "Makefile").read_text().splitlines() if "ruff check" in ln]
    assert lint and all("research" not in ln.split() for ln in lint), lint  # research/ is the user's


def test_unwritable_output_paths_and_data_dir_are_one_line(synced: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    before = snapshot(synced)
    proc = run(synced, "data", "export", str(blocker / "x.csv"), "--source", "synthetic",
               "--symbols", "BTC/USDT", "--timeframe", "1h")
    one_line_error(proc, str(blocker), "a file is in the way", "choose a path you can write")
    proc = run(blocker / "data", "data", "sync", "--source", "synthetic", "--symbols", "BTC/USDT",
               "--timeframe", "1h", "--start", "2025-01-06", "--end", "2025-01-07")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr  # (above it: the progress bar)
    last = proc.stderr.strip().splitlines()[-1]
    assert str(blocker) in last and "a file is in the way" in last
    assert snapshot(synced) == before and blocker.read_text() == "not a folder"
