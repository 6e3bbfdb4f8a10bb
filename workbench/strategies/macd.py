"""MACD crossover: long when the MACD line crosses above its signal line, out when it crosses below.

A trend-following momentum rule. With `short` the opposite cross also opens a short position.
"""

from __future__ import annotations

import pandas as pd

from workbench.strategies import indicators as ind
from workbench.strategies.base import ParamSpace, Signals, Strategy, bool_param, int_param


def signals(bars: pd.DataFrame, p: dict) -> Signals:
    """Entries on MACD-over-signal crosses, exits on the reverse cross."""
    line, sig = ind.macd(bars["close"], p["fast"], p["slow"], p["signal"])
    up = ind.crossed_above(line, sig)
    down = ind.crossed_below(line, sig)
    if p["short"]:
        return Signals(up, down, short_entries=down, short_exits=up)
    return Signals(up, down)


SPACE = ParamSpace.of(
    int_param("fast", 12, 6, 24, step=3, doc="fast EMA window (bars)"),
    int_param("slow", 26, 16, 56, step=10, doc="slow EMA window (bars)"),
    int_param("signal", 9, 3, 15, step=3, doc="EMA window of the signal line (bars)"),
    bool_param("short", False, doc="also go short on the downward cross"),
    constraints=["fast < slow"],
)

STRATEGY = Strategy(
    "macd", SPACE, signals,
    # the slow EMA is defined from bar slow-1, its signal EMA `signal` bars later
    warmup=lambda p: int(p["slow"]) + int(p["signal"]),
    description="MACD line crossing its signal line (trend-following momentum).",
)
