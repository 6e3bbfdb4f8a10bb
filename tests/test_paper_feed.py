"""The runner's bar feed: what it sees at a clock time, incremental reads from the lake, own bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bars_factory import minute_bars

from workbench.data.lake import Lake
from workbench.paper.feed import BarFeed


def _lake(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path / "data")
    # two symbols across a year boundary (two files each); ETH misses one bar
    for k, sym in enumerate(("BTC/USDT", "ETH/USDT")):
        b = minute_bars("2024-12-31 23:00", 180, seed=k)
        if sym == "ETH/USDT":
            b = b.drop(index=100)
        lake.write_bars("test", sym, "1m", b)
    return lake


def test_read_recent_equals_read_bars_for_stored_and_resampled_series(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    start = pd.Timestamp("2024-12-31 23:30", tz="UTC")
    got = lake.read_recent("test", ["ETH/USDT", "NOPE", "BTC/USDT"], "1m", start)  # not in path order
    assert got["NOPE"] == {}
    assert not np.array_equal(got["BTC/USDT"]["close"][:5], got["ETH/USDT"]["close"][:5])
    for sym in ("BTC/USDT", "ETH/USDT"):
        want = lake.read_bars("test", sym, "1m", start)
        np.testing.assert_array_equal(got[sym]["ts"], pd.DatetimeIndex(want["ts"]).as_unit("us").asi8)
        for c in ("open", "high", "low", "close", "volume"):
            np.testing.assert_array_equal(got[sym][c], want[c].to_numpy())
    hourly = lake.read_recent("test", ["BTC/USDT"], "1h", pd.Timestamp("2024-12-31 23:00", tz="UTC"))
    want = lake.read_bars("test", "BTC/USDT", "1h", pd.Timestamp("2024-12-31 23:00", tz="UTC"))
    np.testing.assert_array_equal(hourly["BTC/USDT"]["close"], want["close"].to_numpy())


def test_feed_sees_only_closed_bars_refreshes_and_keeps_each_symbol_s_bars(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    feed = BarFeed(
        ["BTC/USDT", "ETH/USDT"],
        "1m",
        lake=lake,
        source="test",
        until=pd.Timestamp("2025-01-01 02:00", tz="UTC"),
    )
    t0 = pd.Timestamp("2024-12-31 23:00", tz="UTC")
    now = t0 + pd.Timedelta(minutes=150)
    w = feed.window(now, bars=60)
    btc, eth = w["BTC/USDT"], w["ETH/USDT"]
    assert len(btc) == len(eth) == 60
    assert btc.index[-1] == eth.index[-1] == now - pd.Timedelta(minutes=1)  # closed at `now`, not later
    # each symbol keeps its own bars, as the backtest's union timeline does: ETH's gap is ETH's alone
    missing = t0 + pd.Timedelta(minutes=100)
    full = feed.window(now, anchor=t0)
    assert missing in full["BTC/USDT"].index and len(full["BTC/USDT"]) == 150
    assert missing not in full["ETH/USDT"].index and len(full["ETH/USDT"]) == 149
    assert feed.trades_at("ETH/USDT", missing) is False and feed.trades_at("BTC/USDT", missing) is True
    assert feed.trades_at("BTC/USDT", pd.Timestamp("2025-01-02", tz="UTC")) is None  # not known yet
    assert feed.n_closed("BTC/USDT", now) == 150
    more = minute_bars("2025-01-01 02:00", 30, seed=5)
    lake.write_bars("test", "BTC/USDT", "1m", more)
    assert feed.refresh() == 0  # beyond `until`
    open_feed = BarFeed(["BTC/USDT"], "1m", lake=lake, source="test")
    lake.write_bars("test", "BTC/USDT", "1m", minute_bars("2025-01-01 02:30", 3, seed=6))
    assert open_feed.refresh() == 3
    assert open_feed.last_closed("BTC/USDT", pd.Timestamp("2025-01-01 03:00", tz="UTC")) == pd.Timestamp(
        "2025-01-01 02:32", tz="UTC"
    )


def test_feed_needs_a_lake_or_frames() -> None:
    from workbench.errors import DataError

    with pytest.raises(DataError, match="needs a lake or frames"):
        BarFeed(["X"], "1m")
