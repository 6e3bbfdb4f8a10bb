"""Purged k-fold and CPCV: no train label overlaps a test span, embargoes hold, paths stitch, leaks show."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import KFold
from sklearn.tree import DecisionTreeClassifier

from workbench.errors import ConfigError
from workbench.models import CombinatorialPurgedKFold, PurgedKFold, fixed_horizon, purged_cv_score

START = pd.Timestamp("2024-01-01", tz="UTC")


def make_t1(gaps: list[int], lengths: list[int]) -> pd.Series:
    """Observations starting `gaps` hours apart (0: same time), each label `lengths` hours long."""
    starts = pd.DatetimeIndex(START + pd.to_timedelta(np.cumsum(gaps), unit="h"), name="ts")
    return pd.Series(starts + pd.to_timedelta(np.asarray(lengths), unit="h"), index=starts)


def check_purged(t1: pd.Series, train: np.ndarray, test_blocks: list[np.ndarray], embargo: float) -> None:
    """The definition, one observation at a time: what train must leave out, and that it keeps the rest."""
    starts, ends, n = list(t1.index), list(t1), len(t1)
    in_train = set(train.tolist())
    tested = {i for block in test_blocks for i in block.tolist()}
    assert not in_train & tested
    dropped = set(tested)
    for block in test_blocks:
        span_start, span_end = starts[block[0]], max(ends[i] for i in block)
        for i in range(n):
            if starts[i] <= span_end and ends[i] >= span_start:
                assert i not in in_train, f"observation {i} overlaps the test span"
                dropped.add(i)
        embargoed = [i for i in range(n) if starts[i] > span_end][:math.ceil(embargo * n)]
        for i in embargoed:
            assert i not in in_train, f"observation {i} is embargoed"
            dropped.add(i)
    assert in_train == set(range(n)) - dropped  # nothing else is dropped


# ---------------------------------------------------------------- PurgedKFold


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(20, 200), n_splits=st.integers(2, 6),
       embargo=st.floats(0.0, 0.1, allow_nan=False))
def test_purged_kfold_never_trains_on_what_it_tests(data: st.DataObject, n: int, n_splits: int,
                                                    embargo: float) -> None:
    lengths = data.draw(st.lists(st.integers(0, 15), min_size=n, max_size=n))
    gaps = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    t1 = make_t1(gaps, lengths)
    cv = PurgedKFold(n_splits, t1=t1, embargo=embargo)
    x = pd.DataFrame({"f": np.zeros(n)}, index=t1.index)
    splits = list(cv.split(x))
    assert len(splits) == cv.get_n_splits() == n_splits
    tests = []
    for train, test in splits:
        assert train.dtype.kind == "i" and test.dtype.kind == "i"
        assert (np.diff(test) == 1).all()  # a contiguous block in time
        check_purged(t1, train, [test], embargo)
        tests.append(test)
    assert (np.concatenate(tests) == np.arange(n)).all()  # the test folds partition the observations


def test_purged_kfold_with_non_overlapping_labels_is_plain_kfold() -> None:
    t1 = make_t1([1] * 30, [0] * 30)
    for (train, test), (k_train, k_test) in zip(PurgedKFold(3, t1=t1).split(), KFold(3).split(np.zeros(30)),
                                                strict=True):
        assert (train == k_train).all() and (test == k_test).all()


def test_purging_and_embargo_by_hand() -> None:
    # 20 hourly observations, labels 2 hours long; fold 2 of 4 tests observations 5..9, whose span runs
    # from the start of 5 to the end of 9 (the start of 11): the labels of 3 and 4 end in it, 10 and 11
    # start in it, so all four are purged; the embargo, ceil(0.1·20) = 2, then drops 12 and 13
    t1 = make_t1([1] * 20, [2] * 20)
    train, test = list(PurgedKFold(4, t1=t1, embargo=0.1).split())[1]
    assert test.tolist() == [5, 6, 7, 8, 9]
    assert train.tolist() == [0, 1, 2, *range(14, 20)]


# ---------------------------------------------------------------- a planted leak


def test_plain_kfold_rewards_a_leak_that_purging_removes() -> None:
    # Labels over the next 20 bars of a random walk overlap their neighbours by up to 19 bars, so the
    # label of a row is mostly the label of the rows beside it. A feature that tells a flexible model
    # *when* a row is (here the bar number; in practice anything that drifts slowly, like a price
    # level) lets a tree answer a test row with the label of the nearest train row. Plain k-fold
    # trains right next to every test fold and scores well above chance on pure noise; purged
    # k-fold drops the train rows whose labels overlap the test fold and scores at chance.
    rng = np.random.default_rng(0)
    n, horizon, folds = 2000, 20, 100
    index = pd.date_range(START, periods=n, freq="h", name="ts")
    close = 100.0 * np.exp(rng.normal(0.0, 0.01, n).cumsum())
    bars = pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 1.0},
                        index=index)
    labels = fixed_horizon(bars, horizon)
    x = pd.DataFrame({"when": np.arange(len(labels), dtype=float)}, index=labels.index)
    y = labels["label"]
    tree = DecisionTreeClassifier(random_state=0)
    plain = purged_cv_score(tree, x, y, KFold(folds), scoring="accuracy").mean()
    purged = purged_cv_score(tree, x, y, PurgedKFold(folds, t1=labels["t1"], embargo=0.01),
                             scoring="accuracy").mean()
    assert plain - purged > 0.05
    assert plain > 0.65 and abs(purged - 0.5) < 0.1


# ---------------------------------------------------------------- CPCV


def cpcv_t1(n: int = 120) -> pd.Series:
    rng = np.random.default_rng(3)
    return make_t1(rng.integers(0, 3, n).tolist(), rng.integers(0, 8, n).tolist())


def test_cpcv_splits_are_every_pair_of_groups_purged_against_each() -> None:
    t1 = cpcv_t1()
    cv = CombinatorialPurgedKFold(6, 2, t1=t1, embargo=0.02)
    groups = cv.groups()
    assert (np.concatenate(groups) == np.arange(120)).all() and len(groups) == 6
    splits = list(cv.split(pd.DataFrame({"f": np.zeros(120)}, index=t1.index)))
    assert cv.get_n_splits() == len(splits) == math.comb(6, 2) == 15
    assert cv.test_groups() == list(combinations(range(6), 2))
    for (train, test), chosen in zip(splits, cv.test_groups(), strict=True):
        assert len(chosen) == 2
        assert test.tolist() == np.concatenate([groups[g] for g in chosen]).tolist()
        check_purged(t1, train, [groups[g] for g in chosen], 0.02)


@pytest.mark.parametrize(("n_groups", "n_test_groups", "phi"), [(6, 2, 5), (5, 1, 1), (6, 3, 10), (8, 2, 7)])
def test_cpcv_paths_stitch_every_group_once(n_groups: int, n_test_groups: int, phi: int) -> None:
    cv = CombinatorialPurgedKFold(n_groups, n_test_groups, t1=cpcv_t1())
    assert cv.paths() == phi == math.comb(n_groups, n_test_groups) * n_test_groups // n_groups
    paths = cv.path_assignment()
    assert len(paths) == phi
    tested = cv.test_groups()
    for path in paths:
        assert sorted(g for _, g in path) == list(range(n_groups))  # each group once per path
        assert all(g in tested[s] for s, g in path)  # taken from a split that tests it
    pairs = [pair for path in paths for pair in path]
    every = [(s, g) for s, chosen in enumerate(tested) for g in chosen]
    assert sorted(pairs) == sorted(every)  # each (split, group) pair exactly once overall
    # stitching: the out-of-sample rows of each path are every observation once
    tests = [test for _, test in cv.split()]
    groups = cv.groups()
    for path in paths:
        rows = np.concatenate([np.intersect1d(tests[s], groups[g]) for s, g in path])
        assert (rows == np.arange(120)).all()


# ---------------------------------------------------------------- purged_cv_score


def scored_data(n: int = 300) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    rng = np.random.default_rng(7)
    t1 = make_t1([1] * n, rng.integers(0, 6, n).tolist())
    x = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"], index=t1.index)
    y = pd.Series((x["a"] + rng.normal(0, 1.0, n) > 0).astype(int), index=t1.index)
    return x, y, t1


@pytest.mark.parametrize("scoring", ["accuracy", "neg_log_loss", "roc_auc", "f1"])
def test_purged_cv_score_gives_one_score_per_fold(scoring: str) -> None:
    x, y, t1 = scored_data()
    scores = purged_cv_score(LogisticRegression(), x, y, PurgedKFold(4, t1=t1, embargo=0.01), scoring=scoring)
    assert scores.shape == (4,) and np.isfinite(scores).all()
    if scoring != "neg_log_loss":
        assert (scores > 0.5).all()  # `a` predicts y


def test_purged_cv_score_fits_and_scores_with_sample_weight() -> None:
    x, y, t1 = scored_data()
    w = pd.Series(np.random.default_rng(8).uniform(0.1, 2.0, len(y)), index=y.index)
    cv = PurgedKFold(3, t1=t1, embargo=0.01)
    got = purged_cv_score(LogisticRegression(), x, y, cv, sample_weight=w)
    want = []
    for train, test in cv.split(x):
        model = LogisticRegression().fit(x.iloc[train], y.iloc[train], sample_weight=w.iloc[train])
        want.append(-log_loss(y.iloc[test], model.predict_proba(x.iloc[test]), sample_weight=w.iloc[test]))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert not np.allclose(got, purged_cv_score(LogisticRegression(), x, y, cv))  # the weights count


def test_neg_log_loss_scores_a_fold_that_lacks_a_class() -> None:
    x, y, t1 = scored_data()
    y = y.copy()
    y.iloc[:100] = 1  # the first of three folds has only class 1
    scores = purged_cv_score(LogisticRegression(), x, y, PurgedKFold(3, t1=t1))
    assert scores.shape == (3,) and np.isfinite(scores).all() and (scores < 0).all()


# ---------------------------------------------------------------- bad inputs


def _inputs() -> dict:
    t1 = make_t1([1] * 10, [2] * 10)
    x, y, _ = scored_data(10)
    early = t1.copy()
    early.iloc[4] = t1.index[3]
    return {"t1": t1, "x": x, "y": y, "early": early, "shuffled": t1.iloc[[1, 0, *range(2, 10)]]}


BAD_INPUTS = [
    (lambda d: PurgedKFold(1, t1=d["t1"]), r"n_splits must be a whole number >= 2, got 1; e.g. n_splits=5"),
    (lambda d: PurgedKFold(11, t1=d["t1"]), r"n_splits=11 is more than the 10 observations"),
    (lambda d: PurgedKFold(3, t1=d["t1"], embargo=1.5), r"embargo is a fraction .* in \[0, 1\), got 1\.5"),
    (lambda d: PurgedKFold(3, t1=list(d["t1"])), r"t1 must be a pandas Series"),
    (lambda d: PurgedKFold(3, t1=d["shuffled"]), r"start times \(t1.index\) are not sorted"),
    (lambda d: PurgedKFold(3, t1=d["early"]), r"t1 is earlier than its start at 2024-01-01 05:00"),
    (lambda d: PurgedKFold(3, t1=d["t1"].tz_localize(None)), r"t1 must be indexed by tz-aware start times"),
    (lambda d: list(PurgedKFold(3, t1=d["t1"]).split(np.zeros((9, 2)))), r"X has 9 rows but t1 has 10"),
    (lambda d: CombinatorialPurgedKFold(4, 4, t1=d["t1"]), r"n_test_groups=4 leaves no group to train on"),
    (lambda d: CombinatorialPurgedKFold(12, 2, t1=d["t1"]), r"n_groups=12 is more than the 10 observations"),
    (lambda d: CombinatorialPurgedKFold(6, 0, t1=d["t1"]), r"n_test_groups must be a whole number >= 1"),
    (lambda d: purged_cv_score(LogisticRegression(), d["x"], d["y"], PurgedKFold(2, t1=d["t1"]),
                               scoring="acuracy"), r"unknown scoring 'acuracy' \(did you mean 'accuracy'\?"),
    (lambda d: purged_cv_score(LogisticRegression(), d["x"], d["y"].iloc[:5], PurgedKFold(2, t1=d["t1"])),
     r"X has 10 rows but y has 5"),
    (lambda d: purged_cv_score(LogisticRegression(), d["x"], d["y"], 5), r"cv must be a splitter"),
]


@pytest.mark.parametrize(("call", "match"), BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_inputs_are_one_line_config_errors(call, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        call(_inputs())
    assert "\n" not in str(info.value)
