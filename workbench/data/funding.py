"""Funding-rate history of perpetual futures: the frame contract, its checks and its summaries.

A funding frame has two columns: `ts` (UTC, the moment the venue settled the payment) and `rate`
(float64, the rate *per funding interval* exactly as the venue publishes it: 0.0001 is 0.01% of the
position's notional for that interval, commonly 8 hours; longs pay shorts when it is positive).
Sorted, one row per `ts`. The lake stores one series per (source, symbol) under
``lake/funding/source=S/symbol=SYM/year=Y/data.parquet`` with the bars' durability rules (see
`workbench.data.lake.Lake.write_funding`); this module holds what does not touch the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from workbench.errors import DataError

FUNDING_COLUMNS = ("ts", "rate")
# No venue settles anything near 10% of notional in one interval (caps are a few percent at most):
# a larger value is a unit mistake (percent or basis points instead of a fraction).
MAX_ABS_RATE = 0.1
# the usual interval; used only to size progress bars, never to decide what is stored
TYPICAL_INTERVAL = pd.Timedelta(hours=8)
_YEAR = pd.Timedelta(days=365.25)


@dataclass
class FundingSyncResult:
    """What a funding sync did for one symbol."""

    source: str
    symbol: str
    requested: list[tuple[str, str]] = field(default_factory=list)
    rows_fetched: int = 0
    rows_added: int = 0

    @property
    def label(self) -> str:
        return f"{self.source}:{self.symbol}:funding"


def empty_funding() -> pd.DataFrame:
    """A funding frame with no rows and the contract's dtypes."""
    return pd.DataFrame({"ts": pd.Series(dtype="datetime64[ns, UTC]"),
                         "rate": pd.Series(dtype="float64")})


def normalize_funding(frame: pd.DataFrame, *, what: str = "funding rates") -> pd.DataFrame:
    """Return `frame` as a funding frame: UTC `ts` (microseconds), float64 `rate`, sorted, one row per
    `ts` (a later row of the same `ts` wins). Raises DataError naming the problem and the fix."""
    missing = [c for c in FUNDING_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{what} lack column(s) {', '.join(missing)}: a funding frame needs ts "
                        "(UTC settlement time) and rate (fraction per funding interval)")
    ts = frame["ts"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype) and not pd.api.types.is_datetime64_dtype(ts.dtype):
        try:
            ts = pd.to_datetime(ts)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{what} have unparseable timestamps ({exc}): fix the ts column") from None
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise DataError(f"{what} have timestamps without a zone: localise ts to UTC (e.g. "
                        ".dt.tz_localize('UTC')); the lake stores UTC")
    try:
        rate = pd.to_numeric(frame["rate"], errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError):
        raise DataError(f"{what} column 'rate' holds non-numeric values: clean it first") from None
    stamps = pd.DatetimeIndex(ts).tz_convert("UTC").as_unit("us")
    bad = ~np.isfinite(rate) | stamps.isna()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{what} hold a missing or infinite value at row {i} (ts {stamps[i]}, rate "
                        f"{rate[i]}): drop or fill such rows first")
    big = np.abs(rate) >= MAX_ABS_RATE
    if big.any():
        i = int(np.flatnonzero(big)[0])
        raise DataError(f"{what} hold rate {rate[i]} at {stamps[i]}: rates are fractions per funding "
                        "interval (0.0001 = 0.01%); divide percentages by 100")
    out = pd.DataFrame({"ts": stamps, "rate": rate})
    out = out.sort_values("ts", kind="stable").drop_duplicates("ts", keep="last")
    return out.reset_index(drop=True)


def funding_to_arrow(frame: pd.DataFrame) -> pa.Table:
    """A normalised funding frame in the lake's Arrow schema (ts = timestamp[us, UTC], rate float64)."""
    ts = pd.DatetimeIndex(frame["ts"]).as_unit("us").asi8.astype(np.int64, copy=True)
    return pa.Table.from_arrays(
        [pa.array(ts, type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
         pa.array(frame["rate"].to_numpy(dtype=np.float64), type=pa.float64())],
        names=list(FUNDING_COLUMNS))


def funding_summary(frame: pd.DataFrame) -> dict[str, object]:
    """Rows, first and last settlement, mean rate per interval, and that mean annualised with the
    series' median interval (None where the frame is too short to tell)."""
    n = len(frame)
    first = frame["ts"].iloc[0] if n else None
    last = frame["ts"].iloc[-1] if n else None
    mean = float(frame["rate"].mean()) if n else None
    annual = None
    if n >= 2 and mean is not None:
        step = float(np.median(np.diff(pd.DatetimeIndex(frame["ts"]).as_unit("ns").asi8)))
        if step > 0:
            annual = mean * _YEAR.value / step
    return {"rows": n, "first": first, "last": last, "mean_rate": mean, "mean_annualized": annual}


def expected_events(start: pd.Timestamp, end: pd.Timestamp) -> int:
    """A guess of how many settlements [start, end) holds (8-hourly), to size a progress bar."""
    return max(0, int((end - start) / TYPICAL_INTERVAL))


def describe_funding_sync(results: list[FundingSyncResult]) -> pd.DataFrame:
    """One row per synced symbol: what was fetched and added."""
    return pd.DataFrame([{"series": r.label, "fetched": r.rows_fetched, "added": r.rows_added}
                         for r in results], columns=["series", "fetched", "added"])


__all__ = [
    "FUNDING_COLUMNS",
    "FundingSyncResult",
    "describe_funding_sync",
    "empty_funding",
    "funding_summary",
    "funding_to_arrow",
    "normalize_funding",
]
