"""Readable test bars: a seeded random-walk generator and a tiny hand-written candle table."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from workbench.data.calendar import Calendar
from workbench.data.timeframe import Timeframe

COLUMNS = ["ts", "open", "high", "low", "close", "volume"]


def random_bars(
    ts: Iterable[pd.Timestamp] | pd.DatetimeIndex | np.ndarray,
    *,
    seed: int = 0,
    price: float = 100.0,
) -> pd.DataFrame:
    """Consistent OHLCV bars (high >= open/close >= low > 0, volume >= 0) at the given times.

    `ts` may be timestamps or int64 microseconds since the epoch (what Calendar.expected returns).
    """
    arr = np.asarray(ts)
    if arr.dtype.kind in "iu":
        index = pd.DatetimeIndex(pd.to_datetime(arr, unit="us", utc=True))
    else:
        index = pd.DatetimeIndex(ts)
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    n = len(index)
    rng = np.random.default_rng(seed)
    close = price * np.exp(rng.normal(0.0, 1e-3, n).cumsum())
    open_ = np.r_[price, close[:-1]] * np.exp(rng.normal(0.0, 2e-4, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0.0, 1e-3, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0.0, 1e-3, n))
    volume = rng.uniform(0.0, 50.0, n)
    return pd.DataFrame({
        "ts": index.as_unit("us"), "open": open_, "high": high, "low": low, "close": close,
        "volume": volume,
    })


def minute_bars(start: str, periods: int, *, freq: str = "1min", seed: int = 0) -> pd.DataFrame:
    """`periods` consecutive 24/7 bars from `start` (UTC)."""
    return random_bars(pd.date_range(start, periods=periods, freq=freq, tz="UTC"), seed=seed)


def session_bars(start: str, end: str, timeframe: str = "1m", *, seed: int = 0,
                 code: str = "XNYS") -> pd.DataFrame:
    """Bars at every expected `timeframe` open of an exchange's sessions in [start, end]."""
    expected = Calendar(code).expected(
        pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"), Timeframe.parse(timeframe)
    )
    return random_bars(expected, seed=seed)


def candles(table: str, *, day: str = "2024-01-01") -> pd.DataFrame:
    """Parse a hand-written table, one bar per line: `time open high low close volume`.

    `time` is `HH:MM` on `day` or a full `YYYY-MM-DDTHH:MM` (UTC); values may be `nan`.
    Blank lines and lines starting with `#` are ignored.
    """
    rows = []
    for line in table.strip().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 6:
            raise ValueError(f"candle line needs 6 fields, got {len(parts)}: {line!r}")
        when = parts[0] if "T" in parts[0] else f"{day}T{parts[0]}"
        rows.append([pd.Timestamp(when, tz="UTC"), *map(float, parts[1:])])
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["ts"] = pd.DatetimeIndex(frame["ts"]).as_unit("us")
    return frame

