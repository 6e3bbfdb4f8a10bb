"""A fake of Alpaca's real-time market data WebSocket stream (and the REST history behind it) on 127.0.0.1.

The unmodified alpaca-py stream clients (`CryptoDataStream`, `StockDataStream`, via `url_override`) and
historical clients (`CryptoHistoricalDataClient`, `StockHistoricalDataClient`, via `url_override`) talk
to it. A deterministic `Market` (one seed) produces every trade, quote, bar and order book change and
keeps the full history, so a test can compare what a client stored with what the server had.

Reproduced (checked against alpaca-py 0.44's `alpaca/data/live/websocket.py` and Alpaca's stream docs):

* endpoints `/v1beta3/crypto/us`, `/v2/iex`, `/v2/sip` (any other path: HTTP 404 at the handshake);
* frames are msgpack (binary) when the handshake carries ``Content-Type: application/msgpack`` (alpaca-py
  always sends it), JSON text frames otherwise; in msgpack the ``t`` fields are msgpack Timestamps
  (ext type -1, nanosecond precision: alpaca-py calls ``.to_datetime()`` on them), in JSON RFC 3339
  strings with up to 9 fractional digits; client frames may be msgpack (binary, possibly fragmented) or
  JSON (text);
* the flow ``[{"T":"success","msg":"connected"}]`` -> auth message -> ``authenticated`` -> subscribe /
  unsubscribe -> ``[{"T":"subscription", <every channel of the feed>: [...]}]``; subscriptions add up,
  ``"*"`` means every symbol; an order book subscription is answered with a full book (``"r": true``),
  later book messages carry only changed levels (size 0 deletes a level);
* messages batched into arrays: trades ``t`` (crypto ``p s t i tks``; stocks ``i x p s c t z``),
  quotes ``q`` (crypto ``bp bs ap as t``; stocks add ``bx ax c z``), minute bars ``b`` (built from the
  market's own trades, sent when the minute is over, stamped at its start), daily bars ``d`` (the day so
  far, sent with each minute bar), order books ``o`` (crypto only);
* errors ``[{"T":"error","code":N,"msg":...}]``: 400 invalid syntax, 401 not authenticated, 402 auth
  failed, 403 already authenticated, 404 auth timeout (then the server closes), 405 symbol limit exceeded
  (`symbol_limit`), 406 connection limit exceeded (`connection_limit` per key and endpoint, default 1, as
  Alpaca: sent in answer to the auth message while another connection of the key holds the slot), 407
  slow client (more than `max_pending` messages waiting for a client: the server sends 407 and closes),
  409 insufficient subscription (``/v2/sip`` with a key without SIP), 410 invalid subscribe action for this
  feed (e.g. ``orderbooks`` on stocks, ``lulds`` on crypto), 500 internal error (injected);
* REST history that agrees with the stream: ``GET /v1beta3/crypto/us/trades|bars`` and
  ``/v2/stocks/trades|bars`` (symbols, start/end inclusive, limit, page_token, sort; `page_size` caps a
  page so pagination happens), same JSON shapes as Alpaca; stock endpoints need the key headers.

Faults a test can inject at any moment (thread-safe): `drop` (abort every socket, no close frame;
``linger`` keeps the key's slot busy afterwards, as Alpaca does until it reaps a dead connection), `stall`
(sockets stay open, nothing is sent; ``blackhole`` also stops reading, so pings and close frames go
unanswered; ``new_connections`` stalls connections opened later too), `refuse_auth` (402),
`refuse_connections` (HTTP 429 at the handshake), `duplicate` / `reorder` data frames, `send_error`.
Everything is recorded (`connections`, `auth_attempts`, `subscriptions`, `refused`) and `wait_until` waits
on a condition with a deadline.

Not reproduced: authentication by HTTP headers, news/options/test (``/v2/test``) streams, statuses,
LULDs, corrections, cancel errors and updated bars (accepted in subscriptions, never sent), trading hours
(stocks trade whenever the clock runs), different data on IEX and SIP, server-side pings (off), the close
codes Alpaca uses, whether Alpaca keeps the socket open after 402 (here it does, as after 406 where
Alpaca's Go SDK retries auth on the same socket). Trade ids increase per endpoint across symbols (so a
symbol's ids have gaps, as real ids do). Time is simulated: tick k is stamped ``start + k * tick``.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import concurrent.futures
import contextlib
import json
import logging
import math
import random
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import msgpack
import pandas as pd
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from .alpaca import API_KEY, SECRET_KEY
from .loopback import LoopbackServer, Request, Response

T = TypeVar("T")

CRYPTO_STREAM_PATH = "/v1beta3/crypto/us"
FEED_PATHS = {"crypto": CRYPTO_STREAM_PATH, "iex": "/v2/iex", "sip": "/v2/sip"}
_PATH_FEEDS = {v: k for k, v in FEED_PATHS.items()}
CRYPTO_TRADES_PATH = "/v1beta3/crypto/us/trades"
CRYPTO_BARS_PATH = "/v1beta3/crypto/us/bars"
STOCK_TRADES_PATH = "/v2/stocks/trades"
STOCK_BARS_PATH = "/v2/stocks/bars"

ERRORS = {
    400: "invalid syntax", 401: "not authenticated", 402: "auth failed", 403: "already authenticated",
    404: "auth timeout", 405: "symbol limit exceeded", 406: "connection limit exceeded",
    407: "slow client", 409: "insufficient subscription", 410: "invalid subscribe action for this feed",
    500: "internal error",
}
CRYPTO_CHANNELS = ("trades", "quotes", "orderbooks", "bars", "updatedBars", "dailyBars")
STOCK_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds",
                  "corrections", "cancelErrors")
_ALL_CHANNELS = frozenset(CRYPTO_CHANNELS + STOCK_CHANNELS + ("news", "imbalances"))
_TYPE_CHANNEL = {"t": "trades", "q": "quotes", "o": "orderbooks", "b": "bars", "u": "updatedBars",
                 "d": "dailyBars"}
_LIMITED_CHANNELS = ("trades", "quotes", "orderbooks")  # what `symbol_limit` counts (bars are free)
_NS = 1_000_000_000
_NY = ZoneInfo("America/New_York")
_BASE_PRICES = {"BTC/USD": 42_000.0, "ETH/USD": 2_300.0, "SOL/USD": 100.0, "AAPL": 185.0,
                "MSFT": 370.0, "SPY": 470.0}
_TAPES = {"SPY": "B", "AAPL": "C", "MSFT": "C"}
_TF = re.compile(r"^(\d+)(Min|T|Hour|H|Day|D)$")
_UNIT_SECONDS = {"Min": 60, "T": 60, "Hour": 3600, "H": 3600, "Day": 86400, "D": 86400}
log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- time formats
def rfc3339(ns: int) -> str:
    """Alpaca's timestamp spelling: UTC, Z, up to 9 fractional digits with trailing zeros cut."""
    sec, frac = divmod(ns, _NS)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    digits = f"{frac:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def to_datetime(ns: int) -> datetime:
    """A nanosecond stamp as alpaca-py's parsed models hold it (UTC, truncated to microseconds)."""
    return msgpack.Timestamp.from_unix_nano(ns).to_datetime()


def parse_ns(value: str | datetime | pd.Timestamp) -> int:
    """Nanoseconds since the epoch of an RFC 3339 string or datetime (naive = UTC)."""
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value)


def _day_start(ns: int, stock: bool) -> int:
    """Start of the trading day holding `ns`: UTC midnight (crypto), New York midnight (stocks)."""
    if not stock:
        return ns - ns % (86400 * _NS)
    local = datetime.fromtimestamp(ns / _NS, tz=_NY)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return int(midnight.timestamp()) * _NS


# ---------------------------------------------------------------------- the market
def aggregate(symbol: str, trades: Sequence[dict[str, Any]], t: int, kind: str = "b") -> dict[str, Any]:
    """The bar of `trades` (time-ordered), stamped `t`: the stream's bars and REST bars both use this."""
    volume = 0.0
    notional = 0.0
    for tr in trades:
        volume += tr["s"]
        notional += tr["p"] * tr["s"]
    prices = [tr["p"] for tr in trades]
    return {"T": kind, "S": symbol, "o": prices[0], "h": max(prices), "l": min(prices), "c": prices[-1],
            "v": round(volume, 9), "t": t, "n": len(trades), "vw": round(notional / volume, 9)}


def apply_orderbook(book: dict[str, dict[float, float]], msg: dict[str, Any]) -> None:
    """Apply an ``o`` message to ``{"b": {price: size}, "a": {...}}``: reset on ``r``, size 0 deletes."""
    if msg.get("r"):
        book["b"] = {}
        book["a"] = {}
    for side in ("b", "a"):
        levels = book.setdefault(side, {})
        for level in msg.get(side, []):
            if level["s"] == 0:
                levels.pop(level["p"], None)
            else:
                levels[level["p"]] = level["s"]


@dataclass
class _Book:
    """One symbol's book in integer price ticks (so no float drift), plus its trading state."""

    tick: float
    unit: float  # a typical size
    bids: dict[int, float]
    asks: dict[int, float]
    stock: bool
    last_t: int = 0

    def price(self, k: int) -> float:
        return round(k * self.tick, 8)

    def levels(self, side: str) -> list[dict[str, float]]:
        book = self.bids if side == "b" else self.asks
        keys = sorted(book, reverse=side == "b")
        return [{"p": self.price(k), "s": book[k]} for k in keys]


class Market:
    """A deterministic market: each `advance()` is one tick of simulated time for every symbol.

    Per tick and symbol: 0-2 trades against the top of the book (taker side ``tks``), 1-2 book changes,
    a book message with the changed levels (crypto), and a quote of the top of the book. A minute bar
    (and the day's bar so far) follows the first tick of the next minute. The history is kept whole.
    """

    def __init__(self, *, seed: int = 0, crypto: Iterable[str] = ("BTC/USD", "ETH/USD"),
                 stocks: Iterable[str] = ("AAPL", "SPY"), start: str | datetime = "2024-01-02T14:30:00Z",
                 tick: float = 1.0, depth: int = 10) -> None:
        self.seed = seed
        self.crypto = tuple(crypto)
        self.stocks = tuple(stocks)
        self.symbols = self.crypto + self.stocks
        self.start_ns = parse_ns(start)
        self.tick_ns = round(tick * _NS)
        if self.tick_ns < 1000:
            raise ValueError("tick must be at least a microsecond")
        self.depth = depth
        self.now_ns = self.start_ns
        self.ticks = 0
        ids = random.Random(f"{seed}|ids")
        self._next_id = {"crypto": ids.randrange(10**6, 10**7), "stocks": ids.randrange(10**12, 10**13)}
        self._rng = {s: random.Random(f"{seed}|{s}") for s in self.symbols}
        self._books: dict[str, _Book] = {}
        self.trades_by: dict[str, list[dict[str, Any]]] = {s: [] for s in self.symbols}
        self._trade_ts: dict[str, list[int]] = {s: [] for s in self.symbols}
        self.quotes_by: dict[str, list[dict[str, Any]]] = {s: [] for s in self.symbols}
        self.bars_by: dict[str, list[dict[str, Any]]] = {s: [] for s in self.symbols}
        self.daily_by: dict[str, list[dict[str, Any]]] = {s: [] for s in self.symbols}
        self.books_by: dict[str, list[dict[str, Any]]] = {s: [] for s in self.crypto}
        self._minute = {s: self.start_ns - self.start_ns % (60 * _NS) for s in self.symbols}
        self._minute_from = dict.fromkeys(self.symbols, 0)  # index of the minute's first trade
        for sym in self.symbols:
            self._books[sym] = self._new_book(sym)
            if sym in self.crypto:
                self.books_by[sym].append(self.snapshot(sym))

    def is_crypto(self, symbol: str) -> bool:
        return "/" in symbol

    # ------------------------------------------------------------------ construction
    def _new_book(self, sym: str) -> _Book:
        base = _BASE_PRICES.get(sym, 20.0 + zlib.crc32(sym.encode()) % 500)
        tick = 10.0 ** (math.floor(math.log10(base)) - 4)
        stock = not self.is_crypto(sym)
        book = _Book(tick=tick, unit=100.0 if stock else round(10_000 / base, 6), bids={}, asks={},
                     stock=stock, last_t=self.start_ns)
        mid = round(base / tick)
        rng = self._rng[sym]
        for i in range(self.depth):
            book.bids[mid - 1 - i] = self._size(book, rng, 0.2, 3.0)
            book.asks[mid + 1 + i] = self._size(book, rng, 0.2, 3.0)
        return book

    @staticmethod
    def _size(book: _Book, rng: random.Random, lo: float, hi: float) -> float:
        if book.stock:
            return float(max(1, int(rng.uniform(lo, hi) * book.unit)))
        return max(1e-6, round(rng.uniform(lo, hi) * book.unit, 6))

    def snapshot(self, sym: str) -> dict[str, Any]:
        """The whole book of `sym` as a reset (``r: true``) message stamped at its last change."""
        book = self._books[sym]
        return {"T": "o", "S": sym, "t": book.last_t, "b": book.levels("b"), "a": book.levels("a"),
                "r": True}

    # ------------------------------------------------------------------ one tick
    def advance(self) -> list[dict[str, Any]]:
        """Run one tick; return its messages in order (each also stored in the history)."""
        self.ticks += 1
        t0 = self.start_ns + (self.ticks - 1) * self.tick_ns  # this tick's messages are in [t0, now_ns)
        slots = max(32, 8 * len(self.symbols) + 8)
        gap = max(1, self.tick_ns // slots)
        stamp = iter(t0 + k * gap + 1 + (k * 7919 + self.ticks * 104729) % max(1, gap // 2)
                     for k in range(slots))
        out: list[dict[str, Any]] = []
        minute = t0 - t0 % (60 * _NS)
        for sym in self.symbols:
            if minute > self._minute[sym]:
                out += self._close_minute(sym, minute)
        for sym in self.symbols:
            out += self._tick_symbol(sym, stamp)
        self.now_ns = t0 + self.tick_ns
        return out

    def _close_minute(self, sym: str, minute: int) -> list[dict[str, Any]]:
        trades = self.trades_by[sym]
        first = self._minute_from[sym]
        done = self._minute[sym]
        self._minute[sym] = minute
        self._minute_from[sym] = len(trades)
        if first == len(trades):
            return []
        bar = aggregate(sym, trades[first:], done)
        day = _day_start(done, not self.is_crypto(sym))
        lo = self._index(sym, day)
        daily = aggregate(sym, trades[lo:], day, "d")
        self.bars_by[sym].append(bar)
        self.daily_by[sym].append(daily)
        return [bar, daily]

    def _tick_symbol(self, sym: str, stamp: Iterator[int]) -> list[dict[str, Any]]:
        rng = self._rng[sym]
        book = self._books[sym]
        out: list[dict[str, Any]] = []
        changed: dict[str, dict[int, float]] = {"b": {}, "a": {}}
        for _ in range(rng.choice((0, 1, 1, 2))):
            side = rng.choice("BS")
            levels, key = (book.asks, "a") if side == "B" else (book.bids, "b")
            k = min(levels) if side == "B" else max(levels)
            size = min(levels[k], self._size(book, rng, 0.01, 1.0))
            rest = round(levels[k] - size, 6)
            if rest <= 0:
                del levels[k]
            else:
                levels[k] = rest
            changed[key][k] = max(rest, 0.0)
            out.append(self._trade(sym, book, book.price(k), size, side, next(stamp)))
        for _ in range(rng.choice((1, 1, 2))):
            self._book_op(book, rng, changed)
        self._refill(book, rng, changed)
        t = next(stamp)
        if changed["b"] or changed["a"]:
            book.last_t = t
            if not book.stock:
                msg = {"T": "o", "S": sym, "t": t,
                       "b": [{"p": book.price(k), "s": s} for k, s in sorted(changed["b"].items(),
                                                                            reverse=True)],
                       "a": [{"p": book.price(k), "s": s} for k, s in sorted(changed["a"].items())]}
                self.books_by[sym].append(msg)
                out.append(msg)
        out.append(self._quote(sym, book, next(stamp)))
        return out

    def _book_op(self, book: _Book, rng: random.Random, changed: dict[str, dict[int, float]]) -> None:
        side = rng.choice("ba")
        levels = book.bids if side == "b" else book.asks
        roll = rng.random()
        best_bid, best_ask = max(book.bids), min(book.asks)
        if roll < 0.35 and best_ask - best_bid > 1:  # improve the price inside the spread
            k = best_bid + 1 if side == "b" else best_ask - 1
        elif roll < 0.7 or len(levels) <= 2:  # resize a level
            k = rng.choice(sorted(levels))
        else:  # cancel a level
            k = rng.choice(sorted(levels))
            del levels[k]
            changed[side][k] = 0.0
            return
        levels[k] = self._size(book, rng, 0.2, 3.0)
        changed[side][k] = levels[k]

    def _refill(self, book: _Book, rng: random.Random, changed: dict[str, dict[int, float]]) -> None:
        for side, levels in (("b", book.bids), ("a", book.asks)):
            while len(levels) < self.depth:
                if side == "b":
                    k = (min(levels) if levels else min(book.asks) - 1) - rng.randint(1, 3)
                else:
                    k = (max(levels) if levels else max(book.bids) + 1) + rng.randint(1, 3)
                levels[k] = self._size(book, rng, 0.2, 3.0)
                changed[side][k] = levels[k]

    def _trade(self, sym: str, book: _Book, price: float, size: float, side: str, t: int
               ) -> dict[str, Any]:
        feed = "stocks" if book.stock else "crypto"
        tid = self._next_id[feed]
        self._next_id[feed] += 1
        if book.stock:
            msg = {"T": "t", "S": sym, "i": tid, "x": "V", "p": price, "s": size, "c": ["@"], "t": t,
                   "z": _TAPES.get(sym, "A")}
        else:
            msg = {"T": "t", "S": sym, "p": price, "s": size, "t": t, "i": tid, "tks": side}
        self.trades_by[sym].append(msg)
        self._trade_ts[sym].append(t)
        return msg

    def _quote(self, sym: str, book: _Book, t: int) -> dict[str, Any]:
        kb, ka = max(book.bids), min(book.asks)
        if book.stock:
            msg = {"T": "q", "S": sym, "bx": "V", "bp": book.price(kb), "bs": book.bids[kb], "ax": "V",
                   "ap": book.price(ka), "as": book.asks[ka], "c": ["R"], "t": t, "z": _TAPES.get(sym, "A")}
        else:
            msg = {"T": "q", "S": sym, "bp": book.price(kb), "bs": book.bids[kb], "ap": book.price(ka),
                   "as": book.asks[ka], "t": t}
        self.quotes_by[sym].append(msg)
        return msg

    # ------------------------------------------------------------------ history queries
    def _index(self, sym: str, t: int) -> int:
        return bisect.bisect_left(self._trade_ts[sym], t)

    def trades(self, sym: str, start: int | None = None, end: int | None = None) -> list[dict[str, Any]]:
        """Trades of `sym` with start <= t <= end (nanoseconds; None: unbounded)."""
        ts = self._trade_ts.get(sym, [])
        lo = 0 if start is None else bisect.bisect_left(ts, start)
        hi = len(ts) if end is None else bisect.bisect_right(ts, end)
        return list(self.trades_by.get(sym, [])[lo:hi])

    def bars(self, sym: str, seconds: int = 60, start: int | None = None, end: int | None = None
             ) -> list[dict[str, Any]]:
        """REST bars of `sym` from its trades: buckets with t in [start, end], the running one included."""
        stock = not self.is_crypto(sym)
        out: list[dict[str, Any]] = []
        group: list[dict[str, Any]] = []
        key = None
        for tr in self.trades_by.get(sym, []):
            k = _day_start(tr["t"], stock) if seconds >= 86400 else tr["t"] - tr["t"] % (seconds * _NS)
            if k != key and group:
                out.append(aggregate(sym, group, key))  # type: ignore[arg-type]
                group = []
            key = k
            group.append(tr)
        if group:
            out.append(aggregate(sym, group, key))  # type: ignore[arg-type]
        return [b for b in out if (start is None or b["t"] >= start) and (end is None or b["t"] <= end)]

    def book(self, sym: str) -> dict[str, dict[float, float]]:
        """The current book of `sym` as ``{"b": {price: size}, "a": {...}}``."""
        b = self._books[sym]
        return {"b": {b.price(k): s for k, s in b.bids.items()},
                "a": {b.price(k): s for k, s in b.asks.items()}}


# ---------------------------------------------------------------------- records
@dataclass
class ConnectionRecord:
    """One WebSocket connection as the server saw it."""

    id: int
    feed: str  # "crypto" | "iex" | "sip"
    path: str
    encoding: str  # "msgpack" | "json"
    headers: dict[str, str]
    opened_at: float  # time.monotonic()
    key: str | None = None  # the key it authenticated with
    closed_at: float | None = None
    closed_by: str | None = None  # "client" | "server" | "dropped" | "shutdown"
    received: list[Any] = field(default_factory=list)  # decoded client messages, in order
    errors: list[int] = field(default_factory=list)  # error codes sent
    sent: list[dict[str, Any]] = field(default_factory=list)  # data messages written to the socket
    subscription: dict[str, list[str]] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.closed_at is None


@dataclass(frozen=True)
class AuthAttempt:
    conn: int
    key: object
    code: int | None  # None: authenticated; else the error code sent
    at: float


@dataclass(frozen=True)
class SubscriptionChange:
    conn: int
    action: str
    request: dict[str, Any]
    code: int | None  # None: accepted (the reply is the connection's subscription afterwards)
    subscription: dict[str, list[str]]


@dataclass(frozen=True)
class RefusedHandshake:
    path: str
    status: int
    at: float


class _Conn:
    """Server-side state of one connection (lives in the server's event loop)."""

    def __init__(self, ws: ServerConnection, rec: ConnectionRecord) -> None:
        self.ws = ws
        self.rec = rec
        self.queue: asyncio.Queue[tuple[str, bytes | str | None, list[dict[str, Any]]]] = asyncio.Queue()
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.pending = 0
        self.key: str | None = None
        self.sub: dict[str, list[str]] = {}
        self.closing = False
        self.linger = 0.0
        self.blackholed = False
        self.writer: asyncio.Task[None] | None = None

    def wants(self, msg: dict[str, Any], crypto: bool) -> bool:
        if crypto != (self.rec.feed == "crypto"):
            return False
        subs = self.sub.get(_TYPE_CHANNEL.get(msg["T"], ""), ())
        return msg["S"] in subs or "*" in subs


# ---------------------------------------------------------------------- encoding
def _wire(msg: dict[str, Any], encoding: str) -> bytes | str:
    out = dict(msg)
    if isinstance(out.get("t"), int):
        out["t"] = msgpack.Timestamp.from_unix_nano(out["t"]) if encoding == "msgpack" else rfc3339(out["t"])
    if encoding == "msgpack":
        return msgpack.packb(out)
    return json.dumps(out, separators=(",", ":"))


def _array(parts: list[Any], encoding: str) -> bytes | str:
    """A frame of already-encoded messages: a msgpack array header plus items, or a JSON array."""
    if encoding == "json":
        return "[" + ",".join(parts) + "]"
    n = len(parts)
    head = bytes([0x90 | n]) if n < 16 else (b"\xdc" + n.to_bytes(2, "big") if n < 65536
                                              else b"\xdd" + n.to_bytes(4, "big"))
    return head + b"".join(parts)


def _decode(raw: bytes | str) -> Any:
    return msgpack.unpackb(raw) if isinstance(raw, bytes) else json.loads(raw)


# ---------------------------------------------------------------------- the fake
class AlpacaStreamFake:
    """Alpaca's market data stream (WebSocket) and matching REST history on 127.0.0.1.

    Use as a context manager (or `start()` / `stop()`). The market ticks by itself at `rate` messages
    per second unless `paused`; `step(n)` runs n ticks by hand (one frame per tick), which is what
    deterministic tests use. All methods may be called from any thread.
    """

    def __init__(self, *, seed: int = 0, crypto: Iterable[str] = ("BTC/USD", "ETH/USD"),
                 stocks: Iterable[str] = ("AAPL", "SPY"), start: str | datetime | None = None,
                 tick: float = 1.0, rate: float = 500.0, paused: bool = False, realtime: bool = False,
                 api_key: str = API_KEY, secret_key: str = SECRET_KEY, sip_allowed: bool = False,
                 connection_limit: int | None = 1, symbol_limit: int | None = None,
                 auth_timeout: float = 10.0, max_pending: int = 100_000, page_size: int = 10_000) -> None:
        """`rate` is the whole market's messages per second (a tick makes about 3 per crypto and 2 per
        stock symbol); a client gets the share it subscribed to.

        With `realtime` the clock starts now and a tick lasts as long as it takes on the wall clock, so
        stamps track real time; otherwise the clock starts at `start` (default 2024-01-02 14:30 UTC)
        and runs `tick` simulated seconds per tick, much faster than the wall clock.
        """
        per_tick = 3 * len(tuple(crypto)) + 2 * len(tuple(stocks)) or 1
        self.tick_rate = max(rate / per_tick, 1e-3)
        if realtime:
            tick = 1.0 / self.tick_rate
            start = start or datetime.now(UTC)
        self.market = Market(seed=seed, crypto=crypto, stocks=stocks, tick=tick,
                             start=start or "2024-01-02T14:30:00Z")
        self.keys: dict[str, str] = {api_key: secret_key}
        self.sip_keys: set[str] = {api_key} if sip_allowed else set()
        self.connection_limit = connection_limit
        self.symbol_limit = symbol_limit
        self.auth_timeout = auth_timeout
        self.max_pending = max_pending
        self.page_size = page_size
        self.max_catchup = 2000  # ticks run at most per pacing step; a longer backlog is skipped
        self.connections: list[ConnectionRecord] = []
        self.auth_attempts: list[AuthAttempt] = []
        self.subscriptions: list[SubscriptionChange] = []
        self.refused: list[RefusedHandshake] = []
        self._paused = paused
        self._conns: dict[int, _Conn] = {}
        self._slots: dict[tuple[str, str], set[int]] = {}
        self._refuse_auth = False
        self._refuse_status: int | None = None
        self._refuse_until: float | None = None
        self._stall_new: tuple[bool] | None = None  # (blackhole,) while new connections stall
        self._dup_frames = 0
        self._reorder_frames = 0
        self._cond = threading.Condition()
        self._gen = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self.port = 0
        self.rest = LoopbackServer({
            ("GET", CRYPTO_TRADES_PATH): lambda r: self._rest_trades(r, crypto=True),
            ("GET", STOCK_TRADES_PATH): lambda r: self._rest_trades(r, crypto=False),
            ("GET", CRYPTO_BARS_PATH): lambda r: self._rest_bars(r, crypto=True),
            ("GET", STOCK_BARS_PATH): lambda r: self._rest_bars(r, crypto=False),
        })

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> AlpacaStreamFake:
        """Start the WebSocket server (own thread and event loop) and the REST server."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:  # report it to start(), don't die silently
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop_thread = threading.Thread(target=main, name="alpaca-stream-fake", daemon=True)
        self._loop_thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"stream fake did not start: {failure}")
        self.rest.__enter__()
        return self

    async def _open(self) -> None:
        self._wake = asyncio.Event()
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._handshake,
                                   compression=None, ping_interval=None, max_size=2**20)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())

    def stop(self) -> None:
        """Abort every connection, stop both servers and the loop thread."""
        self.rest.__exit__(None, None, None)
        loop = self._loop
        if loop is None or self._loop_thread is None:
            return

        async def shutdown() -> None:
            if self._ticker:
                self._ticker.cancel()
            for conn in list(self._conns.values()):
                conn.rec.closed_by = conn.rec.closed_by or "shutdown"
                conn.ws.transport.abort()
            if self._server:
                self._server.close(close_connections=False)
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._loop_thread.join(10)

    def __enter__(self) -> AlpacaStreamFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, feed: str = "crypto") -> str:
        """The stream URL of `feed` ("crypto", "iex" or "sip") for alpaca-py's `url_override`."""
        return f"ws://127.0.0.1:{self.port}{FEED_PATHS[feed]}"

    @property
    def rest_url(self) -> str:
        """Base URL for the historical clients' `url_override`."""
        return self.rest.url

    # ------------------------------------------------------------------ threads and waiting
    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` in the server's loop thread (market and connections live there) and return its result."""
        loop = self._loop
        if loop is None or threading.current_thread() is self._loop_thread:
            return fn(*args)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(10)

    def _notify(self) -> None:
        with self._cond:
            self._gen += 1
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
        """Wait until `predicate()` is truthy (re-checked on every server event); fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                gen = self._gen
            result = predicate()
            if result:
                return result
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            with self._cond:
                self._cond.wait_for(lambda g=gen: self._gen != g, timeout=min(left, 0.25))

    # ------------------------------------------------------------------ market control
    def pause(self) -> None:
        """Stop the market's own clock (`step` still works); no tick runs after this returns."""
        self._call(lambda: setattr(self, "_paused", True))

    def resume(self) -> None:
        """Let the market tick by itself again at `rate`."""
        self._paused = False
        if self._loop and self._wake:
            self._loop.call_soon_threadsafe(self._wake.set)

    def step(self, ticks: int = 1) -> list[dict[str, Any]]:
        """Run `ticks` ticks now, each sent as its own frame; return their messages."""
        def run() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for _ in range(ticks):
                msgs = self.market.advance()
                self._broadcast(msgs)
                out += msgs
            return out
        return self._call(run)

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        origin, done = loop.time(), 0
        interval = min(max(1.0 / self.tick_rate, 0.002), 0.05)
        while True:
            if self._paused:
                self._wake.clear()
                await self._wake.wait()
                origin, done = loop.time(), 0
                continue
            due = int((loop.time() - origin) * self.tick_rate) - done
            if due > self.max_catchup:  # fell far behind (a paused debugger, a busy machine): skip ahead
                origin += (due - self.max_catchup) / self.tick_rate
                due = self.max_catchup
            if due > 0:
                msgs: list[dict[str, Any]] = []
                for _ in range(due):
                    msgs += self.market.advance()
                done += due
                self._broadcast(msgs)
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ history (thread-safe copies)
    def trades(self, symbol: str, start: Any = None, end: Any = None) -> list[dict[str, Any]]:
        """Every trade of `symbol` so far (``t`` in ns), optionally with start <= t <= end."""
        lo = None if start is None else parse_ns(start) if not isinstance(start, int) else start
        hi = None if end is None else parse_ns(end) if not isinstance(end, int) else end
        return self._call(self.market.trades, symbol, lo, hi)

    def quotes(self, symbol: str) -> list[dict[str, Any]]:
        return self._call(lambda: list(self.market.quotes_by[symbol]))

    def stream_bars(self, symbol: str, daily: bool = False) -> list[dict[str, Any]]:
        """The minute (or daily) bars the market has published on the stream so far."""
        return self._call(lambda: list((self.market.daily_by if daily else self.market.bars_by)[symbol]))

    def orderbook_messages(self, symbol: str) -> list[dict[str, Any]]:
        """The initial snapshot and every book change message of `symbol`."""
        return self._call(lambda: list(self.market.books_by[symbol]))

    def book(self, symbol: str) -> dict[str, dict[float, float]]:
        return self._call(self.market.book, symbol)

    def now_ns(self) -> int:
        """The market clock (ns): the end of the last tick, after every message stamped so far."""
        return self._call(lambda: self.market.now_ns)

    # ------------------------------------------------------------------ keys and records
    def add_key(self, key: str, secret: str, *, sip: bool = False) -> None:
        """Accept another key (each key has its own connection slots)."""
        self.keys[key] = secret
        if sip:
            self.sip_keys.add(key)

    def connections_of(self, feed: str | None = None, key: str | None = None) -> list[ConnectionRecord]:
        with self._cond:
            return [c for c in self.connections
                    if (feed is None or c.feed == feed) and (key is None or c.key == key)]

    def open_connections(self, feed: str | None = None) -> list[ConnectionRecord]:
        return [c for c in self.connections_of(feed) if c.open]

    def subscribed(self, feed: str | None = None) -> list[ConnectionRecord]:
        """Open, authenticated connections with a subscription (what a client needs to get data)."""
        return [c for c in self.open_connections(feed) if c.key and any(c.subscription.values())]

    # ------------------------------------------------------------------ faults
    def drop(self, *, linger: float = 0.0) -> int:
        """Abort every open connection (TCP closed, no close frame). Their keys' slots stay taken
        for `linger` seconds (a second connection meanwhile gets 406). Returns how many."""
        def run() -> int:
            conns = list(self._conns.values())
            for conn in conns:
                conn.linger = linger
                conn.rec.closed_by = conn.rec.closed_by or "dropped"
                conn.ws.transport.abort()
            return len(conns)
        return self._call(run)

    def stall(self, *, blackhole: bool = False, new_connections: bool = False) -> None:
        """Send nothing more on the open connections (they stay open; frames are held, as TCP would).
        `blackhole` also stops reading them (pings, close frames and EOF go unnoticed, the slot stays
        taken); `new_connections` stalls later connections too (not even "connected" is sent)."""
        def run() -> None:
            for conn in self._conns.values():
                self._stall_conn(conn, blackhole)
            self._stall_new = (blackhole,) if new_connections else None
        self._call(run)

    def _stall_conn(self, conn: _Conn, blackhole: bool) -> None:
        conn.flowing.clear()
        if blackhole and not conn.blackholed:
            conn.blackholed = True
            conn.ws.transport.pause_reading()

    def unstall(self) -> None:
        """End every stall: held frames go out, blackholed sockets are read again."""
        def run() -> None:
            self._stall_new = None
            for conn in self._conns.values():
                conn.flowing.set()
                if conn.blackholed:
                    conn.blackholed = False
                    conn.ws.transport.resume_reading()
        self._call(run)

    def refuse_auth(self, refuse: bool = True) -> None:
        """Answer every auth message with 402 auth failed (even good keys) until called with False."""
        self._refuse_auth = refuse

    def refuse_connections(self, status: int = 429, seconds: float | None = None) -> None:
        """Reject WebSocket handshakes with HTTP `status` (for `seconds`, or until accept_connections)."""
        self._refuse_status = status
        self._refuse_until = None if seconds is None else time.monotonic() + seconds

    def accept_connections(self) -> None:
        self._refuse_status = None
        self._refuse_until = None

    def duplicate(self, frames: int = 1) -> None:
        """Send each of the next `frames` data frames twice."""
        self._call(lambda: setattr(self, "_dup_frames", self._dup_frames + frames))

    def reorder(self, frames: int = 1) -> None:
        """Send the messages of each of the next `frames` data frames in reverse order."""
        self._call(lambda: setattr(self, "_reorder_frames", self._reorder_frames + frames))

    def send_error(self, code: int, msg: str | None = None, *, close: bool | None = None) -> int:
        """Send ``[{"T":"error","code":code,"msg":...}]`` on every open connection; then close them
        if `close` (default: only for 407 slow client, which Alpaca follows with a disconnect)."""
        text = msg or ERRORS.get(code, "error")
        shut = code == 407 if close is None else close

        def run() -> int:
            conns = [c for c in self._conns.values() if not c.closing]
            for conn in conns:
                self._error(conn, code, text)
                if shut:
                    self._close(conn, "server")
            return len(conns)
        return self._call(run)

    # ------------------------------------------------------------------ WebSocket protocol
    def _handshake(self, ws: ServerConnection, request: WsRequest) -> WsResponse | None:
        path = request.path.split("?", 1)[0]
        if self._refuse_until is not None and time.monotonic() >= self._refuse_until:
            self.accept_connections()
        status = self._refuse_status if path in _PATH_FEEDS else 404
        if status is None:
            return None
        with self._cond:
            self.refused.append(RefusedHandshake(path, status, time.monotonic()))
        self._notify()
        reason = {429: "Too Many Requests", 404: "Not Found"}.get(status, "Refused")
        return WsResponse(status, reason, Headers([("Content-Type", "text/plain")]),
                          f"{status} {reason}\n".encode())

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        path = request.path.split("?", 1)[0]
        headers = {k: v for k, v in request.headers.raw_items()}
        ctype = request.headers.get("Content-Type", "") or ""
        rec = ConnectionRecord(id=len(self.connections) + 1, feed=_PATH_FEEDS[path], path=path,
                               encoding="msgpack" if "msgpack" in ctype.lower() else "json",
                               headers=headers, opened_at=time.monotonic())
        conn = _Conn(ws, rec)
        with self._cond:
            self.connections.append(rec)
        self._conns[rec.id] = conn
        if self._stall_new is not None:
            self._stall_conn(conn, self._stall_new[0])
        conn.writer = asyncio.get_running_loop().create_task(self._writer(conn))
        timer = asyncio.get_running_loop().create_task(self._auth_timer(conn))
        self._control(conn, {"T": "success", "msg": "connected"})
        self._notify()
        try:
            async for raw in ws:
                self._on_message(conn, raw)
        except ConnectionClosed:
            pass
        finally:
            timer.cancel()
            conn.writer.cancel()
            self._conns.pop(rec.id, None)
            rec.closed_at = time.monotonic()
            rec.closed_by = rec.closed_by or "client"
            self._release(conn)
            self._notify()

    def _release(self, conn: _Conn) -> None:
        if conn.key is None:
            return
        slot = self._slots.get((conn.key, conn.rec.feed), set())

        def free() -> None:
            slot.discard(conn.rec.id)
            self._notify()
        if conn.linger > 0:
            asyncio.get_running_loop().call_later(conn.linger, free)
        else:
            free()

    async def _writer(self, conn: _Conn) -> None:
        try:
            while True:
                kind, frame, msgs = await conn.queue.get()
                await conn.flowing.wait()
                if kind == "close":
                    await conn.ws.close()
                    return
                assert frame is not None
                await conn.ws.send(frame)
                conn.pending -= len(msgs)
                if msgs:
                    conn.rec.sent.extend(msgs)
                self._notify()
        except ConnectionClosed:
            pass

    async def _auth_timer(self, conn: _Conn) -> None:
        await asyncio.sleep(self.auth_timeout)
        if conn.key is None and not conn.closing:
            self._error(conn, 404, ERRORS[404])
            self._close(conn, "server")

    def _control(self, conn: _Conn, msg: dict[str, Any]) -> None:
        conn.queue.put_nowait(("frame", _array([_wire(msg, conn.rec.encoding)], conn.rec.encoding), []))

    def _error(self, conn: _Conn, code: int, text: str | None = None) -> None:
        conn.rec.errors.append(code)
        self._control(conn, {"T": "error", "code": code, "msg": text or ERRORS[code]})

    def _close(self, conn: _Conn, by: str) -> None:
        if not conn.closing:
            conn.closing = True
            conn.rec.closed_by = conn.rec.closed_by or by
            conn.queue.put_nowait(("close", None, []))

    def _on_message(self, conn: _Conn, raw: bytes | str) -> None:
        try:
            msg = _decode(raw)
        except Exception:
            conn.rec.received.append(raw)
            self._error(conn, 400)
            return
        conn.rec.received.append(msg)
        action = msg.get("action") if isinstance(msg, dict) else None
        if action == "auth":
            self._auth(conn, msg)
        elif action in ("subscribe", "unsubscribe"):
            self._subscribe(conn, action, msg)
        else:
            self._error(conn, 400)
        self._notify()

    def _auth(self, conn: _Conn, msg: dict[str, Any]) -> None:
        key, secret = msg.get("key"), msg.get("secret")
        feed = conn.rec.feed
        slot = self._slots.setdefault((str(key), feed), set())
        if conn.key is not None:
            code: int | None = 403
        elif self._refuse_auth or not isinstance(key, str) or self.keys.get(key) != secret:
            code = 402
        elif feed == "sip" and key not in self.sip_keys:
            code = 409
        elif self.connection_limit is not None and len(slot) >= self.connection_limit:
            code = 406
        else:
            code = None
        with self._cond:
            self.auth_attempts.append(AuthAttempt(conn.rec.id, key, code, time.monotonic()))
        if code is not None:
            self._error(conn, code)
            return
        assert isinstance(key, str)
        conn.key = conn.rec.key = key
        slot.add(conn.rec.id)
        self._control(conn, {"T": "success", "msg": "authenticated"})

    def _subscribe(self, conn: _Conn, action: str, msg: dict[str, Any]) -> None:
        request = {k: v for k, v in msg.items() if k != "action"}

        def record(code: int | None) -> None:
            with self._cond:
                self.subscriptions.append(SubscriptionChange(conn.rec.id, action, request, code,
                                                             {k: list(v) for k, v in conn.sub.items()}))
            if code is not None:
                self._error(conn, code)

        if conn.key is None:
            return record(401)
        channels = CRYPTO_CHANNELS if conn.rec.feed == "crypto" else STOCK_CHANNELS
        for name, symbols in request.items():
            if name not in _ALL_CHANNELS or not isinstance(symbols, list) or not all(
                    isinstance(s, str) and s for s in symbols):
                return record(400)
            if name not in channels:
                return record(410)
        new = {k: list(conn.sub.get(k, [])) for k in channels}
        for name, symbols in request.items():
            for sym in symbols:
                if action == "subscribe" and sym not in new[name]:
                    new[name].append(sym)
                elif action == "unsubscribe" and sym in new[name]:
                    new[name].remove(sym)
        if conn.rec.feed != "crypto":  # corrections and cancel errors come with trades
            new["corrections"] = list(new["trades"])
            new["cancelErrors"] = list(new["trades"])
        if self.symbol_limit is not None and sum(len(new[k]) for k in _LIMITED_CHANNELS
                                                 if k in new) > self.symbol_limit:
            return record(405)
        added_books = [s for s in new.get("orderbooks", []) if s not in conn.sub.get("orderbooks", [])]
        conn.sub = new
        conn.rec.subscription = {k: list(v) for k, v in new.items()}
        record(None)
        self._control(conn, {"T": "subscription", **new})
        if added_books:
            syms = self.market.crypto if "*" in added_books else [s for s in added_books
                                                                  if s in self.market.crypto]
            snaps = [self.market.snapshot(s) for s in syms]
            if snaps:
                self._send_data(conn, snaps, {})

    # ------------------------------------------------------------------ data frames
    def _broadcast(self, msgs: list[dict[str, Any]]) -> None:
        if not msgs:
            return
        cache: dict[tuple[int, str], bytes | str] = {}
        produced = False
        for conn in list(self._conns.values()):
            if conn.key is None or conn.closing:
                continue
            sel = [m for m in msgs if conn.wants(m, self.market.is_crypto(m["S"]))]
            if not sel:
                continue
            produced = True
            if self._reorder_frames:
                sel.reverse()
            self._send_data(conn, sel, cache)
            if self._dup_frames:
                self._send_data(conn, sel, cache)
        if produced:
            self._dup_frames = max(0, self._dup_frames - 1)
            self._reorder_frames = max(0, self._reorder_frames - 1)

    def _send_data(self, conn: _Conn, msgs: list[dict[str, Any]], cache: dict[tuple[int, str], Any]) -> None:
        enc = conn.rec.encoding
        parts = []
        for m in msgs:
            key = (id(m), enc)
            if key not in cache:
                cache[key] = _wire(m, enc)
            parts.append(cache[key])
        conn.queue.put_nowait(("frame", _array(parts, enc), msgs))
        conn.pending += len(msgs)
        if self.max_pending and conn.pending > self.max_pending and not conn.closing:
            conn.closing = True
            asyncio.get_running_loop().create_task(self._slow_client(conn))

    async def _slow_client(self, conn: _Conn) -> None:
        """407: drop what waits for the client, tell it (ahead of any stall) and hang up."""
        conn.rec.closed_by = conn.rec.closed_by or "server"
        if conn.writer:
            conn.writer.cancel()
        while not conn.queue.empty():
            conn.queue.get_nowait()
        conn.pending = 0
        conn.rec.errors.append(407)
        frame = _array([_wire({"T": "error", "code": 407, "msg": ERRORS[407]}, conn.rec.encoding)],
                       conn.rec.encoding)
        try:
            await asyncio.wait_for(conn.ws.send(frame), 1.0)
            await asyncio.wait_for(conn.ws.close(), 1.0)
        except (TimeoutError, ConnectionClosed):
            conn.ws.transport.abort()
        self._notify()

    # ------------------------------------------------------------------ REST history
    def _rest_auth(self, req: Request, *, crypto: bool) -> Response | None:
        key, secret = req.headers.get("apca-api-key-id"), req.headers.get("apca-api-secret-key")
        if crypto and not key and not secret:
            return None
        if key not in self.keys or self.keys[key] != secret:
            return Response(401, {"code": 40110000, "message": "request is not authorized"})
        return None

    def _rest_query(self, req: Request, *, crypto: bool) -> tuple[list[str], int, int, int, bool, int
                                                                  ] | Response:
        q = req.query
        symbols = [s for s in q.get("symbols", "").split(",") if s]
        if not symbols:
            return Response(422, {"code": 42210000, "message": "no symbol specified"})
        try:
            start = parse_ns(q["start"]) if q.get("start") else _day_start(self.now_ns(), not crypto)
            end = parse_ns(q["end"]) if q.get("end") else self.now_ns()
            limit = int(q.get("limit") or 1000)
        except ValueError:
            return Response(422, {"code": 42210000, "message": "invalid start, end or limit"})
        if not 1 <= limit <= 10_000:
            return Response(422, {"code": 42210000, "message": "invalid limit: must be between 1 and 10000"})
        sort = q.get("sort", "asc")
        if sort not in ("asc", "desc"):
            return Response(422, {"code": 42210000, "message": f"invalid sort: {sort}"})
        offset = 0
        if q.get("page_token"):
            try:
                offset = int(base64.urlsafe_b64decode(q["page_token"]).decode().rsplit("|", 1)[1])
            except (ValueError, IndexError):
                return Response(422, {"code": 42210000, "message": "invalid page token"})
        return sorted(set(symbols)), start, end, limit, sort == "desc", offset

    def _page(self, key: str, rows: list[tuple[str, dict[str, Any]]], limit: int, offset: int) -> Response:
        size = min(limit, self.page_size)
        page = rows[offset:offset + size]
        token = None
        if offset + size < len(rows):
            sym, row = rows[offset + size]
            token = base64.urlsafe_b64encode(f"{sym}|{row['t']}|{offset + size}".encode()).decode()
        out: dict[str, list[dict[str, Any]]] = {}
        for sym, row in page:
            out.setdefault(sym, []).append(row)
        return Response(200, {key: out, "next_page_token": token})

    def _rest_trades(self, req: Request, *, crypto: bool) -> Response:
        denied = self._rest_auth(req, crypto=crypto)
        if denied:
            return denied
        return self._rest_history(req, crypto=crypto, key="trades", fetch=self.trades)

    def _rest_bars(self, req: Request, *, crypto: bool) -> Response:
        denied = self._rest_auth(req, crypto=crypto)
        if denied:
            return denied
        m = _TF.match(req.query.get("timeframe", ""))
        seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)] if m else 0
        if not 0 < seconds <= 86400:
            return Response(422, {"code": 42210000, "message": "invalid timeframe"})
        return self._rest_history(req, crypto=crypto, key="bars",
                                  fetch=lambda sym, start, end: self._call(self.market.bars, sym, seconds,
                                                                           start, end))

    def _rest_history(self, req: Request, *, crypto: bool, key: str,
                      fetch: Callable[[str, Any, Any], list[dict[str, Any]]]) -> Response:
        """A page of `key` (trades or bars) of the asked symbols of one asset class, newest first
        when asked, as the historical endpoints serve them."""
        parsed = self._rest_query(req, crypto=crypto)
        if isinstance(parsed, Response):
            return parsed
        symbols, start, end, limit, desc, offset = parsed
        rows: list[tuple[str, dict[str, Any]]] = []
        for sym in symbols:
            if self.market.is_crypto(sym) != crypto:
                continue
            items = fetch(sym, start, end)
            for item in items[::-1] if desc else items:
                row = {k: v for k, v in item.items() if k not in ("T", "S")}
                row["t"] = rfc3339(item["t"])
                rows.append((sym, row))
        return self._page(key, rows, limit, offset)


# ---------------------------------------------------------------------- alpaca-py helpers
def _tune(stream: Any, backoff: tuple[float, float] | None) -> Any:
    if backoff is not None:
        # alpaca-py 0.44 keeps its reconnect backoff (1 s doubling to 30 s, halved by jitter) in these
        # private attributes; fail loudly if a new version renames them instead of silently slowing tests
        assert hasattr(stream, "_reconnect_min_backoff") and hasattr(stream, "_reconnect_max_backoff")
        stream._reconnect_min_backoff, stream._reconnect_max_backoff = backoff
    return stream


def _ws_params(close_timeout: float | None, extra: dict[str, Any] | None) -> dict[str, Any] | None:
    if close_timeout is None and not extra:
        return None
    # alpaca-py replaces (not merges) its defaults with websocket_params, so restate them
    params: dict[str, Any] = {"ping_interval": 10, "ping_timeout": 180, "max_queue": 1024}
    if close_timeout is not None:
        params["close_timeout"] = close_timeout
    params.update(extra or {})
    return params


def crypto_stream(fake: AlpacaStreamFake, *, key: str = API_KEY, secret: str = SECRET_KEY,
                  raw_data: bool = False, data_timeout: float | None = None,
                  backoff: tuple[float, float] | None = (0.02, 0.2), close_timeout: float | None = None,
                  websocket_params: dict[str, Any] | None = None) -> Any:
    """An unmodified alpaca-py `CryptoDataStream` pointed at the fake. `backoff` (min, max seconds)
    shortens alpaca-py's reconnect backoff (None keeps its 1-30 s); `close_timeout` bounds its close
    handshake (websockets' default is 10 s, which a stalled server makes it wait out)."""
    from alpaca.data.live.crypto import CryptoDataStream

    stream = CryptoDataStream(key, secret, raw_data=raw_data, url_override=fake.url("crypto"),
                              data_timeout=data_timeout,
                              websocket_params=_ws_params(close_timeout, websocket_params))
    return _tune(stream, backoff)


def stock_stream(fake: AlpacaStreamFake, feed: str = "iex", *, key: str = API_KEY, secret: str = SECRET_KEY,
                 raw_data: bool = False, data_timeout: float | None = None,
                 backoff: tuple[float, float] | None = (0.02, 0.2), close_timeout: float | None = None,
                 websocket_params: dict[str, Any] | None = None) -> Any:
    """An unmodified alpaca-py `StockDataStream` on the fake's ``/v2/<feed>`` (see `crypto_stream`)."""
    from alpaca.data.enums import DataFeed
    from alpaca.data.live.stock import StockDataStream

    stream = StockDataStream(key, secret, raw_data=raw_data, feed=DataFeed(feed), url_override=fake.url(feed),
                             data_timeout=data_timeout,
                             websocket_params=_ws_params(close_timeout, websocket_params))
    return _tune(stream, backoff)


def crypto_history(fake: AlpacaStreamFake, *, key: str | None = API_KEY, secret: str | None = SECRET_KEY
                   ) -> Any:
    """An unmodified `CryptoHistoricalDataClient` on the fake's REST history."""
    from alpaca.data.historical.crypto import CryptoHistoricalDataClient

    return CryptoHistoricalDataClient(key, secret, url_override=fake.rest_url)


def stock_history(fake: AlpacaStreamFake, *, key: str = API_KEY, secret: str = SECRET_KEY) -> Any:
    """An unmodified `StockHistoricalDataClient` on the fake's REST history."""
    from alpaca.data.historical.stock import StockHistoricalDataClient

    return StockHistoricalDataClient(key, secret, url_override=fake.rest_url)


class Collector:
    """Keeps what alpaca-py hands to `handle` (pass ``collector.handle``: alpaca-py accepts only
    coroutine functions, not objects with an async ``__call__``) and waits on it."""

    def __init__(self, fail: Callable[[Any], bool] | None = None) -> None:
        self.items: list[Any] = []
        self.fail = fail  # raise in the handler for the items it matches (after storing them)
        self._cond = threading.Condition()

    async def handle(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()
        if self.fail is not None and self.fail(item):
            raise RuntimeError(f"handler failed on {item!r}")

    def __len__(self) -> int:
        with self._cond:
            return len(self.items)

    def snapshot(self) -> list[Any]:
        with self._cond:
            return list(self.items)

    def wait(self, predicate: Callable[[list[Any]], Any], timeout: float = 5.0, what: str = "items") -> None:
        """Wait until `predicate(items)` holds; fail after `timeout` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.items), timeout):
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; got {len(self.items)}")

    def wait_count(self, n: int, timeout: float = 5.0) -> None:
        self.wait(lambda items: len(items) >= n, timeout, f"{n} items")


class StreamThread:
    """Run an alpaca-py stream's blocking `run()` in a daemon thread and stop it without hanging.

    alpaca-py's `stop()` only raises a flag that its receive loop checks between frames (up to 5 s on a
    quiet stream) and cannot interrupt a connect that waits for the server, so `stop()` here also closes
    the socket through the stream's own `close()` coroutine, then joins with a deadline.
    """

    def __init__(self, stream: Any, name: str = "alpaca-stream") -> None:
        self.stream = stream
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self.stream.run()
        except BaseException as exc:  # keep it for the test; run() itself swallows nearly everything
            self.error = exc

    def start(self) -> StreamThread:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` for run() to return; True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def loop(self, timeout: float = 5.0) -> asyncio.AbstractEventLoop | None:
        """The stream's running event loop (None if run() already returned)."""
        deadline = time.monotonic() + timeout
        while self.alive and time.monotonic() < deadline:
            loop = getattr(self.stream, "_loop", None)
            if loop is not None and loop.is_running():
                return loop
            self._thread.join(0.005)
        return None

    def stop(self, timeout: float = 5.0, *, force: bool = True) -> None:
        """`stream.stop()`, then (with `force`) close its socket; fail if run() does not return."""
        if not self.alive:
            return
        loop = self.loop(timeout)
        if loop is not None:
            with contextlib.suppress(RuntimeError, concurrent.futures.TimeoutError):
                self.stream.stop()  # may fail if the loop ended between the check and the call
            if force:
                self.close_socket(loop)
        if not self.join(timeout):
            raise AssertionError("alpaca-py stream thread did not stop")

    def close_socket(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Close the stream's socket from outside (its receive loop then sees the stop flag)."""
        loop = loop or self.loop(1.0)
        if loop is None:
            return
        coro = self.stream.close()
        try:
            asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:
            coro.close()

    def __enter__(self) -> StreamThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LogWatcher(logging.Handler):
    """Collect records of a logger (alpaca-py's stream logger by default) at INFO and up, and wait on them."""

    def __init__(self, name: str = "alpaca.data.live.websocket") -> None:
        super().__init__(logging.INFO)
        self.logger = logging.getLogger(name)
        self.records: list[logging.LogRecord] = []
        self._cond = threading.Condition()
        self._level = self.logger.level

    def emit(self, record: logging.LogRecord) -> None:
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()

    def messages(self, level: int = logging.INFO) -> list[str]:
        with self._cond:
            return [r.getMessage() for r in self.records if r.levelno >= level]

    def count(self, text: str, level: int = logging.INFO) -> int:
        return sum(text in m for m in self.messages(level))

    def wait(self, text: str, times: int = 1, timeout: float = 5.0, level: int = logging.INFO) -> None:
        """Wait until `text` appears in `times` records at `level` or above."""
        with self._cond:
            ok = self._cond.wait_for(lambda: sum(
                text in r.getMessage() for r in self.records if r.levelno >= level) >= times, timeout)
        if not ok:
            raise AssertionError(f"timed out waiting for {times}x log {text!r}; got {self.messages()}")

    def __enter__(self) -> LogWatcher:
        self.logger.addHandler(self)
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)


__all__ = [
    "CRYPTO_BARS_PATH", "CRYPTO_STREAM_PATH", "CRYPTO_TRADES_PATH", "ERRORS", "FEED_PATHS", "STOCK_BARS_PATH",
    "STOCK_TRADES_PATH", "AlpacaStreamFake", "AuthAttempt", "Collector", "ConnectionRecord", "LogWatcher",
    "Market", "RefusedHandshake", "StreamThread", "SubscriptionChange", "aggregate", "apply_orderbook",
    "crypto_history", "crypto_stream", "parse_ns", "rfc3339", "stock_history", "stock_stream", "to_datetime",
]
