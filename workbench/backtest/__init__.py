"""Backtests on vectorbt with honest fills and costs, metrics, parameter sweeps and plots."""

from workbench.backtest.engine import (
    BacktestResult,
    Costs,
    Direction,
    Fill,
    Sizing,
    SizingKind,
    backtest,
    load_bars,
    simulate,
)

__all__ = [
    "BacktestResult",
    "Costs",
    "Direction",
    "Fill",
    "Sizing",
    "SizingKind",
    "backtest",
    "load_bars",
    "simulate",
]
