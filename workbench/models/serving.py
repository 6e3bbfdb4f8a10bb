"""Pure inference with a registered model: load a version once, predict on bars, never train.

What the `ml_model` strategy, the paper runner and the drift monitor share. A version's fitted model
and lineage are immutable, so a loaded version is cached for the life of the process (keyed by the
store, the name and the number); an alias (``champion``) is resolved to its number on every lookup,
because an alias moves. The features are recomputed from the bars with the feature set the version
was trained on (its lineage), so research, backtest and paper run one implementation.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ConfigError, DataError
from workbench.features import FeatureSet, compute_features
from workbench.models.registry import ModelRegistry, quiet, tracking_uri

_LOCK = threading.Lock()
_REGISTRIES: dict[str, ModelRegistry] = {}
_LOADED: dict[tuple[str, str, int], LoadedModel] = {}


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, ready for inference: the fitted estimator, its feature set and lineage."""

    name: str
    version: int
    run_id: str
    estimator: Any = field(repr=False)
    feature_set: FeatureSet = field(repr=False)
    lineage: dict[str, Any] = field(repr=False)
    uri: str = ""

    @property
    def feature_set_key(self) -> str:
        return self.feature_set.key()

    @property
    def label(self) -> dict[str, Any]:
        return dict(self.lineage.get("label", {}))

    def pins(self) -> dict[str, Any]:
        """What a promotion artifact pins: the version, its run and its feature set."""
        return {"name": self.name, "version": self.version, "run_id": self.run_id,
                "feature_set_key": self.feature_set_key, "features": list(self.feature_set.columns),
                "label": self.label, "timeframe": self.lineage.get("timeframe"),
                "trained_until": self.lineage.get("end")}

    def warmup(self) -> int:
        """Bars before every feature has a value."""
        return self.feature_set.warmup()

    def features(self, bars: pd.DataFrame) -> pd.DataFrame:
        """The version's features on one symbol's bars (NaN while warming up)."""
        return compute_features(bars, self.feature_set)

    def predict(self, bars: pd.DataFrame) -> np.ndarray:
        """P(label = 1) per bar; NaN where a feature has no value yet."""
        return self.predict_features(self.features(bars))

    def predict_features(self, X: pd.DataFrame) -> np.ndarray:
        """P(label = 1) per row of a feature frame (the version's columns); NaN where one is missing."""
        values = X[self.feature_set.columns].to_numpy(dtype=np.float64)
        ok = np.isfinite(values).all(axis=1)
        out = np.full(len(values), np.nan)
        if ok.any():
            out[ok] = self.estimator.predict_proba(values[ok])[:, list(self.estimator.classes_).index(1)]
        return out


def registry_for(uri: str | None = None) -> ModelRegistry:
    """One `ModelRegistry` per store for the process (opening MLflow's store is the slow part)."""
    key = uri or tracking_uri()
    with _LOCK:
        reg = _REGISTRIES.get(key)
    if reg is None:
        reg = ModelRegistry(key)
        with _LOCK:
            _REGISTRIES[key] = reg
    return reg


def resolve_version(name: str, ref: int | str, registry: ModelRegistry) -> int:
    """The number `ref` names: itself, or the version an alias points at now (one line if none)."""
    text = str(ref).strip()
    if text.isdigit():
        return int(text)
    if text.startswith("v") and text[1:].isdigit():
        return int(text[1:])
    try:
        with quiet():
            mv = registry.client.get_model_version_by_alias(name, text)
        return int(mv.version)
    except Exception:  # MLflow raises its own exception for an unknown model or alias
        registry.get(name, text)  # the registry's one-line error names the model's versions
        raise ConfigError(f"no version of model {name} is the {text}") from None


def load_model(name: str, ref: int | str = "champion", *, registry: ModelRegistry | None = None
               ) -> LoadedModel:
    """Version `ref` (a number or an alias) of registered model `name`, loaded once per process."""
    reg = registry or registry_for()
    version = resolve_version(name, ref, reg)
    key = (reg.uri, name, version)
    with _LOCK:
        hit = _LOADED.get(key)
    if hit is not None:
        return hit
    estimator, lineage = reg.load(name, version)
    items = lineage.get("feature_set")
    if not items:
        raise ConfigError(f"model {name} version {version} records no feature set in its lineage; it was not "
                          "trained by `workbench model train`: train it again")
    fs = FeatureSet.from_resolved(items, name=name)
    if lineage.get("feature_set_key") and lineage["feature_set_key"] != fs.key():
        raise DataError(f"{name} version {version}: its recorded features no longer hash to its feature-set "
                        "key (a feature's definition changed); retrain it")
    loaded = LoadedModel(name, version, str(lineage.get("run_id", "")), estimator, fs, lineage, reg.uri)
    with _LOCK:
        _LOADED[key] = loaded
    return loaded


def clear_cache() -> None:
    """Forget loaded versions and open stores (a test switching stores, a notebook after retraining)."""
    with _LOCK:
        _LOADED.clear()
        _REGISTRIES.clear()
