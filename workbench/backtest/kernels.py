"""Array-level simulation kernel (numba): signals, stops, costs and sizing -> orders and equity.

One kernel serves the detailed backtest (orders recorded, then wrapped in a vectorbt Portfolio)
and the sweep (nothing recorded, statistics accumulated in place), so both give the same numbers.
The rules it implements are written out in SEMANTICS.md next to this file.
"""

from __future__ import annotations

import numba
import numpy as np

# order reasons (also the codes stored in order records)
ENTRY, EXIT, STOP_LOSS, TAKE_PROFIT, TRAILING_STOP = 0, 1, 2, 3, 4
REASONS = ("entry", "exit", "stop_loss", "take_profit", "trailing_stop")
BUY, SELL = 0, 1

# slots of the statistics vector the kernel fills
ST_CLOSED, ST_WINS, ST_GROSS_PROFIT, ST_GROSS_LOSS, ST_SUM_RET, ST_BEST, ST_WORST = 0, 1, 2, 3, 4, 5, 6
ST_EXPOSED_BARS, ST_GROSS_EXPOSURE, ST_TRADED_VALUE, ST_OPEN, ST_ORDERS = 7, 8, 9, 10, 11
N_STATS = 12


@numba.njit(cache=True, inline="always")
def _at(a: np.ndarray, i: int, j: int) -> float:
    """Flexible indexing: a (1, m) or (n, 1) or (1, 1) array broadcasts against (n, m)."""
    return a[i if a.shape[0] > 1 else 0, j if a.shape[1] > 1 else 0]


@numba.njit(cache=True)
def simulate_nb(open_, high, low, close, le, lx, se, sx, sl, tp, tsl, frac, slip,
                fees, init_cash, max_exposure, at_open, record, value_out, gross_out,
                o_idx, o_col, o_side, o_size, o_price, o_fees, o_reason, stats, t_pnl, t_ret):
    """Simulate one portfolio (all columns share cash); return the number of orders recorded.

    Prices are (n, m); signals (n, m) booleans indexed by signal bar; `sl tp tsl frac slip` are
    flexible (1 or n rows, 1 or m columns): stops and sizing by signal bar, slippage by fill bar.
    `gross_out` (n,) receives the gross exposure per bar and `t_pnl`/`t_ret` each closed trade's
    pnl and return, in exit order, when they are long enough (pass 1-element arrays to skip).
    """
    n, m = close.shape
    lag = 1 if at_open else 0
    cash = init_cash
    pos = np.zeros(m)
    entry_px = np.full(m, np.nan)
    entry_fee = np.zeros(m)
    ref = np.full(m, np.nan)  # trailing reference: peak for longs, trough for shorts
    t_sl = np.full(m, np.nan)
    t_tp = np.full(m, np.nan)
    t_tsl = np.full(m, np.nan)
    stopped = np.zeros(m, dtype=np.bool_)
    action = np.zeros(m, dtype=np.int64)
    px = np.empty(m)
    for k in range(N_STATS):
        stats[k] = 0.0
    stats[ST_BEST] = -np.inf
    stats[ST_WORST] = np.inf
    n_orders = 0

    for i in range(n):
        s = i - lag
        for j in range(m):
            stopped[j] = False
        # 1. gap through a stop or target at the open
        for j in range(m):
            if pos[j] == 0.0:
                continue
            lvl, why = _stop_level(pos[j], entry_px[j], ref[j], t_sl[j], t_tsl[j])
            tpl = _tp_level(pos[j], entry_px[j], t_tp[j])
            o = open_[i, j]
            hit = False
            if not np.isnan(lvl) and ((pos[j] > 0 and o <= lvl) or (pos[j] < 0 and o >= lvl)):
                hit = True
            elif not np.isnan(tpl) and ((pos[j] > 0 and o >= tpl) or (pos[j] < 0 and o <= tpl)):
                hit = True
                why = TAKE_PROFIT
            if hit:
                cash, n_orders = _close(i, j, o, _at(slip, i, j), fees, why, cash, pos, entry_px, entry_fee,
                                        record, n_orders, o_idx, o_col, o_side, o_size, o_price, o_fees,
                                        o_reason, stats, t_pnl, t_ret)
                stopped[j] = True
        # 2. signal orders at the open
        if at_open and s >= 0:
            for j in range(m):
                px[j] = open_[i, j]
            cash, n_orders = _signal_orders(i, s, px, le, lx, se, sx, sl, tp, tsl, frac, slip, fees,
                                            max_exposure, cash, pos, entry_px, entry_fee, ref, t_sl, t_tp,
                                            t_tsl, stopped, action, record, n_orders, o_idx, o_col, o_side,
                                            o_size, o_price, o_fees, o_reason, stats, t_pnl, t_ret)
        # 3. stops inside the bar, then the trailing reference moves
        for j in range(m):
            if pos[j] == 0.0 or stopped[j]:
                continue
            lvl, why = _stop_level(pos[j], entry_px[j], ref[j], t_sl[j], t_tsl[j])
            tpl = _tp_level(pos[j], entry_px[j], t_tp[j])
            exit_px = np.nan
            if pos[j] > 0:
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
                cash, n_orders = _close(i, j, exit_px, _at(slip, i, j), fees, why, cash, pos, entry_px,
                                        entry_fee, record, n_orders, o_idx, o_col, o_side, o_size, o_price,
                                        o_fees, o_reason, stats, t_pnl, t_ret)
                stopped[j] = True
            elif pos[j] > 0:
                ref[j] = max(ref[j], high[i, j])
            else:
                ref[j] = min(ref[j], low[i, j])
        # 4. signal orders at the close
        if not at_open:
            for j in range(m):
                px[j] = close[i, j]
            cash, n_orders = _signal_orders(i, i, px, le, lx, se, sx, sl, tp, tsl, frac, slip, fees,
                                            max_exposure, cash, pos, entry_px, entry_fee, ref, t_sl, t_tp,
                                            t_tsl, stopped, action, record, n_orders, o_idx, o_col, o_side,
                                            o_size, o_price, o_fees, o_reason, stats, t_pnl, t_ret)
        value = cash
        gross = 0.0
        for j in range(m):
            if pos[j] != 0.0:
                value += pos[j] * close[i, j]
                gross += abs(pos[j] * close[i, j])
        value_out[i] = value
        ratio = gross / value if gross > 0.0 and value > 0.0 else 0.0
        if gross > 0.0:
            stats[ST_EXPOSED_BARS] += 1.0
            stats[ST_GROSS_EXPOSURE] += ratio
        if gross_out.shape[0] == n:
            gross_out[i] = ratio
    for j in range(m):
        if pos[j] != 0.0:
            stats[ST_OPEN] += 1.0
    stats[ST_ORDERS] = n_orders
    return n_orders


@numba.njit(cache=True, inline="always")
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


@numba.njit(cache=True, inline="always")
def _tp_level(p, e, tp):
    if np.isnan(tp):
        return np.nan
    return e * (1.0 + tp) if p > 0 else e * (1.0 - tp)


@numba.njit(cache=True)
def _record(record, n, i, j, side, size, price, fee, reason, o_idx, o_col, o_side, o_size, o_price,
            o_fees, o_reason):
    if record:
        o_idx[n] = i
        o_col[n] = j
        o_side[n] = side
        o_size[n] = size
        o_price[n] = price
        o_fees[n] = fee
        o_reason[n] = reason
    return n + 1


@numba.njit(cache=True)
def _close(i, j, price, slip_ij, fees, reason, cash, pos, entry_px, entry_fee, record, n_orders,
           o_idx, o_col, o_side, o_size, o_price, o_fees, o_reason, stats, t_pnl, t_ret):
    """Close the whole position of column j at `price` (slippage against us); book the trade."""
    q = abs(pos[j])
    if pos[j] > 0:
        fill = price * (1.0 - slip_ij)
        fee = q * fill * fees
        cash += q * fill - fee
        pnl = q * (fill - entry_px[j]) - entry_fee[j] - fee
        side = SELL
    else:
        fill = price * (1.0 + slip_ij)
        fee = q * fill * fees
        cash -= q * fill + fee
        pnl = q * (entry_px[j] - fill) - entry_fee[j] - fee
        side = BUY
    ret = pnl / (q * entry_px[j])
    k = int(stats[ST_CLOSED])
    if k < t_pnl.shape[0] and t_pnl.shape[0] > 1:
        t_pnl[k] = pnl
        t_ret[k] = ret
    stats[ST_CLOSED] += 1.0
    if pnl > 0:
        stats[ST_WINS] += 1.0
        stats[ST_GROSS_PROFIT] += pnl
    elif pnl < 0:
        stats[ST_GROSS_LOSS] -= pnl
    stats[ST_SUM_RET] += ret
    stats[ST_BEST] = max(stats[ST_BEST], ret)
    stats[ST_WORST] = min(stats[ST_WORST], ret)
    stats[ST_TRADED_VALUE] += q * fill
    pos[j] = 0.0
    entry_px[j] = np.nan
    entry_fee[j] = 0.0
    n_orders = _record(record, n_orders, i, j, side, q, fill, fee, reason, o_idx, o_col, o_side, o_size,
                       o_price, o_fees, o_reason)
    return cash, n_orders


@numba.njit(cache=True)
def _signal_orders(i, s, px, le, lx, se, sx, sl, tp, tsl, frac, slip, fees, max_exposure, cash, pos,
                   entry_px, entry_fee, ref, t_sl, t_tp, t_tsl, stopped, action, record, n_orders,
                   o_idx, o_col, o_side, o_size, o_price, o_fees, o_reason, stats, t_pnl, t_ret):
    """Resolve bar s's signals into exits (all symbols first) and then entries, filled at `px`."""
    m = px.shape[0]
    # action: 0 none, 1 exit, 2 long, 3 short, 4 exit+long, 5 exit+short
    for j in range(m):
        action[j] = 0
        if stopped[j]:
            continue
        a_le, a_lx, a_se, a_sx = le[s, j], lx[s, j], se[s, j], sx[s, j]
        if a_le and a_lx:
            a_le = False
            a_lx = False
        if a_se and a_sx:
            a_se = False
            a_sx = False
        if a_le and a_se:
            a_le = False
            a_se = False
        if pos[j] > 0:
            if a_se:
                action[j] = 5
            elif a_lx:
                action[j] = 1
        elif pos[j] < 0:
            if a_le:
                action[j] = 4
            elif a_sx:
                action[j] = 1
        elif a_le:
            action[j] = 2
        elif a_se:
            action[j] = 3
    for j in range(m):
        if action[j] == 1 or action[j] >= 4:
            cash, n_orders = _close(i, j, px[j], _at(slip, i, j), fees, EXIT, cash, pos, entry_px, entry_fee,
                                    record, n_orders, o_idx, o_col, o_side, o_size, o_price, o_fees,
                                    o_reason, stats, t_pnl, t_ret)
    for j in range(m):
        if action[j] < 2:
            continue
        long = action[j] == 2 or action[j] == 4
        f = _at(frac, s, j)
        if np.isnan(f):
            continue
        f = min(f, max_exposure)
        if f <= 0.0:
            continue
        equity = cash
        for k in range(m):
            if pos[k] != 0.0:
                equity += pos[k] * px[k]
        if equity <= 0.0:
            continue
        slip_ij = _at(slip, i, j)
        if long:
            fill = px[j] * (1.0 + slip_ij)
            q = f * equity / fill
            if q * fill * (1.0 + fees) > cash:
                if cash <= 0.0:
                    continue
                q = cash / (1.0 + fees) / fill
            fee = q * fill * fees
            cash -= q * fill + fee
            pos[j] = q
            side = BUY
        else:
            fill = px[j] * (1.0 - slip_ij)
            q = f * equity / fill
            fee = q * fill * fees
            cash += q * fill - fee
            pos[j] = -q
            side = SELL
        if q <= 0.0:
            pos[j] = 0.0
            continue
        entry_px[j] = fill
        entry_fee[j] = fee
        ref[j] = fill
        t_sl[j] = _at(sl, s, j)
        t_tp[j] = _at(tp, s, j)
        t_tsl[j] = _at(tsl, s, j)
        stats[ST_TRADED_VALUE] += q * fill
        n_orders = _record(record, n_orders, i, j, side, q, fill, fee, ENTRY, o_idx, o_col, o_side, o_size,
                           o_price, o_fees, o_reason)
    return cash, n_orders
