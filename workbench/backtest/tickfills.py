"""Tick-level fills: a backtest's orders re-filled against the recorded tape, and what the bar model hides.

The bar model (SEMANTICS.md) fills a market order at the bar's open (or close) plus a slippage guess,
a resting limit when the bar's range went through it, a stop at its level. `tick_fills` takes the
orders a backtest made and fills each again against the trades and quotes a collector recorded in the
lake, print by print, under the rules of SEMANTICS.md ("Tick-level fills"): a market order pays the
quoted ask or bid (walking the recorded book when it is bigger than the quote), a limit fills only when
a print goes through it (or, at the front of the queue, touches it), a stop triggers on a print and
fills at the next quote. The report says, order by order, what the tick fill would have been, how
much better or worse than the bar fill, and which bar fills the tape does not confirm.

>>> report = tick_fills(result, lake, "binance")                       # doctest: +SKIP
>>> tick_summary(report).mean_bps                                        # doctest: +SKIP
>>> write_tick_report(report, "reports/tick_vs_bar.html")               # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np
import pandas as pd

from workbench.backtest.engine import (
    BacktestResult,
    Costs,
    Direction,
    Execution,
    Fill,
    backtest,
    signal_action,
)
from workbench.data.lake import Lake
from workbench.data.ticks import SCHEMAS, TickKind
from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError, DataError, did_you_mean
from workbench.strategies import indicators as ind
from workbench.strategies.base import ORDER_TYPES, ParamSpace, Signals, Strategy, float_param, int_param

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from workbench.data.feeds.tape import TapeRecording

log = logging.getLogger(__name__)

EPS = 1e-9  # prices within this fraction of a level count as at the level (levels are computed floats)
SPAN_JOIN_NS = 3_600_000_000_000  # order windows closer than an hour are read from the tape in one go


class Queue(StrEnum):
    """Where a resting limit stands in the queue at its price: at the back (a print at the limit
    went to the orders ahead of it) or at the front (a print at the limit fills it)."""

    BACK = "back"
    FRONT = "front"

    @classmethod
    def parse(cls, value: Queue | str) -> Queue:
        try:
            return cls(value)
        except ValueError:
            names = [q.value for q in cls]
            raise ConfigError(f"queue {value!r} is unknown{did_you_mean(str(value), names)}: use back "
                              "(prints at the limit fill the orders ahead; the default) or front") from None


class OrderKind(StrEnum):
    """How an order is filled at tick level: take the quote, rest as a limit, trigger as a stop."""

    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


REPORT_COLUMNS = ("time", "symbol", "reason", "order", "side", "qty", "level", "bar_price", "tick_price",
                  "tick_time", "diff", "diff_bps", "filled", "beyond_quote", "pnl_diff", "note")


@dataclass(frozen=True)
class _Entry:
    """What an exit needs of the entry it closes."""

    row: int
    long: bool
    price: float  # the bar fill, slippage included (the stops' `e`)
    bar: int  # its own bar
    signal: int  # the own bar whose signals placed it
    at_open: bool  # filled at the bar's open (its trailing reference moves from that bar on)


@dataclass(frozen=True)
class _Order:
    """One order of the backtest, with where and how its tick fill is looked for."""

    row: int
    time: pd.Timestamp
    symbol: str
    reason: str
    side: str
    qty: float
    bar_price: float
    kind: OrderKind
    level: float  # the limit or stop price (the take-profit's or stop's level); NaN at market
    limit: float  # a stop-limit's limit; NaN otherwise
    start: int  # ns: the tape is searched from here...
    end: int  # ...to here (exclusive)
    entry: int | None  # the row of the entry an exit closes

    @property
    def buy(self) -> bool:
        return self.side == "buy"


@dataclass(frozen=True)
class _Fill:
    price: float
    ts: int
    beyond: bool = False
    note: str = ""
    best: float = math.nan  # the quoted price an order at the quote met first


@dataclass
class _Tape:
    """One symbol's recorded trades and quotes over the orders' windows, as arrays (times in ns)."""

    t_ts: np.ndarray
    t_px: np.ndarray
    q_ts: np.ndarray
    bid: np.ndarray
    bid_size: np.ndarray
    ask: np.ndarray
    ask_size: np.ndarray

    def count(self, kind: TickKind, start: int, end: int) -> int:
        ts = self.t_ts if kind is TickKind.TRADES else self.q_ts
        return int(np.searchsorted(ts, end, "left") - np.searchsorted(ts, start, "left"))


# ---------------------------------------------------------------------- planning: the bar model's orders

def _timeframe(result: BacktestResult) -> Timeframe:
    if not result.timeframe:
        raise ConfigError("the backtest result has no timeframe, so its bars' ends are unknown: run it "
                          "with timeframe='1m' (or the bars' timeframe)")
    return Timeframe.parse(result.timeframe)


def _ns(ts: pd.Timestamp) -> int:
    return int(pd.Timestamp(ts).as_unit("ns").value)


def _enters(direction: Direction, sig: Mapping[str, np.ndarray], s: int) -> Direction | None:
    """The side the signals of own bar `s` enter (SEMANTICS.md "Signals -> orders", from flat)."""
    return signal_action(direction, sig["long_entries"][s], sig["long_exits"][s], sig["short_entries"][s],
                         sig["short_exits"][s], 0.0).enters


def _origin(sig: Mapping[str, np.ndarray], k: int, lag: int, want: Direction, direction: Direction
            ) -> tuple[int, OrderKind]:
    """The signal bar and order type of the entry filled at own bar `k` (SEMANTICS.md "Entry
    orders": a market order acts `lag` bars after its signal; a resting one rests from the next bar
    for its time in force, replaced by a later entry signal)."""
    s = k - lag
    if s >= 0 and _enters(direction, sig, s) is want and int(sig["order_type"][s]) == 0:
        return s, OrderKind.MARKET
    for s in range(k - 1, -1, -1):
        side = _enters(direction, sig, s)
        if side is None:
            continue
        kind = int(sig["order_type"][s])
        if side is want and kind != 0 and k - s <= sig["time_in_force"][s]:
            return s, OrderKind(ORDER_TYPES[kind])
        break
    return k - lag, OrderKind.MARKET  # not found (should not happen): treated as a market order


def _at_open(kind: OrderKind, long: bool, price: float, bar_open: float, level: float, lag: int) -> bool:
    """Whether an entry filled at its bar's open (SEMANTICS.md: a gap through a resting order)."""
    if kind is OrderKind.MARKET:
        return lag == 1
    if kind is OrderKind.STOP:
        return bar_open >= level if long else bar_open <= level
    return math.isclose(price, bar_open, rel_tol=1e-12)  # limits fill at the open or at their price


def _exit_level(reason: str, entry: _Entry, sig: Mapping[str, np.ndarray], bars: pd.DataFrame, k: int
                ) -> float:
    """The level a stop-loss, trailing stop or take-profit exit was set at (SEMANTICS.md "Stops")."""
    e, s, long = entry.price, entry.signal, entry.long
    if reason == "take_profit":
        tp = float(sig["take_profit"][s])
        return e * (1 + tp) if long else e * (1 - tp)
    sl, tsl = float(sig["stop_loss"][s]), float(sig["trailing_stop"][s])
    levels = []
    if math.isfinite(sl):
        levels.append(e * (1 - sl) if long else e * (1 + sl))
    if math.isfinite(tsl):
        a = entry.bar if entry.at_open else entry.bar + 1  # the reference moves from this bar on
        if long:
            ref = max([e, *bars["high"].to_numpy(dtype=float)[a:k]])
            levels.append(ref * (1 - tsl))
        else:
            ref = min([e, *bars["low"].to_numpy(dtype=float)[a:k]])
            levels.append(ref * (1 + tsl))
    if not levels:
        return math.nan
    return max(levels) if long else min(levels)


def _plan(result: BacktestResult) -> list[_Order]:
    """Every order of `result` with its kind, level and the window of tape it is filled from."""
    step = int(_timeframe(result).delta.value)
    lag = 1 if Fill(result.inputs.get("fill", Fill.NEXT_OPEN)) is Fill.NEXT_OPEN else 0
    direction = Direction(result.inputs.get("direction", Direction.BOTH))
    sigs = {s: {c: f[c].to_numpy() for c in f.columns} for s, f in result.signals.items()}
    entries: dict[str, _Entry] = {}
    out: list[_Order] = []
    o = result.orders
    columns = zip(pd.DatetimeIndex(o["time"]), o["symbol"].astype(str), o["reason"].astype(str),
                  o["side"].astype(str), o["price"].to_numpy(dtype=float), o["size"].to_numpy(dtype=float),
                  strict=True)
    for row, (when, sym, reason, side, price, qty) in enumerate(columns):
        bars, sig = result.bars[sym], sigs[sym]
        k = int(bars.index.get_indexer(pd.DatetimeIndex([when]))[0])
        t0 = _ns(bars.index[k])
        level = limit = math.nan
        entry: int | None = None
        at = t0 + step * (1 - lag)  # a market order acts at the open (next_open) or the close
        start, end = at, at + step
        if reason == "entry":
            long = side == "buy"
            s, kind = _origin(sig, k, lag, Direction.LONG if long else Direction.SHORT, direction)
            if kind is OrderKind.LIMIT:
                level = float(sig["limit_price"][s])
            elif kind is OrderKind.STOP:
                level = float(sig["stop_price"][s])
            elif kind is OrderKind.STOP_LIMIT:
                level, limit = float(sig["stop_price"][s]), float(sig["limit_price"][s])
            if kind is not OrderKind.MARKET:  # it rested from the bar after its signal to its fill bar
                start, end = _ns(bars.index[s + 1]), t0 + step
            opened = float(bars["open"].iloc[k])
            entries[sym] = _Entry(row, long, price, k, s, _at_open(kind, long, price, opened, level, lag))
        else:
            kind = OrderKind.MARKET
            held = entries.pop(sym, None)
            entry = held.row if held is not None else None
            if reason in ("stop_loss", "trailing_stop", "take_profit") and held is not None:
                kind = OrderKind.LIMIT if reason == "take_profit" else OrderKind.STOP
                level = _exit_level(reason, held, sig, bars, k)
                start, end = t0, t0 + step
        out.append(_Order(row, when, sym, reason, side, float(qty), float(price), kind, level, limit,
                          start, end, entry))
    return out


# ---------------------------------------------------------------------- the tape

def tick_sources(lake: Lake) -> list[str]:
    """The sources that have tick tables in `lake` (compacted or still in the log)."""
    found = set(lake.ticks.series()["source"].astype(str))
    wal = lake.ticks.root / "_wal"
    for d in wal.glob("source=*") if wal.is_dir() else []:
        name = unquote(d.name.split("=", 1)[1])
        if any(lake.ticks.segments(name, k) for k in (TickKind.TRADES, TickKind.QUOTES)):
            found.add(name)
    return sorted(found)


def check_tick_source(lake: Lake, source: str) -> None:
    """Refuse, in one line naming what the lake holds, a source with no tick tables in `lake`."""
    have = tick_sources(lake)
    if source not in have:
        held = f"it holds ticks of {', '.join(have)}" if have else "it holds no recorded ticks"
        raise DataError(f"no tick tables for source {source!r} in the lake at {lake.root}"
                        f"{did_you_mean(source, have)}: {held}; record some with `workbench collect "
                        f"--source {source} --symbols ... --streams trades,quotes,book`")


def _spans(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Windows merged into the few spans read from the lake."""
    out: list[list[int]] = []
    for a, b in sorted(windows):
        if out and a <= out[-1][1] + SPAN_JOIN_NS:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _ts_ns(col: pd.Series) -> np.ndarray:
    return np.asarray(pd.DatetimeIndex(col).as_unit("ns").asi8, dtype=np.int64)


def _read_tape(lake: Lake, source: str, symbol: str, orders: list[_Order], step: int) -> _Tape:
    trade_w = [(o.start, o.end) for o in orders if o.kind is not OrderKind.MARKET]
    quote_w = [(o.start, o.end + step) for o in orders if o.kind is not OrderKind.LIMIT]
    read: dict[TickKind, pd.DataFrame] = {}
    for kind, windows, key in ((TickKind.TRADES, trade_w, ["trade_id"]), (TickKind.QUOTES, quote_w,
                                                                         ["ts", "recv_ts"])):
        parts = [lake.ticks.read(kind, source, symbol, pd.Timestamp(a, tz="UTC"), pd.Timestamp(b, tz="UTC"))
                 for a, b in _spans(windows)]
        frame = pd.concat(parts) if parts else SCHEMAS[kind].empty_table().to_pandas()
        read[kind] = frame.drop_duplicates(key).sort_values([*dict.fromkeys(["ts", *key])], kind="stable")
    trades, quotes = read[TickKind.TRADES], read[TickKind.QUOTES]
    return _Tape(t_ts=_ts_ns(trades["ts"]), t_px=trades["price"].to_numpy(dtype=float),
                 q_ts=_ts_ns(quotes["ts"]), bid=quotes["bid"].to_numpy(dtype=float),
                 bid_size=quotes["bid_size"].to_numpy(dtype=float), ask=quotes["ask"].to_numpy(dtype=float),
                 ask_size=quotes["ask_size"].to_numpy(dtype=float))


def _fmt_ts(ns: int) -> str:
    return pd.Timestamp(ns, tz="UTC").strftime("%Y-%m-%d %H:%M:%S")


def _check_covered(lake: Lake, source: str, orders: list[_Order], tapes: Mapping[str, _Tape]) -> None:
    """Refuse, in one line, orders whose window has no recorded ticks to fill them from."""
    missing: list[tuple[_Order, str]] = []
    for o in orders:
        tape = tapes[o.symbol]
        need = []
        if o.kind is not OrderKind.MARKET and tape.count(TickKind.TRADES, o.start, o.end) == 0:
            need.append("trades")
        if o.kind is not OrderKind.LIMIT and tape.count(TickKind.QUOTES, o.start, o.end) == 0:
            need.append("quotes")
        if need:
            missing.append((o, " or ".join(need)))
    if not missing:
        return
    o, what = missing[0]
    more = f" ({len(missing) - 1} more orders lack ticks too)" if len(missing) > 1 else ""
    held = lake.ticks.read(TickKind.TRADES, source, o.symbol)
    have = (f"the lake holds {o.symbol} trades of {source} from {_fmt_ts(_ts_ns(held['ts'])[0])} to "
            f"{_fmt_ts(_ts_ns(held['ts'])[-1])} UTC" if len(held) else f"the lake holds no {o.symbol} "
            f"trades of {source}")
    raise DataError(
        f"no recorded {what} of {o.symbol} from {source} between {_fmt_ts(o.start)} and {_fmt_ts(o.end)} "
        f"UTC for the {o.reason} order of the bar at {o.time:%Y-%m-%d %H:%M:%S}{more}: record them with "
        f"`workbench collect --source {source} --symbols {o.symbol} --streams trades,quotes,book` while "
        f"that market trades, or backtest a period the tape covers ({have})")


# ---------------------------------------------------------------------- filling, print by print

BookReader = Callable[[str, int], pd.DataFrame]


def _quote_fill(tape: _Tape, start: int, until: int, o: _Order, book: BookReader) -> _Fill | None:
    """Take the first quote at or after `start` (before `until`): the ask for a buy, the bid for a
    sell, walking the recorded book for what the quote's size does not cover."""
    i = int(np.searchsorted(tape.q_ts, start, "left"))
    if i >= len(tape.q_ts) or tape.q_ts[i] >= until:
        return None
    ts = int(tape.q_ts[i])
    price = float(tape.ask[i] if o.buy else tape.bid[i])
    size = float(tape.ask_size[i] if o.buy else tape.bid_size[i])
    if o.qty <= size * (1 + EPS):
        return _Fill(price, ts, best=price)
    snap = book(o.symbol, ts)
    levels = snap[snap["side"] == ("ask" if o.buy else "bid")].sort_values("level") if len(snap) else snap
    if not len(levels):
        return _Fill(price, ts, True, f"{size:g} quoted: the other {o.qty - size:g} filled at the same price "
                     "(no book recorded)", price)
    left, cost, used = o.qty, 0.0, 0
    for p, q in zip(levels["price"].to_numpy(dtype=float), levels["size"].to_numpy(dtype=float),
                    strict=True):
        take = min(q, left)
        cost += take * p
        left -= take
        used += 1
        if left <= o.qty * EPS:
            left = 0.0
            break
    note = f"{size:g} quoted: walked {used} level{'s' if used > 1 else ''} of the book"
    if left > 0:
        cost += left * float(levels["price"].iloc[-1])
        note += f", {left:g} beyond its {len(levels)} recorded levels filled at the last one"
    return _Fill(cost / o.qty, ts, True, note, price)


def _through(tape: _Tape, start: int, end: int, o: _Order, level: float, queue: Queue) -> int | None:
    """The first print in [start, end) that fills a resting limit at `level` (index into the trades)."""
    lo, hi = np.searchsorted(tape.t_ts, [start, end], "left")
    px = tape.t_px[lo:hi]
    tol = abs(level) * EPS
    if o.buy:  # a buy limit below the market: prints under it
        hit = px < level - tol if queue is Queue.BACK else px <= level + tol
    else:
        hit = px > level + tol if queue is Queue.BACK else px >= level - tol
    return int(lo + np.argmax(hit)) if hit.any() else None


def _triggered(tape: _Tape, start: int, end: int, o: _Order) -> int | None:
    """The first print in [start, end) at or through a stop at `o.level` (index into the trades)."""
    lo, hi = np.searchsorted(tape.t_ts, [start, end], "left")
    px = tape.t_px[lo:hi]
    tol = abs(o.level) * EPS
    hit = px >= o.level - tol if o.buy else px <= o.level + tol
    return int(lo + np.argmax(hit)) if hit.any() else None


def _fill(o: _Order, tape: _Tape, start: int, step: int, queue: Queue, book: BookReader
          ) -> tuple[_Fill | None, str]:
    """The tick fill of one order (None and the reason when the tape does not fill it)."""
    if o.kind is OrderKind.MARKET:
        got = _quote_fill(tape, start, o.end, o, book)
        return got, "" if got else "no quote in its bar"
    if o.kind is OrderKind.LIMIT:
        at = _through(tape, start, o.end, o, o.level, queue)
        if at is None:
            how = "went through" if queue is Queue.BACK else "reached"
            return None, f"not filled at tick level: no print {how} the limit {o.level:g}"
        return _Fill(o.level, int(tape.t_ts[at])), ""
    at = _triggered(tape, start, o.end, o)
    if at is None:
        return None, f"not filled at tick level: no print at or through the stop {o.level:g}"
    trigger = int(tape.t_ts[at])
    got = _quote_fill(tape, trigger, o.end + step, o, book)
    if got is None:
        return None, f"triggered at {_fmt_ts(trigger)} but no quote followed within a bar"
    note = f"triggered by a print at {tape.t_px[at]:g}"
    if o.kind is OrderKind.STOP_LIMIT:
        within = got.best <= o.limit * (1 + EPS) if o.buy else got.best >= o.limit * (1 - EPS)
        if not within:  # the quote is past the limit: it rests as a limit on the prints after the trigger
            at = _through(tape, trigger + 1, o.end, o, o.limit, queue)
            if at is None:
                return None, f"{note}; not filled at tick level: no print went through the limit {o.limit:g}"
            return _Fill(o.limit, int(tape.t_ts[at]), note=f"{note}, then filled as a limit"), ""
    return _Fill(got.price, got.ts, got.beyond, f"{note}; {got.note}" if got.note else note), ""


def tick_fills(result: BacktestResult, lake: Lake, source: str, *, queue: Queue | str = Queue.BACK
               ) -> pd.DataFrame:
    """Re-fill every order of `result` against `source`'s recorded trades and quotes
    (SEMANTICS.md "Tick-level fills").

    One row per order, in the order of `result.orders`: bar time, symbol, reason, order type, side,
    quantity, level (limit or stop price), the bar fill and the tick fill (price and time), the
    difference `diff` (signed: positive = the tick fill is worse for the trader) in price and in bps
    of the bar price, whether the tape filled it (`filled`), whether it took more than the quoted
    size (`beyond_quote`), `pnl_diff` (tick minus bar cash: the price difference of an order both
    fill; minus the round trip's PnL for an entry the tape does not fill) and a note. `tick_summary`
    sums it up. Orders whose time the tape does not cover are refused up front, in one line.
    """
    q = Queue.parse(queue)
    check_tick_source(lake, source)
    orders = _plan(result)
    step = int(_timeframe(result).delta.value)
    tapes = {sym: _read_tape(lake, source, sym, [o for o in orders if o.symbol == sym], step)
             for sym in dict.fromkeys(o.symbol for o in orders)}
    _check_covered(lake, source, orders, tapes)
    lookback = pd.Timedelta(max(step, 1_000_000_000), "ns")

    def book(symbol: str, ts: int) -> pd.DataFrame:
        """The book snapshot in force at `ts` (the last at or before it, looked for one bar back)."""
        at = pd.Timestamp(ts, tz="UTC")
        rows = lake.read_book(source, symbol, at - lookback, at + pd.Timedelta(1, "ns"))
        if rows.empty:
            return rows
        last = rows[rows["ts"] == rows["ts"].iloc[-1]]
        return last[last["recv_ts"] == last["recv_ts"].iloc[-1]]

    fees = float(result.inputs.get("costs", {}).get("fees", 0.0))
    fills: dict[int, _Fill | None] = {}
    rows = []
    for o in orders:
        start, note = o.start, ""
        got: _Fill | None = None
        if o.entry is not None and fills.get(o.entry) is None:
            note = "its entry was not filled at tick level"
        else:
            if o.entry is not None:  # the entry's tick fill arms its stops: they trigger on later prints
                entered = fills[o.entry]
                assert entered is not None
                start = max(start, entered.ts + 1)
            got, note = _fill(o, tapes[o.symbol], start, step, q, book)
        if o.reason == "entry":
            fills[o.row] = got
        sign = 1.0 if o.buy else -1.0
        if got is not None:
            diff = sign * (got.price - o.bar_price)
            pnl = -diff * o.qty * (1 + sign * fees)
            note = got.note
        else:
            diff = pnl = math.nan
        rows.append({
            "time": o.time, "symbol": o.symbol, "reason": o.reason, "order": o.kind.value, "side": o.side,
            "qty": o.qty, "level": o.level, "bar_price": o.bar_price,
            "tick_price": got.price if got else math.nan,
            "tick_time": pd.Timestamp(got.ts, tz="UTC") if got else pd.NaT,
            "diff": diff, "diff_bps": diff / o.bar_price * 1e4 if got else math.nan,
            "filled": got is not None, "beyond_quote": bool(got.beyond) if got else False,
            "pnl_diff": pnl, "note": note,
        })
    report = pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
    if len(report):
        _drop_unfilled_trades(report, result)
    report["tick_time"] = pd.to_datetime(report["tick_time"], utc=True)
    report["filled"] = report["filled"].astype(bool)
    report["beyond_quote"] = report["beyond_quote"].astype(bool)
    report.attrs.update(source=source, queue=q.value, strategy=result.strategy)
    return report


def _drop_unfilled_trades(report: pd.DataFrame, result: BacktestResult) -> None:
    """An entry the tape does not fill makes no round trip: its PnL difference is minus the bar
    model's PnL of that trade (NaN while the trade is still open)."""
    trades = result.trades
    for i in np.flatnonzero((report["reason"] == "entry").to_numpy() & ~report["filled"].to_numpy(bool)):
        r = report.iloc[i]
        match = trades[(trades["symbol"] == r["symbol"]) & (trades["entry_time"] == r["time"])]
        pnl = float(match["pnl"].iloc[0]) if len(match) else math.nan
        report.loc[report.index[int(i)], "pnl_diff"] = -pnl if math.isfinite(pnl) else math.nan


# ---------------------------------------------------------------------- the summary

@dataclass(frozen=True)
class TickSummary:
    """The report in a few numbers. Cost differences are in bps of the bar price, positive = the
    tick fill is worse for the trader; PnL differences are tick minus bar, in cash."""

    orders: int
    filled: int  # orders the tape fills
    mean_bps: float  # over the orders both models fill
    median_bps: float
    limit_fills: int  # limit entries and take-profits the bar model filled
    limit_unconfirmed: int  # ...which the tape does not fill
    beyond_quote: int  # orders bigger than the quoted size
    price_pnl: float  # from the price differences of the orders both fill
    dropped_pnl: float  # minus the bar PnL of round trips whose entry the tape does not fill
    queue: str = ""

    @property
    def limit_unconfirmed_share(self) -> float:
        """Share of the bar model's limit fills the tape does not confirm (NaN without limits)."""
        return self.limit_unconfirmed / self.limit_fills if self.limit_fills else math.nan

    @property
    def total_pnl(self) -> float:
        """Tick minus bar PnL of the whole backtest."""
        return self.price_pnl + self.dropped_pnl

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs as people read them."""
        def bps(v: float) -> str:
            return f"{v:+.2f} bps" if math.isfinite(v) else "n/a"

        share = self.limit_unconfirmed_share
        return [
            ("orders", f"{self.orders:,}"),
            ("filled at tick level", f"{self.filled:,} of {self.orders:,}"),
            ("mean cost difference", bps(self.mean_bps)),
            ("median cost difference", bps(self.median_bps)),
            ("limit fills not confirmed by ticks",
             f"{self.limit_unconfirmed:,} of {self.limit_fills:,}"
             + (f" ({share:.0%})" if math.isfinite(share) else "")),
            ("orders bigger than the quote", f"{self.beyond_quote:,}"),
            ("PnL difference from prices", f"{self.price_pnl:+,.2f}"),
            ("PnL of trades ticks would not make", f"{self.dropped_pnl:+,.2f}"),
            ("total PnL difference (tick - bar)", f"{self.total_pnl:+,.2f}"),
        ]


def tick_summary(report: pd.DataFrame) -> TickSummary:
    """The numbers of a `tick_fills` report (see `TickSummary`)."""
    both = report[report["filled"].astype(bool)]
    bps = both["diff_bps"].to_numpy(dtype=float)
    limits = report[(report["order"] == OrderKind.LIMIT.value)
                    & report["reason"].isin(["entry", "take_profit"])]
    unfilled_entries = report[(report["reason"] == "entry") & ~report["filled"].astype(bool)]
    return TickSummary(
        orders=len(report), filled=len(both),
        mean_bps=float(bps.mean()) if len(bps) else math.nan,
        median_bps=float(np.median(bps)) if len(bps) else math.nan,
        limit_fills=len(limits), limit_unconfirmed=int((~limits["filled"].astype(bool)).sum()),
        beyond_quote=int(report["beyond_quote"].astype(bool).sum()),
        price_pnl=float(np.nansum(both["pnl_diff"].to_numpy(dtype=float))),
        dropped_pnl=float(np.nansum(unfilled_entries["pnl_diff"].to_numpy(dtype=float))),
        queue=str(report.attrs.get("queue", "")),
    )


# ---------------------------------------------------------------------- the chart

KIND_COLORS = {"market": "#1f77b4", "limit": "#2ca02c", "stop": "#d62728", "stop_limit": "#ff7f0e"}
UNFILLED_COLOR = "#7f7f7f"


def plot_tick_vs_bar(report: pd.DataFrame, title: str | None = None) -> go.Figure:
    """The report as a chart: each order's cost difference (bps, positive = ticks worse), the
    cumulative cost difference in cash, and the summary."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from workbench.backtest.plots import _naive_utc, _style

    s = tick_summary(report)
    fig = make_subplots(rows=3, cols=1, vertical_spacing=0.08, row_heights=[0.38, 0.26, 0.36],
                        specs=[[{"type": "xy"}], [{"type": "xy"}], [{"type": "table"}]],
                        subplot_titles=("cost difference per order (bps of the bar price; > 0: ticks worse)",
                                        "cumulative cost difference (bar PnL - tick PnL)", "summary"))
    filled = report[report["filled"].astype(bool)]
    for key, part in filled.groupby("order", sort=False):
        kind = str(key)
        hover = [f"{r.reason} {r.side} {r.qty:g} {r.symbol}<br>bar {r.bar_price:.6g} at {r.time:%H:%M:%S}"
                 f"<br>tick {r.tick_price:.6g} at {r.tick_time:%H:%M:%S.%f}<br>{r.diff_bps:+.2f} bps"
                 + ("<br>" + str(r.note) if r.note else "") for r in part.itertuples()]
        fig.add_trace(go.Scatter(x=_naive_utc(part["time"]), y=part["diff_bps"], mode="markers",
                                 name=f"{kind} (filled)", hovertext=hover, hoverinfo="text",
                                 marker={"size": 8, "color": KIND_COLORS.get(kind, UNFILLED_COLOR)}),
                      row=1, col=1)
    missed = report[~report["filled"].astype(bool)]
    if len(missed):
        hover = [f"{r.reason} {r.order} {r.side} {r.qty:g} {r.symbol} at {r.time:%H:%M:%S}<br>{r.note}"
                 for r in missed.itertuples()]
        fig.add_trace(go.Scatter(x=_naive_utc(missed["time"]), y=np.zeros(len(missed)), mode="markers",
                                 name="not filled at tick level",
                                 marker={"symbol": "x", "size": 9, "color": UNFILLED_COLOR},
                                 hovertext=hover, hoverinfo="text"), row=1, col=1)
    cost = (-report["pnl_diff"].astype(float)).fillna(0.0).cumsum()
    fig.add_trace(go.Scatter(x=_naive_utc(report["time"]), y=cost, mode="lines", line_shape="hv",
                             name="cumulative cost difference", line={"color": "#9467bd"}), row=2, col=1)
    labels, values = zip(*s.rows(), strict=True)
    fig.add_trace(go.Table(header={"values": ["", "tick vs bar"], "align": "left"},
                           cells={"values": [list(labels), list(values)], "align": "left"}), row=3, col=1)
    fig.update_yaxes(title_text="bps", zeroline=True, zerolinecolor="#999999", row=1, col=1)
    fig.update_yaxes(title_text="cash", row=2, col=1)
    fig.update_xaxes(matches="x", row=2, col=1)
    where = report.attrs.get("source")
    head = title or (f"bar vs tick fills of {report.attrs.get('strategy', 'the backtest')}"
                     + (f" on the {where} tape" if where else "")
                     + (f", {s.queue} of the queue" if s.queue else ""))
    _style(fig, head, height=1000)
    fig.update_layout(hovermode="closest", margin={"t": 120}, legend={"y": 1.04})
    return fig


def write_tick_report(report: pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """Write `plot_tick_vs_bar` as a self-contained HTML file (atomically); returns its path."""
    from workbench.backtest.plots import write_html

    return write_html(plot_tick_vs_bar(report, title), path)


# ---------------------------------------------------------------------- the recorded demo tape

def _dip_limit(bars: pd.DataFrame, p: dict[str, Any]) -> Signals:
    """Buy the dip with a limit below the close when the close crosses under its average; sell at
    market when it crosses back above; a fixed stop-loss."""
    close = bars["close"]
    mean = ind.sma(close, p["window"])
    return Signals(ind.crossed_below(close, mean), ind.crossed_above(close, mean),
                   stop_loss=p["stop_loss"], order_type="limit",
                   limit_price=close.to_numpy(dtype=float) * (1 - p["offset_bps"] / 1e4),
                   time_in_force=p["tif"])


DIP_LIMIT = Strategy(
    "dip_limit", ParamSpace.of(
        int_param("window", 12, 3, 200, doc="moving-average window (bars)"),
        float_param("offset_bps", 2.0, 0.0, 100.0, step=0.5, doc="limit below the close (bps)"),
        int_param("tif", 3, 1, 50, doc="bars the limit rests"),
        float_param("stop_loss", 0.0015, 0.0, 0.1, step=0.0005, doc="stop-loss distance (fraction)"),
    ), _dip_limit, warmup=lambda p: int(p["window"]) + 1,
    description="Demo of tick fills: limit entries on dips below the average, market exits above it.")


@dataclass(frozen=True)
class DemoTape:
    """What `demo_tape` did: the recording, the backtest, its tick report and where it is written."""

    recording: TapeRecording
    result: BacktestResult
    report: pd.DataFrame
    summary: TickSummary
    path: Path | None
    seconds: dict[str, float]


def demo_tape(lake: Lake, out: str | Path | None = None, *, minutes: float = 30.0, timeframe: str = "5s",
              seed: int = 7, queue: Queue | str = Queue.BACK, symbol: str = "BTC/USDT") -> DemoTape:
    """Record a SIMULATED tape through the collector (`record_tape`: `minutes` of a seeded venue on a
    virtual clock, a few seconds), build `timeframe` bars from its trades, backtest `DIP_LIMIT` (limit
    entries, market exits, a stop-loss; fees 0.1 %, no slippage, so the bar model's fills are its
    plain prices) on them, and fill its orders again against the tape. Writes the report to `out`."""
    from workbench.data.feeds.tape import TAPE_SOURCE, TapeFeed, record_tape

    q = Queue.parse(queue)
    seconds: dict[str, float] = {}
    began = time.monotonic()
    rec = record_tape(lake, TapeFeed(source=TAPE_SOURCE, minutes=minutes, seed=seed), symbols=[symbol])
    seconds["record"] = time.monotonic() - began
    began = time.monotonic()
    bars = lake.read_tick_bars(rec.source, symbol, timeframe, rec.start, rec.end).set_index("ts")
    bars.attrs.update(symbol=symbol, timeframe=timeframe, source=rec.source)
    seconds["bars"] = time.monotonic() - began
    began = time.monotonic()
    result = backtest(DIP_LIMIT, {symbol: bars}, timeframe=timeframe,
                      execution=Execution(costs=Costs(fees=0.001, slippage=0.0)))
    seconds["backtest"] = time.monotonic() - began
    began = time.monotonic()
    report = tick_fills(result, lake, rec.source, queue=q)
    seconds["tick_fills"] = time.monotonic() - began
    path = None
    if out is not None:
        began = time.monotonic()
        path = write_tick_report(report, out)
        seconds["report"] = time.monotonic() - began
    return DemoTape(rec, result, report, tick_summary(report), path, seconds)


__all__ = ["DIP_LIMIT", "REPORT_COLUMNS", "DemoTape", "OrderKind", "Queue", "TickSummary",
           "check_tick_source", "demo_tape", "plot_tick_vs_bar", "tick_fills", "tick_sources",
           "tick_summary", "write_tick_report"]
