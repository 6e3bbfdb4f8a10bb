"""The model registry on MLflow: runs, registered versions, the `champion` and `challenger` aliases.

The store is MLflow's own: SQLite inside the data folder by default (``<data>/mlflow/mlflow.db``,
artifacts beside it), or any tracking URL in `WORKBENCH_MLFLOW_URI` (a PostgreSQL URL for a team).
`mlflow ui --backend-store-uri <uri>` opens it. Every alias move is recorded on the version it
points to (tags ``workbench.alias.<alias>.*``: when, why, from which version), so `rollback` can
return the alias to where it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.config import data_dir, redact_url, setting
from workbench.errors import ConfigError, DataError

URI_SETTING = "WORKBENCH_MLFLOW_URI"
EXPERIMENT = "workbench"
CHAMPION, CHALLENGER = "champion", "challenger"
ALIASES = (CHAMPION, CHALLENGER)


def tracking_uri(data: str | Path | None = None) -> str:
    """`WORKBENCH_MLFLOW_URI`, or SQLite in the data folder (created on first use)."""
    given = setting(URI_SETTING)
    if given:
        return given
    root = data_dir(data) / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root.resolve() / 'mlflow.db'}"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """MLflow's INFO lines, its pickle advice and its registration prints stay out of the
    terminal: the workbench says what happened in its own words."""
    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic", "alembic.runtime.migration")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as null, warnings.catch_warnings(), contextlib.redirect_stdout(null), \
                contextlib.redirect_stderr(null):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@dataclass
class ModelVersion:
    """One registered version: its run's metrics, tags and the aliases on it."""

    name: str
    version: int
    run_id: str
    created: pd.Timestamp
    aliases: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def summary(self) -> dict[str, Any]:
        return {"version": self.version, "aliases": ",".join(self.aliases), "created": self.created,
                "model": self.tags.get("workbench.model", ""),
                "cv_auc": self.metrics.get("cv_roc_auc_mean"),
                "cv_accuracy": self.metrics.get("cv_accuracy_mean"),
                "rows": self.metrics.get("rows"), "run": self.run_id[:8]}


class ModelRegistry:
    """Registered models in one MLflow store (see the module docstring)."""

    def __init__(self, uri: str | None = None, *, data: str | Path | None = None) -> None:
        import mlflow
        from mlflow import MlflowClient

        self.uri = uri or tracking_uri(data)
        self._mlflow = mlflow
        _probe(self.uri)
        try:
            with quiet():
                self.client = MlflowClient(self.uri, self.uri)
                self.client.search_registered_models(max_results=1)  # opens (and creates) the store
        except Exception as exc:  # MLflow raises many kinds for a store it cannot open
            first = str(exc).splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"cannot open the MLflow store {redact_url(self.uri)}: {first}; "
                              f"check {URI_SETTING} (or unset it for SQLite in the data folder)") from None

    def __repr__(self) -> str:
        return f"ModelRegistry({self.uri!r})"

    @classmethod
    def existing(cls, data: str | Path | None = None) -> ModelRegistry:
        """The registry only if its store already exists (`WORKBENCH_MLFLOW_URI`, or SQLite in the data
        folder): a reader such as a dashboard must not create an empty store where none was."""
        if not setting(URI_SETTING):
            db = data_dir(data) / "mlflow" / "mlflow.db"
            if not db.is_file():
                raise ConfigError(f"no model registry yet (no {db}): train a model with `workbench model "
                                  "train <train.yaml>`")
        return cls(data=data)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """MLflow's process-wide tracking and registry URIs set to this store meanwhile (a
        ``models:/`` URI resolves through them, not through a client), then restored."""
        mlflow = self._mlflow
        before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(before[0])
            mlflow.set_registry_uri(before[1])

    def experiment_id(self) -> str:
        """The workbench's experiment, created with its artifacts beside a SQLite store."""
        with quiet():
            exp = self.client.get_experiment_by_name(EXPERIMENT)
            if exp is not None:
                return str(exp.experiment_id)
            location = None
            if self.uri.startswith("sqlite:///"):
                location = Path(self.uri[len("sqlite:///"):]).parent.joinpath("artifacts").as_uri()
            return str(self.client.create_experiment(EXPERIMENT, artifact_location=location))

    # ------------------------------------------------------------------ reading
    def models(self) -> pd.DataFrame:
        """One row per registered model: its latest version and where the aliases point."""
        with quiet():
            found = self.client.search_registered_models()
        rows = []
        for m in found:
            versions = self.versions(m.name)
            rows.append({"model": m.name, "versions": len(versions),
                         "latest": max((v.version for v in versions), default=None),
                         CHAMPION: (m.aliases or {}).get(CHAMPION),
                         CHALLENGER: (m.aliases or {}).get(CHALLENGER)})
        return pd.DataFrame(rows, columns=["model", "versions", "latest", CHAMPION, CHALLENGER])

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of `name`, oldest first (a one-line error if there is no such model)."""
        self._require(name)
        with quiet():
            found = self.client.search_model_versions(f"name='{name}'")
            # a searched version does not carry its aliases: the registered model has them
            on: dict[str, list[str]] = {}
            for alias, ver in (self.client.get_registered_model(name).aliases or {}).items():
                on.setdefault(str(ver), []).append(alias)
            out = []
            for mv in found:
                run = self.client.get_run(mv.run_id) if mv.run_id else None
                out.append(ModelVersion(
                    name, int(mv.version), mv.run_id or "",
                    pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC"),
                    sorted(on.get(str(mv.version), [])), dict(run.data.metrics) if run else {},
                    {**(dict(run.data.tags) if run else {}), **dict(mv.tags or {})}, mv.source or ""))
        return sorted(out, key=lambda v: v.version)

    def get(self, name: str, ref: int | str) -> ModelVersion:
        """Version `ref` of `name`: a number or an alias (``champion``)."""
        for v in self.versions(name):
            if (isinstance(ref, int) or str(ref).isdigit()) and v.version == int(ref):
                return v
            if isinstance(ref, str) and ref in v.aliases:
                return v
        known = ", ".join(str(v.version) for v in self.versions(name))
        what = (f"model {name} has no version {ref}" if isinstance(ref, int) or str(ref).isdigit()
                else f"no version of model {name} is the {ref}")
        raise ConfigError(f"{what} (versions: {known}); see `workbench model show {name}`")

    def load(self, name: str, ref: int | str = CHAMPION) -> tuple[Any, dict[str, Any]]:
        """The fitted model of a version and its lineage (feature set, label, data, code)."""
        v = self.get(name, ref)
        with quiet(), self.active():
            model = self._mlflow.sklearn.load_model(f"models:/{name}/{v.version}")
        lineage = json.loads(v.tags.get("workbench.lineage", "{}"))
        return model, {**lineage, "name": name, "version": v.version, "run_id": v.run_id}

    def history(self, name: str) -> pd.DataFrame:
        """Every version with its validation, where the aliases moved and why, and what a retrain
        decided about it (newest first): what a model monitor shows."""
        rows = []
        for v in self.versions(name):
            retrain = json.loads(v.tags.get("workbench.retrain", "{}"))
            moves = [f"{a} ({v.tags.get(f'workbench.alias.{a}.at', '')[:16]}): "
                     f"{v.tags.get(f'workbench.alias.{a}.reason', '')}"
                     for a in ALIASES if f"workbench.alias.{a}.reason" in v.tags]
            rows.append({**v.summary(), "trained_until": json.loads(v.tags.get("workbench.lineage", "{}"))
                         .get("end", ""), "alias_moves": "; ".join(moves),
                         "retrain": retrain.get("reason", "")})
        return pd.DataFrame(rows).iloc[::-1].reset_index(drop=True)

    # ------------------------------------------------------------------ aliases
    def promote(self, name: str, version: int, *, alias: str = CHAMPION, reason: str) -> ModelVersion:
        """Point `alias` at `version`, recording why and where it pointed before."""
        if alias not in ALIASES:
            raise ConfigError(f"unknown alias {alias!r}: use {' or '.join(ALIASES)}")
        if not reason.strip():
            raise ConfigError("say why: --reason 'beats the champion on purged AUC'")
        target = self.get(name, int(version))
        previous = self._alias_version(name, alias)
        if previous == target.version:
            raise ConfigError(f"{name} version {target.version} is already the {alias}")
        now = pd.Timestamp.now(tz="UTC").isoformat()
        with quiet():
            self.client.set_registered_model_alias(name, alias, str(target.version))
            moved = (("from", "" if previous is None else str(previous)), ("reason", reason.strip()),
                     ("at", now))
            for key, value in moved:
                self.client.set_model_version_tag(name, str(target.version), f"workbench.alias.{alias}.{key}",
                                                  value)
            if alias == CHAMPION and CHALLENGER in target.aliases:
                self.client.delete_registered_model_alias(name, CHALLENGER)
        return self.get(name, target.version)

    def rollback(self, name: str, *, alias: str = CHAMPION, reason: str) -> ModelVersion:
        """Return `alias` to the version it pointed at before its last move."""
        current = self._alias_version(name, alias)
        if current is None:
            raise ConfigError(f"model {name} has no {alias} to roll back")
        before = self.get(name, current).tags.get(f"workbench.alias.{alias}.from", "")
        if not before:
            raise ConfigError(f"{name} version {current} is the first {alias}: nothing to roll back to")
        return self.promote(name, int(before), alias=alias, reason=f"rollback: {reason}")

    def _alias_version(self, name: str, alias: str) -> int | None:
        for v in self.versions(name):
            if alias in v.aliases:
                return v.version
        return None

    def _require(self, name: str) -> None:
        with quiet():
            names = [m.name for m in self.client.search_registered_models()]
        if name not in names:
            raise ConfigError(f"no registered model {name!r} in {self.uri} (models: "
                              f"{', '.join(sorted(names)) or 'none'}); train one with "
                              "`workbench model train`")


def _probe(uri: str) -> None:
    """Connect once to a database URL (PostgreSQL, MySQL) before MLflow does: MLflow retries a
    store it cannot reach for more than a minute before it says why."""
    if "://" not in uri or uri.split(":", 1)[0].split("+")[0] not in ("postgresql", "mysql", "mssql"):
        return
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": 5}
                                          if uri.startswith("postgresql") else {})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # a missing driver, a refused connection, a bad password: one line each
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot open the MLflow store {redact_url(uri)}: {text}; check the host, port and "
                          f"credentials in {URI_SETTING}") from None


def require_finite(values: dict[str, float]) -> dict[str, float]:
    """Metrics as MLflow takes them: finite floats only (a NaN metric is a bug upstream)."""
    bad = [k for k, v in values.items() if not pd.notna(v)]
    if bad:
        raise DataError(f"metric {bad[0]} is not a number; the folds may be too small for it")
    return {k: float(v) for k, v in values.items()}


__all__ = ["ALIASES", "CHALLENGER", "CHAMPION", "URI_SETTING", "ModelRegistry", "ModelVersion", "quiet",
           "tracking_uri"]
