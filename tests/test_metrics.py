"""Backtest metrics, each checked against an independent computation: by hand, plain numpy, vectorbt."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from workbench.backtest.metrics import (
    BENCHMARK_KEYS,
    METRIC_KEYS,
    compute_metrics,
    drawdown_nb,
    equity_stats,
    equity_stats_nb,
    format_metric,
    metrics_frame,
    na_reason,
    periods_per_year,
    trade_stats,
    trade_stats_nb,
)
from workbench.errors import ConfigError

REL = 1e-9


def close(a: float, b: float, rel: float = REL) -> bool:
    """Equal within `rel`, with NaN == NaN and inf == inf (metrics use both on purpose)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-15)


def assert_close(got: dict, want: dict, rel: float = REL) -> None:
    bad = {k: (got[k], w) for k, w in want.items() if not close(float(got[k]), float(w), rel)}
    assert not bad, bad


def random_equity(seed: int, n: int, *, ties: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    value = 1000.0 * np.cumprod(1.0 + rng.normal(0.0003, 0.01, n))
    if ties:  # flat stretches and exact returns to a peak, where drawdown bookkeeping is delicate
        value = np.round(value / 5.0) * 5.0
    return value


# ------------------------------------------------------------------ (a) by hand
def test_hand_computed_tiny_series() -> None:
    # value 100 -> 110 -> 99 -> 121 from init_cash 100, 252 bars a year
    ppy = 252
    r = [Fraction(0), Fraction(1, 10), Fraction(-1, 10), Fraction(22, 99)]  # 110/100-1, 99/110-1, 121/99-1
    mean = sum(r) / 4
    assert mean == Fraction(1, 18)
    var = sum((x - mean) ** 2 for x in r) / 3  # ddof=1
    std = math.sqrt(var)
    annual = 1.21 ** (ppy / 4) - 1  # growth 121/100 over 4 bars
    want = {
        "total_return": 0.21,
        "annual_return": annual,
        "annual_volatility": std * math.sqrt(ppy),
        "sharpe": float(mean) / std * math.sqrt(ppy),
        # downside deviation sqrt((0+0+0.01+0)/4) = 0.05 a bar: sortino = (1/18)*252/(0.05*sqrt(252))
        "sortino": 10 / 9 * math.sqrt(ppy),
        "max_drawdown": -0.1,  # 110 -> 99
        "max_drawdown_duration": 1,  # one bar (99) under the 110 peak, recovered at 121
        "calmar": annual / 0.1,
    }
    assert_close(equity_stats(np.array([100.0, 110.0, 99.0, 121.0]), 100.0, ppy), want)
    assert math.isclose(want["sortino"], 17.6383, rel_tol=1e-5)


def test_init_cash_is_not_a_peak() -> None:
    # vectorbt's convention: the drawdown starts from the first value, not from init_cash
    s = equity_stats(np.array([90.0, 95.0, 100.0]), 100.0, 252)
    assert s["total_return"] == 0.0
    assert s["max_drawdown"] == 0.0
    assert s["max_drawdown_duration"] == 0
    assert math.isnan(s["calmar"])


# ------------------------------------------------------------------ (b) plain numpy reimplementation
def reference_stats(value: np.ndarray, init_cash: float, ppy: float) -> dict[str, float]:
    """Textbook definitions written from scratch with numpy and Python loops."""
    prev = np.concatenate([[init_cash], value[:-1]])
    r = value / prev - 1.0
    n = len(r)
    mean, std = r.mean(), r.std(ddof=1)
    downside = math.sqrt(np.mean(np.minimum(r, 0.0) ** 2))
    running_max = np.maximum.accumulate(value)
    dd = value / running_max - 1.0
    # longest run of consecutive bars strictly below the running peak
    longest = run = 0
    for v, m in zip(value, running_max, strict=True):
        run = run + 1 if v < m else 0
        longest = max(longest, run)
    annual = (value[-1] / init_cash) ** (ppy / n) - 1.0
    max_dd = float(dd.min())
    return {
        "total_return": value[-1] / init_cash - 1.0,
        "annual_return": annual,
        "annual_volatility": std * math.sqrt(ppy),
        "sharpe": mean / std * math.sqrt(ppy),
        "sortino": mean * ppy / (downside * math.sqrt(ppy)),
        "max_drawdown": max_dd,
        "max_drawdown_duration": longest,
        "calmar": annual / abs(max_dd) if max_dd else math.nan,
    }


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("ties", [False, True])
def test_against_numpy_reference(seed: int, ties: bool) -> None:
    value = random_equity(seed, 3000, ties=ties)
    for ppy in (252.0, 8760.0, 1755.2):
        assert_close(equity_stats(value, 1000.0, ppy), reference_stats(value, 1000.0, ppy))


# ------------------------------------------------------------------ (c) vectorbt's own accessor
@pytest.fixture(scope="module")
def vbt():
    import vectorbt

    return vectorbt


def vbt_stats(vbt, value: np.ndarray, init_cash: float, freq: str, year_freq: pd.Timedelta) -> tuple:
    acc = pd.Series.vbt.returns.from_value(
        pd.Series(value), init_value=init_cash, freq=freq, year_freq=year_freq
    )
    want = {
        "total_return": float(acc.total()),
        "annual_return": float(acc.annualized()),
        "annual_volatility": float(acc.annualized_volatility()),
        "sharpe": float(acc.sharpe_ratio()),
        "sortino": float(acc.sortino_ratio()),
        "max_drawdown": float(acc.max_drawdown()),
        "calmar": float(acc.calmar_ratio()),
    }
    durations = acc.drawdowns.duration.values
    want["max_drawdown_duration"] = int(durations.max()) if len(durations) else 0
    return want, float(acc.ann_factor)


@pytest.mark.parametrize(
    ("seed", "ties", "freq", "year_freq", "ppy"),
    [
        (0, False, "1D", pd.Timedelta(days=252), 252.0),
        (1, True, "1D", pd.Timedelta(days=252), 252.0),
        (2, False, "1h", pd.Timedelta(days=365), 8760.0),
        (3, False, "1D", pd.Timedelta(days=251.6), 251.6),  # the XNYS daily factor
        (4, True, "1min", pd.Timedelta(days=365), 525600.0),
    ],
)
def test_against_vectorbt(vbt, seed: int, ties: bool, freq: str, year_freq: pd.Timedelta, ppy: float) -> None:
    value = random_equity(seed, 2000, ties=ties)
    want, ann_factor = vbt_stats(vbt, value, 1000.0, freq, year_freq)
    assert ann_factor == pytest.approx(ppy, rel=1e-12)
    assert_close(equity_stats(value, 1000.0, ppy), want)


def test_edge_cases_match_vectorbt_without_warnings(vbt) -> None:
    cases = [
        np.full(50, 100.0),  # flat equity: std 0 -> no sharpe/sortino (vectorbt: +inf), calmar NaN
        np.array([100.0, 100.0]),
        np.array([105.0, 105.0, 105.0]),  # constant after a first jump: std > 0
        np.linspace(100.0, 200.0, 30),  # only gains: downside 0 -> no sortino (vectorbt: +inf)
        np.array([100.0, 90.0, 80.0, 70.0]),  # only losses, never recovered
    ]
    for value in cases:
        want, _ = vbt_stats(vbt, value, 100.0, "1D", pd.Timedelta(days=252))
        # where vectorbt divides by a zero deviation it gives +inf; an undefined ratio is NaN here
        want = {k: math.nan if k in ("sharpe", "sortino") and math.isinf(v) else v for k, v in want.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = equity_stats(value, 100.0, 252.0)
        assert_close(got, want)
    flat = equity_stats(np.full(50, 100.0), 100.0, 252.0)
    assert math.isnan(flat["sharpe"]) and flat["annual_volatility"] == 0.0 and math.isnan(flat["calmar"])


def test_a_flat_equity_has_no_sharpe_and_tables_say_why() -> None:
    # a window without trades: the equity never moves; its Sharpe is undefined, never +inf
    flat = np.full(40, 1000.0)
    no_trades = pd.DataFrame({"pnl": [], "return": [], "status": []})
    m = compute_metrics(flat, 1000.0, 252.0, trades=no_trades, exposure=np.zeros(40))
    assert math.isnan(m["sharpe"]) and math.isnan(m["sortino"]) and math.isnan(m["calmar"])
    assert not any(math.isinf(v) for v in m.values())
    assert na_reason("sharpe", m) == "no trades" and na_reason("win_rate", m) == "no trades"
    assert na_reason("total_return", m) == ""
    shown = metrics_frame(m, formatted=True).set_index("metric")["value"]
    assert shown["sharpe"] == "n/a (no trades)" and shown["sortino"] == "n/a (no trades)"
    assert shown["profit_factor"] == "n/a (no trades)" and shown["total_return"] == "0.00%"
    assert format_metric("sharpe", m["sharpe"]) == "n/a"  # no reason given, none invented
    # the curve moves but its returns do not vary (exactly +100% a bar): no Sharpe either
    steady = 1000.0 * 2.0 ** np.arange(1, 41)
    m = compute_metrics(steady, 1000.0, 252.0)
    assert math.isnan(m["sharpe"]) and na_reason("sharpe", m) == "constant returns"
    assert na_reason("sortino", m) == "constant returns" and na_reason("calmar", m) == "no drawdown"
    assert math.isnan(equity_stats_nb(flat, 1000.0, 252.0)[3])  # the sweep kernel's path too


def test_tiny_arrays_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = equity_stats(np.array([]), 100.0, 252.0)
        one = equity_stats(np.array([110.0]), 100.0, 252.0)
        m = compute_metrics(np.array([]), 100.0, 252.0, exposure=np.array([]), benchmark=np.array([]))
    assert all(math.isnan(v) for k, v in empty.items() if k != "max_drawdown_duration")
    assert empty["max_drawdown_duration"] == 0
    assert one["total_return"] == pytest.approx(0.1)
    assert one["annual_return"] == pytest.approx(1.1**252 - 1)
    assert math.isnan(one["sharpe"]) and math.isnan(one["sortino"]) and math.isnan(one["annual_volatility"])
    assert one["max_drawdown"] == 0.0 and math.isnan(one["calmar"])
    assert list(m) == list(METRIC_KEYS)


def test_zero_equity_follows_vectorbt_returns(vbt) -> None:
    # equity wiped out and staying at 0: returns -1 then 0/0 -> 0, as vectorbt's get_return_nb
    value = np.array([100.0, 50.0, 0.0, 0.0])
    want, _ = vbt_stats(vbt, value, 100.0, "1D", pd.Timedelta(days=252))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_close(equity_stats(value, 100.0, 252.0), want)


# ------------------------------------------------------------------ (d) periods per year
@pytest.mark.parametrize(
    ("tf", "want"),
    [("1m", 525600.0), ("5m", 105120.0), ("15m", 35040.0), ("1h", 8760.0), ("4h", 2190.0), ("1d", 365.0)],
)
def test_periods_per_year_crypto_exact(tf: str, want: float) -> None:
    assert periods_per_year(tf, "24/7") == want


def test_periods_per_year_xnys() -> None:
    daily = periods_per_year("1d", "XNYS")
    assert 250 <= daily <= 254
    # hourly bars are UTC-hour buckets: 09:30-16:00 ET touches 7 of them on a full session
    hourly = periods_per_year("1h", "XNYS")
    assert 6.5 * daily < hourly <= 7 * daily
    minute = periods_per_year("1m", "XNYS")
    assert 385 * daily < minute < 390 * daily  # 390 minutes a session, minus the early closes
    assert periods_per_year("60m", "XNYS") == hourly  # the same timeframe spelt differently
    assert periods_per_year("1d", "XNYS") is daily  # cached


def test_periods_per_year_errors() -> None:
    with pytest.raises(ConfigError, match="calendar"):
        periods_per_year("1d", "NOPE")
    with pytest.raises(ConfigError, match="calendar"):
        periods_per_year("1d", "")
    with pytest.raises(ConfigError, match="timeframe"):
        periods_per_year("1x", "24/7")


# ------------------------------------------------------------------ (e) trades
def test_trade_stats_hand_written() -> None:
    pnl = np.array([100.0, -50.0, 0.0, 200.0, -25.0])
    ret = np.array([0.10, -0.05, 0.0, 0.20, -0.025])
    got = trade_stats(pnl, ret)
    assert got == pytest.approx(
        {
            "n_trades": 5,
            "win_rate": 2 / 5,  # the break-even trade counts as a trade but not as a win
            "profit_factor": 300 / 75,
            "expectancy": 225 / 5,
            "avg_win": 0.15,
            "avg_loss": -0.0375,
            "best_trade": 0.20,
            "worst_trade": -0.05,
        },
        rel=1e-12,
    )
    assert isinstance(got["n_trades"], int)


def test_trade_stats_edge_cases() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        none = trade_stats(np.array([]), np.array([]))
        wins = trade_stats(np.array([5.0, 10.0]), np.array([0.05, 0.1]))
        flat = trade_stats(np.array([0.0]), np.array([0.0]))
        losses = trade_stats(np.array([-5.0]), np.array([-0.05]))
    assert none["n_trades"] == 0 and all(math.isnan(v) for k, v in none.items() if k != "n_trades")
    assert wins["profit_factor"] == math.inf and wins["win_rate"] == 1.0 and math.isnan(wins["avg_loss"])
    assert math.isnan(flat["profit_factor"]) and flat["win_rate"] == 0.0 and flat["expectancy"] == 0.0
    assert losses["profit_factor"] == 0.0 and math.isnan(losses["avg_win"])
    with pytest.raises(ConfigError, match="per trade"):
        trade_stats(np.array([1.0]), np.array([]))


def test_trade_stats_nb_callable_from_numba() -> None:
    import numba

    @numba.njit
    def win_rate_of(pnl: np.ndarray, ret: np.ndarray) -> float:
        return trade_stats_nb(pnl, ret)[1]

    assert win_rate_of(np.array([1.0, -1.0, 2.0, 3.0]), np.array([0.1, -0.1, 0.2, 0.3])) == 0.75


def test_trade_stats_against_vectorbt_trades(vbt) -> None:
    from vectorbt.base.array_wrapper import ArrayWrapper
    from vectorbt.portfolio.enums import trade_dt
    from vectorbt.portfolio.trades import Trades

    rng = np.random.default_rng(7)
    n = 40
    pnl = np.round(rng.normal(1.0, 10.0, n), 1)
    pnl[::9] = 0.0
    ret = pnl / 1000.0
    status = (rng.random(n) < 0.9).astype(np.int64)  # 1 closed, 0 open
    rec = np.zeros(n, dtype=trade_dt)
    rec["id"], rec["pnl"], rec["return"], rec["status"] = np.arange(n), pnl, ret, status
    rec["entry_idx"], rec["exit_idx"] = np.arange(n), np.arange(n) + 1
    idx = pd.date_range("2024-01-01", periods=n + 1, freq="D")
    wrapper = ArrayWrapper(index=idx, columns=pd.Index(["a"]), ndim=1, freq="1D")
    closed = Trades(wrapper, rec, close=pd.Series(np.ones(n + 1), index=idx)).closed
    trades = pd.DataFrame({"pnl": pnl, "return": ret, "status": np.where(status == 1, "closed", "open")})
    got = compute_metrics(np.full(n + 1, 100.0), 100.0, 252.0, trades=trades)
    want = {
        "n_trades": closed.count(),
        "win_rate": closed.win_rate(),
        "profit_factor": closed.profit_factor(),
        "expectancy": closed.expectancy(),
        "avg_win": closed.winning.returns.mean(),
        "avg_loss": closed.losing.returns.mean(),
        "best_trade": closed.returns.max(),
        "worst_trade": closed.returns.min(),
    }
    assert_close(got, want)
    assert got["n_open_trades"] == int((status == 0).sum())


# ------------------------------------------------------------------ (f) drawdown duration
def test_drawdown_never_recovered() -> None:
    value = np.array([100.0, 120.0, 90.0, 80.0, 85.0])
    max_dd, dur, peak, end = drawdown_nb(value)
    assert (max_dd, dur, peak, end) == (pytest.approx(80 / 120 - 1), 3, 1, 4)  # bars 2..4 under water
    idx = pd.date_range("2024-01-01", periods=5, freq="D")
    m = compute_metrics(pd.Series(value, index=idx), 100.0, 365.0)
    assert m["max_drawdown_duration"] == 3 and m["max_drawdown_days"] == 3.0


def test_drawdown_recovered_and_longest_wins() -> None:
    # a 1-bar drawdown recovered at bar 3, then a 3-bar one recovered exactly at the old peak (bar 8)
    value = np.array([100.0, 110.0, 105.0, 112.0, 100.0, 101.0, 99.0, 111.0, 112.0, 113.0])
    max_dd, dur, peak, end = drawdown_nb(value)
    assert (dur, peak, end) == (4, 3, 8)
    assert max_dd == pytest.approx(99 / 112 - 1)
    idx = pd.DatetimeIndex(pd.date_range("2024-01-01", periods=10, freq="D"))
    m = compute_metrics(value, 100.0, 365.0, index=idx)
    assert m["max_drawdown_duration"] == 4
    assert m["max_drawdown_days"] == 5.0  # wall-clock from the peak bar (3) to the recovery bar (8)


def test_drawdown_equal_values_move_the_peak() -> None:
    # 100, 100, 90, 100: the peak is the later 100 (vectorbt), one bar under water, then recovered
    assert drawdown_nb(np.array([100.0, 100.0, 90.0, 100.0]))[1:] == (1, 1, 3)
    assert drawdown_nb(np.array([100.0, 101.0, 102.0]))[1:] == (0, -1, -1)


def test_drawdown_days_on_an_irregular_index() -> None:
    idx = pd.DatetimeIndex(["2024-01-05", "2024-01-08", "2024-01-09", "2024-01-10"], tz="UTC")  # Fri..Wed
    m = compute_metrics(np.array([100.0, 95.0, 97.0, 101.0]), 100.0, 252.0, index=idx)
    assert m["max_drawdown_duration"] == 2 and m["max_drawdown_days"] == 5.0


# ------------------------------------------------------------------ compute_metrics
def test_compute_metrics_assembles_everything() -> None:
    value = random_equity(11, 500)
    ppy = 252.0
    trades = pd.DataFrame(
        {
            "pnl": [10.0, -4.0, 6.0, 3.0],
            "return": [0.01, -0.004, 0.006, 0.003],
            "status": ["closed", "closed", "closed", "open"],
        }
    )
    exposure = np.where(np.arange(500) % 4 == 0, 0.0, 0.8)
    bench = 1000.0 * np.cumprod(np.full(500, 1.0001))
    idx = pd.date_range("2020-01-01", periods=500, freq="B", tz="UTC")
    m = compute_metrics(
        value, 1000.0, ppy, trades, exposure, traded_value=50_000.0, benchmark=bench, index=idx
    )
    assert list(m) == list(METRIC_KEYS)
    assert_close(m, reference_stats(value, 1000.0, ppy))
    assert m["n_trades"] == 3 and m["n_open_trades"] == 1
    assert m["win_rate"] == pytest.approx(2 / 3) and m["profit_factor"] == pytest.approx(16 / 4)
    assert m["expectancy"] == pytest.approx(4.0) and m["best_trade"] == pytest.approx(0.01)
    assert m["exposure"] == pytest.approx(0.75) and m["avg_gross_exposure"] == pytest.approx(0.6)
    assert m["turnover"] == pytest.approx(50_000.0 / value.mean() / (500 / ppy))
    assert m["benchmark_return"] == pytest.approx(1.0001**500 - 1)
    assert m["excess_return"] == pytest.approx(value[-1] / 1000.0 - 1 - (1.0001**500 - 1))
    _, _, peak, end = drawdown_nb(value)
    assert m["max_drawdown_days"] == (idx[end] - idx[peak]).total_seconds() / 86400


def test_compute_metrics_without_optional_inputs() -> None:
    m = compute_metrics(pd.Series(random_equity(5, 100)), 1000.0, 252.0)
    assert list(m) == list(METRIC_KEYS)
    optional = ("max_drawdown_days", "win_rate", "n_trades", "n_open_trades", "exposure", "benchmark_return")
    assert all(math.isnan(m[k]) for k in optional)
    assert m["turnover"] == 0.0
    empty = compute_metrics(
        random_equity(5, 100), 1000.0, 252.0, trades=pd.DataFrame(columns=["pnl", "return", "status"])
    )
    assert empty["n_trades"] == 0 and empty["n_open_trades"] == 0 and math.isnan(empty["win_rate"])


def test_compute_metrics_rejects_bad_inputs() -> None:
    value = random_equity(5, 10)
    with pytest.raises(ConfigError, match="periods per year"):
        compute_metrics(value, 1000.0, 0.0)
    with pytest.raises(ConfigError, match="exposure"):
        compute_metrics(value, 1000.0, 252.0, exposure=np.zeros(3))
    with pytest.raises(ConfigError, match="index"):
        compute_metrics(value, 1000.0, 252.0, index=pd.date_range("2024-01-01", periods=3))
    with pytest.raises(ConfigError, match="status"):
        compute_metrics(value, 1000.0, 252.0, trades=pd.DataFrame({"pnl": [1.0], "return": [0.1]}))


# ------------------------------------------------------------------ against a benchmark
def _returns_by_hand(value: np.ndarray, init_cash: float) -> np.ndarray:
    return value / np.concatenate([[init_cash], value[:-1]]) - 1.0


@pytest.mark.parametrize("seed", range(5))
def test_alpha_beta_tracking_error_and_ir_equal_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, ppy, cash = 300, 252.0, 1000.0
    b = rng.normal(0.0004, 0.012, n)
    r = rng.uniform(0.2, 1.5) * b + rng.normal(0.0002, 0.006, n)
    value, bench = cash * np.cumprod(1 + r), cash * np.cumprod(1 + b)
    m = compute_metrics(value, cash, ppy, benchmark=bench)
    rs, bs = _returns_by_hand(value, cash), _returns_by_hand(bench, cash)
    slope, intercept = np.polyfit(bs, rs, 1)
    active = rs - bs
    te = active.std(ddof=1) * math.sqrt(ppy)
    want = {"beta": slope, "alpha": intercept * ppy, "tracking_error": te,
            "information_ratio": active.mean() * ppy / te,
            "benchmark_return": bench[-1] / cash - 1, "excess_return": (value[-1] - bench[-1]) / cash}
    assert_close(m, want, rel=1e-7)
    assert list(m) == list(METRIC_KEYS) and set(BENCHMARK_KEYS) <= set(m)
    shown = metrics_frame(m, formatted=True).set_index("metric")["value"]
    assert shown["alpha"] == f"{m['alpha']:.2%}" and shown["tracking_error"] == f"{te:.2%}"
    assert shown["beta"] == f"{slope:,.2f}" and shown["information_ratio"] == f"{m['information_ratio']:,.2f}"


def test_a_benchmark_equal_to_the_strategy() -> None:
    value = random_equity(3, 200)
    m = compute_metrics(value, 1000.0, 252.0, benchmark=value.copy())
    assert m["beta"] == 1.0 and m["alpha"] == 0.0 and m["tracking_error"] == 0.0
    assert math.isnan(m["information_ratio"]) and na_reason("information_ratio", m) == "no tracking error"
    shown = metrics_frame(m, formatted=True).set_index("metric")["value"]
    assert shown["information_ratio"] == "n/a (no tracking error)" and shown["excess_return"] == "0.00%"


def test_benchmark_figures_that_are_undefined_say_why() -> None:
    value = random_equity(4, 100)
    cash = compute_metrics(value, 1000.0, 252.0, benchmark=np.full(100, 1000.0))  # a flat benchmark
    assert math.isnan(cash["beta"]) and math.isnan(cash["alpha"])
    assert na_reason("beta", cash) == na_reason("alpha", cash) == "constant benchmark"
    r = _returns_by_hand(value, 1000.0)  # against cash the active return is the strategy's own
    assert cash["tracking_error"] == pytest.approx(r.std(ddof=1) * math.sqrt(252), rel=1e-12)
    assert cash["information_ratio"] == pytest.approx(cash["sharpe"], rel=1e-12)
    none = compute_metrics(value, 1000.0, 252.0)
    assert all(math.isnan(none[k]) and na_reason(k, none) == "no benchmark" for k in BENCHMARK_KEYS)
    one = compute_metrics(value[:1], 1000.0, 252.0, benchmark=value[:1])
    assert all(na_reason(k, one) == "fewer than 2 bars" for k in ("alpha", "beta", "information_ratio"))
    with pytest.raises(ConfigError, match="benchmark has 99 values but value has 100 bars") as err:
        compute_metrics(value, 1000.0, 252.0, benchmark=value[:-1])
    assert "\n" not in str(err.value)


def test_metrics_frame() -> None:
    m = compute_metrics(random_equity(5, 100), 1000.0, 252.0)
    frame = metrics_frame(m)
    assert list(frame.columns) == ["metric", "value"]
    assert frame["metric"].tolist() == list(METRIC_KEYS)
    assert frame.set_index("metric")["value"]["sharpe"] == m["sharpe"]


def test_kernel_returns_plain_floats() -> None:
    out = equity_stats_nb(random_equity(1, 100), 1000.0, 252.0)
    assert len(out) == 8 and all(isinstance(x, float) for x in out)


def test_metrics_frame_formatted_for_reports() -> None:
    m = {"total_return": 0.1234, "sharpe": 1.23456, "n_trades": 12.0, "max_drawdown": -0.2,
         "calmar": math.nan, "max_drawdown_days": 3.25, "turnover": 4.0}
    frame = metrics_frame(m, formatted=True)
    assert frame["value"].tolist() == ["12.34%", "1.23", "12", "-20.00%", "n/a", "3.2 days", "4.00 x/yr"]
    assert metrics_frame(m)["value"].iloc[0] == 0.1234  # raw numbers unless asked
