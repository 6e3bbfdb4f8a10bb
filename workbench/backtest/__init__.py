"""Backtests on vectorbt with honest fills and costs, metrics, parameter sweeps and plots."""

from workbench.backtest.engine import (
    BacktestResult,
    Costs,
    Direction,
    Execution,
    Fill,
    Lot,
    Sizing,
    SizingKind,
    backtest,
    load_bars,
    parse_lots,
    simulate,
)
from workbench.backtest.sweep import SweepResult, sweep

__all__ = [
    "BacktestResult",
    "Costs",
    "Direction",
    "Execution",
    "Fill",
    "Lot",
    "Sizing",
    "SizingKind",
    "SweepResult",
    "backtest",
    "load_bars",
    "parse_lots",
    "simulate",
    "sweep",
]
