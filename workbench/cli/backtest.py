"""`workbench backtest`: one backtest on lake bars, its metrics, trades and inputs, charts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from workbench.backtest.metrics import format_metric as fmt_metric
from workbench.backtest.metrics import na_reason
from workbench.backtest.options import check_output, parse_execution
from workbench.cli.common import _fmt_params, _kv_table, _lake, _span, err, out
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
from workbench.errors import ConfigError
from workbench.strategies.grid import parse_pairs, split_list

if TYPE_CHECKING:
    from workbench.backtest import BacktestResult


def _costs_text(costs: Mapping[str, Any]) -> str:
    text = f"fees {costs['fees']:g}, slippage {costs['slippage']:g}"
    if costs.get("slippage_vol"):
        text += f" + {costs['slippage_vol']:g} x volatility({costs['vol_window']})"
    if costs.get("margin_rate"):
        text += f", margin interest {costs['margin_rate']:g} a year"
    if costs.get("borrow_rate"):
        text += f", borrow fee {costs['borrow_rate']:g} a year on shorts"
    return text


def _lots_text(lots: Mapping[str, Mapping[str, float]]) -> str:
    if not lots:
        return "any size"
    return "; ".join(f"{sym}: " + ", ".join(f"{k} {v:g}" for k, v in rule.items() if v)
                     for sym, rule in lots.items())


def _sizing_text(sizing: Mapping[str, Any], n_symbols: int) -> str:
    kind = sizing["kind"]
    if kind == "fixed":
        fraction = sizing["fraction"] if sizing["fraction"] is not None else 1 / n_symbols
        return f"fixed, {fraction * 100:.4g}% of equity per entry"
    if kind == "risk":
        return f"risk {sizing['risk']:g} of equity to the stop"
    return f"volatility target {sizing['target_vol']:g} (ATR {sizing['atr_window']})"


def _inputs_table(inputs: Mapping[str, Any]) -> Table:
    rows = [
        ("data fingerprint", str(inputs["data_fingerprint"])),
        ("code version", str(inputs["code_version"])),
        ("fill", str(inputs["fill"])),
        ("costs", _costs_text(inputs["costs"])),
        ("sizing", _sizing_text(inputs["sizing"], len(inputs["symbols"]))),
        ("direction", str(inputs["direction"])),
        ("cash / max exposure", f"{inputs['init_cash']:,.0f} / {inputs['max_exposure']:g}"),
        ("lots", _lots_text(inputs.get("lots") or {})),
        ("annualisation", f"{inputs['periods_per_year']:,.1f} bars a year ({inputs['calendar']})"),
    ]
    return _kv_table(rows, title="inputs")


def _trades_table(result: BacktestResult) -> Table | None:
    trades = result.trades
    if trades.empty:
        return None
    table = Table(title="trades", title_justify="left")
    for name in ("symbol", "closed", "open", "long", "short", "win rate", "pnl", "best", "worst",
                 "avg bars held", "exits"):
        table.add_column(name, justify="left" if name in ("symbol", "exits") else "right")
    groups = [(s, trades[trades["symbol"] == s]) for s in result.symbols]
    if len(result.symbols) > 1:
        groups.append(("all", trades))
    for sym, t in groups:
        if t.empty:
            table.add_row(escape(sym), "0", "0", "0", "0", "", "", "", "", "", "")
            continue
        closed = t[t["status"] == "closed"]
        pnl = closed["pnl"].astype(float)
        exits = closed["exit_reason"].value_counts()
        table.add_row(
            escape(sym), f"{len(closed):,}", f"{int((t['status'] == 'open').sum()):,}",
            f"{int((t['direction'] == 'long').sum()):,}", f"{int((t['direction'] == 'short').sum()):,}",
            fmt_metric("win_rate", (pnl > 0).mean() if len(pnl) else math.nan),
            f"{pnl.sum():,.2f}", fmt_metric("best_trade", closed["return"].max()),
            fmt_metric("worst_trade", closed["return"].min()),
            f"{closed['bars_held'].astype(float).mean():,.1f}" if len(closed) else "",
            ", ".join(f"{k} {v}" for k, v in exits.items()),
        )
    return table


def _per_symbol(path: Path, symbol: str, symbols: list[str]) -> Path:
    if len(symbols) == 1:
        return path
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in symbol)
    return path.with_name(f"{path.stem}_{safe}{path.suffix}")


def _write_table(frame: pd.DataFrame, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}; choose a writable folder") from None



def backtest_cmd(
    strategy: StrategyOpt,
    symbols: SymbolsOpt,
    timeframe: TimeframeOpt = "1h",
    params: Annotated[str | None, typer.Option(
        help="Strategy parameters, e.g. fast=10,slow=50 (the rest keep their defaults).")] = None,
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
    html: Annotated[Path | None, typer.Option(
        help="Write the chart (price, trades, equity, drawdown) here; one file per symbol if several.")
    ] = None,
    trades: Annotated[Path | None, typer.Option(help="Write every trade to this .csv or .parquet file.")
                      ] = None,
) -> None:
    """Backtest a strategy on lake bars; several symbols trade as one portfolio with shared cash."""
    from workbench.backtest import backtest, load_bars
    from workbench.backtest.plots import write_html
    from workbench.strategies.registry import get_strategy

    strat = get_strategy(strategy)
    p = strat.params(parse_pairs(params, "--params", "fast=10,slow=50"))
    syms = split_list(symbols)
    execution = parse_execution(symbols=syms, costs=costs, fill=fill, sizing=sizing, fraction=fraction,
                                risk=risk, target_vol=target_vol, direction=direction, cash=cash,
                                max_exposure=max_exposure, lots=lots)
    html = check_output(html, (".html", ".htm"), "--html")
    trades = check_output(trades, (".csv", ".parquet"), "--trades")
    bars = load_bars(_lake(), syms, timeframe, start, end, source=source, costs=execution.costs,
                     fill=execution.fill)
    with err.status(f"backtesting {strat.name}"):
        result = backtest(strat, bars, p, execution=execution, timeframe=timeframe)
    inputs = result.inputs
    what = f"{_fmt_params(p)} on {', '.join(result.symbols)}"
    out.print(f"[bold]{escape(strat.name)}[/] {escape(what)}: {_span(inputs)}", highlight=False)
    rows = [(k, fmt_metric(k, v, na_reason(k, result.metrics))) for k, v in result.metrics.items()]
    out.print(_kv_table(rows, title="metrics", head=("metric", "value")))
    table = _trades_table(result)
    out.print(table if table is not None else "no trades")
    charges = {k: v for k, v in result.charges.items() if v}
    if charges:  # cash flows that are not orders: margin interest and borrow fees, funding
        named = {"interest": "interest and borrow fees paid", "funding": "funding paid (negative: received)"}
        out.print(", ".join(f"{named[k]} {v:,.2f}" for k, v in charges.items()), highlight=False)
    out.print(_inputs_table(inputs))
    if trades is not None:
        _write_table(result.trades, trades)
        out.print(f"wrote {len(result.trades):,} trades to {trades}", markup=False)
    if html is not None:  # several symbols: the portfolio's page, then a price page per symbol
        pages: list[tuple[str | None, Path]] = [(None, html)] if len(result.symbols) > 1 else []
        pages += [(sym, _per_symbol(html, sym, result.symbols)) for sym in result.symbols]
        for sym, path in pages:
            written = write_html(result.figure(sym), path)
            out.print(f"wrote chart {written}", markup=False)
