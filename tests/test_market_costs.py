"""The spread from recorded quotes and funding from the lake (SEMANTICS.md "Spread from recorded
quotes", "Funding"): aligned to the bars through a real lake, then paid by the engine. Hand-computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.backtest.engine import Costs, Sizing, load_bars, simulate
from workbench.backtest.marketdata import funding_per_bar, half_spread_at
from workbench.data.lake import Lake
from workbench.data.ticks import SCHEMAS, TickKind, TickWriter
from workbench.errors import DataError
from workbench.strategies import Signals

T0 = pd.Timestamp("2025-03-03 00:00", tz="UTC")
MIN = pd.Timedelta(minutes=1)


def minute_bars(n: int = 6, price: float = 100.0) -> pd.DataFrame:
    ts = pd.date_range(T0, periods=n, freq="1min", tz="UTC")
    return pd.DataFrame({"ts": ts, "open": price, "high": price, "low": price, "close": price,
                         "volume": 10.0})


def write_quotes(lake: Lake, source: str, symbol: str, quotes: list[tuple[pd.Timestamp, float, float]]
                 ) -> None:
    """Quotes through the collector's writer (received 1 ms after their time), in the table's order."""
    assert SCHEMAS[TickKind.QUOTES].names == ["ts", "recv_ts", "symbol", "bid", "bid_size", "ask", "ask_size"]
    with TickWriter(lake.ticks, source, segment_seconds=3600) as w:
        w.extend(TickKind.QUOTES, [(t.value, t.value + 1_000_000, symbol, bid, 1.0, ask, 1.0)
                                   for t, bid, ask in quotes])


def test_the_half_spread_is_the_last_quote_at_or_before_the_fill_time() -> None:
    quotes = pd.DataFrame({"ts": [T0 - 30 * pd.Timedelta(seconds=1), T0 + 90 * pd.Timedelta(seconds=1),
                                  T0 + 2 * MIN],
                           "bid": [99.9, 99.8, 99.0], "ask": [100.1, 100.2, 99.0]})
    times = pd.date_range(T0, periods=5, freq="1min", tz="UTC")
    hs = half_spread_at(quotes, times, MIN)
    # 00:00 <- the quote 30 s before; 00:01 <- the same, 90 s old: stale; 00:02 <- its own quote, a
    # locked book (0); 00:03 and 00:04 <- that quote, 1 and 2 minutes old (the second stale)
    np.testing.assert_allclose(hs, [0.2 / 200.0, np.nan, 0.0, 0.0, np.nan])


def test_funding_events_sum_into_the_bar_that_holds_their_time() -> None:
    index = pd.date_range(T0, periods=4, freq="8h", tz="UTC")
    events = pd.DataFrame({"ts": [T0, T0 + pd.Timedelta(hours=8), T0 + pd.Timedelta(hours=9),
                                  T0 + pd.Timedelta(hours=40)], "rate": [0.0001, 0.0002, -0.00005, 0.001]})
    np.testing.assert_allclose(funding_per_bar(events, index, pd.Timedelta(hours=8)),
                               [0.0001, 0.00015, 0.0, 0.0])  # the event at 40 h is after the last bar


def test_market_fills_pay_the_recorded_half_spread_loaded_from_the_lake(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "data")
    lake.write_bars("binance", "BTC/USDT", "1m", minute_bars())
    # bar 1 opens with a 0.2 % wide book (half 0.1 %); bar 4's open has no quote within a minute
    write_quotes(lake, "binance", "BTC/USDT", [(T0 + MIN - pd.Timedelta(seconds=5), 99.9, 100.1),
                                              (T0 + 2 * MIN, 99.95, 100.05)])
    costs = Costs(fees=0.0, slippage=0.0, spread="binance")
    bars = load_bars(lake, "BTC/USDT", "1m", costs=costs)
    np.testing.assert_allclose(bars["BTC/USDT"]["half_spread"].to_numpy(),
                               [np.nan, 0.001, 0.0005, 0.0005, np.nan, np.nan])
    long, exits = np.zeros(6, dtype=bool), np.zeros(6, dtype=bool)
    long[0], exits[3] = True, True  # in at bar 1's open, out at bar 4's (no fresh quote: no spread)
    res = simulate(bars, {"BTC/USDT": Signals(long, exits)}, costs=costs, sizing=Sizing(fraction=0.5))
    assert res.orders["price"].tolist() == pytest.approx([100.0 * 1.001, 100.0])
    free = simulate(bars, {"BTC/USDT": Signals(long, exits)}, costs=Costs(fees=0.0, slippage=0.0),
                    sizing=Sizing(fraction=0.5))
    assert free.orders["price"].tolist() == [100.0, 100.0]
    # with close fills the quote at each bar's close counts: bar 1 closes at 00:02 (0.05 %)
    at_close = load_bars(lake, "BTC/USDT", "1m", costs=costs, fill="close")["BTC/USDT"]
    np.testing.assert_allclose(at_close["half_spread"].to_numpy()[:4], [0.001, 0.0005, 0.0005, np.nan])


def test_spread_without_recorded_quotes_is_one_line(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "data")
    lake.write_bars("binance", "BTC/USDT", "1m", minute_bars())
    write_quotes(lake, "binance", "BTC/USDT", [(T0 + pd.Timedelta(hours=5), 99.9, 100.1)])
    with pytest.raises(DataError, match=r"spread=binance asked, but the lake holds no binance quotes of "
                                        r"BTC/USDT between .*; record them with `workbench collect --source "
                                        r"binance --symbols BTC/USDT --streams quotes`"):
        load_bars(lake, "BTC/USDT", "1m", costs=Costs(spread="binance"))
    bars = load_bars(lake, "BTC/USDT", "1m")
    with pytest.raises(DataError, match=r"spread=binance asked, but the bars of BTC/USDT carry no recorded "
                                        r"half-spread: load them with load_bars\(\.\.\., costs=costs\)"):
        simulate(bars, {"BTC/USDT": Signals(np.zeros(6, dtype=bool))}, costs=Costs(spread="binance"))


def test_a_perpetual_loaded_from_the_lake_pays_its_stored_funding(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "data")
    perp = "BTC/USDT:USDT"
    bars = minute_bars(6)
    lake.write_bars("binance", perp, "1m", bars)
    lake.write_bars("binance", "BTC/USDT", "1m", bars)
    # events at 00:02:00 (+0.1 %) and 00:04:30 (inside bar 4: -0.02 %)
    lake.write_funding("binance", perp, pd.DataFrame({"ts": [T0 + 2 * MIN, T0 + 4.5 * MIN],
                                                      "rate": [0.001, -0.0002]}))
    frames = load_bars(lake, [perp], "1m", source="binance")
    np.testing.assert_allclose(frames[perp]["funding_rate"].to_numpy(), [0, 0, 0.001, 0, -0.0002, 0])
    assert "funding_rate" not in load_bars(lake, ["BTC/USDT"], "1m", source="binance")["BTC/USDT"].columns
    long = np.zeros(6, dtype=bool)
    long[0] = True  # 500 held from bar 1: pays 50 at bar 2, receives 10 at bar 4
    res = simulate(frames, {perp: Signals(long)}, costs=Costs(fees=0.0, slippage=0.0, funding=True),
                   sizing=Sizing(fraction=0.5))
    assert res.equity.tolist() == [100_000.0, 100_000.0, 99_950.0, 99_950.0, 99_960.0, 99_960.0]
    # the funding is part of the run's data fingerprint
    assert res.inputs["data_fingerprint"] != simulate(
        {perp: frames[perp].drop(columns="funding_rate")}, {perp: Signals(long)},
        costs=Costs(fees=0.0, slippage=0.0), sizing=Sizing(fraction=0.5)).inputs["data_fingerprint"]


def test_a_replay_pays_the_recorded_spread_as_its_backtest_does(tmp_path: Path) -> None:
    """Paper replay through the sim broker with spread=<source>: every market fill pays the half-spread
    of the last quote at its fill time, as the backtest's; a bar without a fresh quote pays none."""
    from paper_helpers import BRACKETS, brackets_registered, build_lake, spec_for

    from workbench.paper.replay import replay

    lake = build_lake(tmp_path / "lake", symbols=("BTC/USDT",))
    opens = pd.date_range("2025-02-20", "2025-03-16", freq="1h", tz="UTC")
    rng = np.random.default_rng(3)
    mids = lake.read_bars("synthetic", "BTC/USDT", "1h", opens[0], opens[-1] + pd.Timedelta(hours=1))
    mid = mids.set_index("ts")["open"].reindex(opens).to_numpy()
    half = rng.uniform(0.0001, 0.002, len(opens)) * mid
    keep = rng.random(len(opens)) > 0.1  # some bars have no quote: they pay none
    quotes = [(t - pd.Timedelta(seconds=3), m - h, m + h)
              for t, m, h, k in zip(opens, mid, half, keep, strict=True) if k and np.isfinite(m)]
    write_quotes(lake, "binance", "BTC/USDT", quotes)
    costs = Costs(fees=0.0005, slippage=0.0, spread="binance")
    with brackets_registered():
        spec = spec_for(BRACKETS.name, {"seed": 3}, costs=costs)
        res = replay(spec, "2025-03-01", "2025-03-15", lake=lake, workdir=tmp_path / "w")
    assert res.parity.ok, f"{res.parity.summary()}\n{res.parity.differences.to_string()}"
    assert len(res.trades) >= 5
    free = simulate(res.backtest.bars, {"BTC/USDT": Signals(**{k: v.to_numpy() for k, v in
                                                                res.backtest.signals["BTC/USDT"].items()})},
                    costs=Costs(fees=0.0005, slippage=0.0), fill=spec.fill)
    assert res.backtest.metrics["total_return"] < free.metrics["total_return"]  # the spread cost something
