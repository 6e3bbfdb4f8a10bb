"""Weight strategies in the research loop: found by name beside signal strategies, scored by sweeps and
walk-forward, their rebalancing orders read as trades.

`resolve_strategy(name)` finds a signal strategy (the registry) or a weight strategy (the built-ins of
`workbench.strategies.weights`, and `allocate` here: an allocator as a strategy, whose method, window and
schedule are parameters, so a walk-forward fits it per fold). `WeightEvaluator` has the `Evaluator`
interface the optimiser uses (`score(params)`, `equity_curves(combos)`), `weight_trades` turns the
orders of a `RebalanceResult` into round trips (a trade opens when a position leaves 0 and closes when it
returns to 0), and `weight_backtest_metrics` gives the metrics of a weight backtest as `compute_metrics`
does for a signal backtest.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from workbench.backtest.allocators import METHODS, Allocator
from workbench.backtest.engine import Execution, Timeline
from workbench.backtest.holdings import held_values
from workbench.backtest.metrics import METRIC_KEYS, compute_metrics
from workbench.backtest.rebalance import RebalanceResult, simulate_weights
from workbench.errors import ConfigError, did_you_mean
from workbench.strategies.base import ParamSpace, Strategy, choice_param, int_param
from workbench.strategies.weights import (
    WEIGHT_STRATEGIES,
    WeightStrategy,
    rebalance_bars,
)

TRADE_COLUMNS = ["symbol", "direction", "entry_time", "exit_time", "entry_price", "exit_price", "size",
                 "pnl", "return", "fees", "status"]


def _allocate(closes: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    """The allocator's weights at the schedule's rebalance bars, each fitted on the `window` simple returns
    up to and including its bar (the others NaN)."""
    alloc = Allocator(method=str(p["method"]), window=int(p["window"]))
    returns = closes.pct_change()
    out = pd.DataFrame(np.nan, index=closes.index, columns=closes.columns)
    previous = None
    for b in rebalance_bars(pd.DatetimeIndex(closes.index), str(p["every"])):
        if b < alloc.window:
            continue
        w = alloc.weights(returns.iloc[b + 1 - alloc.window:b + 1], previous=previous)
        out.iloc[b] = w.to_numpy()
        previous = w
    return out


ALLOCATE = WeightStrategy(
    "allocate",
    ParamSpace.of(
        choice_param("method", "risk_parity", [m for m in METHODS if m != "kelly"],
                     doc="the allocator (workbench.backtest.allocators)"),
        int_param("window", 126, 21, 504, step=21, doc="trailing returns each fit uses"),
        choice_param("every", "monthly", ["daily", "weekly", "monthly"], doc="rebalance schedule")),
    _allocate, warmup=lambda p: int(p["window"]),
    description="An allocator over the whole universe, refitted on its trailing window at each rebalance.")


def with_allocator(base: WeightStrategy, method: str) -> WeightStrategy:
    """`base` picking the symbols, the allocator `method` sizing them: at each rebalance bar, the symbols
    `base` gives a non-zero weight are weighted by the allocator fitted on their `alloc_window` trailing
    returns up to that bar, to the gross `base` gave them (e.g. ``xs_momentum+risk_parity``: the top
    symbols by momentum, in equal risk). Named ``<base>+<method>``, so it resolves by name."""
    if method not in METHODS or method == "kelly":
        raise ConfigError(f"unknown allocator {method!r} after '+'; choose one of "
                          f"{', '.join(m for m in METHODS if m != 'kelly')}")
    window = int_param("alloc_window", 126, 21, 504, step=21, doc=f"trailing returns the {method} fit uses")
    if "alloc_window" in base.space.names:
        raise ConfigError(f"{base.name} already has an allocator: write one '+<method>'")

    def fn(closes: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
        own = {k: v for k, v in p.items() if k != "alloc_window"}
        picked = base.fn(closes, own)
        alloc = Allocator(method=method, window=int(p["alloc_window"]))
        returns = closes.pct_change()
        out = picked.copy()
        for b in rebalance_bars(pd.DatetimeIndex(closes.index), str(p.get("every", "every"))):
            row = picked.iloc[b]
            held = row.index[(row.fillna(0.0).abs() > 0).to_numpy()]
            if b < alloc.window or len(held) < 1:
                continue
            gross = float(row[held].abs().sum())
            w = alloc.weights(returns[held].iloc[b + 1 - alloc.window:b + 1]) * gross
            out.iloc[b] = 0.0
            out.loc[out.index[b], held] = w.to_numpy()
        return out

    return WeightStrategy(f"{base.name}+{method}", ParamSpace.of(*base.space.params, window), fn,
                          warmup=lambda p: max(int(base.warmup(p)), int(p["alloc_window"])),
                          description=f"{base.description} Sized by {method} over the picks' trailing "
                                      "returns.")


def weight_strategies() -> dict[str, WeightStrategy]:
    """Every weight strategy by name: the cross-sectional built-ins and `allocate`."""
    return {s.name: s for s in (*WEIGHT_STRATEGIES, ALLOCATE)}


def find_weight_strategy(name: str) -> WeightStrategy:
    """A weight strategy by name (a built-in, `allocate`, or ``<name>+<allocator>``); a signal strategy's
    name or an unknown one is refused in one line naming them all."""
    found = weight_strategies().get(name.strip())
    if found is not None:
        return found
    if name.strip().split("+", 1)[0] in weight_strategies():
        combined = resolve_strategy(name)
        assert isinstance(combined, WeightStrategy)
        return combined
    names = list(weight_strategies())
    from workbench.strategies.registry import list_strategies

    if name.strip() in list_strategies():
        raise ConfigError(f"{name!r} is a signal strategy, not a weight strategy: backtest it with "
                          f"backtest() (`workbench backtest --strategy {name}`); weight strategies: "
                          f"{', '.join(names)}")
    raise ConfigError(f"no weight strategy {name!r}{did_you_mean(name, names)}; weight strategies: "
                      f"{', '.join(names)}")


def is_weight_strategy(spec: Any) -> bool:
    """Whether `spec` (a name, ``<name>+<allocator>``, or a strategy object) is a weight strategy."""
    if isinstance(spec, WeightStrategy):
        return True
    return isinstance(spec, str) and spec.strip().split("+", 1)[0] in weight_strategies()


def resolve_strategy(spec: str | Strategy | WeightStrategy) -> Strategy | WeightStrategy:
    """A signal strategy (registry name or composite spec) or a weight strategy, by name."""
    if isinstance(spec, (Strategy, WeightStrategy)):
        return spec
    text = spec.strip()
    found = weight_strategies().get(text)
    if found is not None:
        return found
    if "+" in text and "(" not in text:
        head, method = text.split("+", 1)
        base = weight_strategies().get(head)
        if base is None:
            raise ConfigError(f"unknown weight strategy {head!r} before '+'; choose one of "
                              f"{', '.join(weight_strategies())}")
        return with_allocator(base, method)
    from workbench.strategies.registry import get_strategy

    return get_strategy(spec)


# ---------------------------------------------------------------------------------------- trades


def weight_trades(orders: pd.DataFrame, last_close: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Round trips of a weight portfolio's orders (time, symbol, side, size, price, fees), per symbol in
    time order: a trade opens when the position leaves 0 and closes when it returns to 0 (an order that
    crosses 0 closes one trade and opens the other with the rest, fees split by size). Entry (exit)
    price: the size-weighted mean of the orders adding to (reducing) it; pnl: its cash flows less fees,
    an open trade marked at `last_close`; return: pnl over the notional it added."""
    rows: list[dict[str, Any]] = []
    if not len(orders):
        return pd.DataFrame(columns=TRADE_COLUMNS)
    for sym, grp in orders.sort_values("time", kind="stable").groupby("symbol", sort=False):
        qty = 0.0
        cur: dict[str, Any] | None = None
        for t, side, size, price, fees in zip(grp["time"], grp["side"], grp["size"], grp["price"],
                                              grp["fees"], strict=True):
            signed = float(size) if side == "buy" else -float(size)
            left, fee_per = signed, float(fees) / float(size) if size else 0.0
            while left != 0.0:
                if cur is None:  # open a trade with what is left
                    cur = {"symbol": sym, "direction": "long" if left > 0 else "short", "entry_time": t,
                           "added": 0.0, "add_value": 0.0, "reduced": 0.0, "red_value": 0.0, "flow": 0.0,
                           "fees": 0.0}
                step = left
                if qty != 0.0 and np.sign(left) != np.sign(qty):
                    step = -qty if abs(left) >= abs(qty) else left  # reduce, at most to 0
                cur["flow"] -= step * price
                cur["fees"] += abs(step) * fee_per
                if qty == 0.0 or np.sign(step) == np.sign(qty):
                    cur["added"] += abs(step)
                    cur["add_value"] += abs(step) * price
                else:
                    cur["reduced"] += abs(step)
                    cur["red_value"] += abs(step) * price
                qty = 0.0 if abs(qty + step) <= 1e-12 * max(abs(qty), abs(step)) else qty + step
                left = 0.0 if step == left else left - step
                if qty == 0.0:
                    rows.append(_trade_row(cur, t, 0.0, "closed"))
                    cur = None
        if cur is not None:
            mark = float((last_close or {}).get(str(sym), np.nan))
            rows.append(_trade_row(cur, pd.NaT, qty * mark, "open"))
    return pd.DataFrame(rows, columns=TRADE_COLUMNS)


def _trade_row(cur: dict[str, Any], exit_time: Any, held_value: float, status: str) -> dict[str, Any]:
    pnl = cur["flow"] + held_value - cur["fees"]
    return {"symbol": cur["symbol"], "direction": cur["direction"], "entry_time": cur["entry_time"],
            "exit_time": exit_time, "entry_price": cur["add_value"] / cur["added"],
            "exit_price": cur["red_value"] / cur["reduced"] if cur["reduced"] else np.nan,
            "size": cur["added"], "pnl": pnl,
            "return": pnl / cur["add_value"] if cur["add_value"] else np.nan, "fees": cur["fees"],
            "status": status}


# ---------------------------------------------------------------------------------------- metrics


def weight_backtest_metrics(result: RebalanceResult, frames: Mapping[str, pd.DataFrame],
                            periods_per_year: float, benchmark: pd.Series | None = None) -> dict[str, float]:
    """The metrics of a weight backtest (`METRIC_KEYS`): equity statistics, its round trips' statistics,
    exposure (gross position value over equity per bar) and turnover (traded value)."""
    init_cash = float(result.inputs["init_cash"])
    values = held_values(result, frames)
    equity = result.equity.to_numpy()
    gross = np.divide(values.abs().sum(axis=1).to_numpy(), equity, out=np.zeros(len(equity)),
                      where=equity != 0.0)
    last = {s: float(f["close"].iloc[-1]) for s, f in frames.items() if len(f)}
    trades = weight_trades(result.orders, last)
    o = result.orders
    traded = float((o["size"] * o["price"]).sum()) if len(o) else 0.0
    m = compute_metrics(result.equity, init_cash, periods_per_year, trades=trades, exposure=gross,
                        traded_value=traded, benchmark=benchmark)
    m["n_trades"] = int((trades["status"] == "closed").sum())
    return {k: m[k] for k in METRIC_KEYS}


# ---------------------------------------------------------------------------------------- evaluator


class WeightEvaluator:
    """A weight strategy on one universe's bars, prepared once to score many parameter sets: the same
    interface as `workbench.backtest.sweep.Evaluator` (`score`, `equity_curves`, `value`, `init_cash`),
    so sweeps and walk-forward optimise weight strategies as they do signal strategies. Its targets
    come from the strategy's own function and trade by `simulate_weights`; the symbols share one cash."""

    def __init__(self, strat: WeightStrategy, frames: Mapping[str, pd.DataFrame], *, execution: Execution,
                 periods_per_year: float) -> None:
        ex = execution
        check_weight_execution(ex, strat.name)
        self.strat = strat
        self.frames = dict(frames)
        self.symbols = list(frames)
        self.execution = ex
        self.init_cash = float(ex.init_cash)
        self.ppy = float(periods_per_year)
        self.n = Timeline(self.frames, self.symbols).n
        self.value = np.empty(self.n)
        # seconds spent computing targets and simulating them, over every `run` so far
        self.timings = {"targets_s": 0.0, "simulate_s": 0.0}

    def run(self, params: Mapping[str, Any]) -> RebalanceResult:
        """The backtest of one parameter set (its equity curve is also left in `self.value`)."""
        ex = self.execution
        t0 = time.perf_counter()
        targets = self.strat.targets(self.frames, params)
        t1 = time.perf_counter()
        res = simulate_weights(self.frames, targets, costs=ex.costs, fill=ex.fill, init_cash=ex.init_cash,
                               max_exposure=ex.max_exposure, lots=ex.lot_map(self.symbols))
        self.timings["targets_s"] += t1 - t0
        self.timings["simulate_s"] += time.perf_counter() - t1
        self.value[:] = res.equity.to_numpy()
        return res

    def score(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Metrics of one parameter set (the keys `Evaluator.score` returns). Its `n_trades` counts the
        positions taken, open ones included: a portfolio that holds its symbols to the end has traded
        (the optimiser's `min_trades` must not find it idle), though none of its trades has closed."""
        from workbench.backtest.sweep import _KERNEL_KEYS

        m = weight_backtest_metrics(self.run(params), self.frames, self.ppy)
        m["n_trades"] += m["n_open_trades"]
        return {k: float(m[k]) for k in _KERNEL_KEYS}

    def equity_curves(self, combos: Sequence[Mapping[str, Any]], chunk: int = 16, *,
                      parallel: bool = True) -> np.ndarray:
        """Equity curves of many parameter sets, one row each (K, n)."""
        out = np.empty((len(combos), self.n))
        for k, p in enumerate(combos):
            out[k] = self.run(p).equity.to_numpy()
        return out


def check_weight_execution(execution: Execution, name: str) -> None:
    """Refuse execution settings a weight strategy would ignore (its weights carry size and side)."""
    from workbench.backtest.engine import Direction, Sizing

    if execution.sizing != Sizing():
        raise ConfigError(f"{name} is a weight strategy: its targets are its sizes, so a sizing rule "
                          f"({execution.sizing.kind.value}) would have no effect; drop it")
    if execution.direction is not Direction.BOTH:
        raise ConfigError(f"{name} is a weight strategy: its targets' signs are its sides, so "
                          f"direction={execution.direction.value} would have no effect; drop it")
