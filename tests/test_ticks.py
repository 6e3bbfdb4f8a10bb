"""The tick tables: the write-ahead log, compaction, merges, readers, crashes, retention, checks."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.data.lake import Lake
from workbench.data.quality import TickIssue
from workbench.data.ticks import TickKind, TickStore, TickWriter
from workbench.errors import ConfigError

T0 = pd.Timestamp("2026-03-02 23:59:00", tz="UTC").value  # a minute before midnight: two days
# Days after today are never merged unasked (past days are, by every compaction): states stay put
FUTURE = pd.Timestamp("2099-03-02 12:00:00", tz="UTC").value


def trade(i: int, sym: str = "BTC/USDT", *, dt_ns: int = 20_000_000, t0: int = T0) -> tuple[object, ...]:
    ts = t0 + i * dt_ns
    return (ts, ts + 1_000_000, sym, i, 100.0 + (i % 7) * 0.5, 0.1 + (i % 3), "buy" if i % 2 else "sell")


def test_rows_are_readable_while_logged_and_once_after_compaction(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    with TickWriter(lake.ticks, "binance", segment_seconds=3600) as w:
        w.extend(TickKind.TRADES, [trade(i) for i in range(5000)] + [trade(i, "ETH/USDT") for i in range(10)])
        w.flush()
        live = lake.read_trades("binance", "BTC/USDT")  # still in the log, open segment
        assert len(live) == 5000 and live["trade_id"].tolist() == list(range(5000))
        assert not any(lake.ticks.root.glob("trades/**/*.parquet"))
    root = lake.ticks.root
    parts = sorted(p.relative_to(root).as_posix() for p in root.glob("trades/**/*.parquet"))
    # 5000 trades 20 ms apart from 23:59: two UTC days, one part per symbol and day
    assert parts == [
        "trades/source=binance/symbol=BTC%2FUSDT/date=2026-03-02/p-0000000001-0000000001.parquet",
        "trades/source=binance/symbol=BTC%2FUSDT/date=2026-03-03/p-0000000001-0000000001.parquet",
        "trades/source=binance/symbol=ETH%2FUSDT/date=2026-03-02/p-0000000001-0000000001.parquet",
    ]
    assert lake.ticks.segments("binance", TickKind.TRADES) == []
    df = lake.read_trades("binance", ["BTC/USDT", "ETH/USDT"])
    assert len(df) == 5010 and df["ts"].is_monotonic_increasing
    assert str(df["ts"].dtype) == "datetime64[ns, UTC]" and str(df["recv_ts"].dtype) == "datetime64[ns, UTC]"
    one = lake.read_trades("binance", "BTC/USDT", "2026-03-03", "2026-03-03 00:00:01")
    expected = [i for i in range(5000) if T0 + i * 20_000_000 >= pd.Timestamp("2026-03-03", tz="UTC").value
                and T0 + i * 20_000_000 < pd.Timestamp("2026-03-03 00:00:01", tz="UTC").value]
    assert one["trade_id"].tolist() == expected and len(expected) == 50
    row = df[(df.symbol == "BTC/USDT") & (df.trade_id == 3)].iloc[0]
    assert (row["price"], row["size"], row["side"]) == (101.5, 0.1, "buy")
    assert row.ts == pd.Timestamp(T0 + 60_000_000, unit="ns", tz="UTC")


def test_a_trade_received_twice_is_stored_once(tmp_path: Path) -> None:
    """The stream and a REST backfill overlap: the same trade id arrives twice, in two segments."""
    store = TickStore(tmp_path)
    with TickWriter(store, "alpaca", segment_seconds=3600) as w:
        w.extend(TickKind.TRADES, [trade(i, t0=FUTURE) for i in range(100)])
    with TickWriter(store, "alpaca", segment_seconds=3600) as w:
        late = [(*trade(i, t0=FUTURE)[:1], trade(i, t0=FUTURE)[1] + 5_000_000_000, *trade(i, t0=FUTURE)[2:])
                for i in range(50, 150)]
        w.extend(TickKind.TRADES, late)
        w.flush()
        assert store.read("trades", "alpaca", "BTC/USDT")["trade_id"].tolist() == list(range(150))
    df = store.read("trades", "alpaca", "BTC/USDT")
    assert df["trade_id"].tolist() == list(range(150))
    # the first receipt wins
    assert (df["recv_ts"] - df["ts"]).max() == pd.Timedelta(5_000_000_000, "ns") + pd.Timedelta(1, "ms")
    assert (df.set_index("trade_id").loc[60, "recv_ts"] - df.set_index("trade_id").loc[60, "ts"]
            ) == pd.Timedelta(1, "ms")
    res = store.compact("alpaca", merge_all=True)
    assert res.parts_merged == 2 and res.duplicates_dropped == 50
    assert store.read("trades", "alpaca", "BTC/USDT")["trade_id"].tolist() == list(range(150))


def test_every_crash_point_of_a_compaction_or_merge_leaves_each_row_once(tmp_path: Path) -> None:
    """The states a SIGKILL can leave, made with real files: parts written but the log not yet
    deleted; a merged part written but its inputs not yet deleted. Reads and reruns see each row once."""
    store = TickStore(tmp_path)
    wal = store.wal_dir("binance")
    for rnd in range(3):  # three runs: three segments, three parts per partition
        w = TickWriter(store, "binance", segment_seconds=3600)
        w.open()
        w.extend(TickKind.TRADES, [trade(i, t0=FUTURE) for i in range(rnd * 100, rnd * 100 + 100)])
        w.flush()
        saved = tmp_path / f"wal-{rnd}"
        shutil.copytree(wal, saved)  # the log as it was before close() compacted it
        w.close()
    whole = list(range(300))
    assert store.read("trades", "binance", "BTC/USDT")["trade_id"].tolist() == whole
    # crash after the parts of the last compaction were written, before its log was deleted
    shutil.copytree(saved / "trades", wal / "trades", dirs_exist_ok=True)
    assert len(store.segments("binance", "trades")) == 1
    assert store.read("trades", "binance", "BTC/USDT")["trade_id"].tolist() == whole
    # crash mid-merge: the merged part is written, its inputs are still there
    pdirs = sorted(store.root.glob("trades/source=binance/symbol=*/date=*"))
    before = {d: {p.name: p.read_bytes() for p in d.iterdir()} for d in pdirs}
    store.compact("binance", merge_all=True)
    for d, files in before.items():
        for name, raw in files.items():
            (d / name).write_bytes(raw)
    assert sorted(p.name for p in pdirs[0].iterdir()) == [
        "p-0000000001-0000000001.parquet", "p-0000000001-0000000003.parquet",
        "p-0000000002-0000000002.parquet", "p-0000000003-0000000003.parquet"]
    assert store.read("trades", "binance", "BTC/USDT")["trade_id"].tolist() == whole
    store.compact("binance", merge_all=True)  # the rerun finishes the job
    assert sorted(p.name for p in pdirs[0].iterdir()) == ["p-0000000001-0000000003.parquet"]
    assert store.read("trades", "binance", "BTC/USDT")["trade_id"].tolist() == whole


def test_a_second_writer_of_the_same_source_is_refused_in_one_line(tmp_path: Path) -> None:
    store = TickStore(tmp_path)
    with TickWriter(store, "binance"):
        with pytest.raises(ConfigError, match="another collector is writing binance ticks") as err:
            TickWriter(store, "binance").open()
        assert "\n" not in str(err.value)
        assert store.writer_active("binance")
        with TickWriter(store, "alpaca"):  # another source is another log
            pass
    assert not store.writer_active("binance")


def test_a_full_buffer_refuses_rows_instead_of_blocking(tmp_path: Path) -> None:
    store = TickStore(tmp_path)
    with TickWriter(store, "binance", max_pending=10) as w:
        assert not w.extend(TickKind.TRADES, [trade(i) for i in range(11)])  # more than it may hold
        assert w.extend(TickKind.TRADES, [trade(i) for i in range(10)])
        assert w.stats.overflows == 1
    assert len(store.read("trades", "binance", "BTC/USDT")) == 10


def test_readers_racing_compactions_and_merges_always_see_each_row_once(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    latencies: list[float] = []
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def observe(kind: TickKind, recv: list[int], now: int) -> None:
        latencies.extend((now - r) / 1e6 for r in recv)

    def reader() -> None:
        try:
            while not stop.is_set():
                ids = lake.read_trades("binance", "BTC/USDT")["trade_id"].to_numpy()
                assert len(np.unique(ids)) == len(ids)
                assert (ids == np.arange(len(ids))).all()  # a prefix: nothing skipped
                assert len(ids) >= (seen[-1] if seen else 0)
                seen.append(len(ids))
        except BaseException as exc:
            errors.append(exc)

    w = TickWriter(lake.ticks, "binance", segment_seconds=0.03, observer=observe)
    w.open()
    th = threading.Thread(target=reader)
    th.start()
    n = 0
    # At least 2 s, then until enough compactions raced the reader: the compactor runs at a lower
    # priority, so on a busy machine 2 s may hold only a few (the hard stop keeps a hang finite).
    start = time.monotonic()

    def racing() -> bool:
        elapsed = time.monotonic() - start
        enough = len(seen) > 5 and w.stats.compactions > 5
        return not errors and elapsed < 60 and (elapsed < 2.0 or not enough)

    while racing():
        now = time.time_ns()
        w.extend(TickKind.TRADES, [(T0 + (n + j) * 1_000_000, now, "BTC/USDT", n + j, 1.0, 1.0, "buy")
                                   for j in range(200)])
        n += 200
        time.sleep(0.002)
    w.flush()
    stop.set()
    th.join()
    w.close()
    assert not errors, errors[0]
    assert len(seen) > 5 and w.stats.compactions > 5
    assert lake.read_trades("binance", "BTC/USDT")["trade_id"].tolist() == list(range(n))
    assert float(np.percentile(latencies, 99)) < 1000  # durable, not lost (the bench measures speed)


_CHILD = textwrap.dedent("""
    import sys, time
    from workbench.data.ticks import TickKind, TickStore, TickWriter
    store, start = TickStore(sys.argv[1]), int(sys.argv[2])
    def observe(kind, recv, now):
        print(recv[-1], flush=True)  # recv_ts carries the id: the highest durable id so far
    w = TickWriter(store, "binance", segment_seconds=0.05, observer=observe)
    w.open()
    i = start
    while True:
        w.extend(TickKind.TRADES, [(10**18 + k, k, "BTC/USDT", k, 1.0, 1.0, "buy") for k in range(i, i + 50)])
        i += 50
        time.sleep(0.001)
""")


def test_sigkill_at_random_moments_loses_no_durable_trade_and_doubles_none(tmp_path: Path) -> None:
    rng = random.Random(7)
    store = TickStore(tmp_path)
    acked = -1
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for _ in range(5):
        stored = store.read("trades", "binance", "BTC/USDT")
        start = int(stored["trade_id"].max()) + 1 if len(stored) else 0  # the collector's resume
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path), str(start)],
                                stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        want = rng.randint(3, 60)  # flushes to wait for before the kill
        for _ in range(want):
            line = proc.stdout.readline()
            assert line, "the writer died on its own"
            acked = max(acked, int(line))
        time.sleep(rng.random() * 0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for line in proc.stdout:  # acknowledged before it died
            acked = max(acked, int(line))
        ids = store.read("trades", "binance", "BTC/USDT")["trade_id"].to_numpy()
        assert len(np.unique(ids)) == len(ids)
        assert ids.max() >= acked  # everything acknowledged durable survived
        assert (ids == np.arange(len(ids))).all()  # and nothing before it is missing
    with TickWriter(store, "binance"):  # a restart folds the log left by the last kill
        pass
    assert store.segments("binance", "trades") == []
    ids = store.read("trades", "binance", "BTC/USDT")["trade_id"].to_numpy()
    assert (ids == np.arange(len(ids))).all() and ids.max() >= acked


def test_bars_built_from_trades_equal_an_independent_resample(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    rng = np.random.default_rng(3)
    n = 3000
    ts = np.sort(T0 + rng.integers(0, 5 * 60 * 10**9, n))
    price = 100 + np.cumsum(rng.normal(0, 0.1, n))
    size = rng.uniform(0.01, 2, n)
    with TickWriter(lake.ticks, "binance") as w:
        w.extend(TickKind.TRADES, [(int(t), int(t), "BTC/USDT", i, float(p), float(q), "buy")
                                   for i, (t, p, q) in enumerate(zip(ts, price, size, strict=True))])
    bars = lake.read_tick_bars("binance", "BTC/USDT", "1m")
    df = pd.DataFrame({"p": price, "q": size, "pq": price * size},
                      index=pd.to_datetime(ts, utc=True))
    g = df.resample("1min")
    ref = pd.DataFrame({"open": g["p"].first(), "high": g["p"].max(), "low": g["p"].min(),
                        "close": g["p"].last(), "volume": g["q"].sum(), "trades": g["p"].count(),
                        "vwap": g["pq"].sum() / g["q"].sum()}).dropna()
    assert bars["ts"].tolist() == list(ref.index)
    for c in ref.columns:
        np.testing.assert_allclose(bars[c].to_numpy(), ref[c].to_numpy(dtype=float), rtol=1e-12)
    part = lake.read_tick_bars("binance", "BTC/USDT", "1s", "2026-03-03 00:00:10", "2026-03-03 00:00:20")
    assert part["ts"].min() >= pd.Timestamp("2026-03-03 00:00:10", tz="UTC")
    assert part["ts"].max() < pd.Timestamp("2026-03-03 00:00:20", tz="UTC")


def test_the_book_in_force_at_a_moment_is_its_last_snapshot(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    rows = []
    for snap in range(3):
        t = T0 + snap * 1_000_000_000
        for lvl in range(2):
            rows.append((t, t, "BTC/USDT", 10 + snap, "bid", lvl, 99.0 - lvl - snap, 1.0))
            rows.append((t, t, "BTC/USDT", 10 + snap, "ask", lvl, 101.0 + lvl, 2.0))
    with TickWriter(lake.ticks, "binance") as w:
        w.extend(TickKind.BOOK, rows)
    at = lake.read_book("binance", "BTC/USDT", at=pd.Timestamp(T0 + 1_500_000_000, unit="ns", tz="UTC"))
    assert len(at) == 4 and set(at["seq"]) == {11}
    assert at[at.side == "bid"].sort_values("level")["price"].tolist() == [98.0, 97.0]
    assert lake.read_book("binance", "BTC/USDT", at=pd.Timestamp(T0 - 1, unit="ns", tz="UTC")).empty
    assert len(lake.read_book("binance", "BTC/USDT")) == 12
    with pytest.raises(ConfigError, match="either `at` or a start/end"):
        lake.read_book("binance", "BTC/USDT", "2026-03-01", at="2026-03-03")


def test_prune_drops_whole_days_older_than_the_age_of_one_kind(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    day = 86_400 * 10**9
    with TickWriter(lake.ticks, "binance") as w:
        w.extend(TickKind.TRADES, [(*trade(i, dt_ns=day)[:3], i, 1.0, 1.0, "buy") for i in range(5)])
        w.extend(TickKind.QUOTES, [(T0 + i * day, T0, "BTC/USDT", 1.0, 1.0, 2.0, 1.0) for i in range(5)])
    now = pd.Timestamp(T0 + 5 * day, unit="ns", tz="UTC")  # 2026-03-07 23:59
    res = lake.ticks.prune("trades", pd.Timedelta(days=2), now=now)
    assert (res.partitions, res.rows) == (3, 3) and res.bytes > 0  # 03-02, 03-03, 03-04 went
    assert lake.read_trades("binance", "BTC/USDT")["trade_id"].tolist() == [3, 4]
    assert len(lake.read_quotes("binance", "BTC/USDT")) == 5  # another kind keeps its own age
    with pytest.raises(ConfigError, match="unknown tick table 'trade'"):
        lake.ticks.prune("trade", pd.Timedelta(days=1))


def test_tick_checks_flag_what_a_venue_can_send_wrong(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    trades = [trade(i) for i in range(200)]
    trades[100] = (*trades[100][:4], 1000.0, *trades[100][5:])  # an outlier print
    trades[150] = (trades[140][0], *trades[150][1:])  # exchange time earlier than the previous
    quotes = [(T0 + i, T0 + i, "BTC/USDT", 100.0, 1.0, 100.0 + (i % 3 - 1), 1.0) for i in range(30)]
    with TickWriter(lake.ticks, "binance") as w:
        w.extend(TickKind.TRADES, trades)
        w.extend(TickKind.QUOTES, quotes)
    rep = lake.check_ticks("binance", "BTC/USDT", "trades")
    assert rep.count(TickIssue.OUTLIER_PRINT) == 1 and rep.count(TickIssue.OUT_OF_ORDER) == 1
    assert "200 trades" in str(rep)
    q = lake.check_ticks("binance", "BTC/USDT", "quotes")
    assert q.count(TickIssue.CROSSED_QUOTE) == 10 and q.count(TickIssue.LOCKED_QUOTE) == 10
    with pytest.raises(ConfigError, match="unknown tick table 'gaps'"):
        lake.check_ticks("binance", "BTC/USDT", "gaps")


def test_bars_of_a_recorded_symbol_are_built_from_its_trades_for_research_and_the_runner(tmp_path: Path
                                                                                         ) -> None:
    """No bar series stored, trades recorded: `read_bars` (backtests, replays) and `read_recent` (the
    paper runner) serve bars built from the trades, the bucket still forming left out."""
    from workbench.backtest.engine import backtest, load_bars

    lake = Lake(tmp_path)
    rng = np.random.default_rng(5)
    now = pd.Timestamp.now(tz="UTC").floor("1min")
    t_start = (now - pd.Timedelta(hours=3)).value
    n = 20_000
    # trades up to 2.5 min ahead: the last two buckets are forming for a minute whatever the clock
    ts = np.sort(rng.integers(t_start, now.value + 150 * 10**9, n))
    price = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    with TickWriter(lake.ticks, "binance") as w:
        w.extend(TickKind.TRADES, [(int(t), int(t), "BTC/USDT", i, float(p), 0.5, "buy")
                                   for i, (t, p) in enumerate(zip(ts, price, strict=True))])
    bars = lake.read_bars("binance", "BTC/USDT", "1m")
    built = lake.read_tick_bars("binance", "BTC/USDT", "1m")
    assert len(built) - 3 <= len(bars) <= len(built) - 2  # bucket `now` completes during the test or not
    pd.testing.assert_frame_equal(bars, built.iloc[:len(bars)])
    five = lake.read_bars("binance", "BTC/USDT", "5m", include_partial=True)
    assert five["ts"].iloc[0] == built["ts"].iloc[0].floor("5min")
    recent = lake.read_recent("binance", ["BTC/USDT"], "1m", now - pd.Timedelta(minutes=10))
    assert len(recent["BTC/USDT"]["ts"]) in (10, 11)
    # a backtest on the recorded trades equals one on the same bars stored as a bar series
    lake.write_bars("copy", "BTC/USDT", "1m", bars)
    a = backtest("sma_cross", load_bars(lake, "BTC/USDT", "1m", source="binance"), {"fast": 5, "slow": 20})
    b = backtest("sma_cross", load_bars(lake, "BTC/USDT", "1m", source="copy"), {"fast": 5, "slow": 20})
    assert len(a.trades) > 3
    pd.testing.assert_series_equal(a.equity, b.equity)


def test_the_latest_receipt_follows_the_log_and_skips_a_batch_still_being_written(tmp_path: Path) -> None:
    """What a streamed paper tick polls: the newest receipt in the log, read incrementally (each
    call reads only what was appended since the last), a torn batch at the tail ignored until whole,
    older segments consulted when the newest is empty, compacted rows no longer counted."""
    lake = Lake(tmp_path)
    store = lake.ticks
    assert store.latest_receipt("binance") is None
    with TickWriter(store, "binance", segment_seconds=3600) as w:
        for k in range(1, 4):
            w.extend(TickKind.TRADES, [trade(i) for i in range(k * 100 - 100, k * 100)])
            w.flush()
            assert store.latest_receipt("binance") == trade(k * 100 - 1)[1]
        (_seg, path), = store.segments("binance", TickKind.TRADES)
        whole = path.read_bytes()
        w.extend(TickKind.TRADES, [trade(i) for i in range(300, 310)])
        w.flush()
        appended = path.read_bytes()[len(whole):]
    # the same log with the last batch cut short, as a reader may find it mid-write
    other = Lake(tmp_path / "copy").ticks
    seg = other.wal_dir("binance") / "trades" / path.name
    seg.parent.mkdir(parents=True)
    seg.write_bytes(whole + appended[: len(appended) // 2])
    assert other.latest_receipt("binance") == trade(299)[1]
    seg.write_bytes(whole + appended)
    assert other.latest_receipt("binance") == trade(309)[1]
    # an empty newer segment: the older one still tells
    (seg.parent / f"{int(path.stem) + 1:010d}.arrows").write_bytes(b"")
    assert other.latest_receipt("binance") == trade(309)[1]
    assert store.latest_receipt("binance") is None  # closed: compacted out of the log
