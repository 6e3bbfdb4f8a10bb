"""The Alpaca market-data stream fake against the UNMODIFIED alpaca-py clients (and a plain WebSocket client).

Besides proving the fake speaks Alpaca's protocol, these tests pin down what alpaca-py 0.44 does on each
fault (reconnect, resubscribe, retry, log, give up), which is what a streaming collector has to live with.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.requests import CryptoBarsRequest, CryptoTradesRequest, StockTradesRequest
from alpaca.data.timeframe import TimeFrame
from servers.alpaca import API_KEY, SECRET_KEY
from servers.alpaca_stream import (
    CRYPTO_TRADES_PATH,
    ERRORS,
    AlpacaStreamFake,
    Collector,
    LogWatcher,
    Market,
    StreamThread,
    aggregate,
    apply_orderbook,
    crypto_history,
    crypto_stream,
    rfc3339,
    stock_history,
    stock_stream,
    to_datetime,
)
from servers.loopback import guard_loopback
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

pytestmark = [pytest.mark.network, pytest.mark.timeout(60)]

BTC, ETH = "BTC/USD", "ETH/USD"
OTHER_KEY, OTHER_SECRET = "PKFAKE0OTHER0KEY0000", "another-fake-secret"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    guard_loopback(monkeypatch)


@pytest.fixture
def fake() -> Iterator[AlpacaStreamFake]:
    """A fresh fake whose market only moves when a test calls `step` (deterministic frames)."""
    with AlpacaStreamFake(seed=7, paused=True) as f:
        f.add_key(OTHER_KEY, OTHER_SECRET)
        yield f


@pytest.fixture
def run(fake: AlpacaStreamFake) -> Iterator[Callable[[Any], StreamThread]]:
    """Start alpaca-py streams in threads; stop them all (faults lifted first) after the test."""
    threads: list[StreamThread] = []

    def start(stream: Any) -> StreamThread:
        thread = StreamThread(stream).start()
        threads.append(thread)
        return thread

    yield start
    fake.unstall()
    fake.accept_connections()
    fake.refuse_auth(False)
    for thread in threads:
        thread.stop()


@pytest.fixture
def logs() -> Iterator[LogWatcher]:
    with LogWatcher() as watcher:
        yield watcher


def of(msgs: list[dict[str, Any]], kind: str, symbol: str | None = None) -> list[dict[str, Any]]:
    return [m for m in msgs if m["T"] == kind and (symbol is None or m["S"] == symbol)]


def raw_ns(item: dict[str, Any]) -> dict[str, Any]:
    """A raw_data message with its msgpack Timestamp turned back into the history's nanoseconds."""
    return {**item, "t": item["t"].to_unix_nano()}


def subscribed_after(fake: AlpacaStreamFake, n: int, feed: str = "crypto") -> Callable[[], bool]:
    """True once more than `n` connections of `feed` were opened and one of those is subscribed."""
    return lambda: any(c.id > n for c in fake.subscribed(feed))


# ---------------------------------------------------------------------- data: msgpack, raw, JSON
def test_crypto_stream_gets_the_markets_trades_quotes_bars_and_books(
        fake: AlpacaStreamFake, run: Callable[[Any], StreamThread]) -> None:
    stream = crypto_stream(fake)
    trades, quotes, books, bars, daily = Collector(), Collector(), Collector(), Collector(), Collector()
    stream.subscribe_trades(trades.handle, BTC)
    stream.subscribe_quotes(quotes.handle, BTC)
    stream.subscribe_orderbooks(books.handle, BTC)
    stream.subscribe_bars(bars.handle, "*")
    stream.subscribe_daily_bars(daily.handle, BTC)
    run(stream)
    fake.wait_until(lambda: fake.subscribed(), what="a subscription")

    [conn] = fake.connections
    assert conn.encoding == "msgpack"
    assert conn.headers["Content-Type"] == "application/msgpack"
    assert conn.headers["User-Agent"].startswith("APCA-PY/")
    assert conn.received[0] == {"action": "auth", "key": API_KEY, "secret": SECRET_KEY}
    assert conn.received[1] == {"trades": [BTC], "quotes": [BTC], "orderbooks": [BTC], "bars": ["*"],
                                "dailyBars": [BTC], "action": "subscribe"}

    fake.step(150)  # two and a half simulated minutes
    want_trades, want_bars = fake.trades(BTC), fake.stream_bars(BTC) + fake.stream_bars(ETH)
    assert len(want_trades) > 100 and len(fake.stream_bars(BTC)) == 2
    trades.wait_count(len(want_trades))
    quotes.wait_count(150)
    bars.wait_count(len(want_bars))
    book_msgs = fake.orderbook_messages(BTC)
    books.wait_count(len(book_msgs))  # the subscription snapshot plus every change

    got = [(t.symbol, t.id, t.price, t.size, t.timestamp) for t in trades.snapshot()]
    assert got == [(BTC, t["i"], t["p"], t["s"], to_datetime(t["t"])) for t in want_trades]
    assert [(q.bid_price, q.bid_size, q.ask_price, q.ask_size, q.timestamp) for q in quotes.snapshot()] == [
        (q["bp"], q["bs"], q["ap"], q["as"], to_datetime(q["t"])) for q in fake.quotes(BTC)]
    assert all(q.bid_price < q.ask_price for q in quotes.snapshot())
    assert sorted((b.symbol, b.timestamp, b.open, b.high, b.low, b.close, b.volume, b.trade_count, b.vwap)
                  for b in bars.snapshot()) == sorted(
        (b["S"], to_datetime(b["t"]), b["o"], b["h"], b["l"], b["c"], b["v"], b["n"], b["vw"])
        for b in want_bars)
    assert [(d.timestamp, d.close, d.volume) for d in daily.snapshot()] == [
        (to_datetime(d["t"]), d["c"], d["v"]) for d in fake.stream_bars(BTC, daily=True)]

    # the book a client rebuilds from the snapshot and the changes is the server's book
    received = books.snapshot()
    assert received[0].reset and not any(b.reset for b in received[1:])
    book: dict[str, dict[float, float]] = {}
    for ob in received:
        apply_orderbook(book, {"r": ob.reset, "b": [{"p": q.price, "s": q.size} for q in ob.bids],
                               "a": [{"p": q.price, "s": q.size} for q in ob.asks]})
    assert book == fake.book(BTC)
    assert max(book["b"]) < min(book["a"])


def test_raw_data_keeps_nanoseconds_and_the_taker_side(
        fake: AlpacaStreamFake, run: Callable[[Any], StreamThread]) -> None:
    """Parsed models truncate stamps to microseconds and drop `tks`; raw_data hands over the wire dicts."""
    stream = crypto_stream(fake, raw_data=True)
    trades = Collector()
    stream.subscribe_trades(trades.handle, BTC, ETH)
    run(stream)
    fake.wait_until(lambda: fake.subscribed(), what="a subscription")
    fake.step(40)
    want = sorted(fake.trades(BTC) + fake.trades(ETH), key=lambda t: t["t"])
    trades.wait_count(len(want))
    items = trades.snapshot()
    assert all(isinstance(t["t"], msgpack.Timestamp) for t in items)
    assert [raw_ns(t) for t in items] == want
    assert {t["tks"] for t in items} == {"B", "S"}
    assert any(t["t"] % 1000 for t in want)  # sub-microsecond digits exist, and survive in raw mode
    ids = [t["i"] for t in want]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_stock_stream_on_iex(fake: AlpacaStreamFake, run: Callable[[Any], StreamThread]) -> None:
    stream = stock_stream(fake, "iex")
    trades, quotes, bars = Collector(), Collector(), Collector()
    stream.subscribe_trades(trades.handle, "AAPL")
    stream.subscribe_quotes(quotes.handle, "AAPL")
    stream.subscribe_bars(bars.handle, "AAPL")
    run(stream)
    fake.wait_until(lambda: fake.subscribed("iex"), what="a subscription")
    [conn] = fake.connections
    assert conn.path == "/v2/iex"
    assert conn.subscription["corrections"] == ["AAPL"] and conn.subscription["cancelErrors"] == ["AAPL"]

    fake.step(70)
    want = fake.trades("AAPL")
    trades.wait_count(len(want))
    quotes.wait_count(70)
    bars.wait_count(1)
    assert [(t.id, t.price, t.size, t.exchange, t.conditions, t.tape, t.timestamp)
            for t in trades.snapshot()] == [
        (t["i"], t["p"], t["s"], "V", ["@"], "C", to_datetime(t["t"])) for t in want]
    q = quotes.snapshot()[0]
    assert (q.bid_exchange, q.ask_exchange, q.conditions, q.tape) == ("V", "V", ["R"], "C")
    [bar] = bars.snapshot()
    [want_bar] = fake.stream_bars("AAPL")
    assert (bar.timestamp, bar.open, bar.close, bar.volume, bar.trade_count, bar.vwap) == (
        to_datetime(want_bar["t"]), want_bar["o"], want_bar["c"], want_bar["v"], want_bar["n"],
        want_bar["vw"])
    minute = [t for t in want if t["t"] < want_bar["t"] + 60 * 10**9]
    assert want_bar == aggregate("AAPL", minute, want_bar["t"])
    assert not fake.connections_of("crypto")


def test_sip_without_subscription_gets_409_and_alpaca_py_gives_up(
        fake: AlpacaStreamFake, run: Callable[[Any], StreamThread], logs: LogWatcher) -> None:
    stream = stock_stream(fake, "sip")
    trades = Collector()
    stream.subscribe_trades(trades.handle, "AAPL")
    thread = run(stream)
    assert thread.join(5), "run() returns by itself on 'insufficient subscription'"
    assert thread.error is None
    assert [a.code for a in fake.auth_attempts] == [409]
    assert logs.count("insufficient subscription", logging.ERROR) == 1
    [conn] = fake.connections
    assert conn.path == "/v2/sip"
    # the server records a close when it sees it, a moment after the client's thread returned
    fake.wait_until(lambda: conn.closed_by == "client", what="the client's close recorded")


def test_plain_client_json_protocol_and_errors(fake: AlpacaStreamFake) -> None:
    """Without ``Content-Type: application/msgpack`` the server talks JSON in text frames."""
    def recv(ws: Any) -> list[dict[str, Any]]:
        frame = ws.recv(timeout=5)
        assert isinstance(frame, str)
        return json.loads(frame)

    def error(code: int) -> list[dict[str, Any]]:
        return [{"T": "error", "code": code, "msg": ERRORS[code]}]

    fake.symbol_limit = 2
    with ws_connect(fake.url("crypto")) as ws:
        assert recv(ws) == [{"T": "success", "msg": "connected"}]
        ws.send(json.dumps({"action": "subscribe", "trades": [BTC]}))
        assert recv(ws) == error(401)
        ws.send("{not json")
        assert recv(ws) == error(400)
        ws.send(json.dumps({"action": "auth", "key": API_KEY, "secret": "wrong"}))
        assert recv(ws) == error(402)
        ws.send(json.dumps({"action": "auth", "key": API_KEY, "secret": SECRET_KEY}))
        assert recv(ws) == [{"T": "success", "msg": "authenticated"}]
        ws.send(json.dumps({"action": "auth", "key": API_KEY, "secret": SECRET_KEY}))
        assert recv(ws) == error(403)
        ws.send(json.dumps({"action": "subscribe", "lulds": [BTC]}))
        assert recv(ws) == error(410)
        ws.send(json.dumps({"action": "subscribe", "trades": [BTC, ETH], "quotes": [BTC]}))
        assert recv(ws) == error(405)
        ws.send(json.dumps({"action": "subscribe", "trades": [BTC]}))
        assert recv(ws) == [{"T": "subscription", "trades": [BTC], "quotes": [], "orderbooks": [],
                             "bars": [], "updatedBars": [], "dailyBars": []}]
        msgs = fake.step(5)
        want = of(msgs, "t", BTC)
        assert want
        got: list[dict[str, Any]] = []
        while len(got) < len(want):
            got += recv(ws)
        assert got == [{**t, "t": rfc3339(t["t"])} for t in want]
        assert all(len(t["t"].split(".")[1].rstrip("Z")) <= 9 for t in got)
        ws.send(json.dumps({"action": "unsubscribe", "trades": [BTC]}))
        assert recv(ws)[0]["trades"] == []
    assert [a.code for a in fake.auth_attempts] == [402, None, 403]
    assert [s.code for s in fake.subscriptions] == [401, 410, 405, None, None]

    # a client that does not authenticate in time gets 404 and is disconnected
    fake.auth_timeout = 0.2
    with ws_connect(fake.url("crypto"), additional_headers={"Content-Type": "application/msgpack"}) as ws:
        frame = ws.recv(timeout=5)
        assert isinstance(frame, bytes) and msgpack.unpackb(frame) == [{"T": "success", "msg": "connected"}]
        assert msgpack.unpackb(ws.recv(timeout=5)) == error(404)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    fake.wait_until(lambda: fake.connections[-1].closed_by == "server", what="the server's close recorded")

    # unknown paths are refused at the handshake
    with pytest.raises(Exception, match="404"):
        ws_connect(fake.url("crypto").replace("/us", "/eu"))


# ---------------------------------------------------------------------- connection limit and auth
def test_second_connection_with_the_same_key_gets_406_and_alpaca_py_retries_until_the_slot_frees(
        fake: AlpacaStreamFake, run: Callable[[Any], StreamThread], logs: LogWatcher) -> None:
    first, second = crypto_stream(fake), crypto_stream(fake)
    got_first, got_second = Collector(), Collector()
    first.subscribe_trades(got_first.handle, BTC)
    second.subscribe_trades(got_second.handle, BTC)
    thread_first = run(first)
    fake.wait_until(lambda: fake.subscribed(), what="the first stream")
    thread_second = run(second)
    fake.wait_until(lambda: sum(a.code == 406 for a in fake.auth_attempts) >= 3, what="three 406s")

    # alpaca-py raised in _auth, logged it with a traceback, closed the socket and tried again
    logs.wait("error during websocket communication: connection limit exceeded", 3, level=logging.ERROR)
    assert all(r.exc_info for r in logs.records if "connection limit exceeded" in r.getMessage())
    refused = [c for c in fake.connections[1:] if not c.open]
    assert len(refused) >= 2 and {c.closed_by for c in refused} == {"client"}
    assert not any(c.subscription for c in fake.connections[1:])
    assert thread_second.alive  # run() never returns on 406

    fake.step(5)  # the first stream is not disturbed
    got_first.wait_count(len(fake.trades(BTC)))
    assert len(got_second) == 0

    thread_first.stop()
    before = len(fake.connections)
    fake.wait_until(subscribed_after(fake, before), what="the second stream to get the slot")
    fake.step(5)
    got_second.wait(lambda items: [t.id for t in items] == [t["i"] for t in fake.trades(BTC)][-len(items):]
                    and len(items) > 0, what="trades on the second stream")


def test_bad_keys_get_402_and_alpaca_py_retries_forever_with_backoff(
        fake: AlpacaStreamFake, run: Callable[[Any], StreamThread], logs: LogWatcher) -> None:
    stream = crypto_stream(fake, secret="wrong-secret", backoff=(0.02, 0.4))
    stream.subscribe_trades(Collector().handle, BTC)
    thread = run(stream)
    fake.wait_until(lambda: len(fake.auth_attempts) >= 5, what="five auth attempts")
    attempts = fake.auth_attempts[:5]
    assert {a.code for a in attempts} == {402}
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    assert gaps[3] >= 0.08  # exponential backoff: the 4th wait is 8x the minimum, jittered down to half
    logs.wait("error during websocket communication: auth failed", 5, level=logging.ERROR)
    assert not fake.subscriptions and thread.alive


def test_refused_auth_recovers_by_itself_when_the_server_accepts_again(
        fake: AlpacaStreamFake, run: Callable[[Any], StreamThread]) -> None:
    fake.refuse_auth()
    stream = crypto_stream(fake)
    stream.subscribe_trades(Collector().handle, BTC)
    run(stream)
    fake.wait_until(lambda: len(fake.auth_attempts) >= 2, what="two refused auths")
    fake.refuse_auth(False)
    fake.wait_until(lambda: fake.subscribed(), what="a subscription after auth works again")
    assert {a.code for a in fake.auth_attempts[:-1]} == {402} and fake.auth_attempts[-1].code is None


# ---------------------------------------------------------------------- dropped, refused, stalled
def test_dropped_connection_alpaca_py_reconnects_after_its_default_backoff_and_resubscribes(
        fake: AlpacaStreamFake, run: Callable[[Any], StreamThread], logs: LogWatcher) -> None:
    stream = crypto_stream(fake, backoff=None)  # alpaca-py's own 1-30 s backoff, jittered to half
    trades, quotes = Collector(), Collector()
    stream.subscribe_trades(trades.handle, BTC)
    stream.subscribe_quotes(quotes.handle, ETH)
    run(stream)
    fake.wait_until(lambda: fake.subscribed(), what="a subscription")
    fake.step(3)
    quotes.wait_count(3)

    dropped_at = time.monotonic()
    assert fake.drop() == 1
    fake.wait_until(subscribed_after(fake, 1), timeout=5, what="a reconnection")
    first, second = fake.connections[0], fake.connections[1]
    assert first.closed_by == "dropped"
    assert 0.45 <= second.opened_at - dropped_at < 1.5  # one retry: 0.5-1 s since data had arrived
    assert second.received == first.received  # same auth, same full subscription again
    logs.wait("data websocket error, restarting connection", level=logging.WARNING)
    fake.step(3)
    quotes.wait_count(6)


def test_after_an_outage_the_rest_history_fills_exactly_the_gap(
        fake: AlpacaStreamFake, run: Callable[[Any], StreamThread], logs: LogWatcher) -> None:
    stream = crypto_stream(fake)
    trades = Collector()
    stream.subscribe_trades(trades.handle, BTC, ETH)
    run(stream)
    fake.wait_until(lambda: fake.subscribed(), what="a subscription")
    fake.step(10)
    trades.wait_count(len(fake.trades(BTC)) + len(fake.trades(ETH)))

    before = sorted(fake.trades(BTC) + fake.trades(ETH), key=lambda t: t["t"])
    fake.refuse_connections(429)
    fake.drop()
    gap = [m for m in fake.step(20) if m["T"] == "t" and m["S"] in (BTC, ETH)]  # nobody listens
    fake.wait_until(lambda: len(fake.refused) >= 2, what="refused reconnections")
    logs.wait("server rejected WebSocket connection: HTTP 429", level=logging.WARNING)
    fake.accept_connections()
    fake.wait_until(subscribed_after(fake, 1), what="a reconnection")
    after = [m for m in fake.step(10) if m["T"] == "t" and m["S"] in (BTC, ETH)]
    trades.wait_count(len(before) + len(after))
    received = trades.snapshot()
    assert [t.id for t in received] == [t["i"] for t in before + after]  # the client cannot tell

    # backfill [last stored trade, first trade after the reconnection] through the unmodified client
    fake.page_size = 7
    history = crypto_history(fake).get_crypto_trades(CryptoTradesRequest(
        symbol_or_symbols=[BTC, ETH], start=received[len(before) - 1].timestamp,
        end=received[len(before)].timestamp))
    assert len(fake.rest.hits(CRYPTO_TRADES_PATH)) > 2  # paged
    backfill = {t.id for sym in (BTC, ETH) for t in history.data.get(sym, [])}
    seen = {t.id for t in received}
    assert backfill - seen == {t["i"] for t in gap}
    assert received[len(before) - 1].id in backfill  # start is inclusive and stamps are microseconds:
    assert backfill & seen  # the edges come again, so a collector must dedupe by id
    assert sorted(backfill | seen) == sorted(t["i"] for t in fake.trades(BTC) + fake.trades(ETH))


def test_mute_stall_is_caught_only_with_data_timeout(
        fake: AlpacaStreamFake, run: Callable[[Any], StreamThread], logs: LogWatcher) -> None:
    watched = crypto_stream(fake, data_timeout=0.3)
    unwatched = crypto_stream(fake, key=OTHER_KEY, secret=OTHER_SECRET)
    got_watched, got_unwatched = Collector(), Collector()
    watched.subscribe_quotes(got_watched.handle, BTC)
    unwatched.subscribe_quotes(got_unwatched.handle, BTC)
    run(watched)
    run(unwatched)
    fake.wait_until(lambda: len(fake.subscribed()) == 2, what="two subscriptions")
    fake.resume()
    got_watched.wait_count(5)
    got_unwatched.wait_count(5)

    fake.stall()
    stalled_at = len(fake.connections)
    fake.wait_until(subscribed_after(fake, stalled_at), what="the watched stream to reconnect")
    logs.wait("no data received on data stream for 0.3s, reconnecting", level=logging.WARNING)
    count = len(got_watched)
    got_watched.wait_count(count + 5)  # fresh data on the new connection
    fake.wait_until(lambda: fake.connections_of(key=API_KEY)[0].closed_by == "client",
                    what="the stale connection's close recorded")
    unwatched_conns = fake.connections_of(key=OTHER_KEY)
    assert len(unwatched_conns) == 1 and unwatched_conns[0].open  # it cannot tell; it just waits

    # the held frames arrive late, in order and complete (TCP semantics)
    stuck = len(got_unwatched)
    fake.pause()
    fake.unstall()
    want = fake.quotes(BTC)
    got_unwatched.wait_count(len(want))
    assert len(want) > stuck
    assert [q.timestamp for q in got_unwatched.snapshot()] == [to_datetime(q["t"]) for q in want]


def test_blackholed_connection_keeps_the_slot_so_the_reconnection_gets_406(
        fake: AlpacaStreamFake, run: Callable[[Any], StreamThread], logs: LogWatcher) -> None:
    stream = crypto_stream(fake, data_timeout=0.3, close_timeout=0.2)
    quotes = Collector()
    stream.subscribe_quotes(quotes.handle, BTC)
    run(stream)
    fake.wait_until(lambda: fake.subscribed(), what="a subscription")
    fake.resume()
    quotes.wait_count(3)
    fake.stall(blackhole=True)
    fake.wait_until(lambda: any(a.code == 406 for a in fake.auth_attempts), what="a 406")
    assert fake.connections[0].open  # the server never saw the client's close
    fake.unstall()
    fake.wait_until(subscribed_after(fake, 1), what="the slot to free and the stream to get in")
    count = len(quotes)
    quotes.wait_count(count + 3)


def test_drop_with_linger_gives_406_until_the_server_reaps_the_dead_connection(
        fake: AlpacaStreamFake, run: Callable[[Any], StreamThread]) -> None:
    stream = crypto_stream(fake)
    stream.subscribe_trades(Collector().handle, BTC)
    run(stream)
    fake.wait_until(lambda: fake.subscribed(), what="a subscription")
    dropped_at = time.monotonic()
    fake.drop(linger=0.5)
    fake.wait_until(subscribed_after(fake, 1), what="a reconnection after the linger")
    codes = [a.code for a in fake.auth_attempts]
    assert codes[0] is None and codes[-1] is None and set(codes[1:-1]) == {406}
    assert fake.auth_attempts[-1].at - dropped_at >= 0.5


def test_stalled_handshake_hangs_alpaca_py_and_its_stop(
        fake: AlpacaStreamFake, run: Callable[[Any], StreamThread]) -> None:
    """alpaca-py waits for "connected" without a timeout, and stop() cannot interrupt that wait."""
    fake.stall(new_connections=True)
    stream = crypto_stream(fake, data_timeout=0.2)
    stream.subscribe_trades(Collector().handle, BTC)
    thread = run(stream)
    fake.wait_until(lambda: fake.connections, what="a connection")
    assert thread.loop() is not None
    stream.stop()  # alpaca-py's own stop: only raises a flag
    assert not thread.join(0.5), "stuck awaiting the welcome message, data_timeout does not apply there"
    fake.unstall()
    assert thread.join(5), "once the server speaks, the flag is seen and run() returns"


def test_stop_is_only_noticed_when_a_frame_arrives(
        fake: AlpacaStreamFake, run: Callable[[Any], StreamThread], logs: LogWatcher) -> None:
    """alpaca-py checks its stop flag between frames (or after a 5 s receive timeout on a quiet stream)."""
    stream = crypto_stream(fake)
    stream.subscribe_quotes(Collector().handle, BTC)
    thread = run(stream)
    logs.wait("subscribed to quotes")  # the client has read the last frame there is
    stream.stop()
    assert not thread.join(0.3)
    fake.step(1)
    assert thread.join(2)
    assert fake.wait_until(lambda: fake.connections[0].closed_by == "client", what="a clean close")


def test_refused_handshakes_are_retried(fake: AlpacaStreamFake, run: Callable[[Any], StreamThread],
                                        logs: LogWatcher) -> None:
    fake.refuse_connections(503, seconds=0.3)
    stream = crypto_stream(fake)
    stream.subscribe_trades(Collector().handle, BTC)
    run(stream)
    fake.wait_until(lambda: fake.subscribed(), what="a subscription once the refusal lapses")
    assert fake.refused and {r.status for r in fake.refused} == {503}
    assert logs.count("server rejected WebSocket connection: HTTP 503", logging.WARNING) == len(fake.refused)


# ---------------------------------------------------------------------- errors and odd frames
def test_error_500_is_only_logged_and_407_ends_in_a_reconnection(
        fake: AlpacaStreamFake, run: Callable[[Any], StreamThread], logs: LogWatcher) -> None:
    stream = crypto_stream(fake)
    trades = Collector()
    stream.subscribe_trades(trades.handle, BTC)
    run(stream)
    fake.wait_until(lambda: fake.subscribed(), what="a subscription")
    assert fake.send_error(500) == 1
    logs.wait("error: internal error (500)", level=logging.ERROR)
    fake.step(5)
    trades.wait_count(len(fake.trades(BTC)))
    assert len(fake.connections) == 1 and fake.connections[0].open

    fake.send_error(407)
    logs.wait("error: slow client (407)", level=logging.ERROR)
    fake.wait_until(subscribed_after(fake, 1), what="a reconnection")
    fake.wait_until(lambda: fake.connections[0].closed_by == "server", what="the server's close recorded")
    assert fake.connections[0].errors == [500, 407]


def test_slow_client_gets_407_and_is_disconnected(fake: AlpacaStreamFake) -> None:
    fake.max_pending = 20
    with ws_connect(fake.url("crypto")) as ws:
        ws.recv(timeout=5)
        ws.send(json.dumps({"action": "auth", "key": API_KEY, "secret": SECRET_KEY}))
        ws.recv(timeout=5)
        ws.send(json.dumps({"action": "subscribe", "quotes": [BTC, ETH]}))
        ws.recv(timeout=5)
        fake.stall()  # the messages pile up as for a client that does not read
        fake.step(15)
        assert json.loads(ws.recv(timeout=5)) == [{"T": "error", "code": 407, "msg": "slow client"}]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    [conn] = fake.connections
    fake.wait_until(lambda: conn.closed_by == "server", what="the server's close recorded")
    assert conn.errors == [407] and conn.sent == []


def test_duplicated_and_reordered_frames_reach_the_handler_as_sent(
        fake: AlpacaStreamFake, run: Callable[[Any], StreamThread]) -> None:
    stream = crypto_stream(fake, raw_data=True)
    got = Collector()
    stream.subscribe_trades(got.handle, BTC)
    stream.subscribe_quotes(got.handle, BTC)
    stream.subscribe_orderbooks(got.handle, BTC)
    run(stream)
    fake.wait_until(lambda: fake.subscribed(), what="a subscription")
    got.wait_count(1)  # the book snapshot

    def btc(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [m for m in msgs if m["S"] == BTC and m["T"] in "tqo"]

    plain = btc(fake.step(1))
    fake.duplicate(1)
    doubled = btc(fake.step(1))
    fake.reorder(1)
    reversed_ = btc(fake.step(1))
    want = plain + doubled + doubled + reversed_[::-1]
    got.wait_count(1 + len(want))
    assert [raw_ns(m) for m in got.snapshot()[1:]] == want
    stamps = [m["t"] for m in want[-len(reversed_):]]
    assert stamps == sorted(stamps, reverse=True) and len(stamps) >= 2


def test_an_exception_in_a_handler_loses_the_rest_of_its_frame(
        fake: AlpacaStreamFake, run: Callable[[Any], StreamThread], logs: LogWatcher) -> None:
    """alpaca-py logs the exception and carries on with the next frame: the frame's later messages
    (for every symbol and channel) are never handed over, and nothing tells the handler."""
    probe = Market(seed=7, crypto=(BTC, ETH), stocks=("AAPL", "SPY"))
    ticks = [probe.advance() for _ in range(10)]
    k = next(i for i, msgs in enumerate(ticks) if of(msgs, "t", BTC))
    bad = of(ticks[k], "t", BTC)[0]

    stream = crypto_stream(fake, raw_data=True)
    got = Collector(fail=lambda m: m["T"] == "t" and m["i"] == bad["i"])
    stream.subscribe_trades(got.handle, BTC, ETH)
    stream.subscribe_quotes(got.handle, BTC, ETH)
    run(stream)
    fake.wait_until(lambda: fake.subscribed(), what="a subscription")
    sent = [[m for m in fake.step(1) if m["T"] in "tq" and m["S"] in (BTC, ETH)] for _ in range(10)]
    lost = sent[k][sent[k].index(bad) + 1:]
    want = [m for frame in sent for m in frame if not any(m is x for x in lost)]
    got.wait(lambda items: len(items) == len(want) and raw_ns(items[-1]) == want[-1], what="the last frame")
    assert [raw_ns(m) for m in got.snapshot()] == want and lost
    logs.wait("error during websocket communication: handler failed", level=logging.ERROR)
    assert len(fake.connections) == 1  # no reconnection: just the messages gone


# ---------------------------------------------------------------------- history and the market
def test_historical_clients_page_through_the_markets_trades_and_bars(fake: AlpacaStreamFake) -> None:
    fake.step(200)
    start, end = to_datetime(fake.market.start_ns), to_datetime(fake.now_ns())
    fake.page_size = 50
    trades = crypto_history(fake, key=None, secret=None).get_crypto_trades(
        CryptoTradesRequest(symbol_or_symbols=[BTC, ETH], start=start, end=end))
    for sym in (BTC, ETH):
        want = fake.trades(sym)
        assert [(t.id, t.price, t.size, t.timestamp) for t in trades.data[sym]] == [
            (t["i"], t["p"], t["s"], to_datetime(t["t"])) for t in want]
    total = len(fake.trades(BTC)) + len(fake.trades(ETH))
    reqs = fake.rest.hits(CRYPTO_TRADES_PATH)
    assert len(reqs) == -(-total // 50) and all("page_token" in r.query for r in reqs[1:])

    limited = crypto_history(fake).get_crypto_trades(
        CryptoTradesRequest(symbol_or_symbols=BTC, start=start, end=end, limit=7))
    assert [t.id for t in limited.data[BTC]] == [t["i"] for t in fake.trades(BTC)[:7]]

    bars = crypto_history(fake).get_crypto_bars(
        CryptoBarsRequest(symbol_or_symbols=BTC, timeframe=TimeFrame.Minute, start=start, end=end))
    streamed = fake.stream_bars(BTC)
    got = [(b.timestamp, b.open, b.high, b.low, b.close, b.volume, b.trade_count, b.vwap)
           for b in bars.data[BTC]]
    assert got[:len(streamed)] == [(to_datetime(b["t"]), b["o"], b["h"], b["l"], b["c"], b["v"], b["n"],
                                    b["vw"]) for b in streamed]
    assert len(got) == len(streamed) + 1  # and the running minute

    stock = stock_history(fake).get_stock_trades(StockTradesRequest(
        symbol_or_symbols="AAPL", start=start, end=end, feed=DataFeed.IEX))
    assert [(t.id, t.price, t.exchange) for t in stock.data["AAPL"]] == [
        (t["i"], t["p"], "V") for t in fake.trades("AAPL")]
    with pytest.raises(APIError, match="not authorized"):
        stock_history(fake, secret="wrong").get_stock_trades(StockTradesRequest(symbol_or_symbols="AAPL"))


def test_market_is_deterministic_and_self_consistent() -> None:
    one, two, other = (Market(seed=s) for s in (3, 3, 4))
    for market in (one, two, other):
        for _ in range(400):
            market.advance()
    assert one.trades_by == two.trades_by and one.books_by == two.books_by
    assert one.trades_by != other.trades_by
    for sym in one.crypto:
        book: dict[str, dict[float, float]] = {}
        for msg in one.books_by[sym]:
            apply_orderbook(book, msg)
        assert book == one.book(sym)
        assert all(q["bp"] < q["ap"] for q in one.quotes_by[sym])
        assert one.bars_by[sym] == one.bars(sym)[:-1]  # the streamed bars are the REST bars
    stamps = [t["t"] for sym in one.crypto for t in one.trades_by[sym]]
    ids = [t["i"] for _, t in sorted((t["t"], t) for sym in one.crypto for t in one.trades_by[sym])]
    assert ids == sorted(ids) and len(set(stamps)) == len(stamps)


def test_carries_a_few_thousand_messages_a_second_without_loss() -> None:
    with AlpacaStreamFake(seed=1, stocks=(), rate=5000, paused=True) as fast:
        stream = crypto_stream(fast, raw_data=True)
        got = Collector()
        stream.subscribe_trades(got.handle, "*")
        stream.subscribe_quotes(got.handle, "*")
        stream.subscribe_orderbooks(got.handle, "*")
        thread = StreamThread(stream).start()
        try:
            fast.wait_until(lambda: fast.subscribed(), what="a subscription")
            began = time.monotonic()
            fast.resume()
            got.wait_count(3000, timeout=10)
            rate = len(got) / (time.monotonic() - began)
            fast.pause()
        finally:
            thread.stop()
        assert rate > 2000
        items = [raw_ns(m) for m in got.snapshot()]
        for sym in (BTC, ETH):
            trades = [m for m in items if m["T"] == "t" and m["S"] == sym]
            history = fast.trades(sym)
            first = history.index(trades[0])
            assert trades == history[first:first + len(trades)]  # contiguous: nothing lost or repeated
