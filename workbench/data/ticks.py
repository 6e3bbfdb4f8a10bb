"""Tick tables: trades, quotes, order books and gaps, written durably within milliseconds of receipt.

The write path is a write-ahead log. A `TickWriter` (one per source and lake, held by a lock)
buffers rows in memory and a flusher thread appends them as Arrow record batches to the open
segment of each kind (``_wal/source=<s>/<kind>/<segment>.arrows``) and fsyncs: a row is durable
when its batch's fsync returns, which is typically a few milliseconds after it was received
(group commit: whatever arrived while the previous flush ran goes in the next). Segments roll
every `segment_seconds`; a compactor thread turns closed segments into zstd Parquet parts, one per
``<kind>/source=<s>/symbol=<sym>/date=<day>/`` partition, named by the segment range they hold
(``p-<first>-<last>.parquet``), then deletes the segments. Parts of a partition are merged (and
trades deduplicated by id) once there are many, or once their day is over.

Readers (`TickStore.read`, and `Lake.read_trades` / `read_quotes` / `read_book` over it) query
the Parquet parts with DuckDB and add the rows still in the log, including the open segment up to
its last complete batch: a notebook sees a trade within one flush of its arrival. A part whose
segment range lies inside another's is a leftover of an interrupted merge, and a log segment
covered by a part is an interrupted compaction: both are skipped, so a crash at any point leaves
every durable row exactly once. A reader racing a compaction retries.

The order book is stored as top-N snapshots: every change of the top N levels (the collector
throttles to the venue's own update cadence) becomes ``2N`` rows (side, level, price, size) sharing
one ``ts`` and the venue's update id ``seq``. Any moment's book is the last snapshot at or before
it, no replay needed; a resync after a sequence break is recorded in the gaps table.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from workbench.errors import ConfigError, DataError
from workbench.files import atomic_path, atomic_write, file_lock, fsync_dir

log = logging.getLogger(__name__)

TS = pa.timestamp("ns", tz="UTC")
READ_ATTEMPTS = 20
MERGE_PARTS = 32  # a partition with more parts than this is merged into one
_PART = re.compile(r"^p-(\d+)-(\d+)\.parquet$")
_SEGMENT = re.compile(r"^(\d+)\.arrows$")


class TickKind(StrEnum):
    """The tick tables. `GAPS` records what a collector could not receive nor backfill."""

    TRADES = "trades"
    QUOTES = "quotes"
    BOOK = "book"
    GAPS = "gaps"


SCHEMAS: dict[TickKind, pa.Schema] = {
    TickKind.TRADES: pa.schema([
        ("ts", TS), ("recv_ts", TS), ("symbol", pa.string()), ("trade_id", pa.int64()),
        ("price", pa.float64()), ("size", pa.float64()), ("side", pa.string()),
    ]),
    TickKind.QUOTES: pa.schema([
        ("ts", TS), ("recv_ts", TS), ("symbol", pa.string()), ("bid", pa.float64()),
        ("bid_size", pa.float64()), ("ask", pa.float64()), ("ask_size", pa.float64()),
    ]),
    TickKind.BOOK: pa.schema([
        ("ts", TS), ("recv_ts", TS), ("symbol", pa.string()), ("seq", pa.int64()),
        ("side", pa.string()), ("level", pa.int16()), ("price", pa.float64()), ("size", pa.float64()),
    ]),
    # ts: the first moment not received; end: the first moment received again; stream: which
    # subscription (trades, quotes, book, bars); reason: why (reconnect, sequence gap, overflow)
    TickKind.GAPS: pa.schema([
        ("ts", TS), ("recv_ts", TS), ("symbol", pa.string()), ("end", TS),
        ("stream", pa.string()), ("reason", pa.string()),
    ]),
}
# Rows that are the same event: trades by venue id; the others by every column.
_KEYS: dict[TickKind, tuple[str, ...]] = {
    TickKind.TRADES: ("symbol", "trade_id"),
    TickKind.QUOTES: ("symbol", "ts", "recv_ts"),
    TickKind.BOOK: ("symbol", "ts", "recv_ts", "side", "level"),
    TickKind.GAPS: ("symbol", "ts", "stream", "recv_ts"),
}
_ORDER: dict[TickKind, tuple[str, ...]] = {
    TickKind.TRADES: ("ts", "trade_id"),
    TickKind.QUOTES: ("ts", "recv_ts"),
    TickKind.BOOK: ("ts", "recv_ts", "side", "level"),
    TickKind.GAPS: ("ts", "recv_ts"),
}


def _kind(kind: TickKind | str) -> TickKind:
    try:
        return TickKind(kind)
    except ValueError:
        raise ConfigError(f"unknown tick table {kind!r}: use one of "
                          f"{', '.join(k.value for k in TickKind)}") from None


def _q(name: str) -> str:
    return quote(name, safe="")


@dataclass
class CompactResult:
    """What one compaction pass did: segments folded into parts, parts merged, rows written."""

    segments: int = 0
    parts_written: int = 0
    parts_merged: int = 0
    rows: int = 0
    duplicates_dropped: int = 0


@dataclass
class PruneResult:
    kind: TickKind
    partitions: int = 0
    rows: int = 0
    bytes: int = 0


class TickStore:
    """The tick tables of one lake (``<lake>/ticks``): layout, reads, compaction and pruning."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        # per log segment: (byte offset after the last complete message read, newest receipt so far)
        self._tails: dict[Path, tuple[int, int | None]] = {}

    def __repr__(self) -> str:
        return f"TickStore({str(self.root)!r})"

    # ------------------------------------------------------------------ layout
    def wal_dir(self, source: str) -> Path:
        return self.root / "_wal" / f"source={_q(source)}"

    def symbol_dir(self, kind: TickKind | str, source: str, symbol: str) -> Path:
        return self.root / _kind(kind).value / f"source={_q(source)}" / f"symbol={_q(symbol)}"

    def partition_dir(self, kind: TickKind | str, source: str, symbol: str, day: str) -> Path:
        return self.symbol_dir(kind, source, symbol) / f"date={day}"

    def segments(self, source: str, kind: TickKind | str) -> list[tuple[int, Path]]:
        """The log segments of `kind` for `source`, oldest first."""
        d = self.wal_dir(source) / _kind(kind).value
        out = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(d):
                m = _SEGMENT.match(entry.name)
                if m:
                    out.append((int(m.group(1)), Path(entry.path)))
        return sorted(out)

    def last_segment(self, source: str) -> int:
        """The highest segment id ever opened for `source` (0 when none): ids never repeat."""
        best = 0
        with contextlib.suppress(FileNotFoundError, ValueError):
            best = int((self.wal_dir(source) / "LAST").read_text().strip() or 0)
        for kind in TickKind:
            for seg, _ in self.segments(source, kind):
                best = max(best, seg)
        return best

    def latest_receipt(self, source: str, kind: TickKind | str = TickKind.TRADES) -> int | None:
        """The receipt time (ns) of the newest row of `kind` in `source`'s log, or None: how far a
        running collector has got (rows arrive in receipt order on one connection)."""
        k = _kind(kind)
        segments = self.segments(source, k)
        if len(self._tails) > 64:  # cursors of compacted segments
            live = {p for _s, p in segments}
            self._tails = {p: c for p, c in self._tails.items() if p in live}
        for _seg, path in reversed(segments):
            try:
                got = self._tail(path, k)
            except FileNotFoundError:
                continue  # compacted meanwhile: an older segment holds nothing newer
            if got is not None:
                return got
        return None

    def _tail(self, path: Path, kind: TickKind) -> int | None:
        """The newest receipt in a log segment, reading only the batches appended since the last
        call (a segment is append-only and never reused): a runner polls this every few ms while a
        segment may hold 30 s of a busy feed."""
        offset, best = self._tails.get(path, (0, None))
        with open(path, "rb") as fh:
            fh.seek(offset)
            try:
                if offset == 0:
                    pa.ipc.read_message(fh)  # the schema message
                    offset = fh.tell()
                while True:
                    batch = pa.ipc.read_record_batch(pa.ipc.read_message(fh), SCHEMAS[kind])
                    if batch.num_rows:
                        newest = int(pc.max(batch.column("recv_ts")).cast(pa.int64()).as_py())
                        best = newest if best is None else max(best, newest)
                    offset = fh.tell()
            except (EOFError, OSError, pa.ArrowInvalid):
                pass  # the end, or a batch still being written: read from here next time
        self._tails[path] = (offset, best)
        return best

    def series(self) -> pd.DataFrame:
        """One row per stored (kind, source, symbol), with its days on disk and rows in the log."""
        rows = []
        for kind in TickKind:
            base = self.root / kind.value
            for sdir in sorted(base.glob("source=*/symbol=*")) if base.is_dir() else []:
                days = sorted(p.name.split("=", 1)[1] for p in sdir.glob("date=*") if any(p.iterdir()))
                rows.append({"kind": kind.value, "source": unquote(sdir.parent.name.split("=", 1)[1]),
                             "symbol": unquote(sdir.name.split("=", 1)[1]),
                             "first_day": days[0] if days else None, "last_day": days[-1] if days else None,
                             "days": len(days)})
        return pd.DataFrame(rows, columns=["kind", "source", "symbol", "first_day", "last_day", "days"])

    # ------------------------------------------------------------------ reading
    def read(self, kind: TickKind | str, source: str, symbols: str | Sequence[str],
             start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> pd.DataFrame:
        """Rows of `kind` for `symbols` with ``start <= ts < end``, compacted and logged together,
        each event once, in time order (ts in UTC nanoseconds)."""
        k = _kind(kind)
        syms = [symbols] if isinstance(symbols, str) else list(dict.fromkeys(symbols))
        for _ in range(READ_ATTEMPTS):
            try:
                table = self._read_once(k, source, syms, start, end)
            except FileNotFoundError:
                continue  # a compaction or merge replaced what was listed: list again
            return table.to_pandas()
        raise DataError(f"the tick files of {source} kept changing during {READ_ATTEMPTS} reads: "
                        "retry in a moment")

    def _read_once(self, k: TickKind, source: str, syms: list[str], start: pd.Timestamp | None,
                   end: pd.Timestamp | None) -> pa.Table:
        # The log is listed before the parts: a segment compacted in between then shows up as a
        # part, or its file is gone when opened (and the read is retried); never as neither.
        segs = self.segments(source, k)
        parts: list[Path] = []
        covered: dict[str, list[tuple[int, int]]] = {}  # symbol|day -> part ranges
        for sym in syms:
            sdir = self.symbol_dir(k, source, sym)
            if not sdir.is_dir():
                continue
            for pdir in sorted(sdir.glob("date=*")):
                day = pdir.name.split("=", 1)[1]
                if start is not None and day < start.strftime("%Y-%m-%d"):
                    continue
                if end is not None and day > end.strftime("%Y-%m-%d"):
                    continue
                ranges = _part_ranges(pdir)
                covered[f"{sym}|{day}"] = list(ranges)
                parts.extend(_outermost(pdir, ranges))
        tables = []
        if parts:
            cond = None
            if start is not None:
                cond = pc.field("ts") >= pa.scalar(start.value, TS)
            if end is not None:
                upper = pc.field("ts") < pa.scalar(end.value, TS)
                cond = upper if cond is None else cond & upper
            tables.append(pq.read_table([str(p) for p in parts], schema=SCHEMAS[k], filters=cond))
        for seg, path in segs:
            t = read_segment(path, SCHEMAS[k])
            if t.num_rows == 0:
                continue
            t = t.filter(pc.is_in(t["symbol"], pa.array(syms)))
            if start is not None:
                t = t.filter(pc.greater_equal(t["ts"], pa.scalar(start.value, TS)))
            if end is not None:
                t = t.filter(pc.less(t["ts"], pa.scalar(end.value, TS)))
            if t.num_rows == 0:
                continue
            keys = pc.binary_join_element_wise(t["symbol"], pc.strftime(t["ts"], "%Y-%m-%d"), "|")
            done = [key for key, ranges in covered.items() if any(a <= seg <= b for a, b in ranges)]
            if done:
                t = t.filter(pc.invert(pc.is_in(keys, pa.array(done))))
            tables.append(t)
        if not tables:
            return SCHEMAS[k].empty_table()
        return _dedup(k, pa.concat_tables(tables))[0]

    def last(self, kind: TickKind | str, source: str, symbol: str) -> dict[str, object] | None:
        """The newest stored row of `symbol` (trades: the highest trade id), or None: where a
        restarted collector resumes. Reads only the last day on disk and the log."""
        k = _kind(kind)
        sdir = self.symbol_dir(k, source, symbol)
        days = sorted(p.name.split("=", 1)[1] for p in sdir.glob("date=*")) if sdir.is_dir() else []
        start = pd.Timestamp(days[-1], tz="UTC") if days else None
        df = self.read(k, source, symbol, start)
        if df.empty:
            return None
        at = int(df["trade_id"].to_numpy().argmax()) if k is TickKind.TRADES else len(df) - 1
        out: dict[str, object] = {str(c): v for c, v in df.iloc[at].to_dict().items()}
        for c in ("ts", "recv_ts"):
            out[c] = pd.Timestamp(cast(pd.Timestamp, out[c])).value
        return out

    # ------------------------------------------------------------------ compaction
    def writer_active(self, source: str) -> bool:
        """Whether a `TickWriter` (in any process) holds `source`'s log."""
        path = self.wal_dir(source) / ".writer.lock"
        if not path.exists():
            return False
        lock = FileLock(path, thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        lock.release()
        return False

    def compact(self, source: str, *, merge_all: bool = False, today: str | None = None) -> CompactResult:
        """Fold the log of `source` into Parquet parts and merge crowded partitions and those of
        past days (all of them with `merge_all`). A running collector's open segment is left to it.
        Safe to rerun after a crash at any point."""
        before = self.last_segment(source) if self.writer_active(source) else None
        return self._compact(source, before, merge_all=merge_all, today=today)

    def _compact(self, source: str, before: int | None, *, merge_all: bool = False,
                 today: str | None = None) -> CompactResult:
        """`compact` for the segments below `before` (all when None): the writer's own call."""
        res = CompactResult()
        wal = self.wal_dir(source)
        wal.mkdir(parents=True, exist_ok=True)
        today = today or pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
        with file_lock(wal / ".compact.lock"):
            touched: set[Path] = set()
            done: list[Path] = []
            for k in TickKind:
                segs = [(s, p) for s, p in self.segments(source, k) if before is None or s < before]
                if not segs:
                    continue
                a, b = segs[0][0], segs[-1][0]
                tables = [read_segment(p, SCHEMAS[k]) for _, p in segs]
                table = pa.concat_tables(tables)
                res.segments += len(segs)
                done.extend(p for _, p in segs)
                if table.num_rows == 0:
                    continue
                table, dropped = _dedup(k, table)
                res.duplicates_dropped += dropped
                # one stable sort by (symbol, day) keeps time order inside each partition, which is
                # then a contiguous slice (a filter per symbol was quadratic: 200 symbols, 200 passes)
                keyed = table.append_column("_day", pc.strftime(table["ts"], "%Y-%m-%d"))
                keyed = keyed.take(pc.sort_indices(keyed, sort_keys=[("symbol", "ascending"),
                                                                     ("_day", "ascending")]))
                spans = (keyed.select(["symbol", "_day"])
                         .append_column("_i", pa.array(np.arange(keyed.num_rows, dtype=np.int64)))
                         .group_by(["symbol", "_day"], use_threads=False)
                         .aggregate([("_i", "min"), ("_i", "max")]))
                cols = (spans[c].to_pylist() for c in ("symbol", "_day", "_i_min", "_i_max"))
                for sym, day, lo, hi in zip(*cols, strict=True):
                    chunk = keyed.slice(lo, hi - lo + 1).drop_columns(["_day"])
                    pdir = self.partition_dir(k, source, sym, day)
                    pdir.mkdir(parents=True, exist_ok=True)
                    _write_part(chunk, pdir / f"p-{a:010d}-{b:010d}.parquet")
                    touched.add(pdir)
                    res.parts_written += 1
                    res.rows += chunk.num_rows
            for p in done:  # every part is durable: the log can go
                p.unlink(missing_ok=True)
            for d in {p.parent for p in done}:
                fsync_dir(d)
            for k in TickKind:
                base = self.root / k.value / f"source={_q(source)}"
                pdirs = sorted(base.glob("symbol=*/date=*")) if base.is_dir() else []
                for pdir in pdirs:
                    ranges = _part_ranges(pdir)
                    day = pdir.name.split("=", 1)[1]
                    if len(ranges) > MERGE_PARTS or (len(ranges) > 1 and (day < today or merge_all)):
                        res.parts_merged += self._merge(k, pdir, ranges, res)
        return res

    def _merge(self, k: TickKind, pdir: Path, ranges: list[tuple[int, int]], res: CompactResult) -> int:
        files = _outermost(pdir, ranges)
        lo, hi = min(a for a, _ in ranges), max(b for _, b in ranges)
        table = pa.concat_tables([pq.read_table(f, schema=SCHEMAS[k]) for f in files])
        table, dropped = _dedup(k, table)
        res.duplicates_dropped += dropped
        target = pdir / f"p-{lo:010d}-{hi:010d}.parquet"
        _write_part(table, target)
        for a, b in ranges:  # the merged part covers them all: the rest are leftovers now
            f = pdir / f"p-{a:010d}-{b:010d}.parquet"
            if f != target:
                f.unlink(missing_ok=True)
        fsync_dir(pdir)
        return len(files)

    # ------------------------------------------------------------------ retention
    def prune(self, kind: TickKind | str, keep: pd.Timedelta, *, source: str | None = None,
              now: pd.Timestamp | None = None) -> PruneResult:
        """Delete the days of `kind` older than `keep` (whole UTC days strictly before
        ``now - keep``); the log is never pruned (it is compacted first)."""
        if str(kind) == "bars":
            raise ConfigError("bars are kept forever: prune a tick table (trades, quotes, book or gaps)")
        k = _kind(kind)
        if keep < pd.Timedelta(0):
            raise ConfigError(f"cannot keep a negative age of {k.value} ({keep}): give a duration "
                              "such as 30d")
        cutoff = ((now or pd.Timestamp.now(tz="UTC")) - keep).strftime("%Y-%m-%d")
        out = PruneResult(k)
        base = self.root / k.value
        pattern = f"source={_q(source)}/symbol=*/date=*" if source else "source=*/symbol=*/date=*"
        for pdir in sorted(base.glob(pattern)) if base.is_dir() else []:
            if pdir.name.split("=", 1)[1] >= cutoff:
                continue
            wal = self.wal_dir(unquote(pdir.parent.parent.name.split("=", 1)[1]))
            wal.mkdir(parents=True, exist_ok=True)
            with file_lock(wal / ".compact.lock"):
                for f in pdir.glob("*.parquet"):
                    out.bytes += f.stat().st_size
                    out.rows += pq.ParquetFile(f).metadata.num_rows
                    f.unlink()
                with contextlib.suppress(OSError):
                    pdir.rmdir()
            out.partitions += 1
        return out


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([hdwy])\s*$")
_AGE_UNITS = {"h": pd.Timedelta(hours=1), "d": pd.Timedelta(days=1), "w": pd.Timedelta(weeks=1),
              "y": pd.Timedelta(days=365)}


def parse_age(text: str) -> pd.Timedelta:
    """``30d``, ``12h``, ``8w`` or ``1y`` (365 days) as a Timedelta; one-line error otherwise."""
    m = _AGE.match(str(text))
    if not m:
        raise ConfigError(f"bad age {text!r}: write a number and a unit h, d, w or y, e.g. 30d or 1y")
    return float(m.group(1)) * _AGE_UNITS[m.group(2)]


def read_segment(path: Path, schema: pa.Schema) -> pa.Table:
    """Every complete batch of a log segment; a batch cut short by a crash (or still being
    written) is not there yet. A missing file raises FileNotFoundError."""
    batches = []
    with open(path, "rb") as fh:
        try:
            reader = pa.ipc.open_stream(fh)
        except (pa.ArrowInvalid, OSError):
            return schema.empty_table()  # the schema message itself was cut short
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError):
                break
    return pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()


def _part_ranges(pdir: Path) -> list[tuple[int, int]]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(pdir):
            m = _PART.match(entry.name)
            if m:
                out.append((int(m.group(1)), int(m.group(2))))
    return sorted(out)


def _outermost(pdir: Path, ranges: list[tuple[int, int]]) -> list[Path]:
    """The parts not inside another part's range (the rest are inputs of a finished merge)."""
    keep = [r for r in ranges if not any(o != r and o[0] <= r[0] and r[1] <= o[1] for o in ranges)]
    return [pdir / f"p-{a:010d}-{b:010d}.parquet" for a, b in keep]


def _write_part(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=262_144)


def _dedup(k: TickKind, table: pa.Table) -> tuple[pa.Table, int]:
    """`table` sorted in time order with each event once (the first received wins)."""
    if table.num_rows == 0:
        return table, 0
    order = [(c, "ascending") for c in _ORDER[k]]
    table = table.sort_by([("recv_ts", "ascending")]).sort_by(order)
    idx = pa.array(np.arange(table.num_rows, dtype=np.int64))
    keyed = table.select(list(_KEYS[k])).append_column("_i", idx)
    first = keyed.group_by(list(_KEYS[k]), use_threads=False).aggregate([("_i", "min")])
    if first.num_rows == table.num_rows:
        return table, 0
    keep = pc.sort_indices(first["_i_min"])
    rows = pc.take(first["_i_min"], keep)
    return table.take(rows), table.num_rows - first.num_rows


# ---------------------------------------------------------------------- the write path
Observer = Callable[[TickKind, list[int], int], None]  # (kind, recv_ns of each row, durable_ns)


@dataclass
class WriterStats:
    """Counters of a `TickWriter`, read by the collector's metrics and status."""

    rows: dict[str, int] = field(default_factory=dict)
    flushes: int = 0
    segments: int = 0
    overflows: int = 0
    pending: int = 0
    last_durable_ns: int = 0
    compactions: int = 0


COMPACT_NICE = 10  # the compaction thread's niceness (lower priority than the feed's threads)

class TickWriter:
    """Append ticks of one source to the lake's log, durable within one flush; roll and compact
    segments in the background. One writer per (lake, source): a second is refused.

    >>> with TickWriter(store, "binance") as w:                           # doctest: +SKIP
    ...     w.append(TickKind.TRADES, (ts_ns, recv_ns, "BTC/USDT", 1, 100.0, 0.5, "buy"))
    """

    def __init__(self, store: TickStore, source: str, *, segment_seconds: float = 30.0,
                 max_pending: int = 2_000_000, observer: Observer | None = None) -> None:
        if segment_seconds <= 0:
            raise ConfigError(f"segment_seconds must be positive, got {segment_seconds}")
        self.store, self.source = store, source
        self.segment_seconds = segment_seconds
        self.max_pending = max_pending
        self.observer = observer
        self.stats = WriterStats()
        self._cv = threading.Condition()
        self._pending: dict[TickKind, list[tuple[object, ...]]] = {k: [] for k in TickKind}
        self._npending = 0
        self._closing = False
        self._error: BaseException | None = None
        self._lock: FileLock | None = None
        self._seg = 0
        self._seg_opened = 0.0
        self._files: dict[TickKind, tuple[BinaryIO, pa.RecordBatchStreamWriter]] = {}
        self._flusher: threading.Thread | None = None
        self._compactor: threading.Thread | None = None
        self._compact_wanted = threading.Event()

    # -------------------------------------------------------------- life cycle
    def __enter__(self) -> TickWriter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Take the source's lock, fold what an earlier run left in the log, start the threads."""
        wal = self.store.wal_dir(self.source)
        try:
            wal.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot write ticks under {self.store.root}: {exc.strerror}; choose a "
                              "writable --data-dir (or WORKBENCH_DATA_DIR)") from None
        self._lock = FileLock(wal / ".writer.lock", thread_local=False)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            self._lock = None
            raise ConfigError(f"another collector is writing {self.source} ticks to {self.store.root}: "
                              "stop it first, or collect into another --data-dir") from None
        try:
            self.store._compact(self.source, None)  # what a crashed run left: durable, so it is kept
            self._new_segment()
        except BaseException:
            self._lock.release()
            self._lock = None
            raise
        self._flusher = threading.Thread(target=self._flush_loop, name=f"ticks-{self.source}", daemon=True)
        self._compactor = threading.Thread(target=self._compact_loop, name=f"compact-{self.source}",
                                           daemon=True)
        self._flusher.start()
        self._compactor.start()

    def close(self) -> None:
        """Flush what is buffered, close the segment and compact it; release the lock."""
        if self._lock is None:
            return
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._flusher is not None:
            self._flusher.join()
        self._compact_wanted.set()
        if self._compactor is not None:
            self._compactor.join()
        try:
            if self._error is None:
                self.store._compact(self.source, None)
        finally:
            self._lock.release()
            self._lock = None
        if self._error is not None:
            raise DataError(f"writing ticks failed: {self._error}") from None

    # -------------------------------------------------------------- appending
    def append(self, kind: TickKind, row: tuple[object, ...]) -> bool:
        """Queue one row (the columns of `kind`'s schema in order, times as UTC nanoseconds).
        False when the buffer is full: the caller must treat it as lost (a gap) and recover."""
        return self.extend(kind, (row,))

    def extend(self, kind: TickKind, rows: Iterable[tuple[object, ...]]) -> bool:
        """Queue several rows of one kind at once (see `append`)."""
        if self._error is not None:
            raise DataError(f"writing ticks failed: {self._error}")
        rows = list(rows)
        with self._cv:
            if self._npending + len(rows) > self.max_pending:
                self.stats.overflows += 1
                return False
            self._pending[kind].extend(rows)
            self._npending += len(rows)
            self.stats.pending = self._npending
            self._cv.notify()
        return True

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything appended so far is durable."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._npending and self._error is None:
                if not self._cv.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise DataError(f"ticks were not made durable within {timeout} s: the disk is "
                                    "too slow or full")
        if self._error is not None:
            raise DataError(f"writing ticks failed: {self._error}")

    # -------------------------------------------------------------- threads
    def _new_segment(self) -> None:
        self._seg = self.store.last_segment(self.source) + 1
        atomic_write(self.store.wal_dir(self.source) / "LAST", f"{self._seg}\n")
        self._seg_opened = time.monotonic()
        self.stats.segments += 1

    def _close_segment(self) -> None:
        for fh, writer in self._files.values():
            writer.close()
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        self._files.clear()

    def _writer(self, kind: TickKind) -> tuple[BinaryIO, pa.RecordBatchStreamWriter]:
        got = self._files.get(kind)
        if got is None:
            d = self.store.wal_dir(self.source) / kind.value
            d.mkdir(parents=True, exist_ok=True)
            fh = open(d / f"{self._seg:010d}.arrows", "wb")  # noqa: SIM115  # closed by _close_segment
            fsync_dir(d)
            got = (fh, pa.ipc.new_stream(fh, SCHEMAS[kind]))
            self._files[kind] = got
        return got

    def _flush_loop(self) -> None:
        try:
            while True:
                with self._cv:
                    while not self._npending and not self._closing:
                        wait = self.segment_seconds - (time.monotonic() - self._seg_opened)
                        if wait <= 0:
                            break
                        self._cv.wait(timeout=wait)
                    batch = self._pending
                    self._pending = {k: [] for k in TickKind}
                    closing = self._closing
                self._write(batch)
                with self._cv:
                    self._npending -= sum(len(v) for v in batch.values())
                    self.stats.pending = self._npending
                    self._cv.notify_all()
                if closing or time.monotonic() - self._seg_opened >= self.segment_seconds:
                    self._close_segment()
                    if closing:
                        return
                    self._new_segment()
                    self._compact_wanted.set()
        except BaseException as exc:  # surfaced to the caller by append/flush/close
            log.error("tick writer for %s stopped: %s", self.source, exc)
            with self._cv:
                self._error = exc
                self._cv.notify_all()

    def _write(self, batch: dict[TickKind, list[tuple[object, ...]]]) -> None:
        written = []
        for kind, rows in batch.items():
            if not rows:
                continue
            schema = SCHEMAS[kind]
            cols = list(zip(*rows, strict=True))
            arrays = [pa.array(col, type=f.type) for col, f in zip(cols, schema, strict=True)]
            fh, writer = self._writer(kind)
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            fh.flush()
            written.append((kind, rows, fh))
        for _, _, fh in written:
            os.fsync(fh.fileno())
        now = time.time_ns()
        self.stats.flushes += 1
        self.stats.last_durable_ns = now
        for kind, rows, _ in written:
            self.stats.rows[kind.value] = self.stats.rows.get(kind.value, 0) + len(rows)
            if self.observer is not None:
                self.observer(kind, [cast(int, r[1]) for r in rows], now)

    def _compact_loop(self) -> None:
        # In this process, not a worker: on the 2-core bench machine a worker process competed with
        # the feed for the same cores and made receipt-to-durable p99 worse (60 -> 141 ms). This
        # thread runs at a lower OS priority instead (Linux schedules threads one by one): when the
        # cores are busy, the socket reader and the flusher come first and compaction waits.
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), COMPACT_NICE)
        while True:
            self._compact_wanted.wait()
            self._compact_wanted.clear()
            with self._cv:
                closing = self._closing
                current = self._seg
            if closing:
                return
            try:
                self.store._compact(self.source, current)
                self.stats.compactions += 1
            except Exception as exc:  # the log keeps the rows; the next pass tries again
                log.warning("compacting %s ticks failed (kept in the log): %s", self.source, exc)
            # Arrow's allocator keeps what a compaction freed for reuse; a long-running collector
            # gives it back, so its memory stays flat instead of holding each segment's peak
            pa.default_memory_pool().release_unused()


__all__ = ["SCHEMAS", "CompactResult", "PruneResult", "TickKind", "TickStore", "TickWriter",
           "WriterStats", "parse_age", "read_segment"]
