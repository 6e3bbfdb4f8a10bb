"""Liquidity universes (`workbench.backtest.universe`) and benchmarks (`workbench.backtest.benchmark`):
membership equals a table worked out by hand (a late listing, a delisting, a missing bar, ties), sees
nothing after its bar, loads from the lake what it covers; targets and allocator fits respect it; a
benchmark is a symbol's or a custom series' price scaled to the strategy's cash, carried forward; bad
input is one line each."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from bars_factory import random_bars
from reference_sim import Settings
from reference_weights import simulate_weights as reference

from workbench.backtest import Costs
from workbench.backtest.allocators import Allocator
from workbench.backtest.benchmark import benchmark_equity
from workbench.backtest.holdings import held_weights, rebalance_metrics
from workbench.backtest.metrics import TRADE_KEYS, compute_metrics
from workbench.backtest.portfolio_risk import RiskLimits
from workbench.backtest.rebalance import allocate, allocation_weights, simulate_weights
from workbench.backtest.universe import LiquidityUniverse, apply_universe, fittable, load_universe
from workbench.data.lake import Lake
from workbench.errors import ConfigError, DataError

DAYS = pd.date_range("2024-01-01", periods=8, freq="D", tz="UTC")


def _bars(rows: list[int], close: float | list[float], volume: float | list[float]) -> pd.DataFrame:
    idx = DAYS[rows]
    c = np.broadcast_to(np.asarray(close, dtype=float), (len(rows),))
    return pd.DataFrame({"open": c, "high": c, "low": c, "close": c,
                         "volume": np.broadcast_to(np.asarray(volume, dtype=float), (len(rows),))}, index=idx)


def hand_table() -> dict[str, pd.DataFrame]:
    """Dollar volume (close x volume) by bar:
    A  100 100 100 300 100 100  -  100   (no bar at 6)
    D  100 100 100 100 100 100 100 100   (the same liquidity as A at most bars: a tie)
    B   -   -  1000 ... 1000             (lists at bar 2)
    C  150 150 150 150 150  -   -   -    (delists after bar 4)"""
    return {
        "A": _bars([0, 1, 2, 3, 4, 5, 7], 10.0, [10, 10, 10, 30, 10, 10, 10]),
        "D": _bars(list(range(8)), 20.0, 5.0),
        "B": _bars(list(range(2, 8)), 1.0, 1000.0),
        "C": _bars(list(range(5)), 2.0, 75.0),
    }


# window 2, min_history 2, top 2; trailing means over each symbol's own last 2 bars:
# bar 0: nobody has 2 own bars
# bar 1-2: A 100, D 100, C 150 (B has 1 own bar at 2)   -> C, then A (ties: the first listed)
# bar 3-4: A 200, D 100, B 1000, C 150                 -> B, A
# bar 5:   A 200 (300, 100 at bars 3/4 -> 100 at 4, 5: (100+100)/2 = 100), see below
EXPECTED = {  # members per bar, worked out by hand from the table
    0: set(),
    1: {"A", "C"},
    2: {"A", "C"},
    3: {"B", "A"},      # A (100+300)/2 = 200 > C 150 > D 100
    4: {"B", "A"},      # A (300+100)/2 = 200
    5: {"B", "A"},      # A 100 ties D 100: A is listed first; C has stopped trading
    6: {"B", "D"},      # A has no bar here
    7: {"B", "A"},      # A's own last two bars are 5 and 7: (100+100)/2 = 100, ties D, listed first
}


def test_membership_equals_the_table_by_hand() -> None:
    u = LiquidityUniverse(top=2, window=2, min_history=2)
    frames = hand_table()
    m = u.membership(frames)
    assert list(m.columns) == ["A", "D", "B", "C"] and m.index.equals(DAYS)
    got = {i: {s for s in m.columns if m.iloc[i][s]} for i in range(len(DAYS))}
    assert got == EXPECTED
    dv = u.dollar_volume(frames)
    assert dv["A"].iloc[3] == 200.0 and dv["A"].iloc[7] == 100.0 and math.isnan(dv["A"].iloc[6])
    assert math.isnan(dv["B"].iloc[2]) and dv["B"].iloc[3] == 1000.0 and math.isnan(dv["C"].iloc[5])
    # ties go to the first listed: D before A takes A's place wherever they tie
    swapped = u.membership({s: frames[s] for s in ("D", "A", "B", "C")})
    assert {s for s in swapped.columns if swapped.iloc[1][s]} == {"D", "C"}
    assert {s for s in swapped.columns if swapped.iloc[5][s]} == {"B", "D"}
    assert {s for s in swapped.columns if swapped.iloc[3][s]} == {"B", "A"}  # no tie there
    # min_history defaults to the window; a longer one delays every entry
    assert not LiquidityUniverse(top=2, window=2, min_history=3).membership(frames).iloc[:2].any().any()
    counts = LiquidityUniverse(top=4, window=2).membership(frames).sum(axis=1).tolist()
    assert counts == [0, 3, 3, 4, 4, 3, 2, 3]


def _random_frames(seed: int, n: int = 120, holes: bool = True) -> dict[str, pd.DataFrame]:
    """Six symbols listing and delisting at random bars (`holes`: with a tenth of their bars missing)."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC")
    out = {}
    for j in range(6):
        a = int(rng.integers(0, n // 3))
        b = int(rng.integers(2 * n // 3, n + 1))
        size = int((0.9 if holes else 1.0) * (b - a))
        keep = np.sort(rng.choice(np.arange(a, b), size=size, replace=False))
        f = random_bars(idx[keep], seed=seed * 10 + j).set_index("ts")
        f["volume"] *= rng.uniform(0.5, 3.0)
        out[f"S{j}"] = f
    return out


@pytest.mark.parametrize("seed", range(4))
def test_membership_sees_nothing_after_its_bar(seed: int) -> None:
    frames = _random_frames(seed)
    u = LiquidityUniverse(top=3, window=10, min_history=15)
    base = u.membership(frames)
    assert base.any(axis=1).sum() > 50  # the test compares something
    rng = np.random.default_rng(seed)
    for t in rng.choice(base.index[20:-5], size=4, replace=False):
        moved = {}
        for j, (s, f) in enumerate(frames.items()):
            g = f.copy()
            after = g.index > t
            g.loc[after, "volume"] *= rng.uniform(0.0, 20.0, int(after.sum()))  # a different future
            if j == 0:
                g = g[~after | (g.index > t + pd.Timedelta(days=5))]  # ... with bars missing
            if j == 1:
                g = g[g.index <= t]  # ... or delisted right after t
            moved[s] = g
        changed = u.membership(moved)
        pd.testing.assert_frame_equal(changed.loc[:t], base.loc[:t])
        assert not changed.loc[t:].iloc[1:].equals(base.loc[t:].iloc[1:])  # the future did change


# ------------------------------------------------------------------ the lake
def test_load_universe_takes_what_the_lake_covers(tmp_path) -> None:
    lake = Lake(tmp_path)
    days = pd.date_range("2023-01-01", periods=60, freq="D", tz="UTC")
    spans = {"AAA": (0, 60), "LATE": (20, 60), "GONE": (0, 30), "OLD": (0, 10)}
    for j, (s, (a, b)) in enumerate(spans.items()):
        lake.write_bars("synthetic", s, "1d", random_bars(days[a:b], seed=j))
    frames = load_universe(lake, "1d", start="2023-01-15")
    assert sorted(frames) == ["AAA", "GONE", "LATE"]  # OLD ended before the range: left out
    assert frames["LATE"].index[0] == days[20] and frames["GONE"].index[-1] == days[29]
    assert frames["AAA"].index[0] == days[14] and frames["AAA"].index[-1] == days[59]
    some = load_universe(lake, "1d", ["GONE", "OLD"], end="2023-01-05")
    assert list(some) == ["GONE", "OLD"] and len(some["OLD"]) == 4
    with pytest.raises(ConfigError, match=r"no 1d bars of 'GONR' from synthetic \(did you mean 'GONE'\?\)"):
        load_universe(lake, "1d", ["AAA", "GONR"])
    with pytest.raises(DataError, match="none of the 1 candidates has 1d bars in the range"):
        load_universe(lake, "1d", ["OLD"], start="2023-02-01")


# ------------------------------------------------------------------ targets
def test_targets_on_the_union_timeline_keep_their_gross_on_the_members() -> None:
    frames = hand_table()
    m = LiquidityUniverse(top=2, window=2, min_history=2).membership(frames)
    t = pd.DataFrame(np.nan, index=m.index, columns=m.columns)
    t.iloc[1] = [0.4, 0.3, np.nan, 0.2]   # members A, C
    t.iloc[3] = [0.5, 0.25, 0.25, 0.0]    # members B, A
    t.iloc[6] = [0.6, 0.0, 0.0, 0.0]      # members B, D: they hold nothing -> cash
    t.iloc[7] = [-0.2, 0.3, 0.5, np.nan]  # a short: the gross (1.0) is kept
    got = apply_universe(t, m)
    assert isinstance(got, pd.DataFrame)
    want = pd.DataFrame(np.nan, index=m.index, columns=m.columns)
    want.iloc[1] = [0.4 * 0.9 / 0.6, 0.0, 0.0, 0.2 * 0.9 / 0.6]
    want.iloc[3] = [0.5 / 0.75, 0.0, 0.25 / 0.75, 0.0]
    want.iloc[6] = [0.0, 0.0, 0.0, 0.0]
    want.iloc[7] = [-0.2 / 0.7, 0.0, 0.5 / 0.7, 0.0]
    pd.testing.assert_frame_equal(got, want)


def test_targets_by_symbol_land_on_own_bars() -> None:
    frames = hand_table()
    m = LiquidityUniverse(top=2, window=2, min_history=2).membership(frames)
    targets = {s: pd.Series(np.nan, index=f.index) for s, f in frames.items()}
    # bar 5: B and A are members, D is not: its 0.5 goes to A and B in proportion
    targets["D"].iloc[5], targets["A"].iloc[5], targets["B"].iloc[3] = 0.5, 0.3, 0.1  # (B's own bar 3)
    # bar 6 (A has no bar): D and B are members; A's 0 lands on its next own bar, 7
    targets["D"].iloc[6], targets["B"].iloc[4] = 0.2, 0.6
    got = apply_universe(targets, m)
    assert isinstance(got, dict) and list(got) == list(frames)
    assert got["D"].iloc[5] == 0.0 and got["A"].iloc[5] == pytest.approx(0.9 * 0.75)
    assert got["B"].iloc[3] == pytest.approx(0.9 * 0.25)
    assert got["D"].iloc[6] == pytest.approx(0.2) and got["B"].iloc[4] == pytest.approx(0.6)
    assert got["A"].index.equals(frames["A"].index) and got["A"].iloc[6] == 0.0  # own bar 6 is bar 7
    assert got["A"].iloc[:5].isna().all() and got["C"].isna().all()  # C has no bar at or after 5


def test_allocator_fits_only_members_with_history() -> None:
    frames = _random_frames(7, n=160)
    u = LiquidityUniverse(top=3, window=10, min_history=10)
    alloc = Allocator(method="inverse_vol", window=20)
    with pytest.raises(DataError, match="have missing values in the allocator's window"):
        allocation_weights(frames, alloc, "weekly")  # symbols listing late: no fit without a universe
    got = allocation_weights(frames, alloc, "weekly", universe=u)
    # by hand: the union closes' returns, the members at each weekly bar that have 20 returns
    closes = pd.DataFrame({s: f["close"] for s, f in frames.items()}).sort_index().ffill()
    returns = closes.pct_change().iloc[1:]
    member = u.membership(frames)
    week = closes.index.isocalendar()["week"].to_numpy(dtype=np.int64)
    weekly = np.flatnonzero(np.r_[True, week[1:] != week[:-1]])
    fitted = 0
    for b in [int(b) for b in weekly if b >= 20]:
        past = returns.iloc[:b]
        ok = [s for s in frames if member.iloc[b][s] and past[s].iloc[-20:].notna().all()]
        want = pd.Series(0.0, index=list(frames))
        if ok:
            want[ok] = alloc.weights(past[ok]).to_numpy()
            fitted += 1
        t = closes.index[b]
        for s, f in frames.items():
            own = f.index[f.index >= t]
            if len(own):
                assert got[s].loc[own[0]] == pytest.approx(want[s], abs=1e-12), (t, s)
        assert set(ok) <= {s for s in frames if member.iloc[b][s]}
    assert fitted >= 10
    assert not fittable(returns.iloc[:40], np.zeros(6, dtype=bool), 20).any()  # no member: nothing to fit
    # risk limits see the same members (a longer risk window waits for their longer history)
    limited = allocate(frames, alloc, "weekly", universe=u, risk=RiskLimits(vol_target=0.1, window=30))
    assert limited.contributions.shape[1] == 6 and limited.report.shape[0] == len(limited.contributions)


def test_a_delisted_symbol_in_a_universe_backtests_like_the_reference() -> None:
    frames = _random_frames(11, n=150, holes=False)
    for f in frames.values():
        f["open"] = f["close"].shift(1).fillna(f["close"])
    u = LiquidityUniverse(top=3, window=10)
    w = allocation_weights(frames, Allocator(method="equal", window=5), "weekly", universe=u)
    ended = [s for s, f in frames.items() if f.index[-1] < max(g.index[-1] for g in frames.values())]
    assert ended and any(w[s].notna().any() for s in ended)  # a symbol held targets before it stopped
    got = simulate_weights(frames, w, init_cash=10_000.0, costs=Costs(fees=0.001, slippage=0.0005))
    want = reference(frames, {s: w[s].tolist() for s in frames},
                     Settings(init_cash=10_000.0, fees=0.001, slippage=0.0005))
    np.testing.assert_allclose(got.equity.to_numpy(), want.value, rtol=1e-9)
    mine, ref = got.orders, want.orders
    assert len(mine) == len(ref) > 0
    np.testing.assert_allclose(mine["size"].to_numpy(), [o.size for o in ref], rtol=1e-9)
    assert mine["symbol"].tolist() == [o.symbol for o in ref]


# ------------------------------------------------------------------ benchmarks
def test_benchmark_from_a_symbol_and_a_custom_series() -> None:
    frames = _random_frames(3, n=60)
    idx = frames["S0"].index
    equity = pd.Series(np.linspace(100.0, 120.0, len(idx)), index=idx)
    first = frames["S2"]
    if first.index[0] > idx[0]:
        first = pd.concat([frames["S0"].iloc[:1], first])  # make it cover the start
    got = benchmark_equity(equity, "S2", frames={**frames, "S2": first}, init_cash=100.0)
    price = first["close"].reindex(first.index.union(idx)).ffill().reindex(idx)
    np.testing.assert_allclose(got.to_numpy(), 100.0 * price.to_numpy() / price.iloc[0], rtol=1e-12)
    # a custom series known at irregular times: carried forward, never read ahead
    hour = pd.Timedelta(hours=1)
    custom = pd.Series([10.0, 12.0, 9.0], index=[idx[0] - hour, idx[3] + hour, idx[-1]])
    got = benchmark_equity(equity, custom, init_cash=100.0)
    want = np.full(len(idx), 100.0)
    want[4:] = 120.0
    want[-1] = 90.0
    np.testing.assert_allclose(got.to_numpy(), want)
    assert got.index.equals(idx) and got.iloc[0] == 100.0


def test_book_metrics_against_a_benchmark() -> None:
    frames = _random_frames(5, n=90, holes=False)
    w = allocation_weights(frames, Allocator(method="equal", window=5), "weekly",
                           universe=LiquidityUniverse(top=2, window=5))
    res = simulate_weights(frames, w, init_cash=1000.0)
    bench = benchmark_equity(res.equity, pd.Series(np.linspace(50, 60, 200),
                                                   index=pd.date_range("2023-12-01", periods=200, tz="UTC")),
                             init_cash=1000.0)
    m = rebalance_metrics(res, frames, calendar="24/7", benchmark=bench)
    traded = float((res.orders["size"] * res.orders["price"]).sum())
    gross = held_weights(res, frames).abs().sum(axis=1).fillna(0.0).to_numpy()
    want = compute_metrics(res.equity, 1000.0, 365.0, traded_value=traded, benchmark=bench, exposure=gross)
    want = {k: v for k, v in want.items() if k not in TRADE_KEYS and k != "n_open_trades"}
    assert m.keys() == want.keys()
    assert all(m[k] == want[k] or (math.isnan(m[k]) and math.isnan(want[k])) for k in m)
    r = res.equity.to_numpy() / np.r_[1000.0, res.equity.to_numpy()[:-1]] - 1
    b = bench.to_numpy() / np.r_[1000.0, bench.to_numpy()[:-1]] - 1
    assert m["beta"] == pytest.approx(np.polyfit(b, r, 1)[0], rel=1e-9)
    same = rebalance_metrics(res, frames, calendar="24/7", benchmark=res.equity.rename("benchmark"))
    assert same["beta"] == 1.0 and same["tracking_error"] == 0.0 and math.isnan(same["information_ratio"])


# ------------------------------------------------------------------ bad input
def _one() -> dict[str, pd.DataFrame]:
    return {"A": _bars([0, 1, 2], 1.0, 1.0)}


def _eq() -> pd.Series:
    return pd.Series(100.0, index=pd.date_range("2024-01-01", periods=10, freq="D", tz="UTC"))


BAD = [
    ("top < 1", ConfigError, "universe top=0 must be a whole number >= 1", lambda: LiquidityUniverse(top=0)),
    ("top not whole", ConfigError, "universe top=1.5", lambda: LiquidityUniverse(top=1.5)),  # type: ignore[arg-type]
    ("window < 1", ConfigError, "universe window=0 must be a whole number >= 1",
     lambda: LiquidityUniverse(top=2, window=0)),
    ("min_history < 1", ConfigError, "universe min_history=0",
     lambda: LiquidityUniverse(top=2, min_history=0)),
    ("no volume", DataError, "bars of X lack volume",
     lambda: LiquidityUniverse(top=1).membership({"X": _bars([0, 1], 1.0, 1.0).drop(columns="volume")})),
    ("unknown benchmark symbol", ConfigError, r"unknown benchmark symbol 'SPX' \(did you mean 'SPY'\?\)",
     lambda: benchmark_equity(_eq(), "SPX", frames={"SPY": _bars([0, 1], 1.0, 1.0)}, init_cash=1.0)),
    ("benchmark starts late", DataError, "starts at 2024-01-03.*does not cover the span",
     lambda: benchmark_equity(_eq(), pd.Series([1.0, 2.0], index=DAYS[2:4]), init_cash=1.0)),
    ("benchmark ends early", DataError, "ends at 2024-01-03.*does not cover the span",
     lambda: benchmark_equity(_eq(), pd.Series([1.0, 1.0, 2.0], index=DAYS[2:5] - pd.Timedelta(days=2)),
                              init_cash=1.0)),
    ("coarser benchmark bars", ConfigError, "coarser than the equity's",
     lambda: benchmark_equity(_eq(), _bars([0, 2, 4, 6], 1.0, 1.0).set_axis(
         pd.date_range("2023-12-31", periods=4, freq="3D", tz="UTC")), init_cash=1.0)),
    ("naive benchmark", ConfigError, "disagree on time zones",
     lambda: benchmark_equity(_eq(), pd.Series([1.0], index=[pd.Timestamp("2023-12-01")]), init_cash=1.0)),
    ("misaligned benchmark", ConfigError, "benchmark must be an equity Series on the book's bars",
     lambda: rebalance_metrics(simulate_weights(_one(), {"A": [1.0, np.nan, np.nan]}), _one(),
                               calendar="24/7", benchmark=_eq())),
]


@pytest.mark.parametrize(("what", "exc", "message", "call"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line(what: str, exc: type[Exception], message: str, call) -> None:
    with pytest.raises(exc, match=message) as err:
        call()
    assert "\n" not in str(err.value), what
