"""A promoted strategy: everything the paper runner needs to trade it, and the evidence it was judged on.

An `Artifact` is one version of a named strategy in the registry (``data/registry/<name>/v<N>.json``):
strategy, parameters, symbols, timeframe, costs, fills, sizing, the data range and fingerprint of the
walk-forward run it came from, the indicator warm-up (`lookback`), the code versions, every gate's
verdict and the evidence behind them. It is plain JSON, indented, in a stable field order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError, DataError

SCHEMA = 1


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, NaN to None, infinities to "inf"/"-inf"."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """One promoted version of a strategy (see the module docstring); `path` is where it was read from."""

    name: str
    version: int
    strategy: str
    params: dict[str, Any]
    symbols: list[str]
    timeframe: str
    calendar: str
    periods_per_year: float
    costs: dict[str, Any]
    fill: str
    sizing: dict[str, Any]
    direction: str
    init_cash: float
    max_exposure: float
    portfolio: bool
    data: dict[str, Any]
    lookback: int
    run_id: str
    code_version: str
    run_code_version: str | None
    created_at: str
    params_fold: int
    fold_params: list[dict[str, Any]]
    gates: list[dict[str, Any]]
    gates_file: dict[str, Any]
    evidence: dict[str, Any]
    forced: bool = False
    force_reason: str | None = None
    lots: dict[str, Any] = field(default_factory=dict)  # {symbol: Lot fields}; none: any size
    pins: dict[str, Any] = field(default_factory=dict)  # models traded: version, run, feature set
    members: list[dict[str, Any]] = field(default_factory=list)  # a book's: [{ref, share}] (promote.book)
    schema: int = SCHEMA
    path: Path | None = field(default=None, compare=False)

    @property
    def ref(self) -> str:
        """``name@vN``: how the CLI and `Registry.get` name this version."""
        return f"{self.name}@v{self.version}"

    @property
    def passed(self) -> bool:
        """Whether every gate passed (a forced artifact may have failed some)."""
        return all(g.get("passed") for g in self.gates)

    @property
    def failed_gates(self) -> list[str]:
        return [g["name"] for g in self.gates if not g.get("passed")]

    def verdicts(self) -> list[Any]:
        """The gate verdicts as `Verdict` objects."""
        from workbench.promote.gates import Verdict

        return [Verdict.from_dict(g) for g in self.gates]

    def gates_frame(self) -> Any:
        """One row per gate: value, rule, verdict and detail (for reports)."""
        import pandas as pd

        rows = [{"gate": g["name"], "value": g.get("value"), "rule": f"{g.get('op')} {g.get('threshold')}",
                 "passed": bool(g.get("passed")), "detail": g.get("detail")} for g in self.gates]
        return pd.DataFrame(rows, columns=["gate", "value", "rule", "passed", "detail"])

    def folds_frame(self) -> Any:
        """The parameters each walk-forward fold chose, with its in- and out-of-sample Sharpe."""
        import pandas as pd

        rows = [{k: v for k, v in f.items() if k != "params"}
                | {f"param_{k}": v for k, v in f["params"].items()} for f in self.fold_params]
        return pd.DataFrame(rows)

    def summary_frame(self) -> Any:
        """What the paper runner will trade: strategy, params, market, costs, provenance."""
        import pandas as pd

        rows = [("artifact", self.ref), ("strategy", self.strategy), ("params", self.params),
                ("symbols", ", ".join(self.symbols)), ("timeframe", self.timeframe), ("costs", self.costs),
                ("fill", self.fill), ("sizing", self.sizing), ("run", self.run_id),
                ("data", f"{self.data.get('start')} .. {self.data.get('end')}"),
                ("data fingerprint", self.data.get("fingerprint")),
                ("code version", self.code_version), ("created", self.created_at),
                ("forced", f"yes: {self.force_reason}" if self.forced else "no")]
        return pd.DataFrame(rows, columns=["field", "value"]).set_index("field")

    def to_dict(self) -> dict[str, Any]:
        """The JSON content: every field but `path`, in declaration order."""
        return {f.name: jsonable(getattr(self, f.name)) for f in fields(self) if f.name != "path"}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: Path | None = None) -> Artifact:
        """Rebuild from `to_dict` output; a missing or unknown field is a DataError naming it."""
        names = {f.name for f in fields(cls)} - {"path"}
        where = f"artifact {path}" if path else "artifact"
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise DataError(f"{where} lacks field(s) {missing}; it is not a workbench artifact or is damaged")
        if int(d.get("schema", SCHEMA)) > SCHEMA:
            raise DataError(f"{where} has schema {d['schema']}, newer than this workbench ({SCHEMA}); "
                            "upgrade the workbench")
        return cls(**{k: v for k, v in d.items() if k in names}, path=path)

    @classmethod
    def read(cls, path: str | Path) -> Artifact:
        """Load an artifact JSON file."""
        p = Path(path).expanduser()
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"artifact file {p} does not exist; list artifacts with "
                              "`workbench promote ls`") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"artifact {p} is unreadable ({exc}); restore it or promote the run again") \
                from None
        if not isinstance(data, dict):
            raise DataError(f"artifact {p} is not a JSON object; restore it or promote the run again")
        return cls.from_dict(data, path=p.resolve())

    @property
    def execution(self) -> Any:
        """The execution settings the evidence was computed with, as a `workbench.backtest.Execution`."""
        from workbench.backtest.engine import Execution

        return Execution.from_dict({"costs": self.costs, "fill": self.fill, "sizing": self.sizing,
                                    "direction": self.direction, "init_cash": self.init_cash,
                                    "max_exposure": self.max_exposure, "lots": self.lots})

    def costs_obj(self) -> Any:
        """The costs as a `workbench.backtest.Costs`."""
        return self.execution.costs

    def sizing_obj(self) -> Any:
        """The sizing as a `workbench.backtest.Sizing`."""
        return self.execution.sizing

    def strategy_obj(self) -> Any:
        """The `Strategy` this artifact trades (built-in or from the research folder), or its
        `WeightStrategy` (which trades no model, so pins nothing); a book has none of its own."""
        from workbench.backtest.weight_strategies import resolve_strategy
        from workbench.strategies.base import Strategy, check_pins

        if self.members:
            raise ConfigError(f"{self.ref} is a book: it trades its members "
                              f"({', '.join(m['ref'] for m in self.members)}), each its own strategy")
        strat = resolve_strategy(self.strategy)
        if isinstance(strat, Strategy):
            check_pins(strat, self.pins, self.ref)
        return strat

    def identity(self) -> str:
        """What makes two promotions the same: run, parameters and verdicts (not time or version)."""
        return json.dumps(jsonable({"run_id": self.run_id, "params": self.params, "gates": self.gates}),
                          sort_keys=True)
