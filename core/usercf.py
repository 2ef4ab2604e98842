"""Incremental user-based collaborative filtering (user–user cosine over co-engaged items).

The similarity of users ``u`` and ``v`` is the cosine of their weight rows::

    sim(u, v) = D[u][v] / sqrt(norm[u] * norm[v]),   D[u][v] = Σ_i w_ui·w_vi,   norm[u] = Σ_i w_ui²

and both sums are maintained event by event. When ``u`` engages item ``i`` with weight ``w_new``
(``w_old`` = its previous weight, 0 for a first engagement; a re-engagement replaces the weight)::

    norm[u]    += w_new² - w_old²
    D[u][v]    += (w_new - w_old) · w_vi     for every other rater v of i   (and D[v][u] likewise)

Fan-out is capped: the item keeps only its ``max_raters`` most recent raters (by event time) and
pairs the new event with those. With ``max_raters=0`` (unlimited) the sums are exact and the
cosine equals a batch recompute (:func:`batch_user_cosine`); with a cap, pairs that co-engaged
only items where one of them has been evicted are missed, so similarities are an approximation.

State is split into small per-key pieces of plain dicts and floats, so a Flink operator keyed by
user can hold one :class:`UserState` and one keyed by item one raters dict; the module-level
functions (:func:`set_weight`, :func:`record_rater`, :func:`pair_deltas`, :func:`rank_users`)
are the steps that act on one piece each, and :class:`UserCF` chains them in one process.

User-user similarities are kept by the same engine as item-item ones (:class:`core.itemcf.ItemRows`,
with users as rows and columns): each user's row of dot products, every user's norm, and the exact
top-K neighbours recomputed from the sums. The Flink job holds the rows keyed by user shard.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TypedDict

import numpy as np

from core.itemcf import ItemRows, top_n

logger = logging.getLogger(__name__)

Raters = dict[str, tuple[float, int]]
"""The per-item piece: rater user id -> (weight, ts of the last engagement)."""


class UserState(TypedDict):
    """The per-user piece."""

    items: dict[str, float]  # item -> current weight
    norm: float  # Σ w² over items


def new_user_state() -> UserState:
    return {"items": {}, "norm": 0.0}


def _check_weight(w: float) -> None:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
        raise ValueError(f"w {w!r} must be a positive finite number")


def set_weight(state: UserState, item: str, w: float) -> float:
    """Set ``item``'s weight in the user's row, update the norm and return the previous weight (0.0 if new)."""
    w_old = state["items"].get(item, 0.0)
    state["items"][item] = float(w)
    state["norm"] += w * w - w_old * w_old
    return w_old


def record_rater(raters: Raters, user: str, w: float, ts: int, max_raters: int) -> list[tuple[str, float]]:
    """Record ``user`` as a rater of the item and return the other raters to pair with, as ``(v, w_vi)``.

    At most ``max_raters`` raters are kept (0 = unlimited); beyond that the oldest by ``ts`` is evicted.
    """
    partners = [(v, wv) for v, (wv, _) in raters.items() if v != user]
    raters[user] = (float(w), ts)
    if max_raters and len(raters) > max_raters:
        oldest = min(raters, key=lambda v: (raters[v][1], v))
        _, old_ts = raters.pop(oldest)
        logger.debug("usercf: evicted rater %s (ts %d) over max_raters %d", oldest, old_ts, max_raters)
    return partners


def pair_deltas(user: str, delta: float, partners: Iterable[tuple[str, float]]) -> dict[str, dict[str, float]]:
    """The dot-product deltas of one weight change of ``user`` on an item: ``D[u][v] += delta · w_vi`` (both ways)."""
    out: dict[str, dict[str, float]] = {}
    if delta == 0.0:
        return out
    row = out.setdefault(user, {})
    for v, w_vi in partners:
        d = delta * w_vi
        row[v] = row.get(v, 0.0) + d
        other = out.setdefault(v, {})
        other[user] = other.get(user, 0.0) + d
    return out


UserRows = list[tuple[str, float, Mapping[str, float]]]
"""``[(neighbour, sim(u, v), the neighbour's item weights)]``: what user-CF scores and reasons read."""


def score_users(neighbors: Iterable[tuple[str, float]], items_of: Callable[[str], Mapping[str, float]], n: int,
                skip: Collection[str]) -> tuple[list[tuple[str, float]], UserRows]:
    """``score(j) = Σ_{v ∈ neighbours} sim(u, v) · w_vj``: the ``n`` best unskipped ``(item, score)`` (ties: the
    smaller id) and the neighbour rows they were computed from (for :func:`user_reason`)."""
    if n < 0:
        raise ValueError(f"n {n!r} must be non-negative")
    rows = [(v, sim, items_of(v)) for v, sim in neighbors]
    totals: dict[str, float] = {}
    get = totals.get
    for _, sim, items in rows:
        for item, w in items.items():
            totals[item] = get(item, 0.0) + sim * w
    for item in skip:
        totals.pop(item, None)
    return top_n(totals, n), rows


def user_reason(item: str, rows: UserRows) -> str:
    """The neighbour with the largest contribution to ``item`` (ties: the smaller user id), as a reason."""
    top_c, top_v = -1.0, ""
    for v, sim, items in rows:
        w = items.get(item)
        if w is not None:
            c = sim * w
            if c > top_c or (c == top_c and v < top_v):
                top_c, top_v = c, v
    return f"liked by similar user {top_v}"


def rank_users(neighbors: Iterable[tuple[str, float]], items_of: Callable[[str], Mapping[str, float]], n: int,
               skip: Collection[str]) -> list[tuple[str, float, str]]:
    """:func:`score_users` with each item's reason: the neighbour that contributed most (ties: the smaller id)."""
    best, rows = score_users(neighbors, items_of, n, skip)
    return [(item, score, user_reason(item, rows)) for item, score in best]


def cosine(dot: float, norm_a: float, norm_b: float) -> float:
    """``dot / sqrt(norm_a * norm_b)``, 0.0 when either norm is not positive."""
    if norm_a <= 0.0 or norm_b <= 0.0:
        return 0.0
    return dot / math.sqrt(norm_a * norm_b)


class UserCF:
    """Online user-based CF: ``learn_one`` per event, ``neighbors`` / ``score`` / ``rank`` for queries.

    ``top_k``: neighbours kept per user (>= 1). ``max_raters``: most recent raters of an item that a new
    event is paired with (0 = unlimited, exact). Per event the work is O(max_raters). ``row_cap``: most
    dot products kept per user (0 = all; see :class:`core.itemcf.ItemRows`).
    """

    def __init__(self, top_k: int = 20, max_raters: int = 20, row_cap: int = 0) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k {top_k!r} must be a positive integer")
        if isinstance(max_raters, bool) or not isinstance(max_raters, int) or max_raters < 0:
            raise ValueError(f"max_raters {max_raters!r} must be a non-negative integer (0 = unlimited)")
        self.top_k = top_k
        self.max_raters = max_raters
        self.users: dict[str, UserState] = {}
        self.items: dict[str, Raters] = {}
        # user rows of dot products and user norms; :meth:`neighbors` always recomputes a user's list from the sums,
        # so the rows need no reverse index of whose lists a norm change touches
        self.rows = ItemRows(top_k, refresh_on_norms=False, row_cap=row_cap)

    def user_state(self, user: str) -> UserState:
        """The per-user piece (created empty if the user is unknown)."""
        state = self.users.get(user)
        if state is None:
            state = self.users[user] = new_user_state()
        return state

    def item_raters(self, item: str) -> Raters:
        """The per-item piece (created empty if the item is unknown)."""
        raters = self.items.get(item)
        if raters is None:
            raters = self.items[item] = {}
        return raters

    def learn_one(self, user: str, item: str, w: float, ts: int) -> None:
        _check_weight(w)
        us = self.user_state(user)
        w_old = set_weight(us, item, w)
        partners = record_rater(self.item_raters(item), user, w, ts, self.max_raters)
        self.rows.apply({user: w * w - w_old * w_old}, pair_deltas(user, w - w_old, partners), {})

    def similarity(self, u: str, v: str) -> float:
        """The current cosine of ``u`` and ``v`` from the maintained sums (0.0 for unknown users)."""
        if u == v:
            return 1.0 if self.rows.norm(u) > 0 else 0.0
        return self.rows.similarity(u, v)

    def neighbors(self, user: str, k: int | None = None) -> list[tuple[str, float]]:
        """Up to ``k`` (default ``top_k``) most similar users with their exact current cosine, best first."""
        self.rows.dirty.pop(user, None)
        return self.rows.neighbors(user)[: self.top_k if k is None else k]

    def _items_of(self, v: str) -> Mapping[str, float]:
        state = self.users.get(v)
        return state["items"] if state else {}

    def score(self, user: str, items: Iterable[str], k: int | None = None) -> dict[str, float]:
        """``Σ_{v in topK(u)} sim(u,v)·w_vj`` for each item (0.0 when no neighbour engaged it)."""
        wanted = list(items)
        got = {i: s for i, s, _ in rank_users(self.neighbors(user, k), self._items_of, len(self.items) + 1, ())}
        return {item: got.get(item, 0.0) for item in wanted}

    def rank(
        self, user: str, n: int, exclude: Iterable[str] | None = None, k: int | None = None
    ) -> list[tuple[str, float, str]]:
        """The ``n`` best candidates from the neighbours' items as ``(item, score, reason)``.

        ``exclude`` defaults to the items the user already engaged. The reason names the neighbour
        that contributed most to the score.
        """
        if exclude is None:
            exclude = self.users[user]["items"] if user in self.users else ()
        return rank_users(self.neighbors(user, k), self._items_of, n, set(exclude))


def batch_user_cosine(events: Iterable[tuple[str, str, float, int]]) -> tuple[list[str], np.ndarray]:
    """Dense batch recompute for tests: ``(users sorted, S)`` with ``S = R Rᵀ / outer(‖R_u‖, ‖R_u‖)``.

    ``R`` holds the final weight of each (user, item): the last event wins, as in :class:`UserCF`.
    """
    final: dict[tuple[str, str], float] = {}
    for user, item, w, _ts in events:
        final[(user, item)] = float(w)
    users = sorted({u for u, _ in final})
    items = sorted({i for _, i in final})
    uidx = {u: k for k, u in enumerate(users)}
    iidx = {i: k for k, i in enumerate(items)}
    r = np.zeros((len(users), len(items)))
    for (u, i), w in final.items():
        r[uidx[u], iidx[i]] = w
    norms = np.linalg.norm(r, axis=1)
    denom = np.outer(norms, norms)
    sims = np.divide(r @ r.T, denom, out=np.zeros_like(denom), where=denom > 0)
    return users, sims
