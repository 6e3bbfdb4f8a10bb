"""Books: several promoted artifacts in one account, their capital split by an allocator.

`combine(refs, allocator)` reads each artifact's walk-forward run, lines up their out-of-sample returns
(the only returns none of their parameters saw), fits the allocator on them (its trailing `window` of
them) and gets one capital share per member. The book is backtested (each member trades its share of
the capital with its own bars, parameters and costs over the common span; the shares left over are held
as cash) and promoted as one artifact of strategy ``book``, which names its members and their shares.
The paper runner trades a book as its members, each on its share (`StrategySpec`s named
``<book>@vN/<member>@vM``), so each keeps its own parity with its backtest and the book's journal is
the sum of theirs.

The shares are fixed when the book is promoted (its record says when and on what); re-combining later
makes a new version.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import ConfigError, DataError
from workbench.promote.artifact import Artifact
from workbench.promote.registry import Registry, check_name

log = logging.getLogger(__name__)

BOOK = "book"


@dataclass
class BookResult:
    """A combined book: its members' shares, the out-of-sample returns they were fitted on, its backtest
    (the book's and each member's equity) and metrics, and the artifact when promoted."""

    name: str
    shares: pd.Series  # per member ref: the fraction of the book's capital it trades
    oos_returns: pd.DataFrame  # per member: its out-of-sample returns on the common span
    oos_equity: pd.Series  # the book's out-of-sample record (each member's OOS returns on its share)
    equity: pd.Series  # the book's backtest over the members' common span
    members: dict[str, pd.Series]  # each member's backtest equity on its share
    metrics: dict[str, float]
    oos_metrics: dict[str, float]
    artifact: Artifact | None = None
    promoted: bool = False


def member_refs(artifact: Any) -> list[dict[str, Any]]:
    """A book artifact's members (ref, share), or [] for a strategy artifact."""
    return list(getattr(artifact, "members", None) or [])


def _oos_returns(runs: dict[str, Any]) -> pd.DataFrame:
    """Each run's out-of-sample returns on the union of their bars inside the span all of them cover (a
    member without a bar at a time returns 0 there)."""
    eqs = {}
    for ref, run in runs.items():
        eq = run.oos_equity.astype(float)
        eqs[ref] = eq
    start = max(e.index[0] for e in eqs.values())
    end = min(e.index[-1] for e in eqs.values())
    if start >= end:
        spans = ", ".join(f"{r}: {e.index[0]:%Y-%m-%d}..{e.index[-1]:%Y-%m-%d}" for r, e in eqs.items())
        raise DataError(f"the members' out-of-sample records do not overlap ({spans}): combine artifacts "
                        "whose walk-forward runs cover a common period")
    index = pd.DatetimeIndex(sorted(set().union(*(e.index for e in eqs.values()))))
    index = index[(index >= start) & (index <= end)]
    out = {}
    for ref, e in eqs.items():
        out[ref] = e.reindex(e.index.union(index)).ffill().reindex(index).pct_change().fillna(0.0)
    return pd.DataFrame(out, index=index).iloc[1:]


def combine(refs: Sequence[str], allocator: Any, *, name: str, capital: float = 100_000.0,
            registry: Registry | str | None = None, runs_root: Any = None, lake: Any = None,
            promote: bool = True, reason: str | None = None) -> BookResult:
    """Combine promoted artifacts (`refs`: ``name`` or ``name@vN``) into one book: the allocator
    (`workbench.backtest.Allocator`) fitted on their out-of-sample returns gives each its share of
    `capital`; the book is backtested and, with `promote`, stored as the next version of `name`."""
    from workbench.backtest.allocators import Allocator
    from workbench.backtest.metrics import compute_metrics
    from workbench.optimize.records import load_run
    from workbench.promote.evidence import promoted_backtest
    from workbench.version import code_version

    check_name(name)
    if not isinstance(allocator, Allocator):
        raise ConfigError(f"allocator must be a workbench.backtest.Allocator, got {type(allocator).__name__}")
    if not (math.isfinite(capital) and capital > 0):
        raise ConfigError(f"capital={capital!r} must be a positive amount")
    if len(refs) < 2 or len(set(refs)) != len(refs):
        raise ConfigError(f"a book combines at least two different artifacts, got {list(refs)}")
    if allocator.gross > 1:
        raise ConfigError(f"allocator gross={allocator.gross:g} would lend the members more than the book's "
                          "capital: keep gross <= 1 (the shares left over are held as cash)")
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    arts = {}
    for ref in refs:
        a = reg.get(ref)
        if member_refs(a):
            raise ConfigError(f"{a.ref} is a book itself: combine its members instead")
        arts[a.ref] = a
    tfs = {a.timeframe for a in arts.values()}
    if len(tfs) > 1:
        raise ConfigError(f"a book's members must share a timeframe (the paper runner ticks one), got "
                          f"{', '.join(f'{r}: {a.timeframe}' for r, a in arts.items())}")
    runs = {r: load_run(a.run_id, runs_root) for r, a in arts.items()}
    returns = _oos_returns(runs)
    least = allocator.min_history if allocator.min_history is not None else allocator.window
    if len(returns) < least:
        raise DataError(f"the members' common out-of-sample record holds {len(returns)} bars of returns, "
                        "fewer "
                        f"than the allocator's window={allocator.window}"
                        f"{'' if allocator.min_history is None else f' (min_history={least})'}: shorten it")
    fitted = allocator.weights(returns)
    if (fitted < -1e-9).any():
        raise ConfigError("a book's shares must not be negative: use a long-only allocator (min_weight=0)")
    shares = fitted.clip(lower=0.0).rename("share")
    # the out-of-sample record of the book: each member's OOS returns on its fixed share
    growth = (1.0 + returns).cumprod()
    oos_equity = (capital * (1.0 - float(shares.sum())) + (growth * shares * capital).sum(axis=1)).rename(
        "book oos")
    ppy = float(next(iter(arts.values())).periods_per_year)
    oos_metrics = compute_metrics(oos_equity, capital, ppy)
    # the backtest of the book over the span every member's bars cover
    if lake is None:
        from workbench.config import data_dir
        from workbench.data.lake import Lake

        lake = Lake(data_dir())
    members = {r: promoted_backtest(runs[r], params=a.params, lake=lake, capital=capital * float(shares[r])
                                    ).equity for r, a in arts.items() if shares[r] > 0}
    start = max(e.index[0] for e in members.values())
    end = min(e.index[-1] for e in members.values())
    index = pd.DatetimeIndex(sorted(set().union(*(e.index for e in members.values()))))
    index = index[(index >= start) & (index <= end)]
    cash = capital * (1.0 - float(shares.sum()))
    equity = pd.Series(cash, index=index, name="book")
    for e in members.values():
        equity = equity + e.reindex(e.index.union(index)).ffill().reindex(index)
    metrics = compute_metrics(equity, float(equity.iloc[0]), ppy)
    result = BookResult(name=name, shares=shares, oos_returns=returns, oos_equity=oos_equity, equity=equity,
                        members=members, metrics=metrics, oos_metrics=oos_metrics)
    if not promote:
        return result
    first = next(iter(arts.values()))
    calendars = {a.calendar for a in arts.values()}
    from workbench.backtest.engine import Execution

    execution = Execution(init_cash=capital).to_dict([])
    artifact = Artifact(
        name=name, version=0, strategy=BOOK,
        params={"allocator": asdict(allocator), "shares": {r: float(v) for r, v in shares.items()}},
        symbols=list(dict.fromkeys(s for a in arts.values() for s in a.symbols)), timeframe=first.timeframe,
        calendar=first.calendar if len(calendars) == 1 else "mixed", periods_per_year=ppy, **execution,
        portfolio=True,
        data={"oos_start": returns.index[0].isoformat(), "oos_end": returns.index[-1].isoformat(),
              "oos_bars": len(returns)},
        lookback=max(a.lookback for a in arts.values()),
        run_id="book:" + "+".join(arts), code_version=code_version(), run_code_version=None,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), params_fold=-1, fold_params=[],
        gates=[], gates_file={},
        evidence={"values": {"oos_sharpe": _plain(oos_metrics)["sharpe"],
                             "oos_total_return": _plain(oos_metrics)["total_return"],
                             "oos_max_drawdown": _plain(oos_metrics)["max_drawdown"]},
                  "oos_metrics": _plain(oos_metrics), "backtest_metrics": _plain(metrics),
                  "members_passed": {r: a.passed for r, a in arts.items()}},
        members=[{"ref": r, "share": float(shares[r])} for r in arts])
    stored, created = reg.promote(artifact, reason=reason)
    result.artifact, result.promoted = stored, created
    return result


def _plain(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if v is not None and np.isfinite(v) else None) for k, v in metrics.items()}
