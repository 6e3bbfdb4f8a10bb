"""A feature set as a small spec: which features, with which parameters and normalisation.

In YAML or Python::

    features:
      - {name: ret, params: {n: 5}}
      - {name: vol, params: {n: 20}, norm: zscore, norm_window: 500}
      - rsi(14)|rank(250)            # the same in one string

`FeatureSet.key()` hashes the resolved spec (every parameter, defaults included): the cache and
every model record it, so two specs that compute the same columns share one key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, field_validator

from workbench.config import ConfigModel, validate
from workbench.errors import ConfigError
from workbench.features.library import get_feature

Norm = Literal["zscore", "rank"]
_SHORT = re.compile(r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\((?P<args>[^)]*)\))?\s*"
                    r"(?:\|\s*(?P<norm>zscore|rank)\s*\(\s*(?P<window>\d+)\s*\))?\s*$")


class FeatureItem(ConfigModel):
    """One feature of a set: its registered name, parameters, optional causal normalisation."""

    name: str
    params: dict[str, int | float] = Field(default_factory=dict)
    norm: Norm | None = None  # rolling z-score or rank over the last `norm_window` bars
    norm_window: int = Field(default=250, ge=2)
    column: str | None = None  # the matrix column; default name_param..._norm

    def model_post_init(self, context: Any) -> None:
        if "norm_window" in self.model_fields_set and self.norm is None:
            raise ConfigError(f"feature {self.name}: norm_window is set but norm is not (it would do "
                              "nothing); add norm: zscore or norm: rank, or drop norm_window")

    def resolved(self) -> dict[str, Any]:
        """Name, every parameter (defaults in) and normalisation: what the values depend on."""
        feature = get_feature(self.name)
        out: dict[str, Any] = {"name": self.name, "params": feature.resolve(self.params)}
        if self.norm:
            out["norm"] = {"kind": self.norm, "window": self.norm_window}
        return out

    def column_name(self) -> str:
        if self.column:
            return self.column
        r = self.resolved()
        parts = [self.name, *(_num(v) for v in r["params"].values())]
        if self.norm:
            parts.append(f"{'z' if self.norm == 'zscore' else 'r'}{self.norm_window}")
        return "_".join(parts)

    def warmup(self) -> int:
        """Bars before this feature has a value (its normalisation window included)."""
        feature = get_feature(self.name)
        return feature.warmup(feature.resolve(self.params)) + (self.norm_window if self.norm else 0)


def _num(v: int | float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v).replace(".", "p")


class FeatureSet(ConfigModel):
    """A named list of features (see the module docstring)."""

    name: str = "features"
    features: list[FeatureItem] = Field(min_length=1)

    @field_validator("features", mode="before")
    @classmethod
    def _short_forms(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [parse_short(v) if isinstance(v, str) else v for v in value]
        return value

    def model_post_init(self, context: Any) -> None:
        names = [f.column_name() for f in self.features]  # also resolves: unknown names fail here
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"feature set {self.name}: column {twice[0]} comes twice; drop one or "
                              "give it another column name")

    @classmethod
    def of(cls, *features: str | FeatureItem | dict[str, Any], name: str = "features") -> FeatureSet:
        """A set from short strings (``"vol(20)|zscore(500)"``), items or mappings."""
        return validate(cls, {"name": name, "features": [f.model_dump(exclude_unset=True)
                                                         if isinstance(f, FeatureItem) else f
                                                         for f in features]}, where="feature set")

    @classmethod
    def from_resolved(cls, items: Sequence[dict[str, Any]], name: str = "features") -> FeatureSet:
        """The set a `resolved()` list describes (what a model's lineage records)."""
        features = []
        for r in items:
            item: dict[str, Any] = {"name": r["name"], "params": dict(r.get("params", {}))}
            if r.get("norm"):
                item.update(norm=r["norm"]["kind"], norm_window=r["norm"]["window"])
            if r.get("column"):
                item["column"] = r["column"]
            features.append(item)
        return validate(cls, {"name": name, "features": features}, where="feature set")

    @property
    def columns(self) -> list[str]:
        return [f.column_name() for f in self.features]

    @property
    def needs(self) -> set[str]:
        """The bar columns the set reads."""
        return {c for f in self.features for c in get_feature(f.name).needs}

    def warmup(self) -> int:
        """Bars before every feature of the set has a value."""
        return max(f.warmup() for f in self.features)

    def resolved(self) -> list[dict[str, Any]]:
        return [{**f.resolved(), "column": f.column_name()} for f in self.features]

    def key(self) -> str:
        """sha256 of the resolved spec (name left out: it changes no value)."""
        blob = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def parse_short(text: str) -> dict[str, Any]:
    """``"name(a, b=2)|zscore(250)"`` -> a FeatureItem mapping; positional arguments fill the
    feature's parameters in order."""
    m = _SHORT.match(text)
    if not m:
        raise ConfigError(f"cannot read feature {text!r}: write name(params)|norm(window), e.g. "
                          "'vol(20)|zscore(500)' or 'rsi(n=14)'")
    feature = get_feature(m["name"])
    params: dict[str, int | float] = {}
    order = list(feature.params)
    for k, arg in enumerate(a.strip() for a in (m["args"] or "").split(",") if a.strip()):
        key, _, raw = arg.rpartition("=")
        key = key.strip()
        if not key:
            if k >= len(order):
                raise ConfigError(f"feature {text!r}: {feature.name} takes {len(order)} parameter(s) "
                                  f"({', '.join(order) or 'none'})")
            key = order[k]
        try:
            num = float(raw)
        except ValueError:
            raise ConfigError(f"feature {text!r}: {key} must be a number, got {raw.strip()!r}") from None
        params[key] = int(num) if num.is_integer() else num
    out: dict[str, Any] = {"name": feature.name, "params": params}
    if m["norm"]:
        out.update(norm=m["norm"], norm_window=int(m["window"]))
    return out


def as_feature_set(spec: FeatureSet | Sequence[str | dict[str, Any]] | dict[str, Any]) -> FeatureSet:
    """A FeatureSet from itself, a list of features, or a mapping (a YAML file's content)."""
    if isinstance(spec, FeatureSet):
        return spec
    if isinstance(spec, dict):
        return validate(FeatureSet, spec, where="feature set")
    return FeatureSet.of(*spec)


__all__ = ["FeatureItem", "FeatureSet", "as_feature_set", "parse_short"]
