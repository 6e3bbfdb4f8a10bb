"""The Live page: one card per strategy of a paper journal, kept current in place from a `LiveState`.

A card shows the strategy's equity curve (and, on request, its shadow backtest's: the drift), cash, equity
and P&L, positions, open orders, recent fills, decisions and refusals (with their reasons), the halts in
force over it, the risk overlay's state, its tick latency and how fresh its data is. Above the cards, each
collector stream of the lake: its state, rate, lag, reconnects and gaps. Every
refresh hands the card the state `LiveView.update()` folded in; the card changes only the widgets whose
data changed (a table's `value`, the chart's figure), so an open page is never rebuilt or reloaded.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from statistics import median
from typing import Any

import pandas as pd
import panel as pn

from workbench.backtest.plots import equity_figure
from workbench.paper.live import LiveState

TABLE_HEIGHT = 230
CHART_HEIGHT = 280

FILL_COLUMNS = {"bar": "bar", "symbol": "symbol", "side": "side", "qty": "qty", "price": "price",
                "fee": "fee", "reason": "reason", "client_order_id": "order", "fill_id": "fill"}
DECISION_COLUMNS = {"bar": "bar", "symbol": "symbol", "kind": "kind", "action": "action", "reason": "reason"}
ORDER_COLUMNS = {"bar": "bar", "symbol": "symbol", "leg": "leg", "side": "side", "type": "type", "qty": "qty",
                 "limit_price": "limit", "stop_price": "stop", "status": "status", "filled_qty": "filled"}
HALT_COLUMNS = {"scope": "scope", "source": "source", "reason": "reason", "time": "since (UTC)"}
ERROR_COLUMNS = {"time": "time (UTC)", "artifact": "strategy", "message": "message"}
RISK_COLUMNS = {"limit": "limit", "setting": "setting", "now": "now", "state": "state"}
STREAM_COLUMNS = {"source": "source", "stream": "stream", "state": "state", "rate": "msgs/s",
                  "lag_s": "lag (s)", "reconnects": "reconnects", "gaps": "gaps", "overflows": "overflows",
                  "refills_pending": "refills pending", "durable_p99_ms": "durable p99 (ms)"}


def table(columns: Mapping[str, str], *, height: int = TABLE_HEIGHT, name: str = "") -> pn.widgets.Tabulator:
    """A read-only table that fills the width and scrolls inside itself (never the page)."""
    return pn.widgets.Tabulator(
        pd.DataFrame(columns=list(columns.values())), show_index=False, disabled=True,
        layout="fit_data_table", height=height, sizing_mode="stretch_width", theme="simple",
        selectable=False, css_classes=[f"wb-{name}"] if name else [],
    )


def frame(rows: Iterable[Mapping[str, Any]], columns: Mapping[str, str]) -> pd.DataFrame:
    """`rows` (newest last) as a display frame, newest first: the chosen columns, renamed, readable."""
    records = [{title: _cell(key, r.get(key)) for key, title in columns.items()} for r in rows]
    return pd.DataFrame(records[::-1], columns=list(columns.values()))


def _cell(key: str, value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if key in ("time", "recorded", "finished") and isinstance(value, int | float):
        return pd.Timestamp(value, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M:%S")
    if key == "bar":
        return _bar(str(value))
    if key in ("qty", "price", "fee", "limit_price", "stop_price", "filled_qty"):
        return _num(value)
    return str(value)


def _bar(value: str) -> str:
    try:
        return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%d %H:%M")
    except (ValueError, TypeError):
        return value


def _num(value: Any) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{x:,.2f}" if abs(x) >= 1000 else f"{x:.8g}"


def money(x: float) -> str:
    """An amount as the page shows it: two decimals with thousands separators."""
    return f"{x:,.2f}"


def halts_over(halts: Iterable[Mapping[str, Any]], strategy: str) -> list[Mapping[str, Any]]:
    """The halts in force that stop `strategy`'s entries: all, the strategy, or one of its symbols."""
    return [h for h in halts if h["scope"] in ("all", strategy) or str(h["scope"]).startswith(strategy + ":")]


class _Changed:
    """Remembers what each widget last showed, so a refresh touches only what changed."""

    def __init__(self) -> None:
        self._seen: dict[str, Any] = {}

    def __call__(self, key: str, value: Any, apply: Callable[[], None]) -> None:
        if self._seen.get(key, _Changed) != value:
            self._seen[key] = value
            apply()


class StrategyCard:
    """One strategy's card on the Live page."""

    def __init__(self, name: str, shadow: Callable[[str], tuple[Any, pd.Series]] | None = None) -> None:
        self.name = name
        self._changed = _Changed()
        self.stats = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["wb-stats"])
        self.chart = pn.pane.Plotly(None, sizing_mode="stretch_width", height=CHART_HEIGHT,
                                    config={"displaylogo": False, "responsive": True})
        self.positions = table({"symbol": "symbol", "qty": "qty"}, height=150, name="positions")
        self.orders = table(ORDER_COLUMNS, height=170, name="orders")
        self.fills = table(FILL_COLUMNS, name="fills")
        self.decisions = table(DECISION_COLUMNS, name="decisions")
        self.halts = table(HALT_COLUMNS, height=130, name="halts")
        self.latency = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["wb-latency"])
        self.n_fills = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["wb-nfills"])
        self.flat = pn.pane.HTML("<small>flat: no position</small>", sizing_mode="stretch_width")
        self.no_halts = pn.pane.HTML("<small>none</small>", sizing_mode="stretch_width")
        self.risk = table(RISK_COLUMNS, height=190, name="risk")
        self.fresh = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["wb-fresh"])
        self.shadow_button = pn.widgets.Button(label="Compare with its shadow backtest",
                                               sizing_mode="stretch_width", css_classes=["wb-shadow"],
                                               visible=shadow is not None)
        self.drift = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["wb-drift"])
        self._shadow_fn = shadow
        self._shadow: pd.Series | None = None
        self._state: LiveState | None = None
        self.shadow_button.on_click(self._on_shadow)
        self.card = pn.layout.Card(
            self.stats, self.chart, self.shadow_button, self.drift,
            pn.pane.HTML("<b>Positions</b>"), self.flat, self.positions,
            pn.pane.HTML("<b>Open orders</b>"), self.orders,
            self.n_fills, self.fills,
            pn.pane.HTML("<b>Decisions and refusals</b> (newest first)"), self.decisions,
            pn.pane.HTML("<b>Halts in force</b>"), self.no_halts, self.halts,
            pn.pane.HTML("<b>Risk overlay</b>"), self.risk,
            self.latency, self.fresh,
            title=name, collapsible=True, sizing_mode="stretch_width", css_classes=["wb-card"],
        )

    def update(self, state: LiveState) -> None:
        """Show `state`'s view of this strategy, changing only the widgets whose data changed."""
        name, seen = self.name, self._changed
        book = state.books.get(name)
        spec = state.specs.get(name, {})
        halts = halts_over(state.halts, name)
        seen("stats", (book and (book["bar"], book["equity"], book["cash"]), [h["id"] for h in halts]),
             lambda: setattr(self.stats, "object", self._stats(book, spec, halts)))
        curve = state.equity.get(name, [])
        seen("chart", (len(curve), curve[-1] if curve else None), lambda: self._chart(state))
        positions = (book or {}).get("positions", {})
        seen("positions", positions, lambda: self._positions(positions))
        orders = [o for o in state.open_orders.values() if o["artifact"] == name]
        seen("orders", [(o["client_order_id"], o["status"], o["filled_qty"]) for o in orders],
             lambda: setattr(self.orders, "value", frame(sorted(orders, key=lambda o: o["updated"]),
                                                          ORDER_COLUMNS)))
        fills = [f for f in state.fills if f["artifact"] == name]
        seen("fills", (len(fills), fills[-1]["_rowid"] if fills else None),
             lambda: setattr(self.fills, "value", frame(fills, FILL_COLUMNS)))
        seen("n_fills", len(fills), lambda: setattr(self.n_fills, "object", (
            f"<b>Recent fills</b> (newest first): <span class='wb-fill-count' data-count='{len(fills)}'>"
            f"{len(fills)}</span> shown")))
        decisions = [d for d in state.decisions if d["artifact"] == name]
        seen("decisions", (len(decisions), decisions[-1]["_rowid"] if decisions else None),
             lambda: setattr(self.decisions, "value", frame(decisions, DECISION_COLUMNS)))
        seen("halts", [h["id"] for h in halts], lambda: self._halts(halts))
        ticks = [t for t in state.ticks if t["artifact"] == name]
        last = (ticks[-1]["bar"], ticks[-1]["status"]) if ticks else None
        seen("latency", (len(ticks), last), lambda: setattr(self.latency, "object", _latency(ticks)))
        risk = state.risk_rows(name)
        seen("risk", risk, lambda: setattr(self.risk, "value", pd.DataFrame(risk, columns=list(RISK_COLUMNS))
                                           .rename(columns=RISK_COLUMNS)))
        self.risk.visible = bool(risk)
        fresh = state.staleness(name)
        seen("fresh", _fresh(fresh), lambda: setattr(self.fresh, "object", _fresh(fresh)))
        self._state = state

    def _positions(self, positions: Mapping[str, float]) -> None:
        self.positions.value = pd.DataFrame({"symbol": list(positions),
                                             "qty": [_num(q) for q in positions.values()]},
                                            columns=["symbol", "qty"])
        self.positions.visible, self.flat.visible = bool(positions), not positions

    def _halts(self, halts: list[Mapping[str, Any]]) -> None:
        self.halts.value = frame(halts, HALT_COLUMNS)
        self.halts.visible, self.no_halts.visible = bool(halts), not halts

    def _stats(self, book: Mapping[str, Any] | None, spec: Mapping[str, Any],
               halts: list[Mapping[str, Any]]) -> str:
        name = html.escape(self.name)
        if book is None:
            return f"<div class='wb-book' data-strategy='{name}'>no tick journaled yet for {name}</div>"
        capital = float(spec.get("capital") or 0.0)
        pnl = f" &middot; P&amp;L <b>{book['equity'] - capital:+,.2f}</b>" if capital else ""
        bars = f" &middot; {html.escape(str(spec['timeframe']))} bars" if spec.get("timeframe") else ""
        halted = (f" &middot; <span class='wb-halted' style='color:#b00020'><b>halted</b> "
                  f"({len(halts)})</span>") if halts else ""
        return (
            f"<div class='wb-book' data-strategy='{name}' style='line-height:1.6'>"
            f"equity <b class='wb-equity' data-value='{book['equity']!r}'>{money(book['equity'])}</b>"
            f" &middot; cash <b class='wb-cash'>{money(book['cash'])}</b>{pnl}{halted}<br>"
            f"<small>last bar {html.escape(_bar(str(book['bar'])))} UTC{bars}</small></div>"
        )

    def _chart(self, state: LiveState) -> None:
        series = state.equity_frame(self.name)
        if not len(series):
            self.chart.object = None
            return
        fig = equity_figure(series)
        shadow = self._shadow
        if shadow is not None and len(shadow):
            step = max(len(shadow) // 2000, 1)
            fig.add_scatter(x=shadow.index[::step], y=shadow.to_numpy()[::step], name="shadow backtest",
                            mode="lines", line={"dash": "dot", "width": 1.5})
        fig.update_layout(height=CHART_HEIGHT, autosize=True, margin={"l": 55, "r": 10, "t": 30, "b": 30},
                          showlegend=shadow is not None,
                          legend={"orientation": "h", "y": 1.12, "x": 0})
        self.chart.object = fig

    def _on_shadow(self, _event: object) -> None:
        self.compare()

    def compare(self) -> bool:
        """Run the shadow backtest over the bars this strategy traded and draw it against the paper equity,
        with the trade-by-trade parity line (a replay must match; a live run shows what trading changed).
        A failure is one line in the card."""
        if self._shadow_fn is None:
            return False
        try:
            parity, equity = self._shadow_fn(self.name)
        except Exception as exc:  # never a traceback on the page
            text = " ".join(str(exc).split())[:300]
            self.drift.object = (f"<small class='wb-drift-result' data-ok='false' style='color:#b00020'>"
                                 f"shadow backtest failed: {html.escape(text)}</small>")
            return False
        self._shadow = equity
        ok = bool(parity.ok)
        colour = "#1b5e20" if ok else "#b00020"
        paper = self._state.equity_frame(self.name) if self._state is not None else pd.Series(dtype=float)
        gap = ""
        if len(paper) and len(equity):
            last = equity.asof(paper.index[-1]) if paper.index[-1] >= equity.index[0] else float("nan")
            if last == last and last:
                gap = f"; paper equity {paper.iloc[-1] / last - 1.0:+.3%} against it at the last tick"
        self.drift.object = (f"<small class='wb-drift-result' data-ok='{str(ok).lower()}' "
                             f"data-matched='{parity.matched}' style='color:{colour}'>"
                             f"{html.escape(parity.summary() + gap)}</small>")
        if self._state is not None:
            self._chart(self._state)
        return True


def _latency(ticks: Sequence[Mapping[str, Any]]) -> str:
    if not ticks:
        return "<small>no tick yet</small>"
    last = ticks[-1]
    times = [float(t["latency_ms"]) for t in ticks if t.get("latency_ms") is not None]
    spread = ""
    if times:
        ordered = sorted(times)
        p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
        spread = f"; median {median(times):.1f} ms, p95 {p95:.1f} ms over the last {len(times)} ticks"
    took = "" if last.get("latency_ms") is None else f" in {float(last['latency_ms']):.1f} ms"
    return (f"<small class='wb-tick'>tick latency: last bar {html.escape(_bar(str(last['bar'])))} "
            f"{html.escape(str(last['status']))}{took}{spread}</small>")


def _fresh(fresh: Mapping[str, Any] | None) -> str:
    if fresh is None:
        return ""
    parts = []
    if fresh.get("tick_age_s") is not None:
        parts.append(f"last tick {_age(float(fresh['tick_age_s']))} ago")
    if fresh.get("bar_lag_s") is not None:
        parts.append(f"data {_age(float(fresh['bar_lag_s']))} past the bar's close at that tick")
    return (f"<small class='wb-staleness' data-tick-age='{fresh.get('tick_age_s')!r}'>"
            f"freshness: {html.escape('; '.join(parts) or 'unknown')}</small>")


def _age(seconds: float) -> str:
    s = abs(seconds)
    text = f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"
    return text if seconds >= 0 else f"-{text}"


def stream_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Collector stream rows (`workbench.data.collector.stream_rows`) as the page shows them."""
    out = []
    for r in rows:
        out.append({title: ("" if r.get(key) is None else f"{r[key]:.1f}" if key in ("rate", "lag_s") else
                            f"{r[key]:.0f}" if key == "durable_p99_ms" else str(r.get(key, "")))
                    for key, title in STREAM_COLUMNS.items()})
    return pd.DataFrame(out, columns=list(STREAM_COLUMNS.values()))


class LivePage:
    """Every strategy's card, the journal's recent errors, and when it was last read."""

    def __init__(self, *, shadow: Callable[[str], tuple[Any, pd.Series]] | None = None,
                 collectors: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.cards: dict[str, StrategyCard] = {}
        self._shadow = shadow
        self._collectors = collectors
        self._streams_seen: Any = None
        self.streams = table(STREAM_COLUMNS, height=150, name="streams")
        self.streams_note = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["wb-streams-note"])
        self.streams_box = pn.Column(pn.pane.HTML("<b>Collector streams</b>"), self.streams_note,
                                     self.streams, visible=False, sizing_mode="stretch_width")
        self.errors = table(ERROR_COLUMNS, height=120, name="errors")
        self._errors_seen: Any = None
        self.empty = pn.pane.HTML("no strategy has ticked in this journal yet: the page fills in as the "
                                  "runner writes", sizing_mode="stretch_width")
        self.column = pn.Column(self.empty, sizing_mode="stretch_width")
        self.errors_box = pn.Column(pn.pane.HTML("<b>Recent errors</b>"), self.errors, visible=False,
                                    sizing_mode="stretch_width")
        self.layout = pn.Column(self.streams_box, self.errors_box, self.column, sizing_mode="stretch_width")

    def update(self, state: LiveState) -> None:
        """Add cards for strategies seen for the first time and refresh every card."""
        names = sorted(set(state.specs) | set(state.books))
        new = [n for n in names if n not in self.cards]
        for name in new:
            self.cards[name] = StrategyCard(name, shadow=self._shadow)
        if new:
            self.column.objects = [self.cards[n].card for n in names]
        for card in self.cards.values():
            card.update(state)
        self._update_streams()
        errors = list(state.errors)
        key = (len(errors), errors[-1]["_rowid"] if errors else None)
        if key != self._errors_seen:
            self._errors_seen = key
            self.errors.value = frame(errors, ERROR_COLUMNS)
            self.errors_box.visible = bool(errors)

    def _update_streams(self) -> None:
        """The lake's collector streams (shown once a collector has written a status): a status that cannot
        be read is one line, and the cards still refresh."""
        if self._collectors is None:
            return
        try:
            rows = self._collectors()
        except Exception as exc:  # never a traceback on the page
            self.streams_note.object = (f"<small style='color:#b00020'>collector status unreadable: "
                                        f"{html.escape(' '.join(str(exc).split())[:200])}</small>")
            self.streams_box.visible = True
            return
        frame_ = stream_frame(rows)
        key = frame_.to_json()
        if key != self._streams_seen:
            self._streams_seen = key
            self.streams.value = frame_
            self.streams_note.object = ""
            self.streams_box.visible = bool(rows)
