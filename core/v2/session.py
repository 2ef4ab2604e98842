"""Anonymous sessions ranked by the model core from the model the job publishes (item neighbour lists, trending,
the catalog), for ``POST /sessions/recommendations``.

One implementation: a session is ranked by :func:`core.v2.model.rank` itself, on a state composed per request of

* the **item side** of a long-lived :class:`Live` state: the published neighbour lists (``nb_*``, never dirty), the
  published trending list (``State.trend``), the catalog vectors and their search memo, the denied items;
* the **user side** that :func:`core.v2.model.learn` writes for one user who has the session's events (the negative
  feedback, the log, the item-CF history with its weights and times), learned by the same kernels in the live item
  ids into fresh small arrays; the item side they also write (co-occurrence, norms, statistics) goes to scratch
  arrays and is dropped: a session changes no shared model.

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
from core.v2.ids import IdIndex
from core.v2.settings import Settings
from core.v2.state import Pool, State
from udfs.events import EVENT_TYPES, Event

SESSION_USER = "session"
"""The user id of the session in the composed state (it shows in no output)."""
SESSION_MODES: tuple[str, ...] = ("weighted", "rrf", "borda", "itemcf", "content", "popular")
"""The modes a session can be ranked in (see the module docstring for ``learned`` and ``usercf``)."""

_TYPE_CODE = {t: c for c, t in enumerate(EVENT_TYPES)}
_SESSION_USERS = IdIndex()  # the one user of every composed state (read-only: ranking finds it)
_SESSION_USERS.encode([SESSION_USER])


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
        self._scratch: _ScratchItems | None = None
        self._side: dict[str, Any] | None = None  # the user side of the last session (reset for the next)
        self._written: dict[int, np.ndarray | None] = {}  # row -> the ids array set_neighbor_arrays wrote there
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
            self._written.pop(i, None)
            nb = list(nb or ())[:width]
            s.nb_len[i] = len(nb)
            if nb:
                s.nb_idx[i, : len(nb)] = self._encode([j for j, _ in nb])
                s.nb_sim[i, : len(nb)] = [float(v) for _, v in nb]

    def set_neighbor_arrays(self, lists: Mapping[str, tuple[np.ndarray, np.ndarray] | None]) -> None:
        """:meth:`set_neighbors` with the neighbours already encoded (:meth:`encode`) as (ids, cosines); a row that
        holds the same ids array (the very object) already is left as it is: arrays given here must not change."""
        s = self.state
        width = self.settings.top_k
        rows = self._encode(list(lists))
        written = self._written
        for i, nb in zip(rows.tolist(), lists.values(), strict=True):
            ids = None if nb is None else nb[0]
            if i in written and written[i] is ids:  # the row holds these arrays already (the caller's cache)
                continue
            written[i] = ids
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
        """The user side of a state that learned ``events`` (what :func:`core.v2.model.learn` writes of its one user),
        learned straight in the live item ids into small arrays reset for each session: the negative feedback, the log
        and the item-CF history. The item side that learning also writes (co-occurrence, norms, item statistics: the
        shared model's, not the session's) goes to scratch arrays that are reset for the next session."""
        s = self.settings
        n = len(events)
        side = self._empty_side(n)
        if n == 0:
            return side
        order = sorted(range(n), key=lambda e: (events[e].ts, events[e].event_id))  # canonical, as learn sorts
        evs = [events[e] for e in order]
        values = np.fromiter((e.weight for e in evs), dtype=np.float64, count=n)
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            p = int(np.flatnonzero(bad)[0])
            raise ValueError(f"weight {float(values[p])!r} of event {evs[p].event_id} must be a positive finite "
                             "number")
        items = self._encode([e.item_id for e in evs])
        types = np.fromiter((_TYPE_CODE[e.type] for e in evs), dtype=np.int8, count=n)
        ts = np.fromiter((e.ts for e in evs), dtype=np.int64, count=n)
        users = np.zeros(n, dtype=np.int64)
        flags = M.NEG_FLAG[types]
        negative = flags != 0
        if negative.any():
            p = side["npool"]
            p.cols, p.vals = k.learn_negative(users[negative], items[negative], flags[negative], p.ptr, p.cap, p.size,
                                              p.cols, p.vals, p.meta)
            keep = ~negative
            users, items, types, values, ts = users[keep], items[keep], types[keep], values[keep], ts[keep]
        m = len(users)
        if m == 0:
            return side
        x = self._scratch_items()
        w, w0, new = np.empty(m), np.empty(m), np.empty(m, dtype=np.uint8)
        lp = side["lpool"]
        lp.cols, lp.vals, side["lp_w"], side["lp_ts"] = k.learn_log(
            users, items, values, types, ts, s.center_ratings, M.RATE, lp.ptr, lp.cap, lp.size, lp.cols, lp.vals,
            lp.meta, side["lg_item"], side["lg_value"], side["lg_ts"], side["lg_type"], side["lg_w"],
            side["lg_rating"], side["u_rsum"], side["u_rn"], side["u_last"], x.b_sum, x.b_n, x.i_users, x.i_last,
            side["meta"], side["fmeta"], w, w0, new, side["lp_w"], side["lp_ts"])
        if "itemcf" in s.methods:
            ip = Pool()
            ip.ptr, ip.cap, ip.size = x.ptr, x.cap, x.size
            k.learn_itemcf(users, items, ts, w, w0, s.history_cap, s.row_cap, self.state.items.rank,
                           side["rc_item"], side["rc_w"], side["rc_ts"], side["rc_len"], x.norm, ip.ptr, ip.cap,
                           ip.size, ip.cols, ip.vals, ip.meta, x.dirty, x.moved)
        x.reset(items)
        return side

    def _empty_side(self, n_events: int) -> dict[str, Any]:
        """The user side of a state whose one user has learned nothing, with room for ``n_events``: the arrays of the
        previous session reset (what learning wrote, and only that: the rest is read only up to what it wrote)."""
        side = self._side
        if side is None or len(side["lg_w"]) < n_events or \
                (not self.settings.history_cap and side["rc_item"].shape[1] < n_events):
            side = self._side = _empty_side(self.settings, max(n_events, 64))
            return side
        for p in (side["lpool"], side["npool"]):
            p.cols[: p.meta[0]] = -1
            p.ptr[0] = p.cap[0] = p.size[0] = 0
            p.meta[:] = 0
        for name in ("u_rsum", "u_rn", "u_last", "rc_len", "meta"):
            side[name][:] = 0
        side["fmeta"][0] = 0.0
        return side

    def _scratch_items(self) -> _ScratchItems:
        n = len(self.state.items)
        if self._scratch is None or len(self._scratch.b_sum) < n:
            self._scratch = _ScratchItems(max(n, 16))
        return self._scratch


class _ScratchItems:
    """The item side learning a session writes and nobody reads (every entry 0 between sessions)."""

    def __init__(self, n: int) -> None:
        self.b_sum, self.b_n = np.zeros(n), np.zeros(n, dtype=np.int64)
        self.i_users, self.i_last = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        self.norm = np.zeros(n)
        self.ptr, self.cap, self.size = (np.zeros(n, dtype=np.int64) for _ in range(3))
        self.dirty, self.moved = np.zeros(n, dtype=np.uint8), np.zeros(n, dtype=np.uint8)

    def reset(self, items: np.ndarray) -> None:
        for a in (self.b_sum, self.b_n, self.i_users, self.i_last, self.norm, self.ptr, self.cap, self.size,
                  self.dirty, self.moved):
            a[items] = 0


def _empty_side(settings: Settings, n_events: int) -> dict[str, Any]:
    """The user side of a state whose one user (:data:`SESSION_USER`) has learned nothing, room for ``n_events``."""
    slots = max(n_events, 1)
    width = settings.history_cap or max(n_events, 8)
    lpool = Pool(vals=np.zeros(64, dtype=np.int64), cols=np.full(64, -1, dtype=np.int32))
    npool = Pool(vals=np.zeros(64, dtype=np.int64), cols=np.full(64, -1, dtype=np.int32))
    upool = Pool(cols=np.full(8, -1, dtype=np.int32), vals=np.zeros(8))
    for p in (lpool, npool, upool):
        p.fit(1)
    return {"users": _SESSION_USERS, "lpool": lpool, "lp_w": np.zeros(64), "lp_ts": np.zeros(64, dtype=np.int64),
            "lg_item": np.zeros(slots, dtype=np.int32), "lg_value": np.zeros(slots),
            "lg_ts": np.zeros(slots, dtype=np.int64), "lg_type": np.zeros(slots, dtype=np.int8),
            "lg_w": np.zeros(slots), "lg_rating": np.full(slots, np.nan), "npool": npool,
            "u_rsum": np.zeros(1), "u_rn": np.zeros(1, dtype=np.int64), "u_last": np.zeros(1, dtype=np.int64),
            "rc_item": np.zeros((1, width), dtype=np.int64), "rc_w": np.zeros((1, width)),
            "rc_ts": np.zeros((1, width), dtype=np.int64), "rc_len": np.zeros(1, dtype=np.int64),
            "u_norm": np.zeros(1), "upool": upool, "meta": np.zeros(4, dtype=np.int64),
            "fmeta": np.array([0.0, (settings.min_rating + settings.max_rating) / 2])}


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
