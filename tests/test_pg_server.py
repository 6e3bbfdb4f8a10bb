"""The session's PostgreSQL server (tests/pg_server.py) serves psycopg and concurrent Optuna workers."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import optuna
import psycopg
import pytest
from pg_server import fresh_database
from sqlalchemy.engine import make_url

pytestmark = [pytest.mark.network, pytest.mark.timeout(120)]

# One Optuna worker process: joins the study, waits (inside its first trial, so that trial is RUNNING
# in the database) until the other worker has a trial too, so both provably run at the same time.
WORKER = """
import os, sys, time
import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
url, study_name = sys.argv[1], sys.argv[2]
study = optuna.load_study(study_name=study_name, storage=optuna.storages.RDBStorage(url))
pid = os.getpid()

def objective(trial):
    trial.set_user_attr("pid", pid)
    if trial.number == min(t.number for t in study.get_trials(deepcopy=False)
                           if t.user_attrs.get("pid") == pid):
        deadline = time.monotonic() + 30
        while not any(t.user_attrs.get("pid") not in (None, pid)
                      for t in study.get_trials(deepcopy=False)):
            if time.monotonic() > deadline:
                raise SystemExit("the other worker never started a trial")
            time.sleep(0.02)
    x = trial.suggest_float("x", -10.0, 10.0)
    return (x - 2.0) ** 2

study.optimize(objective, n_trials=10)
"""


def _connect(url: str) -> psycopg.Connection:
    parsed = make_url(url)
    return psycopg.connect(host=parsed.host, port=parsed.port, user=parsed.username,
                           dbname=parsed.database, connect_timeout=10)


def test_server_is_postgresql_on_loopback(postgres_url: str) -> None:
    parsed = make_url(postgres_url)
    assert parsed.drivername == "postgresql+psycopg"
    assert (parsed.host, parsed.database) == ("127.0.0.1", "workbench_test")
    with _connect(postgres_url) as conn:
        version = conn.execute("SELECT version()").fetchone()[0]
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('listen_addresses', 'max_connections', 'port', 'unix_socket_directories', 'fsync')"
        ).fetchall())
    assert "PostgreSQL" in version
    assert settings["listen_addresses"] == "127.0.0.1"
    assert int(settings["port"]) == parsed.port
    assert int(settings["max_connections"]) >= 50
    assert settings["fsync"] == "off"
    assert "/var/run" not in settings["unix_socket_directories"]


def test_fresh_database_is_empty_and_separate(postgres_url: str) -> None:
    url = fresh_database(postgres_url, "pg_server_fresh")
    assert make_url(url).database == "pg_server_fresh"
    with _connect(url) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.commit()
    url = fresh_database(postgres_url, "pg_server_fresh")  # again: dropped and recreated, so empty
    with _connect(url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
    assert tables == 0
    with pytest.raises(ValueError):
        fresh_database(postgres_url, "no-dashes")


def test_two_optuna_worker_processes_share_one_study(postgres_url: str) -> None:
    url = fresh_database(postgres_url, "pg_server_optuna")
    storage = optuna.storages.RDBStorage(url)  # creates the schema once, before the workers race
    optuna.create_study(study_name="concurrent", storage=storage, direction="minimize")

    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, url, "concurrent"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        outputs = [worker.communicate(timeout=90) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, f"worker {worker.pid} failed:\n{out}{err}"

    trials = optuna.load_study(study_name="concurrent", storage=storage).get_trials(deepcopy=False)
    storage.engine.dispose()
    assert len(trials) == 20
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(20))
    assert len({t._trial_id for t in trials}) == 20
    assert Counter(t.user_attrs["pid"] for t in trials) == {w.pid: 10 for w in workers}
