"""`workbench portfolio`: a portfolio rebalanced to target weights on lake bars, its metrics and orders.

The targets come from one of a weight strategy (`--strategy xs_momentum`), an allocator refitted on a
calendar schedule (`--allocator risk_parity --window 63`) or a table of weights the user wrote
(`--weights targets.csv`); `workbench.backtest.portfolio.PortfolioJob` checks the options and does the
work, this module prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from workbench.backtest.metrics import format_metric as fmt_metric
from workbench.backtest.metrics import na_reason
from workbench.cli.backtest import _costs_text, _lots_text, _write_table
from workbench.cli.common import _fmt_params, _kv_table, _lake, _span, err, out
from workbench.cli.options import CashOpt, CostsOpt, EndOpt, FillOpt, LotsOpt, SourceOpt, StartOpt

_Hidden = Annotated[str | None, typer.Option(hidden=True)]


def portfolio_cmd(
    symbols: Annotated[str | None, typer.Option(
        help="Comma-separated symbols of the universe (with --weights: default the table's columns).")
    ] = None,
    strategy: Annotated[str | None, typer.Option(
        help="A weight strategy (see `workbench strategies`), e.g. xs_momentum.")] = None,
    params: Annotated[str | None, typer.Option(
        help="Weight strategy parameters, e.g. lookback=63,top=2 (the rest keep their defaults).")] = None,
    allocator: Annotated[str | None, typer.Option(
        help="An allocator instead of a strategy: equal, inverse_vol, risk_parity, hrp, mean_variance, "
        "max_diversification or kelly, refitted on the --every schedule.")] = None,
    weights: Annotated[Path | None, typer.Option(
        help="A table of target weights instead (.csv or .parquet): a date column and one column per "
        "symbol (or date, symbol, weight rows); each row's targets are set at the close of the first bar "
        "at or after its date.")] = None,
    every: Annotated[str | None, typer.Option(
        help="Rebalance schedule: daily, weekly, monthly or every (bar). Allocator default monthly; a "
        "strategy's default is its own.")] = None,
    window: Annotated[int | None, typer.Option(
        help="Allocator: trailing bars of returns each fit uses (default 252).")] = None,
    min_history: Annotated[int | None, typer.Option(
        "--min-history", help="Allocator: fewest bars of returns of the first fit (default the window).")
    ] = None,
    max_weight: Annotated[float | None, typer.Option(
        "--max-weight", help="Allocator: cap of each weight, e.g. 0.4.")] = None,
    gross: Annotated[float | None, typer.Option(
        help="Allocator: the weights' sum (default 1: fully invested).")] = None,
    max_turnover: Annotated[float | None, typer.Option(
        "--max-turnover", help="Allocator: cap of the sum of weight changes at a rebalance.")] = None,
    covariance: Annotated[str | None, typer.Option(
        help="Allocator: empirical, ledoit_wolf (default) or shrunk.")] = None,
    drift: Annotated[float | None, typer.Option(
        help="Also rebalance when a weight drifts more than this from its target, e.g. 0.05.")] = None,
    timeframe: Annotated[str, typer.Option(help="Bar timeframe (coarser than stored is resampled).")
                         ] = "1d",
    start: StartOpt = None,
    end: EndOpt = None,
    source: SourceOpt = None,
    costs: CostsOpt = None,
    fill: FillOpt = "next_open",
    cash: CashOpt = 100_000.0,
    max_exposure: Annotated[float, typer.Option(
        "--max-exposure", help="Most of equity the targets may hold in all (sum of absolute weights).")
    ] = 1.0,
    lots: LotsOpt = None,
    orders: Annotated[Path | None, typer.Option(help="Write every order to this .csv or .parquet file.")
                      ] = None,
    html: Annotated[Path | None, typer.Option(
        help="Write the chart (equity against buy-and-hold, drawdown) here.")] = None,
    vol_target: Annotated[float | None, typer.Option(
        "--vol-target", help="Allocator: scale each rebalance's weights to this annual volatility "
        "(ex ante, never above --gross), e.g. 0.10.")] = None,
    corr_cap: Annotated[float | None, typer.Option(
        "--corr-cap", help="Allocator: of two assets correlated above this, hold only the larger, e.g. 0.9."
    )] = None,
    var_limit: Annotated[float | None, typer.Option(
        "--var-limit", help="Allocator: largest one-bar historical VaR (95 %%), e.g. 0.02.")] = None,
    cvar_limit: Annotated[float | None, typer.Option(
        "--cvar-limit", help="Allocator: largest one-bar historical CVaR (95 %%), e.g. 0.03.")] = None,
    benchmark: Annotated[str | None, typer.Option(
        help="Measure alpha, beta, tracking error and IR against this symbol (default: equal-weight buy "
             "and hold of the book's symbols).")] = None,
    workers: Annotated[int, typer.Option(
        help="Allocator: fit the rebalances in this many processes (same weights; up to the cores).")] = 1,
    sizing: _Hidden = None,
    fraction: _Hidden = None,
    risk: _Hidden = None,
    target_vol: Annotated[str | None, typer.Option("--target-vol", hidden=True)] = None,
    direction: _Hidden = None,
) -> None:
    """Backtest a portfolio rebalanced to target weights: from a weight strategy, an allocator or a
    table of weights; prints its metrics, rebalances and orders."""
    from workbench.backtest.portfolio import PortfolioJob

    job = PortfolioJob.from_options(
        symbols=symbols, strategy=strategy, params=params, allocator=allocator, weights=weights, every=every,
        window=window, min_history=min_history, max_weight=max_weight, gross=gross, max_turnover=max_turnover,
        covariance=covariance, drift=drift, timeframe=timeframe, start=start, end=end, source=source,
        costs=costs, fill=fill, cash=cash, max_exposure=max_exposure, lots=lots, orders=orders, html=html,
        vol_target=vol_target, corr_cap=corr_cap, var_limit=var_limit, cvar_limit=cvar_limit,
        benchmark=benchmark, workers=workers, sizing=sizing, fraction=fraction, risk=risk,
        target_vol=target_vol, direction=direction)
    bars = job.load(_lake())
    label = job.label
    with err.status(f"backtesting {label}") as status:
        def progress(done: int, total: int) -> None:
            status.update(f"backtesting {label}: fit {done}/{total}")

        result = job.run(bars, progress=progress)
    inputs = result.inputs
    if job.strategy is not None:
        what = f"{_fmt_params(inputs['params'])} on "
    elif job.allocator is not None:
        what = f"every={inputs['every']} on "
    else:
        what = f"({inputs['rows']} rows) on "
    out.print(f"[bold]{escape(label)}[/] {escape(what + ', '.join(inputs['symbols']))}: {_span(inputs)}",
              highlight=False)
    rows = [(k, fmt_metric(k, v, na_reason(k, result.metrics))) for k, v in result.metrics.items()]
    fees = float(result.orders["fees"].sum()) if len(result.orders) else 0.0
    rows += [("rebalances", f"{result.rebalances:,}"), ("bars traded", f"{result.bars_traded:,}"),
             ("orders", f"{len(result.orders):,}"), ("fees paid", f"{fees:,.2f}")]
    out.print(_kv_table(rows, title="metrics", head=("metric", "value")))
    latest = _latest_targets(result.targets)
    if latest is not None:
        out.print(latest)
    if result.risk_report is not None and job.risk is not None:
        out.print(_risk_table(result.risk_report))
    out.print(_inputs_table(inputs, job.execution.lots))
    if job.orders is not None:
        _write_table(result.orders, job.orders)
        out.print(f"wrote {len(result.orders):,} orders to {job.orders}", markup=False)
    if job.html is not None:
        from workbench.backtest.plots import portfolio_figure, write_html

        title = f"{label} {what}{', '.join(inputs['symbols'])}"
        written = write_html(portfolio_figure(result.equity, result.benchmark, title=title), job.html)
        out.print(f"wrote chart {written}", markup=False)


def _risk_table(report: Any) -> Table:
    """The risk limits at the last rebalances: ex-ante volatility and CVaR before and after, the scale
    applied and which limit bound."""
    table = Table(title="risk limits at the last rebalances", title_justify="left")
    for c in ("rebalance", "vol before", "vol after", "CVaR before", "CVaR after", "dropped", "scale",
              "bound"):
        table.add_column(c, justify="left" if c in ("rebalance", "bound", "dropped") else "right")
    for t, r in report.tail(6).iterrows():
        table.add_row(f"{t:%Y-%m-%d}", f"{r['vol_before']:.2%}", f"{r['vol_after']:.2%}",
                      f"{r['cvar_before']:.2%}", f"{r['cvar_after']:.2%}", escape(str(r["dropped"] or "")),
                      f"{r['scale']:.3f}", escape(str(r["bound"])))
    return table


def _latest_targets(targets: Any) -> Table | None:
    """The targets in force after the last bar that set any (a symbol without one there keeps its
    earlier one)."""
    if targets.empty:
        return None
    last = targets.ffill().iloc[-1]
    rows = [(str(sym), "" if w != w else f"{w * 100:.2f}%") for sym, w in last.items()]
    return _kv_table(rows, title="latest targets", head=("symbol", f"set {targets.index[-1]:%Y-%m-%d %H:%M}"))


def _inputs_table(inputs: dict[str, Any], lots: Any) -> Table:
    if "allocator" in inputs:
        a = inputs["allocator"]
        how = ", ".join(f"{k} {v}" for k, v in a.items() if k != "method")
        made = f"{a['method']} allocator ({how}), every {inputs['every']}"
    elif "params" in inputs:
        made = f"{inputs['strategy']} {_fmt_params(inputs['params'])}"
    else:
        made = f"a table of weights ({inputs['rows']} rows)"
    lot_map = lots if isinstance(lots, dict) else {}
    if lots is not None and not lot_map:
        lot_map = dict.fromkeys(inputs["symbols"], lots)
    rows = [
        ("targets", made),
        ("data fingerprint", str(inputs["data_fingerprint"])),
        ("code version", str(inputs["code_version"])),
        ("fill", str(inputs["fill"])),
        ("costs", _costs_text(inputs["costs"])),
        ("cash / max exposure", f"{inputs['init_cash']:,.0f} / {inputs['max_exposure']:g}"),
        ("drift", "none" if inputs["drift"] is None else f"{inputs['drift']:g}"),
        ("lots", _lots_text({s: _lot_dict(v) for s, v in lot_map.items()})),
        ("annualisation", f"{inputs['periods_per_year']:,.1f} bars a year ({inputs['calendar']})"),
    ]
    return _kv_table(rows, title="inputs")


def _lot_dict(lot: Any) -> dict[str, float]:
    from dataclasses import asdict

    return {k: float(v) for k, v in asdict(lot).items() if v}
