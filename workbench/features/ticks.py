"""The collector's ticks aggregated per bar: the inputs of the tick features (order flow, spread, book).

`tick_columns(bars.index, bar_length, trades=..., quotes=..., book=...)` gives bar-aligned columns
(``tick_...``) from frames as `Lake.read_trades` / `read_quotes` / `read_book` return them; join them
to the bars and the tick features of `workbench.features.library` read them like any bar column.
Features take frames, never the lake: the caller (`workbench.models.training.add_tick_columns`)
reads the ticks.

Causality: a tick belongs to the bar whose ``[open, open + bar_length)`` holds its exchange time
``ts``, so a tick at exactly a bar's close is the next bar's and every value is known at its bar's
close. Ticks that fall between bars (a gap in the bars) belong to none. Everything is vectorised
(``searchsorted`` to find each tick's bar, ``bincount`` to sum per bar): no Python loop per tick.

Columns (NaN where the bar has no tick of that kind):

- ``tick_spread``: the relative quoted spread ``(ask - bid) / mid``, ``mid = (ask + bid) / 2``, of
  the bar's quotes, weighted by how long each stood within the bar (from its ``ts`` to the next
  quote or the bar's close, whichever is first). A quote without a positive, finite bid and ask
  (a one-sided book) is skipped.
- ``tick_ofi``: order-flow imbalance (Cont, Kukanov & Stoikov 2014) of the bar's best bid/ask
  updates, ``sum(e_n) / mean((bid_size_n + ask_size_n) / 2)``: net order flow at the top of the book
  in units of the bar's mean top-of-book depth, so it compares across symbols. With ``P``, ``q``
  the best price and size of each side after update n:
  ``e_n = 1[Pb_n >= Pb_n-1] qb_n - 1[Pb_n <= Pb_n-1] qb_n-1 - 1[Pa_n <= Pa_n-1] qa_n
  + 1[Pa_n >= Pa_n-1] qa_n-1``. As in the paper, an update is compared with the one before it,
  which for a bar's first update is the quote it opened with (an earlier tick: still causal);
  the first quote given has nothing to compare with and counts 0.
- ``tick_trade_imbalance``: ``(buy volume - sell volume) / (buy volume + sell volume)`` of the bar's
  trades, by the taker's side (a trade with another side is left out). NaN when the bar has no
  trade: the `trade_imbalance` feature reads 0 there when the bar's volume is 0 (nothing traded),
  and NaN when the bar traded but the lake holds none of its trades (the collector was not running).
- ``tick_bid_depth_k`` / ``tick_ask_depth_k`` for k = 1 .. the snapshots' depth: the size summed over
  the top k levels of each side in the last book snapshot before the bar's close, when that
  snapshot is at most `book_max_age` old at the close (default one bar length: a snapshot taken
  during the bar or at its open). The collector stores every change of the top N, so an older
  snapshot is usually still the book; the limit makes an outage, or bars after the recording
  stopped, read NaN rather than a stale book. A level missing from a snapshot counts 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from workbench.data.ticks import TickKind
from workbench.errors import ConfigError, DataError

TICK_PREFIX = "tick_"
SPREAD = "tick_spread"
OFI = "tick_ofi"
TRADE_IMBALANCE = "tick_trade_imbalance"
_REQUIRED: dict[TickKind, tuple[str, ...]] = {
    TickKind.TRADES: ("ts", "size", "side"),
    TickKind.QUOTES: ("ts", "bid", "bid_size", "ask", "ask_size"),
    TickKind.BOOK: ("ts", "recv_ts", "side", "level", "size"),
}


def depth_columns(levels: int) -> tuple[str, str]:
    """The bid and ask depth columns over the top `levels` levels of the book."""
    return f"{TICK_PREFIX}bid_depth_{levels}", f"{TICK_PREFIX}ask_depth_{levels}"


def book_levels(columns: Iterable[Any]) -> int:
    """How many book levels a set of columns carries depth for (0 when none)."""
    have = {str(c) for c in columns}
    k = 0
    while all(c in have for c in depth_columns(k + 1)):
        k += 1
    return k


def tick_columns(index: pd.DatetimeIndex, bar_length: pd.Timedelta, *, trades: pd.DataFrame | None = None,
                 quotes: pd.DataFrame | None = None, book: pd.DataFrame | None = None,
                 book_max_age: pd.Timedelta | None = None) -> pd.DataFrame:
    """The tick columns of one symbol's bars (see the module docstring), indexed like `index`:
    the trades give ``tick_trade_imbalance``, the quotes ``tick_spread`` and ``tick_ofi``, the book
    the depth columns; a kind not given adds no column."""
    opens = _bar_opens(index, bar_length)
    length = int(bar_length / pd.Timedelta(1, "ns"))
    cols: dict[str, np.ndarray] = {}
    if trades is not None:
        cols[TRADE_IMBALANCE] = trade_imbalance(opens, length, *_trade_arrays(trades))
    if quotes is not None:
        ts, bid, bid_size, ask, ask_size = _quote_arrays(quotes)
        cols[SPREAD] = quoted_spread(opens, length, ts, bid, ask)
        cols[OFI] = order_flow_imbalance(opens, length, ts, bid, bid_size, ask, ask_size)
    if book is not None:
        age = length if book_max_age is None else int(book_max_age / pd.Timedelta(1, "ns"))
        bid_depth, ask_depth = book_depth(opens + length, age, *_book_arrays(book))
        for k in range(bid_depth.shape[1]):
            b, a = depth_columns(k + 1)
            cols[b], cols[a] = bid_depth[:, k], ask_depth[:, k]
    return pd.DataFrame(cols, index=index)


# ---------------------------------------------------------------------- array functions
def bar_of(ts: np.ndarray, opens: np.ndarray, length: int) -> np.ndarray:
    """The position of the bar holding each tick time (int64 ns), -1 where no bar does."""
    if opens.shape[0] == 0:
        return np.full(ts.shape[0], -1, dtype=np.int64)
    j = np.searchsorted(opens, ts, side="right") - 1
    inside = (j >= 0) & (ts < opens[np.maximum(j, 0)] + length)
    return np.where(inside, j, -1)


def _per_bar(j: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    ok = j >= 0
    return np.bincount(j[ok], weights=values[ok], minlength=n).astype(np.float64)


def trade_imbalance(opens: np.ndarray, length: int, ts: np.ndarray, size: np.ndarray, sign: np.ndarray
                    ) -> np.ndarray:
    """(buy - sell) / (buy + sell) volume per bar; `sign` is +1 buy, -1 sell, 0 unknown."""
    n = opens.shape[0]
    j = bar_of(ts, opens, length)
    net = _per_bar(j, size * sign, n)
    total = _per_bar(j, size * np.abs(sign), n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, net / total, np.nan)


def quoted_spread(opens: np.ndarray, length: int, ts: np.ndarray, bid: np.ndarray, ask: np.ndarray
                  ) -> np.ndarray:
    """Time-weighted mean of (ask - bid) / mid per bar: each quote weighs the time to the next
    quote or the bar's close, whichever comes first (so no later tick changes a closed bar)."""
    n = opens.shape[0]
    j = bar_of(ts, opens, length)
    close = opens[np.maximum(j, 0)] + length
    nxt = np.empty_like(ts)
    nxt[:-1] = ts[1:]
    nxt[-1:] = np.iinfo(np.int64).max
    weight = (np.minimum(nxt, close) - ts).astype(np.float64)
    rel = (ask - bid) / ((ask + bid) / 2.0)
    total = _per_bar(j, weight, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, _per_bar(j, weight * rel, n) / total, np.nan)


def ofi_events(bid: np.ndarray, bid_size: np.ndarray, ask: np.ndarray, ask_size: np.ndarray) -> np.ndarray:
    """Cont-Kukanov-Stoikov e_n of each best bid/ask update against the one before (0 for the first)."""
    e = np.zeros(bid.shape[0])
    pb, pb0, qb, qb0 = bid[1:], bid[:-1], bid_size[1:], bid_size[:-1]
    pa, pa0, qa, qa0 = ask[1:], ask[:-1], ask_size[1:], ask_size[:-1]
    e[1:] = (np.where(pb >= pb0, qb, 0.0) - np.where(pb <= pb0, qb0, 0.0)
             - np.where(pa <= pa0, qa, 0.0) + np.where(pa >= pa0, qa0, 0.0))
    return e


def order_flow_imbalance(opens: np.ndarray, length: int, ts: np.ndarray, bid: np.ndarray,
                         bid_size: np.ndarray, ask: np.ndarray, ask_size: np.ndarray) -> np.ndarray:
    """Sum of e_n over the bar's updates over the bar's mean top-of-book depth (bid + ask size) / 2."""
    n = opens.shape[0]
    j = bar_of(ts, opens, length)
    flow = _per_bar(j, ofi_events(bid, bid_size, ask, ask_size), n)
    depth = _per_bar(j, (bid_size + ask_size) / 2.0, n)
    count = _per_bar(j, np.ones(ts.shape[0]), n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((count > 0) & (depth > 0), flow / (depth / count), np.nan)


def book_depth(closes: np.ndarray, max_age: int, ts: np.ndarray, recv_ts: np.ndarray, side: np.ndarray,
               level: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative bid and ask size over the top 1..L levels (columns) of the last snapshot before
    each bar's close (rows), NaN where none is at most `max_age` old. Rows of one snapshot share
    (ts, recv_ts) and come in time order; `side` is 0 bid, 1 ask, -1 neither (left out)."""
    n = closes.shape[0]
    if ts.shape[0] == 0:
        return np.empty((n, 0)), np.empty((n, 0))
    first = np.r_[True, (ts[1:] != ts[:-1]) | (recv_ts[1:] != recv_ts[:-1])]
    snap = np.cumsum(first) - 1  # each row's snapshot
    snap_ts = ts[first]
    k = np.searchsorted(snap_ts, closes, side="left") - 1  # the last snapshot strictly before the close
    fresh = (k >= 0) & (closes - snap_ts[np.maximum(k, 0)] <= max_age)
    levels = int(level.max()) + 1
    # only the snapshots some bar uses: memory grows with the bars, not with the book's updates
    used, bar_slot = np.unique(k[fresh], return_inverse=True)
    slot_of_snap = np.full(snap_ts.shape[0], -1)
    slot_of_snap[used] = np.arange(used.shape[0])
    slot = slot_of_snap[snap]
    rows = (slot >= 0) & (side >= 0)
    sizes = np.zeros((2, used.shape[0], levels))
    np.add.at(sizes, (side[rows], slot[rows], level[rows]), size[rows])
    cum = np.cumsum(sizes, axis=2)
    bid = np.full((n, levels), np.nan)
    ask = np.full((n, levels), np.nan)
    bid[fresh], ask[fresh] = cum[0][bar_slot], cum[1][bar_slot]
    return bid, ask


# ---------------------------------------------------------------------- frames to arrays
def _bar_opens(index: pd.DatetimeIndex, bar_length: pd.Timedelta) -> np.ndarray:
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise DataError("tick columns need the bars' tz-aware DatetimeIndex (bar open times in UTC)")
    if not index.is_monotonic_increasing or not index.is_unique:
        raise DataError("tick columns: bar times must be sorted and unique; sort and deduplicate them first")
    if not isinstance(bar_length, pd.Timedelta) or bar_length <= pd.Timedelta(0):
        raise ConfigError(f"tick columns: bar_length must be a positive pd.Timedelta, got {bar_length!r}")
    opens = index.as_unit("ns").asi8
    if opens.shape[0] > 1 and int(np.diff(opens).min()) < bar_length.value:
        step = pd.Timedelta(int(np.diff(opens).min()), "ns")
        raise ConfigError(f"tick columns: bar_length {bar_length} is longer than the bars' spacing ({step}), "
                          "so bars would overlap; give the bars' timeframe")
    return opens


def _ns(frame: pd.DataFrame, kind: TickKind, column: str = "ts") -> np.ndarray:
    ts = pd.DatetimeIndex(frame[column])
    if ts.tz is None:
        raise DataError(f"the {kind.value} frame's {column} column must be tz-aware (UTC), as the lake "
                        "returns it")
    return ts.as_unit("ns").asi8


def _checked(frame: pd.DataFrame, kind: TickKind) -> tuple[pd.DataFrame, np.ndarray]:
    """`frame`, checked for the columns `kind` needs, in time order (the lake's reads already are),
    and its times in int64 ns."""
    missing = [c for c in _REQUIRED[kind] if c not in frame.columns]
    if missing:
        raise DataError(f"the {kind.value} frame has no {', '.join(missing)} column(s); pass it as "
                        f"Lake.read_{kind.value} returns it")
    if "symbol" in frame.columns and frame["symbol"].nunique() > 1:
        some = ", ".join(map(str, frame["symbol"].unique()[:3]))
        raise DataError(f"the {kind.value} frame holds several symbols ({some}...); pass one symbol's ticks "
                        "per call")
    ts = _ns(frame, kind)
    if ts.shape[0] > 1 and not (np.diff(ts) >= 0).all():
        frame = frame.sort_values(["ts", "recv_ts"] if "recv_ts" in frame.columns else ["ts"], kind="stable")
        ts = _ns(frame, kind)
    return frame, ts


def _trade_arrays(trades: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, ts = _checked(trades, TickKind.TRADES)
    side = t["side"].to_numpy(dtype=object)
    sign = (side == "buy").astype(np.float64) - (side == "sell").astype(np.float64)
    return ts, t["size"].to_numpy(dtype=np.float64), sign


def _quote_arrays(quotes: pd.DataFrame) -> tuple[np.ndarray, ...]:
    q, ts = _checked(quotes, TickKind.QUOTES)
    bid, ask = q["bid"].to_numpy(dtype=np.float64), q["ask"].to_numpy(dtype=np.float64)
    ok = np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask > 0)  # a one-sided book has no spread
    return (ts[ok], bid[ok], q["bid_size"].to_numpy(dtype=np.float64)[ok], ask[ok],
            q["ask_size"].to_numpy(dtype=np.float64)[ok])


def _book_arrays(book: pd.DataFrame) -> tuple[np.ndarray, ...]:
    b, ts = _checked(book, TickKind.BOOK)
    recv = _ns(b, TickKind.BOOK, "recv_ts")
    if ts.shape[0] > 1 and not ((ts[1:] > ts[:-1]) | ((ts[1:] == ts[:-1]) & (recv[1:] >= recv[:-1]))).all():
        b = b.sort_values(["ts", "recv_ts"], kind="stable")
        ts, recv = _ns(b, TickKind.BOOK), _ns(b, TickKind.BOOK, "recv_ts")
    level = b["level"].to_numpy(dtype=np.int64)
    if level.shape[0] and level.min() < 0:
        raise DataError("the book frame has a negative level; levels count from 0 (the best price)")
    side = b["side"].to_numpy(dtype=object)
    code = np.where(side == "bid", 0, np.where(side == "ask", 1, -1))  # another side is left out
    return ts, recv, code, level, b["size"].to_numpy(dtype=np.float64)


__all__ = ["OFI", "SPREAD", "TICK_PREFIX", "TRADE_IMBALANCE", "book_depth", "book_levels", "depth_columns",
           "order_flow_imbalance", "quoted_spread", "tick_columns", "trade_imbalance"]
