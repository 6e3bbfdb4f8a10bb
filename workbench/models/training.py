"""Train a model: bars -> features -> labels -> purged validation -> fit -> MLflow run and version.

A `TrainSpec` says everything the model depends on (YAML under ``pipelines/models/`` or Python):

    name: btc_gbm
    symbols: [BTC/USDT, ETH/USDT]
    timeframe: 1h
    features: ["ret(1)", "ret(12)", "vol(24)|zscore(500)", "rsi(14)"]
    label: {kind: triple_barrier, horizon: 24, pt: 2.0, sl: 2.0, vol_window: 48}
    model: lightgbm
    cv: {kind: purged_kfold, n_splits: 5, embargo: 0.01}

Tick features (`spread`, `ofi`, `trade_imbalance`, `book_pressure`) read the collector's trades,
quotes or book: `train_model` reads those of each symbol over its bars' range from the lake and
joins them per bar (`add_tick_columns`), and their fingerprint joins the bars' in the cache key.

The model predicts the probability that a bar's label is positive (the profit-taking barrier, or a
rise above the threshold); with a meta label, that a primary strategy's trade pays (its entries
are the rows). Validation is purged k-fold (or combinatorial purged CV: a distribution
over paths, not one number) on every symbol's rows together, in time order; samples are weighted
by label uniqueness. The fitted model is logged and registered with its lineage (data
fingerprint, feature-set key, label spec, code version): the first version of a name becomes the
`champion`, later ones the `challenger` until promoted.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
from pydantic import Field
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from workbench.config import ConfigModel, load_yaml, validate
from workbench.data.ticks import TickKind
from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError, DataError
from workbench.features import FeatureCache, FeatureSet, as_feature_set, get_feature
from workbench.features.ticks import TICK_PREFIX, tick_columns
from workbench.models.estimators import fit_weighted, make_estimator
from workbench.models.labels import LabelSpec, labels_of, primary_side, uniqueness_weights
from workbench.models.registry import CHALLENGER, CHAMPION, ModelRegistry, quiet
from workbench.models.validation import CombinatorialPurgedKFold, PurgedKFold
from workbench.version import code_version

MIN_ROWS_PER_FOLD = 20


class CvSpec(ConfigModel):
    """Purged k-fold, or combinatorial purged CV (several out-of-sample paths)."""

    kind: Literal["purged_kfold", "cpcv"] = "purged_kfold"
    n_splits: int = Field(default=5, ge=2)
    embargo: float = Field(default=0.01, ge=0, lt=1)
    n_groups: int = Field(default=6, ge=3)
    n_test_groups: int = Field(default=2, ge=1)

    def model_post_init(self, context: Any) -> None:
        only = {"purged_kfold": {"n_groups", "n_test_groups"}, "cpcv": {"n_splits"}}
        unused = sorted(self.model_fields_set & only[self.kind])
        if unused:
            raise ConfigError(f"cv: {', '.join(unused)} has no effect on {self.kind}; drop it")
        if self.kind == "cpcv" and self.n_test_groups >= self.n_groups:
            raise ConfigError(f"cv: n_test_groups ({self.n_test_groups}) must be below n_groups "
                              f"({self.n_groups}); e.g. n_groups: 6, n_test_groups: 2")


class TrainSpec(ConfigModel):
    """What a model is trained on and how (see the module docstring)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    symbols: list[str] = Field(min_length=1)
    timeframe: str
    source: str | None = None
    start: str | None = None
    end: str | None = None
    features: list[str | dict[str, Any]] = Field(min_length=1)
    label: LabelSpec
    model: str = "lightgbm"
    params: dict[str, Any] = Field(default_factory=dict)
    cv: CvSpec = Field(default_factory=CvSpec)
    weights: Literal["uniqueness", "none"] = "uniqueness"
    importance: bool = False  # MDA and single-feature importance on the purged folds, MDI for trees
    seed: int = 0

    def feature_set(self) -> FeatureSet:
        return as_feature_set({"name": self.name, "features": self.features})


def load_train_spec(path: str | Path) -> TrainSpec:
    """A train.yaml, errors with file and line."""
    spec = validate(TrainSpec, load_yaml(Path(path)))
    spec.feature_set()  # unknown features are refused now, before any data is read
    return spec


@dataclass
class Dataset:
    """Rows ready to learn from: features X, binary target y, label ends t1, weights, in time order."""

    X: pd.DataFrame
    y: pd.Series
    t1: pd.Series
    weight: pd.Series
    symbols: pd.Series
    lineage: dict[str, Any] = field(default_factory=dict)


def build_dataset(frames: dict[str, pd.DataFrame], spec: TrainSpec, *, fingerprint: str,
                  cache: FeatureCache | None = None) -> Dataset:
    """Features and labels of every symbol, joined on the bars that have both, stacked in time order."""
    fs = spec.feature_set()
    if cache is not None:
        matrix, feat_lineage = cache.get(frames, fs, fingerprint)
    else:
        from workbench.features import feature_matrix

        matrix, feat_lineage = feature_matrix(frames, fs), {"cached": False}
    parts = []
    for sym, bars in frames.items():
        lab = labels_of(bars, spec.label)
        X = cast(pd.DataFrame, matrix.loc[sym]).reindex(lab.index)
        ok = X.notna().all(axis="columns").to_numpy()
        X, lab = X.loc[ok], lab.loc[ok]
        if spec.weights == "uniqueness" and len(lab):
            w = uniqueness_weights(pd.DatetimeIndex(lab.index), lab["t1"], pd.DatetimeIndex(bars.index))
        else:
            w = pd.Series(1.0, index=lab.index)
        parts.append(pd.DataFrame({"symbol": sym, "t1": lab["t1"], "y": (lab["label"] > 0).astype(int),
                                   "w": np.asarray(w, dtype=float)}, index=lab.index).join(X))
    rows = pd.concat(parts).sort_index(kind="stable")
    rows.index.name = "ts"
    if rows.empty:
        raise DataError(f"no bar of {', '.join(frames)} has both every feature and a label: give a longer "
                        f"range than the features' warm-up ({fs.warmup()} bars) plus the label horizon")
    cols = fs.columns
    return Dataset(rows[cols], rows["y"], rows["t1"], rows["w"], rows["symbol"],
                   {"feature_set": fs.resolved(), "feature_set_key": fs.key(),
                    "features_cached": bool(feat_lineage.get("cached"))})


def add_tick_columns(lake: Any, frames: dict[str, pd.DataFrame], fs: FeatureSet, timeframe: str, *,
                     source: str | None = None) -> dict[str, pd.DataFrame]:
    """The bars with the per-bar tick columns the set's tick features read (`tick_columns`), from
    the collector's tables in the lake over each symbol's bars (`source`: the bars' own by
    default); the frames themselves when the set has no tick feature."""
    kinds: dict[TickKind, str] = {}  # table -> the first feature that reads it
    for item in fs.features:
        for kind in get_feature(item.name).ticks:
            kinds.setdefault(kind, item.name)
    if not kinds:
        return frames
    length = Timeframe.parse(timeframe).delta
    out = {}
    for sym, bars in frames.items():
        src = source or str(bars.attrs.get("source") or "")
        index = pd.DatetimeIndex(bars.index)
        t0, t1 = index[0], index[-1] + length
        got: dict[TickKind, pd.DataFrame] = {}
        for kind, feature in kinds.items():
            got[kind] = _read_ticks(lake, kind, src, sym, t0 - length if kind is TickKind.BOOK else t0, t1)
            if got[kind].empty:
                raise DataError(f"feature {feature} needs the collector's {kind.value} for {sym} {timeframe} "
                                f"from {src} between {t0} and {t1}, which the lake does not hold; record "
                                f"them with `workbench collect --streams {kind.value}` or drop the feature")
        cols = tick_columns(index, length, trades=got.get(TickKind.TRADES), quotes=got.get(TickKind.QUOTES),
                            book=got.get(TickKind.BOOK))
        joined = bars.join(cols)
        joined.attrs.update(bars.attrs)
        out[sym] = joined
    return out


def _read_ticks(lake: Any, kind: TickKind, source: str, symbol: str, start: pd.Timestamp, end: pd.Timestamp
                ) -> pd.DataFrame:
    """One symbol's rows of a tick table in [start, end) (the book from a bar before: the snapshot
    the first bar opened on)."""
    if kind is TickKind.TRADES:
        return cast(pd.DataFrame, lake.read_trades(source, symbol, start, end))
    if kind is TickKind.QUOTES:
        return cast(pd.DataFrame, lake.read_quotes(source, symbol, start, end))
    return cast(pd.DataFrame, lake.read_book(source, symbol, start, end))


def tick_fingerprint(fingerprint: str, frames: dict[str, pd.DataFrame]) -> str:
    """`fingerprint` (the bars') extended with the tick columns the frames carry: the features' cache
    key changes when recorded ticks do; the bars' own fingerprint when there are none."""
    h = hashlib.sha256(fingerprint.encode())
    found = False
    for sym in sorted(frames):
        for col in sorted(c for c in frames[sym].columns if isinstance(c, str) and c.startswith(TICK_PREFIX)):
            found = True
            h.update(f"{sym}|{col}".encode())
            h.update(np.ascontiguousarray(frames[sym][col].to_numpy(dtype=np.float64)).tobytes())
    return "sha256:" + h.hexdigest() if found else fingerprint


def _splitter(cv: CvSpec, t1: pd.Series) -> PurgedKFold | CombinatorialPurgedKFold:
    if cv.kind == "cpcv":
        return CombinatorialPurgedKFold(cv.n_groups, cv.n_test_groups, t1=t1, embargo=cv.embargo)
    return PurgedKFold(cv.n_splits, t1=t1, embargo=cv.embargo)


def _fold_metrics(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> dict[str, float]:
    out = {"accuracy": float(accuracy_score(y, p >= 0.5, sample_weight=w)),
           "log_loss": float(log_loss(y, np.c_[1 - p, p], sample_weight=w, labels=[0, 1]))}
    out["roc_auc"] = float(roc_auc_score(y, p, sample_weight=w)) if len(np.unique(y)) == 2 else math.nan
    return out


def cross_validate(ds: Dataset, spec: TrainSpec, *, cv: Any = None,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Out-of-sample metrics per fold (purged), and for CPCV per path; the mean, spread and a base
    rate (always predicting the training share) to beat. `cv` replaces the spec's splitter with
    any scikit-learn one (e.g. `KFold(shuffle=True)`, to show what purging prevents)."""
    t1 = pd.Series(ds.t1.to_numpy(), index=pd.DatetimeIndex(ds.X.index))
    cv = cv if cv is not None else _splitter(spec.cv, t1)
    n_folds = cv.get_n_splits()
    if len(ds.X) < n_folds * MIN_ROWS_PER_FOLD:
        raise DataError(f"{len(ds.X)} labelled rows are too few for {n_folds} folds (at least "
                        f"{n_folds * MIN_ROWS_PER_FOLD}); give a longer range or fewer splits")
    X, y, w = ds.X.to_numpy(), ds.y.to_numpy(), ds.weight.to_numpy()
    folds: list[dict[str, float]] = []
    oos: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # fold -> (test rows, their predictions)
    for k, (train, test) in enumerate(cv.split(X)):
        if len(np.unique(y[train])) < 2:
            raise DataError(f"fold {k + 1} trains on one class only; give a longer range or a label with "
                            "both outcomes")
        est = make_estimator(spec.model, spec.params, seed=spec.seed)
        fit_weighted(est, X[train], y[train], w[train])
        p = est.predict_proba(X[test])[:, list(est.classes_).index(1)]
        m = _fold_metrics(y[test], p, w[test])
        m["base_accuracy"] = float(max(y[train].mean(), 1 - y[train].mean()))
        folds.append(m)
        oos[k] = (test, p)
        if progress is not None:
            progress(k + 1, n_folds)
    result: dict[str, Any] = {"folds": folds, "n_folds": n_folds}
    if isinstance(cv, CombinatorialPurgedKFold):
        groups = cv.groups()
        paths = []
        for path in cv.path_assignment():
            pred = np.empty(len(y))
            for split, group in path:
                rows = groups[group]
                test, p = oos[split]
                pred[rows] = p[np.searchsorted(test, rows)]
            paths.append(_fold_metrics(y, pred, w))
        result["paths"] = paths
    for key in ("accuracy", "log_loss", "roc_auc", "base_accuracy"):
        values = np.array([f[key] for f in folds], dtype=float)
        result[f"cv_{key}_mean"] = float(np.nanmean(values))
        result[f"cv_{key}_std"] = float(np.nanstd(values))
    return result


def cv_table(results: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Several validations' mean out-of-sample metrics side by side, a row each."""
    return pd.DataFrame({name: {"AUC": cv["cv_roc_auc_mean"], "accuracy": cv["cv_accuracy_mean"],
                                "log loss": cv["cv_log_loss_mean"], "base rate": cv["cv_base_accuracy_mean"],
                                "folds": cv["n_folds"], "paths": len(cv.get("paths", []))}
                         for name, cv in results.items()}).T


@dataclass
class TrainResult:
    """What `train_model` did: the registered version, its validation and its lineage."""

    name: str
    version: int
    run_id: str
    alias: str
    cv: dict[str, Any]
    lineage: dict[str, Any]
    rows: int
    importance: pd.DataFrame | None = None

    def summary(self) -> str:
        auc = self.cv.get("cv_roc_auc_mean", math.nan)
        acc, base = self.cv["cv_accuracy_mean"], self.cv["cv_base_accuracy_mean"]
        return (f"{self.name} version {self.version} ({self.alias}): {self.rows:,} rows, purged CV over "
                f"{self.cv['n_folds']} folds: AUC {auc:.3f} +/- "
                f"{self.cv.get('cv_roc_auc_std', math.nan):.3f}, "
                f"accuracy {acc:.3f} (base rate {base:.3f})")


def train_model(lake: Any, spec: TrainSpec, *, registry: ModelRegistry | None = None,
                progress: Callable[[int, int], None] | None = None) -> TrainResult:
    """Load the bars, build the dataset, validate with purged CV, fit on every row, log the run and
    register the version (see the module docstring)."""
    from workbench.backtest.engine import fingerprint, load_bars

    fs = spec.feature_set()
    frames = load_bars(lake, spec.symbols, spec.timeframe, spec.start, spec.end, source=spec.source)
    frames = add_tick_columns(lake, frames, fs, spec.timeframe, source=spec.source)
    fp = tick_fingerprint(fingerprint(frames), frames)
    registry = registry or ModelRegistry(data=lake.root)
    cache = FeatureCache(Path(lake.root) / "lake" / "features")
    ds = build_dataset(frames, spec, fingerprint=fp, cache=cache)
    cv = cross_validate(ds, spec, progress=progress)
    est = fit_weighted(make_estimator(spec.model, spec.params, seed=spec.seed), ds.X.to_numpy(),
                       ds.y.to_numpy(), ds.weight.to_numpy())
    source = str(next(iter(frames.values())).attrs.get("source", spec.source or ""))
    lineage = {"data_fingerprint": fp, "source": source, "symbols": list(frames), "timeframe": spec.timeframe,
               "start": str(ds.X.index[0]), "end": str(ds.X.index[-1]), "feature_set": fs.resolved(),
               "feature_set_key": fs.key(), "features": fs.columns, "label": spec.label.effective(),
               "model": spec.model, "params": spec.params, "seed": spec.seed, "cv": spec.cv.model_dump(),
               "weights": spec.weights, "code_version": code_version()}
    importance = feature_importance(ds, spec, est) if spec.importance else None
    version, run_id, alias = _log(registry, spec, est, cv, lineage, ds, importance)
    return TrainResult(spec.name, version, run_id, alias, cv, lineage, len(ds.X), importance)


def feature_importance(ds: Dataset, spec: TrainSpec, fitted: Any | None = None) -> pd.DataFrame:
    """MDA and SFI of every feature on the spec's purged folds, and MDI of the fitted model where it
    is a tree model (see `workbench.models.importance`), most important (by MDA) first."""
    from workbench.models.importance import mda, mdi, sfi

    cv = _splitter(spec.cv, pd.Series(ds.t1.to_numpy(), index=pd.DatetimeIndex(ds.X.index)))

    def factory() -> Any:
        return make_estimator(spec.model, spec.params, seed=spec.seed)

    table = mda(factory, ds.X, ds.y, ds.weight, cv, seed=spec.seed)
    table = table.join(sfi(factory, ds.X, ds.y, ds.weight, cv))
    if fitted is not None and hasattr(fitted, "feature_importances_"):
        table = table.join(mdi(fitted, list(ds.X.columns)))
    return table.sort_values("mda", ascending=False)


def _log(registry: ModelRegistry, spec: TrainSpec, est: Any, cv: dict[str, Any], lineage: dict[str, Any],
         ds: Dataset, importance: pd.DataFrame | None) -> tuple[int, str, str]:
    import mlflow
    import mlflow.sklearn

    metrics = {k: v for k, v in cv.items() if k.startswith("cv_") and np.isfinite(v)}
    metrics.update(rows=float(len(ds.X)), positive_share=float(ds.y.mean()))
    params = {"model": spec.model, "label": spec.label.kind, "horizon": spec.label.horizon,
              "cv": spec.cv.kind, "embargo": spec.cv.embargo, "seed": spec.seed, "timeframe": spec.timeframe,
              "symbols": ",".join(lineage["symbols"]), "n_features": len(lineage["features"]),
              **{f"model.{k}": v for k, v in spec.params.items()}}
    exp = registry.experiment_id()
    with quiet(), registry.active():
        run_name = f"{spec.name}-{pd.Timestamp.now(tz='UTC'):%Y%m%d-%H%M%S}"
        with mlflow.start_run(experiment_id=exp, run_name=run_name) as run:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            for step, fold in enumerate(cv["folds"]):
                mlflow.log_metrics({f"fold_{k}": v for k, v in fold.items() if np.isfinite(v)}, step=step)
            for step, path in enumerate(cv.get("paths", [])):
                mlflow.log_metrics({f"path_{k}": v for k, v in path.items() if np.isfinite(v)}, step=step)
            mlflow.set_tags({"workbench.model": spec.model,
                             "workbench.feature_set_key": lineage["feature_set_key"],
                             "workbench.data_fingerprint": lineage["data_fingerprint"],
                             "workbench.code_version": lineage["code_version"],
                             "workbench.label": json.dumps(lineage["label"], sort_keys=True),
                             "workbench.lineage": json.dumps(lineage, sort_keys=True, default=str)})
            mlflow.log_dict({"cv": cv, **lineage}, "workbench/lineage.json")
            if importance is not None:
                mlflow.log_text(importance.to_csv(), "workbench/importance.csv")
                mlflow.log_metrics({f"mda.{k}": float(v) for k, v in importance["mda"].items()})
            info = mlflow.sklearn.log_model(est, name="model", registered_model_name=spec.name,
                                            serialization_format="cloudpickle", pip_requirements=[])
        version = int(info.registered_model_version)
        others = [v for v in registry.versions(spec.name) if v.version != version]
        has_champion = any(CHAMPION in v.aliases for v in others)
        alias = CHALLENGER if has_champion else CHAMPION
        registry.client.set_registered_model_alias(spec.name, alias, str(version))
        registry.client.set_model_version_tag(spec.name, str(version), "workbench.lineage",
                                              json.dumps(lineage, sort_keys=True, default=str))
    return version, run.info.run_id, alias


__all__ = ["CvSpec", "Dataset", "LabelSpec", "TrainResult", "TrainSpec", "add_tick_columns", "build_dataset",
           "cross_validate", "cv_table", "feature_importance", "labels_of", "load_train_spec", "primary_side",
           "tick_fingerprint", "train_model"]
