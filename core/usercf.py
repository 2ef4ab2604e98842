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
functions (:func:`set_weight`, :func:`record_rater`, :func:`add_dot`, :func:`offer_neighbor`)
are the steps that act on one piece each, and :class:`UserCF` chains them in one process.

Each user keeps its ``top_k`` neighbours. They are ranked by ``D[u][v] / sqrt(norm[v])``, which
orders ``u``'s neighbours exactly like the cosine (``norm[u]`` is common to all of them) but does
not go stale when ``u``'s own norm changes; an entry is refreshed whenever the pair is touched.
:meth:`UserCF.neighbors` recomputes the exact cosine of the kept neighbours.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import TypedDict

import numpy as np

logger = logging.getLogger(__name__)

Raters = dict[str, tuple[float, int]]
"""The per-item piece: rater user id -> (weight, ts of the last engagement)."""


class UserState(TypedDict):
    """The per-user piece."""

    items: dict[str, float]  # item -> current weight
    norm: float  # Σ w² over items
    dots: dict[str, float]  # other user -> dot product of the two weight rows
    top: dict[str, float]  # kept neighbour -> D[u][v] / sqrt(norm[v]) when the pair was last touched


def new_user_state() -> UserState:
    return {"items": {}, "norm": 0.0, "dots": {}, "top": {}}


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


def add_dot(state: UserState, other: str, delta: float) -> float:
    """Add ``delta`` to the dot product with ``other`` and return the new value (pairs at <= 0 are dropped)."""
    dot = state["dots"].get(other, 0.0) + delta
    if dot <= 0.0:  # only reachable with a max_raters cap, where a pair may have missed contributions
        state["dots"].pop(other, None)
        state["top"].pop(other, None)
        return 0.0
    state["dots"][other] = dot
    return dot


def offer_neighbor(state: UserState, other: str, key: float, top_k: int) -> None:
    """Offer ``other`` with ranking key ``D/sqrt(norm_other)`` to the user's top-``top_k`` neighbours."""
    top = state["top"]
    if key <= 0.0:
        top.pop(other, None)
        return
    if other in top or len(top) < top_k:
        top[other] = key
        return
    floor = min(top.values())
    if key > floor:
        del top[min(v for v, s in top.items() if s == floor)]
        top[other] = key


def cosine(dot: float, norm_a: float, norm_b: float) -> float:
    """``dot / sqrt(norm_a * norm_b)``, 0.0 when either norm is not positive."""
    if norm_a <= 0.0 or norm_b <= 0.0:
        return 0.0
    return dot / math.sqrt(norm_a * norm_b)


class UserCF:
    """Online user-based CF: ``learn_one`` per event, ``neighbors`` / ``score`` / ``rank`` for queries.

    ``top_k``: neighbours kept per user (>= 1). ``max_raters``: most recent raters of an item that a new
    event is paired with (0 = unlimited, exact). Per event the work is O(max_raters · top_k).
    """

    def __init__(self, top_k: int = 20, max_raters: int = 50) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k {top_k!r} must be a positive integer")
        if isinstance(max_raters, bool) or not isinstance(max_raters, int) or max_raters < 0:
            raise ValueError(f"max_raters {max_raters!r} must be a non-negative integer (0 = unlimited)")
        self.top_k = top_k
        self.max_raters = max_raters
        self.users: dict[str, UserState] = {}
        self.items: dict[str, Raters] = {}

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
        delta = w - w_old
        if delta == 0.0:
            return
        for v, w_vi in partners:
            vs = self.users[v]
            dot = add_dot(us, v, delta * w_vi)
            add_dot(vs, user, delta * w_vi)
            offer_neighbor(us, v, dot / math.sqrt(vs["norm"]) if dot > 0 else 0.0, self.top_k)
            offer_neighbor(vs, user, dot / math.sqrt(us["norm"]) if dot > 0 else 0.0, self.top_k)

    def similarity(self, u: str, v: str) -> float:
        """The current cosine of ``u`` and ``v`` from the maintained sums (0.0 for unknown users)."""
        us, vs = self.users.get(u), self.users.get(v)
        if us is None or vs is None:
            return 0.0
        if u == v:
            return 1.0 if us["norm"] > 0 else 0.0
        return cosine(us["dots"].get(v, 0.0), us["norm"], vs["norm"])

    def neighbors(self, user: str, k: int | None = None) -> list[tuple[str, float]]:
        """Up to ``k`` (default ``top_k``) kept neighbours with their exact current cosine, best first."""
        us = self.users.get(user)
        if us is None:
            return []
        sims = [(v, self.similarity(user, v)) for v in us["top"]]
        sims = sorted((p for p in sims if p[1] > 0), key=lambda p: (-p[1], p[0]))
        return sims[: self.top_k if k is None else k]

    def _contributions(self, user: str, k: int | None) -> dict[str, tuple[float, str, float]]:
        """item -> (Σ sim·w_vj, most contributing neighbour, its contribution) over the neighbours' items."""
        out: dict[str, tuple[float, str, float]] = {}
        for v, sim in self.neighbors(user, k):
            for item, w in self.users[v]["items"].items():
                c = sim * w
                total, best, best_c = out.get(item, (0.0, v, -1.0))
                if c > best_c or (c == best_c and v < best):
                    best, best_c = v, c
                out[item] = (total + c, best, best_c)
        return out

    def score(self, user: str, items: Iterable[str], k: int | None = None) -> dict[str, float]:
        """``Σ_{v in topK(u)} sim(u,v)·w_vj`` for each item (0.0 when no neighbour engaged it)."""
        contrib = self._contributions(user, k)
        return {item: contrib[item][0] if item in contrib else 0.0 for item in items}

    def rank(
        self, user: str, n: int, exclude: Iterable[str] | None = None, k: int | None = None
    ) -> list[tuple[str, float, str]]:
        """The ``n`` best candidates from the neighbours' items as ``(item, score, reason)``.

        ``exclude`` defaults to the items the user already engaged. The reason names the neighbour
        that contributed most to the score.
        """
        if n < 0:
            raise ValueError(f"n {n!r} must be non-negative")
        if exclude is None:
            exclude = self.users[user]["items"] if user in self.users else ()
        skip = set(exclude)
        contrib = self._contributions(user, k)
        ranked = sorted(
            ((item, total, f"liked by similar user {best}") for item, (total, best, _) in contrib.items()
             if item not in skip),
            key=lambda t: (-t[1], t[0]),
        )
        return ranked[:n]


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
