"""The streaming collector against a local Alpaca market-data stream and REST history that the
unmodified alpaca-py clients talk to: trades equal to the venue's by id through drops and restarts,
books equal to the venue's, refused keys and a second connection on the key in one line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from collect_helpers import Running
from servers.alpaca import API_KEY, SECRET_KEY
from servers.alpaca_stream import AlpacaStreamFake
from servers.binance_stream import wait_until

from workbench.data.collector import Collector, CollectSettings, collect
from workbench.data.feeds.alpaca import AlpacaFeed
from workbench.data.lake import Lake
from workbench.errors import ConfigError, CredentialsError

pytestmark = pytest.mark.network

SYMBOLS = ["BTC/USD", "ETH/USD"]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[AlpacaStreamFake]:
    with AlpacaStreamFake(seed=5, rate=200, realtime=True) as venue:
        monkeypatch.setenv("WORKBENCH_ALPACA_STREAM_URL", venue.url("crypto").split("/v1beta3")[0])
        monkeypatch.setenv("WORKBENCH_ALPACA_BASE_URL", venue.rest_url)
        monkeypatch.setenv("ALPACA_API_KEY", API_KEY)
        monkeypatch.setenv("ALPACA_SECRET_KEY", SECRET_KEY)
        yield venue


def settings(**kw: object) -> CollectSettings:
    base: dict[str, object] = {"source": "alpaca", "symbols": SYMBOLS, "stale_after": 1.5,
                               "reconnect_wait": 0.05, "reconnect_max_wait": 0.3}
    return CollectSettings(**{**base, **kw})  # type: ignore[arg-type]


def assert_all_trades(lake: Lake, fake: AlpacaStreamFake) -> None:
    for sym in SYMBOLS:
        df = lake.read_trades("alpaca", sym)
        ids = df["trade_id"].to_numpy()
        assert len(ids) and len(np.unique(ids)) == len(ids), f"{sym}: duplicates"
        venue = [t for t in fake.trades(sym) if ids.min() <= t["i"] <= ids.max()]
        assert sorted(ids.tolist()) == [t["i"] for t in venue], f"{sym}: trades missing"
        by_id = {t["i"]: t for t in venue}
        for row in df.iloc[:: max(1, len(df) // 20)].itertuples():
            t = by_id[row.trade_id]
            assert (row.price, row.size, row.side) == (t["p"], t["s"], {"B": "buy", "S": "sell"}[t["tks"]])
            assert row.ts.value == t["t"]  # nanoseconds kept


def test_collects_trades_quotes_and_books_equal_to_the_venue(tmp_path: Path, fake: AlpacaStreamFake) -> None:
    lake = Lake(tmp_path)
    collector = Collector(lake, AlpacaFeed(), settings(streams=["trades", "quotes", "book"], book_depth=5))
    run = Running(collector)
    wait_until(lambda: collector.status.messages.get("trades", 0) > 30, 10, "trades")
    fake.pause()  # the market stands still: the last stored book must be the venue's
    n = len(lake.read_book("alpaca", "BTC/USD"))
    wait_until(lambda: len(lake.read_book("alpaca", "BTC/USD")) == n, 2, "the last book")
    run.stop()
    assert collector.status.gaps == 0 and collector.status.reconnects == 0
    assert_all_trades(lake, fake)
    book = lake.read_book("alpaca", "BTC/USD")
    last = book[book["recv_ts"] == book["recv_ts"].max()]
    want = fake.book("BTC/USD")
    bids = sorted(want["b"].items(), reverse=True)[:5]
    got = last[last["side"] == "bid"].sort_values("level")
    assert list(zip(got["price"], got["size"], strict=True)) == bids
    q = lake.read_quotes("alpaca", "BTC/USD")
    assert len(q) > 5 and (q["bid"] <= q["ask"]).all()


def test_a_drop_and_a_restart_are_refilled_from_rest(tmp_path: Path, fake: AlpacaStreamFake) -> None:
    lake = Lake(tmp_path)
    collector = Collector(lake, AlpacaFeed(), settings())
    run = Running(collector)
    wait_until(lambda: collector.status.messages.get("trades", 0) > 20, 10, "trades")
    fake.drop(linger=0.5)  # the old connection holds the key's slot a while: reconnects get 406 first
    wait_until(lambda: collector.status.backfilled > 0 and not collector.status.refills_pending
               and collector.status.connected, 15, "a refill")
    run.stop()
    assert collector.status.reconnects >= 1
    assert_all_trades(lake, fake)
    time.sleep(0.5)  # down: the venue trades on
    status = collect(lake, settings(), duration=1.5)  # a restart refills its downtime
    assert status.backfilled > 0
    assert_all_trades(lake, fake)


def test_refused_keys_and_a_busy_key_are_one_line_errors(tmp_path: Path, fake: AlpacaStreamFake,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    lake = Lake(tmp_path)
    monkeypatch.setenv("ALPACA_SECRET_KEY", "wrong")
    with pytest.raises(CredentialsError, match="Alpaca refused the API keys") as err:
        collect(lake, settings(), duration=2)
    assert "wrong" not in str(err.value)
    monkeypatch.setenv("ALPACA_SECRET_KEY", SECRET_KEY)
    with pytest.raises(ConfigError, match="Alpaca streams order books for crypto only, not for AAPL"):
        collect(lake, settings(symbols=["AAPL"], streams=["book"]), duration=1)
    with _holder(fake), pytest.raises(ConfigError, match="refused a second connection with this key"):
        collect(lake, settings(), duration=2)  # another client streams with the key


class _holder:
    """Another program streaming with the same key (alpaca-py itself), for the 406 test."""

    def __init__(self, fake: AlpacaStreamFake) -> None:
        from servers.alpaca_stream import StreamThread, crypto_stream

        self.fake = fake
        self.stream = crypto_stream(fake)

        async def noop(_: object) -> None:
            return None

        self.stream.subscribe_trades(noop, "BTC/USD")
        self.thread = StreamThread(self.stream)

    def __enter__(self) -> None:
        self.thread.__enter__()
        self.fake.wait_until(lambda: self.fake.subscribed(), what="the other client")

    def __exit__(self, *exc: object) -> None:
        self.thread.__exit__(*exc)


def test_stock_trades_and_quotes_come_from_the_stock_stream(tmp_path: Path, fake: AlpacaStreamFake) -> None:
    lake = Lake(tmp_path)
    status = collect(lake, settings(symbols=["AAPL", "BTC/USD"], streams=["trades", "quotes"]), duration=1.5)
    assert status.gaps == 0 and status.reconnects == 0
    df = lake.read_trades("alpaca", "AAPL")
    ids = df["trade_id"].to_numpy()
    assert len(ids) > 3 and len(np.unique(ids)) == len(ids)
    venue = [t for t in fake.trades("AAPL") if ids.min() <= t["i"] <= ids.max()]
    assert sorted(ids.tolist()) == [t["i"] for t in venue]
    assert df["side"].isna().all()  # stock prints carry no taker side
    assert len(lake.read_quotes("alpaca", "AAPL")) > 3
    feeds = {c.feed for c in fake.connections if c.key}
    assert feeds >= {"iex", "crypto"}  # one connection per endpoint, every symbol of it multiplexed
