"""A SIMULATED venue in this process: live trades, quotes and books with a REST-like history.

For the demo and for trying the collector without a network: a seeded random walk per symbol
trades at `rate` trades per second (ids increasing, taker side, sizes), quotes its best bid/ask and
keeps a book of `levels` price levels whose sizes change with every trade. Its whole trade history
stays in memory, so `trades_after` refills an outage exactly as a venue's REST history would;
`outage_after` ends the first session after that many seconds, as a dropped connection does, to
show the refill. Nothing here is market data: it is labelled source ``simulated``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from workbench.data.feeds.base import Emit, Feed, Row, Stream, as_int, book_rows
from workbench.data.ticks import TickKind
from workbench.errors import ConfigError, TemporaryError

STEP_S = 0.02  # the venue publishes every 20 ms


@dataclass
class _Symbol:
    price: float
    tick: float
    rng: np.random.Generator
    next_id: int = 1
    carry: float = 0.0  # the fraction of a trade owed: a phase of its own, so symbols trade apart
    trades: list[Row] = field(default_factory=list)
    sizes: np.ndarray = field(default_factory=lambda: np.zeros(0))


class SimulatedFeed(Feed):
    """A seeded in-process venue (see the module docstring); `source` is ``simulated``."""

    source = "simulated"
    streams = frozenset({Stream.TRADES, Stream.QUOTES, Stream.BOOK})

    def __init__(self, *, seed: int = 7, rate: float = 20.0, levels: int = 20,
                 outage_after: float | None = None) -> None:
        if rate <= 0 or levels < 1:
            raise ConfigError(f"bad simulated venue (rate={rate}, levels={levels}): use rate > 0 trades a "
                              "second and levels >= 1")
        self.seed, self.rate, self.levels, self.outage_after = seed, rate, levels, outage_after
        self._symbols: dict[str, _Symbol] = {}
        self._last_ns: int | None = None
        self._sessions = 0

    async def open(self, symbols: Sequence[str], streams: Sequence[Stream]) -> list[str]:
        out = []
        for k, raw in enumerate(symbols):
            sym = raw.strip().upper()
            if not sym:
                raise ConfigError("an empty symbol: name symbols such as BTC/USDT")
            rng = np.random.default_rng([self.seed, k])
            price = float(rng.choice([100.0, 2_000.0, 40_000.0]))
            # ids from the clock (ms x 1000): a later run never reuses an id a lake already holds
            first_id = time.time_ns() // 1_000_000 * 1000
            phase = float(np.random.default_rng([self.seed, k, 1]).uniform())
            state = _Symbol(price=price, tick=price * 1e-5, rng=rng, next_id=first_id, carry=phase)
            state.sizes = rng.uniform(0.5, 5.0, size=(2, self.levels))
            self._symbols.setdefault(sym, state)
            out.append(sym)
        return list(dict.fromkeys(out))

    async def run(self, symbols: Sequence[str], streams: Sequence[Stream], emit: Emit,
                  book_depth: int) -> None:
        self._sessions += 1
        started = time.monotonic()
        if self._last_ns is not None:  # the venue traded on while we were away: history only
            missed = (time.time_ns() - self._last_ns) / 1e9 * self.rate
            self._advance(symbols, missed, streams, None, book_depth)
        while True:
            await asyncio.sleep(STEP_S)
            self._advance(symbols, STEP_S * self.rate, streams, emit, book_depth)
            if (self.outage_after is not None and self._sessions == 1
                    and time.monotonic() - started > self.outage_after):
                raise TemporaryError("the simulated venue dropped the connection")

    def _advance(self, symbols: Sequence[str], n: float, streams: Sequence[Stream], emit: Emit | None,
                 depth: int) -> None:
        """`n` trades' worth of market for each symbol (plus what each owes from before), ending
        now; published through `emit` (None: the collector is not connected, the trades only enter
        the history)."""
        now = time.time_ns()
        self._last_ns = now
        for sym in symbols:
            s = self._symbols[sym]
            trades: list[Row] = []
            due = n + s.carry
            k = int(due)
            s.carry = due - k
            for j in range(k):
                s.price = max(s.tick, s.price * float(np.exp(s.rng.normal(0.0, 2e-4))))
                side = "buy" if s.rng.random() < 0.5 else "sell"
                size = round(float(s.rng.exponential(0.2)) + 0.001, 6)
                px = round(round(s.price / s.tick) * s.tick, 8)
                ts = now - int((k - 1 - j) * 1e9 / max(self.rate, 1e-9))
                row = (ts, now, sym, s.next_id, px, size, side)
                s.next_id += 1
                s.trades.append(row)
                trades.append(row)
                level = int(s.rng.integers(0, self.levels))
                s.sizes[0 if side == "sell" else 1, level] = float(s.rng.uniform(0.5, 5.0))
            if not trades or emit is None:
                continue
            mid = round(s.price / s.tick) * s.tick
            bids = [(round(mid - (i + 1) * s.tick, 8), round(float(s.sizes[0, i]), 6))
                    for i in range(self.levels)]
            asks = [(round(mid + (i + 1) * s.tick, 8), round(float(s.sizes[1, i]), 6))
                    for i in range(self.levels)]
            if Stream.TRADES in streams:
                emit(TickKind.TRADES, [(r[0], now, *r[2:]) for r in trades])
            if Stream.QUOTES in streams:
                emit(TickKind.QUOTES, [(now, now, sym, bids[0][0], bids[0][1], asks[0][0], asks[0][1])])
            if Stream.BOOK in streams:
                emit(TickKind.BOOK, book_rows(now, now, sym, s.next_id, bids, asks, depth))

    async def reset(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def trades_after(self, symbol: str, after_id: int | None, since_ns: int, limit: int) -> list[Row]:
        s = self._symbols[symbol]
        now = time.time_ns()
        rows = [r for r in s.trades
                if (as_int(r[3]) > after_id if after_id is not None else as_int(r[0]) >= since_ns)]
        return [(r[0], now, *r[2:]) for r in rows[:limit]]


__all__ = ["SimulatedFeed"]
