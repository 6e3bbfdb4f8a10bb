"""`workbench model`: train a model with purged validation and manage its registered versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from workbench.cli.common import _kv_table, _lake, _progress, _State, out, print_frame

model_app = typer.Typer(no_args_is_help=True, help="Train models with purged validation; list, show, promote "
                        "and roll back their registered versions (MLflow: SQLite in the data folder, or "
                        "WORKBENCH_MLFLOW_URI).")


def _registry() -> Any:
    from workbench.models.registry import ModelRegistry

    return ModelRegistry(data=_State.data_dir)


@model_app.command("train")
def train_cmd(config: Annotated[Path, typer.Argument(help="A train.yaml (see pipelines/models/).")]) -> None:
    """Build features and labels, validate with purged CV, fit, log to MLflow and register a version."""
    from workbench.models.training import load_train_spec, train_model

    spec = load_train_spec(config)
    registry = _registry()
    with _progress("purged CV", hide_on_error=True) as prog:
        seen = [0]

        def advance(done: int, total: int) -> None:
            prog("folds", done - seen[0], total)
            seen[0] = done

        result = train_model(_lake(), spec, registry=registry, progress=advance)
    out.print(result.summary(), markup=False)
    if result.importance is not None:
        print_frame(result.importance.reset_index(names="feature"),
                    title="feature importance on the purged folds (log loss added / saved)")
    out.print(f"MLflow run {result.run_id} in {registry.uri}", markup=False)


@model_app.command("retrain")
def retrain_cmd(config: Annotated[Path, typer.Argument(help="The model's train.yaml (pipelines/models/).")],
                gates: Annotated[Path | None, typer.Option(
                    help="Model gates YAML (default: the built-in ones, as pipelines/model_gates.yaml)."
                )] = None,
                start: Annotated[str | None, typer.Option(help="Train from (default: the spec's).")] = None,
                end: Annotated[str | None, typer.Option(help="Train until, exclusive (default: the spec's).")
                               ] = None,
                required: Annotated[bool, typer.Option(
                    help="Exit 1 when the challenger is refused (default: a refusal is a verdict).")] = False,
                ) -> dict[str, Any]:
    """Train a challenger on the latest data and make it the champion only if it beats the champion's
    recipe on the same purged folds (model gates); the verdicts are recorded on its version."""
    from workbench.cli.promote import _verdict_table
    from workbench.models.training import load_train_spec
    from workbench.promote.models import retrain

    spec = load_train_spec(config)
    registry = _registry()
    with _progress("purged CV", hide_on_error=True) as prog:
        seen = [0]

        def advance(done: int, total: int) -> None:
            prog("folds", max(done - seen[0], 0), total)
            seen[0] = done

        res = retrain(_lake(), spec, gates=gates, registry=registry, start=start, end=end, progress=advance)
    out.print(_verdict_table(res.verdicts, f"model gates for {res.name} version {res.version}"))
    out.print(res.summary(), markup=False)
    if required and not res.promoted:
        raise typer.Exit(1)
    return {"version": res.version, "champion": res.champion, "promoted": res.promoted, "reason": res.reason}


@model_app.command("ls")
def ls_cmd() -> None:
    """Every registered model, its versions and where champion and challenger point."""
    table = _registry().models()
    if table.empty:
        out.print("no registered model yet: train one with `workbench model train <train.yaml>`")
        return
    print_frame(table)


@model_app.command("show")
def show_cmd(name: Annotated[str, typer.Argument(help="The registered model.")],
             version: Annotated[str | None, typer.Option(help="A version number or alias: its lineage in "
                                                         "full.")] = None) -> None:
    """The versions of a model with their validation; with --version, one version's lineage."""
    registry = _registry()
    if version is None:
        print_frame(pd.DataFrame([v.summary() for v in registry.versions(name)]), title=name)
        return
    v = registry.get(name, version)
    lineage = json.loads(v.tags.get("workbench.lineage", "{}"))
    rows = [("version", str(v.version)), ("aliases", ", ".join(v.aliases) or "-"), ("run", v.run_id),
            ("created", str(v.created)), ("model", str(lineage.get("model"))),
            ("symbols", ", ".join(lineage.get("symbols", []))), ("timeframe", str(lineage.get("timeframe"))),
            ("trained on", f"{lineage.get('start')} .. {lineage.get('end')}"),
            ("features", ", ".join(lineage.get("features", []))),
            ("feature set key", str(lineage.get("feature_set_key"))),
            ("label", json.dumps(lineage.get("label"), sort_keys=True)),
            ("data fingerprint", str(lineage.get("data_fingerprint"))),
            ("code version", str(lineage.get("code_version")))]
    rows += [(k, f"{val:.4f}") for k, val in sorted(v.metrics.items()) if k.startswith("cv_")]
    for alias in ("champion", "challenger"):
        if f"workbench.alias.{alias}.reason" in v.tags:
            rows.append((f"{alias} since", f"{v.tags[f'workbench.alias.{alias}.at']}: "
                         f"{v.tags[f'workbench.alias.{alias}.reason']}"))
    out.print(_kv_table(rows, title=f"{name} version {v.version}"))


@model_app.command("promote")
def promote_cmd(name: Annotated[str, typer.Argument(help="The registered model.")],
                version: Annotated[int, typer.Argument(help="The version to make champion.")],
                reason: Annotated[str, typer.Option(help="Why (recorded on the version).")],
                alias: Annotated[str, typer.Option(help="champion or challenger.")] = "champion") -> None:
    """Point the champion (or challenger) alias at a version, recording why."""
    v = _registry().promote(name, version, alias=alias, reason=reason)
    out.print(f"{name} version {v.version} is now the {alias}", markup=False)


@model_app.command("rollback")
def rollback_cmd(name: Annotated[str, typer.Argument(help="The registered model.")],
                 reason: Annotated[str, typer.Option(help="Why (recorded on the version).")],
                 alias: Annotated[str, typer.Option(help="champion or challenger.")] = "champion") -> None:
    """Return the alias to the version it pointed at before its last move."""
    v = _registry().rollback(name, alias=alias, reason=reason)
    out.print(f"{name} version {v.version} is the {alias} again", markup=False)


@model_app.command("drift")
def drift_cmd(name: Annotated[str, typer.Argument(help="The registered model.")],
              version: Annotated[str, typer.Option(help="A version number or alias.")] = "champion",
              since: Annotated[str | None, typer.Option(help="Recent window start (default: the end of the "
                                                        "version's training window).")] = None,
              until: Annotated[str | None, typer.Option(help="Recent window end (default: the last bar).")
                               ] = None) -> None:
    """PSI and KS of each feature and of the prediction, recent bars against the training window,
    and the live hit rate against the validated one; logged to MLflow as a drift run."""
    from workbench.models.drift import model_drift

    report = model_drift(_lake(), _registry(), name, version, since=since, until=until)
    print_frame(report.table, title=f"{name} version {report.version}: drift")
    out.print(report.summary(), markup=False)


@model_app.command("tune")
def tune_cmd(config: Annotated[Path, typer.Argument(help="A train.yaml (see pipelines/models/).")],
             trials: Annotated[int, typer.Option(help="Finished trials the study should have.")] = 20,
             storage: Annotated[str | None, typer.Option(
                 help="A journal file, sqlite:///... or postgresql://... (default: data/optimize/).")] = None,
             study: Annotated[str | None, typer.Option(help="Study name (default: model-<name>).")] = None,
             space: Annotated[str | None, typer.Option(help="Parameters to search, e.g. 'num_leaves=7:63,"
                                                       "learning_rate=0.01:0.2:log' (default: the "
                                                       "model's own space).")] = None,
             train: Annotated[bool, typer.Option("--train", help="Then train and register the best "
                                                 "parameters as a new version.")] = False) -> None:
    """Search the model's hyperparameters on the purged CV log loss; resumable, shareable studies."""
    from workbench.models.training import load_train_spec, train_model
    from workbench.optimize.model_search import search_model

    spec = load_train_spec(config)
    with _progress("trials", hide_on_error=True) as prog:
        seen = [0]

        def advance(done: int, total: int) -> None:
            prog(spec.name, done - seen[0], total)
            seen[0] = done

        result = search_model(_lake(), spec, trials=trials, storage=storage, study=study,
                              space=_parse_space(space) if space else None, progress=advance)
    out.print(result.summary(), markup=False)
    if train:
        best = spec.model_copy(update={"params": {**spec.params, **result.best_params}})
        trained = train_model(_lake(), best, registry=_registry())
        out.print(trained.summary(), markup=False)


def _parse_space(text: str) -> dict[str, list[Any]]:
    from workbench.errors import ConfigError

    out: dict[str, list[Any]] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, rest = part.partition("=")
        bits = rest.split(":")
        try:
            low, high = (float(b) if "." in b or "e" in b else int(b) for b in bits[:2])
        except ValueError:
            raise ConfigError(f"--space {part!r}: write name=low:high or name=low:high:log") from None
        if len(bits) not in (2, 3) or (len(bits) == 3 and bits[2] != "log"):
            raise ConfigError(f"--space {part!r}: write name=low:high or name=low:high:log")
        out[name.strip()] = [low, high, *bits[2:]]
    return out
