"""Where strategies are found: the built-ins, the user's modules in `research/`, and composites.

A strategy module (built-in or in `research/`) defines a module-level ``STRATEGY`` (or a list
``STRATEGIES``) of `Strategy` objects. Composites are written as specs:
``regime(sma_cross)`` gates any strategy with the regime filter, ``vote(sma_cross,macd,rsi_mr)``
combines several by majority vote, and ``ml_model(demo_gbm@3)`` trades a registered model version.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import pkgutil
import sys
from pathlib import Path

from workbench.config import setting
from workbench.errors import ConfigError, did_you_mean
from workbench.strategies.base import Strategy

log = logging.getLogger(__name__)

_BUILTINS: dict[str, Strategy] = {}
_USER: dict[str, Strategy] = {}
_LOADED_FROM: Path | None = None
_BUILTINS_LOADED = False


def register(strategy: Strategy) -> Strategy:
    """Add a strategy to the built-in registry (used by the modules of this package)."""
    _BUILTINS[strategy.name] = strategy
    return strategy


def _load_builtins() -> None:
    # a flag, not "is the registry empty": a strategy registered before the first lookup (a test's
    # own, say) must not hide the built-ins
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    import workbench.strategies as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name in ("base", "registry", "indicators"):
            continue
        module = importlib.import_module(f"workbench.strategies.{info.name}")
        for s in _module_strategies(module):
            register(s)


def _module_strategies(module: object) -> list[Strategy]:
    found = []
    single = getattr(module, "STRATEGY", None)
    if isinstance(single, Strategy):
        found.append(single)
    found.extend(s for s in getattr(module, "STRATEGIES", []) if isinstance(s, Strategy))
    return found


def research_dir() -> Path:
    """The folder scanned for user strategies: $WORKBENCH_RESEARCH_DIR or ./research."""
    return Path(setting("WORKBENCH_RESEARCH_DIR") or "research").resolve()


def discover(folder: Path | str | None = None) -> dict[str, Strategy]:
    """Import every ``*.py`` in the research folder (and its subfolders) and collect strategies.

    A module that fails to import is reported with its path and error, never silently skipped.
    """
    global _LOADED_FROM
    root = Path(folder).resolve() if folder is not None else research_dir()
    _USER.clear()
    _LOADED_FROM = root
    if not root.is_dir():
        return {}
    _load_builtins()
    for path in sorted(root.rglob("*.py")):
        if path.name.startswith(("_", ".")) or "checkpoint" in path.name:
            continue
        mod_name = "workbench_research." + "_".join(path.relative_to(root).with_suffix("").parts)
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ConfigError(f"research strategy module {path} failed to import: "
                              f"{type(exc).__name__}: {exc}; fix or rename it to start with '_'") from exc
        for s in _module_strategies(module):
            if s.name in _BUILTINS:
                raise ConfigError(f"{path} defines strategy {s.name!r}, which is a built-in name; "
                                  "rename it")
            _USER[s.name] = s
            log.debug("discovered strategy %s in %s", s.name, path)
    return dict(_USER)


def list_strategies(folder: Path | str | None = None) -> dict[str, Strategy]:
    """All strategies by name: built-ins then the user's (research folder scanned once)."""
    _load_builtins()
    root = Path(folder).resolve() if folder is not None else research_dir()
    if root != _LOADED_FROM:
        discover(root)
    return {**_BUILTINS, **_USER}


def get_strategy(spec: str | Strategy, folder: Path | str | None = None) -> Strategy:
    """Resolve a name or composite spec (``regime(sma_cross)``, ``vote(a,b,c)``) to a Strategy."""
    if isinstance(spec, Strategy):
        return spec
    text = spec.strip().replace(" ", "")
    known = list_strategies(folder)
    if "(" in text:
        if not text.endswith(")"):
            raise ConfigError(f"strategy spec {spec!r} is malformed; write e.g. regime(sma_cross)")
        head, inner = text[:-1].split("(", 1)
        parts = _split_top(inner)
        if head == "regime":
            from workbench.strategies.regime_filter import gate

            if len(parts) != 1:
                raise ConfigError(f"regime(...) gates exactly one strategy, got {len(parts)}")
            return gate(get_strategy(parts[0], folder))
        if head == "ml_model":
            from workbench.strategies.ml_model import model_strategy

            return model_strategy(inner)
        if head == "ml_refit":
            from workbench.strategies.ml_model import refit_strategy

            return refit_strategy(inner)
        if head == "vote":
            from workbench.strategies.ensemble import vote

            return vote([get_strategy(p, folder) for p in parts])
        heads = ["regime", "vote", "ml_model", "ml_refit"]
        raise ConfigError(f"unknown composite {head!r}{did_you_mean(head, heads)}; "
                          "use regime(<strategy>), vote(<a>,<b>,...), ml_model(<registered model>) or "
                          "ml_refit(<registered model>)")
    if text not in known:
        from workbench.strategies.weights import WEIGHT_STRATEGIES

        if text in {w.name for w in WEIGHT_STRATEGIES}:
            raise ConfigError(f"{text!r} is a weight strategy (target weights across the symbols), not a "
                              f"signal strategy: backtest it with backtest_weights() (`workbench portfolio "
                              f"--strategy {text} --symbols ...`)")
        raise ConfigError(f"unknown strategy {text!r}{did_you_mean(text, known)}; "
                          f"available: {', '.join(sorted(known))}")
    return known[text]


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    parts.append(cur)
    if any(not p for p in parts):
        raise ConfigError(f"empty strategy name in {text!r}")
    return parts
