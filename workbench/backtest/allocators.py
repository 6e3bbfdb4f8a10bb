"""Allocators: trailing returns of a universe -> target weights, through skfolio's estimators.

An `Allocator` names a method and its constraints; `weights(returns)` fits the method on the returns
it is given (the caller passes a trailing window ending at the rebalance bar, so the fit is causal) and
returns one weight per asset. The optimisers are skfolio's (scikit-learn compatible, maintained), not
hand-written: `model()` gives the configured skfolio estimator, and the weights are its `weights_`.

Methods: ``equal`` (1/N), ``inverse_vol``, ``risk_parity`` (equal risk contributions of variance),
``hrp`` (hierarchical risk parity), ``mean_variance`` (maximum utility, mean minus `risk_aversion` x
variance, on a shrunk covariance), ``max_diversification``, and ``kelly`` (fractional Kelly: maximum
utility with risk aversion 1 / (2 x `kelly_fraction`), whose unconstrained optimum is `kelly_fraction` x
the inverse covariance times the mean; it may leave part of the gross in cash).

Constraints: long only by default, the weights sum to `gross` (at most `gross` for Kelly); each is
at most `max_weight`, and the sum of absolute changes from `previous` weights is at most `max_turnover`
(a cvxpy constraint added to skfolio's problem: skfolio's own `max_turnover` caps each asset).
Long/short (``mean_variance`` and ``kelly`` only: the other methods' estimators are long only): a
negative `min_weight` is each weight's floor, the weights sum to `net` (Kelly without `net` picks its
own net exposure) and `gross` caps the sum of their absolute values (skfolio's `max_long` /
`max_short` = (gross +- net) / 2 when net is fixed, a cvxpy ``sum |w| <= gross`` otherwise). A
constraint a method cannot honour is refused rather than ignored, and an infeasible set is named
before the solver runs.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ConfigError, DataError

METHODS = ("equal", "inverse_vol", "risk_parity", "hrp", "mean_variance", "max_diversification", "kelly")
COVARIANCES = ("empirical", "ledoit_wolf", "shrunk")
# which constraints each method's skfolio estimator takes
_TAKES_MAX_WEIGHT = {"risk_parity", "hrp", "mean_variance", "max_diversification", "kelly"}
_TAKES_TURNOVER = {"mean_variance", "max_diversification", "kelly"}
_SUM_TO_ONE = {"equal", "inverse_vol", "risk_parity", "hrp"}  # skfolio's weights sum to 1: scaled to gross
_TAKES_SHORTS = {"mean_variance", "kelly"}  # skfolio's MeanRisk takes negative min_weights
_TAKES_COVARIANCE = {"inverse_vol", "risk_parity", "hrp", "mean_variance", "max_diversification", "kelly"}


@functools.cache
def _lean_hrp() -> type:
    """skfolio's `HierarchicalRiskParity` without the work its weights do not need; the same weights
    (tests/test_allocators.py). On 500 assets a fit takes a tenth of skfolio's time (bench/portfolio.py):

    - each variance of a cluster is ``w @ cov @ w`` on the cluster's own rows and columns, and each
      asset's own is the covariance's diagonal: skfolio builds a `Portfolio` of all the assets (the
      return series, validated) for each of the ~3n variances of one fit only to read that product;
    - the tree is ordered by `leaf_order.optimal_leaf_ordering` (scipy's ordering, to the bit, in a
      fraction of the time), and the number of clusters, which skfolio's clustering estimates for its
      plots and HRP never reads, is not estimated.

    Other risk measures, costs or previous weights, or a seriation or clustering estimator of one's own
    take skfolio's path.
    """
    import scipy.cluster.hierarchy as sch
    from scipy.spatial.distance import squareform
    from skfolio import RiskMeasure
    from skfolio.optimization import HierarchicalRiskParity
    from skfolio.seriation import HierarchicalSeriation

    from workbench.backtest.leaf_order import optimal_leaf_ordering

    class LeanSeriation(HierarchicalSeriation):
        """HierarchicalSeriation's default (Ward linkage, optimal leaf ordering) without the cluster
        count."""

        def fit(self, X: Any, y: Any = None, **fit_params: Any) -> LeanSeriation:
            distance, investable = self._validate_distance(X, reset=True)
            indices = np.flatnonzero(investable)
            linkage, ordering = np.empty((0, 4)), indices
            if len(indices) > 1:
                condensed = squareform(distance, checks=False)
                linkage = optimal_leaf_ordering(sch.linkage(condensed, method="ward"), condensed)
                ordering = indices[sch.leaves_list(linkage)]
            self.hierarchical_clustering_estimator_ = None
            self.ordered_linkage_matrix_ = linkage
            self.investable_mask_ = investable
            self.ordering_ = ordering
            return self

    class LeanHRP(HierarchicalRiskParity):
        def _resolve_seriation(self) -> Any:
            if self.seriation_estimator is None and self.hierarchical_clustering_estimator is None:
                return LeanSeriation()
            return super()._resolve_seriation()

        def _compute_weights(self, return_distribution: Any, ordering: Any, *args: Any, **kwargs: Any
                             ) -> Any:
            # asked once per fit, not at each of its ~3n variances
            self._variance_only = bool(
                self.risk_measure is RiskMeasure.VARIANCE and self.previous_weights is None
                and np.all(np.asarray(self.transaction_costs) == 0)
                and np.all(np.asarray(self.management_fees) == 0))
            if self._variance_only:
                # the bisection's clusters are runs of `ordering`: with the covariance in that order, a
                # cluster's rows and columns are a slice, not a copy
                self._order = np.asarray(ordering)
                self._place = np.argsort(self._order)
                self._ordered_cov = return_distribution.covariance[np.ix_(self._order, self._order)]
            return super()._compute_weights(return_distribution, ordering, *args, **kwargs)

        def _risk(self, weights: Any, return_distribution: Any) -> float:
            if not self._variance_only:
                return float(super()._risk(weights, return_distribution))
            places = self._place[np.flatnonzero(weights)]
            lo, hi = places.min(), places.max() + 1  # any weight between them that is 0 adds nothing
            w = weights[self._order[lo:hi]]
            return float(w @ self._ordered_cov[lo:hi, lo:hi] @ w)

        def _unitary_risks(self, return_distribution: Any) -> Any:
            if not self._variance_only:
                return super()._unitary_risks(return_distribution)
            return np.diag(return_distribution.covariance).copy()

    return LeanHRP


@functools.cache
def _checked_once(estimator: type) -> type:
    """skfolio's `estimator` (LedoitWolf or ShrunkCovariance) with its covariance checked once: its fit
    hands the matrix to `_set_covariance` (finiteness, two eigen-decompositions of n x n, the repair to
    the nearest positive definite one) inside scikit-learn's fit and again after it. When the first call
    keeps the matrix as it came, the second, on that same matrix, can only keep it again: skipped."""

    class CheckedOnce(estimator):
        def _set_covariance(self, covariance: Any) -> None:
            if covariance is getattr(self, "_kept_as_is", None):
                return
            super()._set_covariance(covariance)
            self._kept_as_is = covariance if self.covariance_ is covariance else None

    CheckedOnce.__name__ = CheckedOnce.__qualname__ = estimator.__name__
    return CheckedOnce


def _lean(model: Any) -> Any:
    """The estimator to fit: skfolio's HRP as `_lean_hrp` (same parameters), any other as it is."""
    from skfolio.optimization import HierarchicalRiskParity

    if type(model) is HierarchicalRiskParity:
        return _lean_hrp()(**model.get_params(deep=False))
    return model


@dataclass(frozen=True, kw_only=True)
class Allocator:
    """A method and its constraints; see the module docstring. `window` is the trailing number of
    returns each fit uses (`min_history`, default the window, is the fewest it accepts)."""

    method: str = "equal"
    window: int = 252
    min_history: int | None = None
    gross: float = 1.0
    min_weight: float = 0.0
    net: float | None = None
    max_weight: float | None = None
    max_turnover: float | None = None
    covariance: str = "ledoit_wolf"
    risk_aversion: float = 1.0
    kelly_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown allocator {self.method!r}; choose one of {', '.join(METHODS)}")
        if int(self.window) != self.window or self.window < 2:
            raise ConfigError(f"allocator window={self.window!r} must be a whole number of bars >= 2")
        least = self.min_history if self.min_history is not None else self.window
        if int(least) != least or not 2 <= least <= self.window:
            raise ConfigError(f"allocator min_history={self.min_history!r} must be a whole number of bars in "
                              f"[2, window={self.window}]")
        if not (math.isfinite(self.gross) and self.gross > 0):
            raise ConfigError(f"allocator gross={self.gross!r} must be a positive fraction of equity "
                              "(1 = fully invested)")
        self._check_long_short()
        if self.max_weight is not None:
            if not (math.isfinite(self.max_weight) and self.max_weight > 0):
                raise ConfigError(f"allocator max_weight={self.max_weight!r} must be a positive fraction")
            if self.method not in _TAKES_MAX_WEIGHT:
                raise ConfigError(f"the {self.method} allocator cannot cap weights (max_weight would have no "
                                  f"effect): drop it, or use one of {', '.join(sorted(_TAKES_MAX_WEIGHT))}")
        if self.max_turnover is not None:
            if not (math.isfinite(self.max_turnover) and self.max_turnover >= 0):
                raise ConfigError(f"allocator max_turnover={self.max_turnover!r} must be a fraction >= 0")
            if self.method not in _TAKES_TURNOVER:
                raise ConfigError(f"the {self.method} allocator cannot cap turnover (max_turnover would have "
                                  f"no effect): drop it, or use one of {', '.join(sorted(_TAKES_TURNOVER))}")
        if self.covariance not in COVARIANCES:
            raise ConfigError(f"unknown covariance {self.covariance!r}; choose one of "
                              f"{', '.join(COVARIANCES)}")
        if self.covariance != "ledoit_wolf" and self.method not in _TAKES_COVARIANCE:
            raise ConfigError(f"the {self.method} allocator uses no covariance "
                              f"(covariance={self.covariance!r} would have no effect): drop it")
        if self.risk_aversion != 1.0 and self.method != "mean_variance":
            raise ConfigError("risk_aversion applies to the mean_variance allocator only: drop it")
        if not (math.isfinite(self.risk_aversion) and self.risk_aversion > 0):
            raise ConfigError(f"allocator risk_aversion={self.risk_aversion!r} must be positive")
        if self.kelly_fraction != 0.5 and self.method != "kelly":
            raise ConfigError("kelly_fraction applies to the kelly allocator only: drop it")
        if not (math.isfinite(self.kelly_fraction) and 0 < self.kelly_fraction <= 1):
            raise ConfigError(f"kelly_fraction={self.kelly_fraction!r} must lie in (0, 1] (0.5 = half Kelly)")

    def _check_long_short(self) -> None:
        """`min_weight` and `net`: a floor at or below 0, shorts only where skfolio's estimator takes
        them, and a net exposure strictly inside the gross (else the shorts could not exist)."""
        if not (math.isfinite(self.min_weight) and self.min_weight <= 0):
            raise ConfigError(f"allocator min_weight={self.min_weight!r} must be 0 (long only) or negative "
                              "(each weight's floor, allowing shorts)")
        if self.min_weight < 0 and self.method not in _TAKES_SHORTS:
            raise ConfigError(f"the {self.method} allocator is long only (min_weight={self.min_weight:g} "
                              f"would need shorts): use one of {', '.join(sorted(_TAKES_SHORTS))}, or drop "
                              "min_weight")
        if self.net is None:
            if self.min_weight < 0 and self.method == "mean_variance":
                raise ConfigError("the mean_variance allocator with shorts needs net= (the sum of the "
                                  "weights, e.g. 0 for market neutral), strictly between -gross and "
                                  f"gross={self.gross:g}")
            return
        if self.min_weight == 0:
            raise ConfigError(f"net={self.net!r} applies to long/short weights only (long only, the weights "
                              "sum to gross): set a negative min_weight, or drop net")
        if not (math.isfinite(self.net) and abs(self.net) < self.gross):
            raise ConfigError(f"allocator net={self.net!r} must lie strictly between -gross and "
                              f"gross={self.gross:g} (at net = gross no weight can be short)")

    @property
    def short(self) -> bool:
        """Whether weights may be negative (a negative `min_weight`)."""
        return self.min_weight < 0

    def _total(self) -> float | None:
        """The sum the weights must reach: `gross` long only, `net` long/short; None for Kelly, which
        chooses its own (at most `gross` long only, anything within the gross long/short)."""
        if self.method == "kelly":
            return self.net
        return self.net if self.short else self.gross

    # ------------------------------------------------------------------ skfolio
    def model(self, n_assets: int, previous: np.ndarray | None = None) -> Any:
        """The skfolio estimator this allocator fits on `n_assets` assets (`previous`: the weights held,
        for the turnover cap)."""
        from skfolio import RiskMeasure
        from skfolio.moments import EmpiricalCovariance, LedoitWolf, ShrunkCovariance
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

        cov = {"empirical": EmpiricalCovariance, "ledoit_wolf": _checked_once(LedoitWolf),
               "shrunk": _checked_once(ShrunkCovariance)}
        prior = EmpiricalPrior(covariance_estimator=cov[self.covariance]())
        import cvxpy as cp

        cap = self.max_weight if self.max_weight is not None else (None if self.short else self.gross)
        bounds: dict[str, Any] = {"min_weights": self.min_weight, "max_weights": cap}
        extra: list[Any] = []  # cvxpy constraints on the weights variable, added to skfolio's problem
        if self.max_turnover is not None:  # the sum of absolute changes (skfolio's own cap is per asset)
            held = np.zeros(n_assets) if previous is None else np.asarray(previous, dtype=float)
            cap_t = float(self.max_turnover)
            extra.append(lambda w: cp.sum(cp.abs(w - held)) <= cap_t)
        if self.short and self.net is not None:  # sum w = net and sum |w| <= gross: long and short legs
            bounds.update(max_long=(self.gross + self.net) / 2, max_short=(self.gross - self.net) / 2)
        elif self.short:  # Kelly choosing its own net: the gross caps the absolute weights
            gross = float(self.gross)
            extra.append(lambda w: cp.sum(cp.abs(w)) <= gross)
        turnover: dict[str, Any] = {}
        if extra:
            turnover = {"add_constraints": lambda w: [f(w) for f in extra]}
        m = self.method
        if m == "equal":
            return EqualWeighted()
        if m == "inverse_vol":
            return InverseVolatility(prior_estimator=prior)
        if m == "risk_parity":
            return RiskBudgeting(risk_measure=RiskMeasure.VARIANCE, prior_estimator=prior, **bounds)
        if m == "hrp":
            return HierarchicalRiskParity(risk_measure=RiskMeasure.VARIANCE, prior_estimator=prior, **bounds)
        if m == "max_diversification":
            return MaximumDiversification(prior_estimator=prior, budget=self.gross, **bounds, **turnover)
        if m == "mean_variance":
            return MeanRisk(objective_function=ObjectiveFunction.MAXIMIZE_UTILITY,
                            risk_measure=RiskMeasure.VARIANCE, risk_aversion=self.risk_aversion,
                            prior_estimator=prior, budget=self._total(), **bounds, **turnover)
        # kelly: maximise mean - w'Cw / (2 f), invested at most `gross` (long/short: the net as set, or free)
        budget: dict[str, Any] = {"budget": None, "min_budget": 0.0, "max_budget": self.gross}
        if self.short:
            budget = {"budget": self.net}
        return MeanRisk(objective_function=ObjectiveFunction.MAXIMIZE_UTILITY,
                        risk_measure=RiskMeasure.VARIANCE, risk_aversion=1.0 / (2.0 * self.kelly_fraction),
                        prior_estimator=prior, **budget, **bounds, **turnover)

    # ------------------------------------------------------------------ weights
    def weights(self, returns: pd.DataFrame, previous: pd.Series | None = None) -> pd.Series:
        """Target weights (one per column of `returns`) fitted on its last `window` rows.

        `returns`: simple returns per bar, one column per asset, oldest first, ending at the rebalance
        bar (nothing after it). `previous`: the weights held before (for `max_turnover`; missing assets
        count as 0). Too little history, missing values, or a constraint set no weights can satisfy is
        one `ConfigError` or `DataError` line naming it.
        """
        window = returns.iloc[-self.window:]
        assets = [str(c) for c in window.columns]
        least = self.min_history if self.min_history is not None else self.window
        if len(assets) == 0:
            raise DataError("the allocator got no asset: pass one column of returns per asset")
        if len(window) < least:
            raise DataError(f"the {self.method} allocator needs {least} bars of returns and has "
                            f"{len(window)}: start later, or shorten window / min_history")
        holes = window.columns[window.isna().any().to_numpy()]
        if len(holes):
            raise DataError(f"returns of {', '.join(map(str, holes[:5]))} have missing values in the "
                            f"allocator's window of {len(window)} bars: leave those assets out of the "
                            "universe until they have history")
        prev = None
        if previous is not None:
            prev = previous.reindex(window.columns).fillna(0.0).to_numpy(dtype=float)
        self._check_feasible(len(assets), prev)
        model = _lean(self.model(len(assets), prev))
        from skfolio.exceptions import ConvexOptimizationError, OptimizationError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # skfolio's solver notes; a failure raises below
                model.fit(window.to_numpy(dtype=float))
        except (ConvexOptimizationError, OptimizationError, ValueError, np.linalg.LinAlgError) as exc:
            raise ConfigError(f"the {self.method} allocator found no weights under {self._constraints()} "
                              f"({' '.join(str(exc).split())[:160]}): loosen one of them") from None
        w = np.asarray(model.weights_, dtype=float)
        if self.method in _SUM_TO_ONE and self.gross != 1.0:
            w = w * self.gross
        return pd.Series(w, index=window.columns, name="weight")

    def _constraints(self) -> str:
        parts = [f"gross={self.gross:g}"]
        if self.short:
            parts.append(f"min_weight={self.min_weight:g}")
        if self.net is not None:
            parts.append(f"net={self.net:g}")
        if self.max_weight is not None:
            parts.append(f"max_weight={self.max_weight:g}")
        if self.max_turnover is not None:
            parts.append(f"max_turnover={self.max_turnover:g}")
        return ", ".join(parts)

    def _check_feasible(self, n: int, previous: np.ndarray | None) -> None:
        """Name the constraint that no weights can satisfy, before any solver runs."""
        total = self._total()  # None: Kelly keeps cash or picks its net, so any cap is feasible
        if total is None:
            return
        what = f"net={total:g}" if self.short else f"gross={total:g}"
        if self.max_weight is not None and n * self.max_weight < total - 1e-12:
            raise ConfigError(f"max_weight={self.max_weight:g} x {n} assets holds at most "
                              f"{n * self.max_weight:g}, less than {what}: raise max_weight to "
                              f"at least {total / n:.4g} or widen the universe")
        if self.short and n * self.min_weight > total + 1e-12:
            raise ConfigError(f"min_weight={self.min_weight:g} x {n} assets holds at least "
                              f"{n * self.min_weight:g}, more than {what}: lower min_weight to at most "
                              f"{total / n:.4g} or widen the universe")
        if self.max_turnover is not None:
            held = np.zeros(n) if previous is None else previous
            cap = self.max_weight if self.max_weight is not None else (np.inf if self.short else self.gross)
            clipped = np.clip(held, self.min_weight, cap)
            # the least change into the box and onto the sum (exact long only; long/short a lower bound,
            # with the least change into the gross: the solver names what is left)
            least = float(np.abs(held - clipped).sum() + abs(total - clipped.sum()))
            if self.short:
                least = max(least, float(np.abs(held).sum()) - self.gross)
            if least > self.max_turnover + 1e-9:
                under = "" if self.max_weight is None else f" under max_weight={self.max_weight:g}"
                if self.short:
                    under += f" within gross={self.gross:g}"
                raise ConfigError(f"max_turnover={self.max_turnover:g} cannot reach weights that sum to "
                                  f"{what}{under} from the weights held (the least change is "
                                  f"{least:.4g}): raise max_turnover or rebalance from cash in steps")
