"""Tick-level fills (workbench/backtest/SEMANTICS.md "Tick-level fills"): a backtest's orders filled
again against a recorded tape, print by print.

A hand-made tape of twelve trades and six quotes is written through the real TickWriter into a
temporary lake; hand-made 1m bars (not built from that tape, as a venue's candles would not be) are
backtested by the real engine with hand-made signals, and every tick fill below is computed by hand.
Long only, no fees, no slippage, whole units (lots step 1), 10,000 cash: the bar fills are plain prices.

  bar  10:0x  o     h     l     c     signal                       bar model
  0    10:00  100   101   99    100   market buy                   -
  1    10:01  100   100.5 99.5  100   exit                         buy 100 @ 100
  2    10:02  99    99.6  98.4  98.5  buy limit 98 for 1 bar       sell 100 @ 99
  3    10:03  98.4  98.6  97.8  98.3  exit                         buy 101 @ 98 (the limit)
  4    10:04  98.5  98.7  97.8  97.9  buy limit 97 for 2, sl 2 %   sell 101 @ 98.5
  5    10:05  97.8  98    97.2  97.5
  6    10:06  97.4  97.5  96.5  96.9                               buy 102 @ 97 (the limit)
  7    10:07  96    96.2  94.8  95                                 stop-loss 97 x 0.98 = 95.06: sell 102

  the tape                                                    tick fill (back of the queue)
  quote 99.8/100.0 at 10:00:59.9, 99.9/100.1 (500) at :01:00.2  buy 100 @ 100.1 (the later quote's ask)
  quote 98.9 (40 only)/99.1 at 10:02:00.3, no book              sell 100 @ 98.9, beyond the quote
  prints 98.3 98.1 98.0 98.2 from 10:03:05: touched, not through  not filled (front: @ 98 at 10:03:20)
  quote 98.4/98.6 at 10:04:00.1                                 not filled: its entry was not (front: 98.4)
  prints 97.3 97.1 (10:05), 97.2 97.0 96.9 at 10:06:05/10/20     @ 97 at 10:06:20 (front: at the touch :10)
  prints 96 95.5 95.06 (10:07:30); quotes 95.9/96.1 at :10,      triggered at 95.06, sold @ 94.95
  94.95/95.10 at 10:07:30.1
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_runner import invoke

from workbench.backtest import Costs, Execution, Lot, simulate
from workbench.backtest.tickfills import (
    DIP_LIMIT,
    REPORT_COLUMNS,
    Queue,
    demo_tape,
    plot_tick_vs_bar,
    tick_fills,
    tick_summary,
    write_tick_report,
)
from workbench.data.feeds.tape import TAPE_SOURCE
from workbench.data.lake import Lake
from workbench.data.ticks import TickKind, TickWriter
from workbench.errors import ConfigError, DataError
from workbench.strategies.base import Signals

SYM = "BTC/USDT"
SOURCE = "handtape"
DAY = "2026-03-02"
NAN = math.nan

BARS = [(100, 101, 99, 100), (100, 100.5, 99.5, 100), (99, 99.6, 98.4, 98.5), (98.4, 98.6, 97.8, 98.3),
        (98.5, 98.7, 97.8, 97.9), (97.8, 98, 97.2, 97.5), (97.4, 97.5, 96.5, 96.9), (96, 96.2, 94.8, 95)]
TRADES = [("10:03:05", 98.3), ("10:03:12", 98.1), ("10:03:20", 98.0), ("10:03:40", 98.2),
          ("10:05:10", 97.3), ("10:05:30", 97.1),
          ("10:06:05", 97.2), ("10:06:10", 97.0), ("10:06:20", 96.9),
          ("10:07:00.5", 96.0), ("10:07:20", 95.5), ("10:07:30", 95.06)]
QUOTES = [("10:00:59.9", 99.8, 500, 100.0, 500), ("10:01:00.2", 99.9, 500, 100.1, 500),
          ("10:02:00.3", 98.9, 40, 99.1, 500), ("10:04:00.1", 98.4, 1000, 98.6, 1000),
          ("10:07:10", 95.9, 500, 96.1, 500), ("10:07:30.1", 94.95, 500, 95.10, 500)]


def at(clock: str, day: str = DAY) -> pd.Timestamp:
    return pd.Timestamp(f"{day} {clock}", tz="UTC")


def ns(clock: str) -> int:
    return int(at(clock).value)


def write_tape(lake: Lake) -> None:
    """The tape above, through the real write path (log, then compaction into Parquet parts)."""
    with TickWriter(lake.ticks, SOURCE, segment_seconds=3600) as w:
        w.extend(TickKind.TRADES, [(ns(t), ns(t) + 1_000_000, SYM, i + 1, px, 1.0, "sell")
                                   for i, (t, px) in enumerate(TRADES)])
        w.extend(TickKind.QUOTES, [(ns(t), ns(t) + 1_000_000, SYM, b, bs, a, asz)
                                   for t, b, bs, a, asz in QUOTES])


def hand_backtest(day: str = DAY):
    index = pd.date_range(f"{day} 10:00", periods=len(BARS), freq="1min", tz="UTC")
    bars = pd.DataFrame(BARS, columns=["open", "high", "low", "close"], index=index, dtype=float)
    bars["volume"] = 1.0
    n = len(BARS)
    entries, exits = np.zeros(n, bool), np.zeros(n, bool)
    entries[[0, 2, 4]] = True
    exits[[1, 3]] = True
    order_type = ["market"] * n
    order_type[2] = order_type[4] = "limit"
    limit, tif, sl = np.full(n, NAN), np.ones(n), np.full(n, NAN)
    limit[2], limit[4], tif[4], sl[4] = 98.0, 97.0, 2, 0.02
    sig = Signals(entries, exits, stop_loss=sl, order_type=order_type, limit_price=limit, time_in_force=tif)
    ex = Execution(costs=Costs(fees=0.0, slippage=0.0), direction="long", init_cash=10_000.0,
                   lots=Lot(step=1))
    return simulate({SYM: bars}, {SYM: sig}, execution=ex, timeframe="1m")


@pytest.fixture
def tape(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path / "data")
    write_tape(lake)
    return lake


def test_the_bar_model_makes_the_orders_the_table_says() -> None:
    orders = hand_backtest().orders
    assert orders["reason"].tolist() == ["entry", "exit", "entry", "exit", "entry", "stop_loss"]
    assert orders["time"].tolist() == [at(f"10:0{i}") for i in (1, 2, 3, 4, 6, 7)]
    assert orders["size"].tolist() == [100, 100, 101, 101, 102, 102]
    assert orders["price"].tolist() == pytest.approx([100, 99, 98, 98.5, 97, 95.06], rel=1e-12)


def test_back_of_the_queue(tape: Lake) -> None:
    report = tick_fills(hand_backtest(), tape, SOURCE)
    assert list(report.columns) == list(REPORT_COLUMNS)
    assert report["order"].tolist() == ["market", "market", "limit", "market", "limit", "stop"]
    assert report["filled"].tolist() == [True, True, False, False, True, True]
    # a market buy pays the ask of the first quote at or after the open (not the one before it)
    buy = report.iloc[0]
    assert (buy["tick_price"], buy["tick_time"]) == (100.1, at("10:01:00.2"))
    assert buy["diff"] == pytest.approx(0.1) and buy["diff_bps"] == pytest.approx(10.0)
    assert buy["pnl_diff"] == pytest.approx(-10.0) and not buy["beyond_quote"]
    # a market sell gets the bid; 40 quoted for 100: no book, so the rest at the same price, flagged
    sell = report.iloc[1]
    assert (sell["tick_price"], sell["tick_time"]) == (98.9, at("10:02:00.3"))
    assert sell["diff"] == pytest.approx(0.1) and sell["diff_bps"] == pytest.approx(0.1 / 99 * 1e4)
    assert sell["beyond_quote"] and "40 quoted" in sell["note"] and "no book" in sell["note"]
    # a limit at 98 touched by a print at 98.0 but never traded through: not filled at the back
    missed = report.iloc[2]
    assert np.isnan(missed["tick_price"]) and "no print went through the limit 98" in missed["note"]
    assert missed["pnl_diff"] == pytest.approx(-50.5)  # the round trip 98 -> 98.5 x 101 is not made
    gone = report.iloc[3]
    assert not gone["filled"] and gone["note"] == "its entry was not filled at tick level"
    assert np.isnan(gone["pnl_diff"])
    # a limit at 97 traded through by 96.9 at 10:06:20: filled at the limit, at that print
    through = report.iloc[4]
    assert (through["tick_price"], through["tick_time"]) == (97.0, at("10:06:20"))
    assert through["diff"] == 0 and through["pnl_diff"] == 0
    # the stop at 97 x 0.98 = 95.06: triggered by the print at 95.06, filled at the next bid
    stop = report.iloc[5]
    assert stop["level"] == pytest.approx(95.06)
    assert (stop["tick_price"], stop["tick_time"]) == (94.95, at("10:07:30.1"))
    assert stop["diff_bps"] == pytest.approx(0.11 / 95.06 * 1e4)
    assert stop["pnl_diff"] == pytest.approx(-0.11 * 102)


def test_front_of_the_queue_fills_on_the_touch(tape: Lake) -> None:
    report = tick_fills(hand_backtest(), tape, SOURCE, queue="front")
    assert report["filled"].all()
    touched = report.iloc[2]
    assert (touched["tick_price"], touched["tick_time"]) == (98.0, at("10:03:20"))
    exit_ = report.iloc[3]
    assert (exit_["tick_price"], exit_["tick_time"]) == (98.4, at("10:04:00.1"))
    assert exit_["diff_bps"] == pytest.approx(0.1 / 98.5 * 1e4) and exit_["pnl_diff"] == pytest.approx(-10.1)
    assert report.iloc[4]["tick_time"] == at("10:06:10")  # the touch at 97.0, before the print through
    assert tick_summary(report).price_pnl == pytest.approx(-10 - 10 - 10.1 - 11.22)


def test_the_summary(tape: Lake) -> None:
    s = tick_summary(tick_fills(hand_backtest(), tape, SOURCE))
    bps = [10.0, 0.1 / 99 * 1e4, 0.0, 0.11 / 95.06 * 1e4]
    assert (s.orders, s.filled, s.limit_fills, s.limit_unconfirmed, s.beyond_quote) == (6, 4, 2, 1, 1)
    assert s.mean_bps == pytest.approx(sum(bps) / 4)
    assert s.median_bps == pytest.approx((10.0 + 0.1 / 99 * 1e4) / 2)
    assert s.limit_unconfirmed_share == 0.5
    assert s.price_pnl == pytest.approx(-10 - 10 + 0 - 11.22)
    assert s.dropped_pnl == pytest.approx(-50.5)
    assert s.total_pnl == pytest.approx(-81.72)
    assert s.queue == "back"
    assert dict(s.rows())["limit fills not confirmed by ticks"] == "1 of 2 (50%)"


def test_an_order_without_recorded_ticks_is_refused_in_one_line(tape: Lake) -> None:
    with pytest.raises(DataError) as err:
        tick_fills(hand_backtest("2026-03-03"), tape, SOURCE)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("no recorded quotes of BTC/USDT from handtape between 2026-03-03 10:01:00 and "
                          "2026-03-03 10:02:00 UTC for the entry order of the bar at 2026-03-03 10:01:00 "
                          "(5 more orders lack ticks too)")
    assert "`workbench collect --source handtape --symbols BTC/USDT --streams trades,quotes,book`" in msg
    assert "the lake holds BTC/USDT trades of handtape from 2026-03-02 10:03:05 to 2026-03-02 10:07:30" in msg


def test_a_source_without_tick_tables_is_refused_in_one_line(tape: Lake) -> None:
    with pytest.raises(DataError, match=r"^no tick tables for source 'handtap' in the lake at .* \(did you "
                       r"mean 'handtape'\?\): it holds ticks of handtape; record some with `workbench "
                       r"collect --source handtap"):
        tick_fills(hand_backtest(), tape, "handtap")
    with pytest.raises(ConfigError, match=r"queue 'middle' is unknown: use back"):
        tick_fills(hand_backtest(), tape, SOURCE, queue="middle")


def test_the_chart(tape: Lake, tmp_path: Path) -> None:
    report = tick_fills(hand_backtest(), tape, SOURCE)
    fig = plot_tick_vs_bar(report)
    names = [t.name for t in fig.data]
    assert names == ["market (filled)", "limit (filled)", "stop (filled)", "not filled at tick level",
                     "cumulative cost difference", None]
    assert list(fig.data[4].y) == pytest.approx(np.cumsum([10, 10, 50.5, 0, 0, 11.22]))
    path = write_tick_report(report, tmp_path / "r" / "ticks.html")
    assert path.is_file() and "plotly" in path.read_text()[:5000].lower()


# ---------------------------------------------------------------------- the recorded demo tape

@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tape") / "data"
    return root, demo_tape(Lake(root), root.parent / "reports" / "ticks.html", minutes=6)


def test_the_demo_tape_is_recorded_through_the_collector_and_reported(demo) -> None:
    root, res = demo
    rec = res.recording
    assert rec.recorded and rec.source == TAPE_SOURCE and rec.symbols == ["BTC/USDT"]
    assert rec.end - rec.start == pd.Timedelta(minutes=6)
    lake = Lake(root)
    trades = lake.read_trades(TAPE_SOURCE, "BTC/USDT")
    assert rec.rows["trades"] == len(trades) > 1000 and rec.rows["quotes"] > len(trades)
    assert len(lake.read_book(TAPE_SOURCE, "BTC/USDT", at=rec.end)) == 10  # 5 levels a side
    assert res.result.strategy == DIP_LIMIT.name and len(res.result.bars["BTC/USDT"]) == 72  # 6 min of 5s
    report = res.report
    assert len(report) == len(res.result.orders) > 0 and report["filled"].any()
    assert {"limit", "market"} <= set(report["order"])  # limit entries, market exits
    market = report[(report["order"] == "market") & report["filled"]]
    sells = market[market["side"] == "sell"]
    quotes = lake.read_quotes(TAPE_SOURCE, "BTC/USDT")
    first = quotes.set_index("ts")["bid"]
    for r in sells.itertuples():  # the first bid at or after the open (or the book walked below it)
        bid = first[first.index >= r.time].iloc[0]
        assert r.tick_price == bid if not r.beyond_quote else r.tick_price < bid
    assert res.summary.orders == len(report) and res.path is not None and res.path.is_file()
    assert res.seconds["record"] < 15
    again = demo_tape(lake, None, minutes=6)  # the lake holds the session: not recorded twice
    assert not again.recording.recorded and len(lake.read_trades(TAPE_SOURCE, "BTC/USDT")) == len(trades)
    pd.testing.assert_frame_equal(again.report, report)


def test_the_command_line(demo, tmp_path: Path) -> None:
    root, _ = demo
    html, csv = tmp_path / "ticks.html", tmp_path / "orders.csv"
    args = ["tickfills", "--strategy", "sma_cross", "--params", "fast=5,slow=20", "--symbols", "BTC/USDT",
            "--timeframe", "5s", "--tick-source", TAPE_SOURCE, "--html", html, "--orders", csv]
    res = invoke(args, data=root)
    assert res.returncode == 0, res.stderr
    assert "bar vs tick fills (back of the queue)" in res.stdout and "mean cost difference" in res.stdout
    assert html.is_file()
    written = pd.read_csv(csv)
    assert list(written.columns) == list(REPORT_COLUMNS) and len(written) > 0
    assert written["order"].eq("market").all()  # sma_cross trades at market

    bad = invoke([*args[:-4], "--queue", "middle"], data=root)
    assert bad.returncode == 1 and "queue 'middle' is unknown" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    none = invoke([*args[:9], "--tick-source", "nosuch"], data=root)
    assert none.returncode == 1 and "no tick tables for source 'nosuch'" in none.stderr
    assert len(none.stderr.strip().splitlines()) == 1 and "Traceback" not in none.stderr


def test_queue_values() -> None:
    assert Queue.parse("front") is Queue.FRONT
    with pytest.raises(ConfigError, match=r"did you mean 'back'"):
        Queue.parse("bak")


def test_a_stop_is_armed_by_its_entrys_tick_fill(tape: Lake) -> None:
    """11:00 signals a buy limit at 99 with a 1 % stop (98.01); in 11:01 the bar model fills it and,
    pessimistic, stops it out at 98.01 in the same bar (low 97.5). On the tape one print sweeps to
    97.9 at 11:01:10 (through the limit: the fill), and no later print reaches the stop."""
    index = pd.date_range(f"{DAY} 11:00", periods=3, freq="1min", tz="UTC")
    bars = pd.DataFrame([(100, 100.5, 99.5, 100), (99.8, 99.9, 97.5, 98.5), (98.5, 99, 98, 98.8)],
                        columns=["open", "high", "low", "close"], index=index, dtype=float).assign(volume=1.0)
    sig = Signals(np.array([True, False, False]), stop_loss=0.01, order_type="limit",
                  limit_price=np.array([99.0, NAN, NAN]))
    ex = Execution(costs=Costs(fees=0.0, slippage=0.0), direction="long", init_cash=9_900.0)
    result = simulate({SYM: bars}, {SYM: sig}, execution=ex, timeframe="1m")
    assert result.orders["reason"].tolist() == ["entry", "stop_loss"]
    assert result.orders["price"].tolist() == pytest.approx([99.0, 98.01])
    with TickWriter(tape.ticks, SOURCE, segment_seconds=3600) as w:
        w.extend(TickKind.TRADES, [(ns(t), ns(t), SYM, 100 + i, px, 1.0, "sell") for i, (t, px) in
                                   enumerate([("11:01:05", 99.5), ("11:01:10", 97.9), ("11:01:20", 98.6),
                                              ("11:01:40", 98.9)])])
        w.extend(TickKind.QUOTES, [(ns("11:01:00.5"), ns("11:01:00.5"), SYM, 99.7, 10.0, 99.9, 10.0)])
    report = tick_fills(result, tape, SOURCE)
    assert report["filled"].tolist() == [True, False]
    assert (report["tick_price"].iloc[0], report["tick_time"].iloc[0]) == (99.0, at("11:01:10"))
    assert report["note"].iloc[1] == "not filled at tick level: no print at or through the stop 98.01"
    assert np.isnan(report["pnl_diff"].iloc[1])


def test_a_different_tape_over_the_same_span_is_refused(demo) -> None:
    root, _ = demo
    from workbench.data.feeds.tape import TapeFeed, record_tape

    with pytest.raises(ConfigError, match=r"already holds another simulated-tape tape of BTC/USDT between "
                       r"2025-12-31 12:00 and 12:06 UTC: record this one from another start"):
        record_tape(Lake(root), TapeFeed(minutes=6, seed=8))
