"""A SIMULATED venue on a virtual clock: a seeded tape of trades, quotes and books, fast-forwarded.

`SimulatedFeed` trades in real time (a minute of tape takes a minute); `TapeFeed` plays a whole
seeded session (say 30 minutes starting at a fixed moment) through the collector as fast as the
collector takes it, so the demo can record a tape long enough to build hundreds of 1s or 5s bars in
a few seconds. `record_tape` runs the real recording path (`Collector` -> `TickWriter` -> tick
tables) on it. Nothing here is market data: the source is labelled ``simulated-tape``.

The market: one order book per symbol on a price grid of `tick`. At random (Poisson) moments either
a taker trades against the best bid or ask (the print is at that price; a trade that empties the
level moves that side one tick away), or the book changes: a spread wider than one tick narrows, or
the whole book steps one tick up or down. Every change publishes a quote (best bid and ask with their
sizes) and a top-`levels` book snapshot 1 ms after the trade that caused it. Times are deterministic
(received 5 ms after the venue's time), so recording the same tape twice stores it once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from workbench.data.collector import Collector, CollectSettings
from workbench.data.feeds.base import Emit, Feed, Row, Stream, as_int, book_rows
from workbench.data.lake import Lake
from workbench.data.ticks import TickKind
from workbench.errors import ConfigError

TAPE_SOURCE = "simulated-tape"
TAPE_START = "2025-12-31T12:00:00Z"  # a fixed moment: the same tape (and report) on every machine
LATENCY_NS = 5_000_000  # the venue's time to our receipt
REACTION_NS = 1_000_000  # a trade's print to the quote and book it leaves behind


@dataclass
class _Tape:
    """One symbol's generated session, cut into chunks of one virtual second (what one emit holds)."""

    trades: list[list[Row]] = field(default_factory=list)
    quotes: list[list[Row]] = field(default_factory=list)
    books: list[list[tuple[int, int, list[tuple[float, float]], list[tuple[float, float]]]]] = field(
        default_factory=list)


class TapeFeed(Feed):
    """A seeded session of `minutes` from `start`, played as fast as the collector takes it.

    `rate` is the number of market events a second (about 60 % of them trades), `price` the starting
    price, `tick` the price grid, `levels` the book depth generated per side.
    """

    streams = frozenset({Stream.TRADES, Stream.QUOTES, Stream.BOOK})

    def __init__(self, *, source: str = TAPE_SOURCE, start: str | pd.Timestamp = TAPE_START,
                 minutes: float = 30.0, rate: float = 10.0, seed: int = 7, price: float = 40_000.0,
                 tick: float = 5.0, levels: int = 10) -> None:
        if not (minutes * 60 >= 1 and rate > 0 and price > 0 and tick > 0 and levels >= 1):
            raise ConfigError(f"bad simulated tape (minutes={minutes}, rate={rate}, price={price}, "
                              f"tick={tick}, levels={levels}): use a second or more, positive numbers and "
                              "levels >= 1")
        if minutes * 60 * rate > 5_000_000:
            raise ConfigError(f"a simulated tape of {minutes:g} min at {rate:g} events a second is too "
                              "long to hold in memory: record at most 5,000,000 events")
        begin = pd.Timestamp(start)
        self.source = source
        self.start = begin.tz_localize("UTC") if begin.tzinfo is None else begin.tz_convert("UTC")
        self.minutes, self.rate, self.seed = float(minutes), float(rate), int(seed)
        self.price, self.tick, self.levels = float(price), float(tick), int(levels)
        self.finished = asyncio.Event()  # set once the whole session was emitted
        self._tapes: dict[str, _Tape] = {}
        self._cursor = 0  # chunks emitted so far

    @property
    def end(self) -> pd.Timestamp:
        """The first moment after the session."""
        return self.start + pd.Timedelta(minutes=self.minutes)

    @property
    def chunks(self) -> int:
        return int(np.ceil(self.minutes * 60))

    def trade_ids(self, symbol: str) -> set[int]:
        """The ids of the session's trades of `symbol` (after `open`)."""
        return {as_int(r[3]) for chunk in self._tapes[symbol].trades for r in chunk}

    async def open(self, symbols: Sequence[str], streams: Sequence[Stream]) -> list[str]:
        return self.prepare(symbols)

    def prepare(self, symbols: Sequence[str]) -> list[str]:
        """Generate the session of each symbol (once); returns the canonical symbols."""
        out = []
        for k, raw in enumerate(symbols):
            sym = raw.strip().upper()
            if not sym:
                raise ConfigError("an empty symbol: name symbols such as BTC/USDT")
            if sym not in self._tapes:
                self._tapes[sym] = self._generate(k)
            out.append(sym)
        return list(dict.fromkeys(out))

    def _generate(self, k: int) -> _Tape:
        """The seeded session of the k-th symbol (see the module docstring)."""
        rng = np.random.default_rng([self.seed, k])
        start_ns = int(self.start.value)
        span_ns = int(self.minutes * 60e9)
        n = int(rng.poisson(self.rate * self.minutes * 60))
        # distinct times (a trade's id is its time: ids rise, and never repeat across sessions that do
        # not overlap, which `record_tape` makes sure of)
        times = np.sort(rng.integers(0, span_ns - REACTION_NS - n, size=n)) + np.arange(n) + start_ns
        kinds = rng.random(n)
        sides = rng.random(n) < 0.5
        sizes = np.round(rng.exponential(0.25, size=n), 4) + 0.0001
        depth = self.levels
        bid = round(self.price / self.tick) - 1  # grid indices of the best bid and ask
        ask = bid + 2
        book = [list(np.round(rng.exponential(1.0, size=depth) + 0.05, 4)) for _ in range(2)]  # bid, ask
        tape = _Tape(trades=[[] for _ in range(self.chunks)], quotes=[[] for _ in range(self.chunks)],
                     books=[[] for _ in range(self.chunks)])
        px = self.tick
        for t, kind, buy, size in zip(times.tolist(), kinds.tolist(), sides.tolist(), sizes.tolist(),
                                      strict=True):
            chunk = min((t - start_ns) // 1_000_000_000, self.chunks - 1)
            if kind < 0.6:  # a taker trades at the touch
                side = 1 if buy else 0  # the side of the book it takes from: asks for a buy
                qty = float(min(size, book[side][0]))
                price = (ask if buy else bid) * px
                tape.trades[chunk].append((t, t + LATENCY_NS, "", t, round(price, 8), round(qty, 6),
                                           "buy" if buy else "sell"))
                book[side][0] = round(book[side][0] - qty, 6)
                if book[side][0] <= 1e-9:  # the level is gone: that side moves one tick away
                    book[side] = [*book[side][1:], round(float(rng.exponential(1.0)) + 0.05, 4)]
                    if buy:
                        ask += 1
                    else:
                        bid -= 1
                t += REACTION_NS
            elif ask - bid > 1:  # a new order inside the spread
                if rng.random() < 0.5:
                    bid += 1
                    book[0] = [round(float(rng.exponential(1.0)) + 0.05, 4), *book[0][:-1]]
                else:
                    ask -= 1
                    book[1] = [round(float(rng.exponential(1.0)) + 0.05, 4), *book[1][:-1]]
            elif rng.random() < 0.5:  # the book steps one tick up
                bid, ask = bid + 1, ask + 1
                book[0] = [round(float(rng.exponential(1.0)) + 0.05, 4), *book[0][:-1]]
                book[1] = [*book[1][1:], round(float(rng.exponential(1.0)) + 0.05, 4)]
            else:  # or down
                bid, ask = bid - 1, ask - 1
                book[1] = [round(float(rng.exponential(1.0)) + 0.05, 4), *book[1][:-1]]
                book[0] = [*book[0][1:], round(float(rng.exponential(1.0)) + 0.05, 4)]
            tape.quotes[chunk].append((t, t + LATENCY_NS, "", round(bid * px, 8), float(book[0][0]),
                                       round(ask * px, 8), float(book[1][0])))
            bids = [(round((bid - i) * px, 8), float(book[0][i])) for i in range(depth)]
            asks = [(round((ask + i) * px, 8), float(book[1][i])) for i in range(depth)]
            tape.books[chunk].append((t, t + LATENCY_NS, bids, asks))
        return tape

    async def run(self, symbols: Sequence[str], streams: Sequence[Stream], emit: Emit,
                  book_depth: int) -> None:
        seq = self._cursor
        while self._cursor < self.chunks:
            c = self._cursor
            for sym in symbols:
                tape = self._tapes[sym]
                if Stream.TRADES in streams and tape.trades[c]:
                    emit(TickKind.TRADES, [(r[0], r[1], sym, *r[3:]) for r in tape.trades[c]])
                if Stream.QUOTES in streams and tape.quotes[c]:
                    emit(TickKind.QUOTES, [(r[0], r[1], sym, *r[3:]) for r in tape.quotes[c]])
                if Stream.BOOK in streams and tape.books[c]:
                    rows: list[Row] = []
                    for ts, recv, bids, asks in tape.books[c]:
                        seq += 1
                        rows += book_rows(ts, recv, sym, seq, bids, asks, book_depth)
                    emit(TickKind.BOOK, rows)
            self._cursor += 1
            await asyncio.sleep(0)  # let the collector's other tasks (the refill, the status) run
        self.finished.set()
        await asyncio.Event().wait()  # the venue stays connected, silent, until the collector stops

    async def reset(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def trades_after(self, symbol: str, after_id: int | None, since_ns: int, limit: int) -> list[Row]:
        """The trades published so far (the chunks emitted), as a venue's REST history would hold."""
        tape = self._tapes[symbol]
        now = time.time_ns()
        rows = [r for c in range(min(self._cursor, self.chunks)) for r in tape.trades[c]
                if (as_int(r[3]) > after_id if after_id is not None else as_int(r[0]) >= since_ns)]
        return [(r[0], now, symbol, *r[3:]) for r in rows[:limit]]


@dataclass(frozen=True)
class TapeRecording:
    """What `record_tape` did: the session's span, and the rows the collector received (none when
    the lake held the whole session already)."""

    source: str
    symbols: list[str]
    start: pd.Timestamp
    end: pd.Timestamp
    rows: dict[str, int]
    recorded: bool
    seconds: float


def record_tape(lake: Lake, feed: TapeFeed | None = None, *, symbols: Sequence[str] = ("BTC/USDT",),
                book_depth: int = 5) -> TapeRecording:
    """Record `feed`'s whole session (default: `TapeFeed()`, 30 minutes of SIMULATED BTC/USDT)
    through the collector into `lake`'s tick tables: trades, quotes and books.

    Idempotent: a session the lake already holds (every trade of it) is not recorded again; another
    session over the same span of the same source is refused (it would mix two price paths).
    """
    feed = feed or TapeFeed()
    started = time.monotonic()
    syms = feed.prepare(symbols)
    held = True
    for s in syms:  # another session over the same span would mix two price paths into one tape
        stored = set(lake.ticks.read(TickKind.TRADES, feed.source, s, feed.start, feed.end)["trade_id"]
                     .astype(int))
        mine = feed.trade_ids(s)
        if not stored <= mine:
            raise ConfigError(f"the lake at {lake.root} already holds another {feed.source} tape of {s} "
                              f"between {feed.start:%Y-%m-%d %H:%M} and {feed.end:%H:%M} UTC: record this "
                              "one from another start, or into another data folder (--data-dir)")
        held = held and stored == mine
    if held:  # the lake holds this whole session already
        return TapeRecording(feed.source, syms, feed.start, feed.end, {}, False, time.monotonic() - started)
    # a refill reaches back to the session's start: an earlier, interrupted recording of it is
    # completed by the collector's own backfill instead of being recorded as a gap
    reach = (pd.Timestamp.now(tz="UTC") - feed.start).total_seconds() + 3600.0
    settings = CollectSettings(source=feed.source, symbols=syms, streams=["trades", "quotes", "book"],
                               book_depth=book_depth, backfill_max=max(reach, 86_400.0))
    collector = Collector(lake, feed, settings)

    async def main() -> None:
        stop = asyncio.Event()
        run = asyncio.create_task(collector.run(stop))
        done = asyncio.create_task(feed.finished.wait())
        await asyncio.wait({run, done}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        done.cancel()
        await run  # its error, if it failed

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # a script or the command line
        asyncio.run(main())
    else:  # a notebook's cell runs inside the kernel's event loop: record from a thread of our own
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, main()).result()
    return TapeRecording(feed.source, syms, feed.start, feed.end, dict(collector.status.messages), True,
                         time.monotonic() - started)


__all__ = ["TAPE_SOURCE", "TAPE_START", "TapeFeed", "TapeRecording", "record_tape"]
