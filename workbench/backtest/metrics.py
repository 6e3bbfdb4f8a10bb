"""Performance metrics of backtests and sweeps, annualised with the market's real calendar.

Definitions follow vectorbt 1.2 (`vectorbt.returns.nb`, `Drawdowns`, `Trades`) so numbers agree with
vectorbt's own accessors; the numba kernels make allocation-free passes for the sweep path.

Per-bar returns are simple returns of the equity ``value`` with the first one taken against
``init_cash`` (``r[0] = value[0] / init_cash - 1``); vectorbt's ``get_return_nb`` rules apply
(a zero previous value gives ``0`` or ``±inf``; a negative previous value flips the sign). With
``n = len(value)`` and ``ppy`` the periods per year:

- ``total_return = value[-1] / init_cash - 1``.
- ``annual_return = prod(1 + r) ** (ppy / n) - 1`` (vectorbt's CAGR; equal to
  ``(value[-1] / init_cash) ** (ppy / n) - 1`` while equity stays positive). NaN when ``n == 0``.
- ``annual_volatility = std(r, ddof=1) * ppy ** 0.5``; NaN when ``n < 2``.
- ``sharpe = mean(r) / std(r, ddof=1) * sqrt(ppy)`` (risk-free 0); NaN when ``n < 2`` and **NaN
  when the standard deviation is 0** (constant returns, a flat equity that never traded included):
  such a curve has no Sharpe. vectorbt returns +inf there, which let a run without trades top a
  ranking and pass a Sharpe gate; `na_reason` says why a value is NaN ("no trades", ...).
- ``sortino = mean(r) * ppy / (sqrt(mean(min(r, 0) ** 2)) * sqrt(ppy))``: the downside deviation
  averages the squared negative returns over **all** bars (not only the losing ones), as vectorbt
  does; NaN when ``n < 2`` and NaN when the downside deviation is 0 (vectorbt: +inf), like calmar
  without a drawdown: a ratio over a zero denominator is undefined, never infinite.
- ``max_drawdown = min(value / running_max(value) - 1)`` (a negative fraction, 0 without a
  drawdown). The first peak is ``value[0]``: ``init_cash`` is not a peak (vectorbt's convention).
  vectorbt's ReturnsAccessor scans the compounded returns instead of the values: the same numbers
  up to rounding while equity stays positive, but exact recoveries are not lost to rounding here.
- ``max_drawdown_duration``: vectorbt's drawdown duration, the number of bars spent **below** the
  peak: ``recovery_idx - peak_idx - 1`` for a drawdown that recovered (the value got back to at
  least the peak), ``last_idx - peak_idx`` for one still running at the end. The longest one counts
  (the first on ties). A run of equal values moves the peak to its last bar, as in vectorbt.
- ``calmar = annual_return / abs(max_drawdown)``; NaN when there is no drawdown.

Against a benchmark equity ``B`` (scaled like the strategy's, its returns ``b`` taken the same way,
``a = r - b`` the active return; bars where either return is undefined are left out):

- ``beta`` and ``alpha``: the OLS fit ``r = alpha_bar + beta * b``; ``alpha = alpha_bar * ppy``
  (annualised arithmetically, like an annual mean). NaN when ``b`` is constant (no slope to fit).
- ``tracking_error = std(a, ddof=1) * sqrt(ppy)``; ``information_ratio = mean(a) * ppy /
  tracking_error``. NaN when ``a`` is constant (the benchmark is the strategy: no tracking error).

``periods_per_year`` is ``365 days / bar`` on ``24/7`` and the mean count of expected bars per year
over 2015-2024 on an exchange calendar (XNYS: 251.6 a day; 1755.2 an hour, since hourly bars are
UTC-hour buckets and a full session touches 7 of them; 97764 a minute).

NaN values are skipped the way vectorbt skips them (nan-aware means and products; NaN bars are
ignored by the drawdown scan); a backtest's equity never contains NaN.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numba
import numpy as np
import pandas as pd

from workbench.data.calendar import ALWAYS_OPEN, Calendar
from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError

# Calendar years whose expected bars define an exchange's average year (2015-01-01 .. 2024-12-31).
REFERENCE_YEARS = (2015, 2024)

METRIC_KEYS = (
    "total_return",
    "annual_return",
    "annual_volatility",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "max_drawdown_duration",
    "max_drawdown_days",
    "win_rate",
    "profit_factor",
    "expectancy",
    "avg_win",
    "avg_loss",
    "best_trade",
    "worst_trade",
    "n_trades",
    "n_open_trades",
    "exposure",
    "avg_gross_exposure",
    "turnover",
    "benchmark_return",
    "excess_return",
    "alpha",
    "beta",
    "tracking_error",
    "information_ratio",
)
# what a benchmark adds beyond its return: per-bar statistics of the strategy against it
BENCHMARK_KEYS = ("alpha", "beta", "tracking_error", "information_ratio")

EQUITY_KEYS = (
    "total_return",
    "annual_return",
    "annual_volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "max_drawdown_duration",
    "calmar",
)
TRADE_KEYS = (
    "n_trades",
    "win_rate",
    "profit_factor",
    "expectancy",
    "avg_win",
    "avg_loss",
    "best_trade",
    "worst_trade",
)


# ------------------------------------------------------------------------------------ annualisation
def periods_per_year(timeframe: str | Timeframe, calendar: str) -> float:
    """Bars per year for a timeframe on a calendar, the annualisation factor of every ratio here."""
    tf = Timeframe.parse(timeframe)
    if not isinstance(calendar, str) or not calendar.strip():
        raise ConfigError(
            f"unknown market calendar {calendar!r}: use {ALWAYS_OPEN!r} or an exchange code like 'XNYS'"
        )
    return _periods_per_year(tf.seconds, calendar.strip())


@functools.lru_cache(maxsize=64)
def _periods_per_year(seconds: int, calendar: str) -> float:
    """Cached core of `periods_per_year`: 24/7 by arithmetic, exchanges by counting expected bars."""
    if calendar == ALWAYS_OPEN:
        return 365 * 86400 / seconds
    first, last = REFERENCE_YEARS
    start = pd.Timestamp(f"{first}-01-01", tz="UTC")
    end = pd.Timestamp(f"{last + 1}-01-01", tz="UTC") - pd.Timedelta(microseconds=1)
    bars = Calendar(calendar).expected(start, end, Timeframe(seconds))
    if len(bars) == 0:
        raise ConfigError(
            f"market calendar {calendar!r} has no sessions in {first}-{last}: use {ALWAYS_OPEN!r} "
            "or an exchange code that covers those years, e.g. 'XNYS'"
        )
    return len(bars) / (last - first + 1)


# ------------------------------------------------------------------------------------ numba kernels
@numba.njit(cache=True, error_model="numpy")
def bar_return_nb(prev: float, cur: float) -> float:
    """Simple return from `prev` to `cur` with vectorbt's rules for zero and negative bases."""
    if prev == 0.0:
        if cur == 0.0:
            return 0.0
        return np.inf * np.sign(cur)
    out = (cur - prev) / prev
    if prev < 0.0:
        out = -out
    return out


@numba.njit(cache=True, error_model="numpy")
def drawdown_nb(value: np.ndarray) -> tuple[float, int, int, int]:
    """Max drawdown, its longest duration in bars under water, and that drawdown's peak/end bars."""
    n = value.shape[0]
    last = n - 1
    while last >= 0 and np.isnan(value[last]):
        last -= 1
    max_dd = 0.0 if last >= 0 else np.nan
    best_dur = 0
    best_peak = -1
    best_end = -1
    peak_val = np.nan
    peak_idx = -1
    in_dd = False
    for i in range(last + 1):
        v = value[i]
        if np.isnan(v):
            continue
        if np.isnan(peak_val) or v >= peak_val:
            if in_dd:  # recovered: bars strictly under water are peak_idx+1 .. i-1
                in_dd = False
                dur = i - peak_idx - 1
                if dur > best_dur:
                    best_dur, best_peak, best_end = dur, peak_idx, i
            peak_val = v
            peak_idx = i
        else:
            in_dd = True
            dd = v / peak_val - 1.0
            if dd < max_dd:
                max_dd = dd
    if in_dd:  # still under water at the end: bars peak_idx+1 .. last
        dur = last - peak_idx
        if dur > best_dur:
            best_dur, best_peak, best_end = dur, peak_idx, last
    return max_dd, best_dur, best_peak, best_end


_BLOCK = 16  # bars the equity passes look at together


@numba.njit(inline="always", error_model="numpy")
def _ret_nb(prev: float, cur: float) -> float:
    """`bar_return_nb` without branches (the same value), for the vectorised sums."""
    r = (cur - prev) / prev
    if prev < 0.0:
        r = -r
    if prev == 0.0 and cur == 0.0:
        r = 0.0
    return r


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "nsz"})
def _return_sums_nb(value: np.ndarray, init_cash: float, shift: float) -> tuple[float, float, float, float,
                                                                                 float, int]:
    """Sum, product of (1 + r), sum of squared losses, and the sums of `r - shift` and its square over
    the defined returns, and their count. Undefined returns add nothing (branchless), and the sums may
    be reassociated (`fastmath` reassoc): the CPU adds several bars at once."""
    n = value.shape[0]
    total = 0.0
    growth = 1.0
    down_sq = 0.0
    s1 = 0.0
    s2 = 0.0
    cnt = 0
    for i in range(n):
        r = _ret_nb(value[i - 1] if i > 0 else init_cash, value[i])
        ok = r == r
        rr = r if ok else 0.0
        d = rr - shift if ok else 0.0
        neg = min(rr, 0.0)
        total += rr
        growth *= 1.0 + rr
        down_sq += neg * neg
        s1 += d
        s2 += d * d
        cnt += ok
    return total, growth, down_sq, s1, s2, cnt


@numba.njit(cache=True, error_model="numpy")
def _drawdown_walk_nb(value: np.ndarray) -> tuple[float, int, int]:
    """`drawdown_nb`'s walk (max drawdown, longest duration, last defined bar) in blocks: in a block whose
    values all lie under the peak only its lowest bar can deepen the drawdown, and one flat at the peak
    only moves the peak to its end (after ending a drawdown at its first bar), so both are passed over
    after one vectorised min/max; the others (a new peak inside) are walked bar by bar."""
    n = value.shape[0]
    max_dd = 0.0
    best_dur = 0
    peak_val = np.nan
    peak_idx = -1
    in_dd = False
    last_valid = -1
    dd_floor = np.nan  # peak * (1 + max_dd): below it a bar sets a new maximum drawdown
    i = 0
    while i < n:
        stop = min(i + _BLOCK, n)
        if peak_idx >= 0 and stop - i == _BLOCK:
            hi = -np.inf
            lo = np.inf
            bad = 0
            blk = value[i:stop]  # (a slice walked from 0: numba knows the index is not negative and
            for k in range(_BLOCK):  # vectorises the min/max; value[k] for k in range(i, stop) did not)
                v = blk[k]
                hi = v if v > hi else hi
                lo = v if v < lo else lo
                bad += v != v
            if bad == 0 and hi < peak_val:  # no new peak: under water throughout, the lowest bar counts
                in_dd = True
                last_valid = stop - 1
                if lo < dd_floor:
                    dd = lo / peak_val - 1.0
                    if dd < max_dd:
                        max_dd = dd
                        dd_floor = peak_val * (1.0 + max_dd)
                i = stop
                continue
            if bad == 0 and hi == peak_val and lo == peak_val:  # flat at the peak (out of the market)
                if in_dd:
                    in_dd = False
                    if i - peak_idx - 1 > best_dur:
                        best_dur = i - peak_idx - 1
                peak_idx = stop - 1
                last_valid = stop - 1
                i = stop
                continue
        part = value[i:stop]
        for q in range(stop - i):
            k = i + q
            cur = part[q]
            if np.isnan(cur):
                continue
            last_valid = k
            if np.isnan(peak_val) or cur >= peak_val:
                if in_dd:
                    in_dd = False
                    if k - peak_idx - 1 > best_dur:
                        best_dur = k - peak_idx - 1
                peak_val = cur
                peak_idx = k
                dd_floor = peak_val * (1.0 + max_dd)
            else:
                in_dd = True
                if cur < dd_floor:
                    dd = cur / peak_val - 1.0
                    if dd < max_dd:
                        max_dd = dd
                        dd_floor = peak_val * (1.0 + max_dd)
        i = stop
    if in_dd and last_valid - peak_idx > best_dur:
        best_dur = last_valid - peak_idx
    if last_valid < 0:
        max_dd = np.nan
    return max_dd, best_dur, last_valid


@numba.njit(cache=True, error_model="numpy")
def equity_stats_nb(value: np.ndarray, init_cash: float, ppy: float) -> tuple[float, ...]:
    """Equity-curve metrics of one backtest in two allocation-free passes, for the sweep kernels.

    Returns floats `(total_return, annual_return, annual_volatility, sharpe, sortino, max_drawdown,
    max_drawdown_duration, calmar)`; definitions in the module docstring. The variance is kept as
    sums shifted by the first defined return (as accurate as two passes for returns this small); the
    sums are vectorised (`_return_sums_nb`), the drawdown walk is `drawdown_nb`'s, by blocks.
    """
    n = value.shape[0]
    nan = np.nan
    if n == 0:
        return nan, nan, nan, nan, nan, nan, 0.0, nan
    shift = 0.0
    prev = init_cash
    for i in range(n):  # the first defined return (the first bar's, unless the equity starts undefined)
        r = bar_return_nb(prev, value[i])
        prev = value[i]
        if not np.isnan(r):
            shift = r
            break
    total, growth, down_sq, s1, s2, cnt = _return_sums_nb(value, init_cash, shift)
    max_dd, best_dur, _ = _drawdown_walk_nb(value)
    mean = total / cnt if cnt > 0 else nan
    std = math.sqrt(max(s2 - s1 * s1 / cnt, 0.0) / (cnt - 1)) if cnt > 1 else nan
    total_return = value[n - 1] / init_cash - 1.0
    annual_return = growth ** (ppy / n) - 1.0
    if n < 2:
        annual_vol = nan
        sharpe = nan
        sortino = nan
    else:
        annual_vol = std * ppy**0.5
        sharpe = nan if std == 0.0 else mean / std * np.sqrt(ppy)  # a flat curve has no Sharpe
        downside = np.sqrt(down_sq / cnt) * np.sqrt(ppy) if cnt > 0 else nan
        sortino = nan if downside == 0.0 else mean * ppy / downside
    calmar = nan if (max_dd == 0.0 or np.isnan(max_dd)) else annual_return / abs(max_dd)
    return total_return, annual_return, annual_vol, sharpe, sortino, max_dd, float(best_dur), calmar


@numba.njit(cache=True, error_model="numpy")
def trade_stats_nb(pnl: np.ndarray, returns: np.ndarray) -> tuple[float, ...]:
    """Closed-trade metrics in one pass, usable inside other numba kernels (vectorbt's Trades rules).

    Returns floats `(n_trades, win_rate, profit_factor, expectancy, avg_win, avg_loss, best_trade,
    worst_trade)`. Wins are `pnl > 0`, losses `pnl < 0`, break-evens count as trades only;
    `expectancy` is the mean pnl; `avg_win`/`avg_loss` are mean *returns* of the winners/losers and
    `best_trade`/`worst_trade` the extreme returns (vectorbt's stats). `profit_factor` is gross profit
    over |gross loss|: +inf with profits and no loss, NaN with neither (or no trades).
    """
    n = pnl.shape[0]
    nan = np.nan
    if n == 0:
        return 0.0, nan, nan, nan, nan, nan, nan, nan
    n_win = 0
    n_loss = 0
    gross_win = 0.0
    gross_loss = 0.0
    pnl_sum = 0.0
    win_ret = 0.0
    loss_ret = 0.0
    best = -np.inf
    worst = np.inf
    n_ret = 0
    for i in range(n):
        p = pnl[i]
        r = returns[i]
        pnl_sum += p
        if p > 0.0:
            n_win += 1
            gross_win += p
            win_ret += r
        elif p < 0.0:
            n_loss += 1
            gross_loss += p
            loss_ret += r
        if not np.isnan(r):
            n_ret += 1
            if r > best:
                best = r
            if r < worst:
                worst = r
    win_rate = n_win / n
    profit_factor = gross_win / abs(gross_loss) if gross_loss != 0.0 else (np.inf if gross_win > 0.0 else nan)
    avg_win = win_ret / n_win if n_win > 0 else nan
    avg_loss = loss_ret / n_loss if n_loss > 0 else nan
    if n_ret == 0:
        best = nan
        worst = nan
    return float(n), win_rate, profit_factor, pnl_sum / n, avg_win, avg_loss, best, worst


# ------------------------------------------------------------------------------------ python API
def equity_stats(value: np.ndarray | pd.Series, init_cash: float, ppy: float) -> dict[str, float]:
    """`equity_stats_nb` as a dict keyed by metric name, for callers outside numba."""
    arr = _float_array(value, "value")
    _check_ppy(ppy)
    return dict(zip(EQUITY_KEYS, equity_stats_nb(arr, float(init_cash), float(ppy)), strict=True))


def trade_stats(pnl: np.ndarray, returns: np.ndarray) -> dict[str, float]:
    """Closed-trade statistics (vectorbt's Trades definitions) from per-trade pnl and returns."""
    p = _float_array(pnl, "pnl")
    r = _float_array(returns, "returns")
    if len(p) != len(r):
        raise ConfigError(
            f"trade_stats got {len(p)} pnl values but {len(r)} returns: pass one of each per trade"
        )
    out = dict(zip(TRADE_KEYS, trade_stats_nb(p, r), strict=True))
    out["n_trades"] = int(out["n_trades"])
    return out


def bar_returns(value: np.ndarray, init_cash: float) -> np.ndarray:
    """Per-bar simple returns of an equity curve, the first one against `init_cash` (the module's
    convention, vectorbt's rules for zero and negative bases)."""
    prev = np.concatenate([[float(init_cash)], value[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (value - prev) / prev
    out = np.where(prev < 0.0, -out, out)
    return np.where((prev == 0.0) & (value == 0.0), 0.0, out)


def benchmark_stats(returns: np.ndarray, benchmark_returns: np.ndarray, ppy: float) -> dict[str, float]:
    """Alpha, beta, tracking error and information ratio of per-bar `returns` against
    `benchmark_returns` on the same bars (definitions in the module docstring); bars where either is
    not finite are left out, and a figure that is undefined is NaN."""
    _check_ppy(ppy)
    r = _float_array(returns, "returns")
    b = _float_array(benchmark_returns, "benchmark returns")
    if len(r) != len(b):
        raise ConfigError(f"returns have {len(r)} bars but the benchmark's {len(b)}: align both on the same "
                          "bars")
    ok = np.isfinite(r) & np.isfinite(b)
    r, b = r[ok], b[ok]
    out = dict.fromkeys(BENCHMARK_KEYS, math.nan)
    if len(r) < 2:
        return out
    active = r - b
    if active.min() != active.max():  # (exactly constant: no tracking error, not a rounding residue)
        te = float(np.std(active, ddof=1))
        out["tracking_error"] = te * math.sqrt(ppy)
        out["information_ratio"] = float(np.mean(active)) / te * math.sqrt(ppy)
    else:
        out["tracking_error"] = 0.0
    if b.min() != b.max():
        db = b - b.mean()
        beta = float(np.dot(db, r - r.mean()) / np.dot(db, db))
        out["beta"] = beta
        out["alpha"] = (float(r.mean()) - beta * float(b.mean())) * ppy
    return out


def compute_metrics(
    value: pd.Series | np.ndarray,
    init_cash: float,
    ppy: float,
    trades: pd.DataFrame | None = None,
    exposure: np.ndarray | None = None,
    traded_value: float = 0.0,
    benchmark: pd.Series | np.ndarray | None = None,
    index: pd.DatetimeIndex | None = None,
) -> dict[str, float]:
    """Every metric of one backtest in the fixed order of `METRIC_KEYS` (NaN where not computable).

    `trades` has columns `pnl`, `return`, `status` ("closed"/"open"): trade statistics use the closed
    ones. `exposure` is the per-bar gross exposure as a fraction of equity. `benchmark` is an equity
    curve on the same bars started with the same `init_cash` (buy and hold, or `benchmark_equity`'s; not
    a price series): its return is `benchmark[-1] / init_cash - 1`, like `total_return`, and alpha,
    beta, tracking error and information ratio compare the per-bar returns. `max_drawdown_days` is the
    wall-clock time from the peak to the recovery bar (or the last bar) of the longest drawdown, in
    days; it needs a DatetimeIndex (`index`, or the index of a `value` Series).
    """
    arr = _float_array(value, "value")
    _check_ppy(ppy)
    if index is None and isinstance(value, pd.Series) and isinstance(value.index, pd.DatetimeIndex):
        index = value.index
    if index is not None and len(index) != len(arr):
        raise ConfigError(
            f"index has {len(index)} timestamps but value has {len(arr)} bars: pass matching lengths"
        )
    out: dict[str, float] = dict.fromkeys(METRIC_KEYS, math.nan)

    eq = equity_stats_nb(arr, float(init_cash), float(ppy))
    out.update(zip(EQUITY_KEYS, eq, strict=True))
    out["max_drawdown_duration"] = int(eq[6])
    if index is not None and len(arr):
        _, _, peak, end = drawdown_nb(arr)
        out["max_drawdown_days"] = (
            (pd.Timestamp(index[end]) - pd.Timestamp(index[peak])) / pd.Timedelta(days=1)
            if peak >= 0
            else 0.0
        )

    if trades is not None:
        missing = {"pnl", "return", "status"} - set(trades.columns)
        if missing:
            raise ConfigError(
                f"trades frame lacks columns {sorted(missing)}: it needs pnl, return and status"
            )
        status = trades["status"].astype(str).to_numpy()
        closed = status == "closed"
        stats = trade_stats(
            trades["pnl"].to_numpy(dtype=np.float64)[closed],
            trades["return"].to_numpy(dtype=np.float64)[closed],
        )
        out.update(stats)
        out["n_open_trades"] = int((status == "open").sum())

    if exposure is not None:
        ex = np.abs(_float_array(exposure, "exposure"))
        if len(ex) != len(arr):
            raise ConfigError(
                f"exposure has {len(ex)} values but value has {len(arr)} bars: pass one per bar"
            )
        if len(ex):
            out["exposure"] = float(np.mean(ex > 0.0))
            out["avg_gross_exposure"] = float(np.mean(ex))

    if len(arr):
        mean_value = float(np.mean(arr))
        years = len(arr) / float(ppy)
        if traded_value == 0.0:
            out["turnover"] = 0.0
        elif mean_value != 0.0:
            out["turnover"] = float(traded_value) / mean_value / years

    if benchmark is not None:
        bench = _float_array(benchmark, "benchmark")
        if len(bench) != len(arr):
            raise ConfigError(f"benchmark has {len(bench)} values but value has {len(arr)} bars: pass its "
                              "equity on the same bars (benchmark_equity aligns one)")
        if len(bench):
            out["benchmark_return"] = float(bench[-1] / init_cash - 1.0)
            out["excess_return"] = out["total_return"] - out["benchmark_return"]
            out.update(benchmark_stats(bar_returns(arr, init_cash), bar_returns(bench, init_cash), ppy))
    return out


# metrics shown as percentages, as ratios (2 decimals), as counts; the rest as plain numbers
_PCT = frozenset({"total_return", "annual_return", "annual_volatility", "max_drawdown", "win_rate",
                  "avg_win", "avg_loss", "best_trade", "worst_trade", "exposure", "avg_gross_exposure",
                  "benchmark_return", "excess_return", "alpha", "tracking_error"})
_RATIO = frozenset({"sharpe", "sortino", "calmar", "profit_factor", "beta", "information_ratio"})
_COUNT = frozenset({"n_trades", "n_open_trades", "max_drawdown_duration"})


def _nan(value: Any) -> bool:
    """True for None and NaN (a metric that could not be computed)."""
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def na_reason(key: str, metrics: Mapping[str, Any]) -> str:
    """Why `metrics[key]` is NaN, in a few words ("no trades", "constant returns"); "" when it is a number
    or no reason is known. Tables show it as ``n/a (reason)`` so an undefined figure explains itself."""
    if not _nan(metrics.get(key)):
        return ""
    # an absent figure reads as NaN, like one that could not be computed
    n_trades = metrics.get("n_trades", math.nan)
    n_open = metrics.get("n_open_trades", math.nan)
    no_closed = not _nan(n_trades) and float(n_trades) == 0
    no_trades = no_closed and (_nan(n_open) or float(n_open) == 0)
    if key in ("sharpe", "sortino", "calmar", "annual_volatility"):
        if no_trades:
            return "no trades"
        vol, dd = metrics.get("annual_volatility", math.nan), metrics.get("max_drawdown", math.nan)
        if key == "calmar":
            return "no drawdown" if not _nan(dd) and float(dd) == 0.0 else ""
        if _nan(vol):
            return "fewer than 2 bars"
        if float(vol) == 0.0:
            return "constant returns"
        return "no losing bar" if key == "sortino" else ""
    if key in BENCHMARK_KEYS:
        if _nan(metrics.get("benchmark_return")):
            return "no benchmark"
        if _nan(metrics.get("annual_volatility")):
            return "fewer than 2 bars"
        if key == "information_ratio" and metrics.get("tracking_error") == 0.0:
            return "no tracking error"
        return "constant benchmark" if key in ("alpha", "beta") else ""
    if key in TRADE_KEYS and key != "n_trades":
        if _nan(n_trades):  # no trade list was given (a rebalanced portfolio's metrics): nothing to say
            return ""
        if no_trades:
            return "no trades"
        if no_closed:
            return "no closed trades"
        if key == "avg_win":
            return "no winning trade"
        if key == "avg_loss":
            return "no losing trade"
        if key == "profit_factor":
            return "only break-even trades"
    return ""


def format_metric(key: str, value: Any, reason: str = "") -> str:
    """A metric for people: percentages for returns, 2 decimals for ratios, counts as integers;
    an undefined one as ``n/a`` with its `reason` (see `na_reason`) when one is given."""
    if _nan(value):
        return f"n/a ({reason})" if reason else "n/a"
    v = float(value)
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if key in _PCT:
        return f"{v:.2%}"
    if key in _RATIO:
        return f"{v:,.2f}"
    if key in _COUNT:
        return f"{int(v):,}" + (" bars" if key == "max_drawdown_duration" else "")
    if key == "max_drawdown_days":
        return f"{v:,.1f} days"
    if key == "turnover":
        return f"{v:,.2f} x/yr"
    return f"{v:,.2f}"


def metrics_frame(metrics: dict[str, float], formatted: bool = False) -> pd.DataFrame:
    """A two-column (metric, value) table of a metrics dict; `formatted` gives the values as people
    read them (percentages, 2-decimal ratios, counts, ``n/a (no trades)``) for reports."""
    values = ([format_metric(k, v, na_reason(k, metrics)) for k, v in metrics.items()] if formatted
              else list(metrics.values()))
    return pd.DataFrame({"metric": list(metrics), "value": values}, columns=["metric", "value"])


def _float_array(values: pd.Series | np.ndarray, name: str) -> np.ndarray:
    """A contiguous float64 1-d array of `values`, as the kernels need."""
    arr = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
    if arr.ndim != 1:
        raise ConfigError(f"{name} must be one-dimensional, got shape {arr.shape}: pass one column")
    return arr


def _check_ppy(ppy: float) -> None:
    """Reject a non-positive annualisation factor before it turns every ratio into nonsense."""
    if not (isinstance(ppy, int | float | np.floating | np.integer) and math.isfinite(ppy) and ppy > 0):
        raise ConfigError(
            f"periods per year must be a positive number, got {ppy!r}: use periods_per_year(tf, cal)"
        )
