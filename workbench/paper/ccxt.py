"""Paper trading on an exchange's sandbox through ccxt (`CcxtBroker`): Binance spot testnet by default.

The unmodified ccxt client does the wire work (signing, error mapping); this module adds what the
runner's safety rules need on top (see `workbench.paper.broker`):

- **One order per client order id.** Binance refuses a ``newClientOrderId`` only while an order
  holding it is still open, so a filled market order's id could be used again: `submit` looks the
  id up before sending anything, and resolves a "Duplicate order sent." answer by looking it up.
- **Unknown outcomes are looked up, never guessed.** After a timeout, a dropped connection or a 5xx
  the order may exist: the broker waits until the request's ``recvWindow`` has passed (after that
  the exchange no longer executes it), looks the id up, and resends only when the exchange says
  there is no such order. When even the lookups fail it raises `BrokerUnavailable` naming the id.
- **Refusals are errors.** Insufficient balance, filter failures (LOT_SIZE, NOTIONAL...), an
  unknown symbol raise `OrderRejected` with the exchange's own message; spot cannot short, so a
  sell larger than the holding is refused before any order is sent.
- **Resting entries** (SEMANTICS.md "Entry orders"): a limit is a GTC limit order, a stop a
  STOP_LOSS (a market order once its trigger trades), a stop-limit a STOP_LOSS_LIMIT. The exchange
  counts no bars: the runner cancels one once its time in force has passed, and places its
  protective legs once it has filled. Binance refuses a stop whose trigger has already traded
  ("would trigger immediately"); the runner journals the refusal (the backtest would fill it at the
  open), so strategies whose stops sit at the market are better traded through the sim broker.

Settings (environment or ``.env``): ``WORKBENCH_CCXT_API_KEY`` and ``WORKBENCH_CCXT_SECRET`` (the
sandbox's keys, e.g. from testnet.binance.vision; ``<EXCHANGE>_API_KEY`` / ``<EXCHANGE>_SECRET``
such as ``BINANCE_API_KEY`` are read when those are unset) and ``WORKBENCH_CCXT_BASE_URL`` (points
every endpoint at another host, e.g. a local fake). Keys are handed to ccxt and nowhere else: they
never appear in logs (ccxt's own debug lines are redacted), exceptions or ``repr``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace
from decimal import Decimal
from typing import Any, TypeVar

import ccxt
import pandas as pd

from workbench.config import setting
from workbench.data.sources.ccxt import BASE_URL_SETTING, _market_options, rebase_urls
from workbench.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    CredentialsError,
    OrderRejected,
    TemporaryError,
    did_you_mean,
)
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
from workbench.retry import MAX_WAIT_SECONDS, RetryPolicy, retry_after

log = logging.getLogger(__name__)

API_KEY_SETTING = "WORKBENCH_CCXT_API_KEY"
SECRET_SETTING = "WORKBENCH_CCXT_SECRET"
_REMEMBERED_ORDERS = 10_000  # client order ids whose symbol and request the broker keeps in memory
_T = TypeVar("_T")

_STATUS = {"closed": OrderStatus.FILLED, "canceled": OrderStatus.CANCELED,
           "rejected": OrderStatus.REJECTED, "expired": OrderStatus.EXPIRED}


class CcxtBroker(Broker):
    """A ccxt exchange's sandbox (spot) as a `Broker`.

    >>> broker = CcxtBroker("binance", symbols=["BTC/USDT"])   # doctest: +SKIP
    >>> order = OrderRequest(client_order_id=cid, symbol="BTC/USDT", side="buy", qty=0.001)  # doctest: +SKIP
    >>> broker.submit(order)                                    # doctest: +SKIP

    `symbols` are the markets the runner trades: `positions` and `account` value their base
    assets, and `get_order`/`cancel` search them for a client order id this process has not
    submitted (after a restart). `base_url` (default: the WORKBENCH_CCXT_BASE_URL setting)
    replaces the sandbox's hosts. `timeout` (seconds) bounds each HTTP request; transient failures
    are retried `retries` times, waiting `retry_wait` seconds doubled per attempt (longer when the
    exchange sends Retry-After); `recv_window` (seconds) is how long the exchange may still
    execute a signed request after it was sent, waited out before an unknown outcome is looked up.
    `sleep` waits between attempts (tests pass a recorder).
    """

    name = "ccxt"
    resting_entries = True  # limit, stop and stop-limit entries rest there (the runner expires them)

    def __init__(
        self,
        exchange: str = "binance",
        *,
        symbols: Iterable[str] = (),
        base_url: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        retry_wait: float = 0.5,
        recv_window: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        exchange_id = exchange.strip().lower()
        if exchange_id not in ccxt.exchanges:
            hint = did_you_mean(exchange_id, ccxt.exchanges)
            raise ConfigError(f"unknown ccxt exchange {exchange!r}{hint}: use an id from ccxt.exchanges, "
                              "e.g. binance")
        if not (timeout > 0 and retries >= 0 and retry_wait >= 0 and recv_window > 0):
            raise ConfigError(f"bad CcxtBroker options (timeout={timeout}, retries={retries}, retry_wait="
                              f"{retry_wait}, recv_window={recv_window}): use timeout > 0, retries >= 0, "
                              "retry_wait >= 0, recv_window > 0 (seconds)")
        self.symbols = tuple(dict.fromkeys(s.strip() for s in symbols))
        bad = [s for s in self.symbols if s.count("/") != 1]
        if bad:
            raise ConfigError(f"symbols {bad} are not written BASE/QUOTE: use e.g. 'BTC/USDT'")
        quotes = sorted({s.split("/")[1] for s in self.symbols})
        if len(quotes) > 1:
            raise ConfigError(f"symbols {list(self.symbols)} are quoted in {quotes}: one broker values its "
                              "account in one currency; use one quote currency (e.g. all .../USDT)")
        self.currency = quotes[0] if quotes else "USDT"
        self.exchange_id = exchange_id
        self.name = f"ccxt:{exchange_id}"
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.retry_wait = float(retry_wait)
        self.recv_window = float(recv_window)
        self._retry = RetryPolicy(retries=self.retries, wait=self.retry_wait, max_wait=MAX_WAIT_SECONDS,
                                  sleep=sleep, logger=log)
        key, secret = _credentials(exchange_id)
        self._secrets = (key, secret)
        self.exchange: ccxt.Exchange = getattr(ccxt, exchange_id)({
            "apiKey": key, "secret": secret, "enableRateLimit": True, "timeout": int(self.timeout * 1000),
        })
        self.exchange.logger = _RedactingLogger(self._secrets)
        self.exchange.options.update(_market_options(self.exchange.options))
        if isinstance(self.exchange.options.get("fetchOpenOrders"), dict):  # one call for all symbols
            self.exchange.options["fetchOpenOrders"] = {**self.exchange.options["fetchOpenOrders"],
                                                        "warnWithoutSymbol": False}
        if "recvWindow" in self.exchange.options:
            self.exchange.options["recvWindow"] = int(self.recv_window * 1000)
        try:
            self.exchange.set_sandbox_mode(True)
        except ccxt.NotSupported:
            raise ConfigError(f"ccxt has no sandbox for {exchange_id}: paper trading needs an exchange "
                              "with a test network (e.g. binance)") from None
        self.base_url = base_url or setting(BASE_URL_SETTING)
        if self.base_url:
            self.exchange.urls["api"] = rebase_urls(self.exchange.urls["api"], self.base_url)
            log.info("%s sandbox: REST endpoints redirected to %s", exchange_id, self.base_url)
        self._markets: dict[str, Any] | None = None
        # client order id -> (symbol, the request when this process submitted it)
        self._known: OrderedDict[str, tuple[str, OrderRequest | None]] = OrderedDict()
        self._fees: dict[str, tuple[float, str | None, dict[str, float]]] = {}  # of finished orders

    def __repr__(self) -> str:
        where = f", base_url={self.base_url!r}" if self.base_url else ""
        return f"CcxtBroker({self.exchange_id!r}, sandbox=True{where}, symbols={list(self.symbols)!r})"

    def close(self) -> None:
        session = getattr(self.exchange, "session", None)
        if session is not None:
            session.close()

    # ------------------------------------------------------------------ orders
    def submit(self, request: OrderRequest) -> Order:
        """Place `request` once: an id the exchange already holds returns that order (see module doc)."""
        cid, symbol = request.client_order_id, request.symbol
        market = self._market(symbol, for_order=cid)
        self._remember(request)
        existing = self._lookup(cid, symbol, "checking it was not placed before")
        if existing is not None:
            log.info("%s: order %s already exists (%s), not sent again", self.name, cid,
                     existing.status.value)
            return existing
        args = self._create_args(request, market)
        if request.side is Side.SELL:
            self._refuse_short(request, market)
        what = f"{request.side.value} {request.qty:g} {symbol}"
        failed: list[TemporaryError] = []

        def attempt(n: int) -> Order:
            # every retry starts with a lookup: the failed send may have placed the order
            if failed:
                last = failed[-1]
                cause = last.__cause__ or last
                how = f"{type(cause).__name__} ({_reason(cause, self._secrets, 120)})"
                found = self._lookup(cid, symbol, f"after {type(last.__cause__).__name__}")
                if found is not None:
                    log.info("%s: order %s was placed despite %s", self.name, cid,
                             type(last.__cause__).__name__)
                    return found
                if n > self.retries + 1:
                    raise BrokerUnavailable(
                        f"{self.name}: order {cid} ({what}) failed {n - 1} times, last with {how}; the "
                        "exchange does not show the order now, but its outcome is unknown: look the client "
                        "order id up (get_order) before submitting it again")
                log.warning("%s: order %s does not exist; sending it again (%d/%d)", self.name, cid, n - 1,
                            self.retries)
            self.exchange.last_response_headers = None  # so a stale Retry-After is never read
            sent = time.monotonic()
            try:
                raw = self.exchange.create_order(*args)
            except ccxt.AuthenticationError as exc:
                raise self._credentials_error(f"placing order {cid}", exc) from None
            except ccxt.OperationFailed as exc:  # 429, 5xx, timeouts, dropped connections
                refused = isinstance(exc, ccxt.DDoSProtection)  # rate limits refuse before acting
                # an unknown outcome is looked up only once the exchange can no longer execute it
                window = 0.0 if refused else sent + self.recv_window - time.monotonic()
                outcome = "refused" if refused else "unknown, looked up before any resend"
                failed.append(self._temporary(f"order {cid}; outcome {outcome}", exc, not_before=window))
                raise failed[-1] from exc
            except ccxt.BaseError as exc:
                if _is_duplicate(exc):
                    found = self._lookup(cid, symbol, "after a duplicate-order answer")
                    if found is not None:
                        log.info("%s: order %s already existed (duplicate answer)", self.name, cid)
                        return found
                    raise BrokerUnavailable(
                        f"{self.name}: the exchange says order {cid} already exists but does not show it; "
                        "its outcome is unknown: look the client order id up (get_order) later"
                    ) from None
                raise OrderRejected(
                    f"{self.name} rejected order {cid} ({what}, {request.type.value}): "
                    f"{_reason(exc, self._secrets)}"
                ) from None
            order = self._order(raw, cid)
            log.info("%s: order %s placed: %s, %s", self.name, cid, what, order.status.value)
            return order

        # one attempt more than `retries`: the last one only looks the order up
        return replace(self._retry, retries=self.retries + 1).call(attempt)

    def get_order(self, client_order_id: str) -> Order | None:
        """The order with this client id, or None when the exchange has no such order."""
        for symbol in self._symbols_for(client_order_id):
            order = self._lookup(client_order_id, symbol, "looking it up")
            if order is not None:
                return order
        return None

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Orders that can still fill, of one symbol or of all (one request either way)."""
        if symbol is not None:
            self._market(symbol)
        raws = self._call("listing open orders", self.exchange.fetch_open_orders, symbol)
        return [self._order(raw) for raw in raws]

    def cancel(self, client_order_id: str) -> Order | None:
        """Cancel an open order; a finished one comes back as it is, an unknown one as None."""
        cid = client_order_id
        if cid in self._known:
            symbol = self._known[cid][0]
        else:
            found = self.get_order(cid)  # after a restart: which of the traded symbols holds it
            if found is None:
                return None
            symbol = found.symbol
        try:
            raw = self._call(f"cancelling order {cid}", self.exchange.cancel_order, None, symbol,
                             {"origClientOrderId": cid}, cid=cid, refusals=True)
        except _Refused as refused:  # -2011 Unknown order sent: unknown, or already finished
            order = self._lookup(cid, symbol, "after a refused cancel")
            if order is None or order.status.done:
                return order
            raise BrokerError(f"{self.name} refused to cancel open order {cid}: {refused}") from None
        order = self._order(raw, cid)
        log.info("%s: order %s cancelled (%s)", self.name, cid, order.status.value)
        return order

    # ------------------------------------------------------------------ account
    def positions(self) -> dict[str, Position]:
        """Spot holdings of the traded symbols' base assets (total balance, free and locked)."""
        totals = self._balances()
        out: dict[str, Position] = {}
        for symbol, qty in self._holdings(totals).items():
            out[symbol] = Position(symbol, qty, self._entry_price(symbol, qty))
        return out

    def account(self) -> Account:
        """Cash = the quote currency's total balance; equity adds the holdings at the last price."""
        totals = self._balances()
        cash = totals.get(self.currency, 0.0)
        equity = cash + sum(qty * self.price(symbol) for symbol, qty in self._holdings(totals).items())
        return Account(cash=cash, equity=equity, currency=self.currency)

    def price(self, symbol: str) -> float:
        """The last traded price from the exchange's ticker."""
        self._market(symbol)
        ticker = self._call(f"reading the {symbol} ticker", self.exchange.fetch_ticker, symbol)
        last = ticker.get("last") or ticker.get("close")
        if last is None or not math.isfinite(float(last)) or float(last) <= 0:
            raise BrokerError(f"{self.name} sent no last price for {symbol} (ticker {ticker.get('info')!r})")
        return float(last)

    def normalize_qty(self, symbol: str, qty: float) -> float:
        """Round down to the market's lot step; 0 below its minimum amount or order value."""
        market = self._market(symbol)
        if not (math.isfinite(qty) and qty > 0):
            return 0.0
        try:
            rounded = float(self.exchange.amount_to_precision(symbol, qty))
        except ccxt.InvalidOrder:  # rounds to zero
            return 0.0
        limits = market.get("limits") or {}
        min_amount = (limits.get("amount") or {}).get("min")
        if min_amount is not None and rounded < min_amount:
            return 0.0
        min_cost = (limits.get("cost") or {}).get("min")
        if min_cost and rounded * self.price(symbol) < min_cost:
            return 0.0
        return rounded

    def lot(self, symbol: str) -> Any:
        """The market's amount step (`precision.amount`), `limits.amount.min` and `limits.cost.min`."""
        from workbench.backtest.engine import Lot

        market = self._market(symbol)
        amount = (market.get("precision") or {}).get("amount")
        step = 0.0
        if amount:
            step = float(amount) if self.exchange.precisionMode == ccxt.TICK_SIZE else 10.0 ** -float(amount)
        limits = market.get("limits") or {}
        return Lot(step=step, min_qty=float((limits.get("amount") or {}).get("min") or 0.0),
                   min_notional=float((limits.get("cost") or {}).get("min") or 0.0))

    # ------------------------------------------------------------------ helpers: orders
    def _create_args(self, r: OrderRequest, market: dict[str, Any]) -> tuple[Any, ...]:
        id_key = "newClientOrderId" if self.exchange_id.startswith("binance") else "clientOrderId"
        params: dict[str, Any] = {id_key: r.client_order_id}
        side = r.side.value
        if r.type is OrderType.MARKET:
            return r.symbol, "market", side, r.qty, None, params
        if r.type is OrderType.LIMIT:
            return r.symbol, "limit", side, r.qty, r.limit_price, {**params, "timeInForce": "GTC"}
        if r.offset is not None:
            raise OrderRejected(f"{self.name}: order {r.client_order_id}: the exchange holds no order that "
                                f"waits for another's fill (offset {r.offset:g}): send it once its entry "
                                "has filled")
        if r.type is OrderType.STOP:  # Binance spot: STOP_LOSS with stopPrice, a market order once hit
            return r.symbol, "market", side, r.qty, None, {**params, "triggerPrice": r.stop_price}
        if r.type is OrderType.STOP_LIMIT:  # Binance spot: STOP_LOSS_LIMIT, a limit order once hit
            return r.symbol, "limit", side, r.qty, r.limit_price, {**params, "triggerPrice": r.stop_price,
                                                                   "timeInForce": "GTC"}
        # TRAILING_STOP: Binance spot STOP_LOSS with trailingDelta in basis points, trailing at once
        info = market.get("info") or {}
        binance_spot = self.exchange_id.startswith("binance") and market.get("spot")
        if not (binance_spot and info.get("allowTrailingStop")):
            raise OrderRejected(f"{self.name} does not support trailing stops on {r.symbol} through ccxt "
                                f"(order {r.client_order_id}): use a STOP order and move it instead")
        assert r.trail_percent is not None
        bips = round(r.trail_percent * 10_000)
        if bips < 1:
            raise OrderRejected(f"order {r.client_order_id}: trail of {r.trail_percent:.6%} is under the "
                                f"exchange's unit of 1 basis point (0.01 %)")
        if r.ref_price is not None:
            log.debug("%s: order %s: ref_price is not sent (Binance trails from the current price)",
                      self.name, r.client_order_id)
        percent = str(Decimal(bips) / 100)  # ccxt sends trailingDelta = trailingPercent x 100
        return r.symbol, "market", side, r.qty, None, {**params, "trailingPercent": percent,
                                                      "stopLossOrTakeProfit": "stopLoss"}

    def _refuse_short(self, r: OrderRequest, market: dict[str, Any]) -> None:
        held = self._balances().get(market["base"], 0.0)
        if r.qty > held * (1 + 1e-9):
            raise OrderRejected(
                f"{self.name}: order {r.client_order_id} sells {r.qty:g} {market['base']} but the spot "
                f"account holds {held:g}: spot cannot short; sell at most the holding"
            )

    def _lookup(self, cid: str, symbol: str, why: str) -> Order | None:
        """The order with client id `cid` on `symbol`, None when the exchange has none (retried)."""
        try:
            raw = self._call(f"looking up order {cid} ({why})", self.exchange.fetch_order, None, symbol,
                             {"origClientOrderId": cid}, cid=cid, not_found=True)
        except _NotFound:
            return None
        return self._order(raw, cid)

    def _order(self, raw: dict[str, Any], cid: str | None = None) -> Order:
        """Our `Order` from ccxt's unified order (cumulative fill totals)."""
        info = raw.get("info") or {}
        cid = cid or info.get("origClientOrderId") or raw.get("clientOrderId") or ""
        req = self._known[cid][1] if cid in self._known else None
        symbol = raw.get("symbol") or (req.symbol if req else "")
        if cid and symbol and cid not in self._known:
            self._known[cid] = (symbol, None)
            self._trim()
        filled = float(raw.get("filled") or 0.0)
        amount = float(raw.get("amount") or (req.qty if req else 0.0))
        status = _STATUS.get(str(raw.get("status")))
        if status is None:
            if raw.get("status") not in ("open", "canceling"):
                log.warning("%s: order %s has status %r; treating it as open", self.name, cid,
                            raw.get("status"))
            status = OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.NEW
        kind = req.type if req else _order_type(raw, info)
        trail = req.trail_percent if req else (
            info["trailingDelta"] / 10_000 if isinstance(info.get("trailingDelta"), int | float) else None)
        fee, fee_currency, other = self._fee(raw, cid, symbol, filled, status)
        extra: dict[str, Any] = {"venue_status": info.get("status", raw.get("status"))}
        if other:
            extra["fees_other"] = other
        average = raw.get("average")
        stop = req.stop_price if req else None
        return Order(
            client_order_id=cid,
            broker_order_id=str(raw.get("id") or ""),
            symbol=symbol,
            side=Side(raw.get("side") or (req.side if req else "buy")),
            type=kind,
            qty=amount,
            status=status,
            filled_qty=filled,
            avg_fill_price=float(average) if filled > 0 and average else None,
            fee=fee,
            fee_currency=fee_currency,
            limit_price=float(raw["price"]) if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT)
            and raw.get("price") else None,
            stop_price=float(raw["triggerPrice"]) if raw.get("triggerPrice") else stop,
            trail_percent=trail,
            oco_group=req.oco_group if req else None,
            submitted_at=_ts(raw.get("timestamp")),
            updated_at=_ts(raw.get("lastUpdateTimestamp") or raw.get("lastTradeTimestamp")
                           or raw.get("timestamp")),
            extra=extra,
        )

    def _fee(self, raw: dict[str, Any], cid: str, symbol: str, filled: float,
             status: OrderStatus) -> tuple[float, str | None, dict[str, float]]:
        """Fees so far in the currency the exchange charged them, and any paid in a third asset.

        Binance takes its commission out of what the trade credits (a buy's base asset, a sell's
        quote) unless it is paid in BNB: a base-asset fee is reported in the base asset, so the
        journal books the quantity actually received. Fees in a third asset come by asset.
        """
        if filled <= 0 or not symbol:
            return 0.0, None, {}
        if cid in self._fees:
            return self._fees[cid]
        trades = raw.get("trades") or []
        if not trades:  # an order query carries no fills: ask for the order's trades
            trades = self._call(f"reading the trades of order {cid}", self.exchange.fetch_order_trades,
                                raw.get("id"), symbol, cid=cid)
        market = self._market(symbol)
        by: dict[str, Decimal] = {}
        for t in trades:
            f = t.get("fee") or {}
            cost, currency = f.get("cost"), f.get("currency")
            if cost and currency:
                by[currency] = by.get(currency, Decimal(0)) + Decimal(str(cost))
        # one fee currency per order: the asset (an in-kind fee changes the holding) before the quote
        own = next((c for c in (market["base"], market["quote"]) if c in by), None)
        fee = float(by.pop(own)) if own else 0.0
        other = {c: float(v) for c, v in by.items()}
        if other:
            log.warning("%s: order %s paid fees %s besides %s %s: recorded, not booked", self.name, cid,
                        other, fee, own or market["quote"])
        out = (fee, own, other)
        if status.done:
            self._fees[cid] = out
        return out

    def _remember(self, request: OrderRequest) -> None:
        self._known[request.client_order_id] = (request.symbol, request)
        self._known.move_to_end(request.client_order_id)
        self._trim()

    def _trim(self) -> None:
        while len(self._known) > _REMEMBERED_ORDERS:
            old, _ = self._known.popitem(last=False)
            self._fees.pop(old, None)

    def _symbols_for(self, cid: str) -> list[str]:
        if cid in self._known:
            return [self._known[cid][0]]
        if not self.symbols:
            raise ConfigError(f"{self.name} does not know which symbol order {cid} belongs to: pass the "
                              "traded symbols, CcxtBroker(..., symbols=['BTC/USDT'])")
        return list(self.symbols)

    # ------------------------------------------------------------------ helpers: account
    def _balances(self) -> dict[str, float]:
        balance = self._call("reading balances", self.exchange.fetch_balance)
        return {k: float(v) for k, v in (balance.get("total") or {}).items() if v is not None}

    def _traded(self) -> list[str]:
        return list(dict.fromkeys([*self.symbols, *(symbol for symbol, _ in self._known.values())]))

    def _holdings(self, totals: dict[str, float]) -> dict[str, float]:
        """Non-zero base-asset balances by traded symbol (a base shared by two symbols counts once)."""
        out: dict[str, float] = {}
        bases: set[str] = set()
        for symbol in self._traded():
            base = self._market(symbol)["base"]
            qty = totals.get(base, 0.0)
            if qty > 0 and base not in bases:
                out[symbol] = qty
                bases.add(base)
        return out

    def _entry_price(self, symbol: str, qty: float) -> float:
        """Average cost of the holding from the account's last 1000 trades of `symbol`.

        Holdings the trades do not explain (deposits, a testnet's starting balance) are valued at
        the last price.
        """
        trades = self._call(f"reading {symbol} trades", self.exchange.fetch_my_trades, symbol, None, 1000)
        base = self._market(symbol)["base"]
        held = cost = 0.0
        for t in sorted(trades, key=lambda t: t.get("timestamp") or 0):
            amount, px = float(t.get("amount") or 0.0), float(t.get("price") or 0.0)
            f = t.get("fee") or {}
            if t.get("side") == "buy":
                held += amount - (float(f.get("cost") or 0.0) if f.get("currency") == base else 0.0)
                cost += amount * px
            elif held > 0:
                sold = min(amount, held)
                cost -= cost / held * sold
                held -= sold
        if held >= qty * (1 - 1e-9) and held > 0:
            return cost / held
        return (cost + (qty - held) * self.price(symbol)) / qty

    # ------------------------------------------------------------------ helpers: plumbing
    def _market(self, symbol: str, for_order: str | None = None) -> dict[str, Any]:
        if self._markets is None:
            self._markets = self._call("loading the market list", self.exchange.load_markets)
        market = self._markets.get(symbol)
        if market is not None:
            return market
        hint = did_you_mean(symbol.upper().replace("-", "/"), self._markets)
        if for_order:
            raise OrderRejected(f"{self.name} does not list {symbol!r} (order {for_order}){hint}: use a spot "
                                "market written BASE/QUOTE, e.g. BTC/USDT")
        raise ConfigError(f"{self.name} does not list {symbol!r}{hint}: use a spot market written "
                          "BASE/QUOTE, e.g. BTC/USDT")

    def _call(self, what: str, fn: Callable[..., _T], *args: Any, cid: str | None = None,
              not_found: bool = False, refusals: bool = False) -> _T:
        """Run one ccxt call, retrying transient failures and mapping ccxt errors to ours.

        `not_found` turns "no such order" into `_NotFound`; `refusals` turns any other exchange
        refusal into `_Refused` (for the caller to resolve).
        """

        def attempt(_: int) -> _T:
            self.exchange.last_response_headers = None  # so a stale Retry-After is never read
            try:
                return fn(*args)
            except ccxt.OrderNotFound as exc:
                if not_found:
                    raise _NotFound(_reason(exc, self._secrets)) from None
                if refusals:
                    raise _Refused(_reason(exc, self._secrets)) from None
                raise BrokerError(f"{self.name}: {what}: {_reason(exc, self._secrets)}") from None
            except ccxt.AuthenticationError as exc:
                raise self._credentials_error(what, exc) from None
            except ccxt.OperationFailed as exc:
                raise self._temporary(what, exc) from exc
            except ccxt.BaseError as exc:
                if refusals:
                    raise _Refused(_reason(exc, self._secrets)) from None
                if isinstance(exc, ccxt.BadSymbol):
                    raise ConfigError(f"{self.name} rejected the symbol while {what}: "
                                      f"{_reason(exc, self._secrets)}") from None
                raise BrokerError(f"{self.name}: {what} failed: {_reason(exc, self._secrets)}") from None

        try:
            return self._retry.call(attempt)
        except TemporaryError as exc:
            unknown = (f"; the outcome of order {cid} is unknown: look it up by client order id "
                       "(get_order) before submitting it again") if cid else ""
            raise BrokerUnavailable(
                f"{self.name}: {what} failed {exc.attempts} times, last with "
                f"{type(exc.__cause__).__name__} ({_reason(exc.__cause__ or exc, self._secrets, 120)})"
                f"{unknown}"
            ) from None

    def _temporary(self, what: str, exc: BaseException, not_before: float = 0.0) -> TemporaryError:
        """A retryable failure, with the exchange's Retry-After (or `not_before`, if longer)."""
        after = retry_after(self.exchange.last_response_headers)
        if not_before > 0:
            after = max(after or 0.0, not_before)
        return TemporaryError(f"{self.name}: {what}: {type(exc).__name__} "
                              f"({_reason(exc, self._secrets, 120)})", retry_after=after)

    def _credentials_error(self, what: str, exc: BaseException) -> CredentialsError:
        return CredentialsError(
            f"{self.name} refused the API key while {what} ({_reason(exc, self._secrets)}): check "
            f"{API_KEY_SETTING} and {SECRET_SETTING} (environment or .env) hold this sandbox's keys "
            "with trading enabled"
        )


class _NotFound(Exception):
    pass


class _Refused(Exception):
    pass


class _RedactingLogger:
    """Stands in for ccxt's logger: its debug lines carry the API-key header and request signatures."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._log = logging.getLogger(f"{__name__}.wire")
        self._secrets = tuple(s for s in secrets if s)

    def _emit(self, level: int, msg: object, *args: object) -> None:
        if self._log.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            self._log.log(level, "%s", _redact(text, self._secrets))

    def debug(self, msg: object, *args: object, **_: object) -> None:
        self._emit(logging.DEBUG, msg, *args)

    def info(self, msg: object, *args: object, **_: object) -> None:
        self._emit(logging.INFO, msg, *args)

    def warning(self, msg: object, *args: object, **_: object) -> None:
        self._emit(logging.WARNING, msg, *args)

    def error(self, msg: object, *args: object, **_: object) -> None:
        self._emit(logging.ERROR, msg, *args)


def _credentials(exchange_id: str) -> tuple[str, str]:
    """The API key pair from settings: the WORKBENCH_CCXT_* pair, else the <EXCHANGE>_* pair."""
    prefix = re.sub(r"\W", "_", exchange_id.upper())
    pairs = ((API_KEY_SETTING, SECRET_SETTING), (f"{prefix}_API_KEY", f"{prefix}_SECRET"))
    for key_name, secret_name in pairs:
        key, secret = setting(key_name), setting(secret_name)
        if key and secret:
            return key, secret
    raise CredentialsError(
        f"no API keys for the {exchange_id} sandbox: set {API_KEY_SETTING} and {SECRET_SETTING} "
        f"(environment or .env; {prefix}_API_KEY / {prefix}_SECRET also work) to the test network's keys, "
        "e.g. from https://testnet.binance.vision"
    )


_BODY = re.compile(r'\{"code":\s*(-?\d+),\s*"msg":\s*"((?:[^"\\]|\\.)*)"\}')


def _reason(exc: BaseException, secrets: Iterable[str] = (), width: int = 200) -> str:
    """The exchange's own message ('<msg> (code <n>)') or ccxt's, on one line, without query strings."""
    text = str(exc)
    body = _BODY.search(text)
    if body:
        text = f"{body.group(2)} (code {body.group(1)})"
    else:
        text = re.sub(r"(https?://\S+?)\?\S*", r"\1", text)
        text = " ".join(text.split())
    text = _redact(text, secrets)
    return text if len(text) <= width else text[: width - 3] + "..."


def _redact(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return re.sub(r"(signature=)[0-9A-Za-z%+/=_-]+", r"\1***", text)


def _is_duplicate(exc: BaseException) -> bool:
    return isinstance(exc, ccxt.DuplicateOrderId) or "Duplicate order sent" in str(exc)


def _order_type(raw: dict[str, Any], info: dict[str, Any]) -> OrderType:
    """Our order type for an order this process did not submit."""
    venue = str(info.get("type") or "").upper()
    if info.get("trailingDelta") not in (None, 0, "0"):
        return OrderType.TRAILING_STOP
    if venue == "STOP_LOSS_LIMIT" or (raw.get("triggerPrice") and raw.get("type") == "limit"):
        return OrderType.STOP_LIMIT
    if venue == "STOP_LOSS" or (raw.get("triggerPrice") and raw.get("type") == "market"):
        return OrderType.STOP
    return OrderType.LIMIT if raw.get("type") == "limit" else OrderType.MARKET


def _ts(ms: Any) -> pd.Timestamp | None:
    return None if ms is None else pd.Timestamp(int(ms), unit="ms", tz="UTC")


__all__ = ["API_KEY_SETTING", "SECRET_SETTING", "CcxtBroker"]
