"""Feature importance on purged folds: MDI, MDA and single-feature importance (SFI).

- **MDI** (mean decrease in impurity): the fitted tree model's own importances, on every row;
  cheap, in-sample, and biased toward features with many split points: a first look only.
- **MDA** (mean decrease in accuracy, here in log loss): on each purged fold, how much the
  out-of-sample log loss worsens when one feature's test values are shuffled (seeded).
  Out-of-sample, so a feature the model only overfits scores near zero or below.
- **SFI**: each feature alone, validated with the same purged folds: its own out-of-sample log
  loss against the base rate's. Free of substitution effects (two features that carry the same
  information share MDA between them; SFI gives each its due).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

from workbench.errors import ConfigError
from workbench.models.estimators import fit_weighted

Factory = Callable[[], Any]  # a fresh, unfitted estimator


def mdi(model: Any, columns: list[str]) -> pd.Series:
    """The fitted model's impurity importances, normalised to sum to 1 (tree models only)."""
    est = model.steps[-1][1] if hasattr(model, "steps") else model
    values = getattr(est, "feature_importances_", None)
    if values is None:
        raise ConfigError(f"{type(est).__name__} has no impurity importances (MDI is for tree models); "
                          "use MDA or SFI")
    values = np.asarray(values, dtype=float)
    total = values.sum()
    return pd.Series(values / total if total > 0 else values, index=columns, name="mdi")


def _loss(model: Any, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    p = model.predict_proba(X)
    classes = list(model.classes_)
    full = np.zeros((len(y), 2))
    for k, c in enumerate(classes):
        full[:, int(c)] = p[:, k]
    return float(log_loss(y, full, sample_weight=w, labels=[0, 1]))


def mda(factory: Factory, X: pd.DataFrame, y: pd.Series, weight: pd.Series, cv: Any, *, seed: int = 0,
        fit: Callable[[Any, np.ndarray, np.ndarray, np.ndarray], Any] | None = None) -> pd.DataFrame:
    """Per feature, the mean and spread over purged folds of the out-of-sample log loss added by
    shuffling that feature's test values (positive: the model relies on it)."""
    fit = fit or fit_weighted
    Xa, ya, wa = X.to_numpy(), y.to_numpy(), weight.to_numpy()
    rng = np.random.default_rng(seed)
    rows: list[np.ndarray] = []
    for train, test in cv.split(Xa):
        est = fit(factory(), Xa[train], ya[train], wa[train])
        base = _loss(est, Xa[test], ya[test], wa[test])
        added = np.empty(Xa.shape[1])
        for j in range(Xa.shape[1]):
            shuffled = Xa[test].copy()
            shuffled[:, j] = rng.permutation(shuffled[:, j])
            added[j] = _loss(est, shuffled, ya[test], wa[test]) - base
        rows.append(added)
    table = np.vstack(rows)
    return pd.DataFrame({"mda": table.mean(axis=0), "mda_std": table.std(axis=0)}, index=list(X.columns))


def sfi(factory: Factory, X: pd.DataFrame, y: pd.Series, weight: pd.Series, cv: Any, *,
        fit: Callable[[Any, np.ndarray, np.ndarray, np.ndarray], Any] | None = None) -> pd.Series:
    """Per feature alone, the out-of-sample log loss it saves against the base rate (the training
    share of positives) on the purged folds, averaged (positive: it predicts on its own)."""
    fit = fit or fit_weighted
    ya, wa = y.to_numpy(), weight.to_numpy()
    out = {}
    splits = list(cv.split(X.to_numpy()))
    for col in X.columns:
        xa = X[[col]].to_numpy()
        saved = []
        for train, test in splits:
            est = fit(factory(), xa[train], ya[train], wa[train])
            share = float(np.average(ya[train], weights=wa[train]))
            prior = np.tile([1 - share, share], (len(test), 1))
            base = float(log_loss(ya[test], prior, sample_weight=wa[test], labels=[0, 1]))
            saved.append(base - _loss(est, xa[test], ya[test], wa[test]))
        out[col] = float(np.mean(saved))
    return pd.Series(out, name="sfi")


__all__ = ["mda", "mdi", "sfi"]
