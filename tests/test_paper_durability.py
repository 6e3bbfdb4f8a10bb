"""Durability: the runner killed (SIGKILL) at every point of a tick resumes without a duplicate order,
without losing a fill, and ends with the uninterrupted run's trades; SIGTERM finishes the tick.

Crashes are injected at named points of the tick (``WORKBENCH_PAPER_CRASH=<point>:<n>``) in a
subprocess replay that keeps its journal and simulated broker on disk, then the same command resumes.
A scheduled `paper run` on an accelerated clock is also killed at random moments and restarted.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from cli_runner import CliResult, invoke
from paper_helpers import build_lake, spec_for, write_artifact

from workbench.paper.journal import Journal
from workbench.paper.replay import journal_trades

WB = [sys.executable, "-m", "workbench.cli"]
# the environment of the child processes, taken once: in-process commands change os.environ while
# they run, and the crashing children start from threads meanwhile
BASE_ENV = {k: v for k, v in os.environ.items() if k != "WORKBENCH_PAPER_CRASH"}
# a week of 1h bars: every point below has passed 3 times by its 136th tick (after_cancel, the last),
# the rest of the week is what the resumed run must get right; each of the 17 replays ticks through it
PERIOD = ["--start", "2025-03-01", "--end", "2025-03-08"]
POINTS = [
    "tick_started",
    "after_intent",
    "after_submit",
    "after_fill",
    "after_cancel",
    "before_protect",
    "before_snapshot",
    "before_tick_done",
]


def _run(data: Path, args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`workbench <args>` in a real process (one a crash point can SIGKILL)."""
    e = {**BASE_ENV, "WORKBENCH_DATA_DIR": str(data), "COLUMNS": "200"}
    e.update(env or {})
    return subprocess.run([*WB, *args], capture_output=True, text=True, env=e, timeout=300)


def _resume(data: Path, args: list[str]) -> CliResult:
    """`workbench <args>` in this process: what runs after a crash reads only the files it left."""
    return invoke(args, data=data, env={"WORKBENCH_PAPER_CRASH": None})


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lake every test here trades on (apart from the crash replays, so the tests of a scheduled
    run do not wait for them)."""
    data = tmp_path_factory.mktemp("durability_data")
    build_lake(data)
    return data


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, data: Path) -> dict:
    root = tmp_path_factory.mktemp("durability")
    spec = spec_for("donchian_breakout", {"entry": 12, "exit": 6}, symbols=("BTC/USDT", "ETH/USDT"))
    art = write_artifact(root / "artifact.json", spec, name="donchian")
    clean = _resume(data, ["paper", "replay", str(art), *PERIOD, "--journal", str(root / "clean")])
    assert clean.returncode == 0, clean.stdout + clean.stderr
    crashed = {}

    def crash(point: str) -> int:
        args = ["paper", "replay", str(art), *PERIOD, "--journal", str(root / f"crash-{point}")]
        return _run(data, args, env={"WORKBENCH_PAPER_CRASH": f"{point}:3"}).returncode

    # the crashing replays run in real processes, two at a time; each one's resume runs here as soon
    # as its crash is done (in-process commands share globals, so one at a time)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for point, first in zip(POINTS, pool.map(crash, POINTS), strict=True):
            folder = root / f"crash-{point}"
            second = _resume(data, ["paper", "replay", str(art), *PERIOD, "--journal", str(folder)])
            crashed[point] = first, second.returncode, second.stdout + second.stderr
    return {"root": root, "data": data, "art": art, "spec": spec, "crashed": crashed}


def _state(folder: Path, name: str) -> dict:
    sub = next(p for p in folder.iterdir() if p.is_dir())
    with Journal(sub / "journal.sqlite") as j:
        trades = journal_trades(j, name)
        orders = j.orders_frame(name)
        fills = j.fills_frame(name)
        ledger = j.ledger(name, 100_000.0)
    db = sqlite3.connect(sub / "sim_broker.sqlite")
    kv = dict(db.execute("SELECT key, value FROM kv").fetchall())
    bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM orders")]
    db.close()
    return {
        "trades": trades,
        "orders": orders,
        "fills": fills,
        "ledger": ledger,
        "stats": json.loads(kv["stats"]),
        "positions": json.loads(kv["positions"]),
        "broker": bodies,
    }


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_each_point_of_a_tick_then_resume(setup: dict, point: str) -> None:
    first, second, log = setup["crashed"][point]
    assert first == -signal.SIGKILL, f"the crash point {point} was never reached"
    assert second == 0, log
    assert "parity:" in log and "FAILED" not in log
    name = "donchian@v1"
    got = _state(setup["root"] / f"crash-{point}", name)
    want = _state(setup["root"] / "clean", name)
    # no order was ever submitted twice, and the broker holds exactly the journal's orders
    assert got["stats"]["duplicates"] == 0
    assert got["stats"]["created"] == len(got["orders"][got["orders"]["status"] != "rejected"])
    assert sorted(o["client_order_id"] for o in got["broker"]) == sorted(
        got["orders"].loc[got["orders"]["status"] != "rejected", "client_order_id"]
    )
    # no fill lost: every broker fill is booked, at the broker's totals
    broker_filled = {o["client_order_id"]: o["filled_qty"] for o in got["broker"] if o["filled_qty"] > 0}
    booked = got["fills"].groupby("client_order_id")["qty"].apply(lambda q: sum(map(float, q)))
    assert set(broker_filled) == set(booked.index)
    for cid, q in broker_filled.items():
        assert booked[cid] == pytest.approx(q, rel=1e-12)
    # positions reconcile with the broker, and the run equals the uninterrupted one
    for sym, (q, _avg) in got["positions"].items():
        assert float(got["ledger"].positions[sym]) == pytest.approx(q, rel=1e-9)
    assert set(got["ledger"].positions) == set(got["positions"])
    pd.testing.assert_frame_equal(got["trades"], want["trades"], rtol=1e-9)
    assert len(want["trades"]) >= 4


# ---------------------------------------------------------------- a scheduled run killed at random moments
def _ticks(journal: Path) -> int:
    """Ticks journaled so far by a runner in another process (0 before its journal exists)."""
    if not journal.exists():
        return 0
    db = sqlite3.connect(journal, timeout=30)
    try:
        return db.execute("SELECT COUNT(*) FROM ticks").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def _config(path: Path, art: Path, name: str, speed: float, port: int | None = None) -> Path:
    path.write_text(
        f"""name: {name}
broker: {{kind: sim, cash: 100000}}
strategies: [{{artifact: {art}}}]
risk: {{max_bar_move: 0.5, stale_bars: 1000}}
schedule: {{clock: {{start: 2025-03-01, speed: {speed}}}}}
data: {{sync: false}}
"""
        + (f"metrics: {{port: {port}}}\n" if port else "")
    )
    return path


def test_scheduled_run_survives_kill_9_restarts_without_duplicates(data: Path, tmp_path: Path) -> None:
    # 5/10 trades often, so the kills fall between orders
    spec = spec_for("sma_cross", {"fast": 5, "slow": 10}, symbols=("BTC/USDT", "ETH/USDT"))
    art = write_artifact(tmp_path / "fast.json", spec, name="fast")
    cfg = _config(tmp_path / "paper.yaml", art, "killtest", speed=3600 * 20)
    env = {**os.environ, "WORKBENCH_DATA_DIR": str(data)}
    env.pop("WORKBENCH_PAPER_CRASH", None)
    journal = data / "paper" / "killtest" / "journal.sqlite"

    for extra in (0.13, 0.41, 0.27):  # kill mid-run, after some ticks, at moments unrelated to the ticks
        before = _ticks(journal)
        proc = subprocess.Popen(
            [*WB, "paper", "run", str(cfg)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while _ticks(journal) < before + 8 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(extra)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    # the restart after the last kill runs in-process: it reads only what the killed runs left on disk
    done = _resume(data, ["paper", "run", str(cfg), "--ticks", "60"])  # enough bars to trade on any machine
    assert done.returncode == 0, done.stderr
    root = data / "paper" / "killtest"
    with Journal(root / "journal.sqlite") as j:
        orders = j.orders_frame("fast@v1")
        fills = j.fills_frame("fast@v1")
        ledger = j.ledger("fast@v1", 100_000.0)
        ticks = pd.read_sql_query("SELECT * FROM ticks", j.db)
    db = sqlite3.connect(root / "sim_broker.sqlite")
    kv = dict(db.execute("SELECT key, value FROM kv").fetchall())
    db.close()
    stats, positions = json.loads(kv["stats"]), json.loads(kv["positions"])
    assert len(ticks) > 30 and len(orders) >= 4, (
        f"the run should have traded across the restarts: {len(ticks)} ticks, {len(orders)} orders")
    assert stats["duplicates"] == 0
    assert stats["created"] == (orders["status"] != "rejected").sum()
    assert fills["fill_id"].is_unique
    assert set(ledger.positions) == set(positions)
    for sym, (q, _a) in positions.items():
        assert float(ledger.positions[sym]) == pytest.approx(q, rel=1e-9)
    assert not (ticks["status"] == "started").any() or ticks["status"].iloc[-1] != "started"


def test_sigterm_finishes_the_tick_and_exits_cleanly(data: Path, tmp_path: Path) -> None:
    spec = spec_for("sma_cross", {"fast": 5, "slow": 12})
    art = write_artifact(tmp_path / "term.json", spec, name="term")
    cfg = _config(tmp_path / "paper.yaml", art, "termtest", speed=3600 * 10)
    env = {**os.environ, "WORKBENCH_DATA_DIR": str(data)}
    env.pop("WORKBENCH_PAPER_CRASH", None)
    journal = data / "paper" / "termtest" / "journal.sqlite"
    proc = subprocess.Popen(
        [*WB, "paper", "run", str(cfg)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # SIGTERM once three ticks are journaled (however long the start takes), so one is likely under way
    deadline = time.monotonic() + 120
    while _ticks(journal) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped after" in out
    with Journal(journal) as j:
        statuses = pd.read_sql_query("SELECT status FROM ticks", j.db)["status"]
    assert len(statuses) >= 3 and not (statuses == "started").any()
