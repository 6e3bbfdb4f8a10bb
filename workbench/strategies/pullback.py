"""Trend entries with resting orders: after a fast/slow moving-average cross up, buy a pullback with a
limit `offset` below the signal bar's close (or a breakout with a stop `offset` above it), resting
`tif` bars; out on the cross down (and, with `short`, the mirror image).

A market order after the cross pays the spread and the bar's move; the limit waits for a better price
and may never fill. SEMANTICS.md "Entry orders" states how the engine fills them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.strategies import indicators as ind
from workbench.strategies.base import (
    ParamSpace,
    Signals,
    Strategy,
    bool_param,
    choice_param,
    float_param,
    int_param,
)


def _signals(bars: pd.DataFrame, p: dict) -> Signals:
    close = bars["close"].to_numpy(dtype=float)
    fast, slow = ind.sma(close, p["fast"]), ind.sma(close, p["slow"])
    up, down = ind.crosses(fast, slow)
    off = float(p["offset"])
    # each bar's order price, on the side its entry needs (a long's limit below the close, a short's
    # above; stops the other way round)
    sign = 1.0 if p["order"] == "limit" else -1.0
    long_px = close * (1.0 - sign * off)
    price = long_px if not p["short"] else np.where(up, long_px, close * (1.0 + sign * off))
    limit = price if p["order"] == "limit" else None
    stop = price if p["order"] == "stop" else None
    if p["short"]:
        return Signals(up, down, short_entries=down, short_exits=up, order_type=p["order"], limit_price=limit,
                       stop_price=stop, time_in_force=int(p["tif"]))
    return Signals(up, down, order_type=p["order"], limit_price=limit, stop_price=stop,
                   time_in_force=int(p["tif"]))


SPACE = ParamSpace.of(
    int_param("fast", 10, 5, 200, step=5, doc="fast moving-average window (bars)"),
    int_param("slow", 50, 10, 500, step=10, doc="slow moving-average window (bars)"),
    choice_param("order", "limit", ["limit", "stop"],
                 doc="limit: buy a pullback below the close; stop: buy a breakout above it"),
    float_param("offset", 0.005, 0.0005, 0.05, step=0.0005, doc="distance of the order from the close"),
    int_param("tif", 5, 1, 100, doc="bars the entry order rests before it is cancelled"),
    bool_param("short", False, doc="also go short on the opposite cross"),
    constraints=["fast < slow"],
)

STRATEGIES = [
    Strategy("sma_pullback", SPACE, _signals, warmup=lambda p: int(p["slow"]),
             description="SMA cross entered with a resting limit (pullback) or stop (breakout) order."),
]
