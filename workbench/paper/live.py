"""The live state of a paper-trading journal, read in increments: what a dashboard page shows and refreshes.

`LiveView.load()` reads what a page needs once: per strategy its spec (symbols, capital, timeframe), its
latest book (cash, equity, positions from the last snapshot) and equity curve; the open orders, the
latest fills, decisions and refusals, the halts in force, the recent errors and tick latencies.
`LiveView.update()` then reads only what was written since (rows past the last seen row id of each
append-only table, orders updated since), and folds it into the same `LiveState`, so a refresh costs
what changed, not the journal's length (a journal of a million fills refreshes as fast as a new one;
`bench/dashboard.py` measures both beside a full re-read). The journal is opened read-only: the runner
keeps writing meanwhile (WAL).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.errors import ConfigError, DataError, WorkbenchError

RECENT = 200  # fills, decisions and ticks kept for the page's tables


@dataclass
class LiveState:
    """What the Live page shows, kept current by `LiveView.update`."""

    specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # strategy -> symbols, capital, timeframe
    books: dict[str, dict[str, Any]] = field(default_factory=dict)  # strategy -> its last snapshot
    equity: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # strategy -> (bar, equity)
    open_orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # client order id -> order
    fills: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    decisions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    ticks: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    halts: list[dict[str, Any]] = field(default_factory=list)
    errors: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=20))
    n_fills: int = 0
    n_decisions: int = 0
    updated: float = 0.0  # wall time of the last read
    risk: dict[str, Any] | None = None  # the runner's risk limits (RiskLimits as a mapping), None before

    def risk_rows(self, strategy: str) -> list[dict[str, Any]]:
        """The risk overlay of `strategy` as the runner applies it: each limit set, where the strategy
        stands against it and its state (ok, hit, tripped, armed). Drawdown and the day's loss are
        computed as the runner does (peak of the snapshots and the capital; the first equity of the
        last bar's UTC day); the breakers and the kill switch read the halts in force."""
        limits = self.risk or {}
        curve = [v for _, v in self.equity.get(strategy, [])]
        capital = float(self.specs.get(strategy, {}).get("capital") or 0.0)
        halts = [h for h in self.halts
                 if h["scope"] in ("all", strategy) or str(h["scope"]).startswith(strategy + ":")]
        rows: list[dict[str, Any]] = []
        if limits.get("max_drawdown") is not None:
            dd = 1.0 - curve[-1] / max(max(curve), capital) if curve else None
            killed = any(h["source"] == "kill_switch" for h in halts)
            rows.append(_limit("max_drawdown (kill switch)", limits["max_drawdown"], dd,
                               "hit: halted" if killed else _state(dd, limits["max_drawdown"])))
        if limits.get("daily_loss_limit") is not None:
            loss = None
            rows_today = self.equity.get(strategy, [])
            if rows_today:
                day = pd.Timestamp(rows_today[-1][0]).normalize()
                first = next((v for b, v in rows_today if pd.Timestamp(b) >= day), None)
                loss = 1.0 - curve[-1] / first if first else None
            rows.append(_limit("daily_loss_limit", limits["daily_loss_limit"], loss,
                               _state(loss, limits["daily_loss_limit"])))
        for key, what in (("max_position", "of equity per asset, at each entry"),
                          ("max_gross", "gross exposure, at each entry"),
                          ("risk_per_trade", "loss at the stop, at each entry")):
            if limits.get(key) is not None:
                rows.append({"limit": key, "setting": f"{limits[key]:.0%}", "now": what, "state": "applied"})
        if limits.get("max_bar_move") is not None:
            tripped = sorted(str(h["scope"]).split(":", 1)[1] for h in halts
                             if h["source"] == "breaker" and ":" in str(h["scope"]))
            rows.append({"limit": "max_bar_move (circuit breaker)",
                         "setting": f"{limits['max_bar_move']:.0%}",
                         "now": ", ".join(tripped) or "no symbol tripped",
                         "state": "tripped" if tripped else "armed"})
        if limits.get("stale_bars") is not None:
            rows.append({"limit": "stale_bars (data breaker)", "setting": f"{limits['stale_bars']} bars",
                         "now": "no entry on data older than this", "state": "armed"})
        return rows

    def staleness(self, strategy: str, wall: float | None = None) -> dict[str, Any] | None:
        """How fresh `strategy`'s data is: seconds since its last tick finished (wall clock, `wall`:
        now) and, at that tick, how far the session clock was past the bar's close (`bar_lag_s`: a
        feed that falls behind shows here before any breaker trips). None before the first tick."""
        ticks = [t for t in self.ticks if t["artifact"] == strategy]
        if not ticks:
            return None
        last = ticks[-1]
        wall = time.time() if wall is None else wall
        finished = last.get("finished")
        lag = None
        tf = self.specs.get(strategy, {}).get("timeframe")
        if tf and last.get("now"):
            from workbench.data.timeframe import Timeframe

            try:
                close = pd.Timestamp(last["bar"]) + Timeframe.parse(str(tf)).delta
                lag = (pd.Timestamp(last["now"]) - close).total_seconds()
            except (ValueError, TypeError, WorkbenchError):
                lag = None
        return {"bar": last["bar"], "status": last["status"],
                "tick_age_s": None if finished is None else max(wall - float(finished), 0.0),
                "bar_lag_s": lag}

    def equity_frame(self, strategy: str) -> pd.Series:
        """A strategy's equity curve (one value per tick) as a series."""
        rows = self.equity.get(strategy, [])
        return pd.Series([v for _, v in rows], index=pd.to_datetime([b for b, _ in rows], utc=True),
                         name="equity", dtype=float)

    def table(self, name: str) -> pd.DataFrame:
        """`fills`, `decisions`, `ticks`, `errors`, `halts` or `open_orders` as a frame, newest first."""
        rows = getattr(self, name, None)
        if name not in ("fills", "decisions", "ticks", "errors", "halts", "open_orders") or rows is None:
            raise ConfigError(f"no live table {name!r}; use fills, decisions, ticks, errors, halts or "
                              "open_orders")
        values = list(rows.values()) if isinstance(rows, dict) else list(rows)
        return pd.DataFrame(values[::-1])


class LiveView:
    """Incremental reads of one journal (`path`: a journal.sqlite) into a `LiveState`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"no journal at {self.path}; give the journal.sqlite of a paper run or replay")
        try:
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5,
                                      check_same_thread=False)
            self.db.execute("SELECT 1 FROM fills LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"journal {self.path} cannot be read ({exc}); check it is a paper journal "
                            "(workbench paper status)") from None
        self.state = LiveState()
        self._last: dict[str, int] = {}
        self._orders_seen = 0.0

    def close(self) -> None:
        """Release the journal."""
        self.db.close()

    # ------------------------------------------------------------------ reads
    def load(self) -> LiveState:
        """The state from scratch: each table read once, bounded to what the page shows."""
        self.state = LiveState()
        self._last = {}
        s, db = self.state, self.db
        for artifact, bar, cash, equity, positions in db.execute(
                "SELECT s.artifact, s.bar, s.cash, s.equity, s.positions FROM snapshots s JOIN "
                "(SELECT artifact, MAX(bar) AS bar FROM snapshots GROUP BY artifact) m "
                "ON s.artifact = m.artifact AND s.bar = m.bar"):
            s.books[artifact] = _book(bar, cash, equity, positions)
        for artifact, bar, equity in db.execute("SELECT artifact, bar, equity FROM snapshots ORDER BY bar"):
            s.equity.setdefault(artifact, []).append((bar, float(equity)))
        self._last["snapshots"] = _max_rowid(db, "snapshots")
        self._specs()
        self._tail("fills", s.fills)
        self._tail("decisions", s.decisions)
        self._tail("errors", s.errors)
        s.n_fills = int(db.execute("SELECT COUNT(*) FROM fills").fetchone()[0])
        s.n_decisions = int(db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])
        self._ticks()
        self._orders(full=True)
        self._halts()
        s.updated = time.time()
        return s

    def update(self) -> LiveState:
        """Fold in what was written since the last read (`load` first if nothing was read yet)."""
        if not self._last:
            return self.load()
        s, db = self.state, self.db
        rows = db.execute("SELECT artifact, bar, cash, equity, positions, rowid FROM snapshots "
                          "WHERE rowid > ? ORDER BY rowid", (self._last["snapshots"],)).fetchall()
        for artifact, bar, cash, equity, positions, rowid in rows:
            book = s.books.get(artifact)
            if book is None or bar >= book["bar"]:
                s.books[artifact] = _book(bar, cash, equity, positions)
            curve = s.equity.setdefault(artifact, [])
            if curve and curve[-1][0] == bar:
                curve[-1] = (bar, float(equity))
            else:
                curve.append((bar, float(equity)))
            self._last["snapshots"] = max(self._last["snapshots"], rowid)
        self._specs()
        s.n_fills += self._new("fills", s.fills)
        s.n_decisions += self._new("decisions", s.decisions)
        self._new("errors", s.errors)
        self._ticks()
        self._orders(full=False)
        self._halts()
        s.updated = time.time()
        return s

    # ------------------------------------------------------------------ helpers
    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        cur = self.db.execute(sql, args)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def _tail(self, table: str, into: deque[dict[str, Any]]) -> None:
        rows = self._rows(f"SELECT rowid AS _rowid, * FROM {table} ORDER BY rowid DESC LIMIT ?",
                          (into.maxlen or RECENT,))
        into.extend(reversed(rows))
        self._last[table] = _max_rowid(self.db, table)

    def _new(self, table: str, into: deque[dict[str, Any]]) -> int:
        rows = self._rows(f"SELECT rowid AS _rowid, * FROM {table} WHERE rowid > ? ORDER BY rowid",
                          (self._last[table],))
        if rows:
            into.extend(rows)
            self._last[table] = int(rows[-1]["_rowid"])
        return len(rows)

    def _ticks(self) -> None:
        rows = self._rows("SELECT artifact, bar, now, status, latency_ms, finished FROM ticks "
                          "ORDER BY rowid DESC LIMIT ?", (RECENT,))
        self.state.ticks.clear()
        self.state.ticks.extend(reversed(rows))

    def _orders(self, *, full: bool) -> None:
        """Open orders: all of them at first, then those updated since (filled or cancelled ones leave)."""
        live = ("intent", "unknown", "new", "partially_filled")
        q = ("SELECT client_order_id, artifact, symbol, bar, leg, side, type, qty, limit_price, stop_price, "
             "status, filled_qty, updated FROM orders WHERE ")
        if full:
            rows = self._rows(q + f"status IN ({','.join('?' * len(live))})", live)
            self.state.open_orders = {r["client_order_id"]: r for r in rows}
            top = self.db.execute("SELECT MAX(updated) FROM orders").fetchone()[0]
        else:
            rows = self._rows(q + "updated > ? ORDER BY updated", (self._orders_seen,))
            for r in rows:
                if r["status"] in live:
                    self.state.open_orders[r["client_order_id"]] = r
                else:
                    self.state.open_orders.pop(r["client_order_id"], None)
            top = rows[-1]["updated"] if rows else None
        if top is not None:
            self._orders_seen = max(self._orders_seen, float(top))

    def _specs(self) -> None:
        """The strategies the runner recorded (a handful of rows in meta, so read whole each time)."""
        specs = {}
        for (value,) in self.db.execute("SELECT value FROM meta WHERE key LIKE 'spec:%' ORDER BY key"):
            d = json.loads(value)
            specs[str(d["name"])] = {"symbols": [str(x) for x in d.get("symbols", [])],
                                     "capital": float(d.get("capital") or 0.0),
                                     "timeframe": str(d.get("timeframe", ""))}
        self.state.specs = specs
        row = self.db.execute("SELECT value FROM meta WHERE key = 'risk'").fetchone()
        self.state.risk = json.loads(row[0]) if row else None

    def _halts(self) -> None:
        self.state.halts = self._rows("SELECT id, scope, reason, source, time FROM halts "
                                      "WHERE cleared IS NULL ORDER BY id", ())


def _book(bar: str, cash: str, equity: str, positions: str) -> dict[str, Any]:
    return {"bar": bar, "cash": float(cash), "equity": float(equity),
            "positions": {k: float(v) for k, v in json.loads(positions or "{}").items()}}


def _max_rowid(db: sqlite3.Connection, table: str) -> int:
    return int(db.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {table}").fetchone()[0])


def _limit(name: str, setting: float, now: float | None, state: str) -> dict[str, Any]:
    return {"limit": name, "setting": f"{setting:.2%}", "now": "" if now is None else f"{now:.2%}",
            "state": state}


def _state(value: float | None, limit: float) -> str:
    """ok, near (past 80 % of the limit) or hit."""
    if value is None:
        return "ok"
    return "hit" if value >= limit else "near" if value >= 0.8 * limit else "ok"
