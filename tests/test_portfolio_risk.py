"""Risk limits at a rebalance: each limit on hand-made returns against plain numpy (volatility after
targeting is the target, VaR / CVaR after scaling are their limits and np.quantile's numbers, the
correlation cap drops the known asset), risk contributions are w_i (Cw)_i / w'Cw and about equal for risk
parity, a rebalance's targets and report see nothing after its bar, and a vol-targeted book of the demo
equities backtests end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.backtest import Allocator, Costs, simulate_weights
from workbench.backtest.metrics import periods_per_year
from workbench.backtest.portfolio_risk import REPORT_COLUMNS, RiskLimits, apply_limits
from workbench.backtest.rebalance import allocate, allocation_weights
from workbench.errors import ConfigError, DataError

PPY = 252.0


def _returns(n: int = 300, m: int = 4, seed: int = 1) -> pd.DataFrame:
    """Seeded daily returns with a common factor, so the assets are correlated."""
    rng = np.random.default_rng(seed)
    market = rng.normal(0.0004, 0.01, (n, 1))
    x = market * np.linspace(0.6, 1.4, m) + rng.normal(0.0, 1.0, (n, m)) * np.linspace(0.006, 0.02, m)
    return pd.DataFrame(x, columns=[f"S{i}" for i in range(m)],
                        index=pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC"))


# the definitions, by hand with numpy
def _vol(w: np.ndarray, r: np.ndarray) -> float:
    return float(np.sqrt(w @ np.cov(r.T) @ w * PPY))


def _var(w: np.ndarray, r: np.ndarray, alpha: float = 0.95) -> float:
    return -float(np.quantile(r @ w, 1 - alpha))


def _cvar(w: np.ndarray, r: np.ndarray, alpha: float = 0.95) -> float:
    p = r @ w
    return -float(p[p <= np.quantile(p, 1 - alpha)].mean())


W = pd.Series([0.4, 0.3, 0.2, 0.1], index=["S0", "S1", "S2", "S3"])


def test_vol_targeting_reaches_the_target_and_levers_only_when_allowed() -> None:
    r = _returns()
    x = r.iloc[-100:].to_numpy()
    v0 = _vol(W.to_numpy(), x)
    assert 0.12 < v0 < 0.3  # the target below sits under it, the second one above it
    down = apply_limits(W, r, RiskLimits(vol_target=0.1, window=100, periods_per_year=PPY))
    assert _vol(down.weights.to_numpy(), x) == pytest.approx(0.1, rel=1e-12)
    np.testing.assert_allclose(down.weights.to_numpy(), W.to_numpy() * 0.1 / v0, rtol=1e-12)
    assert down.report["vol_before"] == pytest.approx(v0, rel=1e-12)
    assert down.report["bound"] == "vol_target" and down.report["scale"] == pytest.approx(0.1 / v0)
    capped = apply_limits(W, r, RiskLimits(vol_target=0.4, window=100, periods_per_year=PPY))
    pd.testing.assert_series_equal(capped.weights, W.rename("weight"))  # never above the allocator's gross
    assert capped.report["bound"] == "max_leverage" and capped.report["scale"] == 1.0
    up = apply_limits(W, r, RiskLimits(vol_target=0.4, max_leverage=3.0, window=100, periods_per_year=PPY))
    assert _vol(up.weights.to_numpy(), x) == pytest.approx(0.4, rel=1e-12)
    assert up.report["gross_after"] == pytest.approx(0.4 / v0) and up.report["bound"] == "vol_target"


def test_var_and_cvar_limits_scale_down_to_the_limit_as_numpy_computes_it() -> None:
    r = _returns(seed=2)
    x = r.iloc[-150:].to_numpy()
    w0 = W.to_numpy()
    var0, cvar0 = _var(w0, x, 0.9), _cvar(w0, x, 0.9)
    assert cvar0 > var0 > 0
    by_var = apply_limits(W, r, RiskLimits(var_limit=var0 / 2, alpha=0.9, window=150, periods_per_year=PPY))
    w = by_var.weights.to_numpy()
    assert abs(_var(w, x, 0.9) - var0 / 2) < 1e-12 and by_var.report["bound"] == "var"
    assert abs(by_var.report["var_after"] - var0 / 2) < 1e-12
    assert by_var.report["var_before"] == pytest.approx(var0, abs=1e-15)
    by_cvar = apply_limits(W, r, RiskLimits(cvar_limit=0.01, alpha=0.9, window=150, periods_per_year=PPY))
    w = by_cvar.weights.to_numpy()
    assert abs(_cvar(w, x, 0.9) - 0.01) < 1e-12 and by_cvar.report["bound"] == "cvar"
    assert abs(by_cvar.report["cvar_after"] - 0.01) < 1e-12
    loose = apply_limits(W, r, RiskLimits(cvar_limit=cvar0 * 2, alpha=0.9, window=150, periods_per_year=PPY))
    pd.testing.assert_series_equal(loose.weights, W.rename("weight"))  # under its limit: untouched
    assert loose.report["bound"] == "none"
    # a vol target levering up, then the VaR limit holding it back: the smaller scale wins
    both = apply_limits(W, r, RiskLimits(vol_target=1.0, max_leverage=4.0, var_limit=0.03,
                                         window=150, periods_per_year=PPY))
    w = both.weights.to_numpy()
    assert abs(_var(w, x) - 0.03) < 1e-12 and both.report["bound"] == "var"
    assert _vol(w, x) < 1.0 and both.report["scale"] > 1.0


def _three() -> pd.DataFrame:
    """A, C independent; B their sum: corr(A, B) = corr(B, C) ~ 0.71, corr(A, C) ~ 0."""
    rng = np.random.default_rng(4)
    a, c = rng.normal(0, 0.01, 500), rng.normal(0, 0.01, 500)
    return pd.DataFrame({"A": a, "B": a + c, "C": c})


def test_the_correlation_cap_drops_the_smaller_of_a_pair_greedily_by_weight() -> None:
    r = _three()
    corr = np.corrcoef(r.to_numpy().T)
    assert corr[0, 1] > 0.6 and corr[1, 2] > 0.6 and abs(corr[0, 2]) < 0.1
    limits = RiskLimits(corr_cap=0.6, periods_per_year=PPY)
    w = pd.Series([0.4, 0.35, 0.25], index=["A", "B", "C"])
    # A kept; B above the cap with A: dropped; C is compared with the kept A only: kept
    got = apply_limits(w, r, limits)
    np.testing.assert_allclose(got.weights.to_numpy(), [0.4 / 0.65, 0.0, 0.25 / 0.65], rtol=1e-12)
    assert got.report["dropped"] == "B" and got.report["max_corr"] == pytest.approx(corr[0, 2], abs=1e-12)
    # B largest: both A and C go
    got = apply_limits(pd.Series([0.3, 0.5, 0.2], index=["A", "B", "C"]), r, limits)
    np.testing.assert_allclose(got.weights.to_numpy(), [0.0, 1.0, 0.0], rtol=1e-12)
    assert got.report["dropped"] == "A,C" and np.isnan(got.report["max_corr"])
    # long A, short B: a hedge (position correlation -0.71), both kept; the gross is unchanged
    hedge = pd.Series([0.5, -0.5, 0.0], index=["A", "B", "C"])
    got = apply_limits(hedge, r, limits)
    pd.testing.assert_series_equal(got.weights, hedge.rename("weight"))
    assert got.report["max_corr"] == pytest.approx(-corr[0, 1], abs=1e-12)
    # the cap above every pair: nothing dropped
    assert apply_limits(w, r, RiskLimits(corr_cap=0.9, periods_per_year=PPY)).report["dropped"] == ""


def test_risk_contributions_are_each_assets_share_of_the_variance() -> None:
    r = _returns()
    w = pd.Series([0.5, -0.2, 0.4, 0.3], index=r.columns)
    got = apply_limits(w, r, RiskLimits(window=120, periods_per_year=PPY))
    c = np.cov(r.iloc[-120:].to_numpy().T)
    wv = w.to_numpy()
    by_hand = wv * (c @ wv) / (wv @ c @ wv)
    np.testing.assert_allclose(got.contributions.to_numpy(), by_hand, rtol=1e-12)
    assert got.contributions.sum() == pytest.approx(1.0, abs=1e-12)
    pd.testing.assert_series_equal(got.weights, w.rename("weight"))  # no limit: report only
    # risk parity on the sample covariance: equal shares
    rp = Allocator(method="risk_parity", covariance="empirical", window=120).weights(r)
    shares = apply_limits(rp, r, RiskLimits(window=120, periods_per_year=PPY)).contributions
    np.testing.assert_allclose(shares.to_numpy(), 0.25, atol=1e-4)


def _frames(n: int = 260, m: int = 3, seed: int = 6) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2025-01-01", periods=n, freq="D", tz="UTC")
    out = {}
    for j in range(m):
        close = 100 * np.exp(np.cumsum(rng.normal(0.0003, 0.01 * (j + 1), n)))
        out[f"S{j}"] = pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
                                     "volume": 1e6}, index=idx)
    return out


def test_a_rebalance_sees_nothing_after_its_bar_and_equals_the_limits_by_hand() -> None:
    frames = _frames()
    alloc = Allocator(method="inverse_vol", window=60)
    limits = RiskLimits(vol_target=0.15, corr_cap=0.5, cvar_limit=0.02, window=90, periods_per_year=PPY)
    got = allocate(frames, alloc, "monthly", risk=limits)
    idx = frames["S0"].index
    assert list(got.report.columns) == list(REPORT_COLUMNS)
    assert [str(t.date()) for t in got.report.index] == ["2025-04-01", "2025-05-01", "2025-06-01",
                                                           "2025-07-01", "2025-08-01", "2025-09-01"]
    assert list(got.contributions.columns) == ["S0", "S1", "S2"]
    np.testing.assert_allclose(got.contributions.sum(axis=1), 1.0, atol=1e-12)
    # one rebalance by hand: the fit on the returns up to its bar, then the limits on the last 90 of them
    t = got.report.index[2]
    b = idx.get_loc(t)
    returns = pd.DataFrame({s: f["close"] for s, f in frames.items()}).pct_change().iloc[1:b + 1]
    w = alloc.weights(returns)
    x = returns.iloc[-90:].to_numpy()
    scale = min(0.15 / _vol(w.to_numpy(), x), 1.0, 0.02 / _cvar(w.to_numpy(), x))  # nothing above the cap
    assert got.report.loc[t, "dropped"] == ""
    np.testing.assert_allclose([got.targets[s].iloc[b] for s in frames], w.to_numpy() * scale, rtol=1e-12)
    # the future moved: the targets and the report up to that bar do not change
    moved = {s: f.copy() for s, f in frames.items()}
    for f in moved.values():
        f.iloc[b + 1:] *= np.linspace(1.0, 3.0, len(f) - b - 1)[:, None]
    again = allocate(moved, alloc, "monthly", risk=limits)
    for s in frames:
        pd.testing.assert_series_equal(again.targets[s].iloc[: b + 1], got.targets[s].iloc[: b + 1])
    pd.testing.assert_frame_equal(again.report.loc[:t], got.report.loc[:t])
    pd.testing.assert_frame_equal(again.contributions.loc[:t], got.contributions.loc[:t])
    assert not again.report.loc[t:].iloc[1:].equals(got.report.loc[t:].iloc[1:])  # it did move later ones


def test_without_limits_the_targets_are_the_allocators_and_contributions_are_reported() -> None:
    frames = _frames()
    got = allocate(frames, Allocator(method="equal", window=60), "monthly")
    for s in frames:
        pd.testing.assert_series_equal(got.targets[s], allocation_weights(frames, Allocator(method="equal",
                                                                                            window=60))[s])
    assert (got.report["bound"] == "none").all() and (got.report["scale"] == 1.0).all()
    t = got.report.index[0]
    b = frames["S0"].index.get_loc(t)
    x = pd.DataFrame({s: f["close"] for s, f in frames.items()}).pct_change().iloc[b - 59:b + 1].to_numpy()
    c = np.cov(x.T)
    w = np.full(3, 1 / 3)
    np.testing.assert_allclose(got.contributions.loc[t].to_numpy(), w * (c @ w) / (w @ c @ w), rtol=1e-12)
    # daily bars that trade every day: 365 of them a year annualise the reported volatility
    assert got.report.loc[t, "vol_before"] == pytest.approx(np.sqrt(w @ c @ w * 365), rel=1e-12)


@pytest.fixture(scope="module")
def demo_equities() -> dict[str, pd.DataFrame]:
    """The demo lake's equities (AAPL, MSFT, SPY daily, seed 7) over its last four years."""
    from workbench.data.demo import DEMO_SLICES
    from workbench.data.sources.synthetic import SyntheticSource

    daily = next(s for s in DEMO_SLICES if s.timeframe == "1d")
    src = SyntheticSource(seed=7)
    start, end = pd.Timestamp("2022-01-01", tz="UTC"), pd.Timestamp(daily.end, tz="UTC")
    return {s: src.bars(s, "1d", start, end).set_index("ts") for s in sorted(daily.symbols)}


def test_a_vol_targeted_book_of_the_demo_equities_backtests_end_to_end(demo_equities: dict) -> None:
    frames = demo_equities
    alloc = Allocator(method="inverse_vol", window=126)
    limits = RiskLimits(vol_target=0.08, cvar_limit=0.02)
    book = allocate(frames, alloc, "monthly", risk=limits)
    free = allocate(frames, alloc, "monthly")
    assert len(book.report) > 30 and (book.report["bound"] == "vol_target").mean() > 0.8
    hit = book.report[book.report["bound"] == "vol_target"]
    np.testing.assert_allclose(hit["vol_after"], 0.08, rtol=1e-12)
    assert (book.report["gross_after"] <= 1.0 + 1e-12).all()
    ppy = periods_per_year("1d", "XNYS")  # inferred from the bars: NYSE days
    np.testing.assert_allclose(book.report["vol_before"], free.report["vol_before"], rtol=1e-12)
    t = book.report.index[-1]
    b = frames["SPY"].index.get_loc(t)
    x = pd.DataFrame({s: f["close"] for s, f in frames.items()}).pct_change().iloc[b - 125:b + 1].to_numpy()
    w = np.array([free.targets[s].iloc[b] for s in frames])
    assert book.report.loc[t, "vol_before"] == pytest.approx(np.sqrt(w @ np.cov(x.T) @ w * ppy), rel=1e-12)
    runs = {k: simulate_weights(frames, a.targets, costs=Costs(fees=0.001)) for k, a in
            (("book", book), ("free", free))}
    realised = {k: float(r.equity.pct_change().dropna().std() * np.sqrt(ppy)) for k, r in runs.items()}
    assert realised["free"] > 0.12 and 0.05 < realised["book"] < 0.11  # the target held, out of sample
    assert len(runs["book"].orders) > 0


@pytest.mark.parametrize(("kw", "says"), [
    ({"vol_target": 0.0}, "vol_target=0.0 must be a positive annualised volatility"),
    ({"max_leverage": 2.0}, "max_leverage=2 applies to the vol target only"),
    ({"vol_target": 0.1, "max_leverage": 0.5}, "max_leverage=0.5 must be at least 1"),
    ({"corr_cap": 1.0}, "corr_cap=1.0 must lie strictly between -1 and 1"),
    ({"var_limit": -0.01}, "var_limit=-0.01 must be a positive one-period loss"),
    ({"alpha": 0.99}, "alpha=0.99 applies to var_limit / cvar_limit only"),
    ({"var_limit": 0.02, "alpha": 1.0}, "alpha=1.0 must lie in (0, 1)"),
    ({"var_limit": 0.03, "cvar_limit": 0.02}, "var_limit=0.03 can never bind under cvar_limit=0.02"),
    ({"window": 1}, "risk window=1 must be a whole number of bars >= 2"),
    ({"periods_per_year": 0}, "periods_per_year=0 must be a positive number of bars per year"),
])
def test_bad_limits_are_one_line(kw: dict, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        RiskLimits(**kw)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_missing_history_and_annualisation_are_named() -> None:
    r = _returns()
    r.iloc[-5:, 1] = np.nan
    with pytest.raises(DataError, match="returns of S1 have missing values in the risk window of 100 bars"):
        apply_limits(W, r, RiskLimits(window=100, periods_per_year=PPY))
    with pytest.raises(ConfigError, match=r"apply_limits needs limits\.periods_per_year"):
        apply_limits(W, r, RiskLimits(window=100))
    frames = _frames(n=100)
    with pytest.raises(DataError, match="no rebalance bar has the 120 bars of returns"):
        allocate(frames, Allocator(method="equal", window=60), "monthly", risk=RiskLimits(window=120))


@pytest.mark.parametrize(("source", "says"), [
    ({"strategy": "xs_momentum"}, "(a weight strategy has none to fit)"),
    ({"weights": pd.DataFrame({"S0": [1.0]}, index=pd.DatetimeIndex(["2024-01-02"], tz="UTC"))},
     "(a table of weights has none to fit)"),
])
def test_workers_without_an_allocator_are_refused_in_one_line(source: dict, says: str) -> None:
    from workbench.backtest.portfolio import backtest_portfolio

    with pytest.raises(ConfigError) as err:
        backtest_portfolio(_frames(), workers=2, **source)
    assert f"workers=2 fits an allocator's rebalances in processes {says}: drop workers" in str(err.value)
    assert "\n" not in str(err.value)
