"""The contract of a live market-data feed: what the collector asks of every venue.

A `Feed` is one venue connection (one per API key; every symbol multiplexed on it). `open`
checks symbols and streams against the venue and refuses what it cannot serve, before anything is
written; `run` subscribes and hands every message to `emit` as rows of the tick tables until it
fails (it raises; the collector reconnects) or is cancelled; `reset` drops the connection so the
next `run` starts afresh; `trades_after` pages through the venue's REST trade history, which
backfills an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Sequence
from enum import StrEnum
from typing import Any, cast

from workbench.data.ticks import TickKind

Row = tuple[object, ...]
Emit = Callable[[TickKind, list[Row]], None]


class Stream(StrEnum):
    """What a collector subscribes to. BOOK is stored as top-N snapshots (see `workbench.data.ticks`)."""

    TRADES = "trades"
    QUOTES = "quotes"
    BOOK = "book"


STREAM_TABLE: dict[Stream, TickKind] = {
    Stream.TRADES: TickKind.TRADES, Stream.QUOTES: TickKind.QUOTES, Stream.BOOK: TickKind.BOOK,
}


async def surely_cancelled(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` in a task of its own that a cancellation of this one is sure to end.

    Python 3.11's `asyncio.wait_for` drops a cancellation that arrives just as the future it waits
    on completes (CPython gh-86296, fixed in 3.12). A client's receive loop around it, such as
    alpaca-py's `_consume` or ccxt's connect, then runs on, and the collector waits forever for the
    feed to stop; a full test run hung this way. Here the inner task is cancelled again, every 0.25 s,
    until it has ended. A feed wraps each task it starts in this, because a `TaskGroup` cancels its
    tasks only once."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.wait({task})
    finally:
        while not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # already on the way out
                await asyncio.wait({task}, timeout=0.25)
    task.result()


class Feed(ABC):
    """One venue's live data; `source` is the lake's name for it (e.g. ``binance``, ``alpaca``)."""

    source: str
    streams: frozenset[Stream]  # what this venue can stream
    backfills: frozenset[Stream] = frozenset({Stream.TRADES})  # what its REST history can refill
    # whether one symbol's live trade ids follow each other without holes (Binance's aggregate
    # trades): then a jump is a loss (ccxt reconnects silently when no watch is pending) and refilled
    contiguous_ids: bool = False

    @abstractmethod
    async def open(self, symbols: Sequence[str], streams: Sequence[Stream]) -> list[str]:
        """Check `symbols` and `streams` with the venue; return the canonical symbols. Raises a
        ConfigError naming the fix for an unknown symbol or a stream the venue does not offer."""

    @abstractmethod
    async def run(self, symbols: Sequence[str], streams: Sequence[Stream], emit: Emit,
                  book_depth: int) -> None:
        """Subscribe and emit rows until cancelled; raise on any failure of the connection."""

    @abstractmethod
    async def reset(self) -> None:
        """Drop the connection (after a failure or a stall): the next `run` reconnects."""

    @abstractmethod
    async def close(self) -> None:
        """Release every connection for good."""

    @abstractmethod
    async def trades_after(self, symbol: str, after_id: int | None, since_ns: int,
                           limit: int) -> list[Row]:
        """One page of the venue's trades of `symbol` newer than trade `after_id` (or, without an
        id, from `since_ns` on), oldest first, as trade rows (recv_ts set to now)."""


def book_rows(ts_ns: int, recv_ns: int, symbol: str, seq: int | None, bids: Sequence[Sequence[float]],
              asks: Sequence[Sequence[float]], depth: int) -> list[Row]:
    """A top-`depth` snapshot as book rows: bids best first, then asks best first."""
    rows: list[Row] = []
    for side, levels in (("bid", bids), ("ask", asks)):
        for level, entry in enumerate(levels[:depth]):
            rows.append((ts_ns, recv_ns, symbol, seq, side, level, float(entry[0]), float(entry[1])))
    return rows


def as_int(value: object) -> int:
    """A row's integer column (ids, nanosecond times) as an int, for code that reads rows back."""
    return int(cast(Any, value))
