"""The embedded simulated broker: fills with the backtest's cost model and fill convention.

Market orders fill at once at the current price with the backtest's slippage and fees: with
``next_open`` the current price at clock time ``t`` is the open of the bar starting at ``t``
(the market price at that instant), else the last close. Protective orders (stop, trailing stop,
take-profit limit) sharing an OCO group are evaluated bar by bar exactly as the backtest kernel
does (gap at the open first, then inside the bar with the stop assumed hit before the target, then
the trailing reference moves), so a replay through this broker reproduces the backtest's trades.
State lives in a SQLite file (the "exchange" survives a runner's crash), or in memory.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.backtest.engine import Costs, Fill, Lot
from workbench.errors import OrderRejected
from workbench.paper.broker import (
    Account,
    Broker,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Side,
)
from workbench.paper.feed import BarFeed
from workbench.paper.journal import open_sqlite

_EPS = 1e-9  # relative tolerance on cash for a buy sized to spend all of it

STOP_REASON = {
    OrderType.STOP: "stop_loss",
    OrderType.TRAILING_STOP: "trailing_stop",
    OrderType.LIMIT: "take_profit",
}


def _level(value: float | None) -> float:
    """An order's price field, NaN when unset (a request always sets the one its type needs)."""
    return math.nan if value is None else value


def _order_json(o: Order) -> str:
    d = asdict(o)
    for k in ("submitted_at", "updated_at"):
        d[k] = None if d[k] is None else pd.Timestamp(d[k]).isoformat()
    return json.dumps(d)


def _order_from(text: str) -> Order:
    d = json.loads(text)
    for k in ("submitted_at", "updated_at"):
        d[k] = None if d[k] is None else pd.Timestamp(d[k])
    d["side"], d["type"], d["status"] = Side(d["side"]), OrderType(d["type"]), OrderStatus(d["status"])
    return Order(**d)


def _ev(event: list[int] | None) -> tuple[int, int] | None:
    return None if event is None else (int(event[0]), int(event[1]))


@dataclass
class _Cursors:
    """Where one symbol's bar events stand in an `advance`: up to which event protective orders
    (`stop`) and resting entries (`stop_e`) go now, and the last each has seen."""

    stop: tuple[int, int] | None
    stop_e: tuple[int, int] | None
    last: tuple[int, int] | None
    last_e: tuple[int, int] | None


class SimBroker(Broker):
    """A local broker simulated on the lake's bars. `path=None` keeps its state in memory.

    `clock` returns the current time (the runner's clock, simulated in a replay); `feed` gives
    the bars (without one, prices come from `set_price` and no bars are processed). `fill_mode`
    (``full``, ``partial``, ``none``) is a test knob for how much of a market order fills at once.
    """

    name = "sim"
    native_oco = True
    resting_entries = True  # limit, stop and stop-limit entries rest here (SEMANTICS.md "Entry orders")
    volume_caps = True  # entries fill at most costs.volume_cap of their bar's volume (SEMANTICS.md)
    expires_entries = True  # a resting entry expires here after its expire_bars
    dormant_legs = True  # protective legs given as offsets wait here until their entry fills

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        feed: BarFeed | None = None,
        costs: Costs | None = None,
        fill: Fill | str = Fill.NEXT_OPEN,
        cash: float = 100_000.0,
        clock: Callable[[], pd.Timestamp] | None = None,
        allow_short: bool = True,
        durable: bool = True,
        lots: Mapping[str, Lot] | None = None,
    ) -> None:
        self.feed = feed
        self.costs = costs or Costs()
        # the backtest's lots: a fill cut by the volume cap rounds down to them, as the kernel's does
        self.lots = dict(lots or {})
        self.fill = Fill(fill)
        self.clock = clock or (lambda: pd.Timestamp.now(tz="UTC"))
        self.allow_short = allow_short
        self.fill_mode = "full"
        self._prices: dict[str, float] = {}
        schema = ("CREATE TABLE IF NOT EXISTS orders (cid TEXT PRIMARY KEY, seq INTEGER, body TEXT);"
                  "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT);")
        if path is None:
            self.db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            self.db.executescript(schema)
        else:
            # NORMAL in WAL mode: a committed order survives the process being killed (the venue's
            # promise here); only a power cut could lose the last moments
            self.db = open_sqlite(Path(path), "sim broker database", schema,
                                  synchronous="NORMAL" if durable else "OFF")
        self.orders: dict[str, Order] = {}
        for _cid, _seq, body in self.db.execute("SELECT cid, seq, body FROM orders ORDER BY seq"):
            self.orders[_cid] = _order_from(body)
        kv = dict(self.db.execute("SELECT key, value FROM kv").fetchall())
        self.cash = float(kv["cash"]) if "cash" in kv else float(cash)
        self.pos: dict[str, list[float]] = json.loads(kv.get("positions", "{}"))  # symbol -> [qty, avg]
        # symbol -> last event [ns, kind]
        self.cursor: dict[str, list[int]] = json.loads(kv.get("cursor", "{}"))
        # resting entries see a bar's open only after the tick at that open (its signal orders come
        # first, SEMANTICS.md "Entry orders"): their own cursor, one event behind at an open
        self.ecursor: dict[str, list[int]] = json.loads(kv.get("ecursor", "{}"))
        self.refs: dict[str, float] = json.loads(kv.get("refs", "{}"))
        self.stats: dict[str, int] = json.loads(kv.get("stats", '{"created": 0, "duplicates": 0}'))
        # perpetuals: the open (ns) of the last bar whose funding is settled, and the total paid
        self.funded: dict[str, int] = json.loads(kv.get("funded", "{}"))
        self.funding_paid = float(kv.get("funding_paid", "0.0"))
        self._dirty: set[str] = set()
        if "cash" not in kv:
            self._save()

    # ------------------------------------------------------------------ persistence
    def _save(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        for cid in self._dirty:
            o = self.orders[cid]
            self.db.execute(
                "INSERT INTO orders VALUES (?, ?, ?) ON CONFLICT(cid) DO UPDATE SET body=excluded.body",
                (cid, int(o.broker_order_id.rsplit("-", 1)[1]), _order_json(o)),
            )
        for key, value in (
            ("cash", repr(self.cash)),
            ("positions", json.dumps(self.pos)),
            ("cursor", json.dumps(self.cursor)),
            ("ecursor", json.dumps(self.ecursor)),
            ("refs", json.dumps(self.refs)),
            ("stats", json.dumps(self.stats)),
            ("funded", json.dumps(self.funded)),
            ("funding_paid", repr(self.funding_paid)),
        ):
            self.db.execute(
                "INSERT INTO kv VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )
        self.db.execute("COMMIT")
        self._dirty.clear()

    def close(self) -> None:
        """Close the state file."""
        self.db.close()

    # ------------------------------------------------------------------ prices
    def set_price(self, symbol: str, price: float) -> None:
        """Set a symbol's price (used when the broker has no bar feed)."""
        self._prices[symbol] = float(price)

    def _now(self) -> pd.Timestamp:
        return pd.Timestamp(self.clock())

    def _quote(self, symbol: str, now: pd.Timestamp) -> tuple[float, int | None]:
        """The current price and the index of the bar a market order fills in (None without a feed)."""
        if self.feed is None or symbol not in self.feed.symbols:
            if symbol not in self._prices:
                raise OrderRejected(f"sim broker has no price for {symbol!r}; trade a symbol of the feed")
            return self._prices[symbol], None
        t = now.value
        if self.fill is Fill.NEXT_OPEN:
            k = self.feed.bar_index(symbol, t)
            if k is not None:
                return float(self.feed.column(symbol, "open")[k]), k
        n = self.feed.n_closed(symbol, now)
        if n == 0:
            raise OrderRejected(f"sim broker has no bar of {symbol} closed by {now}; sync the lake first")
        return float(self.feed.column(symbol, "close")[n - 1]), n - 1

    def _slip(self, symbol: str, k: int | None) -> float:
        """The backtest's slippage at fill bar k: fixed + `slippage_vol` x the previous bar's volatility,
        plus the recorded half-spread at the fill when the costs name a quote source (SEMANTICS.md)."""
        spread = 0.0
        feed = self.feed
        if self.costs.spread and k is not None and feed is not None and "half_spread" in feed.cols(symbol):
            hs = float(feed.column(symbol, "half_spread")[k])
            spread = hs if math.isfinite(hs) else 0.0
        return self._volatility_slip(symbol, k) + spread

    def _volatility_slip(self, symbol: str, k: int | None) -> float:
        c = self.costs
        if c.slippage_vol == 0 or k is None or self.feed is None:
            return c.slippage
        w = int(c.vol_window)
        close = self.feed.column(symbol, "close")
        if k - 1 < w:  # sigma[k-1] needs vol_window returns ending at bar k-1
            return c.slippage
        rets = np.diff(np.log(close[k - 1 - w : k]))
        sigma = float(np.std(rets, ddof=1)) if len(rets) > 1 else math.nan
        return c.slippage + c.slippage_vol * (0.0 if math.isnan(sigma) else sigma)

    def price(self, symbol: str) -> float:
        """The price a market order would fill at now, before slippage and fees."""
        return self._quote(symbol, self._now())[0]

    def fill_price(self, symbol: str, side: Side) -> float:
        """The price a market order would fill at now, slippage included (the runner's size estimate)."""
        p, k = self._quote(symbol, self._now())
        slip = self._slip(symbol, k)
        return p * (1.0 + slip) if side is Side.BUY else p * (1.0 - slip)

    # ------------------------------------------------------------------ the contract
    def submit(self, request: OrderRequest) -> Order:
        """Accept an order; market orders fill at once (per `fill_mode`), protective ones rest."""
        self.advance()
        known = self.orders.get(request.client_order_id)
        if known is not None:
            self.stats["duplicates"] += 1
            self._save()
            return known
        now = self._now()
        base: dict[str, Any] = dict(
            client_order_id=request.client_order_id,
            broker_order_id=f"sim-{self.stats['created'] + 1}",
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            qty=float(request.qty),
            limit_price=request.limit_price,
            stop_price=request.stop_price,
            trail_percent=request.trail_percent,
            oco_group=request.oco_group,
            offset=request.offset,
            expire_bars=request.expire_bars,
            submitted_at=now,
            updated_at=now,
        )
        if request.type is OrderType.MARKET:
            price, k = self._quote(request.symbol, now)
            order = Order(status=OrderStatus.NEW, **base)
            qty = (
                request.qty
                if self.fill_mode == "full"
                else request.qty / 2
                if self.fill_mode == "partial"
                else 0
            )
            flat = self.pos.get(request.symbol, [0.0, 0.0])[0] == 0
            if flat:  # an entry: at most the volume cap fills, the rest of a market order is cancelled
                qty = self._capped(request.symbol, qty, k)
            self._check(order, qty, price, k)
            self.stats["created"] += 1
            self.orders[order.client_order_id] = order
            self._dirty.add(order.client_order_id)
            if qty > 0:
                self._execute(order.client_order_id, qty, price, k, reason=None, now=now)
            if flat and self.costs.volume_cap and qty < request.qty and self.fill_mode == "full":
                cut = self.orders[order.client_order_id]
                self.orders[order.client_order_id] = cut.with_(
                    status=OrderStatus.CANCELED, updated_at=now,
                    reject_reason=f"the volume cap ({self.costs.volume_cap:g} of the bar's volume) filled "
                                  f"{qty:g} of {request.qty:g}; the rest of a market order is cancelled")
        elif request.expire_bars is not None:  # a resting entry: limit, stop or stop-limit
            p = self.pos.get(request.symbol, [0.0, 0.0])[0]
            if request.type not in (OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT) or p != 0:
                raise OrderRejected(f"sim broker: a resting entry is a limit, stop or stop-limit order on a "
                                    f"flat {request.symbol} position")
            order = Order(status=OrderStatus.NEW, extra={"entry": True, "bars": 0}, **base)
            self.stats["created"] += 1
            self.orders[order.client_order_id] = order
            self._dirty.add(order.client_order_id)
        elif self._waits_for_entry(request):  # a protective leg waiting for its entry's fill
            order = Order(status=OrderStatus.NEW, extra={"dormant": True}, **base)
            self.stats["created"] += 1
            self.orders[order.client_order_id] = order
            self._dirty.add(order.client_order_id)
        else:
            p = self.pos.get(request.symbol, [0.0, 0.0])[0]
            if p == 0 or (p > 0) == (request.side is Side.BUY):
                raise OrderRejected(
                    f"sim broker: a {request.type.value} order must reduce an open {request.symbol} position"
                )
            if request.type is OrderType.TRAILING_STOP:
                self.refs[request.client_order_id] = float(
                    request.ref_price or self._quote(request.symbol, now)[0]
                )
            order = Order(status=OrderStatus.NEW, **base)
            self.stats["created"] += 1
            self.orders[order.client_order_id] = order
            self._dirty.add(order.client_order_id)
        self._save()
        return self.orders[request.client_order_id]

    def _capped(self, symbol: str, qty: float, k: int | None) -> float:
        """What of an entry's `qty` may fill in bar k: at most `volume_cap` x its volume, rounded down to
        the lot (SEMANTICS.md "Volume cap")."""
        cap = self.costs.volume_cap
        if not cap or k is None or self.feed is None or "volume" not in self.feed.cols(symbol):
            return qty
        most = cap * float(self.feed.column(symbol, "volume")[k])
        if qty <= most:
            return qty
        return self.lots.get(symbol, Lot()).round(most)

    def _waits_for_entry(self, request: OrderRequest) -> bool:
        """Whether `request` is a protective leg of a resting entry that has not filled yet (its
        `oco_group`); a level given as an offset needs one."""
        parent = self.orders.get(request.oco_group or "")
        waits = (parent is not None and not parent.status.done and parent.filled_qty == 0
                 and bool((parent.extra or {}).get("entry")))
        if request.offset is not None and not waits:
            raise OrderRejected(f"sim broker: {request.client_order_id} gives its level as an offset, but "
                                f"its oco_group {request.oco_group} is no resting entry waiting to fill")
        return waits

    def _check(self, order: Order, qty: float, price: float, k: int | None) -> None:
        p = self.pos.get(order.symbol, [0.0, 0.0])[0]
        if order.side is Side.BUY and p >= 0 and qty > 0:
            fill = price * (1.0 + self._slip(order.symbol, k))
            cost = qty * fill * (1.0 + self.costs.fees)
            if cost > self.cash * (1 + _EPS) + 1e-9:
                raise OrderRejected(
                    f"sim broker: insufficient cash for {order.client_order_id}: needs "
                    f"{cost:,.2f}, has {self.cash:,.2f}"
                )
        if order.side is Side.SELL and p <= 0 and not self.allow_short:
            raise OrderRejected(f"sim broker: short selling {order.symbol} is not allowed in this account")

    def _execute(
        self,
        cid: str,
        qty: float,
        price: float,
        k: int | None,
        *,
        reason: str | None,
        now: pd.Timestamp,
        bar_ns: int | None = None,
        slipped: bool = True,
    ) -> None:
        """Fill `qty` of order `cid` at `price` (before slippage, unless not `slipped`: a limit's fill)
        in bar k; book cash, fees, position."""
        o = self.orders[cid]
        slip = self._slip(o.symbol, k) if slipped else 0.0
        if o.side is Side.BUY:
            fill = price * (1.0 + slip)
            fee = qty * fill * self.costs.fees
            self.cash -= qty * fill + fee
            if abs(self.cash) <= _EPS * qty * fill:
                self.cash = 0.0  # a buy sized to spend the cash leaves none (no rounding dust)
            signed = qty
        else:
            fill = price * (1.0 - slip)
            fee = qty * fill * self.costs.fees
            self.cash += qty * fill - fee
            signed = -qty
        q0, a0 = self.pos.get(o.symbol, [0.0, 0.0])
        q1 = q0 + signed
        if abs(q1) <= 1e-12 * max(abs(q0), abs(signed)):
            q1 = 0.0
        if q1 == 0:
            self.pos.pop(o.symbol, None)
        elif q0 == 0 or (q0 > 0) != (q1 > 0):
            self.pos[o.symbol] = [q1, fill]
        elif (q1 > 0) == (signed > 0):
            self.pos[o.symbol] = [q1, (q0 * a0 + signed * fill) / q1]
        else:
            self.pos[o.symbol] = [q1, a0]
        filled = o.filled_qty + qty
        avg = fill if o.avg_fill_price is None else (o.avg_fill_price * o.filled_qty + fill * qty) / filled
        status = OrderStatus.FILLED if filled >= o.qty * (1 - 1e-12) else OrderStatus.PARTIALLY_FILLED
        if bar_ns is None and self.feed is not None and k is not None:
            bar_ns = int(self.feed.times(o.symbol)[k])
        extra = dict(o.extra or {})
        extra.update(
            bar=pd.Timestamp(bar_ns, tz="UTC").isoformat() if bar_ns is not None else now.isoformat(),
            **({"reason": reason} if reason else {}),
        )
        self.orders[cid] = o.with_(
            filled_qty=filled, avg_fill_price=avg, fee=o.fee + fee, status=status, updated_at=now, extra=extra
        )
        self._dirty.add(cid)
        if status is OrderStatus.FILLED and o.oco_group:
            for other in list(self.orders.values()):
                if other.oco_group == o.oco_group and other.client_order_id != cid and not other.status.done:
                    self.orders[other.client_order_id] = other.with_(
                        status=OrderStatus.CANCELED, updated_at=now
                    )
                    self._dirty.add(other.client_order_id)
                    self.refs.pop(other.client_order_id, None)
            self.refs.pop(cid, None)
        if q1 == 0 and not (o.extra or {}).get("entry"):  # the rest of a partly filled entry goes too
            for other in list(self.orders.values()):
                if (other.symbol == o.symbol and (other.extra or {}).get("entry") and not other.status.done
                        and other.filled_qty > 0):
                    self.orders[other.client_order_id] = other.with_(status=OrderStatus.CANCELED,
                                                                     updated_at=now)
                    self._dirty.add(other.client_order_id)

    def complete_fills(self) -> None:
        """Fill the rest of every resting market order at the current price (test knob)."""
        now = self._now()
        for cid, o in list(self.orders.items()):
            if o.type is OrderType.MARKET and not o.status.done and o.remaining > 0:
                price, k = self._quote(o.symbol, now)
                self._execute(cid, o.remaining, price, k, reason=None, now=now)
        self._save()

    def get_order(self, client_order_id: str) -> Order | None:
        """The order with this client id, or None."""
        self.advance()
        return self.orders.get(client_order_id)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Orders that can still fill."""
        self.advance()
        return [
            o for o in self.orders.values() if not o.status.done and (symbol is None or o.symbol == symbol)
        ]

    def cancel(self, client_order_id: str) -> Order | None:
        """Cancel an open order (no-op for finished or unknown ones)."""
        self.advance()
        o = self.orders.get(client_order_id)
        if o is None or o.status.done:
            return o
        self.orders[client_order_id] = o.with_(status=OrderStatus.CANCELED, updated_at=self._now())
        self.refs.pop(client_order_id, None)
        self._dirty.add(client_order_id)
        self._drop_dormant(client_order_id, self._now())
        self._save()
        return self.orders[client_order_id]

    def _drop_dormant(self, entry_cid: str, now: pd.Timestamp) -> None:
        """Cancel the protective legs still waiting for an entry that will not fill (any more)."""
        for other in list(self.orders.values()):
            if other.oco_group == entry_cid and (other.extra or {}).get("dormant") and not other.status.done:
                self.orders[other.client_order_id] = other.with_(status=OrderStatus.CANCELED, updated_at=now)
                self._dirty.add(other.client_order_id)

    def positions(self) -> dict[str, Position]:
        """Signed positions."""
        self.advance()
        return {s: Position(s, q, a) for s, (q, a) in self.pos.items() if q != 0}

    def account(self) -> Account:
        """Cash and equity at current prices."""
        self.advance()
        now = self._now()
        equity = self.cash
        for s, (q, _a) in self.pos.items():
            equity += q * self._quote(s, now)[0]
        return Account(cash=self.cash, equity=equity)

    # ------------------------------------------------------------------ bars: protective orders
    def advance(self, now: pd.Timestamp | None = None) -> None:
        """Process every bar event up to `now` (default: the clock): funding, protective orders and
        resting entries, in the backtest's order (SEMANTICS.md "Order of events inside bar i").

        Events of bar b: its open (time b: funding, the gap checks, then resting entries at the open)
        and its range (time b + bar: resting entries intrabar, then the intrabar stops), each part for
        every symbol in the feed's (column) order before the next part, as cash is shared. The open's
        funding and gap checks happen before a tick at the same time with ``next_open``; with ``close``
        after it. Resting entries always see an open after the tick at that time (its signal orders,
        which may cancel them, come first). Events before an order existed are never applied to it:
        the cursors move on even while nothing rests.
        """
        if self.feed is None:
            return
        now = pd.Timestamp(now) if now is not None else self._now()
        live: dict[str, list[Order]] = {}
        for o in self.orders.values():
            if o.type is not OrderType.MARKET and not o.status.done:
                live.setdefault(o.symbol, []).append(o)
        changed = False
        busy = [s for s in self.feed.symbols if live.get(s) or (self.costs.funding and self.pos.get(s))]
        if busy:
            changed = self._advance_symbols(busy, {s: live.get(s, []) for s in busy}, now)
        for symbol in self.feed.symbols:  # the cursors move on where nothing rests
            last = self._last_event(symbol, now)
            if symbol not in busy and last is not None:
                self.cursor[symbol] = last
            before = self._entry_event(symbol, now)
            if not any((o.extra or {}).get("entry") for o in live.get(symbol, [])) and before is not None:
                self.ecursor[symbol] = before
            if last is not None:
                changed |= self._settle_funding(symbol, int(last[0]))
        if changed or self._dirty:
            self._save()

    def _settle_funding(self, symbol: str, upto: int) -> bool:
        """A perpetual's funding settled at the opens of its bars after the last settled one, up to the
        bar opening at `upto` (ns), on the position held then: cash pays position x open x rate
        (SEMANTICS.md "Funding"). Before a symbol's first settlement nothing is owed (no position)."""
        if not self.costs.funding:
            return False
        feed = self.feed
        assert feed is not None
        seen = self.funded.get(symbol)
        if seen is not None and upto <= seen:
            return False
        q = self.pos.get(symbol, [0.0, 0.0])[0]
        if seen is not None and q != 0:
            _, cols = feed.bars_between(symbol, seen, upto)
            rates = cols.get("funding_rate")
            if rates is not None:
                for o_, r in zip(cols["open"], rates, strict=True):
                    if r != 0 and math.isfinite(r):
                        paid = q * float(o_) * float(r)
                        self.cash -= paid
                        self.funding_paid += paid
        self.funded[symbol] = upto
        return True

    def _last_event(self, symbol: str, now: pd.Timestamp) -> list[int] | None:
        """The latest bar event that has happened by `now` and whose bar is known."""
        feed = self.feed
        assert feed is not None
        ts = feed.times(symbol)
        t_now = now.value
        k = int(np.searchsorted(ts, t_now, side="right")) - 1
        if k < 0:
            return None
        t = int(ts[k])
        if t + feed.step <= t_now:
            return [t, 1]
        if self.fill is Fill.NEXT_OPEN or t < t_now:
            return [t, 0]
        return [int(ts[k - 1]), 1] if k > 0 else None

    def _entry_event(self, symbol: str, now: pd.Timestamp) -> list[int] | None:
        """The latest bar event strictly before the open at `now`: what resting entries may see."""
        feed = self.feed
        assert feed is not None
        ts = feed.times(symbol)
        k = int(np.searchsorted(ts, now.value, side="left")) - 1
        if k < 0:
            return None
        t = int(ts[k])
        return [t, 1] if t + feed.step <= now.value else [t, 0]

    def _advance_symbols(self, symbols: list[str], live: dict[str, list[Order]], now: pd.Timestamp) -> bool:
        """The bar events of `symbols` up to `now`, in time order, each part across the symbols."""
        feed = self.feed
        assert feed is not None
        step = feed.step
        plan: dict[str, _Cursors] = {}
        bars: dict[int, dict[str, tuple[int, dict[str, np.ndarray]]]] = {}
        for symbol in symbols:
            stop_at = self._last_event(symbol, now)
            if stop_at is None:
                continue
            stop_e = self._entry_event(symbol, now)
            entries = any((o.extra or {}).get("entry") for o in live[symbol])
            last = self.cursor.get(symbol)
            last_e = self.ecursor.get(symbol) if entries else None
            plan[symbol] = _Cursors(_ev(stop_at), _ev(stop_e) if entries else None, _ev(last), _ev(last_e))
            first = min((int(c[0]) for c in (last, last_e) if c is not None), default=None)
            after = -(2**62) if first is None else first - step  # the bar of the earliest last event again
            ts, cols = feed.bars_between(symbol, after, int(stop_at[0]))
            for i, t in enumerate(ts):
                bars.setdefault(int(t), {})[symbol] = (i, cols)
        changed = False
        for t in sorted(bars):
            here = [s for s in symbols if s in bars[t]]
            for kind in (0, 1):
                ev = (t, kind)
                p_due, e_due = [], []
                for s in here:
                    c = plan[s]
                    if c.stop is not None and ev <= c.stop and (c.last is None or ev > c.last):
                        p_due.append(s)
                    if c.stop_e is not None and ev <= c.stop_e and (c.last_e is None or ev > c.last_e):
                        e_due.append(s)
                if not (p_due or e_due):
                    continue
                fresh: set[str] = set()
                if kind == 0:  # funding at the open, then the gap checks, then resting entries at the open
                    for s in p_due:
                        self._settle_funding(s, t)
                    for s in p_due:
                        i, cols = bars[t][s]
                        self._bar_event(s, self._protective(s), 0, feed.bar_index(s, t), t, cols, i, now)
                    for s in e_due:
                        i, cols = bars[t][s]
                        self._resting_entries(s, 0, feed.bar_index(s, t), t, cols, i, now)
                else:  # resting entries in the range, then the intrabar stops, then one bar less to rest
                    for s in e_due:
                        i, cols = bars[t][s]
                        if self._resting_entries(s, 1, feed.bar_index(s, t), t, cols, i, now):
                            fresh.add(s)
                    for s in p_due:
                        i, cols = bars[t][s]
                        self._bar_event(s, self._protective(s), 1, feed.bar_index(s, t), t, cols, i, now,
                                        fresh=s in fresh)
                    for s in e_due:
                        self._count_bar(s, t, now)
                for s in p_due:
                    self.cursor[s] = [t, kind]
                    plan[s].last = ev
                for s in e_due:
                    self.ecursor[s] = [t, kind]
                    plan[s].last_e = ev
                changed = True
        return changed

    def _protective(self, symbol: str) -> list[Order]:
        """The symbol's live protective orders (not the resting entries, nor legs still waiting)."""
        return [o for o in self.orders.values() if o.symbol == symbol and o.type is not OrderType.MARKET
                and not o.status.done and not (o.extra or {}).get("entry")
                and not (o.extra or {}).get("dormant")]

    def _resting_entries(self, symbol: str, kind: int, k: int | None, t: int, cols: dict[str, np.ndarray],
                         i: int, now: pd.Timestamp) -> bool:
        """The symbol's resting entries at one bar event (SEMANTICS.md "Entry orders"): at the open those
        the open reaches fill there, intrabar those the range reaches fill at their level (`_count_bar`
        then counts the bar off). Returns whether an entry filled intrabar (a fresh position)."""
        fresh = False
        for o in [o for o in self.orders.values() if o.symbol == symbol and not o.status.done
                  and (o.extra or {}).get("entry")]:
            extra = dict(o.extra or {})
            if extra.get("filled_bar") == t:
                continue
            sign = 1.0 if o.side is Side.BUY else -1.0
            lim, stp = _level(o.limit_price), _level(o.stop_price)
            trig = extra.get("trig")
            limit_now = o.type is OrderType.LIMIT or trig is not None
            price, slipped = math.nan, False
            if kind == 0:
                op = float(cols["open"][i])
                if limit_now:
                    if sign * (op - lim) <= 0:
                        price = op
                elif o.type is OrderType.STOP and sign * (op - stp) >= 0:
                    price, slipped = op, True
                elif o.type is OrderType.STOP_LIMIT and sign * (op - stp) >= 0:
                    if sign * (op - lim) <= 0:
                        price = op
                    else:  # past its limit at the open: a limit from the next bar
                        extra["trig"] = t
            elif trig != t:
                hi, lo = float(cols["high"][i]), float(cols["low"][i])
                if limit_now:
                    gap = sign * ((lo if sign > 0 else hi) - lim)
                    if gap < 0 or (gap == 0 and self.costs.limit_fill == "touch"):
                        price = lim
                elif sign * ((hi if sign > 0 else lo) - stp) >= 0:
                    price, slipped = stp, o.type is OrderType.STOP
            if not math.isnan(price):
                qty = o.remaining
                if sign > 0:  # a buy spends at most the cash there is (the rest rests on)
                    fill = price * (1.0 + (self._slip(symbol, k) if slipped else 0.0))
                    affordable = max(self.cash, 0.0) / (fill * (1.0 + self.costs.fees))
                    if affordable < qty:
                        qty = self.lots.get(symbol, Lot()).round(affordable)
                qty = self._capped(symbol, qty, k)
                if qty > 0:
                    flat = self.pos.get(symbol, [0.0, 0.0])[0] == 0
                    self._execute(o.client_order_id, qty, price, k, reason="entry", now=now, bar_ns=t,
                                  slipped=slipped)
                    extra = dict(self.orders[o.client_order_id].extra or {})
                    extra["filled_bar"] = t
                    if o.type is OrderType.STOP_LIMIT and trig is None:
                        extra["trig"] = t
                    self._activate_legs(self.orders[o.client_order_id], now)
                    fresh |= kind == 1 and flat
                    o = self.orders[o.client_order_id]
                    if slipped and not o.status.done:  # a stop is a market order once triggered
                        o = o.with_(status=OrderStatus.CANCELED, updated_at=now)
            self.orders[o.client_order_id] = o.with_(extra=extra)
            self._dirty.add(o.client_order_id)
        return fresh

    def _count_bar(self, symbol: str, t: int, now: pd.Timestamp) -> None:
        """The bar is over for the symbol's entries still resting: one bar less to rest; expired at 0."""
        for o in [o for o in self.orders.values() if o.symbol == symbol and not o.status.done
                  and (o.extra or {}).get("entry")]:
            extra = {**(o.extra or {}), "bars": int((o.extra or {}).get("bars", 0)) + 1}
            o = o.with_(extra=extra)
            if extra["bars"] >= int(o.expire_bars or 1):
                o = o.with_(status=OrderStatus.EXPIRED, updated_at=now)
                if o.filled_qty == 0:
                    self._drop_dormant(o.client_order_id, now)
            self.orders[o.client_order_id] = o
            self._dirty.add(o.client_order_id)

    def _activate_legs(self, entry: Order, now: pd.Timestamp) -> None:
        """After a fill of `entry`: its protective legs cover what it has filled, and those waiting
        for it take their levels from its fill price and go live."""
        e = entry.avg_fill_price
        if e is None:
            return
        long = entry.side is Side.BUY
        for o in list(self.orders.values()):
            if o.oco_group != entry.client_order_id or o.status.done:
                continue
            changes: dict[str, Any] = {"qty": float(entry.filled_qty), "updated_at": now}
            dormant = bool((o.extra or {}).get("dormant"))
            if dormant:
                changes["extra"] = {**(o.extra or {}), "dormant": False}
            off = o.offset
            if o.type is OrderType.STOP and off is not None:
                changes["stop_price"] = e * (1.0 - off) if long else e * (1.0 + off)
            elif o.type is OrderType.LIMIT and off is not None:
                changes["limit_price"] = e * (1.0 + off) if long else e * (1.0 - off)
            elif o.type is OrderType.TRAILING_STOP and dormant:  # its peak starts at the first fill
                self.refs[o.client_order_id] = float(e)
            self.orders[o.client_order_id] = o.with_(**changes)
            self._dirty.add(o.client_order_id)

    def _bar_event(
        self,
        symbol: str,
        live: list[Order],
        kind: int,
        k: int | None,
        t: int,
        cols: dict[str, np.ndarray],
        i: int,
        now: pd.Timestamp,
        fresh: bool = False,
    ) -> None:
        """Protective orders at one bar event: the gap at the open, or the range (the stop first). A
        position entered in this bar's range (`fresh`) meets only its stop and moves no trailing
        reference (SEMANTICS.md "Entry orders")."""
        p = self.pos.get(symbol, [0.0, 0.0])[0]
        if p == 0 or not live:
            return
        orders = [self.orders[o.client_order_id] for o in live]
        stop = next((o for o in orders if o.type is OrderType.STOP), None)
        trail = next((o for o in orders if o.type is OrderType.TRAILING_STOP), None)
        limit = next((o for o in orders if o.type is OrderType.LIMIT), None)
        fixed = _level(stop.stop_price) if stop is not None else math.nan
        if trail is not None:
            ref = self.refs[trail.client_order_id]
            tsl = _level(trail.trail_percent)
            trail_lvl = ref * (1.0 - tsl) if p > 0 else ref * (1.0 + tsl)
        else:
            trail_lvl = math.nan
        # the binding protective level, as the kernel's _stop_level
        if p > 0:
            use_fixed = math.isnan(trail_lvl) or (not math.isnan(fixed) and fixed >= trail_lvl)
        else:
            use_fixed = math.isnan(trail_lvl) or (not math.isnan(fixed) and fixed <= trail_lvl)
        lvl, binding = (fixed, stop) if use_fixed else (trail_lvl, trail)
        tpl = _level(limit.limit_price) if limit is not None else math.nan
        exit_px, hit = math.nan, None
        if kind == 0:
            o_ = float(cols["open"][i])
            if not math.isnan(lvl) and ((p > 0 and o_ <= lvl) or (p < 0 and o_ >= lvl)):
                exit_px, hit = o_, binding
            elif not math.isnan(tpl) and ((p > 0 and o_ >= tpl) or (p < 0 and o_ <= tpl)):
                exit_px, hit = o_, limit
        elif fresh:
            hi, lo = float(cols["high"][i]), float(cols["low"][i])
            if not math.isnan(lvl) and ((p > 0 and lo <= lvl) or (p < 0 and hi >= lvl)):
                exit_px, hit = lvl, binding
        else:
            hi, lo = float(cols["high"][i]), float(cols["low"][i])
            if p > 0:
                if not math.isnan(lvl) and lo <= lvl:
                    exit_px, hit = lvl, binding
                elif not math.isnan(tpl) and hi >= tpl:
                    exit_px, hit = tpl, limit
            else:
                if not math.isnan(lvl) and hi >= lvl:
                    exit_px, hit = lvl, binding
                elif not math.isnan(tpl) and lo <= tpl:
                    exit_px, hit = tpl, limit
            if hit is None and trail is not None:
                ref = self.refs[trail.client_order_id]
                self.refs[trail.client_order_id] = max(ref, hi) if p > 0 else min(ref, lo)
        if hit is not None:
            qty = min(hit.remaining, abs(p))
            self._execute(
                hit.client_order_id, qty, exit_px, k, reason=STOP_REASON[hit.type], now=now, bar_ns=t
            )

    # ------------------------------------------------------------------ introspection for tests
    def created(self) -> int:
        """How many distinct orders this broker has accepted."""
        return int(self.stats["created"])

    def duplicate_submissions(self) -> int:
        """How many submissions reused a known client order id (the runner should make none)."""
        return int(self.stats["duplicates"])
