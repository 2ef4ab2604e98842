"""The compiled loops of the model core: numba ``@njit(cache=True)`` functions over numpy arrays.

Every function here is pure array code: it reads and writes the arrays it is given and returns the ones it had to
reallocate. Ids are dense integers (:mod:`core.v2.ids`); every tie between ids is broken by ``rank`` (the ids'
string order), never by the dense id. :mod:`core.v2.state` owns the arrays and calls these in order.

Sparse rows (item-item co-occurrence, user-user dot products, each user's engaged items -> log slot) live in one
*pool* per kind: row ``a`` is an open-addressing hash table of ``cap[a]`` slots at ``ptr[a]`` in the pool (column
-1 = empty slot), at most half full; a full row moves to a table twice the size at the pool's end (the old slots are
left unused). A row is contiguous, so scanning a user's items or a row's entries reads one block of memory.
"""

from __future__ import annotations

import numpy as np
from numba import njit

EPS = 1e-12
"""A co-occurrence sum or norm with ``|value| <= EPS`` counts as absent (0)."""
MIN_POSITIVE_WEIGHT = 1e-3
"""Weight user-CF and the content profile give a centred rating that is not positive."""
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed 64-bit integer (Fibonacci hashing)


@njit(cache=True, inline="always")
def _hash(key: int, mask: int) -> int:
    return ((key * _GOLDEN) >> 24) & mask


@njit(cache=True, inline="always")
def before(score_a: float, rank_a: int, score_b: float, rank_b: int) -> bool:
    """The total order of every ranked list: higher score first, then the smaller id (string order)."""
    return score_a > score_b or (score_a == score_b and rank_a < rank_b)


# -- pooled sparse rows -------------------------------------------------------------------------------------------
@njit(cache=True)
def _row_grow(a: int, ptr: np.ndarray, cap: np.ndarray, cols: np.ndarray, vals: np.ndarray,
              meta: np.ndarray, used_at: int) -> tuple[np.ndarray, np.ndarray]:
    """Move row ``a`` to a table twice its size at the pool's end (the pool doubles when full)."""
    old_cap = cap[a]
    new_cap = 8 if old_cap == 0 else 2 * old_cap
    used = meta[used_at]
    if used + new_cap > len(cols):
        size = max(2 * len(cols), used + new_cap)
        grown_cols = np.full(size, -1, dtype=np.int32)
        grown_cols[:used] = cols[:used]
        grown_vals = np.zeros(size, vals.dtype)
        grown_vals[:used] = vals[:used]
        cols, vals = grown_cols, grown_vals
    start = used
    mask = new_cap - 1
    p0 = ptr[a]
    for s in range(p0, p0 + old_cap):
        c = cols[s]
        if c != -1:
            h = _hash(c, mask)
            while cols[start + h] != -1:
                h = (h + 1) & mask
            cols[start + h] = c
            vals[start + h] = vals[s]
    ptr[a] = start
    cap[a] = new_cap
    meta[used_at] = used + new_cap
    return cols, vals


@njit(cache=True)
def compact_pool(ptr: np.ndarray, cap: np.ndarray, cols: np.ndarray, vals: np.ndarray, meta: np.ndarray,
                 n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Move the rows of a pool next to each other, in their order in the pool, leaving out the blocks that rows
    which grew left behind, into arrays of the used size plus a quarter; returns them (every row keeps its table,
    slot for slot). ``meta[0]``, the slots used, becomes the rows' total capacity."""
    order = np.argsort(ptr[:n_rows], kind="mergesort")
    live = 0
    for r in range(n_rows):
        live += cap[r]
    size = max(live + live // 4, 1024)
    new_cols = np.full(size, -1, dtype=cols.dtype)
    new_vals = np.zeros(size, vals.dtype)
    at = 0
    for x in range(n_rows):
        r = order[x]
        c = cap[r]
        if c == 0:
            continue
        p0 = ptr[r]
        new_cols[at: at + c] = cols[p0: p0 + c]
        new_vals[at: at + c] = vals[p0: p0 + c]
        ptr[r] = at
        at += c
    meta[0] = at
    return new_cols, new_vals


@njit(cache=True, inline="always")
def row_add(a: int, b: int, d: float, ptr: np.ndarray, cap: np.ndarray, size: np.ndarray, cols: np.ndarray,
            vals: np.ndarray, meta: np.ndarray, used_at: int) -> tuple[np.ndarray, np.ndarray]:
    """``row[a][b] += d`` (the entry is created at 0 first); returns the pool arrays (reallocated if they grew)."""
    if 2 * (size[a] + 1) > cap[a]:
        cols, vals = _row_grow(a, ptr, cap, cols, vals, meta, used_at)
    mask = cap[a] - 1
    base = ptr[a]
    h = _hash(b, mask)
    while True:
        c = cols[base + h]
        if c == b:
            vals[base + h] += d
            return cols, vals
        if c == -1:
            cols[base + h] = b
            vals[base + h] = d
            size[a] += 1
            return cols, vals
        h = (h + 1) & mask


@njit(cache=True)
def row_get(a: int, b: int, ptr: np.ndarray, cap: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> float:
    """``row[a][b]`` (0.0 when absent)."""
    if cap[a] == 0:
        return 0.0
    mask = cap[a] - 1
    base = ptr[a]
    h = _hash(b, mask)
    while True:
        c = cols[base + h]
        if c == b:
            return vals[base + h]
        if c == -1:
            return 0.0
        h = (h + 1) & mask


@njit(cache=True)
def _log_pos(u: int, i: int, ptr: np.ndarray, cap: np.ndarray, items: np.ndarray) -> int:
    """The place of (user u, item i) in the log pool, -1 if u never engaged i."""
    if cap[u] == 0:
        return -1
    mask = cap[u] - 1
    base = ptr[u]
    h = _hash(i, mask)
    while True:
        c = items[base + h]
        if c == i:
            return base + h
        if c == -1:
            return -1
        h = (h + 1) & mask


@njit(cache=True)
def ulog_find(u: int, i: int, ptr: np.ndarray, cap: np.ndarray, items: np.ndarray, slots: np.ndarray) -> int:
    """The log slot of (user u, item i), -1 if u never engaged i (the user's table in the log pool)."""
    p = _log_pos(u, i, ptr, cap, items)
    return slots[p] if p >= 0 else -1


@njit(cache=True)
def prune_row(a: int, keep: int, ptr: np.ndarray, cap: np.ndarray, size: np.ndarray, cols: np.ndarray,
              vals: np.ndarray, norm: np.ndarray, rank: np.ndarray) -> int:
    """Keep the ``keep`` entries of row ``a`` with the largest ``row[a][b] / sqrt(norm_b)`` (ties: id; a column
    with no norm ranks last); the others are dropped (a dropped pair restarts from 0). Returns how many."""
    base = ptr[a]
    n = size[a]
    if n <= keep:
        return 0
    c = np.empty(n, dtype=np.int64)
    v = np.empty(n)
    key = np.empty(n)
    m = 0
    for s in range(base, base + cap[a]):
        b = cols[s]
        if b != -1:
            nb = norm[b]
            c[m] = b
            v[m] = vals[s]
            key[m] = vals[s] / np.sqrt(nb) if nb > 0.0 else -np.inf
            m += 1
    # the m - keep last entries in the order (key desc, id asc), the last one first
    d = m - keep
    worst = np.empty(d, dtype=np.int64)
    nw = 0
    for x in range(m):
        kx, rx = key[x], rank[c[x]]
        if nw == d:
            y = worst[nw - 1]
            if not before(key[y], rank[c[y]], kx, rx):
                continue
            nw -= 1
        p = nw
        while p > 0 and before(key[worst[p - 1]], rank[c[worst[p - 1]]], kx, rx):
            worst[p] = worst[p - 1]
            p -= 1
        worst[p] = x
        nw += 1
    dropped = np.zeros(m, dtype=np.bool_)
    for t in range(d):
        dropped[worst[t]] = True
    for s in range(base, base + cap[a]):
        cols[s] = -1
        vals[s] = 0.0
    mask = cap[a] - 1
    for x in range(m):
        if not dropped[x]:
            h = _hash(c[x], mask)
            while cols[base + h] != -1:
                h = (h + 1) & mask
            cols[base + h] = c[x]
            vals[base + h] = v[x]
    size[a] = keep
    return d


@njit(cache=True)
def log_lacks(users: np.ndarray, items: np.ndarray, ptr: np.ndarray, cap: np.ndarray, l_items: np.ndarray,
              l_slots: np.ndarray) -> np.ndarray:
    """Per (user, item): True when the user never engaged the item."""
    out = np.empty(len(users), dtype=np.bool_)
    for e in range(len(users)):
        out[e] = ulog_find(users[e], items[e], ptr, cap, l_items, l_slots) == -1
    return out


@njit(cache=True)
def _add_norm(norm: np.ndarray, a: int, d: float) -> None:
    n = norm[a] + d
    norm[a] = n if n > EPS else 0.0


# -- top-K of a row ------------------------------------------------------------------------------------------------
@njit(cache=True)
def _insert_top(k: int, n: int, idx: np.ndarray, val: np.ndarray, rank: np.ndarray, j: int, v: float) -> int:
    """Insert (j, v) into the best-first list ``idx/val[:n]`` of at most ``k``; returns its new length."""
    if k == 0:
        return 0
    if n == k:
        last = idx[n - 1]
        if not before(v, rank[j], val[n - 1], rank[last]):
            return n
        n -= 1
    p = n
    while p > 0 and before(v, rank[j], val[p - 1], rank[idx[p - 1]]):
        idx[p] = idx[p - 1]
        val[p] = val[p - 1]
        p -= 1
    idx[p] = j
    val[p] = v
    return n + 1


@njit(cache=True)
def refresh_rows(rows: np.ndarray, k: int, ptr: np.ndarray, cap: np.ndarray, cols: np.ndarray, vals: np.ndarray,
                 norm: np.ndarray, rank: np.ndarray, nb_idx: np.ndarray, nb_sim: np.ndarray, nb_len: np.ndarray,
                 dirty: np.ndarray, gone: np.ndarray) -> None:
    """The exact top-``k`` cosine neighbours ``C[a][b] / sqrt(norm_a · norm_b) > 0`` of each row ``a`` of ``rows``,
    by cosine then id, from the current sums, without the items ``gone`` (withdrawn, deleted, expired); each row
    is marked clean."""
    for a in rows:
        dirty[a] = 0
        nb_len[a] = _top_cosines(a, k, ptr, cap, cols, vals, norm, rank, nb_idx[a], nb_sim[a], gone)


@njit(cache=True)
def _top_cosines(a: int, k: int, ptr: np.ndarray, cap: np.ndarray, cols: np.ndarray, vals: np.ndarray,
                 norm: np.ndarray, rank: np.ndarray, idx: np.ndarray, sim: np.ndarray, gone: np.ndarray) -> int:
    """The top-``k`` positive ``row[a][b] / sqrt(norm_a · norm_b)`` of row ``a`` into idx/sim, by value then id,
    without the columns ``b`` that are ``gone`` (an empty ``gone``: none is)."""
    na = norm[a]
    if na <= 0.0:
        return 0
    n = 0
    base = ptr[a]
    for s in range(base, base + cap[a]):
        b = cols[s]
        if b == -1 or (len(gone) > 0 and gone[b]):
            continue
        v = vals[s]
        if v <= EPS:  # a cosine > 0 needs a positive sum
            continue
        nb = norm[b]
        if nb <= 0.0:
            continue
        c = v / np.sqrt(nb * na)
        if c > 0.0:
            n = _insert_top(k, n, idx, sim, rank, b, c)
    return n


@njit(cache=True)
def mark_holders(items: np.ndarray, ptr: np.ndarray, cap: np.ndarray, cols: np.ndarray, dirty: np.ndarray) -> None:
    """Mark dirty every row holding one of ``items`` (by symmetry: the columns of each item's own row)."""
    for b in items:
        dirty[b] = 1
        base = ptr[b]
        for s in range(base, base + cap[b]):
            c = cols[s]
            if c != -1:
                dirty[c] = 1


# -- learning -------------------------------------------------------------------------------------------------------
@njit(cache=True)
def learn_log(ev_user: np.ndarray, ev_item: np.ndarray, ev_value: np.ndarray, ev_type: np.ndarray,
              ev_ts: np.ndarray, center: bool, rate_type: int,
              l_ptr: np.ndarray, l_cap: np.ndarray, l_size: np.ndarray, l_items: np.ndarray, l_slots: np.ndarray,
              l_meta: np.ndarray, lg_item: np.ndarray, lg_value: np.ndarray, lg_ts: np.ndarray,
              lg_type: np.ndarray, lg_w: np.ndarray, lg_rating: np.ndarray,
              u_rsum: np.ndarray, u_rn: np.ndarray, u_last: np.ndarray,
              b_sum: np.ndarray, b_n: np.ndarray, i_users: np.ndarray, i_last: np.ndarray,
              meta: np.ndarray, fmeta: np.ndarray, out_w: np.ndarray, out_w0: np.ndarray, out_new: np.ndarray,
              l_w: np.ndarray, l_ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Apply a batch (in canonical order) to the per-user log, the baseline sums and the item statistics.

    Per event: the model weight ``out_w`` (the rating or type weight, centred on the user's other ratings when
    ``center``), the weight it replaces ``out_w0`` (0 if new) and ``out_new`` (first engagement of the pair).
    ``meta``: [log slots used, max users of an item, latest event time, ratings count]; ``fmeta``: [ratings sum,
    the mean before any rating]. ``l_w``, ``l_ts``: the slot's weight and time beside its place in the log pool
    (``lg_w[slot]``, ``lg_ts[slot]``), so that a scan of a user's items reads one block. Returns the log pool's
    arrays (``l_size[u]``: the user's engaged items) and ``l_w``, ``l_ts``.
    """
    for e in range(len(ev_user)):
        u, i, value, t, ts = ev_user[e], ev_item[e], ev_value[e], ev_type[e], ev_ts[e]
        slot = ulog_find(u, i, l_ptr, l_cap, l_items, l_slots)
        w = value
        if center and t == rate_type:
            total, n = u_rsum[u], u_rn[u]
            if slot >= 0 and lg_type[slot] == rate_type:
                total -= lg_value[slot]
                n -= 1
            w = value - total / n if n > 0 else value - (fmeta[0] / meta[3] if meta[3] > 0 else fmeta[1])
        if slot >= 0:
            out_w0[e] = lg_w[slot]
            out_new[e] = 0
            if lg_type[slot] == rate_type:
                u_rsum[u] -= lg_value[slot]
                u_rn[u] -= 1
        else:
            slot = meta[0]
            meta[0] += 1
            old_ptr = l_ptr[u]
            l_items, l_slots = row_add(u, i, slot, l_ptr, l_cap, l_size, l_items, l_slots, l_meta, 0)
            if len(l_w) < len(l_items):  # the pool grew
                grown_w = np.zeros(len(l_items))
                grown_w[: len(l_w)] = l_w
                grown_ts = np.zeros(len(l_items), dtype=np.int64)
                grown_ts[: len(l_ts)] = l_ts
                l_w, l_ts = grown_w, grown_ts
            if l_ptr[u] != old_ptr:  # the row moved: its weights and times follow
                for x in range(l_ptr[u], l_ptr[u] + l_cap[u]):
                    if l_items[x] != -1 and l_slots[x] != slot:
                        l_w[x] = lg_w[l_slots[x]]
                        l_ts[x] = lg_ts[l_slots[x]]
            lg_item[slot] = i
            lg_rating[slot] = np.nan
            out_w0[e] = 0.0
            out_new[e] = 1
        if t == rate_type:
            u_rsum[u] += value
            u_rn[u] += 1
            old = lg_rating[slot]
            if np.isnan(old):
                b_sum[i] += value
                b_n[i] += 1
                fmeta[0] += value
                meta[3] += 1
            else:
                b_sum[i] += value - old
                fmeta[0] += value - old
            lg_rating[slot] = value
        lg_value[slot] = value
        lg_ts[slot] = ts
        lg_type[slot] = t
        lg_w[slot] = w
        pos = _log_pos(u, i, l_ptr, l_cap, l_items)
        l_w[pos] = w
        l_ts[pos] = ts
        out_w[e] = w
        if ts > u_last[u]:
            u_last[u] = ts
        if out_new[e] == 1:
            i_users[i] += 1
            if i_users[i] > meta[1]:
                meta[1] = i_users[i]
        if ts > i_last[i]:
            i_last[i] = ts
        if ts > meta[2]:
            meta[2] = ts
    return l_items, l_slots, l_w, l_ts


@njit(cache=True)
def learn_trending(ev_item: np.ndarray, ev_ts: np.ndarray, half_life_s: float, width_ms: int, n_buckets: int,
                   tr_val: np.ndarray, tr_t: np.ndarray, tb: np.ndarray, tb_id: np.ndarray, totals: np.ndarray,
                   meta: np.ndarray) -> None:
    """Trending counts of a batch: the decayed popularity ``Σ 2^(-(now - ts) / half_life)`` per item (kept as a
    value at the item's time) and the sliding window of ``n_buckets`` event-time buckets (``tb[item, slot]``, the
    slot's bucket ``tb_id[slot]``; ``meta`` [newest bucket, -1 before any event]). An event for a bucket that left
    the window is dropped from the window counts."""
    for e in range(len(ev_item)):
        i, ts = ev_item[e], ev_ts[e]
        if half_life_s > 0.0:
            t0 = tr_t[i]
            if tr_val[i] == 0.0:
                tr_val[i] = 1.0
                tr_t[i] = ts
            elif ts >= t0:
                tr_val[i] = tr_val[i] * 2.0 ** (-((ts - t0) / 1000.0) / half_life_s) + 1.0
                tr_t[i] = ts
            else:
                tr_val[i] = tr_val[i] + 2.0 ** (-((t0 - ts) / 1000.0) / half_life_s)
        b = ts // width_ms
        if meta[0] == -1 or b > meta[0]:
            meta[0] = b
            for s in range(n_buckets):
                if tb_id[s] != -1 and tb_id[s] <= b - n_buckets:
                    for j in range(tb.shape[0]):
                        if tb[j, s] != 0.0:
                            left = totals[j] - tb[j, s]
                            totals[j] = 0.0 if abs(left) <= 1e-9 else left
                            tb[j, s] = 0.0
                    tb_id[s] = -1
        if b <= meta[0] - n_buckets:
            continue
        s = b % n_buckets
        if tb_id[s] != b:
            tb_id[s] = b
        tb[i, s] += 1.0
        totals[i] += 1.0


@njit(cache=True)
def learn_itemcf(ev_user: np.ndarray, ev_item: np.ndarray, ev_ts: np.ndarray, ev_w: np.ndarray, ev_w0: np.ndarray,
                 history_cap: int, row_cap: int, item_rank: np.ndarray,
                 rc_item: np.ndarray, rc_w: np.ndarray, rc_ts: np.ndarray, rc_len: np.ndarray,
                 norm: np.ndarray, ptr: np.ndarray, cap: np.ndarray, size: np.ndarray, cols: np.ndarray,
                 vals: np.ndarray, meta: np.ndarray, dirty: np.ndarray, moved: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Item-CF learning of a batch (canonical order): each event of u on i with weight w (old weight w0) changes
    ``norm_i`` by ``w² - w0²`` and ``C[i][k]``, ``C[k][i]`` by ``(w - w0) · w_uk`` for each k of u's recent history
    (the ``history_cap`` latest engaged items other than i, 0 = all), then makes i u's latest item.

    Marks dirty the rows whose sums changed, and flags in ``moved`` the items whose norm changed (the caller marks
    the rows holding them when lists must follow every norm). Returns the pool arrays."""
    width = rc_item.shape[1]
    for e in range(len(ev_user)):
        u, i, w, w0 = ev_user[e], ev_item[e], ev_w[e], ev_w0[e]
        n = rc_len[u]
        dw = w - w0
        nd = w * w - w0 * w0
        if nd != 0.0:
            _add_norm(norm, i, nd)
            moved[i] = 1
            if size[i] > 0 or cap[i] > 0:
                dirty[i] = 1
        if dw != 0.0:
            for p in range(n):
                k = rc_item[u, p]
                if k == i:
                    continue
                d = dw * rc_w[u, p]
                cols, vals = row_add(i, k, d, ptr, cap, size, cols, vals, meta, 0)
                cols, vals = row_add(k, i, d, ptr, cap, size, cols, vals, meta, 0)
                dirty[k] = 1
                if row_cap > 0 and size[k] > row_cap + row_cap // 4:
                    meta[1] += prune_row(k, row_cap, ptr, cap, size, cols, vals, norm, item_rank)
            if n > 1 or (n == 1 and rc_item[u, 0] != i):
                dirty[i] = 1
            if row_cap > 0 and size[i] > row_cap + row_cap // 4:
                meta[1] += prune_row(i, row_cap, ptr, cap, size, cols, vals, norm, item_rank)
        # i becomes the latest item: out of its old place, appended, the oldest dropped over the cap
        q = 0
        for p in range(n):
            if rc_item[u, p] != i:
                rc_item[u, q] = rc_item[u, p]
                rc_w[u, q] = rc_w[u, p]
                rc_ts[u, q] = rc_ts[u, p]
                q += 1
        if history_cap > 0 and q >= history_cap:
            drop = q - history_cap + 1
            for p in range(drop, q):
                rc_item[u, p - drop] = rc_item[u, p]
                rc_w[u, p - drop] = rc_w[u, p]
                rc_ts[u, p - drop] = rc_ts[u, p]
            q -= drop
        if q >= width:
            raise ValueError("item-CF history width exceeded: the caller sizes it for the batch")
        rc_item[u, q] = i
        rc_w[u, q] = w
        rc_ts[u, q] = ev_ts[e]
        rc_len[u] = q + 1
    return cols, vals


@njit(cache=True)
def learn_usercf(ev_user: np.ndarray, ev_item: np.ndarray, ev_ts: np.ndarray, ev_w: np.ndarray, ev_w0: np.ndarray,
                 ev_new: np.ndarray, max_raters: int, row_cap: int, user_rank: np.ndarray,
                 ra_user: np.ndarray, ra_w: np.ndarray, ra_ts: np.ndarray, ra_len: np.ndarray,
                 norm: np.ndarray, ptr: np.ndarray, cap: np.ndarray, size: np.ndarray, cols: np.ndarray,
                 vals: np.ndarray, meta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """User-CF learning of a batch (canonical order), with positive weights ``w⁺ = max(w, MIN_POSITIVE_WEIGHT)``:
    ``norm_u`` changes by ``w⁺² - w0⁺²`` and ``D[u][v]``, ``D[v][u]`` by ``(w⁺ - w0⁺) · w⁺_vi`` for each other
    current rater v of i; then u becomes a rater of i, and over ``max_raters`` (0 = all) the rater with the
    oldest (ts, user id) leaves. Returns the pool arrays."""
    for e in range(len(ev_user)):
        u, i, ts = ev_user[e], ev_item[e], ev_ts[e]
        w = max(ev_w[e], MIN_POSITIVE_WEIGHT)
        w0 = 0.0 if ev_new[e] else max(ev_w0[e], MIN_POSITIVE_WEIGHT)
        _add_norm(norm, u, w * w - w0 * w0)
        dw = w - w0
        n = ra_len[i]
        me = -1
        for p in range(n):
            v = ra_user[i, p]
            if v == u:
                me = p
                continue
            if dw != 0.0:
                d = dw * ra_w[i, p]
                cols, vals = row_add(u, v, d, ptr, cap, size, cols, vals, meta, 0)
                cols, vals = row_add(v, u, d, ptr, cap, size, cols, vals, meta, 0)
                if row_cap > 0 and size[v] > row_cap + row_cap // 4:
                    meta[1] += prune_row(v, row_cap, ptr, cap, size, cols, vals, norm, user_rank)
        if row_cap > 0 and size[u] > row_cap + row_cap // 4:
            meta[1] += prune_row(u, row_cap, ptr, cap, size, cols, vals, norm, user_rank)
        if me == -1:
            if n >= ra_user.shape[1]:
                raise ValueError("user-CF raters width exceeded: the caller sizes it for the batch")
            me = n
            n += 1
            ra_len[i] = n
        ra_user[i, me] = u
        ra_w[i, me] = w
        ra_ts[i, me] = ts
        if max_raters > 0 and n > max_raters:
            old = 0
            for p in range(1, n):
                if ra_ts[i, p] < ra_ts[i, old] or (ra_ts[i, p] == ra_ts[i, old]
                                                   and user_rank[ra_user[i, p]] < user_rank[ra_user[i, old]]):
                    old = p
            ra_user[i, old] = ra_user[i, n - 1]
            ra_w[i, old] = ra_w[i, n - 1]
            ra_ts[i, old] = ra_ts[i, n - 1]
            ra_len[i] = n - 1
    return cols, vals


NEG_HIDE, NEG_DISLIKE = 1, 2
"""The flags of a (user, item) in the negative-feedback pool (``State.npool``)."""


@njit(cache=True)
def learn_negative(ev_user: np.ndarray, ev_item: np.ndarray, ev_flag: np.ndarray, ptr: np.ndarray, cap: np.ndarray,
                   size: np.ndarray, cols: np.ndarray, vals: np.ndarray, meta: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Negative feedback of a batch: the flag of each event (``NEG_HIDE``, ``NEG_DISLIKE``) set on (user, item) for
    good (flags are only ever added, so the order of the events does not matter). Returns the pool arrays."""
    for e in range(len(ev_user)):
        u, i, f = ev_user[e], ev_item[e], ev_flag[e]
        old = int(row_get(u, i, ptr, cap, cols, vals))
        new = old | f
        if new != old:
            cols, vals = row_add(u, i, new - old, ptr, cap, size, cols, vals, meta, 0)
    return cols, vals


@njit(cache=True)
def _disliked(u: int, n_ptr: np.ndarray, n_cap: np.ndarray, n_cols: np.ndarray, n_vals: np.ndarray,
              item_rank: np.ndarray, skip: np.ndarray, is_dis: np.ndarray) -> np.ndarray:
    """Marks every item u hid or disliked in ``skip`` and the disliked ones in ``is_dis``; returns the disliked
    items in id order (sums over them are in a fixed order)."""
    base = n_ptr[u]
    m = 0
    for x in range(base, base + n_cap[u]):
        j = n_cols[x]
        if j != -1:
            skip[j] = True
            if n_vals[x] & NEG_DISLIKE:
                is_dis[j] = True
                m += 1
    out = np.empty(m, dtype=np.int64)
    if m == 0:
        return out
    ranks = np.empty(m, dtype=np.int64)
    c = 0
    for x in range(base, base + n_cap[u]):
        j = n_cols[x]
        if j != -1 and n_vals[x] & NEG_DISLIKE:
            out[c] = j
            ranks[c] = item_rank[j]
            c += 1
    return out[np.argsort(ranks)]


@njit(cache=True)
def _negative_profile(dis: np.ndarray, in_cat: np.ndarray, vptr: np.ndarray, vcol: np.ndarray, vval: np.ndarray,
                      qneg: np.ndarray) -> float:
    """The mean vector of the disliked catalog items into ``qneg`` (in id order); returns its norm (0.0: none)."""
    qneg[:] = 0.0
    m = 0
    for j in dis:
        if in_cat[j]:
            m += 1
            for p in range(vptr[j], vptr[j + 1]):
                qneg[vcol[p]] += vval[p]
    if m == 0:
        return 0.0
    for d in range(len(qneg)):
        qneg[d] = qneg[d] / m
    return np.sqrt(np.sum(qneg * qneg))


# -- ranking --------------------------------------------------------------------------------------------------------
ITEMCF, USERCF, CONTENT, POPULAR, FACTORS, FILL = 0, 1, 2, 3, 4, 5
"""Method codes (the order of ``core.v2.settings.METHODS``); FILL: an item that only fills a short list."""
N_METHODS = 5
DIM_CONTENT = 19 + 11 + 256
"""Length of an item vector (core.v2.catalog.DIM)."""
KIND_WEIGHTED, KIND_RRF, KIND_BORDA, KIND_SINGLE = 0, 1, 2, 3
"""How a fusion combines the methods' lists (:data:`core.v2.model.FUSION`)."""


@njit(cache=True)
def trending_order(half_life_s: float, now: int, tr_val: np.ndarray, tr_t: np.ndarray, totals: np.ndarray,
                   rank: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Every item with a positive trending score (the decayed popularity at ``now`` with a half-life, else the
    window count), by score then id: ``(items, scores)``."""
    scores = np.zeros(n_items)
    count = 0
    for i in range(n_items):
        if half_life_s > 0.0:
            v = tr_val[i]
            s = v * 2.0 ** (-((now - tr_t[i]) / 1000.0) / half_life_s) if v != 0.0 else 0.0
        else:
            s = totals[i]
        scores[i] = s
        if s > 0.0:
            count += 1
    items = np.empty(count, dtype=np.int64)
    c = 0
    for i in range(n_items):
        if scores[i] > 0.0:
            items[c] = i
            c += 1
    keys = np.empty(count)
    for p in range(count):
        keys[p] = -scores[items[p]]
    order = np.argsort(keys, kind="mergesort")
    items = items[order]
    # runs of equal scores in id order
    p = 0
    while p < count:
        q = p + 1
        while q < count and scores[items[q]] == scores[items[p]]:
            q += 1
        if q - p > 1:
            run = items[p:q].copy()
            sub = np.empty(q - p, dtype=np.int64)
            for r in range(q - p):
                sub[r] = rank[run[r]]
            items[p:q] = run[np.argsort(sub)]
        p = q
    out = np.empty(count)
    for p in range(count):
        out[p] = scores[items[p]]
    return items, out


@njit(cache=True)
def _select(touched: np.ndarray, n_touched: int, acc: np.ndarray, skip: np.ndarray, positive: bool, n: int,
            rank: np.ndarray, out_idx: np.ndarray, out_val: np.ndarray) -> int:
    """The ``n`` best of the touched items (by score then id, unskipped, > 0 with ``positive``) into out_*."""
    m = 0
    for p in range(n_touched):
        j = touched[p]
        if skip[j]:
            continue
        v = acc[j]
        if positive and not v > 0.0:
            continue
        m = _insert_top(n, m, out_idx, out_val, rank, j, v)
    return m


@njit(cache=True)
def _accumulate(j: int, c: float, src: int, src_rank: np.ndarray, touched: np.ndarray, nt: int, acc: np.ndarray,
                best_c: np.ndarray, best_k: np.ndarray) -> int:
    """Add the contribution ``c`` of ``src`` (a history item or a neighbour user) to item j's score; j's reason is
    its largest contributor (ties: the smaller ``src_rank``). Returns the number of touched items."""
    if best_k[j] == -1:
        touched[nt] = j
        nt += 1
        acc[j] = c
        best_c[j] = c
        best_k[j] = src
    else:
        acc[j] += c
        if c > best_c[j] or (c == best_c[j] and src_rank[src] < src_rank[best_k[j]]):
            best_c[j] = c
            best_k[j] = src
    return nt


@njit(cache=True)
def _pool(method: int, positive: bool, touched: np.ndarray, nt: int, acc: np.ndarray, best_k: np.ndarray,
          skip: np.ndarray, pool_n: int, item_rank: np.ndarray, p_item: np.ndarray, p_score: np.ndarray,
          p_arg: np.ndarray, p_len: np.ndarray) -> None:
    """The method's candidate pool from the accumulated scores (with each item's reason argument), then the
    scratch arrays cleared for the next method."""
    m = _select(touched, nt, acc, skip, positive, pool_n, item_rank, p_item[method], p_score[method])
    for q in range(m):
        p_arg[method, q] = best_k[p_item[method, q]]
    p_len[method] = m
    for q in range(nt):
        j = touched[q]
        acc[j] = 0.0
        best_k[j] = -1


@njit(cache=True)
def _user_neighbors(u: int, k: int, ptr: np.ndarray, cap: np.ndarray, cols: np.ndarray, vals: np.ndarray,
                    norm: np.ndarray, rank: np.ndarray, idx: np.ndarray, sim: np.ndarray) -> int:
    return _top_cosines(u, k, ptr, cap, cols, vals, norm, rank, idx, sim, np.zeros(0, dtype=np.bool_))


@njit(cache=True)
def itemcf_profile(u: int, engaged: bool, floor: float, decay_ms: float, rc_item: np.ndarray, rc_w: np.ndarray,
                   rc_ts: np.ndarray, rc_len: np.ndarray, u_last: np.ndarray, l_ptr: np.ndarray, l_cap: np.ndarray,
                   l_items: np.ndarray, l_w: np.ndarray, l_ts: np.ndarray, item_rank: np.ndarray, leave: np.ndarray,
                   out_item: np.ndarray, out_w: np.ndarray) -> int:
    """The items that score item-CF for user u and their weights, into out_* (returns how many; ``leave``: the
    disliked items, left out). Not ``engaged``: the pairing history (``rc_*``, the ``history_cap`` latest), weight
    ``w · d``; ``engaged``: every engaged item of the log by (time, id), weight ``w · (floor + (1 - floor) · d)``.
    ``d = 2^(-(T - ts) / decay)`` (T: the user's latest event; 1 without decay)."""
    t_u = u_last[u]
    m = 0
    if not engaged:
        for h in range(rc_len[u]):
            k = rc_item[u, h]
            if leave[k]:
                continue
            wk = rc_w[u, h]
            if decay_ms > 0.0:
                wk = wk * 2.0 ** (-(t_u - rc_ts[u, h]) / decay_ms)
            out_item[m] = k
            out_w[m] = wk
            m += 1
        return m
    base = l_ptr[u]
    ts = np.empty(l_cap[u], dtype=np.int64)
    rk = np.empty(l_cap[u], dtype=np.int64)
    for x in range(base, base + l_cap[u]):
        k = l_items[x]
        if k != -1 and not leave[k]:
            out_item[m] = x  # the slot, for now
            ts[m] = l_ts[x]
            rk[m] = item_rank[k]
            m += 1
    order = np.argsort(rk[:m])
    order = order[np.argsort(ts[:m][order], kind="mergesort")]  # by time, then id: one order in every process
    slots = out_item[:m].copy()
    for p in range(m):
        x = slots[order[p]]
        d = 2.0 ** (-(t_u - l_ts[x]) / decay_ms) if decay_ms > 0.0 else 1.0
        out_item[p] = l_items[x]
        out_w[p] = l_w[x] * (floor + (1.0 - floor) * d)
    return m


@njit(cache=True)
def rank_users(users: np.ndarray, n: int, kind: int, single: int, alphas: np.ndarray, cold_alphas: np.ndarray,
               rrf_k: float, use: np.ndarray, pool_n: int, cold_items: int, decay_ms: float,
               exclude: np.ndarray, denied: np.ndarray, item_rank: np.ndarray, user_rank: np.ndarray,
               # negative feedback: each user's items -> flags (NEG_*), the weight of a dislike's negative terms
               n_ptr: np.ndarray, n_cap: np.ndarray, n_cols: np.ndarray, n_vals: np.ndarray, dislike_w: float,
               # per-user log and item-CF history
               l_ptr: np.ndarray, l_cap: np.ndarray, l_size: np.ndarray, l_items: np.ndarray, l_slots: np.ndarray,
               l_w: np.ndarray, l_ts: np.ndarray, u_last: np.ndarray, lg_type: np.ndarray,
               rc_item: np.ndarray, rc_w: np.ndarray, rc_ts: np.ndarray,
               rc_len: np.ndarray, engaged: bool, floor: float,
               # item rows and neighbour lists
               top_k: int, i_ptr: np.ndarray, i_cap: np.ndarray, i_cols: np.ndarray, i_vals: np.ndarray,
               i_norm: np.ndarray, nb_idx: np.ndarray, nb_sim: np.ndarray, nb_len: np.ndarray, dirty: np.ndarray,
               gone: np.ndarray,
               # user rows
               u_top_k: int, u_ptr: np.ndarray, u_cap: np.ndarray, u_cols: np.ndarray, u_vals: np.ndarray,
               u_norm: np.ndarray,
               # factors: user rows, item rows and item biases (core.v2.factors)
               f_p: np.ndarray, f_q: np.ndarray, f_bi: np.ndarray,
               # trending
               tr_items: np.ndarray, tr_scores: np.ndarray,
               # content: the catalog (see core.v2.state), where a user with history finds candidates, profile size
               cat: tuple, content_catalog: bool, profile_max: int, profile_half_life_s: float,
               # learned: combiner weights (+ bias) and examples seen, warm-up, features' parameters (see _learned),
               # item hashes, the training example (item, event key; item -1: rank), negatives, and the inputs of the
               # statistics features
               comb: np.ndarray, comb_n: np.ndarray, warmup: int, fp: np.ndarray, item_hash: np.ndarray,
               train_item: int, train_key: int, n_neg: int, lg_value: np.ndarray, rate_type: int,
               i_users: np.ndarray, i_last: np.ndarray, b_sum: np.ndarray, b_n: np.ndarray,
               # out: per user n items, scores, reason method and argument (anchor item, neighbour user), length
               out_item: np.ndarray, out_score: np.ndarray, out_method: np.ndarray, out_arg: np.ndarray,
               out_len: np.ndarray) -> None:
    """Rank each user of ``users`` into row r of the out arrays (see :func:`core.v2.model.rank`)."""
    n_items = len(item_rank)
    exclude_all = True  # every type excluded: the log's items alone, no read of their types
    for t in range(len(exclude)):
        exclude_all = exclude_all and exclude[t]
    acc = np.zeros(n_items)
    best_c = np.zeros(n_items)
    best_k = np.full(n_items, -1, dtype=np.int64)
    skip = np.zeros(n_items, dtype=np.bool_)
    touched = np.empty(n_items, dtype=np.int64)
    p_item = np.empty((N_METHODS, pool_n), dtype=np.int64)
    p_score = np.empty((N_METHODS, pool_n))
    p_arg = np.full((N_METHODS, pool_n), -1, dtype=np.int64)
    p_len = np.zeros(N_METHODS, dtype=np.int64)
    nbu = np.empty(u_top_k, dtype=np.int64)
    nbs = np.empty(u_top_k)
    one = np.empty(1, dtype=np.int64)
    f_item = np.empty(N_METHODS * pool_n, dtype=np.int64)
    f_val = np.empty(N_METHODS * pool_n)
    (in_cat, vptr, vcol, vval, vnorm, gmask, newest, cm_idx, cm_sim, cm_len, genre_order, post_ptr, post_item,
     post_val) = cat
    qv = np.zeros(DIM_CONTENT)
    no_skip = np.zeros(n_items, dtype=np.bool_)
    cand = np.empty(N_METHODS * pool_n + len(newest), dtype=np.int64)
    pos_of = np.full(n_items, -1, dtype=np.int64)
    is_dis = np.zeros(n_items, dtype=np.bool_)
    prof_item = np.empty(rc_item.shape[1], dtype=np.int64)
    prof_w = np.empty(rc_item.shape[1])
    qneg = np.zeros(DIM_CONTENT)
    for r in range(len(users)):
        u = users[r]
        # the items never recommended to u: engaged with an excluded type, or denied
        base = l_ptr[u]
        for x in range(base, base + l_cap[u]):
            j = l_items[x]
            if j != -1 and (exclude_all or exclude[lg_type[l_slots[x]]]):
                skip[j] = True
        for j in denied:
            skip[j] = True
        # hidden or disliked: never recommended, whatever came after; disliked: never a reason, negative terms
        dis = _disliked(u, n_ptr, n_cap, n_cols, n_vals, item_rank, skip, is_dis)
        m_out = 0
        if l_size[u] == 0:
            for p in range(len(tr_items)):
                if m_out == n:
                    break
                j = tr_items[p]
                if not skip[j]:
                    out_item[r, m_out] = j
                    out_score[r, m_out] = tr_scores[p]
                    out_method[r, m_out] = POPULAR
                    out_arg[r, m_out] = -1
                    m_out += 1
        else:
            p_len[:] = 0
            nn = 0
            kept = 0
            n_prof = 0
            need = l_cap[u] if engaged else rc_len[u]
            if need > len(prof_item):
                prof_item = np.empty(2 * need, dtype=np.int64)
                prof_w = np.empty(2 * need)
            if use[ITEMCF]:
                nt = 0
                n_prof = itemcf_profile(u, engaged, floor, decay_ms, rc_item, rc_w, rc_ts, rc_len, u_last, l_ptr, l_cap,
                                        l_items, l_w, l_ts, item_rank, is_dis, prof_item, prof_w)
                for h in range(n_prof):
                    k = prof_item[h]
                    if dirty[k]:
                        one[0] = k
                        refresh_rows(one, top_k, i_ptr, i_cap, i_cols, i_vals, i_norm, item_rank, nb_idx, nb_sim,
                                     nb_len, dirty, gone)
                    wk = prof_w[h]
                    for q in range(nb_len[k]):
                        j = nb_idx[k, q]
                        if skip[j]:
                            continue
                        nt = _accumulate(j, wk * nb_sim[k, q], k, item_rank, touched, nt, acc, best_c, best_k)
                # each disliked item lowers its neighbours among the candidates (never their reason)
                for k in dis:
                    if dirty[k]:
                        one[0] = k
                        refresh_rows(one, top_k, i_ptr, i_cap, i_cols, i_vals, i_norm, item_rank, nb_idx, nb_sim,
                                     nb_len, dirty, gone)
                    if dislike_w > 0.0:
                        for q in range(nb_len[k]):
                            j = nb_idx[k, q]
                            if best_k[j] != -1:
                                acc[j] -= dislike_w * nb_sim[k, q]
                _pool(ITEMCF, True, touched, nt, acc, best_k, skip, pool_n, item_rank, p_item, p_score, p_arg, p_len)
            if use[USERCF]:
                nn = _user_neighbors(u, u_top_k, u_ptr, u_cap, u_cols, u_vals, u_norm, user_rank, nbu, nbs)
                nt = 0
                for q in range(nn):
                    v = nbu[q]
                    sim = nbs[q]
                    base = l_ptr[v]
                    for x in range(base, base + l_cap[v]):
                        j = l_items[x]
                        if j == -1:
                            continue
                        c = sim * max(l_w[x], MIN_POSITIVE_WEIGHT)
                        nt = _accumulate(j, c, v, user_rank, touched, nt, acc, best_c, best_k)
                _pool(USERCF, False, touched, nt, acc, best_k, skip, pool_n, item_rank, p_item, p_score, p_arg, p_len)
            if use[POPULAR]:
                m = 0
                for p in range(len(tr_items)):
                    if m == pool_n:
                        break
                    j = tr_items[p]
                    if not skip[j]:
                        p_item[POPULAR, m] = j
                        p_score[POPULAR, m] = tr_scores[p]
                        p_arg[POPULAR, m] = -1
                        m += 1
                p_len[POPULAR] = m
            if use[FACTORS]:
                p_len[FACTORS] = factor_top(u, pool_n, f_p, f_q, f_bi, skip, i_users, item_rank, p_item[FACTORS],
                                            p_score[FACTORS])
                p_arg[FACTORS, : p_len[FACTORS]] = -1
            nq = 0.0
            if use[CONTENT]:
                m = 0
                if dislike_w > 0.0 and len(dis) > 0:
                    nq = _negative_profile(dis, in_cat, vptr, vcol, vval, qneg)
                kept, single_j = _profile(u, profile_max, profile_half_life_s, l_ptr, l_cap, l_items, l_w, l_ts,
                                          item_rank, in_cat, is_dis, vptr, vcol, vval, qv)
                if kept > 0:
                    top3 = _top_genres(qv, genre_order)
                    nc = 0
                    if not (content_catalog or l_size[u] < cold_items or kind == KIND_SINGLE):
                        for mth in range(N_METHODS):
                            for x in range(p_len[mth]):
                                j = p_item[mth, x]
                                if best_k[j] == -1:
                                    best_k[j] = 1
                                    cand[nc] = j
                                    nc += 1
                    if nc == 0:  # no other candidates: the whole catalog
                        if single_j >= 0:
                            m = _single_search(single_j, pool_n, skip, qv, no_skip, post_ptr, post_item, post_val,
                                               vnorm, item_rank, acc, best_k, touched, cm_idx, cm_sim, cm_len,
                                               p_item[CONTENT], p_score[CONTENT])
                        else:
                            m = _catalog_search(qv, pool_n, skip, post_ptr, post_item, post_val, vnorm, item_rank,
                                                acc, best_k, touched, p_item[CONTENT], p_score[CONTENT])
                    else:
                        for j in newest:
                            if not skip[j] and best_k[j] == -1:
                                best_k[j] = 1
                                cand[nc] = j
                                nc += 1
                        qn = np.sqrt(np.sum(qv * qv))
                        for x in range(nc):
                            j = cand[x]
                            best_k[j] = -1
                            if qn > 0.0:
                                c = _cosine(j, qv, qn, vptr, vcol, vval, vnorm)
                                if c > 0.0:
                                    m = _insert_top(pool_n, m, p_item[CONTENT], p_score[CONTENT], item_rank, j, c)
                    if nq > 0.0 and m > 0:  # the negative term: re-scored, re-ordered, kept while positive
                        m2 = 0
                        for x in range(m):
                            j = p_item[CONTENT, x]
                            c = p_score[CONTENT, x] - dislike_w * _cosine(j, qneg, nq, vptr, vcol, vval, vnorm)
                            if c > 0.0:
                                m2 = _insert_top(pool_n, m2, f_item, f_val, item_rank, j, c)
                        for x in range(m2):
                            p_item[CONTENT, x] = f_item[x]
                            p_score[CONTENT, x] = f_val[x]
                        m = m2
                    for x in range(m):
                        p_arg[CONTENT, x] = content_reason(top3, gmask[p_item[CONTENT, x]])
                p_len[CONTENT] = m
            cold = l_size[u] < cold_items
            if kind == KIND_TRAIN or (kind == KIND_LEARNED and not cold and comb_n[0] >= warmup):
                m_out = _learned(r, n, u, train_item, train_key, n_neg, item_hash, comb, comb_n, fp, pool_n, use,
                                 p_item, p_score, p_arg, p_len, item_rank, prof_item, prof_w, n_prof, nb_idx, nb_sim,
                                 nb_len, nbu, nbs, nn, l_ptr, l_cap, l_items, l_slots, l_w,
                                 lg_type, lg_value, rate_type, kept, qv, vptr, vcol, vval, vnorm, i_users, i_last,
                                 b_sum, b_n, pos_of, f_item, f_val, out_item, out_score, out_method, out_arg,
                                 is_dis, dis, dislike_w, qneg, nq, f_p, f_q, f_bi)
            else:
                m_out = _fuse(r, n, KIND_WEIGHTED if kind == KIND_LEARNED else kind, single, use, alphas,
                              cold_alphas, cold, rrf_k, p_item, p_score, p_arg, p_len, item_rank, acc, best_k,
                              touched, f_item, f_val, out_item, out_score, out_method, out_arg)
            if use[FACTORS] and kind != KIND_TRAIN:  # the reason of a factor item: the user's nearest item
                for q in range(m_out):
                    if out_method[r, q] == FACTORS:
                        out_arg[r, q] = factor_anchor(u, out_item[r, q], f_q, l_ptr, l_cap, l_items, is_dis,
                                                      item_rank)
            # fill a short list with trending items
            if m_out < n and kind != KIND_TRAIN:
                for q in range(m_out):
                    skip[out_item[r, q]] = True
                for p in range(len(tr_items)):
                    if m_out == n:
                        break
                    j = tr_items[p]
                    if not skip[j]:
                        out_item[r, m_out] = j
                        out_score[r, m_out] = 0.0
                        out_method[r, m_out] = FILL
                        out_arg[r, m_out] = -1
                        m_out += 1
        out_len[r] = m_out
        base = l_ptr[u]
        for x in range(base, base + l_cap[u]):
            j = l_items[x]
            if j != -1:
                skip[j] = False
        for j in denied:
            skip[j] = False
        base = n_ptr[u]
        for x in range(base, base + n_cap[u]):
            j = n_cols[x]
            if j != -1:
                skip[j] = False
                is_dis[j] = False
        for q in range(m_out):
            skip[out_item[r, q]] = False


@njit(cache=True)
def _fuse(r: int, n: int, kind: int, single: int, use: np.ndarray, alphas: np.ndarray, cold_alphas: np.ndarray,
          cold: bool,
          rrf_k: float, p_item: np.ndarray, p_score: np.ndarray, p_arg: np.ndarray, p_len: np.ndarray,
          rank: np.ndarray, acc: np.ndarray, seen: np.ndarray, touched: np.ndarray, f_item: np.ndarray,
          f_val: np.ndarray, out_item: np.ndarray, out_score: np.ndarray, out_method: np.ndarray,
          out_arg: np.ndarray) -> int:
    """One user's fused list from the pools: a single method's list, or every method's term summed per item
    (``KIND_WEIGHTED``: ``α_m · minmax_m``; ``KIND_RRF``: ``1 / (rrf_k + rank_m)``; ``KIND_BORDA``: ``N - rank_m + 1``
    and, for an item the list lacks, ``(N - L_m + 1) / 2``), best first (ties: id). The reason is the listing
    method with the largest term (ties: method order). Returns the list's length."""
    if kind == KIND_SINGLE:
        m = min(n, p_len[single])
        for q in range(m):
            out_item[r, q] = p_item[single, q]
            out_score[r, q] = p_score[single, q]
            out_method[r, q] = single
            out_arg[r, q] = p_arg[single, q]
        return m
    weights = cold_alphas if cold else alphas
    use_kind = KIND_WEIGHTED if cold else kind
    nt = 0
    for mth in range(N_METHODS):
        if cold and mth != POPULAR and mth != CONTENT:
            continue
        for q in range(p_len[mth]):
            j = p_item[mth, q]
            if seen[j] == -1:
                seen[j] = 1
                acc[j] = 0.0
                touched[nt] = j
                nt += 1
    for mth in range(N_METHODS):
        L = p_len[mth]
        if not use[mth] or (cold and mth != POPULAR and mth != CONTENT):
            continue
        if use_kind == KIND_BORDA:
            share = (nt - L + 1) / 2.0  # what the items this list lacks get
            for q in range(nt):
                acc[touched[q]] += share
        if L == 0:
            continue
        lo = p_score[mth, L - 1]
        hi = p_score[mth, 0]
        for q in range(L):
            lo = min(lo, p_score[mth, q])
            hi = max(hi, p_score[mth, q])
        for q in range(L):
            j = p_item[mth, q]
            acc[j] += _term(use_kind, weights[mth], p_score[mth, q], lo, hi, q, L, nt, rrf_k)
            if use_kind == KIND_BORDA:  # half-integers: exact in floating point
                acc[j] -= (nt - L + 1) / 2.0
    m = 0
    for q in range(nt):
        j = touched[q]
        m = _insert_top(n, m, f_item, f_val, rank, j, acc[j])
    for q in range(m):
        j = f_item[q]
        out_item[r, q] = j
        out_score[r, q] = f_val[q]
        best_m = -1
        best_v = 0.0
        best_a = -1
        for mth in range(N_METHODS):
            if cold and mth != POPULAR and mth != CONTENT:
                continue
            L = p_len[mth]
            for pos in range(L):
                if p_item[mth, pos] == j:
                    if use_kind == KIND_WEIGHTED:
                        lo = p_score[mth, 0]
                        hi = p_score[mth, 0]
                        for x in range(L):
                            lo = min(lo, p_score[mth, x])
                            hi = max(hi, p_score[mth, x])
                        v = _term(use_kind, weights[mth], p_score[mth, pos], lo, hi, pos, L, nt, rrf_k)
                    else:
                        v = -float(pos)
                    if best_m == -1 or v > best_v:
                        best_m, best_v, best_a = mth, v, p_arg[mth, pos]
                    break
        out_method[r, q] = best_m
        out_arg[r, q] = best_a
    for q in range(nt):
        seen[touched[q]] = -1
        acc[touched[q]] = 0.0
    return m


@njit(cache=True, inline="always")
def _term(kind: int, alpha: float, score: float, lo: float, hi: float, pos: int, length: int, total: int,
          rrf_k: float) -> float:
    if kind == KIND_WEIGHTED:
        return alpha * ((score - lo) / (hi - lo) if hi > lo else 1.0)
    if kind == KIND_RRF:
        return 1.0 / (rrf_k + (pos + 1))
    return float(total - pos)


# -- factors ---------------------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _fdot(u: int, i: int, p: np.ndarray, q: np.ndarray) -> float:
    s = 0.0
    for k in range(p.shape[1]):
        s += p[u, k] * q[i, k]
    return s


@njit(cache=True)
def factor_top(u: int, n: int, p: np.ndarray, q: np.ndarray, bi: np.ndarray, skip: np.ndarray, i_users: np.ndarray,
               rank: np.ndarray, out_idx: np.ndarray, out_val: np.ndarray) -> int:
    """The ``n`` items with the best ``b_i + p_u · q_i`` into out_*, best first (ties by ``rank``, the ids' string
    order), among the items some user engaged (``i_users`` > 0: a row never learned is its random start) and not
    ``skip``. Returns how many."""
    m = 0
    for i in range(len(rank)):
        if not skip[i] and i_users[i] > 0:
            m = _insert_top(n, m, out_idx, out_val, rank, i, bi[i] + _fdot(u, i, p, q))
    return m


@njit(cache=True)
def factor_anchor(u: int, j: int, q: np.ndarray, l_ptr: np.ndarray, l_cap: np.ndarray, l_items: np.ndarray,
                  leave: np.ndarray, rank: np.ndarray) -> int:
    """The reason of factor item ``j``: the user's engaged item (not ``leave``: disliked) whose factor row has the
    largest positive cosine with ``q_j`` (ties by ``rank``); -1 if none."""
    nj = 0.0
    for k in range(q.shape[1]):
        nj += q[j, k] * q[j, k]
    best, best_c = -1, 0.0
    for x in range(l_ptr[u], l_ptr[u] + l_cap[u]):
        h = l_items[x]
        if h == -1 or leave[h]:
            continue
        d = 0.0
        nh = 0.0
        for k in range(q.shape[1]):
            d += q[j, k] * q[h, k]
            nh += q[h, k] * q[h, k]
        c = d / np.sqrt(nj * nh) if nj > 0.0 and nh > 0.0 else 0.0
        if c > best_c or (c == best_c and best >= 0 and c > 0.0 and rank[h] < rank[best]):
            best, best_c = h, c
    return best


# -- content ---------------------------------------------------------------------------------------------------------
N_GENRES = 19


@njit(cache=True)
def _profile(u: int, max_items: int, half_life_s: float, l_ptr: np.ndarray, l_cap: np.ndarray, l_items: np.ndarray,
             l_w: np.ndarray, l_ts: np.ndarray, item_rank: np.ndarray, in_cat: np.ndarray, leave: np.ndarray,
             vptr: np.ndarray, vcol: np.ndarray, vval: np.ndarray, q: np.ndarray) -> tuple[int, int]:
    """The user's content profile into ``q``: ``Σ_j w_j·d_j·x_j / Σ_j w_j·d_j`` over the ``max_items`` (0 = all)
    latest catalog items of the user by (ts, id), ``w_j = max(weight, MIN_POSITIVE_WEIGHT)``,
    ``d_j = 2^(-(T - ts_j) / half_life)`` (T: the latest of them; 1 without a half-life). A profile of one item is
    that item's vector. Items where ``leave`` is true (the user disliked them) are left out. Returns (items kept, the
    item when it is one, else -1)."""
    q[:] = 0.0
    base = l_ptr[u]
    m = 0
    for x in range(base, base + l_cap[u]):
        j = l_items[x]
        if j != -1 and in_cat[j] and not leave[j]:
            m += 1
    if m == 0:
        return 0, -1
    items = np.empty(m, dtype=np.int64)
    ts = np.empty(m, dtype=np.int64)
    w = np.empty(m)
    c = 0
    for x in range(base, base + l_cap[u]):
        j = l_items[x]
        if j != -1 and in_cat[j] and not leave[j]:
            items[c] = j
            ts[c] = l_ts[x]
            w[c] = max(l_w[x], MIN_POSITIVE_WEIGHT)
            c += 1
    ranks = np.empty(m, dtype=np.int64)
    for p in range(m):
        ranks[p] = item_rank[items[p]]
    order = np.argsort(ranks)
    order = order[np.argsort(ts[order], kind="mergesort")]  # by ts, then id
    first = m - max_items if 0 < max_items < m else 0
    kept = m - first
    if kept == 1:
        j = items[order[m - 1]]
        for p in range(vptr[j], vptr[j + 1]):
            q[vcol[p]] = vval[p]
        return 1, j
    t_ref = ts[order[m - 1]]
    z = 0.0
    for p in range(first, m):
        o = order[p]
        cw = w[o] if half_life_s <= 0.0 else w[o] * 2.0 ** (-((t_ref - ts[o]) / 1000.0) / half_life_s)
        j = items[o]
        for s in range(vptr[j], vptr[j + 1]):
            q[vcol[s]] += cw * vval[s]
        z += cw
    for d in range(len(q)):
        q[d] = q[d] / z
    return kept, -1


@njit(cache=True, inline="always")
def _cosine(j: int, q: np.ndarray, qn: float, vptr: np.ndarray, vcol: np.ndarray, vval: np.ndarray,
            vnorm: np.ndarray) -> float:
    if vnorm[j] <= 0.0:
        return 0.0
    d = 0.0
    for p in range(vptr[j], vptr[j + 1]):
        d += vval[p] * q[vcol[p]]
    return d / (vnorm[j] * qn)


@njit(cache=True)
def _catalog_search(q: np.ndarray, n: int, skip: np.ndarray, post_ptr: np.ndarray, post_item: np.ndarray,
                    post_val: np.ndarray, vnorm: np.ndarray, rank: np.ndarray, acc: np.ndarray, mark: np.ndarray,
                    touched: np.ndarray, out_idx: np.ndarray, out_val: np.ndarray) -> int:
    """The ``n`` catalog items of highest positive cosine with ``q``, unskipped, by cosine then id.

    Reads only the items that share a dimension with ``q`` (the inverted index ``post_*``), accumulating each item's
    dot product over q's dimensions in increasing order: the same sum, term by term, as :func:`_cosine` over the
    item's vector. ``acc`` (0.0), ``mark`` (-1) and ``touched`` are scratch, left as found."""
    qn = np.sqrt(np.sum(q * q))
    if qn <= 0.0:
        return 0
    nt = 0
    for d in range(len(q)):
        qd = q[d]
        if qd == 0.0:
            continue
        for p in range(post_ptr[d], post_ptr[d + 1]):
            j = post_item[p]
            if skip[j]:
                continue
            if mark[j] == -1:
                mark[j] = 1
                touched[nt] = j
                nt += 1
            acc[j] += post_val[p] * qd
    m = 0
    for t in range(nt):
        j = touched[t]
        d = acc[j]
        acc[j] = 0.0
        mark[j] = -1
        if vnorm[j] > 0.0:
            c = d / (vnorm[j] * qn)
            if c > 0.0:
                m = _insert_top(n, m, out_idx, out_val, rank, j, c)
    return m


@njit(cache=True)
def _single_search(j: int, n: int, skip: np.ndarray, q: np.ndarray, no_skip: np.ndarray, post_ptr: np.ndarray,
                   post_item: np.ndarray, post_val: np.ndarray, vnorm: np.ndarray, rank: np.ndarray, acc: np.ndarray,
                   mark: np.ndarray, touched: np.ndarray, cm_idx: np.ndarray, cm_sim: np.ndarray, cm_len: np.ndarray,
                   out_idx: np.ndarray, out_val: np.ndarray) -> int:
    """:func:`_catalog_search` for the one-item profile of item ``j`` (``q`` = its vector), through a memo of the
    item's best ``cm_idx.shape[1]`` matches searched without skipping (the skipped ones are taken out after)."""
    width = cm_idx.shape[1]
    if cm_len[j] < 0:
        cm_len[j] = _catalog_search(q, width, no_skip, post_ptr, post_item, post_val, vnorm, rank, acc, mark, touched,
                                    cm_idx[j], cm_sim[j])
    m = 0
    for p in range(cm_len[j]):
        if m == n:
            break
        i = cm_idx[j, p]
        if not skip[i]:
            out_idx[m] = i
            out_val[m] = cm_sim[j, p]
            m += 1
    if m < n and cm_len[j] == width:  # more skipped items than the memo has spare
        return _catalog_search(q, n, skip, post_ptr, post_item, post_val, vnorm, rank, acc, mark, touched, out_idx,
                               out_val)
    return m


@njit(cache=True)
def _top_genres(q: np.ndarray, genre_order: np.ndarray) -> np.ndarray:
    """The profile's 3 strongest genres (positive weight), strongest first (ties: genre name); -1 pads."""
    out = np.full(3, -1, dtype=np.int64)
    val = np.zeros(3)
    m = 0
    for g in range(N_GENRES):
        v = q[g]
        if v <= 0.0:
            continue
        if m == 3 and not (v > val[2] or (v == val[2] and genre_order[g] < genre_order[out[2]])):
            continue
        if m == 3:
            m = 2
        p = m
        while p > 0 and (v > val[p - 1] or (v == val[p - 1] and genre_order[g] < genre_order[out[p - 1]])):
            out[p] = out[p - 1]
            val[p] = val[p - 1]
            p -= 1
        out[p] = g
        val[p] = v
        m += 1
    return out


@njit(cache=True)
def content_reason(top: np.ndarray, gmask: int) -> int:
    """The profile's top genres the item shares, in order, as ``Σ (genre + 1) · 32^k`` (0: none shared)."""
    code = 0
    mul = 1
    for k in range(3):
        g = top[k]
        if g >= 0 and (gmask >> g) & 1:
            code += (g + 1) * mul
            mul *= 32
    return code


# -- the learned combiner -------------------------------------------------------------------------------------------
KIND_LEARNED, KIND_TRAIN = 4, 5
"""``learned`` ranks with the combiner; ``KIND_TRAIN``: one user's candidates train it (recommend-then-learn)."""
N_FEATURES = 14
"""The features, in the order of ``core.v2.model.FEATURES``."""
F_ICF, F_UCF, F_CONTENT, F_POP, F_RECENCY, F_BASELINE, F_RANK, F_ICF_MAX, F_UCF_MAX = 0, 1, 2, 3, 4, 5, 6, 10, 11
F_FAC, F_FAC_RANK = 12, 13
_DECISION_ORDER = (0, 1, 2, 10, 11, 3, 4, 5, 6, 7, 8, 9, 12, 13)  # the order the terms of the decision are summed in


@njit(cache=True, inline="always")
def mix(a: int, b: int) -> int:
    """A 64-bit mix of two integers (splitmix64 finaliser): the seeded draws of the combiner's training."""
    x = a * -7046029254386353131 + b
    x = (x ^ ((x >> 30) & 0x3FFFFFFFF)) * -4658895280553007687
    x = (x ^ ((x >> 27) & 0x1FFFFFFFFF)) * -7723592293110705685
    return x ^ ((x >> 31) & 0x1FFFFFFFF)


@njit(cache=True)
def uniform(keys: np.ndarray, seed: int) -> np.ndarray:
    """A draw in [0, 1) per event key, a function of (seed, key) only."""
    out = np.empty(len(keys))
    for e in range(len(keys)):
        out[e] = ((mix(seed, keys[e]) >> 11) & 0x1FFFFFFFFFFFFF) / 9007199254740992.0
    return out


@njit(cache=True, inline="always")
def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return e / (1.0 + e)


@njit(cache=True)
def _decision(comb: np.ndarray, x: np.ndarray) -> float:
    s = 0.0
    for f in _DECISION_ORDER:
        s += comb[f] * x[f]
    return comb[N_FEATURES] + s


@njit(cache=True)
def _sgd(comb: np.ndarray, comb_n: np.ndarray, x: np.ndarray, label: float, lr: float, l2: float) -> None:
    g = _sigmoid(_decision(comb, x)) - label
    for f in range(N_FEATURES):
        comb[f] -= lr * (g * x[f] + l2 * comb[f])
    comb[N_FEATURES] -= lr * g
    comb_n[0] += 1


@njit(cache=True)
def _learned(r: int, n: int, u: int, train_item: int, train_key: int, n_neg: int, item_hash: np.ndarray,
             comb: np.ndarray, comb_n: np.ndarray, fp: np.ndarray, pool_n: int, use: np.ndarray, p_item: np.ndarray,
             p_score: np.ndarray, p_arg: np.ndarray, p_len: np.ndarray, item_rank: np.ndarray,
             prof_item: np.ndarray, prof_w: np.ndarray, n_prof: int, nb_idx: np.ndarray, nb_sim: np.ndarray,
             nb_len: np.ndarray,
             nbu: np.ndarray, nbs: np.ndarray, nn: int, l_ptr: np.ndarray, l_cap: np.ndarray, l_items: np.ndarray,
             l_slots: np.ndarray, l_w: np.ndarray, lg_type: np.ndarray, lg_value: np.ndarray, rate_type: int,
             kept: int, qv: np.ndarray, vptr: np.ndarray, vcol: np.ndarray, vval: np.ndarray, vnorm: np.ndarray,
             i_users: np.ndarray, i_last: np.ndarray, b_sum: np.ndarray, b_n: np.ndarray, pos_of: np.ndarray,
             f_item: np.ndarray, f_val: np.ndarray, out_item: np.ndarray, out_score: np.ndarray,
             out_method: np.ndarray, out_arg: np.ndarray, is_dis: np.ndarray, dis: np.ndarray, dislike_w: float,
             qneg: np.ndarray, nq: float, f_p: np.ndarray, f_q: np.ndarray, f_bi: np.ndarray) -> int:
    """The learned mode for one user: every candidate's features (README "The model", learned), then either the
    top ``n`` by ``P(engage)`` with the reason of the method contributing most, or (``train_item`` >= 0) one SGD step
    per example: the engaged item (if it was a candidate) and ``n_neg`` others, the ones of smallest
    ``mix(train_key, item hash)``. ``fp``: [mu, lambda_item, lambda_user, min_rating, rating span, recency
    half-life ms, popularity norm, now, lr, l2]. The user's disliked items ``dis`` (``is_dis``) are no history item
    and add their negative terms to the item-CF and content features (``qneg``, of norm ``nq``: their mean vector).
    Returns the list's length (0 when training)."""
    nc = 0
    for m in range(N_METHODS):
        for x in range(p_len[m]):
            j = p_item[m, x]
            if pos_of[j] == -1:
                pos_of[j] = nc
                f_item[nc] = j
                nc += 1
    X = np.zeros((nc, N_FEATURES))
    if use[ITEMCF]:
        for h in range(n_prof):
            k = prof_item[h]
            wk = prof_w[h]
            for q in range(nb_len[k]):
                p = pos_of[nb_idx[k, q]]
                if p >= 0:
                    c = wk * nb_sim[k, q]
                    X[p, F_ICF] += c
                    if c > X[p, F_ICF_MAX]:
                        X[p, F_ICF_MAX] = c
        if dislike_w > 0.0:
            for k in dis:
                for q in range(nb_len[k]):
                    p = pos_of[nb_idx[k, q]]
                    if p >= 0:
                        X[p, F_ICF] -= dislike_w * nb_sim[k, q]
    if use[USERCF]:
        for q in range(nn):
            v = nbu[q]
            sim = nbs[q]
            base = l_ptr[v]
            for x in range(base, base + l_cap[v]):
                j = l_items[x]
                if j != -1 and pos_of[j] >= 0:
                    p = pos_of[j]
                    c = sim * max(l_w[x], MIN_POSITIVE_WEIGHT)
                    X[p, F_UCF] += c
                    if c > X[p, F_UCF_MAX]:
                        X[p, F_UCF_MAX] = c
    if use[CONTENT] and kept > 0:
        qn = np.sqrt(np.sum(qv * qv))
        if qn > 0.0:
            for p in range(nc):
                X[p, F_CONTENT] = _cosine(f_item[p], qv, qn, vptr, vcol, vval, vnorm)
                if nq > 0.0:
                    X[p, F_CONTENT] -= dislike_w * _cosine(f_item[p], qneg, nq, vptr, vcol, vval, vnorm)
    if use[FACTORS]:  # b_i + p_u · q_i, min-max scaled over the candidates
        lo, hi = np.inf, -np.inf
        for p in range(nc):
            v = f_bi[f_item[p]] + _fdot(u, f_item[p], f_p, f_q)
            X[p, F_FAC] = v
            lo, hi = min(lo, v), max(hi, v)
        for p in range(nc):
            X[p, F_FAC] = (X[p, F_FAC] - lo) / (hi - lo) if hi > lo else 1.0
    for f in (F_ICF, F_UCF, F_CONTENT, F_ICF_MAX, F_UCF_MAX):
        best = 0.0
        for p in range(nc):
            best = max(best, X[p, f])
        for p in range(nc):
            X[p, f] = max(X[p, f], 0.0) / best if best > 0.0 else 0.0
    mu, lam_i, lam_u, lo, span, rec_ms, pop_norm, now = fp[0], fp[1], fp[2], fp[3], fp[4], fp[5], fp[6], fp[7]
    # b_u: its terms summed in id order, not in the log's slot order (which follows the dense ids' arrival order)
    count = 0
    base = l_ptr[u]
    for x in range(base, base + l_cap[u]):
        if l_items[x] != -1 and lg_type[l_slots[x]] == rate_type:
            count += 1
    terms = np.empty(count)
    ranks = np.empty(count, dtype=np.int64)
    c = 0
    for x in range(base, base + l_cap[u]):
        j = l_items[x]
        if j != -1 and lg_type[l_slots[x]] == rate_type:
            b_i = (b_sum[j] - b_n[j] * mu) / (lam_i + b_n[j]) if b_n[j] > 0 else 0.0
            terms[c] = lg_value[l_slots[x]] - mu - b_i
            ranks[c] = item_rank[j]
            c += 1
    b_u = 0.0
    for p in np.argsort(ranks):
        b_u += terms[p]
    b_u = b_u / (lam_u + count) if count > 0 else 0.0
    for p in range(nc):
        j = f_item[p]
        X[p, F_POP] = np.log1p(i_users[j]) / pop_norm
        X[p, F_RECENCY] = 2.0 ** (-max(now - i_last[j], 0) / rec_ms) if i_users[j] > 0 else 0.0
        b_i = (b_sum[j] - b_n[j] * mu) / (lam_i + b_n[j]) if b_n[j] > 0 else 0.0
        X[p, F_BASELINE] = min(max((mu + b_u + b_i - lo) / span, 0.0), 1.0)
    log_pool = np.log(pool_n + 1)
    for m in range(N_METHODS):
        for x in range(p_len[m]):
            X[pos_of[p_item[m, x]], F_RANK + m if m < FACTORS else F_FAC_RANK] = 1.0 - np.log(x + 1) / log_pool
    m_out = 0
    cand_rank = np.empty(nc, dtype=np.int64)  # candidate position -> the item's place in the id order
    for p in range(nc):
        cand_rank[p] = item_rank[f_item[p]]
    if train_item >= 0:
        pe = pos_of[train_item]
        if pe >= 0:
            lr, l2 = fp[8], fp[9]
            neg = np.empty(min(n_neg, nc - 1), dtype=np.int64)
            key = np.empty(len(neg))
            cnt = 0
            for p in range(nc):
                if p != pe:
                    cnt = _insert_top(len(neg), cnt, neg, key, cand_rank, p,
                                      -float(mix(train_key, item_hash[f_item[p]])))
            _sgd(comb, comb_n, X[pe], 1.0, lr, l2)
            for x in range(cnt):
                _sgd(comb, comb_n, X[neg[x]], 0.0, lr, l2)
    else:
        probs = np.empty(nc)
        for p in range(nc):
            probs[p] = _sigmoid(_decision(comb, X[p]))
        top_p = np.empty(n, dtype=np.int64)
        top_v = np.empty(n)
        for p in range(nc):
            m_out = _insert_top(n, m_out, top_p, top_v, cand_rank, p, probs[p])
        for q in range(m_out):
            p = top_p[q]
            j = f_item[p]
            x = X[p]
            contrib = np.array([(comb[0] * x[0] + comb[10] * x[10]) + comb[6] * x[6],
                                (comb[1] * x[1] + comb[11] * x[11]) + comb[7] * x[7],
                                comb[2] * x[2] + comb[8] * x[8],
                                comb[3] * x[3] + comb[9] * x[9],
                                comb[12] * x[12] + comb[13] * x[13]])
            best_m, best_a = -1, -1
            best_v = 0.0
            for m in range(N_METHODS):
                for pos in range(p_len[m]):
                    if p_item[m, pos] == j:
                        if best_m == -1 or contrib[m] > best_v:
                            best_m, best_v, best_a = m, contrib[m], p_arg[m, pos]
                        break
            out_item[r, q] = j
            out_score[r, q] = top_v[q]
            out_method[r, q] = best_m
            out_arg[r, q] = best_a
    for p in range(nc):
        pos_of[f_item[p]] = -1
    return m_out
