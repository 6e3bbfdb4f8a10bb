"""An example research strategy: buy strength after a quiet spell, leave when momentum fades.

Any module in research/ that defines STRATEGY (or STRATEGIES) is found by name:
`workbench backtest --strategy breakout_momentum ...` or `backtest("breakout_momentum", bars)`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.strategies import ParamSpace, Signals, Strategy, float_param, int_param
from workbench.strategies import indicators as ind


def signals(bars: pd.DataFrame, p: dict) -> Signals:
    """Long when the close makes a `lookback` high while volatility sits below its median."""
    close = bars["close"].to_numpy()
    prior_high = np.concatenate(([np.nan], ind.rolling_max(close, p["lookback"])[:-1]))
    vol = ind.rolling_std(ind.log_returns(close), p["vol_window"])
    typical = pd.Series(vol).rolling(p["vol_window"] * 10, min_periods=p["vol_window"]).median()
    quiet = vol <= typical.to_numpy()
    entries = (close > prior_high) & quiet
    momentum = close / np.concatenate((np.full(p["lookback"], np.nan), close[:-p["lookback"]])) - 1
    exits = ind.crossed_below(momentum, np.zeros_like(momentum))
    return Signals(entries, exits, trailing_stop=p["trail"])


STRATEGY = Strategy(
    "breakout_momentum",
    ParamSpace.of(
        int_param("lookback", 48, 10, 200, step=10, doc="breakout window (bars)"),
        int_param("vol_window", 24, 5, 100, step=5, doc="volatility window (bars)"),
        float_param("trail", 0.05, 0.01, 0.2, step=0.01, doc="trailing stop distance"),
    ),
    signals,
    warmup=lambda p: int(max(p["lookback"], p["vol_window"] * 2)) + 1,
    description="Example user strategy: quiet-volatility breakout with a trailing stop.",
    source="research",
)
