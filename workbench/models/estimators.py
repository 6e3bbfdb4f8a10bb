"""Estimators for the ML lifecycle: built-in choices by name, any scikit-learn-compatible one, stacks.

Every built-in is seeded and single-threaded by default, so the same seed gives the same model
(the tests compare the fitted models' bytes). Features carry NaN in their warm-up: the tree models
take NaN as missing; logistic regression is fitted on rows without NaN (`fit_rows`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier, StackingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from workbench.errors import ConfigError


def _logistic(seed: int) -> BaseEstimator:
    return Pipeline([("scale", StandardScaler()),
                     ("model", LogisticRegression(max_iter=2000, C=0.1, random_state=seed))])


def _random_forest(seed: int) -> BaseEstimator:
    return RandomForestClassifier(n_estimators=200, min_samples_leaf=20, max_features="sqrt", n_jobs=1,
                                  random_state=seed)


def _hist_gb(seed: int) -> BaseEstimator:
    return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                          l2_regularization=1.0, random_state=seed)


def _lightgbm(seed: int) -> BaseEstimator:
    from lightgbm import LGBMClassifier

    return LGBMClassifier(n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=50,
                          subsample=0.8, subsample_freq=1, colsample_bytree=0.8, random_state=seed, n_jobs=1,
                          deterministic=True, force_row_wise=True, verbose=-1)


def _xgboost(seed: int) -> BaseEstimator:
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=200, learning_rate=0.05, max_depth=4, subsample=0.8,
                         colsample_bytree=0.8, tree_method="hist", random_state=seed, n_jobs=1, verbosity=0)


ESTIMATORS: dict[str, Callable[[int], BaseEstimator]] = {
    "logistic": _logistic,
    "random_forest": _random_forest,
    "hist_gb": _hist_gb,
    "lightgbm": _lightgbm,
    "xgboost": _xgboost,
}
NAN_FREE = {"logistic"}  # built-ins that cannot take NaN inputs


def make_estimator(model: str | BaseEstimator, params: Mapping[str, Any] | None = None, *,
                   seed: int = 0) -> BaseEstimator:
    """A fresh estimator: a built-in by name (`ESTIMATORS`), ``"package.module:Class"`` for any
    scikit-learn-compatible class, or a clone of an estimator given. `params` are set on it (on the
    final step of a pipeline); `seed` goes to every ``random_state`` it has."""
    if isinstance(model, str):
        if model in ESTIMATORS:
            est = ESTIMATORS[model](seed)
        elif ":" in model:
            est = _import_class(model)()
        else:
            raise ConfigError(f"unknown model {model!r}: choose one of {', '.join(ESTIMATORS)}, or give "
                              "'package.module:Class' for any scikit-learn classifier")
    elif hasattr(model, "fit") and hasattr(model, "get_params"):
        est = clone(model)
    else:
        raise ConfigError(f"{type(model).__name__} is not a scikit-learn estimator (it needs fit and "
                          "get_params): give a built-in name or an estimator")
    seeded = {k: seed for k in est.get_params() if k == "random_state" or k.endswith("__random_state")}
    est.set_params(**seeded)
    if params:
        target = est.steps[-1][1] if isinstance(est, Pipeline) else est
        known = target.get_params(deep=False)
        bad = [k for k in params if k not in known]
        if bad:
            raise ConfigError(f"model {_name(model)} has no parameter {bad[0]!r}; it takes: "
                              f"{', '.join(sorted(known))}")
        target.set_params(**dict(params))
    return est


def fit_weighted(est: Any, X: Any, y: Any, weight: Any) -> Any:
    """Fit `est` with sample weights, passed to a pipeline's last step by its name."""
    if isinstance(est, Pipeline):
        return est.fit(X, y, **{f"{est.steps[-1][0]}__sample_weight": weight})
    return est.fit(X, y, sample_weight=weight)


def make_stack(models: Sequence[str | BaseEstimator], *, final: str | BaseEstimator = "logistic",
               cv: Any = None, seed: int = 0) -> StackingClassifier:
    """A meta-learner over several models' out-of-fold probabilities. Pass a purged splitter as
    `cv` (e.g. `PurgedKFold`): the level-one predictions must not leak through overlapping labels."""
    if len(models) < 2:
        raise ConfigError(f"a stack needs at least two models, got {len(models)}; list two or more")
    if cv is None:
        raise ConfigError("a stack needs cv: give a purged splitter (PurgedKFold with the labels' t1), "
                          "plain k-fold would leak through overlapping labels")
    named = [(f"m{k}_{_name(m)}", make_estimator(m, seed=seed)) for k, m in enumerate(models)]
    return StackingClassifier(named, final_estimator=make_estimator(final, seed=seed), cv=cv,
                              stack_method="predict_proba", n_jobs=1)


def _name(model: str | BaseEstimator) -> str:
    return model if isinstance(model, str) else type(model).__name__


def _import_class(path: str) -> type:
    module, _, attr = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import model {path!r} ({exc}); write 'package.module:Class' of an "
                          "installed scikit-learn-compatible classifier") from None
    if not isinstance(cls, type) or not hasattr(cls, "fit"):
        raise ConfigError(f"{path} is not an estimator class (it has no fit)")
    return cls


__all__ = ["ESTIMATORS", "NAN_FREE", "fit_weighted", "make_estimator", "make_stack"]
