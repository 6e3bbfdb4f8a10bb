"""The MLflow UI opens on the workbench's model store: `mlflow server` on the SQLite file in the data
folder serves the registered model over its REST API and in its web UI (headless Chromium, nothing
loaded from beyond 127.0.0.1)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from test_report_browser import CHROMIUM_ARGS, _chromium, _is_local, _unavailable

from workbench import Lake
from workbench.models.registry import ModelRegistry, tracking_uri
from workbench.models.training import TrainSpec, train_model

pytestmark = pytest.mark.network


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_mlflow_ui_shows_a_registered_model_from_the_data_folder(lake: Lake) -> None:
    from workbench.data.sources.synthetic import SyntheticSource

    start, end = pd.Timestamp("2025-01-01", tz="UTC"), pd.Timestamp("2025-02-15", tz="UTC")
    lake.write_bars("synthetic", "BTC/USDT", "1h", SyntheticSource(seed=2).bars("BTC/USDT", "1h", start, end))
    uri = tracking_uri()  # the default: SQLite in the data folder
    assert uri == f"sqlite:///{(lake.root / 'mlflow' / 'mlflow.db').resolve()}"
    spec = TrainSpec.model_validate({"name": "ui_model", "symbols": ["BTC/USDT"], "timeframe": "1h",
                                     "features": ["ret(1)", "rsi(14)"], "label": {"kind": "fixed_horizon",
                                                                                 "horizon": 6},
                                     "model": "logistic", "cv": {"n_splits": 3}})
    registry = ModelRegistry(uri)  # creates the store
    port = _free_port()
    mlflow = str(Path(sys.executable).parent / "mlflow")
    server = subprocess.Popen([mlflow, "server", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port",
                               str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        train_model(lake, spec, registry=registry)  # while the server starts
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {server.stderr.read() if server.stderr else ''}")
            time.sleep(0.5)
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/registered-models/get?name=ui_model") as r:
            model = json.load(r)["registered_model"]
        assert model["name"] == "ui_model" and {a["alias"] for a in model["aliases"]} == {"champion"}
        executable = _chromium()
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            _unavailable("playwright is not installed: pip install -e '.[dev]'")
        remote: list[str] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 900})

                def route(r: object) -> None:
                    url = r.request.url  # type: ignore[attr-defined]
                    if _is_local(url):
                        r.continue_()  # type: ignore[attr-defined]
                    else:
                        remote.append(url)
                        r.abort()  # type: ignore[attr-defined]

                context.route("**/*", route)
                page = context.new_page()
                page.goto(f"{base}/#/models/ui_model", wait_until="load")
                page.wait_for_selector("text=ui_model", timeout=60_000)
                page.wait_for_selector("text=Version 1", timeout=60_000)
            finally:
                browser.close()
        assert remote == []  # the UI asked for nothing beyond 127.0.0.1 (it would have been blocked)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
