"""Collector benchmark: live trades and quotes of many symbols through the real client path.

A load generator in another process speaks Binance's stream protocol on 127.0.0.1 (SUBSCRIBE, then
``@aggTrade`` and ``@bookTicker`` frames for every subscribed stream, on the connection that
subscribed it, at a fixed total rate: every stream once per cycle, streams and symbols interleaved
in a random order, each frame stamped with its send time) behind the REST fake of the tests
(exchangeInfo for ccxt's markets). The collector (ccxt.pro -> `Collector` -> the tick tables' log)
runs against it; the same run measures two baselines against the same generator, through the
collector's own ccxt calls (`watch_trades_for_symbols`, `watch_bids_asks`) and counted as it counts
(the trades returned plus every quote update that changes a symbol's best bid/ask): a loop
that receives and discards (the client's own ceiling), and a naive store (one DuckDB INSERT per such
message). The first baseline also counts the data frames that reached ccxt's socket, so that what
the generator sent, what arrived and what ccxt handed over can be told apart. Printed: messages per
second sent, received and stored, receive-to-durable p50/p99, lag behind the generator at the start
and the end (growing lag = not keeping up), CPU of this process as a fraction of one core, and peak
memory.

Usage: python bench/collect.py [--symbols 200] [--rate 20000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the REST fake of the tests serves the markets


def _names(n: int) -> list[tuple[str, str]]:
    return [(f"C{k:03d}", "USDT") for k in range(n)]


# ---------------------------------------------------------------------- the generator process
def _generate(port_q: mp.Queue, sent: mp.Value, stop: mp.Event, n_symbols: int, rate: float) -> None:
    import websockets
    from servers.binance import BinanceServer, Market

    rest = BinanceServer(tuple(Market(b, q, 100.0, 2) for b, q in _names(n_symbols)))
    rest.__enter__()
    subs: dict[object, list[str]] = {}

    async def handler(ws: websockets.ServerConnection) -> None:
        subs[ws] = []
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("method") == "SUBSCRIBE":
                    subs[ws].extend(msg["params"])
                await ws.send(json.dumps({"result": None, "id": msg.get("id")}))
        except websockets.ConnectionClosed:
            pass
        finally:
            subs.pop(ws, None)

    async def pump() -> None:
        ids: dict[str, int] = {}
        rng = random.Random(7)
        known: list[tuple[object, str]] = []  # (connection, stream) of every subscription
        cycle: list[tuple[object, str]] = []  # what remains of this cycle, in a random order
        per_tick = rate / 100  # every 10 ms
        carry = 0.0
        nxt = time.monotonic()
        while not stop.is_set():
            nxt += 0.01
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            streams = [(ws, s) for ws, lst in list(subs.items()) for s in lst]
            if not streams:
                continue
            if streams != known:  # a subscription came or went: start a new cycle
                known, cycle = streams, []
            carry += per_tick
            n, carry = int(carry), carry % 1
            now = int(time.time() * 1000)
            for _ in range(n):
                # Every stream once per cycle (equal rates), in a random order: a fixed order would put
                # the same symbol first in every 10 ms burst, which no venue does.
                if not cycle:
                    cycle = known[:]
                    rng.shuffle(cycle)
                ws, stream = cycle.pop()
                sym, kind = stream.split("@", 1)
                i = ids[stream] = ids.get(stream, 0) + 1  # each stream its own contiguous ids
                if kind == "aggTrade":
                    body = {"e": "aggTrade", "E": now, "s": sym.upper(), "a": i, "p": "100.01", "q": "0.5",
                            "f": i, "l": i, "T": now, "m": bool(i % 2), "M": True}
                else:
                    bid = 100 + (i % 10) / 100
                    body = {"u": i, "s": sym.upper(), "b": f"{bid:.2f}", "B": "1.5", "a": f"{bid + 0.02:.2f}",
                            "A": "2.5"}
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.send(json.dumps(body))
                    sent.value += 1

    async def main() -> None:
        async with websockets.serve(handler, "127.0.0.1", 0, max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            port_q.put((rest.url, f"ws://127.0.0.1:{port}"))
            await pump()

    try:
        asyncio.run(main())
    finally:
        rest.__exit__(None, None, None)


class Generator:
    def __init__(self, n_symbols: int, rate: float) -> None:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        self.sent, self.stop = ctx.Value("q", 0, lock=False), ctx.Event()
        self.proc = ctx.Process(target=_generate, args=(q, self.sent, self.stop, n_symbols, rate),
                                daemon=True)
        self.proc.start()
        self.rest_url, self.ws_url = q.get(timeout=60)

    def close(self) -> None:
        self.stop.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


# ---------------------------------------------------------------------- measurements
class Sampler:
    """CPU of this process and its peak RSS, sampled every 0.2 s."""

    def __init__(self) -> None:
        self.p = psutil.Process()
        self.peak = self.p.memory_info().rss
        self.first_rss = self.peak
        self.rss: list[float] = []  # every sample, to tell flat memory from growing
        self._stop = threading.Event()
        self.t0, self.cpu0 = time.monotonic(), sum(self.p.cpu_times()[:2])
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            rss = self.p.memory_info().rss
            self.peak = max(self.peak, rss)
            self.rss.append(rss / 2**20)

    def done(self) -> tuple[float, float, float]:
        self._stop.set()
        cpu = (sum(self.p.cpu_times()[:2]) - self.cpu0) / (time.monotonic() - self.t0)
        return cpu, self.first_rss / 2**20, self.peak / 2**20


def run_collector(gen: Generator, symbols: list[str], seconds: float) -> dict[str, float]:
    from workbench.data.collector import Collector, CollectSettings
    from workbench.data.feeds.ccxt import CcxtFeed
    from workbench.data.lake import Lake

    lake = Lake(tempfile.mkdtemp(prefix="bench-collect-"))
    settings = CollectSettings(source="ccxt:binance", symbols=symbols, streams=["trades", "quotes"],
                               stale_after=30.0)
    collector = Collector(lake, CcxtFeed("binance"), settings)
    latencies: list[float] = []
    sampler = Sampler()
    sent0 = gen.sent.value

    async def main() -> None:
        stop = asyncio.Event()

        async def sample() -> None:
            seen = 0
            while not stop.is_set():
                await asyncio.sleep(0.5)
                lat = list(collector._latency)
                latencies.extend(lat[-min(len(lat), 5000):])
                seen += 1

        asyncio.get_running_loop().call_later(seconds, stop.set)
        task = asyncio.create_task(sample())
        await collector.run(stop)
        await task

    t0 = time.monotonic()
    asyncio.run(main())
    wall = time.monotonic() - t0
    cpu, rss0, peak = sampler.done()
    sent = gen.sent.value - sent0
    trades = lake.read_trades("binance", symbols)
    quotes = lake.read_quotes("binance", symbols)
    stored = len(trades) + len(quotes)
    lag = (trades["recv_ts"] - trades["ts"]).dt.total_seconds().to_numpy() * 1000
    tenth = max(1, len(lag) // 10)
    return {"sent/s": sent / wall, "stored/s": stored / wall, "p50 ms": float(np.percentile(latencies, 50)),
            "p99 ms": float(np.percentile(latencies, 99)), "lag start ms": float(np.median(lag[:tenth])),
            "lag end ms": float(np.median(lag[-tenth:])), "cpu": cpu, "rss0 MB": rss0, "peak MB": peak,
            "rss half MB": sampler.rss[len(sampler.rss) // 2], "rss end MB": sampler.rss[-1]}


def run_discard(gen: Generator, symbols: list[str], seconds: float, store: str | None = None
                ) -> dict[str, float]:
    """ccxt.pro alone (store None), or with one DuckDB INSERT per message ('duckdb'), through the
    collector's calls and counted as the collector counts: after each wake-up every symbol's new trades
    (drained from ccxt's caches) and every quote update since the last wake-up that changes its
    symbol's (bid, bid size, ask, ask size). Also counted: the data frames
    that reached ccxt's client (subscription replies left out)."""
    import ccxt.pro
    import duckdb

    con = None
    if store == "duckdb":
        con = duckdb.connect(os.path.join(tempfile.mkdtemp(prefix="bench-naive-"), "ticks.duckdb"))
        con.execute("CREATE TABLE trades (ts BIGINT, recv BIGINT, symbol VARCHAR, id BIGINT, price DOUBLE, "
                    "size DOUBLE)")
        con.execute("CREATE TABLE quotes (ts BIGINT, recv BIGINT, symbol VARCHAR, bid DOUBLE, "
                    "bid_size DOUBLE, ask DOUBLE, ask_size DOUBLE)")
    n = {"trades": 0, "quotes": 0, "frames": 0}
    lags: list[float] = []
    sampler = Sampler()
    sent0 = gen.sent.value

    async def main() -> None:
        from workbench.data.feeds.ccxt import (
            TRADES_CACHE,
            WAKE_S,
            QuoteLog,
            drain_trades,
            rebase_ws_urls,
            stamp_trades,
        )
        ex = ccxt.pro.binance({"enableRateLimit": False, "timeout_on_exit": 0,
                               "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                                           "fetchMargins": False,
                                           "watchTradesForSymbols": {"name": "aggTrade"},
                                           "tradesLimit": TRADES_CACHE}})
        from workbench.data.sources.ccxt import rebase_urls

        ex.urls["api"] = rebase_ws_urls(rebase_urls(ex.urls["api"], gen.rest_url), gen.ws_url)
        handle = ex.handle_message  # each connection's client takes ex.handle_message when it is created

        def counted(client: object, message: object) -> object:
            if isinstance(message, dict) and ("e" in message or "u" in message):  # aggTrade, bookTicker
                n["frames"] += 1
            return handle(client, message)

        ex.handle_message = counted
        deadline = time.monotonic() + seconds

        async def trades() -> None:
            drained: dict[str, object] = {}
            stamp_trades(ex, symbols)
            while time.monotonic() < deadline:
                await ex.watch_trades_for_symbols(symbols)
                now = time.time_ns()
                batch, _ = drain_trades(ex, symbols, drained)  # every symbol's, as the feed does
                n["trades"] += len(batch)  # added after the await: the quotes loop counts meanwhile
                for t in batch:
                    if con is not None:
                        con.execute("INSERT INTO trades VALUES (?, ?, ?, ?, ?, ?)",
                                    [int(t["timestamp"]) * 1_000_000, now, t["symbol"], int(t["id"]),
                                     t["price"], t["amount"]])
                    lags.append(now / 1e6 - t["timestamp"])
                await asyncio.sleep(WAKE_S)  # wake-ups spaced as the feed spaces them

        async def quotes() -> None:
            wanted = set(symbols)
            book = QuoteLog(ex.bidsasks or {})
            ex.bidsasks = book
            while time.monotonic() < deadline:
                await ex.watch_bids_asks(symbols)
                rows = book.rows(wanted)  # every changed update since the last wake-up, as the feed takes
                n["quotes"] += len(rows)
                if con is not None:
                    for row in rows:
                        con.execute("INSERT INTO quotes VALUES (?, ?, ?, ?, ?, ?, ?)", list(row))
                await asyncio.sleep(WAKE_S)

        try:
            await asyncio.gather(trades(), quotes())
        finally:
            await ex.close()

    t0 = time.monotonic()
    asyncio.run(main())
    wall = time.monotonic() - t0
    cpu, _rss0, peak = sampler.done()
    if con is not None:
        con.close()
    tenth = max(1, len(lags) // 10)
    got = n["trades"] + n["quotes"]
    return {"sent/s": (gen.sent.value - sent0) / wall, "frames/s": n["frames"] / wall,
            "received/s": got / wall, "trades/s": n["trades"] / wall, "quotes/s": n["quotes"] / wall,
            "stored/s": got / wall if store else 0.0,
            "lag start ms": float(np.median(lags[:tenth])) if lags else float("nan"),
            "lag end ms": float(np.median(lags[-tenth:])) if lags else float("nan"), "cpu": cpu,
            "peak MB": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=200)
    ap.add_argument("--rate", type=float, default=20_000.0, help="messages per second, all symbols")
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    gen = Generator(args.symbols, args.rate)
    os.environ["WORKBENCH_CCXT_BASE_URL"] = gen.rest_url
    os.environ["WORKBENCH_CCXT_WS_URL"] = gen.ws_url
    symbols = [f"{b}/{q}" for b, q in _names(args.symbols)]
    try:
        print(f"{args.symbols} symbols, {args.rate:,.0f} msg/s offered (trades and quotes), "
              f"{args.seconds:g} s per measurement; one Python process per side", flush=True)
        base = run_discard(gen, symbols, args.seconds / 3)
        print(f"baseline, receive and discard : {base['received/s']:>9,.0f} msg/s received of "
              f"{base['sent/s']:,.0f} sent ({base['trades/s']:,.0f} trades + {base['quotes/s']:,.0f} quotes; "
              f"{base['frames/s']:,.0f} frames/s reached ccxt's socket), lag "
              f"{base['lag start ms']:.0f} -> {base['lag end ms']:.0f} ms, cpu {base['cpu']:.2f} core, "
              f"peak {base['peak MB']:.0f} MB", flush=True)
        naive = run_discard(gen, symbols, args.seconds / 3, store="duckdb")
        print(f"baseline, one DuckDB INSERT each: {naive['stored/s']:>9,.0f} msg/s stored of "
              f"{naive['sent/s']:,.0f} sent, lag "
              f"{naive['lag start ms']:.0f} -> {naive['lag end ms']:.0f} ms, cpu {naive['cpu']:.2f} core",
              flush=True)
        res = run_collector(gen, symbols, args.seconds)
        print(f"collector                     : {res['stored/s']:>9,.0f} msg/s stored of "
              f"{res['sent/s']:,.0f} sent, durable p50 {res['p50 ms']:.1f} ms p99 {res['p99 ms']:.1f} ms, "
              "lag "
              f"{res['lag start ms']:.0f} -> {res['lag end ms']:.0f} ms, cpu {res['cpu']:.2f} core, memory "
              f"{res['rss0 MB']:.0f} MB at the start, {res['rss half MB']:.0f} MB half-way, "
              f"{res['rss end MB']:.0f} MB at the end (peak {res['peak MB']:.0f} MB)", flush=True)
    finally:
        gen.close()


if __name__ == "__main__":
    main()
