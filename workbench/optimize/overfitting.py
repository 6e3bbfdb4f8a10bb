"""Is a backtest's edge real? Sharpe significance, deflation for many trials, PBO and trade Monte Carlo.

Pure numpy/scipy tools to judge the result of a parameter search:

- `sharpe_ratio`, `probabilistic_sharpe_ratio` (Bailey & López de Prado 2012) and
  `sharpe_significance` (Lo 2002 / Mertens 2002 standard error with skew and kurtosis).
- `expected_max_sharpe` and `deflated_sharpe_ratio` (Bailey & López de Prado 2014): the Sharpe the
  best of ``n_trials`` worthless strategies reaches by luck, and the PSR against that hurdle.
- `pbo_cscv`: the Probability of Backtest Overfitting by Combinatorially Symmetric Cross-Validation
  (Bailey, Borwein, López de Prado & Zhu 2015).
- `bootstrap_trades`: Monte Carlo of a trade sequence (bootstrap or shuffle) for total-return and
  max-drawdown intervals; `compare_to_benchmark`: a strategy against buy-and-hold on the same bars.

Conventions: Sharpe ratios are **per period** (mean / std with ``ddof=1`` of simple returns, no
risk-free rate) unless a function takes ``periods_per_year``; ``sr_variance`` is the variance of the
per-period Sharpe ratios across trials, in the same units. Skewness and kurtosis are population
moments (``bias=True``), the kurtosis non-excess (3 for a normal). NaN returns are skipped by the
Sharpe functions; ``pbo_cscv`` treats them as 0 (no position). Max drawdowns are positive fractions
of the compounded equity path starting at 1.0, with that start counted as a peak.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numba
import numpy as np
from scipy import stats

from workbench.backtest.metrics import benchmark_stats
from workbench.errors import ConfigError, DataError

EULER_GAMMA = 0.5772156649015329
MC_METHODS = ("bootstrap", "shuffle")
MAX_SPLITS = 20  # C(20, 10) = 184,756 combinations; the paper's default is 16 (12,870)
_MC_CHUNK_BYTES = 100_000_000
_PBO_CHUNK = 512  # combinations per vectorised step of pbo_cscv
_ZERO_VAR_REL = 1e-12  # a half is constant when (n-1)·variance < this × its sum of squares about row 0


# ------------------------------------------------------------------------------------ validation
def _returns_1d(returns: Any, name: str = "returns") -> np.ndarray:
    """Per-period returns as a 1-D float array without NaN; ±inf is a data error."""
    arr = np.asarray(returns, dtype=float)
    if arr.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {arr.shape}; pass one column of returns")
    arr = arr[~np.isnan(arr)]
    if np.isinf(arr).any():
        raise DataError(f"{name} contain ±inf; check for zero or negative equity before computing returns")
    return arr


def _int_param(value: Any, name: str, minimum: int) -> int:
    """An integer setting of at least `minimum` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}")
    return int(value)


def _float_param(value: Any, name: str, *, minimum: float | None = None, positive: bool = False) -> float:
    """A finite real setting, optionally at least `minimum` or strictly positive."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number")
    if positive and value <= 0:
        raise ConfigError(f"{name}={value!r} must be > 0")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value!r} must be >= {minimum}")
    return float(value)


# ------------------------------------------------------------------------------------ Sharpe tests
def sharpe_ratio(returns: np.ndarray) -> float:
    """Per-period Sharpe ratio mean / std(ddof=1), skipping NaN; NaN below 2 values or at zero std."""
    r = _returns_1d(returns)
    if r.size < 2 or r.min() == r.max():  # exact test: np.std of equal values can round to 1e-19
        return math.nan
    return float(np.mean(r)) / float(np.std(r, ddof=1))


def _moments(r: np.ndarray) -> tuple[float, float, float]:
    """Per-period Sharpe, population skewness and non-excess kurtosis of clean returns."""
    sr = sharpe_ratio(r)
    if math.isnan(sr):
        return math.nan, math.nan, math.nan
    d = r - r.mean()  # the moments of scipy.stats.skew / kurtosis(fisher=False) with bias=True, 20x faster
    d2 = d * d
    m2 = float(d2.mean())
    return sr, float((d2 * d).mean()) / m2**1.5, float((d2 * d2).mean()) / m2**2


def _psr_z(sr: float, benchmark_sr: float, n_obs: int, skew: float, kurtosis: float) -> float:
    """The PSR z-score (SR - SR*) sqrt(T - 1) / sqrt(1 - skew SR + (kurt - 1)/4 SR^2); NaN if undefined."""
    if n_obs < 2 or not all(math.isfinite(x) for x in (sr, benchmark_sr, skew, kurtosis)):
        return math.nan
    term = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if term <= 0.0:
        return math.nan
    return (sr - benchmark_sr) * math.sqrt(n_obs - 1) / math.sqrt(term)


def _psr(sr: float, benchmark_sr: float, n_obs: int, skew: float, kurtosis: float) -> float:
    """PSR from moments, so published examples that quote moments can be reproduced."""
    z = _psr_z(sr, benchmark_sr, n_obs, skew, kurtosis)
    return math.nan if math.isnan(z) else float(stats.norm.cdf(z))


def probabilistic_sharpe_ratio(returns: np.ndarray, benchmark_sr: float = 0.0) -> float:
    """P(true Sharpe > benchmark_sr) given the sample's length, skew and kurtosis (Bailey & LdP 2012)."""
    benchmark_sr = _float_param(benchmark_sr, "benchmark_sr")
    r = _returns_1d(returns)
    sr, g3, g4 = _moments(r)
    return _psr(sr, benchmark_sr, r.size, g3, g4)


def expected_max_sharpe(n_trials: int, sr_variance: float, mean_sr: float = 0.0) -> float:
    """Expected best Sharpe of n_trials independent trials (the DSR hurdle SR0, Bailey & LdP 2014)."""
    n = _int_param(n_trials, "n_trials", 1)
    v = _float_param(sr_variance, "sr_variance", minimum=0.0)
    mean_sr = _float_param(mean_sr, "mean_sr")
    if n == 1:
        return mean_sr
    z = (1.0 - EULER_GAMMA) * stats.norm.ppf(1.0 - 1.0 / n) + EULER_GAMMA * stats.norm.ppf(
        1.0 - 1.0 / (n * math.e)
    )
    return mean_sr + math.sqrt(v) * float(z)


@dataclass(frozen=True)
class DeflatedSharpe:
    """The Deflated Sharpe Ratio and the inputs behind it (per-period Sharpe units)."""

    dsr: float
    sharpe: float
    sr0: float
    n_trials: int
    sr_variance: float
    n_obs: int
    skew: float
    kurtosis: float

    def as_dict(self) -> dict[str, float | int]:
        """The fields as a flat dict, e.g. for a DataFrame row."""
        return asdict(self)


def deflated_sharpe_ratio(returns: np.ndarray, *, n_trials: int, sr_variance: float) -> DeflatedSharpe:
    """PSR against the best Sharpe expected from n_trials lucky trials: corrects for selection bias."""
    sr0 = expected_max_sharpe(n_trials, sr_variance)
    r = _returns_1d(returns)
    sr, g3, g4 = _moments(r)
    return DeflatedSharpe(
        dsr=_psr(sr, sr0, r.size, g3, g4),
        sharpe=sr,
        sr0=sr0,
        n_trials=int(n_trials),
        sr_variance=float(sr_variance),
        n_obs=int(r.size),
        skew=g3,
        kurtosis=g4,
    )


@dataclass(frozen=True)
class SharpeTest:
    """One-sided test of H0: Sharpe <= 0 with the skew/kurtosis-aware standard error."""

    sharpe: float
    sharpe_annual: float
    t_stat: float
    p_value: float
    psr: float
    n_obs: int

    def as_dict(self) -> dict[str, float | int]:
        """The fields as a flat dict, e.g. for a DataFrame row."""
        return asdict(self)


def sharpe_significance(returns: np.ndarray, *, periods_per_year: float | None = None) -> SharpeTest:
    """Is the Sharpe ratio above 0? t = SR / se with Lo/Mertens se; p = 1 - Φ(t) = 1 - PSR(0)."""
    ppy = None
    if periods_per_year is not None:
        ppy = _float_param(periods_per_year, "periods_per_year", positive=True)
    r = _returns_1d(returns)
    sr, g3, g4 = _moments(r)
    t = _psr_z(sr, 0.0, r.size, g3, g4)  # SR / sqrt((1 - g3 SR + (g4 - 1)/4 SR^2) / (T - 1))
    nan = math.isnan(t)
    return SharpeTest(
        sharpe=sr,
        sharpe_annual=math.nan if ppy is None else sr * math.sqrt(ppy),
        t_stat=t,
        p_value=math.nan if nan else float(stats.norm.sf(t)),
        psr=math.nan if nan else float(stats.norm.cdf(t)),
        n_obs=int(r.size),
    )


# ------------------------------------------------------------------------------------ PBO / CSCV
@dataclass(frozen=True, eq=False)
class PBOResult:
    """CSCV outcome: PBO, one logit per IS/OOS split, and the IS-best trial's IS and OOS metric."""

    pbo: float
    logits: np.ndarray = field(repr=False)
    is_best: np.ndarray = field(repr=False)
    oos_of_best: np.ndarray = field(repr=False)
    prob_oos_loss: float
    n_splits: int
    n_combinations: int
    n_trials: int
    n_obs: int

    def as_dict(self) -> dict[str, float | int]:
        """Scalars, logit quantiles and the OOS-on-IS degradation slope, for a report table."""
        q = np.quantile(self.logits, [0.05, 0.25, 0.5, 0.75, 0.95])
        slope = math.nan
        finite = np.isfinite(self.is_best).all() and np.isfinite(self.oos_of_best).all()
        if finite and np.ptp(self.is_best) > 0:
            slope = float(np.polyfit(self.is_best, self.oos_of_best, 1)[0])
        return {
            "pbo": self.pbo,
            "prob_oos_loss": self.prob_oos_loss,
            "n_splits": self.n_splits,
            "n_combinations": self.n_combinations,
            "n_trials": self.n_trials,
            "n_obs": self.n_obs,
            "logit_mean": float(np.mean(self.logits)),
            "logit_q05": float(q[0]),
            "logit_q25": float(q[1]),
            "logit_median": float(q[2]),
            "logit_q75": float(q[3]),
            "logit_q95": float(q[4]),
            "is_best_mean": float(np.mean(self.is_best)),
            "oos_of_best_mean": float(np.mean(self.oos_of_best)),
            "degradation_slope": slope,
        }


def _half_sharpe(s: np.ndarray, q: np.ndarray, n: int, n_shift: np.ndarray) -> np.ndarray:
    """Sharpe of halves of `n` rows from sums `s` and sums of squares `q` of returns minus a per-column
    shift (`n_shift` = n * shift); a half whose variance is negligible against its mean square -> 0."""
    v = s * s
    v *= -1.0 / n
    v += q  # (n - 1) * variance
    const = v <= _ZERO_VAR_REL * q
    np.copyto(v, 1.0, where=const)
    np.sqrt(v, out=v)
    out = s + n_shift
    out /= v
    out *= math.sqrt(n - 1) / n
    np.copyto(out, 0.0, where=const)
    return out


@numba.njit(cache=True, error_model="numpy")
def _block_sums_nb(x: np.ndarray, shift: np.ndarray, splits: int,
                   block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per block of `block` rows, each column's sum of `x - shift` and of its square: one pass over the
    T×N returns (numpy's centring, squaring and summing copied them three times)."""
    n = x.shape[1]
    sums = np.zeros((splits, n))
    squares = np.zeros((splits, n))
    for b in range(splits):
        for i in range(b * block, (b + 1) * block):
            for c in range(n):
                d = x[i, c] - shift[c]
                sums[b, c] += d
                squares[b, c] += d * d
    return sums, squares


def _subset_sums(rows: np.ndarray) -> np.ndarray:
    """Sums of every subset of `rows` (k×N) by bit mask: out[mask] = sum of rows[i] over set bits i."""
    k, n = rows.shape
    out = np.zeros((1 << k, n))
    for i in range(k):
        out[1 << i : 1 << (i + 1)] = out[: 1 << i] + rows[i]
    return out


def _relative_rank(oos: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Rank (1..N, ties averaged as in rankdata) of oos[i, best[i]] within row i, divided by N + 1."""
    val = oos[np.arange(oos.shape[0]), best][:, None]
    less = np.count_nonzero(oos < val, axis=1)
    less_eq = np.count_nonzero(oos <= val, axis=1)
    return (less + less_eq + 1) / (2.0 * (oos.shape[1] + 1))


def pbo_cscv(
    returns: np.ndarray,
    *,
    n_splits: int = 16,
    metric: Callable[[np.ndarray], np.ndarray] | None = None,
) -> PBOResult:
    """Probability that the in-sample best of N trials ranks below the OOS median (CSCV, Bailey et al. 2015).

    `returns` is T×N (rows are bars, columns trials); NaN counts as 0 and trailing rows are dropped so
    T divides into `n_splits` blocks. `metric` maps a rows×N matrix to N scores (default: per-period
    Sharpe, 0 for a constant column); NaN scores rank lowest.
    """
    x = np.asarray(returns, dtype=float)
    if x.ndim != 2:
        raise DataError(
            f"returns must be a T×N matrix (bars × trials), got shape {x.shape}; stack trial columns"
        )
    t_all, n_trials = x.shape
    if n_trials < 2:
        raise DataError(
            f"pbo_cscv needs at least 2 trials (columns), got {n_trials}; pass every configuration tried"
        )
    s = _int_param(n_splits, "n_splits", 2)
    if s % 2 or s > MAX_SPLITS:
        raise ConfigError(
            f"n_splits={s} must be an even number from 2 to {MAX_SPLITS}; 16 is the usual choice"
        )
    if t_all < 2 * s:
        raise ConfigError(
            f"n_splits={s} needs at least {2 * s} rows, got {t_all}; use fewer splits or more bars"
        )
    block = t_all // s
    x = x[: block * s]
    if not np.isfinite(x).all():  # (one pass when all are finite, as a backtest's returns are)
        if np.isinf(x).any():
            raise DataError("returns contain ±inf; check for zero or negative equity before computing "
                            "returns")
        x = np.nan_to_num(x, nan=0.0)
    n_obs = block * s
    combos = np.array(list(itertools.combinations(range(s), s // 2)), dtype=np.intp)
    n_comb = combos.shape[0]
    member = np.zeros((n_comb, s), dtype=bool)
    member[np.arange(n_comb)[:, None], combos] = True

    logits = np.empty(n_comb)
    is_best = np.empty(n_comb)
    oos_best = np.empty(n_comb)
    if metric is None:
        shift = x[0].copy()  # centre on the first row: sums of squares stay accurate, constant columns 0
        block_sums, block_squares = _block_sums_nb(np.ascontiguousarray(x), shift, s, block)
        # Sums over any set of blocks = (subset sum of the first S/2 blocks) + (subset sum of the rest):
        # two table look-ups per combination, exact zeros for zero blocks, and no BLAS threading cost.
        h = s // 2
        weights = 1 << np.arange(h)
        lo_mask, hi_mask = member[:, :h] @ weights, member[:, h:] @ weights
        full = (1 << h) - 1
        tables = [_subset_sums(block_sums[part]) for part in (slice(0, h), slice(h, s))]
        tables_sq = [_subset_sums(block_squares[part]) for part in (slice(0, h), slice(h, s))]
        half = n_obs // 2
        n_shift = half * shift
        for lo in range(0, n_comb, _PBO_CHUNK):
            a, b = lo_mask[lo : lo + _PBO_CHUNK], hi_mask[lo : lo + _PBO_CHUNK]
            sr_is = _half_sharpe(
                tables[0][a] + tables[1][b], tables_sq[0][a] + tables_sq[1][b], half, n_shift
            )
            a, b = full ^ a, full ^ b
            sr_oos = _half_sharpe(
                tables[0][a] + tables[1][b], tables_sq[0][a] + tables_sq[1][b], half, n_shift
            )
            best = np.argmax(sr_is, axis=1)
            rows = np.arange(best.size)
            omega = _relative_rank(sr_oos, best)
            sl = slice(lo, lo + best.size)
            logits[sl] = np.log(omega / (1.0 - omega))
            is_best[sl] = sr_is[rows, best]
            oos_best[sl] = sr_oos[rows, best]
    else:
        row_blocks = np.arange(n_obs).reshape(s, block)
        for i in range(n_comb):
            perf = []
            for rows_of in (row_blocks[member[i]], row_blocks[~member[i]]):
                out = np.asarray(metric(x[rows_of.ravel()]), dtype=float)
                if out.shape != (n_trials,):
                    raise ConfigError(
                        f"metric returned shape {out.shape}, expected ({n_trials},); "
                        "it must map a rows×N matrix to one score per column"
                    )
                perf.append(np.where(np.isnan(out), -np.inf, out))
            best = int(np.argmax(perf[0]))
            rank = float(_relative_rank(perf[1][None, :], np.array([best]))[0])
            logits[i] = math.log(rank / (1.0 - rank))
            is_best[i] = perf[0][best]
            oos_best[i] = perf[1][best]
    return PBOResult(
        pbo=float(np.mean(logits <= 0.0)),
        logits=logits,
        is_best=is_best,
        oos_of_best=oos_best,
        prob_oos_loss=float(np.mean(oos_best < 0.0)),
        n_splits=s,
        n_combinations=n_comb,
        n_trials=n_trials,
        n_obs=n_obs,
    )


# ------------------------------------------------------------------------------------ Monte Carlo
def _max_drawdown_paths(rets: np.ndarray) -> np.ndarray:
    """Max drawdown (positive fraction) of each row's compounded equity, the start 1.0 being a peak."""
    equity = np.cumprod(1.0 + rets, axis=-1)
    peak = np.maximum(np.maximum.accumulate(equity, axis=-1), 1.0)
    dd = 1.0 - equity / peak
    return np.maximum(dd.max(axis=-1, initial=0.0), 0.0)


@numba.njit(cache=True, error_model="numpy")
def _paths_nb(sims: np.ndarray, totals: np.ndarray, mdds: np.ndarray) -> None:
    """Each row's total return and max drawdown (`_max_drawdown_paths`) in one pass, no temporaries."""
    for s in range(sims.shape[0]):
        eq = 1.0
        peak = 1.0
        mdd = 0.0
        for i in range(sims.shape[1]):
            eq *= 1.0 + sims[s, i]
            if eq > peak:
                peak = eq
            dd = 1.0 - eq / peak
            if dd > mdd:
                mdd = dd
        totals[s] = eq - 1.0
        mdds[s] = mdd


@dataclass(frozen=True)
class MonteCarloResult:
    """Distribution of total return and max drawdown over simulated trade sequences."""

    method: str
    n_sims: int
    n_trades: int
    confidence: float
    seed: int
    total_return: dict[str, float]
    max_drawdown: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        """A flat dict: settings plus `total_return_<stat>` and `max_drawdown_<stat>` entries."""
        out: dict[str, Any] = {
            "method": self.method,
            "n_sims": self.n_sims,
            "n_trades": self.n_trades,
            "confidence": self.confidence,
            "seed": self.seed,
        }
        out.update({f"total_return_{k}": v for k, v in self.total_return.items()})
        out.update({f"max_drawdown_{k}": v for k, v in self.max_drawdown.items()})
        return out


def _summary(observed: float, sims: np.ndarray, confidence: float) -> dict[str, float]:
    """Observed value, mean, median and the central `confidence` interval of simulated values."""
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(sims, [tail, 1.0 - tail])
    return {
        "observed": float(observed),
        "mean": float(np.mean(sims)),
        "median": float(np.median(sims)),
        "low": float(low),
        "high": float(high),
    }


def bootstrap_trades(
    trade_returns: np.ndarray,
    *,
    n_sims: int = 10_000,
    seed: int = 0,
    method: str = "bootstrap",
    confidence: float = 0.95,
) -> MonteCarloResult:
    """Monte Carlo of per-trade fractional returns: how lucky was this order and this set of trades?

    "bootstrap" resamples trades with replacement; "shuffle" permutes them (total return is invariant
    and reported exactly as observed; only the drawdown varies).
    """
    if method not in MC_METHODS:
        raise ConfigError(f"method={method!r} is unknown; use one of {', '.join(MC_METHODS)}")
    n_sims = _int_param(n_sims, "n_sims", 1)
    seed = _int_param(seed, "seed", 0)
    confidence = _float_param(confidence, "confidence")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence={confidence!r} must be in (0, 1), e.g. 0.95")
    r = np.asarray(trade_returns, dtype=float)
    if r.ndim != 1:
        raise DataError(
            f"trade_returns must be one-dimensional, got shape {r.shape}; pass one return per trade"
        )
    if r.size == 0:
        raise DataError("no out-of-sample trades to resample; widen the test windows or loosen the strategy")
    if not np.isfinite(r).all():
        raise DataError("trade_returns contain NaN or ±inf; drop open or unfinished trades first")
    if (r < -1.0).any():
        raise DataError(
            f"trade return {float(r.min())!r} loses more than 100 % of equity; pass fractions, e.g. -0.02"
        )

    n = r.size
    rng = np.random.default_rng(seed)
    chunk = max(1, _MC_CHUNK_BYTES // (40 * n))  # ~5 float64/int64 arrays of chunk × n alive at once
    totals = np.empty(n_sims)
    mdds = np.empty(n_sims)
    for lo in range(0, n_sims, chunk):
        k = min(chunk, n_sims - lo)
        if method == "bootstrap":
            sims = r[rng.integers(0, n, size=(k, n))]
        else:
            sims = rng.permuted(np.broadcast_to(r, (k, n)), axis=1)
        _paths_nb(np.ascontiguousarray(sims), totals[lo : lo + k], mdds[lo : lo + k])

    observed_total = float(np.prod(1.0 + r) - 1.0)
    if method == "shuffle":
        totals[:] = observed_total  # a product does not depend on order; drop the rounding noise
    total = _summary(observed_total, totals, confidence)
    total["p_loss"] = float(np.mean(totals < 0.0))
    return MonteCarloResult(
        method=method,
        n_sims=n_sims,
        n_trades=n,
        confidence=confidence,
        seed=seed,
        total_return=total,
        max_drawdown=_summary(float(_max_drawdown_paths(r)), mdds, confidence),
    )


# ------------------------------------------------------------------------------------ benchmark
def compare_to_benchmark(
    strategy_returns: np.ndarray, benchmark_returns: np.ndarray, *, periods_per_year: float
) -> dict[str, float]:
    """Strategy vs benchmark on the same bars: returns, annualised Sharpe/IR, beta, drawdowns, win rate."""
    ppy = _float_param(periods_per_year, "periods_per_year", positive=True)
    s = np.asarray(strategy_returns, dtype=float)
    b = np.asarray(benchmark_returns, dtype=float)
    if s.ndim != 1 or b.ndim != 1:
        raise DataError(
            f"returns must be one-dimensional, got shapes {s.shape} and {b.shape}; pass two columns"
        )
    if s.shape != b.shape:
        raise DataError(f"strategy has {s.size} returns and benchmark {b.size}; align both on the same bars")
    if s.size < 2:
        raise DataError(f"need at least 2 bars of returns, got {s.size}; use a longer period")
    if not (np.isfinite(s).all() and np.isfinite(b).all()):
        raise DataError("returns contain NaN or ±inf; fill or drop those bars in both series first")
    flat_s, flat_b = (bool(a.min() == a.max()) for a in (s, b))
    root = math.sqrt(ppy)
    vs = benchmark_stats(s, b, ppy)  # the one definition of beta and the information ratio
    total = float(np.prod(1.0 + s) - 1.0)
    bench = float(np.prod(1.0 + b) - 1.0)
    return {
        "total_return": total,
        "benchmark_return": bench,
        "excess_return": total - bench,
        "sharpe": sharpe_ratio(s) * root,
        "benchmark_sharpe": sharpe_ratio(b) * root,
        "information_ratio": vs["information_ratio"],
        "beta": vs["beta"],
        "correlation": math.nan if flat_b or flat_s else float(np.corrcoef(s, b)[0, 1]),
        "max_drawdown": float(_max_drawdown_paths(s)),
        "benchmark_max_drawdown": float(_max_drawdown_paths(b)),
        "win_rate_vs_benchmark": float(np.mean(s > b)),
    }
