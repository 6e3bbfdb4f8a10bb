"""Rolling kernels for features: numba, one pass over the bars, causal (bar t uses bars <= t).

A value needs a full window of finite inputs; otherwise it is NaN. Sums slide with the window in
O(1) per bar and are recomputed exactly once per window, so rounding does not drift over a year of
minute bars.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def rolling_mean(a: np.ndarray, n: int) -> np.ndarray:
    """Mean of the last `n` values (NaN until n finite values in a row)."""
    out = np.full(a.shape[0], np.nan)
    s = 0.0
    run = 0  # finite values in a row, up to this bar
    for i in range(a.shape[0]):
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
            if (i % n) == 0:  # re-anchor: an exact sum of the window
                s = 0.0
                for k in range(i - n + 1, i + 1):
                    s += a[k]
            out[i] = s / n
    return out


@numba.njit(cache=True, nogil=True)
def rolling_std(a: np.ndarray, n: int) -> np.ndarray:
    """Sample standard deviation (ddof=1) of the last `n` values, in one pass: sums of the values
    less a reference (the window's mean), updated as the window slides and recomputed exactly
    every `n` bars, so neither cancellation nor drift builds up."""
    out = np.full(a.shape[0], np.nan)
    if n < 2:
        return out
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
        if run == n or since >= n:  # exact: a new reference and fresh sums over the window
            ref = 0.0
            for k in range(i - n + 1, i + 1):
                ref += a[k]
            ref /= n
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
        var = (s2 - s1 * s1 / n) / (n - 1)
        out[i] = np.sqrt(var) if var > 0.0 else 0.0
    return out


@numba.njit(cache=True, nogil=True)
def rolling_zscore(a: np.ndarray, n: int) -> np.ndarray:
    """(x - mean) / std over the last `n` values, this one included; NaN on a flat window."""
    mean = rolling_mean(a, n)
    std = rolling_std(a, n)
    out = np.full(a.shape[0], np.nan)
    for i in range(a.shape[0]):
        if np.isfinite(std[i]) and std[i] > 0:
            out[i] = (a[i] - mean[i]) / std[i]
    return out


@numba.njit(cache=True, nogil=True)
def rolling_rank(a: np.ndarray, n: int) -> np.ndarray:
    """Where the value stands in its last `n` values, in [0, 1]: the share of the other values
    below it, ties counted half (0.5 when all are equal)."""
    out = np.full(a.shape[0], np.nan)
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
    return out


@numba.njit(cache=True, nogil=True)
def finite_into(src: np.ndarray, dst: np.ndarray) -> None:
    """Copy `src` into `dst` with every infinity made NaN (one pass)."""
    for i in range(src.shape[0]):
        x = src[i]
        dst[i] = x if np.isfinite(x) else np.nan


__all__ = ["finite_into", "rolling_mean", "rolling_rank", "rolling_std", "rolling_zscore"]
