"""Where walk-forward studies live, and how workers share their trials exactly once.

A run's trial budget is created up front: each fold's study holds ``n_trials`` WAITING trials (Optuna
placeholders with no fixed parameters). A worker *claims* one by moving it WAITING -> RUNNING, which
every Optuna storage does atomically, then lets the sampler draw its parameters. Workers never call
``Study.ask`` (it creates a new trial when the queue is empty), so however many join, each fold ends
with exactly ``n_trials`` finished trials and no trial is evaluated twice.

A worker that dies leaves its trial RUNNING. `recover_stale` finishes such trials as FAIL (reason
recorded) and puts a fresh placeholder back, so the budget still completes after a restart.
Storage URLs: a journal file (default, ``data/optimize/<run>.journal``), ``sqlite:///path`` or
``postgresql://user@host:port/db`` (Optuna's RDB storage; use it to spread workers over machines).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import psutil
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from workbench.config import data_dir, redact_url
from workbench.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
CLAIM_GRACE = 5.0  # seconds between a claim and the claimer's name being written, at most
_WORKER = f"{socket.gethostname()}:{os.getpid()}"


redact = redact_url  # the storage URL with any password replaced, safe to print and record


def default_storage(run_id: str) -> str:
    """The journal file a run uses when no storage is given."""
    return str(data_dir() / "optimize" / f"{run_id}.journal")


def open_storage(url: str) -> BaseStorage:
    """An Optuna storage for a journal path, ``sqlite:///...`` or ``postgresql://...``; checked reachable."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if "://" not in url:
        from optuna.storages import JournalStorage

        path = Path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(_JournalFile(str(path)))
        except OSError as exc:
            raise ConfigError(f"cannot open study journal {path}: {exc.strerror}; "
                              "choose a writable --storage path") from None
        except ValueError as exc:  # a damaged record before the last line (a torn tail is repaired)
            raise DataError(f"study journal {path} has an unreadable record ({exc}); nothing was "
                            "changed: start the run again under another --name, or restore the "
                            "file from a backup") from None
    given = url
    scheme = url.split("://", 1)[0]
    if scheme in ("postgresql", "postgres"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3 is the installed driver
    elif not scheme.startswith(("postgresql+", "sqlite")):
        raise ConfigError(f"storage {redact(url)!r} is not supported; use a journal file path, "
                          "sqlite:///path.db or postgresql://user@host:port/db")
    try:
        with _schema_lock(url):
            return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    except Exception as exc:  # SQLAlchemy/driver errors: one line that names the URL and the cause
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        raise ConfigError(f"cannot reach study storage {redact(given)}: {cause}; "
                          "start the database or fix --storage") from None


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """Serialise Optuna's first-use table creation between processes sharing one PostgreSQL database.

    Two processes opening a fresh database at once both run ``CREATE TABLE`` and one fails with a
    duplicate ``pg_type`` key; a session advisory lock makes the second wait and then find the tables.
    SQLite and journal files need nothing: their writers are serialised by file locks.
    """
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _SCHEMA_LOCK_KEY})
    finally:
        engine.dispose()


_SCHEMA_LOCK_KEY = 0x776F726B62656E63  # "workbenc": one key for every workbench process on a database


class _JournalFile(JournalFileBackend):
    """Optuna's journal file, without an fsync per record.

    Optuna syncs every record to disk, which made the disk the bottleneck of an optimisation (seven
    records per trial). A killed process loses nothing without it: its bytes are in the OS's page
    cache; only a machine crash could lose the last records, and then the run resumes from the ones
    before. `sync()` flushes the file to disk, after each fold.
    """

    def __init__(self, file_path: str) -> None:
        super().__init__(file_path)
        self._lock.acquire()
        try:
            self._drop_torn_tail()
        finally:
            self._lock.release()

    def _drop_torn_tail(self) -> None:
        """Cut a half-written last record (a writer killed mid-line), under the lock.

        Optuna skips such a line when reading, but the next record would be appended to it and the
        merged line would make every later read of the study fail; the record never completed, so
        dropping it loses nothing that was written.
        """
        with open(self._file_path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            keep = size
            while keep > 0:  # find the end of the last complete record
                step = min(keep, 1 << 16)
                f.seek(keep - step)
                nl = f.read(step).rfind(b"\n")
                if nl >= 0:
                    keep = keep - step + nl + 1
                    break
                keep -= step
            f.truncate(keep)
            os.fsync(f.fileno())
        log.warning("study journal %s ended in a half-written record (%d bytes, from an interrupted "
                    "write): dropped it; the run resumes from the complete records", self._file_path,
                    size - keep)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        self._lock.acquire()
        try:
            self._drop_torn_tail()  # another worker may have been killed mid-write since we opened
            with open(self._file_path, "ab") as f:
                f.write(text.encode("utf-8"))
        finally:
            self._lock.release()


def sync(storage: BaseStorage) -> None:
    """Flush a journal-file storage to disk (RDB storages commit durably on their own)."""
    backend = getattr(storage, "_backend", None)
    if isinstance(backend, _JournalFile):
        with open(backend._file_path, "rb") as f:
            os.fsync(f.fileno())


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}


def create_fold_study(storage: BaseStorage, name: str, n_trials: int, attrs: dict[str, Any]) -> None:
    """Create a fold's study with its trial budget, or check an existing one has the same settings."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                    load_if_exists=True)
    existing = study.user_attrs.get("settings")
    if existing is not None and existing != attrs["settings"]:
        diff = [k for k in sorted(set(existing) | set(attrs["settings"]))
                if existing.get(k) != attrs["settings"].get(k)]
        raise ConfigError(f"study {name} exists with different settings ({', '.join(diff)}); "
                          "choose another --name, or delete it with `workbench optimize rm`")
    if study.user_attrs.get("ready"):
        return
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    have = len(study.get_trials(deepcopy=False))
    for _ in range(have, n_trials):
        study.enqueue_trial({})
    study.set_user_attr("ready", True)


def study_id(storage: BaseStorage, name: str) -> int:
    """The storage id of a study, with an error that says how to create it."""
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        raise ConfigError(f"no study {name} in this storage; start the run first with "
                          "`workbench optimize walk-forward` (same --storage)") from None


def claim(storage: BaseStorage, sid: int) -> int | None:
    """Move one WAITING trial to RUNNING for this worker; None when the fold's budget is all taken."""
    for t in storage.get_all_trials(sid, deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                _HELD.add(t._trial_id)
                storage.set_trial_system_attr(t._trial_id, "worker", _WORKER)
                return t._trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def _alive(pid: int) -> bool:
    """Whether a local process runs: a crashed worker not yet reaped by its parent is a zombie, not alive."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def recover_stale(storage: BaseStorage, sid: int, stale_after: float) -> int:
    """Finish trials whose worker is gone as FAIL and re-queue their budget; returns how many.

    On this host a worker is gone when its process is; elsewhere when its trial has run longer than
    `stale_after` seconds (trials take milliseconds to seconds, so that means a dead machine).
    """
    n = 0
    now = time.time()
    for t in storage.get_all_trials(sid, deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(t.system_attrs.get("worker", ""))
        host, _, pid = worker.rpartition(":")
        started = t.datetime_start.timestamp() if t.datetime_start else now
        # a worker names itself right after claiming: no name for a while means it died in between
        dead = now - started > (stale_after if worker else min(stale_after, CLAIM_GRACE))
        if host == socket.gethostname() and pid.isdigit():
            p = int(pid)
            dead = dead or (t._trial_id not in _HELD if p == os.getpid() else not _alive(p))
        if not dead:
            continue
        try:
            storage.set_trial_system_attr(t._trial_id, "failed_reason", f"worker {worker or '?'} stopped")
            storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker recovered it first
        storage.create_new_trial(sid, template_trial=optuna.trial.create_trial(
            state=TrialState.WAITING, system_attrs={"fixed_params": {}}))
        n += 1
    return n


_HELD: set[int] = set()


def release(trial_id: int) -> None:
    """This process has finished the trial it claimed (until then recovery leaves it alone)."""
    _HELD.discard(trial_id)


def reset_worker_identity() -> None:
    """Call in a forked child: its trials are claimed under its own pid."""
    global _WORKER
    _WORKER = f"{socket.gethostname()}:{os.getpid()}"
    _HELD.clear()


def delete_run_studies(storage: BaseStorage, run_id: str) -> int:
    """Delete every fold study of a run; returns how many there were."""
    names = [s.study_name for s in storage.get_all_studies() if s.study_name.startswith(f"{run_id}:fold")]
    for name in names:
        optuna.delete_study(study_name=name, storage=storage)
    return len(names)
