"""Binance spot market streams (WebSocket) and the REST endpoints behind them, on 127.0.0.1.

Three pieces that share one simulated market, so every view agrees:

- `Venue`: a seeded, deterministic order-book market per symbol. Makers quote around a hidden
  fair price that wanders a tick at a time; each event is a taker order (one trade per resting
  order it fills, one aggregate trade per price level, at most three levels swept), a new resting
  order or a cancel, and bumps the book's update id by one. Event ``i`` of a symbol happens at
  ``start_ms + i * 1000 / rate`` on the venue clock (wall time × `speed`; `pause` freezes it and
  generates everything up to it, `tick` steps a frozen clock), so trades, ids, prices and book
  changes depend only on the seed. The whole history stays in memory: `trades`, `agg_trades`,
  `book`, `klines` (1s and 1m buckets built from the trades, longer intervals from those) are
  what the server really had, to compare a client's data with. Events are generated on demand
  (by the stream pump every few ms and by every REST request), so REST can be a little ahead of
  the stream, as on Binance.
- `BinanceStreamServer`: a ``websockets`` (v17) asyncio server in its own thread, speaking the
  market-stream protocol of ``wss://stream.binance.com:9443``.
- `StreamRestServer`: the REST fake of `servers.binance` (exchangeInfo, time, ping, error shapes)
  plus ``/api/v3/depth``, ``/api/v3/trades``, ``/api/v3/historicalTrades``, ``/api/v3/aggTrades``,
  ``/api/v3/ticker/bookTicker`` and ``/api/v3/klines``, all served from the venue.

`FakeBinance` runs all three; `pro_client` builds an unmodified ``ccxt.pro.binance`` pointed at
them (every ``http(s)`` URL to the REST fake, every ``ws(s)`` URL to the stream server).

Reproduced from Binance (docs of 2026 and the installed ccxt's reading of them):

- raw streams at ``/ws`` and ``/ws/<stream>`` (ccxt connects to ``/ws/<n>``: a name that is not a
  stream is ignored), combined streams at ``/stream?streams=a/b`` wrapped as
  ``{"stream":..,"data":..}``; ``SUBSCRIBE``/``UNSUBSCRIBE`` (``{"result":null,"id":n}``),
  ``LIST_SUBSCRIPTIONS``, ``SET_PROPERTY``/``GET_PROPERTY`` ``combined``; a well-formed stream of an
  unknown symbol or kind is accepted silently and never sends anything; errors in Binance's shape
  (``{"error":{"code":3,"msg":"Invalid JSON: ..."},"id":..}``, code 2 for a bad method or id, code
  0/1 for properties); a malformed stream name gets ``Invalid request: invalid stream`` and the
  connection is closed (as observed on the real service); more than 5 incoming messages a second
  closes the connection;
- streams ``<s>@trade`` (``e t p q T m M``), ``<s>@aggTrade`` (``a f l``), ``<s>@depth`` (1000 ms)
  and ``<s>@depth@100ms`` diffs (``depthUpdate`` with ``U``/``u``, absolute quantities, ``0``
  removes a level), ``<s>@depth5|10|20[@100ms]`` partial books, ``<s>@bookTicker`` (``u s b B a
  A``, real time), ``<s>@kline_<interval>`` (every interval of `INTERVAL_MS`; ``x: true`` once
  the interval is over, an in-progress update every 2 s except for 1s), ``<s>@ticker`` and
  ``<s>@miniTicker`` (every 1000 ms);
- REST limits and defaults (depth 100/5000, larger depth limits truncated; trades 500/1000),
  ``aggTrades`` by ``fromId``, ``startTime`` and/or ``endTime`` (the 2023 rules: either time
  alone, no one-hour cap), ``historicalTrades`` without an API key (since 2023), the depth
  snapshot's ``lastUpdateId`` on the same counter as the diff stream's ``U``/``u``, and 429 /
  418 / 5xx answers in Binance's shape (with ``Retry-After``).

Choices where Binance's behaviour is not documented: ``fromId`` together with a time answers
``-1128`` (Combination of optional parameters invalid); a trades or klines ``limit`` above 1000
answers ``-1130`` like the klines fake; the server closes with code 1008 after an invalid stream or
a sixth message within a second; zero-volume klines repeat the previous close; the event time of a
trade message equals its trade time.

Faults a test can trigger at any moment (each call returns once it is in force): `drop` every
connection (TCP abort, no close frame), `stall` (send nothing; ``pongs=False`` also stops reading,
so pings go unanswered), `skip_depth` (lose the next depth diff(s) of a symbol: a sequence gap),
`duplicate_next`, `reorder_next` (swap adjacent messages), `refuse` new connections (an HTTP
status such as 429/503 with ``Retry-After``, or ``status=None``: the TCP connection is aborted
before the handshake), `shutdown_notice` (the ``serverShutdown`` event, then a close). Every
connection, control message and subscription is recorded in `connections`.

Not reproduced: SBE and microsecond streams, ``!...@arr`` all-market streams, rolling-window
tickers, ``avgPrice``, UTC+8 klines and ``1M``, user data streams, the WebSocket API
(``/ws-api/v3``), the 24 h connection limit, the 1024-streams and 300-connections limits,
permessage-deflate (never negotiated here), Binance's real stream order within one 100 ms batch,
and a book deeper than `levels` (the REST snapshot and the diffs always see the whole book). The
24 h tickers are computed over whole minutes.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import itertools
import json
import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from workbench.data.sources.ccxt import rebase_nested

from .binance import (
    BAD_GATEWAY_HTML,
    DEFAULT_MARKETS,
    INTERNAL_ERROR,
    INTERVAL_MS,
    INVALID_SYMBOL,
    TOO_MANY_REQUESTS,
    WEEK_ORIGIN_MS,
    BinanceServer,
    Market,
)
from .loopback import Request, Response

T = TypeVar("T")
LOG = logging.getLogger("tests.servers.binance_stream")
LOT_DECIMALS = 5  # LOT_SIZE stepSize 0.00001 in the fake's exchangeInfo
DEPTH_SPEEDS = (100, 1000)  # the diff streams' update speeds, ms
PARTIAL_DEPTH = re.compile(r"depth(5|10|20)(@100ms|@1000ms)?")  # <s>@depth<levels>[@speed]
KLINE_UPDATE_MS = 2000  # in-progress kline updates (1s klines only send the closed one)
TICKER_MS = 1000
DAY_MS = 86_400_000
BANNED = {"code": -1003, "msg": "Way too much request weight used; IP banned until {until}. "
                                "Please use WebSocket Streams for live updates to avoid bans."}
BAD_COMBO = {"code": -1128, "msg": "Combination of optional parameters invalid."}
BAD_LIMIT = {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}
ILLEGAL = {"code": -1100, "msg": "Illegal characters found in a parameter."}
MANDATORY_SYMBOL = {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, was "
                                          "empty/null, or malformed."}
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
# A well-formed stream name: a symbol (or "!..."), then "@"-separated parts. Only lowercase
# symbols of the venue's markets ever carry data, as on Binance.
STREAM_SYNTAX = re.compile(r"^[A-Za-z0-9!_]+(@[A-Za-z0-9_:+.!-]+)+$")


# ---------------------------------------------------------------------------------- formatting
def _fmt(value: int, decimals: int) -> str:
    """An integer count of 10**-decimals units as Binance's 8-decimal string (half up)."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    if decimals <= 8:
        scaled = value * 10 ** (8 - decimals)
    else:
        q, r = divmod(value, 10 ** (decimals - 8))
        scaled = q + (1 if 2 * r >= 10 ** (decimals - 8) else 0)
    return f"{sign}{scaled // 10**8}.{scaled % 10**8:08d}"


def _align_down(ms: int, step: int, interval: str) -> int:
    origin = WEEK_ORIGIN_MS if interval == "1w" else 0
    return ms - (ms - origin) % step


def _align_up(ms: int, step: int, interval: str) -> int:
    down = _align_down(ms, step, interval)
    return down if down == ms else down + step


# ---------------------------------------------------------------------------------- venue data
class _Print:
    """What ccxt reads of a trade or an aggregate trade: price, amount and the taker's side."""

    __slots__ = ()
    p: str
    q: str
    buyer_maker: bool

    @property
    def price(self) -> float:
        return float(self.p)

    @property
    def amount(self) -> float:
        return float(self.q)

    @property
    def side(self) -> str:
        """The taker's side, as ccxt reports it (buyer is maker -> a sell)."""
        return "sell" if self.buyer_maker else "buy"


@dataclass(frozen=True, slots=True)
class Trade(_Print):
    """One fill between a taker and one resting order, as ``<s>@trade`` and /trades carry it."""

    symbol: str
    id: int
    agg_id: int
    price_ticks: int
    qty_lots: int
    time: int
    buyer_maker: bool
    p: str  # price as on the wire
    q: str  # quantity as on the wire


@dataclass(frozen=True, slots=True)
class AggTrade(_Print):
    """The fills of one taker order at one price, as ``<s>@aggTrade`` and /aggTrades carry them."""

    symbol: str
    id: int
    first_id: int
    last_id: int
    price_ticks: int
    qty_lots: int
    time: int
    buyer_maker: bool
    p: str
    q: str


@dataclass(frozen=True)
class Book:
    """A book as of `last_update_id`: (price, quantity) pairs, bids high to low, asks low to high."""

    symbol: str
    last_update_id: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


@dataclass(slots=True)
class VenueEvent:
    """What one venue event changed: book levels (absolute lots, 0 = gone), fills, best quote."""

    symbol: str
    time: int
    update_id: int
    bids: dict[int, int]
    asks: dict[int, int]
    trades: list[Trade]
    aggs: list[AggTrade]
    best: tuple[int, int, int, int] | None  # (bid, bid lots, ask, ask lots) if it changed


class _Bucket:
    """One 1s or 1m kline being built from trades (prices in ticks, volumes in lots)."""

    __slots__ = ("c", "f", "h", "l", "last", "n", "o", "q", "start", "tq", "tv", "v")

    def __init__(self, start: int, t: Trade) -> None:
        self.start = start
        self.o = self.h = self.l = self.c = t.price_ticks
        self.v = self.q = self.n = self.tv = self.tq = 0
        self.f = t.id
        self.last = t.id

    def add(self, t: Trade) -> None:
        self.h = max(self.h, t.price_ticks)
        self.l = min(self.l, t.price_ticks)
        self.c = t.price_ticks
        self.v += t.qty_lots
        self.q += t.price_ticks * t.qty_lots
        self.n += 1
        self.last = t.id
        if not t.buyer_maker:  # taker bought
            self.tv += t.qty_lots
            self.tq += t.price_ticks * t.qty_lots


class _Sim:
    """One symbol's book, its event generator and its full history."""

    P_TAKER, P_ADD = 0.3, 0.45  # the rest are cancels

    def __init__(self, market: Market, seed: int, levels: int) -> None:
        self.market = market
        self.symbol = market.id
        self.rng = random.Random(f"{seed}|{market.id}")
        self.d = market.decimals
        self.levels = levels
        mid = round(market.price * 10**self.d)
        self.fair = mid  # the hidden fair price (ticks): a random walk the makers quote around
        self.bids: dict[int, list[int]] = {}
        self.asks: dict[int, list[int]] = {}
        for k in range(levels):
            self.bids[mid - 1 - k] = [self._size(mid) for _ in range(self.rng.randint(1, 3))]
            self.asks[mid + 1 + k] = [self._size(mid) for _ in range(self.rng.randint(1, 3))]
        self.update_id = self.rng.randrange(10**9, 2 * 10**9)
        self.first_trade_id = self.rng.randrange(10**8, 2 * 10**8)
        self.first_agg_id = self.rng.randrange(10**7, 2 * 10**7)
        self.trades: list[Trade] = []
        self.trade_times: list[int] = []
        self.aggs: list[AggTrade] = []
        self.agg_times: list[int] = []
        self.k1s: dict[int, _Bucket] = {}
        self.k1s_keys: list[int] = []
        self.k1m: dict[int, _Bucket] = {}
        self.k1m_keys: list[int] = []
        self.events = 0
        self._best = self._best_now()

    # -------------------------------------------------------------- generation
    def _size(self, price_ticks: int) -> int:
        notional = self.rng.lognormvariate(6.0, 1.2)  # quote units, median ~400
        price = price_ticks / 10**self.d
        return max(1, int(notional / price * 10**LOT_DECIMALS))

    def _best_now(self) -> tuple[int, int, int, int]:
        b, a = max(self.bids), min(self.asks)
        return b, sum(self.bids[b]), a, sum(self.asks[a])

    def step(self, t: int) -> VenueEvent:
        """Apply one event at venue time `t` and return what changed."""
        rng = self.rng
        bids: dict[int, int] = {}
        asks: dict[int, int] = {}
        trades: list[Trade] = []
        aggs: list[AggTrade] = []
        if rng.random() < 0.2:  # the fair price wanders a tick at a time (and stays positive)
            self.fair = max(self.levels + 10, self.fair + (1 if rng.random() < 0.5 else -1))
        r = rng.random()
        if r < self.P_TAKER:
            # takers lean towards the fair price: asks below it get lifted, bids above it hit
            best_bid, best_ask = max(self.bids), min(self.asks)
            lean = max(-0.4, min(0.4, (self.fair - (best_bid + best_ask) / 2) / 10))
            self._take(t, rng.random() < 0.5 + lean, bids, asks, trades, aggs)
        elif r < self.P_TAKER + self.P_ADD:
            self._add(rng.random() < 0.5, bids, asks)
        else:
            self._cancel(rng.random() < 0.5, bids, asks)
        self._replenish(True, bids)
        self._replenish(False, asks)
        self.update_id += 1
        self.events += 1
        best = self._best_now()
        changed = best if best != self._best else None
        self._best = best
        return VenueEvent(self.symbol, t, self.update_id, bids, asks, trades, aggs, changed)

    def _take(self, t: int, buy: bool, bids: dict[int, int], asks: dict[int, int],
              trades: list[Trade], aggs: list[AggTrade]) -> None:
        side, changes = (self.asks, asks) if buy else (self.bids, bids)
        best = min(side) if buy else max(side)
        remaining = self._size(best)
        for _ in range(3):  # sweep at most three levels; the rest of the order is cancelled
            if remaining <= 0 or not side:
                break
            price = min(side) if buy else max(side)
            queue = side[price]
            first_id = self.first_trade_id + len(self.trades)
            filled = 0
            while queue and remaining > 0:
                fill = min(queue[0], remaining)
                remaining -= fill
                filled += fill
                if fill == queue[0]:
                    queue.pop(0)
                else:
                    queue[0] -= fill
                self._record(Trade(self.symbol, self.first_trade_id + len(self.trades),
                                   self.first_agg_id + len(self.aggs), price, fill, t, not buy,
                                   _fmt(price, self.d), _fmt(fill, LOT_DECIMALS)), trades)
            agg = AggTrade(self.symbol, self.first_agg_id + len(self.aggs), first_id,
                           self.first_trade_id + len(self.trades) - 1, price, filled, t, not buy,
                           _fmt(price, self.d), _fmt(filled, LOT_DECIMALS))
            self.aggs.append(agg)
            self.agg_times.append(t)
            aggs.append(agg)
            if queue:
                changes[price] = sum(queue)
            else:
                del side[price]
                changes[price] = 0

    def _record(self, trade: Trade, out: list[Trade]) -> None:
        self.trades.append(trade)
        self.trade_times.append(trade.time)
        out.append(trade)
        for buckets, keys, step in ((self.k1s, self.k1s_keys, 1000),
                                    (self.k1m, self.k1m_keys, 60_000)):
            start = trade.time - trade.time % step
            bucket = buckets.get(start)
            if bucket is None:
                bucket = buckets[start] = _Bucket(start, trade)
                keys.append(start)
            bucket.add(trade)

    def _add(self, bid: bool, bids: dict[int, int], asks: dict[int, int]) -> None:
        """A new resting order a few ticks from the fair price, never crossing the other side."""
        side, changes = (self.bids, bids) if bid else (self.asks, asks)
        behind = 1 + int(self.rng.expovariate(0.25))
        if bid:
            price = min(self.fair - behind, min(self.asks) - 1)
        else:
            price = max(self.fair + behind, max(self.bids) + 1)
        side.setdefault(price, []).append(self._size(price))
        changes[price] = sum(side[price])
        self._trim(bid, changes)

    def _cancel(self, bid: bool, bids: dict[int, int], asks: dict[int, int]) -> None:
        """One resting order goes, more often far from the fair price."""
        side, changes = (self.bids, bids) if bid else (self.asks, asks)
        ladder = sorted(side, key=lambda p: -abs(p - self.fair))
        price = ladder[min(int(self.rng.expovariate(0.2)), len(ladder) - 1)]
        queue = side[price]
        queue.pop(self.rng.randrange(len(queue)))
        if queue:
            changes[price] = sum(queue)
        else:
            del side[price]
            changes[price] = 0

    def _trim(self, bid: bool, changes: dict[int, int]) -> None:
        side = self.bids if bid else self.asks
        while len(side) > self.levels:  # keep the book `levels` deep: the farthest level goes
            worst = min(side) if bid else max(side)
            del side[worst]
            changes[worst] = 0

    def _replenish(self, bid: bool, changes: dict[int, int]) -> None:
        """Refill a side to `levels` with new levels near the fair price."""
        side = self.bids if bid else self.asks
        other = self.asks if bid else self.bids
        tries = 0
        while len(side) < self.levels and tries < 4 * self.levels:
            tries += 1
            behind = 1 + self.rng.randrange(self.levels + 5)
            if bid:
                price = min(self.fair - behind, (min(other) if other else self.fair + 1) - 1)
            else:
                price = max(self.fair + behind, (max(other) if other else self.fair - 1) + 1)
            if price <= 0 or price in side:
                continue
            side[price] = [self._size(price)]
            changes[price] = side[price][0]

    # -------------------------------------------------------------- queries
    def levels_of(self, bid: bool, limit: int | None) -> list[tuple[int, int]]:
        side = self.bids if bid else self.asks
        prices = sorted(side, reverse=bid)[:limit]
        return [(p, sum(side[p])) for p in prices]

    def kline(self, start: int, step: int) -> list[Any] | None:
        """The REST row of the kline opening at `start` (in progress if it has not closed)."""
        buckets, keys = (self.k1s, self.k1s_keys) if step < 60_000 else (self.k1m, self.k1m_keys)
        lo = bisect.bisect_left(keys, start)
        hi = bisect.bisect_left(keys, start + step)
        parts = [buckets[k] for k in keys[lo:hi]]
        d = self.d
        close_time = start + step - 1
        if not parts:
            if lo == 0:
                return None  # before the first trade: Binance has no kline
            c = buckets[keys[lo - 1]].c
            p = _fmt(c, d)
            z = _fmt(0, 8)
            return [start, p, p, p, p, z, close_time, z, 0, z, z, "0"]
        o, c = parts[0].o, parts[-1].c
        h = max(b.h for b in parts)
        low = min(b.l for b in parts)
        v = sum(b.v for b in parts)
        q = sum(b.q for b in parts)
        n = sum(b.n for b in parts)
        tv = sum(b.tv for b in parts)
        tq = sum(b.tq for b in parts)
        qd = d + LOT_DECIMALS
        return [start, _fmt(o, d), _fmt(h, d), _fmt(low, d), _fmt(c, d), _fmt(v, LOT_DECIMALS),
                close_time, _fmt(q, qd), n, _fmt(tv, LOT_DECIMALS), _fmt(tq, qd), "0"]

    def kline_ids(self, start: int, step: int) -> tuple[int, int]:
        """First and last trade id in the kline opening at `start` (-1, -1 without trades)."""
        lo = bisect.bisect_left(self.trade_times, start)
        hi = bisect.bisect_left(self.trade_times, start + step)
        if lo == hi:
            return -1, -1
        return self.trades[lo].id, self.trades[hi - 1].id


class Venue:
    """A deterministic simulated spot market for `markets`, one `_Sim` per symbol.

    `rate` is events per second per symbol on the venue clock (each event sends one book change
    and, for a taker order, its trades); `levels` is the book depth per side; `history_s` of
    events are generated at construction so REST has a past to serve; `paused=True` starts with
    the clock frozen there (with `start_ms`, a fully reproducible state). All methods are
    thread-safe (one lock, shared by the stream server's pump and the REST handlers).
    """

    def __init__(self, markets: Iterable[Market] = DEFAULT_MARKETS[:2], *, seed: int = 7,
                 rate: float = 50.0, levels: int = 20, history_s: float = 5.0, speed: float = 1.0,
                 start_ms: int | None = None, paused: bool = False) -> None:
        if rate <= 0 or speed <= 0 or levels < 5:
            raise ValueError("rate and speed must be positive and levels at least 5")
        self.markets = {m.id: m for m in markets}
        self.seed, self.rate, self.levels, self.speed = seed, rate, levels, speed
        history_ms = int(history_s * 1000)
        self.start_ms = start_ms if start_ms is not None else int(time.time() * 1000) - history_ms
        self.lock = threading.RLock()
        self._sims = {sid: _Sim(m, seed, levels) for sid, m in self.markets.items()}
        self._clock_base = self.start_ms + history_ms
        self._mono_base = time.monotonic()
        self._frozen: int | None = self._clock_base if paused else None
        self._outbox: list[VenueEvent] | None = None  # set by a stream server that publishes
        self._generated = self.start_ms - 1  # every event up to this venue time exists
        self.advance()

    # -------------------------------------------------------------- clock
    def now_ms(self) -> int:
        """The venue clock: `start_ms` + history at construction, then wall time × `speed`."""
        frozen = self._frozen
        if frozen is not None:
            return frozen
        return self._clock_base + int((time.monotonic() - self._mono_base) * 1000 * self.speed)

    @property
    def paused(self) -> bool:
        return self._frozen is not None

    def pause(self) -> int:
        """Freeze the clock and generate every event up to it: the venue's state is final until
        `tick` or `resume` (pending depth diffs still go out). Returns the frozen time."""
        with self.lock:
            if self._frozen is None:
                self._frozen = self.now_ms()
            self.advance(self._frozen)
            return self._frozen

    def tick(self, ms: int) -> int:
        """Move a paused clock forward by `ms` and generate those events (streamed as usual)."""
        with self.lock:
            if self._frozen is None:
                raise RuntimeError("tick() needs a paused venue")
            self._frozen += ms
            self.advance(self._frozen)
            return self._frozen

    def resume(self) -> None:
        """Restart the clock where it was frozen (the venue clock then lags wall time)."""
        with self.lock:
            if self._frozen is not None:
                self._clock_base, self._mono_base = self._frozen, time.monotonic()
                self._frozen = None

    def advance(self, until_ms: int | None = None) -> int:
        """Generate every event scheduled up to `until_ms` (default: now); returns how many.

        REST handlers and the stream pump call this, so any view is up to date when it answers.
        """
        made = 0
        with self.lock:
            until = self.now_ms() if until_ms is None else until_ms
            if until <= self._generated:
                return 0
            self._generated = until
            for sim in self._sims.values():
                while True:
                    t = self.start_ms + int(sim.events * 1000 / self.rate)
                    if t > until:
                        break
                    event = sim.step(t)
                    made += 1
                    if self._outbox is not None:
                        self._outbox.append(event)
        return made

    @property
    def generated_ms(self) -> int:
        """The venue time up to which every event exists (what REST and klines call "now")."""
        return self._generated

    def _drain(self, until_ms: int) -> list[VenueEvent]:
        """Advance to `until_ms` and hand the stream server the events not published yet."""
        with self.lock:
            if self._outbox is None:
                self._outbox = []
            self.advance(until_ms)
            out, self._outbox = self._outbox, []
            return out

    # -------------------------------------------------------------- queries
    def _sim(self, symbol: str) -> _Sim:
        try:
            return self._sims[symbol]
        except KeyError:
            raise KeyError(f"the venue has no symbol {symbol!r} (ids like BTCUSDT)") from None

    @property
    def symbols(self) -> list[str]:
        return list(self._sims)

    def update_id(self, symbol: str) -> int:
        with self.lock:
            return self._sim(symbol).update_id

    def trades(self, symbol: str, *, from_id: int | None = None, start_ms: int | None = None,
               end_ms: int | None = None, limit: int | None = None) -> list[Trade]:
        """The venue's trades from id `from_id` and/or in [start_ms, end_ms], oldest first."""
        with self.lock:
            sim = self._sim(symbol)
            return _slice(sim.trades, sim.trade_times, sim.first_trade_id, from_id, start_ms,
                          end_ms, limit)

    def agg_trades(self, symbol: str, *, from_id: int | None = None, start_ms: int | None = None,
                   end_ms: int | None = None, limit: int | None = None) -> list[AggTrade]:
        """The venue's aggregate trades, selected like `trades`."""
        with self.lock:
            sim = self._sim(symbol)
            return _slice(sim.aggs, sim.agg_times, sim.first_agg_id, from_id, start_ms, end_ms,
                          limit)

    def book(self, symbol: str, limit: int | None = None) -> Book:
        """The current book (floats parsed from the wire strings, so ccxt's floats compare equal)."""
        with self.lock:
            sim = self._sim(symbol)
            d = sim.d

            def side(bid: bool) -> list[tuple[float, float]]:
                return [(float(_fmt(p, d)), float(_fmt(q, LOT_DECIMALS)))
                        for p, q in sim.levels_of(bid, limit)]

            return Book(symbol, sim.update_id, side(True), side(False))

    def best(self, symbol: str) -> tuple[float, float, float, float]:
        """(bid, bid quantity, ask, ask quantity) now."""
        with self.lock:
            sim = self._sim(symbol)
            b, bq, a, aq = sim._best_now()
            return (float(_fmt(b, sim.d)), float(_fmt(bq, LOT_DECIMALS)), float(_fmt(a, sim.d)),
                    float(_fmt(aq, LOT_DECIMALS)))

    def klines(self, symbol: str, interval: str, start_ms: int | None = None,
               end_ms: int | None = None, limit: int = 500) -> list[list[Any]]:
        """Klines as /api/v3/klines serves them (the last one may still be in progress)."""
        step = INTERVAL_MS[interval]
        with self.lock:
            sim = self._sim(symbol)
            if not sim.trade_times:
                return []
            now = self._generated
            first = _align_down(sim.trade_times[0], step, interval)
            last = _align_down(now if end_ms is None else min(end_ms, now), step, interval)
            if start_ms is None:
                lo = max(first, last - (limit - 1) * step)
            else:
                lo = max(first, _align_up(start_ms, step, interval))
            rows: list[list[Any]] = []
            b = lo
            while b <= last and len(rows) < limit:
                row = sim.kline(b, step)
                if row is not None:
                    rows.append(row)
                b += step
            return rows

    def kline(self, symbol: str, interval: str, open_ms: int) -> list[Any] | None:
        """The REST row of one kline (None before the symbol's first trade)."""
        with self.lock:
            return self._sim(symbol).kline(open_ms, INTERVAL_MS[interval])

    def ticker(self, symbol: str) -> dict[str, Any]:
        """The ``24hrTicker`` payload now (statistics over the last 1440 whole minutes)."""
        with self.lock:
            sim = self._sim(symbol)
            now = self._generated
            keys = sim.k1m_keys
            lo = bisect.bisect_left(keys, now - now % 60_000 - DAY_MS + 60_000)
            parts = [sim.k1m[k] for k in keys[lo:]]
            d, qd = sim.d, sim.d + LOT_DECIMALS
            b, bq, a, aq = sim._best_now()
            if parts:
                o, c = parts[0].o, parts[-1].c
                h, low = max(x.h for x in parts), min(x.l for x in parts)
                v, q = sum(x.v for x in parts), sum(x.q for x in parts)
                f, last, n = parts[0].f, parts[-1].last, sum(x.n for x in parts)
                w = q // v if v else c
                last_qty = sim.trades[-1].qty_lots
            else:
                o = c = h = low = w = b
                v = q = n = last_qty = 0
                f = last = -1
            pct = f"{(c - o) * 100 / o:.3f}" if o else "0.000"
            return {
                "e": "24hrTicker", "E": now, "s": symbol, "p": _fmt(c - o, d), "P": pct,
                "w": _fmt(w, d), "x": _fmt(o, d), "c": _fmt(c, d),
                "Q": _fmt(last_qty, LOT_DECIMALS), "b": _fmt(b, d), "B": _fmt(bq, LOT_DECIMALS),
                "a": _fmt(a, d), "A": _fmt(aq, LOT_DECIMALS), "o": _fmt(o, d), "h": _fmt(h, d),
                "l": _fmt(low, d), "v": _fmt(v, LOT_DECIMALS), "q": _fmt(q, qd),
                "O": now - DAY_MS, "C": now, "F": f, "L": last, "n": n,
            }

    def _levels_wire(self, symbol: str, limit: int) -> dict[str, Any]:
        sim = self._sim(symbol)
        d = sim.d
        return {
            "lastUpdateId": sim.update_id,
            "bids": [[_fmt(p, d), _fmt(q, LOT_DECIMALS)] for p, q in sim.levels_of(True, limit)],
            "asks": [[_fmt(p, d), _fmt(q, LOT_DECIMALS)] for p, q in sim.levels_of(False, limit)],
        }


def _slice(rows: list[Any], times: list[int], first_id: int, from_id: int | None,
           start_ms: int | None, end_ms: int | None, limit: int | None) -> list[Any]:
    lo, hi = 0, len(rows)
    if from_id is not None:
        lo = max(lo, min(max(from_id - first_id, 0), hi))
    if start_ms is not None:
        lo = max(lo, bisect.bisect_left(times, start_ms))
    if end_ms is not None:
        hi = min(hi, bisect.bisect_right(times, end_ms))
    out = rows[lo:hi] if lo < hi else []
    return out[:limit] if limit is not None else out


# ---------------------------------------------------------------------------------- REST
class StreamRestServer(BinanceServer):
    """The REST half: `servers.binance.BinanceServer` with its data taken from a `Venue`."""

    def __init__(self, venue: Venue) -> None:
        super().__init__(tuple(venue.markets.values()), seed=venue.seed, listed_ms=venue.start_ms)
        self.venue = venue
        self.routes.update({
            ("GET", "/api/v3/depth"): self._depth,
            ("GET", "/api/v3/trades"): self._recent_trades,
            ("GET", "/api/v3/historicalTrades"): self._historical_trades,
            ("GET", "/api/v3/aggTrades"): self._agg_trades,
            ("GET", "/api/v3/ticker/bookTicker"): self._book_ticker,
        })

    # ------------------------------------------------------------- faults (Binance's shapes)
    def rate_limit_next(self, times: int = 1, retry_after: int = 1,
                        path: str = "/api/v3/") -> None:
        """Answer the next `times` requests under `path` with 429 -1003 and a Retry-After."""
        self.fail_next(path, Response(429, TOO_MANY_REQUESTS, {"Retry-After": str(retry_after)}),
                       times)

    def ban_next(self, times: int = 1, retry_after: int = 120, path: str = "/api/v3/") -> None:
        """Answer with 418 (IP auto-banned after ignoring 429s) and the ban's end."""
        until = self.venue.now_ms() + retry_after * 1000
        body = {"code": BANNED["code"], "msg": str(BANNED["msg"]).format(until=until)}
        self.fail_next(path, Response(418, body, {"Retry-After": str(retry_after)}), times)

    def server_error_next(self, times: int = 1, status: int = 500,
                          path: str = "/api/v3/") -> None:
        """Answer with a 5xx: 500 JSON -1001, or the 502/503 page Binance's edge serves."""
        if status == 500:
            response = Response(500, INTERNAL_ERROR)
        else:
            response = Response(status, BAD_GATEWAY_HTML if status == 502 else
                                "Service Unavailable.", {"Content-Type": "text/html"})
        self.fail_next(path, response, times)

    def rows(self, symbol_id: str, interval: str, start_ms: int, end_ms: int) -> list[list[Any]]:
        """Every kline opening in [start_ms, end_ms) as the venue has it."""
        return self.venue.klines(symbol_id, interval, start_ms, end_ms - 1, limit=10**9)

    def _clock(self) -> int:
        return self.venue.now_ms()

    def _route(self, req: Request) -> Response:
        self.venue.advance()  # every event up to now exists before REST answers
        return super()._route(req)

    # ------------------------------------------------------------- helpers
    def _symbol(self, req: Request) -> str | Response:
        sid = req.query.get("symbol", "")
        if not sid:
            return Response(400, MANDATORY_SYMBOL)
        if sid not in self.venue.markets or sid in self.delisted:
            return Response(400, INVALID_SYMBOL)
        return sid

    @staticmethod
    def _ints(req: Request, *names: str) -> dict[str, int] | Response:
        out: dict[str, int] = {}
        for name in names:
            if name in req.query:
                try:
                    out[name] = int(req.query[name])
                except ValueError:
                    return Response(400, ILLEGAL)
        return out

    @staticmethod
    def _limit(args: dict[str, int], default: int, cap: int, hard: bool = True) -> int | Response:
        limit = args.get("limit", default)
        if limit < 1 or (hard and limit > cap):
            return Response(400, BAD_LIMIT)
        return min(limit, cap)

    # ------------------------------------------------------------- routes
    def _depth(self, req: Request) -> Response:
        sid = self._symbol(req)
        if isinstance(sid, Response):
            return sid
        args = self._ints(req, "limit")
        if isinstance(args, Response):
            return args
        limit = self._limit(args, 100, 5000, hard=False)  # > 5000 is truncated, not refused
        if isinstance(limit, Response):
            return limit
        weight = 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
        with self.venue.lock:
            body = self.venue._levels_wire(sid, limit)
        return Response(200, body, self._weight(weight))

    def _trade_rows(self, trades: list[Trade], d: int) -> list[dict[str, Any]]:
        return [{"id": t.id, "price": t.p, "qty": t.q,
                 "quoteQty": _fmt(t.price_ticks * t.qty_lots, d + LOT_DECIMALS), "time": t.time,
                 "isBuyerMaker": t.buyer_maker, "isBestMatch": True} for t in trades]

    def _recent_trades(self, req: Request) -> Response:
        sid = self._symbol(req)
        if isinstance(sid, Response):
            return sid
        args = self._ints(req, "limit")
        if isinstance(args, Response):
            return args
        limit = self._limit(args, 500, 1000)
        if isinstance(limit, Response):
            return limit
        with self.venue.lock:
            trades = self.venue.trades(sid)[-limit:]
        return Response(200, self._trade_rows(trades, self.venue.markets[sid].decimals),
                        self._weight(25))

    def _historical_trades(self, req: Request) -> Response:
        sid = self._symbol(req)
        if isinstance(sid, Response):
            return sid
        args = self._ints(req, "limit", "fromId")
        if isinstance(args, Response):
            return args
        limit = self._limit(args, 500, 1000)
        if isinstance(limit, Response):
            return limit
        if "fromId" in args:
            trades = self.venue.trades(sid, from_id=args["fromId"], limit=limit)
        else:
            trades = self.venue.trades(sid)[-limit:]
        return Response(200, self._trade_rows(trades, self.venue.markets[sid].decimals),
                        self._weight(25))

    def _agg_trades(self, req: Request) -> Response:
        sid = self._symbol(req)
        if isinstance(sid, Response):
            return sid
        args = self._ints(req, "limit", "fromId", "startTime", "endTime")
        if isinstance(args, Response):
            return args
        limit = self._limit(args, 500, 1000)
        if isinstance(limit, Response):
            return limit
        start, end = args.get("startTime"), args.get("endTime")
        if "fromId" in args and (start is not None or end is not None):
            return Response(400, BAD_COMBO)
        if start is not None and end is not None and start > end:
            return Response(400, {"code": -1023, "msg": "Start time is greater than end time."})
        if "fromId" in args:
            rows = self.venue.agg_trades(sid, from_id=args["fromId"], limit=limit)
        elif start is not None:  # oldest first from startTime (up to endTime)
            rows = self.venue.agg_trades(sid, start_ms=start, end_ms=end, limit=limit)
        else:  # the most recent ones (before endTime)
            rows = self.venue.agg_trades(sid, end_ms=end)[-limit:]
        body = [{"a": r.id, "p": r.p, "q": r.q, "f": r.first_id, "l": r.last_id, "T": r.time,
                 "m": r.buyer_maker, "M": True} for r in rows]
        return Response(200, body, self._weight(4))

    def _book_ticker(self, req: Request) -> Response:
        sid = self._symbol(req)
        if isinstance(sid, Response):
            return sid
        with self.venue.lock:
            book = self.venue._levels_wire(sid, 1)
        (bp, bq), (ap, aq) = book["bids"][0], book["asks"][0]
        return Response(200, {"symbol": sid, "bidPrice": bp, "bidQty": bq, "askPrice": ap,
                              "askQty": aq}, self._weight(2))

    def _klines(self, req: Request) -> Response:
        q = req.query
        sid = self._symbol(req)
        if isinstance(sid, Response):
            return sid
        interval = q.get("interval", "")
        if interval not in INTERVAL_MS:
            return Response(400, {"code": -1120, "msg": "Invalid interval."})
        args = self._ints(req, "limit", "startTime", "endTime")
        if isinstance(args, Response):
            return args
        limit = self._limit(args, 500, 1000)
        if isinstance(limit, Response):
            return limit
        start, end = args.get("startTime"), args.get("endTime")
        if start is not None and end is not None and start > end:
            return Response(400, {"code": -1023, "msg": "Start time is greater than end time."})
        rows = self.venue.klines(sid, interval, start, end, limit)
        return Response(200, rows, self._weight(2))


# ---------------------------------------------------------------------------------- WebSocket
@dataclass
class WsConnection:
    """What the stream server saw of one connection (the server appends; tests read)."""

    id: int
    path: str
    combined: bool
    opened_ms: int
    requests: list[Any] = field(default_factory=list)  # control messages received, parsed
    subscribed: list[str] = field(default_factory=list)  # every stream subscribed, in order
    active: set[str] = field(default_factory=set)  # streams subscribed now
    sent: int = 0  # data messages written
    closed_ms: int | None = None
    close_reason: str | None = None  # client, dropped, invalid stream, too many messages, ...

    @property
    def open(self) -> bool:
        return self.closed_ms is None


@dataclass(eq=False)  # hashed by identity: kept in sets
class _Conn:
    ws: Any  # websockets.asyncio.server.ServerConnection
    record: WsConnection
    queue: asyncio.Queue[list[tuple[str | None, str]]]
    incoming: deque[float] = field(default_factory=deque)
    backlog: int = 0
    pending: list[tuple[str | None, str]] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None


@dataclass
class _Pending:
    """Depth changes of one symbol not yet sent on one diff speed."""

    bucket: int
    first: int | None = None
    last: int = 0
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)


@dataclass
class _KlineState:
    symbol: str
    interval: str
    step: int
    last_closed: int
    next_update: int


_CLOSE = "\x00close"  # writer sentinel: close the connection after what is queued


class BinanceStreamServer:
    """Binance's market-stream WebSocket server on 127.0.0.1, fed by a `Venue`.

    `start()`/`stop()` or a ``with`` block run it in a daemon thread with its own event loop;
    `ws_url` is ``ws://127.0.0.1:<port>`` (ccxt's spot URL is `ws_url` + ``/ws``). The pump
    wakes every `tick_s` seconds, generates the venue's events up to now and fans the messages
    out to the subscribed connections; `incoming_limit` (Binance: 5 a second) closes a connection
    that sends more control messages a second, `max_backlog` one that stops reading.
    """

    def __init__(self, venue: Venue, *, tick_s: float = 0.005, ping_interval: float | None = 20.0,
                 ping_timeout: float | None = 60.0, incoming_limit: int | None = 5,
                 max_backlog: int = 200_000) -> None:
        self.venue = venue
        self.tick_s = tick_s
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.incoming_limit = incoming_limit
        self.max_backlog = max_backlog
        self.connections: list[WsConnection] = []
        self.refused: list[str] = []  # paths of handshakes refused by `refuse`
        self.skipped: list[dict[str, Any]] = []  # depth diffs lost by `skip_depth`
        self.discarded = 0  # data messages a `stall` kept from being sent
        self.port = 0
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._pump_task: asyncio.Task[None] | None = None
        self._conns: set[_Conn] = set()
        self._subs: dict[str, set[_Conn]] = {}
        self._pending: dict[tuple[str, int], _Pending] = {}
        self.book_tickers: dict[str, list[tuple[float, float, float, float]]] = {}  # every one sent
        self._klines: dict[str, _KlineState] = {}
        self._next_ticker = 0
        self._next_partial = {100: 0, 1000: 0}
        self._skip: dict[tuple[str, int], int] = {}
        self._dup: list[Any] = [0, None]  # remaining, stream substring
        self._reorder: list[Any] = [0, None]
        self._stalled = False
        self._reading_paused = False
        self._refuse: tuple[int | None, float | None] | None = None
        self._lower = {sid.lower(): sid for sid in venue.markets}

    # ------------------------------------------------------------- lifecycle
    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> BinanceStreamServer:
        """Bind a free port and start serving (returns once connections are accepted)."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        self._loop = loop
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._startup())
            except BaseException as exc:  # report to start(), then leave
                started.set_exception(exc)
                loop.close()
                return
            started.set_result(None)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="binance-stream-fake", daemon=True)
        self._thread.start()
        started.result(timeout=10)
        return self

    def stop(self) -> None:
        """Close every connection (abruptly), stop the pump and the loop, join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        self._loop = self._thread = None

    def __enter__(self) -> BinanceStreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _startup(self) -> None:
        from websockets.asyncio.server import serve

        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._process_request,
            compression=None, ping_interval=self.ping_interval, ping_timeout=self.ping_timeout,
            close_timeout=1, max_queue=None, logger=LOG,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        now = self.venue.now_ms()
        self.venue._drain(now)  # what happened before the server started is history, not news
        for sid in self.venue.markets:
            for speed in DEPTH_SPEEDS:
                self._pending[(sid, speed)] = _Pending(now // speed)
        self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    async def _shutdown(self) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
        for conn in list(self._conns):
            self._close_record(conn, "server stopped")
            conn.ws.transport.abort()
        self._server.close()
        await self._server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the server's loop and wait: a fault is in force when its call returns."""
        loop = self._loop
        if loop is None:
            return fn()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(timeout=10)

    # ------------------------------------------------------------- records
    def open_connections(self) -> list[WsConnection]:
        """The connections not closed yet (by either side)."""
        with self._lock:
            return [c for c in self.connections if c.open]

    def subscriptions(self) -> list[tuple[int, str]]:
        """(connection id, stream) of every subscription ever made, in order."""
        with self._lock:
            return [(c.id, s) for c in self.connections for s in c.subscribed]

    def reset(self) -> None:
        """Forget records and lift every fault (the venue keeps running)."""
        def run() -> None:
            self._skip.clear()
            self._dup[:] = [0, None]
            self._reorder[:] = [0, None]
            self._refuse = None
            self._set_stall(False, True)
        self._call(run)
        with self._lock:
            self.connections = [c for c in self.connections if c.open]
            self.refused.clear()
            self.skipped.clear()
            self.discarded = 0

    # ------------------------------------------------------------- faults
    def drop(self) -> int:
        """Abort every open connection's TCP socket (no close frame); returns how many."""
        def run() -> int:
            conns = list(self._conns)
            for conn in conns:
                self._close_record(conn, "dropped")
                conn.ws.transport.abort()
            return len(conns)
        return self._call(run)

    def stall(self, *, pongs: bool = True) -> None:
        """Send nothing on any connection, old or new, until `unstall` (messages are lost).

        With ``pongs=False`` the server also stops reading, so client pings go unanswered (a
        half-dead TCP path); otherwise pings are still answered (a silent feed).
        """
        self._call(lambda: self._set_stall(True, pongs))

    def unstall(self) -> None:
        """Send (and read) again; what the stall swallowed stays lost."""
        self._call(lambda: self._set_stall(False, True))

    def _set_stall(self, stalled: bool, pongs: bool) -> None:
        self._stalled = stalled
        pause = stalled and not pongs
        if pause != self._reading_paused:
            self._reading_paused = pause
            for conn in self._conns:
                transport = conn.ws.transport
                if transport.is_closing():
                    continue
                if pause:
                    transport.pause_reading()
                else:
                    transport.resume_reading()

    def skip_depth(self, symbol: str, messages: int = 1) -> None:
        """Lose the next `messages` diffs of `symbol` on each depth speed: a gap in U/u."""
        def run() -> None:
            for speed in DEPTH_SPEEDS:
                self._skip[(symbol, speed)] = self._skip.get((symbol, speed), 0) + messages
        self._call(run)

    def duplicate_next(self, n: int = 1, stream: str | None = None) -> None:
        """Send each of the next `n` data messages (of streams containing `stream`) twice."""
        self._call(lambda: self._dup.__setitem__(slice(None), [n, stream]))

    def reorder_next(self, n: int = 1, stream: str | None = None) -> None:
        """Swap the next `n` data messages (of streams containing `stream`) with the one after."""
        self._call(lambda: self._reorder.__setitem__(slice(None), [n, stream]))

    def refuse(self, status: int | None = 503, retry_after: float | None = None,
               for_s: float | None = None) -> None:
        """Refuse new connections until `accept` (or for `for_s` seconds): an HTTP `status` (with
        Retry-After) at the handshake, or with ``status=None`` a TCP abort before any answer."""
        refusal = (status, retry_after)

        def lift() -> None:
            if self._refuse is refusal:  # not a later refusal
                self._refuse = None

        def run() -> None:
            self._refuse = refusal
            if for_s is not None:
                assert self._loop is not None
                self._loop.call_later(for_s, lift)
        self._call(run)

    def accept(self) -> None:
        """Accept new connections again."""
        self._call(lambda: setattr(self, "_refuse", None))

    def shutdown_notice(self) -> int:
        """Send ``serverShutdown`` on every connection, then close them (code 1001)."""
        def run() -> int:
            conns = list(self._conns)
            now = self.venue.now_ms()
            for conn in conns:
                payload = f'{{"e":"serverShutdown","E":{now}}}'
                if conn.record.combined:
                    payload = f'{{"stream":"!serverShutdown","data":{payload}}}'
                conn.queue.put_nowait([(None, payload), (None, _CLOSE)])
            return len(conns)
        return self._call(run)

    # ------------------------------------------------------------- handshake and control
    def _process_request(self, connection: Any, request: Any) -> Any:
        parts = urlsplit(request.path)
        if not (parts.path == "/ws" or parts.path.startswith("/ws/")
                or parts.path in ("/stream", "/stream/")):
            return connection.respond(404, "")
        if self._refuse is not None:
            status, retry_after = self._refuse
            with self._lock:
                self.refused.append(request.path)
            if status is None:
                connection.transport.abort()
                return connection.respond(503, "")
            response = connection.respond(status, "")
            if retry_after is not None:
                response.headers["Retry-After"] = str(retry_after)
            return response
        return None

    async def _handle(self, ws: Any) -> None:
        parts = urlsplit(ws.request.path)
        combined = parts.path.startswith("/stream")
        rec = WsConnection(next(self._ids), ws.request.path, combined, int(time.time() * 1000))
        conn = _Conn(ws, rec, asyncio.Queue())
        with self._lock:
            self.connections.append(rec)
        self._conns.add(conn)
        if self._reading_paused:
            ws.transport.pause_reading()
        if combined:  # "+" stays a plus (btcusdt@kline_1m@+08:00), unlike in a form query
            names = [s for kv in parts.query.split("&") if kv.startswith("streams=")
                     for s in unquote(kv[len("streams="):]).split("/")]
        else:
            names = [parts.path[len("/ws/"):]] if parts.path.startswith("/ws/") else []
        for name in names:
            if name and STREAM_SYNTAX.match(name):  # a path that is no stream is ignored
                self._subscribe(conn, name)
        conn.writer = asyncio.get_running_loop().create_task(self._writer(conn))
        try:
            async for message in ws:
                text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
                if self._too_many(conn):
                    self._close_record(conn, "too many messages")
                    conn.queue.put_nowait([(None, _CLOSE)])
                    break
                self._control(conn, text)
        except Exception:  # ConnectionClosedError and friends: the client went away
            pass
        finally:
            self._close_record(conn, "client")
            for name in list(conn.record.active):
                self._unsubscribe(conn, name)
            self._conns.discard(conn)
            if conn.writer is not None and not conn.writer.done():
                conn.queue.put_nowait([(None, _CLOSE)])  # flush what is queued, then stop
                try:
                    await asyncio.wait_for(asyncio.shield(conn.writer), 1.0)
                except Exception:
                    conn.writer.cancel()

    def _too_many(self, conn: _Conn) -> bool:
        if self.incoming_limit is None:
            return False
        now = time.monotonic()
        conn.incoming.append(now)
        while conn.incoming and conn.incoming[0] <= now - 1.0:
            conn.incoming.popleft()
        return len(conn.incoming) > self.incoming_limit

    def _reply(self, conn: _Conn, body: dict[str, Any], close: bool = False) -> None:
        items: list[tuple[str | None, str]] = [(None, json.dumps(body, separators=(",", ":")))]
        if close:
            items.append((None, _CLOSE))
        conn.queue.put_nowait(items)

    def _control(self, conn: _Conn, text: str) -> None:
        """Answer one control message the way stream.binance.com does."""
        try:
            msg = json.loads(text)
        except ValueError as exc:
            line, col = getattr(exc, "lineno", 1), getattr(exc, "colno", 1)
            conn.record.requests.append(text)
            self._reply(conn, {"error": {"code": 3, "msg": f"Invalid JSON: expected value at line "
                                         f"{line} column {col}"}, "id": None})
            return
        conn.record.requests.append(msg)
        if not isinstance(msg, dict) or "method" not in msg:
            self._reply(conn, {"error": {"code": 2, "msg": "Invalid request: missing field "
                                         f"`method` at line 1 column {len(text)}"}, "id": None})
            return
        rid = msg.get("id")
        if not (rid is None or (isinstance(rid, int) and not isinstance(rid, bool))
                or (isinstance(rid, str) and rid.isalnum() and len(rid) <= 36)):
            self._reply(conn, {"error": {"code": 2, "msg": "Invalid request: request ID must be "
                                         "an unsigned integer"}, "id": None})
            return
        method, params = msg.get("method"), msg.get("params", [])
        if method not in METHODS:
            self._reply(conn, {"error": {"code": 2, "msg": f"Invalid request: unknown variant "
                                         f"`{method}`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`"
                                         ", `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` "
                                         "at line 1 column 28"}, "id": rid})
            return
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                self._close_record(conn, "invalid stream")
                self._reply(conn, {"error": {"code": 2, "msg": "Invalid request: invalid stream"},
                                   "id": rid}, close=True)
                return
            if any(not STREAM_SYNTAX.match(p) for p in params):
                self._close_record(conn, "invalid stream")
                self._reply(conn, {"error": {"code": 2, "msg": "Invalid request: invalid stream"},
                                   "id": rid}, close=True)
                return
            self._reply(conn, {"result": None, "id": rid})  # queued before the first data
            for name in params:
                if method == "SUBSCRIBE":
                    self._subscribe(conn, name)
                else:
                    self._unsubscribe(conn, name)
        elif method == "LIST_SUBSCRIPTIONS":
            self._reply(conn, {"result": sorted(conn.record.active), "id": rid})
        else:
            prop = params[0] if isinstance(params, list) and params else None
            if not isinstance(prop, str):
                self._reply(conn, {"error": {"code": 2, "msg": "Invalid request: property name "
                                             "must be a string"}, "id": rid})
            elif prop != "combined":
                self._reply(conn, {"error": {"code": 0, "msg": "Unknown property"}, "id": rid})
            elif method == "GET_PROPERTY":
                self._reply(conn, {"result": conn.record.combined, "id": rid})
            elif len(params) != 2 or not isinstance(params[1], bool):
                self._reply(conn, {"error": {"code": 1, "msg": "Invalid value type: expected "
                                             "Boolean"}, "id": rid})
            else:
                conn.record.combined = params[1]
                self._reply(conn, {"result": None, "id": rid})

    def _subscribe(self, conn: _Conn, name: str) -> None:
        with self._lock:
            conn.record.subscribed.append(name)
            conn.record.active.add(name)
        first = name not in self._subs
        self._subs.setdefault(name, set()).add(conn)
        if first:
            parsed = self._parse(name)
            if parsed is not None and parsed[1].startswith("kline_"):
                interval = parsed[1][len("kline_"):]
                step = INTERVAL_MS[interval]
                now = self.venue.now_ms()
                current = _align_down(now, step, interval)
                self._klines[name] = _KlineState(parsed[0], interval, step, current - step,
                                                 now + KLINE_UPDATE_MS)

    def _unsubscribe(self, conn: _Conn, name: str) -> None:
        with self._lock:
            conn.record.active.discard(name)
        subs = self._subs.get(name)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self._subs[name]
                self._klines.pop(name, None)

    def _close_record(self, conn: _Conn, reason: str) -> None:
        with self._lock:
            if conn.record.closed_ms is None:
                conn.record.closed_ms = int(time.time() * 1000)
                conn.record.close_reason = reason

    def _parse(self, name: str) -> tuple[str, str] | None:
        """(venue symbol, kind) of a stream this server feeds; None for one it never feeds."""
        sym, _, kind = name.partition("@")
        sid = self._lower.get(sym)
        if sid is None:
            return None
        if kind in ("trade", "aggTrade", "bookTicker", "ticker", "miniTicker", "depth",
                    "depth@100ms", "depth@1000ms"):
            return sid, kind
        if kind.startswith("kline_") and kind[len("kline_"):] in INTERVAL_MS:
            return sid, kind
        m = PARTIAL_DEPTH.fullmatch(kind)
        return (sid, kind) if m else None

    # ------------------------------------------------------------- the pump
    async def _pump(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self._pump_once()
            except Exception:  # keep feeding; a test sees the log if something breaks
                LOG.exception("binance stream fake: pump failed")

    def _pump_once(self) -> None:
        venue = self.venue
        subs = self._subs
        out: dict[str, list[str]] = {}

        def emit(name: str, payload: str) -> None:
            if name in subs:
                out.setdefault(name, []).append(payload)

        with venue.lock:
            now = venue.now_ms()
            events = venue._drain(now)
            for ev in events:
                sym = ev.symbol.lower()
                for speed in DEPTH_SPEEDS:
                    pend = self._pending[(ev.symbol, speed)]
                    if pend.first is None:
                        pend.first = ev.update_id
                    pend.last = ev.update_id
                    pend.bids.update(ev.bids)
                    pend.asks.update(ev.asks)
                if ev.trades and f"{sym}@trade" in subs:
                    for t in ev.trades:
                        emit(f"{sym}@trade",
                             f'{{"e":"trade","E":{t.time},"s":"{t.symbol}","t":{t.id},'
                             f'"p":"{t.p}","q":"{t.q}","T":{t.time},'
                             f'"m":{"true" if t.buyer_maker else "false"},"M":true}}')
                if ev.aggs and f"{sym}@aggTrade" in subs:
                    for g in ev.aggs:
                        emit(f"{sym}@aggTrade",
                             f'{{"e":"aggTrade","E":{g.time},"s":"{g.symbol}","a":{g.id},'
                             f'"p":"{g.p}","q":"{g.q}","f":{g.first_id},"l":{g.last_id},'
                             f'"T":{g.time},"m":{"true" if g.buyer_maker else "false"},"M":true}}')
                if ev.best is not None and f"{sym}@bookTicker" in subs:
                    d = venue.markets[ev.symbol].decimals
                    b, bq, a, aq = ev.best
                    self.book_tickers.setdefault(ev.symbol, []).append(
                        (float(_fmt(b, d)), float(_fmt(bq, LOT_DECIMALS)), float(_fmt(a, d)),
                         float(_fmt(aq, LOT_DECIMALS))))
                    emit(f"{sym}@bookTicker",
                         f'{{"u":{ev.update_id},"s":"{ev.symbol}","b":"{_fmt(b, d)}",'
                         f'"B":"{_fmt(bq, LOT_DECIMALS)}","a":"{_fmt(a, d)}",'
                         f'"A":"{_fmt(aq, LOT_DECIMALS)}"}}')
            self._flush_depth(now, emit)
            self._partial_depth(now, emit)
            self._kline_updates(now, emit)
            if now >= self._next_ticker:
                self._next_ticker = now - now % TICKER_MS + TICKER_MS
                self._tickers(emit)
        if out:
            self._dispatch(out)

    def _flush_depth(self, now: int, emit: Callable[[str, str], None]) -> None:
        paused = self.venue.paused
        for (sid, speed), pend in self._pending.items():
            due = now // speed != pend.bucket or paused
            if not due:
                continue
            pend.bucket = now // speed
            if pend.first is None:
                continue
            skip = self._skip.get((sid, speed), 0)
            sym = sid.lower()
            names = [f"{sym}@depth@100ms"] if speed == 100 else [f"{sym}@depth",
                                                                  f"{sym}@depth@1000ms"]
            if skip:
                self._skip[(sid, speed)] = skip - 1
                with self._lock:
                    self.skipped.append({"symbol": sid, "speed": speed, "U": pend.first,
                                         "u": pend.last})
            elif any(n in self._subs for n in names):
                d = self.venue.markets[sid].decimals
                body = {
                    "e": "depthUpdate", "E": now, "s": sid, "U": pend.first, "u": pend.last,
                    "b": [[_fmt(p, d), _fmt(q, LOT_DECIMALS)]
                          for p, q in sorted(pend.bids.items(), reverse=True)],
                    "a": [[_fmt(p, d), _fmt(q, LOT_DECIMALS)] for p, q in sorted(pend.asks.items())],
                }
                payload = json.dumps(body, separators=(",", ":"))
                for n in names:
                    emit(n, payload)
            pend.first = None
            pend.bids, pend.asks = {}, {}

    def _partial_depth(self, now: int, emit: Callable[[str, str], None]) -> None:
        for speed in DEPTH_SPEEDS:
            if now < self._next_partial[speed]:
                continue
            self._next_partial[speed] = now - now % speed + speed
            for name in self._subs:
                parsed = self._parse(name)
                if parsed is None:
                    continue
                sid, kind = parsed
                m = PARTIAL_DEPTH.fullmatch(kind)
                if m is None or (100 if m.group(2) == "@100ms" else 1000) != speed:
                    continue
                emit(name, json.dumps(self.venue._levels_wire(sid, int(m.group(1))),
                                      separators=(",", ":")))

    def _kline_updates(self, now: int, emit: Callable[[str, str], None]) -> None:
        for name, st in self._klines.items():
            current = _align_down(now, st.step, st.interval)
            while st.last_closed + st.step < current:
                start = st.last_closed + st.step
                st.last_closed = start
                self._kline_message(name, st, start, now, True, emit)
            if st.interval != "1s" and now >= st.next_update:
                st.next_update = now + KLINE_UPDATE_MS
                self._kline_message(name, st, current, now, False, emit)

    def _kline_message(self, name: str, st: _KlineState, start: int, now: int, closed: bool,
                       emit: Callable[[str, str], None]) -> None:
        sim = self.venue._sim(st.symbol)
        row = sim.kline(start, st.step)
        if row is None:
            return
        first, last = sim.kline_ids(start, st.step)
        body = {"e": "kline", "E": now, "s": st.symbol, "k": {
            "t": row[0], "T": row[6], "s": st.symbol, "i": st.interval, "f": first, "L": last,
            "o": row[1], "c": row[4], "h": row[2], "l": row[3], "v": row[5], "n": row[8],
            "x": closed, "q": row[7], "V": row[9], "Q": row[10], "B": "0"}}
        emit(name, json.dumps(body, separators=(",", ":")))

    def _tickers(self, emit: Callable[[str, str], None]) -> None:
        for sid in self.venue.markets:
            sym = sid.lower()
            full, mini = f"{sym}@ticker", f"{sym}@miniTicker"
            if full not in self._subs and mini not in self._subs:
                continue
            t = self.venue.ticker(sid)
            emit(full, json.dumps(t, separators=(",", ":")))
            emit(mini, json.dumps({"e": "24hrMiniTicker", "E": t["E"], "s": sid, "c": t["c"],
                                   "o": t["o"], "h": t["h"], "l": t["l"], "v": t["v"],
                                   "q": t["q"]}, separators=(",", ":")))

    def _dispatch(self, out: dict[str, list[str]]) -> None:
        touched: set[_Conn] = set()
        for name, payloads in out.items():
            for conn in self._subs.get(name, ()):
                if conn.record.combined:
                    prefix = f'{{"stream":"{name}","data":'
                    conn.pending.extend((name, prefix + p + "}") for p in payloads)
                else:
                    conn.pending.extend((name, p) for p in payloads)
                touched.add(conn)
        for conn in touched:
            batch, conn.pending = conn.pending, []
            conn.backlog += len(batch)
            if conn.backlog > self.max_backlog:  # a client that stopped reading
                self._close_record(conn, "slow consumer")
                conn.ws.transport.abort()
                continue
            conn.queue.put_nowait(batch)

    async def _writer(self, conn: _Conn) -> None:
        """Write one connection's queue in order, applying stall, duplicate and reorder."""
        ws = conn.ws
        held: str | None = None
        try:
            while True:
                batch = await conn.queue.get()
                for stream, text in batch:
                    if stream is not None:
                        conn.backlog -= 1
                    if text == _CLOSE:
                        await ws.close(1001 if conn.record.close_reason is None else 1008)
                        return
                    if self._stalled:
                        if stream is not None:
                            self.discarded += 1
                        continue
                    copies = 1
                    if stream is not None:
                        if self._dup[0] > 0 and (self._dup[1] is None or self._dup[1] in stream):
                            self._dup[0] -= 1
                            copies = 2
                        if held is None and self._reorder[0] > 0 and (
                                self._reorder[1] is None or self._reorder[1] in stream):
                            self._reorder[0] -= 1
                            held = text
                            continue
                    for _ in range(copies):
                        await ws.send(text)
                    if stream is not None:
                        conn.record.sent += copies
                    if held is not None:
                        await ws.send(held)
                        conn.record.sent += 1
                        held = None
        except Exception:  # the connection is gone; the handler records why
            return


# ---------------------------------------------------------------------------------- together
class FakeBinance:
    """A `Venue`, its `StreamRestServer` and `BinanceStreamServer`, started and stopped together.

    >>> with FakeBinance(seed=1, rate=100) as fake:
    ...     exchange = fake.client()   # ccxt.pro.binance on the fakes (inside an event loop)
    """

    def __init__(self, markets: Iterable[Market] = DEFAULT_MARKETS[:2], *, seed: int = 7,
                 rate: float = 50.0, levels: int = 20, history_s: float = 5.0, speed: float = 1.0,
                 start_ms: int | None = None, **ws_options: Any) -> None:
        self.venue = Venue(markets, seed=seed, rate=rate, levels=levels, history_s=history_s,
                           speed=speed, start_ms=start_ms)
        self.rest = StreamRestServer(self.venue)
        self.ws = BinanceStreamServer(self.venue, **ws_options)

    def __enter__(self) -> FakeBinance:
        self.rest.__enter__()
        try:
            self.ws.start()
        except BaseException:
            self.rest.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.ws.stop()
        finally:
            self.rest.__exit__(*exc)

    def client(self, **config: Any) -> Any:
        """A ``ccxt.pro.binance`` pointed at these fakes (see `pro_client`)."""
        return pro_client(self.rest.url, self.ws.ws_url, **config)


def loopback_urls(urls: Any, rest_url: str, ws_url: str) -> Any:
    """ccxt's nested ``urls`` with every http(s) URL on `rest_url` and ws(s) on `ws_url` (the
    workbench's own rebase, as `WORKBENCH_CCXT_BASE_URL` and `WORKBENCH_CCXT_WS_URL` apply it)."""
    return rebase_nested(rebase_nested(urls, rest_url, ("http", "https")), ws_url, ("ws", "wss"))


def pro_client(rest_url: str, ws_url: str, **config: Any) -> Any:
    """An unmodified ``ccxt.pro.binance`` whose REST and WebSocket URLs point at the fakes.

    No keys, ``enableRateLimit`` off, markets limited to spot (no futures exchangeInfo, no
    private currency/margin calls), ``timeout_on_exit`` 0 (no 250 ms sleep in ``close()``).
    `config` is merged over that (``options`` and ``streaming`` key by key), e.g.
    ``streaming={"keepAlive": 200}`` for a fast ping-pong timeout or
    ``options={"watchTrades": {"name": "aggTrade"}}``. Create it inside the event loop that
    will use it, and ``await exchange.close()`` at the end.
    """
    import ccxt.pro

    options = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
               "fetchMargins": False, **config.pop("options", {})}
    settings = {"enableRateLimit": False, "timeout_on_exit": 0, **config, "options": options}
    exchange = ccxt.pro.binance(settings)
    exchange.urls = {k: loopback_urls(v, rest_url, ws_url) if isinstance(v, dict) else v
                     for k, v in exchange.urls.items()}
    return exchange


# ---------------------------------------------------------------------------------- waiting
def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition",
               interval: float = 0.005) -> Any:
    """Poll `predicate` until it returns something truthy (returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def until(predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 5.0,
                what: str = "condition", interval: float = 0.005) -> Any:
    """`wait_until` for a coroutine: polls without blocking the loop (predicate may be async)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


__all__ = [
    "AggTrade",
    "BinanceStreamServer",
    "Book",
    "FakeBinance",
    "StreamRestServer",
    "Trade",
    "Venue",
    "VenueEvent",
    "WsConnection",
    "loopback_urls",
    "pro_client",
    "until",
    "wait_until",
]
