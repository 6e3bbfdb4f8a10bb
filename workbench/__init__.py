"""workbench: a Jupyter-centric quant research workbench for crypto and US equities.

The names a notebook needs: `Lake` for data, `get_strategy` / `list_strategies` for strategies,
`backtest` and `sweep` with their `Execution` settings (`Costs`, `Sizing`, `Lot`), `load_bars` to read
bars for them, `walk_forward` to optimise out of sample, and `promote` to turn a walk-forward run that
passes the gates into a versioned strategy artifact.
"""

from typing import Any

from workbench.backtest import Costs, Lot, Sizing, backtest, load_bars, simulate
from workbench.backtest.engine import Execution
from workbench.backtest.sweep import sweep
from workbench.data.lake import Lake
from workbench.data.quality import QualityPolicy, check_bars
from workbench.data.sources import get_source
from workbench.errors import WorkbenchError
from workbench.promote import promote
from workbench.strategies import Signals, Strategy, get_strategy, list_strategies
from workbench.strategies.lookahead import check_lookahead
from workbench.version import __version__

__all__ = [
    "Costs",
    "Execution",
    "Lake",
    "Lot",
    "QualityPolicy",
    "Signals",
    "Sizing",
    "Strategy",
    "WorkbenchError",
    "__version__",
    "backtest",
    "check_bars",
    "check_lookahead",
    "get_source",
    "get_strategy",
    "list_strategies",
    "load_bars",
    "promote",
    "simulate",
    "sweep",
    "walk_forward",
]


def __getattr__(name: str) -> Any:
    """`walk_forward` on first use: Optuna is a heavy import that most commands never need."""
    if name == "walk_forward":
        from workbench.optimize.walkforward import walk_forward

        return walk_forward
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
