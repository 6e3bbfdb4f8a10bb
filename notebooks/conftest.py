"""nbval runs every template here with its default (demo) parameters against a small seeded lake.

Built before collection (kernels inherit the environment when they start), like `make demo` but
smaller: 1h synthetic BTC/USDT for the first half of 2025 (the range the templates' defaults
read), the demo equities' daily bars for 2022-2025 (what `portfolio_research` reads), a walk-forward
run promoted with a recorded reason, a paper replay's journal, and a model `demo_gbm` trained and
then retrained through the model gates (what `model_monitor` reads).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd


def pytest_configure(config: object) -> None:
    if os.environ.get("WORKBENCH_NOTEBOOK_DATA"):
        os.environ["WORKBENCH_DATA_DIR"] = os.environ["WORKBENCH_NOTEBOOK_DATA"]
        return
    from workbench.data.lake import Lake
    from workbench.data.sources.synthetic import DEMO_EQUITY, SyntheticSource

    root = Path(tempfile.mkdtemp(prefix="workbench-notebooks-")) / "data"
    lake = Lake(root)
    src = SyntheticSource(seed=7)
    start, end = pd.Timestamp("2025-01-01", tz="UTC"), pd.Timestamp("2025-07-01", tz="UTC")
    lake.write_bars("synthetic", "BTC/USDT", "1h", src.bars("BTC/USDT", "1h", start, end))
    for symbol in DEMO_EQUITY:
        lake.write_bars("synthetic", symbol, "1d", src.bars(symbol, "1d", "2022-01-01", "2026-01-01"))
    os.environ["WORKBENCH_DATA_DIR"] = str(root)
    os.environ["WORKBENCH_NOTEBOOK_DATA"] = str(root)  # pytest-xdist's workers, started later, reuse it
    from workbench.backtest import load_bars
    from workbench.optimize import WalkForward, walk_forward
    from workbench.paper.replay import replay
    from workbench.paper.runner import StrategySpec
    from workbench.promote import promote

    bars = load_bars(lake, ["BTC/USDT"], "1h")
    wf = walk_forward("sma_cross", bars, splitter=WalkForward(n_folds=3), n_trials=8, seed=7,
                      fixed={"short": False}, min_trades=1)
    art = promote(wf.run_id, force=True, reason="the notebooks' test fixture", lake=lake).artifact
    replay(StrategySpec.from_artifact(art), "2025-05-01", "2025-06-01", lake=lake,
           workdir=root / "paper" / "replay" / "fixture")
    from workbench.models.training import TrainSpec, train_model
    from workbench.promote.models import retrain

    spec = TrainSpec.model_validate({
        "name": "demo_gbm", "symbols": ["BTC/USDT"], "timeframe": "1h", "end": "2025-04-01",
        "features": ["ret(1)", "ret(6)", "vol(24)|zscore(250)", "rsi(14)", "hour_sin"],
        "label": {"kind": "triple_barrier", "horizon": 24, "pt": 2.0, "sl": 2.0, "vol_window": 48},
        "model": "lightgbm", "params": {"n_estimators": 40, "num_leaves": 8}, "seed": 7})
    train_model(lake, spec)
    retrain(lake, spec, end="2025-05-01")
