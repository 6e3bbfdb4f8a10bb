"""An independent, deliberately slow reference implementation of workbench/backtest/SEMANTICS.md.

One plain-Python loop over bars, one dict of state per symbol, no numpy tricks, no numba, no
vectorbt and nothing imported from `workbench.backtest`: every rule of the contract is written
out once, in the order SEMANTICS.md states it, so that the engine can be checked against it.

Inputs
    bars     dict symbol -> DataFrame with open/high/low/close (indexes may differ: mixed calendars
             run on the union of the timestamps, see SEMANTICS.md)
    signals  dict symbol -> dict of arrays: long_entries long_exits short_entries short_exits
             (bool) and stop_loss take_profit trailing_stop (float fractions, NaN = none), and
             optionally size (the share of the sizing rule's fraction, [0, 1]; 0 or NaN refuses), and
             entry orders: order_type ("market" | "limit" | "stop" | "stop_limit" per bar), limit_price,
             stop_price (absolute, NaN = none) and time_in_force (bars the order rests), SEMANTICS.md
             "Entry orders"
    settings a `Settings`

Output: a `Result` with the orders, the value of the portfolio at every bar's close, the round
trips and the buy-and-hold benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

SIGNAL_KEYS = ("long_entries", "long_exits", "short_entries", "short_exits")
STOP_KEYS = ("stop_loss", "take_profit", "trailing_stop")
ORDER_KEYS = ("order_type", "limit_price", "stop_price", "time_in_force")


@dataclass
class Settings:
    fees: float = 0.0
    slippage: float = 0.0
    slippage_vol: float = 0.0
    vol_window: int = 20
    fill: str = "next_open"  # "next_open" | "close"
    sizing: str = "fixed"  # "fixed" | "risk" | "volatility"
    fraction: float | None = None  # None -> 1 / number of symbols
    risk: float = 0.01
    target_vol: float = 0.2
    atr_window: int = 14
    periods_per_year: float = 252.0
    # bars per year of each symbol's own market (annualises its ATR in volatility sizing); None: the above
    own_periods_per_year: dict[str, float] | None = None
    direction: str = "both"  # "long" | "short" | "both"
    init_cash: float = 100_000.0
    max_exposure: float = 1.0
    margin_rate: float = 0.0  # annual interest on negative cash, charged per bar (/ periods_per_year)
    borrow_rate: float = 0.0  # annual fee on each short position's value (its last close), per bar
    impact: float = 0.0  # square-root market impact: + impact * sigma * sqrt(q / adv) on a fill's slippage
    adv_window: int = 20  # bars whose mean volume is adv
    lot: float = 0.0  # size increment (0 = any size); quantities round down to a multiple of it
    min_qty: float = 0.0  # an entry below this quantity is refused
    min_notional: float = 0.0  # an entry below this value (quantity x fill price) is refused
    limit_fill: str = "through"  # a resting limit fills when the price trades through it, or "touch"
    funding: bool = False  # settle the bars' `funding_rate` on the positions held into them
    volume_cap: float = 0.0  # an entry fill takes at most this fraction of its bar's volume (0: no cap)
    spread: bool = False  # fills that pay slippage also pay the bars' recorded `half_spread`


@dataclass
class Order:
    bar: int
    symbol: str
    side: str  # "buy" | "sell"
    size: float
    price: float  # fill price, slippage included
    fees: float
    reason: str  # entry | exit | stop_loss | take_profit | trailing_stop


@dataclass
class Trade:
    symbol: str
    direction: str  # "long" | "short"
    entry_bar: int
    entry_price: float
    size: float
    entry_fees: float
    exit_bar: int | None = None
    exit_price: float | None = None
    exit_fees: float = 0.0
    exit_reason: str = "open"  # signal | stop_loss | take_profit | trailing_stop | open

    @property
    def pnl(self) -> float | None:
        """Signed price difference times size, minus entry and exit fees (None while open)."""
        if self.exit_price is None:
            return None
        sign = 1.0 if self.direction == "long" else -1.0
        return sign * (self.exit_price - self.entry_price) * self.size - self.entry_fees - self.exit_fees


@dataclass
class Result:
    orders: list[Order]
    value: list[float]
    trades: list[Trade]
    benchmark: list[float]
    cash: float
    interest: float = 0.0  # margin interest and borrow fees paid in total
    funding: float = 0.0  # funding paid in total (received: negative)


@dataclass
class _Resting:
    """A resting entry order of one symbol (SEMANTICS.md "Entry orders")."""

    long: bool
    kind: str  # limit | stop | stop_limit
    limit: float
    stop: float
    sbar: int  # the signal's own bar: the order rests on own bars sbar+1 .. last
    last: int
    triggered: bool = False  # a stop-limit whose trigger was passed at an open above its limit
    triggered_at: int = -1  # the own bar of that open: it rests as a limit from the next bar
    qty: float = math.nan  # the quantity still to fill: fixed when placed, less each partial fill
    filled_at: int = -1  # the own bar of its last fill (an order fills at most once a bar)


def check_entry_orders(sig: dict, close: list[float]) -> None:
    """The refusals of SEMANTICS.md "Entry orders", for the bars that enter."""
    kinds = sig.get("order_type")
    if kinds is None:
        return
    for b, kind in enumerate(kinds):
        long, short = bool(sig["long_entries"][b]), bool(sig["short_entries"][b])
        if kind == "market" or long == short:  # no entry, or both: they cancel
            continue
        lim, stp = float(sig["limit_price"][b]), float(sig["stop_price"][b])
        tif = int(sig["time_in_force"][b])
        if tif < 1:
            raise ValueError(f"bar {b}: a time in force of {tif} bars; give at least 1")
        if kind in ("limit", "stop_limit") and not (lim > 0):
            raise ValueError(f"bar {b}: a {kind} order without a limit price")
        if kind in ("stop", "stop_limit") and not (stp > 0):
            raise ValueError(f"bar {b}: a {kind} order without a stop price")
        if kind == "limit" and (lim >= close[b] if long else lim <= close[b]):
            raise ValueError(f"bar {b}: a {'buy' if long else 'sell'} limit on the wrong side of the close")
        if kind in ("stop", "stop_limit") and (stp <= close[b] if long else stp >= close[b]):
            raise ValueError(f"bar {b}: a {'buy' if long else 'sell'} stop on the wrong side of the close")
        if kind == "stop_limit" and (lim < stp if long else lim > stp):
            raise ValueError(f"bar {b}: a stop-limit whose limit is on the wrong side of its trigger")


@dataclass
class _Position:
    """The open position of one symbol (qty > 0 long, < 0 short) and the fixed levels of its trade."""

    qty: float = 0.0
    entry: float = math.nan  # fill price of the entry, slippage included
    sl: float = math.nan
    tp: float = math.nan
    tsl: float = math.nan
    extreme: float = math.nan  # peak (long) or trough (short) for the trailing stop
    trade: Trade | None = None


# ---------------------------------------------------------------- indicators, in plain Python

def true_range(high: list[float], low: list[float], close: list[float]) -> list[float]:
    """TR[0] = high - low; later bars also reach back to the previous close."""
    out = []
    for k in range(len(high)):
        if k == 0:
            out.append(high[k] - low[k])
        else:
            out.append(max(high[k] - low[k], abs(high[k] - close[k - 1]), abs(low[k] - close[k - 1])))
    return out


def atr(high: list[float], low: list[float], close: list[float], n: int) -> list[float]:
    """Wilder's average true range: the mean of the first n TRs, then ATR += (TR - ATR) / n."""
    tr = true_range(high, low, close)
    out = [math.nan] * len(tr)
    if len(tr) < n:
        return out
    value = sum(tr[:n]) / n
    out[n - 1] = value
    for k in range(n, len(tr)):
        value = value + (tr[k] - value) / n
        out[k] = value
    return out


def log_return_std(close: list[float], window: int) -> list[float]:
    """Sample std (ddof=1) of the last `window` log close-to-close returns; NaN until a full window."""
    returns = [math.nan] + [math.log(close[k] / close[k - 1]) for k in range(1, len(close))]
    out = [math.nan] * len(close)
    for k in range(window, len(close)):
        w = returns[k - window + 1:k + 1]
        mean = sum(w) / window
        out[k] = math.sqrt(sum((r - mean) ** 2 for r in w) / (window - 1))
    return out


def impact_per_bar(close: list[float], volume: list[float], s: Settings) -> list[float]:
    """k[i] = impact * sigma[i-1] / sqrt(adv[i-1]) (adv: mean volume of adv_window bars); 0 where
    undefined."""
    if not s.impact:
        return [0.0] * len(close)
    sigma = log_return_std(close, s.vol_window)
    out = [0.0]
    for i in range(1, len(close)):
        b = i - 1
        if b + 1 < s.adv_window or math.isnan(sigma[b]):
            out.append(0.0)
            continue
        adv = sum(volume[b - s.adv_window + 1:b + 1]) / s.adv_window
        out.append(s.impact * sigma[b] / math.sqrt(adv) if adv > 0 else 0.0)
    return out


def fill_costs(frame: pd.DataFrame, s: Settings) -> list[float]:
    """What a fill that pays slippage pays at each bar: the slippage, plus the recorded half-spread
    (a bar without a quote: none) when `s.spread`."""
    out = slippage_per_bar(_column(frame, "close"), s)
    if s.spread:
        hs = _column(frame, "half_spread")
        out = [v + (0.0 if math.isnan(h) else h) for v, h in zip(out, hs, strict=True)]
    return out


def slippage_per_bar(close: list[float], s: Settings) -> list[float]:
    """slip[i] = slippage + slippage_vol * sigma[i-1], a NaN (or missing) sigma counting as 0."""
    sigma = log_return_std(close, s.vol_window) if s.slippage_vol else [math.nan] * len(close)
    out = []
    for i in range(len(close)):
        prev = sigma[i - 1] if i >= 1 else math.nan
        out.append(s.slippage + s.slippage_vol * (0.0 if math.isnan(prev) else prev))
    return out


# ---------------------------------------------------------------- the simulator

def _column(frame: pd.DataFrame, name: str) -> list[float]:
    return [float(v) for v in frame[name].to_numpy()]


def _effective_signals(sig: dict, s: int, direction: str) -> tuple[bool, bool, bool, bool]:
    """The four signals of bar s after the direction filter and the conflict rules.

    The rules apply in the order SEMANTICS.md lists them, each to what the previous one left
    (vectorbt's order too): long entry + long exit cancel, then short entry + short exit, then
    whatever long entry and short entry remain. So long entry + long exit + short entry leaves the
    short entry standing, and long entry + short entry + short exit leaves the long entry.
    """
    le, lx, se, sx = (bool(sig[k][s]) for k in SIGNAL_KEYS)
    if direction == "long":
        se = sx = False
    elif direction == "short":
        le = lx = False
    if le and lx:
        le = lx = False
    if se and sx:
        se = sx = False
    if le and se:
        le = se = False
    return le, lx, se, sx


def _stop_level(pos: _Position) -> tuple[float | None, str]:
    """The binding stop level of the position (fixed or trailing, the tighter one) and its reason."""
    long = pos.qty > 0
    fixed = None
    trail = None
    if not math.isnan(pos.sl):
        fixed = pos.entry * (1 - pos.sl) if long else pos.entry * (1 + pos.sl)
    if not math.isnan(pos.tsl):
        trail = pos.extreme * (1 - pos.tsl) if long else pos.extreme * (1 + pos.tsl)
    if fixed is None and trail is None:
        return None, ""
    if trail is None:
        return fixed, "stop_loss"
    if fixed is None:
        return trail, "trailing_stop"
    if long:
        return (fixed, "stop_loss") if fixed >= trail else (trail, "trailing_stop")
    return (fixed, "stop_loss") if fixed <= trail else (trail, "trailing_stop")


def _target_level(pos: _Position) -> float | None:
    if math.isnan(pos.tp):
        return None
    return pos.entry * (1 + pos.tp) if pos.qty > 0 else pos.entry * (1 - pos.tp)


def _round_lot(q: float, s: Settings) -> float:
    """Round a quantity down to a whole number of lots (no lot: unchanged)."""
    if not s.lot:
        return q
    return math.floor(q / s.lot) * s.lot


def simulate(bars: dict[str, pd.DataFrame], signals: dict[str, dict], settings: Settings) -> Result:
    """Bars may have different timestamps per symbol (mixed calendars): the timeline is their union,
    bar numbers in the result count union bars, and each symbol's signals are indexed by its own bars."""
    s = settings
    symbols = list(bars)
    union = sorted(set().union(*(set(bars[k].index) for k in symbols)))
    n = len(union)
    own_pos = {k: {ts: pos for pos, ts in enumerate(bars[k].index)} for k in symbols}
    own = {k: [own_pos[k].get(ts) for ts in union] for k in symbols}  # union bar -> own bar or None
    o = {k: _column(bars[k], "open") for k in symbols}
    h = {k: _column(bars[k], "high") for k in symbols}
    lo = {k: _column(bars[k], "low") for k in symbols}
    c = {k: _column(bars[k], "close") for k in symbols}
    slip = {k: fill_costs(bars[k], s) for k in symbols}
    vol = {k: _column(bars[k], "volume") if "volume" in bars[k].columns else [0.0] * len(c[k])
           for k in symbols}
    imp = {k: impact_per_bar(c[k], vol[k], s) for k in symbols}
    rate = {k: [0.0 if math.isnan(r) else r for r in _column(bars[k], "funding_rate")]
            if "funding_rate" in bars[k].columns else None for k in symbols}
    if s.funding:
        for k in symbols:
            if rate[k] is None:
                raise ValueError(f"funding asked for {k}, whose bars have no funding_rate")

    def cost(k: str, b: int, q: float) -> float:
        """Slippage of a fill of q at own bar b: the bar's, plus the square-root impact (capped)."""
        return slip[k][b] + min(imp[k][b] * math.sqrt(q), 0.5)
    atrs = {k: atr(h[k], lo[k], c[k], s.atr_window) for k in symbols}
    sig = {k: {key: list(signals[k][key]) for key in (*SIGNAL_KEYS, *STOP_KEYS, "size", *ORDER_KEYS)
               if key in signals[k]} for k in symbols}
    for k in symbols:
        if "order_type" in sig[k]:  # `Signals.arrays()` gives the kernel's codes: 0 market, 1 limit, ...
            names = ("market", "limit", "stop", "stop_limit")
            sig[k]["order_type"] = [v if isinstance(v, str) else names[int(v)] for v in sig[k]["order_type"]]
        check_entry_orders(sig[k], c[k])
    resting: dict[str, _Resting | None] = {k: None for k in symbols}
    fresh: set[str] = set()  # symbols entered intrabar by a resting order in this bar
    mark = {k: math.nan for k in symbols}  # last close seen of each symbol

    cash = s.init_cash
    pos = {k: _Position() for k in symbols}
    orders: list[Order] = []
    trades: list[Trade] = []
    value: list[float] = []
    interest = 0.0
    funding = 0.0

    def close_position(k: str, i: int, price: float, reason: str) -> None:
        """Exit the whole position of k at `price` (before slippage)."""
        nonlocal cash
        p = pos[k]
        q = abs(p.qty)
        b = own[k][i]
        if p.qty > 0:
            fill = price * (1 - cost(k, b, q))
            cash += q * fill * (1 - s.fees)
            side = "sell"
        else:
            fill = price * (1 + cost(k, b, q))
            cash -= q * fill * (1 + s.fees)
            side = "buy"
        fees = q * fill * s.fees
        orders.append(Order(i, k, side, q, fill, fees, reason))
        t = p.trade
        assert t is not None
        t.exit_bar, t.exit_price, t.exit_fees = i, fill, fees
        t.exit_reason = "signal" if reason == "exit" else reason
        pos[k] = _Position()
        if resting[k] is not None:
            resting[k] = None  # the remainder of a partly filled entry goes with its position

    def price(k: str, i: int, field: dict[str, list[float]]) -> float:
        """k's price at union bar i: from its own bar there, else its last close (a closed market)."""
        b = own[k][i]
        return field[k][b] if b is not None else mark[k]

    def fraction(k: str, sbar: int) -> float | None:
        """The target fraction of equity of an entry from the signals of k's own bar `sbar` (None:
        refused), after the strategy's size and the exposure cap."""
        sl, tsl = float(sig[k]["stop_loss"][sbar]), float(sig[k]["trailing_stop"][sbar])
        if s.sizing == "fixed":
            f = s.fraction if s.fraction is not None else 1.0 / len(symbols)
        elif s.sizing == "risk":
            d = sl if not math.isnan(sl) else tsl
            if math.isnan(d):
                return None  # no stop, no risk budget: the entry is refused
            f = s.risk / d
        elif s.sizing == "volatility":
            a = atrs[k][sbar]
            if math.isnan(a):
                return None  # ATR still undefined
            ppy = (s.own_periods_per_year or {}).get(k, s.periods_per_year)
            f = s.target_vol / (a / c[k][sbar] * math.sqrt(ppy))
        else:
            raise ValueError(s.sizing)
        size = float(sig[k]["size"][sbar]) if "size" in sig[k] else 1.0
        if math.isnan(size) or size <= 0:
            return None  # the strategy sized this entry to nothing: refused
        return min(f * size, s.max_exposure)

    def equity_at(i: int, field: dict[str, list[float]]) -> float:
        return cash + sum(pos[m].qty * price(m, i, field) for m in symbols if pos[m].qty != 0)

    def order_qty(k: str, i: int, sbar: int, long: bool, field: dict[str, list[float]],
                  ref_px: float) -> float | None:
        """The quantity of a resting entry placed now: sized as a market entry would be at this step,
        at its reference price `ref_px` (its limit, else its stop) with no slippage (None: refused)."""
        f = fraction(k, sbar)
        equity = equity_at(i, field)
        if f is None or equity <= 0:
            return None
        q = f * equity / (ref_px * (1 + s.fees))
        if long:
            floor = -max(0.0, s.max_exposure - 1.0) * equity
            if cash <= floor:
                return None
            if q * ref_px * (1 + s.fees) > cash - floor:
                q = (cash - floor) / (1 + s.fees) / ref_px
        q = _round_lot(q, s)
        if q <= 0 or q < s.min_qty or q * ref_px < s.min_notional:
            return None
        return q

    def open_position(k: str, i: int, sbar: int, long: bool, field: dict[str, list[float]],
                      px: float | None = None, slipped: bool = True, qty: float | None = None
                      ) -> float | None:
        """Enter k at union bar i at its own bar's `field` price (before slippage; `px` instead for a
        resting order's fill, with no slippage unless `slipped`), from the signals of its own bar `sbar`.

        A market entry is sized now; a resting order's `qty` was fixed when it was placed (or is the
        remainder of a partly filled one: it adds to the position). Returns None when the entry is
        refused, NaN when nothing can fill this bar (no cash for a buy, or the volume cap), else the
        quantity left to fill (0 when it all filled)."""
        nonlocal cash
        b = own[k][i]
        px = field[k][b] if px is None else px
        sl, tp, tsl = (float(sig[k][key][sbar]) for key in STOP_KEYS)
        equity = equity_at(i, field)
        f = math.nan
        if qty is None:
            got = fraction(k, sbar)
            if got is None or equity <= 0:
                return None
            f = got
        # slippage, with the impact of the quantity (a market entry's target before costs; none for a
        # limit fill)
        q_imp = f * equity / px if qty is None else qty
        sl_b = slip[k][b] + min(imp[k][b] * math.sqrt(q_imp), 0.5) if slipped else 0.0
        fill = px * (1 + sl_b) if long else px * (1 - sl_b)
        capped = False
        floor = -max(0.0, s.max_exposure - 1.0) * equity
        if long:
            # the fee is reserved: the entry spends f * equity, its fee included
            q = f * equity / (fill * (1 + s.fees)) if qty is None else qty
            # cash may go below 0 (margin) only down to what the exposure cap allows
            if cash <= floor:
                return None if qty is None else math.nan
            capped = q * fill * (1 + s.fees) > cash - floor
            if capped:
                q = (cash - floor) / (1 + s.fees) / fill
            q = _round_lot(q, s)
        else:
            q = _round_lot(f * equity / (fill * (1 + s.fees)), s) if qty is None else qty
        if qty is None and (q <= 0 or q < s.min_qty or q * fill < s.min_notional):
            return None
        target = q if qty is None else qty
        before = q
        if s.volume_cap and q > s.volume_cap * vol[k][b]:  # at most volume_cap of the bar's volume fills now
            q = _round_lot(s.volume_cap * vol[k][b], s)
        if q <= 0:
            return math.nan
        cut = q < before  # the volume cap took some: the cash left is not the floor
        fees = q * fill * s.fees
        if long:
            # a buy that spends all the cash it may leaves exactly the floor, so that a float residual
            # of +-1e-12 never buys dust for the next symbol (test_a_cash_capped_buy_leaves_no_dust)
            rest = cash - q * fill * (1 + s.fees)
            cash = floor if not s.lot and not cut and (capped or rest - floor <= 1e-9 * equity) else rest
            side, signed = "buy", q
        else:
            cash += q * fill * (1 - s.fees)
            side, signed = "sell", -q
        orders.append(Order(i, k, side, q, fill, fees, "entry"))
        p = pos[k]
        if p.qty != 0:  # a partly filled order's later fill: the entry price becomes the mean fill
            held = abs(p.qty)
            p.entry = (held * p.entry + q * fill) / (held + q)
            p.qty += signed
            t = p.trade
            assert t is not None
            t.size, t.entry_price, t.entry_fees = held + q, p.entry, t.entry_fees + fees
        else:
            trade = Trade(k, "long" if long else "short", i, fill, q, fees)
            trades.append(trade)
            pos[k] = _Position(signed, fill, sl, tp, tsl, fill, trade)
        return target - q

    def signal_orders(i: int, sbars: dict[str, int], field: dict[str, list[float]],
                      stopped: set[str]) -> None:
        """At union bar i, act on the signals of each listed symbol's own bar sbars[k]: every symbol's
        exits, then every entry."""
        exits, entries = [], []
        for k in symbols:
            if k in stopped or k not in sbars:
                continue
            le, lx, se, sx = _effective_signals(sig[k], sbars[k], s.direction)
            p = pos[k].qty
            # a resting order is replaced by a new entry or cancelled by an exit of its side; an entry
            # signal of its side while its partly filled position is held is ignored (no pyramiding)
            r = resting[k]
            enters = (se if p > 0 else le if p < 0 else le or se)
            if r is not None and (enters or (lx if r.long else sx)):
                resting[k] = None
            if p > 0:
                if se:
                    exits.append(k)
                    entries.append((k, False))
                elif lx:
                    exits.append(k)
            elif p < 0:
                if le:
                    exits.append(k)
                    entries.append((k, True))
                elif sx:
                    exits.append(k)
            elif le:
                entries.append((k, True))
            elif se:
                entries.append((k, False))
        for k in exits:
            close_position(k, i, field[k][own[k][i]], "exit")
        for k, long in entries:
            kind = sig[k]["order_type"][sbars[k]] if "order_type" in sig[k] else "market"
            if kind == "market":
                open_position(k, i, sbars[k], long, field)
                continue
            sb = sbars[k]
            lim, stp = float(sig[k]["limit_price"][sb]), float(sig[k]["stop_price"][sb])
            q = order_qty(k, i, sb, long, field, lim if kind != "stop" else stp)
            if q is not None:  # its quantity is fixed now, as a venue's order's is
                resting[k] = _Resting(long, kind, lim, stp, sb, sb + int(sig[k]["time_in_force"][sb]), qty=q)

    def resting_fills(i: int, at_open: bool, stopped: set[str]) -> None:
        """Resting entries of the symbols with a bar at i: those that fill at the open, or intrabar."""
        for k in symbols:
            r, b = resting[k], own[k][i]
            if r is None or b is None or k in stopped or (pos[k].qty != 0 and r.filled_at < 0):
                continue
            if b > r.last:
                resting[k] = None  # expired
                continue
            if b <= r.sbar or r.filled_at == b:
                continue  # not resting yet (placed at this bar's close, or later), or filled this bar
            sign = 1.0 if r.long else -1.0  # prices above are "up" for a buy's stop, "down" for a sell's
            op, hi, low = o[k][b], h[k][b], lo[k][b]
            px, slipped = None, False
            if at_open:
                if r.kind == "limit" or r.triggered:
                    if sign * (op - r.limit) <= 0:
                        px = op
                elif r.kind == "stop" and sign * (op - r.stop) >= 0:
                    px, slipped = op, True
                elif r.kind == "stop_limit" and sign * (op - r.stop) >= 0:
                    if sign * (op - r.limit) <= 0:
                        px = op
                    else:
                        r.triggered, r.triggered_at = True, b  # past its limit: a limit from the next bar
                        continue
            else:
                if r.triggered and r.triggered_at == b:
                    continue
                far = low if r.long else hi  # how far the price went in the order's favour
                if r.kind == "limit" or r.triggered:
                    gap = sign * (far - r.limit)
                    if gap < 0 or (gap == 0 and s.limit_fill == "touch"):
                        px = r.limit
                elif r.kind in ("stop", "stop_limit"):
                    reach = hi if r.long else low
                    if sign * (reach - r.stop) >= 0:
                        px, slipped = r.stop, r.kind == "stop"
            if px is None:
                continue
            flat = pos[k].qty == 0
            left = open_position(k, i, r.sbar, r.long, o, px, slipped, r.qty)
            if left is None or math.isnan(left):
                continue  # nothing can fill this bar (no cash for a buy, or the volume cap): it rests on
            if not at_open and flat:
                fresh.add(k)
            r.filled_at = b
            if left > 0 and not slipped:  # a limit's remainder rests on at its limit
                r.qty = left
                if r.kind == "stop_limit" and not r.triggered:
                    r.triggered, r.triggered_at = True, b
            else:
                resting[k] = None  # filled, or a stop's (market) remainder: cancelled

    for i in range(n):
        stopped: set[str] = set()
        here = [k for k in symbols if own[k][i] is not None]  # symbols whose market has a bar at i
        # 0. margin interest on the cash borrowed over the previous bar
        if i >= 1 and cash < 0 and s.margin_rate:
            interest -= cash * s.margin_rate / s.periods_per_year
            cash += cash * s.margin_rate / s.periods_per_year
        # 0b. borrow fees on each short, valued at its last close
        if i >= 1 and s.borrow_rate:
            for k in symbols:
                if pos[k].qty < 0:
                    fee = -pos[k].qty * mark[k] * s.borrow_rate / s.periods_per_year
                    cash -= fee
                    interest += fee
        # 0c. funding on the positions held into the bar, valued at its open
        if s.funding:
            for k in here:
                b = own[k][i]
                if pos[k].qty != 0 and rate[k][b]:
                    fee = pos[k].qty * o[k][b] * rate[k][b]
                    cash -= fee
                    funding += fee
        # 1. gap check at the open for positions held at the start of the bar
        for k in here:
            p = pos[k]
            if p.qty == 0:
                continue
            b = own[k][i]
            level, why = _stop_level(p)
            target = _target_level(p)
            if p.qty > 0:
                if level is not None and o[k][b] <= level:
                    close_position(k, i, o[k][b], why)
                    stopped.add(k)
                elif target is not None and o[k][b] >= target:
                    close_position(k, i, o[k][b], "take_profit")
                    stopped.add(k)
            else:
                if level is not None and o[k][b] >= level:
                    close_position(k, i, o[k][b], why)
                    stopped.add(k)
                elif target is not None and o[k][b] <= target:
                    close_position(k, i, o[k][b], "take_profit")
                    stopped.add(k)
        # 2. next_open: each symbol's previous own bar's signals at this own bar's open
        if s.fill == "next_open":
            signal_orders(i, {k: own[k][i] - 1 for k in here if own[k][i] >= 1}, o, stopped)
        # 2b. resting entries: those filled at the open, then those filled intrabar
        fresh.clear()
        resting_fills(i, True, stopped)
        resting_fills(i, False, stopped)
        # 3. intrabar stops (stop-loss first), then the trailing reference moves
        for k in here:
            p = pos[k]
            if p.qty == 0 or k in stopped:
                continue
            b = own[k][i]
            level, why = _stop_level(p)
            target = _target_level(p)
            if k in fresh:  # entered intrabar: its stop-loss may be hit in the same bar, not its target
                if level is not None and (lo[k][b] <= level if p.qty > 0 else h[k][b] >= level):
                    close_position(k, i, level, why)
                    stopped.add(k)
                continue
            if p.qty > 0:
                if level is not None and lo[k][b] <= level:
                    close_position(k, i, level, why)
                    stopped.add(k)
                elif target is not None and h[k][b] >= target:
                    close_position(k, i, target, "take_profit")
                    stopped.add(k)
                else:
                    p.extreme = max(p.extreme, h[k][b])
            else:
                if level is not None and h[k][b] >= level:
                    close_position(k, i, level, why)
                    stopped.add(k)
                elif target is not None and lo[k][b] <= target:
                    close_position(k, i, target, "take_profit")
                    stopped.add(k)
                else:
                    p.extreme = min(p.extreme, lo[k][b])
        # 4. close: this own bar's signals at its close
        if s.fill == "close":
            signal_orders(i, {k: own[k][i] for k in here}, c, stopped)
        for k in here:
            mark[k] = c[k][own[k][i]]
        value.append(cash + sum(pos[k].qty * mark[k] for k in symbols if pos[k].qty != 0))

    return Result(orders, value, trades, benchmark(bars, s), cash, interest, funding)


def benchmark(bars: dict[str, pd.DataFrame], s: Settings) -> list[float]:
    """Buy and hold on the union timeline: init_cash / n per symbol, all of it spent (fees included)
    at the symbol's first own bar a signal could act on (open of its own bar 1 for next_open, close of
    its own bar 0 for close), then held and marked at its last close; its budget is cash until then."""
    symbols = list(bars)
    union = sorted(set().union(*(set(bars[k].index) for k in symbols)))
    start = 1 if s.fill == "next_open" else 0
    budget = s.init_cash / len(symbols)
    total = [0.0] * len(union)
    for k in symbols:
        close = _column(bars[k], "close")
        price = _column(bars[k], "open" if s.fill == "next_open" else "close")[start]
        fill = price * (1 + fill_costs(bars[k], s)[start])
        q = budget / (1 + s.fees) / fill
        left = budget - q * fill * (1 + s.fees)
        own_pos = {ts: b for b, ts in enumerate(bars[k].index)}
        last = None
        for i, ts in enumerate(union):
            last = own_pos.get(ts, last)
            total[i] += budget if last is None or last < start else left + q * close[last]
    return total
