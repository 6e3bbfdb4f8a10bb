"""The options that several commands share (backtest, sweep, walk-forward): one help text each."""

from __future__ import annotations

from typing import Annotated

import typer

StrategyOpt = Annotated[str, typer.Option(
    help="Strategy name or composite spec (see `workbench strategies`), e.g. sma_cross or "
    "regime(macd).")]
SymbolsOpt = Annotated[str, typer.Option(help="Comma-separated symbols, e.g. BTC/USDT,ETH/USDT.")]
TimeframeOpt = Annotated[str, typer.Option(help="Bar timeframe (coarser than stored is resampled).")]
StartOpt = Annotated[str | None, typer.Option(help="First bar (UTC), e.g. 2025-03-01.")]
EndOpt = Annotated[str | None, typer.Option(help="End, exclusive (UTC).")]
SourceOpt = Annotated[str | None, typer.Option(
    help="Source label in the lake (default: the one source holding the symbols).")]
CostsOpt = Annotated[str | None, typer.Option(
    help="Costs, e.g. fees=0.001,slippage=0.0005 (keys: fees, slippage, slippage_vol, vol_window, "
    "margin_rate: annual interest on borrowed cash, with --max-exposure above 1; "
    "borrow_rate: annual fee on the value of short positions; impact: square-root market impact "
    "coefficient (x volatility x sqrt(quantity / mean volume of adv_window bars)); "
    "default fees=0.001,slippage=0.0005).")]
FillOpt = Annotated[str, typer.Option(
    help="next_open: a signal on a bar's close trades at the next open; close: at that close.")]
SizingOpt = Annotated[str, typer.Option(help="fixed, risk or volatility.")]
FractionOpt = Annotated[float | None, typer.Option(
    help="fixed sizing: fraction of equity per entry (default 1/number of symbols).")]
RiskOpt = Annotated[float | None, typer.Option(
    help="risk sizing: fraction of equity lost if the stop is hit (default 0.01).")]
TargetVolOpt = Annotated[float | None, typer.Option(
    "--target-vol", help="volatility sizing: annualised target volatility (default 0.2).")]
DirectionOpt = Annotated[str, typer.Option(help="long, short or both (sides of the signals traded).")]
CashOpt = Annotated[float, typer.Option(help="Initial cash.")]
ExposureOpt = Annotated[float, typer.Option(
    "--max-exposure", help="Cap of each position as a fraction of equity.")]
LotsOpt = Annotated[str | None, typer.Option(
    help="Lot rules: step=1 (whole units for every symbol) or per symbol "
    "SPY:step=1;BTC/USDT:step=0.00001,min_notional=5 (keys: step, min_qty, min_notional). "
    "Default: any size.")]
