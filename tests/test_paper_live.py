"""The live view of a journal (what the dashboard's Live page shows): read once, then in increments while
a runner keeps writing; after every tick the incremental state equals a fresh read, and its numbers equal
the journal's own (ledger, orders, fills)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from paper_helpers import BRACKETS, build_lake, registered, spec_for

from workbench.errors import ConfigError, DataError
from workbench.paper.feed import BarFeed
from workbench.paper.journal import Journal
from workbench.paper.live import LiveView
from workbench.paper.risk import RiskLimits
from workbench.paper.runner import Runner
from workbench.paper.sim import SimBroker


def _same(a: LiveView, b: LiveView) -> None:
    sa, sb = a.state, b.state
    assert sa.books == sb.books
    assert sa.equity == sb.equity
    assert sa.open_orders.keys() == sb.open_orders.keys()
    assert (sa.n_fills, sa.n_decisions) == (sb.n_fills, sb.n_decisions)
    assert list(sa.fills) == list(sb.fills) and list(sa.decisions) == list(sb.decisions)
    assert sa.halts == sb.halts and list(sa.errors) == list(sb.errors)


def test_increments_equal_a_fresh_read_and_the_journal_while_a_runner_writes(tmp_path: Path) -> None:
    lake = build_lake(tmp_path / "lake")
    with registered(BRACKETS):
        spec = spec_for(BRACKETS.name, {"seed": 5}, symbols=("BTC/USDT", "ETH/USDT"))
        times = pd.date_range("2025-02-01", periods=150, freq="1h", tz="UTC")
        clock = {"now": times[0]}
        feed = BarFeed(spec.symbols, "1h", lake=lake)
        broker = SimBroker(feed=feed, costs=spec.costs, cash=spec.capital, clock=lambda: clock["now"])
        with Journal(tmp_path / "journal.sqlite") as j:
            runner = Runner([spec], broker=broker, journal=j, feeds={spec.name: feed},
                            risk=RiskLimits(max_bar_move=None, stale_bars=None), follow_timeout=0.0)
            view = None
            for k, now in enumerate(times):
                clock["now"] = now
                runner.tick(now)
                if k == 20:
                    view = LiveView(j.path)
                    view.load()
                    j.halt(f"{spec.name}:BTC/USDT", "testing the view", source="manual")
                if view is not None and k % 7 == 0:
                    view.update()
                    fresh = LiveView(j.path)
                    fresh.load()
                    _same(view, fresh)
                    fresh.close()
            assert view is not None
            view.update()
            s = view.state
            # the numbers are the journal's
            ledger = j.ledger(spec.name, spec.capital)
            book = s.books[spec.name]
            assert book["equity"] == pytest.approx(j.last_equity(spec.name))
            assert book["cash"] == pytest.approx(float(ledger.cash))
            assert book["positions"] == {sym: pytest.approx(float(q)) for sym, q in ledger.positions.items()
                                         if q != Decimal(0)}
            assert s.n_fills == len(j.fills_frame()) >= 20
            assert set(s.open_orders) == {r["client_order_id"] for r in j.live_orders()}
            assert s.fills[-1]["fill_id"] == j.fills_frame()["fill_id"].iloc[-1]
            assert [h["reason"] for h in s.halts] == ["testing the view"]
            curve = s.equity_frame(spec.name)
            assert len(curve) == len(j.snapshots_frame(spec.name)) and curve.iloc[-1] == book["equity"]
            assert list(s.table("fills")["fill_id"][:1]) == [s.fills[-1]["fill_id"]]  # newest first
            view.close()


def test_a_missing_or_damaged_journal_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no journal at"):
        LiveView(tmp_path / "nope.sqlite")
    bad = tmp_path / "journal.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match="cannot be read") as err:
        LiveView(bad)
    assert "\n" not in str(err.value)
