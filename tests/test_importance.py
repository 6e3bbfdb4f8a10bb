"""Feature importance on purged folds: an informative feature ranks first, noise near zero, and a
copy shares MDA but keeps its SFI (the substitution effect the module docstring describes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.errors import ConfigError
from workbench.models import PurgedKFold
from workbench.models.estimators import make_estimator
from workbench.models.importance import mda, mdi, sfi


def dataset(n: int = 1500, seed: int = 0) -> tuple[pd.DataFrame, pd.Series, pd.Series, PurgedKFold]:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    y = (signal + rng.normal(0, 0.8, n) > 0).astype(int)
    ts = pd.date_range("2026-01-01", periods=n, freq="1h", tz="UTC")
    X = pd.DataFrame({"signal": signal, "noise": rng.normal(size=n),
                      "copy": signal + rng.normal(0, 0.05, n)}, index=ts)
    t1 = pd.Series(ts + pd.Timedelta(hours=3), index=ts)
    return X, pd.Series(y, index=ts), pd.Series(1.0, index=ts), PurgedKFold(4, t1=t1, embargo=0.01)


def test_mda_and_sfi_rank_the_informative_features_and_expose_substitution() -> None:
    X, y, w, cv = dataset()

    def factory() -> object:
        return make_estimator("lightgbm", {"n_estimators": 60}, seed=1)
    table = mda(factory, X, y, w, cv, seed=3)
    alone = sfi(factory, X, y, w, cv)
    assert table["mda"]["noise"] < 0.01 < max(table["mda"]["signal"], table["mda"]["copy"])
    assert alone["signal"] > 0.1 and alone["copy"] > 0.1 and abs(alone["noise"]) < 0.03
    # substitution: with its copy beside it, the signal's MDA is a fraction of what it is alone
    without_copy = mda(factory, X.drop(columns=["copy"]), y, w, cv, seed=3)
    assert table["mda"]["signal"] < 0.5 * without_copy["mda"]["signal"]
    pd.testing.assert_frame_equal(table, mda(factory, X, y, w, cv, seed=3))  # seeded


def test_mdi_is_for_tree_models() -> None:
    X, y, _, _ = dataset(300)
    trees = make_estimator("random_forest", seed=0).fit(X.to_numpy(), y.to_numpy())
    imp = mdi(trees, list(X.columns))
    assert imp.idxmax() in ("signal", "copy") and imp.sum() == pytest.approx(1.0)
    linear = make_estimator("logistic").fit(X.to_numpy(), y.to_numpy())
    with pytest.raises(ConfigError, match="LogisticRegression has no impurity importances"):
        mdi(linear, list(X.columns))
