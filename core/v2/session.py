"""Anonymous sessions ranked by the model core from the model the job publishes (item neighbour lists, trending,
the catalog), for ``POST /sessions/recommendations``.

One implementation: a session is ranked by :func:`core.v2.model.rank` itself, on a state composed per request of

* the **item side** of a long-lived :class:`Live` state: the published neighbour lists (``nb_*``, never dirty), the
  published trending list (``State.trend``), the catalog vectors and their search memo, the denied items;
* the **user side** of a throwaway state that learned the session's events with :func:`core.v2.model.learn` (one
  user: the log, the item-CF history with its weights and times), its item ids mapped into the live state's.

So the scores, the fusion, the fill with trending items and the reasons (:func:`core.v2.model.render`) are the
core's, for a user whose history is the session. What a session cannot have (the semantics of its modes):

* no user-CF (an anonymous visitor has no neighbours) and no factors (no learned user row; the item rows are not
  published): ``usercf`` and ``factors`` are left out of ``methods``;
* ``learned`` ranks like ``weighted`` (its features need item statistics the job does not publish), as the core
  does before the combiner's warm-up; ``usercf`` alone is not a session mode;
* content candidates come from the whole catalog (``content_search: catalog``): the catalog order that picks the
  newest items of ``content_search: candidates`` is not published;
* the popular pool holds the published trending list (``model.trending_size`` items, scores rounded to 6 decimals).

With those settings (:func:`session_settings`) the ranking equals the core's for a user with the same events.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from core.v2 import kernels as k
from core.v2 import model as M
from core.v2.settings import Settings
from core.v2.state import Pool, State
from udfs.events import Event

SESSION_USER = "session"
"""The user id of the session in the composed state (it shows in no output)."""
SESSION_MODES: tuple[str, ...] = ("weighted", "rrf", "borda", "itemcf", "content", "popular")
"""The modes a session can be ranked in (see the module docstring for ``learned`` and ``usercf``)."""

USER_SIDE_CACHE = 256
"""Sessions whose learned user side is kept (see :meth:`Live._user_side`; about 50 kB each)."""
# the per-user fields of a State that learning the session's events writes (everything else is the item side)
_USER_FIELDS = ("users", "lg_value", "lg_ts", "lg_type", "lg_w", "lg_rating", "u_rsum", "u_rn", "u_last", "rc_w",
                "rc_ts", "rc_len", "u_norm", "upool", "meta", "fmeta", "lg_item", "rc_item", "lpool", "lp_w", "lp_ts",
                "npool")


def session_settings(settings: Settings) -> Settings:
    """The settings a session is ranked with: the job's, without user-CF, searching the whole catalog."""
    methods = tuple(m for m in settings.methods if m not in ("usercf", "factors")) or ("popular",)
    weights = {m: w for m, w in settings.fusion_weights if m in methods}
    for m in methods:
        weights.setdefault(m, 0.0)
    return settings.replace(methods=methods, fusion_weights=weights, content_search="catalog",
                            mode=session_mode(settings.mode))


def session_mode(mode: str | None) -> str:
    """The session mode of a job mode: itself when a session has it, else ``weighted``."""
    return mode if mode in SESSION_MODES else "weighted"


class SessionRanking(NamedTuple):
    items: list[tuple[str, float, str]]  # (item, score, reason), best first (those kept)
    used: list[str]  # the session's items the ranking read, in the session's order of first appearance
    ranked: int  # the length of the ranking the items were kept from


class Live:
    """The item side of the model as the job publishes it, in the core's arrays (not thread-safe: one caller)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = session_settings(settings)
        self.state = M.new_state(self.settings)
        self.catalog: dict[str, dict[str, Any]] = {}
        self._sides: dict[tuple[Any, ...], dict[str, Any]] = {}  # events -> learned user side (live item ids)
        self.trending_ids = np.zeros(0, dtype=np.int64)
        self.trending_scores = np.zeros(0)
        self._set_trend()

    # -- the published model ------------------------------------------------------------------------------------
    def set_catalog(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Replace the catalog (records as in ``udfs.catalog``); the vectors are built at once."""
        old = self.state
        self.state = M.new_state(self.settings)
        self.state.items.encode(old.items.names)  # the ids stay (the neighbour rows and trending refer to them)
        self.catalog = {str(r["item_id"]): dict(r) for r in records}
        if records:
            M.add_items(self.state, records)
        self._sync()
        n_old = len(old.items)
        self.state.nb_idx[:n_old] = old.nb_idx[:n_old]
        self.state.nb_sim[:n_old] = old.nb_sim[:n_old]
        self.state.nb_len[:n_old] = old.nb_len[:n_old]
        self.set_trending_ids(self.trending_ids, self.trending_scores)

    def set_trending(self, trending: Sequence[tuple[str, float]]) -> None:
        """The published trending list ``(item, score)``, best first."""
        ids = self._encode([i for i, _ in trending])
        self.set_trending_ids(ids, np.array([float(s) for _, s in trending], dtype=np.float64))

    def set_trending_ids(self, ids: np.ndarray, scores: np.ndarray) -> None:
        self.trending_ids, self.trending_scores = ids, scores
        self._set_trend()

    def set_neighbors(self, lists: Mapping[str, Sequence[tuple[str, float]] | None]) -> None:
        """The published neighbour lists of some items (None or []: none), truncated to ``top_k``."""
        s = self.state
        width = self.settings.top_k
        rows = self._encode(list(lists))
        for i, nb in zip(rows.tolist(), lists.values(), strict=True):
            nb = list(nb or ())[:width]
            s.nb_len[i] = len(nb)
            if nb:
                s.nb_idx[i, : len(nb)] = self._encode([j for j, _ in nb])
                s.nb_sim[i, : len(nb)] = [float(v) for _, v in nb]

    def set_neighbor_arrays(self, lists: Mapping[str, tuple[np.ndarray, np.ndarray] | None]) -> None:
        """:meth:`set_neighbors` with the neighbours already encoded (:meth:`encode`) as (ids, cosines)."""
        s = self.state
        width = self.settings.top_k
        rows = self._encode(list(lists))
        for i, nb in zip(rows.tolist(), lists.values(), strict=True):
            if nb is None:
                s.nb_len[i] = 0
                continue
            ids, sims = nb[0][:width], nb[1][:width]
            s.nb_len[i] = len(ids)
            s.nb_idx[i, : len(ids)] = ids
            s.nb_sim[i, : len(ids)] = sims

    def encode(self, names: Sequence[str]) -> np.ndarray:
        """The live ids of items (added when new)."""
        return self._encode(names)

    def known(self, item: str) -> bool:
        """Whether the catalog has the item."""
        return item in self.catalog

    def _encode(self, names: Sequence[str]) -> np.ndarray:
        n = len(self.state.items)
        ids = self.state.items.encode(names)
        if len(self.state.items) > n:
            self._sync()
        return ids

    def _sync(self) -> None:
        """Size the arrays for the known items and build the catalog arrays once (the requests only read them)."""
        s = self.state
        s.fit(0, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        s.content()
        self._set_trend()

    def _set_trend(self) -> None:
        self.state.trend = (self.state.version, self.trending_ids, self.trending_scores)

    # -- a session ------------------------------------------------------------------------------------------------
    def rank(self, events: Sequence[Event], mode: str | None = None, n: int | None = None,
             keep: Callable[[str], bool] | None = None, limit: int | None = None) -> SessionRanking:
        """The session of ``events`` (any user id; the events of one visitor) ranked in ``mode`` (default the
        settings'), top ``n`` (default ``top_n``), as :func:`core.v2.model.rank` ranks a user with these events; of
        those, the first ``limit`` (default all) that ``keep`` (default all) keeps are rendered."""
        mode = self.settings.mode if mode is None else mode
        if mode not in SESSION_MODES:
            raise ValueError(f"mode {mode!r} must be one of {', '.join(SESSION_MODES)}")
        composed = copy.copy(self.state)
        composed.__dict__.update(self._user_side(events))
        live, n_items = self.state, len(self.state.items)
        now = int(composed.meta[2])  # the session's newest event: its event-time clock
        if n_items and live.life_meta[0] <= now:  # an item of the catalog expires by then: gone for this session
            gone = live.gone.copy()
            gone[:n_items] |= live.expires[:n_items] <= now
            composed.gone = gone
        ranking = M.rank(composed, [SESSION_USER], mode, n)
        ranked = int(ranking.length[0])
        cols = list(range(ranked))
        if keep is not None:
            names = self.state.items.names
            cols = [q for q in cols if keep(names[int(ranking.item[0, q])])]
        cols = cols[:limit]
        shown = ranking._replace(item=ranking.item[:, cols], score=ranking.score[:, cols],
                                 method=ranking.method[:, cols], arg=ranking.arg[:, cols],
                                 length=np.array([len(cols)], dtype=np.int64))
        items = M.render(composed, shown)[0]
        used = list(dict.fromkeys(e.item_id for e in events))
        return SessionRanking(items, used, ranked)

    def _user_side(self, events: Sequence[Event]) -> dict[str, Any]:
        """The user side of a state that learned ``events`` (:func:`core.v2.model.learn`), item ids mapped to the
        live ones; kept for the last :data:`USER_SIDE_CACHE` sessions (a visitor asking again, or with other
        filters, is not learned again; a ranking does not change it)."""
        key = tuple((e.item_id, e.type, e.weight, e.ts) for e in events)
        side = self._sides.get(key)
        if side is not None:
            return side
        own = State(self.settings)
        if events:
            M.learn(own, M.Batch.of([e._replace(user_id=SESSION_USER) for e in events]))
        remap = self._encode(own.items.names) if len(own.items) else np.zeros(1, dtype=np.int64)
        side = {name: getattr(own, name) for name in _USER_FIELDS}
        side["lg_item"] = remap[own.lg_item].astype(own.lg_item.dtype)
        side["rc_item"] = remap[own.rc_item]
        # the log pool's tables hash the item ids: rebuilt with the live ids, each slot's weight and time beside it
        pool = _remapped(own.lpool, len(own.users), remap)
        cols, vals = pool.cols, pool.vals
        filled = cols != -1
        lp_w = np.zeros(len(cols))
        lp_ts = np.zeros(len(cols), dtype=np.int64)
        lp_w[filled] = own.lg_w[vals[filled]]
        lp_ts[filled] = own.lg_ts[vals[filled]]
        # the negative feedback (hidden, disliked items) likewise
        side.update(lpool=pool, lp_w=lp_w, lp_ts=lp_ts, npool=_remapped(own.npool, len(own.users), remap))
        if len(self._sides) >= USER_SIDE_CACHE:
            del self._sides[next(iter(self._sides))]
        self._sides[key] = side
        return side


def _remapped(pool: Pool, rows: int, remap: np.ndarray) -> Pool:
    """A pool of (row -> item id: integer value) tables with the item ids mapped through ``remap``."""
    out = Pool(vals=np.zeros(1024, dtype=np.int64))
    out.fit(max(rows, 1))
    cols, vals = out.cols, out.vals
    for u in range(rows):
        for x in range(int(pool.ptr[u]), int(pool.ptr[u] + pool.cap[u])):
            if pool.cols[x] != -1:
                cols, vals = k.row_add(u, int(remap[pool.cols[x]]), int(pool.vals[x]), out.ptr, out.cap, out.size,
                                       cols, vals, out.meta, 0)
    out.cols, out.vals = cols, vals
    return out


def published_trending(state: State, size: int) -> list[tuple[str, float]]:
    """The trending list the job publishes (``rec:trending``): the first ``size`` (``model.trending_size``: the
    popular candidates and the fill of a session come from it), scores rounded as recommendation scores are
    (``udfs.serde.recs_message``: they are decayed sums)."""
    items, scores = M.trending(state)
    names = state.items.names
    return [(names[i], round(float(s), 6)) for i, s in zip(items[:size].tolist(), scores[:size].tolist(), strict=True)]


def warm_up(settings: Settings) -> None:
    """Compile (or load from numba's cache) every kernel a session ranking runs, on a tiny model."""
    live = Live(settings)
    live.set_catalog([{"item_id": "w1", "title": "Warm Up", "year": 2000, "genres": ["Comedy"]},
                      {"item_id": "w2", "title": "Warm Down", "year": 2001, "genres": ["Comedy", "Drama"]},
                      {"item_id": "w3", "title": "Cold", "year": 1990, "genres": ["Drama"]}])
    live.set_trending([("w3", 2.0), ("w2", 1.0)])
    live.set_neighbors({"w1": [("w2", 0.5), ("w3", 0.25)], "w2": [("w1", 0.5)]})
    events = [Event("1", "v", "w1", "view", 1.0, 1000), Event("2", "v", "w2", "rate", 4.0, 2000)]
    for mode in SESSION_MODES:
        live.rank(events, mode, 3)
        live.rank(events[:1], mode, 3)
