"""Manual halts and resumes of a journal's strategies: the one place that checks what is named and journals
it, for the command line (`workbench paper halt/resume`) and the dashboard's Controls page alike.

A halt's scope is ``all``, a strategy (its name in the journal), or ``strategy:symbol``; it stops new
entries (exits still run) until it is resumed. Resuming ``all`` lifts every halt in force, resuming a
strategy lifts its own and its symbols' halts (whatever set them: by hand, the kill switch, a circuit
breaker, a reconciliation difference), and resuming a symbol lifts that symbol's halts only.
"""

from __future__ import annotations

from workbench.errors import ConfigError, did_you_mean
from workbench.paper.journal import Journal

ALL = "all"


def halt_scope(journal: Journal, strategy: str | None = None, symbol: str | None = None) -> str:
    """The scope naming `strategy` (None: all) and optionally one of its symbols, checked against the
    strategies and symbols the journal's runner recorded."""
    if strategy is None:
        if symbol is not None:
            raise ConfigError(f"a symbol halt needs its strategy: name the strategy that trades {symbol}")
        return ALL
    specs = {str(s["name"]): [str(x) for x in s.get("symbols", [])] for s in journal.specs()}
    if strategy not in specs:
        raise ConfigError(
            f"unknown strategy {strategy!r}{did_you_mean(strategy, list(specs))}; this journal has "
            f"{', '.join(specs) or 'none'}"
        )
    if symbol is None:
        return strategy
    if symbol not in specs[strategy]:
        raise ConfigError(
            f"{strategy} does not trade {symbol!r}{did_you_mean(symbol, specs[strategy])}; its symbols are "
            f"{', '.join(specs[strategy]) or 'none'}"
        )
    return f"{strategy}:{symbol}"


def _reason(reason: str, what: str, origin: str | None) -> str:
    text = " ".join(reason.split())
    if not text:
        raise ConfigError(f"{what} needs a written reason (it is journaled)")
    return f"{text} (from {origin})" if origin else text


def halt(
    journal: Journal,
    reason: str,
    *,
    strategy: str | None = None,
    symbol: str | None = None,
    source: str = "manual",
    origin: str | None = None,
) -> str:
    """Halt new entries of all strategies, one, or one of its symbols; returns the scope journaled.

    `source` names who halted (``manual`` from the command line, ``dashboard``) and `origin`, when
    given, where the request came from (a client address), appended to the journaled reason.
    """
    scope = halt_scope(journal, strategy, symbol)
    journal.halt(scope, _reason(reason, "a halt", origin), source=source)
    return scope


def resume(
    journal: Journal,
    reason: str,
    *,
    strategy: str | None = None,
    symbol: str | None = None,
    source: str = "manual",
    origin: str | None = None,
) -> int:
    """Lift the halts in force of all strategies, one (with its symbols') or one symbol's; returns how many.

    The journal keeps why each was lifted: the reason, then who (`source`, unless a manual resume) and
    from where (`origin`).
    """
    scope = halt_scope(journal, strategy, symbol)
    why = _reason(reason, "resuming", None)
    if source != "manual" or origin:
        why = f"{why} ({source}" + (f", from {origin})" if origin else ")")
    scopes = {h["scope"] for h in journal.active_halts()}
    if scope != ALL:
        scopes = {s for s in scopes if s == scope or (symbol is None and s.startswith(scope + ":"))}
    return sum(journal.resume(s, why) for s in sorted(scopes))
