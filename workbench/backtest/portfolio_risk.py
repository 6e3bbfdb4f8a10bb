"""Portfolio risk limits at a rebalance: a volatility target, a correlation cap, historical VaR / CVaR
limits, and each asset's share of the risk, applied to an allocator's weights with the trailing returns
up to the rebalance bar only (so a backtest of the limited targets sees nothing after its bar).

The rules (SEMANTICS.md "Risk limits at a rebalance"), on the window's simple returns `R` (T x m), its
sample covariance `C` (ddof 1) and the portfolio's returns `p = R w`:

1. correlation cap: assets taken greedily in order of |weight| (ties: column order); an asset whose
   position correlation ``sign(w_i) sign(w_j) corr_ij`` with an asset already kept exceeds `corr_cap`
   is dropped (weight 0; a long and a short of correlated assets hedge, they are not capped). The kept
   weights are scaled up to the gross the allocator had (``sum |w|``).
2. one scale `s` of the weights: the volatility target sets ``s = vol_target / vol`` with
   ``vol = sqrt(w' C w x periods_per_year)``, at most `max_leverage` (1: never above the allocator's
   gross); then, since historical VaR and CVaR are linear in `s`, ``s = min(s, var_limit / VaR,
   cvar_limit / CVaR)`` where either is above its limit (limits only scale down).
   ``VaR = -quantile(p, 1 - alpha)`` (numpy's linear interpolation) and ``CVaR = -mean(p[p <= -VaR])``,
   one-period losses as fractions of equity.
3. risk contributions ``RC_i = w_i (C w)_i / (w' C w)`` of the final weights (fractions summing to 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench.errors import ConfigError, DataError

BOUNDS = ("none", "vol_target", "max_leverage", "var", "cvar")  # what set the scale of a rebalance
REPORT_COLUMNS = ("vol_before", "vol_after", "var_before", "var_after", "cvar_before", "cvar_after",
                  "max_corr", "dropped", "gross_before", "gross_after", "scale", "bound")


@dataclass(frozen=True, kw_only=True)
class RiskLimits:
    """Limits applied to the weights at each rebalance (module docstring); all None: report only.

    `vol_target`: annualised ex-ante volatility; `max_leverage`: the largest scale it may apply (1: never
    above the allocator's gross); `corr_cap`: the largest position correlation held in full; `var_limit`,
    `cvar_limit`: one-period historical losses at level `alpha` (fractions of equity); `window`: trailing
    returns used (None: the allocator's window); `periods_per_year`: bars per year annualising the
    volatility (None: from the bars' timeframe and calendar).
    """

    vol_target: float | None = None
    max_leverage: float = 1.0
    corr_cap: float | None = None
    var_limit: float | None = None
    cvar_limit: float | None = None
    alpha: float = 0.95
    window: int | None = None
    periods_per_year: float | None = None

    def __post_init__(self) -> None:
        if self.vol_target is not None and not (math.isfinite(self.vol_target) and self.vol_target > 0):
            raise ConfigError(f"vol_target={self.vol_target!r} must be a positive annualised volatility "
                              "(0.1 = 10 %)")
        if not (math.isfinite(self.max_leverage) and self.max_leverage >= 1):
            raise ConfigError(f"max_leverage={self.max_leverage!r} must be at least 1 (the scale the vol "
                              "target may apply to the allocator's weights)")
        if self.max_leverage != 1 and self.vol_target is None:
            raise ConfigError(f"max_leverage={self.max_leverage:g} applies to the vol target only (nothing "
                              "else scales up): set vol_target, or drop max_leverage")
        if self.corr_cap is not None and not (math.isfinite(self.corr_cap) and -1 < self.corr_cap < 1):
            raise ConfigError(f"corr_cap={self.corr_cap!r} must lie strictly between -1 and 1 (at 1 no pair "
                              "is ever above it)")
        for name in ("var_limit", "cvar_limit"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name}={v!r} must be a positive one-period loss (0.02 = 2 % of equity)")
        if not (math.isfinite(self.alpha) and 0 < self.alpha < 1):
            raise ConfigError(f"alpha={self.alpha!r} must lie in (0, 1) (0.95: the worst 5 % of periods)")
        if self.alpha != 0.95 and self.var_limit is None and self.cvar_limit is None:
            raise ConfigError(f"alpha={self.alpha:g} applies to var_limit / cvar_limit only: set one, or "
                              "drop alpha")
        if (self.var_limit is not None and self.cvar_limit is not None
                and self.cvar_limit <= self.var_limit):
            raise ConfigError(f"var_limit={self.var_limit:g} can never bind under cvar_limit="
                              f"{self.cvar_limit:g} (CVaR is at least VaR): drop var_limit")
        if self.window is not None and (int(self.window) != self.window or self.window < 2):
            raise ConfigError(f"risk window={self.window!r} must be a whole number of bars >= 2")
        ppy = self.periods_per_year
        if ppy is not None and not (math.isfinite(ppy) and ppy > 0):
            raise ConfigError(f"periods_per_year={ppy!r} must be a positive number of bars per year "
                              "(252 for daily equities)")


@dataclass(frozen=True)
class RiskCheck:
    """One rebalance through the limits: the weights to hold, the report row (`REPORT_COLUMNS`) and each
    asset's fraction of the portfolio's variance."""

    weights: pd.Series
    report: dict[str, object]
    contributions: pd.Series


def historical_var_cvar(p: np.ndarray, alpha: float) -> tuple[float, float]:
    """One-period historical VaR and CVaR (positive: losses) of returns `p` at level `alpha`."""
    q = float(np.quantile(p, 1.0 - alpha))
    return -q, -float(p[p <= q].mean())


def risk_contributions(w: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Each asset's share of the portfolio variance, ``w_i (C w)_i / (w' C w)`` (NaN when it is 0)."""
    cw = cov @ w
    total = float(w @ cw)
    return w * cw / total if total > 0 else np.full(len(w), np.nan)


def _position_corr(w: np.ndarray, corr: np.ndarray) -> np.ndarray:
    s = np.sign(w)
    return corr * np.outer(s, s)


def _cap_correlation(w: np.ndarray, corr: np.ndarray, cap: float) -> tuple[np.ndarray, list[int]]:
    """Rule 1 of the module docstring: keep assets greedily by |weight|, drop one whose position
    correlation with a kept one exceeds `cap`, scale the kept up to the same gross."""
    pc = _position_corr(w, corr)
    kept: list[int] = []
    dropped: list[int] = []
    for i in np.argsort(-np.abs(w), kind="stable"):
        if w[i] == 0:
            continue
        if any(pc[i, k] > cap for k in kept):  # NaN (a constant asset) is never above
            dropped.append(int(i))
        else:
            kept.append(int(i))
    if not dropped:
        return w, []
    out = np.zeros_like(w)
    out[kept] = w[kept]
    return out * (np.abs(w).sum() / np.abs(out).sum()), sorted(dropped)


def _max_corr(w: np.ndarray, corr: np.ndarray) -> float:
    held = np.flatnonzero(w != 0)
    if len(held) < 2:
        return math.nan
    pairs = _position_corr(w, corr)[np.ix_(held, held)][np.triu_indices(len(held), 1)]
    pairs = pairs[~np.isnan(pairs)]
    return float(pairs.max()) if len(pairs) else math.nan


def apply_limits(weights: pd.Series, returns: pd.DataFrame, limits: RiskLimits) -> RiskCheck:
    """The weights after `limits` (module docstring), measured on the last `limits.window` rows of
    `returns` (all of them when None): simple returns per bar, one column per asset of `weights`, ending
    at the rebalance bar."""
    if limits.periods_per_year is None:
        raise ConfigError("apply_limits needs limits.periods_per_year (bars per year, e.g. 252 for daily "
                          "equities): set it, or go through allocate(), which infers it from the bars")
    window = returns.iloc[-limits.window:] if limits.window is not None else returns
    window = window.reindex(columns=weights.index)
    holes = window.columns[window.isna().any().to_numpy()]
    if len(holes):
        raise DataError(f"returns of {', '.join(map(str, holes[:5]))} have missing values in the risk "
                        f"window of {len(window)} bars: shorten the risk window or start later")
    if len(window) < 2:
        raise DataError(f"the risk limits need at least 2 bars of returns and have {len(window)}")
    r = window.to_numpy(dtype=float)
    w0 = weights.to_numpy(dtype=float)
    cov = np.atleast_2d(np.cov(r, rowvar=False, ddof=1))
    with np.errstate(invalid="ignore", divide="ignore"):  # np.corrcoef's steps, on the covariance in hand
        sd = np.sqrt(np.diag(cov))
        corr = np.clip(cov / sd[:, None] / sd[None, :], -1.0, 1.0)
    ppy = limits.periods_per_year

    def vol(w: np.ndarray) -> float:
        return math.sqrt(max(float(w @ cov @ w), 0.0) * ppy)

    w = w0
    dropped: list[int] = []
    if limits.corr_cap is not None:
        w, dropped = _cap_correlation(w0, corr, limits.corr_cap)
    scale, bound = 1.0, "none"
    if np.any(w != 0):
        if limits.vol_target is not None:
            v = vol(w)
            scale, bound = (limits.vol_target / v, "vol_target") if v > 0 else (math.inf, "max_leverage")
            if scale > limits.max_leverage:
                scale, bound = limits.max_leverage, "max_leverage"
        var, cvar = historical_var_cvar(r @ w, limits.alpha)
        for limit, loss, name in ((limits.var_limit, var, "var"), (limits.cvar_limit, cvar, "cvar")):
            if limit is not None and loss > 0 and scale * loss > limit:
                scale, bound = limit / loss, name
    w = w * scale
    var0, cvar0 = historical_var_cvar(r @ w0, limits.alpha)
    var1, cvar1 = historical_var_cvar(r @ w, limits.alpha)
    report: dict[str, object] = {
        "vol_before": vol(w0), "vol_after": vol(w), "var_before": var0, "var_after": var1,
        "cvar_before": cvar0, "cvar_after": cvar1, "max_corr": _max_corr(w, corr),
        "dropped": ",".join(str(weights.index[i]) for i in dropped),
        "gross_before": float(np.abs(w0).sum()), "gross_after": float(np.abs(w).sum()),
        "scale": scale, "bound": bound,
    }
    return RiskCheck(weights=pd.Series(w, index=weights.index, name="weight"), report=report,
                     contributions=pd.Series(risk_contributions(w, cov), index=weights.index,
                                             name="risk_contribution"))


__all__ = ["BOUNDS", "REPORT_COLUMNS", "RiskCheck", "RiskLimits", "apply_limits", "historical_var_cvar",
           "risk_contributions"]
