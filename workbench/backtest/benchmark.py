"""Benchmarks for any backtest: a symbol's bars or a custom price series as an equity curve on the
strategy's bars, scaled like the strategy's (`init_cash` at the start), for `compute_metrics`'s
benchmark return, alpha, beta, tracking error and information ratio (a target-weight book:
`holdings.rebalance_metrics(result, frames, benchmark=...)`).

The price at an equity bar is the last price at or before that bar's time (carried forward, never
looked up ahead); bars are stamped at their open and valued at their close on both sides, so a
benchmark's bars must not be coarser than the strategy's (a daily close is not known during the day).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from workbench.errors import ConfigError, DataError, did_you_mean


def benchmark_equity(equity: pd.Series, benchmark: str | pd.Series | pd.DataFrame, *, init_cash: float,
                     frames: Mapping[str, pd.DataFrame] | None = None) -> pd.Series:
    """The benchmark's equity on `equity`'s index: ``init_cash * price / price at the first bar``.

    `benchmark`: a symbol of `frames` (its closes), a bar frame (its ``close``), or a custom price
    Series (a DatetimeIndex of the times each price was known). A series that starts after the
    equity's first bar, or whose last price is older at the equity's last bar than its own longest
    gap (it stopped), does not cover the span and is refused."""
    if not isinstance(equity.index, pd.DatetimeIndex) or not len(equity):
        raise ConfigError("the equity needs a non-empty DatetimeIndex to align a benchmark to: pass "
                          "the result's equity Series")
    bars = not isinstance(benchmark, pd.Series)
    if isinstance(benchmark, str):
        names = list(frames or {})
        if benchmark not in names:
            raise ConfigError(f"unknown benchmark symbol {benchmark!r}{did_you_mean(benchmark, names)}: name "
                              f"one of the bars given ({', '.join(names) or 'none'}) or pass its bar frame "
                              "(load_bars(lake, symbol, timeframe))")
        frame = (frames or {})[benchmark]
        label = benchmark
    elif isinstance(benchmark, pd.DataFrame):
        frame, label = benchmark, str(benchmark.attrs.get("symbol", "the benchmark"))
    elif isinstance(benchmark, pd.Series):
        frame, label = None, "the benchmark series" if benchmark.name is None else str(benchmark.name)
    else:
        raise ConfigError(f"benchmark must be a symbol, a bar frame or a price Series, got "
                          f"{type(benchmark).__name__}")
    if frame is not None and "close" not in frame.columns:
        raise ConfigError(f"bars of {label} have no close column: pass a bar frame or a price Series")
    price = (frame["close"] if frame is not None else pd.Series(benchmark)).astype(float).dropna()
    if not isinstance(price.index, pd.DatetimeIndex):
        raise ConfigError(f"{label} needs a DatetimeIndex (the time of each price) to be aligned")
    if (price.index.tz is None) != (equity.index.tz is None):
        raise ConfigError(f"{label} and the equity disagree on time zones (one is naive): make both UTC")
    if price.index.tz is not None:
        price.index = price.index.tz_convert(equity.index.tz)
    if not price.index.is_monotonic_increasing or price.index.has_duplicates:
        raise DataError(f"{label} must have sorted, unique timestamps: sort it and drop duplicates")
    first, last = equity.index[0], equity.index[-1]
    if not len(price) or price.index[0] > first:
        start = price.index[0] if len(price) else "nowhere"
        raise DataError(f"{label} starts at {start}, after the equity's first bar {first}: it does not "
                        "cover the span; load a longer series or start the backtest later")
    steps = price.index[1:] - price.index[:-1]
    gap = steps.max() if len(steps) else pd.Timedelta(0)
    if price.index[-1] + gap < last:
        raise DataError(f"{label} ends at {price.index[-1]}, before the equity's last bar {last}: it does "
                        "not cover the span; load a longer series or end the backtest earlier")
    eq_steps = equity.index[1:] - equity.index[:-1]
    if bars and len(steps) and len(eq_steps) and steps.min() > eq_steps.min():
        every, theirs = steps.min(), eq_steps.min()
        raise ConfigError(f"bars of {label} are every {every}, coarser than the equity's {theirs}: their "
                          "close is not known at the strategy's bars; load them at the strategy's timeframe")
    at = price.reindex(equity.index, method="ffill").to_numpy(dtype=float)
    if not at[0] > 0:
        raise DataError(f"{label} is {at[0]} at the equity's first bar: a benchmark needs a positive price")
    return pd.Series(float(init_cash) * at / at[0], index=equity.index, name="benchmark")


__all__ = ["benchmark_equity"]
