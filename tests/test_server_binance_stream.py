"""The unmodified ccxt.pro client against the Binance stream fake (WebSocket + REST, loopback).

Proves the fake speaks Binance's wire format well enough for ccxt to do its own work (parse
trades, sync an order book from a depth snapshot plus diffs, build klines, backfill by id or time)
and records what ccxt does on each fault. Waiting is on conditions with deadlines; the only
timeouts that are meant to expire assert that nothing arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from servers.binance import DEFAULT_MARKETS
from servers.binance_stream import FakeBinance, Venue, until
from servers.loopback import guard_loopback
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.network

BTC = "BTC/USDT"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    guard_loopback(monkeypatch)


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance(seed=11, rate=200, history_s=2) as f:
        yield f


def run(coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@contextlib.asynccontextmanager
async def pro(fake: FakeBinance, **config: Any) -> AsyncIterator[Any]:
    exchange = fake.client(**config)
    try:
        yield exchange
    finally:
        await exchange.close()


async def collect(watch: Callable[[], Awaitable[list[Any]]], n: int) -> list[Any]:
    out: list[Any] = []
    while len(out) < n:
        out += await watch()
    return out


async def first_error(watch: Callable[[], Awaitable[Any]], timeout: float = 3.0) -> Exception:
    """Call `watch` until it raises (data already buffered may still come first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(watch(), max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        except Exception as exc:
            return exc
    raise AssertionError("the watch never failed")


def as_tuples(side: list[list[float]]) -> list[tuple[float, float]]:
    return [(p, q) for p, q in side]


async def book_equals_venue(exchange: Any, fake: FakeBinance, symbol_id: str = "BTCUSDT") -> None:
    """With the venue paused, ccxt's book catches up to the venue's and equals it level by level.

    ccxt applies diffs as they arrive, watched or not: its `orderbooks` are read directly.
    """
    target = fake.venue.update_id(symbol_id)
    await until(lambda: (exchange.orderbooks.get(BTC) or {}).get("nonce") == target,
                what=f"ccxt's book at update id {target}")
    ob = exchange.orderbooks[BTC]
    book = fake.venue.book(symbol_id)
    assert ob["nonce"] == book.last_update_id
    assert as_tuples(ob["bids"]) == book.bids
    assert as_tuples(ob["asks"]) == book.asks


# ------------------------------------------------------------------------------- the venue
def test_the_venue_is_a_pure_function_of_its_seed() -> None:
    a, b, c = (Venue(seed=seed, start_ms=1_700_000_000_000, history_s=10, paused=True)
               for seed in (3, 3, 4))
    assert a.trades("BTCUSDT") == b.trades("BTCUSDT")
    assert a.book("ETHUSDT") == b.book("ETHUSDT")
    assert a.trades("BTCUSDT") != c.trades("BTCUSDT")
    trades = a.trades("BTCUSDT")
    ids = [t.id for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert all(t.p.endswith("000000") for t in trades)  # on BTCUSDT's 0.01 tick
    book = a.book("BTCUSDT")
    assert book.bids[0][0] < book.asks[0][0] and len(book.bids) == len(book.asks) == 20
    # klines are built from the trades: each 1m row sums its trades exactly
    for row in a.klines("BTCUSDT", "1m", limit=1000):
        inside = [t for t in trades if row[0] <= t.time <= row[6]]
        assert row[8] == len(inside)
        assert Decimal(row[5]) == sum((Decimal(t.q) for t in inside), Decimal(0))
        if inside:
            assert (row[1], row[4]) == (inside[0].p, inside[-1].p)


# ------------------------------------------------------------------------------- trades
@pytest.mark.parametrize("name", ["trade", "aggTrade"])
def test_watch_trades_receives_the_venues_trades_in_order(fake: FakeBinance, name: str) -> None:
    async def main() -> None:
        async with pro(fake, options={"watchTrades": {"name": name}}) as ex:
            got = await collect(lambda: ex.watch_trades(BTC), 25)
        first = int(got[0]["id"])
        served = (fake.venue.trades if name == "trade" else fake.venue.agg_trades)(
            "BTCUSDT", from_id=first, limit=len(got))
        assert [(int(t["id"]), t["timestamp"], t["price"], t["amount"], t["side"]) for t in got] == [
            (s.id, s.time, s.price, s.amount, s.side) for s in served]
        assert [int(t["id"]) for t in got] == list(range(first, first + len(got)))
        assert all(t["symbol"] == BTC for t in got)

    run(main())
    (conn,) = fake.ws.connections
    assert conn.path == "/ws/0" and conn.subscribed == [f"btcusdt@{name}"]
    assert conn.requests == [{"method": "SUBSCRIBE", "params": [f"btcusdt@{name}"], "id": 1}]
    assert [r.path for r in fake.rest.requests] == ["/api/v3/exchangeInfo"]  # load_markets only


# ------------------------------------------------------------------------------- order book
def test_watch_order_book_syncs_snapshot_and_diffs_to_the_venues_book(fake: FakeBinance) -> None:
    async def main() -> None:
        async with pro(fake) as ex:
            await ex.watch_order_book(BTC)
            fake.venue.pause()
            await book_equals_venue(ex, fake)
            fake.venue.tick(500)  # 50 more events arrive as diffs only
            await book_equals_venue(ex, fake)

    run(main())
    (depth,) = fake.rest.hits("/api/v3/depth")
    assert depth.query == {"symbol": "BTCUSDT", "limit": "1000"}
    assert fake.ws.subscriptions() == [(1, "btcusdt@depth@100ms")]


async def live_book(exchange: Any) -> int:
    """Wait until ccxt has applied a diff on top of its snapshot; returns the book's nonce.

    Only then does a lost diff open a gap for ccxt: a diff lost earlier may hold nothing but
    updates the snapshot already has (REST can be ahead of the stream), which ccxt skips anyway.
    """
    snapshot = (await exchange.watch_order_book(BTC))["nonce"]
    return await until(lambda: exchange.orderbooks[BTC]["nonce"] > snapshot and
                       exchange.orderbooks[BTC]["nonce"], what="a diff applied after the snapshot")


def test_a_depth_gap_makes_ccxt_raise_checksum_error_then_resync(fake: FakeBinance) -> None:
    async def main() -> None:
        async with pro(fake) as ex:
            await live_book(ex)
            fake.ws.skip_depth("BTCUSDT")
            error = await first_error(lambda: ex.watch_order_book(BTC))
            assert isinstance(error, ccxt.ChecksumError)  # an InvalidNonce, a NetworkError
            assert isinstance(error, ccxt.NetworkError)
            await ex.watch_order_book(BTC)  # the next call subscribes again and re-snapshots
            fake.venue.pause()
            await book_equals_venue(ex, fake)

    run(main())
    assert len(fake.ws.skipped) >= 1
    (conn,) = fake.ws.connections  # same connection, a second SUBSCRIBE
    assert [r["params"] for r in conn.requests] == [["btcusdt@depth@100ms"]] * 2
    assert len(fake.rest.hits("/api/v3/depth")) == 2


def test_with_checksum_off_a_depth_gap_freezes_ccxts_book_silently(fake: FakeBinance) -> None:
    async def main() -> None:
        async with pro(fake, options={"watchOrderBook": {"checksum": False}}) as ex:
            nonce = await live_book(ex)
            fake.ws.skip_depth("BTCUSDT")
            await until(lambda: fake.ws.skipped, what="the lost diff")
            with pytest.raises(TimeoutError):  # every diff after the gap fails U == nonce + 1
                while True:
                    nonce = (await asyncio.wait_for(ex.watch_order_book(BTC), 0.3))["nonce"]
            assert fake.ws.skipped and nonce < fake.ws.skipped[0]["u"]  # stuck before the gap
            assert nonce < fake.venue.update_id("BTCUSDT") - 10

    run(main())


# ------------------------------------------------------------------------------- klines
def test_watch_ohlcv_closed_klines_equal_rest_klines() -> None:
    with FakeBinance(seed=5, rate=100, speed=10.0) as fake:  # a 1s kline closes every 0.1 s
        async def main() -> None:
            async with pro(fake) as ex:
                seen: dict[int, list[float]] = {}
                while len(seen) < 4:
                    for row in await ex.watch_ohlcv(BTC, "1s"):
                        seen[row[0]] = row
                closed = sorted(seen)[:-1]  # a later kline exists: these were sent with x=true
                rest = await ex.fetch_ohlcv(BTC, "1s", since=closed[0], limit=len(closed))
                assert [seen[t] for t in closed] == rest
                venue = [[r[0], *(float(x) for x in r[1:6])]
                         for r in fake.venue.klines("BTCUSDT", "1s", closed[0], closed[-1])]
                assert venue == rest
                one_minute = await ex.fetch_ohlcv(BTC, "1m", limit=3)
                assert one_minute and one_minute[-1][0] % 60_000 == 0

        run(main())
        assert fake.ws.subscriptions() == [(1, "btcusdt@kline_1s")]
        assert fake.rest.hits("/api/v3/klines")[0].query["interval"] == "1s"


# ------------------------------------------------------------------------------- backfill
def test_fetch_trades_by_id_and_by_time_returns_exactly_the_venues_slices(fake: FakeBinance) -> None:
    fake.venue.pause()
    fake.venue.tick(8000)  # eight more seconds of history, now
    trades = fake.venue.trades("BTCUSDT")
    aggs = fake.venue.agg_trades("BTCUSDT")
    from_agg, from_trade = aggs[100].id, trades[200].id
    since = trades[300].time

    def rows(got: list[dict[str, Any]]) -> list[tuple[int, int, float, float, str]]:
        return [(int(t["id"]), t["timestamp"], t["price"], t["amount"], t["side"]) for t in got]

    def served(items: list[Any]) -> list[tuple[int, int, float, float, str]]:
        return [(s.id, s.time, s.price, s.amount, s.side) for s in items]

    async def main() -> None:
        # ccxt refuses historicalTrades without an apiKey (Binance dropped that need in 2023 and
        # ignores the header); any key will do, nothing else is signed
        async with pro(fake, apiKey="not-a-real-key") as ex:
            by_agg_id = await ex.fetch_trades(BTC, limit=50, params={"fromId": from_agg})
            assert rows(by_agg_id) == served(fake.venue.agg_trades("BTCUSDT", from_id=from_agg,
                                                                   limit=50))
            by_time = await ex.fetch_trades(BTC, since=since, limit=80)  # aggTrades, startTime
            assert rows(by_time) == served(fake.venue.agg_trades(
                "BTCUSDT", start_ms=since, end_ms=since + 3_600_000, limit=80))
            by_trade_id = await ex.fetch_trades(BTC, limit=70, params={
                "fetchTradesMethod": "publicGetHistoricalTrades", "fromId": from_trade})
            assert rows(by_trade_id) == served(fake.venue.trades("BTCUSDT", from_id=from_trade,
                                                                 limit=70))
            recent = await ex.fetch_trades(BTC, params={"fetchTradesMethod": "publicGetTrades"})
            assert rows(recent) == served(trades[-500:])
            with pytest.raises(ccxt.BadRequest, match="-1128"):  # fromId mixed with a time
                await ex.fetch_trades(BTC, since=since, params={"fromId": from_agg})

    run(main())
    assert fake.rest.hits("/api/v3/historicalTrades")[0].headers["x-mbx-apikey"] == "not-a-real-key"
    by_time_query = fake.rest.hits("/api/v3/aggTrades")[1].query
    assert by_time_query == {"symbol": "BTCUSDT", "startTime": str(since),
                             "endTime": str(since + 3_600_000), "limit": "80"}


# ------------------------------------------------------------------------------- faults
async def drained(exchange: Any, fake: FakeBinance, symbol_id: str = "BTCUSDT") -> None:
    """Pause the venue and wait until ccxt holds its last trade: nothing more can arrive."""
    fake.venue.pause()
    last = str(fake.venue.trades(symbol_id)[-1].id)
    await until(lambda: exchange.trades[BTC][-1]["id"] == last, what="ccxt to hold every trade")


async def trades_after(exchange: Any, last_id: int) -> list[int]:
    """Ids of the next trades ccxt hands out past `last_id` (a watch may repeat older ones)."""
    ids: list[int] = []
    while not ids:
        ids = [int(t["id"]) for t in await exchange.watch_trades(BTC) if int(t["id"]) > last_id]
    return ids


def test_a_drop_under_a_pending_watch_is_a_network_error_and_the_next_watch_reconnects(
        fake: FakeBinance) -> None:
    async def main() -> None:
        async with pro(fake, apiKey="not-a-real-key") as ex:
            before = await ex.watch_trades(BTC)
            await drained(ex, fake)
            last_seen = int(ex.trades[BTC][-1]["id"])
            (client,) = ex.clients.values()
            pending = asyncio.ensure_future(ex.watch_trades(BTC))
            await until(lambda: client.futures, what="the watch to be pending")
            assert fake.ws.drop() == 1
            with pytest.raises(ccxt.NetworkError, match="closing code 1006"):
                await pending
            fake.venue.resume()
            next_seen = (await trades_after(ex, last_seen))[0]  # a new connection
            assert before and next_seen > last_seen
            # what happened while disconnected is there to backfill by trade id
            gap = await ex.fetch_trades(BTC, limit=1000, params={
                "fetchTradesMethod": "publicGetHistoricalTrades", "fromId": last_seen + 1})
            ids = [int(t["id"]) for t in gap]
            assert ids[: next_seen - last_seen] == list(range(last_seen + 1, next_seen + 1))

    run(main())
    first, second = fake.ws.connections
    assert first.close_reason == "dropped"
    assert first.subscribed == second.subscribed == ["btcusdt@trade"]


def test_a_drop_while_nobody_watches_is_swallowed_and_ccxt_reconnects_silently(
        fake: FakeBinance) -> None:
    async def main() -> None:
        async with pro(fake) as ex:
            await ex.watch_trades(BTC)
            (url,) = ex.clients
            fake.ws.drop()
            await until(lambda: url not in ex.clients, what="ccxt to forget the dead connection")
            assert await ex.watch_trades(BTC)  # no error ever surfaces: trades may be missing
            assert [c.close_reason for c in fake.ws.connections] == ["dropped", None]

    run(main())


def test_a_server_shutdown_notice_ends_a_pending_watch_with_code_1001(fake: FakeBinance) -> None:
    async def main() -> None:
        async with pro(fake) as ex:
            await ex.watch_trades(BTC)
            await drained(ex, fake)
            (client,) = ex.clients.values()
            pending = asyncio.ensure_future(ex.watch_trades(BTC))
            await until(lambda: client.futures, what="the watch to be pending")
            assert fake.ws.shutdown_notice() == 1  # ccxt has no handler for the event itself
            with pytest.raises(ccxt.NetworkError, match="closing code 1001"):
                await pending

    run(main())


def test_a_stall_blocks_the_watch_while_the_venue_trades_on(fake: FakeBinance) -> None:
    async def main() -> None:
        async with pro(fake) as ex:
            await ex.watch_trades(BTC)
            await drained(ex, fake)
            held = int(ex.trades[BTC][-1]["id"])
            fake.ws.stall()  # pings are still answered: ccxt cannot tell
            fake.venue.tick(300)  # the venue trades on; the messages go nowhere
            assert fake.venue.trades("BTCUSDT")[-1].id > held + 1
            await until(lambda: fake.ws.discarded, what="the stall to swallow messages")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ex.watch_trades(BTC), 0.2)
            fake.ws.unstall()
            fake.venue.resume()
            assert (await trades_after(ex, held))[0] > held + 1  # the stalled messages are lost
            assert [c.open for c in fake.ws.connections] == [True]  # all along one socket

    run(main())


def test_a_stall_without_pongs_trips_ccxts_keepalive(fake: FakeBinance) -> None:
    async def main() -> None:
        async with pro(fake, streaming={"keepAlive": 100}) as ex:
            await ex.watch_trades(BTC)
            fake.ws.stall(pongs=False)
            error = await first_error(lambda: ex.watch_trades(BTC), timeout=5.0)
            assert isinstance(error, ccxt.RequestTimeout) and "ping-pong" in str(error)
            fake.ws.unstall()
            assert await ex.watch_trades(BTC)  # ccxt dials again

    run(main())
    assert len(fake.ws.connections) == 2


def test_refused_connections_are_network_errors_and_retry_after_is_honoured(
        fake: FakeBinance) -> None:
    async def main() -> None:
        async with pro(fake) as ex:
            fake.ws.refuse(429, retry_after=0.3, for_s=5.0)
            error = await first_error(lambda: ex.watch_trades(BTC))
            assert isinstance(error, ccxt.NetworkError) and "429" in str(error)
            fake.ws.accept()
            started = time.monotonic()
            assert await ex.watch_trades(BTC)
            assert time.monotonic() - started >= 0.25  # ccxt waited out the Retry-After
            fake.ws.refuse(None)  # now a TCP abort before any HTTP answer
            (url,) = ex.clients
            fake.ws.drop()
            await until(lambda: url not in ex.clients, what="ccxt to see the drop")
            with pytest.raises(ccxt.NetworkError, match="Server disconnected"):  # the re-dial
                await ex.watch_trades(BTC)
            fake.ws.accept()
            assert await ex.watch_trades(BTC)
            assert [c.close_reason for c in fake.ws.connections] == ["dropped", None]

    run(main())
    # one 429 handshake; the aborted one twice: aiohttp retries an idempotent GET once when the
    # server disconnects
    assert fake.ws.refused == ["/ws/0"] * 3


def test_rest_faults_come_in_binances_shape(fake: FakeBinance) -> None:
    async def main() -> None:
        async with pro(fake) as ex:
            await ex.load_markets()
            fake.rest.rate_limit_next(retry_after=2)
            with pytest.raises(ccxt.DDoSProtection, match="429"):  # not RateLimitExceeded
                await ex.fetch_trades(BTC)
            fake.rest.ban_next()
            with pytest.raises(ccxt.DDoSProtection, match="418"):
                await ex.fetch_trades(BTC)
            fake.rest.server_error_next(status=500)
            with pytest.raises(ccxt.OperationFailed, match="-1001"):  # by the code, not a 5xx
                await ex.fetch_trades(BTC)
            fake.rest.server_error_next(status=503)
            with pytest.raises(ccxt.ExchangeNotAvailable):
                await ex.fetch_trades(BTC)
            # the depth snapshot ccxt takes itself is retried (options.watchOrderBook.maxRetries)
            fake.rest.server_error_next(times=2, status=503, path="/api/v3/depth")
            await ex.watch_order_book(BTC)

    run(main())
    assert len(fake.rest.hits("/api/v3/depth")) == 3


def test_duplicated_and_reordered_messages_pass_straight_through_ccxt(fake: FakeBinance) -> None:
    async def next_ids(ex: Any, n: int) -> list[int]:
        """The next `n` trade ids ccxt hands out after the venue resumes, repeats included."""
        last = int(ex.trades[BTC][-1]["id"])
        fake.venue.resume()
        ids: list[int] = []
        while len(ids) < n:
            ids += [int(t["id"]) for t in await ex.watch_trades(BTC) if int(t["id"]) > last]
        return ids[:n]

    async def main() -> None:
        async with pro(fake) as ex:
            await ex.watch_trades(BTC)
            await drained(ex, fake)
            fake.ws.duplicate_next(1, "@trade")
            ids = await next_ids(ex, 6)
            assert ids[0] == ids[1] and ids[1:] == list(range(ids[1], ids[1] + 5))  # no dedupe
            await drained(ex, fake)
            fake.ws.reorder_next(1, "@trade")
            ids = await next_ids(ex, 6)
            assert ids[0] == ids[1] + 1  # swapped: ccxt keeps the wire order
            assert sorted(ids) == list(range(ids[1], ids[1] + 6))

    run(main())


# ------------------------------------------------------------------------------- quotes
def test_watch_bids_asks_and_ticker() -> None:
    with FakeBinance(seed=2, rate=200, history_s=2, speed=5.0) as fake:  # a ticker every 0.2 s
        check_quotes(fake)


def check_quotes(fake: FakeBinance) -> None:
    async def main() -> None:
        async with pro(fake) as ex:
            quotes = await ex.watch_bids_asks([BTC])
            assert quotes[BTC]["info"].keys() == {"u", "s", "b", "B", "a", "A"}
            fake.venue.pause()
            best = fake.venue.best("BTCUSDT")

            def quote() -> tuple[float, float, float, float]:
                q = ex.bidsasks[BTC]  # ccxt keeps reading without a pending watch
                return q["bid"], q["bidVolume"], q["ask"], q["askVolume"]

            await until(lambda: quote() == best, what="the venue's best bid and ask")
            fake.venue.resume()
            mini = await ex.watch_ticker(BTC)  # ccxt's default is the mini ticker: no bid/ask
            assert mini["info"]["e"] == "24hrMiniTicker" and mini["bid"] is None
            full = await ex.watch_ticker(BTC, params={"name": "ticker"})
            assert full["info"]["e"] == "24hrTicker" and full["bid"] < full["ask"]
            for ticker in (mini, full):
                last = fake.venue.trades("BTCUSDT", end_ms=ticker["info"]["E"])[-1]
                assert ticker["symbol"] == BTC and ticker["last"] == last.price

    run(main())
    assert [s for _, s in fake.ws.subscriptions()] == [
        "btcusdt@bookTicker", "btcusdt@miniTicker", "btcusdt@ticker"]


# ------------------------------------------------------------------------------- raw protocol
def test_the_stream_protocol_seen_by_a_raw_client(fake: FakeBinance) -> None:
    async def reply(ws: Any, request: Any) -> dict[str, Any]:
        await ws.send(request if isinstance(request, str) else json.dumps(request))
        while True:
            msg = json.loads(await ws.recv())
            if "id" in msg:
                return msg

    async def closed(ws: Any) -> int | None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
        return ws.close_code

    async def main() -> None:
        async with connect(fake.ws.ws_url + "/ws") as ws:
            # unknown symbol / unknown stream kind: accepted silently, then nothing
            assert await reply(ws, {"method": "SUBSCRIBE", "id": 1,
                                    "params": ["foousdt@trade", "btcusdt@nosuch"]}) == {
                "result": None, "id": 1}
            assert await reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2}) == {
                "result": ["btcusdt@nosuch", "foousdt@trade"], "id": 2}
            assert (await reply(ws, "{nope"))["error"]["code"] == 3
            bad = await reply(ws, {"method": "SUBSCRIBED", "params": [], "id": 3})
            assert bad["error"]["code"] == 2 and "unknown variant" in bad["error"]["msg"]
            assert await reply(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 4}) == {
                "result": False, "id": 4}
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.2)
        async with connect(fake.ws.ws_url + "/stream?streams=btcusdt@aggTrade/ethusdt@depth@100ms"
                           ) as ws:
            seen: dict[str, dict[str, Any]] = {}
            while len(seen) < 2:
                msg = json.loads(await ws.recv())
                seen[msg["stream"]] = msg["data"]
            assert seen["btcusdt@aggTrade"].keys() == {"e", "E", "s", "a", "p", "q", "f", "l", "T",
                                                       "m", "M"}
            diff = seen["ethusdt@depth@100ms"]
            assert diff["e"] == "depthUpdate" and diff["U"] <= diff["u"]
            nxt = diff
            while nxt is diff:  # consecutive diffs chain: U == previous u + 1
                msg = json.loads(await ws.recv())
                if msg["stream"] == "ethusdt@depth@100ms":
                    nxt = msg["data"]
            assert nxt["U"] == diff["u"] + 1
        async with connect(fake.ws.ws_url + "/ws/btcusdt@bookTicker") as ws:
            quote = json.loads(await ws.recv())
            assert quote.keys() == {"u", "s", "b", "B", "a", "A"}
            error = await reply(ws, {"method": "SUBSCRIBE", "params": ["@@bad##"], "id": 9})
            assert error == {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 9}
            assert await closed(ws) == 1008
        async with connect(fake.ws.ws_url + "/ws") as ws:
            for i in range(6):  # Binance: at most 5 incoming messages a second
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            assert await closed(ws) == 1008

    run(main())
    reasons = [c.close_reason for c in fake.ws.connections]
    assert reasons[2:] == ["invalid stream", "too many messages"]


def test_it_carries_a_few_thousand_messages_a_second() -> None:
    markets = DEFAULT_MARKETS  # four symbols, 500 events a second each
    with FakeBinance(markets, rate=500, history_s=0) as fake:
        streams = [f"{m.id.lower()}@{k}" for m in markets
                   for k in ("trade", "aggTrade", "bookTicker", "depth@100ms")]

        async def main() -> float:
            async with connect(f"{fake.ws.ws_url}/stream?streams={'/'.join(streams)}",
                               max_queue=None) as ws:
                ids: dict[str, list[int]] = {}
                started = time.monotonic()
                for _ in range(2000):
                    msg = json.loads(await ws.recv())
                    if msg["stream"].endswith("@trade"):
                        ids.setdefault(msg["data"]["s"], []).append(msg["data"]["t"])
                elapsed = time.monotonic() - started
            for got in ids.values():  # nothing lost or reordered on the way
                assert got == list(range(got[0], got[0] + len(got)))
            return elapsed

        elapsed = run(main())  # about 0.7 s: ~2900 messages a second are generated
        assert elapsed < 3.0, f"2000 messages took {elapsed:.2f}s"
