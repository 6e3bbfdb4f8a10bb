"""From model to paper: `ml_model(<name>@<version>)` trades a registered version by pure inference,
promotion pins the version and its feature set, and the runner (on a trailing window, as live)
trades exactly what the backtest does with the same features."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from paper_helpers import build_lake, spec_for

from workbench.backtest.engine import Sizing, backtest, load_bars
from workbench.errors import ConfigError
from workbench.features import FeatureSet, compute_features
from workbench.models import serving
from workbench.models.registry import ModelRegistry
from workbench.models.training import TrainSpec, train_model
from workbench.optimize.walkforward import signal_lookback, walk_forward
from workbench.paper.replay import replay
from workbench.paper.runner import StrategySpec
from workbench.promote import GateSet
from workbench.promote.promotion import promote
from workbench.strategies import get_strategy
from workbench.strategies.base import pins_of

FEATURES = ["ret(1)", "ret(6)", "vol(24)|zscore(100)", "rsi(14)", "sma_gap(24)", "hour_sin"]
TRAIN_END = "2025-03-01"


def _spec(name: str, **kw: Any) -> TrainSpec:
    base: dict[str, Any] = {
        "name": name, "symbols": ["BTC/USDT", "ETH/USDT"], "timeframe": "1h", "end": TRAIN_END,
        "features": FEATURES,
        "label": {"kind": "triple_barrier", "horizon": 12, "pt": 1.5, "sl": 1.5, "vol_window": 24},
        "model": "lightgbm", "params": {"n_estimators": 30, "num_leaves": 8},
        "cv": {"kind": "purged_kfold", "n_splits": 3}, "seed": 3}
    return TrainSpec.model_validate({**base, **kw})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A 1h lake (Jan-Apr 2025), a model trained until March in the default store of its data folder."""
    root = tmp_path_factory.mktemp("mlm") / "data"
    lake = build_lake(root)
    before = os.environ.get("WORKBENCH_DATA_DIR")
    os.environ["WORKBENCH_DATA_DIR"] = str(root)
    serving.clear_cache()
    try:
        registry = ModelRegistry(data=root)
        train_model(lake, _spec("mm"), registry=registry)
        train_model(lake, _spec("mm", features=[*FEATURES, "volume_z(24)"]), registry=registry)  # challenger
        train_model(lake, _spec("meta", label={"kind": "meta", "primary": "sma_cross", "horizon": 12,
                                               "primary_params": {"fast": 5, "slow": 20}},
                                  model="logistic", params={}), registry=registry)
        yield {"root": root, "lake": lake, "registry": registry}
    finally:
        serving.clear_cache()
        if before is None:
            os.environ.pop("WORKBENCH_DATA_DIR", None)
        else:
            os.environ["WORKBENCH_DATA_DIR"] = before


def test_the_strategy_is_named_by_the_exact_version_and_trades_its_probability(env: dict[str, Any]) -> None:
    strat = get_strategy("ml_model(mm)")
    assert strat.name == "ml_model(mm@1)"  # the champion, resolved when built
    assert get_strategy("ml_model(mm@challenger)").name == "ml_model(mm@2)"
    [pinned] = pins_of(strat)["models"]
    assert pinned["feature_set_key"] == FeatureSet.of(*FEATURES).key() and pinned["version"] == 1
    bars = load_bars(env["lake"], ["BTC/USDT"], "1h")["BTC/USDT"]
    # an independent recomputation: the registered estimator on the features of the training spec
    est, _ = env["registry"].load("mm", 1)
    X = compute_features(bars, FeatureSet.of(*FEATURES))
    ok = X.notna().all(axis=1).to_numpy()
    p = np.full(len(bars), np.nan)
    p[ok] = est.predict_proba(X.to_numpy()[ok])[:, 1]
    sig = strat.signals(bars, {"threshold": 0.55, "exit_threshold": 0.45, "short": True})
    np.testing.assert_array_equal(sig.extras["p"], p)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(sig.long_entries, p >= 0.55)
        np.testing.assert_array_equal(sig.long_exits, p < 0.45)
        np.testing.assert_array_equal(sig.short_entries, p <= 0.45)
        np.testing.assert_array_equal(sig.short_exits, p > 0.55)
    assert 0 < np.nansum(p >= 0.55) < ok.sum()  # the threshold decides something on these bars
    res = backtest(strat, bars, {"threshold": 0.55})
    assert len(res.trades) > 0


def test_a_meta_label_model_filters_its_primary_strategy(env: dict[str, Any]) -> None:
    strat = get_strategy("ml_model(meta)")
    assert strat.space.names == ["threshold", "bet_size"]  # exits are the primary's: no exit threshold
    bars = load_bars(env["lake"], ["BTC/USDT"], "1h")["BTC/USDT"]
    primary = get_strategy("sma_cross").signals(bars, {"fast": 5, "slow": 20}).arrays(len(bars))
    p = strat.signals(bars, {"threshold": 0.5}).extras["p"]
    threshold = float(np.nanmedian(p[primary["long_entries"]]).round(2))  # about half the entries taken
    sig = strat.signals(bars, {"threshold": threshold})
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(sig.long_entries, primary["long_entries"] & (p >= threshold))
    np.testing.assert_array_equal(sig.long_exits, primary["long_exits"])
    assert 0 < sig.long_entries.sum() < primary["long_entries"].sum()
    # the primary's own stops and orders are kept: the model only chooses which entries to take
    arrays = sig.arrays(len(bars))
    for key in ("stop_loss", "take_profit", "trailing_stop", "order_type", "time_in_force"):
        np.testing.assert_array_equal(arrays[key], primary[key])


@pytest.mark.parametrize(("spec", "match"), [
    ("ml_model(nope)", r"no registered model 'nope'.*workbench model train"),
    ("ml_model(mm@7)", r"model mm has no version 7 \(versions: 1, 2\)"),
    ("ml_model(mm@best)", r"no version of model mm is the best"),
    ("ml_model(mm@1@2)", r"give a registered model as name or name@version"),
])
def test_an_unknown_model_or_version_is_one_line(env: dict[str, Any], spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        get_strategy(spec)
    assert "\n" not in str(err.value)


def test_live_features_on_the_runners_trailing_window_equal_a_recomputation(env: dict[str, Any]) -> None:
    """What the runner computes at each tick (its trailing window: the signal look-back) equals the
    full history's features at that bar."""
    strat = get_strategy("ml_model(mm@1)")
    bars = load_bars(env["lake"], ["BTC/USDT"], "1h")["BTC/USDT"]
    fs = FeatureSet.of(*FEATURES)
    full = compute_features(bars, fs)
    window = signal_lookback(strat, strat.params())
    ends = range(len(bars) - 200, len(bars))
    live = np.array([compute_features(bars.iloc[e - window:e], fs).to_numpy()[-1] for e in ends])
    np.testing.assert_allclose(live, full.to_numpy()[[e - 1 for e in ends]], rtol=1e-9, atol=1e-12)
    assert np.isfinite(live).all()


def test_a_promoted_model_strategy_pins_its_version_and_replays_trade_for_trade(
        env: dict[str, Any], tmp_path: Path) -> None:
    lake = env["lake"]
    frames = load_bars(lake, ["BTC/USDT"], "1h", "2025-03-02", "2025-05-01")
    gates = GateSet.from_mapping({"gates": {"model_oos": {"required": True},
                                            "lookahead": {"required": True}}})
    run = walk_forward("ml_model(mm)", frames, folds=2, n_trials=4, seed=1, fixed={"short": False},
                       save=True)
    res = promote(run.run_id, gates=gates, name="mm_paper", lake=lake, registry=tmp_path / "registry")
    art = res.artifact
    assert art is not None and art.strategy == "ml_model(mm@1)"
    [pinned] = art.pins["models"]
    assert (pinned["name"], pinned["version"]) == ("mm", 1)
    assert {v.name: v.passed for v in res.verdicts} == {"model_oos": True, "lookahead": True}
    # the runner on a trailing window (as live) trades what the backtest trades, from the artifact
    # (at a threshold that trades in these two weeks: the promoted one may wait for a strong signal)
    # sized by the probability (bet_size), which the runner applies as the backtest does
    spec = replace(StrategySpec.from_artifact(art), params={"threshold": 0.5, "exit_threshold": 0.5,
                                                            "short": True, "bet_size": True})
    out = replay(spec, "2025-04-10", "2025-04-24", lake=lake, workdir=tmp_path / "replay", window="trailing")
    assert out.parity.ok, f"{out.parity.summary()}\n{out.parity.differences.to_string()}"
    assert len(out.trades) >= 2, "the period should hold a few trades, or this test proves little"
    # an artifact whose store now holds another version 1 (another feature set) is refused, one line
    other = {**pinned, "feature_set_key": "sha256:" + "0" * 64}
    with pytest.raises(ConfigError, match=r"pins model mm version 1 .* the model store has feature_set_key"):
        replace(spec, pins={"models": [other]}).strategy_obj()
    with pytest.raises(ConfigError, match=r"pins model mm"):
        replace(art, pins={"models": [other]}).strategy_obj()
    json.dumps(art.to_dict())  # the pins are plain JSON in the artifact file


def test_a_fixed_version_evaluated_on_its_own_training_range_fails_the_model_gate(env: dict[str, Any],
                                                                                  tmp_path: Path) -> None:
    frames = load_bars(env["lake"], ["BTC/USDT"], "1h", "2025-01-20", "2025-03-20")
    run = walk_forward("ml_model(mm@1)", frames, folds=2, n_trials=3, seed=1, save=True)
    gates = GateSet.from_mapping({"gates": {"model_oos": {"required": True}}})
    res = promote(run.run_id, gates=gates, lake=env["lake"], registry=tmp_path / "reg", dry_run=True)
    [v] = res.verdicts
    assert not v.passed and "after the first out-of-sample bar" in v.detail


def test_a_plain_strategy_passes_the_model_gate_and_pins_nothing(env: dict[str, Any], tmp_path: Path) -> None:
    frames = load_bars(env["lake"], ["BTC/USDT"], "1h", "2025-01-01", "2025-03-01")
    run = walk_forward("sma_cross", frames, folds=2, n_trials=3, seed=1, save=True)
    gates = GateSet.from_mapping({"gates": {"model_oos": {"required": True}}})
    res = promote(run.run_id, gates=gates, lake=env["lake"], registry=tmp_path / "reg", force=False)
    assert res.artifact is not None and res.artifact.pins == {}
    assert res.verdicts[0].passed and res.verdicts[0].detail == "the strategy trades no model"
    assert spec_for("sma_cross").pins == {}


def test_ml_refit_refits_the_versions_recipe_on_labels_known_before_each_refit(env: dict[str, Any]) -> None:
    from workbench.models.estimators import fit_weighted, make_estimator
    from workbench.models.labels import labels_of, uniqueness_weights
    from workbench.strategies.lookahead import check_lookahead

    strat = get_strategy("ml_refit(mm)")
    assert strat.name == "ml_refit(mm@1)" and pins_of(strat) == {}  # it trains: nothing to pin
    bars = load_bars(env["lake"], ["BTC/USDT"], "1h", "2025-01-01", "2025-03-15")["BTC/USDT"]
    p = {"refit_every": 300, "min_train": 600, "threshold": 0.5, "exit_threshold": 0.5}
    prob = strat.signals(bars, p).extras["p"]
    assert np.isnan(prob[:600]).all() and np.isfinite(prob[600:]).mean() > 0.95
    # the second refit (bar 900), recomputed by hand: the labels bars 0..900 make (horizon 12)
    X = compute_features(bars, FeatureSet.of(*FEATURES))
    lab = labels_of(bars.iloc[:901], _spec("mm").label)
    assert bars.index.get_indexer(lab.index).max() == 900 - 12
    known = np.ones(len(lab), dtype=bool)
    Xl = X.loc[lab.index].to_numpy()
    ok = known & np.isfinite(Xl).all(axis=1)
    w = uniqueness_weights(pd.DatetimeIndex(lab.index[ok]), lab["t1"][ok], pd.DatetimeIndex(bars.index))
    est = fit_weighted(make_estimator("lightgbm", {"n_estimators": 30, "num_leaves": 8}, seed=3), Xl[ok],
                       (lab["label"].to_numpy() > 0).astype(int)[ok], w.to_numpy())
    np.testing.assert_allclose(prob[900:1200], est.predict_proba(X.to_numpy()[900:1200])[:, 1], rtol=1e-12)
    report = check_lookahead(strat, bars, p, cuts=3, seed=1)
    assert report.ok, report
    res = walk_forward(strat, {"BTC/USDT": bars}, folds=2, n_trials=3, seed=1,
                       fixed={"short": False, "refit_every": 300, "min_train": 600}, save=False)
    assert len(res.folds) == 2


def test_a_fresh_process_loads_a_version_from_the_store_it_names(env: dict[str, Any], tmp_path: Path) -> None:
    """A ``models:/`` URI resolves through MLflow's process-wide URIs: a runner or a notebook kernel
    that never trained must still load from the store it was given, not from MLflow's default."""
    import subprocess
    import sys

    code = ("import sys; from workbench.models.registry import ModelRegistry; "
            "m, lin = ModelRegistry(sys.argv[1]).load('mm', 'champion'); "
            "print(type(m).__name__, lin['version'])")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH")}
    out = subprocess.run([sys.executable, "-c", code, env["registry"].uri], capture_output=True, text=True,
                         cwd=tmp_path, env=clean, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["LGBMClassifier", "1"]


def test_bet_sizing_scales_each_entry_by_its_probability(env: dict[str, Any]) -> None:
    from scipy.stats import norm

    from workbench.strategies.ml_model import bet_size

    p = np.array([0.3, 0.5, 0.6, 0.75, 0.99, np.nan])
    expected = [0.0, 0.0, 2 * norm.cdf(0.1 / np.sqrt(0.24)) - 1, 2 * norm.cdf(0.25 / np.sqrt(0.1875)) - 1,
                2 * norm.cdf(0.49 / np.sqrt(0.0099)) - 1, 0.0]
    np.testing.assert_allclose(bet_size(p), expected, rtol=1e-12)
    assert round(float(bet_size(np.array([0.6]))[0]), 4) == 0.1617
    strat = get_strategy("ml_model(mm@1)")
    bars = load_bars(env["lake"], ["BTC/USDT"], "1h")["BTC/USDT"]
    params = {"threshold": 0.55, "exit_threshold": 0.5, "bet_size": True}
    prob = strat.signals(bars, params).extras["p"]
    res = backtest(strat, bars, params, sizing=Sizing(fraction=0.5))
    full = backtest(strat, bars, {**params, "bet_size": False}, sizing=Sizing(fraction=0.5))
    assert len(res.trades) == len(full.trades) > 0  # the same trades, smaller
    orders = res.orders[res.orders["reason"] == "entry"]
    first = orders.iloc[0]
    signal_bar = bars.index.get_loc(first["time"]) - 1  # next-open fills: the bar before
    value = first["size"] * first["price"] + first["fees"]  # what the entry spent, fee included
    share = float(bet_size(prob[signal_bar:signal_bar + 1])[0])
    assert 0 < share < 1 and value == pytest.approx(0.5 * share * 100_000, rel=1e-6)
