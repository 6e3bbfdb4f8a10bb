"""Higher-timeframe values on lower bars: visible only once the higher bar has closed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.data.sources.synthetic import SyntheticSource
from workbench.errors import ConfigError, DataError
from workbench.strategies import indicators as ind
from workbench.strategies.base import ParamSpace, Signals, Strategy, int_param
from workbench.strategies.lookahead import check_lookahead
from workbench.strategies.mtf import higher_timeframe, on_higher_timeframe


def hourly(n: int = 12) -> pd.DataFrame:
    """1h bars from midnight whose close is the hour (0, 1, 2, ...), high close + 0.5, low close - 0.5."""
    index = pd.date_range("2025-01-01", periods=n, freq="1h", tz="UTC", name="ts")
    c = np.arange(n, dtype=float)
    bars = pd.DataFrame({"open": c - 0.25, "high": c + 0.5, "low": c - 0.5, "close": c, "volume": 1.0},
                        index=index)
    bars.attrs["timeframe"] = "1h"
    return bars


def test_a_4h_bar_is_seen_from_the_lower_bar_that_closes_it_on() -> None:
    htf = higher_timeframe(hourly(), "4h")
    # hours 0-3 make the first 4h bar, closed at 04:00: the 03:00 bar (closing then) is the first to see it
    assert np.isnan(htf["close"].iloc[:3]).all()
    assert htf["close"].iloc[3:7].tolist() == [3.0, 3.0, 3.0, 3.0]
    assert htf["close"].iloc[7:11].tolist() == [7.0] * 4 and htf["close"].iloc[11] == 11.0
    row = htf.iloc[5]  # 05:00 sees the 00:00-04:00 bar whole
    assert (row["open"], row["high"], row["low"], row["volume"]) == (-0.25, 3.5, -0.5, 4.0)
    assert row["htf_ts"] == pd.Timestamp("2025-01-01 00:00", tz="UTC")
    sma = on_higher_timeframe(hourly(), "4h", lambda d: ind.sma(d["close"], 2))
    assert np.isnan(sma[:7]).all() and sma[7:11].tolist() == [5.0] * 4 and sma[11] == 9.0  # (3 + 7), (7 + 11)


def daily_trend(bars: pd.DataFrame, p: dict) -> Signals:
    """Long while the close is above the daily SMA of the last closed days."""
    daily = on_higher_timeframe(bars, "1d", lambda d: ind.sma(d["close"], int(p["days"])))
    with np.errstate(invalid="ignore"):
        above = bars["close"].to_numpy() > daily
    return Signals(above, ~above)


def leaky_trend(bars: pd.DataFrame, p: dict) -> Signals:
    """The same by hand: daily bars labelled by their start, joined back and carried forward."""
    d = bars["close"].resample("1D").last()
    sma = d.rolling(int(p["days"])).mean().reindex(bars.index, method="ffill").to_numpy()
    with np.errstate(invalid="ignore"):
        above = bars["close"].to_numpy() > sma
    return Signals(above, ~above)


@pytest.mark.parametrize(("fn", "clean"), [(daily_trend, True), (leaky_trend, False)])
def test_the_helper_passes_the_look_ahead_check_where_resampling_by_hand_fails(fn, clean: bool) -> None:
    bars = SyntheticSource(seed=4).bars("BTC/USDT", "1h", pd.Timestamp("2025-01-01", tz="UTC"),
                                        pd.Timestamp("2025-03-01", tz="UTC")).set_index("ts")
    bars.attrs["timeframe"] = "1h"
    strat = Strategy("mtf_test", ParamSpace.of(int_param("days", 5, 2, 20)), fn, warmup=lambda p: 24 * 6)
    report = check_lookahead(strat, bars, {"days": 5}, cuts=5, seed=2)
    assert report.ok is clean, report


def test_bad_timeframes_are_one_line() -> None:
    with pytest.raises(ConfigError, match=r"higher timeframe 30m must be a multiple of the bars' 1h and"):
        higher_timeframe(hourly(), "30m")
    with pytest.raises(ConfigError, match=r"higher timeframe 90m must be a multiple"):
        higher_timeframe(hourly(), "90m")
    with pytest.raises(ConfigError, match=r"unknown timeframe 'daily'"):
        higher_timeframe(hourly(), "daily")
    with pytest.raises(DataError, match=r"indexed by their open time"):
        higher_timeframe(hourly().reset_index(), "4h")
    with pytest.raises(DataError, match=r"one value per higher-timeframe bar"):
        on_higher_timeframe(hourly(), "4h", lambda d: np.zeros(2))
    bars = hourly()
    bars.attrs.clear()  # the spacing tells the timeframe
    assert higher_timeframe(bars, "4h")["close"].iloc[3] == 3.0
