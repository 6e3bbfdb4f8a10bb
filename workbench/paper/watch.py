"""What a paper session tells someone who is not watching: its state after each tick, as alerts.

`PaperWatch.check` runs after every tick of a session with an ``alerts:`` section and turns the journal
into conditions, each with a key: it *fires* a condition while it holds and *clears* it when it stops;
`workbench.alerts.Alerter` sends one alert when a condition starts and one recovery once it has stayed
clear (a flapping condition sends one of each), and a failing channel never stops a tick. Conditions:

- a halt in force (its source says which: the kill switch on drawdown, a circuit breaker, a
  reconciliation difference between the journal and the venue, or one set by hand);
- the day's loss limit, which refuses new entries until the next UTC day;
- a drawdown from the equity peak beyond the ``drawdown`` threshold (a warning before any kill switch);
- orders the venue refused, ``rejections`` in a row;
- stale data (no new bar for the risk section's ``stale_bars``) and ticks that failed (a venue out of
  reach).

Each alert carries the facts and the command to act. Nothing here raises into the session: a problem
while checking is logged and the tick goes on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from workbench.alerts import Alert, Alerter, AlertSettings
from workbench.errors import ConfigError
from workbench.paper.journal import Journal, TickStatus
from workbench.paper.risk import RiskLimits, loss_halts
from workbench.paper.runner import StrategySpec, TickResult

log = logging.getLogger(__name__)

_HALT_TITLES = {
    "kill_switch": "kill switch: {name} is halted",
    "breaker": "circuit breaker: {name} takes no new entries",
    "reconcile": "reconciliation difference: {name} takes no new entries",
    "manual": "{name} halted by hand",
}


@dataclass(frozen=True, kw_only=True)
class WatchSettings:
    """The paper side of an ``alerts:`` section: where to send (`alerts`) and two thresholds.

    `drawdown`: alert when a strategy's equity falls this fraction below its peak (None: only the
    kill switch's halt alerts); `rejections`: alert after this many refused orders in a row.
    """

    alerts: AlertSettings
    drawdown: float | None = None
    rejections: int = 3

    def __post_init__(self) -> None:
        if self.drawdown is not None and not (isinstance(self.drawdown, int | float)
                                              and 0 < self.drawdown < 1):
            raise ConfigError(f"alerts.drawdown={self.drawdown!r} must be a fraction in (0, 1), e.g. 0.1")
        if isinstance(self.rejections, bool) or not isinstance(self.rejections, int) or self.rejections < 1:
            raise ConfigError(f"alerts.rejections={self.rejections!r} must be a whole number >= 1")


class PaperWatch:
    """Checks a session's journal after each tick and fires or clears its alert conditions."""

    def __init__(self, journal: Journal, specs: Sequence[StrategySpec], alerter: Alerter, *,
                 settings: WatchSettings, risk: RiskLimits, config: Path | str | None = None) -> None:
        self.journal, self.specs, self.alerter = journal, list(specs), alerter
        self.settings, self.risk = settings, risk
        self.config = str(config) if config is not None else "pipelines/paper.yaml"
        self._fired: set[str] = set()
        self._ticked: dict[str, list[Alert]] = {}  # each strategy's stale/error condition at its last tick

    def check(self, results: Sequence[TickResult]) -> None:
        """Fire the conditions that hold after this tick, clear the others; never raises."""
        try:
            holding: dict[str, Alert] = {}
            for alert in self._conditions(results):
                holding.setdefault(alert.key, alert)
            for alert in holding.values():
                self.alerter.fire(alert)
            for key in self._fired - set(holding):
                self.alerter.clear(key)
            self._fired = set(holding)
            self.alerter.poll()
        except Exception as exc:  # an alert problem must never stop trading
            log.error("paper alerts: checking the journal failed (%s: %s); trading goes on",
                      type(exc).__name__, exc)

    # ------------------------------------------------------------------ conditions
    def _conditions(self, results: Sequence[TickResult]) -> list[Alert]:
        out = self._halts()
        by_name = {r.artifact: r for r in results}
        for spec in self.specs:
            out += self._losses(spec)
            out += self._rejections(spec)
            r = by_name.get(spec.name)
            if r is not None and r.status != TickStatus.SKIPPED:  # (a skipped tick changes nothing)
                self._ticked[spec.name] = self._tick(spec, r)
            out += self._ticked.get(spec.name, [])
        return out

    def _resume(self, name: str | None) -> str:
        who = f" --strategy {name}" if name else ""
        return (f"find the cause (workbench paper status {self.config}), then "
                f"workbench paper resume {self.config}{who} --reason '...'")

    def _halts(self) -> list[Alert]:
        names = {s.name for s in self.specs}
        out = []
        for h in self.journal.active_halts():
            scope = str(h["scope"])
            name = scope.split(":", 1)[0]
            if scope != "all" and name not in names:
                continue
            title = _HALT_TITLES.get(str(h["source"]), "{name} halted").format(
                name=scope.replace(":", " on "))
            since = pd.Timestamp(float(h["time"]), unit="s", tz="UTC").isoformat(timespec="seconds")
            out.append(Alert(key=f"halt:{scope}", title=title, level="error",
                             facts={"scope": scope, "source": h["source"], "reason": h["reason"],
                                    "since": since},
                             action=self._resume(None if scope == "all" else name)))
        return out

    def _losses(self, spec: StrategySpec) -> list[Alert]:
        last = self.journal.last_handled_bar(spec.name)
        if last is None:
            return []
        marks = self.journal.equity_marks(spec.name, last.normalize())
        if marks is None:
            return []
        equity, peak, first = marks
        peak = max(peak, spec.capital)
        out = []
        day = loss_halts(replace(self.risk, max_drawdown=None), equity=equity, peak=0.0, day_start=first)
        if day:
            out.append(Alert(key=f"daily_loss:{spec.name}", title=f"daily loss limit: {spec.name} takes no "
                             "new entries until the next UTC day", level="warning",
                             facts={"strategy": spec.name, "equity": f"{equity:,.2f}",
                                    "day start": f"{first:,.2f}", "reason": day},
                             action="nothing to do: entries resume at the next UTC day; to stop for "
                                    f"good, workbench paper halt {self.config} --strategy {spec.name} "
                                    "--reason '...'"))
        dd = self.settings.drawdown
        if dd is not None and peak > 0 and math.isfinite(equity) and 1.0 - equity / peak >= dd:
            out.append(Alert(key=f"drawdown:{spec.name}", title=f"drawdown: {spec.name} is "
                             f"{1.0 - equity / peak:.1%} below its peak", level="warning",
                             facts={"strategy": spec.name, "equity": f"{equity:,.2f}", "peak": f"{peak:,.2f}",
                                    "threshold": f"{dd:.1%}",
                                    "kill switch at": f"{self.risk.max_drawdown:.1%}"
                                    if self.risk.max_drawdown is not None else "none"},
                             action=f"review the strategy (workbench paper status {self.config}); to stop "
                                    f"new entries: workbench paper halt {self.config} --strategy {spec.name} "
                                    "--reason '...'"))
        return out

    def _rejections(self, spec: StrategySpec) -> list[Alert]:
        n = self.settings.rejections
        recent = self.journal.recent_orders(spec.name, n)
        if len(recent) < n or any(r["status"] != "rejected" for r in recent):
            return []
        return [Alert(key=f"rejections:{spec.name}", title=f"{n} orders of {spec.name} refused in a row",
                      level="error",
                      facts={"strategy": spec.name, **{f"{r['symbol']} {r['leg']}": r["reject_reason"]
                                                       for r in recent}},
                      action="check the venue's answer above (funds, lot rules, symbol); "
                             f"workbench paper status {self.config}")]

    def _tick(self, spec: StrategySpec, r: TickResult) -> list[Alert]:
        if r.status == TickStatus.STALE:
            return [Alert(key=f"stale:{spec.name}", title=f"stale data: {spec.name} has no new bar",
                          level="warning", facts={"strategy": spec.name, "last bar": str(r.bar),
                                                  "detail": r.message},
                          action="check the data sync or the collector (workbench data ls; workbench "
                                 "collect status)")]
        if r.status == TickStatus.ERROR:
            return [Alert(key=f"error:{spec.name}", title=f"tick failed: {spec.name}", level="error",
                          facts={"strategy": spec.name, "bar": str(r.bar), "error": r.message},
                          action=f"see the error (workbench paper status {self.config}); the next tick "
                                 "retries")]
        return []
