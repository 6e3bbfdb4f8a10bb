"""Import users' CSV files: column mapping, timezone handling, epoch or text timestamps.

`CsvSource(path)` serves one file (or a folder of `<symbol>.csv` files, `/` in a symbol written
as `-` or `_`) through the `Source` contract, so `Lake.sync` validates and writes it like any
other source and re-imports are idempotent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.data.bars import BAR_COLUMNS, OPTIONAL_COLUMNS, normalize_bars
from workbench.data.sources.base import Source
from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError, DataError

_ALIASES = {
    "ts": ("ts", "timestamp", "time", "date", "datetime", "open_time", "t"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c", "adj_close_raw"),
    "volume": ("volume", "vol", "v"),
    "trades": ("trades", "n", "trade_count"),
    "vwap": ("vwap", "vw"),
}
_EPOCH_UNITS = ((1e11, "s"), (1e14, "ms"), (1e17, "us"), (float("inf"), "ns"))


def parse_column_map(spec: str | None) -> dict[str, str]:
    """Parse `ts=Date,close=Adj Close` (the CLI's --map) into {bar column: file column}."""
    out: dict[str, str] = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in (*BAR_COLUMNS, *OPTIONAL_COLUMNS) or not value.strip():
            raise ConfigError(
                f"bad column mapping {part.strip()!r}: write bar_column=file_column with "
                f"bar_column in {', '.join((*BAR_COLUMNS, *OPTIONAL_COLUMNS))}"
            )
        out[key] = value.strip()
    return out


class CsvSource(Source):
    """Bars from CSV files, with columns mapped and timestamps converted to UTC."""

    timeframes = ("1m", "5m", "15m", "1h", "4h", "1d")

    def __init__(
        self,
        path: str | Path,
        *,
        name: str = "csv",
        columns: Mapping[str, str] | None = None,
        tz: str = "UTC",
        ts_unit: str | None = None,
        ts_format: str | None = None,
        delimiter: str = ",",
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ConfigError(f"no such CSV file or folder {str(self.path)!r}: check the path")
        self.name = name
        self.columns = dict(columns or {})
        self.tz = tz
        self.ts_unit = ts_unit
        self.ts_format = ts_format
        self.delimiter = delimiter
        try:
            pd.Timestamp("2024-01-01").tz_localize(tz)
        except Exception:
            raise ConfigError(f"unknown time zone {tz!r}: use an IANA name such as "
                              "'UTC' or 'America/New_York'") from None

    def file_for(self, symbol: str) -> Path:
        if self.path.is_file():
            return self.path
        stem = re.sub(r"[/:]", "-", symbol)
        for cand in (stem, stem.replace("-", "_"), symbol.replace("/", "")):
            f = self.path / f"{cand}.csv"
            if f.is_file():
                return f
        raise ConfigError(f"no CSV for {symbol!r} in {self.path}: name it {stem}.csv")

    def read(self, symbol: str, timeframe: str | Timeframe) -> pd.DataFrame:
        """Read the whole file for `symbol` as a bar frame: UTC `ts`, float64 values (a file's
        integer volumes or counts become floats here, as the Source contract promises). Order,
        duplicates and gaps are left as the file has them, for the quality policy to report."""
        tf = Timeframe.parse(timeframe)
        path = self.file_for(symbol)
        try:
            raw = pd.read_csv(path, sep=self.delimiter, skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise DataError(f"{path.name} is not a readable CSV ({first}): fix the file or pass "
                            "the right --delimiter") from None
        frame = pd.DataFrame(index=raw.index)
        lower = {c.strip().lower().replace(" ", "_"): c for c in raw.columns}
        for col in (*BAR_COLUMNS, *OPTIONAL_COLUMNS):
            src = self.columns.get(col)
            if src is None:
                src = next((lower[a] for a in _ALIASES[col] if a in lower), None)
            elif src not in raw.columns:
                raise DataError(f"{path.name} has no column {src!r} (mapped to {col}): it has "
                                f"{', '.join(map(str, raw.columns))}")
            if src is None:
                if col in BAR_COLUMNS:
                    raise DataError(
                        f"{path.name} has no {col} column (columns: "
                        f"{', '.join(map(str, raw.columns))}): map it, e.g. --map {col}=<name>"
                    )
                continue
            frame[col] = raw[src]
        frame["ts"] = self._timestamps(frame["ts"], tf, path.name)
        return normalize_bars(frame, what=path.name)

    def _timestamps(self, col: pd.Series, tf: Timeframe, fname: str) -> pd.Series:
        try:
            if pd.api.types.is_numeric_dtype(col):
                values = col.to_numpy(dtype=np.float64)
                unit = self.ts_unit or next(u for lim, u in _EPOCH_UNITS
                                            if np.nanmax(np.abs(values)) < lim)
                # a user's --ts-unit is a plain str: pandas checks it (a ValueError, caught below)
                ts = pd.to_datetime(col.astype("int64"), unit=unit, utc=True)  # type: ignore[call-overload]
            else:
                ts = pd.to_datetime(col, format=self.ts_format)
                if ts.dt.tz is None:
                    ts = ts.dt.tz_localize(self.tz, ambiguous="raise", nonexistent="raise")
                ts = ts.dt.tz_convert("UTC") if ts.dt.tz is not None else ts
        except (ValueError, TypeError, OverflowError) as exc:
            raise DataError(f"{fname}: cannot read timestamps ({self._why(col, exc)}): pass "
                            "--ts-format (e.g. '%d/%m/%Y %H:%M'), --ts-unit or --tz") from None
        if tf.seconds >= 86400:
            # daily bars are keyed by their session date at 00:00 UTC, whatever the file's zone
            local = ts.dt.tz_convert(self.tz) if str(ts.dt.tz) != self.tz else ts
            ts = pd.to_datetime(local.dt.strftime("%Y-%m-%d")).dt.tz_localize("UTC")
        return ts

    def _why(self, col: pd.Series, exc: Exception) -> str:
        """The first value that does not read and its row, or pandas' reason in whole sentences
        (its messages run on over several lines, e.g. "... You might want to try: ...")."""
        if not pd.api.types.is_numeric_dtype(col):
            parsed = pd.to_datetime(col, format=self.ts_format, errors="coerce")
            bad = parsed.isna() & col.notna()
            if bad.any():
                row = int(np.argmax(bad.to_numpy()))
                fmt = f"format {self.ts_format!r}" if self.ts_format else "the format of the first rows"
                return f"{col.iloc[row]!r} on data row {row + 1} does not match {fmt}"
        text = " ".join(str(exc).split())
        text = text.split(" You might want to try")[0].rstrip(" ,.:")
        return text

    def fetch(self, symbol: str, timeframe: Timeframe, start: pd.Timestamp, end: pd.Timestamp
              ) -> Iterator[pd.DataFrame]:
        frame = self.read(symbol, timeframe)
        yield frame[(frame["ts"] >= start) & (frame["ts"] < end)].reset_index(drop=True)
