"""Features: values against independent computations, causality, the spec, the cache, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.errors import ConfigError, DataError
from workbench.features import (
    FEATURES,
    FeatureCache,
    FeatureSet,
    check_feature_lookahead,
    compute_features,
    feature_matrix,
    register_feature,
)


def make_bars(n: int = 1500, seed: int = 0, freq: str = "1min") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    o = np.r_[c[0], c[:-1]] * np.exp(rng.normal(0, 2e-4, n))
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0, 5e-4, n)))
    lo = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, 5e-4, n)))
    idx = pd.date_range("2026-01-05", periods=n, freq=freq, tz="UTC", name="ts")
    return pd.DataFrame({"open": o, "high": h, "low": lo, "close": c, "volume": rng.uniform(1, 10, n)},
                        index=idx)


def test_every_builtin_feature_reads_no_future_bar() -> None:
    bars = make_bars()
    fs = FeatureSet.of(*FEATURES, "vol(20)|zscore(100)", "rsi(14)|rank(100)", name="all")
    report = check_feature_lookahead(bars, fs, cuts=7)
    assert report.ok, report.summary()
    assert len(report.cuts) == 7


def test_a_planted_leak_is_caught_and_named() -> None:
    @register_feature("peek")
    def peek(cols: dict[str, np.ndarray], index: pd.DatetimeIndex, n: int = 1) -> np.ndarray:
        """The next bar's return: reads the future."""
        c = np.log(cols["close"])
        return np.r_[c[n:] - c[:-n], np.full(n, np.nan)]

    try:
        report = check_feature_lookahead(make_bars(400), FeatureSet.of("ret(1)", "peek(1)", "vol(10)"))
    finally:
        FEATURES.pop("peek")
    assert not report.ok and report.leaking == ["peek_1"]
    assert "peek_1 differs from the full-data run" in report.summary()


def test_values_equal_an_independent_pandas_computation() -> None:
    bars = make_bars()
    X = compute_features(bars, FeatureSet.of("ret(5)", "vol(20)", "parkinson(30)", "sma_gap(50)", "range(10)",
                                             "volume_z(40)", "ret(1)|zscore(60)", "ret(1)|rank(30)",
                                             "hour_sin", "dow_cos"))
    c, logc = bars["close"], np.log(bars["close"])
    r1 = logc.diff()
    want = {
        "ret_5": logc - logc.shift(5),
        "vol_20": r1.rolling(20).std(),
        "parkinson_30": np.sqrt((np.log(bars["high"] / bars["low"]) ** 2).rolling(30).mean()
                                / (4 * np.log(2))),
        "sma_gap_50": c / c.rolling(50).mean() - 1,
        "range_10": ((bars["high"] - bars["low"]) / c).rolling(10).mean(),
        "volume_z_40": (np.log1p(bars["volume"]) - np.log1p(bars["volume"]).rolling(40).mean())
        / np.log1p(bars["volume"]).rolling(40).std(),
        "ret_1_z60": (r1 - r1.rolling(60).mean()) / r1.rolling(60).std(),
        "ret_1_r30": r1.rolling(30).apply(lambda w: ((w[:-1] < w[-1]).sum() + 0.5 * (w[:-1] == w[-1]).sum())
                                          / (len(w) - 1), raw=True),
        "hour_sin": pd.Series(np.sin(2 * np.pi * (bars.index.hour * 60 + bars.index.minute) / 1440),
                              index=bars.index),
        "dow_cos": pd.Series(np.cos(2 * np.pi * bars.index.day_of_week / 7), index=bars.index),
    }
    assert list(X.columns) == list(want)
    for col, expected in want.items():
        np.testing.assert_allclose(X[col].to_numpy(), expected.to_numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=col)


def test_the_spec_reads_short_forms_and_keys_what_the_values_depend_on() -> None:
    a = FeatureSet.of("vol(20)|zscore(500)", "rsi(n=14)", "macd(12, 26)")
    b = FeatureSet.model_validate({"name": "other", "features": [
        {"name": "vol", "params": {"n": 20}, "norm": "zscore", "norm_window": 500},
        {"name": "rsi"}, {"name": "macd", "params": {"signal": 9}}]})
    assert a.columns == ["vol_20_z500", "rsi_14", "macd_12_26_9"] == b.columns
    assert a.key() == b.key()  # the name and spelled-out defaults change no value
    assert FeatureSet.of("vol(21)|zscore(500)", "rsi(14)", "macd").key() != a.key()
    assert a.warmup() == 520 and a.needs == {"close"}


@pytest.mark.parametrize(("features", "message"), [
    (["vols(20)"], "unknown feature 'vols': did you mean vol"),
    (["vol(window=20)"], "feature vol has no parameter 'window' (it takes: n)"),
    (["vol(2.5)"], "vol: n is a number of bars, got 2.5"),
    (["vol(0)"], "vol: n must be at least 1 bar"),
    (["vol(20, 3)"], "vol takes 1 parameter(s) (n)"),
    (["vol(20", ], "cannot read feature 'vol(20'"),
    (["ret(5)", "ret(n=5)"], "column ret_5 comes twice"),
    ([{"name": "vol", "norm_window": 50}], "norm_window is set but norm is not"),
])
def test_bad_specs_are_refused_in_one_line(features: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        FeatureSet.of(*features)
    assert "\n" not in str(err.value)


def test_bad_bars_are_refused_in_one_line() -> None:
    bars = make_bars(50)
    fs = FeatureSet.of("atr(14)")
    with pytest.raises(DataError, match="no high column"):
        compute_features(bars.drop(columns=["high"]), fs)
    with pytest.raises(DataError, match="sorted and unique"):
        compute_features(bars.iloc[::-1], fs)
    with pytest.raises(DataError, match="tz-aware DatetimeIndex"):
        compute_features(bars.tz_localize(None), fs)
    with pytest.raises(DataError, match="index them by it first"):
        compute_features(bars.reset_index(), fs)


def test_a_matrix_stacks_symbols_and_the_cache_reuses_only_an_exact_match(tmp_path: Path) -> None:
    frames = {"BTC/USDT": make_bars(300, 1), "ETH/USDT": make_bars(200, 2)}
    fs = FeatureSet.of("ret(5)", "vol(20)")
    X = feature_matrix(frames, fs)
    assert X.index.names == ["symbol", "ts"] and len(X) == 500
    pd.testing.assert_frame_equal(X.loc["ETH/USDT"], compute_features(frames["ETH/USDT"], fs),
                                  check_freq=False)
    one_calendar = {"A": make_bars(120, 4), "B": make_bars(120, 5)}  # the shared-index path
    pd.testing.assert_frame_equal(feature_matrix(one_calendar, fs), pd.concat(
        [compute_features(f, fs) for f in one_calendar.values()], keys=["A", "B"], names=["symbol", "ts"]))
    cache = FeatureCache(tmp_path)
    first, lineage = cache.get(frames, fs, "sha256:data-a")
    again, lineage2 = cache.get(frames, fs, "sha256:data-a")
    assert not lineage["cached"] and lineage2["cached"]
    pd.testing.assert_frame_equal(first, again)
    assert lineage2["feature_set_key"] == fs.key() and lineage2["fingerprint"] == "sha256:data-a"
    assert lineage2["features"][1] == {"name": "vol", "params": {"n": 20}, "column": "vol_20"}
    assert not cache.get(frames, fs, "sha256:data-b")[1]["cached"]  # other data
    assert not cache.get(frames, FeatureSet.of("ret(5)", "vol(21)"), "sha256:data-a")[1]["cached"]


@pytest.fixture(autouse=True)
def _no_leftover_features() -> Iterator[None]:
    before = set(FEATURES)
    yield
    for name in set(FEATURES) - before:
        FEATURES.pop(name)


def test_talib_functions_are_features_scaled_to_the_close_and_causal() -> None:
    import talib

    bars = make_bars(600)
    fs = FeatureSet.of("ta_rsi(14)", "ta_sma(timeperiod=30)", "ta_bbands(20, output=2)",
                       "ta_bbands(20, output=2, raw=1)", "ta_macd(output=2)", "ta_atr(14)", "ta_obv")
    X = compute_features(bars, fs)
    c = bars["close"].to_numpy()
    np.testing.assert_allclose(X["ta_rsi_14_0_0"], talib.RSI(c, 14))  # not on the price scale: as is
    np.testing.assert_allclose(X["ta_sma_30_0_0"], talib.SMA(c, 30) / c - 1)  # price scale: to the close
    lower = talib.BBANDS(c, 20)[2]
    np.testing.assert_allclose(X["ta_bbands_20_2_2_0_2_0"], lower / c - 1)
    np.testing.assert_allclose(X["ta_bbands_20_2_2_0_2_1"], lower)
    np.testing.assert_allclose(X["ta_macd_12_26_9_2_0"], talib.MACD(c)[2])
    assert fs.needs >= {"high", "low", "close", "volume"}
    assert check_feature_lookahead(bars, fs).ok
    with pytest.raises(ConfigError, match="or any TA-Lib function as ta_<name>"):
        FeatureSet.of("ta_nosuch")
    with pytest.raises(ConfigError, match=r"ta_macd: output must be 0..2 \(macd, macdsignal, macdhist\)"):
        compute_features(bars, FeatureSet.of("ta_macd(output=3)"))


def test_a_set_is_rebuilt_from_its_resolved_form_with_the_same_key() -> None:
    fs = FeatureSet.of("vol(20)|zscore(500)", "rsi(14)|rank(100)", "macd", {"name": "ret", "column": "r5",
                                                                           "params": {"n": 5}})
    again = FeatureSet.from_resolved(fs.resolved())
    assert again.key() == fs.key() and again.columns == fs.columns == ["vol_20_z500", "rsi_14_r100",
                                                                       "macd_12_26_9", "r5"]
