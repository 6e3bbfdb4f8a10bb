"""The options of a walk-forward run as the command line and pipeline YAML write them: text → a
checked `WalkForwardJob`.

`workbench optimize walk-forward` and a pipeline's walk_forward step both build one from the same
options, so a pipeline behaves like the command a researcher would type.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from workbench.backtest.options import check_output, parse_execution
from workbench.config import split_list
from workbench.errors import ConfigError
from workbench.strategies.grid import parse_fixed

if TYPE_CHECKING:
    from workbench.backtest import Execution
    from workbench.optimize import Objective, WalkForward, WalkForwardResult
    from workbench.optimize.walkforward import FoldProgress
    from workbench.strategies.base import Strategy
    from workbench.strategies.weights import WeightStrategy


def parse_window(text: str | None, option: str) -> int | str | None:
    """A train, test or purge window: a number of bars (2000) or a duration (90d)."""
    if text is None:
        return None
    t = text.strip()
    if t.isdigit():
        return int(t)
    if not t or not t[0].isdigit():
        raise ConfigError(f"{option} {text!r} must be a number of bars (e.g. 2000) or a duration (e.g. 90d)")
    return t


@dataclass(frozen=True)
class WalkForwardJob:
    """A walk-forward run as `workbench optimize walk-forward` (or a pipeline step) asked for it.

    `from_options` takes the command's options by their command-line names and fails before any
    work on a bad one; `load` and `run` then do the work. A weight strategy (`allocate`, `xs_momentum`,
    ...) trades its symbols as one portfolio.
    """

    strategy: Strategy | WeightStrategy
    fixed: dict[str, Any]
    symbols: list[str]
    splitter: WalkForward
    objective: Objective
    execution: Execution
    html: Path | None
    timeframe: str
    start: str | None
    end: str | None
    source: str | None
    trials: int
    workers: int
    seed: int
    sampler: str
    pruner: str
    timeout: float | None
    storage: str | None
    name: str | None
    portfolio: bool

    @classmethod
    def from_options(
        cls, *, strategy: str, symbols: str, timeframe: str = "1h", folds: int = 8, trials: int = 100,
        workers: int = 1, train: str | None = None, test: str | None = None, purge: str = "0",
        anchored: bool = False, objective: str = "sharpe", min_trades: int = 1, dd_penalty: float = 1.0,
        seed: int = 0, sampler: str = "tpe", pruner: str = "none", timeout: float | None = None,
        storage: str | None = None, name: str | None = None, fixed: str | None = None,
        portfolio: bool = False, start: str | None = None, end: str | None = None,
        source: str | None = None, costs: str | None = None, fill: str = "next_open",
        sizing: str = "fixed", fraction: float | None = None, risk: float | None = None,
        target_vol: float | None = None, direction: str = "both", cash: float = 100_000.0,
        max_exposure: float = 1.0, lots: str | None = None, html: Path | None = None,
    ) -> WalkForwardJob:
        """Check every option of `workbench optimize walk-forward` (same names and defaults)."""
        from workbench.backtest.weight_strategies import check_weight_execution, resolve_strategy
        from workbench.optimize import Objective, WalkForward
        from workbench.strategies.weights import WeightStrategy

        strat = resolve_strategy(strategy)
        pinned = parse_fixed(fixed, strat)
        syms = split_list(symbols)
        splitter = WalkForward(n_folds=folds, train=parse_window(train, "--train"),
                               test=parse_window(test, "--test"), purge=parse_window(purge, "--purge") or 0,
                               anchored=anchored)
        execution = parse_execution(symbols=syms, costs=costs, fill=fill, sizing=sizing, fraction=fraction,
                                    risk=risk, target_vol=target_vol, direction=direction, cash=cash,
                                    max_exposure=max_exposure, lots=lots)
        if isinstance(strat, WeightStrategy):
            check_weight_execution(execution, strat.name)
            portfolio = True  # (its targets span the symbols: one book, as walk_forward trades it)
        html_path = check_output(html, (".html", ".htm"), "--html")
        # Objective turns the str into an ObjectiveMetric (a ConfigError naming the choices)
        obj = Objective(metric=objective, min_trades=min_trades, dd_penalty=dd_penalty)  # type: ignore[arg-type]
        return cls(strategy=strat, fixed=pinned, symbols=syms, splitter=splitter,
                   objective=obj, execution=execution, html=html_path, timeframe=timeframe, start=start,
                   end=end, source=source, trials=trials, workers=workers, seed=seed, sampler=sampler,
                   pruner=pruner, timeout=timeout, storage=storage, name=name, portfolio=portfolio)

    def load(self, lake: Any) -> dict[str, pd.DataFrame]:
        """The job's bars from the lake."""
        from workbench.backtest import load_bars

        return load_bars(lake, self.symbols, self.timeframe, self.start, self.end, source=self.source,
                         costs=self.execution.costs, fill=self.execution.fill)

    def run(self, bars: dict[str, pd.DataFrame], *, progress: FoldProgress | None = None
            ) -> WalkForwardResult:
        """Run (or resume) the walk-forward on `bars`."""
        from workbench.optimize import walk_forward

        return walk_forward(self.strategy, bars, splitter=self.splitter, n_trials=self.trials,
                            objective=self.objective, seed=self.seed, sampler=self.sampler,
                            pruner=self.pruner, timeout=self.timeout, fixed=self.fixed, workers=self.workers,
                            storage=self.storage, name=self.name, execution=self.execution,
                            portfolio=self.portfolio,
                            timeframe=self.timeframe, progress=progress)

    def write_chart(self, result: WalkForwardResult) -> Path:
        """Write the OOS equity chart (only when --html was given)."""
        from workbench.backtest.plots import write_html

        assert self.html is not None
        return write_html(result.figure(), self.html)
