"""Walk-forward optimisation with Optuna, and the overfitting diagnostics of its trials."""

from workbench.optimize.records import RunIndex, list_runs, load_run, run_index, save_run
from workbench.optimize.splitter import Fold, WalkForward
from workbench.optimize.walkforward import (
    Diagnostics,
    Objective,
    ObjectiveMetric,
    PrunerKind,
    SamplerKind,
    WalkForwardResult,
    join_run,
    walk_forward,
)

__all__ = [
    "Diagnostics",
    "Fold",
    "Objective",
    "ObjectiveMetric",
    "PrunerKind",
    "RunIndex",
    "SamplerKind",
    "WalkForward",
    "WalkForwardResult",
    "join_run",
    "list_runs",
    "load_run",
    "run_index",
    "save_run",
    "walk_forward",
]
