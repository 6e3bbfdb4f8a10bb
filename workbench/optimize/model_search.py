"""Hyperparameter search for a model on the purged objective, its trials in Optuna storage.

Each trial trains the spec's model with drawn parameters on the same dataset and scores it by
the mean out-of-sample log loss of the spec's purged folds (lower is better). Trials live in an
Optuna study like walk-forward's (a journal file under ``data/optimize/`` by default,
``sqlite:///...`` or ``postgresql://...`` to share it between machines); the study is resumable:
running again adds trials up to the budget, and workers on other machines can join it.

The best trial's CV score was chosen among many and is biased upward by the search; judge the
chosen parameters with combinatorial purged CV (its spread over paths) before trusting them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from workbench.errors import ConfigError
from workbench.models.training import TrainSpec, build_dataset, cross_validate
from workbench.optimize.storage import open_storage, redact

# parameter -> (low, high, log) per built-in model; ints where the bounds are ints
SPACES: dict[str, dict[str, tuple[float, float, bool]]] = {
    "lightgbm": {"num_leaves": (7, 63, True), "learning_rate": (0.01, 0.2, True),
                 "n_estimators": (50, 400, True), "min_child_samples": (10, 300, True),
                 "colsample_bytree": (0.4, 1.0, False)},
    "xgboost": {"max_depth": (2, 8, False), "learning_rate": (0.01, 0.2, True),
                "n_estimators": (50, 400, True), "min_child_weight": (1.0, 50.0, True)},
    "hist_gb": {"max_leaf_nodes": (7, 63, True), "learning_rate": (0.01, 0.2, True),
                "l2_regularization": (0.01, 10.0, True)},
    "random_forest": {"min_samples_leaf": (5, 300, True), "max_features": (0.2, 1.0, False)},
    "logistic": {"C": (0.001, 10.0, True)},
}


@dataclass
class SearchResult:
    """The study's best trial so far and where the study lives."""

    study: str
    storage: str
    trials: int
    best_params: dict[str, Any]
    best_log_loss: float
    best_auc: float

    def summary(self) -> str:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in self.best_params.items())
        return (f"study {self.study} ({self.trials} trials in {self.storage}): best purged log loss "
                f"{self.best_log_loss:.4f} (AUC {self.best_auc:.3f}) with {params}")


def search_space(spec: TrainSpec, given: Mapping[str, Any] | None = None
                 ) -> dict[str, tuple[float, float, bool]]:
    """The spec's model's default space, or `given` (``{param: [low, high]}`` or
    ``[low, high, "log"]``)."""
    if given:
        out = {}
        for name, bounds in given.items():
            if not isinstance(bounds, list | tuple) or len(bounds) not in (2, 3) or bounds[0] > bounds[1]:
                raise ConfigError(f"search: {name} needs [low, high] or [low, high, log], got {bounds!r}")
            out[name] = (bounds[0], bounds[1], len(bounds) == 3 and bounds[2] == "log")
        return out
    if spec.model not in SPACES:
        raise ConfigError(f"no default search space for model {spec.model!r}: give one, e.g. "
                          "search: {max_depth: [2, 8]}")
    return SPACES[spec.model]


def search_model(lake: Any, spec: TrainSpec, *, trials: int, storage: str | None = None,
                 study: str | None = None, space: Mapping[str, Any] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> SearchResult:
    """Run the study up to `trials` finished trials (see the module docstring)."""
    from workbench.backtest.engine import fingerprint, load_bars
    from workbench.config import data_dir

    if trials < 1:
        raise ConfigError(f"trials must be at least 1, got {trials}")
    bounds = search_space(spec, space)
    frames = load_bars(lake, spec.symbols, spec.timeframe, spec.start, spec.end, source=spec.source)
    ds = build_dataset(frames, spec, fingerprint=fingerprint(frames))
    name = study or f"model-{spec.name}"
    url = storage or str(data_dir() / "optimize" / f"{name}.journal")
    store = open_storage(url)
    st = optuna.create_study(storage=store, study_name=name, direction="minimize", load_if_exists=True,
                             sampler=optuna.samplers.TPESampler(seed=spec.seed))
    key = {"feature_set_key": spec.feature_set().key(), "model": spec.model, "label": spec.label.effective()}
    known = st.user_attrs.get("spec")
    if known is None:
        st.set_user_attr("spec", key)
    elif known != key:
        raise ConfigError(f"study {name} in {redact(url)} searched another spec (model, features or label "
                          "differ); give another --study name")

    def objective(trial: optuna.Trial) -> float:
        params = dict(spec.params)
        for p, (lo, hi, log) in bounds.items():
            if isinstance(lo, int) and isinstance(hi, int):
                params[p] = trial.suggest_int(p, lo, hi, log=log)
            else:
                params[p] = trial.suggest_float(p, float(lo), float(hi), log=log)
        cv = cross_validate(ds, spec.model_copy(update={"params": params}))
        trial.set_user_attr("roc_auc", cv["cv_roc_auc_mean"])
        return float(cv["cv_log_loss_mean"])

    def done() -> int:
        return len(st.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    def tick(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if progress is not None:
            progress(min(done(), trials), trials)

    remaining = trials - done()
    if remaining > 0:
        st.optimize(objective, n_trials=remaining, callbacks=[
            optuna.study.MaxTrialsCallback(trials, states=(TrialState.COMPLETE, TrialState.PRUNED)), tick])
    best = st.best_trial
    return SearchResult(name, redact(url), done(), dict(best.params), float(best.value or 0.0),
                        float(best.user_attrs.get("roc_auc", float("nan"))))


__all__ = ["SPACES", "SearchResult", "search_model", "search_space"]
