"""The strategy contract, the registry, every built-in's rules, and a look-ahead check of each one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bars_factory import candles

from workbench.data.sources.synthetic import SyntheticSource
from workbench.errors import ConfigError, DataError
from workbench.strategies import (
    Constraint,
    ParamSpace,
    Signals,
    Strategy,
    bool_param,
    choice_param,
    float_param,
    get_strategy,
    int_param,
    list_strategies,
)
from workbench.strategies import indicators as ind
from workbench.strategies.base import unprefix
from workbench.strategies.ensemble import position_state
from workbench.strategies.lookahead import check_lookahead

BUILTINS = ("sma_cross", "ema_cross", "macd", "rsi_mr", "bollinger_mr", "donchian_breakout", "regime",
            "ensemble", "ml_classifier", "sma_pullback")
# a folder that does not exist: the registry then holds the built-ins only, whatever ./research has
NO_RESEARCH = Path(__file__).with_name("_no_research_here_")


def registered() -> list[str]:
    """Every built-in the registry knows (so a new module is look-ahead tested without editing this file)."""
    return sorted(list_strategies(NO_RESEARCH))


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    """About 2,900 hourly bars of the seeded synthetic market (trends, ranges, volatility clusters)."""
    start, end = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-05-01", tz="UTC")
    frame = SyntheticSource(seed=7).bars("BTC/USDT", "1h", start, end)
    return frame.set_index("ts")


# --- the contract ------------------------------------------------------------------------------------


def test_param_coercion_and_ranges() -> None:
    window = int_param("window", 20, 5, 100)
    assert window.coerce("12") == 12 and window.coerce(12.0) == 12 and window.coerce("30.0") == 30
    with pytest.raises(ConfigError, match=r"window=1.5 is not a valid int"):
        window.coerce("1.5")
    with pytest.raises(ConfigError, match=r"window=200 is outside its range \[5, 100\]"):
        window.coerce(200)
    k = float_param("k", 2.0, 0.5, 4.0, step=0.5)
    assert k.coerce("1.25") == 1.25
    with pytest.raises(ConfigError, match="not a valid float"):
        k.coerce("nan")
    flag = bool_param("short", False)
    assert flag.coerce("yes") is True and flag.coerce("False") is False
    with pytest.raises(ConfigError, match="not a valid bool"):
        flag.coerce("maybe")
    mode = choice_param("mode", "trend", ("trend", "volatility"))
    assert mode.coerce("volatility") == "volatility"
    with pytest.raises(ConfigError, match="did you mean 'volatility'"):
        mode.coerce("volatilty")


def test_param_grids() -> None:
    assert int_param("n", 10, 10, 30, step=10).grid() == [10, 20, 30]
    assert float_param("k", 1.0, 1.0, 2.0, step=0.5).grid() == [1.0, 1.5, 2.0]
    assert bool_param("b", False).grid() == [False, True]
    with pytest.raises(ConfigError, match="float without a step"):
        float_param("x", 1.0, 0.0, 2.0).grid()
    with pytest.raises(ConfigError, match="low <= high"):
        int_param("bad", 1, 5, 2)


def test_constraints_in_grid_and_validate() -> None:
    space = ParamSpace.of(int_param("fast", 10, 10, 30, step=10), int_param("slow", 20, 10, 30, step=10),
                          constraints=["fast < slow"])
    assert space.grid() == [{"fast": 10, "slow": 20}, {"fast": 10, "slow": 30}, {"fast": 20, "slow": 30}]
    assert space.grid(overrides={"fast": [20]}, fixed={"slow": 30}) == [{"fast": 20, "slow": 30}]
    with pytest.raises(ConfigError, match=r"fast=30, slow=20 break the constraint 'fast < slow'"):
        space.validate({"fast": 30})
    assert Constraint("fast * 2 <= slow").holds({"fast": 10, "slow": 20})
    with pytest.raises(ConfigError, match="is not an expression"):
        Constraint("fast <")
    with pytest.raises(ConfigError, match="only comparisons"):
        Constraint("fast ** 2 < slow").holds({"fast": 1, "slow": 2})
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['slwo'\]"):
        ParamSpace.of(int_param("fast", 1, 1, 2), constraints=["fast < slwo"])


def test_did_you_mean_for_unknown_strategy_and_parameter() -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'sma_crosss' \\(did you mean 'sma_cross'\\?\\)"):
        get_strategy("sma_crosss", NO_RESEARCH)
    with pytest.raises(ConfigError, match="unknown parameter 'fsat' \\(did you mean 'fast'\\?\\)"):
        get_strategy("sma_cross", NO_RESEARCH).params({"fsat": 3})
    with pytest.raises(ConfigError, match="did you mean 'regime'"):
        get_strategy("regim(macd)", NO_RESEARCH)
    with pytest.raises(ConfigError, match="did you mean 'macd'"):
        get_strategy("regime(mcad)", NO_RESEARCH)


def test_prefixed_space_and_unprefix() -> None:
    space = get_strategy("macd", NO_RESEARCH).space.prefixed("macd")
    assert space.names == ["macd.fast", "macd.slow", "macd.signal", "macd.short"]
    values = {"macd.fast": 12, "macd.slow": 26, "macd.signal": 9, "macd.short": False, "regime.window": 14}
    assert space.feasible(values)
    assert not space.feasible({**values, "macd.fast": 40})
    assert unprefix(values, "macd") == {"fast": 12, "slow": 26, "signal": 9, "short": False}
    assert unprefix(values, "regime") == {"window": 14}


# --- the registry ------------------------------------------------------------------------------------


def test_registry_lists_every_builtin() -> None:
    found = list_strategies(NO_RESEARCH)
    assert set(BUILTINS) <= set(found)
    for name in BUILTINS:
        assert found[name].name == name
        assert found[name].description


USER_MODULE = '''
from workbench.strategies import ParamSpace, Signals, Strategy, int_param
from workbench.strategies import indicators as ind


def signals(bars, p):
    momentum = bars["close"].pct_change(p["lookback"]).to_numpy()
    return Signals(ind.crossed_above(momentum, 0.0), ind.crossed_below(momentum, 0.0))


STRATEGY = Strategy("my_momentum", ParamSpace.of(int_param("lookback", 24, 2, 200)), signals,
                    warmup=lambda p: p["lookback"] + 1, description="Momentum sign.")
'''


def test_discovers_a_user_strategy_and_composes_it(tmp_path: Path, bars: pd.DataFrame) -> None:
    (tmp_path / "momentum.py").write_text(USER_MODULE)
    (tmp_path / "_scratch.py").write_text("raise RuntimeError('never imported: leading underscore')\n")
    found = list_strategies(tmp_path)
    assert "my_momentum" in found and set(BUILTINS) <= set(found)
    mine = get_strategy("my_momentum", tmp_path)
    assert mine.signals(bars, {"lookback": 12}).arrays(len(bars))["long_entries"].any()
    gated = get_strategy("regime(my_momentum)", tmp_path)
    assert "my_momentum.lookback" in gated.space.names


def test_broken_user_module_is_reported(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import numpy as np\nSTRATEGY = np.no_such_thing\n")
    with pytest.raises(ConfigError, match=r"broken\.py failed to import: AttributeError"):
        list_strategies(tmp_path)


def test_user_strategy_may_not_shadow_a_builtin(tmp_path: Path) -> None:
    (tmp_path / "clash.py").write_text(USER_MODULE.replace('"my_momentum"', '"macd"'))
    with pytest.raises(ConfigError, match="built-in name"):
        list_strategies(tmp_path)


def test_composite_specs(bars: pd.DataFrame) -> None:
    gated = get_strategy("regime(macd)", NO_RESEARCH)
    assert gated.name == "regime(macd)"
    assert [c.name for c in gated.components] == ["macd"]
    expected = {"macd.fast", "macd.slow", "regime.mode", "regime.window", "regime.threshold"}
    assert expected <= set(gated.space.names)
    with pytest.raises(ConfigError, match=r"macd\.fast=20, macd\.slow=16 break the constraint"):
        gated.params({"macd.fast": 20, "macd.slow": 16})

    voted = get_strategy("vote(sma_cross, rsi_mr)", NO_RESEARCH)
    assert voted.name == "vote(sma_cross,rsi_mr)"
    assert [c.name for c in voted.components] == ["sma_cross", "rsi_mr"]
    assert voted.params()["vote.min_votes"] == 2
    assert "rsi_mr.lower" in voted.space.names
    with pytest.raises(ConfigError, match="at least two"):
        get_strategy("vote(macd)", NO_RESEARCH)
    with pytest.raises(ConfigError, match="exactly one"):
        get_strategy("regime(macd,rsi_mr)", NO_RESEARCH)
    nested = get_strategy("vote(regime(macd),sma_cross)", NO_RESEARCH)
    assert "regime(macd).macd.fast" in nested.space.names
    assert nested.signals(bars).arrays(len(bars))["long_entries"].any()


# --- every built-in -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_trades_on_synthetic_data(name: str, bars: pd.DataFrame) -> None:
    strategy = get_strategy(name, NO_RESEARCH)
    a = strategy.signals(bars).arrays(len(bars), name)
    assert a["long_entries"].sum() >= 3 and a["long_exits"].sum() >= 3
    first_entry = int(np.argmax(a["long_entries"]))
    assert first_entry >= strategy.warmup(strategy.params()) - 1  # nothing before the indicators exist


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_refuses_nan_and_short_bars(name: str, bars: pd.DataFrame) -> None:
    strategy = get_strategy(name, NO_RESEARCH)
    holed = bars.copy()
    holed.iloc[500, holed.columns.get_loc("close")] = np.nan
    with pytest.raises(DataError, match="bars contain NaN prices \\(first at 2024-01-21 20:00") as err:
        strategy.signals(holed)
    assert "\n" not in str(err.value)
    need = strategy.warmup(strategy.params()) + 2
    with pytest.raises(DataError, match=f"needs at least {need} bars, got {need - 1}; read a longer range"):
        strategy.signals(bars.iloc[: need - 1])


LOOKAHEAD_CASES = [(name, None) for name in registered()] + [
    ("macd", {"short": True, "fast": 6, "slow": 36}),
    ("rsi_mr", {"short": True, "stop_loss": 0.05, "exit_level": 70}),
    ("bollinger_mr", {"short": True, "window": 30, "k": 1.5}),
    ("donchian_breakout", {"trail": True, "entry": 40, "exit": 20}),
    ("regime", {"regime.mode": "volatility", "regime.window": 7, "regime.threshold": 40}),
    ("ensemble", {"vote.min_votes": 1}),
    ("ml_classifier", {"model": "hgb", "scheme": "rolling", "window": 500, "min_train": 500,
                       "refit_every": 250, "horizon": 2, "purge": 0}),
    ("regime(bollinger_mr)", {"regime.threshold": 15}),
    ("vote(sma_cross,rsi_mr,bollinger_mr)", None),
    ("sma_pullback", {"order": "stop", "short": True, "tif": 3}),
]


@pytest.mark.parametrize(("spec", "params"), LOOKAHEAD_CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_no_lookahead(spec: str, params: dict | None, bars: pd.DataFrame) -> None:
    report = check_lookahead(get_strategy(spec, NO_RESEARCH), bars, params, cuts=5, seed=1)
    assert len(report.cuts) == 5
    assert report.ok, report.summary()


# --- the look-ahead check itself -------------------------------------------------------------------------


def _peeking(name: str, rule: Callable[[pd.Series], pd.Series]) -> Strategy:
    def signals(frame: pd.DataFrame, p: dict) -> Signals:
        up = rule(frame["close"])
        return Signals(up, ~up)

    return Strategy(name, ParamSpace.of(), signals, description="deliberately biased")


def test_lookahead_check_catches_a_peek_at_the_next_close(bars: pd.DataFrame) -> None:
    report = check_lookahead(_peeking("next_close", lambda c: c.shift(-1) > c), bars, cuts=4)
    assert not report.ok
    assert {v.field for v in report.violations} >= {"long_entries", "long_exits"}
    assert {v.variant for v in report.violations} == {"truncated", "randomized"}
    for v in report.violations:
        assert v.first <= v.cut  # only bars the strategy should already have known are compared
    assert "long_entries differs from the full-data run" in report.summary()


def test_lookahead_check_catches_full_sample_statistics(bars: pd.DataFrame) -> None:
    report = check_lookahead(_peeking("above_mean", lambda c: c > c.mean()), bars, cuts=3)
    assert not report.ok
    assert "truncated" in {v.variant for v in report.violations}


def test_lookahead_check_passes_a_causal_rule_and_compares_stops(bars: pd.DataFrame) -> None:
    report = check_lookahead(_peeking("above_sma", lambda c: c > c.rolling(20).mean()), bars, cuts=3)
    assert report.ok and str(report).endswith(": ok")

    def stops(frame: pd.DataFrame, p: dict) -> Signals:  # entries causal, the stop array peeks
        close = frame["close"]
        return Signals(close > close.shift(1), None, stop_loss=(close.shift(-3) / close - 1).abs())

    report = check_lookahead(Strategy("peeking_stop", ParamSpace.of(), stops), bars, cuts=3)
    assert {v.field for v in report.violations} == {"stop_loss"}


def test_lookahead_check_needs_enough_bars(bars: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="look-ahead check of macd needs at least"):
        check_lookahead(get_strategy("macd", NO_RESEARCH), bars.iloc[:37])  # enough to run, not to cut


# --- rules of the built-ins, on small readable tables ------------------------------------------------------


DONCHIAN_TABLE = """
# time  open   high   low    close  volume
00:00   100    101    99     100    1
01:00   100    101    99     100    1
02:00   100    101    99     100    1
03:00   100    101    99     100    1
04:00   100    101    99     100    1
05:00   100    101    99     100    1
06:00   100    101    99     100    1
07:00   100    101    99     100    1
08:00   100    101    99     100    1
09:00   100    101    99     100    1
10:00   100    101    99     100    1
11:00   100    101    99     100    1
12:00   100    101    99     100    1
13:00   100    101    99     100    1
# breakout: close 101.5 above the previous 10 bars' high of 101 (its own high 103 does not count)
14:00   100    103    99.5   101.5  1
# close 102 is above 101 but not above the previous high, which now includes 103: no entry
15:00   101.5  102.5  101    102    1
# close 98.5 below the previous 5 bars' low of 99: exit
16:00   102    102    98     98.5   1
17:00   98.5   99     98     98.8   1
"""


def test_donchian_channel_excludes_the_bars_own_high() -> None:
    frame = candles(DONCHIAN_TABLE).set_index("ts")
    strategy = get_strategy("donchian_breakout", NO_RESEARCH)
    sig = strategy.signals(frame, {"entry": 10, "exit": 5, "atr_window": 14, "atr_mult": 2.0})
    a = sig.arrays(len(frame))
    assert np.flatnonzero(a["long_entries"]).tolist() == [14]
    assert np.flatnonzero(a["long_exits"]).tolist() == [16]
    atr = ind.atr(frame["high"], frame["low"], frame["close"], 14)
    assert a["stop_loss"][14] == pytest.approx(2.0 * atr[14] / 101.5)
    assert np.isnan(a["trailing_stop"]).all()
    trailing = strategy.signals(frame, {"entry": 10, "exit": 5, "trail": True}).arrays(len(frame))
    assert np.isnan(trailing["stop_loss"]).all() and trailing["trailing_stop"][14] > 0


def test_rsi_and_bollinger_rules(bars: pd.DataFrame) -> None:
    close = bars["close"].to_numpy()
    r = ind.rsi(close, 14)
    sig = get_strategy("rsi_mr", NO_RESEARCH).signals(bars, {"short": True, "stop_loss": 0.04})
    a = sig.arrays(len(bars))
    entries = np.flatnonzero(a["long_entries"])
    assert (r[entries - 1] <= 30).all() and (r[entries] > 30).all()
    shorts = np.flatnonzero(a["short_entries"])
    assert shorts.size and (r[shorts - 1] >= 70).all() and (r[shorts] < 70).all()
    assert (a["stop_loss"] == 0.04).all()
    assert np.isnan(get_strategy("rsi_mr", NO_RESEARCH).signals(bars).arrays(len(bars))["stop_loss"]).all()

    lower, mid, _ = ind.bollinger(close, 20, 2.0)
    b = get_strategy("bollinger_mr", NO_RESEARCH).signals(bars).arrays(len(bars))
    entries, exits = np.flatnonzero(b["long_entries"]), np.flatnonzero(b["long_exits"])
    assert (close[entries - 1] <= lower[entries - 1]).all() and (close[entries] > lower[entries]).all()
    assert (close[exits] > mid[exits]).all()


def test_macd_short_mirrors_long(bars: pd.DataFrame) -> None:
    a = get_strategy("macd", NO_RESEARCH).signals(bars, {"short": True}).arrays(len(bars))
    assert (a["short_entries"] == a["long_exits"]).all() and (a["short_exits"] == a["long_entries"]).all()
    assert not get_strategy("macd", NO_RESEARCH).signals(bars).has_shorts


def test_regime_gates_entries_but_never_exits(bars: pd.DataFrame) -> None:
    inner = get_strategy("sma_cross", NO_RESEARCH).signals(bars, {"fast": 5, "slow": 20}).arrays(len(bars))
    gate = get_strategy("regime", NO_RESEARCH)
    for mode, threshold in (("trend", 20.0), ("volatility", 50.0)):
        p = {"sma_cross.fast": 5, "sma_cross.slow": 20, "regime.mode": mode, "regime.threshold": threshold}
        sig = gate.signals(bars, p)
        a = sig.arrays(len(bars))
        on = sig.extras["regime"]
        assert 0 < on.mean() < 1
        assert (a["long_entries"] == (inner["long_entries"] & on)).all()
        assert (a["long_exits"] == inner["long_exits"]).all()
        assert 0 < a["long_entries"].sum() < inner["long_entries"].sum()
    none_on = gate.signals(bars, {"regime.threshold": 90}).arrays(len(bars))
    assert not none_on["long_entries"].any() and none_on["long_exits"].any()


def test_position_state_from_entries_and_exits() -> None:
    #                    0      1      2      3      4      5      6      7
    entries = np.array([False, True, True, False, False, True, False, True])
    exits = np.array([True, False, False, True, True, True, False, False])
    # bar 5 has both: a conflict keeps the previous state, as the backtest ignores both
    assert position_state(entries, exits).tolist() == [False, True, True, False, False, False, False, True]


def test_vote_is_long_while_enough_components_are(bars: pd.DataFrame) -> None:
    voted = get_strategy("ensemble", NO_RESEARCH)
    comps = [c.signals(bars).arrays(len(bars)) for c in voted.components]
    states = [position_state(c["long_entries"], c["long_exits"]) for c in comps]
    for k in (1, 2, 3):
        sig = voted.signals(bars, {"vote.min_votes": k})
        state = np.sum(states, axis=0) >= k
        a = sig.arrays(len(bars))
        assert (position_state(a["long_entries"], a["long_exits"]) == state).all()
        assert (sig.extras["votes"] == np.sum(states, axis=0)).all()
    with pytest.raises(ConfigError, match=r"vote.min_votes=4 is outside its range \[1, 3\]"):
        voted.params({"vote.min_votes": 4})


def test_ml_classifier_walk_forward(bars: pd.DataFrame) -> None:
    ml = get_strategy("ml_classifier", NO_RESEARCH)
    p = {"model": "forest", "min_train": 1000, "refit_every": 1000, "seed": 3}
    first = ml.signals(bars, p)
    prob = first.extras["p_up"]
    assert np.isnan(prob[:1000]).all() and np.isfinite(prob[1000:]).all()
    assert ((prob >= 0) & (prob <= 1))[1000:].all()
    again = ml.signals(bars, p).extras["p_up"]
    np.testing.assert_array_equal(prob, again)  # a fixed seed reproduces the forest exactly
    other = ml.signals(bars, {**p, "seed": 4}).extras["p_up"]
    assert not np.array_equal(prob[1000:], other[1000:])
    a = first.arrays(len(bars))
    assert (a["long_entries"] == (prob >= 0.55)).all() and (a["long_exits"] == (prob < 0.5)).all()
    with pytest.raises(ConfigError, match="break the constraint 'exit_threshold <= threshold'"):
        ml.params({"threshold": 0.5, "exit_threshold": 0.55})


def test_builtin_grids_stay_small() -> None:
    for name in ("macd", "rsi_mr", "bollinger_mr", "donchian_breakout"):
        size = len(get_strategy(name, NO_RESEARCH).space.grid())
        assert 10 <= size <= 600, (name, size)


@pytest.mark.parametrize("name", BUILTINS)
def test_indicator_cache_does_not_change_signals(name: str, bars: pd.DataFrame) -> None:
    """Sweeps compute signals inside `indicator_cache()`; the result must not depend on it."""
    strategy = get_strategy(name, NO_RESEARCH)
    plain = strategy.signals(bars).arrays(len(bars))
    for _ in range(3):  # repeated, so that freed temporaries get their addresses reused
        with ind.indicator_cache():
            for window in (14, 10, 14):
                ind.rsi(bars["close"], window)
                ind.adx(bars["high"], bars["low"], bars["close"], window)
            cached = strategy.signals(bars).arrays(len(bars))
        for key, value in plain.items():
            np.testing.assert_array_equal(value, cached[key], err_msg=f"{name}.{key}")


def test_optuna_draws_step_parameters_on_their_grid_without_a_warning() -> None:
    import warnings

    import optuna

    from workbench.strategies.base import Param

    k = float_param("bb_k", 2.0, 1.0, 3.0, step=0.3)  # (3.0 - 1.0) / 0.3 is not whole: ends at 2.8
    n = int_param("n", 10, 5, 52, step=10)  # nor is (52 - 5) / 10: ends at 45
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    drawn: dict[str, set] = {"bb_k": set(), "n": set()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna's "not divisible by step" warning reached the CLI
        for _ in range(40):
            trial = study.ask()
            drawn["bb_k"].add(k.suggest(trial))
            drawn["n"].add(n.suggest(trial))
            study.tell(trial, 0.0)
    assert drawn["bb_k"] <= set(k.grid()) and len(drawn["bb_k"]) > 3
    assert drawn["n"] <= set(n.grid())
    assert {t.params["bb_k"] for t in study.trials} <= set(k.grid())  # what fold tables show
    assert "grid_only" not in (Param.__doc__ or "")  # documented an option that does not exist


def test_crosses_is_crossed_above_and_below_in_one_pass() -> None:
    rng = np.random.default_rng(5)
    a = np.round(rng.normal(0, 1, 5_000).cumsum(), 1)  # rounded: ties happen
    b = np.round(rng.normal(0, 1, 5_000).cumsum(), 1)
    a[rng.random(5_000) < 0.02] = np.nan
    up, down = ind.crosses(a, b)
    np.testing.assert_array_equal(up, ind.crossed_above(a, b))
    np.testing.assert_array_equal(down, ind.crossed_below(a, b))
    assert up.sum() > 5 and down.sum() > 5
    # by hand: touching is not crossing, NaN never crosses
    x = np.array([1.0, 2.0, 2.0, 3.0, 1.0, np.nan, 3.0])
    up, down = ind.crosses(x, 2.0)
    assert up.tolist() == [False, False, False, True, False, False, False]
    assert down.tolist() == [False, False, False, False, True, False, False]
