"""The streaming collector: a venue's live trades, quotes and books into the lake's tick tables.

One `Collector` runs one `Feed` (one connection, every symbol multiplexed) and one `TickWriter`
(rows durable within one flush). Its guarantees:

- **Nothing lost.** A failed connection, an error from the venue, a full buffer, or a socket that
  delivers nothing for `stale_after` seconds (the watchdog) ends the session; the collector waits a
  capped, jittered backoff and reconnects. Once the new session delivers its first message, trades
  of the outage are refilled over REST from the last trade stored (by id where the venue pages by
  id), up to `backfill_max` seconds back. What cannot be refilled (quotes and books: venues keep no
  history of them; trades older than `backfill_max`; a REST history that fails) is written to the
  gaps table with its reason. A restart is an outage like any other: it resumes from the lake.
- **Nothing doubled.** Trades are deduplicated on (source, symbol, trade id) as they arrive, and
  again by the tick tables when they compact and read.
- **The socket is never blocked by the disk.** Rows go to the writer's bounded buffer; if it is full,
  the session ends (said in the log and the status), and reconnecting backfills what was refused.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import json
import logging
import os
import random
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from pydantic import Field

from workbench.alerts import Alert, Alerter, AlertsSection
from workbench.config import ConfigModel, load_yaml, validate
from workbench.data.feeds.base import Feed, Row, Stream, as_int
from workbench.data.ticks import TickKind, TickWriter
from workbench.errors import ConfigError, TemporaryError, WorkbenchError
from workbench.files import atomic_write
from workbench.retry import RetryPolicy

if TYPE_CHECKING:
    from workbench.data.lake import Lake

log = logging.getLogger(__name__)
E = TypeVar("E", bound=BaseException)

STATUS_FILE = "status.json"
HOLES_FILE = "holes.json"  # symbol -> where its trades must be refilled from (survives a crash)
REFILL_OVERLAP_NS = 2_000_000_000
SWITCH_INTERVAL = 0.001  # seconds: how soon the writer thread gets the GIL back (see `run`)
GC_THRESHOLDS = (50_000, 20, 100)  # young collections every 50k allocations, full ones ~1 per 100M
SEEN_RANGES = 10_000  # runs of consecutive trade ids remembered per symbol (dedup on arrival)


class IdWindow:
    """The trade ids seen of one symbol, as sorted runs of consecutive ids: a venue whose ids are
    contiguous (Binance's aggregate trades) needs one run however long the collector runs, so memory
    stays flat. At most `max_runs` runs are kept, the oldest (lowest) dropped first; a duplicate older
    than that is still removed by the tick tables, which deduplicate when they compact and read."""

    __slots__ = ("his", "los", "max_runs")

    def __init__(self, max_runs: int) -> None:
        self.los: list[int] = []
        self.his: list[int] = []
        self.max_runs = max_runs

    def __len__(self) -> int:
        return len(self.los)

    def add(self, tid: int) -> bool:
        """Remember `tid`; False if it was seen already."""
        los, his = self.los, self.his
        if his and tid == his[-1] + 1:  # the usual case: the next id
            his[-1] = tid
            return True
        i = bisect.bisect_right(los, tid)  # runs[i-1] starts at or below tid
        if i and tid <= his[i - 1]:
            return False
        joins_left = i > 0 and his[i - 1] == tid - 1
        joins_right = i < len(los) and los[i] == tid + 1
        if joins_left and joins_right:
            his[i - 1] = his[i]
            del los[i], his[i]
        elif joins_left:
            his[i - 1] = tid
        elif joins_right:
            los[i] = tid
        else:
            los.insert(i, tid)
            his.insert(i, tid)
            if len(los) > self.max_runs:
                del los[0], his[0]
        return True


class BufferOverflow(TemporaryError):
    """The writer's buffer is full: the disk cannot keep up with the feed."""


StreamName = Literal["trades", "quotes", "book"]


class CollectSettings(ConfigModel):
    """What to collect and how to recover (`pipelines/collect.yaml`, or the flags of `collect`)."""

    source: str
    symbols: list[str] = Field(min_length=1)
    streams: list[StreamName] = Field(default_factory=lambda: list[StreamName](["trades"]), min_length=1)
    book_depth: int = Field(default=10, ge=1, le=1000)
    stale_after: float = Field(default=10.0, gt=0)  # seconds without any message: the connection is dead
    reconnect_wait: float = Field(default=0.5, ge=0)  # first backoff, doubled per failed attempt
    reconnect_max_wait: float = Field(default=30.0, gt=0)
    backfill_max: float = Field(default=86_400.0, ge=0)  # seconds of outage refilled over REST at most
    backfill_page: int = Field(default=1000, ge=1, le=1000)  # trades asked per REST call (Binance: <= 1000)
    segment_seconds: float = Field(default=30.0, gt=0)
    max_buffer: int = Field(default=1_000_000, ge=1)  # rows waiting for the disk before the session fails
    metrics_port: int | None = Field(default=None, ge=0, le=65_535)
    alerts: AlertsSection | None = None  # a connection down, gaps recorded, an overflowing disk

    @classmethod
    def from_options(cls, **options: Any) -> CollectSettings:
        """Settings from the command line's flags (None: the default), errors naming the flag."""
        data = {k: v for k, v in options.items() if v is not None}
        return validate(cls, data, where="collect")


def load_collect_config(path: str | Path) -> CollectSettings:
    """A collect.yaml: the same keys as `CollectSettings`, errors with file and line."""
    return validate(CollectSettings, load_yaml(Path(path)))


@dataclass
class CollectorStatus:
    """What `collect status` shows; written to the source's log folder every second."""

    source: str
    symbols: list[str]
    streams: list[str]
    pid: int = field(default_factory=os.getpid)
    started: float = field(default_factory=time.time)
    connected: bool = False
    sessions: int = 0
    reconnects: int = 0
    last_error: str = ""
    messages: dict[str, int] = field(default_factory=dict)
    last_message: float = 0.0
    backfilled: int = 0
    duplicates: int = 0
    gaps: int = 0
    overflows: int = 0
    refills_pending: int = 0
    durable_p99_ms: float = 0.0
    updated: float = 0.0


class _Metrics:
    """The collector's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter("workbench_collect_messages", "Rows received, by stream", ["stream"],
                                registry=r)
        self.durable = Histogram("workbench_collect_durable_seconds", "Receipt to fsync, per row",
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
                                 registry=r)
        self.lag = Gauge("workbench_collect_lag_seconds", "Receive time minus exchange time of the last row",
                         ["stream"], registry=r)
        self.reconnects = Counter("workbench_collect_reconnects", "Sessions ended by a failure", registry=r)
        self.gaps = Counter("workbench_collect_gaps", "Outages recorded in the gaps table", ["stream"],
                            registry=r)
        self.backfilled = Counter("workbench_collect_backfilled_rows", "Trades refilled over REST",
                                  registry=r)
        self.buffer = Gauge("workbench_collect_buffer_rows", "Rows waiting for the disk", registry=r)


class Collector:
    """Collect `settings.streams` of `settings.symbols` from `feed` into `lake` until stopped.

    >>> asyncio.run(Collector(lake, CcxtFeed("binance"), settings).run())   # doctest: +SKIP
    """

    def __init__(self, lake: Lake, feed: Feed, settings: CollectSettings) -> None:
        self.lake, self.feed, self.settings = lake, feed, settings
        self.streams = [Stream(s) for s in dict.fromkeys(settings.streams)]
        self.symbols: list[str] = list(settings.symbols)
        self.status = CollectorStatus(feed.source, self.symbols, [s.value for s in self.streams])
        self.metrics = _Metrics()
        self._latency: deque[float] = deque(maxlen=20_000)
        self._writer: TickWriter | None = None
        self._seen: dict[str, IdWindow] = {}
        self._last_id: dict[str, int | None] = {}
        self._last_ts: dict[str, int] = {}
        self._hole: dict[str, int] = {}  # symbol -> exchange time (ns) from which to refill trades
        self._outage_since: int | None = None  # ns: the last receipt before the connection went
        self._refill_task: asyncio.Task[None] | None = None  # refilling trade holes over REST
        self._live_first: dict[str, int] = {}  # symbol -> first live trade id after its hole
        self._last_msg = time.monotonic()
        self._first = asyncio.Event()
        self._alerter: Alerter | None = None
        self._seen_gaps = self._seen_overflows = 0
        self._down_at: float | None = None  # monotonic time the connection was last seen down
        self._last_gap = ""

    # ------------------------------------------------------------------ the loop
    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Open the feed and the writer (refusing bad input before anything is written), then
        collect session after session until `stop` is set."""
        stop = stop or asyncio.Event()
        if self.settings.alerts is not None:  # (its URLs are read and checked before anything starts)
            self._alerter = Alerter(self.settings.alerts.settings(),
                                    source=f"workbench collect {self.feed.source}")
        self.symbols = await self.feed.open(self.settings.symbols, self.streams)
        self.status.symbols = self.symbols
        writer = TickWriter(self.lake.ticks, self.feed.source, segment_seconds=self.settings.segment_seconds,
                            max_pending=self.settings.max_buffer, observer=self._durable)
        server = None
        if self.settings.metrics_port is not None:
            try:
                server, _thread = start_http_server(self.settings.metrics_port, addr="127.0.0.1",
                                                    registry=self.metrics.registry)
            except OSError as exc:
                raise ConfigError(f"cannot serve metrics on port {self.settings.metrics_port}: "
                                  f"{exc.strerror}; choose a free --metrics-port") from None
        try:
            writer.open()
        except BaseException:
            if server is not None:
                server.shutdown()
            raise
        self._writer = writer
        status_task = asyncio.create_task(self._status_loop(stop))
        # The feed's parsing holds the GIL nearly all the time under load; the writer thread asks for
        # it back after every fsync. At Python's default 5 ms switch interval that hand-back is what
        # made receipt-to-durable p99 ~300 ms at 16k msg/s; at 1 ms it is ~40 ms (bench/collect.py).
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, SWITCH_INTERVAL))
        # A client such as ccxt keeps hundreds of thousands of small dicts (markets, caches): a full
        # collection of the cyclic GC over them stalls everything ~100 ms, which was the whole p99
        # tail (115 -> 34 ms at 18k msg/s). Collections are made rarer, not disabled.
        thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            self._resume()
            failures = 0
            backoff = RetryPolicy(wait=self.settings.reconnect_wait, backoff=2.0,
                                  max_wait=self.settings.reconnect_max_wait)
            while not stop.is_set():
                delivered = await self._session(stop)
                if stop.is_set():
                    break
                failures = 1 if delivered else failures + 1
                # the workbench's retry policy, jittered: many collectors must not reconnect in step
                wait = backoff.delay(failures) * random.uniform(0.5, 1.0)
                log.info("%s: reconnecting in %.2f s", self.feed.source, wait)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
        finally:
            sys.setswitchinterval(switch)
            gc.set_threshold(*thresholds)
            status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await status_task
            await self.feed.close()
            if server is not None:
                server.shutdown()
            self._writer = None
            self.status.connected = False
            try:
                writer.close()
            finally:
                self._write_status()
                if self._alerter is not None:
                    self._alerter.close(timeout=5.0)

    async def _session(self, stop: asyncio.Event) -> bool:
        """One connection: run the feed under the watchdog, refill the outage once it delivers.
        Returns whether it delivered anything (a healthy session resets the backoff)."""
        self.status.sessions += 1
        self._live_first = {}
        self._first = asyncio.Event()
        self._last_msg = time.monotonic()
        run = asyncio.create_task(self.feed.run(self.symbols, self.streams, self._emit,
                                                self.settings.book_depth))
        stopping = asyncio.create_task(stop.wait())
        first = asyncio.create_task(self._first.wait())
        self._refill_task = None
        started = False
        reason = ""
        try:
            while True:
                idle = time.monotonic() - self._last_msg
                waiting: set[asyncio.Future[Any]] = {run, stopping}
                if not started:
                    waiting.add(first)
                if self._refill_task is not None:
                    waiting.add(self._refill_task)
                done, _ = await asyncio.wait(waiting, timeout=max(0.0, self.settings.stale_after - idle),
                                             return_when=asyncio.FIRST_COMPLETED)
                if stopping in done:
                    return self._first.is_set()
                if run in done:
                    exc = run.exception()
                    fatal = _leaf(exc, ConfigError) if exc else None
                    if fatal is not None:  # refused keys, a busy key: reconnecting cannot help
                        raise fatal
                    reason = _describe(exc) if exc else "the venue ended the stream"
                    break
                if self._refill_task is not None and self._refill_task in done:
                    exc = self._refill_task.exception()
                    if exc is not None:
                        reason = _describe(exc)
                        break
                    self._refill_task = None
                    if self._hole:  # a jump in ids while refilling: go again
                        self._refill_task = asyncio.create_task(self._refill_trades())
                if not started and first in done:  # live again: refill the outage behind it
                    started = True
                    self.status.connected = True
                    self._refill_task = asyncio.create_task(self._refill())
                if time.monotonic() - self._last_msg >= self.settings.stale_after:
                    reason = f"no message for {self.settings.stale_after:g} s (a silent connection)"
                    break
        finally:
            for task in (run, stopping, first, self._refill_task):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            self.status.connected = False
            if self._outage_since is None:
                self._outage_since = time.time_ns()
            await self.feed.reset()
        self.status.reconnects += 1
        self.status.last_error = reason
        self.metrics.reconnects.inc()
        log.warning("%s: connection lost: %s", self.feed.source, reason)
        if Stream.TRADES in self.streams:
            for sym in self.symbols:  # the hole starts at the last trade stored before the outage
                self._hole.setdefault(sym, self._last_ts.get(sym, self._outage_since or time.time_ns()))
            self._save_holes()
        return self._first.is_set()

    # ------------------------------------------------------------------ rows in
    def _emit(self, kind: TickKind, rows: list[Row]) -> None:
        """Take rows from the feed (live) or the backfill: deduplicate trades, queue for the disk."""
        if not rows:
            return
        self._last_msg = time.monotonic()
        if kind is TickKind.TRADES:
            rows = self._new_trades(rows, live=True)
            if not rows:
                return
        if kind is TickKind.GAPS:  # the feed found a break itself (a book's update ids)
            self.status.gaps += len(rows)
            for row in rows:
                self.metrics.gaps.labels(str(row[4])).inc()
        writer = self._writer
        if writer is None:
            return
        if not writer.extend(kind, rows):
            self.status.overflows += 1
            raise BufferOverflow(f"more than {self.settings.max_buffer} rows waiting for the disk: the "
                                 "disk cannot keep up; reconnecting and refilling from REST")
        self.status.messages[kind.value] = self.status.messages.get(kind.value, 0) + len(rows)
        self.metrics.messages.labels(kind.value).inc(len(rows))
        last = rows[-1]
        self.metrics.lag.labels(kind.value).set((as_int(last[1]) - as_int(last[0])) / 1e9)
        self.status.last_message = time.time()
        if not self._first.is_set():
            self._first.set()

    def _new_trades(self, rows: list[Row], *, live: bool) -> list[Row]:
        fresh = []
        for row in rows:
            sym, tid = str(row[2]), as_int(row[3])
            seen = self._seen.get(sym)
            if seen is None:
                seen = self._seen[sym] = IdWindow(SEEN_RANGES)
            if not seen.add(tid):
                self.status.duplicates += 1
                continue
            last = self._last_id.get(sym)
            if (live and self.feed.contiguous_ids and last is not None and tid > last + 1
                    and sym not in self._hole):  # ids skipped: messages were lost on the way
                log.warning("%s: %s trade ids jump from %d to %d: refilling them", self.feed.source, sym,
                            last, tid)
                self._hole[sym] = self._last_ts[sym]
                self._live_first[sym] = tid  # the refill of this hole ends here
                self._save_holes()
                if self._refill_task is None and self._first.is_set():
                    self._refill_task = asyncio.get_running_loop().create_task(self._refill_trades())
            if live:
                self._live_first.setdefault(sym, tid)
            if last is None or tid > last:
                self._last_id[sym] = tid
                self._last_ts[sym] = as_int(row[0])
            fresh.append(row)
        return fresh

    def _durable(self, kind: TickKind, recv: list[int], now: int) -> None:
        for r in recv:
            self._latency.append((now - r) / 1e6)
        for r in recv[:: max(1, len(recv) // 100)]:  # a sample: the histogram is for the trend
            self.metrics.durable.observe((now - r) / 1e9)

    # ------------------------------------------------------------------ recovery
    def _resume(self) -> None:
        """Start from the lake: the holes an earlier run left unfilled, the last trade of each
        symbol (the downtime is a hole too), and the outage since the last row received."""
        holes = self._load_holes()
        last_recv = 0
        for sym in self.symbols:
            last = self.lake.ticks.last(TickKind.TRADES, self.feed.source, sym)
            if last is None:
                continue
            self._last_id[sym] = as_int(last["trade_id"])
            self._last_ts[sym] = as_int(last["ts"])
            last_recv = max(last_recv, as_int(last["recv_ts"]))
            if Stream.TRADES in self.streams:
                self._hole[sym] = min(holes.get(sym, self._last_ts[sym]), self._last_ts[sym])
                # what is stored of the overlap the refill asks for again: not queued twice
                recent = self.lake.ticks.read(TickKind.TRADES, self.feed.source, sym,
                                              pd.Timestamp(self._hole[sym] - REFILL_OVERLAP_NS, tz="UTC"))
                self._new_trades([(0, 0, sym, int(i)) for i in recent["trade_id"]], live=False)
        self._outage_since = last_recv or None
        self._save_holes()

    def _holes_file(self) -> Path:
        return self.lake.ticks.wal_dir(self.feed.source) / HOLES_FILE

    def _load_holes(self) -> dict[str, int]:
        try:
            return {str(k): int(v) for k, v in json.loads(self._holes_file().read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _save_holes(self) -> None:
        """Durable before any row after the outage is: a crash mid-refill leaves the hole known."""
        holes = {**self._load_holes(), **self._hole}
        for sym in self.symbols:
            if sym not in self._hole:
                holes.pop(sym, None)
        atomic_write(self._holes_file(), json.dumps(holes))
        self.status.refills_pending = len(self._hole)

    async def _refill(self) -> None:
        """Once live again: refill each symbol's trade hole over REST, record what cannot be."""
        now = time.time_ns()
        since = self._outage_since
        self._outage_since = None
        if since is not None:
            for stream in self.streams:
                if stream not in self.feed.backfills:
                    self._gap(since, now, stream, "not received while disconnected; the venue keeps "
                              "no history of it")
        await self._refill_trades()

    async def _refill_trades(self) -> None:
        """Refill every trade hole (until none is left: a new one may open meanwhile)."""
        while self._hole:
            sym, since_ns = next(iter(self._hole.items()))
            await self._refill_symbol(sym, since_ns, time.time_ns())
            self._hole.pop(sym, None)
            self._save_holes()

    async def _refill_symbol(self, sym: str, since_ns: int, now: int) -> None:
        """Page the venue's trades from a little before `since_ns` (the live stream may have
        reordered the last ones) until the first trade of the new session, or `now`."""
        oldest = now - int(self.settings.backfill_max * 1e9)
        if since_ns < oldest:
            self._gap(since_ns, oldest, Stream.TRADES, f"older than backfill_max "
                      f"({self.settings.backfill_max:g} s)", symbols=[sym])
            since_ns = oldest
        since_ns = max(oldest, since_ns - REFILL_OVERLAP_NS)
        after_id: int | None = None
        total = 0
        while True:
            try:
                page = await self.feed.trades_after(sym, after_id, since_ns, self.settings.backfill_page)
            except BufferOverflow:
                raise
            except WorkbenchError as exc:  # the REST history failed after its retries
                self._gap(since_ns, now, Stream.TRADES, f"backfill failed: {exc}", symbols=[sym])
                return
            if not page:
                break
            fresh = self._new_trades(page, live=False)
            if fresh and self._writer is not None and not self._writer.extend(TickKind.TRADES, fresh):
                self.status.overflows += 1
                raise BufferOverflow("the disk cannot keep up with the backfill")
            total += len(fresh)
            last_id = as_int(page[-1][3])
            if after_id is not None and last_id <= after_id:
                break  # no progress: the venue has nothing newer
            after_id, since_ns = last_id, as_int(page[-1][0])
            live = self._live_first.get(sym)  # the first trade the stream delivered after the hole
            if (live is not None and after_id >= live) or since_ns >= now:
                break
        if total:
            log.info("%s: refilled %d %s trades over REST", self.feed.source, total, sym)
        self.status.backfilled += total
        self.metrics.backfilled.inc(total)

    def _gap(self, since: int, until: int, stream: Stream, reason: str,
             symbols: Sequence[str] | None = None) -> None:
        if until <= since or self._writer is None:
            return
        now = time.time_ns()
        rows = [(since, now, sym, until, stream.value, reason) for sym in (symbols or self.symbols)]
        self._writer.extend(TickKind.GAPS, rows)
        self.status.gaps += len(rows)
        self._last_gap = f"{stream.value} of {','.join(symbols or self.symbols)}: {reason}"
        self.metrics.gaps.labels(stream.value).inc(len(rows))
        log.warning("%s: gap in %s of %s from %s s: %s", self.feed.source, stream.value,
                    ",".join(symbols or self.symbols), (until - since) / 1e9, reason)

    # ------------------------------------------------------------------ status
    async def _status_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._write_status()
            self._check_alerts()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)

    def _check_alerts(self) -> None:
        """Fire or clear the collector's alert conditions (each second, with the status): the connection
        down, and gaps or disk overflows recorded since the last check (events: each fires and clears,
        so a burst sends one alert and one recovery once it has stopped)."""
        alerter = self._alerter
        if alerter is None:
            return
        st, src = self.status, self.feed.source
        try:
            if st.connected:
                self._down_at = None
            elif self._down_at is None:
                self._down_at = time.monotonic()
            down = self._down_at is not None and time.monotonic() - self._down_at >= self.settings.stale_after
            if down:  # (not at the start, nor for a reconnect that succeeds within stale_after)
                since = f"{time.time() - st.last_message:.0f} s ago" if st.last_message else "none yet"
                alerter.fire(Alert(key="down", title=f"{src}: the connection is down", level="error",
                                   facts={"source": src, "symbols": ",".join(st.symbols),
                                          "last error": st.last_error, "reconnects": st.reconnects,
                                          "last message": since},
                                   action="check the venue and the network (workbench collect status); the "
                                          "collector reconnects on its own and refills trades over REST"))
            elif st.connected:
                alerter.clear("down")
            if st.gaps > self._seen_gaps:
                alerter.fire(Alert(key="gaps", title=f"{src}: gaps recorded in the live data",
                                   level="warning",
                                   facts={"source": src, "new gaps": st.gaps - self._seen_gaps,
                                          "gaps so far": st.gaps, "latest": self._last_gap},
                                   action="bars and tick fills over a gap are flagged (workbench data "
                                          "quality); the gaps table lists them"))
                alerter.clear("gaps")
                self._seen_gaps = st.gaps
            if st.overflows > self._seen_overflows:
                alerter.fire(Alert(key="overflow", title=f"{src}: the disk could not keep up", level="error",
                                   facts={"source": src, "overflows": st.overflows,
                                          "max_buffer": self.settings.max_buffer},
                                   action="move the lake to a faster disk or collect fewer streams; what "
                                          "was refused is refilled from REST where the venue allows"))
                alerter.clear("overflow")
                self._seen_overflows = st.overflows
            alerter.poll()
        except Exception as exc:  # an alert problem never stops the collection
            log.error("%s: alerts: %s: %s", src, type(exc).__name__, exc)

    def _write_status(self) -> None:
        if self._latency:
            ordered = sorted(self._latency)
            self.status.durable_p99_ms = ordered[int(0.99 * (len(ordered) - 1))]
        if self._writer is not None:
            self.metrics.buffer.set(self._writer.stats.pending)
        self.status.updated = time.time()
        with contextlib.suppress(OSError):
            atomic_write(self.lake.ticks.wal_dir(self.feed.source) / STATUS_FILE,
                         json.dumps(asdict(self.status), indent=1))


def read_status(lake: Lake) -> list[dict[str, Any]]:
    """The last status of every collector that wrote into `lake`, with whether it still runs."""
    out = []
    base = lake.ticks.root / "_wal"
    for path in sorted(base.glob(f"source=*/{STATUS_FILE}")) if base.is_dir() else []:
        try:
            status = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        status["running"] = lake.ticks.writer_active(status.get("source", ""))
        out.append(status)
    return out


def stream_rows(statuses: list[dict[str, Any]], previous: list[dict[str, Any]] | None = None,
                wall: float | None = None) -> list[dict[str, Any]]:
    """One row per collector stream from `read_status`: whether it runs and is connected, its message
    rate (between `previous` and these statuses when the same collector wrote both, else since it
    started), its lag (seconds since its last message), reconnects, gaps, overflows, refills pending
    and the p99 time to durability. What the dashboard and `collect status` show at a glance."""
    wall = time.time() if wall is None else wall
    before = {(p.get("source"), p.get("pid"), p.get("started")): p for p in previous or []}
    rows = []
    for st in statuses:
        prior = before.get((st.get("source"), st.get("pid"), st.get("started")))
        if prior is not None and float(prior.get("updated") or 0.0) >= float(st.get("updated") or 0.0):
            prior = None  # not rewritten since: the rate since the collector started
        since = float(prior["updated"]) if prior else float(st.get("started") or 0.0)
        span = float(st.get("updated") or 0.0) - since
        last = float(st.get("last_message") or 0.0)
        names = list(dict.fromkeys([*(st.get("streams") or []), *(st.get("messages") or {})])) or ["all"]
        for stream in names:
            count = int((st.get("messages") or {}).get(stream, 0))
            earlier = int((prior.get("messages") or {}).get(stream, 0)) if prior else 0
            rows.append({
                "source": st.get("source", ""), "stream": stream,
                "state": ("connected" if st.get("connected") else "reconnecting") if st.get("running")
                else "stopped",
                "rate": (count - earlier) / span if span > 0 else 0.0,
                "lag_s": max(wall - last, 0.0) if last else None,
                "messages": count, "reconnects": int(st.get("reconnects", 0)),
                "gaps": int(st.get("gaps", 0)), "overflows": int(st.get("overflows", 0)),
                "refills_pending": int(st.get("refills_pending", 0)),
                "durable_p99_ms": float(st.get("durable_p99_ms", 0.0)),
                "last_error": st.get("last_error", ""),
            })
    return rows


def _leaf(exc: BaseException, kind: type[E]) -> E | None:
    """The first `kind` in `exc` or, through task groups, in the errors it gathers."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _leaf(inner, kind)
            if found is not None:
                return found
    return None


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__




def collect(lake: Lake, settings: CollectSettings, *, duration: float | None = None,
            feed: Feed | None = None) -> CollectorStatus:
    """Run a collector in this thread until `duration` seconds have passed (None: until SIGINT or
    SIGTERM, which stop it cleanly: the buffer is flushed and compacted). Returns its last status."""
    import signal

    from workbench.data.feeds import get_feed

    if duration is not None and duration <= 0:
        raise ConfigError(f"duration must be positive, got {duration:g} s: leave it out to collect "
                          "until stopped")
    collector = Collector(lake, feed or get_feed(settings.source), settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        handled = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                handled.append(sig)
        if duration is not None:
            loop.call_later(duration, stop.set)
        try:
            await collector.run(stop)
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    asyncio.run(main())
    return collector.status


__all__ = ["BufferOverflow", "CollectSettings", "Collector", "CollectorStatus", "collect",
           "load_collect_config", "read_status"]
