"""Labels: triple barrier against hand cases and a plain loop; fixed horizon, meta-labels, weights."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from workbench.errors import ConfigError, DataError
from workbench.models import fixed_horizon, meta_labels, triple_barrier, uniqueness_weights

START = pd.Timestamp("2024-01-01", tz="UTC")


def ohlc(rows: list[tuple[float, float, float, float]]) -> pd.DataFrame:
    """Hourly bars from (open, high, low, close) rows."""
    index = pd.date_range(START, periods=len(rows), freq="h", name="ts")
    frame = pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=index, dtype=np.float64)
    frame["volume"] = 1.0
    return frame


def walk(n: int, seed: int) -> pd.DataFrame:
    """A random walk with wide bars and occasional opening gaps, so every barrier kind occurs."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(rng.normal(0.0, 0.01, n).cumsum())
    gap = np.where(rng.uniform(size=n) < 0.15, rng.normal(0.0, 0.02, n), rng.normal(0.0, 0.001, n))
    open_ = np.r_[100.0, close[:-1]] * np.exp(gap)
    high = np.maximum(open_, close) * np.exp(rng.exponential(0.002, n))
    low = np.minimum(open_, close) * np.exp(-rng.exponential(0.002, n))
    index = pd.date_range(START, periods=n, freq="h", name="ts")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": 1.0}, index=index)


# ---------------------------------------------------------------- triple barrier: hand-computed cases

# Entry close 100 at bar 0 and trgt 0.01 (given, not estimated): with pt = sl = 1 the upper barrier
# is 100·e^0.01 = 101.005 and the lower one 100·e^-0.01 = 99.005; horizon 4 bars (vertical at bar 4).
FLAT = (100.0, 100.3, 99.7, 100.0)
UP, DOWN = 100 * math.exp(0.01), 100 * math.exp(-0.01)
CASES = [
    # id, bars 1.., side, pt, sl, min_ret, expected (t1 bar, ret, label, barrier) or None (dropped)
    ("pt by a high", [FLAT, (100.0, 101.2, 99.9, 100.8), FLAT, FLAT], 1, 1.0, 1.0, 0.0,
     (2, 0.01, 1, "pt")),
    ("sl by a low", [FLAT, FLAT, (100.0, 100.2, 98.9, 99.5), FLAT], 1, 1.0, 1.0, 0.0,
     (3, -0.01, -1, "sl")),
    ("both in one bar: the stop wins", [FLAT, (100.0, 101.5, 98.5, 100.0), FLAT, FLAT], 1, 1.0, 1.0, 0.0,
     (2, -0.01, -1, "sl")),
    ("gap up through pt fills at the open", [FLAT, (102.0, 102.5, 101.8, 102.2), FLAT, FLAT], 1, 1.0, 1.0,
     0.0, (2, math.log(1.02), 1, "pt")),
    ("gap down through sl fills at the open", [(98.0, 98.4, 97.5, 98.2), FLAT, FLAT, FLAT], 1, 1.0, 1.0,
     0.0, (1, math.log(0.98), -1, "sl")),
    ("gap up through pt, then down to sl: the open came first", [FLAT, (102.0, 102.5, 98.0, 98.5), FLAT,
     FLAT], 1, 1.0, 1.0, 0.0, (2, math.log(1.02), 1, "pt")),
    ("pt and sl scale the target separately", [FLAT, (100.0, 101.5, 99.9, 101.0), FLAT,
     (100.0, 100.1, 98.9, 99.0)], 1, 2.0, 1.0, 0.0, (4, -0.01, -1, "sl")),
    ("vertical, up", [FLAT, FLAT, FLAT, (100.0, 100.8, 99.9, 100.5)], 1, 1.0, 1.0, 0.0,
     (4, math.log(1.005), 1, "vertical")),
    ("vertical, down", [FLAT, FLAT, FLAT, (100.0, 100.1, 99.2, 99.6)], 1, 1.0, 1.0, 0.0,
     (4, math.log(0.996), -1, "vertical")),
    ("vertical within min_ret is 0", [FLAT, FLAT, FLAT, (100.0, 100.8, 99.9, 100.5)], 1, 1.0, 1.0, 0.006,
     (4, math.log(1.005), 0, "vertical")),
    ("short: a fall is the profit", [FLAT, (100.0, 100.2, 98.9, 99.2), FLAT, FLAT], -1, 1.0, 1.0, 0.0,
     (2, 0.01, 1, "pt")),
    ("short: a rise is the stop", [(100.0, 101.2, 99.9, 100.9), FLAT, FLAT, FLAT], -1, 1.0, 1.0, 0.0,
     (1, -0.01, -1, "sl")),
    ("short: both in one bar, the stop (upper) wins", [FLAT, (100.0, 101.5, 98.5, 100.0), FLAT, FLAT], -1,
     1.0, 1.0, 0.0, (2, -0.01, -1, "sl")),
    ("short: gap down fills the profit at the open", [FLAT, FLAT, (97.0, 97.5, 96.5, 97.2), FLAT], -1,
     1.0, 1.0, 0.0, (3, -math.log(0.97), 1, "pt")),
    ("short: pt 2 puts the profit at 100·e^-0.02", [FLAT, (100.0, 100.1, 98.9, 99.0),
     (99.0, 99.1, 97.9, 98.0), FLAT], -1, 2.0, 1.0, 0.0, (3, 0.02, 1, "pt")),
    ("short: vertical ret is side-adjusted", [FLAT, FLAT, FLAT, (100.0, 100.1, 99.2, 99.6)], -1, 1.0, 1.0,
     0.0, (4, -math.log(0.996), 1, "vertical")),
    ("vertical barrier beyond the data: dropped", [FLAT, (100.0, 101.2, 99.9, 100.8), FLAT], 1, 1.0, 1.0,
     0.0, None),
]


@pytest.mark.parametrize(("rows", "side", "pt", "sl", "min_ret", "expected"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_triple_barrier_hand_cases(rows: list, side: int, pt: float, sl: float, min_ret: float,
                                   expected: tuple | None) -> None:
    bars = ohlc([(100.0, 100.0, 100.0, 100.0), *rows])
    trgt = pd.Series([0.01], index=bars.index[:1])
    sides = pd.Series([side], index=bars.index[:1])
    out = triple_barrier(bars, horizon=4, pt=pt, sl=sl, min_ret=min_ret, side=sides, trgt=trgt)
    if expected is None:
        assert out.empty
        return
    t1, ret, label, barrier = expected
    assert list(out.index) == [bars.index[0]]
    row = out.iloc[0]
    assert row["t1"] == bars.index[t1]
    assert row["ret"] == pytest.approx(ret, abs=1e-12)
    assert row["label"] == label
    assert row["barrier"] == barrier
    assert row["trgt"] == 0.01
    assert row["side"] == side


def test_barriers_are_where_the_hand_cases_say() -> None:
    # the constants the table's bars are built around
    assert 101.0 < UP < 101.2 and 98.9 < DOWN < 99.1


def test_without_side_every_bar_with_a_target_is_a_long_event() -> None:
    bars = ohlc([(100.0, 100.0, 100.0, 100.0), FLAT, (100.0, 101.2, 99.9, 100.8), FLAT, FLAT, FLAT])
    out = triple_barrier(bars, horizon=4, pt=1.0, sl=1.0, trgt=pd.Series(0.01, index=bars.index))
    assert list(out.index) == list(bars.index[:2])  # bars 2.. have their vertical barrier beyond the data
    assert list(out["barrier"]) == ["pt", "pt"] and "side" not in out.columns


def test_an_infinite_multiplier_disables_its_barrier() -> None:
    bars = ohlc([(100.0, 100.0, 100.0, 100.0), FLAT, (100.0, 101.5, 99.9, 101.4), FLAT, FLAT])
    out = triple_barrier(bars, horizon=4, pt=math.inf, sl=1.0, trgt=pd.Series([0.01], index=bars.index[:1]))
    assert out["barrier"].iloc[0] == "vertical"


# ---------------------------------------------------------------- triple barrier: a plain loop


def reference_triple_barrier(bars: pd.DataFrame, horizon: int, pt: float, sl: float, vol_window: int,
                             side: pd.Series | None, min_ret: float) -> pd.DataFrame:
    """The definition, one event and one bar at a time."""
    o, h, lo, c = (bars[k].to_list() for k in ("open", "high", "low", "close"))
    n = len(c)
    rows, index = [], []
    for t in range(vol_window, n - horizon):
        s = 1 if side is None else side.get(bars.index[t], 0)
        if s not in (1, -1):
            continue
        rets = [math.log(c[k] / c[k - 1]) for k in range(t - vol_window + 1, t + 1)]
        sigma = float(np.std(rets, ddof=1))
        profit = c[t] * math.exp(s * pt * sigma)
        stop = c[t] * math.exp(-s * sl * sigma)
        upper, lower = max(profit, stop), min(profit, stop)
        found = None
        for j in range(t + 1, t + horizon + 1):
            if o[j] >= upper:
                found = (j, o[j], upper == profit)
            elif o[j] <= lower:
                found = (j, o[j], lower == profit)
            elif h[j] >= upper and lo[j] <= lower:
                found = (j, stop, False)
            elif h[j] >= upper:
                found = (j, upper, upper == profit)
            elif lo[j] <= lower:
                found = (j, lower, lower == profit)
            if found:
                break
        if found:
            j, price, is_profit = found
            ret = s * math.log(price / c[t])
            label, barrier = (1, "pt") if is_profit else (-1, "sl")
        else:
            j = t + horizon
            ret = s * math.log(c[j] / c[t])
            label, barrier = (0 if abs(ret) <= min_ret else (1 if ret > 0 else -1)), "vertical"
        index.append(bars.index[t])
        rows.append({"t1": bars.index[j], "ret": ret, "label": label, "barrier": barrier, "trgt": sigma})
    return pd.DataFrame(rows, index=pd.DatetimeIndex(index, name="ts"))


@pytest.mark.parametrize(("seed", "horizon", "pt", "sl", "vol_window", "with_side", "min_ret"), [
    (1, 10, 2.0, 2.0, 20, False, 0.0),
    (2, 15, 3.0, 2.0, 10, True, 0.002),
    (3, 5, 1.0, 1.5, 30, True, 0.0),
])
def test_triple_barrier_matches_a_plain_loop(seed: int, horizon: int, pt: float, sl: float, vol_window: int,
                                             with_side: bool, min_ret: float) -> None:
    bars = walk(400, seed)
    side = None
    if with_side:
        rng = np.random.default_rng(seed + 100)
        side = pd.Series(rng.choice([-1, 0, 1], len(bars)), index=bars.index)
    got = triple_barrier(bars, horizon=horizon, pt=pt, sl=sl, vol_window=vol_window, side=side,
                         min_ret=min_ret)
    want = reference_triple_barrier(bars, horizon, pt, sl, vol_window, side, min_ret)
    assert len(want) > 100
    assert set(want["barrier"]) == {"pt", "sl", "vertical"}
    horizontal = want["barrier"] != "vertical"
    mult = np.where(want["barrier"] == "pt", pt, sl)[horizontal]
    gapped = want["ret"][horizontal].abs() > mult * want["trgt"][horizontal] + 1e-9
    assert gapped.sum() >= 5  # some fills at the open of a bar that gapped through a barrier
    assert got.index.equals(want.index)
    assert (got["t1"].to_numpy() == want["t1"].to_numpy()).all()
    np.testing.assert_allclose(got["ret"], want["ret"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["trgt"], want["trgt"], rtol=0, atol=1e-12)
    assert (got["label"].to_numpy() == want["label"].to_numpy()).all()
    assert (got["barrier"].to_numpy() == want["barrier"].to_numpy()).all()
    if side is not None:
        assert (got["side"].to_numpy() == side.loc[got.index].to_numpy()).all()


# ---------------------------------------------------------------- fixed horizon, meta-labels


def test_fixed_horizon_is_a_shifted_log_return() -> None:
    bars = walk(300, 4)
    out = fixed_horizon(bars, 12, threshold=0.005)
    ret = np.log(bars["close"].shift(-12) / bars["close"]).dropna()
    assert out.index.equals(ret.index) and len(out) == 300 - 12
    np.testing.assert_allclose(out["ret"], ret, rtol=0, atol=1e-12)
    want = np.where(ret > 0.005, 1, np.where(ret < -0.005, -1, 0))
    assert (out["label"].to_numpy() == want).all() and set(want) == {-1, 0, 1}
    assert (out["t1"].to_numpy() == bars.index.to_series().shift(-12).dropna().to_numpy()).all()


def test_fixed_horizon_longer_than_the_data_labels_nothing() -> None:
    assert fixed_horizon(walk(5, 0), 10).empty


def test_meta_labels_say_whether_the_side_paid() -> None:
    bars = walk(400, 5)
    side = pd.Series(np.random.default_rng(5).choice([-1, 0, 1], len(bars)), index=bars.index)
    meta = meta_labels(bars, side, horizon=10, pt=1.0, sl=1.0)
    tb = triple_barrier(bars, horizon=10, pt=1.0, sl=1.0, side=side)
    assert meta.index.equals(tb.index) and set(meta["label"]) == {0, 1}
    assert (meta["label"] == (tb["ret"] > 0).astype(int)).all()
    assert (meta["side"] != 0).all() and (np.sign(meta["ret"]) == np.where(meta["label"] == 1, 1, -1)).all()


# ---------------------------------------------------------------- uniqueness weights


def test_uniqueness_of_two_half_overlapping_labels_and_a_lone_one() -> None:
    bars_index = pd.date_range(START, periods=10, freq="h", name="ts")
    # A on bars 0..3, B on bars 2..5 (they share half of their bars), C alone on 6..9:
    # concurrency 1 1 2 2 1 1 1 1 1 1, so uniqueness 0.75, 0.75, 1 (sum 2.5, normalised to 3)
    index = bars_index[[0, 2, 6]]
    t1 = pd.Series(bars_index[[3, 5, 9]], index=index)
    w = uniqueness_weights(index, t1, bars_index)
    np.testing.assert_allclose(w.to_numpy(), [0.75 * 3 / 2.5, 0.75 * 3 / 2.5, 3 / 2.5], rtol=1e-12)
    assert w.sum() == pytest.approx(3.0)


def test_non_overlapping_labels_weigh_one() -> None:
    bars_index = pd.date_range(START, periods=12, freq="h", name="ts")
    index = bars_index[[0, 3, 6, 9]]
    w = uniqueness_weights(index, pd.Series(bars_index[[2, 5, 8, 11]], index=index), bars_index)
    np.testing.assert_allclose(w.to_numpy(), 1.0, rtol=1e-12)


def test_uniqueness_weights_sum_to_the_number_of_labels() -> None:
    bars = walk(400, 6)
    tb = triple_barrier(bars, horizon=20, pt=2.0, sl=2.0)
    w = uniqueness_weights(tb.index, tb["t1"], bars.index)
    assert w.sum() == pytest.approx(len(tb)) and w.index.equals(tb.index)
    assert w.min() > 0 and w.std() > 0.05  # labels ending early overlap less


# ---------------------------------------------------------------- bad inputs


BAD_PARAMETERS = [
    (lambda b: triple_barrier(b, horizon=0, pt=1, sl=1), r"horizon must be a positive number of bars, got 0"),
    (lambda b: triple_barrier(b, horizon=2.5, pt=1, sl=1), r"horizon must be .* got 2\.5"),
    (lambda b: triple_barrier(b, horizon=5, pt=0, sl=1), r"pt must be a multiple of the target > 0"),
    (lambda b: triple_barrier(b, horizon=5, pt=1, sl=-1), r"sl must be .* got -1"),
    (lambda b: triple_barrier(b, horizon=5, pt=1, sl=1, vol_window=1), r"vol_window must be .* >= 2"),
    (lambda b: triple_barrier(b, horizon=5, pt=1, sl=1, min_ret=-0.1), r"min_ret must be .* >= 0"),
    (lambda b: triple_barrier(b, horizon=5, pt=1, sl=1, side=pd.Series(2, index=b.index)),
     r"side must be \+1 \(long\), -1 \(short\) or 0"),
    (lambda b: triple_barrier(b, horizon=5, pt=1, sl=1, side=pd.Series(1, index=b.index.shift(1, "s"))),
     r"side has 50 timestamp\(s\) that are not bars"),
    (lambda b: triple_barrier(b, horizon=5, pt=1, sl=1, side=[1, -1]), r"side must be a pandas Series"),
    (lambda b: triple_barrier(b, horizon=5, pt=1, sl=1, trgt=pd.Series(-0.01, index=b.index)),
     r"trgt must be >= 0"),
    (lambda b: fixed_horizon(b, -3), r"fixed_horizon: horizon must be a positive number of bars"),
    (lambda b: fixed_horizon(b, 3, threshold=-1), r"threshold must be a finite number >= 0"),
    (lambda b: meta_labels(b, None, horizon=5, pt=1, sl=1), r"meta_labels: side is required"),
    (lambda b: uniqueness_weights(b.index[:3], pd.Series(b.index[:2]), b.index),
     r"one end time per label \(3\)"),
    (lambda b: uniqueness_weights(b.index[1:3], pd.Series(b.index[:2], index=b.index[1:3]), b.index),
     r"t1 is earlier than its start"),
]


@pytest.mark.parametrize(("call", "match"), BAD_PARAMETERS, ids=[m for _, m in BAD_PARAMETERS])
def test_bad_parameters_are_one_line_config_errors(call, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        call(walk(50, 0))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("mangle", "match"), [
    (lambda b: b.drop(columns="high"), r"bars lack column\(s\) \['high'\]"),
    (lambda b: b.iloc[::-1], r"not sorted by unique timestamps"),
    (lambda b: pd.concat([b, b.iloc[-1:]]), r"not sorted by unique timestamps"),
    (lambda b: b.tz_convert("America/New_York"), r"must be indexed in UTC, got tz=America/New_York"),
    (lambda b: b.tz_localize(None), r"must be indexed in UTC, got tz=None"),
    (lambda b: b.reset_index(drop=True), r"need a DatetimeIndex `ts`"),
    (lambda b: b.assign(low=np.where(np.arange(len(b)) == 7, np.nan, b["low"])), r"NaN or infinite low"),
])
def test_bad_bars_are_one_line_data_errors(mangle, match: str) -> None:
    with pytest.raises(DataError, match=match) as info:
        triple_barrier(mangle(walk(30, 0)), horizon=5, pt=1, sl=1)
    assert "\n" not in str(info.value)


def test_a_ts_column_is_accepted() -> None:
    bars = walk(60, 2)
    a = triple_barrier(bars, horizon=5, pt=1, sl=1)
    b = triple_barrier(bars.reset_index(), horizon=5, pt=1, sl=1)
    pd.testing.assert_frame_equal(a, b)
