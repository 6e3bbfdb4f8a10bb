"""Feature matrices: a feature set computed over bar frames, checked for look-ahead, cached.

`compute_features(bars, spec)` gives one symbol's matrix (index = the bars' ``ts``, a column per
feature); `feature_matrix(frames, spec)` stacks several symbols (index ``(symbol, ts)``), computed
on threads (the kernels release the GIL). `FeatureCache` keeps matrices as Parquet keyed by (data
fingerprint, feature-set key, feature code version) and records that lineage beside each file:
a cached matrix is reused only when all three match, never guessed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ConfigError, DataError
from workbench.features import kernels as k
from workbench.features.library import BarColumns, get_feature
from workbench.features.spec import FeatureSet, as_feature_set
from workbench.features.ticks import TICK_PREFIX
from workbench.files import atomic_path, atomic_write
from workbench.strategies.indicators import indicator_cache
from workbench.strategies.lookahead import (
    VARIANTS,
    LookaheadReport,
    Violation,
    compare_runs,
    random_continuation,
)


def _source_hash() -> str:
    """sha256 of the code the values come from (this package and the strategies' indicators): a
    commit elsewhere in the repository does not invalidate cached matrices."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in [*sorted(root.glob("*.py")), root.parent / "strategies" / "indicators.py"]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return "sha256:" + h.hexdigest()[:16]


FEATURES_VERSION = _source_hash()


_OHLCV = ("open", "high", "low", "close", "volume")


def _check_bars(bars: pd.DataFrame, fs: FeatureSet, what: str) -> pd.DatetimeIndex:
    if "ts" in bars.columns:
        raise DataError(f"{what}: the bars have a ts column; index them by it first "
                        "(bars.set_index('ts'))")
    index = bars.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise DataError(f"{what}: bars need a tz-aware DatetimeIndex (bar open times in UTC)")
    if not index.is_monotonic_increasing or not index.is_unique:
        raise DataError(f"{what}: bar times must be sorted and unique; sort and deduplicate them first")
    missing = sorted(fs.needs - set(bars.columns))
    for item in fs.features if missing else []:
        feature = get_feature(item.name)
        lacking = [c for c in feature.needs if c in missing and c.startswith(TICK_PREFIX)]
        if lacking:
            tables = " and ".join(t.value for t in feature.ticks) or "ticks"
            raise DataError(f"{what}: feature {item.name} needs the collector's {tables} aggregated per bar "
                            f"(column {lacking[0]}), which these bars do not carry; join them with "
                            "workbench.features.ticks.tick_columns (train_model reads them from the lake) "
                            "or drop the feature")
    if missing:
        raise DataError(f"{what}: the bars have no {', '.join(missing)} column(s), which the feature set "
                        "reads; load full OHLCV bars or drop those features")
    return index


def compute_features(bars: pd.DataFrame, spec: FeatureSet | Any) -> pd.DataFrame:
    """The feature matrix of one symbol's bars: a float64 column per feature, NaN in warm-up."""
    fs = as_feature_set(spec)
    index = _check_bars(bars, fs, f"feature set {fs.name}")
    # one block, a row per feature: the layout pandas keeps, so the frame is made without a copy
    # (from a dict of columns pandas copied them into one block: half the time of the matrix)
    block = np.empty((len(fs.features), len(bars)), dtype=np.float64)
    _compute_into(bars, index, fs, block)
    return pd.DataFrame(block.T, index=index, columns=fs.columns, copy=False)


def _compute_into(bars: pd.DataFrame, index: pd.DatetimeIndex, fs: FeatureSet, block: np.ndarray,
                  rows: range | None = None) -> None:
    """The features of `fs` (those at `rows` of it; all by default) into the rows of `block`."""
    names = [*_OHLCV, *sorted(fs.needs.difference(_OHLCV))]
    if any(get_feature(item.name).ticks for item in fs.features):  # book_pressure(n) reads the n-level depth
        names += [c for c in bars.columns if isinstance(c, str) and c.startswith(TICK_PREFIX)]
    cols = BarColumns({c: np.ascontiguousarray(bars[c].to_numpy(dtype=np.float64))
                       for c in dict.fromkeys(names) if c in bars.columns})
    cols["ts_ns"] = index.as_unit("ns").asi8
    # intermediates (log returns, ranges) once per matrix, indicators once per window
    with np.errstate(divide="ignore", invalid="ignore"), indicator_cache():
        for j in rows if rows is not None else range(len(fs.features)):
            item = fs.features[j]
            feature = get_feature(item.name)
            row = block[j]
            if feature.writes_out:  # straight into the matrix: no temporary, no copy
                raw = feature.compute(cols, index, out=row, **feature.resolve(item.params))
            else:
                raw = feature.compute(cols, index, **feature.resolve(item.params))
            values = np.asarray(raw, dtype=np.float64)
            if values.shape != (len(bars),):
                raise DataError(f"feature {item.name} returned {values.shape} values for {len(bars)} bars; "
                                "a feature gives one value per bar")
            if values is not row:  # a feature writing into the row gives finite values or NaN
                k.finite_into(values, row)
            if item.norm == "zscore":
                block[j] = k.rolling_zscore(block[j], item.norm_window)
            elif item.norm == "rank":
                block[j] = k.rolling_rank(block[j], item.norm_window)


def feature_matrix(frames: Mapping[str, pd.DataFrame], spec: FeatureSet | Any, *,
                   threads: int | None = None) -> pd.DataFrame:
    """Every symbol's feature matrix, stacked: index (symbol, ts), symbols in the given order.
    Computed on `threads` (default: the cores) into one block, each symbol's features in as many
    contiguous runs as keep every thread busy (the kernels release the GIL; a run shares its
    intermediates, so runs are few)."""
    fs = as_feature_set(spec)
    if not frames:
        raise ConfigError("no bars to compute features on: give at least one symbol")
    symbols = list(frames)
    indexes = [_check_bars(frames[s], fs, f"feature set {fs.name} on {s}") for s in symbols]
    sizes = [len(ix) for ix in indexes]
    offsets = np.cumsum([0, *sizes])
    block = np.empty((len(fs.features), int(offsets[-1])), dtype=np.float64)

    # one thread more than the cores: the kernels wait on memory (first touches of the matrix and of
    # their outputs), and a third thread on two cores filled those waits (0.26 s against 0.29 s for
    # bench/ml.py's matrix)
    workers = max(1, threads or (os.cpu_count() or 1) + 1)
    # runs per symbol: fewer symbols than threads split each symbol's features in contiguous runs
    per = 1 if len(symbols) >= workers or len(fs.features) < 4 else min(
        len(fs.features), math.ceil(workers / len(symbols)))
    cuts = np.linspace(0, len(fs.features), per + 1).round().astype(int)
    tasks = [(k, range(int(a), int(b))) for k in range(len(symbols)) for a, b in itertools.pairwise(cuts)]

    def one(task: tuple[int, range]) -> None:
        k, rows = task
        _compute_into(frames[symbols[k]], indexes[k], fs, block[:, offsets[k]:offsets[k + 1]], rows)

    if workers == 1 or len(tasks) == 1:
        for task in tasks:
            one(task)
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
            list(pool.map(one, tasks))
    # the (symbol, ts) index from codes: pd.concat with keys copied every column once more
    unit = indexes[0].unit  # the bars' own resolution, as pd.concat would keep it
    if all(ix.equals(indexes[0]) for ix in indexes[1:]):  # one calendar: no union to sort
        stamps, ts_codes = indexes[0].as_unit(unit).asi8, np.tile(np.arange(sizes[0]), len(symbols))
    else:
        stamps, ts_codes = np.unique(np.concatenate([ix.as_unit(unit).asi8 for ix in indexes]),
                                     return_inverse=True)
    levels: list[Any] = [pd.Index(symbols), pd.DatetimeIndex(stamps, dtype=pd.DatetimeTZDtype(unit, "UTC"))]
    codes: list[Any] = [np.repeat(np.arange(len(symbols)), sizes), ts_codes.ravel()]
    index = pd.MultiIndex(levels=levels, codes=codes, names=["symbol", "ts"], verify_integrity=False)
    return pd.DataFrame(block.T, index=index, columns=fs.columns, copy=False)


# ---------------------------------------------------------------------- look-ahead
def check_feature_lookahead(bars: pd.DataFrame, spec: FeatureSet | Any, *, cuts: int = 5, seed: int = 0,
                            rtol: float = 1e-9) -> LookaheadReport:
    """Recompute the features on bars truncated after, and randomly continued after, `cuts` points;
    any value at or before a cut that changes read the future. The strategies' check, on features:
    the same report, with the feature set's name and key for the strategy and its parameters."""
    fs = as_feature_set(spec)

    def run(frame: pd.DataFrame) -> dict[str, np.ndarray]:
        return {str(c): v.to_numpy() for c, v in compute_features(frame, fs).items()}

    full = run(bars)
    n = len(bars)
    lo, hi = min(fs.warmup() + 1, n - 2), n - 2
    if hi < 1:
        raise DataError(f"look-ahead check of {fs.name} needs at least 3 bars, got {n}")
    points = np.unique(np.linspace(max(lo, 1), hi, max(int(cuts), 1)).round().astype(int))
    rng = np.random.default_rng(seed)
    found: list[Violation] = []
    for t in points:
        for variant in VARIANTS:
            other = bars.iloc[: t + 1] if variant == "truncated" else random_continuation(bars, int(t), rng)
            found.extend(compare_runs(full, run(other), int(t), bars.index, variant, rtol))
    return LookaheadReport(fs.name, {"feature_set_key": fs.key()}, tuple(bars.index[points]), tuple(found))


# ---------------------------------------------------------------------- cache
class FeatureCache:
    """Feature matrices on disk under `root`, one Parquet file per (fingerprint, set key, code
    version), with a lineage JSON beside it (what the matrix was computed from)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _paths(self, fingerprint: str, fs: FeatureSet) -> tuple[Path, Path]:
        key = hashlib.sha256(f"{fingerprint}|{fs.key()}|{FEATURES_VERSION}".encode()).hexdigest()[:24]
        d = self.root / key[:2]
        return d / f"{key}.parquet", d / f"{key}.json"

    def get(self, frames: Mapping[str, pd.DataFrame], spec: FeatureSet | Any, fingerprint: str
            ) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The matrix of `frames` (computed and stored on a miss) and its lineage, with ``cached``
        telling which."""
        fs = as_feature_set(spec)
        data, meta = self._paths(fingerprint, fs)
        if data.exists() and meta.exists():
            lineage = json.loads(meta.read_text())
            stored = tuple(lineage.get(x) for x in ("fingerprint", "feature_set_key", "features_version"))
            if stored == (fingerprint, fs.key(), FEATURES_VERSION):
                return pd.read_parquet(data), {**lineage, "cached": True}
        matrix = feature_matrix(frames, fs)
        lineage = {"fingerprint": fingerprint, "feature_set": fs.name, "feature_set_key": fs.key(),
                   "features": fs.resolved(), "features_version": FEATURES_VERSION,
                   "symbols": list(frames), "rows": len(matrix),
                   "computed": pd.Timestamp.now(tz="UTC").isoformat()}
        data.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(data) as tmp:
            matrix.to_parquet(tmp)
        atomic_write(meta, json.dumps(lineage, indent=1))
        return matrix, {**lineage, "cached": False}


__all__ = ["FEATURES_VERSION", "FeatureCache", "check_feature_lookahead", "compute_features",
           "feature_matrix"]
