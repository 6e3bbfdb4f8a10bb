"""Live trades, quotes and crypto order books from Alpaca through alpaca-py's data streams.

Alpaca allows one connection per key and endpoint, so every crypto symbol rides one
`CryptoDataStream` and every stock one `StockDataStream` (feed iex or sip). alpaca-py's `run()`
owns an event loop, reconnects on its own and only logs what went wrong (a refused key is retried
forever, an outage is silent); the collector must see every failure to refill the outage, so this
feed drives the unmodified client's own connect, authenticate, subscribe and receive steps inside
the collector's loop and lets any failure end the session. Frames stay raw (msgpack, nanosecond
timestamps, the taker side), which alpaca-py's parsed models would drop.

Books: Alpaca sends a full book (``r: true``) on subscribing and after every reconnect, then
changed levels (size 0 removes one); the feed keeps each book and stores its top N after every
change. Alpaca's books carry no sequence numbers, so a break can only be a reconnect.
`WORKBENCH_ALPACA_STREAM_URL` points the streams at another host (tests: a local server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
from alpaca.data.live import CryptoDataStream, StockDataStream

from workbench.config import setting
from workbench.data.feeds.base import Emit, Feed, Row, Stream, book_rows, surely_cancelled
from workbench.data.sources.alpaca import AlpacaSource
from workbench.data.ticks import TickKind
from workbench.errors import ConfigError, CredentialsError, TemporaryError

log = logging.getLogger(__name__)

STREAM_URL_SETTING = "WORKBENCH_ALPACA_STREAM_URL"
STREAM_HOST = "stream.data.alpaca.markets"
CRYPTO_PATH = "/v1beta3/crypto/us"
_STEPS = ("_start_ws", "_send_subscribe_msg", "_consume", "close")  # alpaca-py's, checked at open


class AlpacaFeed(Feed):
    """Alpaca's live data: crypto pairs (``BTC/USD``) on the crypto stream, stocks on iex/sip."""

    source = "alpaca"
    streams = frozenset({Stream.TRADES, Stream.QUOTES, Stream.BOOK})

    def __init__(self, *, stream_url: str | None = None, base_url: str | None = None) -> None:
        self.rest = AlpacaSource(base_url=base_url)
        url = (stream_url or setting(STREAM_URL_SETTING) or f"wss://{STREAM_HOST}").rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.netloc or parts.path:
            raise ConfigError(f"bad stream URL {url!r} ({STREAM_URL_SETTING}): write scheme and host, "
                              f"e.g. wss://{STREAM_HOST}")
        self.stream_url = url
        self._clients: list[Any] = []
        self._sessions = 0
        self._books: dict[str, tuple[dict[float, float], dict[float, float]]] = {}

    def __repr__(self) -> str:
        return f"AlpacaFeed(stream_url={self.stream_url!r})"

    async def open(self, symbols: Sequence[str], streams: Sequence[Stream]) -> list[str]:
        canon = [self.rest.canonical_symbol(s) for s in symbols]
        stocks = [s for s in canon if "/" not in s]
        if Stream.BOOK in streams and stocks:
            raise ConfigError(f"Alpaca streams order books for crypto only, not for {', '.join(stocks)}: "
                              "drop book from --streams or the stock symbols")
        if any(not hasattr(CryptoDataStream, step) for step in _STEPS):
            raise ConfigError("this alpaca-py lacks the stream steps the collector drives "
                              f"({', '.join(_STEPS)}): install the version pyproject.toml names")
        key, secret = self.rest.credentials()
        if not (key and secret):
            raise CredentialsError("Alpaca's live data needs API keys: set ALPACA_API_KEY and "
                                   "ALPACA_SECRET_KEY (or APCA_API_KEY_ID and APCA_API_SECRET_KEY) in the "
                                   "environment or in a .env file")
        return list(dict.fromkeys(canon))

    def _stream(self, crypto: bool) -> Any:
        key, secret = (k or "" for k in self.rest.credentials())  # checked by `open`
        if crypto:
            return CryptoDataStream(key, secret, raw_data=True, url_override=self.stream_url + CRYPTO_PATH)
        return StockDataStream(key, secret, raw_data=True,
                               url_override=f"{self.stream_url}/v2/{self.rest.feed}")

    async def run(self, symbols: Sequence[str], streams: Sequence[Stream], emit: Emit,
                  book_depth: int) -> None:
        self._sessions += 1
        self._books.clear()  # every subscription starts with a full book
        crypto = [s for s in symbols if "/" in s]
        stocks = [s for s in symbols if "/" not in s]
        async with asyncio.TaskGroup() as tg:
            for group, is_crypto in ((crypto, True), (stocks, False)):
                if group:
                    tg.create_task(surely_cancelled(
                        self._session(self._stream(is_crypto), group, streams, emit, book_depth)))

    async def _session(self, client: Any, symbols: list[str], streams: Sequence[Stream], emit: Emit,
                       depth: int) -> None:
        self._clients.append(client)

        async def on_trade(m: dict[str, Any]) -> None:
            now = time.time_ns()
            side = {"B": "buy", "S": "sell"}.get(m.get("tks", ""))
            emit(TickKind.TRADES, [(_ns(m["t"]), now, m["S"], int(m["i"]), float(m["p"]), float(m["s"]),
                                    side)])

        async def on_quote(m: dict[str, Any]) -> None:
            now = time.time_ns()
            emit(TickKind.QUOTES, [(_ns(m["t"]), now, m["S"], float(m["bp"]), float(m["bs"]),
                                    float(m["ap"]), float(m["as"]))])

        async def on_book(m: dict[str, Any]) -> None:
            now = time.time_ns()
            sym = m["S"]
            if m.get("r") or sym not in self._books:
                self._books[sym] = ({}, {})
            bids, asks = self._books[sym]
            for side, levels in ((bids, m.get("b") or []), (asks, m.get("a") or [])):
                for level in levels:
                    if float(level["s"]) == 0:
                        side.pop(float(level["p"]), None)
                    else:
                        side[float(level["p"])] = float(level["s"])
            top_b = sorted(bids.items(), reverse=True)[:depth]
            top_a = sorted(asks.items())[:depth]
            emit(TickKind.BOOK, book_rows(_ns(m["t"]), now, sym, None, top_b, top_a, depth))

        if Stream.TRADES in streams:
            client.subscribe_trades(on_trade, *symbols)
        if Stream.QUOTES in streams:
            client.subscribe_quotes(on_quote, *symbols)
        if Stream.BOOK in streams:
            client.subscribe_orderbooks(on_book, *symbols)
        try:
            await client._start_ws()
        except ValueError as exc:  # alpaca-py raises Alpaca's error message as a ValueError
            text = str(exc)
            if "auth" in text:
                raise CredentialsError(f"Alpaca refused the API keys ({text}): check ALPACA_API_KEY and "
                                       "ALPACA_SECRET_KEY hold a current key pair") from None
            if "connection limit" in text and self._sessions == 1:
                raise ConfigError(f"Alpaca refused a second connection with this key ({text}): another "
                                  "collector or program streams with it; stop it, or use another key"
                                  ) from None
            raise TemporaryError(f"Alpaca: {text}") from None
        await client._send_subscribe_msg()
        await client._consume()  # returns only when stopped; raises when the connection fails
        raise TemporaryError("Alpaca's stream stopped")

    async def reset(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()

    async def close(self) -> None:
        await self.reset()

    async def trades_after(self, symbol: str, after_id: int | None, since_ns: int, limit: int) -> list[Row]:
        start = pd.Timestamp(since_ns, unit="ns", tz="UTC")
        got = await asyncio.to_thread(self.rest.fetch_trades, symbol, start, limit)
        now = time.time_ns()
        rows: list[Row] = []
        for m in got:
            ident = int(m["i"])
            if after_id is not None and ident <= after_id:
                continue
            side = {"B": "buy", "S": "sell"}.get(m.get("tks", ""))
            rows.append((_ns(m["t"]), now, symbol, ident, float(m["p"]), float(m["s"]), side))
        return rows


def _ns(t: Any) -> int:
    """A message time in UTC nanoseconds: msgpack's Timestamp, or RFC 3339 text."""
    if hasattr(t, "to_unix_nano"):
        return int(t.to_unix_nano())
    return int(pd.Timestamp(t).value)


__all__ = ["STREAM_URL_SETTING", "AlpacaFeed"]
