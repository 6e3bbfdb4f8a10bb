"""What a backtest needs from the lake beyond the bars: perpetuals' funding rates and the half-spread
recorded in the collector's quotes, each aligned to the bars as a column the engine reads.

SEMANTICS.md states how the engine uses them ("Funding", "Spread from recorded quotes"); here they
are only put on the right bar: a funding event on the bar whose interval holds its time, a quote on
the fill time it was the market at.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import DataError

__all__ = ["attach_funding", "attach_spread", "funding_per_bar", "funding_rates", "half_spread_at"]


def funding_per_bar(events: pd.DataFrame, index: pd.DatetimeIndex, bar: pd.Timedelta) -> np.ndarray:
    """The sum of the funding rates whose time falls in each bar's interval ``[t, t + bar)`` (0 for a
    bar with none). `events` has columns ``ts`` and ``rate``."""
    out = np.zeros(len(index))
    if events.empty or not len(index):
        return out
    ts = pd.DatetimeIndex(events["ts"]).as_unit("ns").asi8
    starts = index.as_unit("ns").asi8
    # the bar whose open is the last at or before the event, if the event is inside that bar
    k = np.searchsorted(starts, ts, side="right") - 1
    inside = (k >= 0) & (ts < starts[np.clip(k, 0, None)] + bar.value)
    np.add.at(out, k[inside], events["rate"].to_numpy(dtype=np.float64)[inside])
    return out


def funding_rates(lake: Any, source: str, symbol: str, index: pd.DatetimeIndex, bar: pd.Timedelta
                  ) -> np.ndarray | None:
    """The lake's funding of `symbol` summed into the bars opening at `index` (`funding_per_bar`);
    None when the lake holds no funding history of it (a spot symbol)."""
    if not len(index) or not lake.has_funding(source, symbol):
        return None
    events = lake.read_funding(source, symbol, index[0], index[-1] + bar)
    return funding_per_bar(events, index, bar)


def _with_column(df: pd.DataFrame, name: str, values: np.ndarray) -> pd.DataFrame:
    """`df` with one more column, its attrs (symbol, timeframe, source) kept."""
    attrs = dict(df.attrs)
    out = df.assign(**{name: values})
    out.attrs.update(attrs)
    return out


def attach_funding(lake: Any, frames: dict[str, pd.DataFrame], source: str, timeframe: str
                   ) -> dict[str, pd.DataFrame]:
    """Each frame of a perpetual whose funding history the lake holds gains a ``funding_rate``
    column (`funding_rates`); other frames are returned as they are."""
    from workbench.data.timeframe import Timeframe

    bar = Timeframe.parse(timeframe).delta
    out = {}
    for sym, df in frames.items():
        rates = funding_rates(lake, source, sym, pd.DatetimeIndex(df.index), bar)
        out[sym] = df if rates is None else _with_column(df, "funding_rate", rates)
    return out


def half_spread_at(quotes: pd.DataFrame, times: pd.DatetimeIndex, stale: pd.Timedelta) -> np.ndarray:
    """The relative half-spread ``(ask - bid) / (ask + bid)`` of the last quote at or before each time,
    NaN where there is none within `stale` before it (or the quote is crossed or empty)."""
    out = np.full(len(times), np.nan)
    if quotes.empty or not len(times):
        return out
    q = quotes.sort_values("ts", kind="stable")
    qt = pd.DatetimeIndex(q["ts"]).as_unit("ns").asi8
    t = times.as_unit("ns").asi8
    k = np.searchsorted(qt, t, side="right") - 1
    ok = k >= 0
    kk = np.clip(k, 0, None)
    ok &= t - qt[kk] <= stale.value
    bid, ask = q["bid"].to_numpy(dtype=np.float64)[kk], q["ask"].to_numpy(dtype=np.float64)[kk]
    with np.errstate(invalid="ignore", divide="ignore"):
        hs = (ask - bid) / (ask + bid)
    ok &= np.isfinite(hs) & (hs >= 0) & (bid > 0)
    out[ok] = hs[ok]
    return out


def attach_spread(lake: Any, frames: dict[str, pd.DataFrame], source: str, timeframe: str, *,
                  at_open: bool = True) -> dict[str, pd.DataFrame]:
    """Each frame gains a ``half_spread`` column: the half-spread of the last quote of tick source
    `source` at the fill time of its bar (its open with next-open fills, its close with close fills),
    NaN where no quote is fresher than one bar. A symbol with no quote at all in its range is refused
    in one line naming the command that records them."""
    from workbench.data.timeframe import Timeframe

    bar = Timeframe.parse(timeframe).delta
    out = {}
    for sym, df in frames.items():
        idx = pd.DatetimeIndex(df.index)
        times = idx if at_open else idx + bar
        quotes = lake.read_quotes(source, sym, times[0] - bar, times[-1] + pd.Timedelta(1, "ns")) \
            if len(idx) else pd.DataFrame()
        hs = half_spread_at(quotes, times, bar)
        if not np.isfinite(hs).any():
            span = f"between {idx[0]} and {times[-1]}" if len(idx) else "in an empty range"
            raise DataError(f"spread={source} asked, but the lake holds no {source} quotes of {sym} "
                            f"{span}; record them with `workbench collect --source {source} --symbols {sym} "
                            "--streams quotes`, or drop spread from the costs")
        out[sym] = _with_column(df, "half_spread", hs)
    return out
