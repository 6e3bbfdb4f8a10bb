"""What a target-weight book held and what its trading cost, read from a `RebalanceResult` and its bars.

`held_weights`: the weight of each symbol after every bar of the union timeline (the position after
that bar's orders times the close, over the equity at that close). `rebalance_table`: one row per
rebalance, with its turnover (traded notional over the equity before trading, SEMANTICS.md "Target
weights and rebalancing" step 1), its orders, fees and slippage cost (each fill's distance from the
bar's price before slippage, times its size). `risk_contributions`: each asset's share of the
portfolio's variance, `RC_i = w_i (Σw)_i / (w'Σw)` on the sample covariance; `rebalance_risk` gives it
at every rebalance. `rebalance_metrics`: the metrics of the book's equity against an equal-weight buy
and hold (`book_benchmark`) or any benchmark (`benchmark.benchmark_equity`); `metrics_table` puts
several books side by side.

Everything is computed from the orders and the bars, not from the kernel's state, so the same tables
and figures (`workbench.backtest.plots`) serve any source of targets: a weight strategy, an allocator,
targets by hand.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from workbench.backtest.engine import Costs, Fill, Timeline, _compact, buy_and_hold, resolve_annualisation
from workbench.backtest.metrics import TRADE_KEYS, compute_metrics, metrics_frame
from workbench.backtest.portfolio_risk import risk_contributions as split_variance
from workbench.backtest.rebalance import RebalanceResult
from workbench.errors import ConfigError, DataError

REBALANCE_COLUMNS = ["time", "orders", "traded", "equity", "rebalance_turnover", "fees", "slippage", "costs"]


def _book(result: RebalanceResult, frames: Mapping[str, pd.DataFrame]) -> tuple[list[str], Timeline]:
    """The result's symbols and the union timeline of `frames`, checked to be the bars it was run on."""
    if not isinstance(result, RebalanceResult):
        raise ConfigError(f"expected a RebalanceResult (simulate_weights, backtest_weights), got "
                          f"{type(result).__name__}")
    symbols = list(result.inputs.get("symbols") or frames)
    if sorted(symbols) != sorted(frames):
        raise ConfigError(f"the frames hold {sorted(frames)} but the result traded {sorted(symbols)}: pass "
                          "the bars the result was simulated on")
    tl = Timeline(frames, symbols)
    if not tl.index.equals(pd.DatetimeIndex(result.equity.index)):
        raise DataError(f"the frames span {tl.n} union bars but the result's equity {len(result.equity)}: "
                        "pass the bars the result was simulated on")
    return symbols, tl


def _flows(result: RebalanceResult, tl: Timeline, symbols: list[str]) -> tuple[np.ndarray, ...]:
    """Per order: its union row, column, signed size and fill notional; per union bar: the change of each
    position (n, m) and the cash that bar's orders moved (n,)."""
    o = result.orders
    rows = tl.index.get_indexer(pd.DatetimeIndex(o["time"]))
    cols = pd.Index(symbols).get_indexer(pd.Index(o["symbol"]))
    if (rows < 0).any() or (cols < 0).any():
        raise DataError("the orders name times or symbols the frames do not hold: pass the bars the result "
                        "was simulated on")
    size = o["size"].to_numpy(dtype=float)
    signed = np.where(o["side"].to_numpy() == "buy", size, -size)
    notional = size * o["price"].to_numpy(dtype=float)
    fees = o["fees"].to_numpy(dtype=float)
    moved = np.zeros((tl.n, len(symbols)))
    np.add.at(moved, (rows, cols), signed)
    cash = np.zeros(tl.n)
    np.add.at(cash, rows, -np.sign(signed) * notional - fees)
    return rows, cols, signed, notional, moved, cash


def _marked(qty: np.ndarray, price: np.ndarray) -> np.ndarray:
    """Position values (a flat position is worth 0 even where its symbol has no price yet)."""
    return np.where(qty == 0.0, 0.0, qty * np.nan_to_num(price))


def held_values(result: RebalanceResult, frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The value each symbol's position holds after every bar of the union timeline: its position after
    that bar's orders times its close (a closed market's last close). `frames`: the bars the result was
    simulated on."""
    symbols, tl = _book(result, frames)
    qty = _flows(result, tl, symbols)[4].cumsum(axis=0)
    return pd.DataFrame(_marked(qty, tl.prices()[3]), index=tl.index,
                        columns=pd.Index(symbols, name="symbol"))


def held_weights(result: RebalanceResult, frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """`held_values` over the equity at each close: the weight each symbol holds after every bar (NaN where
    the equity is not positive)."""
    values = held_values(result, frames)
    equity = result.equity.to_numpy(dtype=float)
    return values.div(np.where(equity > 0, equity, np.nan), axis=0)


def rebalance_table(result: RebalanceResult, frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per bar with orders: `orders`; `traded`, the sum of |size x fill price|; `equity`, the
    portfolio's value at that fill step before trading (cash plus positions at the open, or at the close
    with `fill="close"`; a closed market at its last close); `rebalance_turnover` = traded / equity
    (this rebalance's, not the annual `turnover` of the metrics); `fees`;
    `slippage`, the sum of |fill price - the bar's open (or close)| x size; `costs` = fees + slippage."""
    symbols, tl = _book(result, frames)
    if result.orders.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in REBALANCE_COLUMNS}).astype(
            {"time": "datetime64[ns, UTC]", "orders": "int64"})
    rows, cols, signed, notional, moved, cash = _flows(result, tl, symbols)
    open_, _high, _low, close = tl.prices()
    at_open = result.inputs.get("fill", "next_open") == "next_open"
    before = np.vstack([np.zeros((1, len(symbols))), moved.cumsum(axis=0)[:-1]])  # positions before bar i
    cash_before = float(result.inputs["init_cash"]) + np.r_[0.0, cash.cumsum()[:-1]]
    if at_open:  # the open where the symbol has a bar, else its last close
        prev_close = np.vstack([np.full((1, len(symbols)), np.nan), close[:-1]])
        step_price = np.where(np.isnan(open_), prev_close, open_)
    else:
        step_price = close
    equity_before = cash_before + _marked(before, step_price).sum(axis=1)
    reference = (open_ if at_open else close)[rows, cols]
    per_order = pd.DataFrame({
        "row": rows, "traded": notional, "fees": result.orders["fees"].to_numpy(dtype=float),
        "slippage": np.abs(result.orders["price"].to_numpy(dtype=float) - reference) * np.abs(signed),
    })
    g = per_order.groupby("row", sort=True)
    table = pd.DataFrame({"orders": g.size(), "traded": g["traded"].sum(), "fees": g["fees"].sum(),
                          "slippage": g["slippage"].sum()})
    at = table.index.to_numpy()
    table.insert(0, "time", tl.index[at])
    table.insert(3, "equity", equity_before[at])
    table.insert(4, "rebalance_turnover", table["traded"] / table["equity"])
    table["costs"] = table["fees"] + table["slippage"]
    return table[REBALANCE_COLUMNS].reset_index(drop=True)


def risk_contributions(returns: pd.DataFrame, weights: pd.Series | Mapping[str, float]) -> pd.Series:
    """Each asset's share of the portfolio's variance over `returns` (one column per asset, a trailing
    window): `RC_i = w_i (Σw)_i / (w'Σw)` with Σ the sample covariance; they sum to 1. Assets of weight 0
    contribute 0 and their returns are not read (they may be missing)."""
    if not isinstance(returns, pd.DataFrame):
        raise ConfigError(f"returns must be a DataFrame of one column per asset, got "
                          f"{type(returns).__name__}")
    w = pd.Series(weights, dtype=float)
    unknown = [str(a) for a in w.index if a not in returns.columns]
    if unknown:
        raise ConfigError(f"weights name {unknown} which the returns do not hold; returns' assets: "
                          f"{', '.join(map(str, returns.columns))}")
    w = w.reindex(returns.columns).fillna(0.0)
    if not np.isfinite(w.to_numpy()).all():
        raise DataError("the weights hold a NaN or infinite value: pass one finite weight per asset")
    held = w.index[w.to_numpy() != 0.0]
    window = returns[held].astype(float)
    if len(window) < 2:
        raise DataError(f"risk contributions need at least 2 rows of returns, got {len(window)}: pass a "
                        "longer window")
    holes = window.columns[window.isna().any().to_numpy()]
    if len(holes):
        raise DataError(f"returns of {', '.join(map(str, holes[:5]))} have missing values in the window: "
                        "start the window after their first bar")
    cov = np.atleast_2d(np.cov(window.to_numpy(), rowvar=False, ddof=1))
    rc = split_variance(w[held].to_numpy(), cov)
    if not len(rc) or not np.isfinite(rc).all():
        raise DataError("the portfolio has no variance over the window (nothing held, or flat returns): its "
                        "risk has no contributions to split")
    out = pd.Series(0.0, index=returns.columns, name="risk_contribution")
    out[held] = rc
    return out


def rebalance_risk(result: RebalanceResult, frames: Mapping[str, pd.DataFrame], window: int = 63
                   ) -> pd.DataFrame:
    """`risk_contributions` at every rebalance bar: the weights held after its orders, on the `window`
    simple returns of the closes up to and including that bar (the union timeline, a closed market's
    close carried forward). Rebalances with fewer returns before them, or holding nothing, are left
    out; a frame (rebalance time x symbol, rows summing to 1) for `risk_contributions_figure`."""
    if int(window) != window or window < 2:
        raise ConfigError(f"window={window!r} must be a whole number of bars >= 2")
    held = held_weights(result, frames)
    closes = Timeline(frames, list(held.columns)).prices()[3]
    returns = pd.DataFrame(closes, index=held.index, columns=held.columns).pct_change(fill_method=None)
    times = pd.DatetimeIndex(result.orders["time"]).unique().sort_values()
    rows = []
    for t, i in zip(times, held.index.get_indexer(times), strict=True):
        w = held.iloc[int(i)].fillna(0.0)
        if i < window or not (w != 0.0).any():
            continue
        rows.append(risk_contributions(returns.iloc[i - window + 1:i + 1], w).rename(t))
    if not rows:
        raise DataError(f"no rebalance has {window} bars of returns before it and a position: shorten the "
                        "window or load more history")
    out = pd.DataFrame(rows)
    out.index.name, out.columns.name = "time", "symbol"
    return out


def book_benchmark(result: RebalanceResult, frames: Mapping[str, pd.DataFrame],
                   costs: Costs | None = None) -> pd.Series:
    """Equal-weight buy and hold of the book's symbols (SEMANTICS.md "Benchmark") under the result's
    fill and `costs` (default: the fees and fixed slippage its inputs record), on its union timeline."""
    _symbols, tl = _book(result, frames)
    open_, _high, _low, close = tl.prices()
    if costs is None:
        recorded = result.inputs.get("costs", {})
        costs = Costs(fees=float(recorded.get("fees", 0.0)), slippage=float(recorded.get("slippage", 0.0)))
    return buy_and_hold(open_, close, tl.index, costs, Fill(result.inputs.get("fill", "next_open")),
                        float(result.inputs["init_cash"]), _compact(tl.slippage(costs)))


def rebalance_metrics(result: RebalanceResult, frames: Mapping[str, pd.DataFrame], *,
                      timeframe: str | None = None, calendar: str | None = None,
                      costs: Costs | None = None, benchmark: pd.Series | None = None) -> dict[str, float]:
    """The metrics of the book's equity (`compute_metrics`) against `book_benchmark`, or `benchmark` (an
    equity on the book's bars: `benchmark.benchmark_equity` makes one of a symbol or a price series),
    annualised on the bars' timeframe and calendar (inferred unless given); exposure from the weights
    held, turnover from the orders' notional. Trade statistics are left out: a rebalanced book holds
    positions, not round trips."""
    if benchmark is not None and not (isinstance(benchmark, pd.Series)
                                      and benchmark.index.equals(result.equity.index)):
        raise ConfigError("benchmark must be an equity Series on the book's bars: build it with "
                          "benchmark_equity(result.equity, ...)")
    held = held_weights(result, frames)
    _tf, _cal, ppy = resolve_annualisation(frames, timeframe, calendar, None)
    traded = float((result.orders["size"] * result.orders["price"]).abs().sum())
    out = compute_metrics(result.equity, float(result.inputs["init_cash"]), ppy,
                          exposure=held.abs().sum(axis=1).fillna(0.0).to_numpy(), traded_value=traded,
                          benchmark=book_benchmark(result, frames, costs) if benchmark is None else benchmark)
    return {k: v for k, v in out.items() if k not in TRADE_KEYS and k != "n_open_trades"}


def metrics_table(books: Mapping[str, RebalanceResult], frames: Mapping[str, pd.DataFrame], *,
                  formatted: bool = True, timeframe: str | None = None, calendar: str | None = None,
                  benchmark: pd.Series | None = None) -> pd.DataFrame:
    """`rebalance_metrics` of several books on the same bars side by side: a `metric` column and one
    column per book (values as people read them unless `formatted` is False); `benchmark`: one equity
    on those bars for every book (default: each book's equal-weight buy and hold)."""
    if not books:
        raise ConfigError("metrics_table needs at least one book: pass {name: RebalanceResult}")
    columns = {}
    for name, book in books.items():
        m = rebalance_metrics(book, frames, timeframe=timeframe, calendar=calendar, benchmark=benchmark)
        columns[str(name)] = metrics_frame(m, formatted=formatted).set_index("metric")["value"]
    table = pd.DataFrame(columns)
    table.index.name = "metric"
    table = table.reset_index()
    return table


__all__ = ["REBALANCE_COLUMNS", "book_benchmark", "held_weights", "metrics_table", "rebalance_metrics",
           "rebalance_risk", "rebalance_table", "risk_contributions"]
