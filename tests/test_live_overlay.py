"""What the Live page computes beside the journal's own rows: the risk overlay (as the runner applies its
limits), the data's freshness, and each collector stream's rate and lag from the collectors' status files.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import pytest

from workbench.data.collector import stream_rows
from workbench.paper.live import LiveState
from workbench.paper.risk import RiskLimits, loss_halts

LIMITS = RiskLimits(max_drawdown=0.2, daily_loss_limit=0.05, max_position=0.5, max_bar_move=0.1, stale_bars=3)


def _state(curve: list[tuple[str, float]], halts: list[dict] | None = None) -> LiveState:
    s = LiveState()
    s.specs = {"s1": {"symbols": ["BTC/USDT", "ETH/USDT"], "capital": 1000.0, "timeframe": "1h"}}
    s.equity = {"s1": curve}
    s.risk = asdict(LIMITS)
    s.halts = halts or []
    return s


def _rows(state: LiveState) -> dict[str, dict]:
    return {r["limit"].split(" ")[0]: r for r in state.risk_rows("s1")}


def test_drawdown_and_the_days_loss_are_the_runners() -> None:
    curve = [("2025-01-01T22:00:00+00:00", 1100.0), ("2025-01-01T23:00:00+00:00", 1000.0),
             ("2025-01-02T00:00:00+00:00", 960.0), ("2025-01-02T01:00:00+00:00", 930.0)]
    rows = _rows(_state(curve))
    dd = 1 - 930 / 1100  # from the peak of the snapshots (above the capital)
    day = 1 - 930 / 960  # from the first equity of the last bar's UTC day
    assert rows["max_drawdown"]["now"] == f"{dd:.2%}" and rows["max_drawdown"]["state"] == "ok"
    assert rows["daily_loss_limit"]["now"] == f"{day:.2%}" and rows["daily_loss_limit"]["state"] == "ok"
    assert loss_halts(LIMITS, equity=930, peak=1100, day_start=960) is None  # the runner agrees: no halt

    crash = [*curve, ("2025-01-02T02:00:00+00:00", 870.0)]
    rows = _rows(_state(crash))
    assert rows["daily_loss_limit"]["state"] == "hit"  # 9.4 % of the day
    assert loss_halts(replace(LIMITS, max_drawdown=None), equity=870, peak=1100, day_start=960)
    assert rows["max_drawdown"]["state"] == "hit"  # 1 - 870 / 1100 = 20.9 %
    assert loss_halts(replace(LIMITS, daily_loss_limit=None), equity=870, peak=1100, day_start=None)


def test_states_follow_the_limits_and_the_halts() -> None:
    near = [("2025-01-01T00:00:00+00:00", 1000.0), ("2025-01-01T01:00:00+00:00", 830.0)]
    assert _rows(_state(near))["max_drawdown"]["state"] == "near"  # 17 %: past 80 % of the 20 % limit
    below = [("2025-01-01T00:00:00+00:00", 1000.0), ("2025-01-01T01:00:00+00:00", 790.0)]
    assert _rows(_state(below))["max_drawdown"]["state"] == "hit"
    halts = [{"id": 1, "scope": "s1", "source": "kill_switch", "reason": "drawdown", "time": 0.0},
             {"id": 2, "scope": "s1:ETH/USDT", "source": "breaker", "reason": "moved", "time": 0.0},
             {"id": 3, "scope": "other:BTC/USDT", "source": "breaker", "reason": "moved", "time": 0.0}]
    rows = _rows(_state(below, halts))
    assert rows["max_drawdown"]["state"] == "hit: halted"
    assert rows["max_bar_move"]["state"] == "tripped" and rows["max_bar_move"]["now"] == "ETH/USDT"
    assert rows["max_position"]["setting"] == "50%" and rows["stale_bars"]["setting"] == "3 bars"
    assert _rows(_state(near))["max_bar_move"]["state"] == "armed"
    empty = _state([])
    assert _rows(empty)["max_drawdown"]["now"] == "" and _rows(empty)["max_drawdown"]["state"] == "ok"
    none = LiveState()
    assert none.risk_rows("s1") == []  # a journal from before the runner recorded its limits


def test_freshness_of_the_last_tick() -> None:
    s = _state([])
    assert s.staleness("s1") is None
    s.ticks.append({"artifact": "s1", "bar": "2025-01-01T10:00:00+00:00", "now": "2025-01-01T11:00:30+00:00",
                    "status": "done", "latency_ms": 4.0, "finished": 1000.0})
    fresh = s.staleness("s1", wall=1012.5)
    assert fresh == {"bar": "2025-01-01T10:00:00+00:00", "status": "done", "tick_age_s": 12.5,
                     "bar_lag_s": 30.0}  # the 1h bar closed at 11:00, the tick ran at 11:00:30


def _status(**kw: object) -> dict:
    base = {"source": "binance", "symbols": ["BTC/USDT"], "streams": ["trades", "quotes"], "pid": 7,
            "started": 1000.0, "connected": True, "reconnects": 0, "messages": {"trades": 0, "quotes": 0},
            "last_message": 0.0, "gaps": 0, "overflows": 0, "refills_pending": 0, "durable_p99_ms": 2.0,
            "updated": 1000.0, "running": True}
    return {**base, **kw}


def test_stream_rates_between_two_reads_and_since_the_start() -> None:
    first = _status(messages={"trades": 400, "quotes": 1000}, updated=1010.0, last_message=1009.5)
    rows = stream_rows([first], wall=1011.0)
    assert [(r["stream"], r["rate"]) for r in rows] == [("trades", 40.0), ("quotes", 100.0)]  # since start
    assert rows[0]["lag_s"] == pytest.approx(1.5) and rows[0]["state"] == "connected"
    second = _status(messages={"trades": 460, "quotes": 1000}, updated=1012.0, last_message=1011.9,
                     connected=False, reconnects=1, gaps=2)
    rows = stream_rows([second], [first], wall=1012.0)
    assert [(r["stream"], r["rate"]) for r in rows] == [("trades", 30.0), ("quotes", 0.0)]  # the last 2 s
    assert rows[0]["state"] == "reconnecting" and rows[0]["reconnects"] == 1 and rows[0]["gaps"] == 2
    again = stream_rows([second], [second], wall=1013.0)  # not rewritten since: the rate since its start
    assert again[0]["rate"] == pytest.approx(460 / 12)
    restarted = _status(pid=8, started=1100.0, messages={"trades": 50}, updated=1110.0, running=False)
    rows = stream_rows([restarted], [second], wall=1200.0)  # another process: nothing shared with the old
    assert rows[0]["rate"] == 5.0 and rows[0]["state"] == "stopped" and rows[0]["lag_s"] is None


def test_the_runner_journals_its_risk_limits(tmp_path: Path) -> None:
    from paper_helpers import build_lake, spec_for

    from workbench.paper.feed import BarFeed
    from workbench.paper.journal import Journal
    from workbench.paper.live import LiveView
    from workbench.paper.runner import Runner
    from workbench.paper.sim import SimBroker

    lake = build_lake(tmp_path / "lake", symbols=("BTC/USDT",))
    spec = spec_for("sma_cross", {"fast": 5, "slow": 12})
    feed = BarFeed(spec.symbols, "1h", lake=lake)
    clock = {"now": pd.Timestamp("2025-02-01", tz="UTC")}
    broker = SimBroker(feed=feed, costs=spec.costs, cash=spec.capital, clock=lambda: clock["now"])
    with Journal(tmp_path / "journal.sqlite") as journal:
        runner = Runner([spec], broker=broker, journal=journal, feeds={spec.name: feed}, risk=LIMITS,
                        follow_timeout=0.0)
        for now in pd.date_range("2025-02-01 01:00", periods=30, freq="1h", tz="UTC"):
            clock["now"] = now
            runner.tick(now)
    view = LiveView(tmp_path / "journal.sqlite")
    try:
        state = view.load()
        assert state.risk == asdict(LIMITS)
        rows = {r["limit"].split(" ")[0]: r for r in state.risk_rows(spec.name)}
        equity = [v for _, v in state.equity[spec.name]]
        assert rows["max_drawdown"]["now"] == f"{1 - equity[-1] / max(max(equity), spec.capital):.2%}"
        fresh = state.staleness(spec.name)
        assert fresh is not None and fresh["bar_lag_s"] == 0.0  # each tick ran at its bar's close
    finally:
        view.close()
