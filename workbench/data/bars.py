"""The bar frame contract: `ts` (UTC bar open time) + float64 OHLCV, optional `trades` and `vwap`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from workbench.errors import DataError

PRICE_COLUMNS = ("open", "high", "low", "close")
BAR_COLUMNS = ("ts", *PRICE_COLUMNS, "volume")
OPTIONAL_COLUMNS = ("trades", "vwap")


def normalize_bars(frame: pd.DataFrame, *, what: str = "bars") -> pd.DataFrame:
    """Return `frame` in the bar contract: UTC `ts` column, float64 values, contract columns only.

    Sorting and de-duplication are left to the quality policy, which reports them.
    """
    df = frame
    if "ts" not in df.columns and isinstance(df.index, pd.DatetimeIndex):
        df = df.rename_axis("ts").reset_index()
    missing = [c for c in BAR_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{what} lack column(s) {', '.join(missing)}: a bar frame needs "
            f"{', '.join(BAR_COLUMNS)} (map your column names when importing)"
        )
    cols = list(BAR_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in df.columns]
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    ts = df["ts"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        if pd.api.types.is_datetime64_dtype(ts.dtype):
            raise DataError(
                f"{what} have naive timestamps: localise them (e.g. tz='UTC' or the exchange's "
                "zone) before writing; the lake stores UTC"
            )
        try:
            ts = pd.to_datetime(ts)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{what} have unparseable timestamps ({exc}): fix the ts column") from None
        if not isinstance(ts.dtype, pd.DatetimeTZDtype):
            raise DataError(
                f"{what} have timestamps without a zone: add one (e.g. '2024-01-31T12:00Z') or "
                "localise them; the lake stores UTC"
            )
    out["ts"] = pd.DatetimeIndex(ts).tz_convert("UTC").as_unit("us")
    for c in cols[1:]:
        try:
            out[c] = pd.to_numeric(df[c], errors="raise").to_numpy(dtype=np.float64)
        except (ValueError, TypeError):
            raise DataError(f"{what} column {c!r} holds non-numeric values: clean it first") from None
    return out


def ts_micros(frame: pd.DataFrame) -> np.ndarray:
    """The `ts` column as int64 microseconds since the epoch (UTC)."""
    return pd.DatetimeIndex(frame["ts"]).as_unit("us").asi8.astype(np.int64, copy=True)


def bars_to_arrow(frame: pd.DataFrame) -> pa.Table:
    """Convert a normalised bar frame to the lake's Arrow schema (ts = timestamp[us, UTC])."""
    arrays = [pa.array(ts_micros(frame), type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))]
    names = ["ts"]
    for c in frame.columns:
        if c == "ts":
            continue
        arrays.append(pa.array(frame[c].to_numpy(dtype=np.float64), type=pa.float64()))
        names.append(c)
    return pa.Table.from_arrays(arrays, names=names)


def aggregate_bars(bars: pd.DataFrame, buckets: np.ndarray) -> pd.DataFrame:
    """Combine time-sorted bars into coarser ones; `buckets` is each row's bucket start (int64 us).

    open=first, high=max, low=min, close=last, volume=sum; `trades` are summed and `vwap` is
    volume-weighted where present (NaN when no row of a bucket has them).
    """
    if len(buckets) == 0:
        return bars.iloc[:0].reset_index(drop=True)
    starts = np.r_[0, np.flatnonzero(np.diff(buckets)) + 1]
    ends = np.r_[starts[1:], len(buckets)] - 1

    def col(name: str) -> np.ndarray:
        return bars[name].to_numpy(dtype=np.float64)

    def nansum(values: np.ndarray) -> np.ndarray:
        total = np.add.reduceat(np.nan_to_num(values), starts)
        seen = np.add.reduceat((~np.isnan(values)).astype(np.int64), starts)
        return np.where(seen > 0, total, np.nan)

    volume = np.add.reduceat(col("volume"), starts)
    out = pd.DataFrame({
        "ts": pd.DatetimeIndex(buckets[starts].astype(np.int64).view("datetime64[us]"), tz="UTC"),
        "open": col("open")[starts],
        "high": np.maximum.reduceat(col("high"), starts),
        "low": np.minimum.reduceat(col("low"), starts),
        "close": col("close")[ends],
        "volume": volume,
    })
    if "trades" in bars.columns:
        out["trades"] = nansum(col("trades"))
    if "vwap" in bars.columns:
        with np.errstate(divide="ignore", invalid="ignore"):
            out["vwap"] = np.where(volume > 0, nansum(col("vwap") * col("volume")) / volume, np.nan)
    return out
