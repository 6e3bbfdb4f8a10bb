"""Retraining through model gates: a challenger replaces the champion only when it wins on the same
purged folds, with the reason recorded; the gates refuse being used for the wrong thing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from cli_runner import invoke

from workbench import Lake
from workbench.data.sources.synthetic import SyntheticSource
from workbench.errors import ConfigError
from workbench.models.registry import ModelRegistry
from workbench.models.training import TrainSpec
from workbench.pipelines.spec import load_pipeline
from workbench.promote import GateSet, load_gates
from workbench.promote.models import retrain

START, END = pd.Timestamp("2025-01-01", tz="UTC"), pd.Timestamp("2025-04-01", tz="UTC")
BASE: dict[str, Any] = {
    "name": "rt", "symbols": ["BTC/USDT", "ETH/USDT"], "timeframe": "1h", "end": "2025-03-01",
    "features": ["ret(1)", "ret(6)", "vol(24)|zscore(100)", "rsi(14)"],
    "label": {"kind": "triple_barrier", "horizon": 12, "pt": 1.5, "sl": 1.5, "vol_window": 24},
    "model": "lightgbm", "params": {"n_estimators": 30, "num_leaves": 8}, "cv": {"n_splits": 3}, "seed": 2}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("retrain") / "data"
    lake = Lake(root)
    for k, sym in enumerate(("BTC/USDT", "ETH/USDT")):
        lake.write_bars("synthetic", sym, "1h", SyntheticSource(seed=11 + k).bars(sym, "1h", START, END))
    return root


def _gates(**rules: dict[str, float]) -> GateSet:
    return GateSet.from_mapping({"gates": rules})


def test_the_first_version_is_champion_and_a_challenger_moves_the_alias_only_when_it_wins(root: Path) -> None:
    lake, registry = Lake(root), ModelRegistry(f"sqlite:///{root / 'a.db'}")
    spec = TrainSpec.model_validate(BASE)
    first = retrain(lake, spec, registry=registry)
    assert (first.version, first.champion, first.promoted) == (1, 1, True) and "first version" in first.reason
    # the same recipe on the same data: the same rows and purged folds give exactly the same scores
    same = retrain(lake, spec, registry=registry, gates=_gates(auc_gain={"min": 0.001}))
    assert same.values["auc_gain"] == 0.0 and same.values["log_loss_gain"] == 0.0
    assert (same.version, same.champion, same.promoted) == (2, 1, False)
    assert "refused by auc_gain=0 (min 0.001)" in same.reason
    assert registry.get("rt", "challenger").version == 2 and registry.get("rt", "champion").version == 1
    tag = json.loads(registry.get("rt", 2).tags["workbench.retrain"])
    assert tag["promoted"] is False and tag["champion"] == 1 and tag["verdicts"][0]["name"] == "auc_gain"
    # a new recipe on newer data, against the champion's recipe refitted on the same rows
    newer = retrain(lake, TrainSpec.model_validate({**BASE, "features": [*BASE["features"], "hour_sin"]}),
                    registry=registry, end="2025-04-01", gates=_gates(auc_gain={"min": -1.0}))
    assert newer.promoted and newer.champion == 3 and math.isfinite(newer.values["auc_gain"])
    v3 = registry.get("rt", "champion")
    assert v3.version == 3 and v3.tags["workbench.alias.champion.from"] == "1"
    assert v3.tags["workbench.alias.champion.reason"].startswith("retrain: beats v1 on the same purged folds")
    history = registry.history("rt")
    assert history["version"].tolist() == [3, 2, 1] and "refused by auc_gain" in history.loc[1, "retrain"]


def test_a_champion_of_another_label_cannot_be_compared_and_is_kept(root: Path) -> None:
    lake, registry = Lake(root), ModelRegistry(f"sqlite:///{root / 'b.db'}")
    retrain(lake, TrainSpec.model_validate(BASE), registry=registry)
    other = TrainSpec.model_validate({**BASE, "label": {"kind": "fixed_horizon", "horizon": 6}})
    res = retrain(lake, other, registry=registry)
    assert not res.promoted and res.champion == 1
    gain = next(v for v in res.verdicts if v.name == "auc_gain")
    assert not gain.passed and "predicts another label" in gain.detail


def test_gates_refuse_to_judge_the_wrong_thing(tmp_path: Path) -> None:
    model_file = tmp_path / "m.yaml"
    model_file.write_text("gates:\n  cv_auc: {min: 0.5}\n")
    with pytest.raises(ConfigError, match=r"gate cv_auc judges a retrained model, not a walk-forward run; "
                                          r"put it in a model gates file"):
        load_gates(model_file)
    with pytest.raises(ConfigError, match=r"gate oos_sharpe judges a walk-forward run, not a retrained"):
        load_gates(_gates(oos_sharpe={"min": 0.5}), scope="model")
    shipped = load_gates(Path("pipelines/model_gates.yaml"), scope="model")
    assert shipped.to_yaml() == load_gates(None, scope="model").to_yaml()  # the file equals the built-ins


def test_cli_retrain_and_the_weekly_pipeline(root: Path, tmp_path: Path) -> None:
    spec = tmp_path / "rt.yaml"
    spec.write_text(yaml.safe_dump({**BASE, "name": "cli_rt"}))
    env = {"WORKBENCH_MLFLOW_URI": f"sqlite:///{tmp_path / 'c.db'}"}
    first = invoke(["model", "retrain", str(spec)], data=root, env=env)
    assert first.returncode == 0, first.stderr
    assert "cli_rt version 1: now the champion" in first.stdout
    gates = tmp_path / "g.yaml"
    gates.write_text("gates:\n  auc_gain: {min: 0.5}\n")
    refused = invoke(["model", "retrain", str(spec), "--gates", str(gates), "--required"], data=root, env=env)
    assert refused.returncode == 1 and "stays the challenger" in refused.stdout
    assert "Traceback" not in refused.stdout + refused.stderr
    bad = invoke(["model", "retrain", str(spec), "--gates", "pipelines/promotion.yaml"], data=root, env=env)
    assert bad.returncode != 0 and "judges a walk-forward run, not a retrained model" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    weekly = load_pipeline(Path("pipelines/weekly_retrain.yaml"))
    assert [s.kind for s in weekly.steps] == ["retrain", "report"]
    with pytest.raises(ConfigError, match=r"retrain.*spec"):
        load_pipeline(_pipeline(tmp_path, {"retrain": {"gates": "pipelines/model_gates.yaml"}}))
    with pytest.raises(ConfigError, match=r"judges a walk-forward run"):
        load_pipeline(_pipeline(tmp_path, {"retrain": {"spec": str(spec),
                                                       "gates": "pipelines/promotion.yaml"}}))


def _pipeline(folder: Path, step: dict[str, Any]) -> Path:
    p = folder / "p.yaml"
    p.write_text(yaml.safe_dump({"description": "x", "steps": [step]}))
    return p
