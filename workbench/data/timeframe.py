"""Bar timeframes (`1m 5m 15m 1h 4h 1d`, or any `N` + s/m/h/d/w for resampling) as a small value type."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from workbench.errors import ConfigError

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"^(\d+)([smhdw])$")
STORED = ("1m", "5m", "15m", "1h", "4h", "1d")


@dataclass(frozen=True, order=True)
class Timeframe:
    """A bar length. Buckets are aligned to the Unix epoch in UTC (weeks to Mondays)."""

    seconds: int

    @classmethod
    def parse(cls, value: str | Timeframe) -> Timeframe:
        """Parse `'15m'`, `'1h'`, `'1d'`...; raise a ConfigError that names valid forms otherwise."""
        if isinstance(value, Timeframe):
            return value
        m = _PATTERN.match(str(value).strip())
        if not m or int(m.group(1)) == 0:
            raise ConfigError(
                f"unknown timeframe {value!r}: use a count and a unit, e.g. {', '.join(STORED)}"
            )
        seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        if seconds > 7 * 86400 and seconds % (7 * 86400):
            raise ConfigError(f"timeframe {value!r} is longer than a week: use whole weeks (e.g. 2w)")
        return cls(seconds)

    @property
    def name(self) -> str:
        for unit in ("w", "d", "h", "m", "s"):
            if self.seconds % _UNIT_SECONDS[unit] == 0:
                return f"{self.seconds // _UNIT_SECONDS[unit]}{unit}"
        raise AssertionError(self.seconds)  # pragma: no cover - parse() only makes whole seconds

    @property
    def delta(self) -> pd.Timedelta:
        return pd.Timedelta(seconds=self.seconds)

    @property
    def micros(self) -> int:
        return self.seconds * 1_000_000

    @property
    def origin_micros(self) -> int:
        """Bucket origin: the epoch, except weeks, which start on Monday 1970-01-05."""
        return 4 * 86400 * 1_000_000 if self.seconds % (7 * 86400) == 0 else 0

    def floor(self, ts: pd.Timestamp) -> pd.Timestamp:
        """The start of the bucket that contains `ts`."""
        us = pd.Timestamp(ts).value // 1000
        o = self.origin_micros
        return pd.Timestamp((us - o) // self.micros * self.micros + o, unit="us", tz="UTC")

    def divides(self, coarser: Timeframe) -> bool:
        """True when buckets of `coarser` are unions of whole buckets of this timeframe."""
        return coarser.seconds % self.seconds == 0 and coarser.seconds >= self.seconds

    def __str__(self) -> str:
        return self.name
