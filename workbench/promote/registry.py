"""The registry of promoted strategies: numbered, immutable versions per name, and which one is current.

Layout under ``<data dir>/registry`` (or the root given)::

    <name>/v1.json, v2.json, ...   one Artifact per version, never rewritten
    <name>/CURRENT                 the current version number (text)
    <name>/history.jsonl           one JSON line per promotion or rollback: time, action, version, reason
    <name>/.lock                   held while a promotion or rollback updates the name

Every file is written to a temporary file, fsynced and renamed (or hard-linked) into place, so a reader
never sees half of one. A version number is taken by exclusive creation of its file (a hard link, which
fails if the name exists), so two promotions can never write the same version, even without the lock.
"""

from __future__ import annotations

import builtins
import contextlib
import getpass
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.config import data_dir
from workbench.errors import ConfigError, DataError, WorkbenchError, did_you_mean
from workbench.files import atomic_write, exclusive_write, file_lock
from workbench.promote.artifact import Artifact, jsonable

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_VERSION_FILE = re.compile(r"^v(\d+)\.json$")
_REF = re.compile(r"^(?P<name>[^@]+)(?:@v?(?P<version>\d+))?$")


def check_name(name: str) -> str:
    """A registry name: letters, digits, ``_ . + -``, starting with a letter or digit."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"artifact name {name!r} is not valid; use letters, digits and _ . + - "
                          "(e.g. sma_cross-btc_usdt-1h)")
    return name


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists as {dotted.path: leaf}; lists of named rows are keyed by name or fold."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        if not value and prefix:
            out[prefix] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            key = v.get("name", v.get("fold", i))
            out.update(_flatten(v, f"{prefix}[{key}]"))
    else:
        out[prefix] = value
    return out


class Registry:
    """Promoted strategy versions on disk (see the module docstring); `root` defaults to
    ``<data dir>/registry``."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser().resolve() if root is not None else data_dir() / "registry"

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # ------------------------------------------------------------------------- reading
    def names(self) -> list[str]:
        """Every name that has at least one version."""
        if not self.root.is_dir():
            return []
        return sorted(d.name for d in self.root.iterdir() if d.is_dir() and self.versions(d.name))

    def versions(self, name: str) -> list[int]:
        """The version numbers of `name`, ascending (empty when it has none)."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = (_VERSION_FILE.match(p.name) for p in folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def current(self, name: str) -> int | None:
        """The current version of `name` (None when it has none)."""
        try:
            text = (self.root / name / "CURRENT").read_text().strip()
        except FileNotFoundError:
            return None
        if not text.isdigit():
            raise DataError(f"{self.root / name / 'CURRENT'} holds {text!r}, not a version number; "
                            f"fix it with `workbench promote rollback {name} --to N --reason ...`")
        return int(text)

    def path(self, name: str, version: int) -> Path:
        return self.root / name / f"v{version}.json"

    def get(self, ref: str | Path) -> Artifact:
        """An artifact by ``name`` (its current version), ``name@3`` / ``name@v3``, or a .json path."""
        text = str(ref).strip()
        if isinstance(ref, Path) or text.endswith(".json") or os.sep in text:
            return Artifact.read(text)
        m = _REF.match(text)
        if not m:
            raise ConfigError(f"cannot read artifact reference {text!r}; write name, name@3 or a path to "
                              "a .json file")
        name = m.group("name")
        versions = self._known(name)
        if m.group("version") is None:
            version = self.current(name)
            if version is None:
                raise ConfigError(f"{name} has no current version (versions {self._show(versions)}); "
                                  f"pick one with {name}@N")
        else:
            version = int(m.group("version"))
            if version not in versions:
                cur = self.current(name)
                raise ConfigError(f"{name} has no version {version}; it has {self._show(versions)}"
                                  f"{f' (current v{cur})' if cur else ''}")
        return Artifact.read(self.path(name, version))

    def _known(self, name: str) -> list[int]:
        versions = self.versions(name)
        if versions:
            return versions
        names = self.names()
        if not names:
            raise ConfigError(f"no promoted strategy {name!r}: the registry {self.root} is empty; "
                              "promote a run with `workbench promote <run-id>`")
        raise ConfigError(f"no promoted strategy {name!r}{did_you_mean(name, names)}; promoted: "
                          f"{', '.join(names)}")

    @staticmethod
    def _show(versions: list[int]) -> str:
        return ", ".join(f"v{v}" for v in versions) or "none"

    def history(self, name: str) -> list[dict[str, Any]]:
        """The promotions and rollbacks of `name`, oldest first."""
        self._known(name)
        path = self.root / name / "history.jsonl"
        if not path.exists():
            return []
        rows = []
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise DataError(f"{path} line {i} is not JSON; repair or remove that line") from None
        return rows

    def latest(self) -> Artifact:
        """The current version of the most recently promoted name (what a report shows by default)."""
        best = None
        for name in self.names():
            version = self.current(name)
            if version is None:
                continue
            art = self.get(f"{name}@{version}")
            if best is None or art.created_at > best.created_at:
                best = art
        if best is None:
            raise ConfigError(f"the registry {self.root} holds no artifact yet; promote a walk-forward run "
                              "first (workbench promote <run-id>)")
        return best

    def promoted_from(self, run_id: str) -> Artifact | None:
        """The artifact promoted from walk-forward run `run_id`: its current version if one is, else its
        most recently created; None when the run was never promoted."""
        found = [a for a in (Artifact.read(self.path(n, v)) for n in self.names() for v in self.versions(n))
                 if a.run_id == run_id]
        return max(found, key=lambda a: (self.current(a.name) == a.version, a.created_at), default=None)

    def list(self) -> pd.DataFrame:
        """One row per version of every name: current flag, strategy, run, when, forced, headline figures."""
        rows = []
        for name in self.names():
            cur = self.current(name)
            for v in self.versions(name):
                row: dict[str, Any] = {"name": name, "version": v, "current": v == cur}
                try:
                    a = Artifact.read(self.path(name, v))
                except WorkbenchError as exc:
                    log.warning("skipping unreadable artifact %s: %s", self.path(name, v), exc)
                    rows.append({**row, "strategy": "(unreadable)"})
                    continue
                values = a.evidence.get("values", {})
                rows.append({**row, "strategy": a.strategy, "symbols": ",".join(a.symbols),
                             "timeframe": a.timeframe, "run_id": a.run_id, "created_at": a.created_at,
                             "forced": a.forced,
                             "gates": f"{len(a.gates) - len(a.failed_gates)}/{len(a.gates)}",
                             "oos_sharpe": values.get("oos_sharpe"),
                             "deflated_sharpe": values.get("deflated_sharpe"), "pbo": values.get("pbo")})
        cols = ["name", "version", "current", "strategy", "symbols", "timeframe", "run_id", "created_at",
                "forced", "gates", "oos_sharpe", "deflated_sharpe", "pbo"]
        return pd.DataFrame(rows, columns=cols)

    # builtins.list: `list` names the method above inside this class
    def diff(self, ref_a: str | Path, ref_b: str | Path) -> builtins.list[tuple[str, Any, Any]]:
        """Every field that differs between two artifacts, as (dotted path, value in a, value in b)."""
        a, b = _flatten(self.get(ref_a).to_dict()), _flatten(self.get(ref_b).to_dict())
        missing = object()
        out = []
        for key in dict.fromkeys([*a, *b]):
            va, vb = a.get(key, missing), b.get(key, missing)
            if va != vb:
                out.append((key, None if va is missing else va, None if vb is missing else vb))
        return out

    # ------------------------------------------------------------------------- writing
    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        folder = self.root / check_name(name)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            lock = file_lock(folder / ".lock")
            lock.acquire()
        except OSError as exc:
            raise ConfigError(f"cannot write the registry at {self.root}: {exc.strerror or exc}; check "
                              "that the data folder is writable") from None
        try:
            yield folder
        finally:
            lock.release()

    def _log(self, folder: Path, entry: dict[str, Any]) -> None:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = None
        line = json.dumps(jsonable({"time": _now(), **entry, "user": user})) + "\n"
        with open(folder / "history.jsonl", "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def promote(self, artifact: Artifact, *, reason: str | None = None) -> tuple[Artifact, bool]:
        """Store `artifact` as the next version of its name and make it current.

        Returns the stored artifact and whether a version was written: when the current version already
        has the same run, parameters and verdicts, nothing is written and that version is returned.
        """
        with self._locked(artifact.name) as folder:
            cur = self.current(artifact.name)
            if cur is not None and self.path(artifact.name, cur).exists():
                existing = Artifact.read(self.path(artifact.name, cur))
                if existing.identity() == artifact.identity():
                    log.info("%s already holds run %s with the same parameters and verdicts",
                             existing.ref, artifact.run_id)
                    return existing, False
            n = max(self.versions(artifact.name), default=0) + 1
            while True:
                stored = replace(artifact, version=n)
                path = self.path(artifact.name, n)
                try:
                    if exclusive_write(path, stored.to_json()):
                        break
                except OSError as exc:
                    raise ConfigError(f"cannot write {path}: {exc.strerror or exc}; check that the data "
                                      "folder is writable") from None
                n += 1  # taken by a writer that did not hold the lock
            atomic_write(folder / "CURRENT", f"{n}\n")
            self._log(folder, {"action": "promote", "version": n, "previous": cur, "run_id": stored.run_id,
                               "forced": stored.forced, "reason": reason})
            log.info("promoted %s (run %s)", stored.ref, stored.run_id)
            return Artifact.from_dict(json.loads(stored.to_json()), path=path), True  # as read back

    def rollback(self, name: str, version: int | None = None, *, reason: str) -> Artifact:
        """Make `version` (default: the highest version below the current one) current, and log why."""
        if not reason or not str(reason).strip():
            raise ConfigError("a rollback needs a reason: --reason '...'")
        self._known(name)
        with self._locked(name) as folder:
            versions = self.versions(name)
            cur = self.current(name)
            if version is None:
                lower = [v for v in versions if cur is None or v < cur]
                if not lower:
                    raise ConfigError(f"{name} has nothing to roll back to: v{cur} is its first version; "
                                      "pick a version with --to N")
                version = lower[-1]
            if version not in versions:
                raise ConfigError(f"{name} has no version {version}; it has {self._show(versions)}"
                                  f"{f' (current v{cur})' if cur else ''}")
            if version == cur:
                raise ConfigError(f"v{version} is already the current version of {name}; pick another "
                                  f"with --to N ({self._show(versions)})")
            target = Artifact.read(self.path(name, version))
            atomic_write(folder / "CURRENT", f"{version}\n")
            self._log(folder, {"action": "rollback", "version": version, "previous": cur,
                               "run_id": target.run_id, "reason": str(reason).strip()})
            log.info("rolled %s back from v%s to v%d", name, cur, version)
        return target


def load_artifact(ref: str | Path, registry: Registry | str | Path | None = None) -> Artifact:
    """An artifact by ``name`` (current), ``name@3`` / ``name@v3``, or a path to its .json file.

    It lives with the registry, not with `promote`, so the paper runner can read artifacts without
    importing the promotion machinery (which reads walk-forward runs from `workbench.optimize`).
    """
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    return reg.get(ref)
