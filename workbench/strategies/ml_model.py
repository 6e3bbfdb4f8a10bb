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
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ConfigError
from workbench.strategies.base import ParamSpace, Signals, Strategy, bool_param, float_param

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*?)(?:@(?P<ref>[A-Za-z0-9_]+))?$")


def model_strategy(spec: str) -> Strategy:
    """The strategy trading the version `spec` names (``demo_gbm``, ``demo_gbm@3``,
    ``demo_gbm@challenger``); an unknown model or version is one line naming what exists."""
    from workbench.models.serving import load_model

    m = _SPEC.match(spec.strip())
    if not m:
        raise ConfigError(f"ml_model({spec}): give a registered model as name or name@version, e.g. "
                          "ml_model(demo_gbm@3)")
    model = load_model(m["name"], m["ref"] or "champion")
    label = model.label
    meta = label.get("kind") == "meta"
    primary: Strategy | None = None
    primary_params: dict[str, Any] = {}
    if meta:
        from workbench.strategies.registry import get_strategy

        primary = get_strategy(str(label["primary"]))
        primary_params = primary.params(label.get("primary_params") or {})
    space = _space(meta)

    def signals(bars: pd.DataFrame, p: dict) -> Signals:
        prob = model.predict(bars)
        with np.errstate(invalid="ignore"):
            take = prob >= float(p["threshold"])
            if primary is not None:
                arrays = primary.signals(bars, primary_params).arrays(len(bars), primary.name)
                return Signals(arrays["long_entries"] & take, arrays["long_exits"],
                               arrays["short_entries"] & take, arrays["short_exits"],
                               extras={"p": prob, "primary": primary.name})
            exits = prob < float(p["exit_threshold"])
            if not p["short"]:
                return Signals(take, exits, extras={"p": prob})
            short = prob <= 1.0 - float(p["threshold"])
            cover = prob > 1.0 - float(p["exit_threshold"])
        return Signals(take, exits, short, cover, extras={"p": prob})

    def warmup(p: Mapping[str, Any]) -> int:
        own = model.warmup()
        return max(own, primary.warmup(primary_params)) if primary is not None else own

    kind = f"meta-label filter of {primary.name}" if primary is not None else str(label.get("kind", "label"))
    strategy = Strategy(f"ml_model({model.name}@{model.version})", space, signals, warmup=warmup,
                        description=f"registered model {model.name} version {model.version} "
                                    f"({model.lineage.get('model', '?')}, {kind}): pure inference",
                        components=(primary,) if primary is not None else (),
                        source="model", pins={"models": [model.pins()]})
    return strategy


def _space(meta: bool) -> ParamSpace:
    if meta:
        return ParamSpace.of(float_param("threshold", 0.5, 0.05, 0.95, step=0.05,
                                         doc="take a primary entry when P(the trade pays) is at least this"))
    threshold = float_param("threshold", 0.55, 0.5, 0.95, step=0.05,
                            doc="enter when the model's P(label = 1) is at least this")
    return ParamSpace.of(
        threshold,
        float_param("exit_threshold", 0.5, 0.05, 0.9, step=0.05, doc="exit a long when P falls below this"),
        bool_param("short", False, doc="also short when P <= 1 - threshold (cover above 1 - exit_threshold)"),
        constraints=["exit_threshold <= threshold"],
    )
