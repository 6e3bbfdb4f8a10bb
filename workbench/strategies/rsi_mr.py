"""RSI mean reversion: buy when an oversold RSI turns back up, sell once it has recovered.

Long entry when RSI crosses back above `lower`; long exit when it crosses above `exit_level` or
`upper`, whichever comes first. With `short` the rule is mirrored around 50: short entry when RSI
crosses back below `upper`, exit when it crosses below `100 - exit_level` or `lower`.
`stop_loss` (a fraction of the entry price, 0 = none) caps the loss of a reversion that does not come.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.strategies import indicators as ind
from workbench.strategies.base import ParamSpace, Signals, Strategy, bool_param, float_param, int_param


def signals(bars: pd.DataFrame, p: dict) -> Signals:
    """Entries when RSI leaves the oversold (overbought) zone, exits when it has reverted."""
    r = ind.rsi(bars["close"], p["window"])
    lower, upper, level = float(p["lower"]), float(p["upper"]), float(p["exit_level"])
    long_in = ind.crossed_above(r, lower)
    long_out = ind.crossed_above(r, level) | ind.crossed_above(r, upper)
    stop = float(p["stop_loss"]) or np.nan
    if not p["short"]:
        return Signals(long_in, long_out, stop_loss=stop)
    short_in = ind.crossed_below(r, upper)
    short_out = ind.crossed_below(r, 100.0 - level) | ind.crossed_below(r, lower)
    return Signals(long_in, long_out, short_in, short_out, stop_loss=stop)


SPACE = ParamSpace.of(
    int_param("window", 14, 7, 21, step=7, doc="RSI window (bars)"),
    float_param("lower", 30.0, 20.0, 30.0, step=5.0, doc="oversold level: buy when RSI crosses back above"),
    float_param("upper", 70.0, 70.0, 80.0, step=5.0, doc="overbought level: the long exit cap / short entry"),
    float_param("exit_level", 50.0, 50.0, 70.0, step=10.0,
                doc="RSI level that ends the reversion (mirrored to 100-x for shorts)"),
    bool_param("short", False, doc="also trade the mirrored short side"),
    float_param("stop_loss", 0.0, 0.0, 0.1, step=0.05, doc="stop-loss fraction of the entry price; 0 = none"),
    constraints=["lower < upper", "lower < exit_level"],
)

STRATEGY = Strategy(
    "rsi_mr", SPACE, signals,
    warmup=lambda p: int(p["window"]) + 1,  # one bar for the first difference, then the window
    description="RSI mean reversion: buy oversold turns, exit on recovery to a middle level.",
)
