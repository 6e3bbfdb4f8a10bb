"""The paper runner's durable state: orders, fills, ticks, decisions, snapshots, halts, in SQLite (WAL).

Every order is written as an *intent* (status ``intent``) and committed before it is sent to the
broker, so a runner killed at any point knows, on restart, which client order ids it may already
have sent: those are looked up at the broker before anything is submitted again. Fills are the
increments of an order's cumulative filled quantity, keyed ``<client id>#<n>`` and written in the
same transaction as the order's new totals, so re-polling never books a fill twice and a crash
never loses one. Money and quantities are stored as exact decimal strings; sums use `Decimal`.
Each fill's fee is booked in the currency the venue charged it (`fee_currency`): a fee in the
traded asset reduces the position (a crypto buy at Alpaca or Binance receives the quantity net of
its fee), any other fee reduces cash.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, localcontext
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.errors import ConfigError, DataError
from workbench.paper.broker import Order, OrderRequest, OrderStatus, OrderType, fee_in_asset

SCHEMA_VERSION = 2  # 2: fee_currency on orders and fills

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ticks (
    artifact TEXT NOT NULL, bar TEXT NOT NULL, now TEXT NOT NULL, status TEXT NOT NULL,
    started REAL NOT NULL, finished REAL, latency_ms REAL, detail TEXT,
    PRIMARY KEY (artifact, bar));
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY, artifact TEXT NOT NULL, symbol TEXT NOT NULL, bar TEXT NOT NULL,
    leg TEXT NOT NULL, side TEXT NOT NULL, type TEXT NOT NULL, qty TEXT NOT NULL,
    limit_price TEXT, stop_price TEXT, trail_percent TEXT, ref_price TEXT, oco_group TEXT,
    status TEXT NOT NULL, broker_order_id TEXT, filled_qty TEXT NOT NULL DEFAULT '0',
    avg_fill_price TEXT, fee TEXT NOT NULL DEFAULT '0', reject_reason TEXT, note TEXT,
    created REAL NOT NULL, updated REAL NOT NULL, fee_currency TEXT);
CREATE INDEX IF NOT EXISTS orders_open ON orders (artifact, status);
CREATE INDEX IF NOT EXISTS orders_created ON orders (artifact, created);
CREATE INDEX IF NOT EXISTS orders_updated ON orders (updated);
CREATE TABLE IF NOT EXISTS fills (
    fill_id TEXT PRIMARY KEY, client_order_id TEXT NOT NULL, artifact TEXT NOT NULL,
    symbol TEXT NOT NULL, side TEXT NOT NULL, qty TEXT NOT NULL, price TEXT NOT NULL, fee TEXT NOT NULL,
    bar TEXT NOT NULL, reason TEXT NOT NULL, recorded REAL NOT NULL, fee_currency TEXT);
CREATE INDEX IF NOT EXISTS fills_artifact ON fills (artifact, symbol);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, artifact TEXT NOT NULL, bar TEXT NOT NULL, symbol TEXT,
    kind TEXT NOT NULL, action TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    artifact TEXT NOT NULL, bar TEXT NOT NULL, cash TEXT NOT NULL, equity TEXT NOT NULL,
    positions TEXT NOT NULL, time REAL NOT NULL, PRIMARY KEY (artifact, bar));
CREATE TABLE IF NOT EXISTS halts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, scope TEXT NOT NULL, reason TEXT NOT NULL,
    source TEXT NOT NULL, time REAL NOT NULL, cleared REAL, cleared_reason TEXT);
CREATE TABLE IF NOT EXISTS errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT, artifact TEXT, message TEXT NOT NULL, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS funding (
    artifact TEXT NOT NULL, symbol TEXT NOT NULL, bar TEXT NOT NULL, rate TEXT NOT NULL, qty TEXT NOT NULL,
    price TEXT NOT NULL, amount TEXT NOT NULL, recorded REAL NOT NULL, PRIMARY KEY (artifact, symbol, bar));
"""

_LIVE = tuple(s.value for s in OrderStatus if not s.done)  # intent, unknown, new, partially filled


class TickStatus(StrEnum):
    """Where a strategy's tick for one signal bar stands in the journal."""

    STARTED = "started"  # begun and not finished: a restart redoes it
    DONE = "done"
    SKIPPED = "skipped"
    STALE = "stale"
    ERROR = "error"
FILL_REASONS = {
    OrderType.STOP: "stop_loss",
    OrderType.TRAILING_STOP: "trailing_stop",
    OrderType.LIMIT: "take_profit",
}


def dec(value: Any) -> Decimal:
    """An exact decimal of a float (its shortest repr) or of a decimal string."""
    if value is None:
        return Decimal(0)
    if isinstance(value, Decimal):
        return value
    return Decimal(repr(float(value))) if isinstance(value, float) else Decimal(str(value))


def _txt(value: Any) -> str | None:
    return None if value is None else str(dec(value))


def open_sqlite(path: Path, what: str, schema: str, *, synchronous: str) -> sqlite3.Connection:
    """Open (or create) a WAL-mode SQLite file with its schema; a damaged file is one clear error.

    Nothing is changed on a damaged file: the message says how to recover what is readable.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot open {what} {path}: {exc}; check the path is writable") from None
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.executescript(schema)
    except sqlite3.OperationalError as exc:  # locked, read-only, disk full: the file itself is fine
        db.close()
        raise ConfigError(f"cannot use {what} {path}: {exc}; check it is writable and not "
                          "held by another process") from None
    except sqlite3.DatabaseError as exc:  # truncated or overwritten: refuse, change nothing
        db.close()
        raise DataError(
            f"{what} {path} is damaged ({exc}); nothing was changed: recover what is readable with "
            f"`sqlite3 {path} .recover | sqlite3 {path}.recovered`, then move the damaged file aside "
            "and the recovered one in its place (or restore a backup)") from None
    return db


@dataclass(frozen=True)
class Ledger:
    """One artifact's book from its journaled fills: exact cash, signed positions and their costs."""

    cash: Decimal
    positions: dict[str, Decimal]
    entry_price: dict[str, Decimal]

    def equity(self, prices: dict[str, float]) -> Decimal:
        """Cash plus positions at `prices`."""
        with localcontext() as ctx:
            ctx.prec = 40
            return self.cash + sum((q * dec(prices[s]) for s, q in self.positions.items()), Decimal(0))


class Journal:
    """The runner's SQLite journal (one file, WAL mode). Use as a context manager or call `close`."""

    def __init__(self, path: str | Path, *, durable: bool = True) -> None:
        self.path = Path(path)
        self.durable = durable
        # intents are fsynced (FULL) before an order is sent; everything else can be rebuilt from
        # the broker, so it is written with NORMAL (safe against a killed process, and the next
        # FULL commit syncs it too) to keep a tick with many orders fast
        self.db = open_sqlite(self.path, "journal", _SCHEMA, synchronous="NORMAL" if durable else "OFF")
        version = self.meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) == 1:  # fees were all in cash: an empty fee_currency says so
            with self.tx() as db:
                for table in ("orders", "fills"):
                    db.execute(f"ALTER TABLE {table} ADD COLUMN fee_currency TEXT")
                db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
        elif int(version) != SCHEMA_VERSION:
            raise ConfigError(
                f"journal {self.path} has schema {version}, this workbench writes "
                f"{SCHEMA_VERSION}; use a new journal path"
            )

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One atomic transaction."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------------ meta
    def meta(self, key: str) -> str | None:
        """A stored setting."""
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting."""
        self.db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value)
        )

    # ------------------------------------------------------------------ ticks
    def tick_status(self, artifact: str, bar: pd.Timestamp) -> str | None:
        """Status of the tick of `artifact` for signal bar `bar` (None if never started)."""
        row = self.db.execute(
            "SELECT status FROM ticks WHERE artifact=? AND bar=?", (artifact, bar.isoformat())
        ).fetchone()
        return None if row is None else row[0]

    def first_tick(self, artifact: str) -> pd.Timestamp | None:
        """Signal bar of the first tick of `artifact` (signals of earlier bars are never traded)."""
        row = self.db.execute("SELECT MIN(bar) FROM ticks WHERE artifact=?", (artifact,)).fetchone()
        return None if row is None or row[0] is None else pd.Timestamp(row[0])

    def last_handled_bar(self, artifact: str) -> pd.Timestamp | None:
        """Signal bar of the latest tick of `artifact` that got past its start (the missed-bars check)."""
        row = self.db.execute(
            "SELECT MAX(bar) FROM ticks WHERE artifact=? AND status != ?",
            (artifact, TickStatus.STARTED.value),
        ).fetchone()
        return None if row is None or row[0] is None else pd.Timestamp(row[0])

    def done_ticks_range(self, artifact: str) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """First and last signal bar `artifact` finished a tick for (the span drift compares)."""
        row = self.db.execute(
            "SELECT MIN(bar), MAX(bar) FROM ticks WHERE artifact=? AND status=?",
            (artifact, TickStatus.DONE.value),
        ).fetchone()
        return None if row is None or row[0] is None else (pd.Timestamp(row[0]), pd.Timestamp(row[1]))

    def start_tick(self, artifact: str, bar: pd.Timestamp, now: pd.Timestamp) -> None:
        """Mark a tick as started (a restart finds it unfinished and redoes it)."""
        self.db.execute(
            "INSERT INTO ticks (artifact, bar, now, status, started) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(artifact, bar) DO UPDATE SET status=excluded.status, now=excluded.now",
            (artifact, bar.isoformat(), now.isoformat(), TickStatus.STARTED.value, time.time()),
        )

    def finish_tick(
        self, artifact: str, bar: pd.Timestamp, status: str, latency_ms: float, detail: str | None = None
    ) -> None:
        """Mark a tick done (or skipped/failed) with its decision latency."""
        self.db.execute(
            "UPDATE ticks SET status=?, finished=?, latency_ms=?, detail=? WHERE artifact=? AND bar=?",
            (status, time.time(), latency_ms, detail, artifact, bar.isoformat()),
        )

    def last_tick(self, artifact: str | None = None) -> dict[str, Any] | None:
        """The most recent tick (of one artifact or any)."""
        q = "SELECT artifact, bar, now, status, started, finished, latency_ms, detail FROM ticks"
        args: tuple = ()
        if artifact is not None:
            q += " WHERE artifact=?"
            args = (artifact,)
        row = self.db.execute(q + " ORDER BY bar DESC, started DESC LIMIT 1", args).fetchone()
        if row is None:
            return None
        return dict(
            zip(
                ("artifact", "bar", "now", "status", "started", "finished", "latency_ms", "detail"),
                row,
                strict=True,
            )
        )

    # ------------------------------------------------------------------ orders
    def record_intent(
        self,
        artifact: str,
        bar: pd.Timestamp,
        leg: str,
        req: OrderRequest,
        note: dict[str, Any] | None = None,
    ) -> bool:
        """Journal an order before it is sent; False when this client id is already journaled."""
        now = time.time()
        if self.durable:
            self.db.execute("PRAGMA synchronous=FULL")
        try:
            cur = self._insert_intent(artifact, bar, leg, req, note, now)
        finally:
            if self.durable:
                self.db.execute("PRAGMA synchronous=NORMAL")
        return cur.rowcount == 1

    def _insert_intent(self, artifact: str, bar: pd.Timestamp, leg: str, req: OrderRequest,
                       note: dict[str, Any] | None, now: float) -> sqlite3.Cursor:
        return self.db.execute(
            "INSERT OR IGNORE INTO orders (client_order_id, artifact, symbol, bar, leg, side, type, qty, "
            "limit_price, stop_price, trail_percent, ref_price, oco_group, status, note, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                req.client_order_id,
                artifact,
                req.symbol,
                bar.isoformat(),
                leg,
                req.side.value,
                req.type.value,
                _txt(req.qty),
                _txt(req.limit_price),
                _txt(req.stop_price),
                _txt(req.trail_percent),
                _txt(req.ref_price),
                req.oco_group,
                OrderStatus.INTENT.value,
                json.dumps(note) if note else None,
                now,
                now,
            ),
        )

    def order(self, client_order_id: str) -> dict[str, Any] | None:
        """A journaled order as a dict."""
        cur = self.db.execute("SELECT * FROM orders WHERE client_order_id=?", (client_order_id,))
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))

    def last_filled_entry(self, artifact: str, symbol: str) -> dict[str, Any] | None:
        """The latest entry order of `symbol` that filled, in whole or in part (a resting entry's
        unfilled rest may have been cancelled or expired); its note holds the protective levels."""
        cur = self.db.execute(
            "SELECT * FROM orders WHERE artifact=? AND symbol=? AND leg='entry' "
            "AND CAST(filled_qty AS REAL) > 0 ORDER BY created DESC LIMIT 1",
            (artifact, symbol),
        )
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))

    def first_fill_bar(self, client_order_id: str) -> pd.Timestamp | None:
        """The bar of an order's first fill (None before it fills)."""
        row = self.db.execute("SELECT MIN(bar) FROM fills WHERE client_order_id=?",
                              (client_order_id,)).fetchone()
        return None if row is None or row[0] is None else pd.Timestamp(row[0])

    def group_legs(self, oco_group: str, *, working: bool = False) -> list[str]:
        """Legs of the orders placed for one entry (`working`: not rejected, canceled or expired)."""
        q = "SELECT leg FROM orders WHERE oco_group=?"
        args: list[Any] = [oco_group]
        if working:
            q += " AND status NOT IN (?, ?, ?)"
            args += [OrderStatus.REJECTED.value, OrderStatus.CANCELED.value, OrderStatus.EXPIRED.value]
        return [r[0] for r in self.db.execute(q, args).fetchall()]

    def stopped_symbols(self, artifact: str, bar: pd.Timestamp) -> set[str]:
        """Symbols a stop, target or trailing stop filled for in bar `bar`."""
        cur = self.db.execute(
            "SELECT DISTINCT f.symbol FROM fills f JOIN orders o ON o.client_order_id = f.client_order_id "
            "WHERE f.artifact=? AND f.bar=? AND o.leg IN ('sl', 'tp', 'tsl')",
            (artifact, bar.isoformat()),
        )
        return {r[0] for r in cur.fetchall()}

    def refused_exit(self, artifact: str, symbol: str) -> dict[str, Any] | None:
        """The latest refused exit of `symbol` since its last fill (with the venue state it was sent in)."""
        row = self.db.execute(
            "SELECT client_order_id, qty, note, reject_reason FROM orders WHERE artifact=? AND symbol=? "
            "AND leg IN ('exit', 'slx', 'tpx', 'tslx') AND status=? AND created > "
            "COALESCE((SELECT MAX(recorded) FROM fills WHERE artifact=? AND symbol=?), 0) "
            "ORDER BY created DESC LIMIT 1",
            (artifact, symbol, OrderStatus.REJECTED.value, artifact, symbol),
        ).fetchone()
        if row is None:
            return None
        state = json.loads(row[2]) if row[2] else None
        return {"client_order_id": row[0], "qty": row[1], "state": state, "reject_reason": row[3]}

    def order_counts(self) -> dict[str, int]:
        """How many orders are in each status, every strategy together."""
        return dict(self.db.execute("SELECT status, COUNT(*) FROM orders GROUP BY status").fetchall())

    def fill_count(self) -> int:
        """How many fills are booked, every strategy together."""
        return int(self.db.execute("SELECT COUNT(*) FROM fills").fetchone()[0])

    def live_orders(self, artifact: str | None = None) -> list[dict[str, Any]]:
        """Orders that are not finished: intents, unknown outcomes, new and partially filled ones."""
        q = f"SELECT * FROM orders WHERE status IN ({','.join('?' * len(_LIVE))})"
        args: list[Any] = list(_LIVE)
        if artifact is not None:
            q += " AND artifact=?"
            args.append(artifact)
        cur = self.db.execute(q + " ORDER BY created, client_order_id", args)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def mark_unknown(self, client_order_id: str, why: str) -> None:
        """The broker could not be reached: the order's outcome is unknown until looked up."""
        self.db.execute(
            "UPDATE orders SET status=?, reject_reason=?, updated=? WHERE client_order_id=?",
            (OrderStatus.UNKNOWN.value, why, time.time(), client_order_id),
        )

    def mark_rejected(self, client_order_id: str, why: str) -> None:
        """The broker refused the order (or never saw an intent that can no longer be sent)."""
        self.db.execute(
            "UPDATE orders SET status='rejected', reject_reason=?, updated=? WHERE client_order_id=?",
            (why, time.time(), client_order_id),
        )

    def apply(
        self, order: Order, *, fill_bar: pd.Timestamp, reason: str | None = None
    ) -> list[dict[str, Any]]:
        """Record a broker's view of a journaled order; book the fill increment, if any, atomically.

        Returns the new fills (empty when nothing changed since the last call).
        """
        new: list[dict[str, Any]] = []
        with self.tx() as db:
            row = db.execute(
                "SELECT artifact, symbol, side, type, leg, filled_qty, avg_fill_price, fee "
                "FROM orders WHERE client_order_id=?",
                (order.client_order_id,),
            ).fetchone()
            if row is None:
                raise ConfigError(
                    f"order {order.client_order_id} is not in the journal; the runner only "
                    "tracks orders it journaled first"
                )
            artifact, symbol, side, otype, leg, f0, a0, c0 = row
            f0, c0 = dec(f0), dec(c0)
            a0 = dec(a0) if a0 is not None else Decimal(0)
            f1, c1 = dec(order.filled_qty), dec(order.fee)
            currency = order.fee_currency
            a1 = dec(order.avg_fill_price) if order.avg_fill_price is not None else Decimal(0)
            if f1 > f0:
                with localcontext() as ctx:
                    ctx.prec = 40
                    qty = f1 - f0
                    price = a1 if f0 == 0 else (a1 * f1 - a0 * f0) / qty
                    fee = c1 - c0
                n = db.execute(
                    "SELECT COUNT(*) FROM fills WHERE client_order_id=?", (order.client_order_id,)
                ).fetchone()[0]
                why = reason or FILL_REASONS.get(OrderType(otype), leg)
                fill = {
                    "fill_id": f"{order.client_order_id}#{n + 1}",
                    "client_order_id": order.client_order_id,
                    "artifact": artifact,
                    "symbol": symbol,
                    "side": side,
                    "qty": str(qty),
                    "price": str(price),
                    "fee": str(fee),
                    "fee_currency": currency,
                    "bar": fill_bar.isoformat(),
                    "reason": why,
                    "recorded": time.time(),
                }
                db.execute(
                    "INSERT INTO fills (fill_id, client_order_id, artifact, symbol, side, qty, price, fee, "
                    "fee_currency, bar, reason, recorded) VALUES (:fill_id, :client_order_id, :artifact, "
                    ":symbol, :side, :qty, :price, :fee, :fee_currency, :bar, :reason, :recorded)",
                    fill,
                )
                new.append(fill)
            db.execute(
                "UPDATE orders SET status=?, broker_order_id=?, filled_qty=?, avg_fill_price=?, fee=?, "
                "fee_currency=COALESCE(?, fee_currency), reject_reason=?, updated=? WHERE client_order_id=?",
                (
                    order.status.value,
                    order.broker_order_id,
                    str(max(f1, f0)),
                    _txt(order.avg_fill_price),
                    str(max(c1, c0)),
                    currency,
                    order.reject_reason,
                    time.time(),
                    order.client_order_id,
                ),
            )
        return new

    def recent_orders(self, artifact: str, n: int) -> list[dict[str, Any]]:
        """The `n` latest orders of `artifact` whose outcome is known (newest first): what an alert on
        refusals in a row reads, without loading the whole table."""
        cur = self.db.execute(
            "SELECT client_order_id, symbol, leg, status, reject_reason FROM orders WHERE artifact=? "
            "AND status NOT IN (?, ?) ORDER BY created DESC, client_order_id DESC LIMIT ?",
            (artifact, OrderStatus.INTENT.value, OrderStatus.UNKNOWN.value, n),
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def orders_frame(self, artifact: str | None = None) -> pd.DataFrame:
        """Every journaled order."""
        q = "SELECT * FROM orders" + (" WHERE artifact=?" if artifact else "") + " ORDER BY created"
        return pd.read_sql_query(q, self.db, params=(artifact,) if artifact else None)

    # ------------------------------------------------------------------ fills and the ledger
    def fills_frame(self, artifact: str | None = None) -> pd.DataFrame:
        """Every booked fill, oldest first (decimal strings for amounts)."""
        q = "SELECT * FROM fills" + (" WHERE artifact=?" if artifact else "") + " ORDER BY recorded, fill_id"
        return pd.read_sql_query(q, self.db, params=(artifact,) if artifact else None)

    def position_before(self, artifact: str, symbol: str, bar: pd.Timestamp) -> Decimal:
        """The artifact's position in `symbol` held into `bar`: its fills of earlier bars (a fee in
        the asset off the quantity, as in `ledger`)."""
        rows = self.db.execute(
            "SELECT side, qty, fee, fee_currency FROM fills WHERE artifact=? AND symbol=? AND bar<?",
            (artifact, symbol, bar.isoformat()),
        ).fetchall()
        with localcontext() as ctx:
            ctx.prec = 40
            held = Decimal(0)
            for side, qty, fee, currency in rows:
                q = Decimal(qty) if side == "buy" else -Decimal(qty)
                held += q - (Decimal(fee) if fee_in_asset(symbol, currency) else 0)
        return held

    def last_funded(self, artifact: str, symbol: str) -> pd.Timestamp | None:
        """The last bar whose funding was booked for `symbol` (None: none yet)."""
        row = self.db.execute("SELECT MAX(bar) FROM funding WHERE artifact=? AND symbol=?",
                              (artifact, symbol)).fetchone()
        return pd.Timestamp(row[0]) if row and row[0] else None

    def book_funding(self, artifact: str, symbol: str, bar: pd.Timestamp, rate: float, qty: Decimal,
                     price: float) -> Decimal:
        """Book a perpetual's funding settled at `bar`'s open on the position `qty` held into it, valued
        at `price`: it pays `qty * price * rate` (a long pays a positive rate). Booking a bar twice
        changes nothing. Returns the amount paid (negative: received)."""
        with localcontext() as ctx:
            ctx.prec = 40
            amount = qty * dec(price) * dec(rate)
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO funding (artifact, symbol, bar, rate, qty, price, amount, "
                       "recorded) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (artifact, symbol, bar.isoformat(), repr(float(rate)), str(qty), repr(float(price)),
                        str(amount), time.time()))
        return amount

    def funding_frame(self, artifact: str | None = None) -> pd.DataFrame:
        """Every booked funding payment, oldest first (decimal strings for amounts)."""
        q = "SELECT * FROM funding" + (" WHERE artifact=?" if artifact else "") + " ORDER BY bar, symbol"
        return pd.read_sql_query(q, self.db, params=(artifact,) if artifact else None)

    def ledger(self, artifact: str, capital: float) -> Ledger:
        """Exact cash and positions of one artifact from its fills, funding and starting capital.

        A fee charged in the traded asset comes off the position (the quantity received net of
        it); a fee in the quote (account) currency comes off cash; funding paid comes off cash.
        """
        cash = dec(capital)
        funding = self.db.execute("SELECT amount FROM funding WHERE artifact=?", (artifact,))
        paid = [Decimal(a) for (a,) in funding]
        pos: dict[str, Decimal] = {}
        entry: dict[str, Decimal] = {}
        rows = self.db.execute(
            "SELECT symbol, side, qty, price, fee, fee_currency FROM fills WHERE artifact=? "
            "ORDER BY recorded, fill_id",
            (artifact,),
        ).fetchall()
        with localcontext() as ctx:
            ctx.prec = 40
            cash -= sum(paid, Decimal(0))
            for symbol, side, qty, price, fee, currency in rows:
                q, p, f = Decimal(qty), Decimal(price), Decimal(fee)
                signed = q if side == "buy" else -q
                cash -= signed * p
                before = pos.get(symbol, Decimal(0))
                if fee_in_asset(symbol, currency):
                    signed -= f
                else:
                    cash -= f
                after = before + signed
                if after != 0 and (before == 0 or (after > 0) != (before > 0)):
                    entry[symbol] = p  # a position opened (or flipped) at this fill
                pos[symbol] = after
        return Ledger(cash, {s: q for s, q in pos.items() if q != 0}, entry)

    # ------------------------------------------------------------------ decisions, snapshots, halts
    def decide(
        self,
        artifact: str,
        bar: pd.Timestamp,
        symbol: str | None,
        kind: str,
        action: str,
        reason: str,
        **detail: Any,
    ) -> None:
        """Journal one decision or refusal with its reason."""
        self.db.execute(
            "INSERT INTO decisions (artifact, bar, symbol, kind, action, reason, detail, time) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                artifact,
                bar.isoformat(),
                symbol,
                kind,
                action,
                reason,
                json.dumps(detail, default=str) if detail else None,
                time.time(),
            ),
        )

    def decisions_frame(self, artifact: str | None = None) -> pd.DataFrame:
        """Every decision, oldest first."""
        q = "SELECT * FROM decisions" + (" WHERE artifact=?" if artifact else "") + " ORDER BY id"
        return pd.read_sql_query(q, self.db, params=(artifact,) if artifact else None)

    def snapshot(
        self, artifact: str, bar: pd.Timestamp, cash: Decimal, equity: Decimal, positions: dict[str, Decimal]
    ) -> None:
        """Record cash, equity and positions after a tick."""
        self.db.execute(
            "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(artifact, bar) DO UPDATE SET "
            "cash=excluded.cash, equity=excluded.equity, positions=excluded.positions, "
            "time=excluded.time",
            (
                artifact,
                bar.isoformat(),
                str(cash),
                str(equity),
                json.dumps({s: str(q) for s, q in positions.items()}),
                time.time(),
            ),
        )

    def equity_marks(self, artifact: str, day: pd.Timestamp) -> tuple[float, float, float | None] | None:
        """(last equity, peak equity, first equity at or after `day`) from the snapshots, for the
        drawdown and daily-loss limits; None before the first snapshot."""
        last = self.last_equity(artifact)
        if last is None:
            return None
        peak = self.db.execute(
            "SELECT MAX(CAST(equity AS REAL)) FROM snapshots WHERE artifact=?", (artifact,)
        ).fetchone()[0]
        first = self.db.execute(
            "SELECT equity FROM snapshots WHERE artifact=? AND bar >= ? ORDER BY bar LIMIT 1",
            (artifact, day.isoformat()),
        ).fetchone()
        return last, float(peak), float(first[0]) if first else None

    def last_equity(self, artifact: str) -> float | None:
        """Equity of `artifact`'s latest snapshot (None before its first tick)."""
        row = self.db.execute(
            "SELECT equity FROM snapshots WHERE artifact=? ORDER BY bar DESC LIMIT 1", (artifact,)
        ).fetchone()
        return None if row is None else float(row[0])

    def specs(self) -> list[dict[str, Any]]:
        """The strategy specs the runner recorded (`spec:<name>` in meta), in name order."""
        rows = self.db.execute("SELECT value FROM meta WHERE key LIKE 'spec:%' ORDER BY key").fetchall()
        return [json.loads(v) for (v,) in rows]

    def snapshots_frame(self, artifact: str | None = None) -> pd.DataFrame:
        """Equity and cash per tick."""
        q = "SELECT * FROM snapshots" + (" WHERE artifact=?" if artifact else "") + " ORDER BY bar"
        return pd.read_sql_query(q, self.db, params=(artifact,) if artifact else None)

    def halt(self, scope: str, reason: str, source: str = "manual") -> None:
        """Stop new entries for `scope` (``all``, an artifact, or ``artifact:symbol``) until resumed."""
        self.db.execute(
            "INSERT INTO halts (scope, reason, source, time) VALUES (?, ?, ?, ?)",
            (scope, reason, source, time.time()),
        )

    def resume(self, scope: str, reason: str) -> int:
        """Clear the active halts of `scope`; returns how many were cleared."""
        cur = self.db.execute(
            "UPDATE halts SET cleared=?, cleared_reason=? WHERE scope=? AND cleared IS NULL",
            (time.time(), reason, scope),
        )
        return cur.rowcount

    def active_halts(self) -> list[dict[str, Any]]:
        """Halts in force."""
        cur = self.db.execute(
            "SELECT id, scope, reason, source, time FROM halts WHERE cleared IS NULL ORDER BY id"
        )
        return [
            dict(zip(("id", "scope", "reason", "source", "time"), r, strict=True)) for r in cur.fetchall()
        ]

    def error(self, artifact: str | None, message: str) -> None:
        """Record an error a tick hit."""
        self.db.execute(
            "INSERT INTO errors (artifact, message, time) VALUES (?, ?, ?)", (artifact, message, time.time())
        )

    def errors_frame(self, limit: int = 20) -> pd.DataFrame:
        """The latest errors."""
        return pd.read_sql_query("SELECT * FROM errors ORDER BY id DESC LIMIT ?", self.db, params=(limit,))
