"""The risk overlay between a strategy's targets and the broker: caps, loss limits, kill switches, breakers.

Every limit is optional; each check returns what it allows and, when it cuts or refuses, the reason
the runner journals. Exits are never blocked (halts stop new risk, not its removal).
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ValidationInfo, create_model, field_validator

from workbench.config import ConfigModel, ConfigProblem
from workbench.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class RiskLimits:
    """Limits applied to every entry of a runner (fractions of the strategy's equity).

    max_position: largest position per asset; max_gross: total gross exposure; risk_per_trade:
    loss at the trade's stop; daily_loss_limit: loss since the day's first tick that halts new
    entries for the day; max_drawdown: drawdown from the equity peak that halts the strategy
    (a kill switch: `workbench paper resume` lifts it); max_bar_move: a bar whose close moved more
    than this from the previous close trips the symbol's circuit breaker; stale_bars: this many
    bar intervals without a new bar trip the data breaker.
    """

    max_position: float | None = None
    max_gross: float | None = None
    risk_per_trade: float | None = None
    daily_loss_limit: float | None = None
    max_drawdown: float | None = None
    max_bar_move: float | None = 0.25
    stale_bars: int | None = 3

    def __post_init__(self) -> None:
        for f in fields(self):
            problem = self.problem(f.name, getattr(self, f.name))
            if problem:
                raise ConfigError(problem.replace("{key}", f"risk.{f.name}"))

    @staticmethod
    def problem(name: str, v: Any) -> str | None:
        """What is wrong with limit `name` set to `v` (``{key}`` stands for the limit's key), or None."""
        if v is None:
            return None
        if name == "stale_bars":
            if isinstance(v, bool) or not isinstance(v, int | float) or int(v) != v or v < 1:
                return f"{{key}}={v!r} must be a whole number of bars >= 1"
            return None
        if isinstance(v, bool) or not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            return f"{{key}}={v!r} must be a positive fraction, e.g. 0.05 for 5 %"
        if name not in ("max_position", "max_gross") and v >= 1:
            return f"{{key}}={v!r} must be below 1 (a fraction of equity)"
        return None


class _RiskSection(ConfigModel):
    key_noun: ClassVar[str] = "risk limit"

    @field_validator("*", mode="after")
    @classmethod
    def _in_range(cls, v: Any, info: ValidationInfo) -> Any:
        problem = RiskLimits.problem(str(info.field_name), v)
        if problem:
            raise ConfigProblem(problem)
        return v

    def limits(self) -> RiskLimits:
        """The validated section as the runner's limits."""
        return RiskLimits(**self.model_dump())


if TYPE_CHECKING:
    # The checker cannot see fields made at run time; it sees the model through its base class.
    RiskSection = _RiskSection
else:
    _hints = typing.get_type_hints(RiskLimits)
    RiskSection = create_model(  # the ``risk:`` section of a paper config: RiskLimits' fields, checked
        "RiskSection", __base__=_RiskSection,
        **{f.name: (_hints[f.name], f.default) for f in fields(RiskLimits)},
    )


@dataclass(frozen=True)
class EntryCheck:
    """An entry's allowed fraction of equity (0 = refused) and why it was cut, if it was."""

    fraction: float
    reason: str | None


def check_entry(limits: RiskLimits, *, fraction: float, stop_distance: float, gross: float) -> EntryCheck:
    """Cap an entry's target fraction by the per-asset, per-trade-risk and total-exposure limits.

    `gross` is the gross exposure already held (fraction of equity), `stop_distance` the trade's
    stop as a fraction of price (NaN without a stop).
    """
    f, reason = fraction, None
    if limits.max_position is not None and f > limits.max_position:
        f, reason = limits.max_position, f"position cap {limits.max_position:g} of equity"
    if limits.risk_per_trade is not None:
        if not (math.isfinite(stop_distance) and stop_distance > 0):
            return EntryCheck(
                0.0, f"risk per trade {limits.risk_per_trade:g} needs a stop and the entry has none"
            )
        cap = limits.risk_per_trade / stop_distance
        if f > cap:
            f, reason = cap, f"risk per trade {limits.risk_per_trade:g} at a {stop_distance:.2%} stop"
    if limits.max_gross is not None:
        room = limits.max_gross - gross
        if room <= 1e-12:
            return EntryCheck(0.0, f"gross exposure {gross:.2f} already at the cap {limits.max_gross:g}")
        if f > room:
            f, reason = room, f"gross exposure cap {limits.max_gross:g} (held {gross:.2f})"
    return EntryCheck(f, reason)


def loss_halts(limits: RiskLimits, *, equity: float, peak: float, day_start: float | None) -> str | None:
    """The kill-switch reason when drawdown or the day's loss breach their limits, else None."""
    if limits.max_drawdown is not None and peak > 0:
        dd = 1.0 - equity / peak
        if dd >= limits.max_drawdown:
            return f"drawdown {dd:.2%} from peak {peak:,.2f} breached max_drawdown {limits.max_drawdown:.2%}"
    if limits.daily_loss_limit is not None and day_start:
        loss = 1.0 - equity / day_start
        if loss >= limits.daily_loss_limit:
            return f"daily loss {loss:.2%} breached daily_loss_limit {limits.daily_loss_limit:.2%}"
    return None


def bar_move(limits: RiskLimits, prev_close: float, close: float) -> str | None:
    """The circuit-breaker reason when a bar moved beyond the bound, else None."""
    if limits.max_bar_move is None or not (prev_close > 0):
        return None
    move = close / prev_close - 1.0
    if not math.isfinite(move) or abs(move) > limits.max_bar_move:
        return f"price moved {move:+.2%} in one bar (bound {limits.max_bar_move:.0%})"
    return None
