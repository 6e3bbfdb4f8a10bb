"""Books: two promoted artifacts combined by an allocator over their out-of-sample returns. The shares equal
skfolio's own fit on the returns lined up by hand, the book's backtest is the sum of independent backtests
of each member on its share, the book is promoted as one artifact, and the paper runner trades it as its
members, each replaying its backtest trade for trade."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_runner import invoke

from workbench import Lake
from workbench.backtest import Allocator, backtest, load_bars
from workbench.data.sources.synthetic import SyntheticSource
from workbench.errors import ConfigError, DataError
from workbench.optimize import load_run, save_run, walk_forward
from workbench.paper.replay import replay
from workbench.paper.service import specs_from_artifact
from workbench.promote import Registry, promote
from workbench.promote.book import combine

START, END = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A lake of BTC/USDT and ETH/USDT 1h bars, sma_cross promoted on one and donchian_breakout on the
    other (forced past the gates: the book's arithmetic is under test, not their merit)."""
    root = tmp_path_factory.mktemp("book")
    lake = Lake(root / "data")
    for sym in ("BTC/USDT", "ETH/USDT"):
        lake.write_bars("synthetic", sym, "1h", SyntheticSource(seed=7).bars(sym, "1h", START, END))
    reg = Registry(root / "data" / "registry")
    refs = []
    for strategy, sym in (("sma_cross", "BTC/USDT"), ("donchian_breakout", "ETH/USDT")):
        res = walk_forward(strategy, load_bars(lake, [sym], "1h"), folds=3, n_trials=6, seed=0, save=False,
                           storage=str(root / f"{strategy}.journal"))
        save_run(res, root / "data" / "runs")
        art = promote(res.run_id, lake=lake, registry=reg, runs_root=root / "data" / "runs", force=True,
                      reason="test member", gates=None).artifact
        refs.append(art.ref)
    return {"root": root, "lake": lake, "reg": reg, "refs": refs, "runs": root / "data" / "runs"}


def _book(env: dict, allocator: Allocator, **kw):  # type: ignore[no-untyped-def]
    return combine(env["refs"], allocator, name=kw.pop("name", "demo_book"), registry=env["reg"],
                   runs_root=env["runs"], lake=env["lake"], **kw)


def _oos_by_hand(env: dict) -> pd.DataFrame:
    eqs = {r: load_run(env["reg"].get(r).run_id, env["runs"]).oos_equity for r in env["refs"]}
    start = max(e.index[0] for e in eqs.values())
    end = min(e.index[-1] for e in eqs.values())
    both = pd.concat(eqs, axis=1).sort_index().ffill()
    both = both[(both.index >= start) & (both.index <= end)]
    return both.pct_change().iloc[1:].fillna(0.0)


def test_shares_equal_skfolios_fit_on_the_out_of_sample_returns(env: dict) -> None:
    from skfolio.moments import EmpiricalCovariance
    from skfolio.optimization import InverseVolatility
    from skfolio.prior import EmpiricalPrior

    book = _book(env, Allocator(method="inverse_vol", window=300, covariance="empirical"), promote=False)
    returns = _oos_by_hand(env)
    pd.testing.assert_frame_equal(book.oos_returns, returns, check_names=False, check_freq=False)
    model = InverseVolatility(prior_estimator=EmpiricalPrior(covariance_estimator=EmpiricalCovariance()))
    model.fit(returns.iloc[-300:].to_numpy())
    np.testing.assert_allclose(book.shares.to_numpy(), model.weights_, rtol=1e-12)
    assert book.shares.sum() == pytest.approx(1.0)


def test_the_book_backtest_is_its_members_backtests_on_their_shares(env: dict) -> None:
    book = _book(env, Allocator(method="equal", window=300, gross=0.8), capital=50_000.0, promote=False)
    total = None
    for ref in env["refs"]:
        art = env["reg"].get(ref)
        bars = load_bars(env["lake"], list(art.symbols), "1h")
        bt = backtest(art.strategy, bars, dict(art.params),
                      execution=art.execution.replace(init_cash=50_000.0 * 0.4))
        eq = bt.equity.reindex(book.equity.index)
        total = eq if total is None else total + eq
    assert total is not None
    np.testing.assert_allclose(book.equity.to_numpy(), total.to_numpy() + 50_000.0 * 0.2, rtol=1e-12)
    assert book.metrics["total_return"] == pytest.approx(book.equity.iloc[-1] / book.equity.iloc[0] - 1)


def test_a_book_is_promoted_once_and_traded_as_its_members_with_their_parity(env: dict,
                                                                           tmp_path: Path) -> None:
    res = _book(env, Allocator(method="inverse_vol", window=300), capital=80_000.0)
    art = res.artifact
    assert res.promoted and art is not None and art.strategy == "book" and art.version == 1
    assert [m["ref"] for m in art.members] == env["refs"]
    again = _book(env, Allocator(method="inverse_vol", window=300), capital=80_000.0)
    assert not again.promoted and again.artifact is not None and again.artifact.version == 1
    specs = specs_from_artifact(env["reg"].get(art.ref))
    assert [s.name.split("/", 1)[0] for s in specs] == [art.ref, art.ref]
    assert sum(s.capital for s in specs) == pytest.approx(80_000.0)
    for spec, share in zip(specs, res.shares, strict=True):
        assert spec.capital == pytest.approx(80_000.0 * share)
        rep = replay(spec, "2024-03-01", "2024-03-20", lake=env["lake"], workdir=tmp_path / spec.symbols[0])
        assert rep.parity.ok, rep.parity.summary()
    with pytest.raises(ConfigError, match="is a book"):
        art.strategy_obj()
    # a paper config trading the book runs its members, each on its share
    from workbench.paper.service import draft_config, session_specs

    _text, config = draft_config(name="book_session", artifacts=[art.ref], registry=env["reg"])
    session = session_specs(config, [env["reg"].get(art.ref)])
    assert [s.name for s in session] == [s.name for s in specs]


def test_bad_books_are_one_line(env: dict) -> None:
    with pytest.raises(ConfigError, match="at least two different"):
        combine(env["refs"][:1], Allocator(), name="b", registry=env["reg"], runs_root=env["runs"])
    with pytest.raises(DataError, match=r"window=5000"):
        _book(env, Allocator(method="equal", window=5000), promote=False)
    with pytest.raises(ConfigError, match=r"gross=1\.5"):
        _book(env, Allocator(method="equal", window=100, gross=1.5), promote=False)
    book = _book(env, Allocator(method="equal", window=100), name="inner")
    assert book.artifact is not None
    with pytest.raises(ConfigError, match="is a book itself"):
        combine([book.artifact.ref, env["refs"][0]], Allocator(), name="outer", registry=env["reg"],
                runs_root=env["runs"])


def test_the_command_line_combines_a_book_and_refuses_a_bad_one_in_one_line(env: dict) -> None:
    data = env["root"] / "data"
    ok = invoke(["promote", "book", "--members", ",".join(env["refs"]), "--name", "cli_book",
                 "--allocator", "equal", "--window", "200", "--capital", "10000"], data=data)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "promoted cli_book@v1" in ok.stdout and "50.00%" in ok.stdout
    assert env["reg"].get("cli_book").members[0]["ref"] == env["refs"][0]
    shown = invoke(["promote", "show", "cli_book"], data=data)
    assert shown.returncode == 0 and ", ".join(env["refs"]) in shown.stdout, shown.stdout
    assert "5,000.00" in shown.stdout and "out of sample" in shown.stdout
    listed = invoke(["promote", "ls"], data=data)
    assert listed.returncode == 0 and "cli_book" in listed.stdout
    bad = invoke(["promote", "book", "--members", env["refs"][0], "--name", "x"], data=data)
    assert bad.returncode == 1 and "at least two different" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
