"""The leaf ordering HRP uses is scipy's `optimal_leaf_ordering`, to the bit, on trees of every shape."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import scipy.cluster.hierarchy as sch
from scipy.spatial.distance import pdist

from workbench.backtest.leaf_order import optimal_leaf_ordering


def _points(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Points and a metric: ``grid`` (few distinct distances, so many ties), ``grid+noise`` (sums of
    distances that differ by about float32's rounding: its search and a float64 one disagree there),
    ``twins`` (half the points repeated: zero distances), ``near`` (all nearly equal), ``factor`` (a
    common factor, as returns)."""
    if kind == "grid":
        return rng.integers(0, 3, size=(n, 2)).astype(float), "euclidean"
    if kind == "grid+noise":
        return rng.integers(0, 4, size=(n, 3)) + rng.normal(0.0, 3e-8, (n, 3)), "euclidean"
    if kind == "twins":
        x = rng.normal(size=(n, 30))
        x[n // 2:] = x[: n - n // 2]
        return x, "euclidean"
    if kind == "near":
        return rng.normal(size=(1, 60)) + 0.01 * rng.normal(size=(n, 60)), "correlation"
    return rng.normal(size=(n, 20)) + rng.normal(size=(1, 20)) * rng.normal(size=(n, 1)), "correlation"


@pytest.mark.parametrize("kind", ["grid", "grid+noise", "twins", "near", "factor"])
@pytest.mark.parametrize("method", ["ward", "single", "average", "complete"])
def test_equal_to_scipys_ordering(kind: str, method: str) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{kind} {method}".encode()))
    for n in [2, 3, 4, 5, *rng.integers(6, 60, 40)]:
        x, metric = _points(kind, int(n), rng)
        y = pdist(x, metric)
        z = sch.linkage(y, method=method)
        theirs = sch.optimal_leaf_ordering(z, y)
        np.testing.assert_array_equal(optimal_leaf_ordering(z, y), theirs, err_msg=f"n={n}")


def test_equal_to_scipys_on_a_wide_universe() -> None:
    # 300 assets in 12 sectors, as HRP sees them: correlation distances of a factor model's returns
    rng = np.random.default_rng(19)
    r = (rng.normal(0, 0.009, (252, 1)) + rng.normal(0, 0.007, (252, 12))[:, rng.integers(0, 12, 300)]
         + rng.normal(0, 0.015, (252, 300)))
    y = np.sqrt(np.clip(0.5 * (1 - np.corrcoef(r.T)), 0, None))[np.triu_indices(300, 1)]
    z = sch.linkage(y, method="ward")
    np.testing.assert_array_equal(optimal_leaf_ordering(z, y), sch.optimal_leaf_ordering(z, y))
