"""Promotion end to end on small real walk-forward runs: gates from YAML, evidence re-checked against the
lake, artifacts, the registry's versions, CURRENT and history, refusals, forcing, rollback, diff, errors,
a look-ahead gate that catches a peeking strategy, and concurrent promotions."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml

from workbench import Lake
from workbench.backtest import Costs, Sizing, SizingKind, load_bars
from workbench.data.sources.synthetic import SyntheticSource
from workbench.errors import ConfigError, DataError, PromotionRejected
from workbench.files import exclusive_write
from workbench.optimize import load_run, save_run, walk_forward
from workbench.optimize.walkforward import signal_lookback
from workbench.promote import (
    DEFAULT_GATES,
    Artifact,
    Gate,
    GateOp,
    GateSet,
    Registry,
    load_artifact,
    load_gates,
    promote,
)
from workbench.promote.evidence import promoted_params, run_values
from workbench.strategies.registry import get_strategy
from workbench.version import code_version

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
START, END = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC")
NAME = "sma_cross-btc_usdt-1h"  # the default name of a run of sma_cross on BTC/USDT 1h

LENIENT = """\
gates:
  oos_sharpe: {min: -100}
  deflated_sharpe: {min: 0}
  sharpe_p_value: {max: 1}
  pbo: {max: 1}
  oos_trades: {min: 1}
  oos_max_drawdown: {max: 1}
  lookahead: {required: true}
  data_fingerprint: {required: true}
"""

PEEK = '''\
"""A strategy that reads the next bar's close: the look-ahead gate must refuse it."""
import numpy as np

from workbench.strategies import ParamSpace, Signals, Strategy, int_param


def signals(bars, p):
    close = bars["close"].to_numpy()
    ahead = np.full(len(close), np.nan)
    ahead[: -p["ahead"]] = close[p["ahead"]:]
    return Signals(ahead > close, ahead < close)


STRATEGY = Strategy("peek_ahead", ParamSpace.of(int_param("ahead", 1, 1, 3)), signals,
                    warmup=lambda p: 2, source="research")
'''


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg, msg
    return msg


def write_lake(root: Path, bump: int | None = None) -> Lake:
    """Three months of synthetic 1h BTC/USDT; `bump` raises one bar's close by 1 % (other data)."""
    lake = Lake(root)
    df = SyntheticSource(seed=7).bars("BTC/USDT", "1h", START, END)
    if bump is not None:
        df.loc[bump, "close"] *= 1.01
        df.loc[bump, "high"] = max(df.loc[bump, "high"], df.loc[bump, "close"])
    lake.write_bars("synthetic", "BTC/USDT", "1h", df)
    return lake


def make_run(env: dict, strategy: str | object = "sma_cross", seed: int = 0, **kw: object) -> str:
    bars = load_bars(env["lake"], ["BTC/USDT"], "1h")
    res = walk_forward(strategy, bars, folds=3, n_trials=10, seed=seed, save=False,  # type: ignore[arg-type]
                       storage=str(env["root"] / f"{getattr(strategy, 'name', strategy)}-{seed}.journal"),
                       **kw)
    save_run(res, env["runs"])
    return res.run_id


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A lake, two sma_cross runs (seeds 0 and 1), a run of a peeking strategy, and gates files."""
    root = tmp_path_factory.mktemp("promote")
    env: dict = {"root": root, "runs": root / "data" / "runs", "lake": write_lake(root / "data")}
    env["a"] = make_run(env, seed=0, fixed={"short": False})
    env["b"] = make_run(env, seed=1, fixed={"short": False})
    research = root / "research"
    research.mkdir()
    (research / "peek_ahead.py").write_text(PEEK)
    env["research"] = research
    env["peek"] = make_run(env, get_strategy("peek_ahead", research))
    env["lenient"] = root / "lenient.yaml"
    env["lenient"].write_text(LENIENT)
    env["lenient2"] = root / "lenient2.yaml"
    env["lenient2"].write_text(LENIENT.replace("pbo: {max: 1}", "pbo: {max: 0.99}"))
    # without the lake checks: Lake reads in threads are not safe (see the threads test)
    numbers = LENIENT.split("  lookahead")[0]
    env["numbers"] = root / "numbers.yaml"
    env["numbers"].write_text(numbers)
    env["numbers2"] = root / "numbers2.yaml"
    env["numbers2"].write_text(numbers.replace("pbo: {max: 1}", "pbo: {max: 0.99}"))
    return env


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def go(env: dict, run: str, reg: Registry, **kw: object):  # type: ignore[no-untyped-def]
    opts: dict = {"gates": env["lenient"], "lake": env["lake"], "registry": reg, "runs_root": env["runs"]}
    opts.update(kw)
    return promote(env.get(run, run), **opts)


# ------------------------------------------------------------------------------------------- gates


def test_built_in_defaults_equal_the_shipped_file() -> None:
    shipped = GateSet.from_yaml(REPO / "pipelines" / "promotion.yaml")
    assert shipped.gates == DEFAULT_GATES == GateSet.default().gates
    assert load_gates(None).gates == DEFAULT_GATES
    assert GateSet.from_mapping(yaml.safe_load(GateSet.default().to_yaml())).gates == DEFAULT_GATES
    assert shipped.path == str((REPO / "pipelines" / "promotion.yaml").resolve())


def test_gates_compare_with_their_thresholds() -> None:
    lo = Gate(name="oos_sharpe", op="min", threshold=0.5)  # type: ignore[arg-type]
    hi = Gate(name="pbo", op=GateOp.MAX, threshold=0.5)
    check = Gate(name="lookahead", op=GateOp.REQUIRED, threshold=True)
    off = Gate(name="lookahead", op=GateOp.REQUIRED, threshold=False)
    assert lo.op is GateOp.MIN and lo.description.startswith("annualised")
    assert lo.check(0.5)[0] and not lo.check(0.49)[0] and not lo.check(math.nan)[0] and not lo.check(None)[0]
    assert hi.check(0.5)[0] and not hi.check(0.51)[0] and hi.check(-math.inf)[0]
    assert check.check(True)[0] and not check.check(False)[0] and not check.check(None)[0]
    assert off.check(False)[0]
    v = lo.verdict(0.1)
    assert not v.passed and v.failure() == "oos_sharpe=0.1 (min 0.5)" and v.detail == "0.1 < 0.5"


def test_a_run_without_oos_trades_fails_the_sharpe_gate_and_says_why() -> None:
    import numpy as np

    from workbench.backtest.metrics import compute_metrics
    from workbench.promote.evidence import gather_evidence

    # a walk-forward whose out-of-sample windows never traded: its equity is flat
    flat = compute_metrics(np.full(200, 100_000.0), 100_000.0, 8760.0,
                           trades=pd.DataFrame({"pnl": [], "return": [], "status": []}))
    ev = gather_evidence(settings={}, diagnostics={"oos_metrics": flat}, strat=get_strategy("sma_cross"),
                         params={}, checks=())
    [verdict] = GateSet(gates=(Gate(name="oos_sharpe", op=GateOp.MIN, threshold=0.5),)).evaluate(
        ev.values, ev.details)
    assert not verdict.passed  # +inf used to pass any minimum
    assert verdict.detail == "undefined out of sample: no trades (n/a)"
    assert verdict.to_dict()["value"] is None


def test_numeric_text_thresholds_are_read_as_numbers(tmp_path: Path) -> None:
    f = tmp_path / "g.yaml"
    f.write_text("gates:\n  pbo: {max: 1e-1, description: strict}\n")  # YAML 1.1 reads 1e-1 as text
    g = GateSet.from_yaml(f)
    assert g.gates == (Gate(name="pbo", op=GateOp.MAX, threshold=0.1, description="strict"),)
    assert g.sha256 is not None and len(g.sha256) == 64


BAD_GATES = {
    "malformed": ("gates:\n  oos_sharpe: {min: 0.5\n", ["is not valid YAML", "line", "fix the syntax"]),
    "unknown_gate": ("gates:\n  oos_sharp: {min: 0.5}\n",
                     ["gates.oos_sharp is not a known gate", "did you mean 'oos_sharpe'"]),
    "unknown_op": ("gates:\n  pbo: {mx: 0.5}\n", ["gates.pbo", "unknown op 'mx'", "did you mean 'max'"]),
    "not_a_number": ("gates:\n  pbo: {max: low}\n", ["gates.pbo.max='low' is not a finite number"]),
    "infinite": ("gates:\n  pbo: {max: .inf}\n", ["gates.pbo.max=inf is not a finite number"]),
    "bool_threshold": ("gates:\n  pbo: {max: true}\n", ["gates.pbo.max=True is not a finite number"]),
    "required_number": ("gates:\n  pbo: {required: true}\n", ["gates.pbo is a number", "min or a max"]),
    "check_with_min": ("gates:\n  lookahead: {min: 1}\n", ["gates.lookahead is a pass/fail check",
                                                          "lookahead: {required: true}"]),
    "check_not_bool": ("gates:\n  lookahead: {required: yes please}\n", ["must be true or false"]),
    "two_ops": ("gates:\n  pbo: {min: 0, max: 1}\n", ["exactly one of min, max or required"]),
    "no_op": ("gates:\n  pbo: {}\n", ["exactly one of min, max or required"]),
    "not_a_mapping": ("gates:\n  pbo: 0.5\n", ["gates.pbo must be a mapping like"]),
    "duplicate": ("gates:\n  pbo: {max: 0.5}\n  pbo: {max: 0.9}\n", ["key 'pbo' is given twice"]),
    "top_level_typo": ("gate:\n  pbo: {max: 0.5}\n",
                       ["unknown top-level key 'gate'", "did you mean 'gates'"]),
    "no_gates": ("- pbo\n", ["expected a top-level 'gates:' mapping"]),
    "empty": ("gates: {}\n", ["list at least one gate"]),
}


@pytest.mark.parametrize("case", sorted(BAD_GATES))
def test_bad_gates_files_are_one_line_naming_file_key_and_fix(tmp_path: Path, case: str) -> None:
    text, expected = BAD_GATES[case]
    f = tmp_path / f"{case}.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_gates(f)
    msg = one_line(exc)
    assert str(f) in msg
    for part in expected:
        assert part in msg, msg


def test_a_missing_gates_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_gates(tmp_path / "nope.yaml")
    assert "nope.yaml does not exist" in one_line(exc)


# ------------------------------------------------------------------------------ promoting a run


def test_a_passing_run_becomes_v1_with_the_last_folds_params(env: dict, reg: Registry) -> None:
    res = go(env, "a", reg)
    run = load_run(env["a"], env["runs"])
    a = res.artifact
    assert res.promoted and not res.already_current and res.passed
    assert a.name == NAME and a.version == 1 and a.ref == f"{NAME}@v1"
    assert a.path == reg.root / NAME / "v1.json" and a.path.exists()
    # the parameters are the last fold's, merged with the fixed ones and validated
    last = run.folds.iloc[-1]
    expected = {p: last[f"param_{p}"].item() for p in ("fast", "slow", "short")}
    assert a.params == expected and a.params["short"] is False
    assert a.params_fold == 2 and [f["fold"] for f in a.fold_params] == [0, 1, 2]
    table = run.folds[["param_fast", "param_slow", "param_short"]].rename(columns=lambda c: c[6:])
    assert [f["params"] for f in a.fold_params] == table.to_dict("records")
    # market, costs and data as the run recorded them
    s = run.settings
    assert (a.strategy, a.symbols, a.timeframe, a.calendar) == ("sma_cross", ["BTC/USDT"], "1h", "24/7")
    assert a.periods_per_year == s["periods_per_year"] and a.costs == s["costs"] and a.sizing == s["sizing"]
    assert (a.fill, a.direction, a.init_cash, a.max_exposure) == ("next_open", "both", 100_000.0, 1.0)
    assert a.data == s["data"] and a.data["fingerprint"].startswith("sha256:")
    assert a.lookback == signal_lookback(get_strategy("sma_cross"), a.params)
    assert a.run_id == env["a"] and a.code_version == code_version()
    assert a.run_code_version == run.inputs["code_version"]
    assert pd.Timestamp(a.created_at).tzname() == "UTC" and not a.forced and a.force_reason is None
    # every verdict, with the run's values
    values = run_values(run.diagnostics)
    names = ["oos_sharpe", "deflated_sharpe", "sharpe_p_value", "pbo", "oos_trades", "oos_max_drawdown",
             "lookahead", "data_fingerprint"]
    assert [g["name"] for g in a.gates] == names and [v.name for v in res.verdicts] == names
    for g in a.gates:
        assert set(g) == {"name", "op", "threshold", "value", "passed", "detail"} and g["passed"] is True
        if g["name"] in values:
            assert g["value"] == pytest.approx(values[g["name"]])
    assert a.evidence["data_fingerprint"]["match"] is True
    assert a.evidence["data_fingerprint"]["lake"] == s["data"]["fingerprint"]
    assert a.evidence["lookahead"]["ok"] is True and a.evidence["lookahead"]["symbols"]["BTC/USDT"]["ok"]
    assert a.gates_file["path"] == str(env["lenient"].resolve())
    assert a.gates_file["sha256"] == hashlib.sha256(env["lenient"].read_bytes()).hexdigest()
    # on disk: readable JSON equal to the artifact, CURRENT and one history line
    on_disk = json.loads(a.path.read_text())
    assert on_disk == a.to_dict() and list(on_disk)[:3] == ["name", "version", "strategy"]
    assert "path" not in on_disk and a.path.read_text().startswith('{\n  "name"')
    assert (reg.root / NAME / "CURRENT").read_text().strip() == "1"
    (line,) = reg.history(NAME)
    assert line["action"] == "promote" and line["version"] == 1 and line["run_id"] == env["a"]
    assert Artifact.from_dict(on_disk) == a
    assert a.costs_obj() == Costs(**s["costs"]) and isinstance(a.sizing_obj(), Sizing)
    assert a.sizing_obj().kind is SizingKind.FIXED


def test_a_refused_run_lists_its_failed_gates_and_writes_nothing(env: dict, reg: Registry) -> None:
    with pytest.raises(PromotionRejected) as exc:
        go(env, "a", reg, gates=None)  # the built-in (strict) gates
    msg = one_line(exc)
    verdicts = exc.value.verdicts  # type: ignore[attr-defined]
    failed = [v for v in verdicts if not v.passed]
    assert failed and len(verdicts) == len(DEFAULT_GATES)
    assert f"failed {len(failed)} promotion gate(s)" in msg and "--force --reason" in msg
    for v in failed:
        assert v.failure() in msg
    for v in verdicts:
        if v.passed:
            assert f"{v.name}=" not in msg
    assert not reg.root.exists()


def test_a_dry_run_evaluates_without_writing(env: dict, reg: Registry) -> None:
    res = go(env, "a", reg, gates=None, dry_run=True)
    assert res.artifact is None and not res.promoted and res.failed and not reg.root.exists()


def test_forcing_needs_a_reason_and_is_recorded(env: dict, reg: Registry) -> None:
    for reason in (None, "", "   "):
        with pytest.raises(ConfigError) as exc:
            go(env, "a", reg, gates=None, force=True, reason=reason)
        assert "a forced promotion needs --reason '...'" in one_line(exc)
    assert not reg.root.exists()
    res = go(env, "a", reg, gates=None, force=True, reason="paper-test the idea despite few trades")
    a = res.artifact
    assert res.promoted and a.forced and a.force_reason == "paper-test the idea despite few trades"
    assert a.failed_gates == [v.name for v in res.failed] and a.failed_gates
    assert a.gates_file["path"] is None and a.gates_file["builtin"] is True
    (line,) = reg.history(NAME)
    assert line["forced"] is True and line["reason"] == "paper-test the idea despite few trades"


def test_versions_current_idempotence_rollback_and_diff(env: dict, reg: Registry) -> None:
    v1 = go(env, "a", reg).artifact
    again = go(env, "a", reg)
    assert again.already_current and not again.promoted and again.artifact.version == 1
    assert reg.versions(NAME) == [1] and len(reg.history(NAME)) == 1
    v2 = go(env, "b", reg).artifact
    assert v2.version == 2 and reg.current(NAME) == 2 and reg.versions(NAME) == [1, 2]
    assert go(env, "b", reg).already_current
    # a different gates file changes the verdicts: a new version of the same run
    v3 = go(env, "b", reg, gates=env["lenient2"]).artifact
    assert v3.version == 3 and v3.run_id == v2.run_id
    # rollback: to the version below, then to a chosen one; each logged with its reason
    back = reg.rollback(NAME, reason="v3's gates were a mistake")
    assert back.version == 2 and reg.current(NAME) == 2 and load_artifact(NAME, reg).version == 2
    assert reg.rollback(NAME, reason="older").version == 1
    with pytest.raises(ConfigError) as exc:
        reg.rollback(NAME, reason="again")
    assert "nothing to roll back to" in one_line(exc)
    assert reg.rollback(NAME, 3, reason="forward again").version == 3 and reg.current(NAME) == 3
    hist = reg.history(NAME)
    assert [h["action"] for h in hist] == ["promote"] * 3 + ["rollback"] * 3
    assert (hist[3]["version"], hist[3]["previous"], hist[3]["reason"]) == (2, 3, "v3's gates were a mistake")
    for bad, expected in (({"version": 9}, "has no version 9; it has v1, v2, v3 (current v3)"),
                          ({"version": 3}, "v3 is already the current version"),
                          ({"reason": " "}, "a rollback needs a reason")):
        with pytest.raises(ConfigError) as exc:
            reg.rollback(NAME, **{"reason": "r", **bad})
        assert expected in one_line(exc)
    # a re-promotion of a run that is not current writes a new version
    assert go(env, "a", reg).artifact.version == 4
    # diff: flattened fields that differ
    diff = {k: (a, b) for k, a, b in reg.diff(f"{NAME}@1", f"{NAME}@v2")}
    assert diff["run_id"] == (v1.run_id, v2.run_id) and diff["version"] == (1, 2)
    assert "strategy" not in diff and "costs.fees" not in diff
    assert any(k.startswith("gates[oos_sharpe].") for k in diff)
    if v1.params != v2.params:
        assert any(k.startswith("params.") for k in diff)
    assert reg.diff(f"{NAME}@1", str(v1.path)) == []
    # the listing
    table = reg.list()
    assert list(table["version"]) == [1, 2, 3, 4] and list(table["current"]) == [False, False, False, True]
    assert set(table["run_id"]) == {env["a"], env["b"]} and (table["name"] == NAME).all()
    assert {"strategy", "created_at", "forced", "oos_sharpe", "gates"} <= set(table.columns)


def test_artifacts_load_by_every_reference_form(env: dict, reg: Registry) -> None:
    go(env, "a", reg)
    go(env, "b", reg)
    assert load_artifact(NAME, reg).version == 2
    assert reg.get(f"{NAME}@1").version == reg.get(f"{NAME}@v1").version == 1
    path = reg.root / NAME / "v1.json"
    assert reg.get(str(path)) == reg.get(path) == reg.get(f"{NAME}@1")
    assert reg.get(path).path == path


def test_unknown_references_name_what_exists(env: dict, reg: Registry, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        reg.get("anything")
    assert "registry" in one_line(exc) and "is empty" in one_line(exc)
    go(env, "a", reg)
    cases = {"sma_cross-btc_usdt-1d": ["no promoted strategy", f"did you mean '{NAME}'", f"promoted: {NAME}"],
             f"{NAME}@7": [f"{NAME} has no version 7; it has v1 (current v1)"],
             f"{NAME}@x": ["cannot read artifact reference", "write name, name@3 or a path"],
             str(tmp_path / "nope.json"): ["nope.json does not exist"]}
    for ref, expected in cases.items():
        with pytest.raises(ConfigError) as exc:
            reg.get(ref)
        msg = one_line(exc)
        for part in expected:
            assert part in msg, msg
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError) as exc:
        reg.get(broken)
    assert "is unreadable" in one_line(exc)


def test_unknown_run_and_bad_names_are_config_errors(env: dict, reg: Registry) -> None:
    with pytest.raises(ConfigError) as exc:
        go(env, "wf-nope", reg)
    assert "no walk-forward run 'wf-nope'" in one_line(exc) and "optimize runs" in one_line(exc)
    with pytest.raises(ConfigError) as exc:
        go(env, "a", reg, name="../elsewhere")
    assert "artifact name '../elsewhere' is not valid" in one_line(exc)
    assert not reg.root.exists()
    assert go(env, "a", reg, name="btc.trend-1").artifact.ref == "btc.trend-1@v1"


def test_the_lookahead_gate_refuses_a_peeking_strategy(env: dict, reg: Registry,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_RESEARCH_DIR", str(env["research"]))
    with pytest.raises(PromotionRejected) as exc:
        go(env, "peek", reg)
    msg = one_line(exc)
    assert "lookahead=no (required yes)" in msg
    (la,) = [v for v in exc.value.verdicts if v.name == "lookahead"]  # type: ignore[attr-defined]
    assert la.value is False and "violation" in la.detail and "BTC/USDT" in la.detail
    assert not reg.root.exists()


def test_the_fingerprint_gate_fails_when_the_lake_changed_or_is_empty(env: dict, reg: Registry,
                                                                      tmp_path: Path) -> None:
    changed = write_lake(tmp_path / "changed", bump=500)
    res = go(env, "a", reg, lake=changed, dry_run=True)
    v = {x.name: x for x in res.verdicts}
    assert v["data_fingerprint"].value is False and "lake bars differ" in v["data_fingerprint"].detail
    assert v["lookahead"].passed
    empty = Lake(tmp_path / "empty")
    with pytest.raises(PromotionRejected) as exc:
        go(env, "a", reg, lake=empty)
    v = {x.name: x for x in exc.value.verdicts}  # type: ignore[attr-defined]
    assert v["data_fingerprint"].detail.startswith("bars unavailable:") and not v["data_fingerprint"].passed
    assert v["lookahead"].value is None and v["lookahead"].detail.startswith("not checked:")
    assert "data_fingerprint=no (required yes)" in one_line(exc) and "lookahead=n/a" in one_line(exc)


def test_params_come_from_the_latest_fold_that_chose_some() -> None:
    strat = get_strategy("sma_cross")
    folds = pd.DataFrame({"fold": [0, 1, 2], "best_trial": [3.0, 5.0, math.nan],
                          "param_fast": [10.0, 20.0, math.nan], "param_slow": [50.0, 60.0, math.nan],
                          "param_short": [True, False, None], "is_sharpe": [1.0, 2.0, math.nan],
                          "oos_sharpe": [0.5, 0.1, math.nan]})
    params, fold, table = promoted_params(folds, {"fixed": {}}, strat)
    assert (params, fold) == ({"fast": 20, "slow": 60, "short": False}, 1)
    assert table[2]["params"] is None and table[0]["params"]["fast"] == 10
    params, _, _ = promoted_params(folds, {"fixed": {"short": True}}, strat)
    assert params["short"] is True
    with pytest.raises(ConfigError) as exc:
        promoted_params(folds.assign(best_trial=math.nan), {"fixed": {}}, strat)
    assert "chose no parameters in any fold" in one_line(exc)


# ------------------------------------------------------------------------------------ concurrency


def test_a_version_file_is_never_overwritten(env: dict, reg: Registry, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    first = go(env, "a", reg).artifact
    before = first.path.read_bytes()
    assert not exclusive_write(first.path, "{}")
    assert first.path.read_bytes() == before
    # a writer with a stale view of the versions (as without the lock) skips to a free number
    monkeypatch.setattr(Registry, "versions", lambda self, name: [])
    second = go(env, "b", reg).artifact
    assert second.version == 2 and first.path.read_bytes() == before
    assert sorted(p.name for p in (reg.root / NAME).glob("v*.json")) == ["v1.json", "v2.json"]
    assert not list((reg.root / NAME).glob(".*tmp*"))


def test_concurrent_promotions_in_threads_get_distinct_versions(env: dict, reg: Registry) -> None:
    # numeric gates only: Lake.read_bars silences a duckdb warning with warnings.catch_warnings(),
    # which is not thread-safe, so the lake checks run in the processes test below
    results: list = []
    errors: list = []

    def job(run: str, gates: str) -> None:
        try:
            results.append(go(env, run, reg, gates=env[gates]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(r, g)) for r in ("a", "b") for g in ("numbers", "numbers2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(r.artifact.version for r in results) == [1, 2, 3, 4] and all(r.promoted for r in results)
    assert reg.versions(NAME) == [1, 2, 3, 4] and reg.current(NAME) in (1, 2, 3, 4)
    hist = reg.history(NAME)
    assert sorted(h["version"] for h in hist) == [1, 2, 3, 4]
    assert reg.current(NAME) == hist[-1]["version"]


def test_concurrent_promotions_in_processes_get_distinct_versions(env: dict, reg: Registry) -> None:
    script = textwrap.dedent("""
        import sys
        from workbench import Lake
        from workbench.promote import Registry, promote
        run, gates, data, registry = sys.argv[1:]
        res = promote(run, gates=gates, lake=Lake(data), registry=Registry(registry),
                      runs_root=data + "/runs")
        print(res.artifact.version)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, env[r], str(env["lenient"]),
                               str(env["root"] / "data"), str(reg.root)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=TESTS)
             for r in ("a", "b")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert sorted(int(o[0].strip()) for o in outs) == [1, 2]
    assert reg.versions(NAME) == [1, 2]
    assert {reg.get(f"{NAME}@{v}").run_id for v in (1, 2)} == {env["a"], env["b"]}
