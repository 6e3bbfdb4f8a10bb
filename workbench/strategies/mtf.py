"""Higher-timeframe values for a strategy on lower-timeframe bars, aligned causally.

Resampling by hand (``bars.resample("1d")``) labels a daily bar by its start, so joining it back
to hourly bars hands every hour of the day the day's close: a look-ahead that backtests love. Here a
bar of the higher timeframe (buckets aligned to the epoch in UTC, weeks to Mondays, as the lake's)
is visible to a lower bar only once it has closed: its end, ``start + timeframe``, is at or before
the lower bar's own close, ``open + the bars' timeframe``. Until one has closed, values are NaN.

A daily bucket of an exchange session closes at midnight UTC (the bucket's end), so equities see
yesterday's daily bar from today's first bar on; a bucket with missing bars is still a bucket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from workbench.data.bars import aggregate_bars
from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError, DataError


def higher_timeframe(bars: pd.DataFrame, timeframe: str, *, base: str | None = None) -> pd.DataFrame:
    """The last closed bar of `timeframe` (open, high, low, close, volume and its start ``htf_ts``)
    as of each of `bars`' closes, on `bars`' index; `base` is the bars' own timeframe (default: their
    ``attrs["timeframe"]``, else their most common spacing)."""
    htf, pos = _higher(bars, timeframe, base)
    cols = [c for c in ("open", "high", "low", "close", "volume") if c in htf.columns]
    values = htf[cols].to_numpy(dtype=np.float64)
    out = np.full((len(bars), len(cols)), np.nan)
    seen = pos >= 0
    out[seen] = values[pos[seen]]
    frame = pd.DataFrame(out, index=bars.index, columns=cols)
    starts = pd.DatetimeIndex(htf["ts"])
    frame["htf_ts"] = pd.Series(starts[np.maximum(pos, 0)], index=bars.index).where(seen)
    return frame


def on_higher_timeframe(bars: pd.DataFrame, timeframe: str, fn: Callable[[pd.DataFrame], Any], *,
                        base: str | None = None) -> np.ndarray:
    """`fn` computed on the bars of `timeframe` (a frame indexed by their start, one value per bar:
    ``lambda d: ind.sma(d["close"], 20)``) and aligned causally to `bars`: each lower bar gets the
    value of the last closed higher bar."""
    htf, pos = _higher(bars, timeframe, base)
    frame = htf.set_index("ts")
    values = np.asarray(fn(frame), dtype=np.float64)
    if values.shape != (len(frame),):
        raise DataError(f"the function gave {values.shape} values for {len(frame)} {timeframe} bars; give "
                        "one value per higher-timeframe bar")
    out = np.full(len(bars), np.nan)
    seen = pos >= 0
    out[seen] = values[pos[seen]]
    return out


def _higher(bars: pd.DataFrame, timeframe: str, base: str | None) -> tuple[pd.DataFrame, np.ndarray]:
    """The bars of `timeframe` and, per lower bar, the row of the last one closed by its close (-1: none)."""
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise DataError("higher_timeframe needs bars indexed by their open time (bars.set_index('ts'))")
    tf = Timeframe.parse(timeframe)
    own = Timeframe.parse(base or bars.attrs.get("timeframe") or _spacing(bars.index))
    if tf.seconds <= own.seconds or tf.seconds % own.seconds:
        raise ConfigError(f"higher timeframe {tf.name} must be a multiple of the bars' {own.name} and "
                          f"longer; e.g. {Timeframe(own.seconds * 4).name} or 1d")
    if len(bars) == 0:
        return pd.DataFrame({"ts": pd.DatetimeIndex([], tz="UTC")}), np.empty(0, dtype=np.int64)
    us = bars.index.as_unit("us").asi8
    origin = tf.origin_micros
    buckets = (us - origin) // tf.micros * tf.micros + origin
    htf = aggregate_bars(bars.reset_index(drop=True), buckets)
    ends = pd.DatetimeIndex(htf["ts"]).as_unit("us").asi8 + tf.micros  # when each closes
    closes = us + own.micros  # when each lower bar closes
    pos = np.searchsorted(ends, closes, side="right") - 1
    return htf, pos.astype(np.int64)


def _spacing(index: pd.DatetimeIndex) -> str:
    if len(index) < 2:
        raise DataError("cannot tell the bars' timeframe from fewer than 2 bars; pass base='1h'")
    step = pd.Series(np.diff(index.as_unit("s").asi8)).mode().iloc[0]
    return f"{int(step)}s"


__all__ = ["higher_timeframe", "on_higher_timeframe"]
