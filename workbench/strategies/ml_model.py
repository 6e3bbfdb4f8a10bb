"""`ml_model(<name>[@<version or alias>])`: trade a registered model version, by pure inference.

The strategy is built for one version: ``ml_model(demo_gbm)`` resolves the champion when it is
built and is named ``ml_model(demo_gbm@3)``, so a backtest, a walk-forward run and a promotion
artifact all record the exact version. At each bar it computes the version's features from the
bars (its own feature set, from its lineage) and the model's P(label = 1); nothing is fitted.

- A model of a triple-barrier or fixed-horizon label trades its probability: long when
  ``P >= threshold``, out when ``P < exit_threshold``; with ``short=true`` also short when
  ``P <= 1 - threshold``, covered when ``P > 1 - exit_threshold``.
- A meta-label model (``label.kind: meta``) filters its primary strategy: a primary entry is taken
  when ``P >= threshold``, and the primary's own exits close the trade.
- With ``bet_size=true`` each entry is sized by its probability (`bet_size`), as a share of what
  the sizing rule gives (`Signals.size`).

`ml_refit(<name>[@<version>])` is the same version's *recipe* (features, label, estimator and its
parameters, sample weights) refitted walk-forward inside the bars instead: at every `refit_every`
bars from `min_train` on (counted from the first bar, so truncating the data never moves them) a
model is fit on the labels the bars up to that one make (each label's whole horizon inside them)
and predicts until the next refit. Walk-forward over it refits per fold; over `ml_model` it
evaluates one fixed version.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ConfigError
from workbench.strategies.base import ParamSpace, Signals, Strategy, bool_param, float_param, int_param

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*?)(?:@(?P<ref>[A-Za-z0-9_]+))?$")


def _resolve(head: str, spec: str) -> tuple[Any, Strategy | None, dict[str, Any]]:
    """The loaded version `spec` names in ``<head>(<spec>)``, and for a meta-label model its primary
    strategy with the parameters it was labelled with (None and {} otherwise)."""
    from workbench.models.serving import load_model

    m = _SPEC.match(spec.strip())
    if not m:
        raise ConfigError(f"{head}({spec}): give a registered model as name or name@version, e.g. "
                          f"{head}(demo_gbm@3)")
    model = load_model(m["name"], m["ref"] or "champion")
    if model.label.get("kind") != "meta":
        return model, None, {}
    from workbench.strategies.registry import get_strategy

    primary = get_strategy(str(model.label["primary"]))
    return model, primary, primary.params(model.label.get("primary_params") or {})


def _kind(model: Any, primary: Strategy | None) -> str:
    """What the version trades, for a description."""
    what = (f"meta-label filter of {primary.name}" if primary is not None
            else str(model.label.get("kind", "label")))
    return f"{model.lineage.get('model', '?')}, {what}"


def model_strategy(spec: str) -> Strategy:
    """The strategy trading the version `spec` names (``demo_gbm``, ``demo_gbm@3``,
    ``demo_gbm@challenger``); an unknown model or version is one line naming what exists."""
    model, primary, primary_params = _resolve("ml_model", spec)
    space = _space(primary is not None)

    def signals(bars: pd.DataFrame, p: dict) -> Signals:
        return _trade(model.predict(bars), bars, p, primary, primary_params)

    def warmup(p: Mapping[str, Any]) -> int:
        own = model.warmup()
        return max(own, primary.warmup(primary_params)) if primary is not None else own

    strategy = Strategy(f"ml_model({model.name}@{model.version})", space, signals, warmup=warmup,
                        description=f"registered model {model.name} version {model.version} "
                                    f"({_kind(model, primary)}): pure inference",
                        components=(primary,) if primary is not None else (),
                        source="model", pins={"models": [model.pins()]})
    return strategy


def bet_size(prob: np.ndarray) -> np.ndarray:
    """The size a probability of being right supports (López de Prado's bet sizing): 2 N(z) - 1 with
    z = (p - 1/2) / sqrt(p (1 - p)); 0 at p <= 1/2, 1 as p nears 1."""
    from scipy.stats import norm

    q = np.clip(prob, 1e-12, 1 - 1e-12)
    with np.errstate(invalid="ignore"):
        return np.where(prob > 0.5, 2.0 * norm.cdf((q - 0.5) / np.sqrt(q * (1.0 - q))) - 1.0, 0.0)


def _trade(prob: np.ndarray, bars: pd.DataFrame, p: Mapping[str, Any], primary: Strategy | None,
           primary_params: Mapping[str, Any]) -> Signals:
    """Signals from P(label = 1) per bar: thresholds, or a filter of the primary's entries; with
    `bet_size`, each entry sized by its probability (`bet_size`: shorts by 1 - P)."""
    sized = bool(p.get("bet_size"))
    with np.errstate(invalid="ignore"):
        take = prob >= float(p["threshold"])
        if primary is not None:
            # the primary's trades as it makes them (its stops, targets and own sizes kept), the
            # entries the model does not take dropped
            arrays = primary.signals(bars, primary_params).arrays(len(bars), primary.name)
            return Signals(arrays["long_entries"] & take, arrays["long_exits"],
                           arrays["short_entries"] & take, arrays["short_exits"],
                           stop_loss=arrays["stop_loss"], take_profit=arrays["take_profit"],
                           trailing_stop=arrays["trailing_stop"],
                           size=arrays["size"] * bet_size(prob) if sized else arrays["size"],
                           order_type=arrays["order_type"], limit_price=arrays["limit_price"],
                           stop_price=arrays["stop_price"], time_in_force=arrays["time_in_force"],
                           extras={"p": prob, "primary": primary.name})
        exits = prob < float(p["exit_threshold"])
        if not p["short"]:
            return Signals(take, exits, size=bet_size(prob) if sized else None, extras={"p": prob})
        short = prob <= 1.0 - float(p["threshold"])
        cover = prob > 1.0 - float(p["exit_threshold"])
        size = np.where(short, bet_size(1.0 - prob), bet_size(prob)) if sized else None
    return Signals(take, exits, short, cover, size=size, extras={"p": prob})


def _space(meta: bool) -> ParamSpace:
    sizing = bool_param("bet_size", False, doc="size each entry by its probability (2 N(z) - 1, z = (p - "
                        "1/2) / sqrt(p (1 - p))) as a share of the sizing rule's; else the full size")
    if meta:
        return ParamSpace.of(float_param("threshold", 0.5, 0.05, 0.95, step=0.05,
                                         doc="take a primary entry when P(the trade pays) is at least this"),
                             sizing)
    threshold = float_param("threshold", 0.55, 0.5, 0.95, step=0.05,
                            doc="enter when the model's P(label = 1) is at least this")
    return ParamSpace.of(
        threshold,
        float_param("exit_threshold", 0.5, 0.05, 0.9, step=0.05, doc="exit a long when P falls below this"),
        bool_param("short", False, doc="also short when P <= 1 - threshold (cover above 1 - exit_threshold)"),
        sizing,
        constraints=["exit_threshold <= threshold"],
    )


# ---------------------------------------------------------------------- refit walk-forward
REFIT_MIN_ROWS = 50  # fewer known labels than this at a refit point: no model, no signal
_REFITS: dict[tuple[Any, ...], np.ndarray] = {}  # (recipe, bars, refit params) -> P; thresholds reuse it
_REFITS_KEPT = 32


def refit_strategy(spec: str) -> Strategy:
    """The recipe of the version `spec` names, refitted walk-forward inside the bars (see the module
    docstring); like `model_strategy`, named by the exact version whose recipe it refits."""
    model, primary, primary_params = _resolve("ml_refit", spec)
    base = _space(primary is not None)
    space = ParamSpace.of(
        int_param("refit_every", 500, 100, 5000, step=100, doc="bars between refits"),
        int_param("min_train", 1000, 200, 20000, step=100, doc="no prediction before this bar"),
        int_param("window", 0, 0, 20000, step=500, doc="training rows (the newest); 0: every row before"),
        *base.params, constraints=[c.expr for c in base.constraints])

    def signals(bars: pd.DataFrame, p: dict) -> Signals:
        return _trade(_refit_predict(model, bars, p), bars, p, primary, primary_params)

    def warmup(p: Mapping[str, Any]) -> int:
        own = max(model.warmup(), int(p["min_train"]))
        return max(own, primary.warmup(primary_params)) if primary is not None else own

    return Strategy(f"ml_refit({model.name}@{model.version})", space, signals, warmup=warmup,
                    description=f"the recipe of {model.name} version {model.version} "
                                f"({_kind(model, primary)}), refitted walk-forward",
                    components=(primary,) if primary is not None else (), source="model")


def _refit_predict(model: Any, bars: pd.DataFrame, p: Mapping[str, Any]) -> np.ndarray:
    """P(label = 1) per bar from models refitted every `refit_every` bars on the labels known by then."""
    import hashlib

    from threadpoolctl import threadpool_limits

    from workbench.models.estimators import fit_weighted, make_estimator
    from workbench.models.labels import labels_of, uniqueness_weights

    every, first, window = int(p["refit_every"]), int(p["min_train"]), int(p["window"])
    index = pd.DatetimeIndex(bars.index)
    digest = hashlib.sha256(index.asi8.tobytes())
    for col in ("open", "high", "low", "close", "volume"):
        if col in bars.columns:
            digest.update(np.ascontiguousarray(bars[col].to_numpy(dtype=np.float64)).tobytes())
    key = (model.uri, model.name, model.version, digest.hexdigest(), every, first, window)
    hit = _REFITS.get(key)
    if hit is not None:
        return hit.copy()
    n = len(bars)
    X = model.features(bars).to_numpy(dtype=np.float64)
    lab = labels_of(bars, model.label)
    rows = index.get_indexer(lab.index)  # the labelled bars' positions
    t1 = pd.DatetimeIndex(lab["t1"])
    known_at = index.searchsorted(t1, side="left")  # t1's bar: the label is known at its close
    y = (lab["label"].to_numpy() > 0).astype(int)
    # a label still open at the end of the bars (no t1) is not known at any refit: never trained on
    usable = np.isfinite(X[rows]).all(axis=1) & t1.notna() & np.isfinite(lab["label"].to_numpy(dtype=float))
    unique = model.lineage.get("weights", "uniqueness") == "uniqueness"
    lineage = model.lineage
    horizon = int(model.label.get("horizon", 1))
    prob = np.full(n, np.nan)
    valid = np.isfinite(X).all(axis=1)
    # one thread: many small fits gain nothing from threads and lose a lot when a walk-forward keeps
    # every core busy
    with threadpool_limits(limits=1):
        for t in range(first, n, every):
            # the labels the bars up to t (the decision bar) make: a label needs its whole horizon in
            # the bars, as the labellers drop the last `horizon` rows, so a live run holding bars up
            # to t trains on exactly these
            train = usable & (rows + horizon <= t) & (known_at <= t)
            if window:
                train &= rows >= t - window
            block = np.arange(t, min(t + every, n))
            block = block[valid[block]]
            if train.sum() < REFIT_MIN_ROWS or block.size == 0 or len(np.unique(y[train])) < 2:
                continue
            est = make_estimator(str(lineage.get("model")), dict(lineage.get("params") or {}),
                                 seed=int(lineage.get("seed", 0)))
            # weights by uniqueness among the labels known at this refit (as a retrain then would see
            # them): a label still open would change its neighbours' weights once it resolves
            w = (uniqueness_weights(pd.DatetimeIndex(lab.index[train]), lab["t1"][train], index)
                 .to_numpy(dtype=float) if unique else np.ones(int(train.sum())))
            fit_weighted(est, X[rows[train]], y[train], w)
            prob[block] = est.predict_proba(X[block])[:, list(est.classes_).index(1)]
    if len(_REFITS) >= _REFITS_KEPT:
        _REFITS.pop(next(iter(_REFITS)))
    _REFITS[key] = prob
    return prob.copy()
