"""`workbench tickfills`: a backtest's orders re-filled against the recorded ticks, bar vs tick fills."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from workbench.backtest.options import check_output, parse_execution
from workbench.cli.backtest import _write_table
from workbench.cli.common import _fmt_params, _kv_table, _lake, _span, err, out, print_frame
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
    StartOpt,
    StrategyOpt,
    SymbolsOpt,
    TargetVolOpt,
    TimeframeOpt,
)
from workbench.strategies.grid import parse_pairs, split_list

SHOWN = 20  # orders printed (the worst by cost difference, then those the tape does not fill)


def tickfills_cmd(
    strategy: StrategyOpt,
    symbols: SymbolsOpt,
    tick_source: Annotated[str, typer.Option(
        help="The lake's tick source the collector recorded (e.g. binance, simulated-tape).")],
    timeframe: TimeframeOpt = "1m",
    params: Annotated[str | None, typer.Option(
        help="Strategy parameters, e.g. fast=10,slow=50 (the rest keep their defaults).")] = None,
    start: StartOpt = None,
    end: EndOpt = None,
    source: Annotated[str | None, typer.Option(
        help="Source of the bars (default: the tick source: bars built from its recorded trades).")
    ] = None,
    queue: Annotated[str, typer.Option(
        help="back: a resting limit fills only on prints through its price (others were ahead in the "
        "queue); front: a print at its price fills it.")] = "back",
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
    html: Annotated[Path | None, typer.Option(
        help="Write the report's chart (per-order differences, cumulative cost, summary) here.")] = None,
    orders: Annotated[Path | None, typer.Option(
        help="Write the per-order report to this .csv or .parquet file.")] = None,
) -> None:
    """Backtest a strategy, then fill each of its orders again against the recorded trades and quotes:
    what the bar model hides (spread, depth, queue position, stop slippage)."""
    from workbench.backtest import backtest, load_bars
    from workbench.backtest.tickfills import (
        Queue,
        check_tick_source,
        tick_fills,
        tick_summary,
        write_tick_report,
    )
    from workbench.strategies.registry import get_strategy

    strat = get_strategy(strategy)
    p = strat.params(parse_pairs(params, "--params", "fast=10,slow=50"))
    syms = split_list(symbols)
    execution = parse_execution(symbols=syms, costs=costs, fill=fill, sizing=sizing, fraction=fraction,
                                risk=risk, target_vol=target_vol, direction=direction, cash=cash,
                                max_exposure=max_exposure, lots=lots)
    q = Queue.parse(queue)
    html = check_output(html, (".html", ".htm"), "--html")
    orders = check_output(orders, (".csv", ".parquet"), "--orders")
    lake = _lake()
    check_tick_source(lake, tick_source)
    bars = load_bars(lake, syms, timeframe, start, end, source=source or tick_source, costs=execution.costs,
                     fill=execution.fill)
    with err.status(f"backtesting {strat.name} and filling its orders from the {tick_source} tape"):
        result = backtest(strat, bars, p, execution=execution, timeframe=timeframe)
        report = tick_fills(result, lake, tick_source, queue=q)
    what = f"{_fmt_params(p)} on {', '.join(result.symbols)}"
    out.print(f"[bold]{escape(strat.name)}[/] {escape(what)}: {_span(result.inputs)}", highlight=False)
    if report.empty:
        out.print("the backtest made no orders: nothing to fill from the tape")
    else:
        summary = tick_summary(report)
        out.print(_kv_table(summary.rows(), title=f"bar vs tick fills ({q.value} of the queue)",
                            head=("", "tick vs bar")))
        worst = report.sort_values("diff_bps", ascending=False, na_position="last").head(SHOWN)
        shown = worst[["time", "symbol", "reason", "order", "side", "qty", "bar_price", "tick_price",
                       "diff_bps", "filled", "note"]].copy()
        shown["filled"] = shown["filled"].map({True: "yes", False: "no"})
        print_frame(shown, title=f"orders, worst for the trader first ({min(SHOWN, len(report))} of "
                    f"{len(report)})")
    if orders is not None:
        _write_table(report, orders)
        out.print(f"wrote {len(report):,} orders to {orders}", markup=False)
    if html is not None:
        out.print(f"wrote report {write_tick_report(report, html)}", markup=False)
