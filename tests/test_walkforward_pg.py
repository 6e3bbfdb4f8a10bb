"""Walk-forward workers sharing studies on a real PostgreSQL server (Optuna's RDB storage).

The coordinator runs with two local worker processes while a third process joins through the CLI,
as a worker on another machine would: every fold's budget must be evaluated exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from bars_factory import minute_bars
from optuna.trial import TrialState
from pg_server import _connect, fresh_database

from workbench import Lake
from workbench.backtest import load_bars
from workbench.optimize import load_run, walk_forward

pytestmark = pytest.mark.network

TRIALS, FOLDS = 40, 3


def _clients(url: str, dbname: str) -> int:
    """How many other connections database `dbname` has now."""
    with _connect(url, dbname) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid()").fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def pg_lake(lake: Lake) -> Lake:
    lake.write_bars("synthetic", "BTC/USDT", "1h", minute_bars("2024-01-01", 6000, freq="1h", seed=3))
    return lake


def test_three_processes_share_each_fold_study_and_every_trial_runs_once(
        postgres_url: str, pg_lake: Lake, data_root: Path) -> None:
    url = fresh_database(postgres_url, "wf_workers").replace("postgresql+psycopg://", "postgresql://")
    env = {**os.environ, "WORKBENCH_DATA_DIR": str(data_root)}
    joiner = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "optimize", "worker", "pgrun", "--storage", url,
         "--wait", "120"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # start the run once the joiner polls the database for it (its connection is open), so it
        # really shares the folds
        assert joiner.stdout is not None
        assert "joining pgrun" in joiner.stdout.readline()
        deadline = time.monotonic() + 120
        while _clients(postgres_url, "wf_workers") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        bars = load_bars(pg_lake, ["BTC/USDT"], "1h")
        result = walk_forward("sma_cross", bars, folds=FOLDS, n_trials=TRIALS, fixed={"short": False},
                              workers=2, storage=url, name="pgrun", seed=5)
        out, err = joiner.communicate(timeout=120)
    finally:
        joiner.kill()
    assert joiner.returncode == 0, err
    storage = optuna.storages.RDBStorage(url.replace("postgresql://", "postgresql+psycopg://"))
    workers: set[str] = set()
    for k in range(FOLDS):
        trials = optuna.load_study(study_name=f"pgrun:fold{k}", storage=storage).get_trials(deepcopy=False)
        states = pd.Series([t.state for t in trials]).value_counts()
        assert len(trials) == TRIALS, f"fold {k}: {len(trials)} trials"
        assert states.get(TrialState.COMPLETE, 0) + states.get(TrialState.PRUNED, 0) == TRIALS, states
        assert sorted(t.number for t in trials) == list(range(TRIALS))
        workers |= {t.system_attrs["worker"] for t in trials}
    pids = {w.rsplit(":", 1)[1] for w in workers}
    assert len(pids) == 3, f"expected the coordinator, its forked worker and the joiner; got {workers}"
    assert str(joiner.pid) in pids
    assert "worker finished" in out
    record = load_run("pgrun")
    assert len(record.folds) == FOLDS
    assert record.folds["n_trials"].tolist() == [TRIALS] * FOLDS
    assert len(record.trials) == FOLDS * TRIALS
    assert record.inputs["storage"].startswith("postgresql://")
    a, b = result.summary(), record.summary()
    assert a.keys() == b.keys()
    for key in a:  # NaN (e.g. an undefined efficiency) equals NaN here
        assert a[key] == b[key] or (a[key] != a[key] and b[key] != b[key]), key


def test_processes_opening_a_fresh_database_at_once_all_get_the_storage(postgres_url: str) -> None:
    """Optuna creates its tables on first use; racing creators must not fail on PostgreSQL's catalog."""
    url = fresh_database(postgres_url, "wf_race")
    code = ("import sys; from workbench.optimize.storage import open_storage; "
            "open_storage(sys.argv[1]); print('ok')")
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [o for o, _ in outs] == ["ok\n"] * 6, [e for _, e in outs]
