"""Rolling kernels for features: numba, one pass over the bars, causal (bar t uses bars <= t).

A value needs a full window of finite inputs; otherwise it is NaN. Sums are re-anchored every
window so rounding does not drift over a year of minute bars.
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
    """Sample standard deviation (ddof=1) of the last `n` values, by Welford's update."""
    out = np.full(a.shape[0], np.nan)
    for i in range(n - 1, a.shape[0]):
        mean = 0.0
        m2 = 0.0
        ok = True
        for k in range(n):
            x = a[i - n + 1 + k]
            if not np.isfinite(x):
                ok = False
                break
            d = x - mean
            mean += d / (k + 1)
            m2 += d * (x - mean)
        if ok and n > 1:
            out[i] = np.sqrt(max(m2, 0.0) / (n - 1))
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


__all__ = ["rolling_mean", "rolling_rank", "rolling_std", "rolling_zscore"]
