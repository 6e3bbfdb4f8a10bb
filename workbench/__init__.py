"""workbench: a Jupyter-centric quant research workbench for crypto and US equities.

The names a notebook needs: `Lake` for data, `get_strategy` / `list_strategies` for strategies,
`backtest` and `sweep` with their `Execution` settings (`Costs`, `Sizing`, `Lot`), `load_bars` to read
bars for them, `walk_forward` to optimise out of sample, and `promote` to turn a walk-forward run that
passes the gates into a versioned strategy artifact.
"""

import sys
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

# jsonschema, which plotly's notebook renderers, nbformat and papermill import, loads its optional IRI
# format checker (rfc3987-syntax, installed for the Jupyter server) at import, and that compiles a
# grammar: 3 s of every process that draws a chart or runs a report (bench: `python -X importtime -c
# "import papermill"`, 4.0 s -> 0.9 s). The workbench never validates IRIs, and jsonschema leaves the
# `iri` formats unchecked without the module, so processes that import the workbench skip it. A process
# that imported jsonschema first keeps its checker.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

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
