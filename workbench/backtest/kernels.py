"""Array-level simulation kernel (numba): signals, stops, costs and sizing -> orders and equity.

One kernel serves the detailed backtest (orders recorded, then wrapped in a vectorbt Portfolio)
and the sweep (nothing recorded, statistics accumulated in place), so both give the same numbers.
The rules it implements are written out in SEMANTICS.md next to this file.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

import numba
import numpy as np

# order reasons (also the codes stored in order records)
ENTRY, EXIT, STOP_LOSS, TAKE_PROFIT, TRAILING_STOP = 0, 1, 2, 3, 4
REASONS = ("entry", "exit", "stop_loss", "take_profit", "trailing_stop")
BUY, SELL = 0, 1

# slots of the statistics vector the kernel fills
# (trade statistics come from the `trades` buffer; these are the totals nothing else holds)
ST_CLOSED, ST_EXPOSED_BARS, ST_TRADED_VALUE, ST_OPEN, ST_ORDERS = 0, 1, 2, 3, 4
ST_CASH, ST_N_OPEN, ST_N_STOPS, ST_SUM_VALUE = 5, 6, 7, 8
ST_INTEREST, ST_FUNDING = 9, 10
N_STATS = 11

# per-column position state, one row per column, then the column's resting entry order
POS, EPX, EFEE, REF, SL, TP, TSL = 0, 1, 2, 3, 4, 5, 6
R_KIND, R_LONG, R_LIM, R_STP, R_SBAR, R_LEFT, R_FROM, R_TRIG = 7, 8, 9, 10, 11, 12, 13, 14
FRESH = 15  # the bar in which a resting order entered the position intrabar (-1: none)
R_QTY = 16  # a partly filled resting order's quantity still to fill (NaN: not filled yet)
R_DONE = 17  # the bar of a resting order's last fill (it fills at most once a bar)
N_STATE = 18
# entry order types (SEMANTICS.md "Entry orders"; the codes `Signals.order_type` is stored as)
MARKET, LIMIT, STOP, STOP_LIMIT = 0, 1, 2, 3
ORDER_TYPES = ("market", "limit", "stop", "stop_limit")
# order buffer columns (a float64 (capacity, 7) array: integers are exact in float64)
O_IDX, O_COL, O_SIDE, O_SIZE, O_PRICE, O_FEES, O_REASON = 0, 1, 2, 3, 4, 5, 6
N_ORDER_FIELDS = 7



class _JitOptions(TypedDict):
    cache: bool
    error_model: Literal["python", "numpy"]


_NJ: _JitOptions = {"cache": True, "error_model": "numpy"}
# the simulation's inner functions allocate nothing: compiled without numba's reference counting, which
# otherwise increments and decrements (atomically) each of the ~20 arrays passed at every event call, about
# 0.25 us per bar with a signal (an SMA sweep's kernel went from 5.2 ms to 2.5 ms per combination)
_NJ_NO_NRT: dict[str, Any] = {"cache": True, "error_model": "numpy", "_nrt": False}


@numba.njit(inline="always", **_NJ)
def _at(a: np.ndarray, i: int, j: int) -> float:
    """Flexible indexing: a (1, m) or (n, 1) or (1, 1) array broadcasts against (n, m)."""
    return a[i if a.shape[0] > 1 else 0, j if a.shape[1] > 1 else 0]


# what a bar's signals do to a symbol (SEMANTICS.md "Signals -> orders"; `Action` names them)
A_NONE, A_EXIT, A_LONG, A_SHORT, A_EXIT_LONG, A_EXIT_SHORT = 0, 1, 2, 3, 4, 5


@numba.njit(inline="always", **_NJ)
def unconflicted(le, lx, se, sx):
    """A bar's signals after the conflict rules, in order: long entry + exit cancel, then short entry
    + exit, then long entry + short entry (SEMANTICS.md "Signals -> orders")."""
    if le and lx:
        le = False
        lx = False
    if se and sx:
        se = False
        sx = False
    if le and se:
        le = False
        se = False
    return le, lx, se, sx


@numba.njit(inline="always", **_NJ_NO_NRT)
def signal_action(le: bool, lx: bool, se: bool, sx: bool, position: float) -> int:
    """The one rule from a bar's signals (sides `direction` drops already removed) and the position
    before them to an action: conflicting pairs cancel, reversals exit then enter, no pyramiding.
    The kernel calls it for every column with a signal; the paper runner calls it from Python."""
    le, lx, se, sx = unconflicted(le, lx, se, sx)
    if position > 0:
        if se:
            return A_EXIT_SHORT
        if lx:
            return A_EXIT
    elif position < 0:
        if le:
            return A_EXIT_LONG
        if sx:
            return A_EXIT
    elif le:
        return A_LONG
    elif se:
        return A_SHORT
    return A_NONE


@numba.njit(inline="always", **_NJ)
def _any_signal(le, lx, se, sx, s):
    """Whether bar s carries any signal for any column (most bars do not: skip the order logic)."""
    for j in range(le.shape[1]):  # noqa: SIM110 - numba compiles loops, not generator expressions
        if le[s, j] or lx[s, j] or se[s, j] or sx[s, j]:
            return True
    return False


@numba.njit(**_NJ)
def simulate_nb(open_, high, low, close, le, lx, se, sx, sl, tp, tsl, frac, slip, fees, init_cash,
                max_exposure, lots, margin_bar, at_open, value_out, gross_out, orders, stats, trades,
                otype, olim, ostp, otif, touch, borrow_bar, imp, fund, vcap):
    """See `_simulate`; this allocates its scratch state."""
    m = close.shape[1]
    st = np.full((m, N_STATE), np.nan)
    return _simulate(open_, high, low, close, le, lx, se, sx, sl, tp, tsl, frac, slip, fees, init_cash,
                     max_exposure, lots, margin_bar, at_open, value_out, gross_out, orders, stats, trades,
                     otype, olim, ostp, otif, touch, borrow_bar, imp, fund, vcap, st,
                     np.zeros(m, dtype=np.bool_), np.zeros(m, dtype=np.int64), np.empty(m),
                     np.empty(m, dtype=np.int64), np.empty(m))


@numba.njit(**_NJ_NO_NRT)
def _simulate(open_, high, low, close, le, lx, se, sx, sl, tp, tsl, frac, slip, fees, init_cash,
              max_exposure, lots, margin_bar, at_open, value_out, gross_out, orders, stats, trades,
              otype, olim, ostp, otif, touch, borrow_bar, imp, fund, vcap, st, stopped, action, px, held_cols,
              held_qty):
    """Simulate one portfolio (all columns share cash); return the number of orders.

    Prices are (n, m); signals (n, m) booleans indexed by signal bar; `sl tp tsl frac slip` are
    flexible (1 or n rows, 1 or m columns): stops and sizing by signal bar, slippage by fill bar.
    Mixed calendars: open/high/low are NaN where a column has no bar (it takes no part in that bar)
    and close carries its last close forward (SEMANTICS.md "Timeline").
    `orders` (capacity, 7) receives the orders and `trades` (capacity, 2) each closed trade's pnl
    and return in exit order; `gross_out` (n,) the gross exposure per bar (a division per bar, so
    sweeps skip it). Pass arrays with one row (or element) to skip recording. `stats` (N_STATS,)
    receives the running totals. `lots` (3, m): each column's lot, minimum quantity and minimum
    notional (0 = none); `margin_bar` the interest rate per bar on negative cash. `otype olim ostp
    otif` (flexible, by signal bar): each entry's order type code, limit and stop prices and time in
    force in the column's own bars; `touch` fills a resting limit when the price touches it;
    `borrow_bar` the fee per bar on the value of each short position (its last close); `imp`
    (flexible, by fill bar) the square-root impact per sqrt(unit): a fill of q adds imp * sqrt(q) to
    its slippage (at most IMPACT_CAP); `fund` (flexible, by bar) each column's funding rate settled at
    the bar's open on the position held into it (0: none); `vcap` (flexible, by fill bar) the most an
    entry fill may take (volume_cap x the bar's volume; inf: no cap).
    """
    n, m = close.shape
    lag = 1 if at_open else 0
    st[:, POS] = 0.0
    st[:, EFEE] = 0.0
    st[:, R_KIND] = MARKET
    st[:, FRESH] = -1.0
    st[:, R_DONE] = -1.0
    for k in range(N_STATS):
        stats[k] = 0.0
    stats[ST_CASH] = init_cash
    record_gross = gross_out.shape[0] == n
    # hot values live in locals (the stats array may alias the outputs, which would force reloads);
    # they are synced with `stats` around the rare calls that trade
    cash = init_cash
    n_open = 0.0
    n_stops = 0.0
    exposed = 0.0
    dirty = False
    value = init_cash
    sum_value = 0.0
    interest = 0.0
    funding = 0.0
    funded = fund.shape[0] > 1 or fund[0, 0] != 0.0 or fund.shape[1] > 1
    resting = 0  # columns with a resting entry order (an upper bound: a stop cancels remainders)
    i = -1
    while i + 1 < n:
        i += 1
        # bars where nothing can happen but the marking (no stop, no resting order, no charge, no signal
        # acting) run in a tight loop: most bars of most strategies
        if n_stops == 0 and resting == 0 and (cash >= 0.0 or margin_bar == 0.0) and (
                n_open == 0 or (not funded and (borrow_bar == 0.0 or _no_shorts(st)))):
            if dirty:
                for j in range(m):
                    stopped[j] = False
                dirty = False
            stats[ST_SUM_VALUE] = 0.0
            stats[ST_EXPOSED_BARS] = 0.0
            nxt = _coast(i, lag, at_open, le, lx, se, sx, close, cash, st, value_out, gross_out, record_gross,
                         stats, held_cols, held_qty)
            sum_value += stats[ST_SUM_VALUE]
            exposed += stats[ST_EXPOSED_BARS]
            if nxt > i:
                value = value_out[nxt - 1]
                i = nxt
                if i >= n:
                    break
        s = i - lag
        if cash < 0.0 and i > 0:
            charge = -cash * margin_bar
            cash -= charge
            interest += charge
        if borrow_bar > 0.0 and n_open > 0 and i > 0:
            for j in range(m):
                if st[j, POS] < 0.0:
                    fee = -st[j, POS] * close[i - 1, j] * borrow_bar
                    cash -= fee
                    interest += fee
        if funded and n_open > 0:
            for j in range(m):
                r = _at(fund, i, j)
                if r != 0.0 and st[j, POS] != 0.0 and not np.isnan(open_[i, j]):
                    fee = st[j, POS] * open_[i, j] * r
                    cash -= fee
                    funding += fee
        if dirty:
            for j in range(m):
                stopped[j] = False
            dirty = False
        if n_stops > 0:
            stats[ST_CASH] = cash
            _gap_stops(i, open_, slip, imp, fees, st, stopped, orders, trades, stats)
            cash, n_open, n_stops = stats[ST_CASH], stats[ST_N_OPEN], stats[ST_N_STOPS]
            dirty = True
        if at_open and s >= 0 and _any_signal(le, lx, se, sx, s):
            for j in range(m):
                px[j] = open_[i, j]
                if np.isnan(px[j]):  # no bar of j here (mixed calendars): its last close
                    px[j] = close[i, j]
            stats[ST_CASH] = cash
            resting = _signal_orders(i, s, px, le, lx, se, sx, sl, tp, tsl, frac, slip, imp, fees,
                                     max_exposure, lots, st, stopped, action, orders, trades, stats, otype,
                                     olim, ostp, otif, i, vcap)
            cash, n_open, n_stops = stats[ST_CASH], stats[ST_N_OPEN], stats[ST_N_STOPS]
        if resting > 0:
            for j in range(m):
                px[j] = open_[i, j]
                if np.isnan(px[j]):
                    px[j] = close[i, j]
            stats[ST_CASH] = cash
            resting = _resting_fills(i, open_, high, low, px, frac, sl, tp, tsl, slip, imp, fees,
                                     max_exposure, lots, st, stopped, orders, stats, touch, vcap)
            cash, n_open, n_stops = stats[ST_CASH], stats[ST_N_OPEN], stats[ST_N_STOPS]
        if n_stops > 0:
            stats[ST_CASH] = cash
            _intrabar_stops(i, high, low, slip, imp, fees, st, stopped, orders, trades, stats)
            cash, n_open, n_stops = stats[ST_CASH], stats[ST_N_OPEN], stats[ST_N_STOPS]
            dirty = True
        if not at_open and _any_signal(le, lx, se, sx, i):
            for j in range(m):
                px[j] = close[i, j]
            stats[ST_CASH] = cash
            resting = _signal_orders(i, i, px, le, lx, se, sx, sl, tp, tsl, frac, slip, imp, fees,
                                     max_exposure, lots, st, stopped, action, orders, trades, stats, otype,
                                     olim, ostp, otif, i + 1, vcap)
            cash, n_open, n_stops = stats[ST_CASH], stats[ST_N_OPEN], stats[ST_N_STOPS]
        value = cash
        ratio = 0.0
        if n_open > 0:
            gross = 0.0
            for j in range(m):
                p = st[j, POS]
                if p != 0.0:
                    pv = p * close[i, j]
                    value += pv
                    gross += abs(pv)
            if gross > 0.0:
                exposed += 1.0
                if record_gross and value > 0.0:
                    ratio = gross / value
        sum_value += value
        value_out[i] = value
        if record_gross:
            gross_out[i] = ratio
    stats[ST_CASH] = cash
    stats[ST_EXPOSED_BARS] = exposed
    stats[ST_OPEN] = n_open
    stats[ST_SUM_VALUE] = sum_value
    stats[ST_INTEREST] = interest
    stats[ST_FUNDING] = funding
    return int(stats[ST_ORDERS])


@numba.njit(inline="always", **_NJ)
def _no_shorts(st):
    for j in range(st.shape[0]):  # noqa: SIM110 - numba compiles loops, not generator expressions
        if st[j, POS] < 0.0:
            return False
    return True


@numba.njit(inline="always", **_NJ_NO_NRT)
def _coast(i0, lag, at_open, le, lx, se, sx, close, cash, st, value_out, gross_out, record_gross, stats, cols,
           qty):
    """Mark the portfolio on bars i0.. until one where a signal acts (or the end), when nothing else can
    happen on them (no stop, no resting order, no charge: the caller checks); returns that bar. Adds the
    bars' values and exposed bars to `stats` (ST_SUM_VALUE, ST_EXPOSED_BARS). `cols`, `qty` (m,) are
    scratch for the held columns and their positions."""
    n, m = close.shape
    held = 0
    k = 0
    for j in range(m):
        if st[j, POS] != 0.0:
            cols[k] = j
            qty[k] = st[j, POS]
            k += 1
    held = k
    total = 0.0
    exposed = 0.0
    i = i0
    if m == 1:  # one column (every single-symbol run): find the segment's end, then mark it in one pass
        end = _next_signal1(i0, lag if at_open else 0, le, lx, se, sx, n)
        total, count = _mark1(i0, end, cash, qty[0] if held == 1 else 0.0, close, value_out, gross_out,
                              record_gross)
        stats[ST_SUM_VALUE] = total
        stats[ST_EXPOSED_BARS] = count
        return end
    while i < n:
        s = i - lag if at_open else i
        if s >= 0 and _any_signal(le, lx, se, sx, s):
            break
        value = cash
        gross = 0.0
        for k in range(held):
            pv = qty[k] * close[i, cols[k]]
            value += pv
            gross += abs(pv)
        if gross > 0.0:
            exposed += 1.0
        total += value
        value_out[i] = value
        if record_gross:
            gross_out[i] = gross / value if gross > 0.0 and value > 0.0 else 0.0
        i += 1
    stats[ST_SUM_VALUE] = total
    stats[ST_EXPOSED_BARS] = exposed
    return i


_SCAN = 32  # bars `_next_signal1` tests together


@numba.njit(inline="always", **_NJ_NO_NRT)
def _next_signal1(i0, off, le, lx, se, sx, n):
    """The first bar i >= i0 whose signal bar i - off carries a signal of column 0 (n: none): blocks of
    bars tested at once (the CPU ORs them in vector registers), the hit located in its block. Blocks are
    slices walked from 0: indices numba knows are not negative, so it vectorises the test (indexing
    the arrays at i - off directly was 20 times slower)."""
    i = i0
    while i < n and i - off < 0:
        i += 1
    while i + _SCAN <= n:
        s = i - off
        a = le[s:s + _SCAN, 0]
        b = lx[s:s + _SCAN, 0]
        c = se[s:s + _SCAN, 0]
        d = sx[s:s + _SCAN, 0]
        hit = False
        for k in range(_SCAN):
            hit |= a[k] | b[k] | c[k] | d[k]
        if hit:
            break
        i += _SCAN
    while i < n:
        s = i - off
        if le[s, 0] | lx[s, 0] | se[s, 0] | sx[s, 0]:
            return i
        i += 1
    return n


@numba.njit(fastmath={"reassoc", "nsz"}, **_NJ_NO_NRT)
def _mark1(i0, i1, cash, q, close, value_out, gross_out, record_gross):
    """Mark one column holding q (0: flat) on bars i0..i1-1 at their closes with cash fixed: each bar's
    value (and gross exposure ratio when recorded); returns the values' sum and the exposed bars. The
    sum may be reassociated (the CPU adds several bars at once): every run of one column, backtest or
    sweep, sums through here, so they agree."""
    span = i1 - i0
    value = value_out[i0:i1]
    if q == 0.0:
        value[:] = cash
        if record_gross:
            gross_out[i0:i1] = 0.0
        return cash * span, 0.0
    px = close[i0:i1, 0]
    total = 0.0
    count = 0
    for k in range(span):
        pv = q * px[k]
        v = cash + pv
        value[k] = v
        total += v
        count += abs(pv) > 0.0
    if record_gross:
        gross = gross_out[i0:i1]
        for k in range(span):
            pv = abs(q * px[k])
            v = value[k]
            gross[k] = pv / v if pv > 0.0 and v > 0.0 else 0.0
    return total, float(count)


@numba.njit(inline="always", **_NJ)
def _stop_level(p, e, ref, sl, tsl):
    """The binding protective level of a position and its reason (NaN when it has no stop)."""
    if p > 0:
        fixed = e * (1.0 - sl) if not np.isnan(sl) else np.nan
        trail = ref * (1.0 - tsl) if not np.isnan(tsl) else np.nan
        if np.isnan(trail) or (not np.isnan(fixed) and fixed >= trail):
            return fixed, STOP_LOSS
        return trail, TRAILING_STOP
    fixed = e * (1.0 + sl) if not np.isnan(sl) else np.nan
    trail = ref * (1.0 + tsl) if not np.isnan(tsl) else np.nan
    if np.isnan(trail) or (not np.isnan(fixed) and fixed <= trail):
        return fixed, STOP_LOSS
    return trail, TRAILING_STOP


IMPACT_CAP = 0.5  # the most a fill's market impact adds to its slippage


@numba.njit(inline="always", **_NJ)
def _fill_slip(slip, imp, i, j, q):
    """A fill of q at bar i: its slippage plus the square-root market impact (SEMANTICS.md)."""
    return _at(slip, i, j) + min(_at(imp, i, j) * np.sqrt(q), IMPACT_CAP)


@numba.njit(inline="always", **_NJ)
def _has_stop(st, j):
    return not (np.isnan(st[j, SL]) and np.isnan(st[j, TP]) and np.isnan(st[j, TSL]))


@numba.njit(inline="always", **_NJ)
def _tp_level(p, e, tp):
    if np.isnan(tp):
        return np.nan
    return e * (1.0 + tp) if p > 0 else e * (1.0 - tp)


@numba.njit(**_NJ_NO_NRT)
def _gap_stops(i, open_, slip, imp, fees, st, stopped, orders, trades, stats):
    """Step 1: positions whose stop or target the bar opens beyond exit at the open."""
    for j in range(st.shape[0]):
        p = st[j, POS]
        if p == 0.0:
            continue
        lvl, why = _stop_level(p, st[j, EPX], st[j, REF], st[j, SL], st[j, TSL])
        tpl = _tp_level(p, st[j, EPX], st[j, TP])
        o = open_[i, j]
        hit = False
        if not np.isnan(lvl) and ((p > 0 and o <= lvl) or (p < 0 and o >= lvl)):
            hit = True
        elif not np.isnan(tpl) and ((p > 0 and o >= tpl) or (p < 0 and o <= tpl)):
            hit = True
            why = TAKE_PROFIT
        if hit:
            _close(i, j, o, _fill_slip(slip, imp, i, j, abs(p)), fees, why, st, orders, trades, stats)
            stopped[j] = True


@numba.njit(**_NJ_NO_NRT)
def _intrabar_stops(i, high, low, slip, imp, fees, st, stopped, orders, trades, stats):
    """Step 3: stop-loss (first) or take-profit inside the bar; then the trailing reference moves. A
    position a resting order entered intrabar meets its stop-loss only (SEMANTICS.md "Entry orders")."""
    for j in range(st.shape[0]):
        p = st[j, POS]
        if p == 0.0 or stopped[j]:
            continue
        lvl, why = _stop_level(p, st[j, EPX], st[j, REF], st[j, SL], st[j, TSL])
        if st[j, FRESH] == i:
            if not np.isnan(lvl) and ((p > 0 and low[i, j] <= lvl) or (p < 0 and high[i, j] >= lvl)):
                _close(i, j, lvl, _fill_slip(slip, imp, i, j, abs(p)), fees, why, st, orders, trades, stats)
                stopped[j] = True
            continue
        tpl = _tp_level(p, st[j, EPX], st[j, TP])
        exit_px = np.nan
        if p > 0:
            if not np.isnan(lvl) and low[i, j] <= lvl:
                exit_px = lvl
            elif not np.isnan(tpl) and high[i, j] >= tpl:
                exit_px = tpl
                why = TAKE_PROFIT
        else:
            if not np.isnan(lvl) and high[i, j] >= lvl:
                exit_px = lvl
            elif not np.isnan(tpl) and low[i, j] <= tpl:
                exit_px = tpl
                why = TAKE_PROFIT
        if not np.isnan(exit_px):
            _close(i, j, exit_px, _fill_slip(slip, imp, i, j, abs(p)), fees, why, st, orders, trades, stats)
            stopped[j] = True
        elif p > 0:
            if high[i, j] > st[j, REF]:  # NaN (no bar of j here: mixed calendars) moves nothing
                st[j, REF] = high[i, j]
        elif low[i, j] < st[j, REF]:
            st[j, REF] = low[i, j]


@numba.njit(inline="always", **_NJ_NO_NRT)
def _record(orders, stats, i, j, side, size, price, fee, reason):
    k = int(stats[ST_ORDERS])
    if orders.shape[0] > 1:
        orders[k, O_IDX] = i
        orders[k, O_COL] = j
        orders[k, O_SIDE] = side
        orders[k, O_SIZE] = size
        orders[k, O_PRICE] = price
        orders[k, O_FEES] = fee
        orders[k, O_REASON] = reason
    stats[ST_ORDERS] = k + 1


@numba.njit(**_NJ_NO_NRT)
def _close(i, j, price, slip_ij, fees, reason, st, orders, trades, stats):
    """Close the whole position of column j at `price` (slippage against us); book the trade."""
    p = st[j, POS]
    q = abs(p)
    if p > 0:
        fill = price * (1.0 - slip_ij)
        fee = q * fill * fees
        stats[ST_CASH] += q * fill - fee
        pnl = q * (fill - st[j, EPX]) - st[j, EFEE] - fee
        side = SELL
    else:
        fill = price * (1.0 + slip_ij)
        fee = q * fill * fees
        stats[ST_CASH] -= q * fill + fee
        pnl = q * (st[j, EPX] - fill) - st[j, EFEE] - fee
        side = BUY
    ret = pnl / (q * st[j, EPX])
    k = int(stats[ST_CLOSED])
    if trades.shape[0] > 1:
        trades[k, 0] = pnl
        trades[k, 1] = ret
    stats[ST_CLOSED] += 1.0
    stats[ST_TRADED_VALUE] += q * fill
    stats[ST_N_OPEN] -= 1.0
    if _has_stop(st, j):
        stats[ST_N_STOPS] -= 1.0
    st[j, POS] = 0.0
    st[j, EPX] = np.nan
    st[j, EFEE] = 0.0
    if st[j, R_KIND] != MARKET:  # the remainder of a partly filled entry goes with its position
        st[j, R_KIND] = MARKET
        st[j, R_QTY] = np.nan
    _record(orders, stats, i, j, side, q, fill, fee, reason)


@numba.njit(inline="always", **_NJ)
def _n_resting(st):
    k = 0
    for j in range(st.shape[0]):
        if st[j, R_KIND] != MARKET:
            k += 1
    return k


@numba.njit(inline="always", **_NJ_NO_NRT)
def _signal_orders(i, s, px, le, lx, se, sx, sl, tp, tsl, frac, slip, imp, fees, max_exposure, lots, st,
                   stopped, action, orders, trades, stats, otype, olim, ostp, otif, first, vcap):
    """Resolve bar s's signals into exits (all symbols first) and then entries, filled at `px`; an
    entry of another type than market rests from union bar `first` (SEMANTICS.md "Entry orders").
    Returns the number of resting orders."""
    m = px.shape[0]
    for j in range(m):
        action[j] = A_NONE
        if stopped[j]:
            continue
        action[j] = signal_action(le[s, j], lx[s, j], se[s, j], sx[s, j], st[j, POS])
        if st[j, R_KIND] != MARKET:  # a new entry replaces the resting one, an exit of its side cancels it
            _, x_l, _, x_s = unconflicted(le[s, j], lx[s, j], se[s, j], sx[s, j])
            if action[j] >= A_LONG or (x_l if st[j, R_LONG] > 0 else x_s):
                st[j, R_KIND] = MARKET
                st[j, R_QTY] = np.nan
    for j in range(m):
        if action[j] == A_EXIT or action[j] >= A_EXIT_LONG:
            _close(i, j, px[j], _fill_slip(slip, imp, i, j, abs(st[j, POS])), fees, EXIT, st, orders, trades,
                   stats)
    for j in range(m):
        if action[j] < A_LONG:
            continue
        long = action[j] == A_LONG or action[j] == A_EXIT_LONG
        kind = int(_at(otype, s, j))
        if kind == MARKET:
            _enter(i, s, j, long, px[j], _at(slip, i, j), _at(imp, i, j), px, frac, sl, tp, tsl, fees,
                   max_exposure, lots, st, orders, stats, np.nan, _at(vcap, i, j))
            continue
        lim, stp = _at(olim, s, j), _at(ostp, s, j)
        ref_px = lim if kind != STOP else stp
        q = _order_qty(s, j, long, ref_px, px, frac, fees, max_exposure, lots, st, stats)
        if q <= 0.0:
            continue  # refused when placed: nothing rests
        st[j, R_KIND] = kind
        st[j, R_LONG] = 1.0 if long else -1.0
        st[j, R_LIM] = lim
        st[j, R_STP] = stp
        st[j, R_SBAR] = s
        st[j, R_LEFT] = _at(otif, s, j)
        st[j, R_FROM] = first
        st[j, R_TRIG] = -1.0
        st[j, R_QTY] = q
        st[j, R_DONE] = -1.0
    return _n_resting(st)


@numba.njit(inline="always", **_NJ_NO_NRT)
def _equity(cash, st, px):
    equity = cash
    for k in range(px.shape[0]):
        if st[k, POS] != 0.0:
            equity += st[k, POS] * px[k]
    return equity


@numba.njit(inline="always", **_NJ_NO_NRT)
def _fraction(frac, s, j, max_exposure, equity):
    """An entry's target fraction of `equity` from the sizing of signal bar s, capped at the exposure
    cap; NaN when it refuses the entry (no size, a size of 0 or less, or no equity)."""
    f = _at(frac, s, j)
    if np.isnan(f):
        return np.nan
    f = min(f, max_exposure)
    if f <= 0.0 or equity <= 0.0:
        return np.nan
    return f


@numba.njit(**_NJ_NO_NRT)
def _order_qty(s, j, long, ref_px, px, frac, fees, max_exposure, lots, st, stats):
    """The quantity of a resting entry placed now: sized as a market entry at this step, at `ref_px`
    (its limit, else its stop) with no slippage; 0 when sizing refuses it (SEMANTICS.md "Entry orders")."""
    cash = stats[ST_CASH]
    equity = _equity(cash, st, px)
    f = _fraction(frac, s, j, max_exposure, equity)
    if np.isnan(f):
        return 0.0
    q = f * equity / (ref_px * (1.0 + fees))
    if long:
        floor = -max(0.0, max_exposure - 1.0) * equity
        if cash <= floor:
            return 0.0
        if q * ref_px * (1.0 + fees) > cash - floor:
            q = (cash - floor) / (1.0 + fees) / ref_px
    lot = lots[0, j]
    if lot > 0.0:
        q = np.floor(q / lot) * lot
    if q <= 0.0 or q < lots[1, j] or q * ref_px < lots[2, j]:
        return 0.0
    return q


@numba.njit(**_NJ_NO_NRT)
def _resting_fills(i, open_, high, low, px, frac, sl, tp, tsl, slip, imp, fees, max_exposure, lots, st,
                   stopped, orders, stats, touch, vcap):
    """Resting entry orders at bar i: those that fill at the open (symbols in column order), then those
    that fill intrabar; the others count one more bar of their time in force. A limit's remainder after
    a volume-capped fill rests on. Returns the number still resting."""
    m = st.shape[0]
    for phase in range(2):  # 0: at the open, 1: intrabar
        for j in range(m):
            kind = int(st[j, R_KIND])
            if kind == MARKET or i < st[j, R_FROM] or np.isnan(open_[i, j]) or stopped[j]:
                continue
            if (st[j, POS] != 0.0 and st[j, R_DONE] < 0.0) or st[j, R_DONE] == i:
                continue
            sign = st[j, R_LONG]
            lim, stp = st[j, R_LIM], st[j, R_STP]
            price = np.nan
            slipped = False
            if phase == 0:
                o = open_[i, j]
                if kind == LIMIT or st[j, R_TRIG] >= 0.0:
                    if sign * (o - lim) <= 0.0:
                        price = o
                elif kind == STOP and sign * (o - stp) >= 0.0:
                    price = o
                    slipped = True
                elif kind == STOP_LIMIT and sign * (o - stp) >= 0.0:
                    if sign * (o - lim) <= 0.0:
                        price = o
                    else:
                        st[j, R_TRIG] = i  # past its limit at the open: a limit from the next bar
            else:
                if st[j, R_TRIG] == i:
                    pass
                elif kind == LIMIT or st[j, R_TRIG] >= 0.0:
                    far = low[i, j] if sign > 0 else high[i, j]
                    gap = sign * (far - lim)
                    if gap < 0.0 or (touch and gap == 0.0):
                        price = lim
                else:
                    reach = high[i, j] if sign > 0 else low[i, j]
                    if sign * (reach - stp) >= 0.0:
                        price = stp
                        slipped = kind == STOP
            if np.isnan(price):
                continue
            s = int(st[j, R_SBAR])
            flat = st[j, POS] == 0.0
            cost, impact = (_at(slip, i, j), _at(imp, i, j)) if slipped else (0.0, 0.0)
            left = _enter(i, s, j, sign > 0, price, cost, impact, px, frac, sl, tp, tsl, fees, max_exposure,
                          lots, st, orders, stats, st[j, R_QTY], _at(vcap, i, j))
            if np.isnan(left):
                continue  # nothing can fill this bar (no cash for a buy, or the volume cap): it rests on
            if phase == 1 and flat:
                st[j, FRESH] = i
            st[j, R_DONE] = i
            if left > 0.0 and not slipped:  # a limit's remainder rests on at its limit
                st[j, R_QTY] = left
                if kind == STOP_LIMIT and st[j, R_TRIG] < 0.0:
                    st[j, R_TRIG] = i
            else:
                st[j, R_KIND] = MARKET
                st[j, R_QTY] = np.nan
    for j in range(m):  # the bar is over for the orders still resting: one bar less to rest
        if int(st[j, R_KIND]) != MARKET and i >= st[j, R_FROM] and not np.isnan(open_[i, j]):
            st[j, R_LEFT] -= 1.0
            if st[j, R_LEFT] <= 0.0:
                st[j, R_KIND] = MARKET
                st[j, R_QTY] = np.nan
    return _n_resting(st)


@numba.njit(**_NJ_NO_NRT)
def _enter(i, s, j, long, price, slip_ij, imp_ij, px, frac, sl, tp, tsl, fees, max_exposure, lots, st, orders,
           stats, qty, qmax):
    """Enter column j at `price` (before slippage `slip_ij` and the impact of the target quantity,
    `imp_ij` per sqrt(unit)), sized on the equity at prices `px`, with the sizing and stops of signal
    bar s; at most `qmax` fills (the volume cap). `qty` (not NaN) is a partly filled order's remainder:
    not sized again, it adds to the position at its own price. Returns -1 when the entry is refused, NaN
    when the cap lets nothing fill, else the quantity left to fill."""
    cash = stats[ST_CASH]
    equity = _equity(cash, st, px)
    sized = np.isnan(qty)
    f = np.nan
    if sized:
        f = _fraction(frac, s, j, max_exposure, equity)
        if np.isnan(f):
            return -1.0
        if imp_ij > 0.0:  # the impact of the target quantity, before costs (SEMANTICS.md "Market impact")
            slip_ij += min(imp_ij * np.sqrt(f * equity / price), IMPACT_CAP)
    elif imp_ij > 0.0:  # a resting order's: of its quantity
        slip_ij += min(imp_ij * np.sqrt(qty), IMPACT_CAP)
    lot = lots[0, j]
    capped = False
    floor = -max(0.0, max_exposure - 1.0) * equity
    if long:
        fill = price * (1.0 + slip_ij)
        # the fee is reserved: the entry spends f * equity, its fee included
        q = f * equity / (fill * (1.0 + fees)) if sized else qty
        # cash may go below 0 (margin) only down to what the exposure cap allows
        if cash <= floor:
            return -1.0 if sized else np.nan
        capped = q * fill * (1.0 + fees) > cash - floor
        if capped:
            q = (cash - floor) / (1.0 + fees) / fill
        if lot > 0.0:
            q = np.floor(q / lot) * lot
    else:
        fill = price * (1.0 - slip_ij)
        q = f * equity / (fill * (1.0 + fees)) if sized else qty
        if sized and lot > 0.0:
            q = np.floor(q / lot) * lot
    if sized and (q <= 0.0 or q < lots[1, j] or q * fill < lots[2, j]):
        return -1.0
    target = q if sized else qty
    before = q
    if q > qmax:  # at most the volume cap fills now
        q = qmax
        if lot > 0.0:
            q = np.floor(q / lot) * lot
    if q <= 0.0:
        return np.nan
    fee = q * fill * fees
    if long:
        # a buy that spends all the cash it may leaves exactly the floor: no dust to buy crumbs with
        rest = cash - (q * fill + fee)
        whole = q >= before
        stats[ST_CASH] = floor if lot == 0.0 and whole and (capped or rest - floor <= 1e-9 * equity) else rest
        side = BUY
        signed = q
    else:
        stats[ST_CASH] = cash + (q * fill - fee)
        side = SELL
        signed = -q
    stats[ST_TRADED_VALUE] += q * fill
    _record(orders, stats, i, j, side, q, fill, fee, ENTRY)
    held = abs(st[j, POS])
    if held > 0.0:  # a partly filled order's later fill: the entry price becomes the mean fill
        st[j, EPX] = (held * st[j, EPX] + q * fill) / (held + q)
        st[j, EFEE] += fee
        st[j, POS] += signed
        return target - q
    st[j, POS] = signed
    st[j, EPX] = fill
    st[j, EFEE] = fee
    st[j, REF] = fill
    st[j, SL] = _at(sl, s, j)
    st[j, TP] = _at(tp, s, j)
    st[j, TSL] = _at(tsl, s, j)
    stats[ST_N_OPEN] += 1.0
    if _has_stop(st, j):
        stats[ST_N_STOPS] += 1.0
    return target - q
