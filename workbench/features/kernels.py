"""Rolling kernels for features: numba, one pass over the bars, causal (bar t uses bars <= t).

A value needs a full window of finite inputs; otherwise it is NaN. Sums slide with the window in
O(1) per bar and are recomputed exactly every `REANCHOR` bars (or once per window, if longer), so
rounding does not drift over a year of minute bars.
"""

from __future__ import annotations

import numba
import numpy as np

REANCHOR = 1024  # bars between exact recomputations of a sliding sum (drift stays ~1e-13)


@numba.njit(cache=True, nogil=True)
def _rolling_mean_nb(a: np.ndarray, n: int, out: np.ndarray) -> None:
    out[:] = np.nan
    s = 0.0
    run = 0  # finite values in a row, up to this bar
    every = max(n, REANCHOR)
    phase = every - 1  # i mod every, kept by counting (a division per bar costs more than the mean)
    for i in range(a.shape[0]):
        phase = 0 if phase == every - 1 else phase + 1
        x = a[i]
        if not np.isfinite(x):
            run = 0
            s = 0.0
            continue
        run += 1
        s += x
        if run > n:
            s -= a[i - n]
        if run >= n:
            if phase == 0:  # re-anchor: an exact sum of the window
                s = 0.0
                for k in range(i - n + 1, i + 1):
                    s += a[k]
            out[i] = s / n


@numba.njit(cache=True, nogil=True)
def _rolling_spread_nb(a: np.ndarray, n: int, out: np.ndarray, zscore: bool) -> None:
    # The window's sums of values less a reference (its mean when last recomputed), slid along and
    # recomputed exactly every max(n, REANCHOR) bars: neither cancellation nor drift builds up.
    # Writes the sample standard deviation, or with `zscore` the bar's (x - mean) / std.
    out[:] = np.nan
    if n < 2:
        return
    every = max(n, REANCHOR)
    inv_n, inv_n1 = 1.0 / n, 1.0 / (n - 1)
    run = 0
    since = 0
    ref = 0.0
    s1 = 0.0
    s2 = 0.0
    for i in range(a.shape[0]):
        x = a[i]
        if not np.isfinite(x):
            run = 0
            continue
        run += 1
        if run < n:
            continue
        if run == n or since >= every:
            ref = 0.0
            for k in range(i - n + 1, i + 1):
                ref += a[k]
            ref *= inv_n
            s1 = 0.0
            s2 = 0.0
            for k in range(i - n + 1, i + 1):
                d = a[k] - ref
                s1 += d
                s2 += d * d
            since = 0
        else:
            d_new = x - ref
            d_old = a[i - n] - ref
            s1 += d_new - d_old
            s2 += d_new * d_new - d_old * d_old
            since += 1
        var = (s2 - s1 * s1 * inv_n) * inv_n1
        if zscore:
            if var > 0.0:
                out[i] = (x - (ref + s1 * inv_n)) / np.sqrt(var)
        else:
            out[i] = np.sqrt(var) if var > 0.0 else 0.0


@numba.njit(cache=True, nogil=True)
def _range_position_nb(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int, out: np.ndarray) -> None:
    # van Herk / Gil-Werman: in blocks of n bars, the running max (min) from each block's start and
    # from its end; a window of n bars spans at most two blocks, so its max is the max of the
    # current block's running max and the previous block's from-the-end one at the window's
    # start. Only two blocks' from-the-end values are kept (no array as long as the bars: large
    # allocations inside numba are faulted in page by page and cost more than the scan).
    size = close.shape[0]
    out[:] = np.nan
    hb = np.empty((2, n))  # from-the-end max of the previous block [0] and of this one [1]
    lb = np.empty((2, n))
    last_bad = -1
    for b in range(0, size, n):
        e = min(b + n, size)
        hb[0, :], lb[0, :] = hb[1, :], lb[1, :]
        top, bottom = -np.inf, np.inf
        for i in range(e - 1, b - 1, -1):
            top, bottom = max(top, high[i]), min(bottom, low[i])
            hb[1, i - b], lb[1, i - b] = top, bottom
        top, bottom = -np.inf, np.inf
        for i in range(b, e):
            h, lo = high[i], low[i]
            top, bottom = max(top, h), min(bottom, lo)
            if not (np.isfinite(h) and np.isfinite(lo)):
                last_bad = i
                continue
            if i - last_bad < n or not np.isfinite(close[i]):
                continue
            j = i - n + 1  # the window's first bar: in the previous block unless i ends this one
            hi_w, lo_w = top, bottom
            if j < b:
                hi_w, lo_w = max(hb[0, j - b + n], top), min(lb[0, j - b + n], bottom)
            width = hi_w - lo_w
            out[i] = 2.0 * (close[i] - lo_w) / width - 1.0 if width > 0 else 0.0


@numba.njit(cache=True, nogil=True)
def _log_ratio_nb(a: np.ndarray, b: np.ndarray, eps: float, out: np.ndarray) -> None:
    for i in range(a.shape[0]):
        out[i] = np.log((a[i] + eps) / (b[i] + eps))


@numba.njit(cache=True, nogil=True)
def _calendar_lookup_nb(ts_ns: np.ndarray, unit_ns: int, period: int, shift: int, table: np.ndarray,
                        out: np.ndarray) -> None:
    # the day and the minute are the two units asked for: written as constants, LLVM divides by
    # multiplying (a division by a variable costs some forty cycles)
    if unit_ns == 60_000_000_000 and period == 1440:
        for i in range(ts_ns.shape[0]):
            out[i] = table[((ts_ns[i] // 60_000_000_000 + shift) % 1440)]
    elif unit_ns == 86_400_000_000_000 and period == 7:
        for i in range(ts_ns.shape[0]):
            out[i] = table[((ts_ns[i] // 86_400_000_000_000 + shift) % 7)]
    else:
        for i in range(ts_ns.shape[0]):
            out[i] = table[(ts_ns[i] // unit_ns + shift) % period]


@numba.njit(cache=True, nogil=True)
def _rolling_rank_nb(a: np.ndarray, n: int, out: np.ndarray) -> None:
    out[:] = np.nan
    for i in range(n - 1, a.shape[0]):
        x = a[i]
        if not np.isfinite(x):
            continue
        below = 0.0
        ok = True
        for k in range(i - n + 1, i):
            y = a[k]
            if not np.isfinite(y):
                ok = False
                break
            if y < x:
                below += 1.0
            elif y == x:
                below += 0.5
        if ok:
            out[i] = below / (n - 1) if n > 1 else 0.5


@numba.njit(cache=True, nogil=True)
def finite_into(src: np.ndarray, dst: np.ndarray) -> None:
    """Copy `src` into `dst` with every infinity made NaN (one pass)."""
    for i in range(src.shape[0]):
        x = src[i]
        dst[i] = x if np.isfinite(x) else np.nan


@numba.njit(cache=True, nogil=True)
def _gap_nb(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    for i in range(a.shape[0]):
        x = a[i] / b[i] - 1.0
        out[i] = x if np.isfinite(x) else np.nan


@numba.njit(cache=True, nogil=True)
def _ratio_nb(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    for i in range(a.shape[0]):
        x = a[i] / b[i]
        out[i] = x if np.isfinite(x) else np.nan


def ratio(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a / b in one pass, NaN where that is not finite. (Into `out` when given.)"""
    out = np.empty(a.shape[0]) if out is None else out
    _ratio_nb(a, b, out)
    return out


def gap(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a / b - 1 in one pass, NaN where that is not finite. (Into `out` when given.)"""
    out = np.empty(a.shape[0]) if out is None else out
    _gap_nb(a, b, out)
    return out


def rolling_mean(a: np.ndarray, n: int, out: np.ndarray | None = None) -> np.ndarray:
    """Mean of the last `n` values (NaN until n finite values in a row). (Into `out` when given.)"""
    out = np.empty(a.shape[0]) if out is None else out
    _rolling_mean_nb(a, n, out)
    return out


def rolling_std(a: np.ndarray, n: int, out: np.ndarray | None = None) -> np.ndarray:
    """Sample standard deviation (ddof=1) of the last `n` values, in one pass: sums of the values
    less a reference (the window's mean), updated as the window slides and recomputed exactly
    every `n` bars, so neither cancellation nor drift builds up. (Into `out` when given.)"""
    out = np.empty(a.shape[0]) if out is None else out
    _rolling_spread_nb(a, n, out, False)
    return out


def rolling_zscore(a: np.ndarray, n: int, out: np.ndarray | None = None) -> np.ndarray:
    """(x - mean) / std (ddof=1) over the last `n` values, this one included; NaN on a flat window.
    One pass: the window's mean and spread come from the same shifted sums as `rolling_std`.
    (Into `out` when given.)"""
    out = np.empty(a.shape[0]) if out is None else out
    _rolling_spread_nb(a, n, out, True)
    return out


def rolling_rank(a: np.ndarray, n: int, out: np.ndarray | None = None) -> np.ndarray:
    """Where the value stands in its last `n` values, in [0, 1]: the share of the other values
    below it, ties counted half (0.5 when all are equal). (Into `out` when given.)"""
    out = np.empty(a.shape[0]) if out is None else out
    _rolling_rank_nb(a, n, out)
    return out


def range_position(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Where the close sits in the range of the last `n` bars' highs and lows, in [-1, 1] (0 on a
    flat range): the highest high and lowest low by van Herk / Gil-Werman. (Into `out` if given.)"""
    out = np.empty(close.shape[0]) if out is None else out
    _range_position_nb(high, low, close, n, out)
    return out


def log_ratio(a: np.ndarray, b: np.ndarray, eps: float, out: np.ndarray | None = None) -> np.ndarray:
    """log((a + eps) / (b + eps)) in one pass (NaN where either is NaN). (Into `out` when given.)"""
    out = np.empty(a.shape[0]) if out is None else out
    _log_ratio_nb(a, b, eps, out)
    return out


def calendar_lookup(ts_ns: np.ndarray, unit_ns: int, period: int, shift: int,
                    table: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``table[(ts // unit + shift) mod period]``: a bar's place on a daily or weekly circle, looked
    up. (Into `out` when given.)"""
    out = np.empty(ts_ns.shape[0]) if out is None else out
    _calendar_lookup_nb(ts_ns, unit_ns, period, shift, table, out)
    return out


__all__ = ["calendar_lookup", "finite_into", "gap", "log_ratio", "range_position", "ratio", "rolling_mean",
           "rolling_rank", "rolling_std", "rolling_zscore"]
