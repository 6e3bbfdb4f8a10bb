"""The engine against the independent reference simulator (tests/reference_sim.py) on random cases.

Every case draws random-walk bars with gaps between a close and the next open, sparse random
signals on all four arrays, random stop distances (some NaN), random costs, both fills, all three
sizings, all directions and sometimes an exposure cap, then requires the engine and the reference
to produce the same orders, the same round trips and the same value curve to 1e-9 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import reference_sim as ref

SEEDS = range(48)
REL = 1e-9


# ---------------------------------------------------------------- random cases

def random_bars(rng: np.random.Generator, n: int, symbols: list[str]) -> dict[str, pd.DataFrame]:
    """Valid OHLC random walks; ~6 % of opens gap a few percent away from the previous close."""
    index = pd.date_range("2023-01-02", periods=n, freq="1D", tz="UTC")
    out = {}
    for sym in symbols:
        price = float(rng.uniform(20.0, 300.0))
        vol = float(rng.uniform(0.005, 0.025))
        opens, highs, lows, closes = [], [], [], []
        prev_close = price
        for _ in range(n):
            gap = rng.normal(0.0, 0.04) if rng.random() < 0.06 else rng.normal(0.0, vol / 10)
            o = prev_close * math.exp(gap)
            c = o * math.exp(rng.normal(0.0, vol))
            hi = max(o, c) * (1 + rng.exponential(vol / 2))
            lo = min(o, c) * (1 - min(rng.exponential(vol / 2), 0.5))
            opens.append(o)
            highs.append(hi)
            lows.append(lo)
            closes.append(c)
            prev_close = c
        out[sym] = pd.DataFrame({"open": opens, "high": highs, "low": lows, "close": closes,
                                 "volume": rng.uniform(100.0, 1000.0, n)}, index=index)
    return out


def random_stops(rng: np.random.Generator, n: int, low: float, high: float, p_present: float) -> np.ndarray:
    """Absent (all NaN), one scalar for every bar, or per-bar values with some NaN."""
    if rng.random() > p_present:
        return np.full(n, np.nan)
    if rng.random() < 0.3:
        return np.full(n, rng.uniform(low, high))
    values = rng.uniform(low, high, n)
    values[rng.random(n) < rng.uniform(0.0, 0.4)] = np.nan
    return values


def random_case(seed: int) -> tuple[dict[str, pd.DataFrame], dict[str, dict], ref.Settings]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(150, 320))
    symbols = ["AAA", "BBB", "CCC"][: int(rng.integers(1, 4))]
    bars = random_bars(rng, n, symbols)
    sizing = ["fixed", "risk", "volatility"][seed % 3]
    settings = ref.Settings(
        fees=float(rng.choice([0.0, rng.uniform(0.0, 0.003)])),
        slippage=float(rng.choice([0.0, rng.uniform(0.0, 0.002)])),
        slippage_vol=float(rng.uniform(0.0, 0.3)) if rng.random() < 0.4 else 0.0,
        vol_window=int(rng.choice([5, 10, 20])),
        fill=str(rng.choice(["next_open", "close"])),
        sizing=sizing,
        fraction=None if rng.random() < 0.5 else float(rng.uniform(0.2, 1.0)),
        risk=float(rng.uniform(0.002, 0.02)),
        target_vol=float(rng.uniform(0.05, 0.5)),
        atr_window=int(rng.choice([5, 14])),
        periods_per_year=float(rng.choice([252.0, 365.0])),
        direction=str(rng.choice(["long", "short", "both"])),
        init_cash=float(rng.choice([10_000.0, 100_000.0, 1_234_567.0])),
        max_exposure=1.0 if rng.random() < 0.6 else float(rng.uniform(0.2, 0.9)),
    )
    if sizing == "fixed" and settings.fraction is not None:  # a fraction above the cap is an error
        settings.max_exposure = max(settings.max_exposure, settings.fraction)
    if rng.random() < 0.3:  # longs on margin, with interest
        settings.max_exposure = float(rng.uniform(1.2, 3.0))
        settings.fraction = None if rng.random() < 0.5 else float(rng.uniform(0.2, settings.max_exposure))
        settings.margin_rate = float(rng.uniform(0.0, 0.3))
    if rng.random() < 0.4:  # lots and minimums
        settings.lot = float(rng.choice([1.0, 0.5, 0.01]))
        settings.min_qty = float(rng.choice([0.0, 2.0]))
        settings.min_notional = float(rng.choice([0.0, 500.0]))
    signals = {}
    for sym in symbols:
        density = rng.uniform(0.02, 0.10)
        sig = {key: rng.random(n) < density for key in ref.SIGNAL_KEYS}
        if sizing == "risk":  # risk sizing needs a stop; keep some entries without one (refused)
            sl = random_stops(rng, n, 0.005, 0.06, 1.0)
            tsl = random_stops(rng, n, 0.005, 0.06, 0.5)
        else:
            sl = random_stops(rng, n, 0.005, 0.06, 0.6)
            tsl = random_stops(rng, n, 0.005, 0.06, 0.4)
        sig["stop_loss"] = sl
        sig["take_profit"] = random_stops(rng, n, 0.01, 0.10, 0.5)
        sig["trailing_stop"] = tsl
        signals[sym] = sig
    sizes = np.random.default_rng(seed + 7000)  # its own stream: the cases above stay as they were
    for sym in symbols:
        if sizes.random() < 0.3:  # the strategy sizes its entries: shares of the rule, some refused
            size = sizes.uniform(0.0, 1.0, n)
            size[sizes.random(n) < 0.1] = np.nan
            size[sizes.random(n) < 0.1] = 0.0
            signals[sym]["size"] = size
    fees = np.random.default_rng(seed + 11000)  # borrow fees for shorts, own stream
    if settings.direction != "long" and fees.random() < 0.4:
        settings.borrow_rate = float(fees.uniform(0.0, 0.5))
    if fees.random() < 0.4:  # square-root market impact on every fill but limits
        settings.impact = float(fees.uniform(0.05, 2.0))
        settings.adv_window = int(fees.choice([1, 5, 20]))
    orders = np.random.default_rng(seed + 9000)  # entry orders (SEMANTICS.md "Entry orders"), own stream
    for sym in symbols:
        if orders.random() < 0.5:
            continue
        sig, close = signals[sym], bars[sym]["close"].to_numpy()
        kinds = np.array(["market", "limit", "stop", "stop_limit"])[orders.integers(0, 4, n)]
        long = sig["long_entries"] & ~sig["short_entries"]
        side = np.where(long, 1.0, -1.0)
        away = orders.uniform(0.002, 0.03, n)  # limits below a buy's close, stops above (a sell mirrored)
        limit = np.where(kinds == "limit", close * (1 - side * away), np.nan)
        stop = np.where(np.isin(kinds, ["stop", "stop_limit"]), close * (1 + side * away), np.nan)
        limit = np.where(kinds == "stop_limit", stop * (1 + side * orders.uniform(0.0, 0.01, n)), limit)
        sig["order_type"], sig["limit_price"], sig["stop_price"] = kinds, limit, stop
        sig["time_in_force"] = orders.integers(1, 6, n)
    market = np.random.default_rng(seed + 13000)  # funding, volume caps, touch fills: own stream
    if market.random() < 0.35:  # perpetuals: a funding event on some bars, positive on average
        for sym in symbols:
            rate = np.where(market.random(n) < 0.35, market.normal(0.0002, 0.0015, n), 0.0)
            rate[market.random(n) < 0.05] = np.nan  # a bar with no record counts as no event
            bars[sym] = bars[sym].assign(funding_rate=rate)
        settings.funding = True
    if market.random() < 0.4:  # an entry fill takes at most this share of the bar's volume
        settings.volume_cap = float(market.uniform(0.05, 1.0))
    if market.random() < 0.3:
        settings.limit_fill = "touch"
    if market.random() < 0.3:  # recorded quotes: a half-spread on most bars
        for sym in symbols:
            hs = market.uniform(0.0, 0.002, n)
            hs[market.random(n) < 0.2] = np.nan  # no fresh quote: no spread paid
            bars[sym] = bars[sym].assign(half_spread=hs)
        settings.spread = True
    return bars, signals, settings


def mixed_case(seed: int) -> tuple[dict[str, pd.DataFrame], dict[str, dict], ref.Settings]:
    """A random case on mixed calendars: the first symbol trades every day, the second only on
    weekdays, a third starts later and misses random days (a one-symbol case gets a second symbol
    of another length). Each symbol's signals stay indexed by its own bars."""
    bars, signals, s = random_case(seed)
    if len(bars) == 1:
        more_bars, more_signals, _ = random_case(seed + 1000)
        first = next(iter(more_bars))
        bars["ZZZ"], signals["ZZZ"] = more_bars[first], more_signals[first]
        if s.funding and "funding_rate" not in bars["ZZZ"].columns:  # a perpetual paying every bar
            bars["ZZZ"] = bars["ZZZ"].assign(funding_rate=0.0003)
        if s.spread and "half_spread" not in bars["ZZZ"].columns:
            bars["ZZZ"] = bars["ZZZ"].assign(half_spread=0.0004)
    rng = np.random.default_rng(seed + 5000)
    for k, sym in enumerate(list(bars)):
        frame = bars[sym]
        if k == 1:
            keep = frame.index.day_of_week < 5
        elif k == 2:
            keep = (np.arange(len(frame)) >= 12) & (rng.random(len(frame)) > 0.2)
        else:
            continue
        bars[sym] = frame[keep]
        signals[sym] = {key: np.asarray(v)[keep] for key, v in signals[sym].items()}
    return bars, signals, s


def union_index(bars: dict[str, pd.DataFrame]) -> pd.DatetimeIndex:
    index = None
    for frame in bars.values():
        index = frame.index if index is None else index.union(frame.index)
    return index


# ---------------------------------------------------------------- the engine, normalized

def run_engine(bars: dict[str, pd.DataFrame], signals: dict[str, dict], s: ref.Settings):
    from workbench.backtest import Costs, Lot, Sizing, simulate
    from workbench.strategies import Signals

    return simulate(
        bars,
        {sym: Signals(**{k: v.copy() for k, v in sig.items()}) for sym, sig in signals.items()},
        costs=Costs(fees=s.fees, slippage=s.slippage, slippage_vol=s.slippage_vol, vol_window=s.vol_window,
                    margin_rate=s.margin_rate, borrow_rate=s.borrow_rate, impact=s.impact,
                    adv_window=s.adv_window, funding=s.funding, volume_cap=s.volume_cap,
                    limit_fill=s.limit_fill, spread="recorded" if s.spread else ""),
        lots=Lot(step=s.lot, min_qty=s.min_qty, min_notional=s.min_notional),
        fill=s.fill,
        sizing=Sizing(kind=s.sizing, fraction=s.fraction, risk=s.risk, target_vol=s.target_vol,
                      atr_window=s.atr_window),
        direction=s.direction,
        init_cash=s.init_cash,
        max_exposure=s.max_exposure,
        periods_per_year=s.periods_per_year,
    )


def bar_of(index: pd.DatetimeIndex, times) -> list[int | None]:
    out = []
    for t in times:
        out.append(None if pd.isna(t) else int(index.get_loc(pd.Timestamp(t))))
    return out


def close(a: float, b: float) -> bool:
    return abs(a - b) <= REL * max(abs(a), abs(b)) + 1e-12


def assert_orders_match(engine_orders: pd.DataFrame, index: pd.DatetimeIndex, expected: list[ref.Order]):
    got = list(zip(bar_of(index, engine_orders["time"]), engine_orders["symbol"], engine_orders["side"],
                   engine_orders["size"], engine_orders["price"], engine_orders["fees"],
                   engine_orders["reason"], strict=True))
    for k, (g, e) in enumerate(zip(got, expected, strict=False)):
        what = f"order #{k}: engine {g} vs reference {e}"
        assert (g[0], g[1], g[2], g[6]) == (e.bar, e.symbol, e.side, e.reason), what
        assert close(g[3], e.size) and close(g[4], e.price) and close(g[5], e.fees), what
    assert len(got) == len(expected), f"engine has {len(got)} orders, the reference {len(expected)}"


def assert_trades_match(engine_trades: pd.DataFrame, index: pd.DatetimeIndex, expected: list[ref.Trade],
                        symbols: list[str]):
    symbols_order = {sym: k for k, sym in enumerate(symbols)}
    rows = engine_trades.to_dict("records")
    for r in rows:
        r["entry_bar"] = bar_of(index, [r["entry_time"]])[0]
        r["exit_bar"] = bar_of(index, [r["exit_time"]])[0] if r["status"] == "closed" else None
    rows.sort(key=lambda r: (r["entry_bar"], symbols_order.get(r["symbol"], 0), r["symbol"]))
    want = sorted(expected, key=lambda t: (t.entry_bar, symbols_order[t.symbol], t.symbol))
    assert len(rows) == len(want), f"engine has {len(rows)} trades, the reference {len(want)}"
    for k, (r, t) in enumerate(zip(rows, want, strict=True)):
        what = f"trade #{k}: engine {r} vs reference {t}"
        assert (r["symbol"], r["direction"], r["entry_bar"]) == (t.symbol, t.direction, t.entry_bar), what
        assert close(r["entry_price"], t.entry_price) and close(r["size"], t.size), what
        if t.exit_bar is None:
            assert r["status"] == "open" and r["exit_reason"] == "open", what
            continue
        assert r["status"] == "closed", what
        assert (r["exit_bar"], r["exit_reason"]) == (t.exit_bar, t.exit_reason), what
        assert close(r["exit_price"], t.exit_price) and close(r["pnl"], t.pnl), what


# ---------------------------------------------------------------- the reference on its own

@pytest.mark.parametrize("seed", range(12))
def test_reference_books_balance(seed: int) -> None:
    """The reference's value equals the cash plus positions, and its final value equals the initial
    cash plus the round trips' pnl (closed) and the open trades' mark-to-market."""
    bars, signals, s = random_case(seed)
    res = ref.simulate(bars, signals, s)
    last_close = {sym: float(frame["close"].iloc[-1]) for sym, frame in bars.items()}
    realized = 0.0
    for t in res.trades:
        if t.exit_bar is None:
            sign = 1.0 if t.direction == "long" else -1.0
            realized += sign * (last_close[t.symbol] - t.entry_price) * t.size - t.entry_fees
        else:
            assert t.exit_bar >= t.entry_bar
            realized += t.pnl
    assert res.value[-1] == pytest.approx(s.init_cash + realized - res.interest - res.funding, rel=1e-9)
    # orders alternate entry / exit per symbol and every exit closes the whole position
    for sym in bars:
        held = 0.0
        for o in (o for o in res.orders if o.symbol == sym):
            signed = o.size if o.side == "buy" else -o.size
            if o.reason == "entry":  # a later fill of a volume-capped order adds to its side only
                assert held == 0.0 or (s.volume_cap and held * signed > 0)
                held += signed
            else:
                assert signed == pytest.approx(-held, rel=1e-12)
                held = 0.0
    # no longs without cash: a long entry never makes the cash negative
    assert res.cash == pytest.approx(res.value[-1] - sum(
        (t.size if t.direction == "long" else -t.size) * last_close[t.symbol]
        for t in res.trades if t.exit_bar is None), rel=1e-9)


def test_reference_atr_and_sigma_by_hand() -> None:
    high = [102.0, 103.0, 104.0, 110.0]
    low = [98.0, 99.0, 100.0, 103.0]
    close_ = [100.0, 102.0, 102.0, 108.0]
    assert ref.true_range(high, low, close_) == [4.0, 4.0, 4.0, 8.0]
    a = ref.atr(high, low, close_, 3)
    assert math.isnan(a[0]) and math.isnan(a[1])
    assert a[2] == pytest.approx(4.0) and a[3] == pytest.approx(4.0 + (8.0 - 4.0) / 3)
    sig = ref.log_return_std([100.0, 110.0, 99.0, 99.0], 2)
    assert math.isnan(sig[0]) and math.isnan(sig[1])
    r1, r2, r3 = math.log(1.1), math.log(0.9), 0.0
    assert sig[2] == pytest.approx(abs(r1 - r2) / math.sqrt(2))
    assert sig[3] == pytest.approx(abs(r2 - r3) / math.sqrt(2))
    s = ref.Settings(slippage=0.001, slippage_vol=0.5, vol_window=2)
    slip = ref.slippage_per_bar([100.0, 110.0, 99.0, 99.0], s)
    assert slip[:3] == [0.001, 0.001, 0.001]
    assert slip[3] == pytest.approx(0.001 + 0.5 * sig[2])


def test_reference_vs_pandas_indicators() -> None:
    """The plain-Python sigma and ATR agree with the textbook pandas formulas."""
    bars, _, _ = random_case(3)
    frame = next(iter(bars.values()))
    c = frame["close"]
    sigma = np.log(c / c.shift(1)).rolling(10).std(ddof=1).to_numpy()
    mine = ref.log_return_std(c.tolist(), 10)
    np.testing.assert_allclose(mine, sigma, rtol=1e-9, equal_nan=True)
    prev = c.shift(1)
    tr = pd.concat([frame["high"] - frame["low"], (frame["high"] - prev).abs(), (frame["low"] - prev).abs()],
                   axis=1).max(axis=1)
    tr.iloc[0] = frame["high"].iloc[0] - frame["low"].iloc[0]
    seed = tr.iloc[:14].mean()
    wilder = [np.nan] * 13 + [seed]
    for v in tr.iloc[14:]:
        wilder.append(wilder[-1] + (v - wilder[-1]) / 14)
    np.testing.assert_allclose(ref.atr(frame["high"].tolist(), frame["low"].tolist(), c.tolist(), 14),
                               wilder, rtol=1e-12, equal_nan=True)


def test_random_cases_cover_the_rules() -> None:
    """The generated cases exercise every exit reason, gaps, reversals, refusals and both sides."""
    reasons, directions, gap_exits = set(), set(), 0
    for seed in SEEDS:
        bars, signals, s = random_case(seed)
        res = ref.simulate(bars, signals, s)
        reasons |= {o.reason for o in res.orders}
        directions |= {t.direction for t in res.trades}
        for o in res.orders:
            if o.reason in ("stop_loss", "take_profit", "trailing_stop"):
                opened = float(bars[o.symbol]["open"].iloc[o.bar])
                slip = ref.fill_costs(bars[o.symbol], s)[o.bar]
                fill_at_open = opened * (1 - slip if o.side == "sell" else 1 + slip)
                gap_exits += close(o.price, fill_at_open)
    assert reasons == {"entry", "exit", "stop_loss", "take_profit", "trailing_stop"}
    assert directions == {"long", "short"}
    assert gap_exits >= 5


# ---------------------------------------------------------------- the engine against the reference

@pytest.mark.parametrize("seed", SEEDS)
def test_engine_matches_reference(seed: int) -> None:
    bars, signals, s = random_case(seed)
    expected = ref.simulate(bars, signals, s)
    res = run_engine(bars, signals, s)
    index = next(iter(bars.values())).index
    assert_orders_match(res.orders, index, expected.orders)
    assert_trades_match(res.trades, index, expected.trades, list(bars))
    np.testing.assert_allclose(res.equity.to_numpy(dtype=float), expected.value, rtol=REL, atol=1e-6)
    assert close(float(res.equity.iloc[-1]), expected.value[-1])
    np.testing.assert_allclose(res.benchmark.to_numpy(dtype=float), expected.benchmark, rtol=REL, atol=1e-6)
    assert close(res.charges["funding"], expected.funding)
    assert close(res.charges["interest"], expected.interest)


@pytest.mark.parametrize("seed", range(6))
def test_engine_matches_reference_on_one_frame(seed: int) -> None:
    """One DataFrame and one Signals (no dicts) behave like a one-symbol dict."""
    from workbench.backtest import Costs, simulate
    from workbench.strategies import Signals

    bars, signals, s = random_case(seed)
    sym = next(iter(bars))
    bars, signals = {sym: bars[sym]}, {sym: signals[sym]}
    s.sizing, s.fraction = "fixed", None
    s.margin_rate, s.lot, s.min_qty, s.min_notional = 0.0, 0.0, 0.0, 0.0
    expected = ref.simulate(bars, signals, s)
    costs = Costs(fees=s.fees, slippage=s.slippage, slippage_vol=s.slippage_vol, vol_window=s.vol_window,
                  borrow_rate=s.borrow_rate, impact=s.impact, adv_window=s.adv_window, funding=s.funding,
                  volume_cap=s.volume_cap, limit_fill=s.limit_fill, spread="recorded" if s.spread else "")
    res = simulate(bars[sym], Signals(**signals[sym]), costs=costs, fill=s.fill, direction=s.direction,
                   init_cash=s.init_cash, max_exposure=s.max_exposure)
    np.testing.assert_allclose(res.equity.to_numpy(dtype=float), expected.value, rtol=REL, atol=1e-6)
    assert len(res.orders) == len(expected.orders)


@pytest.mark.parametrize("seed", range(24))
def test_engine_matches_reference_on_mixed_calendars(seed: int) -> None:
    """Symbols with different bars (24/7, weekdays only, late and gappy) run on the union timeline:
    orders wait for the symbol's own next bar, closed markets are marked at their last close."""
    bars, signals, s = mixed_case(seed)
    expected = ref.simulate(bars, signals, s)
    res = run_engine(bars, signals, s)
    index = union_index(bars)
    assert res.index.equals(index)
    assert_orders_match(res.orders, index, expected.orders)
    assert_trades_match(res.trades, index, expected.trades, list(bars))
    np.testing.assert_allclose(res.equity.to_numpy(dtype=float), expected.value, rtol=REL, atol=1e-6)
    np.testing.assert_allclose(res.benchmark.to_numpy(dtype=float), expected.benchmark, rtol=REL, atol=1e-6)


def test_mixed_cases_trade_on_every_calendar() -> None:
    """The mixed cases really exercise closed markets: orders of the weekday symbol never fall on a
    weekend, and some of its signals from a Friday act on the Monday after."""
    waited = 0
    for seed in range(24):
        bars, signals, s = mixed_case(seed)
        res = ref.simulate(bars, signals, s)
        index = union_index(bars)
        weekday = list(bars)[1]
        for o in res.orders:
            if o.symbol == weekday:
                assert index[o.bar].day_of_week < 5
                waited += s.fill == "next_open" and o.reason in ("entry", "exit") and \
                    index[o.bar].day_of_week == 0
    assert waited >= 5


def test_the_one_signal_rule_equals_the_reference_table_for_every_case() -> None:
    """`signal_action` (the kernel's rule, which the paper runner calls too) against the reference
    simulator's direction filter, conflict rules and position logic: all 16 x 3 x 3 cases."""
    import itertools

    from workbench.backtest.engine import Action, Direction, signal_action

    keys = ("long_entries", "long_exits", "short_entries", "short_exits")
    for flags in itertools.product((False, True), repeat=4):
        for direction in Direction:
            for p in (-1.5, 0.0, 2.0):
                le, lx, se, sx = ref._effective_signals({k: [f] for k, f in zip(keys, flags, strict=True)},
                                                        0, direction.value)
                want = (Action.EXIT_SHORT if se else Action.EXIT if lx else Action.NONE) if p > 0 else \
                    (Action.EXIT_LONG if le else Action.EXIT if sx else Action.NONE) if p < 0 else \
                    (Action.LONG if le else Action.SHORT if se else Action.NONE)
                got = signal_action(direction, *flags, p)
                assert got is want, (flags, direction, p, got, want)
    assert Action.EXIT_SHORT.label == "exit+short" and Action.NONE.label == ""


def test_random_cases_cover_funding_and_partial_fills() -> None:
    """The generated cases settle funding both ways and split volume-capped orders: an entry cut to
    the bar's volume cap, and a limit's remainder filled on a later bar (the trade grows)."""
    paid = received = grown = cut = 0
    for seed in SEEDS:
        bars, signals, s = random_case(seed)
        res = ref.simulate(bars, signals, s)
        paid += res.funding > 0
        received += res.funding < 0
        for t in res.trades:
            first = next(o for o in res.orders if o.symbol == t.symbol and o.bar == t.entry_bar
                         and o.reason == "entry")
            grown += t.size > first.size * (1 + 1e-9)
        for o in res.orders:
            cap = s.volume_cap * float(bars[o.symbol]["volume"].iloc[o.bar]) if s.volume_cap else math.inf
            cut += o.reason == "entry" and abs(o.size - cap) < 1e-6 * o.size
    assert paid >= 3 and received >= 1
    assert grown >= 3 and cut >= 10
