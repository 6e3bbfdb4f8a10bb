"""Optimal leaf ordering of a hierarchical clustering tree, equal to scipy's to the bit, in a fraction
of its time.

Hierarchical risk parity orders the assets by the leaves of their clustering tree, flipped so that
neighbouring leaves are as close as possible (Bar-Joseph, Gifford and Jaakkola, "Fast optimal leaf
ordering for hierarchical clustering", 2001). skfolio calls `scipy.cluster.hierarchy.
optimal_leaf_ordering` for it: at each node, for each pair of outer leaves (u, w) it tries every pair of
inner leaves (m, k) for the least M[u, m] + M[w, k] + D[m, k]. Its early stops rarely bite on returns'
distances, so on 500 assets that is ~10^8 sums and half of an HRP fit.

Here the least M[w, k] + D[m, k] over k is taken once per (m, w), in float64 with its runner-up, and
then the least over m for each u: ~n^3 simple sums that vectorise. Where the best pair leads the next
by 2**-21 of the sum, more than scipy's float32 arithmetic can reorder or its early stops can skip, the
value is that pair's sum computed as scipy computes it; near ties go through scipy's own search for that
(u, w) (its quicksort, its number types, its early stops). So the table, the swaps and the ordered tree
are scipy's: tests/test_leaf_order.py compares them on random trees, ties and near ties included.
"""

from __future__ import annotations

import numpy as np
import scipy.cluster.hierarchy as sch
from numba import njit
from scipy.spatial.distance import squareform

_BIG = np.float32(1073741824.0)  # scipy's start for a running minimum (2**30)


@njit(cache=True)
def _swap(vals: np.ndarray, idx: np.ndarray, i: int, j: int) -> None:
    v = vals[i]
    vals[i] = vals[j]
    vals[j] = v
    k = idx[i]
    idx[i] = idx[j]
    idx[j] = k


@njit(cache=True)
def _sort_pairs(vals: np.ndarray, idx: np.ndarray) -> None:
    """Sort `vals` ascending and `idx` alongside: scipy's quicksort (median of three, the pivot kept at
    the end, small parts by hand), so equal values end in the same order as there."""
    n = len(vals)
    starts = np.empty(n + 1, np.int64)
    sizes = np.empty(n + 1, np.int64)
    top = 0
    starts[0], sizes[0] = 0, n
    top = 1
    while top:
        top -= 1
        s, size = starts[top], sizes[top]
        if size <= 1:
            continue
        if size == 2:
            if vals[s] > vals[s + 1]:
                _swap(vals, idx, s, s + 1)
            continue
        if size == 3:
            if vals[s] > vals[s + 1]:
                _swap(vals, idx, s, s + 1)
            if vals[s + 1] > vals[s + 2]:
                _swap(vals, idx, s + 1, s + 2)
                if vals[s] > vals[s + 1]:
                    _swap(vals, idx, s, s + 1)
            continue
        last = s + size - 1
        mid = s + size // 2
        if vals[s] > vals[last]:
            _swap(vals, idx, s, last)
        if vals[last] > vals[mid]:
            _swap(vals, idx, last, mid)
            if vals[s] > vals[last]:
                _swap(vals, idx, s, last)
        pivot = vals[last]
        store = s
        for i in range(s, last):
            if vals[i] < pivot:
                _swap(vals, idx, i, store)
                store += 1
        _swap(vals, idx, store, last)
        left = store - s
        if left > 1:
            starts[top], sizes[top] = s, left
            top += 1
        if left + 2 < size:
            starts[top], sizes[top] = store + 1, size - left - 1
            top += 1


@njit(cache=True)
def _sorted_rows(M: np.ndarray, lo: int, hi: int, col: int) -> np.ndarray:
    """Rows lo..hi-1 in ascending order of M[row, col] (scipy's quicksort, so ties keep its order)."""
    vals = np.empty(hi - lo, np.float32)
    rows = np.empty(hi - lo, np.int32)
    for i in range(hi - lo):
        vals[i] = M[lo + i, col]
        rows[i] = lo + i
    _sort_pairs(vals, rows)
    return rows


@njit(cache=True)
def _scipy_pair(M: np.ndarray, D: np.ndarray, u: int, w: int, m_lo: int, m_hi: int, k_lo: int, k_hi: int,
                least_mk: np.float32) -> np.float32:
    """M[u, w] as scipy computes it: inner leaves m by M[m, u], k by M[k, w] (its quicksort), each sum
    in its number types, and its early stops, which a float32 rounding can make skip the least sum."""
    m_rows = _sorted_rows(M, m_lo, m_hi, u)
    ks = _sorted_rows(M, k_lo, k_hi, w)
    best = _BIG
    for mi in range(m_hi - m_lo):
        m = m_rows[mi]
        if M[u, m] + M[w, ks[0]] + least_mk >= best:
            break
        for ki in range(k_hi - k_lo):
            k = ks[ki]
            if M[u, m] + M[w, k] + least_mk >= best:
                break
            # the two float32 entries added in float32, the distance in float64, the sum kept in float32
            here = np.float32(np.float64(M[u, m] + M[w, k]) + D[m, k])
            if here < best:
                best = here
    return best


@njit(cache=True)
def _ends(Z: np.ndarray, v: int, n: int, outer_child: int, outer: np.ndarray, inner: np.ndarray) -> int:
    """How node `v`'s leaves can meet its sibling's: a leaf is both ends (1 way); a merge has its outer
    end in child `outer_child` and its inner end in the other, or the reverse (2 ways). Fills `outer`
    and `inner` (the child of each end) and returns the number of ways."""
    if v < n:
        outer[0] = inner[0] = v
        return 1
    a, b = Z[v - n, outer_child], Z[v - n, 1 - outer_child]
    outer[0], inner[0] = a, b
    outer[1], inner[1] = b, a
    return 2


@njit(cache=True)
def _two_least(least: np.ndarray, runner_up: np.ndarray, at: np.ndarray, base: float, row: np.ndarray,
               tag: int) -> None:
    """Fold ``base + row[j]`` (in float64) into each j's least sum (and `tag`, where it came from) and
    runner-up; an equal sum is a runner-up, so a tie shows as no lead."""
    for j in range(len(least)):
        x = base + np.float64(row[j])
        if x < least[j]:
            runner_up[j] = least[j]
            least[j] = x
            at[j] = tag
        elif x < runner_up[j]:
            runner_up[j] = x


@njit(cache=True)
def _swaps(Z: np.ndarray, D: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """For each merge of `Z` (children relabelled to leaf positions), whether its children swap.

    M[u, w] is the least sum of neighbour distances over the orders of a node's leaves that start at
    leaf u and end at leaf w, through inner leaves m (beside u) and k (beside w): the least over m, k of
    M[u, m] + M[w, k] + D[m, k]. scipy tries every (m, k) for every (u, w); here the least over k is
    taken once per (w, m), in float64, keeping the runner-up. Where the best (m, k) leads the next by
    more than float32 rounding can reorder, scipy's value is that pair's sum in scipy's number types;
    where it does not (ties), scipy's own search runs for that (u, w)."""
    n = Z.shape[0] + 1
    M = np.zeros((n, n), np.float32)
    swap = np.zeros((n, n, 2), np.int32)
    must_swap = np.zeros(n - 1, np.int32)
    u_of = np.empty(2, np.int64)
    m_of = np.empty(2, np.int64)
    w_of = np.empty(2, np.int64)
    k_of = np.empty(2, np.int64)
    for i in range(n - 1):
        v_l, v_r = Z[i, 0], Z[i, 1]
        n_left = _ends(Z, v_l, n, 0, u_of, m_of)
        n_right = _ends(Z, v_r, n, 1, w_of, k_of)
        for side_l in range(n_left):
            for side_r in range(n_right):
                u_lo, u_hi = ranges[u_of[side_l], 0], ranges[u_of[side_l], 1]
                m_lo, m_hi = ranges[m_of[side_l], 0], ranges[m_of[side_l], 1]
                w_lo, w_hi = ranges[w_of[side_r], 0], ranges[w_of[side_r], 1]
                k_lo, k_hi = ranges[k_of[side_r], 0], ranges[k_of[side_r], 1]
                least_mk = _BIG  # float32, as scipy keeps it (its early stops use it)
                for m in range(m_lo, m_hi):
                    for k in range(k_lo, k_hi):
                        if D[m, k] < least_mk:
                            least_mk = np.float32(D[m, k])
                # T[m, w]: the least M[w, k] + D[m, k] over k, its k, and the runner-up. The inner loops
                # run along rows (M and D are symmetric) and keep no running value, so they vectorise
                n_w, n_m = w_hi - w_lo, m_hi - m_lo
                t1 = np.full((n_m, n_w), np.inf)
                t2 = np.full((n_m, n_w), np.inf)
                t_k = np.full((n_m, n_w), k_lo, np.int64)
                for m in range(m_lo, m_hi):
                    a, b, at = t1[m - m_lo], t2[m - m_lo], t_k[m - m_lo]
                    for k in range(k_lo, k_hi):
                        _two_least(a, b, at, D[m, k], M[k, w_lo:w_hi], k)
                a = np.empty(n_w)
                b = np.empty(n_w)
                at = np.empty(n_w, np.int64)
                for u in range(u_lo, u_hi):
                    a[:] = np.inf
                    b[:] = np.inf
                    at[:] = m_lo
                    for m in range(m_lo, m_hi):
                        _two_least(a, b, at, np.float64(M[u, m]), t1[m - m_lo], m)
                    for j in range(n_w):
                        w, m = w_lo + j, at[j]
                        least = a[j]
                        runner_up = min(b[j], np.float64(M[u, m]) + t2[m - m_lo, j])
                        k = t_k[m - m_lo, j]
                        # scipy's float32 value of a pair is within S * 2**-23 of its exact sum S, and
                        # its early stops skip a pair only for one within S * 2**-22 of it: a lead of
                        # 2**-21 can neither be reordered nor skipped
                        if runner_up - least > max(least, 1e-30) * 2.0 ** -21:
                            best = np.float32(np.float64(M[u, m] + M[w, k]) + D[m, k])
                        else:
                            best = _scipy_pair(M, D, u, w, m_lo, m_hi, k_lo, k_hi, least_mk)
                        M[u, w] = best
                        M[w, u] = best
                        swap[u, w, 0] = side_l
                        swap[w, u, 0] = side_l
                        swap[u, w, 1] = side_r
                        swap[w, u, 1] = side_r
        best = _BIG
        best_u = best_w = 0
        for u in range(ranges[v_l, 0], ranges[v_l, 1]):
            for w in range(ranges[v_r, 0], ranges[v_r, 1]):
                if M[u, w] < best:
                    best = M[u, w]
                    best_u, best_w = u, w
        if v_l >= n:
            must_swap[v_l - n] = swap[best_u, best_w, 0]
        if v_r >= n:
            must_swap[v_r - n] = swap[best_u, best_w, 1]
    return must_swap


def optimal_leaf_ordering(Z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`scipy.cluster.hierarchy.optimal_leaf_ordering(Z, y)` for a valid linkage `Z` and the condensed
    distances `y` it was built from: the linkage with children swapped so the leaf order is optimal."""
    Z = np.asarray(Z, dtype=np.float64)
    n = Z.shape[0] + 1
    leaves = sch.leaves_list(Z)
    position = np.empty(n, np.int64)
    position[leaves] = np.arange(n)
    children = Z[:, :2].astype(np.int64)
    relabelled = np.where(children < n, position[np.minimum(children, n - 1)], children)
    D = np.ascontiguousarray(squareform(np.asarray(y, dtype=np.float64))[np.ix_(leaves, leaves)])
    ranges = np.zeros((2 * n - 1, 2), np.int64)
    ranges[:n, 0] = np.arange(n)
    ranges[:n, 1] = np.arange(n) + 1
    for i, (v_l, v_r) in enumerate(relabelled):
        ranges[n + i] = ranges[v_l, 0], ranges[v_r, 1]
    must_swap = _swaps(relabelled, D, ranges)
    # a node is flipped once for its own swap and once for each ancestor's: parents come after their
    # children in Z, so walk it from the root down carrying the parity
    flip = must_swap.astype(bool)
    for i in range(n - 2, -1, -1):
        for child in relabelled[i]:
            if child >= n:
                flip[child - n] ^= flip[i]
    out = Z.copy()
    out[flip, 0], out[flip, 1] = Z[flip, 1], Z[flip, 0]
    return out
