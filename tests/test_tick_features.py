"""Tick features: hand-computed trade, quote and book cases, causality, bad input, the lake to a matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bars_factory import random_bars

from workbench import Lake
from workbench.backtest.engine import fingerprint, load_bars
from workbench.data.ticks import SCHEMAS, TickKind, TickWriter
from workbench.errors import ConfigError, DataError
from workbench.features import FeatureCache, FeatureSet, check_feature_lookahead, compute_features
from workbench.features.library import TICK_FEATURES
from workbench.features.ticks import ofi_events, tick_columns
from workbench.models.training import TrainSpec, add_tick_columns, build_dataset, tick_fingerprint

OPEN = pd.Timestamp("2026-01-05", tz="UTC")
MINUTE = pd.Timedelta("1min")


def at(seconds: float) -> pd.Timestamp:
    return OPEN + pd.Timedelta(seconds=seconds)


def bar_index(n: int) -> pd.DatetimeIndex:
    return pd.date_range(OPEN, periods=n, freq="1min", tz="UTC", name="ts")


def trades_of(rows: list[tuple[float, float, str]]) -> pd.DataFrame:
    """(seconds after the first bar's open, size, taker side) rows as the lake returns trades."""
    ts = [at(s) for s, _, _ in rows]
    return pd.DataFrame({"ts": pd.DatetimeIndex(ts, tz="UTC") if ts else pd.DatetimeIndex([], tz="UTC"),
                         "symbol": "BTC/USDT", "trade_id": np.arange(len(rows)), "price": 100.0,
                         "size": [r[1] for r in rows], "side": [r[2] for r in rows]})


def quotes_of(rows: list[tuple[float, float, float, float, float]]) -> pd.DataFrame:
    """(seconds, bid, bid_size, ask, ask_size) rows as the lake returns quotes."""
    return pd.DataFrame({"ts": pd.DatetimeIndex([at(r[0]) for r in rows]), "symbol": "BTC/USDT",
                         **{c: [float(r[k + 1]) for r in rows]
                            for k, c in enumerate(("bid", "bid_size", "ask", "ask_size"))}})


def book_of(snapshots: list[tuple[float, list[float], list[float]]]) -> pd.DataFrame:
    """(seconds, bid sizes by level, ask sizes by level) snapshots as rows of the lake's book table."""
    rows = []
    for seq, (s, bids, asks) in enumerate(snapshots):
        for side, sizes in (("bid", bids), ("ask", asks)):
            for level, size in enumerate(sizes):
                price = 100.0 - level if side == "bid" else 101.0 + level
                rows.append((at(s), at(s), "BTC/USDT", seq, side, level, price, size))
    return pd.DataFrame(rows, columns=["ts", "recv_ts", "symbol", "seq", "side", "level", "price", "size"])


# ---------------------------------------------------------------------- hand-computed cases
@pytest.mark.parametrize(("trades", "expected"), [
    ([], [np.nan, np.nan]),
    ([(1, 1.0, "buy")], [1.0, np.nan]),
    ([(1, 1.0, "buy"), (2, 3.0, "sell")], [-0.5, np.nan]),  # (1 - 3) / 4
    ([(1, 2.0, "buy"), (59.999, 2.0, "sell")], [0.0, np.nan]),
    ([(1, 1.0, "buy"), (60, 5.0, "sell")], [1.0, -1.0]),  # a trade at the close is the next bar's
    ([(1, 1.0, "buy"), (2, 9.0, "")], [1.0, np.nan]),  # an unknown taker side is left out
    ([(30, 1.0, "sell"), (70, 1.0, "buy"), (80, 3.0, "sell")], [-1.0, -0.5]),
])
def test_trade_imbalance_is_signed_over_total_volume_per_bar(trades: list, expected: list) -> None:
    got = tick_columns(bar_index(2), MINUTE, trades=trades_of(trades))
    np.testing.assert_allclose(got["tick_trade_imbalance"].to_numpy(), expected)


def test_trade_imbalance_is_zero_for_a_bar_without_volume_and_nan_for_one_whose_trades_are_missing() -> None:
    bars = pd.DataFrame({"close": 100.0, "volume": [3.0, 0.0, 5.0]}, index=bar_index(3))
    bars = bars.join(tick_columns(bars.index, MINUTE, trades=trades_of([(1, 1.0, "buy"), (2, 2.0, "buy")])))
    x = compute_features(bars, ["trade_imbalance"])["trade_imbalance"].to_numpy()
    np.testing.assert_allclose(x, [1.0, 0.0, np.nan])


@pytest.mark.parametrize(("quotes", "expected"), [
    ([(0, 99, 1, 101, 1)], [0.02, np.nan]),  # (101 - 99) / 100
    # 0.02 for 15 s, then 0.01 for 45 s: (15 x 0.02 + 45 x 0.01) / 60
    ([(0, 99, 1, 101, 1), (15, 99.5, 1, 100.5, 1)], [0.0125, np.nan]),  # no quote in bar 1: unknown
    # the first quote weighs only to the bar's close; the next bar's to its own close
    ([(30, 99, 1, 101, 1), (90, 99.5, 1, 100.5, 1)], [0.02, 0.01]),
    # a one-sided quote (no bid) is skipped: 0.02 for 40 s, 0.01 for 20 s
    ([(0, 99, 1, 101, 1), (20, 0, 0, 101, 1), (40, 99.5, 1, 100.5, 1)], [1 / 60, np.nan]),
    ([(60, 99, 1, 101, 1)], [np.nan, 0.02]),  # a quote at the close is the next bar's
])
def test_spread_is_the_time_weighted_relative_spread_of_the_bar(quotes: list, expected: list) -> None:
    got = tick_columns(bar_index(2), MINUTE, quotes=quotes_of(quotes))
    np.testing.assert_allclose(got["tick_spread"].to_numpy(), expected)


# (bid, bid size, ask, ask size) before and after one update, and Cont-Kukanov-Stoikov's e_n
OFI_CASES = [
    ((100, 5, 101, 4), (100, 7, 101, 4), 2.0),  # bid queue grows: +(7 - 5)
    ((100, 7, 101, 4), (100.5, 3, 101, 4), 3.0),  # bid improves: + the new bid size
    ((100.5, 3, 101, 4), (100, 6, 101, 4), -3.0),  # bid falls back: - the old bid size
    ((100, 6, 101, 4), (100, 6, 100.8, 2), -2.0),  # ask improves: - the new ask size
    ((100, 6, 100.8, 2), (100, 6, 101, 9), 2.0),  # ask falls back: + the old ask size
    ((100, 6, 101, 9), (100, 6, 101, 10), -1.0),  # ask queue grows: -(10 - 9)
    ((100, 6, 101, 9), (100, 4, 101, 12), -5.0),  # both queues: (4 - 6) - (12 - 9)
]


@pytest.mark.parametrize(("before", "after", "e"), OFI_CASES)
def test_each_best_quote_update_contributes_the_papers_e_n(before: tuple, after: tuple, e: float) -> None:
    b, bs, a, as_ = (np.array([x, y], dtype=float) for x, y in zip(before, after, strict=True))
    np.testing.assert_allclose(ofi_events(b, bs, a, as_), [0.0, e])


def test_ofi_sums_the_bars_events_over_its_mean_depth() -> None:
    states = [OFI_CASES[0][0], *(after for _, after, _ in OFI_CASES[:6])]
    quotes = quotes_of([(k, *s) for k, s in enumerate(states)])
    got = tick_columns(bar_index(1), MINUTE, quotes=quotes)["tick_ofi"].iloc[0]
    flow = sum(e for _, _, e in OFI_CASES[:6])  # 2 + 3 - 3 - 2 + 2 - 1 = 1
    depth = np.mean([(s[1] + s[3]) / 2 for s in states])  # (39 + 37) / 2 / 7
    assert flow == 1.0 and got == pytest.approx(flow / depth) and got == pytest.approx(7 / 38)
    # a bar's first update is compared with the quote the bar opened with (the previous bar's last)
    two = tick_columns(bar_index(2), MINUTE, quotes=quotes_of([(30, 100, 5, 101, 4), (70, 100, 8, 101, 4)]))
    np.testing.assert_allclose(two["tick_ofi"].to_numpy(), [0.0, 3.0 / 6.0])  # e = 8 - 5, depth (8 + 4) / 2


def test_book_pressure_is_the_bid_share_of_the_top_levels_at_the_close_minus_a_half() -> None:
    book = book_of([(10, [1, 2, 3], [3, 1, 1]),   # bar 0's snapshot
                    (60, [2, 1], [1, 3])])       # at bar 0's close: bar 1's (two levels: the third counts 0)
    bars = pd.DataFrame({"close": 100.0}, index=bar_index(4))
    bars = bars.join(tick_columns(bars.index, MINUTE, book=book))
    X = compute_features(bars, ["book_pressure(1)", "book_pressure(2)", "book_pressure(levels=3)"])
    expected = [[1 / 4 - 0.5, 3 / 7 - 0.5, 6 / 11 - 0.5],
                [2 / 3 - 0.5, 3 / 7 - 0.5, 3 / 7 - 0.5],
                [np.nan] * 3, [np.nan] * 3]  # no snapshot within a bar length of the close: unknown
    np.testing.assert_allclose(X.to_numpy(), expected)
    assert list(X.columns) == ["book_pressure_1", "book_pressure_2", "book_pressure_3"]
    longer = tick_columns(bars.index, MINUTE, book=book, book_max_age=pd.Timedelta("2min"))
    np.testing.assert_allclose(longer["tick_bid_depth_2"].to_numpy(), [3, 3, 3, np.nan])


# ---------------------------------------------------------------------- causality
def random_ticks(n_bars: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    span = n_bars * 60
    t = np.sort(rng.uniform(0, span, 8 * n_bars))
    trades = trades_of([(s, float(rng.uniform(0.1, 2)), str(rng.choice(["buy", "sell"]))) for s in t])
    tq = np.sort(rng.uniform(0, span, 10 * n_bars))
    bid = 100 + np.round(np.cumsum(rng.normal(0, 0.05, tq.size)), 1)
    quotes = quotes_of([(s, b, rng.integers(1, 9), b + 0.1 * rng.integers(1, 4), rng.integers(1, 9))
                        for s, b in zip(tq, bid, strict=True)])
    tb = np.sort(rng.choice(np.arange(0, span, 7.5), 6 * n_bars, replace=False))
    book = book_of([(s, list(rng.uniform(1, 5, 5)), list(rng.uniform(1, 5, 5))) for s in tb])
    return {"trades": trades, "quotes": quotes, "book": book}


def test_removing_the_ticks_after_a_bar_leaves_its_value_unchanged() -> None:
    index = bar_index(30)
    ticks = random_ticks(30)
    full = tick_columns(index, MINUTE, **ticks)
    assert full.notna().mean().min() > 0.5
    for cut in (0, 7, 18, 29):
        close = index[cut] + MINUTE
        kept = {k: f[f["ts"] < close] for k, f in ticks.items()}
        part = tick_columns(index, MINUTE, **kept)
        pd.testing.assert_frame_equal(part.iloc[: cut + 1], full.iloc[: cut + 1])


def test_every_tick_feature_passes_the_look_ahead_check_on_bars_with_ticks() -> None:
    bars = random_bars(bar_index(120), seed=1).set_index("ts")
    bars = bars.join(tick_columns(pd.DatetimeIndex(bars.index), MINUTE, **random_ticks(120, seed=2)))
    fs = FeatureSet.of(*TICK_FEATURES, "ofi|zscore(20)", "spread|rank(20)", "book_pressure(3)", name="ticks")
    report = check_feature_lookahead(bars, fs, cuts=5)
    assert report.ok, report.summary()


# ---------------------------------------------------------------------- bad input
def test_a_tick_feature_on_bars_without_ticks_is_refused_in_one_line() -> None:
    bars = random_bars(bar_index(50)).set_index("ts")
    with pytest.raises(DataError, match=r"feature ofi needs the collector's quotes aggregated per bar "
                                        r"\(column tick_ofi\), which these bars do not carry") as err:
        compute_features(bars, ["ret(1)", "ofi|zscore(20)"])
    assert "\n" not in str(err.value) and "or drop the feature" in str(err.value)
    book = book_of([(5, [1, 2], [2, 1])])
    shallow = bars.join(tick_columns(pd.DatetimeIndex(bars.index), MINUTE, book=book))
    with pytest.raises(DataError, match=r"book_pressure\(5\) needs 5 book levels, but the recorded snapshots "
                                        r"hold 2: use book_pressure\(2\)") as err:
        compute_features(shallow, ["book_pressure(5)"])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="did you mean ofi"):
        FeatureSet.of("ofii")
    with pytest.raises(ConfigError, match="longer than the bars' spacing"):
        tick_columns(bar_index(3), pd.Timedelta("5min"), trades=trades_of([]))
    with pytest.raises(DataError, match="has no bid_size, ask_size column"):
        tick_columns(bar_index(3), MINUTE, quotes=quotes_of([(1, 99, 1, 101, 1)]).drop(columns=["bid_size",
                                                                                                "ask_size"]))


# ---------------------------------------------------------------------- the lake to a matrix
def as_rows(frame: pd.DataFrame, kind: TickKind) -> list[tuple[object, ...]]:
    """A frame's rows in the tick table's column order (times in ns, received 1 ms later), to write."""
    ts = frame["ts"].to_numpy("datetime64[ns]").astype(np.int64)
    rows = frame.assign(ts=ts, recv_ts=ts + 1_000_000)[SCHEMAS[kind].names]
    return list(rows.itertuples(index=False, name=None))


def record(lake: Lake, minutes: int, *, seed: int) -> None:
    """A collector's few minutes of BTC/USDT trades, quotes and top-5 books, in the lake."""
    ticks = random_ticks(minutes, seed)
    with TickWriter(lake.ticks, "binance", segment_seconds=3600) as w:
        for kind in (TickKind.TRADES, TickKind.QUOTES, TickKind.BOOK):
            w.extend(kind, as_rows(ticks[kind.value], kind))


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path / "data")
    for k, sym in enumerate(("BTC/USDT", "ETH/USDT")):
        lake.write_bars("binance", sym, "1m", random_bars(bar_index(90), seed=k))
    record(lake, 90, seed=3)  # ETH/USDT has bars only
    return lake


def test_training_joins_the_lakes_ticks_and_the_cache_key_follows_them(lake: Lake, tmp_path: Path) -> None:
    features = ["ret(1)", "ofi|zscore(20)", "spread", "trade_imbalance", "book_pressure(3)|rank(10)"]
    fs = FeatureSet.of(*features)
    frames = add_tick_columns(lake, load_bars(lake, ["BTC/USDT"], "1m", source="binance"), fs, "1m")
    bars = frames["BTC/USDT"]
    assert bars.attrs["source"] == "binance" and len(bars) == 90
    # the same columns as from the lake's tables directly (bar opens at 00:00 .. 01:29, one minute each)
    end = OPEN + 90 * MINUTE
    direct = tick_columns(pd.DatetimeIndex(bars.index), MINUTE,
                          trades=lake.read_trades("binance", "BTC/USDT", OPEN, end),
                          quotes=lake.read_quotes("binance", "BTC/USDT", OPEN, end),
                          book=lake.read_book("binance", "BTC/USDT", OPEN - MINUTE, end))
    pd.testing.assert_frame_equal(bars[list(direct.columns)], direct)
    cache = FeatureCache(tmp_path / "features")
    fp = tick_fingerprint(fingerprint(frames), frames)
    assert fp != fingerprint(frames)
    X, lineage = cache.get(frames, fs, fp)
    assert list(X.columns) == ["ret_1", "ofi_z20", "spread", "trade_imbalance", "book_pressure_3_r10"]
    assert X.iloc[30:].notna().all().all() and not lineage["cached"]
    assert cache.get(frames, fs, fp)[1]["cached"]
    # a late trade of a bar already seen changes its imbalance: another key, so nothing stale is reused
    with TickWriter(lake.ticks, "binance", segment_seconds=3600) as w:
        w.append(TickKind.TRADES, (OPEN.value + 5 * 10**9, OPEN.value + 6 * 10**9, "BTC/USDT", 10**6, 100.0,
                                   50.0, "buy"))
    again = add_tick_columns(lake, load_bars(lake, ["BTC/USDT"], "1m", source="binance"), fs, "1m")
    fp2 = tick_fingerprint(fingerprint(again), again)
    assert fp2 != fp and not cache.get(again, fs, fp2)[1]["cached"]
    # and the dataset training builds from them
    spec = TrainSpec.model_validate({"name": "ticks", "symbols": ["BTC/USDT"], "timeframe": "1m",
                                     "features": features,
                                     "label": {"kind": "fixed_horizon", "horizon": 2}})
    ds = build_dataset(again, spec, fingerprint=fp2, cache=cache)
    assert list(ds.X.columns) == list(X.columns) and 40 < len(ds.X) < 90 and ds.lineage["features_cached"]


def test_a_symbol_whose_ticks_the_lake_does_not_hold_is_refused_in_one_line(lake: Lake) -> None:
    frames = load_bars(lake, ["BTC/USDT", "ETH/USDT"], "1m", source="binance")
    assert add_tick_columns(lake, frames, FeatureSet.of("ret(1)"), "1m") is frames  # no tick feature: as is
    with pytest.raises(DataError, match=r"feature ofi needs the collector's quotes for ETH/USDT 1m from "
                                        r"binance between .* which the lake does not hold; record them with "
                                        r"`workbench collect --streams quotes` or drop the feature") as err:
        add_tick_columns(lake, frames, FeatureSet.of("ret(1)", "ofi"), "1m")
    assert "\n" not in str(err.value)
