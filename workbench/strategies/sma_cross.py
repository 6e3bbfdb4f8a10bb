"""Moving-average crossover: long when the fast average crosses above the slow one, out when below.

Two built-ins share this file: `sma_cross` (simple averages) and `ema_cross` (exponential).
A cross is strict: the fast average must go from at-or-below to strictly above the slow one.
"""

from __future__ import annotations

import pandas as pd

from workbench.strategies import indicators as ind
from workbench.strategies.base import ParamSpace, SignalFn, Signals, Strategy, bool_param, int_param


def _make(average) -> SignalFn:
    def signals(bars: pd.DataFrame, p: dict) -> Signals:
        fast = average(bars["close"], p["fast"])
        slow = average(bars["close"], p["slow"])
        up, down = ind.crosses(fast, slow)
        if p["short"]:
            return Signals(up, down, short_entries=down, short_exits=up)
        return Signals(up, down)

    return signals


SPACE = ParamSpace.of(
    int_param("fast", 10, 5, 200, step=5, doc="fast moving-average window (bars)"),
    int_param("slow", 50, 10, 500, step=10, doc="slow moving-average window (bars)"),
    bool_param("short", False, doc="also go short on the opposite cross"),
    constraints=["fast < slow"],
)

STRATEGIES = [
    Strategy("sma_cross", SPACE, _make(ind.sma), warmup=lambda p: int(p["slow"]),
             description="Fast/slow simple moving-average crossover."),
    Strategy("ema_cross", SPACE, _make(ind.ema), warmup=lambda p: int(p["slow"]),
             description="Fast/slow exponential moving-average crossover."),
]
