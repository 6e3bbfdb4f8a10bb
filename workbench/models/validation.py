"""Cross-validation that does not leak across overlapping labels: purged k-fold and CPCV.

A label that starts at t and ends at t1 shares its price path with every label alive in [t, t1].
Plain k-fold trains on the neighbours of the test fold, whose labels are largely the test labels
themselves, and a flexible model scores well by remembering them. Purging drops from training every
observation whose [start, t1] overlaps the test span; the embargo also drops the first observations
after it, whose features may still carry the test period (serial correlation).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ConfigError, did_you_mean


def _check_t1(t1: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Start and end times of every observation as int64 nanoseconds, or a one-line ConfigError."""
    if not isinstance(t1, pd.Series):
        raise ConfigError(f"{where}: t1 must be a pandas Series (index: each observation's start, values: "
                          f"its label end), got {type(t1).__name__}; e.g. t1=labels['t1']")
    if not isinstance(t1.index, pd.DatetimeIndex) or t1.index.tz is None:
        raise ConfigError(f"{where}: t1 must be indexed by tz-aware start times; e.g. t1=labels['t1']")
    try:
        end = pd.DatetimeIndex(t1.to_numpy())
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: t1 must hold label end times, got dtype {t1.dtype}") from None
    if end.tz is None:
        raise ConfigError(f"{where}: t1 must hold tz-aware end times; e.g. t1.dt.tz_localize('UTC')")
    if t1.index.hasnans or end.hasnans:
        raise ConfigError(f"{where}: t1 has missing start or end times; drop the unlabelled rows first")
    if not t1.index.is_monotonic_increasing:
        raise ConfigError(f"{where}: the observations' start times (t1.index) are not sorted; "
                          "sort X, y and t1 by time first (e.g. .sort_index())")
    start_ns = t1.index.as_unit("ns").asi8
    end_ns = end.tz_convert("UTC").as_unit("ns").asi8
    late = end_ns < start_ns
    if late.any():
        raise ConfigError(f"{where}: t1 is earlier than its start at {t1.index[int(np.argmax(late))]}; "
                          "a label ends at or after the bar it starts on")
    return start_ns, end_ns


def _check_embargo(embargo: Any, where: str) -> float:
    if isinstance(embargo, bool) or not isinstance(embargo, int | float | np.number) or not (
            0.0 <= embargo < 1.0):
        raise ConfigError(f"{where}: embargo is a fraction of the observations in [0, 1), got {embargo!r}; "
                          "e.g. embargo=0.01")
    return float(embargo)


def _check_count(value: Any, where: str, name: str, minimum: int, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{where}: {name} must be a whole number >= {minimum}, got {value!r}; "
                          f"e.g. {name}={example}")
    return int(value)


def _check_x(x: Any, n: int, index: pd.DatetimeIndex, where: str) -> None:
    if x is None:
        return
    if len(x) != n:
        raise ConfigError(f"{where}: X has {len(x)} rows but t1 has {n}; build t1 from the same rows "
                          "(one label end per row, same order)")
    x_index = getattr(x, "index", None)
    if isinstance(x_index, pd.DatetimeIndex) and not x_index.equals(index):
        raise ConfigError(f"{where}: X's index is not t1's index; build t1 from the same rows, same order")


def _train(n: int, start: np.ndarray, end: np.ndarray, test_blocks: list[np.ndarray], n_embargo: int
           ) -> np.ndarray:
    """Every observation outside the test blocks, minus those purged or embargoed against any block."""
    keep = np.ones(n, dtype=bool)
    for block in test_blocks:
        keep[block] = False
        span_start, span_end = start[block[0]], end[block].max()
        keep &= ~((start <= span_end) & (end >= span_start))  # purge: [start, t1] meets the test span
        after = int(np.searchsorted(start, span_end, side="right"))  # first start after the span
        keep[after:after + n_embargo] = False  # embargo
    return np.flatnonzero(keep)


class PurgedKFold:
    """K-fold for overlapping labels: contiguous test folds in time, train purged and embargoed around them.

    `t1` is indexed by each observation's start time (sorted, same order as the rows of X) and holds
    its label end. For each test fold, train drops every observation whose [start, t1] overlaps the
    fold's span [first start, max t1] and, with `embargo` > 0, the ceil(embargo·n) observations that
    start first after that span. Works wherever scikit-learn takes a `cv` splitter.
    """

    def __init__(self, n_splits: int = 5, *, t1: pd.Series, embargo: float = 0.0) -> None:
        where = "PurgedKFold"
        self.n_splits = _check_count(n_splits, where, "n_splits", 2, "5")
        self.embargo = _check_embargo(embargo, where)
        self._start, self._end = _check_t1(t1, where)
        self.t1 = t1
        if self.n_splits > len(t1):
            raise ConfigError(f"{where}: n_splits={self.n_splits} is more than the {len(t1)} observations; "
                              f"use n_splits <= {len(t1)}")

    def __repr__(self) -> str:
        return f"PurgedKFold(n_splits={self.n_splits}, embargo={self.embargo}, n={len(self.t1)})"

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """The number of folds."""
        return self.n_splits

    def split(self, X: Any = None, y: Any = None, groups: Any = None
              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (train, test) row positions for each fold; test folds are contiguous and in time order."""
        n = len(self.t1)
        _check_x(X, n, pd.DatetimeIndex(self.t1.index), "PurgedKFold.split")
        n_embargo = math.ceil(self.embargo * n)
        for test in np.array_split(np.arange(n), self.n_splits):
            yield _train(n, self._start, self._end, [test], n_embargo), test


class CombinatorialPurgedKFold:
    """Combinatorial purged cross-validation (CPCV, López de Prado): every choice of test groups is a split.

    The observations fall into `n_groups` contiguous groups; each combination of `n_test_groups` of
    them is tested once, trained on the others, purged and embargoed against each test group. The
    out-of-sample predictions of all splits stitch into `paths()` complete backtest paths
    (`path_assignment()`), so a strategy gets a distribution of paths instead of one.
    """

    def __init__(self, n_groups: int = 6, n_test_groups: int = 2, *, t1: pd.Series, embargo: float = 0.0
                 ) -> None:
        where = "CombinatorialPurgedKFold"
        self.n_groups = _check_count(n_groups, where, "n_groups", 2, "6")
        self.n_test_groups = _check_count(n_test_groups, where, "n_test_groups", 1, "2")
        if self.n_test_groups >= self.n_groups:
            raise ConfigError(f"{where}: n_test_groups={self.n_test_groups} leaves no group to train on "
                              f"with n_groups={self.n_groups}; use n_test_groups < n_groups")
        self.embargo = _check_embargo(embargo, where)
        self._start, self._end = _check_t1(t1, where)
        self.t1 = t1
        if self.n_groups > len(t1):
            raise ConfigError(f"{where}: n_groups={self.n_groups} is more than the {len(t1)} observations; "
                              f"use n_groups <= {len(t1)}")
        self._combos = list(itertools.combinations(range(self.n_groups), self.n_test_groups))

    def __repr__(self) -> str:
        return (f"CombinatorialPurgedKFold(n_groups={self.n_groups}, n_test_groups={self.n_test_groups}, "
                f"embargo={self.embargo}, n={len(self.t1)})")

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """The number of splits, C(n_groups, n_test_groups)."""
        return len(self._combos)

    def groups(self) -> list[np.ndarray]:
        """The row positions of each group, in time order."""
        return np.array_split(np.arange(len(self.t1)), self.n_groups)

    def test_groups(self) -> list[tuple[int, ...]]:
        """For each split, the groups it tests (in the order `split` yields them)."""
        return list(self._combos)

    def split(self, X: Any = None, y: Any = None, groups: Any = None
              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (train, test) row positions for each combination of test groups."""
        n = len(self.t1)
        _check_x(X, n, pd.DatetimeIndex(self.t1.index), "CombinatorialPurgedKFold.split")
        n_embargo = math.ceil(self.embargo * n)
        blocks = self.groups()
        for combo in self._combos:
            test_blocks = [blocks[g] for g in combo]
            yield _train(n, self._start, self._end, test_blocks, n_embargo), np.concatenate(test_blocks)

    def paths(self) -> int:
        """The number of backtest paths, phi = C(n_groups, n_test_groups) · n_test_groups / n_groups."""
        return math.comb(self.n_groups, self.n_test_groups) * self.n_test_groups // self.n_groups

    def path_assignment(self) -> list[list[tuple[int, int]]]:
        """For each path, the (split index, group index) pairs that form it, one per group in time order.

        Path p takes group g from the p-th split that tests g: stitching those out-of-sample
        predictions gives `paths()` complete paths, each group once per path, each (split, group)
        pair in exactly one path.
        """
        testing: list[list[int]] = [[] for _ in range(self.n_groups)]
        for s, combo in enumerate(self._combos):
            for g in combo:
                testing[g].append(s)
        return [[(testing[g][p], g) for g in range(self.n_groups)] for p in range(self.paths())]


def purged_cv_score(estimator: Any, X: pd.DataFrame, y: pd.Series, cv: Any, *,
                    sample_weight: pd.Series | None = None, scoring: str = "neg_log_loss") -> np.ndarray:
    """Score a fresh clone of `estimator` on every split of `cv`: one score per fold, higher is better.

    Each clone is fit on the train rows (with `sample_weight` as the fit parameter `sample_weight` when
    given) and scored on the test rows with scikit-learn's `scoring` scorer, weighted by the test
    rows' `sample_weight` too. "neg_log_loss" uses the fitted model's classes, so a test fold that
    lacks a class still scores.
    """
    from sklearn.base import clone
    from sklearn.metrics import get_scorer, get_scorer_names, log_loss

    where = "purged_cv_score"
    if not isinstance(X, pd.DataFrame) or not isinstance(y, pd.Series):
        raise ConfigError(f"{where}: X must be a DataFrame and y a Series, got {type(X).__name__} and "
                          f"{type(y).__name__}; e.g. X=features.loc[labels.index], y=labels['label']")
    if len(X) != len(y):
        raise ConfigError(f"{where}: X has {len(X)} rows but y has {len(y)}; align them on the label index")
    if sample_weight is not None and len(sample_weight) != len(y):
        raise ConfigError(f"{where}: sample_weight has {len(sample_weight)} values but y has {len(y)}; "
                          "e.g. sample_weight=uniqueness_weights(labels.index, labels['t1'], bars.index)")
    if not hasattr(cv, "split"):
        raise ConfigError(f"{where}: cv must be a splitter with .split(X, y), got {type(cv).__name__}; "
                          "e.g. cv=PurgedKFold(5, t1=labels['t1'], embargo=0.01)")
    if not isinstance(scoring, str) or scoring not in get_scorer_names():
        hint = did_you_mean(scoring, get_scorer_names()) if isinstance(scoring, str) else ""
        raise ConfigError(f"{where}: unknown scoring {scoring!r}{hint}; e.g. 'neg_log_loss', 'accuracy', "
                          "'roc_auc' or 'f1'")
    weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    scorer = get_scorer(scoring)
    scores = []
    for train, test in cv.split(X, y):
        model = clone(estimator)
        x_train, y_train = X.iloc[train], y.iloc[train]
        x_test, y_test = X.iloc[test], y.iloc[test]
        if weights is None:
            model.fit(x_train, y_train)
            w_test = None
        else:
            model.fit(x_train, y_train, sample_weight=weights[train])
            w_test = weights[test]
        if scoring == "neg_log_loss":
            proba = model.predict_proba(x_test)
            score = -log_loss(y_test, proba, sample_weight=w_test, labels=model.classes_)
        elif w_test is None:
            score = scorer(model, x_test, y_test)
        else:
            score = scorer(model, x_test, y_test, sample_weight=w_test)
        scores.append(float(score))
    return np.asarray(scores, dtype=np.float64)
