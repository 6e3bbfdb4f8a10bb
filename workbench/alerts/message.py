"""What an alert says: the condition (`Alert`) and the text sent for it (`Message`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import ConfigError, did_you_mean

LEVELS = ("info", "warning", "error")


@dataclass(frozen=True, kw_only=True)
class Alert:
    """A condition worth a message: `key` names it for dedup (``"halt:sma_cross"``,
    ``"stale:BTC/USDT"``), `facts` become ``name: value`` lines, `action` is the command (or step)
    that acts on it."""

    key: str
    title: str
    facts: Mapping[str, Any] = field(default_factory=dict)
    action: str
    level: str = "warning"

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key.strip():
            raise ConfigError(f"alert key must be a non-empty string, got {self.key!r}; "
                              "name the condition, e.g. 'halt:sma_cross'")
        if self.level not in LEVELS:
            raise ConfigError(f"alert level {self.level!r} is not one of {', '.join(LEVELS)}"
                              f"{did_you_mean(str(self.level), LEVELS)}")


@dataclass(frozen=True)
class Message:
    """One message handed to the channels: `kind` is ``alert``, ``reminder`` or ``recovery``."""

    kind: str
    key: str
    level: str
    title: str
    body: str


def one_line(text: str) -> str:
    """`text` with its line breaks and runs of spaces folded (a mail subject is one header line)."""
    return re.sub(r"\s+", " ", str(text)).strip()


def duration(seconds: float) -> str:
    """``45s``, ``12m 30s``, ``6h 05m``, ``2d 03h``: how long a condition lasted, to read at a glance."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def render(kind: str, alert: Alert, *, source: str, active_for: float, note: str = "",
           dropped: int = 0, cap: int = 0) -> Message:
    """The message for `alert`: the title says level and source, the body its facts and what to do."""
    prefix = f"[{one_line(source)}] "
    title = one_line(alert.title)
    if kind == "recovery":
        level = "info"
        title = f"{prefix}RECOVERED: {title}"
        lines = [f"Cleared after {duration(active_for)}."]
        if note:
            lines.append(note)
    else:
        level = alert.level
        title = f"{prefix}{level.upper()}: {title}"
        lines = [f"{name}: {value}" for name, value in alert.facts.items()]
        if kind == "reminder":
            title += f" (still active after {duration(active_for)})"
            lines.append(f"Active for {duration(active_for)}.")
        lines.append(f"To act: {alert.action}")
    if dropped:
        lines.append(f"({dropped} earlier alert message{'s' if dropped != 1 else ''} "
                     f"dropped by the limit of {cap} per hour.)")
    return Message(kind=kind, key=alert.key, level=level, title=title, body="\n".join(lines))
