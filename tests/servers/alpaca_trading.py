"""A fake of Alpaca's paper trading API on the loopback harness, plus the latest-trade data endpoints.

It speaks the real wire format (field names as in alpaca-py's `alpaca/trading/models.py`; amounts
are decimal strings, errors are ``{"code": ..., "message": ...}``):

- ``POST /v2/orders``; ``GET /v2/orders`` (``status=open|closed|all``, ``symbols``, ``limit``,
  ``direction``, ``nested``); ``GET /v2/orders/{id}``; ``GET /v2/orders:by_client_order_id``;
  ``DELETE /v2/orders/{id}`` (204; 422 ``order is not cancelable``; 404 unknown) and
  ``DELETE /v2/orders`` (207 with one status per order);
- ``GET /v2/positions``, ``GET /v2/positions/{symbol}`` (crypto positions are spelt ``BTCUSD``,
  as Alpaca does), ``GET /v2/account``, ``GET /v2/clock``;
- ``GET /v2/stocks/trades/latest`` and ``GET /v1beta3/crypto/us/latest/trades`` (the data API's
  latest trades, served on the same port).

Every trading endpoint needs the ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` headers (401
otherwise). Refusals use Alpaca's codes: insufficient buying power (403, 40310000), duplicate
``client_order_id`` (422, 40010001 ``client_order_id must be unique``), bad quantities and unknown
symbols (422, 40010001), selling more than the position holds (403, 40310000 ``insufficient
balance for BTC (requested: x, available: y)``, crypto). A cash account (buying power = cash);
stocks trade without commission and may be shorted in whole shares, crypto may not. Crypto fees
are charged as Alpaca does: out of the asset the trade credits (a buy's coin, a sell's USD) at
`crypto_fees` (maker, taker; default tier 1: 0.15 %, 0.25 %) on 9 decimal places; the order reply
carries no fee and `filled_qty` stays the gross quantity, the position holds the net one, and
each charge is posted as a ``CFEE`` activity (``GET /v2/account/activities/CFEE``, no order id).

Knobs: `set_price`, `cash`, `fill_mode` (``full``/``partial``/``none`` for the next market
orders), `complete_fills()`, `market_open` (clock), `timeout_delay`. Market orders are accepted
(the POST reply says ``pending_new``) and then filled at once per the fill mode; stops, limits,
stop-limits and trailing stops rest until `set_price` crosses them. `set_price` moves the price as a
continuous market does, through every level on the way: a resting order it crosses fills at its own
level (a limit at its limit, a stop's market order at its stop, a triggered stop-limit at its trigger
when its limit allows, else later as a limit); with ``gap=True`` the market jumps (an opening auction,
a halt) and what it crossed fills at the new price, as does an order already crossed when placed.
`fault(kind, times)` serves transport faults
on order submission: ``429`` (with Alpaca's rate-limit headers), ``500``, ``503``, ``504``,
``timeout`` (the order is created, the reply comes after `timeout_delay`), ``lost`` (the order is
created, the connection drops without a reply), ``429-after`` / ``504-after`` (the order is
created, the reply is a 429/504, so the client's retry meets its own order).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import pandas as pd

from .alpaca import API_KEY, SECRET_KEY, iso
from .loopback import LoopbackServer, Request, Response

ORDERS = "/v2/orders"
STOCK_LATEST_TRADES = "/v2/stocks/trades/latest"
CRYPTO_LATEST_TRADES = "/v1beta3/crypto/us/latest/trades"
ACCOUNT_ID = "d6b5bb4b-5a2a-4c43-9f6c-0f6c5e1b2a10"
FAULTS = ("429", "500", "503", "504", "timeout", "lost", "429-after", "504-after")
_QUOTES = ("USDT", "USDC", "USD", "BTC")
_LIVE = ("new", "partially_filled", "pending_new", "accepted")
_NINE = Decimal("1e-9")

RATE_LIMITED = {"code": 42910000, "message": "rate limit exceeded"}
INTERNAL_ERROR = {"code": 50010000, "message": "internal server error occurred"}
UNAVAILABLE_HTML = ("<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n"
                    "<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n"
                    "</body>\r\n</html>\r\n")
GATEWAY_TIMEOUT_HTML = ("<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
                        "<center><h1>504 Gateway Time-out</h1></center>\r\n</body>\r\n</html>\r\n")


def _error(status: int, code: int, message: str, **extra: Any) -> Response:
    return Response(status, {**extra, "code": code, "message": message})


def _num(value: Decimal | None) -> str | None:
    """Alpaca's spelling of an amount: a plain decimal string ("0.5", "187.25", "10")."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _dec(value: Any) -> Decimal | None:
    """A JSON number or string as a Decimal (None when absent; ValueError when not a number)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(value)
    try:
        out = Decimal(str(value))
    except ArithmeticError:
        raise ValueError(value) from None
    if not out.is_finite():
        raise ValueError(value)
    return out


def position_symbol(symbol: str) -> str:
    """How Alpaca spells a symbol in positions: crypto pairs without the slash (``BTCUSD``)."""
    return symbol.replace("/", "")


@dataclass
class _Order:
    id: str
    client_order_id: str
    symbol: str
    crypto: bool
    side: str
    type: str
    time_in_force: str
    qty: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    trail_percent: Decimal | None
    trail_price: Decimal | None
    extended_hours: bool
    seq: int
    created_at: pd.Timestamp
    status: str = "pending_new"
    filled_qty: Decimal = Decimal(0)
    filled_value: Decimal = Decimal(0)
    hwm: Decimal | None = None
    triggered: bool = False  # a stop-limit whose stop has traded: it works as a limit order
    updated_at: pd.Timestamp | None = None
    filled_at: pd.Timestamp | None = None
    canceled_at: pd.Timestamp | None = None
    fee_charged: Decimal = Decimal(0)  # in the credited asset, so far
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.filled_qty

    @property
    def open(self) -> bool:
        return self.status in _LIVE

    @property
    def avg(self) -> Decimal | None:
        return (self.filled_value / self.filled_qty).quantize(Decimal("1e-6")) if self.filled_qty else None

    def wire(self) -> dict[str, Any]:
        avg = self.avg
        stamp = lambda t: None if t is None else iso_us(t)  # noqa: E731
        return {
            "id": self.id, "client_order_id": self.client_order_id,
            "created_at": iso_us(self.created_at), "updated_at": iso_us(self.updated_at or self.created_at),
            "submitted_at": iso_us(self.created_at), "filled_at": stamp(self.filled_at),
            "expired_at": None, "canceled_at": stamp(self.canceled_at), "failed_at": None,
            "replaced_at": None, "replaced_by": None, "replaces": None,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "asset:" + self.symbol)),
            "symbol": self.symbol, "asset_class": "crypto" if self.crypto else "us_equity",
            "notional": None, "qty": _num(self.qty), "filled_qty": _num(self.filled_qty),
            "filled_avg_price": _num(avg), "order_class": "simple", "order_type": self.type,
            "type": self.type, "side": self.side,
            "position_intent": f"{self.side}_to_{'open' if self.side == 'buy' else 'close'}",
            "time_in_force": self.time_in_force, "limit_price": _num(self.limit_price),
            "stop_price": _num(self.stop_price), "status": self.status,
            "extended_hours": self.extended_hours, "legs": None,
            "trail_percent": _num(self.trail_percent), "trail_price": _num(self.trail_price),
            "hwm": _num(self.hwm), "subtag": None, "source": None, "expires_at": None,
        }


def iso_us(ts: pd.Timestamp) -> str:
    """RFC 3339 with microseconds and a Z, as Alpaca stamps orders."""
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AlpacaTradingFake:
    """Alpaca's paper trading API on 127.0.0.1 (use as a context manager)."""

    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        secret_key: str = SECRET_KEY,
        cash: float = 100_000.0,
        prices: dict[str, float] | None = None,
    ) -> None:
        self.api_key = api_key
        self.secret_key = secret_key
        self.default_cash = cash
        self.default_prices = dict(prices or {"AAPL": 200.0, "MSFT": 400.0, "SPY": 500.0,
                                              "BTC/USD": 60_000.0, "ETH/USD": 3_000.0})
        self._lock = threading.RLock()
        self.server = LoopbackServer({
            ("POST", ORDERS): self._post_order,
            ("GET", ORDERS): self._list_orders,
            ("DELETE", ORDERS): self._cancel_all,
            ("GET", "/v2/orders:by_client_order_id"): self._by_client_id,
            ("GET", "/v2/orders/{id}"): self._get_order,
            ("DELETE", "/v2/orders/{id}"): self._cancel,
            ("GET", "/v2/positions"): self._positions,
            ("GET", "/v2/positions/{symbol}"): self._position,
            ("GET", "/v2/positions/{base}/{quote}"): self._position,
            ("GET", "/v2/account"): self._account,
            ("GET", "/v2/clock"): self._clock,
            ("GET", "/v2/account/activities/{activity_type}"): self._activities,
            ("GET", "/v2/assets/{symbol}"): self._asset,
            ("GET", "/v2/assets/{base}/{quote}"): self._asset,
            ("GET", STOCK_LATEST_TRADES): self._stock_trades,
            ("GET", CRYPTO_LATEST_TRADES): self._crypto_trades,
        })
        self.reset()

    def reset(self) -> None:
        """Back to a fresh account: default cash and prices, no orders, positions, faults or log."""
        with self._lock:
            self.cash = Decimal(str(self.default_cash))
            self.prices = {s: Decimal(str(p)) for s, p in self.default_prices.items()}
            self.fill_mode = "full"
            self.crypto_fees = (Decimal("0.0015"), Decimal("0.0025"))  # maker, taker
            self.activities: list[dict[str, Any]] = []
            self.market_open = True
            self.timeout_delay = 1.0
            self.orders: dict[str, _Order] = {}
            self.by_client: dict[str, str] = {}
            self.positions: dict[str, tuple[Decimal, Decimal]] = {}  # symbol -> (signed qty, avg)
            # per-symbol overrides of the asset record (e.g. {"AAPL": {"fractionable": False}})
            self.assets: dict[str, dict[str, Any]] = {}
            self._seq = 0
            self.server.requests.clear()
            self.server.faults.clear()

    # ------------------------------------------------------------------ harness
    def __enter__(self) -> AlpacaTradingFake:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    @property
    def url(self) -> str:
        return self.server.url

    def requests(self, method: str | None = None, path: str | None = None) -> list[Request]:
        """Requests received so far, optionally only one method and/or path."""
        return [r for r in list(self.server.requests)
                if (method is None or r.method == method) and (path is None or r.path == path)]

    def created(self) -> int:
        """How many distinct orders the fake has created."""
        with self._lock:
            return len(self.orders)

    def set_price(self, symbol: str, price: float, *, gap: bool = False) -> None:
        """The price market orders fill at from now on; resting orders it crosses fill (module doc)."""
        with self._lock:
            prev = self.prices.get(symbol)
            self.prices[symbol] = Decimal(str(price))
            for order in sorted(self.orders.values(), key=lambda o: o.seq):
                if order.open and order.symbol == symbol and order.type != "market":
                    self._work(order, None if gap else prev)

    def complete_fills(self) -> None:
        """Fill every resting or partly filled market order at the current price."""
        with self._lock:
            for order in sorted(self.orders.values(), key=lambda o: o.seq):
                if order.open and order.type == "market":
                    self._fill(order, order.remaining, self.prices[order.symbol])

    def fault(self, kind: str, times: int = 1) -> bool:
        """Serve `kind` (see FAULTS) on the next `times` order submissions; times=0 clears them."""
        if times == 0:
            with self.server._lock:
                self.server.faults.clear()
            return True
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}: use one of {', '.join(FAULTS)}")
        reset = str(int(time.time()) + 1)
        limited = Response(429, RATE_LIMITED, {"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0",
                                               "X-RateLimit-Reset": reset})
        html = {"Content-Type": "text/html"}
        response: Any = {
            "429": limited,
            "500": Response(500, INTERNAL_ERROR),
            "503": Response(503, UNAVAILABLE_HTML, html),
            "504": Response(504, GATEWAY_TIMEOUT_HTML, html),
            "timeout": lambda reply: replace(reply, delay=self.timeout_delay),
            "lost": Response(drop=True),
            "429-after": limited,
            "504-after": Response(504, GATEWAY_TIMEOUT_HTML, html),
        }[kind]
        after = kind in ("timeout", "lost") or kind.endswith("-after")
        self.server.fail_next(ORDERS, response, times, method="POST", after=after)
        return True

    # ------------------------------------------------------------------ engine
    def _work(self, order: _Order, prev: Decimal | None = None) -> None:
        """Fill `order` as far as the move from `prev` to the current price allows: at the level it
        crossed on the way, or at the current price when there is no way (`prev` None: a jump, or
        placement); the fill mode applies to market orders."""
        price = self.prices[order.symbol]
        start = price if prev is None else prev
        buy = order.side == "buy"
        if order.type == "market":
            qty = {"full": order.remaining, "partial": (order.qty / 2).quantize(_NINE),
                   "none": Decimal(0)}[self.fill_mode]
            if qty > 0:
                self._fill(order, min(qty, order.remaining), price)
            return
        if order.type == "trailing_stop":
            hwm = order.hwm if order.hwm is not None else start
            hwm = min(hwm, start, price) if buy else max(hwm, start, price)
            order.hwm = hwm
            offset = (hwm * order.trail_percent / 100 if order.trail_percent is not None
                      else order.trail_price or Decimal(0))
            order.stop_price = hwm + offset if buy else hwm - offset
        stop = order.stop_price
        if order.type in ("stop", "trailing_stop", "stop_limit") and not order.triggered and stop is not None:
            if not ((price >= stop) if buy else (price <= stop)):
                return
            at = price if prev is None or ((start >= stop) if buy else (start <= stop)) else stop
            if order.type != "stop_limit":
                self._fill(order, order.remaining, at)
                return
            order.triggered, start = True, at  # a triggered stop limit works as a limit order from here
        if order.type in ("limit", "stop_limit") and order.limit_price is not None:
            limit = order.limit_price
            if (min(start, price) <= limit) if buy else (max(start, price) >= limit):
                marketable = (start <= limit) if buy else (start >= limit)
                self._fill(order, order.remaining, start if marketable else limit)

    def _fill(self, order: _Order, qty: Decimal, price: Decimal) -> None:
        if qty <= 0:
            return
        now = pd.Timestamp.now(tz="UTC")
        order.filled_qty += qty
        order.filled_value += qty * price
        order.status = "filled" if order.filled_qty >= order.qty else "partially_filled"
        order.updated_at = now
        if order.status == "filled":
            order.filled_at = now
        signed = qty if order.side == "buy" else -qty
        self.cash -= signed * price
        fee = self._charge(order)
        if order.side == "buy":
            signed -= fee  # the coin received, net of the fee
        else:
            self.cash -= fee
        old, avg = self.positions.get(order.symbol, (Decimal(0), Decimal(0)))
        new = old + signed
        if new == 0:
            self.positions.pop(order.symbol, None)
            return
        if old == 0 or (old > 0) != (new > 0):
            avg = price  # opened, or flipped through zero
        elif abs(new) > abs(old):
            avg = (avg * abs(old) + price * qty) / abs(new)
        self.positions[order.symbol] = (new, avg)

    def _charge(self, order: _Order) -> Decimal:
        """The crypto fee of this fill: the rate of the credited amount so far, less what was charged."""
        if not order.crypto:
            return Decimal(0)
        rate = self.crypto_fees[0 if order.type == "limit" else 1]
        credited = order.filled_qty if order.side == "buy" else order.filled_qty * (order.avg or Decimal(0))
        total = (credited * rate).quantize(_NINE)
        fee, order.fee_charged = total - order.fee_charged, total
        if fee:
            quote = order.symbol.split("/")[1]
            self.activities.append({
                "id": f"{pd.Timestamp.now(tz='UTC'):%Y%m%d}000000000::{uuid.uuid4()}",
                "activity_type": "CFEE", "date": f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%d}",
                "net_amount": "0" if order.side == "buy" else _num(-fee),
                "description": f"Coin Pair Transaction Fee ({'Non USD' if order.side == 'buy' else 'USD'})",
                "symbol": position_symbol(order.symbol) if order.side == "buy" else quote + "USD",
                "qty": _num(-fee), "price": _num(self.prices[order.symbol]), "status": "executed",
            })
        return fee

    def _activities(self, req: Request) -> Response:
        if not self._authorized(req):
            return _error(401, 40110000, "request is not authorized")
        with self._lock:
            kind = req.params["activity_type"]
            return Response(200, [a for a in self.activities if a["activity_type"] == kind])

    def _reserved_cash(self) -> Decimal:
        return sum((o.remaining * (o.limit_price or self.prices[o.symbol])
                    for o in self.orders.values() if o.open and o.side == "buy"), Decimal(0))

    def _held_for_sells(self, symbol: str) -> Decimal:
        return sum((o.remaining for o in self.orders.values()
                    if o.open and o.side == "sell" and o.symbol == symbol), Decimal(0))

    def _symbol(self, raw: str) -> str | None:
        """The fake's spelling of an order symbol (Alpaca accepts BTCUSD for BTC/USD), or None."""
        if raw in self.prices:
            return raw
        for quote in _QUOTES:
            if raw.endswith(quote) and f"{raw[:-len(quote)]}/{quote}" in self.prices:
                return f"{raw[:-len(quote)]}/{quote}"
        return None

    # ------------------------------------------------------------------ endpoints
    def _authorized(self, req: Request) -> bool:
        return (req.headers.get("apca-api-key-id") == self.api_key
                and req.headers.get("apca-api-secret-key") == self.secret_key)

    def _post_order(self, req: Request) -> Response:
        if not self._authorized(req):
            return _error(401, 40110000, "request is not authorized")
        try:
            body = req.json()
        except ValueError:
            return _error(400, 40010000, "request body format is invalid")
        if not isinstance(body, dict):
            return _error(400, 40010000, "request body format is invalid")
        with self._lock:
            return self._place(body)

    def _place(self, body: dict[str, Any]) -> Response:
        raw_symbol = str(body.get("symbol") or "")
        symbol = self._symbol(raw_symbol)
        if symbol is None:
            return _error(422, 40010001, f'asset "{raw_symbol}" not found')
        crypto = "/" in symbol
        cid = str(body.get("client_order_id") or uuid.uuid4())
        if len(cid) > 128:
            return _error(422, 40010001, "client_order_id must be no more than 128 characters")
        if cid in self.by_client:
            return _error(422, 40010001, "client_order_id must be unique")
        side, kind, tif = body.get("side"), body.get("type"), body.get("time_in_force")
        if side not in ("buy", "sell"):
            return _error(422, 40010001, "invalid side")
        if kind not in ("market", "limit", "stop", "stop_limit", "trailing_stop"):
            return _error(422, 40010001, "invalid order type")
        if body.get("notional") is not None:
            return _error(422, 40010001, "notional orders are not supported by this fake")
        try:
            qty = _dec(body.get("qty"))
            limit, stop = _dec(body.get("limit_price")), _dec(body.get("stop_price"))
            trail_pct, trail_px = _dec(body.get("trail_percent")), _dec(body.get("trail_price"))
        except ValueError:
            return _error(422, 40010001, "invalid qty or price")
        if qty is None or qty <= 0:
            return _error(422, 40010001, "qty must be > 0")
        if qty != qty.quantize(_NINE):
            return _error(422, 40010001, "qty must have no more than 9 decimal places")
        fractional = qty != qty.to_integral_value()
        if crypto:
            if tif not in ("gtc", "ioc"):
                return _error(422, 40010001, f"invalid crypto time_in_force: {tif}")
            if kind in ("stop", "trailing_stop"):
                return _error(422, 40010001, f"invalid crypto order type: {kind}")
        else:
            if tif not in ("day", "gtc", "opg", "cls", "ioc", "fok"):
                return _error(422, 40010001, f"invalid time_in_force: {tif}")
            if fractional and tif != "day":
                return _error(422, 40010001, "fractional orders must be DAY orders")
            if fractional and kind == "trailing_stop":
                return _error(422, 40010001, "fractional orders are not supported for trailing_stop")
        if kind in ("limit", "stop_limit") and (limit is None or limit <= 0):
            return _error(422, 40010001, "limit_price is required")
        if kind in ("stop", "stop_limit") and (stop is None or stop <= 0):
            return _error(422, 40010001, "stop_price is required")
        if kind == "trailing_stop" and (trail_pct is None) == (trail_px is None):
            return _error(422, 40010001, "trailing_stop orders need exactly one of trail_percent and "
                                         "trail_price")
        price = self.prices[symbol]
        if side == "buy":
            cost = qty * (limit if limit is not None else price)
            power = self.cash - self._reserved_cash()
            if cost > power:
                return _error(403, 40310000, "insufficient buying power",
                              buying_power=_num(max(power, Decimal(0))), cost_basis=_num(cost))
        else:
            held = self.positions.get(symbol, (Decimal(0), Decimal(0)))[0]
            available = max(held, Decimal(0)) - self._held_for_sells(symbol)
            if crypto and qty > available:
                base = symbol.split("/")[0]
                return _error(403, 40310000, f"insufficient balance for {base} (requested: {_num(qty)}, "
                                             f"available: {_num(max(available, Decimal(0)))})")
            if not crypto and held > 0 and qty > available:
                return _error(403, 40310000, f"insufficient qty available for order (requested: "
                                             f"{_num(qty)}, available: {_num(max(available, Decimal(0)))})")
            if not crypto and held <= 0 and fractional:
                return _error(403, 40310000, "fractional orders cannot be sold short")
        self._seq += 1
        order = _Order(
            id=str(uuid.UUID(int=(0x5A1FACE << 64) + self._seq)), client_order_id=cid,
            symbol=symbol, crypto=crypto, side=side, type=kind, time_in_force=tif, qty=qty,
            limit_price=limit, stop_price=stop, trail_percent=trail_pct, trail_price=trail_px,
            extended_hours=bool(body.get("extended_hours")), seq=self._seq,
            created_at=pd.Timestamp.now(tz="UTC"))
        self.orders[order.id] = order
        self.by_client[cid] = order.id
        accepted = order.wire()  # the reply shows the order as accepted, before any fill
        order.status = "new"
        self._work(order)
        return Response(200, accepted)

    def _find(self, order_id: str) -> _Order | Response:
        try:
            uuid.UUID(order_id)
        except ValueError:
            return _error(422, 40010001, "order_id is missing")
        order = self.orders.get(order_id)
        return order if order is not None else _error(404, 40410000, "order not found")

    def _get_order(self, req: Request) -> Response:
        if not self._authorized(req):
            return _error(401, 40110000, "request is not authorized")
        with self._lock:
            found = self._find(req.params["id"])
            return found if isinstance(found, Response) else Response(200, found.wire())

    def _by_client_id(self, req: Request) -> Response:
        if not self._authorized(req):
            return _error(401, 40110000, "request is not authorized")
        cid = req.query.get("client_order_id")
        if not cid:
            return _error(422, 40010001, "client_order_id is missing")
        with self._lock:
            order_id = self.by_client.get(cid)
            if order_id is None:
                return _error(404, 40410000, "order not found")
            return Response(200, self.orders[order_id].wire())

    def _list_orders(self, req: Request) -> Response:
        if not self._authorized(req):
            return _error(401, 40110000, "request is not authorized")
        q = req.query
        status = q.get("status", "open")
        if status not in ("open", "closed", "all"):
            return _error(422, 40010001, f"invalid status: {status}")
        try:
            limit = int(q.get("limit") or 50)
        except ValueError:
            return _error(422, 40010001, "invalid limit")
        if not 1 <= limit <= 500:
            return _error(422, 40010001, "limit must be between 1 and 500")
        direction = q.get("direction", "desc")
        if direction not in ("asc", "desc"):
            return _error(422, 40010001, f"invalid direction: {direction}")
        with self._lock:
            wanted = None
            if q.get("symbols"):
                wanted = set()
                for raw in q["symbols"].split(","):
                    sym = self._symbol(raw.strip())
                    if sym is not None:
                        wanted.add(sym)
            rows = [o for o in self.orders.values()
                    if (status == "all" or o.open == (status == "open"))
                    and (wanted is None or o.symbol in wanted)]
            rows.sort(key=lambda o: o.seq, reverse=direction == "desc")
            return Response(200, [o.wire() for o in rows[:limit]])

    def _cancel(self, req: Request) -> Response:
        if not self._authorized(req):
            return _error(401, 40110000, "request is not authorized")
        with self._lock:
            found = self._find(req.params["id"])
            if isinstance(found, Response):
                return found
            if not found.open:
                return _error(422, 42210000, "order is not cancelable")
            found.status = "canceled"
            found.canceled_at = found.updated_at = pd.Timestamp.now(tz="UTC")
            return Response(204, b"")

    def _cancel_all(self, req: Request) -> Response:
        if not self._authorized(req):
            return _error(401, 40110000, "request is not authorized")
        with self._lock:
            out = []
            for order in sorted(self.orders.values(), key=lambda o: o.seq):
                if order.open:
                    order.status = "canceled"
                    order.canceled_at = order.updated_at = pd.Timestamp.now(tz="UTC")
                    out.append({"id": order.id, "status": 200, "body": order.wire()})
            return Response(207, out)

    def _position_wire(self, symbol: str) -> dict[str, Any]:
        qty, avg = self.positions[symbol]
        price = self.prices[symbol]
        crypto = "/" in symbol
        value = qty * price
        basis = qty * avg
        return {
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "asset:" + symbol)),
            "symbol": position_symbol(symbol), "exchange": "CRYPTO" if crypto else "NASDAQ",
            "asset_class": "crypto" if crypto else "us_equity", "asset_marginable": not crypto,
            "qty": _num(qty), "qty_available": _num(qty - self._held_for_sells(symbol)) if qty > 0
            else _num(qty), "avg_entry_price": _num(avg), "side": "long" if qty > 0 else "short",
            "market_value": _num(value), "cost_basis": _num(basis),
            "unrealized_pl": _num(value - basis),
            "unrealized_plpc": _num((value - basis) / abs(basis)) if basis else "0",
            "unrealized_intraday_pl": _num(value - basis),
            "unrealized_intraday_plpc": _num((value - basis) / abs(basis)) if basis else "0",
            "current_price": _num(price), "lastday_price": _num(price), "change_today": "0",
        }

    def _positions(self, req: Request) -> Response:
        if not self._authorized(req):
            return _error(401, 40110000, "request is not authorized")
        with self._lock:
            return Response(200, [self._position_wire(s) for s in sorted(self.positions)])

    def _position(self, req: Request) -> Response:
        if not self._authorized(req):
            return _error(401, 40110000, "request is not authorized")
        raw = req.params.get("symbol") or f"{req.params['base']}/{req.params['quote']}"
        with self._lock:
            symbol = self._symbol(raw)
            if symbol is None or symbol not in self.positions:
                return _error(404, 40410000, "position does not exist")
            return Response(200, self._position_wire(symbol))

    def _asset(self, req: Request) -> Response:
        """``GET /v2/assets/{symbol}``: Alpaca's asset record (crypto ones carry min_order_size,
        min_trade_increment and price_increment as strings)."""
        if not self._authorized(req):
            return _error(401, 40110000, "request is not authorized")
        raw = req.params.get("symbol") or f"{req.params['base']}/{req.params['quote']}"
        with self._lock:
            symbol = self._symbol(raw)
            if symbol is None:
                return _error(404, 40410000, f"asset not found for {raw}")
            crypto = "/" in symbol
            wire: dict[str, Any] = {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)),
                "class": "crypto" if crypto else "us_equity",
                "exchange": "CRYPTO" if crypto else "NASDAQ", "symbol": symbol, "name": symbol,
                "status": "active", "tradable": True, "marginable": not crypto, "shortable": not crypto,
                "easy_to_borrow": not crypto, "fractionable": True, "attributes": [],
            }
            if crypto:
                wire.update(min_order_size="0.000001", min_trade_increment="0.000000001",
                            price_increment="0.01")
            else:
                wire["maintenance_margin_requirement"] = 30
            wire.update(self.assets.get(symbol, {}))
            return Response(200, wire)

    def _account(self, req: Request) -> Response:
        if not self._authorized(req):
            return _error(401, 40110000, "request is not authorized")
        with self._lock:
            long = sum((q * self.prices[s] for s, (q, _) in self.positions.items() if q > 0), Decimal(0))
            short = sum((q * self.prices[s] for s, (q, _) in self.positions.items() if q < 0), Decimal(0))
            equity = self.cash + long + short
            power = max(self.cash - self._reserved_cash(), Decimal(0))
            return Response(200, {
                "id": ACCOUNT_ID, "account_number": "PA3FAKE0TEST", "status": "ACTIVE",
                "crypto_status": "ACTIVE", "currency": "USD", "buying_power": _num(power),
                "regt_buying_power": _num(power), "daytrading_buying_power": "0",
                "effective_buying_power": _num(power), "non_marginable_buying_power": _num(power),
                "options_buying_power": _num(power), "bod_dtbp": "0", "cash": _num(self.cash),
                "accrued_fees": "0", "pending_transfer_in": "0", "portfolio_value": _num(equity),
                "pattern_day_trader": False, "trading_blocked": False, "transfers_blocked": False,
                "account_blocked": False, "created_at": "2024-01-02T15:04:05.123456Z",
                "trade_suspended_by_user": False, "multiplier": "1", "shorting_enabled": True,
                "equity": _num(equity), "last_equity": _num(equity),
                "long_market_value": _num(long), "short_market_value": _num(short),
                "position_market_value": _num(long - short), "initial_margin": "0",
                "maintenance_margin": "0", "last_maintenance_margin": "0", "sma": "0",
                "daytrade_count": 0, "balance_asof": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d"),
                "crypto_tier": 1, "options_approved_level": 0, "options_trading_level": 0,
                "intraday_adjustments": "0", "pending_reg_taf_fees": "0",
            })

    def _clock(self, req: Request) -> Response:
        if not self._authorized(req):
            return _error(401, 40110000, "request is not authorized")
        now = pd.Timestamp.now(tz="America/New_York")
        day = now.normalize()
        return Response(200, {
            "timestamp": now.isoformat(), "is_open": self.market_open,
            "next_open": (day + pd.Timedelta(days=1, hours=9, minutes=30)).isoformat(),
            "next_close": (day + pd.Timedelta(hours=16)).isoformat(),
        })

    # ------------------------------------------------------------------ market data
    def _latest(self, req: Request, crypto: bool) -> Response:
        symbols = [s for s in req.query.get("symbols", "").split(",") if s]
        if not symbols:
            return _error(400, 40010001, "missing symbols")
        trades = {}
        stamp = iso_us(pd.Timestamp.now(tz="UTC"))
        with self._lock:
            for i, sym in enumerate(symbols):
                if ("/" in sym) != crypto:
                    return _error(400, 40010001, f"invalid symbol: {sym}")
                if sym in self.prices:
                    price = float(self.prices[sym])
                    trades[sym] = ({"t": stamp, "p": price, "s": 0.0123, "i": 9_000_000 + i, "tks": "B"}
                                   if crypto else {"t": stamp, "x": "V", "p": price, "s": 100,
                                                   "c": ["@"], "i": 52983525029461 + i, "z": "C"})
        return Response(200, {"trades": trades})

    def _stock_trades(self, req: Request) -> Response:
        if not self._authorized(req):
            return _error(401, 40110000, "request is not authorized")
        feed = req.query.get("feed", "sip")
        if feed not in ("iex", "sip", "delayed_sip", "otc", "boats", "overnight"):
            return _error(400, 40010001, f"invalid feed: {feed}")
        return self._latest(req, crypto=False)

    def _crypto_trades(self, req: Request) -> Response:
        key, secret = req.headers.get("apca-api-key-id"), req.headers.get("apca-api-secret-key")
        if (key or secret) and not self._authorized(req):
            return _error(401, 40110000, "request is not authorized")
        return self._latest(req, crypto=True)


__all__ = ["CRYPTO_LATEST_TRADES", "FAULTS", "ORDERS", "STOCK_LATEST_TRADES", "AlpacaTradingFake",
           "iso", "position_symbol"]
