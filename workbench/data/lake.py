"""The data lake: hive-partitioned zstd Parquet under `<data>/lake/bars/`, queried with DuckDB.

Layout: `bars/source=S/timeframe=T/symbol=SYM/year=Y/data.parquet`, one file per year holding one
row per timestamp, sorted. A write merges new bars into each touched year file (newer rows win),
writes the result to a hidden temporary file beside it, fsyncs it and renames it over the old one,
so a reader (or a writer killed at any point) only ever sees whole files. Each series keeps a
small `_coverage.json` (first/last ts, rows, gaps) that is rebuilt from the files whenever the files
changed behind its back, so a crash between data and catalog cannot leave the catalog lying.

Funding rates of perpetual futures live beside the bars, one series per (source, symbol), with the same
year files, merge, atomic replace and lock: `funding/source=S/symbol=SYM/year=Y/data.parquet` holding
`ts` (settlement time) and `rate` (per funding interval); see `workbench.data.funding`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from workbench.config import data_dir
from workbench.data.bars import BAR_COLUMNS, OPTIONAL_COLUMNS, bars_to_arrow, normalize_bars
from workbench.data.calendar import Calendar, absent, calendar_for_symbol
from workbench.data.funding import (
    FUNDING_COLUMNS,
    FundingSyncResult,
    empty_funding,
    expected_events,
    funding_summary,
    funding_to_arrow,
    normalize_funding,
)
from workbench.data.quality import QualityPolicy, QualityReport, apply_policy, check_bars, check_ticks
from workbench.data.sources import SOURCE_KINDS
from workbench.data.ticks import TickKind, TickStore
from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError, DataError, LakeCorruptError, WorkbenchError, did_you_mean
from workbench.files import atomic_path, atomic_write, file_lock, fsync_dir, os_reason, probe_write

if TYPE_CHECKING:
    from workbench.data.sources.base import Source

log = logging.getLogger(__name__)

DATA_FILE = "data.parquet"
COVERAGE_FILE = "_coverage.json"
MAX_GAPS_KEPT = 200
ROW_GROUP_SIZE = 65_536
SYNC_BATCH_ROWS = 250_000
READ_ATTEMPTS = 20
_FLOATS = ("open", "high", "low", "close", "volume", "trades", "vwap")

TimeLike = str | pd.Timestamp | None
# progress(series label, rows just received, expected rows of the whole sync of that series)
Progress = Callable[[str, int, int], None]


class Layout(StrEnum):
    """Shape of a multi-symbol read: long (a `symbol` column) or wide (columns field x symbol)."""

    LONG = "long"
    WIDE = "wide"


@dataclass(frozen=True)
class SeriesKey:
    """One stored series: (source, symbol, timeframe)."""

    source: str
    symbol: str
    timeframe: str

    def __str__(self) -> str:
        return f"{self.source}:{self.symbol}:{self.timeframe}"


@dataclass
class Coverage:
    """What the lake holds for one series; powers incremental syncs and `data ls`."""

    source: str
    symbol: str
    timeframe: str
    calendar: str
    rows: int
    first_ts: str | None
    last_ts: str | None
    missing_bars: int
    gaps: list[tuple[str, str, int]] = field(default_factory=list)
    bytes: int = 0
    files: dict[str, list[int]] = field(default_factory=dict)

    @property
    def first(self) -> pd.Timestamp | None:
        return pd.Timestamp(self.first_ts) if self.first_ts else None

    @property
    def last(self) -> pd.Timestamp | None:
        return pd.Timestamp(self.last_ts) if self.last_ts else None


@dataclass
class WriteResult:
    """What one `write_bars` call did."""

    key: SeriesKey
    rows_in: int
    rows_added: int
    rows_replaced: int
    report: QualityReport


@dataclass
class SyncResult:
    """What a sync did for one symbol, including gaps found in the synced range afterwards."""

    key: SeriesKey
    requested: list[tuple[str, str]]
    rows_fetched: int = 0
    rows_added: int = 0
    rows_replaced: int = 0
    missing_in_range: int = 0
    report: QualityReport | None = None


_NUMERIC_DATE = re.compile(r"\s*(\d{1,2})[/.-](\d{1,2})[/.-](\d{2}|\d{4})\b")


def _ts(value: TimeLike, what: str) -> pd.Timestamp | None:
    if value is None or value == "":
        return None
    m = _NUMERIC_DATE.match(value) if isinstance(value, str) else None
    if m and int(m.group(1)) <= 12 and int(m.group(2)) <= 12 and m.group(1) != m.group(2):
        year = m.group(3) if len(m.group(3)) == 4 else f"20{m.group(3)}"
        a, b = int(m.group(1)), int(m.group(2))
        raise ConfigError(f"{what} {value!r} is ambiguous (day/month or month/day?): write it as ISO "
                          f"year-month-day, e.g. {year}-{b:02d}-{a:02d} or {year}-{a:02d}-{b:02d}")
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ConfigError(f"cannot read {what} {value!r} as a time: use e.g. 2024-01-31 or "
                          "2024-01-31T12:00Z") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def check_range(start: pd.Timestamp | None, end: pd.Timestamp | None) -> None:
    """Refuse an empty or inverted time range with a message that says what to change."""
    if start is not None and end is not None and start >= end:
        raise ConfigError(
            f"start {start} is not before end {end}: pass a start earlier than the end"
        )


def _us(ts: pd.Timestamp) -> int:
    return int(ts.value // 1000)


class Lake:
    """A Parquet bar store queried with DuckDB. `Lake()` uses ./data or $WORKBENCH_DATA_DIR.

    >>> lake = Lake()                                              # doctest: +SKIP
    >>> lake.read_bars("synthetic", "BTC/USDT", "1h", "2025-03-01", "2025-04-01")  # doctest: +SKIP
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = data_dir(root)
        self.bars_dir = self.root / "lake" / "bars"
        self.ticks = TickStore(self.root / "lake" / "ticks")
        self.funding_dir = self.root / "lake" / "funding"
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Lake({str(self.root)!r})"

    def check_writable(self) -> None:
        """Fail at once, naming the fix, when the lake's folder cannot be created or written."""
        try:
            self.bars_dir.mkdir(parents=True, exist_ok=True)
            probe_write(self.bars_dir)
        except OSError as exc:
            raise ConfigError(f"cannot write the lake at {self.root}: {os_reason(exc)}; choose a writable "
                              "--data-dir (or WORKBENCH_DATA_DIR)") from None

    # ------------------------------------------------------------------ paths and keys
    def series_dir(self, source: str, symbol: str, timeframe: str | Timeframe) -> Path:
        tf = Timeframe.parse(timeframe).name
        return (
            self.bars_dir / f"source={quote(source, safe='')}" / f"timeframe={tf}"
            / f"symbol={quote(symbol, safe='')}"
        )

    def series(self) -> list[SeriesKey]:
        """Every series that has at least one data file."""
        out: list[SeriesKey] = []
        if not self.bars_dir.is_dir():
            return out
        for d in sorted(self.bars_dir.glob("source=*/timeframe=*/symbol=*")):
            if any(d.glob(f"year=*/{DATA_FILE}")):
                out.append(SeriesKey(
                    unquote(d.parent.parent.name.split("=", 1)[1]),
                    unquote(d.name.split("=", 1)[1]),
                    d.parent.name.split("=", 1)[1],
                ))
        return out

    def _files(self, sdir: Path, start: pd.Timestamp | None = None,
               end: pd.Timestamp | None = None) -> list[Path]:
        files = []
        for f in sorted(sdir.glob(f"year=*/{DATA_FILE}")):
            year = int(f.parent.name.split("=", 1)[1])
            if start is not None and year < start.year:
                continue
            if end is not None and year > end.year:
                continue
            files.append(f)
        return files

    @contextlib.contextmanager
    def _lock(self, sdir: Path) -> Iterator[None]:
        """Serialise writers of one series across processes (readers never wait)."""
        sdir.mkdir(parents=True, exist_ok=True)
        with file_lock(sdir / ".lock"):
            yield

    def _con(self) -> duckdb.DuckDBPyConnection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = duckdb.connect()
            con.execute("SET TimeZone = 'UTC'")
            self._local.con = con
        return con

    # ------------------------------------------------------------------ writing
    def write_bars(
        self,
        source: str,
        symbol: str,
        timeframe: str | Timeframe,
        bars: pd.DataFrame,
        *,
        policy: QualityPolicy | None = None,
        calendar: Calendar | None = None,
    ) -> WriteResult:
        """Validate `bars` and merge them into the series, idempotently and atomically.

        Rows whose timestamp is already stored are replaced (newer data wins); a rejected batch
        raises DataError before anything on disk changes.
        """
        tf = Timeframe.parse(timeframe)
        _check_name(source, "source")
        _check_name(symbol, "symbol")
        key = SeriesKey(source, symbol, tf.name)
        cal = calendar or calendar_for_symbol(symbol)
        frame = normalize_bars(bars, what=f"bars for {key}")
        clean, report = apply_policy(frame, tf, cal, label=str(key), policy=policy)
        result = WriteResult(key, len(frame), 0, 0, report)
        if clean.empty:
            return result
        table = bars_to_arrow(clean)
        ts = np.asarray(table.column("ts").cast(pa.int64()).to_numpy())
        years = pd.to_datetime(ts, unit="us").year.to_numpy()
        sdir = self.series_dir(source, symbol, tf)
        with self._lock(sdir):
            _clean_temp_files(sdir)
            # read every year's timestamps first: a damaged series is refused before anything
            # changes, and the coverage refresh below reuses them instead of reading them again
            stored = {f: _read_ts(f) for f in self._files(sdir)}
            bounds = np.flatnonzero(np.diff(years)) + 1
            for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(years)], strict=True):
                path, merged_ts, added, replaced = self._merge_year(
                    sdir, int(years[lo]), table.slice(lo, hi - lo))
                stored[path] = merged_ts
                result.rows_added += added
                result.rows_replaced += replaced
            self._refresh_coverage(key, cal, stored)
        log.debug("wrote %s: +%d rows, %d replaced", key, result.rows_added, result.rows_replaced)
        return result

    def _merge_year(self, sdir: Path, year: int, new: pa.Table
                    ) -> tuple[Path, np.ndarray, int, int]:
        """Merge `new` into one year file; returns its path, merged timestamps, added, replaced."""
        ydir = sdir / f"year={year}"
        ydir.mkdir(parents=True, exist_ok=True)
        path = ydir / DATA_FILE
        if path.exists():
            old = _read_file(path)
            new, old = _align_schemas(new, old)
            old_ts = np.asarray(old.column("ts").cast(pa.int64()).to_numpy())
            new_ts = np.asarray(new.column("ts").cast(pa.int64()).to_numpy())
            pos = np.searchsorted(new_ts, old_ts)
            pos_c = np.minimum(pos, len(new_ts) - 1)
            overlap = new_ts[pos_c] == old_ts
            replaced = int(overlap.sum())
            kept = old.filter(pa.array(~overlap)) if replaced else old
            merged = pa.concat_tables([kept, new])
            if len(kept) and len(new) and old_ts[~overlap].max(initial=-(2**62)) > new_ts[0]:
                order = np.argsort(
                    np.asarray(merged.column("ts").cast(pa.int64()).to_numpy()), kind="stable"
                )
                merged = merged.take(pa.array(order))
            added = len(merged) - len(old)
        else:
            merged, added, replaced = new, len(new), 0
        _write_parquet_atomic(merged, path)
        return path, np.asarray(merged.column("ts").cast(pa.int64())), added, replaced

    # ------------------------------------------------------------------ catalog
    def coverage(
        self,
        source: str | None = None,
        symbol: str | None = None,
        timeframe: str | None = None,
    ) -> list[Coverage]:
        """Coverage of every matching series, rebuilt from the files where they changed.

        A series with a damaged file is left out with a warning naming the file (see `damaged`),
        so one bad file never hides the rest of the lake.
        """
        out, bad = self._scan(source, symbol, timeframe)
        for exc in bad.values():
            log.warning("%s", exc)
        return out

    def damaged(self, source: str | None = None, symbol: str | None = None,
                timeframe: str | None = None) -> dict[SeriesKey, LakeCorruptError]:
        """Series that have an unreadable file, each with the error naming it and the fix."""
        return self._scan(source, symbol, timeframe)[1]

    def _scan(self, source: str | None, symbol: str | None, timeframe: str | None
              ) -> tuple[list[Coverage], dict[SeriesKey, LakeCorruptError]]:
        out: list[Coverage] = []
        bad: dict[SeriesKey, LakeCorruptError] = {}
        tf = Timeframe.parse(timeframe).name if timeframe else None
        for key in self.series():
            if (source and key.source != source) or (symbol and key.symbol != symbol) or (
                tf and key.timeframe != tf
            ):
                continue
            try:
                cov = self.series_coverage(key.source, key.symbol, key.timeframe)
            except LakeCorruptError as exc:
                bad[key] = exc
                continue
            if cov is not None:  # None: its files went away since `series()` listed it
                out.append(cov)
        return out, bad

    def quarantine(self, source: str, symbol: str, timeframe: str | Timeframe) -> list[Path]:
        """Move the series' unreadable files aside (kept as ``*.corrupt-<time>``); returns their paths.

        The years they held become missing, so the next sync of the range fetches them again.
        """
        sdir = self.series_dir(source, symbol, timeframe)
        moved = []
        with self._lock(sdir):
            for f in self._files(sdir):
                try:
                    _read_file(f)
                except LakeCorruptError:
                    aside = f.with_name(f"{f.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
                    f.rename(aside)
                    fsync_dir(f.parent)
                    log.warning("moved the unreadable lake file %s aside to %s", f, aside.name)
                    moved.append(aside)
        return moved

    def coverage_frame(self, **filters: str | None) -> pd.DataFrame:
        """`coverage()` as a table, one row per series (what `workbench data ls` prints)."""
        rows = [
            {
                "source": c.source, "symbol": c.symbol, "timeframe": c.timeframe,
                "first": c.first, "last": c.last, "rows": c.rows,
                "missing_bars": c.missing_bars, "gaps": len(c.gaps), "mb": c.bytes / 1e6,
            }
            for c in self.coverage(**filters)
        ]
        cols = ["source", "symbol", "timeframe", "first", "last", "rows", "missing_bars", "gaps",
                "mb"]
        return pd.DataFrame(rows, columns=cols)

    def series_coverage(self, source: str, symbol: str, timeframe: str | Timeframe
                        ) -> Coverage | None:
        """Coverage of one series, or None when nothing is stored."""
        tf = Timeframe.parse(timeframe)
        sdir = self.series_dir(source, symbol, tf)
        files = self._files(sdir)
        if not files:
            return None
        cov_path = sdir / COVERAGE_FILE
        cal = calendar_for_symbol(symbol)
        if cov_path.exists():
            try:
                raw = json.loads(cov_path.read_text())
                cov = Coverage(**{**raw, "gaps": [tuple(g) for g in raw.get("gaps", [])]})
                if cov.files == _signature(files):
                    return cov
                cal = Calendar(cov.calendar)  # stale: rebuild with the calendar it was written with
            except (ValueError, TypeError, KeyError):
                log.warning("rebuilding unreadable coverage file %s", cov_path)
        key = SeriesKey(source, symbol, tf.name)
        with self._lock(sdir):
            return self._refresh_coverage(key, cal)

    def _recorded_first(self, key: SeriesKey) -> pd.Timestamp | None:
        """The first bar the series' coverage file last recorded (None if it has none)."""
        try:
            sdir = self.series_dir(key.source, key.symbol, key.timeframe)
            raw = json.loads((sdir / COVERAGE_FILE).read_text())
            return pd.Timestamp(raw["first_ts"]) if raw.get("first_ts") else None
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def _refresh_coverage(self, key: SeriesKey, cal: Calendar,
                          known: dict[Path, np.ndarray] | None = None) -> Coverage:
        """Recompute and store a series' coverage; `known` holds timestamps already read."""
        tf = Timeframe.parse(key.timeframe)
        sdir = self.series_dir(key.source, key.symbol, tf)
        files = self._files(sdir)
        known = known or {}
        parts = [known[f] if f in known else _read_ts(f) for f in files]
        ts = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        gaps, missing = _gaps(ts, tf, cal)
        cov = Coverage(
            source=key.source, symbol=key.symbol, timeframe=tf.name, calendar=cal.code,
            rows=len(ts),
            first_ts=str(pd.Timestamp(int(ts[0]), unit="us", tz="UTC")) if len(ts) else None,
            last_ts=str(pd.Timestamp(int(ts[-1]), unit="us", tz="UTC")) if len(ts) else None,
            missing_bars=missing, gaps=gaps[:MAX_GAPS_KEPT],
            bytes=sum(f.stat().st_size for f in files), files=_signature(files),
        )
        atomic_write(sdir / COVERAGE_FILE, json.dumps(asdict(cov), indent=1).encode())
        return cov

    # ------------------------------------------------------------------ reading
    def read_bars(
        self,
        source: str,
        symbols: str | Sequence[str],
        timeframe: str | Timeframe,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        layout: Layout | str = Layout.LONG,
        include_partial: bool = False,
    ) -> pd.DataFrame:
        """Bars in [start, end) for one symbol (a bar frame) or several (long or wide frame).

        A timeframe that is not stored is resampled in SQL from the coarsest stored one that
        divides it; the still-forming last bucket is left out unless `include_partial`.
        """
        tf = Timeframe.parse(timeframe)
        t0, t1 = _ts(start, "start"), _ts(end, "end")
        check_range(t0, t1)
        layout = Layout(layout)
        single = isinstance(symbols, str)
        syms = [symbols] if isinstance(symbols, str) else list(dict.fromkeys(symbols))
        if not syms:
            raise ConfigError("no symbols given: name at least one symbol")
        parts = []
        for sym in syms:
            parts.append(self._read_one(source, sym, tf, t0, t1, include_partial))
        if single:
            return parts[0]
        long = pd.concat(
            [p.assign(symbol=s) for p, s in zip(parts, syms, strict=True)], ignore_index=True
        )
        long = long[["symbol", *[c for c in long.columns if c != "symbol"]]]
        if layout is Layout.LONG:
            return long
        wide = long.pivot(index="ts", columns="symbol")
        wide = wide.reindex(columns=pd.MultiIndex.from_product(
            [[c for c in long.columns if c not in ("symbol", "ts")], syms]))
        wide.columns.names = ["field", "symbol"]
        return wide

    def read_recent(self, source: str, symbols: Sequence[str], timeframe: str | Timeframe,
                    start: TimeLike) -> dict[str, dict[str, np.ndarray]]:
        """Bars from `start` on of several symbols as numpy columns (``ts`` in int64 microseconds).

        The paper runner's incremental read: one scan of the current files of every symbol stored
        at `timeframe` instead of one query (and one DataFrame) per symbol. Symbols read by
        resampling, or a scan that meets a file being replaced, fall back to `read_bars`.
        """
        tf = Timeframe.parse(timeframe)
        t0 = _ts(start, "start")
        out: dict[str, dict[str, np.ndarray]] = {}
        files: list[Path] = []
        owner: list[str] = []
        rest = []
        ticked: list[str] = []
        for sym in dict.fromkeys(symbols):
            sdir = self.series_dir(source, sym, tf)
            found = self._files(sdir, t0, None)
            if found:
                files.extend(found)
                owner.extend([sym] * len(found))
            elif self.stored_timeframe(source, sym, tf) is not None:
                rest.append(sym)  # stored finer: a resampled read
            elif self._has_trades(source, sym):
                ticked.append(sym)  # built from recorded trades: one read for all of them below
            else:
                out[sym] = {}
        if files:
            before = _identity(files)
            sql = (f"SELECT *, epoch_us(ts) AS ts_us FROM read_parquet({_file_list(files)}, "
                   "hive_partitioning=false, union_by_name=true, filename=true)"
                   + (" WHERE ts >= ?" if t0 is not None else "") + " ORDER BY filename, ts")
            try:
                cols = self._con().execute(sql, [t0.to_pydatetime()] if t0 is not None else []).fetchnumpy()
                steady = _identity(files) == before
            except duckdb.Error:
                steady = False
            if steady:
                index = {str(f): k for k, f in enumerate(files)}
                which = np.asarray([index[str(f)] for f in cols["filename"]], dtype=np.int64)
                # rows grouped by our file order (the query's filename order need not be ours)
                order = np.argsort(which, kind="stable")
                bounds = np.searchsorted(which[order], np.arange(len(files) + 1))
                names = [c for c in cols if c not in ("filename", "ts", "ts_us")]
                for k, sym in enumerate(owner):
                    rows = order[int(bounds[k]):int(bounds[k + 1])]
                    part = {"ts": np.asarray(cols["ts_us"][rows], dtype=np.int64),
                            **{c: np.asarray(cols[c][rows], dtype=np.float64) for c in names}}
                    if sym in out and len(out[sym]):
                        part = {c: np.concatenate([out[sym][c], part[c]]) for c in part}
                    out[sym] = part
            else:
                rest.extend(dict.fromkeys(owner))
        if ticked:
            q0 = tf.floor(t0) if t0 is not None else None
            trades = self.ticks.read(TickKind.TRADES, source, ticked, q0)
            bars = self._bars_of_trades(trades, tf)
            bars = bars[bars["ts"] + tf.delta <= pd.Timestamp.now(tz="UTC")]  # closed buckets only
            if t0 is not None:
                bars = bars[bars["ts"] >= t0]
            # split by symbol once (a mask per symbol is quadratic: 100 symbols, 100 passes)
            unsorted = bars["symbol"].to_numpy(dtype=object)
            order = np.argsort(unsorted, kind="stable")
            by_symbol = unsorted[order]
            ts_us = pd.DatetimeIndex(bars["ts"]).as_unit("us").asi8[order]
            values = {c: bars[c].to_numpy(dtype=np.float64)[order] for c in bars.columns
                      if c not in ("ts", "symbol")}
            for sym in ticked:
                lo, hi = np.searchsorted(by_symbol, sym, "left"), np.searchsorted(by_symbol, sym, "right")
                out[sym] = {"ts": ts_us[lo:hi], **{c: v[lo:hi] for c, v in values.items()}}
        for sym in rest:
            df = self.read_bars(source, sym, tf, t0, None)
            out[sym] = {"ts": pd.DatetimeIndex(df["ts"]).as_unit("us").asi8,
                        **{c: df[c].to_numpy(dtype=np.float64) for c in df.columns if c != "ts"}}
        return out

    def stored_timeframe(self, source: str, symbol: str, timeframe: str | Timeframe) -> Timeframe | None:
        """The stored timeframe reads of `timeframe` come from (itself or a finer one), or None."""
        try:
            return self._stored_timeframe(source, symbol, Timeframe.parse(timeframe))
        except DataError:
            return None

    def _stored_timeframe(self, source: str, symbol: str, tf: Timeframe) -> Timeframe:
        if self._files(self.series_dir(source, symbol, tf)):
            return tf
        stored = []
        base = self.series_dir(source, symbol, tf).parent.parent
        for d in base.glob("timeframe=*"):
            if self._files(d / self.series_dir(source, symbol, tf).name):
                stored.append(Timeframe.parse(d.name.split("=", 1)[1]))
        usable = [s for s in stored if s.divides(tf)]
        if usable:
            return max(usable)
        raise self._unknown_series(source, symbol, tf, stored)

    def _unknown_series(self, source: str, symbol: str, tf: Timeframe,
                        stored: list[Timeframe]) -> DataError:
        """The most helpful error for a read of something the lake does not hold."""
        keys = self.series()
        sources = sorted({k.source for k in keys})
        if source not in sources:
            hint = did_you_mean(source, sources)
            have = f"the lake has {', '.join(sources)}" if sources else "the lake is empty"
            return DataError(f"no data for source {source!r}{hint}: {have}; "
                             "run `workbench data demo` or `workbench data sync` first")
        symbols = sorted({k.symbol for k in keys if k.source == source})
        if symbol not in symbols:
            return DataError(
                f"no data for symbol {symbol!r} in source {source!r}"
                f"{did_you_mean(symbol, symbols)}: it has {', '.join(symbols[:12])}"
                f"{'...' if len(symbols) > 12 else ''}; sync it first"
            )
        have = ", ".join(s.name for s in sorted(stored)) or "nothing"
        return DataError(
            f"no {tf.name} bars for {source}:{symbol} and none can be resampled from what is "
            f"stored ({have}): pick a timeframe that is a multiple of a stored one, or sync {tf.name}"
        )

    def _read_one(self, source: str, symbol: str, tf: Timeframe, t0: pd.Timestamp | None,
                  t1: pd.Timestamp | None, include_partial: bool) -> pd.DataFrame:
        try:
            base_tf = self._stored_timeframe(source, symbol, tf)
        except DataError:
            if self._has_trades(source, symbol):  # no bar series, but a collector recorded its trades
                return self._tick_bars(source, symbol, tf, t0, t1, include_partial)
            raise
        sdir = self.series_dir(source, symbol, base_tf)
        if base_tf == tf:
            files = self._files(sdir, t0, t1)
            return self._query(files, _select_plain(files), t0, t1)
        # source rows stop at `end`: a bucket still open at `end` is partial, like the last one
        q0 = tf.floor(t0) if t0 is not None else None
        files = self._files(sdir, q0, t1)
        out = self._query(files, _select_resampled(files, tf), q0, t1)
        if out.empty or include_partial:
            return _trim(out, t0, t1)
        if t1 is not None and out["ts"].iloc[-1] + tf.delta > t1:
            out = out.iloc[:-1]
            if out.empty:
                return _trim(out, t0, t1)
        cov = self.series_coverage(source, symbol, base_tf)
        assert cov is not None and cov.first is not None and cov.last is not None  # `out` has rows
        cal = Calendar(cov.calendar)
        last_bucket = out["ts"].iloc[-1]
        nxt = cal.next_expected(cov.last, base_tf)
        drop_last = nxt is not None and nxt < last_bucket + tf.delta
        first_bucket = out["ts"].iloc[0]
        first_expected = cal.expected(first_bucket, first_bucket + tf.delta, base_tf)
        drop_first = len(first_expected) and cov.first > pd.Timestamp(
            int(first_expected[0]), unit="us", tz="UTC")
        out = out.iloc[int(bool(drop_first)): len(out) - int(drop_last)]
        return _trim(out.reset_index(drop=True), t0, t1)

    def _query(self, files: list[Path], select: str, t0: pd.Timestamp | None,
               t1: pd.Timestamp | None) -> pd.DataFrame:
        if not files:
            return pd.DataFrame({c: pd.Series(dtype="datetime64[us, UTC]" if c == "ts" else
                                              "float64") for c in BAR_COLUMNS})
        where, params = [], []
        if t0 is not None:
            where.append("ts >= ?")
            params.append(t0.to_pydatetime())
        if t1 is not None:
            where.append("ts < ?")
            params.append(t1.to_pydatetime())
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        sql = select.format(where=cond)
        # DuckDB opens a file more than once per query; a writer renaming a new version in
        # between yields an error or a mix of two versions. Retry until the files held still.
        for _ in range(READ_ATTEMPTS):
            before = _identity(files)
            try:
                with warnings.catch_warnings():
                    # duckdb 2.0's pandas conversion calls a pandas 3.1-deprecated keyword
                    warnings.filterwarnings("ignore", message=".*inplace keyword.*")
                    df = self._con().execute(sql, params).df()
            except duckdb.Error as exc:
                if _identity(files) != before:
                    continue
                bad = _find_corrupt(files)
                if bad is not None:
                    raise _corrupt(bad, type(exc).__name__) from None
                raise
            if _identity(files) == before:
                return _utc(df)
        raise DataError(f"the lake files {files[0].parent.parent} kept changing during "
                        f"{READ_ATTEMPTS} reads: retry when the running sync has finished")

    def fingerprint(
        self,
        source: str,
        symbols: str | Sequence[str],
        timeframe: str | Timeframe,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        funding: bool = False,
    ) -> str:
        """Content hash of a slice (sha256 over symbols, timestamps and values), for run records.

        With `funding=True` the symbols' funding rates in [start, end) are hashed too (after the
        bars, so a bars-only fingerprint is what it always was); a symbol without stored funding
        then raises the `read_funding` error.
        """
        syms = [symbols] if isinstance(symbols, str) else list(symbols)
        h = hashlib.sha256()
        h.update(f"{source}|{Timeframe.parse(timeframe).name}".encode())
        for sym in sorted(syms):
            bars = self.read_bars(source, sym, timeframe, start, end)
            h.update(b"\x00" + sym.encode())
            h.update(pd.DatetimeIndex(bars["ts"]).as_unit("us").asi8.tobytes())
            for c in [c for c in (*BAR_COLUMNS[1:], *OPTIONAL_COLUMNS) if c in bars.columns]:
                h.update(c.encode() + np.ascontiguousarray(bars[c].to_numpy("float64")).tobytes())
        if funding:
            for sym in sorted(syms):
                _hash_funding(h, sym, self.read_funding(source, sym, start, end))
        return "sha256:" + h.hexdigest()

    # ------------------------------------------------------------------ funding rates
    def funding_series_dir(self, source: str, symbol: str) -> Path:
        """Folder of one funding series: ``funding/source=S/symbol=SYM``."""
        return self.funding_dir / f"source={quote(source, safe='')}" / f"symbol={quote(symbol, safe='')}"

    def funding_series(self) -> list[tuple[str, str]]:
        """Every (source, symbol) with stored funding rates."""
        if not self.funding_dir.is_dir():
            return []
        return [(unquote(d.parent.name.split("=", 1)[1]), unquote(d.name.split("=", 1)[1]))
                for d in sorted(self.funding_dir.glob("source=*/symbol=*"))
                if any(d.glob(f"year=*/{DATA_FILE}"))]

    def has_funding(self, source: str, symbol: str) -> bool:
        """Whether any funding rate of (source, symbol) is stored."""
        return bool(self._files(self.funding_series_dir(source, symbol)))

    def write_funding(self, source: str, symbol: str, df: pd.DataFrame) -> int:
        """Merge funding events (`ts` tz-aware, `rate` per funding interval) into the series,
        idempotently and atomically; returns the rows added.

        An event whose `ts` is already stored is replaced (a venue's later revision wins), so
        writing the same frame twice adds nothing; a malformed frame raises DataError before
        anything on disk changes.
        """
        _check_name(source, "source")
        _check_name(symbol, "symbol")
        frame = normalize_funding(df, what=f"funding rates for {source}:{symbol}")
        if frame.empty:
            return 0
        table = funding_to_arrow(frame)
        ts = np.asarray(table.column("ts").cast(pa.int64()).to_numpy())
        years = pd.to_datetime(ts, unit="us").year.to_numpy()
        fdir = self.funding_series_dir(source, symbol)
        added = 0
        with self._lock(fdir):
            _clean_temp_files(fdir)
            for f in self._files(fdir):  # a damaged series is refused before anything changes
                _read_ts(f)
            bounds = np.flatnonzero(np.diff(years)) + 1
            for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(years)], strict=True):
                _, _, n, _ = self._merge_year(fdir, int(years[lo]), table.slice(lo, hi - lo))
                added += n
        log.debug("wrote funding %s:%s: +%d rows", source, symbol, added)
        return added

    def read_funding(self, source: str, symbol: str, start: TimeLike = None,
                     end: TimeLike = None) -> pd.DataFrame:
        """Funding events in [start, end): `ts` (datetime64[ns, UTC], settlement time) and `rate`
        (float64, per funding interval as the venue publishes it), sorted, one row per `ts`.

        Raises DataError naming the command that fills it when nothing is stored for the symbol.
        """
        t0, t1 = _ts(start, "start"), _ts(end, "end")
        check_range(t0, t1)
        fdir = self.funding_series_dir(source, symbol)
        if not self._files(fdir):
            raise self._no_funding(source, symbol, t0)
        files = self._files(fdir, t0, t1)
        if not files:
            return empty_funding()
        table = pa.concat_tables([_read_file(f, columns=list(FUNDING_COLUMNS)) for f in files])
        ts = pd.DatetimeIndex(np.asarray(table.column("ts").cast(pa.int64())).astype("datetime64[us]"),
                              tz="UTC").as_unit("ns")
        out = pd.DataFrame({"ts": ts, "rate": np.asarray(table.column("rate"), dtype=np.float64)})
        return _trim(out, t0, t1)

    def funding_frame(self, source: str | None = None, symbol: str | None = None) -> pd.DataFrame:
        """One row per stored funding series: rows, first/last settlement, mean rate per interval and
        annualised (what `workbench data ls` prints under the bars)."""
        rows = []
        for src, sym in self.funding_series():
            if (source and src != source) or (symbol and sym != symbol):
                continue
            try:
                stats = funding_summary(self.read_funding(src, sym))
            except LakeCorruptError as exc:
                log.warning("%s", exc)
                continue
            rows.append({"source": src, "symbol": sym, **stats})
        cols = ["source", "symbol", "rows", "first", "last", "mean_rate", "mean_annualized"]
        return pd.DataFrame(rows, columns=cols)

    def _no_funding(self, source: str, symbol: str, start: pd.Timestamp | None) -> DataError:
        stored = sorted({sym for src, sym in self.funding_series() if src == source})
        have = (f"; {source} has funding for {', '.join(stored[:8])}{'...' if len(stored) > 8 else ''}"
                if stored else "")
        since = f"{start:%Y-%m-%d}" if start is not None else "2025-01-01"
        return DataError(
            f"no funding rates stored for {source}:{symbol}{did_you_mean(symbol, stored)}{have}: fill "
            f"them with `workbench data funding --source {_source_spec(source)} --symbols {symbol} "
            f"--start {since}`")

    def sync_funding(
        self,
        source: Source,
        symbols: str | Sequence[str],
        start: TimeLike = None,
        end: TimeLike = None,
        progress: Progress | None = None,
    ) -> list[FundingSyncResult]:
        """Fetch the funding events the lake lacks for each perpetual and store them; one result per
        symbol.

        Incremental: only events after the last stored one are asked for (and, when `start` lies
        before the first stored event, those before it). `end` defaults to now. Every symbol is
        checked first (a spot symbol, or a source without funding, fails before any fetch); events
        that arrived before a source failed are kept, so the next sync resumes after them.
        """
        syms = [symbols] if isinstance(symbols, str) else list(symbols)
        if not syms:
            raise ConfigError("no symbols given: name at least one perpetual, e.g. BTC/USDT:USDT")
        t0, t1 = _ts(start, "start"), _ts(end, "end")
        if t1 is None:
            t1 = pd.Timestamp.now(tz="UTC")
        check_range(t0, t1)
        syms = list(dict.fromkeys(source.funding_symbol(s) for s in syms))
        self.check_writable()
        return [self._sync_funding_one(source, sym, t0, t1, progress) for sym in syms]

    def _sync_funding_one(self, source: Source, symbol: str, t0: pd.Timestamp | None,
                          t1: pd.Timestamp, progress: Progress | None) -> FundingSyncResult:
        result = FundingSyncResult(source.name, symbol)
        stored = self._funding_bounds(source.name, symbol)
        if stored is None:
            if t0 is None:
                raise ConfigError(f"{result.label} has no stored funding to resume from: pass a start "
                                  "(--start 2024-01-01)")
            ranges = [(t0, t1)]
        else:
            first, last = stored
            ranges = []
            if t0 is not None and t0 < first:
                ranges.append((t0, min(first, t1)))
            resume = last + pd.Timedelta(microseconds=1)
            if resume < t1:
                ranges.append((max(resume, t0) if t0 is not None else resume, t1))
        result.requested = [(str(a), str(b)) for a, b in ranges]
        expected = sum(expected_events(a, b) for a, b in ranges)
        for a, b in ranges:
            got: list[pd.DataFrame] = []
            try:
                for page in source.funding_pages(symbol, a, b):
                    page = page[(page["ts"] >= a) & (page["ts"] < b)] if len(page) else page
                    if page.empty:
                        continue
                    got.append(page)
                    result.rows_fetched += len(page)
                    if progress:
                        progress(result.label, len(page), expected)
            finally:  # keep what arrived before a failure: the next sync resumes after it
                if got:
                    result.rows_added += self.write_funding(source.name, symbol,
                                                            pd.concat(got, ignore_index=True))
        return result

    def _funding_bounds(self, source: str, symbol: str) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """First and last stored settlement of a funding series (None when nothing is stored)."""
        files = self._files(self.funding_series_dir(source, symbol))
        if not files:
            return None
        first, last = _read_ts(files[0]), _read_ts(files[-1])
        if not len(first) or not len(last):
            return None
        return (pd.Timestamp(int(first[0]), unit="us", tz="UTC"),
                pd.Timestamp(int(last[-1]), unit="us", tz="UTC"))

    # ------------------------------------------------------------------ ticks
    def read_trades(self, source: str, symbols: str | Sequence[str], start: TimeLike = None,
                    end: TimeLike = None) -> pd.DataFrame:
        """Recorded trades in [start, end): ts (exchange), recv_ts, symbol, trade_id, price, size,
        side (the taker's: buy/sell), each trade once, compacted and still-logged rows together."""
        return self._read_ticks(TickKind.TRADES, source, symbols, start, end)

    def read_quotes(self, source: str, symbols: str | Sequence[str], start: TimeLike = None,
                    end: TimeLike = None) -> pd.DataFrame:
        """Recorded best bid/ask in [start, end): ts, recv_ts, symbol, bid, bid_size, ask, ask_size."""
        return self._read_ticks(TickKind.QUOTES, source, symbols, start, end)

    def read_book(self, source: str, symbol: str, start: TimeLike = None, end: TimeLike = None, *,
                  at: TimeLike = None) -> pd.DataFrame:
        """Recorded top-N book snapshots in [start, end), one row per (snapshot, side, level); with
        `at`, only the snapshot in force at that moment (the last at or before it)."""
        if at is None:
            return self._read_ticks(TickKind.BOOK, source, symbol, start, end)
        if start is not None or end is not None:
            raise ConfigError("read_book takes either `at` or a start/end range, not both")
        t = _ts(at, "at")
        assert t is not None
        day = self._read_ticks(TickKind.BOOK, source, symbol, t - pd.Timedelta(days=1),
                               t + pd.Timedelta(1, "ns"))
        if day.empty:
            return day
        last = day["ts"].iloc[-1]
        snap = day[day["ts"] == last]
        return snap[snap["recv_ts"] == snap["recv_ts"].iloc[-1]].reset_index(drop=True)

    def read_tick_gaps(self, source: str, symbols: str | Sequence[str], start: TimeLike = None,
                       end: TimeLike = None) -> pd.DataFrame:
        """What a collector could neither receive nor backfill: ts (first moment missing), end,
        stream, reason."""
        return self._read_ticks(TickKind.GAPS, source, symbols, start, end)

    def read_tick_bars(self, source: str, symbol: str, timeframe: str | Timeframe,
                       start: TimeLike = None, end: TimeLike = None) -> pd.DataFrame:
        """Bars built in DuckDB from recorded trades (the venue's rule: a trade at t belongs to the
        bar opening at floor(t)); a bucket with no trade has no bar. Columns as `read_bars`, plus
        trades and vwap."""
        tf = Timeframe.parse(timeframe)
        t0, t1 = _ts(start, "start"), _ts(end, "end")
        check_range(t0, t1)
        q0 = tf.floor(t0) if t0 is not None else None
        trades = self.ticks.read(TickKind.TRADES, source, symbol, q0, t1)
        out = self._bars_of_trades(trades, tf).drop(columns="symbol")
        return _trim(out, t0, t1)

    def _bars_of_trades(self, trades: pd.DataFrame, tf: Timeframe) -> pd.DataFrame:
        """Bars per symbol and bucket of `tf` from trade rows, in one DuckDB query."""
        step = int(tf.delta / pd.Timedelta(1, "ns"))
        frame = pd.DataFrame({"s": trades["symbol"].to_numpy(dtype=object),
                              "t": trades["ts"].to_numpy("datetime64[ns]").astype("int64"),
                              "id": trades["trade_id"].to_numpy(), "p": trades["price"].to_numpy(),
                              "q": trades["size"].to_numpy()})
        con = self._con()
        con.register("_trades", frame)
        try:
            out = con.execute(
                "SELECT s AS symbol, make_timestamp_ns(t // ? * ?) AS ts, first(p ORDER BY t, id) AS open, "
                "max(p) AS high, min(p) AS low, last(p ORDER BY t, id) AS close, sum(q) AS volume, "
                "count(*)::DOUBLE AS trades, sum(p * q) / nullif(sum(q), 0) AS vwap "
                "FROM _trades GROUP BY 1, 2 ORDER BY 1, 2", [step, step]).df()
        finally:
            con.unregister("_trades")
        out["ts"] = pd.to_datetime(out["ts"]).dt.tz_localize("UTC").dt.as_unit("us")
        return out

    def _has_trades(self, source: str, symbol: str) -> bool:
        """Whether a collector recorded trades of (source, symbol): where no bar series is stored,
        its bars are built from them."""
        if self.ticks.symbol_dir(TickKind.TRADES, source, symbol).is_dir():
            return True
        return bool(self.ticks.segments(source, TickKind.TRADES)) and (
            self.ticks.last(TickKind.TRADES, source, symbol) is not None)

    def _tick_bars(self, source: str, symbol: str, tf: Timeframe, t0: pd.Timestamp | None,
                   t1: pd.Timestamp | None, include_partial: bool) -> pd.DataFrame:
        """`read_tick_bars` with `read_bars`' columns; a bucket whose end has not passed on the
        wall clock is still forming and left out unless `include_partial`."""
        out = self.read_tick_bars(source, symbol, tf, t0, t1)
        if not include_partial and len(out):
            now = pd.Timestamp.now(tz="UTC")
            out = out[out["ts"] + tf.delta <= now].reset_index(drop=True)
        return out

    def check_ticks(self, source: str, symbol: str, kind: str, start: TimeLike = None,
                    end: TimeLike = None) -> QualityReport:
        """The tick quality checks over one stored symbol (nothing is changed)."""
        k = TickKind(kind) if kind in TickKind.__members__.values() else None
        if k is None or k is TickKind.GAPS:
            raise ConfigError(f"unknown tick table {kind!r}: use trades, quotes or book")
        frame = self._read_ticks(k, source, symbol, start, end)
        gaps = self._read_ticks(TickKind.GAPS, source, symbol, start, end) if k is TickKind.BOOK else None
        return check_ticks(frame, k.value, label=f"{source}:{symbol}:{k.value}", gaps=gaps)

    def _read_ticks(self, kind: TickKind, source: str, symbols: str | Sequence[str], start: TimeLike,
                    end: TimeLike) -> pd.DataFrame:
        t0, t1 = _ts(start, "start"), _ts(end, "end")
        check_range(t0, t1)
        if not isinstance(symbols, str) and not list(symbols):
            raise ConfigError("no symbols given: name at least one symbol")
        return self.ticks.read(kind, source, symbols, t0, t1)

    # ------------------------------------------------------------------ quality of stored data
    def check(self, source: str | None = None, symbol: str | None = None,
              timeframe: str | None = None, *, policy: QualityPolicy | None = None
              ) -> list[QualityReport]:
        """Run the quality checks over stored series (nothing is changed); `damaged` lists the unreadable."""
        reports = []
        for cov in self._scan(source, symbol, timeframe)[0]:  # damaged series: see `damaged`
            bars = self.read_bars(cov.source, cov.symbol, cov.timeframe)
            reports.append(check_bars(bars, cov.timeframe, Calendar(cov.calendar),
                                      label=f"{cov.source}:{cov.symbol}:{cov.timeframe}",
                                      policy=policy))
        return reports

    # ------------------------------------------------------------------ export / import
    def export(
        self,
        path: str | Path,
        source: str,
        symbols: str | Sequence[str],
        timeframe: str | Timeframe,
        start: TimeLike = None,
        end: TimeLike = None,
    ) -> Path:
        """Write a slice (long layout, with a `symbol` column) to .parquet or .csv, atomically."""
        path = Path(path)
        fmt = path.suffix.lower()
        if fmt not in (".parquet", ".csv"):
            raise ConfigError(f"cannot export to {path.name!r}: use a .parquet or .csv file name")
        syms = [symbols] if isinstance(symbols, str) else list(symbols)
        frame = self.read_bars(source, syms, timeframe, start, end, layout=Layout.LONG)
        if frame.empty:
            raise DataError(f"nothing to export: {source} has no {timeframe} bars for "
                            f"{', '.join(syms)} in that range; widen the range")
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == ".parquet":
            table = pa.Table.from_pandas(frame, preserve_index=False)
            _write_parquet_atomic(table, path)
        else:
            out = frame.copy()
            out["ts"] = out["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
            atomic_write(path, out.to_csv(index=False).encode())
        return path

    def import_file(
        self,
        path: str | Path,
        *,
        source: str,
        timeframe: str | Timeframe,
        symbol: str | None = None,
        policy: QualityPolicy | None = None,
    ) -> list[WriteResult]:
        """Import an exported slice (.parquet or .csv with ts, OHLCV and a symbol column)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no such file {str(path)!r}: check the path")
        try:
            if path.suffix.lower() == ".parquet":
                frame = pq.read_table(path).to_pandas()
            elif path.suffix.lower() == ".csv":
                frame = pd.read_csv(path)
            else:
                raise ConfigError(f"cannot import {path.name!r}: use a .parquet or .csv file")
        except (pa.ArrowInvalid, pd.errors.ParserError, pd.errors.EmptyDataError,
                UnicodeDecodeError) as exc:
            why = " ".join(str(exc).split())
            raise DataError(f"{path.name} is not a readable export ({why}): re-export it") from None
        if "symbol" not in frame.columns:
            if symbol is None:
                raise DataError(f"{path.name} has no symbol column: pass symbol=... (--symbol)")
            frame["symbol"] = symbol
        # validate every symbol before writing any, so a bad file leaves the lake unchanged
        groups = [(str(s), normalize_bars(g, what=f"{path.name} [{s}]"))
                  for s, g in frame.groupby("symbol", sort=True)]
        for s, g in groups:
            apply_policy(g, timeframe, calendar_for_symbol(s), label=f"{path.name} [{s}]",
                         policy=policy)
        return [self.write_bars(source, s, timeframe, g, policy=policy) for s, g in groups]

    # ------------------------------------------------------------------ syncing from a source
    def sync(
        self,
        source: Source,
        symbols: str | Sequence[str],
        timeframe: str | Timeframe,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        full: bool = False,
        fill_gaps: bool = False,
        policy: QualityPolicy | None = None,
        progress: Progress | None = None,
    ) -> list[SyncResult]:
        """Fetch what the lake lacks for each symbol and write it; returns one result per symbol.

        Incremental by default: only the part of [start, end) outside the stored coverage is
        requested (`full=True` re-fetches all of it; `fill_gaps=True` also asks again for the
        stored gaps inside the range, e.g. after an interrupted backfill). `end` defaults to the
        start of the bar still forming now. Coverage is verified afterwards; gaps are reported.
        """
        tf = Timeframe.parse(timeframe)
        source.check_timeframe(tf)
        syms = [symbols] if isinstance(symbols, str) else list(symbols)
        if not syms:
            raise ConfigError("no symbols given: name at least one symbol to sync")
        syms = [source.canonical_symbol(s) for s in syms]
        t0, t1 = _ts(start, "start"), _ts(end, "end")
        if t1 is None:
            t1 = tf.floor(pd.Timestamp.now(tz="UTC"))
        check_range(t0, t1)
        self.check_writable()  # before any fetch, not after a year of bars
        results = []
        for sym in syms:
            results.append(self._sync_one(source, sym, tf, t0, t1, full, fill_gaps, policy,
                                          progress))
        return results

    def _sync_one(self, source: Source, symbol: str, tf: Timeframe, t0: pd.Timestamp | None,
                  t1: pd.Timestamp, full: bool, fill_gaps: bool, policy: QualityPolicy | None,
                  progress: Progress | None) -> SyncResult:
        key = SeriesKey(source.name, symbol, tf.name)
        try:
            cov = self.series_coverage(source.name, symbol, tf)
        except LakeCorruptError:
            # a damaged file: keep it aside and fetch its span again (from the series' last recorded
            # coverage, else its whole year), which rebuilds it
            old_first = self._recorded_first(key)
            moved = self.quarantine(source.name, symbol, tf)
            years = [int(p.parent.name.split("=", 1)[1]) for p in moved]
            cov = self.series_coverage(source.name, symbol, tf)
            full = True
            if years:
                lost = pd.Timestamp(year=min(years), month=1, day=1, tz="UTC")
                lost = max(lost, old_first) if old_first is not None else lost
                t0 = lost if t0 is None else min(t0, lost)
        if t0 is None and (cov is None or cov.first is None):
            raise ConfigError(
                f"{key} has no stored bars to resume from: pass a start (--start 2024-01-01)"
            )
        ranges: list[tuple[pd.Timestamp, pd.Timestamp]] = []
        if full or cov is None or cov.first is None or cov.last is None:
            if t0 is None:  # without a start, the check above made sure there are stored bars
                assert cov is not None and cov.first is not None
                t0 = cov.first
            ranges.append((t0, t1))
        else:
            if t0 is not None and t0 < cov.first:
                ranges.append((t0, min(cov.first, t1)))
            resume = cov.last + tf.delta
            if resume < t1:
                ranges.append((max(resume, t0) if t0 is not None else resume, t1))
            if fill_gaps:
                lo = t0 if t0 is not None else cov.first
                for gap_a, gap_b, _ in cov.gaps:
                    ga, gb = max(pd.Timestamp(gap_a), lo), min(pd.Timestamp(gap_b) + tf.delta, t1)
                    if ga < gb:
                        ranges.append((ga, gb))
                ranges.sort()
        cal = source.calendar(symbol)
        result = SyncResult(key, [])
        sizes = [len(cal.expected(a, b - pd.Timedelta(microseconds=1), tf)) for a, b in ranges]
        ranges = [r for r, n in zip(ranges, sizes, strict=True) if n]
        expected_rows = sum(sizes)
        result.requested = [(str(a), str(b)) for a, b in ranges]
        for a, b in ranges:
            buffer: list[pd.DataFrame] = []
            buffered = 0
            try:
                for chunk in source.fetch(symbol, tf, a, b):
                    chunk = chunk[(chunk["ts"] >= a) & (chunk["ts"] < b)] if len(chunk) else chunk
                    if chunk.empty:
                        continue
                    buffer.append(chunk)
                    buffered += len(chunk)
                    result.rows_fetched += len(chunk)
                    if progress:
                        progress(str(key), len(chunk), expected_rows)
                    if buffered >= SYNC_BATCH_ROWS:
                        batch, buffer, buffered = buffer, [], 0
                        self._flush(key, batch, cal, policy, result)
            except WorkbenchError:
                # keep what arrived before the source failed: the next sync resumes after it
                if buffer:
                    self._flush(key, buffer, cal, policy, result)
                raise
            if buffer:
                self._flush(key, buffer, cal, policy, result)
            result.missing_in_range += self._verify(key, cal, a, b)
        return result

    def _flush(self, key: SeriesKey, buffer: list[pd.DataFrame], cal: Calendar,
               policy: QualityPolicy | None, result: SyncResult) -> None:
        frame = pd.concat(buffer, ignore_index=True)
        w = self.write_bars(key.source, key.symbol, key.timeframe, frame, policy=policy,
                            calendar=cal)
        result.rows_added += w.rows_added
        result.rows_replaced += w.rows_replaced
        result.report = w.report if result.report is None else result.report.merge(w.report)

    def _verify(self, key: SeriesKey, cal: Calendar, a: pd.Timestamp, b: pd.Timestamp) -> int:
        """Count expected bars in [a, b) that are still missing after a sync, and log them."""
        tf = Timeframe.parse(key.timeframe)
        expected = cal.expected(a, b - pd.Timedelta(microseconds=1), tf)
        if self.series_coverage(key.source, key.symbol, tf) is None:
            have = np.empty(0, dtype=np.int64)  # the source had nothing at all for this series
        else:
            stored = self.read_bars(key.source, key.symbol, tf, a, b)
            have = pd.DatetimeIndex(stored["ts"]).as_unit("us").asi8
        missing = int(absent(expected, have).sum())
        if missing:
            log.warning("%s: %d expected bars missing in [%s, %s) after sync", key, missing, a, b)
        return missing


# ---------------------------------------------------------------------- helpers
_SAFE = re.compile(r"^[^\x00-\x1f]+$")


def _check_name(value: str, what: str) -> None:
    if not value or not _SAFE.match(value) or value in (".", ".."):
        raise ConfigError(f"invalid {what} name {value!r}: use a non-empty printable name")


def _signature(files: Iterable[Path]) -> dict[str, list[int]]:
    out = {}
    for f in files:
        st = f.stat()
        out[f"{f.parent.name}/{f.name}"] = [st.st_size, st.st_mtime_ns]
    return out


def _identity(files: list[Path]) -> list[tuple[int, int, int] | None]:
    """Inode, size and mtime of each file: a rename of a new version changes the inode."""
    out: list[tuple[int, int, int] | None] = []
    for f in files:
        try:
            st = f.stat()
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append(None)
    return out


def _clean_temp_files(sdir: Path) -> None:
    """Remove temporaries a killed writer left behind (only ever called under the series lock)."""
    for tmp in sdir.glob("**/.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _corrupt(path: Path, why: object) -> LakeCorruptError:
    """The one error for a damaged lake file: which file, and how to recover."""
    why = " ".join(str(why).split())[:160]
    if len(path.parents) > 3 and path.parents[3].name == "funding":  # funding/source=S/symbol=X/year=Y
        try:
            sym, src = (unquote(p.name.split("=", 1)[1]) for p in path.parents[1:3])
            year = int(path.parent.name.split("=", 1)[1])
            return LakeCorruptError(
                f"lake file {path} is unreadable ({why}): move it aside and re-sync it: `workbench data "
                f"funding --source {_source_spec(src)} --symbols {sym} --start {year}-01-01 --end "
                f"{year + 1}-01-01`; nothing was written")
        except (IndexError, ValueError):
            pass
    try:  # .../source=S/timeframe=TF/symbol=X/year=Y/data.parquet
        sym, tf, src = (unquote(p.name.split("=", 1)[1]) for p in path.parents[1:4])
        year = int(path.parent.name.split("=", 1)[1])
        fix = (f"re-sync it: `workbench data sync --source {src} --symbols {sym} --timeframe {tf} "
               f"--start {year}-01-01 --end {year + 1}-01-01` (moves the file aside and rebuilds "
               "it), "
               "or `workbench data demo` for the demo lake")
    except (IndexError, ValueError):
        fix = "move it aside and re-sync that series, or re-import an export"
    return LakeCorruptError(f"lake file {path} is unreadable ({why}): {fix}; nothing was written")


def _read_file(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _corrupt(path, exc) from None


def _read_ts(path: Path) -> np.ndarray:
    """The `ts` column of a lake file as int64 microseconds."""
    return np.asarray(_read_file(path, columns=["ts"]).column("ts").cast(pa.int64()))


def _find_corrupt(files: list[Path]) -> Path | None:
    for f in files:
        try:
            pq.read_table(f)
        except (pa.ArrowInvalid, OSError):
            return f
    return None


def _align_schemas(new: pa.Table, old: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Give both tables the union of their columns (missing optional columns become null)."""
    if new.schema.equals(old.schema):
        return new, old
    names = ["ts", *[c for c in _FLOATS if c in new.column_names or c in old.column_names]]

    def widen(t: pa.Table) -> pa.Table:
        cols = [t.column(c) if c in t.column_names else pa.nulls(len(t), pa.float64())
                for c in names]
        return pa.Table.from_arrays(cols, names=names)

    return widen(new), widen(old)


def _write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write zstd Parquet over `path` atomically (see `workbench.files.atomic_path`)."""
    # delta-encoded timestamps and byte-stream-split floats: ~30 bytes per 1m bar, not ~45
    encoding = {f.name: "BYTE_STREAM_SPLIT" for f in table.schema if pa.types.is_floating(f.type)}
    if "ts" in table.column_names and pa.types.is_timestamp(table.schema.field("ts").type):
        encoding["ts"] = "DELTA_BINARY_PACKED"
    dictionary = [n for n in table.column_names if n not in encoding]
    with atomic_path(path) as tmp:
        pq.write_table(
            table, tmp, compression="zstd", compression_level=3, row_group_size=ROW_GROUP_SIZE,
            use_dictionary=dictionary or False, column_encoding=encoding or None,
        )


def _gaps(ts: np.ndarray, tf: Timeframe, cal: Calendar) -> tuple[list[tuple[str, str, int]], int]:
    """Runs of expected-but-absent bars between the first and last stored ones."""
    if len(ts) < 2:
        return [], 0
    first = pd.Timestamp(int(ts[0]), unit="us", tz="UTC")
    last = pd.Timestamp(int(ts[-1]), unit="us", tz="UTC")
    if cal.always_open:
        d = np.diff(ts)
        idx = np.flatnonzero(d > tf.micros)
        gaps = [
            (str(pd.Timestamp(int(ts[i] + tf.micros), unit="us", tz="UTC")),
             str(pd.Timestamp(int(ts[i + 1] - tf.micros), unit="us", tz="UTC")),
             int(d[i] // tf.micros - 1))
            for i in idx
        ]
        return gaps, int(sum(g[2] for g in gaps))
    expected = cal.expected(first, last, tf)
    gone = absent(expected, ts)
    if not gone.any():
        return [], 0
    pos = np.flatnonzero(gone)
    breaks = np.flatnonzero(np.diff(pos) > 1) + 1
    runs = np.split(pos, breaks)
    gaps = [
        (str(pd.Timestamp(int(expected[r[0]]), unit="us", tz="UTC")),
         str(pd.Timestamp(int(expected[r[-1]]), unit="us", tz="UTC")), len(r))
        for r in runs
    ]
    return gaps, len(pos)


def _file_list(files: list[Path]) -> str:
    return "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"


def _columns(files: list[Path]) -> list[str]:
    names: list[str] = []
    for f in files:
        try:
            schema = pq.read_schema(f)
        except (pa.ArrowInvalid, OSError) as exc:
            raise _corrupt(f, exc) from None
        for n in schema.names:
            if n not in names:
                names.append(n)
    return names


def _select_plain(files: list[Path]) -> str:
    # the lake writes ts, OHLCV, then optional columns: no need to read schemas to order them
    # hive columns (source, symbol...) are known already: don't let DuckDB add them to every row
    union = ", union_by_name=true" if len(files) > 1 else ""
    return f"SELECT * FROM read_parquet({_file_list(files)}, hive_partitioning=false{union}){{where}}"


def _exact(expr: str) -> str:
    """A float column as DECIMAL(38, 12) for exact, order-independent sums (to 1e-12, up to 1e26)."""
    return f"({expr})::DECIMAL(38, 12)"


def _select_resampled(files: list[Path], tf: Timeframe) -> str:
    if not files:
        return ""
    have = _columns(files)
    step, origin = tf.micros, tf.origin_micros
    bucket = f"((epoch_us(ts) - {origin}) // {step}) * {step} + {origin}"
    # sums go through DECIMAL: exact, so parallel aggregation order cannot change the last bits
    # and a resampled slice (and its fingerprint) is identical run after run
    aggs = ["arg_min(open, ts) AS open", "max(high) AS high", "min(low) AS low",
            "arg_max(close, ts) AS close", f"sum({_exact('volume')})::DOUBLE AS volume"]
    if "trades" in have:
        aggs.append(f"sum({_exact('trades')})::DOUBLE AS trades")
    if "vwap" in have:
        aggs.append(f"sum({_exact('vwap * volume')})::DOUBLE / nullif(sum({_exact('volume')})::DOUBLE, 0)"
                    " AS vwap")
    return (
        f"SELECT make_timestamp(b)::TIMESTAMPTZ AS ts, * EXCLUDE (b) FROM ("
        f"SELECT {bucket} AS b, {', '.join(aggs)} "
        f"FROM read_parquet({_file_list(files)}, hive_partitioning=false, union_by_name=true)"
        f"{{where}} GROUP BY b"
        ") ORDER BY ts"
    )


def _utc(df: pd.DataFrame) -> pd.DataFrame:
    if "ts" in df.columns and str(df["ts"].dt.tz) != "UTC":
        df["ts"] = df["ts"].dt.tz_convert("UTC")
    return df


def _trim(df: pd.DataFrame, t0: pd.Timestamp | None, t1: pd.Timestamp | None) -> pd.DataFrame:
    if t0 is not None:
        df = df[df["ts"] >= t0]
    if t1 is not None:
        df = df[df["ts"] < t1]
    return df.reset_index(drop=True)


def _hash_funding(h: hashlib._Hash, symbol: str, frame: pd.DataFrame) -> None:
    """Add one symbol's funding events to a fingerprint."""
    h.update(b"\x01funding\x00" + symbol.encode())
    h.update(pd.DatetimeIndex(frame["ts"]).as_unit("us").asi8.tobytes())
    h.update(np.ascontiguousarray(frame["rate"].to_numpy("float64")).tobytes())


def _source_spec(label: str) -> str:
    """The `--source` value that fills a lake source label (`binanceusdm` -> `ccxt:binanceusdm`)."""
    return label if label in SOURCE_KINDS or label == "csv" else f"ccxt:{label}"


def describe_sync(results: list[SyncResult]) -> pd.DataFrame:
    """One row per synced symbol: what was fetched, added, replaced, and still missing."""
    return pd.DataFrame(
        [{"series": str(r.key), "fetched": r.rows_fetched, "added": r.rows_added,
          "replaced": r.rows_replaced, "missing_in_range": r.missing_in_range,
          "issues": 0 if r.report is None else len(r.report.issues)} for r in results]
    )


__all__ = ["Coverage", "Lake", "Layout", "SeriesKey", "SyncResult", "WriteResult", "check_range"]
