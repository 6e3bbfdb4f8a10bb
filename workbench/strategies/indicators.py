"""Vectorized indicators for strategies: numpy in, numpy out, causal (bar t uses bars <= t only).

Inside `indicator_cache()` (which sweeps open) each indicator is computed once per input array
and arguments, so a 500-combination grid over two moving-average windows computes each window
once instead of 500 times. Values before an indicator has enough bars are NaN.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numba
import numpy as np
import pandas as pd

_CACHE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("indicator_cache", default=None)


@contextmanager
def indicator_cache() -> Iterator[dict]:
    """Memoize indicators for the duration of the block (inputs must stay alive and unchanged)."""
    cache: dict = {}
    token = _CACHE.set(cache)
    try:
        yield cache
    finally:
        _CACHE.reset(token)


def _arr(x: Any) -> np.ndarray:
    if isinstance(x, pd.Series):
        x = x.to_numpy()
    return np.asarray(x, dtype=np.float64)


def _key(arr: np.ndarray) -> tuple:
    return (arr.__array_interface__["data"][0], arr.shape, arr.strides)


def _cached(name: str, inputs: tuple[np.ndarray, ...], args: tuple, compute: Callable[[], Any]) -> Any:
    cache = _CACHE.get()
    if cache is None:
        return compute()
    key = (name, *(_key(a) for a in inputs), args)
    if key not in cache:
        cache[key] = compute()
        # keep the inputs alive: a freed temporary's address could be reused by another array
        cache.setdefault("_inputs", []).extend(inputs)
    return cache[key]


def _check_window(n: int, name: str = "window") -> int:
    if int(n) != n or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def _out(a: np.ndarray) -> np.ndarray:
    """A kernel's output array, allocated by numpy (which asks the OS for huge pages on large ones)
    rather than inside numba, whose allocations are faulted in 4 KB at a time: on a year of minute
    bars that was most of an indicator's time."""
    return np.empty(a.shape[0])


def sma(x: Any, n: int) -> np.ndarray:
    """Simple moving average over n bars (cumulative-sum form, re-anchored to bound rounding)."""
    a, n = _arr(x), _check_window(n)
    return _cached("sma", (a,), (n,), lambda: _sma_nb(a, n, _out(a)))


@numba.njit(cache=True, nogil=True)
def _sma_nb(a: np.ndarray, n: int, out: np.ndarray) -> np.ndarray:
    m = a.shape[0]
    out[: min(n - 1, m)] = np.nan
    if m < n:
        return out
    s = 0.0
    for k in range(n):
        s += a[k]
    out[n - 1] = s / n
    resum = 65536 - n % 65536  # bars until the next exact re-sum (so drift never accumulates)
    for i in range(n, m):
        s += a[i] - a[i - n]  # one addition on the running sum per bar (the difference is off its chain)
        resum -= 1
        if resum == 0:
            resum = 65536
            s = 0.0
            for k in range(i - n + 1, i + 1):
                s += a[k]
        out[i] = s / n
    return out


def ema(x: Any, n: int) -> np.ndarray:
    """Exponential moving average with alpha 2/(n+1), seeded by the SMA of the first n bars."""
    a, n = _arr(x), _check_window(n)
    return _cached("ema", (a,), (n,), lambda: _ema_nb(a, n, 2.0 / (n + 1.0), _out(a)))


def wilder(x: Any, n: int) -> np.ndarray:
    """Wilder's smoothing (alpha 1/n), seeded by the SMA of the first n values; used by RSI/ATR/ADX."""
    a, n = _arr(x), _check_window(n)
    return _cached("wilder", (a,), (n,), lambda: _ema_nb(a, n, 1.0 / n, _out(a)))


@numba.njit(cache=True, nogil=True)
def _ema_nb(a: np.ndarray, n: int, alpha: float, out: np.ndarray) -> np.ndarray:
    out[:] = np.nan
    start = 0
    while start < a.shape[0] and np.isnan(a[start]):
        start += 1
    if start + n > a.shape[0]:
        return out
    s = 0.0
    for k in range(start, start + n):
        s += a[k]
    prev = s / n
    out[start + n - 1] = prev
    for i in range(start + n, a.shape[0]):
        prev = prev + alpha * (a[i] - prev)
        out[i] = prev
    return out


def rolling_std(x: Any, n: int) -> np.ndarray:
    """Rolling sample standard deviation (ddof=1) over n bars."""
    a, n = _arr(x), _check_window(n)
    return _cached("std", (a,), (n,), lambda: pd.Series(a).rolling(n).std().to_numpy())


def rolling_max(x: Any, n: int) -> np.ndarray:
    """Highest value of the last n bars, this bar included (NaN while fewer than n, or with a NaN
    among them: pandas' ``rolling(n).max()``)."""
    a, n = _arr(x), _check_window(n)
    return _cached("max", (a,), (n,), lambda: _rolling_extreme_nb(a, n, True, _out(a)))


def rolling_min(x: Any, n: int) -> np.ndarray:
    """Lowest value of the last n bars, this bar included (as `rolling_max`)."""
    a, n = _arr(x), _check_window(n)
    return _cached("min", (a,), (n,), lambda: _rolling_extreme_nb(a, n, False, _out(a)))


@numba.njit(cache=True, nogil=True)
def _rolling_extreme_nb(a: np.ndarray, n: int, high: bool, out: np.ndarray) -> np.ndarray:
    """O(len) rolling max (or min) with a monotonic queue of positions, kept in a ring."""
    size = a.shape[0]
    out[:] = np.nan
    cap = 1
    while cap < n:  # a power of two: a ring index is a mask, not a division
        cap *= 2
    m = cap - 1
    queue = np.empty(cap, dtype=np.int64)  # positions [head, tail) & m, values decreasing (max)
    head, tail = 0, 0
    last_nan = -1
    for i in range(size):
        v = a[i]
        if np.isnan(v):
            last_nan = i
            head, tail = 0, 0
        else:
            while tail > head and queue[head & m] <= i - n:  # out of the window: at most n - 1 left
                head += 1
            while tail > head:
                last = a[queue[(tail - 1) & m]]
                if (last > v) if high else (last < v):
                    break
                tail -= 1
            queue[tail & m] = i
            tail += 1
        if i >= n - 1 and i - last_nan >= n:
            out[i] = a[queue[head & m]]
    return out


def true_range(high: Any, low: Any, close: Any) -> np.ndarray:
    """True range: the bar's range extended to the previous close."""
    h, lo, c = _arr(high), _arr(low), _arr(close)

    return _cached("tr", (h, lo, c), (), lambda: _true_range_nb(h, lo, c, _out(c)))


@numba.njit(cache=True, nogil=True)
def _true_range_nb(h: np.ndarray, lo: np.ndarray, c: np.ndarray, out: np.ndarray) -> np.ndarray:
    """max(high - low, |high - prev close|, |low - prev close|), NaNs skipped as np.fmax does; the
    first bar's is its range."""
    if c.shape[0]:
        out[0] = h[0] - lo[0]
    for i in range(1, c.shape[0]):
        best = h[i] - lo[i]
        for v in (abs(h[i] - c[i - 1]), abs(lo[i] - c[i - 1])):
            if np.isnan(best) or v > best:
                best = v if not np.isnan(v) or np.isnan(best) else best
        out[i] = best
    return out


def atr(high: Any, low: Any, close: Any, n: int = 14) -> np.ndarray:
    """Average true range (Wilder)."""
    n = _check_window(n)
    h, lo, c = _arr(high), _arr(low), _arr(close)
    return _cached("atr", (h, lo, c), (n,), lambda: wilder(true_range(h, lo, c), n))


def rsi(x: Any, n: int = 14) -> np.ndarray:
    """Relative strength index (Wilder), 0..100."""
    a, n = _arr(x), _check_window(n)

    return _cached("rsi", (a,), (n,), lambda: _rsi_nb(a, n, _out(a)))


@numba.njit(cache=True, nogil=True)
def _rsi_nb(a: np.ndarray, n: int, out: np.ndarray) -> np.ndarray:
    """RSI in one pass and no temporaries: each bar's gain and loss, Wilder-smoothed exactly as
    `wilder` does (seeded by the mean of the first n from the first non-NaN change, NaN for good
    after a later NaN), 100 with no loss, 50 with neither."""
    size = a.shape[0]
    out[:] = np.nan
    start = 1
    while start < size and np.isnan(a[start] - a[start - 1]):
        start += 1
    if start + n > size:
        return out
    su = 0.0
    sd = 0.0
    for i in range(start, start + n):
        d = a[i] - a[i - 1]
        su += max(d, 0.0) if not np.isnan(d) else d
        sd += max(-d, 0.0) if not np.isnan(d) else d
    alpha = 1.0 / n
    u = su / n
    w = sd / n
    for i in range(start + n - 1, size):
        if i >= start + n:
            d = a[i] - a[i - 1]
            up = max(d, 0.0) if not np.isnan(d) else d
            down = max(-d, 0.0) if not np.isnan(d) else d
            u = u + alpha * (up - u)
            w = w + alpha * (down - w)
        if w == 0.0 and u > 0.0:
            out[i] = 100.0
        elif w == 0.0 and u == 0.0:
            out[i] = 50.0
        else:
            out[i] = 100.0 - 100.0 / (1.0 + u / w)
    return out


def macd(x: Any, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """MACD line (EMA fast - EMA slow) and its signal line (EMA of the MACD)."""
    a = _arr(x)

    def compute() -> tuple[np.ndarray, np.ndarray]:
        line = ema(a, fast) - ema(a, slow)
        return line, _ema_nb(line, _check_window(signal), 2.0 / (signal + 1.0), _out(line))

    return _cached("macd", (a,), (fast, slow, signal), compute)


def bollinger(x: Any, n: int = 20, k: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bollinger bands: (lower, middle, upper) at k sample standard deviations around the SMA."""
    a = _arr(x)
    mid = sma(a, n)
    sd = rolling_std(a, n)
    return mid - k * sd, mid, mid + k * sd


def adx(high: Any, low: Any, close: Any, n: int = 14) -> np.ndarray:
    """Average directional index (Wilder): trend strength 0..100, whatever its direction."""
    h, lo, c = _arr(high), _arr(low), _arr(close)

    def compute() -> np.ndarray:
        up = np.diff(h, prepend=np.nan)
        down = -np.diff(lo, prepend=np.nan)
        plus_dm = np.where((up > down) & (up > 0), up, 0.0)
        minus_dm = np.where((down > up) & (down > 0), down, 0.0)
        plus_dm[0] = minus_dm[0] = np.nan
        tr = true_range(h, lo, c).copy()
        tr[0] = np.nan
        atr_ = wilder(tr, n)
        with np.errstate(divide="ignore", invalid="ignore"):
            plus_di = 100 * wilder(plus_dm, n) / atr_
            minus_di = 100 * wilder(minus_dm, n) / atr_
            dx = 100 * np.abs(plus_di - minus_di) / (plus_di + minus_di)
        dx = np.where(np.isfinite(dx), dx, np.where(np.isnan(atr_), np.nan, 0.0))
        return wilder(dx, n)

    return _cached("adx", (h, lo, c), (n,), compute)


def log_returns(x: Any) -> np.ndarray:
    """Bar-to-bar log returns (NaN on the first bar)."""
    a = _arr(x)
    return _cached("logret", (a,), (), lambda: np.diff(np.log(a), prepend=np.nan))


def crossed_above(a: Any, b: Any) -> np.ndarray:
    """True on the bar where `a` goes from at-or-below `b` to strictly above it.

    Equality counts as "not above", so touching and leaving again is not a cross; bars where
    either side is NaN never cross. Written out once because engines disagree on exactly this.
    """
    x = _arr(a)
    y = np.ascontiguousarray(np.broadcast_to(_arr(b), x.shape))
    return _cross_nb(x, y, True)


def crossed_below(a: Any, b: Any) -> np.ndarray:
    """True on the bar where `a` goes from at-or-above `b` to strictly below it."""
    x = _arr(a)
    y = np.ascontiguousarray(np.broadcast_to(_arr(b), x.shape))
    return _cross_nb(x, y, False)


def crosses(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """`crossed_above(a, b)` and `crossed_below(a, b)` in one pass over the two series (a sweep
    computes them for every combination)."""
    x = _arr(a)
    y = np.ascontiguousarray(np.broadcast_to(_arr(b), x.shape))
    return _cross2_nb(x, y)


@numba.njit(cache=True, nogil=True)
def _cross2_nb(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # branchless (the CPU vectorises it): an ordered comparison is False when either side is NaN, so
    # `x1 > y1 and x0 <= y0` is `_cross_nb`'s rule (all four defined, above now and not above before)
    n = x.shape[0]
    up = np.empty(n, dtype=np.bool_)
    down = np.empty(n, dtype=np.bool_)
    if n == 0:
        return up, down
    up[0] = False
    down[0] = False
    for i in range(1, n):
        x0, y0, x1, y1 = x[i - 1], y[i - 1], x[i], y[i]
        up[i] = (x1 > y1) & (x0 <= y0)
        down[i] = (x1 < y1) & (x0 >= y0)
    return up, down


@numba.njit(cache=True, nogil=True)
def _cross_nb(x: np.ndarray, y: np.ndarray, up: bool) -> np.ndarray:
    out = np.zeros(x.shape[0], dtype=np.bool_)
    for i in range(1, x.shape[0]):
        x0, y0, x1, y1 = x[i - 1], y[i - 1], x[i], y[i]
        if np.isnan(x0) or np.isnan(y0) or np.isnan(x1) or np.isnan(y1):
            continue
        out[i] = (x1 > y1 and not x0 > y0) if up else (x1 < y1 and not x0 < y0)
    return out
