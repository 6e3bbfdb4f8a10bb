"""A scikit-learn classifier on causal technical features, refit walk-forward, trading its P(up).

Label of bar i: whether close[i + horizon] > close[i]. At each refit point T (every `refit_every`
bars from bar `min_train` on, counted from the first bar so truncating the data never moves them)
the model is fit on the bars i with ``i + horizon + purge <= T`` (labels fully known at T's close,
with a `purge` gap), all of them (`scheme="expanding"`) or the last `window` (`"rolling"`), and
predicts P(up) for bars T .. T+refit_every-1. Long when P(up) >= `threshold`, out when it falls
below `exit_threshold`. Features at bar i use bars <= i only: lagged and multi-bar log returns,
RSI, distance to moving averages, realised volatility and its ratio, ATR, bar range, volume ratio.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from workbench.strategies import indicators as ind
from workbench.strategies.base import (
    ParamSpace,
    Signals,
    Strategy,
    choice_param,
    float_param,
    int_param,
)

MODELS = ("logistic", "forest", "hgb")
MIN_SAMPLES = 50  # fewer training rows than this at a refit point: no model, no signal
FOREST_ROWS = 1500  # rows each tree of the forest draws (bootstrap), to keep refits fast


def _lag(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    out[k:] = x[:-k]
    return out


def features(bars: pd.DataFrame) -> np.ndarray:
    """The feature matrix (bars x features), causal: row i uses bars <= i; NaN while warming up."""
    close = bars["close"].to_numpy(dtype=float)
    logc = np.log(close)
    r = ind.log_returns(close)
    cols = [r, _lag(r, 1), _lag(r, 2)]
    cols += [logc - _lag(logc, k) for k in (3, 6, 12, 24)]
    cols.append(ind.rsi(close, 14) / 100.0 - 0.5)
    cols += [close / ind.sma(close, n) - 1.0 for n in (20, 50, 100)]
    vol_fast, vol_slow = ind.rolling_std(r, 24), ind.rolling_std(r, 96)
    cols += [vol_fast, vol_fast / vol_slow - 1.0]
    cols.append(ind.atr(bars["high"], bars["low"], close, 14) / close)
    cols.append((bars["high"].to_numpy(dtype=float) - bars["low"].to_numpy(dtype=float)) / close)
    if "volume" in bars.columns:
        vol = bars["volume"].to_numpy(dtype=float)
        avg = pd.Series(vol).rolling(24).mean().to_numpy()  # not cached: `vol` may be a temporary copy
        with np.errstate(divide="ignore", invalid="ignore"):
            cols.append(np.where(avg > 0, vol / avg - 1.0, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.column_stack(cols)
    x[~np.isfinite(x)] = np.nan
    return x


FEATURE_WARMUP = 100  # the longest feature window (SMA 100 / volatility 96 + 1)


def _model(kind: str, seed: int, rows: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
    if kind == "forest":
        # small and subsampled on purpose: one backtest refits it every `refit_every` bars
        return RandomForestClassifier(n_estimators=16, max_depth=4, min_samples_leaf=20,
                                      max_samples=min(rows, FOREST_ROWS), random_state=seed, n_jobs=1)
    return HistGradientBoostingClassifier(max_iter=30, max_depth=3, learning_rate=0.1, max_bins=63,
                                          min_samples_leaf=40, early_stopping=False, random_state=seed)


def predict_up(bars: pd.DataFrame, p: dict) -> np.ndarray:
    """P(up over `horizon` bars) per bar from the walk-forward refits; NaN where no model applies."""
    n = len(bars)
    x = features(bars)
    close = bars["close"].to_numpy(dtype=float)
    h = int(p["horizon"])
    y = np.zeros(n, dtype=np.int8)
    y[: n - h] = close[h:] > close[: n - h]
    valid = ~np.isnan(x).any(axis=1)
    prob = np.full(n, np.nan)
    # one thread: many small fits gain nothing from BLAS/OpenMP threads and lose a lot when a sweep
    # already keeps every core busy
    with threadpool_limits(limits=1):
        _refit_loop(x, y, valid, prob, p)
    return prob


def _refit_loop(x: np.ndarray, y: np.ndarray, valid: np.ndarray, prob: np.ndarray, p: dict) -> None:
    n = len(prob)
    h, purge, every = int(p["horizon"]), int(p["purge"]), int(p["refit_every"])
    for t in range(int(p["min_train"]), n, every):
        last = t - h - purge  # newest training row: its label is known at t's close
        first = last - int(p["window"]) + 1 if p["scheme"] == "rolling" else 0
        rows = np.flatnonzero(valid[max(first, 0): last + 1]) + max(first, 0)
        stop = min(t + every, n)
        if last < 0 or rows.size < MIN_SAMPLES:
            continue
        labels = y[rows]
        block = np.arange(t, stop)
        block = block[valid[block]]
        if block.size == 0:
            continue
        if labels.min() == labels.max():  # one class only: the model would say that class for sure
            prob[block] = float(labels[0])
            continue
        model = _model(str(p["model"]), int(p["seed"]), rows.size)
        model.fit(x[rows], labels)
        prob[block] = model.predict_proba(x[block])[:, 1]


def signals(bars: pd.DataFrame, p: dict) -> Signals:
    """Long while the model's P(up) is high: in at `threshold`, out below `exit_threshold`."""
    prob = predict_up(bars, p)
    with np.errstate(invalid="ignore"):
        entries = prob >= float(p["threshold"])
        exits = prob < float(p["exit_threshold"])
    return Signals(entries, exits, extras={"p_up": prob})


SPACE = ParamSpace.of(
    choice_param("model", "logistic", MODELS,
                 doc="logistic regression, a small random forest, or histogram gradient boosting"),
    int_param("horizon", 6, 2, 22, step=4, doc="label: sign of the return over this many bars"),
    int_param("purge", 6, 0, 24, step=6, doc="extra bars between the newest training label and the refit"),
    int_param("refit_every", 500, 250, 1000, step=250, doc="bars between refits"),
    choice_param("scheme", "expanding", ("expanding", "rolling"),
                 doc="train on all past bars or on the last `window`"),
    int_param("window", 2000, 500, 5000, step=1500, doc="training rows of the rolling scheme"),
    int_param("min_train", 1000, 500, 2000, step=500, doc="no prediction before this bar"),
    float_param("threshold", 0.55, 0.5, 0.7, step=0.05, doc="enter when P(up) >= threshold"),
    float_param("exit_threshold", 0.5, 0.3, 0.55, step=0.05, doc="exit when P(up) < exit_threshold"),
    int_param("seed", 0, 0, 9, doc="random seed of the forest / boosting model"),
    constraints=["exit_threshold <= threshold", "min_train > horizon + purge"],
)

STRATEGY = Strategy(
    "ml_classifier", SPACE, signals,
    warmup=lambda p: max(int(p["min_train"]), FEATURE_WARMUP),
    description="Walk-forward scikit-learn classifier of the forward return's sign on technical features.",
)
