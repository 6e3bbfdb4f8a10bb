"""The options of a backtest or sweep as the command line and pipeline YAML write them: text → typed
settings (costs, sizing, output paths, ranking metric), checked before any work.

`workbench sweep` and a pipeline's sweep step both build a `SweepJob` from the same options, so a
pipeline behaves like the command a researcher would type.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workbench.config import split_list
from workbench.errors import ConfigError, did_you_mean
from workbench.files import probe_write
from workbench.strategies.grid import parse_fixed, parse_grid

if TYPE_CHECKING:
    from collections.abc import Callable

    from workbench.backtest import Costs, Execution, Sizing
    from workbench.backtest.sweep import SweepPlan, SweepResult
    from workbench.strategies.base import Strategy
    from workbench.strategies.weights import WeightStrategy

# ranked lowest first by --by; every other metric ranks highest first
LOWER_IS_BETTER = frozenset({"annual_volatility", "max_drawdown_duration", "max_drawdown_days",
                              "turnover"})
HEATMAP_AGGS = ("mean", "median", "max", "min")


def rank_rows(table: pd.DataFrame, by: str, n: int) -> tuple[pd.DataFrame, int]:
    """The n best rows by a metric, finite values only (a run without trades has no Sharpe: NaN).

    Returns the rows and how many were left out for a NaN or infinite value.
    """
    if by not in table.columns:
        raise ConfigError(f"cannot rank by {by!r}: the table has no such column"
                          f"{did_you_mean(by, map(str, table.columns))}")
    values = pd.to_numeric(table[by], errors="coerce").to_numpy(dtype=float)
    finite = np.isfinite(values)
    ranked = table[finite].sort_values(by, ascending=by in LOWER_IS_BETTER, kind="stable")
    return ranked.head(n), int((~finite).sum())


def metric_names() -> list[str]:
    """The metrics a sweep table holds (backtest() alone reports the per-bar-time ones)."""
    from workbench.backtest.metrics import BENCHMARK_KEYS, METRIC_KEYS

    # per-bar-time and per-bar-return figures a sweep's kernel does not keep
    lacks = ("max_drawdown_days", "avg_gross_exposure", *BENCHMARK_KEYS)
    return [k for k in METRIC_KEYS if k not in lacks]


def check_metric(name: str, option: str) -> None:
    names = metric_names()
    if name not in names:
        raise ConfigError(f"{option} {name!r} is not a metric{did_you_mean(name, names)}; "
                          f"use one of {', '.join(names)}")


def check_output(path: Path | None, suffixes: tuple[str, ...], option: str) -> Path | None:
    """Check an output path before any work: its suffix, and that its folder is (or can be) written."""
    if path is None:
        return None
    path = path.expanduser()
    if path.suffix.lower() not in suffixes:
        raise ConfigError(f"{option} {path} must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name, "
                          f"e.g. {path / ('out' + suffixes[0])}")
    parent = path.parent
    ancestor = parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"cannot write {option} {path}: {ancestor} is a file, not a folder; "
                          "choose another path")
    if ancestor != parent:
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot write {option} {path}: {ancestor} is not writable; "
                              "choose a writable folder")
        return path
    try:
        probe_write(parent)
    except OSError as exc:
        raise ConfigError(f"cannot write {option} {path}: {exc.strerror or exc}; choose a writable folder"
                          ) from None
    return path


def parse_sizing(kind: str, fraction: float | None, risk: float | None, target_vol: float | None) -> Sizing:
    from workbench.backtest import Sizing

    # an unknown kind fails here, naming the choices (Sizing turns the str into a SizingKind)
    base = Sizing(kind=kind)  # type: ignore[arg-type]
    given = {"--fraction": (fraction, "fixed"), "--risk": (risk, "risk"),
             "--target-vol": (target_vol, "volatility")}
    for option, (value, needs) in given.items():
        if value is not None and base.kind.value != needs:
            raise ConfigError(f"{option} applies to --sizing {needs}, not {base.kind.value}; "
                              f"add --sizing {needs} or drop {option}")
    extra: dict[str, Any] = {k: v for k, v in (("fraction", fraction), ("risk", risk),
                                               ("target_vol", target_vol)) if v is not None}
    return Sizing(kind=base.kind, **extra)


def parse_costs(text: str | None) -> Costs:
    from workbench.backtest import Costs

    return Costs.parse(text) if text else Costs()


def parse_execution(*, symbols: list[str], costs: str | None = None, fill: str = "next_open",
                    sizing: str = "fixed", fraction: float | None = None, risk: float | None = None,
                    target_vol: float | None = None, direction: str = "both", cash: float = 100_000.0,
                    max_exposure: float = 1.0, lots: str | None = None) -> Execution:
    """The execution settings of backtest, sweep and walk-forward from their command-line text (one
    `Execution`, checked: an unknown key, a setting for another sizing or a lot for a symbol not traded
    fails here, before any work)."""
    from workbench.backtest import Execution
    from workbench.backtest.engine import parse_lots

    size = parse_sizing(sizing, fraction, risk, target_vol)
    # Execution turns the fill and direction strings into their enums (a ConfigError naming the choices)
    return Execution(costs=parse_costs(costs), fill=fill, sizing=size, direction=direction,  # type: ignore[arg-type]
                     init_cash=cash, max_exposure=max_exposure,
                     lots=parse_lots(lots, symbols) if lots is not None else None)



def heatmap_axes(strategy: Strategy | WeightStrategy, combos: list[dict[str, Any]], x: str | None,
                 y: str | None) -> tuple[str, str]:
    """The heatmap's parameters: as given, else the first two that vary in the grid."""
    names = strategy.space.names
    for option, name in (("--x", x), ("--y", y)):
        if name is not None and name not in names:
            raise ConfigError(f"{option} {name!r} is not a parameter of {strategy.name}"
                              f"{did_you_mean(name, names)}; it has {', '.join(names)}")
    varying = [n for n in names if len({repr(c[n]) for c in combos}) > 1]
    x = x or next((n for n in varying if n != y), None)
    y = y or next((n for n in varying if n != x), None)
    if x is None or y is None or x == y:
        raise ConfigError("--heatmap needs two different parameters that vary in the grid; sweep at "
                          "least two, or name them with --x and --y")
    return x, y



@dataclass(frozen=True)
class SweepJob:
    """A sweep as `workbench sweep` (or a pipeline's sweep step) asked for it, every option checked.

    `from_options` takes the command's options by their command-line names (text as typed) and fails
    before any work on a bad one; `load`, `run` and `write_heatmap` then do the work. A weight strategy
    (`workbench strategies` lists them) sweeps its symbols as one book.
    """

    strategy: Strategy | WeightStrategy
    values: dict[str, list[Any]]
    fixed: dict[str, Any]
    symbols: list[str]
    combos: list[dict[str, Any]]
    out: Path
    timeframe: str
    start: str | None
    end: str | None
    source: str | None
    execution: Execution
    portfolio: bool
    grid_all: bool
    confirm_large: bool
    top: int
    by: str
    metric: str
    heatmap: Path | None
    x: str | None
    y: str | None
    agg: str

    @classmethod
    def from_options(
        cls, *, strategy: str, symbols: str, out: Path, timeframe: str = "1h", grid: str | None = None,
        grid_all: bool = False, yes: bool = False, fixed: str | None = None, portfolio: bool = False,
        start: str | None = None, end: str | None = None, source: str | None = None,
        costs: str | None = None, fill: str = "next_open", sizing: str = "fixed",
        fraction: float | None = None, risk: float | None = None, target_vol: float | None = None,
        direction: str = "both", cash: float = 100_000.0, max_exposure: float = 1.0,
        lots: str | None = None, top: int = 10, by: str = "sharpe", heatmap: Path | None = None,
        x: str | None = None, y: str | None = None, metric: str | None = None, agg: str = "mean",
    ) -> SweepJob:
        """Check every option of `workbench sweep` (same names and defaults) and build the job."""
        from workbench.backtest.sweep import check_sweep_size
        from workbench.backtest.weight_strategies import check_weight_execution, resolve_strategy
        from workbench.strategies.weights import WeightStrategy

        strat = resolve_strategy(strategy)
        book = portfolio or isinstance(strat, WeightStrategy)
        values = parse_grid(grid, strat)
        pinned = parse_fixed(fixed, strat)
        both = sorted(set(values) & set(pinned))
        if both:
            raise ConfigError(f"{', '.join(both)} given in both --grid and --fixed; "
                              "put each parameter in one")
        syms = split_list(symbols)
        # unknown names, bad values, nothing named, too many runs: one error before any work
        check_sweep_size(strat, values, pinned, grid_all=grid_all, units=1 if book else len(syms),
                         confirm_large=yes)
        combos = strat.space.grid(values, pinned, walk_all=grid_all)
        if not combos:
            raise ConfigError(f"the grid of {strat.name} has no feasible combination (constraints "
                              f"{', '.join(c.expr for c in strat.space.constraints)}); widen the ranges")
        if top < 1:
            raise ConfigError(f"--top {top} must be at least 1")
        check_metric(by, "--by")
        metric = metric or by
        if heatmap is not None:
            check_metric(metric, "--metric")
            x, y = heatmap_axes(strat, combos, x, y)
            if agg not in HEATMAP_AGGS:
                raise ConfigError(f"--agg {agg!r} is unknown{did_you_mean(agg, HEATMAP_AGGS)}; "
                                  f"use one of {', '.join(HEATMAP_AGGS)}")
        execution = parse_execution(symbols=syms, costs=costs, fill=fill, sizing=sizing, fraction=fraction,
                                    risk=risk, target_vol=target_vol, direction=direction, cash=cash,
                                    max_exposure=max_exposure, lots=lots)
        if isinstance(strat, WeightStrategy):
            check_weight_execution(execution, strat.name)
        target = check_output(out, (".parquet", ".csv"), "--out")
        heat_path = check_output(heatmap, (".html", ".htm"), "--heatmap")
        assert target is not None
        return cls(strategy=strat, values=values, fixed=pinned, symbols=syms, combos=combos, out=target,
                   timeframe=timeframe, start=start, end=end, source=source, execution=execution,
                   portfolio=book, grid_all=grid_all, confirm_large=yes, top=top, by=by,
                   metric=metric, heatmap=heat_path, x=x, y=y, agg=agg)

    def load(self, lake: Any) -> dict[str, pd.DataFrame]:
        """The job's bars from the lake."""
        from workbench.backtest import load_bars

        return load_bars(lake, self.symbols, self.timeframe, self.start, self.end, source=self.source,
                         costs=self.execution.costs, fill=self.execution.fill)

    def run(self, bars: dict[str, pd.DataFrame], *, progress: Callable[[int, int], None] | None = None,
            on_start: Callable[[SweepPlan], None] | None = None) -> SweepResult:
        """Sweep the grid on `bars`; the result's inputs name the lake sources the bars came from."""
        from workbench.backtest.sweep import sweep

        result = sweep(self.strategy, bars, self.values, fixed=self.fixed, execution=self.execution,
                       portfolio=self.portfolio, progress=progress,
                       timeframe=self.timeframe, grid_all=self.grid_all, confirm_large=self.confirm_large,
                       on_start=on_start)
        result.inputs["sources"] = sorted({str(df.attrs["source"]) for df in bars.values()
                                           if "source" in df.attrs})
        return result

    def write_heatmap(self, result: SweepResult) -> Path:
        """Write the heatmap of --metric over --x and --y (only when --heatmap was given)."""
        from workbench.backtest.plots import write_html

        assert self.heatmap is not None and self.x is not None and self.y is not None
        fig = result.heatmap(self.x, self.y, metric=self.metric, agg=self.agg)
        return write_html(fig, self.heatmap)
