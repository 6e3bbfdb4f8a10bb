"""A deliberately slow reference of SEMANTICS.md "Target weights and rebalancing": one plain-Python loop
over the union of the symbols' bars, nothing imported from `workbench.backtest`.

Inputs
    bars     dict symbol -> DataFrame with open/high/low/close (indexes may differ: mixed calendars)
    weights  dict symbol -> list of targets by the symbol's own bars (NaN: none at that bar)
    settings `Settings` of the signal reference (fees, slippage, fill, init_cash, max_exposure, lot,
             min_qty, min_notional are read), plus `drift` (None: no drift threshold)

Output: the orders (reason "rebalance") and the portfolio's value at every union bar's close.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
from reference_sim import Order, Settings


@dataclass
class WeightResult:
    orders: list[Order] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    index: list[pd.Timestamp] = field(default_factory=list)
    positions: list[dict[str, float]] = field(default_factory=list)  # after each union bar


def _toward_zero(q: float, lot: float) -> float:
    if not lot:
        return q
    return math.copysign(math.floor(abs(q) / lot + 1e-12) * lot, q)


def simulate_weights(bars: dict[str, pd.DataFrame], weights: dict[str, list[float]], s: Settings,
                     drift: float | None = None) -> WeightResult:
    symbols = list(bars)
    union = sorted(set().union(*(set(df.index) for df in bars.values())))
    own = {sym: {t: k for k, t in enumerate(bars[sym].index)} for sym in symbols}
    for sym in symbols:
        if len(weights[sym]) != len(bars[sym]):
            raise ValueError(f"{sym}: one target per own bar")
    cash = s.init_cash
    qty = dict.fromkeys(symbols, 0.0)
    last_close: dict[str, float | None] = dict.fromkeys(symbols, None)
    targets: dict[str, float] = {}  # the latest target of each symbol
    pending: set[str] = set()  # symbols whose target waits for their next own bar's fill step
    out = WeightResult()

    def gross_check(row: dict[str, float], when: pd.Timestamp) -> None:
        if sum(abs(v) for v in row.values()) > s.max_exposure + 1e-12:
            raise ValueError(f"targets at {when} hold more than max_exposure")

    def trade(i_time: pd.Timestamp, bar_no: int, prices: dict[str, float], acting: list[str]) -> None:
        nonlocal cash
        equity = cash + sum(qty[k] * (prices[k] if k in prices else (last_close[k] or 0.0)) for k in symbols)
        deltas = {}
        for j in acting:
            want = _toward_zero(targets[j] * equity / prices[j], s.lot)
            d = want - qty[j]
            value = abs(d) * prices[j]
            if value <= 1e-12 * equity or abs(d) < s.min_qty or value < s.min_notional:
                continue
            deltas[j] = d
        floor = -max(0.0, s.max_exposure - 1.0) * equity
        for j in acting:  # sells first
            d = deltas.get(j, 0.0)
            if d < 0:
                px = prices[j] * (1 - s.slippage)
                fee = -d * px * s.fees
                cash += -d * px - fee
                qty[j] += d
                out.orders.append(Order(bar_no, j, "sell", -d, px, fee, "rebalance"))
        for j in acting:  # then buys, capped by the cash
            d = deltas.get(j, 0.0)
            if d > 0:
                px = prices[j] * (1 + s.slippage)
                if d * px * (1 + s.fees) > cash - floor:
                    d = _toward_zero(max(cash - floor, 0.0) / (1 + s.fees) / px, s.lot)
                if d * px <= 1e-12 * equity:
                    continue
                fee = d * px * s.fees
                cash -= d * px + fee
                qty[j] += d
                out.orders.append(Order(bar_no, j, "buy", d, px, fee, "rebalance"))

    prev_signal: dict[str, bool] = {}  # next_open: symbol -> its previous own bar was a rebalance bar
    for i, t in enumerate(union):
        here = [j for j in symbols if t in own[j]]
        if s.fill == "next_open":
            acting = [j for j in here if prev_signal.get(j) or j in pending]
            if acting:
                prices = {j: float(bars[j]["open"].iloc[own[j][t]]) for j in here}
                trade(t, i, prices, acting)
                pending.difference_update(acting)
        # the close: new targets, the drift check, and (fill=close) the trades
        for j in here:
            last_close[j] = float(bars[j]["close"].iloc[own[j][t]])
        value = cash + sum(qty[k] * (last_close[k] or 0.0) for k in symbols)
        row = {j: weights[j][own[j][t]] for j in here if not math.isnan(weights[j][own[j][t]])}
        if row:
            gross_check(row, t)  # the targets set at this bar (SEMANTICS.md), not those carried
        drifted = bool(targets) and value > 0 and any(
            abs(qty[k] * (last_close[k] or 0.0) / value - targets[k]) > drift for k in targets
        ) if drift is not None else False
        targets.update(row)
        signal = set(row) | (set(targets) if drifted else set())
        if s.fill == "close":
            acting = [j for j in here if j in signal or j in pending]
            if acting:
                closes = {j: float(last_close[j] or 0.0) for j in here}  # (set just above)
                trade(t, i, closes, acting)
                pending.difference_update(acting)
            pending.update(j for j in signal if j not in here)
        else:
            for j in symbols:
                if j in here:
                    prev_signal[j] = j in signal
                elif j in signal:
                    pending.add(j)
        out.value.append(cash + sum(qty[k] * (last_close[k] or 0.0) for k in symbols))
        out.index.append(t)
        out.positions.append(dict(qty))
    return out
