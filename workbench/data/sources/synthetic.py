"""A deterministic, seeded synthetic market: the embedded default for the demo, notebooks and tests.

SYNTHETIC DATA, not market history. Each symbol's 1-minute path is built from the market's origin
(2018-01-01) forward in fixed blocks of seeded draws, so a bar's value never depends on the range
asked for: syncing in pieces gives exactly what one big sync gives. Coarser timeframes are
aggregated from the 1-minute path, so 1d bars agree with 1m bars.

What makes it useful for research rather than a random walk:
- fat tails: Student-t (4 d.o.f.) shocks, scaled to unit variance;
- volatility clustering: log-volatility is a slow AR(1) process shared in part across the market;
- cross-asset correlation: one market factor per asset class, per-symbol beta;
- regimes: trending (up/down drift, random-walk dominated) and ranging (mean-reverting around a
  level) stretches of a few days to weeks, so both trend and mean-reversion strategies win and lose;
- equities trade only in NYSE regular sessions (holidays, early closes) with an overnight gap.

Every crypto pair also has a USDT-margined perpetual, `BASE/USDT:USDT` (ccxt's spelling), trading
24/7: its bars are the spot path times (1 + basis), the basis being the premium that the next funding
settlement pays for plus a fast mean-reverting noise (half-life 1 h, sd 3 bp). Funding settles every
8 h at 00:00, 08:00 and 16:00 UTC; the rate per interval is an AR(1) (persistence 0.9 per settlement,
sd 0.00015) around +0.0001 tilted by the market regime's drift (bull stretches pay more), clipped to
+-0.0075 and rounded to 8 decimals as venues publish it: positive on average, negative about a
quarter of the time. Rates, like bars, are built from the origin, so they never depend on the range.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from workbench.data.bars import aggregate_bars
from workbench.data.calendar import Calendar, calendar_for_symbol
from workbench.data.sources.base import Source, spot_funding_error
from workbench.data.timeframe import Timeframe
from workbench.errors import ConfigError, did_you_mean

log = logging.getLogger(__name__)

ORIGIN = pd.Timestamp("2018-01-01", tz="UTC")
BLOCK = 1 << 16
_MIN_US = 60_000_000
_T_DOF = 4.0
_T_SCALE = float(np.sqrt((_T_DOF - 2) / _T_DOF))
CHUNK_ROWS = 200_000


@dataclass(frozen=True)
class AssetSpec:
    """Parameters of one synthetic asset (price at the origin, annual volatility, market beta)."""

    price: float
    vol: float
    beta: float
    volume: float


CRYPTO = {
    "BTC/USDT": AssetSpec(13_500.0, 0.60, 0.85, 40.0),
    "ETH/USDT": AssetSpec(750.0, 0.75, 0.85, 400.0),
    "SOL/USDT": AssetSpec(20.0, 0.95, 0.75, 5_000.0),
    "BNB/USDT": AssetSpec(9.0, 0.70, 0.70, 2_000.0),
    "XRP/USDT": AssetSpec(2.0, 0.85, 0.70, 400_000.0),
    "DOGE/USDT": AssetSpec(0.009, 1.00, 0.65, 3_000_000.0),
    "ADA/USDT": AssetSpec(0.7, 0.90, 0.70, 300_000.0),
    "AVAX/USDT": AssetSpec(15.0, 0.95, 0.70, 8_000.0),
}
EQUITY = {
    "SPY": AssetSpec(268.0, 0.16, 0.97, 150_000.0),
    "QQQ": AssetSpec(157.0, 0.21, 0.95, 90_000.0),
    "AAPL": AssetSpec(43.0, 0.28, 0.75, 200_000.0),
    "MSFT": AssetSpec(86.0, 0.25, 0.80, 60_000.0),
    "NVDA": AssetSpec(50.0, 0.45, 0.70, 90_000.0),
    "AMZN": AssetSpec(60.0, 0.32, 0.70, 110_000.0),
    "GOOGL": AssetSpec(53.0, 0.28, 0.70, 60_000.0),
    "JPM": AssetSpec(107.0, 0.24, 0.65, 25_000.0),
}
DEMO_CRYPTO = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
DEMO_PERPS = ("BTC/USDT:USDT", "ETH/USDT:USDT")

FUNDING_EVERY = pd.Timedelta(hours=8)
_FUNDING_MEAN = 0.0001  # per 8 h interval, the venues' usual baseline (interest component)
_FUNDING_SD = 0.00015  # stationary sd of the AR(1) part
_FUNDING_PHI = 0.9  # persistence per settlement: a half-life of about 2 days
_FUNDING_TILT = 0.00004  # added per unit of the regime's annual drift
_FUNDING_CAP = 0.0075
_BASIS_SD, _BASIS_HALF_LIFE_MIN = 0.0003, 60.0
_PERP_VOLUME = 2.5  # perpetuals trade more than spot
_FUNDING_MIN = int(FUNDING_EVERY / pd.Timedelta(minutes=1))
DEMO_EQUITY = ("SPY", "AAPL", "MSFT")

# regimes: (probability, annual drift range, random-walk weight); weights of rw and mean-reverting
# parts are chosen so that the per-minute variance stays about the asset's
_REGIMES = {
    "crypto": ((0.30, (0.8, 2.5), 0.95), (0.25, (-2.0, -0.6), 0.95), (0.45, (0.0, 0.0), 0.30)),
    "equity": ((0.40, (0.15, 0.6), 0.95), (0.20, (-0.6, -0.15), 0.95), (0.40, (0.0, 0.0), 0.30)),
}
_REGIME_DAYS = {"crypto": 9.0, "equity": 15.0}
_MINUTES_PER_YEAR = {"crypto": 525_600.0, "equity": 252.0 * 390.0}


def _seed_int(*parts: object) -> int:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _block_draws(seed: int, stream: str, block: int, kind: str) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([_seed_int(seed, stream, kind), block]))
    if kind in ("rw", "ou"):  # price shocks: fat-tailed, unit variance
        return rng.standard_t(_T_DOF, size=BLOCK) * _T_SCALE
    return rng.standard_normal(BLOCK)


def _draws(seed: int, stream: str, kind: str, n: int, i0: int = 0) -> np.ndarray:
    """Draws i0..n-1 of a stream; the same values whatever n and i0 (built block by block)."""
    b0, b1 = i0 // BLOCK, -(-n // BLOCK)
    get = _market_block if stream in _REGIMES else _block_draws
    out = np.concatenate([get(seed, stream, b, kind) for b in range(b0, b1)])
    return out[i0 - b0 * BLOCK: n - b0 * BLOCK]


@functools.lru_cache(maxsize=6 * 80)
def _market_block(seed: int, stream: str, block: int, kind: str) -> np.ndarray:
    """Market-factor draws are shared by every symbol of a class: keep recent blocks."""
    out = _block_draws(seed, stream, block, kind)
    out.flags.writeable = False
    return out


def asset_class(symbol: str) -> str:
    return "crypto" if "/" in symbol else "equity"


class SyntheticSource(Source):
    """Seeded synthetic bars for a fixed universe (see CRYPTO and EQUITY), labelled `synthetic`."""

    name = "synthetic"

    def __init__(self, *, seed: int = 7, symbols: Sequence[str] = ()) -> None:
        self.seed = int(seed)
        self.universe: dict[str, AssetSpec] = {**CRYPTO, **EQUITY}
        for sym in symbols:  # extra names get parameters derived from their name
            spot = sym.split(":", 1)[0]
            if spot not in self.universe:
                self.universe[spot] = _derived_spec(spot)
        # every crypto pair's USDT-margined perpetual (BASE/QUOTE:QUOTE), and any extra perpetual named
        self.perps: dict[str, str] = {f"{s}:{s.split('/', 1)[1]}": s for s in self.universe
                                      if asset_class(s) == "crypto"}
        self.perps.update({s: s.split(":", 1)[0] for s in symbols if ":" in s})

    def canonical_symbol(self, symbol: str) -> str:
        sym = symbol.strip()
        known = [*self.universe, *self.perps]
        sym = sym.upper() if sym.upper() in known else sym
        if sym not in known:
            raise ConfigError(
                f"the synthetic market has no symbol {symbol!r}{did_you_mean(sym, known)}: "
                f"use one of {', '.join(self.universe)}, or a crypto pair's perpetual (e.g. "
                "BTC/USDT:USDT)"
            )
        return sym

    def is_perp(self, symbol: str) -> bool:
        """Whether `symbol` (canonical) is one of the market's perpetual futures."""
        return symbol in self.perps

    # ------------------------------------------------------------------ the 1-minute path
    def _grid(self, cls: str, end_us: int) -> np.ndarray:
        """1-minute bar open times (int64 us) from the origin up to `end_us` (exclusive)."""
        o = int(ORIGIN.value // 1000)
        if cls == "crypto":
            return np.arange(o, max(o, end_us), _MIN_US, dtype=np.int64)
        cal = Calendar("XNYS")
        if end_us <= o:
            return np.empty(0, dtype=np.int64)
        grid = cal.expected(ORIGIN, pd.Timestamp(end_us - 1, unit="us", tz="UTC"),
                            Timeframe.parse("1m"))
        return grid

    def minute_bars(self, symbol: str, end: pd.Timestamp, start: pd.Timestamp | None = None
                    ) -> pd.DataFrame:
        """1-minute bars of `symbol` in [start, end); the path always runs from the origin."""
        sym = self.canonical_symbol(symbol)
        if sym in self.perps:
            return self._perp_minute_bars(sym, end, start)
        spec, cls = self.universe[sym], asset_class(sym)
        ts = self._grid(cls, int(end.value // 1000))
        n = len(ts)
        i0 = int(np.searchsorted(ts, start.value // 1000)) if start is not None else 0
        if n == 0 or i0 >= n:
            return _frame(ts[:0], *(np.empty(0),) * 5)
        per_year = _MINUTES_PER_YEAR[cls]
        sigma = spec.vol / np.sqrt(per_year)
        beta, idio = spec.beta, float(np.sqrt(1 - spec.beta**2))
        # the recursive parts (volatility, mean-reverting deviation, cumulated log price) need
        # the whole history from the origin; everything else is drawn for the slice only
        phi_v = 0.5 ** (1.0 / (2.0 * 1440.0))
        eta = 0.45
        v_in = 0.7 * _draws(self.seed, cls, "vol", n) + 0.71 * _draws(self.seed, sym, "vol", n)
        h = lfilter([eta * np.sqrt(1 - phi_v**2)], [1.0, -phi_v], v_in)
        sig = sigma * np.exp(h - eta**2 / 2)
        drift, w_rw = self._regimes(cls, sym, ts)
        z = beta * _draws(self.seed, cls, "ou", n) + idio * _draws(self.seed, sym, "ou", n)
        z *= np.sqrt(1.0 - w_rw**2) * sig
        ou = lfilter([1.0], [1.0, -0.5 ** (1.0 / 720.0)], z)
        step = beta * _draws(self.seed, cls, "rw", n) + idio * _draws(self.seed, sym, "rw", n)
        step *= w_rw * sig
        step += drift / per_year - 0.5 * sig**2
        gap = np.zeros(n)
        if cls == "equity":  # an overnight gap opens each session away from the last close
            first = np.flatnonzero(np.diff(ts) > _MIN_US) + 1
            gap[first] = sigma * 12.0 * _draws(self.seed, sym, "gap", n)[first]
            step += gap
        lp = np.cumsum(step)
        lp += ou
        lp += np.log(spec.price)
        close = np.exp(lp[i0:])
        prev = lp[i0 - 1] if i0 else np.log(spec.price)
        open_ = np.exp(np.r_[prev, lp[i0:-1]] + gap[i0:])
        sig, h, ts = sig[i0:], h[i0:], ts[i0:]
        wick = 0.6 * sig
        high = np.maximum(open_, close) * np.exp(np.abs(_draws(self.seed, sym, "hi", n, i0)) * wick)
        low = np.minimum(open_, close) * np.exp(-np.abs(_draws(self.seed, sym, "lo", n, i0)) * wick)
        move = np.abs(close / open_ - 1) / sigma
        volume = spec.volume * np.exp(0.8 * h + 0.35 * _draws(self.seed, sym, "vo", n, i0)) * (
            0.6 + 0.4 * np.minimum(move, 6.0))
        return _frame(ts, open_, high, low, close, volume)

    def _perp_minute_bars(self, perp: str, end: pd.Timestamp, start: pd.Timestamp | None
                          ) -> pd.DataFrame:
        """A perpetual's 1-minute bars: the spot pair's path times (1 + basis) (see the module doc).

        A bar opens at the previous bar's close (the basis of the minute before), closes with its
        own minute's basis, and its wicks hold both.
        """
        spot = self.minute_bars(self.perps[perp], end, start)
        if spot.empty:
            return spot
        ts = spot["ts"].to_numpy(dtype="datetime64[us]").view("int64")
        idx = (ts - int(ORIGIN.value // 1000)) // _MIN_US  # crypto minutes are a regular grid
        basis = self._basis(perp, int(idx[-1]) + 1)
        b1 = basis[idx]
        b0 = basis[np.maximum(idx - 1, 0)]
        open_ = spot["open"].to_numpy() * (1 + b0)
        close = spot["close"].to_numpy() * (1 + b1)
        high = np.maximum(spot["high"].to_numpy() * (1 + np.maximum(b0, b1)), np.maximum(open_, close))
        low = np.minimum(spot["low"].to_numpy() * (1 + np.minimum(b0, b1)), np.minimum(open_, close))
        n, i0 = int(idx[-1]) + 1, int(idx[0])
        volume = spot["volume"].to_numpy() * _PERP_VOLUME * np.exp(
            0.25 * _draws(self.seed, perp, "vo", n, i0)[idx - i0])
        return _frame(ts, open_, high, low, close, volume)

    def _basis(self, perp: str, n: int) -> np.ndarray:
        """Relative premium of the perpetual over spot for minutes 0..n-1 since the origin."""
        k = np.arange(n, dtype=np.int64) // _FUNDING_MIN + 1  # the settlement each minute accrues to
        premium = self._funding_rates(perp, int(k[-1]) + 1)[k] if n else np.empty(0)
        phi = 0.5 ** (1.0 / _BASIS_HALF_LIFE_MIN)
        noise = lfilter([_BASIS_SD * np.sqrt(1 - phi**2)], [1.0, -phi],
                        _draws(self.seed, perp, "basis", n))
        return premium + noise

    def _funding_rates(self, perp: str, k: int) -> np.ndarray:
        """Rates of settlements 0..k-1 (settlement j at ORIGIN + j * 8 h), built from the origin."""
        if k <= 0:
            return np.empty(0)
        ts = int(ORIGIN.value // 1000) + np.arange(k, dtype=np.int64) * int(FUNDING_EVERY.value // 1000)
        drift, _ = self._regimes("crypto", self.perps[perp], ts)
        shocks = _draws(self.seed, perp, "funding", k)
        ar = lfilter([_FUNDING_SD * np.sqrt(1 - _FUNDING_PHI**2)], [1.0, -_FUNDING_PHI], shocks)
        rates = np.clip(_FUNDING_MEAN + _FUNDING_TILT * drift + ar, -_FUNDING_CAP, _FUNDING_CAP)
        return np.round(rates, 8)

    def _regimes(self, cls: str, sym: str, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-minute annual drift and random-walk weight from the asset class's regime sequence.

        Regime timing is market-wide (assets trend together); each symbol scales the drift.
        """
        table = _regime_table(self.seed, cls)
        o = int(ORIGIN.value // 1000)
        idx = np.searchsorted(table[0], (ts - o) / 86_400e6, side="right") - 1
        scale = 0.6 + 0.8 * (_seed_int(self.seed, sym, "drift") % 1000) / 1000.0
        return table[1][idx] * scale, table[2][idx]

    # ------------------------------------------------------------------ Source contract
    def fetch(self, symbol: str, timeframe: Timeframe, start: pd.Timestamp, end: pd.Timestamp
              ) -> Iterator[pd.DataFrame]:
        bars = self.bars(symbol, timeframe, start, end)
        for lo in range(0, len(bars), CHUNK_ROWS):
            yield bars.iloc[lo: lo + CHUNK_ROWS].reset_index(drop=True)

    def bars(self, symbol: str, timeframe: str | Timeframe, start: str | pd.Timestamp,
             end: str | pd.Timestamp) -> pd.DataFrame:
        """Bars of any timeframe in [start, end), aggregated from the 1-minute path."""
        tf = Timeframe.parse(timeframe)
        start, end = pd.Timestamp(start), pd.Timestamp(end)
        start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        if start < ORIGIN:
            raise ConfigError(f"the synthetic market starts at {ORIGIN.date()}: pass a later start")
        sym = self.canonical_symbol(symbol)
        q1 = tf.floor(end - pd.Timedelta(microseconds=1)) + tf.delta
        q0 = tf.floor(start)
        if tf.seconds >= 86400 and asset_class(sym) == "equity":
            q0 = start.floor("D")
        m = self.minute_bars(sym, q1, q0)
        ts = m["ts"].to_numpy(dtype="datetime64[us]").view("int64")
        if tf.seconds > 60 and len(m):
            if tf.seconds >= 86400 and asset_class(sym) == "equity":
                b = (ts // 86_400_000_000) * 86_400_000_000  # one bar per session, at 00:00 UTC
                b = (b - tf.origin_micros) // tf.micros * tf.micros + tf.origin_micros
            else:
                b = (ts - tf.origin_micros) // tf.micros * tf.micros + tf.origin_micros
            m = aggregate_bars(m, b)
        s0, s1 = start.value // 1000, end.value // 1000
        tsv = m["ts"].to_numpy(dtype="datetime64[us]").view("int64")
        return m.loc[(tsv >= s0) & (tsv < s1)].reset_index(drop=True)

    def calendar(self, symbol: str) -> Calendar:
        return calendar_for_symbol(symbol)

    # ------------------------------------------------------------------ funding rates
    def funding_symbol(self, symbol: str) -> str:
        """`symbol` canonical if it is a perpetual (`BTC/USDT:USDT`); a spot pair or equity is refused."""
        sym = self.canonical_symbol(symbol)
        if sym in self.perps:
            return sym
        if asset_class(sym) == "crypto":
            raise spot_funding_error(sym, f"{sym}:{sym.split('/', 1)[1]}")
        raise spot_funding_error(sym, kind="an equity")

    def fetch_funding(self, symbol: str, start: str | pd.Timestamp, end: str | pd.Timestamp
                      ) -> pd.DataFrame:
        """Funding settlements of a perpetual in [start, end), every 8 h at 00:00/08:00/16:00 UTC."""
        sym = self.funding_symbol(symbol)
        start, end = _utc(start), _utc(end)
        if start < ORIGIN:
            raise ConfigError(f"the synthetic market starts at {ORIGIN.date()}: pass a later start")
        k0 = max(0, -(-(start - ORIGIN) // FUNDING_EVERY))
        k1 = max(k0, -(-(end - ORIGIN) // FUNDING_EVERY))
        rates = self._funding_rates(sym, k1)[k0:]
        ts = ORIGIN + FUNDING_EVERY * np.arange(k0, k1)
        return pd.DataFrame({"ts": pd.DatetimeIndex(ts).as_unit("ns"), "rate": rates})


@functools.lru_cache(maxsize=8)
def _regime_table(seed: int, cls: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start day since origin, annual drift, rw weight) of each regime, through 2040."""
    rng = np.random.default_rng(_seed_int(seed, cls, "regimes"))
    probs = np.array([r[0] for r in _REGIMES[cls]])
    starts, drifts, weights = [], [], []
    day = 0.0
    while day < 365.25 * 23:
        k = rng.choice(len(probs), p=probs)
        _, (lo, hi), w = _REGIMES[cls][k]
        starts.append(day)
        drifts.append(rng.uniform(lo, hi))
        weights.append(w)
        day += max(2.0, rng.exponential(_REGIME_DAYS[cls]))
    return np.array(starts), np.array(drifts), np.array(weights)


def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _derived_spec(symbol: str) -> AssetSpec:
    h = _seed_int(symbol)
    if asset_class(symbol) == "crypto":
        return AssetSpec(1 + h % 5000, 0.6 + (h >> 8) % 50 / 100, 0.7, 1_000.0)
    return AssetSpec(20 + h % 400, 0.18 + (h >> 8) % 25 / 100, 0.7, 50_000.0)


def _frame(ts: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
           v: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({
        "ts": pd.DatetimeIndex(ts.view("datetime64[us]"), tz="UTC"),
        "open": o, "high": h, "low": lo, "close": c, "volume": v,
    })
