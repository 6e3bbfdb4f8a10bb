"""Donchian channel breakout (turtle-style): buy a new n-bar high, sell a new m-bar low, ATR stops.

Long entry when the close is above the highest high of the previous `entry` bars (bars t-n..t-1,
so the bar's own high does not count); exit when the close is below the lowest low of the previous
`exit` bars. The stop distance is `atr_mult * ATR(atr_window) / close` on the signal bar, a per-bar
array; with `trail` it is a trailing stop from the highest high since entry instead of a fixed one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.strategies import indicators as ind
from workbench.strategies.base import ParamSpace, Signals, Strategy, bool_param, float_param, int_param


def _shift1(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    out[0] = np.nan
    out[1:] = x[:-1]
    return out


def signals(bars: pd.DataFrame, p: dict) -> Signals:
    """Breakout entries above the previous channel high, exits below the previous channel low."""
    close = bars["close"].to_numpy(dtype=float)
    high_prev = _shift1(ind.rolling_max(bars["high"], p["entry"]))
    low_prev = _shift1(ind.rolling_min(bars["low"], p["exit"]))
    with np.errstate(invalid="ignore"):
        entries = close > high_prev
        exits = close < low_prev
    dist = float(p["atr_mult"]) * ind.atr(bars["high"], bars["low"], bars["close"], p["atr_window"]) / close
    if p["trail"]:
        return Signals(entries, exits, trailing_stop=dist)
    return Signals(entries, exits, stop_loss=dist)


SPACE = ParamSpace.of(
    int_param("entry", 20, 10, 50, step=10, doc="breakout channel: highest high of the previous n bars"),
    int_param("exit", 10, 5, 25, step=5, doc="exit channel: lowest low of the previous m bars"),
    int_param("atr_window", 14, 14, 28, step=14, doc="ATR window for the stop distance (bars)"),
    float_param("atr_mult", 2.0, 1.0, 4.0, step=1.0, doc="stop distance in ATRs"),
    bool_param("trail", False, doc="trail the stop from the highest high instead of fixing it"),
    constraints=["exit <= entry"],
)

STRATEGY = Strategy(
    "donchian_breakout", SPACE, signals,
    warmup=lambda p: max(int(p["entry"]) + 1, int(p["exit"]) + 1, int(p["atr_window"])),
    description="Donchian breakout: buy above the previous n-bar high, sell below the m-bar low, ATR stops.",
)
