"""`workbench collect`, `collect status` and `data prune` as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import WB, invoke
from servers.binance_stream import FakeBinance, wait_until

from workbench.data.lake import Lake

pytestmark = pytest.mark.network


@pytest.fixture
def venue() -> Iterator[dict[str, str]]:
    with FakeBinance(seed=2, rate=40) as fake:
        yield {"WORKBENCH_CCXT_BASE_URL": fake.rest.url, "WORKBENCH_CCXT_WS_URL": fake.ws.ws_url}


def test_collect_runs_for_a_duration_then_status_and_prune_describe_it(tmp_path: Path,
                                                                        venue: dict[str, str]) -> None:
    res = invoke(["collect", "--source", "ccxt:binance", "--symbols", "BTC/USDT,ETH/USDT", "--streams",
                  "trades,book", "--book-depth", "3", "--duration", "1.5"], data=tmp_path, env=venue)
    assert res.returncode == 0, res.stderr
    assert "collected" in res.stdout and "trades" in res.stdout and "0 gaps" in res.stdout
    assert len(Lake(tmp_path).read_trades("binance", "BTC/USDT")) > 5
    status = invoke(["collect", "status"], data=tmp_path)
    assert status.returncode == 0 and "stopped" in status.stdout and "BTC/USDT,ETH/USDT" in status.stdout
    pruned = invoke(["data", "prune", "--kind", "book", "--older-than", "30d"], data=tmp_path)
    assert pruned.returncode == 0 and "pruned 0 symbol-days of book" in pruned.stdout
    assert len(Lake(tmp_path).read_book("binance", "BTC/USDT")) > 0


@pytest.mark.parametrize(("args", "needle"), [
    (["collect", "--source", "ccxt:binance", "--symbols", "BTC/USDT", "--streams", "trade"],
     "'trade' is not one of the choices (did you mean 'trades'?)"),
    (["collect", "--symbols", "BTC/USDT"], "say what to collect: --source and --symbols"),
    (["collect", "--source", "ccxt:binance", "--symbols", "BTC/USDT", "--duration", "0"],
     "duration must be positive"),
    (["collect", "--source", "ccxt:binance", "--symbols", "NOPE/USDT", "--duration", "1"],
     "unknown symbol 'NOPE/USDT' on binance"),
    (["collect", "--source", "kraken2", "--symbols", "X"], "unknown live source 'kraken2'"),
    (["collect", "--symbols", "BTC/USDT", "status"], "--symbols have no effect on `collect status`"),
    (["data", "prune", "--kind", "bars", "--older-than", "30d"], "bars are kept forever"),
    (["data", "prune", "--kind", "book", "--older-than", "30 days"], "bad age '30 days'"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path: Path, venue: dict[str, str], args: list[str],
                                          needle: str) -> None:
    res = invoke(args, data=tmp_path, env=venue)
    assert res.returncode == 1
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "lake" / "ticks" / "trades").exists()


def test_a_config_file_is_validated_with_file_and_line(tmp_path: Path, venue: dict[str, str]) -> None:
    cfg = tmp_path / "collect.yaml"
    cfg.write_text("source: ccxt:binance\nsymbols: [BTC/USDT]\nstreams: [trades]\nbook_dept: 5\n")
    res = invoke(["collect", "--config", str(cfg), "--duration", "1"], data=tmp_path, env=venue)
    assert res.returncode == 1
    assert f"{cfg}:4" in res.stderr and "unknown key 'book_dept' (did you mean 'book_depth'?)" in res.stderr
    both = invoke(["collect", "--config", str(cfg), "--symbols", "ETH/USDT"], data=tmp_path, env=venue)
    assert both.returncode == 1 and "both say what to collect" in both.stderr


def test_sigterm_stops_a_real_collector_cleanly(tmp_path: Path, venue: dict[str, str]) -> None:
    env = {**os.environ, **venue, "WORKBENCH_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen([*WB, "collect", "--source", "ccxt:binance", "--symbols", "BTC/USDT"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lake = Lake(tmp_path)
    wait_until(lambda: len(lake.read_trades("binance", "BTC/USDT")) > 5, 30, "trades from the process")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "collected" in stdout and "Traceback" not in stderr
    assert lake.ticks.segments("binance", "trades") == []  # flushed and compacted on the way out
    status = invoke(["collect", "status"], data=tmp_path)
    assert "stopped" in status.stdout


def test_the_shipped_collect_config_is_valid() -> None:
    from workbench.data.collector import load_collect_config

    s = load_collect_config(Path(__file__).resolve().parents[1] / "pipelines" / "collect.yaml")
    assert s.source == "ccxt:binance" and s.streams == ["trades", "quotes", "book"]
