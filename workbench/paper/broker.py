"""The broker contract every paper-trading venue implements (simulated, Alpaca paper, ccxt sandboxes).

The runner talks to a broker only through `Broker`; one shared test suite
(`tests/broker_contract.py`) runs against every implementation. The rules that matter for safety:

- **Idempotent submission.** `submit` is keyed on the caller's `client_order_id`. Submitting an id
  the broker already knows never creates a second order: the existing order comes back. A
  transport failure (timeout, lost reply, 5xx after retries) is resolved by looking the id up
  before any resubmission; when even the lookup fails, `BrokerUnavailable` says the outcome is
  unknown and the caller must look the id up later.
- **Refusals are errors.** An order the venue answers with a refusal raises `OrderRejected` with
  the venue's reason; nothing is retried.
- **Order state is cumulative.** `Order.filled_qty`, `avg_fill_price` and `fee` are totals so far;
  the journal derives fills from their increments, so polling twice never counts a fill twice.
- **Fees are booked in the currency the venue charged them** (`Order.fee_currency`). Alpaca and
  Binance take a crypto buy's fee out of the asset received: `filled_qty` is the gross quantity
  traded and the account holds `filled_qty - fee` of the asset; a fee in the quote currency
  comes out of cash. `None` means the account (quote) currency.
- **Quantities are positive**, the side says the direction; positions are signed (short < 0).
  Amounts are floats at this boundary; the journal stores them as exact decimals.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import pandas as pd

from workbench.errors import ConfigError

__all__ = [
    "Account",
    "Broker",
    "BrokerKind",
    "Order",
    "OrderRequest",
    "OrderStatus",
    "OrderType",
    "Position",
    "Side",
    "client_order_id",
    "fee_in_asset",
    "symbol_asset",
]


class BrokerKind(StrEnum):
    """Which broker a paper config trades through: the simulated venue, Alpaca's paper account or
    a ccxt exchange's sandbox."""

    SIM = "sim"
    ALPACA = "alpaca"
    CCXT = "ccxt"


class Side(StrEnum):
    """Buy or sell."""

    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    """Market orders for signals; stop, limit and trailing stop orders protect open positions; limit,
    stop and stop-limit orders also enter (a strategy's resting entries, SEMANTICS.md "Entry orders")."""

    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    TRAILING_STOP = "trailing_stop"
    STOP_LIMIT = "stop_limit"


class OrderStatus(StrEnum):
    """Lifecycle of an order, at the broker and in the journal (which adds the two states before the
    broker's answer is known)."""

    INTENT = "intent"  # journaled (fsynced) before it is sent: a crash after this never sends it twice
    UNKNOWN = "unknown"  # sent, but the answer was lost (timeout, dropped connection): looked up by id
    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def done(self) -> bool:
        """Whether the order can no longer change."""
        return self in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED)


@dataclass(frozen=True, kw_only=True)
class OrderRequest:
    """What the runner asks a broker to do.

    `client_order_id` is deterministic (see `client_order_id`), at most 36 characters of
    ``[A-Za-z0-9_-]`` so that every venue accepts it. `stop_price` is set for STOP, `limit_price`
    for LIMIT, `trail_percent` (a fraction, 0.02 = 2 %) and optionally `ref_price` (the starting
    high/low water mark) for TRAILING_STOP, both prices for STOP_LIMIT. Orders sharing an
    `oco_group` cancel each other when one fills (a position's protective exits).

    A resting entry sets `expire_bars`, its time in force in the symbol's bars from the first bar that
    opens once it is placed. A protective leg placed with a resting entry (its `oco_group` names the
    entry) may give its level as an `offset` from the entry's fill price instead (a long's stop at
    fill x (1 - offset), its target at fill x (1 + offset); a short's mirrored): it waits, dormant,
    until the entry fills.
    """

    client_order_id: str
    symbol: str
    side: Side
    qty: float
    type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    stop_price: float | None = None
    trail_percent: float | None = None
    ref_price: float | None = None
    oco_group: str | None = None
    offset: float | None = None
    expire_bars: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "side", Side(self.side))
        object.__setattr__(self, "type", OrderType(self.type))
        cid = self.client_order_id
        if not (0 < len(cid) <= 36) or not all(c.isascii() and (c.isalnum() or c in "-_") for c in cid):
            raise ConfigError(f"client order id {cid!r} must be 1-36 characters of letters, digits, - and _")
        if not (isinstance(self.qty, int | float) and math.isfinite(self.qty) and self.qty > 0):
            raise ConfigError(f"order {cid}: quantity {self.qty!r} must be a positive number")
        need = {
            OrderType.LIMIT: ("limit_price",),
            OrderType.STOP: ("stop_price",),
            OrderType.TRAILING_STOP: ("trail_percent",),
            OrderType.STOP_LIMIT: ("stop_price", "limit_price"),
        }.get(self.type, ())
        if self.offset is not None:
            if not (self.oco_group and self.type in (OrderType.STOP, OrderType.LIMIT)
                    and math.isfinite(self.offset) and 0 < self.offset < 1):
                raise ConfigError(f"order {cid}: an offset {self.offset!r} is for a stop or limit leg of a "
                                  "resting entry (its oco_group), a fraction in (0, 1)")
            need = ()
        if self.expire_bars is not None and not (isinstance(self.expire_bars, int) and self.expire_bars >= 1):
            raise ConfigError(f"order {cid}: expire_bars={self.expire_bars!r} must be a whole number of bars "
                              ">= 1")
        for name in need:
            value = getattr(self, name)
            if value is None or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"order {cid}: a {self.type.value} order needs a positive {name}")


@dataclass(frozen=True, kw_only=True)
class Order:
    """An order as the broker reports it (cumulative fill totals)."""

    client_order_id: str
    broker_order_id: str
    symbol: str
    side: Side
    type: OrderType
    qty: float
    status: OrderStatus
    filled_qty: float = 0.0
    avg_fill_price: float | None = None
    fee: float = 0.0
    #: the currency `fee` is charged in: the traded asset (``BTC`` of ``BTC/USD``, ``AAPL``), the
    #: quote currency, or another coin (BNB); None is the account (quote) currency
    fee_currency: str | None = None
    limit_price: float | None = None
    stop_price: float | None = None
    trail_percent: float | None = None
    oco_group: str | None = None
    offset: float | None = None
    expire_bars: int | None = None
    submitted_at: pd.Timestamp | None = None
    updated_at: pd.Timestamp | None = None
    reject_reason: str | None = None
    extra: dict[str, Any] | None = None

    def with_(self, **changes: Any) -> Order:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @property
    def remaining(self) -> float:
        """Quantity not yet filled."""
        return max(self.qty - self.filled_qty, 0.0)

    @property
    def fee_in_asset(self) -> bool:
        """Whether the fee was taken out of the traded asset (so the position moved by less than
        `filled_qty`)."""
        return fee_in_asset(self.symbol, self.fee_currency)


@dataclass(frozen=True)
class Position:
    """A signed holding (short < 0) and its average entry price."""

    symbol: str
    qty: float
    avg_price: float


@dataclass(frozen=True)
class Account:
    """Cash and equity (cash plus positions at the latest prices) in the account currency."""

    cash: float
    equity: float
    currency: str = "USD"


class Broker(ABC):
    """A trading venue. Implementations: `SimBroker`, `AlpacaBroker`, `CcxtBroker`.

    Every method may raise `BrokerUnavailable` (could not reach the venue after retries);
    `submit` also raises `OrderRejected`. Symbols are the workbench's (``BTC/USDT``, ``AAPL``).
    """

    name: str = "broker"
    #: whether orders sharing an `oco_group` may all rest on one position and the venue cancels the
    #: others when one fills (the simulated broker); when False the runner keeps one protective order
    #: at the venue and watches the other levels itself at each tick
    native_oco: bool = False
    #: whether limit, stop and stop-limit *entries* may be sent (SEMANTICS.md "Entry orders")
    resting_entries: bool = False
    #: whether the venue expires a resting entry after its `expire_bars` itself (the simulated broker);
    #: when False the runner cancels it once its time in force has passed
    expires_entries: bool = False
    #: whether protective legs given as an `offset` may wait, dormant, at the venue until their resting
    #: entry fills (the simulated broker); when False the runner places them once the entry has filled
    dormant_legs: bool = False

    @abstractmethod
    def submit(self, request: OrderRequest) -> Order:
        """Place an order, or return the existing one when its client order id is already known."""

    @abstractmethod
    def get_order(self, client_order_id: str) -> Order | None:
        """The order with this client order id, or None when the broker has never seen it."""

    @abstractmethod
    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Orders that can still fill (new or partially filled)."""

    @abstractmethod
    def cancel(self, client_order_id: str) -> Order | None:
        """Cancel an order; cancelling a finished or unknown order is not an error (returns its state)."""

    @abstractmethod
    def positions(self) -> dict[str, Position]:
        """Non-zero positions by symbol."""

    @abstractmethod
    def account(self) -> Account:
        """Cash and equity."""

    @abstractmethod
    def price(self, symbol: str) -> float:
        """The latest price a market order would fill near (before slippage and fees)."""

    def normalize_qty(self, symbol: str, qty: float) -> float:
        """Round a quantity down to what the venue accepts (0 when below its minimum)."""
        return qty

    def lot(self, symbol: str) -> Any:
        """The venue's lot rules for `symbol` (a `workbench.backtest.Lot`: step, min_qty, min_notional);
        the runner applies them with the backtest's own (SEMANTICS.md). Default: any size."""
        from workbench.backtest.engine import Lot

        return Lot()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def symbol_asset(symbol: str) -> str:
    """The asset a symbol trades: the base of a pair (``BTC`` of ``BTC/USD``), else the ticker."""
    return symbol.split("/", 1)[0]


def fee_in_asset(symbol: str, fee_currency: str | None) -> bool:
    """Whether a fee charged in `fee_currency` on `symbol` is paid in the traded asset."""
    return fee_currency is not None and fee_currency == symbol_asset(symbol)


def client_order_id(strategy: str, symbol: str, bar: pd.Timestamp | str, leg: str) -> str:
    """A deterministic client order id for one order leg of one strategy, symbol and signal bar.

    The same inputs always give the same id, so a runner that restarts mid-tick asks for the same
    order again and the broker (or the lookup before resubmission) refuses to duplicate it.
    `leg` names the order's role (``entry``, ``exit``, ``sl``, ``tp``, ``tsl``), at most 6 characters.
    """
    if not (0 < len(leg) <= 6) or not leg.isalnum():
        raise ConfigError(f"order leg {leg!r} must be 1-6 letters or digits")
    stamp = pd.Timestamp(bar).isoformat()
    digest = hashlib.sha256(f"{strategy}|{symbol}|{stamp}|{leg}".encode()).hexdigest()[:24]
    return f"wb{digest}-{leg}"
