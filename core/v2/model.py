"""The model core's functions: a batch of events -> state, users -> ranked lists (docs/design.md, "Model core").

* :func:`learn` applies a batch of events, in canonical order (event time, then event id), to the state:
  the user log, the baseline sums, item statistics and trending, item-CF (co-occurrence and norms) and user-CF
  (raters, user-user dot products and norms). The same events give the same state however they are cut into
  batches, as long as the batches follow each other in canonical order.
* :func:`rank` ranks a batch of users at once: every method's candidate pool, then the mode's fusion
  (:data:`FUSION`, a table), then a short list filled with trending items. Neighbour lists are exact: a list
  whose sums (or, with ``refresh_on_norms``, a column's norm) changed is recomputed before it is read.
* :func:`render` turns a :class:`Ranking` into ``(item, score, reason)`` strings, the public form.

docs/design.md ("The model") explains each piece.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from core.v2 import catalog
from core.v2 import diversity as div
from core.v2 import factors as fac
from core.v2 import kernels as k
from core.v2.settings import METHODS, Settings
from core.v2.state import NEVER, Pool, State
from udfs.events import EVENT_TYPES, NEGATIVE_TYPES, Event

RATE = EVENT_TYPES.index("rate")
NEG_FLAG = np.array([k.NEG_HIDE if t == "hide" else k.NEG_DISLIKE if t == "dislike" else 0 for t in EVENT_TYPES],
                    dtype=np.int64)
"""Per type code: the negative-feedback flag it sets (0: an engagement)."""
COMPACT_ABOVE = 1 << 16
"""A pool is compacted (:func:`kernels.compact_pool`) only past twice this many slots."""
_VERBS = {"rate": "rated", "view": "viewed", "click": "clicked", "cart": "put in your cart", "purchase": "bought"}


class FusionSpec(NamedTuple):
    """How a mode ranks: the kind of fusion (``kernels.KIND_*``) and, for one method alone, which."""

    kind: int
    method: int = -1


FUSION: dict[str, FusionSpec] = {
    "weighted": FusionSpec(k.KIND_WEIGHTED),
    "rrf": FusionSpec(k.KIND_RRF),
    "borda": FusionSpec(k.KIND_BORDA),
    "learned": FusionSpec(k.KIND_LEARNED),
    **{m: FusionSpec(k.KIND_SINGLE, code) for code, m in enumerate(METHODS)},
}
"""Every mode and how it ranks."""
FEATURES: tuple[str, ...] = ("itemcf", "usercf", "content", "popularity", "recency", "baseline",
                             "itemcf_rank", "usercf_rank", "content_rank", "popular_rank", "itemcf_max", "usercf_max",
                             "factors", "factors_rank")
"""The learned combiner's features, each in 0..1 (the columns of ``State.comb``, the bias last)."""


class Batch(NamedTuple):
    """Events as columns (one entry per event)."""

    event_id: np.ndarray  # str
    user_id: np.ndarray  # str
    item_id: np.ndarray  # str
    type: np.ndarray  # int8: index into EVENT_TYPES
    weight: np.ndarray  # float64: the rating or the type's weight
    ts: np.ndarray  # int64, epoch ms
    key: np.ndarray  # int64: CRC-32 of the event id (the seeded draws of an event depend on it alone)

    @classmethod
    def of(cls, events: Sequence[Event]) -> Batch:
        types = {t: c for c, t in enumerate(EVENT_TYPES)}
        ids = [e.event_id for e in events]
        return cls(
            np.array(ids, dtype=np.str_),
            np.array([e.user_id for e in events], dtype=np.str_),
            np.array([e.item_id for e in events], dtype=np.str_),
            np.fromiter((types[e.type] for e in events), dtype=np.int8, count=len(events)),
            np.fromiter((e.weight for e in events), dtype=np.float64, count=len(events)),
            np.fromiter((e.ts for e in events), dtype=np.int64, count=len(events)),
            np.fromiter((zlib.crc32(i.encode("utf-8", "surrogatepass")) for i in ids), dtype=np.int64,
                        count=len(events)),
        )

    def __len__(self) -> int:  # type: ignore[override]
        return len(self.ts)

    def slice(self, start: int, end: int) -> Batch:
        return Batch(*(a[start:end] for a in self))

    def take(self, mask: np.ndarray) -> Batch:
        """The events where ``mask`` is true."""
        return Batch(*(a[mask] for a in self))

    @classmethod
    def concat(cls, batches: Sequence[Batch]) -> Batch:
        """One batch of the events of ``batches`` (an empty one for none)."""
        if not batches:
            return cls.of([])
        if len(batches) == 1:
            return batches[0]
        return cls(*(np.concatenate(cols) for cols in zip(*batches, strict=True)))


class Ranking(NamedTuple):
    """Ranked lists of a batch of users: row r is user ``users[r]``'s list of ``length[r]`` items."""

    users: np.ndarray  # dense user ids
    item: np.ndarray  # (users, n) dense item ids
    score: np.ndarray  # (users, n)
    method: np.ndarray  # (users, n) the method that gives the reason (kernels.ITEMCF ... FILL)
    arg: np.ndarray  # (users, n) its argument: the history item (item-CF), the neighbour (user-CF), else -1
    length: np.ndarray  # (users,)


def new_state(settings: Settings) -> State:
    state = State(settings)
    deny(state, settings.deny)
    return state


def deny(state: State, items: Sequence[str]) -> None:
    """Never recommend these items from now on."""
    if len(items):
        ids = state.items.encode(items)
        state.fit(0, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        state.deny[ids] = True
        state.version += 1


def add_items(state: State, records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Add or update catalog items (records as in ``udfs.catalog``), usable from the next ranking. The newest items
    are the last by ``position`` (a record's place in the catalog topic, ``operators.parse.catalog_position``; the
    order of arrival for a record without one), and an update keeps the item's first place: the same newest items
    whatever order the records arrive in. A record's ``available`` (default true) and ``expires_at`` (event time,
    ms; None: never) set the item's lifecycle (:func:`settle`); of two records of one item, the one placed later in
    the topic wins, whatever order they arrive in. A record equal to what the item has (a catalog published again)
    changes nothing. Returns the item ids."""
    parsed = [catalog.features(r) for r in records]
    ids = state.items.encode([i for i, _ in parsed]).tolist()
    state.fit(0, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    changed = False
    for (item, feats), i, record in zip(parsed, ids, records, strict=True):
        position = record.get("position")
        place = int(position) if isinstance(position, int) else len(state.catalog_seq)
        first = state.catalog_seq.get(i)
        state.catalog_seq[i] = place if first is None else min(place, first)
        if not _newer(state, i, position):
            continue
        title = record.get("title") if isinstance(record.get("title"), str) else None
        expires = record.get("expires_at")
        off = record.get("available", True) is False
        until = int(expires) if isinstance(expires, int) else NEVER
        if (first is not None and state.catalog.get(i) == feats and bool(state.off[i]) == off
                and int(state.expires[i]) == until and (not title or state.titles.get(item) == title)):
            continue
        changed = True
        state.catalog[i] = feats
        if title:
            state.titles[item] = title
        state.off[i] = off
        state.expires[i] = until
    if changed:
        state.catalog_changed = True
        state.version += 1
        settle(state)
    return [i for i, _ in parsed]


def delete_items(state: State, records: Sequence[tuple[str, int | None]]) -> None:
    """Delete catalog items (a tombstone of the catalog topic: ``(item_id, position)``): out of the catalog (no
    content vector) and never recommended nor listed as a neighbour until a later record adds them again. Their
    events stay learned (co-occurrence, history). A deletion placed before the item's last applied record is
    ignored."""
    ids = state.items.encode([item for item, _ in records]).tolist()
    state.fit(0, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    for i, (_, position) in zip(ids, records, strict=True):
        if not _newer(state, i, position):
            continue
        state.catalog.pop(i, None)
        state.off[i] = True
        state.expires[i] = NEVER
    state.catalog_changed = True
    state.version += 1
    settle(state)


def _newer(state: State, item: int, position: int | None) -> bool:
    """Whether a catalog record at ``position`` (None: newer than any) comes after the item's last applied one; if so
    it becomes the last."""
    last = state.life_pos.get(item)
    if isinstance(position, int):
        if last is not None and position < last:
            return False
        state.life_pos[item] = position
    else:
        state.life_pos[item] = (last + 1) if last is not None else 0
    return True


def settle(state: State) -> np.ndarray:
    """Which items are ``gone`` (withdrawn or deleted, or expired: ``expires_at`` at or before the model's event-time
    clock ``now_ms``, the newest event learned). The neighbour lists that hold an item whose state changed, or may
    hold it now, are marked dirty (recomputed before they are read or written). Returns those items."""
    n = len(state.items)
    now = state.now_ms
    off, expires = state.off[:n], state.expires[:n]
    gone = off | (expires <= now)
    ahead = expires[~gone]
    state.life_meta[0] = int(ahead.min()) if len(ahead) else NEVER
    flipped = np.flatnonzero(gone != state.gone[:n])
    if len(flipped):
        state.gone[:n] = gone
        if "itemcf" in state.settings.methods:
            p = state.ipool
            k.mark_holders(flipped, p.ptr, p.cap, p.cols, state.dirty)  # rows that may list it (by symmetry)
            listing = np.isin(state.nb_idx[:n], flipped).any(axis=1)  # rows listing it (a pruned row is not symmetric)
            state.dirty[:n][listing] = 1
        state.version += 1
    return flipped


def learn(state: State, batch: Batch, train: bool = False) -> None:
    """Apply ``batch`` (any order: it is put in canonical order, event time then event id) to ``state``.

    ``train``: recommend-then-learn for the combiner: an event of a user with history on an item new to them, drawn
    with probability ``combiner_sample`` by (seed, event id), trains it on the user's candidates in the state just
    before the event (the item a positive, ``n_neg`` other candidates negatives).

    Negative feedback (``dislike``, ``hide``) only sets the (user, item)'s flag for good (``State.npool``): it is no
    engagement (no log entry, no co-occurrence, user-CF, trending or baseline term, no combiner example), and a later
    engagement does not clear it."""
    n = len(batch)
    if n == 0:
        return
    bad = ~(np.isfinite(batch.weight) & (batch.weight > 0))
    if bad.any():
        p = int(np.flatnonzero(bad)[0])
        raise ValueError(f"weight {float(batch.weight[p])!r} of event {batch.event_id[p]} must be a positive finite "
                         "number")
    order = np.lexsort((batch.event_id, batch.ts))
    s = state.settings
    users = state.users.encode(batch.user_id[order].tolist())
    items = state.items.encode(batch.item_id[order].tolist())
    types, values, ts, keys = batch.type[order], batch.weight[order], batch.ts[order], batch.key[order]
    state.fit(n, np.bincount(users), np.bincount(items))
    cuts: list[int] = []
    if train and s.combiner_sample > 0 and len(s.methods):
        lp = state.lpool
        pos = np.flatnonzero(NEG_FLAG[types] == 0)  # engagements (negative feedback is no example, nor history)
        _, first_user = np.unique(users[pos], return_index=True)
        _, first_pair = np.unique((users[pos] << 32) | items[pos], return_index=True)
        first_user, first_pair = pos[first_user], pos[first_pair]
        had = lp.size[users] > 0  # history before the batch, or an earlier engagement in it
        later = np.zeros(n, dtype=np.bool_)
        later[pos] = True
        later[first_user] = False
        had |= later
        new_pair = np.zeros(n, dtype=np.bool_)
        new_pair[first_pair] = k.log_lacks(users[first_pair], items[first_pair], lp.ptr, lp.cap, lp.cols, lp.vals)
        drawn = k.uniform(keys, s.seed) < s.combiner_sample
        cuts = np.flatnonzero(had & new_pair & drawn).tolist()
    start = 0
    for e in [*cuts, n]:
        _apply(state, users[start:e], items[start:e], types[start:e], values[start:e], ts[start:e], keys[start:e])
        if state.now_ms >= state.life_meta[0]:  # an item expired: gone before the next ranking, whatever the cut
            settle(state)
        if e < n:
            _train(state, int(users[e]), int(items[e]), int(keys[e]))
        start = e
    state.version += 1


def _apply(state: State, users: np.ndarray, items: np.ndarray, types: np.ndarray, values: np.ndarray,
           ts: np.ndarray, keys: np.ndarray) -> None:
    """The learning kernels over events in canonical order (arrays already sized)."""
    flags = NEG_FLAG[types]
    negative = flags != 0
    if negative.any():
        np_ = state.npool
        np_.cols, np_.vals = k.learn_negative(users[negative], items[negative], flags[negative], np_.ptr, np_.cap,
                                              np_.size, np_.cols, np_.vals, np_.meta)
        keep = ~negative
        users, items, types, values, ts, keys = (users[keep], items[keep], types[keep], values[keep], ts[keep],
                                                 keys[keep])
    n = len(users)
    if n == 0:
        return
    s = state.settings
    if "factors" in s.methods:
        _learn_factors(state, users, items, types, values, keys)
    w = np.empty(n)
    w0 = np.empty(n)
    new = np.empty(n, dtype=np.uint8)
    lp = state.lpool
    lp.cols, lp.vals, state.lp_w, state.lp_ts = k.learn_log(
        users, items, values, types, ts, s.center_ratings, RATE, lp.ptr, lp.cap, lp.size, lp.cols, lp.vals, lp.meta,
        state.lg_item, state.lg_value, state.lg_ts, state.lg_type, state.lg_w, state.lg_rating, state.u_rsum,
        state.u_rn, state.u_last, state.b_sum, state.b_n, state.i_users, state.i_last, state.meta, state.fmeta, w, w0,
        new, state.lp_w, state.lp_ts)
    width_ms = int(s.trending_window_s * 1000 / s.trending_buckets)
    k.learn_trending(items, ts, s.trending_half_life_s or 0.0, width_ms, s.trending_buckets, state.tr_val,
                     state.tr_t, state.tb, state.tb_id, state.tr_totals, state.tr_meta)
    if "itemcf" in s.methods:
        ip = state.ipool
        ip.cols, ip.vals = k.learn_itemcf(users, items, ts, w, w0, s.history_cap, s.row_cap, state.items.rank,
                                          state.rc_item, state.rc_w, state.rc_ts, state.rc_len, state.i_norm, ip.ptr,
                                          ip.cap, ip.size, ip.cols, ip.vals, ip.meta, state.dirty, state.moved)
        moved = np.flatnonzero(state.moved)
        state.moved[moved] = 0
        if s.refresh_on_norms:
            k.mark_holders(moved, ip.ptr, ip.cap, ip.cols, state.dirty)
    if "usercf" in s.methods:
        up = state.upool
        up.cols, up.vals = k.learn_usercf(users, items, ts, w, w0, new, s.usercf_max_raters, s.usercf_row_cap,
                                          state.users.rank, state.ra_user, state.ra_w, state.ra_ts, state.ra_len,
                                          state.u_norm, up.ptr, up.cap, up.size, up.cols, up.vals, up.meta)
    for pool, rows in ((state.ipool, len(state.items)), (state.upool, len(state.users))):
        # rows that grew left their old blocks behind: past half the rows' own size, the pool is copied without them
        if pool.meta[0] > 2 * COMPACT_ABOVE and 3 * int(pool.cap[:rows].sum()) < 2 * pool.meta[0]:
            pool.cols, pool.vals = k.compact_pool(pool.ptr, pool.cap, pool.cols, pool.vals, pool.meta, rows)
    state.trend = None


FACTOR_SALT = 3
"""The factor model's negatives are drawn with ``mix(seed, FACTOR_SALT)``: not the combiner's draws."""


def _learn_factors(state: State, users: np.ndarray, items: np.ndarray, types: np.ndarray, values: np.ndarray,
                   keys: np.ndarray) -> None:
    """One SGD step of the factor model per engagement, in the order given (canonical): ``positive``, every
    engagement towards 1 and ``factors_n_neg`` items drawn uniformly from those engaged before towards 0
    (:func:`core.v2.factors.learn_uniform`); ``explicit``, the ratings alone."""
    s = state.settings
    if s.factors_loss == "explicit":
        rated = types == RATE
        if rated.any():
            fac.learn_explicit(users[rated], items[rated], values[rated], state.f_p, state.f_q, state.f_bu,
                               state.f_bi, state.f_mean, s.factors_lr, s.factors_reg)
    else:
        fac.learn_uniform(users, items, keys, state.f_p, state.f_q, state.f_bi, state.f_seen, state.f_pool,
                          state.f_pool_n, s.factors_n_neg, k.mix(s.seed, FACTOR_SALT), s.factors_lr, s.factors_reg)


def _train(state: State, user: int, item: int, key: int) -> None:
    """One recommend-then-learn step of the combiner for ``user`` engaging ``item`` next (see :func:`learn`)."""
    _run_rank(state, np.array([user], dtype=np.int64), FusionSpec(k.KIND_TRAIN), 1, item, key)


def refresh(state: State, all_rows: bool = False, among: np.ndarray | None = None) -> np.ndarray:
    """Recompute the dirty neighbour lists (every list with ``all_rows``), of the items where ``among`` (a mask over
    the items) is true if given; returns the refreshed items."""
    n = len(state.items)
    if all_rows:
        rows = np.arange(n, dtype=np.int64) if among is None else np.flatnonzero(among[:n])
    else:
        dirty = state.dirty[:n].astype(np.bool_)
        rows = np.flatnonzero(dirty if among is None else dirty & among[:n])
    p = state.ipool
    k.refresh_rows(rows, state.settings.top_k, p.ptr, p.cap, p.cols, p.vals, state.i_norm, state.items.rank,
                   state.nb_idx, state.nb_sim, state.nb_len, state.dirty, state.gone)
    return rows


def neighbors(state: State, item: str) -> list[tuple[str, float]]:
    """The item's current top-K neighbours ``(item, cosine)``, best first."""
    i = state.items.get(item)
    if i < 0:
        return []
    if state.dirty[i]:
        p = state.ipool
        k.refresh_rows(np.array([i]), state.settings.top_k, p.ptr, p.cap, p.cols, p.vals, state.i_norm,
                       state.items.rank, state.nb_idx, state.nb_sim, state.nb_len, state.dirty, state.gone)
    names = state.items.names
    return [(names[j], float(s)) for j, s in zip(state.nb_idx[i, : state.nb_len[i]].tolist(),
                                                  state.nb_sim[i, : state.nb_len[i]].tolist(), strict=True)]


def user_neighbors(state: State, user: str) -> list[tuple[str, float]]:
    """The user's current top ``usercf_top_k`` neighbours ``(user, cosine)``, best first (empty if unknown)."""
    u = state.users.get(user)
    if u < 0:
        return []
    k_ = state.settings.usercf_top_k
    idx, sim = np.full(k_, -1, dtype=np.int64), np.zeros(k_)
    p = state.upool
    m = k._user_neighbors(u, k_, p.ptr, p.cap, p.cols, p.vals, state.u_norm, state.users.rank, idx, sim)
    names = state.users.names
    return [(names[v], float(x)) for v, x in zip(idx[:m].tolist(), sim[:m].tolist(), strict=True)]


def combiner(state: State) -> dict[str, float]:
    """The learned combiner's weights by feature (and ``bias``)."""
    return dict(zip((*FEATURES, "bias"), state.comb.tolist(), strict=True))


def _cosine(a: int, b: int, pool: Pool, norm: np.ndarray) -> float:
    """The cosine of rows a and b of a co-occurrence (or dot-product) pool; 0.0 if either is unknown (-1)."""
    if a < 0 or b < 0:
        return 0.0
    c = k.row_get(a, b, pool.ptr, pool.cap, pool.cols, pool.vals)
    na, nb = norm[a], norm[b]
    return float(c / np.sqrt(na * nb)) if abs(c) > k.EPS and na > 0 and nb > 0 else 0.0


def similarity(state: State, a: str, b: str) -> float:
    """The current item-item cosine of ``a`` and ``b`` from the sums (0.0 if either is unknown)."""
    return _cosine(state.items.get(a), state.items.get(b), state.ipool, state.i_norm)


def user_similarity(state: State, u: str, v: str) -> float:
    """The current user-user cosine of ``u`` and ``v`` (0.0 if either is unknown)."""
    return _cosine(state.users.get(u), state.users.get(v), state.upool, state.u_norm)


def trending(state: State) -> tuple[np.ndarray, np.ndarray]:
    """Every item with a positive trending score and the score, best first (ties: id), but the items gone; computed
    once per state version."""
    cached = state.trend
    if cached is not None and cached[0] == state.version:
        return cached[1], cached[2]
    s = state.settings
    n = len(state.items)
    items, scores = k.trending_order(s.trending_half_life_s or 0.0, state.now_ms, state.tr_val[:n], state.tr_t[:n],
                                     state.tr_totals[:n], state.items.rank, n)
    if state.gone[:n].any():
        keep = ~state.gone[items]
        items, scores = items[keep], scores[keep]
    state.trend = (state.version, items, scores)
    return items, scores


def rank(state: State, users: Sequence[str], mode: str | None = None, n: int | None = None) -> Ranking:
    """The top ``n`` (default ``top_n``) of each user in ``mode`` (default the settings' mode); an unknown user gets
    an id (and no history: trending). With ``diversity_lambda`` > 0 the ``n`` are picked by MMR (:func:`diversify`)
    from the mode's best ``max(n, diversity_pool)``."""
    s = state.settings
    mode = s.mode if mode is None else mode
    spec = FUSION.get(mode)
    if spec is None:
        raise ValueError(f"mode {mode!r} must be one of {', '.join(FUSION)}")
    n = s.top_n if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n {n!r} must be a non-negative integer")
    ids = state.users.encode(users)
    state.fit(0, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    if s.diversity_lambda > 0:
        deep = _run_rank(state, ids, spec, max(n, s.diversity_pool))
        return diversify(state, deep, n, s.diversity_lambda, s.diversity_similarity)
    return _run_rank(state, ids, spec, n)


def _run_rank(state: State, ids: np.ndarray, spec: FusionSpec, n: int, train_item: int = -1,
              train_key: int = 0) -> Ranking:
    s = state.settings
    tr_items, tr_scores = trending(state)
    # one method alone needs only its own pool
    use = np.array([m in s.methods and (spec.kind != k.KIND_SINGLE or c == spec.method)
                    for c, m in enumerate(METHODS)])
    alphas = np.array([s.weight(m) for m in METHODS])
    cold = np.array([s.weight(m, cold=True) for m in METHODS])
    exclude = np.array([t in s.exclude_types or t in NEGATIVE_TYPES for t in EVENT_TYPES])  # (never in the log)
    mu = float(state.fmeta[0] / state.meta[3]) if state.meta[3] else float(state.fmeta[1])
    fp = np.array([mu, s.baseline_lambda_item, s.baseline_lambda_user, s.min_rating, s.max_rating - s.min_rating,
                   s.recency_half_life_s * 1000.0, math.log1p(state.max_users) if state.max_users > 0 else 1.0,
                   float(state.now_ms), s.combiner_lr, s.combiner_l2])
    out = Ranking(ids, np.full((len(ids), n), -1, dtype=np.int64), np.zeros((len(ids), n)),
                  np.full((len(ids), n), -1, dtype=np.int64), np.full((len(ids), n), -1, dtype=np.int64),
                  np.zeros(len(ids), dtype=np.int64))
    ip, up, lp = state.ipool, state.upool, state.lpool
    k.rank_users(ids, n, spec.kind, max(spec.method, 0), alphas, cold, float(s.rrf_k), use, s.candidate_pool,
                 s.cold_start_items, s.history_decay_ms, exclude,
                 np.flatnonzero(state.deny[: len(state.items)] | state.gone[: len(state.items)]),
                 state.items.rank, state.users.rank,
                 state.npool.ptr, state.npool.cap, state.npool.cols, state.npool.vals, s.dislike_weight,
                 lp.ptr, lp.cap, lp.size, lp.cols, lp.vals, state.lp_w, state.lp_ts, state.u_last, state.lg_type,
                 state.rc_item, state.rc_w, state.rc_ts, state.rc_len, s.itemcf_profile == "engaged",
                 float(s.itemcf_profile_floor),
                 s.top_k, ip.ptr, ip.cap, ip.cols, ip.vals, state.i_norm, state.nb_idx, state.nb_sim, state.nb_len,
                 state.dirty, state.gone,
                 s.usercf_top_k, up.ptr, up.cap, up.cols, up.vals, state.u_norm,
                 state.f_p, state.f_q, state.f_bi,
                 tr_items, tr_scores, state.content(), s.content_search == "catalog", s.profile_max_items,
                 s.half_life_s or 0.0,
                 state.comb, state.comb_n, s.combiner_warmup, fp, state.items.hash, train_item, train_key, s.n_neg,
                 state.lg_value, RATE, state.i_users, state.i_last, state.b_sum, state.b_n,
                 out.item, out.score, out.method, out.arg, out.length)
    return out


def diversify(state: State, ranking: Ranking, n: int, lam: float, by: str = "content") -> Ranking:
    """Each user's list re-ranked by maximal marginal relevance (:func:`core.v2.diversity.mmr`): the first ``n``
    picked from the whole list (rank a deeper list than ``n`` to leave room), with similarity ``by`` content vectors
    or ``itemcf`` neighbour lists; items keep their scores and reasons. λ = 0 returns the first ``n`` unchanged."""
    if by not in ("content", "itemcf"):
        raise ValueError(f"diversity similarity {by!r} must be content or itemcf")
    if not lam >= 0:
        raise ValueError(f"diversity lambda {lam!r} must be >= 0")
    content = state.content()
    vptr, vcol, vval, vnorm = content[1], content[2], content[3], content[4]
    rows = len(ranking.users)
    pos = np.zeros((rows, n), dtype=np.int64)
    length = np.zeros(rows, dtype=np.int64)
    div.mmr_rows(ranking.item, ranking.score, ranking.length, n, float(lam),
                 div.CONTENT if by == "content" else div.ITEMCF, vptr, vcol, vval, vnorm,
                 state.nb_idx, state.nb_sim, state.nb_len, pos, length)
    valid = np.arange(n)[None, :] < length[:, None]
    r = np.arange(rows)[:, None]

    def take(a: np.ndarray, fill: float) -> np.ndarray:
        return np.where(valid, a[r, pos], fill).astype(a.dtype)

    return Ranking(ranking.users, take(ranking.item, -1), take(ranking.score, 0.0), take(ranking.method, -1),
                   take(ranking.arg, -1), length)


def _factor_reason(state: State, item: int, anchor: int) -> str:
    """The reason of a factor candidate: the genres it shares with the user's item nearest in factor space (the taste
    that drives ``p_u · q_i``), else that item's title."""
    if anchor < 0:
        return "fits the taste of your history"
    names = state.items.names
    a = state.catalog.get(anchor)
    b = state.catalog.get(item)
    shared = [g for g in a.genres if g in b.genres] if a is not None and b is not None else []
    if shared:
        return f"popular with people who share your taste in {', '.join(catalog.GENRES[g] for g in shared[:2])}"
    return f"because you liked {state.titles.get(names[anchor], names[anchor])}"


def render(state: State, ranking: Ranking) -> list[list[tuple[str, float, str]]]:
    """Each user's list as ``(item, score, reason)`` with the reasons spelled out (titles from the catalog)."""
    titles = state.titles
    names, unames = state.items.names, state.users.names
    out = []
    for r, u in enumerate(ranking.users.tolist()):
        row = []
        for q in range(int(ranking.length[r])):
            j, m, a = int(ranking.item[r, q]), int(ranking.method[r, q]), int(ranking.arg[r, q])
            if m == k.ITEMCF:
                lp = state.lpool
                slot = k.ulog_find(u, a, lp.ptr, lp.cap, lp.cols, lp.vals)
                verb = _VERBS.get(EVENT_TYPES[state.lg_type[slot]], "engaged with")
                reason = f"because you {verb} {titles.get(names[a], names[a])}"
            elif m == k.USERCF:
                reason = f"liked by similar user {unames[a]}"
            elif m == k.CONTENT:
                shared = []
                while a > 0:
                    shared.append(catalog.GENRES[a % 32 - 1])
                    a //= 32
                reason = f"matches your taste for {', '.join(shared)}" if shared else \
                    "similar to items you engaged with"
            elif m == k.FACTORS:
                reason = _factor_reason(state, j, a)
            else:
                reason = "trending"
            row.append((names[j], float(ranking.score[r, q]), reason))
        out.append(row)
    return out
