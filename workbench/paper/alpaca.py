"""Alpaca paper trading through alpaca-py's unmodified `TradingClient` (and its data clients for prices).

Settings (environment or a `.env` file in the working directory): the key pair from
`ALPACA_API_KEY` / `ALPACA_SECRET_KEY`, else `APCA_API_KEY_ID` / `APCA_API_SECRET_KEY` (read as the
data source reads them, `workbench.data.sources.alpaca_client`; a pair is taken from one family,
never mixed), the trading endpoint from
`WORKBENCH_ALPACA_TRADING_URL` (else Alpaca's paper endpoint; the live endpoint is refused), the
data endpoint for `price()` from `WORKBENCH_ALPACA_BASE_URL` (else Alpaca's), the stock feed from
`WORKBENCH_ALPACA_FEED` (else iex), and `WORKBENCH_ALPACA_TIMEOUT`, `WORKBENCH_ALPACA_RETRY_ATTEMPTS`,
`WORKBENCH_ALPACA_RETRY_WAIT` unless the constructor is given `timeout`, `retries`, `retry_wait`.

Who retries what:

- alpaca-py retries HTTP 429 and 504 itself, **order submission included**; this broker sets its
  attempts (`retries`) and wait (`retry_wait`). When the first attempt did reach Alpaca, the
  retried submission is answered 422 ``client_order_id must be unique``: `submit` then looks the
  order up by its client order id and returns it.
- GETs whose connection failed or timed out are retried by a transport adapter on the SDK's
  session (the data source's), which also gives every request a timeout. POSTs and DELETEs are
  never retried at that level.
- A submission that ends in a timeout, a dropped connection, a 5xx or a last 429 has an unknown
  outcome: `submit` looks the client order id up, returns the order when Alpaca has it and
  resubmits only when Alpaca says it does not, at most `retries` times. When a lookup fails too,
  or every attempt failed, `BrokerUnavailable` names the client order id: look it up later.
  These resubmissions, and retries of 5xx answers the SDK does not retry itself, go through the
  workbench's one retry policy (`workbench.retry`): `retry_wait` apart, longer when Alpaca sends
  Retry-After (at most a minute).
- Refusals (insufficient buying power, a bad quantity, an unknown symbol...) raise `OrderRejected`
  with Alpaca's message; refused keys raise `CredentialsError` naming the settings to fix.

Crypto fees: Alpaca takes them out of the asset a trade credits (a buy of BTC/USD receives BTC
net of the fee, a sell receives USD net of it). Its order replies carry no fee (`filled_qty` is
the gross quantity) and its CFEE activities post later without an order id, so the fee of each
crypto fill is computed here from the account's fee tier: `crypto_taker_fee` for market and stop
orders, `crypto_maker_fee` for limit orders (settings ``WORKBENCH_ALPACA_CRYPTO_TAKER_FEE`` and
``WORKBENCH_ALPACA_CRYPTO_MAKER_FEE``, fractions; default Alpaca's tier 1: 0.0025 and 0.0015),
in the asset received, on 9 decimal places. Stock trades carry no commission. The runner
reconciles with the positions Alpaca reports and sizes exits from them, so a different tier shows
as a reconciliation difference, never as an exit the account cannot fill.

Symbols are the workbench's: ``AAPL`` and ``BTC/USD`` (Alpaca reports crypto positions as
``BTCUSD``; they are mapped back). Stock market orders are DAY orders, other stock orders GTC when
the quantity is whole (DAY when fractional: Alpaca takes fractional orders as DAY only); crypto
orders are GTC. Alpaca takes no plain stop or trailing stop orders for crypto: those are refused
here, before any request (a crypto stop entry can be a stop-limit).

Resting entries (limit, stop and stop-limit, SEMANTICS.md "Entry orders") rest at Alpaca; Alpaca
counts no bars, so the runner cancels one once its time in force has passed, and places the entry's
protective legs once it has filled (at levels from its fill price). A fractional stock order is a
DAY order at Alpaca: a resting entry of fractional shares also ends at the session's close.

Alpaca knows nothing of `oco_group`: this broker remembers it for the orders it submitted in this
process and echoes it back, but does not cancel siblings itself.
Keys never appear in logs, messages or `repr`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any, Literal, TypeVar, cast, overload
from urllib.parse import urlsplit

import pandas as pd
import requests
from alpaca.common.exceptions import APIError
from alpaca.common.rest import RESTClient
from alpaca.data.enums import DataFeed
from alpaca.data.historical import CryptoHistoricalDataClient, StockHistoricalDataClient
from alpaca.data.requests import CryptoLatestTradeRequest, StockLatestTradeRequest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import (
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    StopLimitOrderRequest,
    StopOrderRequest,
    TrailingStopOrderRequest,
)
from alpaca.trading.requests import OrderRequest as AlpacaOrderRequest

from workbench.config import setting
from workbench.data.sources.alpaca_client import (
    DATA_HOST,
    DATA_RETRY_CODES,
    DATA_URL_SETTING,
    FEED_SETTING,
    FEEDS,
    RETRY_ATTEMPTS_SETTING,
    RETRY_WAIT_SETTING,
    TIMEOUT_SETTING,
    api_retry_after,
    check_url,
    choice,
    close,
    configure,
    host,
    is_auth,
    is_not_found,
    keys_set,
    message,
    number,
    read_keys,
    transport_problem,
)
from workbench.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    CredentialsError,
    OrderRejected,
    TemporaryError,
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
from workbench.retry import RetryPolicy

log = logging.getLogger(__name__)

TRADING_URL_SETTING = "WORKBENCH_ALPACA_TRADING_URL"
PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_HOSTS = ("api.alpaca.markets",)
DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 3
DEFAULT_RETRY_WAIT = 1.0
DEFAULT_CRYPTO_TAKER_FEE = 0.0025  # Alpaca's crypto fee tier 1 (30-day volume under $100k)
DEFAULT_CRYPTO_MAKER_FEE = 0.0015
SDK_RETRY_CODES = (429, 504)  # what alpaca-py retries by default; kept for the trading client
CRYPTO_QUOTES = ("USDT", "USDC", "USD", "BTC")
_DUPLICATE = "client_order_id must be unique"
_KEY_HINT = ("set APCA_API_KEY_ID and APCA_API_SECRET_KEY (or ALPACA_API_KEY and ALPACA_SECRET_KEY) "
             "to a current paper-trading key pair, in the environment or in a .env file in the "
             "working directory (live keys do not work on the paper endpoint)")
_NINE = Decimal("1e-9")

# Alpaca order statuses that end an order; every other status (new, accepted, pending_new,
# pending_cancel, held, done_for_day...) is still live: NEW or PARTIALLY_FILLED by the fill so far
_FINAL = {"filled": OrderStatus.FILLED, "canceled": OrderStatus.CANCELED,
          "expired": OrderStatus.EXPIRED, "rejected": OrderStatus.REJECTED,
          "replaced": OrderStatus.CANCELED}
_KNOWN_LIVE = {"new", "partially_filled", "accepted", "pending_new", "accepted_for_bidding",
               "pending_cancel", "pending_replace", "pending_review", "held", "stopped",
               "suspended", "calculated", "done_for_day"}
_TYPES = {"market": OrderType.MARKET, "limit": OrderType.LIMIT, "stop": OrderType.STOP,
          "stop_limit": OrderType.STOP_LIMIT, "trailing_stop": OrderType.TRAILING_STOP}

T = TypeVar("T")
#: a reply of alpaca-py with ``raw_data=True``: the JSON object (its annotations also allow its models)
_Raw = dict[str, Any]


class AlpacaBroker(Broker):
    """Alpaca's paper trading account as a `Broker` (`AlpacaBroker()` reads its settings).

    Options: `base_url` (trading API, else `WORKBENCH_ALPACA_TRADING_URL`, else the paper
    endpoint), `data_url` (market data for `price()`, else `WORKBENCH_ALPACA_BASE_URL`, else
    Alpaca's), `feed` (stock prices: `iex` or `sip`), `timeout` (seconds per request),
    `retries` (attempts after the first), `retry_wait` (seconds between attempts), and the
    account's crypto fee rates `crypto_taker_fee` / `crypto_maker_fee` (see the module doc).
    """

    name = "alpaca"
    resting_entries = True  # limit, stop and stop-limit entries rest at Alpaca (the runner expires them)

    def __init__(
        self,
        *,
        base_url: str | None = None,
        data_url: str | None = None,
        feed: str | None = None,
        timeout: float | str | None = None,
        retries: int | str | None = None,
        retry_wait: float | str | None = None,
        crypto_taker_fee: float | str | None = None,
        crypto_maker_fee: float | str | None = None,
    ) -> None:
        self._keys = _keys()
        self._lots: dict[str, Any] = {}
        self.base_url = check_url(base_url or setting(TRADING_URL_SETTING) or PAPER_URL,
                                  "base_url", TRADING_URL_SETTING, PAPER_URL)
        if (urlsplit(self.base_url).hostname or "") in LIVE_HOSTS:
            raise ConfigError(
                f"base URL {self.base_url!r} is Alpaca's live trading endpoint: AlpacaBroker trades "
                f"paper accounts only; use {PAPER_URL} (base_url or {TRADING_URL_SETTING})")
        data = data_url or setting(DATA_URL_SETTING)
        self.data_url = check_url(data, "data_url", DATA_URL_SETTING, PAPER_URL) if data else None
        self.feed = choice(feed or setting(FEED_SETTING) or "iex", FEEDS, "feed")
        self.timeout = number(timeout, TIMEOUT_SETTING, DEFAULT_TIMEOUT, float, "timeout",
                               minimum=0.001)
        self.retries = number(retries, RETRY_ATTEMPTS_SETTING, DEFAULT_RETRIES, int,
                               "retries", minimum=0)
        self.retry_wait = number(retry_wait, RETRY_WAIT_SETTING, DEFAULT_RETRY_WAIT, float,
                                  "retry_wait", minimum=0)
        self.crypto_taker_fee = number(crypto_taker_fee, "WORKBENCH_ALPACA_CRYPTO_TAKER_FEE",
                                        DEFAULT_CRYPTO_TAKER_FEE, float, "crypto_taker_fee", minimum=0)
        self.crypto_maker_fee = number(crypto_maker_fee, "WORKBENCH_ALPACA_CRYPTO_MAKER_FEE",
                                        DEFAULT_CRYPTO_MAKER_FEE, float, "crypto_maker_fee", minimum=0)
        # alpaca-py waits a fixed time between its retries: so does this broker
        self._retry = RetryPolicy(retries=self.retries, wait=self.retry_wait, backoff=1.0, logger=log)
        for name in ("crypto_taker_fee", "crypto_maker_fee"):
            if getattr(self, name) >= 0.1:
                raise ConfigError(f"{name} {getattr(self, name)!r} is a fraction (0.0025 = 0.25 %), not a "
                                  "percentage: set e.g. 0.0025")
        self._trading = TradingClient(self._keys[0], self._keys[1], paper=True, raw_data=True,
                                      url_override=self.base_url)
        self._configure(self._trading, SDK_RETRY_CODES)
        self._data: dict[bool, RESTClient] = {}  # crypto? -> data client
        self._oco: dict[str, str] = {}  # client order id -> oco_group, for orders submitted here

    def __repr__(self) -> str:
        return (f"AlpacaBroker(base_url={self.base_url!r}, data_url={self.data_url!r}, "
                f"feed={self.feed!r}, keys set)")

    # ------------------------------------------------------------------ Broker contract
    def submit(self, request: OrderRequest) -> Order:
        """Place `request`; an id Alpaca already has returns that order (see the module doc)."""
        cid = request.client_order_id
        alpaca_request = self._request(request)
        if request.oco_group:
            self._oco[cid] = request.oco_group
        what = f"{request.side.value} {request.qty:g} {request.symbol}"
        attempts = self.retries + 1
        problems: list[str] = []

        def attempt(n: int) -> Order:
            try:
                raw = cast(_Raw, self._trading.submit_order(alpaca_request))
            except APIError as exc:
                status, message = exc.status_code, self._message(exc)
                if status == 422 and _DUPLICATE in message:
                    # Alpaca has this id: an earlier call (or the SDK's own retry of this one) placed it
                    return self._existing(request, message)
                if is_auth(exc):
                    raise CredentialsError(f"Alpaca refused the API keys (HTTP {status}) placing order "
                                           f"{cid}: {_KEY_HINT}") from None
                if status is not None and status < 500 and status != 429:
                    hint = (f"; check the base URL ({TRADING_URL_SETTING})" if status in (404, 405)
                            else "")
                    raise OrderRejected(f"Alpaca refused order {cid} ({what}): {message} (HTTP "
                                        f"{status}){hint}") from None
                problem, after = f"HTTP {status}: {message}", api_retry_after(exc)
            except requests.RequestException as exc:
                problem, after = transport_problem(exc), None
            else:
                order = self._order(raw)
                log.info("alpaca order %s placed: %s (%s)", cid, what, order.status.value)
                return order
            # the outcome is unknown: never resubmit before Alpaca says it has no such order
            problems.append(problem)
            log.warning("alpaca order %s (%s): %s on attempt %d of %d; looking it up before any "
                        "resubmission", cid, what, problem, n, attempts)
            try:
                found = self._lookup(cid)
            except BrokerUnavailable as exc:
                raise BrokerUnavailable(
                    f"order {cid} ({what}): the outcome is unknown: submitting failed ({problem}) "
                    f"and looking it up failed too ({exc}); look the client order id up with "
                    "get_order before submitting it again") from None
            if found is not None:
                log.info("alpaca order %s was placed despite the failed reply", cid)
                return found
            raise TemporaryError(f"alpaca order {cid} ({what}): {problem}; not placed",
                                 retry_after=after)

        try:
            return self._retry.call(attempt)
        except TemporaryError as exc:
            raise BrokerUnavailable(
                f"order {cid} ({what}): the outcome is unknown: Alpaca failed {exc.attempts} submissions "
                f"(last: {problems[-1]}) and the last lookup found no order with this client order id; look "
                "it up with get_order before submitting it again, or raise retries") from None

    def get_order(self, client_order_id: str) -> Order | None:
        """The order with this client order id, or None when Alpaca has never seen it."""
        return self._lookup(client_order_id)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders in the account (all of them, not only the workbench's), newest first."""
        query = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500,
                                 symbols=[symbol] if symbol else None)
        rows = cast(list[_Raw], self._call(lambda: self._trading.get_orders(query), "listing open orders"))
        if len(rows) >= 500:
            log.warning("Alpaca returned 500 open orders, its page limit: older ones are not listed")
        orders = [self._order(r) for r in rows if _simple(r)]
        return [o for o in orders if not o.status.done and (symbol is None or o.symbol == symbol)]

    def cancel(self, client_order_id: str) -> Order | None:
        """Cancel an order; a finished one comes back as it is, an unknown one as None."""
        cid = client_order_id
        order = self._lookup(cid)
        if order is None or order.status.done:
            return order
        state: dict[str, Any] = {"order": order, "problem": ""}
        broker_id = order.broker_order_id

        def attempt(_: int) -> Order:
            # Alpaca cancels asynchronously: the cancel is sent again until the order is done
            problem, after = "", None
            try:
                self._trading.cancel_order_by_id(broker_id)
            except APIError as exc:
                status = exc.status_code
                if is_auth(exc):
                    raise CredentialsError(f"Alpaca refused the API keys (HTTP {status}) cancelling "
                                           f"order {cid}: {_KEY_HINT}") from None
                if status is None or status >= 500 or status == 429:
                    problem, after = f"HTTP {status}: {self._message(exc)}", api_retry_after(exc)
                elif status not in (404, 422):  # 422: not cancelable (finished); the lookup says how
                    raise BrokerError(f"Alpaca refused to cancel order {cid}: {self._message(exc)} "
                                      f"(HTTP {status})") from None
            except requests.RequestException as exc:
                problem = transport_problem(exc)
            state["problem"] = problem
            current = state["order"] = self._lookup(cid) or state["order"]
            if current.status.done:
                return current
            still = (current.extra or {}).get("alpaca_status")
            sent = f"failed ({problem})" if problem else "requested"
            raise TemporaryError(f"alpaca order {cid}: cancel {sent}, still {still}", retry_after=after)

        try:
            return self._retry.call(attempt)
        except TemporaryError:
            pass
        if state["problem"]:
            raise BrokerUnavailable(f"could not cancel order {cid} ({state['problem']}): it may still fill; "
                                    "call cancel again later")
        order = state["order"]
        log.info("alpaca order %s: cancel requested, still %s", cid,
                 (order.extra or {}).get("alpaca_status"))
        return order

    def positions(self) -> dict[str, Position]:
        """Non-zero positions by workbench symbol, signed (short < 0)."""
        rows = cast(list[_Raw], self._call(self._trading.get_all_positions, "reading positions"))
        out: dict[str, Position] = {}
        try:
            for row in rows:
                symbol = workbench_symbol(str(row["symbol"]), row.get("asset_class"))
                qty = abs(float(row["qty"])) * (-1.0 if row.get("side") == "short" else 1.0)
                if qty:
                    out[symbol] = Position(symbol, qty, float(row.get("avg_entry_price") or 0.0))
        except (KeyError, TypeError, ValueError):
            raise BrokerError(f"Alpaca at {self._host()} sent a positions reply this broker cannot "
                              f"read: check the base URL ({TRADING_URL_SETTING})") from None
        return out

    def account(self) -> Account:
        """Cash and equity of the paper account."""
        raw = cast(_Raw, self._call(self._trading.get_account, "reading the account"))
        try:
            return Account(cash=float(raw["cash"]), equity=float(raw["equity"]),
                           currency=str(raw.get("currency") or "USD"))
        except (KeyError, TypeError, ValueError):
            raise BrokerError(f"Alpaca at {self._host()} sent an account reply without cash and "
                              f"equity: check the base URL ({TRADING_URL_SETTING})") from None

    def price(self, symbol: str) -> float:
        """The latest trade price (stocks from the configured feed, crypto from Alpaca's US feed)."""
        crypto = "/" in symbol
        client: Any = self._data_client(crypto)
        if crypto:
            query: Any = CryptoLatestTradeRequest(symbol_or_symbols=symbol)
            fetch = lambda: client.get_crypto_latest_trade(query)  # noqa: E731
        else:
            query = StockLatestTradeRequest(symbol_or_symbols=symbol, feed=DataFeed(self.feed))
            fetch = lambda: client.get_stock_latest_trade(query)  # noqa: E731
        reply = self._call(fetch, f"reading the {symbol} price", data=True)
        trade: Any = (reply or {}).get(symbol) if isinstance(reply, dict) else None
        try:
            value = float(trade["p"])  # no trade (None) or no price: TypeError/KeyError, caught below
        except (KeyError, TypeError, ValueError):
            raise BrokerError(f"Alpaca has no latest trade for {symbol!r}: check the symbol (a ticker "
                              "such as AAPL, or a pair such as BTC/USD) and the data URL "
                              f"({DATA_URL_SETTING})") from None
        return value

    def normalize_qty(self, symbol: str, qty: float) -> float:
        """Round down to Alpaca's 9 decimal places (fractional shares and crypto alike)."""
        if not qty or qty <= 0:
            return 0.0
        return float(Decimal(repr(float(qty))).quantize(_NINE, rounding=ROUND_DOWN))

    def lot(self, symbol: str) -> Any:
        """Whole shares unless the asset is `fractionable`, else its `min_trade_increment`; its
        `min_order_size` as the minimum quantity (read once per symbol)."""
        from workbench.backtest.engine import Lot

        cached = self._lots.get(symbol)
        if cached is None:
            asset = self._call(lambda: self._trading.get_asset(symbol), f"reading the {symbol} asset")
            asset = asset if isinstance(asset, dict) else {}
            step = float(asset.get("min_trade_increment") or 0.0) if asset.get("fractionable") else 1.0
            cached = self._lots[symbol] = Lot(step=step, min_qty=float(asset.get("min_order_size") or 0.0))
        return cached

    def close(self) -> None:
        """Close the HTTP sessions."""
        for client in (self._trading, *self._data.values()):
            close(client)

    # ------------------------------------------------------------------ requests
    def _request(self, req: OrderRequest) -> AlpacaOrderRequest:
        cid = req.client_order_id
        crypto = "/" in req.symbol
        qty = round(float(req.qty), 9)
        if qty <= 0:
            raise OrderRejected(f"order {cid}: quantity {req.qty!r} rounds to 0 at Alpaca's 9 decimal "
                                "places")
        if req.offset is not None:
            raise OrderRejected(f"order {cid}: Alpaca holds no order that waits for another's fill (offset "
                                f"{req.offset:g}): send the leg at a price once its entry has filled")
        if crypto and req.type in (OrderType.STOP, OrderType.TRAILING_STOP):
            raise OrderRejected(f"order {cid}: Alpaca takes no {req.type.value} orders for crypto "
                                f"({req.symbol}; only market, limit and stop_limit): enter with a stop_limit "
                                "and protect crypto positions another way")
        whole = qty == int(qty)
        if crypto:
            tif = TimeInForce.GTC
        elif req.type is OrderType.MARKET or not whole:
            tif = TimeInForce.DAY  # fractional orders are DAY orders at Alpaca
        else:
            tif = TimeInForce.GTC  # a resting exit must not expire at the close
        common: dict[str, Any] = {"symbol": req.symbol, "qty": qty, "side": OrderSide(req.side.value),
                                  "time_in_force": tif, "client_order_id": cid}
        if req.type is OrderType.LIMIT:
            return LimitOrderRequest(**common, limit_price=_price(req.limit_price, crypto))
        if req.type is OrderType.STOP:
            return StopOrderRequest(**common, stop_price=_price(req.stop_price, crypto))
        if req.type is OrderType.STOP_LIMIT:
            return StopLimitOrderRequest(**common, stop_price=_price(req.stop_price, crypto),
                                         limit_price=_price(req.limit_price, crypto))
        if req.type is OrderType.TRAILING_STOP:
            if req.ref_price is not None:
                log.debug("order %s: Alpaca starts a trailing stop's high water mark at the market "
                          "price; ref_price %s is not sent", cid, req.ref_price)
            percent = round(float(req.trail_percent or 0) * 100, 4)  # Alpaca: percent, not fraction
            return TrailingStopOrderRequest(**common, trail_percent=percent)
        return MarketOrderRequest(**common)

    def _existing(self, request: OrderRequest, message: str) -> Order:
        cid = request.client_order_id
        found = self._lookup(cid)
        if found is None:
            raise BrokerUnavailable(f"order {cid}: Alpaca answered {message!r} but has no order with "
                                    "this client order id: the outcome is unknown; look it up again "
                                    "with get_order before submitting it again")
        if (found.symbol, found.side) != (request.symbol, request.side) or abs(
                found.qty - request.qty) > 1e-9 * max(1.0, request.qty):
            log.warning("alpaca order %s already exists as %s %g %s, not as requested (%s %g %s): "
                        "returning the existing order", cid, found.side.value, found.qty, found.symbol,
                        request.side.value, request.qty, request.symbol)
        else:
            log.info("alpaca order %s already placed: returning it", cid)
        return found

    def _lookup(self, cid: str) -> Order | None:
        raw = self._call(lambda: cast(_Raw, self._trading.get_order_by_client_id(cid)),
                         f"looking up order {cid}", missing_ok=True)
        return None if raw is None else self._order(raw)

    @overload
    def _call(self, fn: Callable[[], T], what: str, missing_ok: Literal[False] = False,
              data: bool = False) -> T: ...

    @overload
    def _call(self, fn: Callable[[], T], what: str, missing_ok: Literal[True],
              data: bool = False) -> T | None: ...

    def _call(self, fn: Callable[[], T], what: str, missing_ok: bool = False,
              data: bool = False) -> T | None:
        """Run a read-only SDK call (`data`: on a market data client); 5xx answers the SDK did not
        retry itself are retried here."""
        sdk_codes = DATA_RETRY_CODES if data else SDK_RETRY_CODES
        where = DATA_URL_SETTING if data else TRADING_URL_SETTING
        where_host = self._host(data)

        def attempt(_: int) -> T | None:
            try:
                return fn()
            except APIError as exc:
                status, message = exc.status_code, self._message(exc)
                if missing_ok and is_not_found(exc):
                    return None
                if is_auth(exc):
                    raise CredentialsError(f"Alpaca refused the API keys (HTTP {status}) {what}: "
                                           f"{_KEY_HINT}") from None
                if status is not None and status < 500 and status != 429:
                    raise BrokerError(f"Alpaca refused {what}: {message} (HTTP {status}); check the "
                                      f"URL ({where})") from None
                failed = f"Alpaca kept failing {what} (HTTP {status}: {message}); try again later"
                if status in sdk_codes:  # alpaca-py has retried this one already
                    raise BrokerUnavailable(failed) from None
                raise TemporaryError(failed, retry_after=api_retry_after(exc)) from None
            except requests.exceptions.JSONDecodeError:
                raise BrokerError(f"Alpaca at {where_host} sent a reply that is not JSON {what}: check "
                                  f"the URL ({where})") from None
            except requests.RequestException as exc:
                raise BrokerUnavailable(f"could not reach Alpaca at {where_host} {what} "
                                        f"({transport_problem(exc)}): check the network connection, or "
                                        f"the URL ({where})") from None

        try:
            return self._retry.call(attempt)
        except TemporaryError as exc:
            raise BrokerUnavailable(str(exc)) from None

    # ------------------------------------------------------------------ replies
    def _order(self, raw: dict[str, Any]) -> Order:
        try:
            return self._parse_order(raw)
        except (KeyError, TypeError, ValueError):
            raise BrokerError(f"Alpaca at {self._host()} sent an order reply this broker cannot read: "
                              f"check the base URL ({TRADING_URL_SETTING})") from None

    def _parse_order(self, raw: dict[str, Any]) -> Order:
        cid = str(raw["client_order_id"])
        qty = _float(raw.get("qty")) or 0.0
        filled = _float(raw.get("filled_qty")) or 0.0
        state = str(raw.get("status") or "")
        status = _FINAL.get(state)
        if status is None:
            if state not in _KNOWN_LIVE:
                log.warning("alpaca order %s has status %r, unknown to this broker: treated as open",
                            cid, state)
            status = OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.NEW
        kind = str(raw.get("type") or raw.get("order_type") or "market")
        avg = _float(raw.get("filled_avg_price"))
        trail = _float(raw.get("trail_percent"))
        symbol = workbench_symbol(str(raw["symbol"]), raw.get("asset_class"))
        side = Side(raw["side"])
        fee, fee_currency = self._crypto_fee(raw, symbol, side, kind)
        return Order(
            client_order_id=cid, broker_order_id=str(raw["id"]),
            symbol=symbol,
            side=side, type=_TYPES.get(kind, OrderType.MARKET), qty=qty, status=status,
            filled_qty=filled, avg_fill_price=avg if filled > 0 else None, fee=fee,
            fee_currency=fee_currency,
            limit_price=_float(raw.get("limit_price")), stop_price=_float(raw.get("stop_price")),
            trail_percent=None if trail is None else trail / 100, oco_group=self._oco.get(cid),
            submitted_at=_ts(raw.get("submitted_at")), updated_at=_ts(raw.get("updated_at")),
            reject_reason=state if status is OrderStatus.REJECTED else None,
            extra={"alpaca_status": state, "alpaca_type": kind,
                   "time_in_force": raw.get("time_in_force"), "asset_class": raw.get("asset_class")},
        )

    def _crypto_fee(self, raw: dict[str, Any], symbol: str, side: Side,
                    kind: str) -> tuple[float, str | None]:
        """The fee of a crypto order's fills so far, in the asset the trade credited (module doc)."""
        if "/" not in symbol or not raw.get("filled_qty"):
            return 0.0, None
        filled = Decimal(str(raw["filled_qty"]))
        if filled <= 0:
            return 0.0, None
        rate = Decimal(repr(self.crypto_maker_fee if kind == "limit" else self.crypto_taker_fee))
        base, quote = symbol.split("/", 1)
        if side is Side.BUY:
            return float(crypto_fee(filled, rate)), base
        value = filled * Decimal(str(raw.get("filled_avg_price") or 0))
        return float(crypto_fee(value, rate)), quote

    def _message(self, exc: APIError) -> str:
        return message(exc, self._keys)

    def _host(self, data: bool = False) -> str:
        if data:
            return host(self.data_url, DATA_HOST)
        return host(self.base_url, "the configured base URL")

    # ------------------------------------------------------------------ clients
    def _configure(self, client: RESTClient, codes: tuple[int, ...]) -> None:
        """Retry settings and a request timeout on an alpaca-py client (as the data source does)."""
        configure(client, timeout=self.timeout, retries=self.retries, wait=self.retry_wait, codes=codes)

    def _data_client(self, crypto: bool) -> RESTClient:
        client = self._data.get(crypto)
        if client is None:
            kind = CryptoHistoricalDataClient if crypto else StockHistoricalDataClient
            client = kind(api_key=self._keys[0], secret_key=self._keys[1], raw_data=True,
                          url_override=self.data_url)
            self._configure(client, DATA_RETRY_CODES)
            self._data[crypto] = client
        return client


# ---------------------------------------------------------------------- helpers
def workbench_symbol(symbol: str, asset_class: Any = None) -> str:
    """The workbench's spelling of an Alpaca symbol: crypto pairs with a slash (BTCUSD -> BTC/USD)."""
    if "/" in symbol or str(getattr(asset_class, "value", asset_class)) != "crypto":
        return symbol
    for quote in CRYPTO_QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return f"{symbol[:-len(quote)]}/{quote}"
    return symbol


def crypto_fee(amount: Decimal, rate: Decimal) -> Decimal:
    """Alpaca's crypto fee on `amount` of the credited asset: `rate` of it on 9 decimal places."""
    return (amount * rate).quantize(_NINE, rounding=ROUND_HALF_EVEN)


def _keys() -> tuple[str, str]:
    key, secret = read_keys()
    if key and secret:
        return key, secret
    partial = keys_set()
    extra = f" (only {', '.join(partial)} {'is' if len(partial) == 1 else 'are'} set)" if partial else ""
    raise CredentialsError(f"Alpaca paper trading needs an API key pair, but none is set{extra}: {_KEY_HINT}")


def _simple(raw: dict[str, Any]) -> bool:
    """Single-leg orders with a symbol and side (multi-leg option orders are not the workbench's)."""
    return bool(raw.get("symbol")) and raw.get("side") in ("buy", "sell")


def _price(value: float | None, crypto: bool) -> float | None:
    """Prices as Alpaca takes them: stocks in cents (0.0001 below $1), crypto as given."""
    if value is None or crypto:
        return value
    return round(value, 2 if value >= 1 else 4)


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def _ts(value: Any) -> pd.Timestamp | None:
    if not value:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


__all__ = ["AlpacaBroker", "crypto_fee", "workbench_symbol"]
