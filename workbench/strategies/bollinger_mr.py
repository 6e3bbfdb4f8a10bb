"""Bollinger-band mean reversion: buy when the close comes back inside the lower band, exit at the middle.

Long entry when the close crosses back above the lower band (mean - k sd over `window` bars); long
exit when it crosses above the middle band (the moving average). With `short` mirrored: short entry
when the close crosses back below the upper band, exit when it crosses below the middle band.
"""

from __future__ import annotations

import pandas as pd

from workbench.strategies import indicators as ind
from workbench.strategies.base import ParamSpace, Signals, Strategy, bool_param, float_param, int_param


def signals(bars: pd.DataFrame, p: dict) -> Signals:
    """Entries on re-entry into the bands, exits at the middle band."""
    close = bars["close"]
    lower, mid, upper = ind.bollinger(close, p["window"], p["k"])
    long_in = ind.crossed_above(close, lower)
    long_out = ind.crossed_above(close, mid)
    if not p["short"]:
        return Signals(long_in, long_out)
    return Signals(long_in, long_out, ind.crossed_below(close, upper), ind.crossed_below(close, mid))


SPACE = ParamSpace.of(
    int_param("window", 20, 10, 50, step=5, doc="moving-average and standard-deviation window (bars)"),
    float_param("k", 2.0, 1.5, 3.0, step=0.5, doc="band width in standard deviations"),
    bool_param("short", False, doc="also trade the mirrored short side at the upper band"),
)

STRATEGY = Strategy(
    "bollinger_mr", SPACE, signals,
    warmup=lambda p: int(p["window"]),
    description="Bollinger mean reversion: buy back inside the lower band, exit at the middle band.",
)
