"""Lake benchmark: 20 symbols x 1 year of 1-minute bars (~10.5M rows) through the lake.

Prints, for ingest and for three reads, the lake's figure beside a baseline measured in the same
run on the same files (raw pyarrow Parquet writes; the same query written directly in DuckDB),
plus bytes per row on disk and peak memory. Targets (issue 2): reads within 1.25x of raw DuckDB,
ingest (validation included) >= 1M rows/s, <= 40 bytes per 1-minute bar, peak memory < 2 GB.

    .venv/bin/python bench/lake.py [--symbols 20] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gc
import resource
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from workbench import Lake
from workbench.data.bars import bars_to_arrow
from workbench.data.sources.synthetic import CRYPTO, SyntheticSource

START, END = "2025-01-01", "2026-01-01"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeat: int = 7) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--keep", type=Path, default=None, help="keep the lake in this folder")
    args = ap.parse_args()
    # duckdb 2.0's .df() calls a pandas 3.1-deprecated keyword; the lake filters it the same way
    warnings.filterwarnings("ignore", message=".*inplace keyword.*")
    root = args.keep or Path(tempfile.mkdtemp(prefix="wb-bench-"))
    names = list(CRYPTO) + [f"SYN{i:02d}/USDT" for i in range(args.symbols)]
    names = names[: args.symbols]
    src = SyntheticSource(symbols=names)
    lake = Lake(root)
    raw_dir = root / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)

    print(f"lake benchmark: {len(names)} symbols x 1 year of 1m bars, synthetic, in {root}")
    gen = lake_s = raw_s = 0.0
    rows = 0
    for sym in names:
        t = time.perf_counter()
        bars = src.bars(sym, "1m", START, END)
        gen += time.perf_counter() - t
        rows += len(bars)
        t = time.perf_counter()
        lake.write_bars("bench", sym, "1m", bars)
        lake_s += time.perf_counter() - t
        t = time.perf_counter()  # baseline: the same rows straight to one zstd Parquet file
        pq.write_table(bars_to_arrow(bars), raw_dir / f"{sym.replace('/', '-')}.parquet",
                       compression="zstd")
        raw_s += time.perf_counter() - t
        del bars
        gc.collect()
    lake_bytes = sum(f.stat().st_size for f in (root / "lake").rglob("*.parquet"))
    raw_bytes = sum(f.stat().st_size for f in raw_dir.glob("*.parquet"))
    print(f"generated {rows:,} rows in {gen:.1f}s (not timed below)")
    print(f"{'ingest':<28} lake {rows / lake_s / 1e6:6.2f}M rows/s (validation included)  "
          f"raw pyarrow {rows / raw_s / 1e6:6.2f}M rows/s  lake/raw time {lake_s / raw_s:5.2f}x"
          f"   target >= 1M rows/s")
    print(f"{'bytes per row on disk':<28} lake {lake_bytes / rows:6.1f}  raw zstd "
          f"{raw_bytes / rows:6.1f}   target <= 40")

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    bars_dir = (root / "lake" / "bars").as_posix()
    sym = names[0]
    sdir = lake.series_dir("bench", sym, "1m")
    month = ("2025-03-01", "2025-04-01")
    cols = "ts, open, high, low, close, volume"

    def raw_month():
        return con.execute(
            f"SELECT {cols} FROM read_parquet('{sdir.as_posix()}/*/data.parquet') "
            "WHERE ts >= ?::TIMESTAMPTZ AND ts < ?::TIMESTAMPTZ", list(month)).df()

    def raw_year():
        return con.execute(f"SELECT {cols} FROM read_parquet('{sdir.as_posix()}/*/data.parquet')"
                           ).df()

    def raw_resample():
        return con.execute(
            "SELECT symbol, make_timestamp((epoch_us(ts) // 3600000000) * 3600000000)::TIMESTAMPTZ"
            " AS ts, arg_min(open, ts) AS open, max(high) AS high, min(low) AS low, "
            "arg_max(close, ts) AS close, sum(volume) AS volume "
            f"FROM read_parquet('{bars_dir}/source=bench/timeframe=1m/*/*/data.parquet', "
            "hive_partitioning=true) GROUP BY ALL ORDER BY symbol, ts").df()

    cases = [
        ("read one symbol-month", raw_month,
         lambda: lake.read_bars("bench", sym, "1m", *month), 44_640),
        ("read one symbol-year", raw_year, lambda: lake.read_bars("bench", sym, "1m"), 525_600),
        (f"resample {len(names)} symbols to 1h", raw_resample,
         lambda: lake.read_bars("bench", names, "1h"), rows),
    ]
    for label, raw_fn, lake_fn, n in cases:
        a, b = lake_fn(), raw_fn()
        assert len(a) == len(b), (label, len(a), len(b))
        t_raw, t_lake = timed(raw_fn), timed(lake_fn)
        print(f"{label:<28} lake {t_lake * 1e3:8.1f} ms ({n / t_lake / 1e6:6.1f}M rows/s)  "
              f"raw DuckDB {t_raw * 1e3:8.1f} ms  lake/raw {t_lake / t_raw:5.2f}x   target <= 1.25x")
    print(f"{'peak memory':<28} {peak_mb():,.0f} MB   target < 2048 MB")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
