"""Estimators: every built-in fits and predicts, the same seed gives the same model, bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from workbench.errors import ConfigError
from workbench.models.estimators import ESTIMATORS, NAN_FREE, make_estimator


def data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(0, 1, n) > 0).astype(int)
    return X, y


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_each_builtin_learns_and_the_same_seed_gives_the_same_model_bytes(name: str) -> None:
    X, y = data()
    if name not in NAN_FREE:
        X[::17, 2] = np.nan  # warm-up NaN: the tree models take it as missing
    a = make_estimator(name, seed=7).fit(X[:400], y[:400])
    b = make_estimator(name, seed=7).fit(X[:400], y[:400])
    assert pickle.dumps(a) == pickle.dumps(b)
    accuracy = (a.predict(X[400:]) == y[400:]).mean()
    assert accuracy > 0.65, f"{name} learned nothing ({accuracy:.2f})"
    p = a.predict_proba(X[400:])
    assert p.shape == (200, 2) and np.allclose(p.sum(axis=1), 1)


def test_params_seeds_and_any_sklearn_class() -> None:
    est = make_estimator("lightgbm", {"n_estimators": 30, "num_leaves": 7}, seed=3)
    assert est.get_params()["n_estimators"] == 30 and est.get_params()["random_state"] == 3
    lr = make_estimator("logistic", {"C": 2.0}, seed=4)
    assert lr.get_params()["model__C"] == 2.0 and lr.get_params()["model__random_state"] == 4
    tree = make_estimator("sklearn.tree:DecisionTreeClassifier", {"max_depth": 3}, seed=5)
    assert tree.get_params()["max_depth"] == 3 and tree.get_params()["random_state"] == 5
    from sklearn.naive_bayes import GaussianNB

    nb = make_estimator(GaussianNB())
    assert isinstance(nb, GaussianNB)


@pytest.mark.parametrize(("model", "params", "message"), [
    ("lgbm", None, "unknown model 'lgbm': choose one of logistic, random_forest"),
    ("lightgbm", {"trees": 10}, "model lightgbm has no parameter 'trees'; it takes:"),
    ("sklearn.tree:NoSuchTree", None, "cannot import model 'sklearn.tree:NoSuchTree'"),
    ("math:pi", None, "math:pi is not an estimator class"),
])
def test_bad_models_are_refused_in_one_line(model: str, params: dict | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        make_estimator(model, params)
    assert "\n" not in str(err.value)


def test_a_stack_learns_over_purged_folds_and_refuses_a_plain_split() -> None:
    import pandas as pd

    from workbench.models import PurgedKFold
    from workbench.models.estimators import make_stack

    X, y = data(400)
    start = pd.date_range("2026-01-01", periods=400, freq="1h", tz="UTC")
    t1 = pd.Series(start + pd.Timedelta(hours=5), index=start)
    stack = make_stack(["logistic", "lightgbm"], cv=PurgedKFold(4, t1=t1, embargo=0.01), seed=1)
    stack.fit(X, y)
    assert (stack.predict(X) == y).mean() > 0.65
    with pytest.raises(ConfigError, match="a stack needs cv: give a purged splitter"):
        make_stack(["logistic", "lightgbm"])
    with pytest.raises(ConfigError, match="a stack needs at least two models"):
        make_stack(["logistic"], cv=PurgedKFold(4, t1=t1))
