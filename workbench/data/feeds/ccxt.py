"""Live trades, best bid/ask and order books from a crypto exchange through ccxt's WebSocket client.

ccxt.pro (part of the free ccxt package) keeps one connection per stream URL and multiplexes the
subscriptions of every symbol on it; it syncs each order book itself (deltas buffered, a REST
snapshot newer than the first delta, every update id checked) and raises `InvalidNonce` on a
break, after which the next watch resyncs: the feed records that break in the gaps table.
`WORKBENCH_CCXT_WS_URL` points every WebSocket endpoint at another host (tests: a local server),
as `WORKBENCH_CCXT_BASE_URL` does for REST. REST (symbol checks and trade backfill) goes through
`CcxtSource`, with its retry policy and errors.

On Binance trades are aggregate trades (``@aggTrade`` live, ``/api/v3/aggTrades`` to backfill):
the one trade id the venue serves both live and by id over REST.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import ccxt
import ccxt.pro
from ccxt.async_support.base.ws.cache import ArrayCache

from workbench.config import setting
from workbench.data.feeds.base import Emit, Feed, Row, Stream, as_int, book_rows, surely_cancelled
from workbench.data.sources.ccxt import CcxtSource, rebase_nested, rebase_urls
from workbench.data.ticks import TickKind
from workbench.errors import ConfigError

log = logging.getLogger(__name__)

WS_URL_SETTING = "WORKBENCH_CCXT_WS_URL"
TRADES_CACHE = 200  # trades ccxt keeps per symbol between two drains
# A watch of many symbols races one future per symbol, so a wake-up costs O(symbols): at 200 symbols
# a wake-up per message was most of the collector's CPU. Wake-ups are spaced by WAKE_S instead, and
# each drains everything ccxt parsed meanwhile (receipt times are stamped as ccxt parses).
WAKE_S = 0.02
RECV_KEY = "_workbench_recv_ns"  # where a trade's receipt time is kept in ccxt's dict
_METHODS = {Stream.TRADES: "watchTrades", Stream.QUOTES: "watchBidsAsks", Stream.BOOK: "watchOrderBook"}
# exchanges whose live trade ids can be paged by id over REST: (live stream name, REST method)
_BY_ID: dict[str, tuple[str, str]] = {"binance": ("aggTrade", "publicGetAggTrades")}


class CcxtFeed(Feed):
    """One exchange's live data through ccxt.pro; `source` is the exchange id (the lake's name)."""

    def __init__(self, exchange_id: str, *, ws_url: str | None = None, base_url: str | None = None) -> None:
        self.rest = CcxtSource(exchange_id, base_url=base_url)
        self.source = self.rest.name
        cls = getattr(ccxt.pro, self.source, None)
        if cls is None:
            raise ConfigError(f"{self.source} has no WebSocket streams in ccxt: collect from an exchange "
                              f"in ccxt.pro.exchanges (e.g. ccxt:binance)")
        self._cls = cls
        self.ws_url = ws_url or setting(WS_URL_SETTING)
        if self.ws_url:
            rebase_ws_urls({}, self.ws_url)  # a bad URL is refused now, not at the first connection
        self.exchange: Any = self._client()  # replaced inside the collector's event loop by `open`
        self.contiguous_ids = self.source in _BY_ID
        has = self.exchange.has
        self.streams = frozenset(s for s, m in _METHODS.items() if has.get(m))

    def __repr__(self) -> str:
        return f"CcxtFeed({self.source!r})"

    def _client(self) -> Any:
        """A ccxt.pro client on the configured endpoints (ccxt binds it to the running event loop)."""
        exchange = self._cls({"enableRateLimit": True, "timeout_on_exit": 0})
        exchange.options.update({k: v for k, v in self.rest.exchange.options.items()
                                 if k in ("fetchMarkets", "fetchCurrencies", "fetchMargins")})
        # ccxt keeps the last `tradesLimit` parsed trades of every symbol (1000 by default: ~500 MB at
        # 200 symbols). Each wake-up drains them; a cache that overflows between two drains is seen
        # (`drain_trades`) and refilled from REST, so a short cache only bounds memory.
        exchange.options["tradesLimit"] = TRADES_CACHE
        by_id = _BY_ID.get(self.source)
        if by_id:  # one stream name for one symbol and for several
            for option in ("watchTrades", "watchTradesForSymbols"):
                exchange.options[option] = {**exchange.options.get(option, {}), "name": by_id[0]}
        if self.rest.base_url:
            exchange.urls["api"] = rebase_urls(exchange.urls["api"], self.rest.base_url)
        if self.ws_url:
            exchange.urls["api"] = rebase_ws_urls(exchange.urls["api"], self.ws_url)
        return exchange

    async def open(self, symbols: Sequence[str], streams: Sequence[Stream]) -> list[str]:
        self.exchange = self._client()
        for s in streams:
            if s not in self.streams:
                offered = ", ".join(sorted(x.value for x in self.streams)) or "none"
                raise ConfigError(f"{self.source} has no {s.value} stream in ccxt (it offers: {offered}): "
                                  "drop it from --streams")
        canon = await asyncio.to_thread(lambda: [self.rest.canonical_symbol(s) for s in symbols])
        self.exchange.markets = None  # loaded by the first watch, through the same endpoints
        return list(dict.fromkeys(canon))

    async def run(self, symbols: Sequence[str], streams: Sequence[Stream], emit: Emit,
                  book_depth: int) -> None:
        async with asyncio.TaskGroup() as tg:
            if Stream.TRADES in streams:
                tg.create_task(self._trades(list(symbols), emit))
            if Stream.QUOTES in streams:
                tg.create_task(surely_cancelled(self._quotes(list(symbols), emit)))
            if Stream.BOOK in streams:
                for sym in symbols:
                    tg.create_task(surely_cancelled(self._book(sym, emit, book_depth)))

    async def _trades(self, symbols: list[str], emit: Emit) -> None:
        many = self.exchange.has.get("watchTradesForSymbols") and len(symbols) > 1
        if not many:
            async with asyncio.TaskGroup() as tg:
                for sym in symbols:
                    tg.create_task(surely_cancelled(self._trades_of([sym], emit)))
            return
        await surely_cancelled(self._trades_of(symbols, emit))

    async def _trades_of(self, symbols: list[str], emit: Emit) -> None:
        """Each watch is a wake-up: ccxt returns only the new trades of the symbol whose message came
        first in its read and keeps every symbol's in a cache; all of them are drained here, each
        cache from its newest trade back to the last one drained before (the same object)."""
        drained: dict[str, object] = {}
        stamp_trades(self.exchange, symbols)
        while True:
            if len(symbols) > 1:
                await self.exchange.watch_trades_for_symbols(symbols)
            else:
                await self.exchange.watch_trades(symbols[0])
            now = time.time_ns()
            trades, overflowed = drain_trades(self.exchange, symbols, drained)
            for sym in overflowed:  # the collector refills the id jump this leaves
                log.warning("%s: %s trades left ccxt's cache before they were read", self.source, sym)
            emit(TickKind.TRADES, [_trade_row(t, t.get(RECV_KEY, now)) for t in trades])
            await asyncio.sleep(WAKE_S)

    async def _quotes(self, symbols: list[str], emit: Emit) -> None:
        wanted = set(symbols)
        # ccxt returns the symbol whose update came first and keeps only the latest of every symbol
        # in `bidsasks`; the updates between two wake-ups would coalesce. Every parsed update is
        # stored into that dict, so a dict that also logs each store keeps them all, in order.
        book = QuoteLog(self.exchange.bidsasks or {})
        self.exchange.bidsasks = book
        while True:
            await self.exchange.watch_bids_asks(symbols)
            emit(TickKind.QUOTES, book.rows(wanted))
            await asyncio.sleep(WAKE_S)

    async def _book(self, symbol: str, emit: Emit, depth: int) -> None:
        last_ts: int | None = None
        previous: tuple[Any, ...] | None = None
        while True:
            try:
                book = await self.exchange.watch_order_book(symbol)
            except ccxt.InvalidNonce as exc:  # a sequence break: ccxt resyncs on the next watch
                now = time.time_ns()
                emit(TickKind.GAPS, [(last_ts or now, now, symbol, now, Stream.BOOK.value,
                                      f"sequence gap, book resynced ({str(exc)[:80]})")])
                previous = None
                continue
            now = time.time_ns()
            bids, asks = book["bids"][:depth], book["asks"][:depth]
            top = (tuple(map(tuple, bids)), tuple(map(tuple, asks)))
            if top == previous:
                continue
            previous = top
            ts = book.get("timestamp")
            ts_ns = int(ts) * 1_000_000 if ts else now
            last_ts = now
            emit(TickKind.BOOK, book_rows(ts_ns, now, symbol, book.get("nonce"), bids, asks, depth))

    async def reset(self) -> None:
        with contextlib.suppress(Exception):
            await self.exchange.close()

    async def close(self) -> None:
        await self.reset()

    async def trades_after(self, symbol: str, after_id: int | None, since_ns: int, limit: int) -> list[Row]:
        by_id = _BY_ID.get(self.source)

        def fetch() -> list[dict[str, Any]]:
            params: dict[str, Any] = {}
            since: int | None = since_ns // 1_000_000
            if by_id and after_id is not None:
                params = {"fetchTradesMethod": by_id[1], "fromId": after_id + 1}
                since = None
            elif by_id:
                params = {"fetchTradesMethod": by_id[1]}
            return self.rest.fetch_trades(symbol, since_ms=since, limit=limit, params=params)

        got = await asyncio.to_thread(fetch)
        now = time.time_ns()
        rows = [_trade_row(t, now) for t in got]
        if after_id is not None:
            rows = [r for r in rows if as_int(r[3]) > after_id]
        return sorted(rows, key=lambda r: as_int(r[3]))


class QuoteLog(dict[str, Any]):
    """ccxt's `bidsasks` (symbol -> its latest best bid/ask) that also logs every update stored,
    with the time (ns) ccxt parsed it: its receipt."""

    def __init__(self, initial: dict[str, Any]) -> None:
        super().__init__(initial)
        self._log: list[tuple[str, Any, int]] = []
        self._last: dict[str, tuple[Any, ...]] = {}  # symbol -> its last (bid, size, ask, size) in rows

    def __setitem__(self, symbol: str, quote: Any) -> None:
        super().__setitem__(symbol, quote)
        self._log.append((symbol, quote, time.time_ns()))

    def drain(self) -> list[tuple[str, Any, int]]:
        """Every (symbol, quote, receipt ns) stored since the last drain, oldest first."""
        out, self._log = self._log, []
        return out

    def rows(self, symbols: set[str]) -> list[Row]:
        """The quote table's rows of every update of `symbols` drained now that changes its
        symbol's (bid, bid size, ask, ask size), oldest first. Receipt times strictly increase in
        the order read: the tick tables tell quotes apart by (symbol, ts, receipt), and Binance's
        bookTicker has no time of its own."""
        rows: list[Row] = []
        previous = 0
        for sym, t, stamped in self.drain():
            if sym not in symbols:
                continue
            q = (t.get("bid"), t.get("bidVolume"), t.get("ask"), t.get("askVolume"))
            if None in q[::2] or self._last.get(sym) == q:
                continue
            self._last[sym] = q
            recv = previous = max(stamped, previous + 1)
            ts = t.get("timestamp")
            rows.append((int(ts) * 1_000_000 if ts else recv, recv, sym, *(float(x or 0.0) for x in q)))
        return rows


class StampedTrades(ArrayCache):
    """ccxt's trade cache of one symbol, stamping each trade with the time (ns) ccxt parsed it (its
    receipt), so that wake-ups can be batched without blurring receipt times."""

    def append(self, item: dict[str, Any]) -> None:
        item[RECV_KEY] = time.time_ns()
        super().append(item)


def stamp_trades(exchange: Any, symbols: Sequence[str], size: int = TRADES_CACHE) -> None:
    """Give each symbol a `StampedTrades` cache where ccxt will look for one (keeping what the
    cache held: a drain finds the last trade it took)."""
    for sym in symbols:
        cache = exchange.trades.get(sym)
        if isinstance(cache, StampedTrades):
            continue
        new = StampedTrades(size)
        for t in cache or ():
            ArrayCache.append(new, t)
        exchange.trades[sym] = new


def drain_trades(exchange: Any, symbols: Sequence[str], drained: dict[str, object]
                 ) -> tuple[list[dict[str, Any]], list[str]]:
    """The trades ccxt cached for `symbols` since the last drain, oldest first per symbol, and the
    symbols whose cache overflowed meanwhile. Each cache is walked from its newest trade back to the
    one drained last (the same object, kept in `drained`): ccxt's own new-update count repeats a
    stale value when nothing arrived in between."""
    out: list[dict[str, Any]] = []
    overflowed = []
    for sym in symbols:
        cache = exchange.trades.get(sym)
        if not cache:
            continue
        last = drained.get(sym)
        new = []
        for t in reversed(cache):
            if t is last:
                break
            new.append(t)
        else:
            if last is not None:
                overflowed.append(sym)
        if new:
            drained[sym] = new[0]
            out.extend(reversed(new))
    return out, overflowed


def _trade_row(t: dict[str, Any], recv_ns: int) -> Row:
    ts = t.get("timestamp")
    return (int(ts) * 1_000_000 if ts is not None else recv_ns, recv_ns, t["symbol"], int(t["id"]),
            float(t["price"]), float(t["amount"]), t.get("side"))


def rebase_ws_urls(urls: Any, ws_url: str) -> Any:
    """Replace scheme and host of every ws/wss URL in ccxt's `urls['api']`, keeping each path."""
    base = urlsplit(ws_url)
    if base.scheme not in ("ws", "wss") or not base.netloc:
        raise ConfigError(f"bad WebSocket URL {ws_url!r} ({WS_URL_SETTING}): write scheme and host, "
                          "e.g. ws://127.0.0.1:9443")

    return rebase_nested(urls, ws_url, ("ws", "wss"))


__all__ = ["WS_URL_SETTING", "CcxtFeed", "QuoteLog", "StampedTrades", "drain_trades", "rebase_ws_urls",
           "stamp_trades"]
