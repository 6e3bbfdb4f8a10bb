"""Data quality: find what is wrong with bars, and apply a reject / drop / flag policy per issue kind.

Incoming bars pass through `apply_policy` before the lake stores them; stored bars can be checked
again with `check_bars` (the `workbench data check` command).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import pandas as pd

from workbench.data.bars import PRICE_COLUMNS, ts_micros
from workbench.data.calendar import Calendar, absent, sorted_unique
from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError, DataError, did_you_mean


class IssueKind(StrEnum):
    """Everything the checks look for."""

    MISSING_VALUE = "missing_value"
    NON_POSITIVE_PRICE = "non_positive_price"
    NEGATIVE_VOLUME = "negative_volume"
    OHLC_INCONSISTENT = "ohlc_inconsistent"
    DUPLICATE_TS = "duplicate_ts"
    UNSORTED_TS = "unsorted_ts"
    MISALIGNED_TS = "misaligned_ts"
    OFF_CALENDAR = "off_calendar"
    SPIKE = "spike"
    GAP = "gap"


class TickIssue(StrEnum):
    """What `check_ticks` looks for; flagged, never dropped: ticks are what the venue sent."""

    OUT_OF_ORDER = "out_of_order"
    DUPLICATE_TRADE = "duplicate_trade"
    OUTLIER_PRINT = "outlier_print"
    CROSSED_QUOTE = "crossed_quote"
    LOCKED_QUOTE = "locked_quote"
    CROSSED_BOOK = "crossed_book"
    SEQUENCE_GAP = "sequence_gap"


class Action(StrEnum):
    """What ingest does with an issue: refuse the batch, drop the offending rows, or keep and report."""

    REJECT = "reject"
    DROP = "drop"
    FLAG = "flag"


_DEFAULT_ACTIONS: dict[IssueKind, Action] = {
    IssueKind.MISSING_VALUE: Action.REJECT,
    IssueKind.NON_POSITIVE_PRICE: Action.REJECT,
    IssueKind.NEGATIVE_VOLUME: Action.REJECT,
    IssueKind.OHLC_INCONSISTENT: Action.REJECT,
    IssueKind.DUPLICATE_TS: Action.DROP,
    IssueKind.UNSORTED_TS: Action.FLAG,
    IssueKind.MISALIGNED_TS: Action.REJECT,
    IssueKind.OFF_CALENDAR: Action.FLAG,
    IssueKind.SPIKE: Action.FLAG,
    IssueKind.GAP: Action.FLAG,
}
_DESCRIPTION: dict[IssueKind | TickIssue, str] = {
    IssueKind.MISSING_VALUE: "bars with a missing (NaN) price or volume",
    IssueKind.NON_POSITIVE_PRICE: "bars with a price at or below zero",
    IssueKind.NEGATIVE_VOLUME: "bars with negative volume",
    IssueKind.OHLC_INCONSISTENT: "bars whose high/low do not bound open and close",
    IssueKind.DUPLICATE_TS: "bars repeating an earlier timestamp",
    IssueKind.UNSORTED_TS: "bars out of time order",
    IssueKind.MISALIGNED_TS: "bars whose timestamp is not on the timeframe's grid",
    IssueKind.OFF_CALENDAR: "bars outside the market's sessions",
    IssueKind.SPIKE: "price spikes (robust z-score of log return)",
    IssueKind.GAP: "missing bars against the market calendar",
    TickIssue.OUT_OF_ORDER: "ticks whose exchange time is before the previous tick's, in arrival order",
    TickIssue.DUPLICATE_TRADE: "trades repeating an earlier trade id",
    TickIssue.OUTLIER_PRINT: "trades priced far from the rolling median (robust z-score)",
    TickIssue.CROSSED_QUOTE: "quotes with the bid above the ask",
    TickIssue.LOCKED_QUOTE: "quotes with the bid equal to the ask",
    TickIssue.CROSSED_BOOK: "book snapshots whose best bid is at or above the best ask",
    TickIssue.SEQUENCE_GAP: "book sequence breaks (the collector resynced; see the gaps table)",
}
_UNDROPPABLE = {IssueKind.GAP}


@dataclass(frozen=True, kw_only=True)
class QualityPolicy:
    """Action per issue kind plus the spike threshold; unspecified kinds take the defaults."""

    actions: Mapping[IssueKind, Action] = field(default_factory=lambda: dict(_DEFAULT_ACTIONS))
    spike_z: float = 12.0

    def __post_init__(self) -> None:
        merged = dict(_DEFAULT_ACTIONS)
        merged.update({IssueKind(k): Action(v) for k, v in self.actions.items()})
        for kind in _UNDROPPABLE:
            if merged[kind] is Action.DROP:
                raise ConfigError(f"{kind} cannot be dropped (there is no row): use reject or flag")
        if self.spike_z <= 0:
            raise ConfigError(f"spike_z must be positive, got {self.spike_z}")
        object.__setattr__(self, "actions", merged)

    def action(self, kind: IssueKind) -> Action:
        return self.actions[kind]

    @classmethod
    def parse(cls, spec: str | None, *, spike_z: float | None = None) -> QualityPolicy:
        """Build from `'gap=reject,spike=drop'` (the CLI's --policy form)."""
        actions: dict[IssueKind, Action] = {}
        for part in (spec or "").split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in IssueKind.__members__.values():
                raise ConfigError(
                    f"bad policy entry {part.strip()!r}{did_you_mean(key, [k.value for k in IssueKind])}: "
                    f"write kind=action with kind in {', '.join(IssueKind)}"
                )
            if value not in Action.__members__.values():
                raise ConfigError(f"bad action {value!r} for {key}: use reject, drop or flag")
            actions[IssueKind(key)] = Action(value)
        kwargs = {"spike_z": spike_z} if spike_z is not None else {}
        return cls(actions=actions, **kwargs)


@dataclass(frozen=True)
class Issue:
    """One kind of problem found in a batch: how many rows, what was done, and a few examples."""

    kind: IssueKind | TickIssue
    count: int
    action: Action
    examples: tuple[str, ...] = ()

    def describe(self) -> str:
        ex = f" (first at {self.examples[0]})" if self.examples else ""
        return f"{self.count} {_DESCRIPTION[self.kind]}{ex}"


@dataclass
class QualityReport:
    """What the checks found in one series' bars, and what the policy did about it."""

    label: str
    rows: int
    issues: list[Issue] = field(default_factory=list)
    dropped: int = 0
    unit: str = "bars"

    @property
    def ok(self) -> bool:
        return not self.issues

    def count(self, kind: IssueKind) -> int:
        return sum(i.count for i in self.issues if i.kind == kind)

    def to_frame(self) -> pd.DataFrame:
        rows = [
            {
                "series": self.label,
                "issue": i.kind.value,
                "count": i.count,
                "action": i.action.value,
                "first": i.examples[0] if i.examples else "",
            }
            for i in self.issues
        ]
        return pd.DataFrame(rows, columns=["series", "issue", "count", "action", "first"])

    def merge(self, other: QualityReport) -> QualityReport:
        """Combine reports of consecutive batches of one series."""
        by_kind: dict[IssueKind | TickIssue, Issue] = {i.kind: i for i in self.issues}
        for i in other.issues:
            if i.kind in by_kind:
                prev = by_kind[i.kind]
                by_kind[i.kind] = Issue(i.kind, prev.count + i.count, i.action, prev.examples)
            else:
                by_kind[i.kind] = i
        return QualityReport(
            self.label, self.rows + other.rows, list(by_kind.values()), self.dropped + other.dropped,
            self.unit,
        )

    def __str__(self) -> str:
        if self.ok:
            return f"{self.label}: {self.rows} {self.unit}, no issues"
        lines = [f"{self.label}: {self.rows} {self.unit}"]
        lines += [f"  {i.action.value:>6}  {i.describe()}" for i in self.issues]
        return "\n".join(lines)


def quality_frame(reports: Sequence[QualityReport]) -> pd.DataFrame:
    """Reports of several series as one table: a row per series and issue, and one row saying "none"
    for a series without issues (so every series checked is listed)."""
    frames = [r.to_frame() if r.issues else pd.DataFrame(
        [{"series": r.label, "issue": "none", "count": 0, "action": "", "first": ""}]) for r in reports]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["series", "issue", "count", "action", "first"])
    rows.insert(1, "rows", rows["series"].map({r.label: r.rows for r in reports}))
    return rows


def _examples(ts_us: np.ndarray, mask: np.ndarray, n: int = 3) -> tuple[str, ...]:
    idx = np.flatnonzero(mask)[:n]
    return tuple(str(pd.Timestamp(int(ts_us[i]), unit="us", tz="UTC")) for i in idx)


def _robust_z(ts: np.ndarray, close: np.ndarray, timeframe: Timeframe) -> np.ndarray:
    """Log returns divided by a trailing robust scale (EWM of |r| over ~500 bars, before the bar).

    A trailing local scale keeps volatility clustering from reading as spikes; the global median
    absolute deviation stands in while the window warms up.
    """
    r = np.diff(np.log(close))
    comparable = (np.diff(ts) <= timeframe.micros) if timeframe.seconds < 86400 else (
        np.ones(len(r), dtype=bool))
    absr = np.where(comparable, np.abs(r), np.nan)
    local = pd.Series(absr).ewm(span=500, min_periods=30, ignore_na=True).mean().shift(1)
    scale = local.to_numpy() * 1.2533  # E|r| = sigma * sqrt(2/pi) for normal returns
    rc = r[comparable]
    fallback = 1.4826 * np.median(np.abs(rc - np.median(rc))) if len(rc) else 0.0
    scale = np.where(np.isnan(scale), fallback, scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(comparable & (scale > 0), r / scale, 0.0)
    return np.nan_to_num(z)


def _find(
    frame: pd.DataFrame, timeframe: Timeframe, calendar: Calendar, spike_z: float
) -> tuple[np.ndarray, dict[IssueKind, np.ndarray], int, tuple[str, ...]]:
    """Row masks per issue kind, plus the number of missing bars and examples of gap starts."""
    ts = ts_micros(frame)
    n = len(ts)
    prices = frame[list(PRICE_COLUMNS)].to_numpy(dtype=np.float64)
    vol = frame["volume"].to_numpy(dtype=np.float64)
    o, h, lo, c = prices.T
    masks: dict[IssueKind, np.ndarray] = {}
    masks[IssueKind.MISSING_VALUE] = np.isnan(prices).any(axis=1) | np.isnan(vol)
    with np.errstate(invalid="ignore"):
        masks[IssueKind.NON_POSITIVE_PRICE] = np.any(prices <= 0, axis=1)
        masks[IssueKind.NEGATIVE_VOLUME] = vol < 0
        masks[IssueKind.OHLC_INCONSISTENT] = (h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (
            h < lo
        )
    prev_max = np.maximum.accumulate(ts) if n else ts
    unsorted = np.zeros(n, dtype=bool)
    if n > 1:
        unsorted[1:] = ts[1:] < prev_max[:-1]
    masks[IssueKind.UNSORTED_TS] = unsorted
    # duplicates: every occurrence but the last of a timestamp (the newest row wins)
    order = np.argsort(ts, kind="stable")
    sorted_ts = ts[order]
    dup_sorted = np.zeros(n, dtype=bool)
    if n > 1:
        dup_sorted[:-1] = sorted_ts[:-1] == sorted_ts[1:]
    dup = np.zeros(n, dtype=bool)
    dup[order] = dup_sorted
    masks[IssueKind.DUPLICATE_TS] = dup
    origin = timeframe.origin_micros
    masks[IssueKind.MISALIGNED_TS] = (ts - origin) % timeframe.micros != 0
    aligned = ~masks[IssueKind.MISALIGNED_TS]
    off = np.zeros(n, dtype=bool)
    if not calendar.always_open and aligned.any():
        off[aligned] = ~calendar.is_open_at(ts[aligned], timeframe)
    masks[IssueKind.OFF_CALENDAR] = off
    # spikes: a return far outside the local volatility that the next bar reverses (a bad tick),
    # or one so large it is suspect on its own; returns across gaps/sessions are not compared
    spike = np.zeros(n, dtype=bool)
    valid = ~(masks[IssueKind.MISSING_VALUE] | masks[IssueKind.NON_POSITIVE_PRICE])
    vidx = order[(valid & ~dup)[order]]
    if len(vidx) > 30:
        z = _robust_z(ts[vidx], c[vidx], timeframe)
        big = np.abs(z) > spike_z
        reverted = big[:-1] & (np.abs(z[1:]) > spike_z / 2) & (np.sign(z[:-1]) != np.sign(z[1:]))
        flagged = np.r_[reverted, False] | (np.abs(z) > 4 * spike_z)
        spike[vidx[1:][flagged]] = True
    masks[IssueKind.SPIKE] = spike
    # gaps: expected bars between first and last that are absent
    missing, gap_examples = 0, tuple[str, ...]()
    if n > 1 and aligned.any():
        uniq = sorted_unique(ts[aligned])
        expected = calendar.expected(
            pd.Timestamp(int(uniq[0]), unit="us", tz="UTC"),
            pd.Timestamp(int(uniq[-1]), unit="us", tz="UTC"),
            timeframe,
        )
        gone = absent(expected, uniq)
        missing = int(gone.sum())
        gap_examples = _examples(expected, gone)
    return ts, masks, missing, gap_examples


def _inspect(
    frame: pd.DataFrame, timeframe: Timeframe, calendar: Calendar, label: str,
    policy: QualityPolicy,
) -> tuple[QualityReport, dict[IssueKind, np.ndarray]]:
    ts, masks, missing, gap_examples = _find(frame, timeframe, calendar, policy.spike_z)
    issues = [
        Issue(kind, int(m.sum()), policy.action(kind), _examples(ts, m))
        for kind, m in masks.items()
        if m.any()
    ]
    if missing:
        issues.append(Issue(IssueKind.GAP, missing, policy.action(IssueKind.GAP), gap_examples))
    return QualityReport(label, len(frame), issues), masks


def check_bars(
    frame: pd.DataFrame,
    timeframe: Timeframe | str,
    calendar: Calendar,
    *,
    label: str = "bars",
    policy: QualityPolicy | None = None,
) -> QualityReport:
    """Report every issue in `frame` (nothing is changed); actions shown are the policy's."""
    return _inspect(frame, Timeframe.parse(timeframe), calendar, label, policy or QualityPolicy())[0]


def apply_policy(
    frame: pd.DataFrame,
    timeframe: Timeframe | str,
    calendar: Calendar,
    *,
    label: str = "bars",
    policy: QualityPolicy | None = None,
) -> tuple[pd.DataFrame, QualityReport]:
    """Check `frame`, then reject (DataError), drop rows, or flag per the policy.

    Returns bars sorted by ts with one row per timestamp (the last one given wins), and the report.
    """
    policy = policy or QualityPolicy()
    report, masks = _inspect(frame, Timeframe.parse(timeframe), calendar, label, policy)
    rejected = [i for i in report.issues if i.action is Action.REJECT]
    if rejected:
        first = rejected[0]
        other = "flag" if first.kind in _UNDROPPABLE else "drop|flag"
        example = "flag" if first.kind in _UNDROPPABLE else "drop"
        raise DataError(
            f"{label}: {first.describe()}: fix the data, or set the policy "
            f"{first.kind}={other} (e.g. --policy {first.kind}={example})"
        )
    drop = np.zeros(len(frame), dtype=bool)
    for kind, m in masks.items():
        if policy.action(kind) is Action.DROP:
            drop |= m
    # the lake holds one row per timestamp: later duplicates win even when only flagged
    drop |= masks[IssueKind.DUPLICATE_TS]
    kept = frame.loc[~drop]
    if not kept["ts"].is_monotonic_increasing:
        kept = kept.sort_values("ts", kind="stable")
    report.dropped = int(drop.sum())
    return kept.reset_index(drop=True), report


def check_ticks(frame: pd.DataFrame, kind: str, *, label: str = "ticks", outlier_z: float = 12.0,
                window: int = 51, gaps: pd.DataFrame | None = None) -> QualityReport:
    """Flag what is suspect in one symbol's ticks (as `Lake.read_trades/read_quotes/read_book`
    return them): out-of-order exchange times in arrival order, repeated trade ids, outlier prints
    (robust z of price against a centred rolling median), crossed or locked quotes, crossed book
    snapshots, and the book's sequence breaks recorded in `gaps`. Nothing is dropped."""
    issues: list[Issue] = []

    def add(k: TickIssue, mask: np.ndarray, ts: pd.Series) -> None:
        n = int(mask.sum())
        if n:
            issues.append(Issue(k, n, Action.FLAG, tuple(str(t) for t in ts[mask].iloc[:3])))

    if kind not in ("trades", "quotes", "book"):
        raise ValueError(f"unknown tick table {kind!r}: use trades, quotes or book")
    if len(frame):
        arrival = frame.sort_values("recv_ts", kind="stable")
        ts_ns = arrival["ts"].to_numpy("datetime64[ns]").astype("int64")
        ooo = np.zeros(len(arrival), dtype=bool)
        ooo[1:] = ts_ns[1:] < np.maximum.accumulate(ts_ns)[:-1]
        add(TickIssue.OUT_OF_ORDER, ooo, arrival["ts"])
    if kind == "trades" and len(frame):
        add(TickIssue.DUPLICATE_TRADE, frame["trade_id"].duplicated().to_numpy(), frame["ts"])
        price = frame["price"].astype(float)
        med = price.rolling(window, center=True, min_periods=1).median()
        mad = (price - med).abs().rolling(window, center=True, min_periods=1).median()
        scale = 1.4826 * mad.where(mad > 0, med.abs() * 1e-6)
        add(TickIssue.OUTLIER_PRINT, ((price - med).abs() / scale > outlier_z).to_numpy(), frame["ts"])
    if kind == "quotes" and len(frame):
        add(TickIssue.CROSSED_QUOTE, (frame["bid"] > frame["ask"]).to_numpy(), frame["ts"])
        add(TickIssue.LOCKED_QUOTE, (frame["bid"] == frame["ask"]).to_numpy(), frame["ts"])
    if kind == "book" and len(frame):
        top = frame[frame["level"] == 0]
        bid = top[top["side"] == "bid"].set_index(["ts", "recv_ts"])["price"]
        ask = top[top["side"] == "ask"].set_index(["ts", "recv_ts"])["price"]
        both = pd.concat({"bid": bid, "ask": ask}, axis=1).dropna()
        add(TickIssue.CROSSED_BOOK, (both["bid"] >= both["ask"]).to_numpy(),
            both.index.get_level_values("ts").to_series())
    if gaps is not None and len(gaps):
        seq = gaps[gaps["reason"].str.contains("sequence", na=False)]
        add(TickIssue.SEQUENCE_GAP, np.ones(len(seq), dtype=bool), seq["ts"])
    return QualityReport(label, len(frame), issues, 0, kind)
