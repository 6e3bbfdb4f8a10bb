"""Bars as of a clock time: what the runner may see (closed bars only) and what the simulated broker fills at.

A `BarFeed` holds one timeframe's bars of a few symbols in memory, read from the lake once and then
incrementally (`refresh`), so a tick costs array slicing rather than a query per symbol. A bar
stamped ``t`` closes at ``t + timeframe``; at clock time ``now`` the runner sees the bars with
``t + timeframe <= now``. The simulated broker may also read the *open* of the bar starting at
``now`` (the market price at that instant), never anything later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from workbench.data.timeframe import Timeframe
from workbench.errors import DataError

_COLS = ("open", "high", "low", "close", "volume", "funding_rate", "half_spread")
_UTC_NS = pd.DatetimeTZDtype("ns", "UTC")


@dataclass
class _Series:
    ts: np.ndarray  # int64 ns since the epoch (bar open times, ascending)
    cols: dict[str, np.ndarray]


def _ns(t: pd.Timestamp) -> int:
    return int(pd.Timestamp(t).value)


class BarFeed:
    """One timeframe's bars of `symbols`, from a lake (`source`) or from frames given directly.

    `start` and `until` bound what is loaded ([start, until)); `refresh` reads bars newer than the
    last one held (live trading appends as the lake is synced).
    """

    def __init__(
        self,
        symbols: Sequence[str],
        timeframe: str,
        *,
        lake: Any = None,
        source: str | None = None,
        frames: Mapping[str, pd.DataFrame] | None = None,
        start: Any = None,
        until: Any = None,
    ) -> None:
        self.symbols = list(symbols)
        self.tf = Timeframe.parse(timeframe)
        self.step = int(self.tf.delta.value)
        self.lake, self.source = lake, source
        self.until = pd.Timestamp(until) if until is not None else None
        self._series: dict[str, _Series] = {}
        if frames is not None:
            for s in self.symbols:
                self._series[s] = self._to_series(frames[s])
        else:
            if lake is None:
                raise DataError("a bar feed needs a lake or frames")
            if self.source is None:
                from workbench.backtest.engine import load_bars

                loaded = load_bars(lake, self.symbols, self.tf.name, start, self.until)
                self.source = str(next(iter(loaded.values())).attrs.get("source", "synthetic"))
                for s in self.symbols:
                    self._series[s] = self._to_series(loaded[s])
            else:
                from workbench.backtest.marketdata import attach_funding

                for s in self.symbols:
                    df = lake.read_bars(self.source, s, self.tf.name, start, self.until)
                    df = df.set_index("ts") if "ts" in df.columns else df
                    df = attach_funding(lake, {s: df}, self.source, self.tf.name)[s]
                    self._series[s] = self._to_series(df)

    @staticmethod
    def _to_series(df: pd.DataFrame) -> _Series:
        idx = pd.DatetimeIndex(df.index)
        if idx.tz is None:
            idx = idx.tz_localize("UTC")
        ts = idx.tz_convert("UTC").as_unit("ns").asi8.copy()
        cols = {c: df[c].to_numpy(dtype=np.float64).copy() for c in _COLS if c in df.columns}
        return _Series(ts, cols)

    def refresh(self, now: pd.Timestamp | None = None) -> int:
        """Append bars the lake gained since the last read (up to `until`); returns how many.

        One query for every symbol (`Lake.read_recent`), from the oldest of their last bars.
        """
        if self.lake is None:
            return 0
        lasts = [int(self._series[s].ts[-1]) for s in self.symbols if len(self._series[s].ts)]
        after = pd.Timestamp(min(lasts) + self.step, tz="UTC") if len(lasts) == len(self.symbols) else None
        fresh = self.lake.read_recent(self.source, self.symbols, self.tf.name, after)
        added = 0
        limit = self.until.value // 1000 if self.until is not None else None
        for s in self.symbols:
            cols = fresh.get(s)
            if not cols or not len(cols["ts"]):
                continue
            ts_ns = cols["ts"] * 1000
            ser = self._series[s]
            keep = ts_ns > (ser.ts[-1] if len(ser.ts) else np.iinfo(np.int64).min)
            if limit is not None:
                keep &= cols["ts"] < limit
            if not keep.any():
                continue
            new_ts = ts_ns[keep]
            for c in ser.cols:
                more = self._lake_funding(s, new_ts) if c == "funding_rate" else cols[c][keep]
                ser.cols[c] = np.concatenate([ser.cols[c], more])
            ser.ts = np.concatenate([ser.ts, new_ts])
            added += int(keep.sum())
        return added

    def _lake_funding(self, symbol: str, ts_ns: np.ndarray) -> np.ndarray:
        """The funding rate of each bar opening at `ts_ns` from the lake's events (0 where none)."""
        from workbench.backtest.marketdata import funding_rates

        rates = None if self.lake is None else funding_rates(
            self.lake, str(self.source), symbol, pd.DatetimeIndex(ts_ns, dtype=_UTC_NS), self.tf.delta)
        return np.zeros(len(ts_ns)) if rates is None else rates

    def funding(self, symbol: str, after: pd.Timestamp | None, upto: pd.Timestamp
                ) -> list[tuple[pd.Timestamp, float]]:
        """The funding rates of `symbol`'s bars opening in (after, upto], non-zero ones only: from the
        bars held, and for a bar not held yet (the one opening now, live) from the lake's events."""
        ser = self._series[symbol]
        if "funding_rate" not in ser.cols:
            return []
        lo = -(2**62) if after is None else _ns(after)
        hi = _ns(upto)
        a, b = np.searchsorted(ser.ts, lo, side="right"), np.searchsorted(ser.ts, hi, side="right")
        rates = ser.cols["funding_rate"][a:b]
        out = [(pd.Timestamp(int(t), tz="UTC"), float(r)) for t, r in zip(ser.ts[a:b], rates, strict=True)
               if r != 0 and np.isfinite(r)]
        last = int(ser.ts[b - 1]) if b > 0 else lo
        if hi > last and hi > lo:  # the bar opening at `upto` is not held yet
            r = float(self._lake_funding(symbol, np.array([hi], dtype=np.int64))[0])
            if r:
                out.append((pd.Timestamp(hi, tz="UTC"), r))
        return out

    # ------------------------------------------------------------------ what the runner sees
    def n_closed(self, symbol: str, now: pd.Timestamp) -> int:
        """How many bars of `symbol` have closed by `now`."""
        return int(np.searchsorted(self._series[symbol].ts, _ns(now) - self.step, side="right"))

    def last_closed(self, symbol: str, now: pd.Timestamp) -> pd.Timestamp | None:
        """Open time of the last bar closed by `now`."""
        k = self.n_closed(symbol, now)
        return None if k == 0 else pd.Timestamp(int(self._series[symbol].ts[k - 1]), tz="UTC")

    def window(
        self,
        now: pd.Timestamp,
        *,
        bars: int | None = None,
        anchor: pd.Timestamp | None = None,
        symbols: Sequence[str] | None = None,
    ) -> dict[str, pd.DataFrame]:
        """Closed bars of `symbols` (default all), each symbol's own bars, up to its last closed bar.

        Either the last `bars` bars of each symbol (a trailing window) or every bar from `anchor` on.
        Symbols of different calendars keep different bars, as in the backtest (SEMANTICS.md, "Timeline").
        """
        syms = list(symbols) if symbols is not None else self.symbols
        end = _ns(now) - self.step
        out = {}
        for s in syms:
            ser = self._series[s]
            hi = int(np.searchsorted(ser.ts, end, side="right"))
            if anchor is not None:
                lo = int(np.searchsorted(ser.ts, _ns(anchor), side="left"))
            else:
                lo = 0 if bars is None else max(hi - bars, 0)
            take = slice(lo, hi)  # contiguous: no gather
            index = pd.DatetimeIndex(ser.ts[take], dtype=_UTC_NS, name="ts")
            df = pd.DataFrame({c: v[take] for c, v in ser.cols.items()}, index=index)
            df.attrs.update(symbol=s, timeframe=self.tf.name, source=self.source)
            out[s] = df
        return out

    def trades_at(self, symbol: str, t: pd.Timestamp) -> bool | None:
        """Whether `symbol` has a bar in progress at `t` (its market trades then): known from the bars
        held when they reach `t` (a replay), None when they end before it (live: not closed yet)."""
        ts = self._series[symbol].ts
        t_ns = _ns(t)
        k = int(np.searchsorted(ts, t_ns, side="right")) - 1
        if k >= 0 and t_ns < ts[k] + self.step:
            return True
        return False if k + 1 < len(ts) else None

    # ------------------------------------------------------------------ what the simulated broker reads
    def bars_between(
        self, symbol: str, after_ns: int, upto_ns: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Bars with open time in (after_ns, upto_ns] (ns), as (ts, columns)."""
        ser = self._series[symbol]
        lo = int(np.searchsorted(ser.ts, after_ns, side="right"))
        hi = int(np.searchsorted(ser.ts, upto_ns, side="right"))
        return ser.ts[lo:hi], {c: v[lo:hi] for c, v in ser.cols.items()}

    def bar_index(self, symbol: str, t_ns: int) -> int | None:
        """Position of the bar opening exactly at `t_ns`, or None."""
        ts = self._series[symbol].ts
        k = int(np.searchsorted(ts, t_ns))
        return k if k < len(ts) and ts[k] == t_ns else None

    def cols(self, symbol: str) -> list[str]:
        """The columns held for `symbol` (open, high, low, close, and volume, funding_rate when known)."""
        return list(self._series[symbol].cols)

    def column(self, symbol: str, name: str) -> np.ndarray:
        """One column of every bar held."""
        return self._series[symbol].cols[name]

    def times(self, symbol: str) -> np.ndarray:
        """Open times (ns) of every bar held."""
        return self._series[symbol].ts
