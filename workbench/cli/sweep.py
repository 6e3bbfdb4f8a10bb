"""`workbench sweep`: a parameter grid on lake bars, the best rows, the table and a heatmap."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from workbench.backtest.metrics import format_metric as fmt_metric
from workbench.backtest.options import SweepJob, rank_rows
from workbench.cli.common import _duration, _lake, _progress, _span, out
from workbench.cli.options import (
    CashOpt,
    CostsOpt,
    DirectionOpt,
    EndOpt,
    ExposureOpt,
    FillOpt,
    FractionOpt,
    LotsOpt,
    RiskOpt,
    SizingOpt,
    SourceOpt,
    StartOpt,
    StrategyOpt,
    SymbolsOpt,
    TargetVolOpt,
    TimeframeOpt,
)
from workbench.strategies.base import Strategy

if TYPE_CHECKING:
    from workbench.backtest.sweep import SweepPlan

_TOP_METRICS = ("total_return", "sharpe", "sortino", "max_drawdown", "n_trades", "win_rate",
                "profit_factor", "exposure", "excess_return")
# a weight strategy's book rebalances more than it closes positions: its turnover says more than round trips
_TOP_WEIGHT_METRICS = ("total_return", "sharpe", "sortino", "max_drawdown", "exposure", "turnover",
                       "excess_return")


def sweep_cmd(
    strategy: StrategyOpt,
    symbols: SymbolsOpt,
    out_path: Annotated[Path, typer.Option("--out", help="Write the results table here (.parquet or .csv).")],
    timeframe: TimeframeOpt = "1h",
    grid: Annotated[str | None, typer.Option(
        help="Values per parameter, comma-separated: name=start:stop:step (inclusive; start:stop walks "
        "the parameter's own step) or name=v1|v2|v3; parameters not named keep their default.")] = None,
    grid_all: Annotated[bool, typer.Option(
        "--grid-all", help="Walk the own grid of every parameter not named in --grid or --fixed.")] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", help="Run a sweep of more than 100,000 runs (combinations x symbols).")] = False,
    fixed: Annotated[str | None, typer.Option(
        help="Parameters held at one value, e.g. short=false.")] = None,
    portfolio: Annotated[bool, typer.Option(
        help="Trade the symbols together with shared cash (default: sweep each symbol on its own).")
    ] = False,
    start: StartOpt = None,
    end: EndOpt = None,
    source: SourceOpt = None,
    costs: CostsOpt = None,
    fill: FillOpt = "next_open",
    sizing: SizingOpt = "fixed",
    fraction: FractionOpt = None,
    risk: RiskOpt = None,
    target_vol: TargetVolOpt = None,
    direction: DirectionOpt = "both",
    cash: CashOpt = 100_000.0,
    max_exposure: ExposureOpt = 1.0,
    lots: LotsOpt = None,
    top: Annotated[int, typer.Option(help="Show this many best rows.")] = 10,
    by: Annotated[str, typer.Option(
        help="Rank by this metric, best first (lowest first for annual_volatility, max_drawdown_duration "
        "and turnover); NaN and infinite values (e.g. the Sharpe of a run without trades) are not ranked.")
    ] = "sharpe",
    heatmap: Annotated[Path | None, typer.Option(help="Write a heatmap of --metric over --x and --y "
                                                 "(.html).")] = None,
    x: Annotated[str | None, typer.Option(help="Heatmap x parameter (default: the first varying).")
                 ] = None,
    y: Annotated[str | None, typer.Option(help="Heatmap y parameter (default: the second varying).")
                 ] = None,
    metric: Annotated[str | None, typer.Option(help="Heatmap metric (default: --by).")] = None,
    agg: Annotated[str, typer.Option(
        help="How the heatmap combines rows that share x and y (other parameters, symbols): mean, "
        "median, max or min.")] = "mean",
) -> Any:
    """Sweep a parameter grid on lake bars: every feasible combination, per symbol or as a portfolio (a
    weight strategy's symbols are always one portfolio)."""
    job = SweepJob.from_options(
        strategy=strategy, symbols=symbols, out=out_path, timeframe=timeframe, grid=grid, grid_all=grid_all,
        yes=yes, fixed=fixed, portfolio=portfolio, start=start, end=end, source=source, costs=costs,
        fill=fill, sizing=sizing, fraction=fraction, risk=risk, target_vol=target_vol, direction=direction,
        cash=cash, max_exposure=max_exposure, lots=lots, top=top, by=by, heatmap=heatmap, x=x, y=y,
        metric=metric, agg=agg)
    strat, values, pinned, syms, combos = job.strategy, job.values, job.fixed, job.symbols, job.combos
    bars = job.load(_lake())
    units = 1 if job.portfolio else len(syms)
    total = len(combos) * units
    what = f"{len(combos):,} combinations" + (f" x {units} symbols" if units > 1 else "")
    fixed_at = [n for n in strat.space.names if n not in values and n not in pinned] if not grid_all else []

    def announce(plan: SweepPlan) -> None:
        out.print(f"sweeping [bold]{escape(strat.name)}[/]: {what} on {escape(', '.join(syms))}"
                  f"{' as one portfolio' if job.portfolio else ''}, about {_duration(plan.estimate_s)}"
                  + (f"; at their defaults: {escape(', '.join(fixed_at))} (--grid-all walks them)"
                     if fixed_at else ""), highlight=False)
        prog(label, 0, total)  # the bar appears under the announcement

    with _progress("sweep", hide_on_error=True) as prog:
        label = strat.name
        seen = [0]

        def advance(done: int, _total: int) -> None:
            prog(label, done - seen[0], total)
            seen[0] = done

        result = job.run(bars, progress=advance, on_start=announce)
    written = result.save(job.out)
    table = result.table
    t = result.timings
    made = "signals" if isinstance(strat, Strategy) else "targets"  # (a weight strategy's are targets)
    out.print(f"{len(table):,} runs on {_span(result.inputs)} in {t['total_s']:.2f} s: "
              f"{_rate(len(table) / max(t['total_s'], 1e-9))} combos/s ({made} {t['signals_s']:.2f} s, "
              f"simulation {t['kernel_s']:.2f} s)", highlight=False)
    where = ("the inputs are in its metadata" if written.suffix.lower() == ".parquet"
             else "CSV keeps no inputs: use .parquet to record them")
    out.print(f"wrote {written} ({len(table):,} rows; {where})", markup=False)
    best, left_out = rank_rows(table, by, top)
    varying = [p for p in strat.space.names if table[p].nunique() > 1] or strat.space.names
    shown_metrics = _TOP_METRICS if isinstance(strat, Strategy) else _TOP_WEIGHT_METRICS
    metrics = [c for c in dict.fromkeys([by, *shown_metrics]) if c in table.columns]
    shown = [*varying, "symbol", *metrics]
    rich_table = Table(title=f"top {len(best)} by {by}", title_justify="left")
    for c in shown:
        rich_table.add_column(c, justify="left" if c == "symbol" else "right")
    for row in best[shown].itertuples(index=False):
        rich_table.add_row(*[fmt_metric(c, v) if c in metrics else escape(str(v))
                             for c, v in zip(shown, row, strict=True)])
    out.print(rich_table)
    if left_out:
        out.print(f"{left_out:,} runs with an undefined {by} (n/a, e.g. no trades) are not ranked")
    if job.heatmap is not None:
        out.print(f"wrote heatmap {job.write_heatmap(result)}", markup=False)
    return result



def _rate(per_s: float) -> str:
    """Combinations per second: whole numbers, two significant digits below 10 (a weight strategy's)."""
    return f"{per_s:,.0f}" if per_s >= 10 else f"{per_s:.2g}"
