"""Ensemble by vote: long while at least `vote.min_votes` of the component strategies are long.

Each component's long state is derived from its own signals alone: in from an entry until its next
exit (a bar with both is a conflict and keeps the previous state, as the backtest ignores both).
Components' short signals and stops are not used (they depend on fills the vote cannot see), so the
ensemble is long-only and stop-free. Its entries and exits are the switches of the combined state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ConfigError
from workbench.strategies.base import Constraint, Param, ParamSpace, Signals, Strategy, int_param, unprefix
from workbench.strategies.donchian_breakout import STRATEGY as _DONCHIAN
from workbench.strategies.macd import STRATEGY as _MACD
from workbench.strategies.sma_cross import STRATEGIES as _MA_CROSSES

PREFIX = "vote"


def position_state(entries: Any, exits: Any) -> np.ndarray:
    """Long state per bar (True from an entry until the next exit) from boolean entries and exits."""
    e = np.asarray(entries, dtype=bool)
    x = np.asarray(exits, dtype=bool)
    marks = np.where(e & ~x, 1.0, np.where(x & ~e, 0.0, np.nan))
    return pd.Series(marks).ffill().fillna(0.0).to_numpy() > 0.5


def _prefixes(strategies: Sequence[Strategy]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for s in strategies:
        seen[s.name] = seen.get(s.name, 0) + 1
        out.append(s.name if seen[s.name] == 1 else f"{s.name}_{seen[s.name]}")
    if PREFIX in out:
        raise ConfigError(f"a component named {PREFIX!r} clashes with the vote's own parameters; rename it")
    return out


def vote(strategies: Sequence[Strategy], *, min_votes: int | None = None,
         name: str | None = None) -> Strategy:
    """Combine strategies: long while at least `vote.min_votes` components are long."""
    comps = tuple(strategies)
    if len(comps) < 2:
        raise ConfigError(f"vote(...) needs at least two strategies, got {len(comps)}; "
                          "write e.g. vote(sma_cross,macd,rsi_mr)")
    prefixes = _prefixes(comps)
    default = min_votes if min_votes is not None else len(comps) // 2 + 1
    params: list[Param] = []
    constraints: list[Constraint] = []
    for s, prefix in zip(comps, prefixes, strict=True):
        sub = s.space.prefixed(prefix)
        params.extend(sub.params)
        constraints.extend(sub.constraints)
    params.append(int_param(f"{PREFIX}.min_votes", default, 1, len(comps),
                            doc="how many components must be long for the ensemble to be long"))
    space = ParamSpace(tuple(params), tuple(constraints))

    def signals(bars: pd.DataFrame, p: dict) -> Signals:
        n = len(bars)
        votes = np.zeros(n, dtype=np.int64)
        for s, prefix in zip(comps, prefixes, strict=True):
            a = s.fn(bars, unprefix(p, prefix)).arrays(n, s.name)
            votes += position_state(a["long_entries"], a["long_exits"])
        state = votes >= int(p[f"{PREFIX}.min_votes"])
        prev = np.concatenate(([False], state[:-1]))
        return Signals(state & ~prev, ~state & prev, extras={"votes": votes})

    def warmup(p: Mapping[str, Any]) -> int:
        return max(s.warmup(unprefix(p, prefix)) for s, prefix in zip(comps, prefixes, strict=True))

    names = ",".join(s.name for s in comps)
    return Strategy(
        name or f"vote({names})", space, signals, warmup=warmup,
        description=f"Long while at least min_votes of {names} are long.",
        components=comps,
        source="builtin" if all(s.source == "builtin" for s in comps) else "research",
    )


STRATEGY = vote([next(s for s in _MA_CROSSES if s.name == "sma_cross"), _MACD, _DONCHIAN], min_votes=2,
                name="ensemble")
