"""The Controls page: halt or resume all strategies, one, or one of its symbols, with a written reason.

What is journaled is exactly what `workbench paper halt/resume` journals (`workbench.paper.halts`), with
``source="dashboard"`` and the client's address in the reason. A page opened without the token (when
one is configured) shows why its controls are disabled, and a request that reaches the server anyway is
refused there too.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from pathlib import Path

import panel as pn

from workbench.dashboard.live import HALT_COLUMNS, frame, table
from workbench.errors import WorkbenchError
from workbench.paper.halts import halt, resume
from workbench.paper.journal import Journal
from workbench.paper.live import LiveState

log = logging.getLogger(__name__)

ALL = "all strategies"
WHOLE = "the whole strategy"
TOKEN_NEEDED = ("a token is needed: open this page with ?token=... added to its address (the value of "
                "the variable the dashboard was started with, --token-env); the controls stay disabled until "
                "then")
SOURCE = "dashboard"


def one_line(exc: BaseException) -> str:
    """An error as the page shows it: a WorkbenchError's own message, anything else named by its type."""
    text = " ".join(str(exc).split())[:300]
    return text if isinstance(exc, WorkbenchError) else f"{type(exc).__name__}: {text}"


class ControlsPage:
    """Halt and resume controls over one journal, for one page (`allowed`: it carried the token; `origin`:
    the client address journaled with each action)."""

    def __init__(self, journal: Path, *, allowed: bool, origin: str,
                 on_change: Callable[[], None] | None = None) -> None:
        self.journal = journal
        self.allowed = allowed
        self.origin = origin
        self.on_change = on_change  # called after a halt or resume is journaled (the page re-reads)
        self._symbols: dict[str, list[str]] = {}
        self._halts_seen: list[int] | None = None
        self.strategy = pn.widgets.Select(label="Strategy", options=[ALL], value=ALL,
                                          sizing_mode="stretch_width", disabled=not allowed,
                                          css_classes=["wb-strategy"])
        self.symbol = pn.widgets.Select(label="Symbol", options=[WHOLE], value=WHOLE,
                                        sizing_mode="stretch_width", disabled=True, css_classes=["wb-symbol"])
        self.reason = pn.widgets.TextInput(label="Reason (required, journaled)", placeholder="why",
                                           sizing_mode="stretch_width", disabled=not allowed,
                                           css_classes=["wb-reason"])
        self.halt_button = pn.widgets.Button(label="Halt entries", color="danger", disabled=not allowed,
                                             sizing_mode="stretch_width", css_classes=["wb-halt"])
        self.resume_button = pn.widgets.Button(label="Resume", color="primary", disabled=not allowed,
                                               sizing_mode="stretch_width", css_classes=["wb-resume"])
        self.message = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["wb-message"])
        self.halts = table(HALT_COLUMNS, height=200, name="control-halts")
        self.no_halts = pn.pane.HTML("<small>none</small>", sizing_mode="stretch_width")
        self.strategy.param.watch(self._pick_strategy, "value")
        self.halt_button.on_click(self._halt)
        self.resume_button.on_click(self._resume)
        notice = [] if allowed else [
            pn.pane.Alert(TOKEN_NEEDED, alert_type="warning", sizing_mode="stretch_width",
                          css_classes=["wb-token-needed"])]
        self.layout = pn.Column(
            *notice,
            pn.pane.HTML("Halts stop new entries; exits still run. Resuming a strategy lifts its own and its "
                         "symbols' halts, whatever set them (by hand, the kill switch, a circuit breaker, a "
                         "reconciliation difference).", sizing_mode="stretch_width"),
            self.strategy, self.symbol, self.reason,
            pn.Row(self.halt_button, self.resume_button, sizing_mode="stretch_width"),
            self.message,
            pn.pane.HTML("<b>Halts in force</b>"), self.no_halts, self.halts,
            sizing_mode="stretch_width",
        )

    def update(self, state: LiveState) -> None:
        """Offer the strategies and symbols the journal has, and show the halts in force."""
        symbols = {name: list(spec.get("symbols", [])) for name, spec in state.specs.items()}
        if symbols != self._symbols:
            self._symbols = symbols
            self.strategy.options = [ALL, *sorted(symbols)]
            self._pick_strategy()
        ids = [h["id"] for h in state.halts]
        if ids != self._halts_seen:
            self._halts_seen = ids
            self.halts.value = frame(state.halts, HALT_COLUMNS)
            self.halts.visible, self.no_halts.visible = bool(ids), not ids

    def _pick_strategy(self, *_: object) -> None:
        chosen = self.strategy.value
        self.symbol.options = [WHOLE, *self._symbols.get(chosen, [])]
        self.symbol.value = WHOLE
        self.symbol.disabled = not self.allowed or chosen == ALL

    def _halt(self, _event: object) -> None:
        self.act("halt")

    def _resume(self, _event: object) -> None:
        self.act("resume")

    def act(self, action: str) -> bool:
        """Halt or resume what the page names; True when journaled. Every outcome is one line on the page."""
        if not self.allowed:
            log.warning("dashboard: a %s from %s was refused: the page carried no valid token", action,
                        self.origin)
            self._say("refused: " + TOKEN_NEEDED, ok=False)
            return False
        strategy = None if self.strategy.value == ALL else str(self.strategy.value)
        symbol = None if strategy is None or self.symbol.value == WHOLE else str(self.symbol.value)
        reason = str(self.reason.value_input or self.reason.value or "")
        try:
            with Journal(self.journal) as j:
                if action == "halt":
                    scope = halt(j, reason, strategy=strategy, symbol=symbol, source=SOURCE,
                                 origin=self.origin)
                    said = f"halted {scope}: {' '.join(reason.split())}"
                else:
                    n = resume(j, reason, strategy=strategy, symbol=symbol, source=SOURCE, origin=self.origin)
                    what = strategy if symbol is None else f"{strategy}:{symbol}"
                    said = f"lifted {n} halt(s)" + (f" of {what}" if strategy else "")
        except WorkbenchError as exc:
            self._say(str(exc), ok=False)
            return False
        except Exception as exc:  # e.g. the journal locked for longer than its timeout: one line, no trace
            log.warning("dashboard: a %s from %s failed: %s", action, self.origin, one_line(exc))
            log.debug("dashboard: why", exc_info=True)
            self._say(f"the {action} was not journaled ({one_line(exc)}); try again", ok=False)
            return False
        log.info("dashboard: %s from %s", said, self.origin)
        self.reason.value = ""
        self._say(said, ok=True)
        if self.on_change is not None:
            self.on_change()
        return True

    def _say(self, text: str, *, ok: bool) -> None:
        colour = "#1b5e20" if ok else "#b00020"
        self.message.object = (f"<div class='wb-result' data-ok='{str(ok).lower()}' style='color:{colour}'>"
                               f"{html.escape(' '.join(text.split()))}</div>")
