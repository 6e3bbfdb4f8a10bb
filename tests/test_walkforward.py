"""Walk-forward optimisation end to end on small seeded bars: fold table vs splitter, an honest OOS record,
reproducibility, resume after SIGKILL, local workers, objectives, diagnostics, records, errors, figures."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from bars_factory import minute_bars
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from workbench.errors import ConfigError, DataError
from workbench.optimize import WalkForward, WalkForwardResult, list_runs, load_run, walk_forward
from workbench.optimize.storage import CLAIM_GRACE
from workbench.strategies.registry import get_strategy

N_BARS = 3600
BARS_SEED = 3
FOLDS = 3
TRIALS = 10
FIXED = {"short": False}
INIT = 100_000.0
TESTS = Path(__file__).resolve().parent

# the columns of the fold table that the search decides (trial numbers may differ after a resume)
DECIDED = ["param_fast", "param_slow", "param_short", "is_objective", "is_sharpe", "is_annual_return",
           "is_max_drawdown", "is_n_trades", "oos_objective", "oos_sharpe", "oos_annual_return",
           "oos_total_return", "oos_max_drawdown", "oos_n_trades", "test_start", "test_end"]


def make_bars(n: int = N_BARS, seed: int = BARS_SEED) -> pd.DataFrame:
    df = minute_bars("2023-01-01", n, freq="1h", seed=seed).set_index("ts")
    df.attrs.update(timeframe="1h", symbol="X")
    return df


def run(bars: pd.DataFrame, journal: Path, **kw: object) -> WalkForwardResult:
    opts: dict[str, object] = {"folds": FOLDS, "n_trials": TRIALS, "fixed": FIXED, "seed": 0, "save": False,
                               "storage": str(journal)}
    opts.update(kw)
    return walk_forward("sma_cross", bars, **opts)  # type: ignore[arg-type]


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg, msg
    return msg


def snapshot(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def finished_count(journal: Path, study: str) -> dict[str, int]:
    store = JournalStorage(JournalFileBackend(str(journal)))
    sid = store.get_study_id_from_name(study)
    counts = {s.name: 0 for s in TrialState}
    for t in store.get_all_trials(sid, deepcopy=False):
        counts[t.state.name] += 1
    return counts


def fold_trials(res: WalkForwardResult, k: int) -> pd.DataFrame:
    return res.trials[res.trials["fold"] == k].sort_values("number")


def finished_sequence(res: WalkForwardResult, k: int) -> list[tuple]:
    """The finished trials of a fold in order: (state, params, value, sharpe, n_trades)."""
    t = fold_trials(res, k)
    t = t[t["state"].isin(["COMPLETE", "PRUNED"])]
    return [(r.state, r.fast, r.slow, r.short, r.value, r.sharpe, r.n_trades) for r in t.itertuples()]


def same(a: object, b: object) -> bool:
    """Exact equality that treats NaN == NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def assert_same_sequences(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert all(same(u, v) for u, v in zip(x, y, strict=True)), (x, y)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return make_bars()


@pytest.fixture(scope="module")
def base(bars: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> WalkForwardResult:
    return run(bars, tmp_path_factory.mktemp("wf_base") / "base.journal")


# ------------------------------------------------------------------------------------ 1. structure


def test_fold_table_matches_the_splitter_and_the_trials(base: WalkForwardResult, bars: pd.DataFrame) -> None:
    idx = bars.index
    folds = WalkForward(n_folds=FOLDS).split(idx)
    f = base.folds
    assert list(f["fold"]) == list(range(FOLDS)) and len(f) == len(folds)
    for (_, row), fold in zip(f.iterrows(), folds, strict=True):
        assert row["train_start"] == idx[fold.train_start]
        assert row["train_end"] == idx[fold.train_end - 1]
        assert row["test_start"] == idx[fold.test_start]
        assert row["test_end"] == idx[fold.test_end - 1]
    assert (f["n_trials"] == TRIALS).all()
    assert (f["n_complete"] + f["n_pruned"] == TRIALS).all() and (f["n_failed"] == 0).all()
    assert base.trials.groupby("fold").size().tolist() == [TRIALS] * FOLDS

    space = {p.name: p for p in get_strategy("sma_cross").space.params}
    for _, row in f.iterrows():
        fast, slow = int(row["param_fast"]), int(row["param_slow"])
        for name, v in (("fast", fast), ("slow", slow)):
            p = space[name]
            assert p.low <= v <= p.high and (v - p.low) % p.step == 0, (name, v)
        assert fast < slow and not row["param_short"] and isinstance(row["param_short"], bool | np.bool_)
        # the winner's IS figures are exactly its stored trial's
        t = base.trials[(base.trials["fold"] == row["fold"]) & (base.trials["number"] == row["best_trial"])]
        assert len(t) == 1
        t = t.iloc[0]
        assert t["state"] == "COMPLETE"
        assert (t["fast"], t["slow"]) == (fast, slow)
        assert row["is_objective"] == t["value"]
        assert row["is_sharpe"] == t["sharpe"]  # objective is sharpe
        assert row["is_max_drawdown"] == t["max_drawdown"] and row["is_n_trades"] == t["n_trades"]
        # and it is the best feasible trial of its fold
        fold_t = fold_trials(base, row["fold"])
        ok = fold_t[(fold_t["state"] == "COMPLETE") & (fold_t["n_trades"] >= 1)]
        assert row["is_objective"] == ok["value"].max()


def test_oos_equity_is_the_test_windows_stitched(base: WalkForwardResult, bars: pd.DataFrame) -> None:
    idx = bars.index
    folds = WalkForward(n_folds=FOLDS).split(idx)
    want = idx[folds[0].test_start:folds[-1].test_end]
    eq = base.oos_equity
    pd.testing.assert_index_equal(eq.index, want)
    assert eq.index.is_unique and eq.index.is_monotonic_increasing
    assert eq.iloc[0] == INIT
    prev = INIT
    for fold in folds:
        window = eq.loc[idx[fold.test_start]:idx[fold.test_end - 1]]
        assert len(window) == fold.n_test
        # each fold starts flat with the cash the previous one ended with
        assert window.iloc[0] == prev
        prev = window.iloc[-1]
    pd.testing.assert_index_equal(base.oos_benchmark.index, want)
    assert base.oos_benchmark.iloc[0] == pytest.approx(INIT, rel=0.01)


# ----------------------------------------------------------------------------------- 2. honest OOS


def test_oos_trades_stay_inside_their_test_window(base: WalkForwardResult, bars: pd.DataFrame) -> None:
    idx = bars.index
    folds = WalkForward(n_folds=FOLDS).split(idx)
    tr = base.oos_trades
    assert len(tr) > 0
    assert (tr["status"] == "closed").all()
    for fold in folds:
        mine = tr[tr["fold"] == fold.fold]
        lo, hi = idx[fold.test_start], idx[fold.test_end - 1]
        assert (mine["entry_time"] > lo).all(), "an entry fills after a signal inside the window"
        assert (mine["exit_time"] <= hi).all() and (mine["exit_time"] >= mine["entry_time"]).all()
        row = base.folds.iloc[fold.fold]
        assert row["oos_n_trades"] == len(mine)
        # flat until the first entry of the fold
        window = base.oos_equity.loc[lo:hi]
        if len(mine):
            before = window.loc[: mine["entry_time"].min() - pd.Timedelta("1h")]
            assert (before == window.iloc[0]).all()
        else:
            assert (window == window.iloc[0]).all()


def test_fold_oos_return_is_its_equity_change(base: WalkForwardResult, bars: pd.DataFrame) -> None:
    idx = bars.index
    eq = base.oos_equity
    prev = INIT
    for fold, (_, row) in zip(WalkForward(n_folds=FOLDS).split(idx), base.folds.iterrows(), strict=True):
        end = eq.loc[idx[fold.test_end - 1]]
        assert row["oos_total_return"] == pytest.approx(end / prev - 1, rel=1e-12, abs=1e-15)
        prev = end
    # the stitched record's return compounds the folds'
    total = float(np.prod(1 + base.folds["oos_total_return"].to_numpy()) - 1)
    assert base.oos_metrics["total_return"] == pytest.approx(total, rel=1e-9, abs=1e-12)
    assert base.oos_metrics["total_return"] == pytest.approx(eq.iloc[-1] / INIT - 1, rel=1e-12)
    assert base.oos_metrics["n_trades"] == base.folds["oos_n_trades"].sum() == len(base.oos_trades)


# -------------------------------------------------------------------------------- 3. reproducibility


def test_same_settings_give_the_same_run_and_another_seed_differs(
        base: WalkForwardResult, bars: pd.DataFrame, tmp_path: Path) -> None:
    again = run(bars, tmp_path / "again.journal")
    assert again.run_id == base.run_id
    pd.testing.assert_frame_equal(again.folds, base.folds)
    assert again.oos_metrics == base.oos_metrics
    pd.testing.assert_series_equal(again.oos_equity, base.oos_equity)
    for k in range(FOLDS):
        assert_same_sequences(finished_sequence(again, k), finished_sequence(base, k))

    other = run(bars, tmp_path / "other.journal", seed=1)
    assert other.run_id != base.run_id
    assert any(finished_sequence(other, k) != finished_sequence(base, k) for k in range(FOLDS))
    cols = ["fast", "slow", "value"]
    assert not other.trials[cols].fillna(-1).equals(base.trials[cols].fillna(-1))


# ----------------------------------------------------------------------------------------- 4. resume

CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from bars_factory import minute_bars
from workbench.optimize import walkforward as wf

_trial = wf._Run._trial
calls = {{}}

def held_trial(self, storage, sid, k, *args):
    # fold 1's 4th trial is claimed (RUNNING, worker recorded) and never finishes: the parent kills us here
    calls[k] = calls.get(k, 0) + 1
    if k == 1 and calls[k] == 4:
        open(sys.argv[2], "w").close()
        time.sleep(120)
    return _trial(self, storage, sid, k, *args)

wf._Run._trial = held_trial
df = minute_bars("2023-01-01", {n}, freq="1h", seed={seed}).set_index("ts")
df.attrs.update(timeframe="1h", symbol="X")
wf.walk_forward("sma_cross", df, folds={folds}, n_trials={trials}, fixed={fixed!r}, seed=0, save=False,
                storage=sys.argv[1])
print("finished")
"""


def test_a_killed_run_resumes_to_the_uninterrupted_result(
        base: WalkForwardResult, bars: pd.DataFrame, tmp_path: Path, data_root: Path) -> None:
    journal = tmp_path / "resume.journal"
    script = CHILD.format(tests=str(TESTS), n=N_BARS, seed=BARS_SEED, folds=FOLDS, trials=TRIALS, fixed=FIXED)
    env = {**os.environ, "WORKBENCH_DATA_DIR": str(data_root)}
    holding = tmp_path / "holding"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), str(journal), str(holding)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    study1 = f"{base.run_id}:fold1"
    deadline = time.monotonic() + 60
    killed = False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if holding.exists():
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        out, err = proc.communicate(timeout=30)
    assert killed, f"the child ended before it held fold 1's 4th trial: {out} {err}"
    assert proc.returncode == -signal.SIGKILL
    before = finished_count(journal, study1)
    assert before["COMPLETE"] + before["PRUNED"] == 3 and before["RUNNING"] == 1
    assert finished_count(journal, f"{base.run_id}:fold2")["WAITING"] == TRIALS

    resumed = run(bars, journal)
    assert resumed.run_id == base.run_id
    t = resumed.trials
    for k in range(FOLDS):
        mine = t[t["fold"] == k]
        assert mine["state"].isin(["COMPLETE", "PRUNED"]).sum() == TRIALS
        assert set(mine["state"]) <= {"COMPLETE", "PRUNED", "FAIL"}
        assert mine["number"].is_unique
    failed = t[t["state"] == "FAIL"]
    assert list(failed["fold"]) == [1] and list(failed["number"]) == [3]  # the trial the child held
    reason = failed["failed_reason"].iloc[0]
    assert reason.startswith("worker ") and reason.endswith(f":{proc.pid} stopped"), reason
    assert (resumed.folds["n_failed"] == [int((failed["fold"] == k).sum()) for k in range(FOLDS)]).all()

    # the design goal: a resumed run is the uninterrupted run (`base`, its own fresh storage)
    pd.testing.assert_frame_equal(resumed.folds[DECIDED], base.folds[DECIDED])
    assert resumed.oos_metrics == base.oos_metrics
    pd.testing.assert_series_equal(resumed.oos_equity, base.oos_equity)
    for k in range(FOLDS):
        assert_same_sequences(finished_sequence(resumed, k), finished_sequence(base, k))

    # resuming a finished run evaluates nothing more and returns the same result
    again = run(bars, journal)
    assert again.timings["trials"] == 0
    pd.testing.assert_frame_equal(again.folds, resumed.folds)


def test_a_torn_last_journal_record_is_dropped_and_the_run_resumes(
        bars: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    journal = tmp_path / "torn.journal"
    small = {"folds": 2, "n_trials": 3}
    run(bars, journal, **small)
    whole = journal.read_bytes()
    torn = b'{"op_code":6,"worker_id":"w","trial_id":13,"sta'  # a writer killed mid-record
    journal.write_bytes(whole + torn)
    with caplog.at_level("WARNING", logger="workbench.optimize.storage"):
        other = run(bars, journal, seed=1, **small)  # writes new records after the torn one
    assert f"({len(torn)} bytes" in caplog.text and "dropped it" in caplog.text
    assert journal.read_bytes().startswith(whole) and torn not in journal.read_bytes()
    # what was written after the repair reads back: resuming neither fails nor evaluates again
    again = run(bars, journal, seed=1, **small)
    assert again.timings["trials"] == 0
    pd.testing.assert_frame_equal(again.folds, other.folds)


class _SetUp(Exception):
    """Stops the first call once the studies exist and fold 0's first trial is claimed."""


class _Stuck(Exception):
    """The coordinator still waits although no worker is left that could finish the run."""


def _claimed_by(bars: pd.DataFrame, journal: Path, monkeypatch: pytest.MonkeyPatch,
                worker: str | None) -> None:
    """Create the run's studies, with fold 0's first trial RUNNING for `worker` (None: not recorded)."""
    from workbench.optimize import walkforward as wf

    def claim(self: object, storage: object, progress: object = None) -> None:
        sid = storage.get_study_id_from_name(f"{self.run_id}:fold0")  # type: ignore[attr-defined]
        t = storage.get_all_trials(sid, states=(TrialState.WAITING,))[0]  # type: ignore[attr-defined]
        storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING)  # type: ignore[attr-defined]
        if worker is not None:
            storage.set_trial_system_attr(t._trial_id, "worker", worker)  # type: ignore[attr-defined]
        raise _SetUp

    with monkeypatch.context() as m:
        m.setattr(wf._Run, "work", claim)
        with pytest.raises(_SetUp):
            run(bars, journal)


def _assert_redone(res: WalkForwardResult, reason: str) -> None:
    t = res.trials
    for k in range(FOLDS):
        assert t[t["fold"] == k]["state"].isin(["COMPLETE", "PRUNED"]).sum() == TRIALS
    failed = t[t["state"] == "FAIL"]
    assert list(failed["fold"]) == [0] and list(failed["failed_reason"]) == [reason]


def test_a_trial_whose_worker_dies_while_the_coordinator_waits_is_redone(
        bars: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = tmp_path / "orphan.journal"
    # another worker on this host (a live process) holds fold 0's first trial
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    worker = f"{socket.gethostname()}:{helper.pid}"
    try:
        _claimed_by(bars, journal, monkeypatch, worker)
        died: list[float] = []

        def progress(k: int, done: int, total: int) -> None:
            # once this worker has done the rest of fold 0, the helper dies holding its trial
            if not died and k == 0 and done == total - 1:
                helper.kill()
                helper.wait()
                died.append(time.monotonic())
            if died and time.monotonic() - died[0] > 2:
                raise _Stuck(f"fold 0 still has {total - done} trial(s) to do 2 s after its worker died")

        res = run(bars, journal, progress=progress)
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait()
    assert died
    _assert_redone(res, f"worker {worker} stopped")


def test_a_trial_claimed_by_a_worker_killed_mid_claim_is_redone(
        bars: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = tmp_path / "unowned.journal"
    _claimed_by(bars, journal, monkeypatch, None)
    started: list[float] = []

    def progress(k: int, done: int, total: int) -> None:
        if not started and k == FOLDS - 1 and done == total:  # everything else is done
            started.append(time.monotonic())
        # an unnamed claim counts as abandoned once it is CLAIM_GRACE seconds old
        if started and time.monotonic() - started[0] > CLAIM_GRACE + 2:
            raise _Stuck("the resume still waits for fold 0's unowned trial")

    res = run(bars, journal, progress=progress)
    _assert_redone(res, "worker ? stopped")


# -------------------------------------------------------------------------------- 5. local workers


def test_two_local_workers_share_the_budget_exactly(bars: pd.DataFrame, tmp_path: Path) -> None:
    res = run(bars, tmp_path / "two.journal", workers=2, n_trials=12, seed=5)
    t = res.trials
    for k in range(FOLDS):
        mine = t[t["fold"] == k]
        assert len(mine) == 12 and mine["state"].isin(["COMPLETE", "PRUNED"]).all()
        assert mine["number"].is_unique and sorted(mine["number"]) == list(range(12))
    assert (t["state"] != "FAIL").all() and t["failed_reason"].isna().all()
    pids = {w.rpartition(":")[2] for w in t["worker"]}
    assert len(pids) == 2 and str(os.getpid()) in pids
    assert res.timings["workers"] == 2 and res.timings["trials"] + res.timings.get(
        "other_workers_trials", 0) == 12 * FOLDS
    assert res.diagnostics.n_trials == int((t["state"] == "COMPLETE").sum())
    assert len(res.folds) == FOLDS and res.folds["best_trial"].notna().all()
    pd.testing.assert_index_equal(res.oos_equity.index, bars.index[-len(res.oos_equity):])
    # the run record is complete
    folder = res.save(tmp_path / "runs")
    record = json.loads((folder / "record.json").read_text())
    assert record["status"] == "complete" and record["summary"]["trials"] == res.diagnostics.n_trials
    assert record["settings"]["n_trials"] == 12 and record["timings"]["workers"] == 2
    back = load_run(res.run_id, tmp_path / "runs")
    pd.testing.assert_frame_equal(back.trials, res.trials)
    pd.testing.assert_frame_equal(back.folds, res.folds)
    # the worker diagnosed its share of the folds (PBO, importances) as this process would have
    from workbench.optimize import storage as st
    from workbench.optimize.walkforward import _fold_diagnostics, _fold_shares, _run_from_settings

    assert _fold_shares(FOLDS, 2)[1], "the worker had folds to diagnose"
    again = _run_from_settings(res.run_id, res.settings, {"BTC/USDT": bars}, str(tmp_path / "two.journal"))
    store = st.open_storage(again.storage_url)
    for k in range(FOLDS):
        mine = _fold_diagnostics(again, store, st.study_id(store, again.study_name(k)), k)
        assert {"fold": k, **mine["pbo"]} == res.diagnostics.pbo["per_fold"][k]
        imp = res.importances.loc[k].dropna().to_dict() if k in res.importances.index else {}
        assert imp == pytest.approx(mine["importances"])


# ---------------------------------------------------------------------------------- 6. objectives


@pytest.mark.parametrize("metric", ["calmar", "sortino", "return_dd"])
def test_other_objectives_select_by_their_metric(bars: pd.DataFrame, tmp_path: Path, metric: str) -> None:
    res = run(bars, tmp_path / f"{metric}.journal", objective=metric, n_trials=8)
    assert res.settings["objective"]["metric"] == metric
    for _, row in res.folds.iterrows():
        t = fold_trials(res, row["fold"])
        ok = t[(t["state"] == "COMPLETE") & (t["n_trades"] >= 1) & (t["value"] > -1e9)]
        assert row["is_objective"] == ok["value"].max()
        assert math.isfinite(row["oos_objective"]) or row["oos_n_trades"] == 0
        if metric == "return_dd":
            assert row["is_objective"] == pytest.approx(row["is_annual_return"] - abs(row["is_max_drawdown"]),
                                                        rel=1e-12, abs=1e-15)
            assert row["oos_objective"] == pytest.approx(
                row["oos_annual_return"] - abs(row["oos_max_drawdown"]), rel=1e-12, abs=1e-15)
        if metric == "calmar" and row["oos_max_drawdown"] < 0:
            assert row["oos_objective"] == pytest.approx(
                row["oos_annual_return"] / abs(row["oos_max_drawdown"]), rel=1e-9)


def test_min_trades_makes_trials_infeasible(bars: pd.DataFrame, tmp_path: Path) -> None:
    need = 4
    res = run(bars, tmp_path / "min.journal", min_trades=need, n_trials=12)
    t = res.trials[res.trials["state"] == "COMPLETE"]
    assert (t["n_trades"] < need).any(), "no trial was infeasible: the test needs a higher min_trades"
    for _, row in res.folds.iterrows():
        mine = t[t["fold"] == row["fold"]]
        feasible = mine[mine["n_trades"] >= need]
        assert row["n_feasible"] == len(feasible)
        if len(feasible):
            assert row["is_n_trades"] >= need
            assert row["is_objective"] == feasible["value"].max()
        else:
            assert pd.isna(row["best_trial"]) and row["oos_n_trades"] == 0
            assert row["oos_total_return"] == 0 and pd.isna(row["param_fast"])
    # on these bars fold 0 has no trial with 4 trades (it stays flat) and the others do
    flat = res.folds["best_trial"].isna()
    assert flat.any() and not flat.all()
    for k in res.folds.loc[flat, "fold"]:
        assert len(res.oos_trades) == 0 or (res.oos_trades["fold"] != k).all()


def test_no_feasible_trial_means_a_flat_fold(bars: pd.DataFrame, tmp_path: Path) -> None:
    res = run(bars, tmp_path / "flat.journal", min_trades=10_000, n_trials=8)
    f = res.folds
    assert (f["n_feasible"] == 0).all() and f["best_trial"].isna().all()
    assert (f["oos_n_trades"] == 0).all() and (f["oos_total_return"] == 0).all()
    assert f["param_fast"].isna().all() and f["oos_objective"].isna().all()
    assert (res.oos_equity == INIT).all() and len(res.oos_trades) == 0
    assert res.oos_metrics["n_trades"] == 0 and "note" in res.diagnostics.monte_carlo
    assert res.summary()["oos_total_return"] == 0


def test_a_fold_without_trades_has_no_sharpe_and_efficiency_stays_finite(bars: pd.DataFrame,
                                                                         tmp_path: Path) -> None:
    # the setting of test_min_trades_makes_trials_infeasible: fold 0 stays flat, the others trade
    res = run(bars, tmp_path / "nan.journal", min_trades=4, n_trials=12)
    f = res.folds
    flat = f["oos_n_trades"] == 0
    assert flat.any() and not flat.all()
    assert f.loc[flat, "oos_sharpe"].isna().all()  # a flat window has no Sharpe: NaN, never +inf
    assert not np.isinf(f[["oos_sharpe", "is_sharpe", "oos_objective"]].to_numpy(dtype=float)).any()
    d = res.diagnostics
    assert math.isfinite(d["sharpe_efficiency"]) and d["sharpe_efficiency_folds"] == int((~flat).sum())
    defined = f[~flat]
    assert d["sharpe_efficiency"] == pytest.approx(defined["oos_sharpe"].mean() / defined["is_sharpe"].mean())


def test_oos_exposure_and_turnover_come_from_the_oos_trades(base: WalkForwardResult) -> None:
    m, eq, tr = base.oos_metrics, base.oos_equity, base.oos_trades
    assert len(tr) and (tr["status"] == "closed").all()
    # next-open fills: a position is held at the close of bars entry_time <= t < exit_time
    held = np.zeros(len(eq), dtype=bool)
    for _, t in tr.iterrows():
        held |= (eq.index >= t["entry_time"]) & (eq.index < t["exit_time"])
    assert m["exposure"] == pytest.approx(held.mean(), rel=1e-12)
    traded = float((tr["size"] * (tr["entry_price"] + tr["exit_price"])).sum())
    years = len(eq) / base.settings["periods_per_year"]
    assert m["turnover"] == pytest.approx(traded / eq.mean() / years, rel=1e-9)
    assert 0 < m["avg_gross_exposure"] <= 1.0 + 1e-9


# --------------------------------------------------------------------------------- 7. diagnostics


def test_diagnostics_are_present_and_in_range(base: WalkForwardResult) -> None:
    d = base.diagnostics
    complete = int((base.trials["state"] == "COMPLETE").sum())
    assert d["n_trials"] == complete == base.folds["n_complete"].sum()
    assert 0.0 <= d["deflated_sharpe"]["dsr"] <= 1.0
    assert d["deflated_sharpe"]["n_trials"] == complete
    assert 0.0 <= d["pbo"]["mean"] <= 1.0
    per_fold = d["pbo"]["per_fold"]
    assert [p["fold"] for p in per_fold] == list(range(FOLDS))
    assert d["pbo"]["mean"] == pytest.approx(np.nanmean([p["pbo"] for p in per_fold]))
    assert list(base.folds["pbo"]) == [p["pbo"] for p in per_fold]
    assert 0.0 <= d["sharpe_test"]["p_value"] <= 1.0
    for m in ("bootstrap", "shuffle"):
        mc = d["monte_carlo"][m]
        assert mc["n_trades"] == len(base.oos_trades)
        assert mc["total_return_low"] <= mc["total_return_high"]
        assert 0.0 <= mc["total_return_p_loss"] <= 1.0
    b = d["benchmark"]
    assert {"benchmark_return", "excess_return", "information_ratio", "beta"} <= set(b)
    assert b["benchmark_return"] == pytest.approx(base.oos_benchmark.iloc[-1] / INIT - 1, rel=1e-9)
    assert b["total_return"] == pytest.approx(d["oos_metrics"]["total_return"], rel=1e-9)
    assert math.isfinite(d["trial_sharpe_variance"]) and d["trial_sharpe_variance"] >= 0

    assert list(base.importances.index) == list(range(FOLDS))
    assert set(base.importances.columns) <= {"fast", "slow"}
    imp = base.importances.to_numpy(dtype=float)
    assert np.isfinite(imp).all() and ((imp >= 0) & (imp <= 1)).all()
    assert np.allclose(imp.sum(axis=1), 1.0)

    st = base.stability
    assert list(st["param"]) == ["fast", "slow"]  # one row per free parameter, `short` is fixed
    for _, row in st.iterrows():
        vals = list(base.folds[f"param_{row['param']}"])
        assert row["values"] == vals
        assert row["mean"] == pytest.approx(np.mean(vals)) and row["std"] == pytest.approx(np.std(vals))
        assert 0 < row["mode_share"] <= 1

    s = base.summary()
    assert s["folds"] == FOLDS and s["trials"] == complete and s["run_id"] == base.run_id


# -------------------------------------------------------------------------------------- 8. records


def test_a_saved_record_reads_back(base: WalkForwardResult, data_root: Path) -> None:
    path = base.save()
    assert path == data_root / "runs" / base.run_id
    back = load_run(base.run_id)
    assert back.run_id == base.run_id and back.settings == base.settings
    pd.testing.assert_frame_equal(back.folds, base.folds)
    pd.testing.assert_frame_equal(back.trials, base.trials)
    pd.testing.assert_series_equal(back.oos_equity, base.oos_equity, check_names=False)
    pd.testing.assert_series_equal(back.oos_benchmark, base.oos_benchmark, check_names=False)
    pd.testing.assert_frame_equal(back.oos_trades, base.oos_trades)
    pd.testing.assert_frame_equal(back.importances, base.importances)
    pd.testing.assert_frame_equal(back.stability, base.stability)
    assert back.summary() == base.summary()
    runs = list_runs()
    assert list(runs["run_id"]) == [base.run_id]
    assert runs.iloc[0]["symbols"] == "X" and runs.iloc[0]["folds"] == FOLDS
    assert not [p for p in (data_root / "runs").iterdir() if p.name.startswith(".")]


def test_loading_an_unknown_run_is_one_line(data_root: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_run("nope")
    msg = one_line(exc)
    assert "'nope'" in msg and "workbench optimize runs" in msg


# ------------------------------------------------------------------------------------ 9. bad input


BAD = {
    "windows_longer_than_data": ({"splitter": WalkForward(n_folds=3, train=10_000)}, DataError,
                                 ["needs", "the data has 3,000"]),
    "too_many_folds": ({"folds": 200}, DataError, ["train bars", "needs at least 502"]),
    "empty_space": ({"fixed": {"fast": 10, "slow": 50, "short": False}}, ConfigError,
                    ["nothing to optimise"]),
    "unknown_param": ({"fixed": {"fsat": 10}}, ConfigError, ["no parameter", "fsat"]),
    "unknown_objective": ({"objective": "sharp"}, ConfigError, ["objective 'sharp' is unknown", "sharpe"]),
    "unknown_sampler": ({"sampler": "grid"}, ConfigError, ["sampler 'grid' is unknown", "tpe"]),
    "unknown_pruner": ({"pruner": "medain"}, ConfigError, ["pruner 'medain' is unknown", "median"]),
    "no_trials": ({"n_trials": 0}, ConfigError, ["n_trials=0"]),
    "no_workers": ({"workers": 0}, ConfigError, ["workers=0"]),
    "unreachable_storage": ({"storage": "postgresql://u@127.0.0.1:1/db"}, ConfigError,
                            ["cannot reach", "127.0.0.1:1"]),
    "unsupported_storage": ({"storage": "redis://localhost/0"}, ConfigError, ["not supported"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_writes_nothing(data_root: Path, case: str) -> None:
    kw, kind, needles = BAD[case]
    small = make_bars(3000)
    opts: dict[str, object] = {"folds": FOLDS, "n_trials": 8, "fixed": FIXED}  # saves, default storage
    opts.update(kw)
    with pytest.raises(kind) as exc:
        walk_forward("sma_cross", small, **opts)  # type: ignore[arg-type]
    msg = one_line(exc)
    for needle in needles:
        assert needle in msg, msg
    assert snapshot(data_root) == {}


def test_a_name_taken_by_other_settings_is_refused_and_left_alone(
        data_root: Path, bars: pd.DataFrame) -> None:
    first = walk_forward("sma_cross", bars, folds=FOLDS, n_trials=8, fixed=FIXED, name="x")
    assert first.run_id == "x"
    journal = data_root / "optimize" / "x.journal"
    assert journal.exists()
    record = snapshot(data_root / "runs")
    assert record and snapshot(data_root / "optimize")

    with pytest.raises(ConfigError) as exc:
        walk_forward("sma_cross", bars, folds=FOLDS, n_trials=9, fixed=FIXED, name="x")
    msg = one_line(exc)
    assert "x:fold0" in msg and "n_trials" in msg and "--name" in msg
    for k in range(FOLDS):
        counts = finished_count(journal, f"x:fold{k}")
        assert counts["COMPLETE"] + counts["PRUNED"] == 8 and sum(counts.values()) == 8
    assert snapshot(data_root / "runs") == record
    assert load_run("x").folds.equals(first.folds)

    # the same settings under the name resume (return) the finished run
    same_run = walk_forward("sma_cross", bars, folds=FOLDS, n_trials=8, fixed=FIXED, name="x", save=False)
    assert same_run.timings["trials"] == 0
    pd.testing.assert_frame_equal(same_run.folds, first.folds)


@pytest.mark.parametrize("name", ["a/b", ".hidden", "a:b"])
def test_bad_run_names_are_refused(data_root: Path, bars: pd.DataFrame, name: str) -> None:
    with pytest.raises(ConfigError) as exc:
        walk_forward("sma_cross", bars, folds=FOLDS, n_trials=8, fixed=FIXED, name=name)
    assert "run name" in one_line(exc)
    assert snapshot(data_root) == {}


# --------------------------------------------------------------------------------------- 10. figures


def test_figures_have_data(base: WalkForwardResult, bars: pd.DataFrame) -> None:
    fig = base.figure()
    assert isinstance(fig, go.Figure) and len(fig.data) >= 2
    names = {t.name for t in fig.data}
    assert "fold start" in names
    starts = next(t for t in fig.data if t.name == "fold start")
    assert len(starts.x) == FOLDS

    scatter = base.scatter_figure()
    assert isinstance(scatter, go.Figure) and len(scatter.data) >= 1
    assert len(scatter.data[0].x) == int(np.isfinite(base.folds["oos_objective"]).sum())

    stab = base.stability_figure()
    assert isinstance(stab, go.Figure)
    assert sorted(t.name for t in stab.data) == ["fast", "slow"]
    assert all(len(t.y) == FOLDS for t in stab.data)

    split = WalkForward(n_folds=FOLDS).figure(bars.index)
    assert isinstance(split, go.Figure)
    assert [t.name for t in split.data] == ["train", "purge", "test"]
    assert all(len(t.y) == FOLDS for t in split.data)


def test_figures_of_a_loaded_run(base: WalkForwardResult, data_root: Path) -> None:
    base.save()
    back = load_run(base.run_id)
    for fig in (back.figure(), back.scatter_figure(), back.stability_figure()):
        assert isinstance(fig, go.Figure) and len(fig.data) >= 1


def test_a_crashed_worker_not_yet_reaped_counts_as_dead() -> None:
    """A forked worker that died (a zombie until its parent reaps it) must not hold its trial forever."""
    from workbench.optimize.storage import _alive

    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.time() + 10
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.01)
        assert not _alive(pid), "a zombie counted as a live worker"
        assert _alive(os.getpid())
    finally:
        os.waitpid(pid, 0)
    assert not _alive(pid)
