"""The text forms of a strategy's parameters, as the command line and pipeline YAML write them:
``fast=10,slow=50`` (values), ``fast=5:50:5,slow=20|50|100`` (a grid) and ``short=false`` (fixed).

They live here, not in the CLI, so that `workbench backtest/sweep/optimize` and a pipeline step read
the same text the same way.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from workbench.config import split_list
from workbench.errors import ConfigError

if TYPE_CHECKING:
    from workbench.strategies.base import Param, Strategy
    from workbench.strategies.weights import WeightStrategy


def parse_pairs(text: str | None, option: str, example: str) -> dict[str, str]:
    """Parse ``name=value,name=value`` into a dict (values kept as text for the strategy to coerce)."""
    out: dict[str, str] = {}
    for part in split_list(text or ""):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(f"{option}: cannot parse {part!r}; write name=value pairs like {example}")
        if key in out:
            raise ConfigError(f"{option}: {key} is given twice; give each parameter once")
        out[key] = value
    return out


def _num(text: str, option: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{option}: {name}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{option}: {name}: {text!r} is not a finite number")
    return value


def _range_values(param: Param, spec: str, option: str) -> list[Any]:
    """Values of an inclusive range ``a:b:step`` (``a:b`` walks the parameter's own step)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(p.strip() for p in parts):
        raise ConfigError(f"{option}: cannot parse {param.name}={spec!r}; write a range as start:stop:step "
                          f"(e.g. {param.name}=5:50:5) or list values as v1|v2|v3")
    if param.kind not in ("int", "float"):
        raise ConfigError(f"{option}: {param.name} is a {param.kind} parameter, not a number; list its "
                          f"values like {'|'.join(map(str, param.grid()))}")
    a, b = _num(parts[0], option, param.name), _num(parts[1], option, param.name)
    if len(parts) == 3:
        step = _num(parts[2], option, param.name)
    elif param.step is not None or param.kind == "int":
        step = float(param.step or 1)
    else:
        raise ConfigError(f"{option}: {param.name} is a float without a default step; write "
                          f"{param.name}={parts[0]}:{parts[1]}:<step>")
    if step <= 0:
        raise ConfigError(f"{option}: {param.name}={spec}: the step must be positive")
    if a > b:
        raise ConfigError(f"{option}: {param.name}={spec}: the start is above the stop; "
                          "write start:stop:step")
    if param.kind == "int":
        if not all(float(v).is_integer() for v in (a, b, step)):
            raise ConfigError(f"{option}: {param.name} is an integer parameter; use whole numbers in "
                              f"{param.name}={spec}")
        return list(range(int(a), int(b) + 1, int(step)))
    n = math.floor((b - a) / step + 1e-9) + 1
    return [round(a + k * step, 12) for k in range(n)]


def parse_grid(text: str | None, strategy: Strategy | WeightStrategy, option: str = "--grid"
               ) -> dict[str, list[Any]]:
    """Parse ``fast=5:50:5,slow=20|50|100`` into {param: typed values} for the strategy's space."""
    grid: dict[str, list[Any]] = {}
    for name, spec in parse_pairs(text, option, "fast=5:50:5,slow=20|50|100").items():
        param = strategy.space[name]  # unknown names raise with a did-you-mean
        if ":" in spec:
            values: list[Any] = _range_values(param, spec, option)
        else:
            values = [v.strip() for v in spec.split("|")]
            if not all(values):
                raise ConfigError(f"{option}: {name}={spec!r} has an empty value; list values as v1|v2|v3")
        grid[name] = list(dict.fromkeys(param.coerce(v) for v in values))
    return grid


def parse_fixed(text: str | None, strategy: Strategy | WeightStrategy, option: str = "--fixed"
                ) -> dict[str, Any]:
    """Parse ``short=false,slow=50`` into {param: typed value} for the strategy's space."""
    return {name: strategy.space[name].coerce(value)
            for name, value in parse_pairs(text, option, "short=false").items()}

