"""Overfitting diagnostics, each checked against an independent computation: textbook formulas written
out with `math`/`statistics`, a published example, brute-force CSCV, analytic bootstrap moments, pandas."""

from __future__ import annotations

import itertools
import math
import statistics
import time
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from workbench.errors import ConfigError, DataError
from workbench.optimize import overfitting as of
from workbench.optimize.overfitting import (
    DeflatedSharpe,
    MonteCarloResult,
    PBOResult,
    SharpeTest,
    bootstrap_trades,
    compare_to_benchmark,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    pbo_cscv,
    probabilistic_sharpe_ratio,
    sharpe_ratio,
    sharpe_significance,
)

PHI = NormalDist()
GAMMA = 0.5772156649015329


def skewed_returns(seed: int, n: int = 500) -> np.ndarray:
    """Daily-like returns with a positive drift, negative skew and fat tails (a short-volatility shape)."""
    rng = np.random.default_rng(seed)
    r = rng.standard_t(5, n) * 0.01 + 0.0015
    crash = rng.random(n) < 0.02
    r[crash] -= rng.exponential(0.03, crash.sum())
    return r


def textbook_psr(values: list[float], benchmark: float) -> float:
    """PSR written out from Bailey & López de Prado (2012) with population moments, math only."""
    t = len(values)
    mean = statistics.fmean(values)
    sr = mean / statistics.stdev(values)
    m2 = math.fsum((v - mean) ** 2 for v in values) / t
    m3 = math.fsum((v - mean) ** 3 for v in values) / t
    m4 = math.fsum((v - mean) ** 4 for v in values) / t
    g3, g4 = m3 / m2**1.5, m4 / m2**2
    return PHI.cdf((sr - benchmark) * math.sqrt(t - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))


def textbook_sr0(n: int, var: float) -> float:
    """E[max Sharpe] of n trials (Bailey & López de Prado 2014), with statistics.NormalDist."""
    return math.sqrt(var) * ((1 - GAMMA) * PHI.inv_cdf(1 - 1 / n) + GAMMA * PHI.inv_cdf(1 - 1 / (n * math.e)))


# ------------------------------------------------------------------------------------ Sharpe, PSR, DSR
def test_sharpe_ratio_matches_statistics_and_skips_nan() -> None:
    r = skewed_returns(1, 200)
    want = statistics.fmean(r.tolist()) / statistics.stdev(r.tolist())
    assert sharpe_ratio(r) == pytest.approx(want, rel=1e-12)
    with_nan = np.insert(r, [0, 50, 200], np.nan)
    assert sharpe_ratio(with_nan) == pytest.approx(want, rel=1e-12)
    assert math.isnan(sharpe_ratio(np.array([0.01])))
    assert math.isnan(sharpe_ratio(np.array([0.01, np.nan])))
    assert math.isnan(sharpe_ratio(np.full(10, 0.01)))
    assert math.isnan(sharpe_ratio(np.array([])))


@pytest.mark.parametrize("benchmark", [0.0, 0.05, 0.12, -0.03])
def test_psr_matches_textbook_formula(benchmark: float) -> None:
    r = skewed_returns(2)
    want = textbook_psr(r.tolist(), benchmark)
    assert probabilistic_sharpe_ratio(r, benchmark) == pytest.approx(want, abs=1e-12)


def test_psr_is_nan_when_undefined() -> None:
    assert math.isnan(probabilistic_sharpe_ratio(np.full(20, 0.001)))
    assert math.isnan(probabilistic_sharpe_ratio(np.array([0.01])))


def test_dsr_published_example() -> None:
    # Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", section 5: 100 trials with annualised
    # V[SR] = 1/2, a best annualised SR of 2.5 over 1250 daily bars (250 a year), skew -3, kurtosis 10:
    # SR0 = 0.1132 per day and DSR = 0.9004.
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    assert sr0 == pytest.approx(textbook_sr0(100, 0.5 / 250), abs=1e-12)
    assert of._psr(2.5 / math.sqrt(250), sr0, 1250, -3.0, 10.0) == pytest.approx(0.9004, abs=5e-5)


@pytest.mark.parametrize(
    ("n", "var", "mean"), [(2, 0.01, 0.0), (10, 0.0004, 0.01), (1000, 1.0, 0.0), (7, 0.0, 0.3)]
)
def test_expected_max_sharpe_matches_textbook(n: int, var: float, mean: float) -> None:
    assert expected_max_sharpe(n, var, mean) == pytest.approx(mean + textbook_sr0(n, var), abs=1e-12)


def test_expected_max_sharpe_single_trial_is_the_mean() -> None:
    assert expected_max_sharpe(1, 0.5) == 0.0
    assert expected_max_sharpe(1, 0.5, mean_sr=0.2) == 0.2


def test_expected_max_sharpe_matches_monte_carlo_of_normal_maxima() -> None:
    assert expected_max_sharpe(1000, 1.0) == pytest.approx(3.2551, abs=1e-4)
    rng = np.random.default_rng(12345)
    maxima = np.concatenate([rng.standard_normal((2000, 1000)).max(axis=1) for _ in range(10)])
    assert maxima.mean() == pytest.approx(3.24, abs=0.01)  # E[max of 1000 standard normals] = 3.2414
    assert expected_max_sharpe(1000, 1.0) == pytest.approx(maxima.mean(), abs=0.02)


def test_dsr_matches_textbook_formula() -> None:
    r = skewed_returns(3)
    res = deflated_sharpe_ratio(r, n_trials=50, sr_variance=0.002)
    assert isinstance(res, DeflatedSharpe)
    sr0 = textbook_sr0(50, 0.002)
    assert res.sr0 == pytest.approx(sr0, abs=1e-12)
    assert res.dsr == pytest.approx(textbook_psr(r.tolist(), sr0), abs=1e-12)
    assert res.n_obs == 500 and res.n_trials == 50 and res.sr_variance == 0.002
    assert res.kurtosis > 3 and res.skew < 0
    d = res.as_dict()
    assert set(d) == {"dsr", "sharpe", "sr0", "n_trials", "sr_variance", "n_obs", "skew", "kurtosis"}
    assert d["dsr"] == res.dsr


def test_dsr_falls_with_more_trials_and_more_variance() -> None:
    r = skewed_returns(4)
    by_trials = [deflated_sharpe_ratio(r, n_trials=n, sr_variance=0.001).dsr for n in (2, 5, 20, 100, 1000)]
    assert all(a > b for a, b in itertools.pairwise(by_trials))
    variances = (0.0001, 0.0005, 0.001, 0.004)
    by_var = [deflated_sharpe_ratio(r, n_trials=20, sr_variance=v).dsr for v in variances]
    assert all(a > b for a, b in itertools.pairwise(by_var))
    assert deflated_sharpe_ratio(r, n_trials=1, sr_variance=0.01).dsr == probabilistic_sharpe_ratio(r, 0.0)
    assert deflated_sharpe_ratio(r, n_trials=30, sr_variance=0.0).dsr == probabilistic_sharpe_ratio(r, 0.0)


# ------------------------------------------------------------------------------------ significance
def test_sharpe_significance_matches_lo_mertens() -> None:
    r = skewed_returns(5, 300)
    res = sharpe_significance(r, periods_per_year=252)
    assert isinstance(res, SharpeTest)
    values = r.tolist()
    mean = statistics.fmean(values)
    sr = mean / statistics.stdev(values)
    m2 = statistics.fmean([(v - mean) ** 2 for v in values])
    g3 = statistics.fmean([(v - mean) ** 3 for v in values]) / m2**1.5
    g4 = statistics.fmean([(v - mean) ** 4 for v in values]) / m2**2
    se = math.sqrt((1 - g3 * sr + (g4 - 1) / 4 * sr**2) / (len(values) - 1))
    assert res.sharpe == pytest.approx(sr, rel=1e-12)
    assert res.sharpe_annual == pytest.approx(sr * math.sqrt(252), rel=1e-12)
    assert res.t_stat == pytest.approx(sr / se, rel=1e-10)
    assert res.p_value == pytest.approx(1 - PHI.cdf(sr / se), abs=1e-12)
    assert res.p_value == pytest.approx(1 - res.psr, abs=1e-14)
    assert res.psr == probabilistic_sharpe_ratio(r)
    assert res.n_obs == 300
    assert math.isnan(sharpe_significance(r).sharpe_annual)
    assert set(res.as_dict()) == {"sharpe", "sharpe_annual", "t_stat", "p_value", "psr", "n_obs"}


def test_sharpe_significance_has_its_nominal_size_under_the_null() -> None:
    rng = np.random.default_rng(2024)
    sims = rng.normal(0.0, 0.01, (2000, 120))
    p = np.array([sharpe_significance(x).p_value for x in sims])
    assert np.mean(p < 0.05) == pytest.approx(0.05, abs=0.015)


def test_sharpe_significance_nan_on_constant_returns() -> None:
    res = sharpe_significance(np.full(30, 0.002))
    assert all(math.isnan(v) for v in (res.sharpe, res.t_stat, res.p_value, res.psr))


# ------------------------------------------------------------------------------------ PBO / CSCV
def brute_force_pbo(x: np.ndarray, s: int, metric=None) -> tuple[float, list, list, list]:
    """CSCV by the book: a loop over C(S, S/2) splits, metrics straight from the rows of each half."""
    x = np.nan_to_num(x, nan=0.0)
    block = len(x) // s
    x = x[: block * s]
    blocks = [x[i * block : (i + 1) * block] for i in range(s)]

    def sharpe(m: np.ndarray) -> np.ndarray:
        out = []
        for col in m.T:
            sd = np.std(col, ddof=1)
            out.append(0.0 if sd == 0 else np.mean(col) / sd)
        return np.array(out)

    metric = metric or sharpe
    logits, is_best, oos_best = [], [], []
    for combo in itertools.combinations(range(s), s // 2):
        train = np.vstack([blocks[i] for i in combo])
        test = np.vstack([blocks[i] for i in range(s) if i not in combo])
        perf_is, perf_oos = metric(train), metric(test)
        best = int(np.argmax(perf_is))
        w = rankdata(perf_oos, method="average")[best] / (x.shape[1] + 1)
        logits.append(math.log(w / (1 - w)))
        is_best.append(perf_is[best])
        oos_best.append(perf_oos[best])
    return float(np.mean(np.array(logits) <= 0)), logits, is_best, oos_best


def small_matrix(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0005, 0.01, (67, 7))  # 67 rows: 3 trailing ones are dropped for S = 8
    x[:, 3] += 0.004  # one decent column so the argmax is not pure noise
    x[5, 1] = x[40, 2] = np.nan  # NaN counts as 0
    x[:, 5] = 0.0  # a trial that never trades: Sharpe 0 in both halves
    x[:32, 6] = 0.0  # a trial that trades only later: constant zero in some halves
    return x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pbo_matches_brute_force(seed: int) -> None:
    x = small_matrix(seed)
    res = pbo_cscv(x, n_splits=8)
    pbo, logits, is_best, oos_best = brute_force_pbo(x, 8)
    assert isinstance(res, PBOResult)
    assert res.n_combinations == 70 and res.n_obs == 64 and res.n_trials == 7 and res.n_splits == 8
    assert res.pbo == pbo
    np.testing.assert_allclose(res.logits, logits, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.is_best, is_best, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.oos_of_best, oos_best, rtol=1e-9, atol=1e-12)
    assert res.prob_oos_loss == np.mean(np.array(oos_best) < 0)


def test_pbo_custom_metric_matches_brute_force() -> None:
    x = small_matrix(3)

    def mean_metric(m: np.ndarray) -> np.ndarray:
        return m.mean(axis=0)

    res = pbo_cscv(x, n_splits=8, metric=mean_metric)
    pbo, logits, is_best, _ = brute_force_pbo(x, 8, mean_metric)
    assert res.pbo == pbo
    np.testing.assert_allclose(res.logits, logits, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.is_best, is_best, rtol=1e-12)


def test_pbo_custom_metric_sees_rows_in_time_order() -> None:
    x = np.arange(48, dtype=float)[:, None] * np.ones((1, 2))
    x[:, 1] *= -1
    seen: list[np.ndarray] = []

    def record(m: np.ndarray) -> np.ndarray:
        seen.append(m[:, 0].copy())
        return m.mean(axis=0)

    pbo_cscv(x, n_splits=4, metric=record)
    assert len(seen) == 2 * 6
    assert all(np.all(np.diff(rows) > 0) and len(rows) == 24 for rows in seen)


def test_pbo_is_a_coin_flip_for_pure_noise() -> None:
    noise = [np.random.default_rng(seed).normal(0, 0.01, (1600, 50)) for seed in range(8)]
    pbos = [pbo_cscv(x, n_splits=16).pbo for x in noise]
    assert pbos[0] == pytest.approx(0.5, abs=0.15)
    assert np.mean(pbos) == pytest.approx(0.5, abs=0.1)


def test_pbo_is_zero_for_a_real_edge() -> None:
    x = np.random.default_rng(11).normal(0, 0.01, (1600, 30))
    x[:, 17] += 0.003  # Sharpe 0.3 a bar; a half's Sharpe has a standard error of about 0.035
    res = pbo_cscv(x, n_splits=16)
    assert res.pbo == 0.0
    assert res.prob_oos_loss == 0.0
    assert np.all(res.logits > 0)


def test_pbo_is_one_when_in_sample_best_is_out_of_sample_worst() -> None:
    # Each trial is +mu on a random half of the 16 blocks and -mu on the others, plus +-mu alternating
    # inside every block; values are multiples of 2**-6, so every sum is exact. A split's OOS mean is
    # minus its IS mean and both halves have the same spread, so OOS Sharpe == -IS Sharpe exactly:
    # the IS winner is always (tied for) the OOS loser.
    s, n, length, mu = 16, 20, 10, 2.0**-7
    rng = np.random.default_rng(3)
    sign = -np.ones((s, n))
    for j in range(n):
        sign[rng.choice(s, s // 2, replace=False), j] = 1.0
    wiggle = np.where(np.arange(length) % 2 == 0, mu, -mu)
    x = (sign[:, None, :] * mu + wiggle[None, :, None]).reshape(s * length, n)
    for combo in [tuple(range(8)), (0, 2, 4, 6, 8, 10, 12, 14), (1, 3, 5, 7, 9, 11, 13, 15)]:
        rows = np.isin(np.arange(s * length) // length, combo)
        sr_is = x[rows].mean(0) / x[rows].std(0, ddof=1)
        sr_oos = x[~rows].mean(0) / x[~rows].std(0, ddof=1)
        np.testing.assert_allclose(sr_oos, -sr_is, rtol=1e-12)
        assert np.argmax(sr_is) in np.flatnonzero(sr_oos == sr_oos.min())
    res = pbo_cscv(x, n_splits=s)
    assert res.pbo > 0.9
    assert res.pbo == 1.0
    np.testing.assert_allclose(res.oos_of_best, -res.is_best, rtol=1e-12)
    assert res.as_dict()["degradation_slope"] == pytest.approx(-1.0, abs=1e-9)


def test_pbo_as_dict_holds_scalars_and_logit_quantiles() -> None:
    res = pbo_cscv(small_matrix(0), n_splits=8)
    d = res.as_dict()
    assert all(isinstance(v, int | float) for v in d.values())
    assert d["logit_median"] == pytest.approx(float(np.median(res.logits)))
    assert d["logit_q05"] <= d["logit_q25"] <= d["logit_median"] <= d["logit_q75"] <= d["logit_q95"]
    assert d["pbo"] == res.pbo and d["n_combinations"] == 70


def test_pbo_is_fast_for_16_splits_and_500_trials() -> None:
    x = np.random.default_rng(0).normal(0, 0.01, (2000, 500))
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        res = pbo_cscv(x, n_splits=16)
        best = min(best, time.perf_counter() - start)
    assert res.n_combinations == 12870 and res.logits.shape == (12870,)
    assert best < 1.0


# ------------------------------------------------------------------------------------ Monte Carlo
def test_observed_path_drawdown_and_return() -> None:
    res = bootstrap_trades(np.array([0.1, -0.5, 0.2]), n_sims=50, seed=1)
    assert res.max_drawdown["observed"] == pytest.approx(0.5, abs=1e-15)  # equity 1.1, 0.55, 0.66
    assert res.total_return["observed"] == pytest.approx(1.1 * 0.5 * 1.2 - 1, abs=1e-15)
    start_as_peak = bootstrap_trades(np.array([-0.1, 0.05]), n_sims=10)
    assert start_as_peak.max_drawdown["observed"] == pytest.approx(0.1, abs=1e-15)
    assert bootstrap_trades(np.array([0.1, 0.1]), n_sims=10).max_drawdown["observed"] == 0.0


def test_shuffle_keeps_total_return_and_varies_drawdown() -> None:
    trades = np.random.default_rng(8).normal(0.002, 0.02, 150)
    res = bootstrap_trades(trades, n_sims=2000, seed=4, method="shuffle")
    assert isinstance(res, MonteCarloResult)
    observed = float(np.prod(1 + trades) - 1)
    tr = res.total_return
    assert tr["observed"] == pytest.approx(observed, rel=1e-12)
    assert tr["low"] == tr["high"] == tr["mean"] == tr["median"] == tr["observed"]
    assert tr["p_loss"] == float(observed < 0)
    dd = res.max_drawdown
    assert 0 < dd["low"] < dd["median"] < dd["high"] < 1
    assert res.method == "shuffle" and res.n_trades == 150 and res.n_sims == 2000


def test_bootstrap_mean_total_return_matches_analytic_expectation() -> None:
    trades = np.random.default_rng(9).normal(0.003, 0.03, 60)
    n_sims = 20_000
    res = bootstrap_trades(trades, n_sims=n_sims, seed=5)
    mean1, mean2 = float(np.mean(1 + trades)), float(np.mean((1 + trades) ** 2))
    expect = mean1**60 - 1  # iid draws: E[prod(1 + r*)] = (1 + mean r)^n
    se = math.sqrt((mean2**60 - mean1**120) / n_sims)
    assert abs(res.total_return["mean"] - expect) < 5 * se


def two_trade_checks(res: MonteCarloResult) -> None:
    """Bootstrap of [0.1, -0.1]: totals 0.21, -0.01, -0.19 w.p. 1/4, 1/2, 1/4; drawdowns 0, 0.1, 0.19."""
    assert res.total_return["median"] == pytest.approx(-0.01, abs=1e-12)
    assert res.total_return["p_loss"] == pytest.approx(0.75, abs=0.015)
    assert res.total_return["mean"] == pytest.approx(0.25 * 0.21 - 0.5 * 0.01 - 0.25 * 0.19, abs=0.004)
    assert res.total_return["low"] == pytest.approx(-0.19, abs=1e-12)
    assert res.total_return["high"] == pytest.approx(0.21, abs=1e-12)
    assert res.max_drawdown["median"] == pytest.approx(0.1, abs=1e-12)
    assert res.max_drawdown["mean"] == pytest.approx(0.5 * 0.1 + 0.25 * 0.19, abs=0.003)
    assert res.max_drawdown["low"] == 0.0
    assert res.max_drawdown["high"] == pytest.approx(0.19, abs=1e-12)


def test_bootstrap_of_two_trades_matches_its_exact_distribution() -> None:
    two_trade_checks(bootstrap_trades(np.array([0.1, -0.1]), n_sims=10_000, seed=3))


def test_bootstrap_in_small_chunks_gives_the_same_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(of, "_MC_CHUNK_BYTES", 80 * 7)  # 7 simulations per chunk for 2 trades
    two_trade_checks(bootstrap_trades(np.array([0.1, -0.1]), n_sims=10_000, seed=3))


def test_monte_carlo_is_reproducible_by_seed() -> None:
    trades = np.random.default_rng(10).normal(0.001, 0.02, 80)
    for method in ("bootstrap", "shuffle"):
        a = bootstrap_trades(trades, n_sims=500, seed=7, method=method)
        b = bootstrap_trades(trades, n_sims=500, seed=7, method=method)
        c = bootstrap_trades(trades, n_sims=500, seed=8, method=method)
        assert a == b and a.as_dict() == b.as_dict()
        assert a.max_drawdown != c.max_drawdown
        assert a.seed == 7 and c.seed == 8


def test_bootstrap_interval_contains_observed_for_symmetric_trades() -> None:
    base = np.array([-0.03, -0.02, -0.01, 0.01, 0.02, 0.03] * 10)
    trades = np.random.default_rng(12).permutation(base)
    res = bootstrap_trades(trades, n_sims=5000, seed=2, confidence=0.9)
    tr, dd = res.total_return, res.max_drawdown
    assert tr["low"] < tr["observed"] < tr["high"]
    assert tr["low"] < 0 < tr["high"]
    assert dd["low"] < dd["observed"] < dd["high"]
    d = res.as_dict()
    assert d["total_return_low"] == tr["low"] and d["max_drawdown_high"] == dd["high"]
    assert d["confidence"] == 0.9 and d["method"] == "bootstrap"


# ------------------------------------------------------------------------------------ benchmark
def test_compare_to_benchmark_matches_pandas() -> None:
    rng = np.random.default_rng(13)
    bench = pd.Series(rng.normal(0.0004, 0.012, 500))
    strat = pd.Series(0.5 * bench.to_numpy() + rng.normal(0.0003, 0.006, 500))
    ppy = 252.0
    got = compare_to_benchmark(strat.to_numpy(), bench.to_numpy(), periods_per_year=ppy)

    def mdd(r: pd.Series) -> float:
        equity = (1 + r).cumprod()
        peak = equity.cummax().clip(lower=1.0)  # the starting equity 1.0 is a peak
        return float((1 - equity / peak).max())

    total, bench_total = float((1 + strat).prod() - 1), float((1 + bench).prod() - 1)
    diff = strat - bench
    want = {
        "total_return": total,
        "benchmark_return": bench_total,
        "excess_return": total - bench_total,
        "sharpe": strat.mean() / strat.std() * math.sqrt(ppy),
        "benchmark_sharpe": bench.mean() / bench.std() * math.sqrt(ppy),
        "information_ratio": diff.mean() / diff.std() * math.sqrt(ppy),
        "beta": strat.cov(bench) / bench.var(),
        "correlation": strat.corr(bench),
        "max_drawdown": mdd(strat),
        "benchmark_max_drawdown": mdd(bench),
        "win_rate_vs_benchmark": float((strat > bench).mean()),
    }
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-15), key
    assert 0.3 < got["beta"] < 0.7 and 0 < got["max_drawdown"] < got["benchmark_max_drawdown"]


def test_compare_to_benchmark_with_a_flat_series() -> None:
    strat = np.array([0.01, -0.02, 0.03, 0.0])
    got = compare_to_benchmark(strat, np.zeros(4), periods_per_year=12)  # a cash benchmark
    assert got["benchmark_return"] == 0.0 and got["benchmark_max_drawdown"] == 0.0
    assert math.isnan(got["beta"]) and math.isnan(got["correlation"]) and math.isnan(got["benchmark_sharpe"])
    assert got["excess_return"] == got["total_return"] == pytest.approx(1.01 * 0.98 * 1.03 - 1, abs=1e-15)
    assert got["information_ratio"] == pytest.approx(got["sharpe"], rel=1e-12)
    assert got["win_rate_vs_benchmark"] == 0.5
    assert got["max_drawdown"] == pytest.approx(0.02, abs=1e-15)
    same = compare_to_benchmark(strat, strat, periods_per_year=12)
    assert math.isnan(same["information_ratio"]) and same["beta"] == pytest.approx(1.0, rel=1e-12)


# ------------------------------------------------------------------------------------ bad input
R = skewed_returns(0, 100)
X = np.random.default_rng(0).normal(0, 0.01, (64, 5))

BAD_INPUTS = [
    ("sharpe 2-D", DataError, lambda: sharpe_ratio(np.ones((3, 2)))),
    ("sharpe inf", DataError, lambda: sharpe_ratio(np.array([0.01, np.inf, 0.02]))),
    ("psr benchmark nan", ConfigError, lambda: probabilistic_sharpe_ratio(R, math.nan)),
    ("emax zero trials", ConfigError, lambda: expected_max_sharpe(0, 1.0)),
    ("emax float trials", ConfigError, lambda: expected_max_sharpe(2.5, 1.0)),
    ("emax bool trials", ConfigError, lambda: expected_max_sharpe(True, 1.0)),
    ("emax negative var", ConfigError, lambda: expected_max_sharpe(10, -0.1)),
    ("emax inf var", ConfigError, lambda: expected_max_sharpe(10, math.inf)),
    ("dsr zero trials", ConfigError, lambda: deflated_sharpe_ratio(R, n_trials=0, sr_variance=0.01)),
    ("dsr nan var", ConfigError, lambda: deflated_sharpe_ratio(R, n_trials=5, sr_variance=math.nan)),
    ("significance ppy", ConfigError, lambda: sharpe_significance(R, periods_per_year=0)),
    ("pbo 1-D", DataError, lambda: pbo_cscv(R)),
    ("pbo one trial", DataError, lambda: pbo_cscv(X[:, :1])),
    ("pbo odd splits", ConfigError, lambda: pbo_cscv(X, n_splits=5)),
    ("pbo zero splits", ConfigError, lambda: pbo_cscv(X, n_splits=0)),
    ("pbo too many splits", ConfigError, lambda: pbo_cscv(np.zeros((1000, 3)), n_splits=22)),
    ("pbo too few rows", ConfigError, lambda: pbo_cscv(X[:31], n_splits=16)),
    ("pbo inf", DataError, lambda: pbo_cscv(np.where(X > 0.02, np.inf, X), n_splits=4)),
    ("pbo metric shape", ConfigError, lambda: pbo_cscv(X, n_splits=4, metric=lambda m: m.mean())),
    ("mc no trades", DataError, lambda: bootstrap_trades(np.array([]))),
    ("mc method", ConfigError, lambda: bootstrap_trades(R, method="permute")),
    ("mc confidence", ConfigError, lambda: bootstrap_trades(R, confidence=1.0)),
    ("mc sims", ConfigError, lambda: bootstrap_trades(R, n_sims=0)),
    ("mc seed", ConfigError, lambda: bootstrap_trades(R, seed=-1)),
    ("mc nan trade", DataError, lambda: bootstrap_trades(np.array([0.01, np.nan]))),
    ("mc ruin", DataError, lambda: bootstrap_trades(np.array([0.01, -1.5]))),
    ("mc 2-D", DataError, lambda: bootstrap_trades(np.ones((2, 2)))),
    ("bench length", DataError, lambda: compare_to_benchmark(R, R[:-1], periods_per_year=252)),
    ("bench nan", DataError, lambda: compare_to_benchmark(R, np.where(R > 0, np.nan, R), periods_per_year=9)),
    ("bench short", DataError, lambda: compare_to_benchmark(R[:1], R[:1], periods_per_year=252)),
    ("bench ppy", ConfigError, lambda: compare_to_benchmark(R, R, periods_per_year=-1)),
]


@pytest.mark.parametrize(("case", "exc", "call"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_one_line_error(case: str, exc: type[Exception], call) -> None:
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message, case


def test_error_messages_name_the_fix() -> None:
    with pytest.raises(DataError, match="no out-of-sample trades to resample; widen the test windows"):
        bootstrap_trades(np.array([]))
    with pytest.raises(ConfigError, match="bootstrap, shuffle"):
        bootstrap_trades(R, method="perm")
    with pytest.raises(ConfigError, match="use fewer splits"):
        pbo_cscv(X[:31], n_splits=16)
