"""Binance spot's trading API on the loopback harness, speaking the real wire format.

`BinanceTradingServer` extends the market-data fake (`BinanceServer`: ping, time, exchangeInfo,
klines) with the signed endpoints the unmodified ccxt client calls for spot trading:

- ``POST /api/v3/order`` (``newOrderRespType=FULL``: the order with its ``fills``), ``GET`` and
  ``DELETE /api/v3/order`` (by ``orderId`` or ``origClientOrderId``), ``GET /api/v3/openOrders``,
  ``GET /api/v3/account`` (balances), ``GET /api/v3/myTrades``;
- public ``GET /api/v3/ticker/24hr`` and ``/api/v3/ticker/price``.

Signed requests are checked like Binance does: ``X-MBX-APIKEY`` header (401 ``-2015`` for a
wrong key, ``-2014`` for none), ``timestamp`` within ``recvWindow`` (``-1021``) and ``signature``
= HMAC-SHA256 of the query string plus the body, signature left out (``-1022``). Orders are checked
against the symbol's filters (LOT_SIZE, MARKET_LOT_SIZE, PRICE_FILTER, NOTIONAL, TRAILING_DELTA:
``-1013 Filter failure: <name>``), balances (``-2010 Account has insufficient balance for
requested action.``), stops that would trigger at once (``-2010``) and client ids still in use by
an open order (``-2010 Duplicate order sent.``; Binance accepts an id again once its order is
done, set ``unique_ids="all"`` to refuse any reuse). Rejected orders are not stored, as on Binance.

Knobs: `set_price` (resting limit, stop, stop-limit and trailing-stop orders fill as a continuous
price crosses them, at their level; `gap=True` jumps),
`balances` (USDT 100000, every other asset 0), `rest_fill` (the share of a resting order one crossing
fills; None, the default: all), `fill_mode` for market orders (``full``,
``partial``: half now and the rest rests, ``none``: the order rests), `complete_fills()`,
`fee_rate` (charged in the asset received), and `fault(kind, times)` on order submissions:
``429`` (Binance's -1003 body and a Retry-After), ``500`` (-1001), ``503`` (an HTML page), all
served without acting on the order; ``timeout`` (the order is placed, the reply comes
`late_seconds` later), ``lost`` (the order is placed, the connection drops without a reply) and
``500-after`` (the order is placed, the reply is a 500). `created` counts the orders placed.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, Decimal
from typing import Any
from urllib.parse import parse_qsl

from .binance import (
    DEFAULT_MARKETS,
    INTERNAL_ERROR,
    INVALID_SYMBOL,
    TOO_MANY_REQUESTS,
    BinanceServer,
    Market,
    _symbol_info,
)
from .loopback import Request, Response

API_KEY = "wbFAKEbinanceSPOTkey0123456789abcdefABCDEF0123456789abcdefABCDEF01"
SECRET = "wbFAKEbinanceSPOTsecret-9f8e7d6c5b4a3210-never-in-a-log-0123456789ab"
START_BALANCES = {"USDT": Decimal(100_000)}
ORDER_PATH = "/api/v3/order"
FAULTS = ("429", "500", "503", "timeout", "lost", "500-after")
OPEN = ("NEW", "PARTIALLY_FILLED")
D0 = Decimal(0)

INSUFFICIENT_BALANCE = {"code": -2010, "msg": "Account has insufficient balance for requested action."}
DUPLICATE_ORDER = {"code": -2010, "msg": "Duplicate order sent."}
WOULD_TRIGGER = {"code": -2010, "msg": "Stop price would trigger immediately."}
ORDER_DOES_NOT_EXIST = {"code": -2013, "msg": "Order does not exist."}
UNKNOWN_ORDER = {"code": -2011, "msg": "Unknown order sent."}
BAD_SIGNATURE = {"code": -1022, "msg": "Signature for this request is not valid."}
BAD_API_KEY = {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
API_KEY_FORMAT = {"code": -2014, "msg": "API-key format invalid."}
OUTSIDE_RECV_WINDOW = {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}
INVALID_ORDER_TYPE = {"code": -1116, "msg": "Invalid orderType."}
SERVICE_UNAVAILABLE_HTML = (
    "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    "<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n</body>\r\n</html>\r\n"
)


def _filter_failure(name: str) -> dict[str, Any]:
    return {"code": -1013, "msg": f"Filter failure: {name}"}


def _mandatory(name: str) -> dict[str, Any]:
    return {"code": -1102,
            "msg": f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."}


def _f8(x: Decimal) -> str:
    return f"{x:.8f}"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class FakeOrder:
    """One spot order as the fake's matching engine holds it."""

    order_id: int
    client_id: str
    symbol: str
    side: str
    type: str
    qty: Decimal
    price: Decimal = D0
    stop_price: Decimal = D0
    trailing_delta: int | None = None
    time_in_force: str | None = None
    status: str = "NEW"
    executed: Decimal = D0
    quote: Decimal = D0
    time: int = 0
    update_time: int = 0
    working: bool = True
    lock_price: Decimal = D0  # buys lock qty x this much quote
    water: Decimal | None = None  # a trailing stop's high (sell) or low (buy) water mark
    fills: list[dict[str, Any]] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.status in OPEN

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.executed

    def _common(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": -1,
            "clientOrderId": self.client_id, "price": _f8(self.price), "origQty": _f8(self.qty),
            "executedQty": _f8(self.executed), "origQuoteOrderQty": "0.00000000",
            "cummulativeQuoteQty": _f8(self.quote), "status": self.status,
            "timeInForce": self.time_in_force or "GTC", "type": self.type, "side": self.side,
        }
        if self.type != "MARKET" and self.type != "LIMIT":
            out["stopPrice"] = _f8(self.stop_price)
        if self.trailing_delta is not None:
            out["trailingDelta"] = self.trailing_delta
        return out

    def query_view(self) -> dict[str, Any]:
        """The GET /api/v3/order (and openOrders) shape."""
        return {**self._common(), "stopPrice": _f8(self.stop_price), "icebergQty": "0.00000000",
                "time": self.time, "updateTime": self.update_time, "isWorking": self.working,
                "workingTime": self.time if self.working else -1,
                "selfTradePreventionMode": "EXPIRE_MAKER"}

    def full_view(self, fills: list[dict[str, Any]]) -> dict[str, Any]:
        """The POST /api/v3/order answer with newOrderRespType=FULL."""
        return {**self._common(), "transactTime": self.time,
                "workingTime": self.time if self.working else -1,
                "fills": [{"price": t["price"], "qty": t["qty"], "commission": t["commission"],
                           "commissionAsset": t["commissionAsset"], "tradeId": t["id"]}
                          for t in fills],
                "selfTradePreventionMode": "EXPIRE_MAKER"}


@dataclass(frozen=True)
class _Filters:
    min_qty: Decimal
    max_qty: Decimal
    step: Decimal
    market_max_qty: Decimal
    tick: Decimal
    min_notional: Decimal
    min_trailing: int
    max_trailing: int


def _filters(m: Market) -> _Filters:
    by_type = {f["filterType"]: f for f in _symbol_info(m)["filters"]}
    lot, market_lot = by_type["LOT_SIZE"], by_type["MARKET_LOT_SIZE"]
    trailing = by_type["TRAILING_DELTA"]
    return _Filters(
        min_qty=Decimal(lot["minQty"]), max_qty=Decimal(lot["maxQty"]), step=Decimal(lot["stepSize"]),
        market_max_qty=Decimal(market_lot["maxQty"]), tick=Decimal(by_type["PRICE_FILTER"]["tickSize"]),
        min_notional=Decimal(by_type["NOTIONAL"]["minNotional"]),
        min_trailing=int(trailing["minTrailingBelowDelta"]),
        max_trailing=int(trailing["maxTrailingBelowDelta"]),
    )


class _Reject(Exception):
    def __init__(self, body: dict[str, Any], status: int = 400) -> None:
        super().__init__(body["msg"])
        self.response = Response(status, body)


def _answer(handler: Callable[[Any, Request], Response]) -> Callable[[Any, Request], Response]:
    """Run a route under the order book's lock; a `_Reject` becomes Binance's error reply."""
    def run(self: Any, req: Request) -> Response:
        try:
            with self._book:
                return handler(self, req)
        except _Reject as rej:
            return rej.response
    return run


class BinanceTradingServer(BinanceServer):
    """Binance spot market data and trading on 127.0.0.1; `url` is the base URL for ccxt."""

    def __init__(self, markets: tuple[Market, ...] = DEFAULT_MARKETS, *, api_key: str = API_KEY,
                 secret: str = SECRET, late_seconds: float = 1.0, **kw: Any) -> None:
        super().__init__(markets, **kw)
        self.routes.update({
            ("POST", ORDER_PATH): self._post_order,
            ("GET", ORDER_PATH): self._get_order,
            ("DELETE", ORDER_PATH): self._delete_order,
            ("GET", "/api/v3/openOrders"): self._open_orders,
            ("GET", "/api/v3/account"): self._account,
            ("GET", "/api/v3/myTrades"): self._my_trades,
            ("GET", "/api/v3/ticker/24hr"): self._ticker_24hr,
            ("GET", "/api/v3/ticker/price"): self._ticker_price,
        })
        self._keys = (api_key, secret)
        self.api_key, self.secret = self._keys
        self.late_seconds = late_seconds
        self.filters = {sid: _filters(m) for sid, m in self.markets.items()}
        self._book = threading.RLock()
        self._reset_book()

    def _reset_book(self) -> None:
        with self._book:
            self.prices: dict[str, Decimal] = {sid: Decimal(str(m.price)) for sid, m in self.markets.items()}
            assets = {a for m in self.markets.values() for a in (m.base, m.quote)}
            self.balances: dict[str, list[Decimal]] = {
                a: [START_BALANCES.get(a, D0), D0] for a in sorted(assets)}  # [free, locked]
            self.orders: list[FakeOrder] = []
            self.trades: list[dict[str, Any]] = []
            self.fill_mode = "full"
            self.rest_fill: Decimal | None = None  # share of a resting order one crossing fills (None: all)
            self.fee_rate = D0
            self.unique_ids = "open"
            self._ids = itertools.count(1_000_001)
            self._trade_ids = itertools.count(5_000_001)

    # ------------------------------------------------------------------ test helpers
    def reset(self) -> None:
        """Forget requests, faults, orders and trades; prices, balances and keys back to the start."""
        super().reset()
        self.api_key, self.secret = self._keys
        self._reset_book()

    @property
    def created(self) -> int:
        """How many orders the fake has placed (rejected ones are not stored)."""
        with self._book:
            return len(self.orders)

    def order_posts(self) -> list[Request]:
        """Every POST /api/v3/order received (faults included)."""
        return [r for r in self.hits(ORDER_PATH) if r.method == "POST"]

    def order(self, client_id: str) -> FakeOrder | None:
        with self._book:
            return next((o for o in reversed(self.orders) if o.client_id == client_id), None)

    def set_balance(self, asset: str, free: float | str | Decimal) -> None:
        with self._book:
            self.balances.setdefault(asset, [D0, D0])[0] = Decimal(str(free))

    def fault(self, kind: str, times: int = 1) -> None:
        """Serve `kind` (see FAULTS) for the next `times` order submissions; times=0 clears them."""
        if times == 0:
            with self._lock:
                self.faults = [f for f in self.faults if f.path_prefix != ORDER_PATH]
            return
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}: use one of {FAULTS}")
        if kind == "429":
            self.fail_next(ORDER_PATH, Response(429, TOO_MANY_REQUESTS, {"Retry-After": "1"}), times,
                           "POST")
        elif kind == "500":
            self.fail_next(ORDER_PATH, Response(500, INTERNAL_ERROR), times, "POST")
        elif kind == "503":
            self.fail_next(ORDER_PATH, Response(503, SERVICE_UNAVAILABLE_HTML, {"Content-Type": "text/html"}),
                           times, "POST")
        elif kind == "timeout":
            late = self.late_seconds
            self.fail_next(ORDER_PATH, lambda r: replace(r, delay=late), times, "POST", after=True)
        elif kind == "lost":
            self.fail_next(ORDER_PATH, Response(drop=True), times, "POST", after=True)
        else:
            self.fail_next(ORDER_PATH, Response(500, INTERNAL_ERROR), times, "POST", after=True)

    def set_price(self, symbol: str, price: float | str | Decimal, *, gap: bool = False) -> None:
        """Move a symbol's price (``BTC/USDT`` or ``BTCUSDT``); resting orders that cross it fill.

        The move is continuous, through every level on the way: a crossed limit fills at its price, a
        triggered stop's market order at its stop (a STOP_LOSS_LIMIT then works as a limit from
        there). With ``gap=True`` the market jumps (a halt, an auction) and what it crossed fills at the
        new price.
        """
        sid = symbol.replace("/", "")
        with self._book:
            prev = self.prices[sid]
            self.prices[sid] = Decimal(str(price))
            self._match(sid, None if gap else prev)

    def complete_fills(self) -> None:
        """Fill what remains of every open market order at the current price."""
        with self._book:
            for o in self.orders:
                if o.open and o.type == "MARKET":
                    self._fill(o, o.remaining, self.prices[o.symbol])

    # ------------------------------------------------------------------ matching engine
    def _match(self, sid: str, prev: Decimal | None) -> None:
        """Fill what the move from `prev` to the price crossed (None: a jump, fills at the price)."""
        px = self.prices[sid]
        for o in self.orders:
            if o.symbol != sid or not o.open or o.type == "MARKET":
                continue
            start = px if prev is None else prev
            buy = o.side == "BUY"
            if not o.working:  # STOP_LOSS(_LIMIT), waiting for its trigger
                if o.trailing_delta is not None:  # STOP_LOSS with trailingDelta: trails from placement
                    assert o.water is not None
                    band = Decimal(o.trailing_delta) / Decimal(10_000)
                    o.water = min(o.water, start, px) if buy else max(o.water, start, px)
                    stop = o.water * (1 + band) if buy else o.water * (1 - band)
                else:
                    stop = o.stop_price
                if not (px >= stop if buy else px <= stop):
                    continue
                o.working = True
                start = px if prev is None else stop
                if o.type == "STOP_LOSS":  # a market order once triggered
                    self._fill(o, o.remaining, start)
                    continue
            # LIMIT, or a triggered STOP_LOSS_LIMIT working as one
            if (min(start, px) <= o.price) if buy else (max(start, px) >= o.price):
                marketable = start <= o.price if buy else start >= o.price
                self._fill(o, self._rest_qty(o), start if marketable else o.price)

    def _rest_qty(self, o: FakeOrder) -> Decimal:
        """What one crossing fills of a resting order: all of it, or `rest_fill` of its quantity (down to
        the lot step; at least one step, at most what remains)."""
        if self.rest_fill is None:
            return o.remaining
        step = self.filters[o.symbol].step
        part = max((o.qty * self.rest_fill / step).to_integral_value(ROUND_DOWN) * step, step)
        return min(part, o.remaining)

    def _fill(self, o: FakeOrder, qty: Decimal, px: Decimal) -> dict[str, Any] | None:
        if qty <= 0:
            return None
        m = self.markets[o.symbol]
        base, quote = self.balances[m.base], self.balances[m.quote]
        cost = qty * px
        if o.side == "BUY":
            commission, asset = qty * self.fee_rate, m.base
            quote[1] -= qty * o.lock_price
            quote[0] += qty * o.lock_price - cost
            base[0] += qty - commission
        else:
            commission, asset = cost * self.fee_rate, m.quote
            base[1] -= qty
            quote[0] += cost - commission
        now = _now_ms()
        o.executed += qty
        o.quote += cost
        o.update_time = now
        o.status = "FILLED" if o.executed >= o.qty else "PARTIALLY_FILLED"
        trade = {"symbol": o.symbol, "id": next(self._trade_ids), "orderId": o.order_id, "orderListId": -1,
                 "price": _f8(px), "qty": _f8(qty), "quoteQty": _f8(cost), "commission": _f8(commission),
                 "commissionAsset": asset, "time": now, "isBuyer": o.side == "BUY", "isMaker": False,
                 "isBestMatch": True}
        self.trades.append(trade)
        o.fills.append(trade)
        return trade

    def _release(self, o: FakeOrder) -> None:
        """Unlock what an order that is done no longer needs."""
        m = self.markets[o.symbol]
        if o.side == "BUY":
            amount, bal = o.remaining * o.lock_price, self.balances[m.quote]
        else:
            amount, bal = o.remaining, self.balances[m.base]
        bal[1] -= amount
        bal[0] += amount

    # ------------------------------------------------------------------ signing
    def _signed(self, req: Request) -> dict[str, str]:
        """The request's parameters, after Binance's API-key, timestamp and signature checks."""
        body = req.body.decode()
        params = dict(req.query)
        params.update(dict(parse_qsl(body, keep_blank_values=True)))
        key = req.headers.get("x-mbx-apikey")
        if not key:
            raise _Reject(API_KEY_FORMAT, 401)
        if key != self.api_key:
            raise _Reject(BAD_API_KEY, 401)
        signature = params.pop("signature", None)
        if not signature:
            raise _Reject(_mandatory("signature"))
        payload = _unsigned(req.raw_query) + _unsigned(body)
        expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise _Reject(BAD_SIGNATURE)
        try:
            stamp = int(params["timestamp"])
            window = int(params.get("recvWindow", 5000))
        except (KeyError, ValueError):
            raise _Reject(_mandatory("timestamp")) from None
        now = _now_ms()
        if stamp >= now + 1000 or now - stamp > window:
            raise _Reject(OUTSIDE_RECV_WINDOW)
        return params

    def _symbol(self, params: dict[str, str], required: bool = True) -> str | None:
        sid = params.get("symbol")
        if not sid:
            if required:
                raise _Reject(_mandatory("symbol"))
            return None
        if sid not in self.markets or sid in self.delisted:
            raise _Reject(INVALID_SYMBOL)
        return sid

    def _find(self, params: dict[str, str], sid: str) -> FakeOrder | None:
        if "orderId" in params:
            oid = int(params["orderId"])
            return next((o for o in self.orders if o.symbol == sid and o.order_id == oid), None)
        cid = params.get("origClientOrderId")
        if not cid:
            raise _Reject({"code": -1102, "msg": "Param 'origClientOrderId' or 'orderId' must be sent, "
                                                 "but both were empty/null!"})
        return next((o for o in reversed(self.orders) if o.symbol == sid and o.client_id == cid), None)

    # ------------------------------------------------------------------ trading routes
    @_answer
    def _post_order(self, req: Request) -> Response:
        p = self._signed(req)
        sid = self._symbol(p)
        assert sid is not None
        m, f = self.markets[sid], self.filters[sid]
        side, kind = p.get("side", ""), p.get("type", "")
        if side not in ("BUY", "SELL"):
            raise _Reject(_mandatory("side"))
        if kind not in _symbol_info(m)["orderTypes"]:
            raise _Reject(INVALID_ORDER_TYPE)
        if kind not in ("MARKET", "LIMIT", "STOP_LOSS", "STOP_LOSS_LIMIT"):
            raise _Reject({"code": -1013, "msg": f"The fake does not match {kind} orders."})
        if "quantity" not in p:
            raise _Reject(_mandatory("quantity"))
        qty = Decimal(p["quantity"])
        px = self.prices[sid]
        price = Decimal(p.get("price", "0"))
        stop = Decimal(p.get("stopPrice", "0"))
        trailing = int(p["trailingDelta"]) if "trailingDelta" in p else None
        if kind in ("LIMIT", "STOP_LOSS_LIMIT"):
            if "timeInForce" not in p:
                raise _Reject(_mandatory("timeInForce"))
            if price <= 0:
                raise _Reject(_mandatory("price"))
        if kind.startswith("STOP_LOSS") and stop <= 0 and trailing is None:
            raise _Reject({"code": -1102, "msg": "Param 'stopPrice' or 'trailingDelta' must be sent, "
                                                 "but both were empty/null!"})
        # filters, in Binance's order
        if any(x > 0 and x % f.tick != 0 for x in (price, stop)):
            raise _Reject(_filter_failure("PRICE_FILTER"))
        if qty < f.min_qty or qty > f.max_qty or (qty - f.min_qty) % f.step != 0:
            raise _Reject(_filter_failure("LOT_SIZE"))
        if kind == "MARKET" and f.market_max_qty > 0 and qty > f.market_max_qty:
            raise _Reject(_filter_failure("MARKET_LOT_SIZE"))
        if trailing is not None and not f.min_trailing <= trailing <= f.max_trailing:
            raise _Reject(_filter_failure("TRAILING_DELTA"))
        ref = price if kind in ("LIMIT", "STOP_LOSS_LIMIT") else stop if stop > 0 else px
        if qty * ref < f.min_notional:
            raise _Reject(_filter_failure("NOTIONAL"))
        cid = p.get("newClientOrderId") or f"fake{next(self._ids)}"
        if any(o.client_id == cid and (o.open or self.unique_ids == "all") for o in self.orders):
            raise _Reject(DUPLICATE_ORDER)
        if kind.startswith("STOP_LOSS") and trailing is None and (
                (side == "SELL" and stop >= px) or (side == "BUY" and stop <= px)):
            raise _Reject(WOULD_TRIGGER)
        if side == "BUY":
            lock_asset, lock_amount = m.quote, qty * ref
        else:
            lock_asset, lock_amount = m.base, qty
        bal = self.balances[lock_asset]
        if bal[0] < lock_amount:
            raise _Reject(INSUFFICIENT_BALANCE)
        bal[0] -= lock_amount
        bal[1] += lock_amount
        now = _now_ms()
        o = FakeOrder(order_id=next(self._ids), client_id=cid, symbol=sid, side=side, type=kind, qty=qty,
                      price=price, stop_price=stop, trailing_delta=trailing,
                      time_in_force=p.get("timeInForce"), time=now, update_time=now,
                      working=not kind.startswith("STOP_LOSS"), lock_price=ref if side == "BUY" else D0,
                      water=px if trailing is not None else None)
        self.orders.append(o)
        fills = []
        if kind == "MARKET":
            part = {"full": o.qty, "partial": (o.qty / 2 / f.step).to_integral_value(ROUND_DOWN) * f.step,
                    "none": D0}[self.fill_mode]
            fills.append(self._fill(o, part, px))
        elif kind == "LIMIT" and ((side == "BUY" and px <= price) or (side == "SELL" and px >= price)):
            fills.append(self._fill(o, o.qty, px))  # crosses the book: fills at once as a taker
        if o.status == "FILLED":
            self._release(o)
        return Response(200, o.full_view([t for t in fills if t]),
                        {"x-mbx-order-count-10s": "1", "x-mbx-order-count-1d": str(len(self.orders)),
                         **self._weight(1)})

    @_answer
    def _get_order(self, req: Request) -> Response:
        p = self._signed(req)
        sid = self._symbol(p)
        assert sid is not None
        o = self._find(p, sid)
        if o is None:
            raise _Reject(ORDER_DOES_NOT_EXIST)
        return Response(200, o.query_view(), self._weight(4))

    @_answer
    def _delete_order(self, req: Request) -> Response:
        p = self._signed(req)
        sid = self._symbol(p)
        assert sid is not None
        o = self._find(p, sid)
        if o is None or not o.open:
            raise _Reject(UNKNOWN_ORDER)
        self._release(o)
        o.status = "CANCELED"
        o.update_time = _now_ms()
        view = o._common()
        view.update(origClientOrderId=o.client_id, clientOrderId=p.get("newClientOrderId")
                    or f"cancel{next(self._ids)}", transactTime=o.update_time,
                    selfTradePreventionMode="EXPIRE_MAKER")
        return Response(200, view, self._weight(1))

    @_answer
    def _open_orders(self, req: Request) -> Response:
        p = self._signed(req)
        sid = self._symbol(p, required=False)
        return Response(200, [o.query_view() for o in self.orders
                              if o.open and (sid is None or o.symbol == sid)],
                        self._weight(6 if sid else 80))

    @_answer
    def _account(self, req: Request) -> Response:
        self._signed(req)
        rate = _f8(self.fee_rate)
        return Response(200, {
            "makerCommission": 0, "takerCommission": 0, "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": rate, "taker": rate, "buyer": "0.00000000",
                                "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": _now_ms(),
            "accountType": "SPOT",
            "balances": [{"asset": a, "free": _f8(free), "locked": _f8(locked)}
                         for a, (free, locked) in self.balances.items()],
            "permissions": ["SPOT"], "uid": 354937868,
        }, self._weight(20))

    @_answer
    def _my_trades(self, req: Request) -> Response:
        p = self._signed(req)
        sid = self._symbol(p)
        rows = [t for t in self.trades if t["symbol"] == sid
                and ("orderId" not in p or t["orderId"] == int(p["orderId"]))]
        limit = min(int(p.get("limit", 500)), 1000)
        return Response(200, rows[-limit:], self._weight(5 if "orderId" in p else 20))

    # ------------------------------------------------------------------ public tickers
    def _ticker_row(self, sid: str) -> dict[str, Any]:
        px = self.prices[sid]
        now = _now_ms()
        d = f"{px:.8f}"
        return {"symbol": sid, "priceChange": "0.00000000", "priceChangePercent": "0.000",
                "weightedAvgPrice": d, "prevClosePrice": d, "lastPrice": d, "lastQty": "0.01000000",
                "bidPrice": d, "bidQty": "1.00000000", "askPrice": d, "askQty": "1.00000000",
                "openPrice": d, "highPrice": d, "lowPrice": d, "volume": "100.00000000",
                "quoteVolume": _f8(px * 100), "openTime": now - 86_400_000, "closeTime": now,
                "firstId": 1, "lastId": 100, "count": 100}

    @_answer
    def _ticker_24hr(self, req: Request) -> Response:
        sid = self._symbol(req.query, required=False)
        if sid is None:
            return Response(200, [self._ticker_row(s) for s in self.markets], self._weight(80))
        return Response(200, self._ticker_row(sid), self._weight(2))

    @_answer
    def _ticker_price(self, req: Request) -> Response:
        sid = self._symbol(req.query, required=False)
        rows = [{"symbol": s, "price": f"{self.prices[s]:.8f}"} for s in ([sid] if sid else self.markets)]
        return Response(200, rows[0] if sid else rows, self._weight(2 if sid else 4))


def _unsigned(text: str) -> str:
    """A query string or form body without its `signature` parameter, otherwise byte for byte."""
    return "&".join(part for part in text.split("&") if part and not part.startswith("signature="))


__all__ = ["API_KEY", "FAULTS", "SECRET", "BinanceTradingServer", "FakeOrder"]
