"""Training and the registry: lineage, MLflow round trip, aliases, determinism, CPCV paths, bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cli_runner import invoke

from workbench import Lake
from workbench.backtest.engine import fingerprint, load_bars
from workbench.data.sources.synthetic import SyntheticSource
from workbench.errors import ConfigError, DataError
from workbench.models.estimators import make_estimator
from workbench.models.registry import ModelRegistry
from workbench.models.training import TrainSpec, build_dataset, load_train_spec, train_model

START, END = pd.Timestamp("2025-01-01", tz="UTC"), pd.Timestamp("2025-03-15", tz="UTC")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small seeded lake (1h synthetic BTC/USDT and ETH/USDT, 10 weeks) and one MLflow store."""
    root = tmp_path_factory.mktemp("ml") / "data"
    lake = Lake(root)
    for k, sym in enumerate(("BTC/USDT", "ETH/USDT")):
        lake.write_bars("synthetic", sym, "1h", SyntheticSource(seed=3 + k).bars(sym, "1h", START, END))
    return root


@pytest.fixture(scope="module")
def registry(root: Path) -> ModelRegistry:
    return ModelRegistry(f"sqlite:///{root / 'mlflow.db'}")


def spec(name: str, **kw: Any) -> TrainSpec:
    base: dict[str, Any] = {
        "name": name, "symbols": ["BTC/USDT", "ETH/USDT"], "timeframe": "1h",
        "features": ["ret(1)", "ret(6)", "vol(24)|zscore(100)", "rsi(14)", "hour_sin"],
        "label": {"kind": "triple_barrier", "horizon": 12, "pt": 1.5, "sl": 1.5, "vol_window": 24},
        "model": "lightgbm", "params": {"n_estimators": 40}, "cv": {"kind": "purged_kfold", "n_splits": 4},
        "seed": 5}
    return TrainSpec.model_validate({**base, **kw})


def test_a_trained_version_carries_its_lineage_and_round_trips_through_mlflow(
        root: Path, registry: ModelRegistry) -> None:
    lake = Lake(root)
    s = spec("rt")
    res = train_model(lake, s, registry=registry)
    assert (res.version, res.alias) == (1, "champion") and res.cv["n_folds"] == 4
    frames = load_bars(lake, s.symbols, "1h")
    v = registry.get("rt", "champion")
    assert v.tags["workbench.data_fingerprint"] == fingerprint(frames)
    assert v.tags["workbench.feature_set_key"] == s.feature_set().key()
    model, lineage = registry.load("rt")
    assert lineage["features"] == ["ret_1", "ret_6", "vol_24_z100", "rsi_14", "hour_sin"]
    assert lineage["label"]["horizon"] == 12 and lineage["code_version"] and lineage["version"] == 1
    history = registry.client.get_metric_history(res.run_id, "fold_roc_auc")
    assert len(history) == 4 and {m.step for m in history} == {0, 1, 2, 3}
    assert v.metrics["cv_roc_auc_mean"] == pytest.approx(np.mean([f["roc_auc"] for f in res.cv["folds"]]))
    # the registered model is the one fitted on every row: a refit from the same inputs predicts the same
    ds = build_dataset(frames, s, fingerprint=fingerprint(frames))
    again = make_estimator(s.model, s.params, seed=s.seed).fit(ds.X.to_numpy(), ds.y.to_numpy(),
                                                               sample_weight=ds.weight.to_numpy())
    np.testing.assert_array_equal(model.predict_proba(ds.X.to_numpy()), again.predict_proba(ds.X.to_numpy()))
    assert len(ds.X) == res.rows and set(ds.y.unique()) == {0, 1}


def test_aliases_move_with_a_reason_and_roll_back(root: Path, registry: ModelRegistry) -> None:
    lake = Lake(root)
    first = train_model(lake, spec("al"), registry=registry)
    second = train_model(lake, spec("al", model="logistic", params={}), registry=registry)
    assert (first.alias, second.alias) == ("champion", "challenger")
    promoted = registry.promote("al", 2, reason="beats v1 on purged AUC")
    assert promoted.aliases == ["champion"] and promoted.tags["workbench.alias.champion.from"] == "1"
    assert registry.get("al", 1).aliases == []
    back = registry.rollback("al", reason="drift in live features")
    assert back.version == 1 and back.aliases == ["champion"]
    assert back.tags["workbench.alias.champion.reason"] == "rollback: drift in live features"
    with pytest.raises(ConfigError, match="al version 1 is already the champion"):
        registry.promote("al", 1, reason="again")
    with pytest.raises(ConfigError, match="model al has no version 9 \\(versions: 1, 2\\)"):
        registry.promote("al", 9, reason="x")
    with pytest.raises(ConfigError, match="say why"):
        registry.promote("al", 2, reason=" ")


def test_the_same_seed_gives_the_same_model_bytes_and_cpcv_gives_paths(root: Path,
                                                                       registry: ModelRegistry) -> None:
    import mlflow.artifacts

    lake = Lake(root)
    s = spec("det", cv={"kind": "cpcv", "n_groups": 5, "n_test_groups": 2}, importance=True)
    a, b = train_model(lake, s, registry=registry), train_model(lake, s, registry=registry)

    def model_bytes(version: int) -> str:
        with registry.active():  # models:/ resolves through MLflow's process-wide registry URI
            path = Path(mlflow.artifacts.download_artifacts(f"models:/det/{version}",
                                                            tracking_uri=registry.uri)) / "model.pkl"
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert model_bytes(a.version) == model_bytes(b.version)
    assert a.cv["n_folds"] == 10 and len(a.cv["paths"]) == 4  # C(5,2) splits; 10 * 2 / 5 paths
    assert a.cv["folds"] == b.cv["folds"]
    assert a.importance is not None and list(a.importance.columns) == ["mda", "mda_std", "sfi", "mdi"]
    pd.testing.assert_frame_equal(a.importance, b.importance)  # seeded: the same table twice
    assert set(a.importance.index) == set(s.feature_set().columns)
    assert "mda.ret_1" in registry.client.get_run(a.run_id).data.metrics


def test_bad_input_is_refused_in_one_line_and_nothing_is_registered(root: Path, tmp_path: Path,
                                                                     registry: ModelRegistry) -> None:
    lake = Lake(root)
    cases = [
        (dict(features=["ret(1)", "rsii(14)"]), ConfigError, "unknown feature 'rsii': did you mean rsi"),
        (dict(model="gbm"), ConfigError, "unknown model 'gbm'"),
        (dict(params={"n_trees": 3}), ConfigError, "model lightgbm has no parameter 'n_trees'"),
        (dict(end="2025-01-03"), DataError, "no bar of BTC/USDT, ETH/USDT has both every feature and a "),
        (dict(end="2025-01-07"), DataError, "labelled rows are too few for 4 folds"),
    ]
    for change, kind, message in cases:
        with pytest.raises(kind, match=message) as err:
            train_model(lake, spec("bad", **change), registry=registry)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="threshold has no effect on a triple_barrier label"):
        spec("bad", label={"kind": "triple_barrier", "horizon": 5, "threshold": 0.01})
    with pytest.raises(ConfigError, match="n_splits has no effect on cpcv"):
        spec("bad", cv={"kind": "cpcv", "n_splits": 3})
    assert "bad" not in set(registry.models()["model"])
    with pytest.raises(ConfigError, match=r"cannot open the MLflow store postgresql\+psycopg://nobody:\*\*\*@"):
        ModelRegistry("postgresql+psycopg://nobody:secret@127.0.0.1:9/none")  # the password is never shown
    yaml = tmp_path / "t.yaml"
    yaml.write_text("name: y\nsymbols: [BTC/USDT]\ntimeframe: 1h\nfeatures: [ret(1)]\nlabel: {horizon: 5}\n"
                    "modle: lightgbm\n")
    with pytest.raises(ConfigError, match=r"t.yaml:6: unknown key 'modle' \(did you mean 'model'\?\)"):
        load_train_spec(yaml)


def test_the_command_line_trains_lists_shows_promotes_and_rolls_back(root: Path, tmp_path: Path,
                                                                     registry: ModelRegistry) -> None:
    env = {"WORKBENCH_MLFLOW_URI": registry.uri}  # the module's store (creating one takes seconds)
    yaml = tmp_path / "m.yaml"
    yaml.write_text("name: cli_model\nsymbols: [BTC/USDT]\ntimeframe: 1h\n"
                    "features: [ret(1), ret(6), rsi(14)]\n"
                    "label: {kind: fixed_horizon, horizon: 6}\nmodel: logistic\ncv: {n_splits: 3}\n")
    for _ in range(2):
        res = invoke(["model", "train", str(yaml)], data=root, env=env)
        assert res.returncode == 0, res.stderr
    assert "cli_model version 2 (challenger)" in res.stdout and "purged CV over 3 folds" in res.stdout
    assert "Successfully registered" not in res.stdout + res.stderr  # MLflow's own chatter stays out
    listing = invoke(["model", "ls"], data=root, env=env)
    assert listing.returncode == 0 and "cli_model" in listing.stdout
    show = invoke(["model", "show", "cli_model", "--version", "challenger"], data=root, env=env)
    assert show.returncode == 0 and "feature set key" in show.stdout and "ret_1, ret_6, rsi_14" in show.stdout
    promoted = invoke(["model", "promote", "cli_model", "2", "--reason", "better"], data=root, env=env)
    assert promoted.returncode == 0
    back = invoke(["model", "rollback", "cli_model", "--reason", "worse live"], data=root, env=env)
    assert back.returncode == 0 and "cli_model version 1 is the champion again" in back.stdout
    drift = invoke(["model", "drift", "cli_model", "--since", "2025-03-01"], data=root, env=env)
    assert drift.returncode == 0 and "cli_model version 1: recent 2025-03-01" in drift.stdout, drift.stderr
    nothing = invoke(["model", "drift", "cli_model"], data=root, env=env)  # trained up to the last bar
    assert nothing.returncode != 0 and "nothing recent to compare" in nothing.stderr
    missing = invoke(["model", "show", "nope"], data=root, env=env)
    assert missing.returncode != 0 and "no registered model 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    tuned = invoke(["model", "tune", str(yaml), "--trials", "2", "--storage", str(tmp_path / "s.journal"),
                    "--train"], data=root, env=env)
    assert tuned.returncode == 0, tuned.stderr
    assert "study model-cli_model (2 trials" in tuned.stdout
    assert "cli_model version 3 (challenger)" in tuned.stdout
    bad = invoke(["model", "tune", str(yaml), "--space", "C=a:b"], data=root, env=env)
    assert bad.returncode != 0 and "--space 'C=a:b': write name=low:high" in bad.stderr


def test_drift_is_found_in_a_shifted_sample_and_quiet_without_one() -> None:
    from workbench.models.drift import drift_table, psi

    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 5000)
    assert psi(ref, rng.normal(0, 1, 2000)) < 0.02  # the same distribution
    assert psi(ref, rng.normal(0.5, 1, 2000)) > 0.2 and psi(ref, rng.normal(0, 2, 2000)) > 0.25
    table = drift_table(pd.DataFrame({"a": ref, "b": ref}),
                        pd.DataFrame({"a": rng.normal(0, 1, 2000), "b": rng.normal(0, 2.5, 2000)}))
    assert table.set_index("column")["status"].to_dict() == {"a": "ok", "b": "drift"}


def steady_bars(seed: int) -> pd.DataFrame:
    """1h bars of a random walk with one volatility from START to END: a stationary market."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(START, END, freq="1h", inclusive="left", tz="UTC")
    n = len(ts)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    o = np.r_[100.0, c[:-1]]
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0, 0.002, n)))
    lo = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, 0.002, n)))
    return pd.DataFrame({"ts": ts, "open": o, "high": h, "low": lo, "close": c,
                         "volume": rng.uniform(50, 150, n)})


def test_a_model_s_drift_on_later_bars_is_reported_and_logged(tmp_path: Path,
                                                              registry: ModelRegistry) -> None:
    """Trained on the first weeks, checked on later weeks of the same market (quiet) and of a
    market three times as volatile (the volatility feature drifts)."""
    from workbench.models.drift import model_drift

    lake = Lake(tmp_path / "data")
    calm = steady_bars(seed=11)  # one volatility throughout (the synthetic source has regimes)
    lake.write_bars("synthetic", "BTC/USDT", "1h", calm)
    s = spec("dr", symbols=["BTC/USDT"], end="2025-02-15", features=["ret(1)", "vol(24)", "rsi(14)"])
    train_model(lake, s, registry=registry)
    quiet_report = model_drift(lake, registry, "dr")
    assert quiet_report.drifting == [] and quiet_report.live["rows"] > 100
    assert quiet_report.recent[0] > pd.Timestamp("2025-02-14", tz="UTC")
    # the same market after 2025-02-15, three times as volatile (log prices stretched about the last
    # close before it: a monotone map, so each bar stays a valid bar)
    cut = (calm["ts"] > pd.Timestamp("2025-02-15", tz="UTC")).to_numpy()
    base = np.log(calm["close"].to_numpy()[~cut][-1])
    wild = calm.copy()
    for col in ("open", "high", "low", "close"):
        values = calm[col].to_numpy(dtype=float).copy()
        values[cut] = np.exp(base + 3 * (np.log(values[cut]) - base))
        wild[col] = values
    other = Lake(tmp_path / "wild")
    other.write_bars("synthetic", "BTC/USDT", "1h", wild)
    loud = model_drift(other, registry, "dr")
    assert "vol_24" in loud.drifting, loud.table
    runs = registry.client.search_runs([registry.experiment_id()], "tags.`workbench.drift_of` = 'dr/1'")
    assert len(runs) == 2 and "psi.vol_24" in runs[0].data.metrics


def test_a_hyperparameter_search_on_the_purged_objective_resumes_and_is_shared(
        root: Path, tmp_path: Path, postgres_url: str) -> None:
    from workbench.optimize.model_search import search_model

    lake = Lake(root)
    s = spec("tune", model="logistic", params={}, symbols=["BTC/USDT"])
    journal = str(tmp_path / "tune.journal")
    first = search_model(lake, s, trials=3, storage=journal)
    assert first.trials == 3 and set(first.best_params) == {"C"} and 0 < first.best_log_loss < 1.5
    again = search_model(lake, s, trials=5, storage=journal)  # resumes: two more, not five
    assert again.trials == 5 and again.best_log_loss <= first.best_log_loss
    # on PostgreSQL, as walk-forward shares its trials between machines
    shared = search_model(lake, s, trials=2, storage=postgres_url, space={"C": [0.01, 1.0, "log"]})
    assert shared.trials == 2 and 0.01 <= shared.best_params["C"] <= 1.0
    with pytest.raises(ConfigError, match="searched another spec"):
        search_model(lake, spec("tune", model="logistic", params={}, symbols=["BTC/USDT"],
                                features=["ret(2)"]), trials=6, storage=journal)
    with pytest.raises(ConfigError, match="search: C needs \\[low, high\\]"):
        search_model(lake, s, trials=1, storage=journal, space={"C": [1.0]})


def test_meta_labels_learn_which_of_a_primary_strategy_s_trades_to_take(root: Path,
                                                                       registry: ModelRegistry) -> None:
    from workbench.models.training import primary_side

    lake = Lake(root)
    s = spec("meta", label={"kind": "meta", "horizon": 12, "pt": 1.5, "sl": 1.5, "vol_window": 24,
                            "primary": "sma_cross", "primary_params": {"fast": 5, "slow": 20}},
             cv={"kind": "purged_kfold", "n_splits": 3})
    frames = load_bars(lake, s.symbols, "1h")
    side = primary_side(frames["BTC/USDT"], s.label)
    entries = int((side != 0).sum())
    assert 20 < entries < len(side) / 5  # the crossings, not every bar
    ds = build_dataset(frames, s, fingerprint=fingerprint(frames))
    btc = ds.X.index[ds.symbols == "BTC/USDT"]
    assert set(btc) <= set(side.index[side != 0])  # one row per primary entry (with its features)
    res = train_model(lake, s, registry=registry)
    assert res.lineage["label"]["primary"] == "sma_cross" and res.rows == len(ds.X)
    with pytest.raises(ConfigError, match="a meta label needs primary"):
        spec("meta", label={"kind": "meta", "horizon": 5})


def test_a_pipeline_drift_step_fails_on_a_drifted_model_naming_its_columns(tmp_path: Path) -> None:
    """The `drift` step of a pipeline: quiet on the market the model was trained on, a failed step (which
    a pipeline with alerts reports) once the market turns three times as volatile."""
    from workbench.pipelines import PipelineFailed, run_pipeline

    data = tmp_path / "data"
    calm = steady_bars(seed=11)
    lake = Lake(data)
    lake.write_bars("synthetic", "BTC/USDT", "1h", calm)
    s = spec("dp", symbols=["BTC/USDT"], end="2025-02-15", features=["ret(1)", "vol(24)", "rsi(14)"])
    train_model(lake, s, registry=ModelRegistry(data=data))
    pipe = tmp_path / "watch_model.yaml"
    pipe.write_text("steps:\n  - drift: {model: dp, fail_on: drift}\n")
    quiet = run_pipeline(pipe, data_root=data)
    assert quiet.outputs("drift")["drifting"] == []
    cut = (calm["ts"] > pd.Timestamp("2025-02-15", tz="UTC")).to_numpy()
    base = np.log(calm["close"].to_numpy()[~cut][-1])
    wild = calm.copy()
    for col in ("open", "high", "low", "close"):
        values = calm[col].to_numpy(dtype=float).copy()
        values[cut] = np.exp(base + 3 * (np.log(values[cut]) - base))
        wild[col] = values
    lake.write_bars("synthetic", "BTC/USDT", "1h", wild)
    with pytest.raises(PipelineFailed, match=r"failed at step drift: DataError: model dp version 1 drifted: "
                                             r"PSI above 0.25 in .*vol_24"):
        run_pipeline(pipe, data_root=data)
