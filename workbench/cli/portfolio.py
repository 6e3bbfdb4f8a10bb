"""`workbench portfolio`: a portfolio rebalanced to target weights on lake bars, its metrics and orders.

The targets come from one of a weight strategy (`--strategy xs_momentum`), an allocator refitted on a
calendar schedule (`--allocator risk_parity --window 63`) or a table of weights the user wrote
(`--weights targets.csv`); `workbench.backtest.portfolio.backtest_portfolio` does the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from workbench.backtest.metrics import format_metric as fmt_metric
from workbench.backtest.metrics import na_reason
from workbench.backtest.options import check_output, parse_execution
from workbench.cli.backtest import _costs_text, _lots_text, _write_table
from workbench.cli.common import _fmt_params, _kv_table, _lake, _span, err, out
from workbench.cli.options import CashOpt, CostsOpt, EndOpt, FillOpt, LotsOpt, SourceOpt, StartOpt
from workbench.errors import ConfigError
from workbench.strategies.grid import parse_pairs, split_list

# the options of a signal backtest that a target-weight portfolio has no use for: refused by name
_SIGNAL_ONLY = {
    "--sizing": "a portfolio's positions are its target weights",
    "--fraction": "a portfolio's positions are its target weights",
    "--risk": "a portfolio holds no stops to risk to",
    "--target-vol": "a portfolio's positions are its target weights (an allocator such as inverse_vol or "
                    "risk_parity weighs by volatility)",
    "--direction": "a target's sign says long or short",
}
_ALLOCATOR_ONLY = ("--window", "--min-history", "--max-weight", "--gross", "--max-turnover", "--covariance")
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
    sizing: _Hidden = None,
    fraction: _Hidden = None,
    risk: _Hidden = None,
    target_vol: Annotated[str | None, typer.Option("--target-vol", hidden=True)] = None,
    direction: _Hidden = None,
) -> None:
    """Backtest a portfolio rebalanced to target weights: from a weight strategy, an allocator or a
    table of weights; prints its metrics, rebalances and orders."""
    from workbench.backtest import Allocator, load_bars
    from workbench.backtest.portfolio import backtest_portfolio, read_weight_table
    from workbench.strategies.weights import get_weight_strategy

    for option, value in (("--sizing", sizing), ("--fraction", fraction), ("--risk", risk),
                          ("--target-vol", target_vol), ("--direction", direction)):
        if value is not None:
            raise ConfigError(f"{option} applies to signal strategies (`workbench backtest`); "
                              f"{_SIGNAL_ONLY[option]}: drop {option}")
    given = [o for o, v in (("--strategy", strategy), ("--allocator", allocator), ("--weights", weights))
             if v is not None]
    if len(given) != 1:
        raise ConfigError("give one source of target weights: --strategy <weight strategy>, --allocator "
                          f"<method> or --weights <file> (got {' and '.join(given) or 'none'})")
    alloc_values: dict[str, Any] = dict(zip(
        _ALLOCATOR_ONLY, (window, min_history, max_weight, gross, max_turnover, covariance), strict=True))
    if allocator is None:
        for option, value in alloc_values.items():
            if value is not None:
                raise ConfigError(f"{option} applies to --allocator (a {given[0][2:]} sets its own weights): "
                                  f"drop {option} or use --allocator")
    if params is not None and strategy is None:
        raise ConfigError(f"--params applies to --strategy; {given[0]} takes none: drop --params")
    if every is not None and weights is not None:
        raise ConfigError("--every has no effect with --weights (the table's rows are its rebalance dates): "
                          "drop --every")

    # everything checked before any bar is read
    strat, p, alloc, table = None, None, None, None
    if strategy is not None:
        strat = get_weight_strategy(strategy)
        given_params: dict[str, Any] = dict(parse_pairs(params, "--params", "lookback=63,top=2"))
        if every is not None and "every" in given_params:
            raise ConfigError("the schedule is given twice (--every and every= in --params): keep one")
        p = strat.params({**given_params, **({"every": every} if every is not None else {})})
    elif allocator is not None:
        settings: dict[str, Any] = {k[2:].replace("-", "_"): v for k, v in alloc_values.items()
                                    if v is not None}
        alloc = Allocator(method=allocator, **settings)
    else:
        assert weights is not None
        table = read_weight_table(weights)
    syms = split_list(symbols) if symbols else (list(table.columns) if table is not None else [])
    if not syms:
        raise ConfigError("--symbols is required with --strategy and --allocator, e.g. --symbols "
                          "AAPL,MSFT,SPY")
    execution = parse_execution(symbols=syms, costs=costs, fill=fill, cash=cash, max_exposure=max_exposure,
                                lots=lots)
    from workbench.backtest.rebalance import check_weight_settings

    check_weight_settings(execution.costs, execution.fill, drift)
    if table is not None:  # the table's own checks that need no bars: its symbols and its sums
        from workbench.backtest.portfolio import check_table

        check_table(table, syms, max_exposure=max_exposure)
    if alloc is not None and alloc.gross > max_exposure + 1e-12:
        raise ConfigError(f"--gross {alloc.gross:g} is more than --max-exposure {max_exposure:g}: raise "
                          f"--max-exposure to {alloc.gross:g} or lower --gross")
    orders = check_output(orders, (".csv", ".parquet"), "--orders")
    html = check_output(html, (".html", ".htm"), "--html")

    bars = load_bars(_lake(), syms, timeframe, start, end, source=source, costs=execution.costs,
                     fill=execution.fill)
    label = strat.name if strat is not None else (f"{allocator} allocator" if alloc is not None
                                                  else f"weights from {weights}")
    with err.status(f"backtesting {label}") as status:
        def progress(done: int, total: int) -> None:
            status.update(f"backtesting {label}: fit {done}/{total}")

        result = backtest_portfolio(
            bars, strategy=strat, params=p, allocator=alloc, every=every if alloc is not None else None,
            weights=table, costs=execution.costs, fill=execution.fill, init_cash=cash,
            max_exposure=max_exposure, lots=execution.lots, drift=drift, timeframe=timeframe,
            progress=progress)
    inputs = result.inputs
    if strat is not None:
        what = f"{_fmt_params(inputs['params'])} on "
    elif alloc is not None:
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
    out.print(_inputs_table(inputs, execution.lots))
    if orders is not None:
        _write_table(result.orders, orders)
        out.print(f"wrote {len(result.orders):,} orders to {orders}", markup=False)
    if html is not None:
        from workbench.backtest.plots import portfolio_figure, write_html

        title = f"{label} {what}{', '.join(inputs['symbols'])}"
        written = write_html(portfolio_figure(result.equity, result.benchmark, title=title), html)
        out.print(f"wrote chart {written}", markup=False)


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
