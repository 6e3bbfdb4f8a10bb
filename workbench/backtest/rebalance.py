"""Target-weight backtests: a portfolio rebalanced to the weights a strategy (or an allocator) sets.

The rules are SEMANTICS.md "Target weights and rebalancing", which the reference simulator in the tests
(`tests/reference_weights.py`) also implements: the numba kernel here is checked against it on random
cases. `simulate_weights(frames, weights)` takes each symbol's targets by its own bars (NaN: no target at
that bar) and returns the equity and the orders.

This is the engine step of portfolio construction; weight strategies in the strategy contract, sweeps,
walk-forward and the paper runner build on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numba
import numpy as np
import pandas as pd

from workbench.backtest.engine import (
    Costs,
    Fill,
    Lot,
    Timeline,
    _compact,
    lot_matrix,
    resolve_annualisation,
    resolve_lots,
)
from workbench.backtest.kernels import BUY, N_ORDER_FIELDS, O_COL, O_FEES, O_IDX, O_PRICE, O_SIDE, O_SIZE
from workbench.backtest.portfolio_risk import REPORT_COLUMNS, RiskLimits, apply_limits
from workbench.backtest.universe import LiquidityUniverse, fittable
from workbench.errors import ConfigError, DataError
from workbench.strategies.weights import (
    SCHEDULES,
    WeightStrategy,
    own_targets,
    rebalance_bars,
)

REBALANCE = 5  # the order reason code of a rebalancing trade (after the signal kernel's five)


@dataclass
class RebalanceResult:
    """The portfolio's value at every bar's close (the union timeline) and its orders."""

    equity: pd.Series
    orders: pd.DataFrame
    inputs: dict[str, Any]


@numba.njit(cache=True, inline="always")
def _toward_zero(q: float, lot: float) -> float:
    if lot <= 0.0:
        return q
    k = math.floor(abs(q) / lot + 1e-12) * lot
    return k if q >= 0.0 else -k


toward_zero = _toward_zero  # (the paper runner rounds target quantities by the same rule)


@numba.njit(cache=True, error_model="numpy")
def _trade(i, at_open, open_, close, slip, fees, max_exposure, lots, targets, acting, qty, cash, orders, k):
    """Rebalance the acting columns at bar i (SEMANTICS.md steps 1-5); returns (cash, orders written)."""
    m = close.shape[1]
    px = np.empty(m)
    equity = cash
    for j in range(m):
        here = not np.isnan(open_[i, j])
        if at_open:
            px[j] = open_[i, j] if here else (close[i - 1, j] if i > 0 else np.nan)
        else:
            px[j] = close[i, j]
        if qty[j] != 0.0:
            equity += qty[j] * px[j]
    delta = np.zeros(m)
    for j in range(m):
        if not acting[j]:
            continue
        want = _toward_zero(targets[j] * equity / px[j], lots[0, j])
        d = want - qty[j]
        if abs(d) * px[j] <= 1e-12 * equity or abs(d) < lots[1, j] or abs(d) * px[j] < lots[2, j]:
            continue  # (a trade worth 1e-12 of the equity is float noise: SEMANTICS.md step 3)
        delta[j] = d
    floor = -max(0.0, max_exposure - 1.0) * equity
    for j in range(m):  # sells first
        if delta[j] < 0.0:
            s = slip[i if slip.shape[0] > 1 else 0, j if slip.shape[1] > 1 else 0]
            fill = px[j] * (1.0 - s)
            q = -delta[j]
            fee = q * fill * fees
            cash += q * fill - fee
            qty[j] -= q
            if orders.shape[0] > 1:
                orders[k, O_IDX], orders[k, O_COL], orders[k, O_SIDE] = i, j, 1 - BUY
                orders[k, O_SIZE], orders[k, O_PRICE], orders[k, O_FEES] = q, fill, fee
                orders[k, 6] = REBALANCE
            k += 1
    for j in range(m):  # then buys, capped by the cash
        if delta[j] > 0.0:
            s = slip[i if slip.shape[0] > 1 else 0, j if slip.shape[1] > 1 else 0]
            fill = px[j] * (1.0 + s)
            q = delta[j]
            if q * fill * (1.0 + fees) > cash - floor:
                q = _toward_zero(max(cash - floor, 0.0) / (1.0 + fees) / fill, lots[0, j])
            if q * fill <= 1e-12 * equity:
                continue
            fee = q * fill * fees
            cash -= q * fill + fee
            qty[j] += q
            if orders.shape[0] > 1:
                orders[k, O_IDX], orders[k, O_COL], orders[k, O_SIDE] = i, j, BUY
                orders[k, O_SIZE], orders[k, O_PRICE], orders[k, O_FEES] = q, fill, fee
                orders[k, 6] = REBALANCE
            k += 1
    return cash, k


@numba.njit(cache=True, inline="always")
def _value(cash, qty, close, i):
    """The portfolio's value at bar i's close."""
    value = cash
    for j in range(qty.shape[0]):
        if qty[j] != 0.0:
            value += qty[j] * close[i, j]
    return value


@numba.njit(cache=True, error_model="numpy")
def _act(i, at_open, open_, close, slip, fees, max_exposure, lots, targets, armed, acting, qty, cash, orders,
         k):
    """Trade the armed columns that have a bar at i (the others wait for their next bar), then disarm
    them; returns (cash, orders written)."""
    any_acting = False
    for j in range(qty.shape[0]):
        acting[j] = armed[j] and not np.isnan(open_[i, j])
        any_acting |= acting[j]
    if not any_acting:
        return cash, k
    cash, k = _trade(i, at_open, open_, close, slip, fees, max_exposure, lots, targets, acting, qty, cash,
                     orders, k)
    for j in range(qty.shape[0]):
        if acting[j]:
            armed[j] = False
    return cash, k


@numba.njit(cache=True, error_model="numpy")
def rebalance_nb(open_, close, weights, slip, fees, init_cash, max_exposure, lots, at_open, drift, value_out,
                 orders):
    """Simulate a target-weight portfolio; returns the number of orders (written to `orders` when it has
    more than one row). `open_` is NaN where a column has no bar, `close` carried forward; `weights` (n, m)
    holds each column's targets on its own bars' rows (NaN: none); `drift` < 0: no drift threshold."""
    n, m = close.shape
    qty = np.zeros(m)
    targets = np.full(m, np.nan)
    armed = np.zeros(m, dtype=np.bool_)
    acting = np.zeros(m, dtype=np.bool_)
    cash = init_cash
    k = 0
    for i in range(n):
        if at_open:
            cash, k = _act(i, True, open_, close, slip, fees, max_exposure, lots, targets, armed, acting,
                           qty, cash, orders, k)
        value = _value(cash, qty, close, i)
        # the drift check runs against the targets in force before this bar's new ones (a new target for
        # one symbol does not by itself rebalance the others)
        far = False
        if drift >= 0.0 and value > 0.0:
            for j in range(m):
                if not np.isnan(targets[j]):
                    held = qty[j] * close[i, j] / value if qty[j] != 0.0 else 0.0
                    if abs(held - targets[j]) > drift:
                        far = True
        for j in range(m):
            if not np.isnan(open_[i, j]) and not np.isnan(weights[i, j]):
                targets[j] = weights[i, j]
                armed[j] = True
        if far:
            for j in range(m):
                if not np.isnan(targets[j]):
                    armed[j] = True
        if not at_open:
            cash, k = _act(i, False, open_, close, slip, fees, max_exposure, lots, targets, armed, acting,
                           qty, cash, orders, k)
        value_out[i] = _value(cash, qty, close, i)
    return k


_UNSUPPORTED = ("impact", "volume_cap", "borrow_rate", "margin_rate", "spread", "funding")


def check_weight_settings(costs: Costs, fill: Fill | str, drift: float | None) -> Fill:
    """The fill of a target-weight portfolio, its settings checked: the costs it does not model yet are
    refused (only fees and slippage apply), the drift threshold must be a positive fraction."""
    try:
        fill = Fill(fill)
    except ValueError:
        raise ConfigError(f"fill {fill!r} is unknown; use next_open (default) or close") from None
    for name in _UNSUPPORTED:
        if getattr(costs, name, 0):
            raise ConfigError(f"costs.{name} is not modelled for target-weight portfolios yet: drop it (only "
                              "fees and slippage apply)")
    if drift is not None and not (math.isfinite(drift) and drift > 0):
        raise ConfigError(f"drift={drift!r} must be a positive fraction of equity (0.05 = 5 points)")
    return fill


def simulate_weights(frames: Mapping[str, pd.DataFrame], weights: Mapping[str, Any], *,
                     costs: Costs | None = None, fill: Fill | str = Fill.NEXT_OPEN,
                     init_cash: float = 100_000.0, max_exposure: float = 1.0,
                     lots: Lot | Mapping[str, Lot] | None = None,
                     drift: float | None = None) -> RebalanceResult:
    """Rebalance a portfolio of `frames` (bar frames by symbol) to `weights` (per symbol: one target per own
    bar, a Series on the bars' index or an array; NaN where the bar sets no target), under SEMANTICS.md
    "Target weights and rebalancing". `drift`: also re-apply the last targets when a weight has drifted
    more than this from its target. Costs: fees and slippage (fixed or volatility-scaled); the others are
    not modelled for weight portfolios yet and are refused rather than ignored."""
    costs = costs or Costs()
    fill = check_weight_settings(costs, fill, drift)
    symbols = list(frames)
    missing = [s for s in symbols if s not in weights]
    extra = [s for s in weights if s not in frames]
    if missing or extra:
        raise ConfigError(f"weights must name the same symbols as the bars: missing {missing}, "
                          f"unknown {extra}")
    tl = Timeline(frames, symbols)
    open_, _high, _low, close = tl.prices()
    w = np.full((tl.n, len(symbols)), np.nan)
    for j, s in enumerate(symbols):
        own = weights[s]
        arr = np.asarray(own.reindex(frames[s].index).to_numpy() if isinstance(own, pd.Series) else own,
                         dtype=np.float64)
        if arr.shape != (len(frames[s]),):
            raise DataError(f"weights of {s} have shape {arr.shape}, expected ({len(frames[s])},): one "
                            "target per bar (NaN where the bar sets none)")
        if np.isinf(arr).any():
            raise DataError(f"weights of {s} hold an infinite target")
        w[tl.rows[s], j] = arr
    # the targets set at one bar (SEMANTICS.md: sum_j |W[s, j]|; not those carried from earlier bars: on
    # mixed calendars a closed market's new target arrives at its next bar, after the others')
    gross = np.nansum(np.abs(w), axis=1)
    over = np.flatnonzero(gross > max_exposure * (1 + 1e-6))  # (a solver's weights sum to 1 +- 1e-9)
    if over.size:
        i = int(over[0])
        raise DataError(f"the targets set at {tl.index[i]} hold {gross[i]:.4g} of equity, more than "
                        f"max_exposure={max_exposure:g}: scale the weights down or raise max_exposure")
    slip = _compact(tl.slippage(costs))
    lot = lot_matrix(resolve_lots(lots, symbols), symbols)
    value = np.empty(tl.n)
    args = (np.ascontiguousarray(open_), np.ascontiguousarray(close), np.ascontiguousarray(w), slip,
            float(costs.fees), float(init_cash), float(max_exposure), lot, fill is Fill.NEXT_OPEN,
            -1.0 if drift is None else float(drift), value)
    # at most one order per column and bar: one pass fills the buffer (its untouched pages cost nothing)
    orders = np.empty((tl.n * len(symbols) + 2, N_ORDER_FIELDS))
    count = rebalance_nb(*args, orders)
    table = pd.DataFrame({
        "time": tl.index[orders[:count, O_IDX].astype(np.int64)],
        "symbol": [symbols[int(c)] for c in orders[:count, O_COL]],
        "side": np.where(orders[:count, O_SIDE] == BUY, "buy", "sell"),
        "size": orders[:count, O_SIZE], "price": orders[:count, O_PRICE], "fees": orders[:count, O_FEES],
        "reason": "rebalance",
    })
    inputs = {"symbols": symbols, "fill": fill.value, "init_cash": init_cash, "max_exposure": max_exposure,
              "drift": drift, "costs": {"fees": costs.fees, "slippage": costs.slippage}}
    equity = pd.Series(value, index=tl.index, name="equity")
    return RebalanceResult(equity=equity, orders=table, inputs=inputs)


@dataclass
class Allocation:
    """An allocator's targets on a schedule (`allocate`): each symbol's targets on its own bars, as
    `simulate_weights` takes them; the risk report (`portfolio_risk.REPORT_COLUMNS`) and the risk
    contributions (rebalance time x symbol), both indexed by the rebalance bars' times."""

    targets: dict[str, pd.Series]
    report: pd.DataFrame
    contributions: pd.DataFrame


def check_workers(workers: int, allocator: Any) -> None:
    """Refuse a `workers` count `allocate` cannot use with `allocator`: one line naming the fix."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r} must be a whole number of processes >= 1")
    if workers > 1 and allocator.max_turnover is not None:
        raise ConfigError("max_turnover measures each fit from the weights of the one before, so the fits "
                          "cannot run in parallel: drop workers or max_turnover")


def allocate(frames: Mapping[str, pd.DataFrame], allocator: Any, every: str = "monthly",
             risk: RiskLimits | None = None, progress: Any = None,
             universe: LiquidityUniverse | None = None, workers: int = 1) -> Allocation:
    """Targets from an `Allocator` (`workbench.backtest.allocators`) on a calendar schedule: at each
    rebalance bar `s` of the union timeline, the allocator is fitted on the closes' simple returns up to
    and including bar `s` (a closed market's close carried forward: 0 returns), so the targets see
    nothing after the bar they act on (`simulate_weights` trades them at the next open, or at that
    close). Bars before the allocator's `min_history` (or the risk window) set no target; the turnover cap
    is measured from the allocator's previous weights (before the risk limits). `risk`: limits applied to
    each fit on the same trailing returns (`workbench.backtest.portfolio_risk`; without it the report
    and risk contributions are still made, annualised by the bars' calendar). A symbol whose market has
    no bar at a rebalance bar takes its target at its first own bar after it (mixed calendars: with
    `next_open` that trades one own bar later than a bar of its own would). `progress(done, total)`
    after each fit. `universe` (`workbench.backtest.universe`): each fit and its limits see only the
    members at its bar that have the window's returns (`fittable`), the others get 0 (no member: cash),
    so symbols may list late and delist. `workers` > 1 fits the rebalances in that many processes (each
    fit stands alone, so the targets are the same; a turnover cap chains each fit to the one before and
    is refused with them)."""
    check_workers(workers, allocator)
    symbols = list(frames)
    tl = Timeline(frames, symbols)
    close = tl.prices()[3]
    returns = pd.DataFrame(close, index=tl.index, columns=symbols).pct_change().iloc[1:]
    limits = risk or RiskLimits()
    try:
        ppy = resolve_annualisation(frames, None, None, limits.periods_per_year)[2]
    except ConfigError:
        if risk is not None:
            raise ConfigError("cannot tell the bars' timeframe to annualise the volatility: pass "
                              "RiskLimits(periods_per_year=...), e.g. 252 for daily equities") from None
        span = (tl.index[-1] - tl.index[0]) / pd.Timedelta(days=365.25)  # report only: the bars' own rate
        ppy = (tl.n - 1) / span if span > 0 else 1.0
    limits = replace(limits, periods_per_year=ppy, window=limits.window or allocator.window)
    least = allocator.min_history if allocator.min_history is not None else allocator.window
    if risk is not None and risk.window is not None:
        least = max(least, risk.window)
    bars = [int(b) for b in rebalance_bars(tl.index, every) if b >= least]  # returns up to bar b: b rows
    if not bars:
        which = f"window={allocator.window}" + ("" if allocator.min_history is None else
                                                 f", min_history={allocator.min_history}")
        raise DataError(f"no rebalance bar has the {least} bars of returns the {allocator.method} allocator "
                        f"needs ({which}): the bars span {tl.n}; load more history or shorten its window")
    member = None if universe is None else universe.membership(frames).to_numpy(dtype=bool)

    def fit(b: int, previous: pd.Series | None) -> tuple[np.ndarray, dict[str, Any], np.ndarray, Any]:
        """Rebalance bar b: its targets, report row, risk contributions and the allocator's weights."""
        trailing = returns.iloc[:b]
        if member is not None:
            span = max(allocator.window, limits.window or 0)  # the fit's and the limits' windows
            trailing = trailing.loc[:, fittable(trailing, member[b], span)]
            if not trailing.shape[1]:  # no member has the history: cash
                return (np.zeros(len(symbols)), {**dict.fromkeys(REPORT_COLUMNS, np.nan), "dropped": "",
                                                 "bound": "none"}, np.zeros(len(symbols)), None)
        w = allocator.weights(trailing, previous=previous)
        check = apply_limits(w, trailing, limits)
        return (check.weights.reindex(symbols, fill_value=0.0).to_numpy(), check.report,
                check.contributions.reindex(symbols, fill_value=0.0).to_numpy(), w)

    done: dict[int, tuple[np.ndarray, dict[str, Any], np.ndarray, Any]] = {}
    if workers > 1 and len(bars) > 1:
        done = _fit_in_processes(fit, bars, workers, progress)
    else:
        previous = None
        for k, b in enumerate(bars, 1):
            done[b] = fit(b, previous)
            previous = done[b][3]
            if progress is not None:
                progress(k, len(bars))
    out = np.full((tl.n, len(symbols)), np.nan)
    for b in bars:
        out[b] = done[b][0]
    rows = [done[b][1] for b in bars]
    shares = [done[b][2] for b in bars]
    at = pd.DatetimeIndex(tl.index[bars], name="time")
    return Allocation(targets=own_targets(frames, tl.index, out),
                      report=pd.DataFrame(rows, index=at, columns=list(REPORT_COLUMNS)),
                      contributions=pd.DataFrame(np.array(shares), index=at, columns=symbols))


_FIT: Any = None  # the fit a forked worker of `_fit_in_processes` runs (inherited, never pickled)


def _fit_bar(b: int) -> tuple[int, tuple[np.ndarray, dict[str, Any], np.ndarray, Any]]:
    return b, _FIT(b, None)


def _fit_in_processes(fit: Any, bars: list[int], workers: int, progress: Any
                      ) -> dict[int, tuple[np.ndarray, dict[str, Any], np.ndarray, Any]]:
    """`fit(b, None)` for every rebalance bar in `workers` forked processes (they inherit the returns and
    the allocator; only the bar numbers and the results cross), in the order they finish."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    global _FIT
    _FIT = fit
    out = {}
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(bars)),
                                 mp_context=mp.get_context("fork")) as pool:
            for k, future in enumerate(as_completed([pool.submit(_fit_bar, b) for b in bars]), 1):
                b, result = future.result()
                out[b] = result
                if progress is not None:
                    progress(k, len(bars))
    finally:
        _FIT = None
    return out


def allocation_weights(frames: Mapping[str, pd.DataFrame], allocator: Any, every: str = "monthly",
                       progress: Any = None, risk: RiskLimits | None = None,
                       universe: LiquidityUniverse | None = None, workers: int = 1) -> dict[str, pd.Series]:
    """The targets of `allocate` alone: each symbol's targets on its own bars (NaN elsewhere), as
    `simulate_weights` takes them."""
    return allocate(frames, allocator, every, risk=risk, progress=progress, universe=universe,
                    workers=workers).targets


def backtest_weights(strategy: str | WeightStrategy, frames: Mapping[str, pd.DataFrame],
                     params: Mapping[str, Any] | None = None, *, costs: Costs | None = None,
                     fill: Fill | str = Fill.NEXT_OPEN, init_cash: float = 100_000.0,
                     max_exposure: float = 1.0, lots: Lot | Mapping[str, Lot] | None = None,
                     drift: float | None = None) -> RebalanceResult:
    """Backtest a weight strategy (a built-in name or a `WeightStrategy`) on `frames`: its targets at its
    schedule's rebalance bars, traded by `simulate_weights`; the inputs record the strategy and its
    parameters."""
    if isinstance(strategy, str):  # (a built-in or `allocate`, which lives beside the allocators)
        from workbench.backtest.weight_strategies import find_weight_strategy

        strat = find_weight_strategy(strategy)
    else:
        strat = strategy
    p = strat.params(params)
    res = simulate_weights(frames, strat.targets(frames, p), costs=costs, fill=fill, init_cash=init_cash,
                           max_exposure=max_exposure, lots=lots, drift=drift)
    res.inputs.update(strategy=strat.name, params=dict(p))
    return res


__all__ = ["SCHEDULES", "Allocation", "RebalanceResult", "allocate", "allocation_weights", "backtest_weights",
           "check_weight_settings", "check_workers", "rebalance_bars", "rebalance_nb", "simulate_weights"]
