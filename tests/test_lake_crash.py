"""Crash safety and concurrent writers, with real processes and SIGKILL.

A child process ingests overlapping batches (many straddle the 2024/2025 year files, so the same
files are rewritten again and again) and is killed mid-ingest; after every kill the lake must be
whole. Every row encodes the batch ("version") that wrote it and its minute, so the checks can
tell a whole row of a committed batch from anything else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from workbench import Lake
from workbench.data.lake import COVERAGE_FILE, DATA_FILE

REPO = Path(__file__).resolve().parents[1]
SRC, SYM, TF = "crash", "BTC/USDT", "1m"
BASE = pd.Timestamp("2024-12-31 12:00", tz="UTC")  # minute 720 is the year boundary
HORIZON = 1800  # batches cover minutes in [0, HORIZON)

# Shared by the parent and the child processes: which minutes batch `v` covers, and its bars.
BATCH_CODE = textwrap.dedent('''
    import numpy as np
    import pandas as pd

    BASE = pd.Timestamp("2024-12-31 12:00", tz="UTC")

    def span(v, horizon=1800):
        rng = np.random.default_rng(v)
        start = int(rng.integers(0, horizon - 100))
        n = int(rng.integers(100, 1200))
        return start, min(start + n, horizon)

    def batch(v, horizon=1800):
        lo, hi = span(v, horizon)
        m = np.arange(lo, hi)
        open_ = 100.0 + v + m * 1e-4
        return pd.DataFrame({
            "ts": BASE + pd.to_timedelta(m, unit="min"),
            "open": open_, "high": open_ + 1.0, "low": open_ - 1.0, "close": open_ + 0.5,
            "volume": np.full(len(m), float(v)),
        })
''')
_ns: dict = {}
exec(BATCH_CODE, _ns)  # the same code the children run
span, batch = _ns["span"], _ns["batch"]

WRITER = BATCH_CODE + textwrap.dedent('''
    import os, signal, sys, time
    from pathlib import Path
    from workbench import Lake

    root, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    die_mode, die_at = sys.argv[4], int(sys.argv[5])   # fault injection: "none", "before", "after"
    go = Path(sys.argv[6]) if len(sys.argv) > 6 else None

    if die_mode != "none":
        real_replace, calls = os.replace, [0]

        def replace(src, dst):
            calls[0] += 1
            if calls[0] == die_at and die_mode == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)
            if calls[0] == die_at and die_mode == "after":
                os.kill(os.getpid(), signal.SIGKILL)

        os.replace = replace

    lake = Lake(root)
    frames = [batch(v) for v in range(first, first + count)]
    print("ready", flush=True)
    while go is not None and not go.exists():
        time.sleep(0.005)
    for v, frame in zip(range(first, first + count), frames):
        print(f"start {v}", flush=True)
        lake.write_bars("crash", "BTC/USDT", "1m", frame)
        print(f"done {v}", flush=True)
''')


def spawn(tmp: Path, root: Path, first: int, count: int, die: tuple[str, int] = ("none", 0),
          go: Path | None = None) -> subprocess.Popen[str]:
    script = tmp / "writer.py"
    if not script.exists():
        script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, str(script), str(root), str(first), str(count), die[0], str(die[1])]
    if go is not None:
        args.append(str(go))
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp)


def wait_for(proc: subprocess.Popen[str], word: str) -> str:
    """Read the writer's output up to and including the first line starting with `word`."""
    seen = []
    while True:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"writer exited early: {proc.wait()} {proc.stderr.read()}")
        seen.append(line)
        if line.startswith(word):
            return "".join(seen)


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert wait_for(proc, "ready") == "ready\n"


def finished(stdout: str) -> tuple[list[int], list[int]]:
    """The batches a writer reported as started and as done (a killed writer's last line may be
    cut short: it is ignored)."""
    started, done = [], []
    for line in stdout.splitlines():
        word, _, num = line.partition(" ")
        if num.isdigit():
            (started if word == "start" else done if word == "done" else []).append(int(num))
    return started, done


@dataclass
class History:
    """Batches known to be committed, and those a killed writer may have half committed.

    Versions grow with time, so a half-committed batch can only show where no later committed
    batch has overwritten it.
    """

    done: list[int] = field(default_factory=list)
    maybe: set[int] = field(default_factory=set)

    def latest(self) -> np.ndarray:
        """For every minute, the newest committed version covering it (-1: none)."""
        out = np.full(HORIZON, -1)
        for v in sorted(self.done):
            lo, hi = span(v)
            out[lo:hi] = v
        return out

    def allowed(self, m: np.ndarray, v: np.ndarray) -> np.ndarray:
        latest = self.latest()[m]
        ok = v == latest
        for f in self.maybe:
            lo, hi = span(f)
            ok |= (v == f) & (f > latest) & (m >= lo) & (m < hi)
        return ok


def data_files(lake: Lake) -> list[Path]:
    return sorted(lake.series_dir(SRC, SYM, TF).glob("**/*.parquet"))


def temp_files(lake: Lake) -> list[Path]:
    return sorted(p for p in lake.series_dir(SRC, SYM, TF).rglob(".*") if p.name != ".lock")


def check_whole(lake: Lake, hist: History) -> pd.DataFrame:
    """The invariants that must hold whenever no writer is running."""
    sdir = lake.series_dir(SRC, SYM, TF)
    # every data file is a complete, readable Parquet file in its own year, one row per ts
    files = data_files(lake)
    assert files, "no data files"
    total = 0
    for f in files:
        assert f.name == DATA_FILE and f.parent.name.startswith("year="), f
        t = pq.read_table(f).to_pandas()
        assert pq.ParquetFile(f).metadata.num_rows == len(t)
        assert t["ts"].is_monotonic_increasing and t["ts"].is_unique, f
        assert (t["ts"].dt.year == int(f.parent.name.split("=")[1])).all(), f
        total += len(t)
    # leftovers of a killed writer are hidden temporaries, never data
    for tmp in temp_files(lake):
        assert tmp.name.endswith(".tmp"), tmp

    bars = lake.read_bars(SRC, SYM, TF)
    assert len(bars) == total
    assert bars["ts"].is_unique and bars["ts"].is_monotonic_increasing

    # every row is a whole row of one batch that covers its minute
    m = ((bars["ts"] - BASE) // pd.Timedelta("1min")).to_numpy()
    v = bars["volume"].to_numpy().astype(int)
    np.testing.assert_array_equal(bars["open"], 100.0 + v + m * 1e-4)
    np.testing.assert_array_equal(bars["high"], bars["open"] + 1.0)
    np.testing.assert_array_equal(bars["close"], bars["open"] + 0.5)
    # ...the newest committed one, or a newer one that was being written when a writer died
    latest = hist.latest()
    ok = hist.allowed(m, v)
    assert ok.all(), f"rows from the wrong batch at minutes {m[~ok][:5]}: {v[~ok][:5]}"
    # nothing a committed batch wrote is lost
    have = np.zeros(HORIZON, dtype=bool)
    have[m] = True
    assert have[latest >= 0].all(), "committed rows are missing"

    # coverage agrees with the files (rebuilt if the writer died between data and catalog)
    cov = lake.series_coverage(SRC, SYM, TF)
    assert cov.rows == len(bars)
    assert cov.first == bars["ts"].iloc[0]
    assert cov.last == bars["ts"].iloc[-1]
    expected_missing = (bars["ts"].iloc[-1] - bars["ts"].iloc[0]) // pd.Timedelta("1min") + 1 - len(
        bars)
    assert cov.missing_bars == expected_missing
    assert set(cov.files) == {f"{f.parent.name}/{f.name}" for f in files}
    assert (sdir / COVERAGE_FILE).exists()
    assert lake.coverage()[0].rows == len(bars)
    return bars


def fresh_write(lake: Lake, hist: History, version: int) -> None:
    """A write after a crash succeeds and sweeps up the dead writer's temporaries."""
    result = lake.write_bars(SRC, SYM, TF, batch(version))
    lo, hi = span(version)
    assert result.rows_added + result.rows_replaced == hi - lo
    hist.done.append(version)
    assert temp_files(lake) == []
    check_whole(lake, hist)


def kill_and_collect(proc: subprocess.Popen[str], hist: History, *, kill: bool = True,
                     seen: str = "") -> list[int]:
    """SIGKILL the writer (or wait for it to kill itself), note what it finished and return the
    batches it began. `seen` is output already read from it."""
    if kill:
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    out = seen + out
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, err)
    started, done = finished(out)
    hist.done.extend(done)
    in_flight = set(started) - set(done)
    assert len(in_flight) <= 1
    hist.maybe |= in_flight
    return started


def test_sigkill_mid_ingest_leaves_a_whole_lake(tmp_path: Path) -> None:
    root = tmp_path / "data"
    lake = Lake(root)
    hist = History()
    version = 1

    # 1. deterministic worst moments: just before / just after renaming a file into place
    #    (os.replace calls: data file(s) of each year, then the coverage file, per batch)
    for mode, at in (("before", 4), ("after", 5)):
        proc = spawn(tmp_path, root, version, 6, die=(mode, at))
        assert kill_and_collect(proc, hist, kill=False)
        version += 6
        if mode == "before":
            assert temp_files(lake), "the injected crash should leave a temporary file behind"
        check_whole(lake, hist)
        fresh_write(lake, hist, version)
        version += 1

    # 2. SIGKILL at seeded random moments of a busy ingest
    rng = np.random.default_rng(12345)
    for delay in rng.uniform(0.0, 0.4, size=3):
        proc = spawn(tmp_path, root, version, 400)
        seen = wait_for(proc, "done")  # it is ingesting
        time.sleep(float(delay))
        assert kill_and_collect(proc, hist, seen=seen)
        version += 400
        check_whole(lake, hist)
        fresh_write(lake, hist, version)
        version += 1
    assert len(hist.done) > 5


def test_concurrent_writers_of_one_series_lose_nothing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    go = tmp_path / "go"
    writers = [spawn(tmp_path, root, first, 25, go=go) for first in (1000, 2000)]
    for proc in writers:
        wait_ready(proc)
    go.touch()
    lake = Lake(root)
    outs = []
    for proc in writers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outs.append(finished(out)[1])
    assert [len(d) for d in outs] == [25, 25]

    bars = lake.read_bars(SRC, SYM, TF)
    m = ((bars["ts"] - BASE) // pd.Timedelta("1min")).to_numpy()
    v = bars["volume"].to_numpy().astype(int)
    np.testing.assert_array_equal(bars["open"], 100.0 + v + m * 1e-4)
    # each minute holds the last write of one writer or the other: no update was lost
    last = [np.full(HORIZON, -1) for _ in outs]
    for i, done in enumerate(outs):
        for ver in done:
            lo, hi = span(ver)
            last[i][lo:hi] = ver
    covered = (last[0] >= 0) | (last[1] >= 0)
    have = np.zeros(HORIZON, dtype=bool)
    have[m] = True
    np.testing.assert_array_equal(have, covered)
    assert ((v == last[0][m]) | (v == last[1][m])).all()
    cov = lake.series_coverage(SRC, SYM, TF)
    assert (cov.rows, cov.first, cov.last) == (len(bars), bars["ts"].iloc[0], bars["ts"].iloc[-1])
    assert temp_files(lake) == []


def test_reads_while_a_writer_rewrites_the_files_always_succeed(tmp_path: Path) -> None:
    root = tmp_path / "data"
    lake = Lake(root)
    lake.write_bars(SRC, SYM, TF, batch(1))
    proc = spawn(tmp_path, root, 2, 400)
    wait_ready(proc)
    reads, failures = 0, []
    try:
        deadline = time.monotonic() + 10
        while proc.poll() is None and reads < 400 and time.monotonic() < deadline:
            try:
                bars = lake.read_bars(SRC, SYM, TF)
            except Exception as exc:  # any failure is the finding
                failures.append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
                break
            assert bars["ts"].is_unique and bars["ts"].is_monotonic_increasing
            m = ((bars["ts"] - BASE) // pd.Timedelta("1min")).to_numpy()
            np.testing.assert_array_equal(bars["open"], 100.0 + bars["volume"] + m * 1e-4)
            reads += 1
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert failures == [], f"read {reads + 1} failed: {failures[0]}"
    assert reads > 50
