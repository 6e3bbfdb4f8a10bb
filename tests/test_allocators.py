"""Allocators: the weights equal skfolio's own estimators' on the same inputs, the constraints hold, a fit
sees only its trailing window, fractional Kelly is the fraction of the inverse covariance times the mean,
and every bad setting or infeasible constraint set is one line naming it."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from skfolio import RiskMeasure
from skfolio.moments import EmpiricalCovariance, LedoitWolf
from skfolio.optimization import (
    EqualWeighted,
    HierarchicalRiskParity,
    InverseVolatility,
    MaximumDiversification,
    MeanRisk,
    ObjectiveFunction,
    RiskBudgeting,
)
from skfolio.prior import EmpiricalPrior

from workbench.backtest.allocators import METHODS, Allocator
from workbench.errors import ConfigError, DataError


def _returns(n: int = 400, m: int = 6, seed: int = 3) -> pd.DataFrame:
    """Daily returns with a common factor, different volatilities and drifts (seeded)."""
    rng = np.random.default_rng(seed)
    vol = np.linspace(0.008, 0.03, m)
    market = rng.normal(0.0003, 0.01, (n, 1))
    x = market * rng.uniform(0.5, 1.5, m) + rng.normal(0.0, 1.0, (n, m)) * vol + np.linspace(-2e-4, 6e-4, m)
    return pd.DataFrame(x, columns=[f"S{i}" for i in range(m)],
                        index=pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC"))


def _theirs(method: str, x: np.ndarray) -> np.ndarray:
    """skfolio's own estimator for `method`, set up here from skfolio's documentation (not from ours)."""
    prior = EmpiricalPrior(covariance_estimator=LedoitWolf())
    models = {
        "equal": EqualWeighted(),
        "inverse_vol": InverseVolatility(prior_estimator=prior),
        "risk_parity": RiskBudgeting(risk_measure=RiskMeasure.VARIANCE, prior_estimator=prior),
        "hrp": HierarchicalRiskParity(risk_measure=RiskMeasure.VARIANCE, prior_estimator=prior),
        "mean_variance": MeanRisk(objective_function=ObjectiveFunction.MAXIMIZE_UTILITY,
                                  risk_measure=RiskMeasure.VARIANCE, risk_aversion=1.0,
                                  prior_estimator=prior),
        "max_diversification": MaximumDiversification(prior_estimator=prior),
        "kelly": MeanRisk(objective_function=ObjectiveFunction.MAXIMIZE_UTILITY,
                          risk_measure=RiskMeasure.VARIANCE, risk_aversion=1.0, prior_estimator=prior,
                          budget=None, min_budget=0.0, max_budget=1.0),
    }
    return np.asarray(models[method].fit(x).weights_)


@pytest.mark.parametrize("method", METHODS)
def test_weights_equal_skfolios_own(method: str) -> None:
    r = _returns()
    window = 250
    w = Allocator(method=method, window=window).weights(r)
    assert list(w.index) == list(r.columns)
    theirs = _theirs(method, r.iloc[-window:].to_numpy())
    np.testing.assert_allclose(w.to_numpy(), theirs, rtol=1e-7, atol=1e-9)
    assert (w >= -1e-9).all()
    if method == "kelly":
        assert w.sum() <= 1.0 + 1e-7
    else:
        assert w.sum() == pytest.approx(1.0, abs=1e-7)



def test_hrp_on_a_wide_universe_with_a_binding_cap_is_skfolios_own() -> None:
    # the allocator takes HRP's variances without skfolio's Portfolio objects: the weights must stay
    # skfolio's on a universe deep enough for many splits, with the weight cap binding on some of them
    r = _returns(n=300, m=60, seed=11)
    w = Allocator(method="hrp", window=250, max_weight=0.03).weights(r)
    theirs = HierarchicalRiskParity(risk_measure=RiskMeasure.VARIANCE, max_weights=0.03,
                                    prior_estimator=EmpiricalPrior(covariance_estimator=LedoitWolf()))
    theirs.fit(r.iloc[-250:].to_numpy())
    free = HierarchicalRiskParity(risk_measure=RiskMeasure.VARIANCE,
                                  prior_estimator=EmpiricalPrior(covariance_estimator=LedoitWolf()))
    assert free.fit(r.iloc[-250:].to_numpy()).weights_.max() > 0.03  # the cap binds
    np.testing.assert_allclose(w.to_numpy(), theirs.weights_, rtol=1e-12, atol=1e-15)

def test_a_fit_sees_only_its_trailing_window() -> None:
    r = _returns()
    before = Allocator(method="risk_parity", window=120).weights(r)
    changed = r.copy()
    changed.iloc[: len(r) - 120] *= 5.0  # anything before the window
    pd.testing.assert_series_equal(Allocator(method="risk_parity", window=120).weights(changed), before)


def test_gross_caps_and_turnover_hold() -> None:
    r = _returns()
    w = Allocator(method="hrp", gross=0.6).weights(r)
    assert w.sum() == pytest.approx(0.6)
    capped = Allocator(method="mean_variance", max_weight=0.25).weights(r)
    assert capped.max() <= 0.25 + 1e-7 and capped.sum() == pytest.approx(1.0, abs=1e-6)
    held = pd.Series(1 / 6, index=r.columns)
    moved = Allocator(method="mean_variance", max_turnover=0.1).weights(r, previous=held)
    assert (moved - held).abs().sum() <= 0.1 + 1e-6 and moved.sum() == pytest.approx(1.0, abs=1e-6)
    assert (moved - held).abs().max() > 0.04  # the total is capped, not each asset's change
    free = Allocator(method="mean_variance").weights(r)
    assert (free - held).abs().sum() > 0.5  # the cap did something


def test_fractional_kelly_is_the_fraction_of_inverse_covariance_times_mean() -> None:
    rng = np.random.default_rng(11)
    # volatile assets with strong drifts: the sample means are far from 0 and the Kelly weights small
    x = rng.normal(0.0, 0.2, (500, 3)) + np.array([0.05, 0.04, 0.045])
    r = pd.DataFrame(x, columns=["A", "B", "C"])
    w = Allocator(method="kelly", kelly_fraction=0.1, covariance="empirical", window=500).weights(r)
    cov = EmpiricalCovariance().fit(x).covariance_
    want = 0.1 * np.linalg.solve(cov, x.mean(axis=0))
    assert (want > 0).all() and want.sum() < 0.5  # the constraints are not binding here
    np.testing.assert_allclose(w.to_numpy(), want, rtol=1e-3, atol=1e-6)
    double = Allocator(method="kelly", kelly_fraction=0.2, covariance="empirical", window=500).weights(r)
    np.testing.assert_allclose(double.to_numpy(), 2 * w.to_numpy(), rtol=1e-3, atol=1e-6)
    full = Allocator(method="kelly", kelly_fraction=1.0, covariance="empirical", window=500).weights(r)
    assert full.sum() == pytest.approx(1.0, abs=1e-6)  # full Kelly would lever up: held at the gross


_LONG_SHORT_BAD = [
    ({"method": "hrp", "min_weight": -0.2}, "the hrp allocator is long only (min_weight=-0.2 would need "
                                             "shorts): use one of kelly, mean_variance, or drop min_weight"),
    ({"method": "risk_parity", "min_weight": -0.2}, "the risk_parity allocator is long only"),
    ({"method": "mean_variance", "min_weight": 0.1}, "min_weight=0.1 must be 0 (long only) or negative"),
    ({"method": "mean_variance", "min_weight": -0.2}, "with shorts needs net= (the sum of the weights"),
    ({"method": "mean_variance", "net": 0.0}, "net=0.0 applies to long/short weights only"),
    ({"method": "kelly", "min_weight": -0.2, "net": 1.0}, "net=1.0 must lie strictly between -gross and "
                                                          "gross=1"),
    ({"method": "mean_variance", "min_weight": -0.2, "net": -1.5, "gross": 1.2}, "net=-1.5 must lie"),
]


@pytest.mark.parametrize(("kw", "says"), [
    ({"method": "magic"}, "unknown allocator 'magic'; choose one of equal, inverse_vol"),
    ({"method": "equal", "max_weight": 0.3}, "cannot cap weights (max_weight would have no effect)"),
    ({"method": "hrp", "max_turnover": 0.1}, "cannot cap turnover (max_turnover would have no effect)"),
    ({"method": "equal", "covariance": "empirical"}, "uses no covariance"),
    ({"method": "hrp", "risk_aversion": 2.0}, "risk_aversion applies to the mean_variance allocator only"),
    ({"method": "kelly", "kelly_fraction": 1.5}, "kelly_fraction=1.5 must lie in (0, 1]"),
    ({"window": 1}, "window=1 must be a whole number of bars >= 2"),
    ({"window": 50, "min_history": 60}, "min_history=60 must be a whole number of bars in [2, window=50]"),
    ({"gross": 0.0}, "gross=0.0 must be a positive fraction"),
    ({"covariance": "fancy", "method": "hrp"}, "unknown covariance 'fancy'"),
    *_LONG_SHORT_BAD,
])
def test_bad_settings_are_one_line(kw: dict, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        Allocator(**kw)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_infeasible_constraints_and_short_history_are_named() -> None:
    r = _returns(m=4)
    with pytest.raises(ConfigError, match=r"max_weight=0.1 x 4 assets holds at most 0.4, less than gross=1: "
                                          r"raise max_weight to at least 0.25"):
        Allocator(method="mean_variance", max_weight=0.1).weights(r)
    held = pd.Series([1.0, 0.0, 0.0, 0.0], index=r.columns)
    with pytest.raises(ConfigError, match=r"max_turnover=0.2 cannot reach weights that sum to gross=1 under "
                                          r"max_weight=0.5 from the weights held \(the least change is 1\)"):
        Allocator(method="mean_variance", max_weight=0.5, max_turnover=0.2).weights(r, previous=held)
    with pytest.raises(ConfigError, match=r"max_turnover=0\.05 cannot reach"):  # from cash: 1 to move
        Allocator(method="max_diversification", max_turnover=0.05).weights(r)
    with pytest.raises(DataError, match="needs 252 bars of returns and has 100: start later"):
        Allocator(method="hrp").weights(r.iloc[:100])
    assert len(Allocator(method="hrp", min_history=60).weights(r.iloc[:100])) == 4
    holes = r.copy()
    holes.iloc[-10:, 2] = np.nan
    with pytest.raises(DataError, match="returns of S2 have missing values in the allocator's window"):
        Allocator(method="inverse_vol").weights(holes)


# ---------------------------------------------------------------------------------------- long/short
def _theirs_long_short(x: np.ndarray, *, risk_aversion: float, min_weight: float, gross: float,
                       net: float | None) -> np.ndarray:
    """skfolio's MeanRisk fitted directly: the gross as a cvxpy sum |w| <= gross (ours uses skfolio's
    max_long / max_short legs when the net is fixed: the same set, written another way)."""
    import cvxpy as cp

    budget = {"budget": net}  # None: Kelly picks its own net
    prior = EmpiricalPrior(covariance_estimator=LedoitWolf())
    model = MeanRisk(objective_function=ObjectiveFunction.MAXIMIZE_UTILITY, risk_measure=RiskMeasure.VARIANCE,
                     risk_aversion=risk_aversion, prior_estimator=prior, min_weights=min_weight,
                     max_weights=None, **budget,
                     add_constraints=lambda w: [cp.sum(cp.abs(w)) <= gross])
    return np.asarray(model.fit(x).weights_)


@pytest.mark.parametrize(("kw", "binding"), [
    ({"method": "mean_variance", "risk_aversion": 20.0, "min_weight": -0.5, "net": 0.0}, False),
    ({"method": "mean_variance", "risk_aversion": 1.0, "min_weight": -0.5, "net": 0.0}, True),
    ({"method": "mean_variance", "risk_aversion": 2.0, "min_weight": -0.3, "net": 1.0, "gross": 1.6}, True),
    ({"method": "kelly", "kelly_fraction": 0.05, "min_weight": -0.5}, False),
    ({"method": "kelly", "kelly_fraction": 0.15, "min_weight": -0.5}, True),
    ({"method": "kelly", "kelly_fraction": 0.05, "min_weight": -0.5, "net": 0.0}, False),
])
def test_long_short_weights_equal_skfolios_own_and_the_constraints_hold(kw: dict, binding: bool) -> None:
    r = _returns()
    alloc = Allocator(window=250, **kw)
    w = alloc.weights(r).to_numpy()
    ra = kw.get("risk_aversion", 1.0 / (2.0 * kw.get("kelly_fraction", 0.5)))
    theirs = _theirs_long_short(r.iloc[-250:].to_numpy(), risk_aversion=ra, min_weight=kw["min_weight"],
                                gross=alloc.gross, net=kw.get("net"))
    np.testing.assert_allclose(w, theirs, atol=2e-5)
    assert (w < -1e-3).any()  # the falling asset is shorted
    assert w.min() >= kw["min_weight"] - 1e-7
    assert np.abs(w).sum() <= alloc.gross + 1e-6
    assert bool(np.abs(w).sum() > alloc.gross - 1e-5) == binding
    if "net" in kw:
        assert w.sum() == pytest.approx(kw["net"], abs=1e-7)


def test_long_short_kelly_is_the_fraction_of_inverse_covariance_times_mean() -> None:
    rng = np.random.default_rng(12)
    x = rng.normal(0.0, 0.2, (500, 3)) + np.array([0.05, -0.04, 0.02])
    want = 0.1 * np.linalg.solve(np.cov(x.T, ddof=1), x.mean(axis=0))  # numpy's covariance, by hand
    assert want[1] < -0.05 and np.abs(want).sum() < 0.6  # a short leg; the gross is not binding
    w = Allocator(method="kelly", kelly_fraction=0.1, covariance="empirical", window=500,
                  min_weight=-1.0).weights(pd.DataFrame(x, columns=["A", "B", "C"]))
    np.testing.assert_allclose(w.to_numpy(), want, rtol=2e-3, atol=1e-6)


def test_infeasible_long_short_constraints_are_named_before_the_solver() -> None:
    r = _returns(m=4)
    with pytest.raises(ConfigError, match=r"min_weight=-0.1 x 4 assets holds at least -0.4, more than "
                                          r"net=-0.5: lower min_weight to at most -0.125"):
        Allocator(method="mean_variance", min_weight=-0.1, net=-0.5).weights(r)
    with pytest.raises(ConfigError, match=r"max_weight=0.1 x 4 assets holds at most 0.4, less than net=0.5"):
        Allocator(method="kelly", min_weight=-0.5, net=0.5, max_weight=0.1).weights(r)
    held = pd.Series([0.9, -0.9, 0.0, 0.0], index=r.columns)  # gross 1.8, the new gross 1
    with pytest.raises(ConfigError, match=r"max_turnover=0.3 cannot reach weights that sum to net=0 within "
                                          r"gross=1 from the weights held \(the least change is 0.8\)"):
        Allocator(method="mean_variance", min_weight=-1.0, net=0.0, max_turnover=0.3).weights(r, held)
    moved = Allocator(method="mean_variance", min_weight=-1.0, net=0.0, max_turnover=0.9).weights(r, held)
    assert (moved - held).abs().sum() <= 0.9 + 1e-6 and moved.abs().sum() <= 1.0 + 1e-6


@pytest.mark.parametrize("shrinkage", [0.1, 0.0])
def test_covariance_checked_once_is_skfolios_own(shrinkage: float) -> None:
    # the allocators skip skfolio's second, identical check of a covariance the first kept as it was;
    # one that needed repair (no shrinkage, fewer bars than assets: singular) takes both checks as before
    from skfolio.moments import LedoitWolf as SkLedoitWolf
    from skfolio.moments import ShrunkCovariance

    from workbench.backtest.allocators import _checked_once

    x = _returns(n=20 if shrinkage == 0 else 300, m=40, seed=3).to_numpy()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        theirs = ShrunkCovariance(shrinkage=shrinkage).fit(x).covariance_
        mine = _checked_once(ShrunkCovariance)(shrinkage=shrinkage).fit(x).covariance_
    np.testing.assert_array_equal(mine, theirs)
    repaired = [w for w in seen if "not positive definite" in str(w.message)]
    assert len(repaired) == (0 if shrinkage else 2)  # singular: each fit repairs it (and keeps the repair)
    np.testing.assert_array_equal(_checked_once(SkLedoitWolf)().fit(x).covariance_,
                                  SkLedoitWolf().fit(x).covariance_)
