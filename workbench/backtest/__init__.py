"""Backtests on vectorbt with honest fills and costs, metrics, parameter sweeps, allocators and plots."""

from workbench.backtest.allocators import Allocator
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
from workbench.backtest.portfolio_risk import RiskLimits
from workbench.backtest.rebalance import Allocation, RebalanceResult, allocate, simulate_weights
from workbench.backtest.sweep import SweepIndex, SweepResult, list_sweeps, load_sweep, sweep
from workbench.backtest.tickfills import (
    TickSummary,
    plot_tick_vs_bar,
    tick_fills,
    tick_summary,
    write_tick_report,
)

__all__ = [
    "Allocation",
    "Allocator",
    "BacktestResult",
    "Costs",
    "Direction",
    "Execution",
    "Fill",
    "Lot",
    "RebalanceResult",
    "RiskLimits",
    "Sizing",
    "SizingKind",
    "SweepIndex",
    "SweepResult",
    "TickSummary",
    "allocate",
    "backtest",
    "list_sweeps",
    "load_bars",
    "load_sweep",
    "parse_lots",
    "plot_tick_vs_bar",
    "simulate",
    "simulate_weights",
    "sweep",
    "tick_fills",
    "tick_summary",
    "write_tick_report",
]
