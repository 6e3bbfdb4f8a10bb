"""Regime filter: let a strategy enter only in the market regime it is built for.

`gate(strategy)` wraps any strategy. Its entries (long and short) pass only on bars where the
regime is on; its exits and stops always pass, so a position is never trapped by the filter.

Modes (`regime.mode`), both with `regime.threshold` on a 0..100 scale:
- ``trend``: on while ADX(`regime.window`) >= threshold (a trending market, whatever its direction);
- ``volatility``: on while the rolling standard deviation of log returns over `regime.window` bars
  is at or below the `threshold`-th percentile of its own values over the last
  ``VOL_LOOKBACK * window`` bars (a calm market). A percentile rather than an annualised level so
  that one threshold means the same thing on every asset and timeframe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ConfigError
from workbench.strategies import indicators as ind
from workbench.strategies.base import (
    ParamSpace,
    Signals,
    Strategy,
    choice_param,
    float_param,
    int_param,
    unprefix,
)
from workbench.strategies.sma_cross import STRATEGIES as _MA_CROSSES

PREFIX = "regime"
VOL_LOOKBACK = 20  # the volatility percentile is taken over VOL_LOOKBACK * window bars
MODES = ("trend", "volatility")


def regime_on(bars: pd.DataFrame, mode: str, window: int, threshold: float) -> np.ndarray:
    """Boolean per bar: whether the regime is on (False while its indicators warm up)."""
    if mode == "trend":
        level = ind.adx(bars["high"], bars["low"], bars["close"], window)
    elif mode == "volatility":
        vol = ind.rolling_std(ind.log_returns(bars["close"]), window)
        level = rolling_percentile(vol, VOL_LOOKBACK * window)
    else:
        raise ConfigError(f"unknown regime mode {mode!r}; use one of {list(MODES)}")
    with np.errstate(invalid="ignore"):
        on = level >= threshold if mode == "trend" else level <= threshold
    return on & ~np.isnan(level)


def rolling_percentile(x: np.ndarray, n: int) -> np.ndarray:
    """Percentile rank (0..100] of each value among the last n values, this bar included (causal)."""
    return pd.Series(x).rolling(n, min_periods=n).rank(pct=True).to_numpy() * 100.0


def regime_warmup(mode: str, window: int) -> int:
    """Bars the regime indicator needs before it can be on."""
    return 2 * window if mode == "trend" else window * (VOL_LOOKBACK + 1)


def gate(strategy: Strategy, *, name: str | None = None, mode: str = "trend", window: int = 14,
         threshold: float = 20.0) -> Strategy:
    """Wrap `strategy` so that it enters only while the regime is on; exits always pass."""
    inner = strategy
    prefix = inner.name
    if prefix == PREFIX:
        raise ConfigError(f"cannot gate a strategy named {PREFIX!r} directly; its parameters would "
                          "clash with the regime's own; rename it")
    own = ParamSpace.of(
        choice_param(f"{PREFIX}.mode", mode, MODES, doc="trend: ADX >= threshold; volatility: "
                     "rolling volatility percentile <= threshold"),
        int_param(f"{PREFIX}.window", window, 7, 42, step=7, doc="ADX / volatility window (bars)"),
        float_param(f"{PREFIX}.threshold", threshold, 10.0, 90.0, step=5.0,
                    doc="ADX level (trend) or volatility percentile (volatility), 0..100"),
    )
    inner_space = inner.space.prefixed(prefix)
    space = ParamSpace(inner_space.params + own.params, inner_space.constraints + own.constraints)

    def signals(bars: pd.DataFrame, p: dict) -> Signals:
        sig = inner.fn(bars, unprefix(p, prefix))
        on = regime_on(bars, str(p[f"{PREFIX}.mode"]), int(p[f"{PREFIX}.window"]),
                       float(p[f"{PREFIX}.threshold"]))
        n = len(bars)
        arrays = sig.arrays(n, inner.name)
        return Signals(
            arrays["long_entries"] & on,
            sig.long_exits,
            arrays["short_entries"] & on if sig.has_shorts else None,
            sig.short_exits,
            stop_loss=sig.stop_loss,
            take_profit=sig.take_profit,
            trailing_stop=sig.trailing_stop,
            extras={**sig.extras, "regime": on},
        )

    def warmup(p: Mapping[str, Any]) -> int:
        return max(inner.warmup(unprefix(p, prefix)),
                   regime_warmup(str(p[f"{PREFIX}.mode"]), int(p[f"{PREFIX}.window"])))

    return Strategy(
        name or f"regime({inner.name})", space, signals, warmup=warmup,
        description=f"{inner.name} entering only in a trend or calm-volatility regime.",
        components=(inner,), source=inner.source,
    )


STRATEGY = gate(next(s for s in _MA_CROSSES if s.name == "sma_cross"), name="regime")
