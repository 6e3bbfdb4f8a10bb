"""The synthetic market: deterministic, range-independent, and with the stylised facts it claims."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench import Lake
from workbench.data.calendar import Calendar
from workbench.data.sources.synthetic import SyntheticSource
from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError

COLS = ["open", "high", "low", "close", "volume"]


@pytest.fixture(scope="module")
def src() -> SyntheticSource:
    return SyntheticSource(seed=7)


@pytest.fixture(scope="module")
def btc_month(src: SyntheticSource) -> pd.DataFrame:
    return src.bars("BTC/USDT", "1m", "2025-03-01", "2025-05-01")


def test_same_seed_same_bars_other_seed_other_bars(src: SyntheticSource) -> None:
    a = src.bars("ETH/USDT", "1h", "2025-01-01", "2025-01-03")
    b = SyntheticSource(seed=7).bars("ETH/USDT", "1h", "2025-01-01", "2025-01-03")
    c = SyntheticSource(seed=8).bars("ETH/USDT", "1h", "2025-01-01", "2025-01-03")
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["close"], c["close"])


def test_pieces_equal_the_whole(src: SyntheticSource) -> None:
    whole = src.bars("SOL/USDT", "1m", "2025-02-01", "2025-02-03")
    parts = pd.concat([src.bars("SOL/USDT", "1m", "2025-02-01", "2025-02-01 13:07"),
                       src.bars("SOL/USDT", "1m", "2025-02-01 13:07", "2025-02-03")],
                      ignore_index=True)
    pd.testing.assert_frame_equal(whole, parts)


def test_coarse_bars_are_aggregates_of_minutes(src: SyntheticSource) -> None:
    m = src.bars("BTC/USDT", "1m", "2025-01-01", "2025-01-02").set_index("ts")
    h = src.bars("BTC/USDT", "1h", "2025-01-01", "2025-01-02").set_index("ts")
    ref = m.resample("1h").agg({"open": "first", "high": "max", "low": "min", "close": "last",
                                "volume": "sum"})
    np.testing.assert_allclose(h[COLS].to_numpy(), ref[COLS].to_numpy(), rtol=1e-12)
    d = src.bars("AAPL", "1d", "2025-03-03", "2025-03-04")
    am = src.bars("AAPL", "1m", "2025-03-03", "2025-03-04")
    assert d["ts"].iloc[0] == pd.Timestamp("2025-03-03", tz="UTC")
    assert d["open"].iloc[0] == am["open"].iloc[0]
    assert d["close"].iloc[0] == am["close"].iloc[-1]
    assert d["high"].iloc[0] == am["high"].max()


def test_bars_are_consistent_ohlc(btc_month: pd.DataFrame) -> None:
    b = btc_month
    assert (b["high"] >= b[["open", "close"]].max(axis=1)).all()
    assert (b["low"] <= b[["open", "close"]].min(axis=1)).all()
    assert (b[COLS] > 0).all().all()
    assert b["ts"].is_monotonic_increasing and b["ts"].is_unique
    assert len(b) == 61 * 1440


def test_fat_tails_and_volatility_clustering(btc_month: pd.DataFrame) -> None:
    r = np.log(btc_month["close"]).diff().dropna()
    assert r.kurt() > 3.0  # excess kurtosis: far fatter than normal
    hourly = np.log(btc_month.set_index("ts")["close"].resample("1h").last()).diff().dropna()
    assert hourly.abs().autocorr(1) > 0.1  # big moves follow big moves
    assert abs(hourly.autocorr(1)) < 0.1  # but the sign is not predictable


def test_assets_are_correlated(src: SyntheticSource, btc_month: pd.DataFrame) -> None:
    eth = src.bars("ETH/USDT", "1m", "2025-03-01", "2025-05-01")
    rb = np.log(btc_month["close"]).diff().dropna()
    re = np.log(eth["close"]).diff().dropna()
    assert 0.3 < np.corrcoef(rb, re)[0, 1] < 0.95


def test_trending_and_ranging_regimes(src: SyntheticSource) -> None:
    bars = src.bars("BTC/USDT", "1m", "2024-01-01", "2024-07-01")
    ts = pd.DatetimeIndex(bars["ts"]).as_unit("us").asi8
    _, w_rw = src._regimes("crypto", "BTC/USDT", ts)
    day = pd.Series(w_rw, index=bars["ts"]).resample("1D").mean()
    lr = np.log(bars.set_index("ts")["close"])
    # variance ratio of daily to 1m returns: < 1 means mean reversion, ~1 a random walk
    vr = {}
    for name, days in (("ranging", day[day < 0.5].index), ("trending", day[day > 0.9].index)):
        r1 = lr.diff()[lr.index.floor("D").isin(days)]
        rd = lr.resample("1D").last().diff()
        rd = rd[rd.index.isin(days)]
        vr[name] = rd.var() / (1440 * r1.var())
    assert vr["ranging"] < 0.75 < vr["trending"]


def test_equities_trade_only_in_sessions(src: SyntheticSource) -> None:
    bars = src.bars("SPY", "1m", "2024-07-01", "2024-07-08")
    expected = Calendar("XNYS").expected(pd.Timestamp("2024-07-01", tz="UTC"),
                                          pd.Timestamp("2024-07-07 23:59", tz="UTC"),
                                          Timeframe.parse("1m"))
    np.testing.assert_array_equal(pd.DatetimeIndex(bars["ts"]).as_unit("us").asi8, expected)
    daily = src.bars("SPY", "1d", "2024-07-01", "2024-07-08")
    assert [str(t.date()) for t in daily["ts"]] == ["2024-07-01", "2024-07-02", "2024-07-03",
                                                     "2024-07-05"]


def test_bad_input(src: SyntheticSource) -> None:
    with pytest.raises(ConfigError, match="did you mean 'BTC/USDT'"):
        src.canonical_symbol("BTC/USTD")
    with pytest.raises(ConfigError, match="starts at 2018-01-01"):
        src.bars("BTC/USDT", "1h", "2017-01-01", "2018-02-01")


def test_sync_is_incremental_and_rerun_adds_nothing(lake: Lake, src: SyntheticSource) -> None:
    first = lake.sync(src, ["BTC/USDT", "AAPL"], "1m", "2025-01-02", "2025-01-04")
    assert [r.rows_added for r in first] == [2 * 1440, 2 * 390]
    again = lake.sync(src, ["BTC/USDT", "AAPL"], "1m", "2025-01-02", "2025-01-04")
    assert [r.rows_fetched for r in again] == [0, 0]
    assert [r.requested for r in again] == [[], []]
    more = lake.sync(src, ["BTC/USDT"], "1m", end="2025-01-05")
    assert more[0].rows_added == 1440 and more[0].requested == [
        ("2025-01-04 00:00:00+00:00", "2025-01-05 00:00:00+00:00")]
    stored = lake.read_bars("synthetic", "BTC/USDT", "1m")
    direct = src.bars("BTC/USDT", "1m", "2025-01-02", "2025-01-05")
    np.testing.assert_array_equal(stored[COLS].to_numpy(), direct[COLS].to_numpy())
    assert [c.missing_bars for c in lake.coverage()] == [0, 0]


def test_fill_gaps_refetches_a_hole_left_by_an_interrupted_sync(
    lake: Lake, src: SyntheticSource
) -> None:
    bars = src.bars("ETH/USDT", "1m", "2025-01-02", "2025-01-03")
    hole = (bars["ts"] >= "2025-01-02 06:00Z") & (bars["ts"] < "2025-01-02 07:30Z")
    lake.write_bars("synthetic", "ETH/USDT", "1m", bars[~hole])
    assert lake.series_coverage("synthetic", "ETH/USDT", "1m").missing_bars == 90
    plain = lake.sync(src, ["ETH/USDT"], "1m", "2025-01-02", "2025-01-03")
    assert plain[0].requested == [] and plain[0].rows_added == 0
    filled = lake.sync(src, ["ETH/USDT"], "1m", "2025-01-02", "2025-01-03", fill_gaps=True)
    assert filled[0].requested == [("2025-01-02 06:00:00+00:00", "2025-01-02 07:30:00+00:00")]
    assert filled[0].rows_added == 90
    assert lake.series_coverage("synthetic", "ETH/USDT", "1m").missing_bars == 0
    full = lake.sync(src, ["ETH/USDT"], "1m", end="2025-01-03", full=True)
    assert full[0].rows_fetched == 1440 and full[0].rows_added == 0
