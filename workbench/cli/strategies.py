"""`workbench strategies`: the strategies (built-ins and ./research), their parameters and ranges."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from workbench.cli.common import out
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.strategies.base import Param


def strategies_cmd(
    spec: Annotated[str | None, typer.Argument(
        help="Show one strategy (or a composite spec like regime(macd)) in detail.")] = None,
) -> None:
    """List the strategies (built-ins and ./research): parameters with defaults and ranges."""
    from workbench.strategies.registry import get_strategy, list_strategies

    if spec is not None:
        strat = get_strategy(spec)
        out.print(f"[bold]{escape(strat.name)}[/] ({escape(strat.source)}): {escape(strat.description)}")
        table = Table(title="parameters", title_justify="left")
        for name in ("name", "kind", "default", "range / choices", "grid", "meaning"):
            table.add_column(name, justify="right" if name == "grid" else "left")
        for p in strat.space.params:
            try:
                size = f"{len(p.grid()):,}"
            except WorkbenchError:
                size = "give values"
            table.add_row(*map(escape, (p.name, p.kind, str(p.default), _param_range(p), size, p.doc)))
        out.print(table)
        for c in strat.space.constraints:
            out.print(f"constraint: {c.expr}", markup=False)
        return
    table = Table(title="strategies", show_lines=True, title_justify="left")
    for name in ("strategy", "parameters: default [range step]", "constraints", "description"):
        table.add_column(escape(name))
    for name, strat in sorted(list_strategies().items()):
        params = "\n".join(f"{p.name}={p.default} {_param_range(p)}" for p in strat.space.params)
        constraints = "\n".join(c.expr for c in strat.space.constraints)
        label = name if strat.source == "builtin" else f"{name} ({strat.source})"
        table.add_row(*map(escape, (label, params, constraints, strat.description)))
    out.print(table)
    out.print("composites: regime(<strategy>) gates entries by a market regime; vote(<a>,<b>,...) "
              "is long while most components are; ml_model(<model>[@<version>]) trades a registered model "
              "by pure inference; ml_refit(<model>[@<version>]) refits its recipe walk-forward")


def _param_range(p: Param) -> str:
    def num(v: float | None) -> str:
        return "" if v is None else (str(int(v)) if float(v).is_integer() else f"{v:g}")

    if p.kind in ("int", "float"):
        step = f" step {num(p.step)}" if p.step else ""
        return f"[{num(p.low)}..{num(p.high)}{step}]"
    if p.kind == "choice":
        return "{" + "|".join(map(str, p.choices)) + "}"
    return "{true|false}"
