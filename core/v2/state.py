"""The model's state as numpy arrays, and how they grow.

One :class:`State` holds everything one process keeps; the fields are grouped by who owns them in a sharded job
(docs/design.md, "Model core"):

* **per user** (row ``u`` of every ``u_*``, ``rc_*`` array, the user's log slots, the user's row of the user-user
  pool): engaged items, the item-CF history, rating sums, user-user dot products and norm;
* **per item** (row ``i`` of the ``i_*``, ``ra_*`` arrays, the item's row of the item-item pool): co-occurrence,
  norm, raters, baseline sums, statistics;
* **broadcast** (bounded by the catalog): item neighbour lists ``nb_*``, trending, item statistics.

Capacities grow geometrically; a kernel that needs more room in a pool reallocates it and returns the new arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.v2.catalog import Features, Vectors
from core.v2.ids import IdIndex
from core.v2.settings import Settings

NEVER = 2**63 - 1
"""The expiry time of an item that does not expire."""


def _grow_rows(a: np.ndarray, n: int, fill: float | int = 0) -> np.ndarray:
    """``a`` with at least ``n`` rows (first axis), new rows set to ``fill``; doubling."""
    if len(a) >= n:
        return a
    size = max(n, 2 * len(a), 16)
    out = np.full((size, *a.shape[1:]), fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


def _grow_cols(a: np.ndarray, width: int, fill: float | int = 0) -> np.ndarray:
    """A 2-D ``a`` with at least ``width`` columns, new ones set to ``fill``; doubling."""
    if a.shape[1] >= width:
        return a
    out = np.full((a.shape[0], max(width, 2 * a.shape[1])), fill, dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


@dataclass
class Pool:
    """Sparse rows in one pool (see :mod:`core.v2.kernels`): row ``a`` has ``cap[a]`` slots at ``ptr[a]``."""

    ptr: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cap: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    size: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cols: np.ndarray = field(default_factory=lambda: np.full(1024, -1, dtype=np.int32))
    vals: np.ndarray = field(default_factory=lambda: np.zeros(1024))
    meta: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))  # [slots used, entries pruned]

    def fit(self, n: int) -> None:
        self.ptr, self.cap, self.size = _grow_rows(self.ptr, n), _grow_rows(self.cap, n), _grow_rows(self.size, n)

    def entries(self) -> int:
        """Entries in the rows."""
        return int(self.size.sum())

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.ptr, self.cap, self.size, self.cols, self.vals))


class State:
    """All arrays of the model (see the module docstring); sized by :meth:`fit`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.users = IdIndex()
        self.items = IdIndex()
        # the (user, item) log: each user's table item -> slot (``lpool``, ``size[u]`` = engaged items); slot arrays
        self.lpool = Pool(vals=np.zeros(1024, dtype=np.int64))
        # each log slot's weight and time again beside its place in the pool (``lg_w``/``lg_ts[lpool.vals[x]]`` at
        # ``x``; moved with the row): scanning a user's items reads one block instead of one slot per item
        self.lp_w = np.zeros(len(self.lpool.cols))
        self.lp_ts = np.zeros(len(self.lpool.cols), dtype=np.int64)
        self.lg_item = np.zeros(0, dtype=np.int32)
        self.lg_value = np.zeros(0)
        self.lg_ts = np.zeros(0, dtype=np.int64)
        self.lg_type = np.zeros(0, dtype=np.int8)
        self.lg_w = np.zeros(0)
        self.lg_rating = np.zeros(0)
        # negative feedback, apart from the log (a later engagement never undoes it): each user's table item ->
        # flags (NEG_HIDE | NEG_DISLIKE, core.v2.kernels)
        self.npool = Pool(vals=np.zeros(1024, dtype=np.int64))
        # per user
        self.u_rsum = np.zeros(0)
        self.u_rn = np.zeros(0, dtype=np.int64)
        self.u_last = np.zeros(0, dtype=np.int64)
        cap = settings.history_cap or 8
        self.rc_item = np.zeros((0, cap), dtype=np.int64)
        self.rc_w = np.zeros((0, cap))
        self.rc_ts = np.zeros((0, cap), dtype=np.int64)
        self.rc_len = np.zeros(0, dtype=np.int64)
        self.u_norm = np.zeros(0)
        self.upool = Pool()
        # per item
        self.i_norm = np.zeros(0)
        self.ipool = Pool()
        self.dirty = np.zeros(0, dtype=np.uint8)
        self.moved = np.zeros(0, dtype=np.uint8)
        raters = settings.usercf_max_raters + 1 if settings.usercf_max_raters else 8  # one over, before eviction
        self.ra_user = np.zeros((0, raters), dtype=np.int64)
        self.ra_w = np.zeros((0, raters))
        self.ra_ts = np.zeros((0, raters), dtype=np.int64)
        self.ra_len = np.zeros(0, dtype=np.int64)
        self.b_sum = np.zeros(0)
        self.b_n = np.zeros(0, dtype=np.int64)
        self.i_users = np.zeros(0, dtype=np.int64)
        self.i_last = np.zeros(0, dtype=np.int64)
        self.deny = np.zeros(0, dtype=np.bool_)
        # the item lifecycle (catalog records): withdrawn or deleted (``off``), the event time it expires at
        # (``expires``, NEVER: not), and ``gone``: not recommendable now (off, or expired at the event-time clock
        # ``now_ms``), kept by :func:`core.v2.model.settle`; ``life_pos``: the topic position of the lifecycle record
        # applied last per item (an older one is ignored); ``life_meta``: [the earliest expiry still ahead]
        self.off = np.zeros(0, dtype=np.bool_)
        self.expires = np.zeros(0, dtype=np.int64)
        self.gone = np.zeros(0, dtype=np.bool_)
        self.life_pos: dict[int, int] = {}
        self.life_meta = np.array([NEVER], dtype=np.int64)
        # broadcast: neighbour lists and trending
        self.nb_idx = np.zeros((0, settings.top_k), dtype=np.int64)
        self.nb_sim = np.zeros((0, settings.top_k))
        self.nb_len = np.zeros(0, dtype=np.int64)
        self.tr_val = np.zeros(0)
        self.tr_t = np.zeros(0, dtype=np.int64)
        self.tb = np.zeros((0, settings.trending_buckets))
        self.tb_id = np.full(settings.trending_buckets, -1, dtype=np.int64)
        self.tr_totals = np.zeros(0)
        self.tr_meta = np.full(1, -1, dtype=np.int64)  # [newest trending bucket]
        # global scalars: [log slots used, max users of an item, latest event time, ratings count]
        self.meta = np.zeros(4, dtype=np.int64)
        # [Σ ratings, the global mean before any rating]
        self.fmeta = np.array([0.0, (settings.min_rating + settings.max_rating) / 2])
        # the factor model (core.v2.factors): user rows ``f_p``/``f_bu`` (per user), item rows ``f_q``/``f_bi`` (per
        # item, bounded by the catalog: broadcast); rows past ``f_rows`` [users, items] are not drawn yet; the
        # running [Σ ratings, count] of the explicit loss; the items negatives are drawn from
        dim = settings.factors_dim
        self.f_p = np.zeros((0, dim))
        self.f_bu = np.zeros(0)
        self.f_q = np.zeros((0, dim))
        self.f_bi = np.zeros(0)
        self.f_rows = np.zeros(2, dtype=np.int64)
        self.f_mean = np.zeros(2)
        self.f_seen = np.zeros(0, dtype=np.bool_)  # per item: engaged, in f_pool (the negatives' pool)
        self.f_pool = np.zeros(0, dtype=np.int64)  # the engaged items in the order first engaged
        self.f_pool_n = np.zeros(1, dtype=np.int64)
        # the learned combiner: one weight per feature and the bias; examples learned
        self.comb = np.zeros(15)
        self.comb_n = np.zeros(1, dtype=np.int64)
        self.version = 0  # bumped by every learned batch and catalog change (caches of derived lists key on it)
        self.trend: tuple[int, np.ndarray, np.ndarray] | None = None  # (version, trending items, scores)
        # the catalog (broadcast): raw features and place of each item (the order of first arrival: newest last),
        # titles; the vectors and the memo of one-item profile searches are derived from them (:meth:`content`)
        self.catalog: dict[int, Features] = {}
        self.catalog_seq: dict[int, int] = {}
        self.titles: dict[str, str] = {}
        self.catalog_changed = True
        self.vectors: Vectors | None = None
        self.in_cat = np.zeros(0, dtype=np.bool_)
        self.newest = np.zeros(0, dtype=np.int64)
        memo = settings.candidate_pool + 16
        self.cm_idx = np.zeros((0, memo), dtype=np.int64)
        self.cm_sim = np.zeros((0, memo))
        self.cm_len = np.zeros(0, dtype=np.int64)

    @property
    def now_ms(self) -> int:
        return int(self.meta[2])

    @property
    def max_users(self) -> int:
        return int(self.meta[1])

    def fit(self, n_new_slots: int, user_events: np.ndarray, item_events: np.ndarray) -> None:
        """Size every array for the known ids and a batch adding at most ``n_new_slots`` log slots, with
        ``user_events[u]`` events of user u and ``item_events[i]`` of item i in it."""
        s = self.settings
        nu, ni = len(self.users), len(self.items)
        need = int(self.meta[0]) + n_new_slots
        self.lg_item = _grow_rows(self.lg_item, need)
        self.lg_value = _grow_rows(self.lg_value, need)
        self.lg_ts = _grow_rows(self.lg_ts, need)
        self.lg_type = _grow_rows(self.lg_type, need)
        self.lg_w = _grow_rows(self.lg_w, need)
        self.lg_rating = _grow_rows(self.lg_rating, need, np.nan)
        self.lpool.fit(nu)
        self.npool.fit(nu)
        for name in ("u_rsum", "u_rn", "u_last", "rc_len", "u_norm"):
            setattr(self, name, _grow_rows(getattr(self, name), nu))
        for name in ("rc_item", "rc_w", "rc_ts"):
            setattr(self, name, _grow_rows(getattr(self, name), nu))
        if not s.history_cap and len(user_events):
            width = int((self.rc_len[: len(user_events)] + user_events).max(initial=0))
            for name in ("rc_item", "rc_w", "rc_ts"):
                setattr(self, name, _grow_cols(getattr(self, name), width))
        self.upool.fit(nu)
        for name in ("i_norm", "dirty", "moved", "ra_len", "b_sum", "b_n", "i_users", "i_last", "deny", "nb_len",
                     "tr_val", "tr_t", "tr_totals", "off", "gone"):
            setattr(self, name, _grow_rows(getattr(self, name), ni))
        self.expires = _grow_rows(self.expires, ni, NEVER)
        for name in ("ra_user", "ra_w", "ra_ts", "nb_idx", "nb_sim", "tb"):
            setattr(self, name, _grow_rows(getattr(self, name), ni))
        if not s.usercf_max_raters and len(item_events):
            width = int((self.ra_len[: len(item_events)] + item_events).max(initial=0))
            for name in ("ra_user", "ra_w", "ra_ts"):
                setattr(self, name, _grow_cols(getattr(self, name), width))
        self.ipool.fit(ni)
        if "factors" in s.methods:
            self._fit_factors(nu, ni)

    def _fit_factors(self, nu: int, ni: int) -> None:
        """Factor rows for every known id: new rows drawn from their ids' hashes (the same row in every process)."""
        from core.v2.factors import init_rows
        from core.v2.kernels import mix

        s = self.settings
        for side, n, hashes, salt in ((0, nu, self.users.hash, 1), (1, ni, self.items.hash, 2)):
            rows, bias = ("f_p", "f_bu") if side == 0 else ("f_q", "f_bi")
            setattr(self, rows, _grow_rows(getattr(self, rows), n))
            setattr(self, bias, _grow_rows(getattr(self, bias), n))
            if side == 1:
                self.f_seen = _grow_rows(self.f_seen, n)
                self.f_pool = _grow_rows(self.f_pool, n)
            start = int(self.f_rows[side])
            if n > start:
                init_rows(getattr(self, rows), start, n, hashes, mix(s.seed, salt), s.factors_init_std)
                self.f_rows[side] = n

    def content(self) -> tuple[np.ndarray, ...]:
        """The catalog arrays the ranking kernel reads (rebuilt after a catalog change, extended for new items)."""
        from core.v2.catalog import GENRE_ORDER, build

        n = len(self.items)
        if self.catalog_changed or self.vectors is None:
            self.vectors = build(n, self.catalog)
            self.in_cat = np.zeros(n, dtype=np.bool_)
            self.in_cat[list(self.catalog)] = True
            order = sorted((i for i in self.catalog_seq if i in self.catalog), key=self.catalog_seq.__getitem__)
            self.newest = np.array(order[-self.settings.content_new_items:] if self.settings.content_new_items else [],
                                   dtype=np.int64)
            self.cm_len = np.full(n, -1, dtype=np.int64)
            self.catalog_changed = False
        v = self.vectors
        if len(v.norm) < n:  # items known from events only: no vector
            extra = n - len(v.norm)
            v = self.vectors = Vectors(np.concatenate([v.ptr, np.full(extra, v.ptr[-1])]), v.col, v.val,
                                       np.concatenate([v.norm, np.zeros(extra)]),
                                       np.concatenate([v.genres, np.zeros(extra, dtype=np.int64)]), v.post_ptr,
                                       v.post_item, v.post_val)
            self.in_cat = np.concatenate([self.in_cat, np.zeros(extra, dtype=np.bool_)])
        self.cm_idx, self.cm_sim = _grow_rows(self.cm_idx, n), _grow_rows(self.cm_sim, n)
        if len(self.cm_len) < n:
            self.cm_len = np.concatenate([self.cm_len, np.full(n - len(self.cm_len), -1, dtype=np.int64)])
        return (self.in_cat, v.ptr, v.col, v.val, v.norm, v.genres, self.newest, self.cm_idx, self.cm_sim,
                self.cm_len, GENRE_ORDER, v.post_ptr, v.post_item, v.post_val)

    def nbytes(self) -> int:
        """Bytes held by the arrays (ids and Python objects not counted)."""
        return sum(v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray)) + \
            self.ipool.nbytes() + self.upool.nbytes() + self.lpool.nbytes() + self.npool.nbytes()
