"""The streaming collector against a local Binance (WebSocket + REST) that the unmodified ccxt.pro
client talks to: what is stored equals what the venue had, by trade id, through drops, stalls,
duplicates, sequence gaps, restarts and SIGKILLs; gaps are recorded only where nothing could be
refilled."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from collect_helpers import Running
from servers.binance_stream import FakeBinance, wait_until

from workbench.data.collector import Collector, CollectSettings, IdWindow, collect, read_status
from workbench.data.feeds.ccxt import CcxtFeed
from workbench.data.lake import Lake
from workbench.data.quality import TickIssue
from workbench.errors import ConfigError

pytestmark = pytest.mark.network

SYMBOLS = ["BTC/USDT", "ETH/USDT"]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBinance]:
    with FakeBinance(seed=3, rate=40) as venue:
        monkeypatch.setenv("WORKBENCH_CCXT_BASE_URL", venue.rest.url)
        monkeypatch.setenv("WORKBENCH_CCXT_WS_URL", venue.ws.ws_url)
        yield venue


def settings(**kw: Any) -> CollectSettings:
    base: dict[str, Any] = {"source": "ccxt:binance", "symbols": SYMBOLS, "stale_after": 1.5,
                            "reconnect_wait": 0.05, "reconnect_max_wait": 0.2}
    return CollectSettings(**{**base, **kw})


def running(lake: Lake, s: CollectSettings) -> Running:
    """A collector of the Binance fake in a thread (see `collect_helpers.Running`)."""
    return Running(Collector(lake, CcxtFeed("binance"), s))


def stored_ids(lake: Lake, symbol: str) -> np.ndarray:
    return lake.read_trades("binance", symbol)["trade_id"].to_numpy()


def venue_ids(fake: FakeBinance, symbol: str, first: int, last: int) -> list[int]:
    return [t.id for t in fake.venue.agg_trades(symbol.replace("/", ""), from_id=first) if t.id <= last]


def assert_all_trades(lake: Lake, fake: FakeBinance, *, since_id: dict[str, int] | None = None) -> None:
    """Stored trades equal the venue's, id for id and field for field, over the stored span."""
    for sym in SYMBOLS:
        df = lake.read_trades("binance", sym)
        ids = df["trade_id"].to_numpy()
        assert len(ids) and len(np.unique(ids)) == len(ids), f"{sym}: duplicates"
        first = since_id[sym] if since_id else int(ids.min())
        assert ids.min() <= first
        want = venue_ids(fake, sym, first, int(ids.max()))
        assert sorted(ids[ids >= first].tolist()) == want, f"{sym}: trades missing"
        venue = {t.id: t for t in fake.venue.agg_trades(sym.replace("/", ""), from_id=int(ids.min()))}
        for row in df.sample(min(len(df), 20), random_state=1).itertuples():
            t = venue[row.trade_id]
            assert (row.price, row.size, row.side) == (t.price, t.amount, t.side)
            assert row.ts == pd.Timestamp(t.time, unit="ms", tz="UTC")


def assert_every_quote(lake: Lake, fake: FakeBinance, symbol: str, tail: int = 60) -> None:
    """Every best bid/ask update the venue sent is stored, in order: the stored quotes are a
    contiguous stretch of what was sent, up to the last few (`tail`) sent as the collector stopped."""
    q = lake.read_quotes("binance", symbol)
    stored = list(q[["bid", "bid_size", "ask", "ask_size"]].itertuples(index=False, name=None))
    sent = fake.ws.book_tickers[symbol.replace("/", "")]
    start = sent.index(stored[0])
    assert sent[start:start + len(stored)] == stored
    assert len(stored) >= len(sent) - start - tail


def test_quote_updates_in_a_burst_are_each_stored(tmp_path: Path) -> None:
    """A venue sending a symbol's quote updates in bursts (50 per 50 ms here): ccxt reads a burst
    in one go and keeps only the latest per symbol; the collector stores every one."""
    with FakeBinance(seed=5, rate=1000, tick_s=0.05) as venue:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("WORKBENCH_CCXT_BASE_URL", venue.rest.url)
            mp.setenv("WORKBENCH_CCXT_WS_URL", venue.ws.ws_url)
            lake = Lake(tmp_path)
            collect(lake, settings(streams=["quotes"]), duration=1.5)
        for sym in SYMBOLS:
            assert len(lake.read_quotes("binance", sym)) > 300
            # up to three bursts of 50 may be in flight when the collector stops on a loaded machine
            # (CI once saw 61 unread); every one before them is stored, in order
            assert_every_quote(lake, venue, sym, tail=150)


def test_collects_trades_quotes_and_books_equal_to_the_venue(tmp_path: Path, fake: FakeBinance) -> None:
    lake = Lake(tmp_path)
    status = collect(lake, settings(streams=["trades", "quotes", "book"], book_depth=5), duration=1.5)
    assert status.reconnects == 0 and status.gaps == 0 and status.messages["trades"] > 20
    assert_all_trades(lake, fake)
    book = lake.read_book("binance", "BTC/USDT")
    last = book[book["ts"] == book["ts"].max()]
    assert len(last) == 10 and last["seq"].notna().all()
    q = lake.read_quotes("binance", "BTC/USDT")
    assert len(q) > 5 and (q["bid"] < q["ask"]).all()
    # every best bid/ask update the venue sent is stored, in order (none coalesced between two of
    # ccxt's wake-ups): the stored run is a contiguous stretch of what was sent
    assert_every_quote(lake, fake, "BTC/USDT")
    assert lake.check_ticks("binance", "BTC/USDT", "trades").ok
    assert lake.read_tick_gaps("binance", SYMBOLS).empty
    [st] = read_status(lake)
    assert not st["running"] and st["messages"]["trades"] == status.messages["trades"]


def test_a_dropped_connection_is_refilled_from_rest_and_nothing_doubles(tmp_path: Path,
                                                                        fake: FakeBinance) -> None:
    lake = Lake(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = running(lake, settings(streams=["trades", "quotes"], metrics_port=port))
    wait_until(lambda: len(lake.read_trades("binance", "BTC/USDT")) > 10, 10, "first trades")
    fake.ws.refuse(status=None)  # the drop, then a second of refused reconnects: trades pile up
    fake.ws.drop()
    time.sleep(1.0)
    fake.ws.duplicate_next(20)
    fake.ws.reorder_next(6, stream="aggTrade")  # ids out of order: a jump, refilled though not lost
    fake.ws.accept()
    wait_until(lambda: run.collector.status.backfilled > 0 and not run.collector.status.refills_pending, 10,
               "a refill")
    n = len(lake.read_trades("binance", "BTC/USDT"))
    wait_until(lambda: len(lake.read_trades("binance", "BTC/USDT")) > n + 10, 10, "live again")
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    status = run.stop()
    assert status.reconnects >= 1 and status.duplicates > 0
    for name in ("workbench_collect_messages_total{stream=\"trades\"}", "workbench_collect_reconnects_total",
                 "workbench_collect_backfilled_rows_total", "workbench_collect_durable_seconds_bucket",
                 "workbench_collect_lag_seconds", "workbench_collect_gaps_total{stream=\"quotes\"}",
                 "workbench_collect_buffer_rows"):
        assert name in metrics, name
    assert_all_trades(lake, fake)
    gaps = lake.read_tick_gaps("binance", SYMBOLS)
    assert set(gaps["stream"]) == {"quotes"} and set(gaps["symbol"]) == set(SYMBOLS)  # trades: none


def test_a_silent_connection_is_detected_and_replaced(tmp_path: Path, fake: FakeBinance) -> None:
    lake = Lake(tmp_path)
    run = running(lake, settings(stale_after=0.6))
    wait_until(lambda: len(lake.read_trades("binance", "BTC/USDT")) > 10, 10, "first trades")
    fake.ws.stall(pongs=True)  # the socket stays open and answers pings: only silence tells
    wait_until(lambda: run.collector.status.reconnects >= 1, 10, "the watchdog")
    fake.ws.unstall()
    wait_until(lambda: run.collector.status.backfilled > 0 and not run.collector.status.refills_pending, 10,
               "a refill")
    status = run.stop()
    assert "no message for 0.6 s" in status.last_error
    assert_all_trades(lake, fake)


def test_a_restart_resumes_and_refills_the_downtime(tmp_path: Path, fake: FakeBinance) -> None:
    lake = Lake(tmp_path)
    collect(lake, settings(), duration=1.0)
    first = {s: int(stored_ids(lake, s).max()) for s in SYMBOLS}
    time.sleep(0.5)  # down: the venue trades on
    status = collect(lake, settings(backfill_page=4), duration=1.0)  # the refill takes several pages
    assert status.backfilled > 8
    assert_all_trades(lake, fake, since_id={s: int(stored_ids(lake, s).min()) for s in SYMBOLS})
    for s in SYMBOLS:
        assert int(stored_ids(lake, s).max()) > first[s]


def test_a_book_sequence_gap_is_recorded_and_the_book_resynced(tmp_path: Path, fake: FakeBinance) -> None:
    lake = Lake(tmp_path)
    run = running(lake, settings(streams=["book"], book_depth=5))
    wait_until(lambda: len(lake.read_book("binance", "ETH/USDT")) > 20, 10, "books")
    fake.ws.skip_depth("ETHUSDT", 2)
    wait_until(lambda: len(lake.read_tick_gaps("binance", "ETH/USDT")) > 0, 10, "the gap")
    seq_after = int(lake.read_tick_gaps("binance", "ETH/USDT")["recv_ts"].max().value)
    wait_until(lambda: (lake.read_book("binance", "ETH/USDT")["recv_ts"].max().value > seq_after + 5e8),
               10, "a resynced book")
    status = run.stop()
    assert status.gaps >= 1 and status.reconnects == 0  # resynced without a reconnect
    gaps = lake.read_tick_gaps("binance", "ETH/USDT")
    assert gaps["reason"].str.contains("sequence gap").all() and set(gaps["stream"]) == {"book"}
    assert lake.read_tick_gaps("binance", "BTC/USDT").empty
    assert lake.check_ticks("binance", "ETH/USDT", "book").count(TickIssue.SEQUENCE_GAP) >= 1


def test_bars_built_from_collected_trades_equal_the_venue_klines(tmp_path: Path, fake: FakeBinance) -> None:
    lake = Lake(tmp_path)
    for _ in range(4):  # a busy machine may start the feed late: collect (resuming) until a whole second
        collect(lake, settings(), duration=2.2)
        ts = lake.read_trades("binance", "BTC/USDT")["ts"]
        first, last = pd.Timestamp(ts.min()).ceil("1s"), pd.Timestamp(ts.max()).floor("1s")
        if last > first:
            break
    ids = stored_ids(lake, "BTC/USDT")
    bars = lake.read_tick_bars("binance", "BTC/USDT", "1s", first, last)
    klines = fake.venue.klines("BTCUSDT", "1s", int(first.value // 10**6), int(last.value // 10**6) - 1)
    assert len(ids) and len(bars) >= 1
    got = {int(b.ts.value // 10**6): b for b in bars.itertuples()}
    for k in klines:
        if int(k[8]) == 0:
            continue  # a second without trades has no tick-built bar
        b = got[int(k[0])]
        assert (b.open, b.high, b.low, b.close) == tuple(float(x) for x in k[1:5])
        assert b.volume == pytest.approx(float(k[5]), rel=1e-12)  # (k[8] counts trades, not aggregates)


def test_bad_input_is_refused_before_anything_is_written(tmp_path: Path, fake: FakeBinance) -> None:
    lake = Lake(tmp_path)
    with pytest.raises(ConfigError, match=r"unknown symbol 'BTC/USDX' on binance \(did you mean 'BTC/USDT'"):
        collect(lake, settings(symbols=["BTC/USDX"]), duration=1)
    with pytest.raises(ConfigError, match=r"'trade' is not one of the choices .did you mean 'trades'"):
        CollectSettings.from_options(source="ccxt:binance", symbols=SYMBOLS, streams=["trade"])
    with pytest.raises(ConfigError, match="unknown live source 'ccxt2:binance'"):
        collect(lake, settings(source="ccxt2:binance"), duration=1)
    assert not (tmp_path / "lake").exists()
    run = running(lake, settings())
    wait_until(lambda: run.collector.status.connected, 10, "the first collector")
    with pytest.raises(ConfigError, match="another collector is writing binance ticks"):
        collect(lake, settings(), duration=1)
    run.stop()


_CHILD = """
import os, sys
from workbench.data.collector import CollectSettings, collect
from workbench.data.lake import Lake
from workbench.data.quality import TickIssue
s = CollectSettings(source="ccxt:binance", symbols=["BTC/USDT", "ETH/USDT"], stale_after=2.0,
                    reconnect_wait=0.05, reconnect_max_wait=0.2, segment_seconds=0.3)
collect(Lake(sys.argv[1]), s)
"""


def test_sigkill_at_random_moments_then_restart_loses_and_doubles_nothing(tmp_path: Path,
                                                                          fake: FakeBinance) -> None:
    rng = random.Random(11)
    lake = Lake(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)], env=env)
        before = len(lake.read_trades("binance", "BTC/USDT"))
        wait_until(lambda b=before: len(lake.read_trades("binance", "BTC/USDT")) > b + 5, 20, "trades")
        time.sleep(rng.uniform(0.0, 0.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(rng.uniform(0.0, 0.5))
    collect(lake, settings(), duration=1.5)  # the last restart refills the last downtime
    assert_all_trades(lake, fake)


def test_the_seen_id_window_keeps_one_run_for_contiguous_ids_and_catches_every_duplicate() -> None:
    """Deduplication on arrival: contiguous ids cost one run however many arrive (flat memory);
    reordered ids merge back into one run; duplicates are caught, in a run or at its edges; the
    oldest runs go first when ids are sparse."""
    w = IdWindow(max_runs=100)
    assert all(w.add(i) for i in range(1, 100_001)) and len(w) == 1
    assert not w.add(1) and not w.add(50_000) and not w.add(100_000)
    rng = random.Random(3)
    late = list(range(100_002, 100_050))
    rng.shuffle(late)
    assert all(w.add(i) for i in late)  # reordered, with 100_001 still missing
    assert len(w) == 2 and not w.add(100_049)
    assert w.add(100_001) and len(w) == 1  # the hole closes: the runs join
    small = IdWindow(max_runs=3)
    assert all(small.add(i) for i in (10, 11, 12, 20, 30, 40))  # sparse ids: a run each, 3 kept
    assert len(small) == 3 and small.add(11)  # the oldest run (10..12) was dropped
    assert not small.add(40) and not small.add(30)


@pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")
def test_a_lost_connection_and_its_gaps_are_alerted_once_and_recovered(
        tmp_path: Path, fake: FakeBinance, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``alerts:``, a connection that stays down past stale_after sends one alert, the quotes it
    could not refill one gap alert, and each one recovery once the collector has been back a while."""
    from servers.webhook import WebhookServer

    from workbench.alerts import AlertsSection

    with WebhookServer() as hook:
        monkeypatch.setenv("WB_TEST_COLLECT_ALERT", hook.json_url())
        alerts = AlertsSection(urls=["${WB_TEST_COLLECT_ALERT}"], recover_after=1.0)
        lake = Lake(tmp_path)
        run = running(lake, settings(streams=["trades", "quotes"], stale_after=0.5, alerts=alerts))
        wait_until(lambda: len(lake.read_trades("binance", "BTC/USDT")) > 10, 10, "first trades")
        fake.ws.refuse(status=None)
        fake.ws.drop()
        wait_until(lambda: hook.bodies, 10, "the down alert")
        fake.ws.accept()
        wait_until(lambda: len(hook.bodies) >= 4, 15, "the gap alert and both recoveries")
        run.stop()
    titles = sorted(b["title"] for b in hook.bodies)
    assert titles == ["[workbench collect binance] ERROR: binance: the connection is down",
                      "[workbench collect binance] RECOVERED: binance: gaps recorded in the live data",
                      "[workbench collect binance] RECOVERED: binance: the connection is down",
                      "[workbench collect binance] WARNING: binance: gaps recorded in the live data"], titles
    down = next(b for b in hook.bodies if b["title"].endswith("down"))
    assert "reconnects: " in down["message"] and "To act: check the venue" in down["message"]
