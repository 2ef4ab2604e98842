"""The evaluation's tasks: each builds its models from the config, runs one protocol and returns a summary.

Tasks are plain top-level functions of a picklable :class:`Task`, so the CLI can run them in worker
processes. Progress is reported through a callback (events processed), which the CLI turns into tqdm bars.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.metrics import intra_list_diversity
from core.v2 import diversity as div
from core.v2 import model as M
from core.v2.settings import METHODS, Settings
from evaluation.protocols import (
    OFFLINE_METRICS,
    PREQUENTIAL_METRICS,
    Progress,
    Split,
    beyond_accuracy,
    leave_last_out,
    offline,
    prequential,
    random_split,
    user_temporal_split,
)
from ingest.movielens import load_catalog, load_events
from udfs.events import EVENT_TYPES, Event

logger = logging.getLogger(__name__)

#: The arms of the main tables (every mode of :data:`core.v2.model.FUSION`), in display order: single methods first,
#: then the fusions.
ARMS: tuple[str, ...] = ("popular", "itemcf", "usercf", "content", "factors", "weighted", "rrf", "borda", "learned")
FUSION_ARMS: tuple[str, ...] = ("weighted", "rrf", "borda", "learned")
OFFLINE_KINDS: tuple[str, ...] = ("random", "temporal", "loo")
DISLIKE_MAX_RATING = 2.0
"""The dislike protocol turns a share of the ratings at or below this into ``dislike`` events."""
"""The offline protocols: random per-user split, temporal per-user split, leave-last-one-out."""
MMR_POOL = 50
"""The diversity task's default pool: each list is picked by MMR from the mode's best this many."""
LEARN_CHUNK = 5000
"""Events per ``learn`` call when an offline protocol learns its training part (the state does not depend on it)."""


@dataclass(frozen=True)
class Options:
    """What every task needs to know (built from the command line)."""

    model_cfg: Mapping[str, Any]
    params: Mapping[str, Any] = field(default_factory=dict)  # Settings fields overriding the config
    data_dir: str | None = None
    limit: int | None = None
    k: int = 10
    sample_every: int = 10
    window: int = 5000
    seed: int = 0
    random_train_frac: float = 0.75  # random split: each user's share of events in training
    temporal_test_frac: float = 0.2  # temporal split: each user's last share of events (by time) in test


class Model:
    """The model (:mod:`core.v2.model`, public functions only) behind the protocols: ``learn_one`` / ``rank`` for the
    prequential replay (each event is a batch), ``learn_all`` / ``top`` for the offline protocols. Learning trains
    the combiner when ``train_combiner`` (recommend-then-learn, in one process)."""

    def __init__(self, settings: Settings, catalog: list[dict[str, Any]]) -> None:
        self.state = M.new_state(settings)
        M.add_items(self.state, catalog)

    def learn_one(self, event: Event) -> None:
        M.learn(self.state, M.Batch.of([event]), train=self.state.settings.train_combiner)

    def learn_all(self, events: Sequence[Event], progress: Progress | None = None) -> None:
        """Learn ``events`` in canonical order (time, event id), :data:`LEARN_CHUNK` at a time: the same state as
        learning them one by one."""
        ordered = sorted(events, key=lambda e: (e.ts, e.event_id))
        for start in range(0, len(ordered), LEARN_CHUNK):
            chunk = ordered[start:start + LEARN_CHUNK]
            M.learn(self.state, M.Batch.of(chunk), train=self.state.settings.train_combiner)
            if progress is not None:
                progress(len(chunk))

    def top(self, users: Sequence[str], n: int, mode: str) -> list[list[str]]:
        """Each user's top ``n`` item ids in ``mode``, ranked as one batch."""
        ranking = M.rank(self.state, list(users), mode, n)
        return [[item for item, _, _ in row] for row in M.render(self.state, ranking)]

    def rank(self, user: str, n: int | None = None, mode: str | None = None) -> list[tuple[str, float, str]]:
        return M.render(self.state, M.rank(self.state, [user], mode, n))[0]


class DeepLists:
    """The mode's best ``depth`` of the user being scored, ranked once for every arm of a diversity task (the arms
    rank the same user between two learned events); :meth:`learn_one` feeds the shared model."""

    def __init__(self, model: Model, depth: int) -> None:
        self.model, self.depth = model, depth
        self.learned = 0
        self._key: tuple[str, int, str | None] | None = None
        self._deep: M.Ranking | None = None

    def learn_one(self, event: Event) -> None:
        self.model.learn_one(event)
        self.learned += 1

    def get(self, user: str, mode: str | None, pool: int) -> M.Ranking:
        """The user's best ``pool`` (<= depth) in ``mode``: the first ``pool`` of the deep list."""
        key = (user, self.learned, mode)
        if self._key != key or self._deep is None:
            self._deep, self._key = M.rank(self.model.state, [user], mode, self.depth), key
        d = self._deep
        return M.Ranking(d.users, d.item[:, :pool], d.score[:, :pool], d.method[:, :pool], d.arg[:, :pool],
                         np.minimum(d.length, pool))


@dataclass(frozen=True)
class Yardsticks:
    """What the lists' intra-list diversity is measured on: the genres (Jaccard distance), the model's content
    vectors (cosine distance) and each item's users in every event of the run (co-occurrence cosine distance,
    :func:`core.v2.diversity.cooccurrence_vectors`: a fixed yardstick, not the model's decayed state)."""

    genres: Mapping[str, Collection[str]]
    cf_row: Mapping[str, int]  # item id -> row of cf
    cf: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

    @staticmethod
    def of(events: Sequence[Event], catalog: Sequence[Mapping[str, Any]]) -> Yardsticks:
        rows: dict[str, int] = {r["item_id"]: i for i, r in enumerate(catalog)}
        users: dict[str, int] = {}
        item = [rows.setdefault(e.item_id, len(rows)) for e in events]
        user = [users.setdefault(e.user_id, len(users)) for e in events]
        return Yardsticks({r["item_id"]: r["genres"] for r in catalog}, rows,
                          div.cooccurrence_vectors(np.array(item, dtype=np.int64), np.array(user, dtype=np.int64),
                                                   len(rows)))


ORACLE = "oracle"
"""The diversity task's evaluation-only MMR similarity: the co-occurrence yardstick itself (it sees every event of
the run, future ones included), an upper bound of what MMR can gain on the headline intra-list diversity."""
ILD_KINDS: tuple[str, ...] = ("cf", "content", "genre")
"""The intra-list diversities a diversity task measures, the headline (co-occurrence cosine) first."""


class Diversified:
    """A prequential arm that picks ``n`` by MMR with ``lam`` and similarity ``by``
    (:func:`core.v2.model.diversify`) from the mode's best ``pool`` (:class:`DeepLists`, shared by the arms of one
    diversity task; only the arm with ``learns`` feeds it events). Records each list's intra-list diversity on every
    yardstick and the items it recommended."""

    def __init__(self, deep: DeepLists, lam: float, by: str, pool: int, yard: Yardsticks, learns: bool) -> None:
        self.deep, self.lam, self.by, self.pool, self.yard, self.learns = deep, lam, by, pool, yard, learns
        self.ild_sum = dict.fromkeys(ILD_KINDS, 0.0)
        self.lists = 0
        self.items: set[str] = set()

    def learn_one(self, event: Event) -> None:
        if self.learns:
            self.deep.learn_one(event)

    def rank(self, user: str, n: int | None = None, mode: str | None = None) -> list[tuple[str, float, str]]:
        state = self.deep.model.state
        n = state.settings.top_n if n is None else n
        deep = self.deep.get(user, mode, max(n, self.pool))
        nb = (state.nb_idx, state.nb_sim, state.nb_len)
        if self.by == ORACLE:
            m = int(deep.length[0])
            rows = np.array([self.yard.cf_row.get(state.items.names[i], -1) for i in deep.item[0, :m]],
                            dtype=np.int64)
            if (rows < 0).any():
                raise ValueError("the oracle similarity needs every candidate in the catalog or the events")
            pos = div.mmr(rows, deep.score[0, :m], n, self.lam, div.CONTENT, *self.yard.cf, *nb)
            picked = deep._replace(item=deep.item[:, pos], score=deep.score[:, pos], method=deep.method[:, pos],
                                   arg=deep.arg[:, pos], length=np.array([len(pos)], dtype=np.int64))
        else:
            picked = M.diversify(state, deep, n, self.lam, self.by)
        row = M.render(state, picked)[0]
        ids = [item for item, _, _ in row]
        dense = picked.item[0, : picked.length[0]]
        content = state.content()
        cf_rows = np.array([self.yard.cf_row.get(i, -1) for i in ids], dtype=np.int64)
        cf_rows = cf_rows[cf_rows >= 0]  # (an item outside the catalog and the events is never recommended)
        self.ild_sum["cf"] += div.intra_list_diversity(cf_rows, div.CONTENT, *self.yard.cf, *nb)
        vptr, vcol, vval, vnorm = content[1], content[2], content[3], content[4]
        self.ild_sum["content"] += div.intra_list_diversity(dense, div.CONTENT, vptr, vcol, vval, vnorm, *nb)
        self.ild_sum["genre"] += intra_list_diversity(ids, self.yard.genres)
        self.lists += 1
        self.items.update(ids)
        return row


def lambda_label(lam: float, by: str = "content", pool: int = MMR_POOL, plain: bool = True) -> str:
    """An arm's name: ``λ=0.5``, or ``λ=0.5 itemcf/100`` when the task varies the similarity or the pool."""
    return f"λ={lam:g}" if plain or lam == 0 else f"λ={lam:g} {by}/{pool}"


def diversity_arms(variant: Mapping[str, Any]) -> list[tuple[str, float, str, int]]:
    """``(name, λ, similarity, pool)`` of every arm of a diversity task: λ = 0 once (the mode's own list, the
    reference), then each λ > 0 with each similarity and pool."""
    lambdas = [float(x) for x in variant["lambdas"]]
    sims = tuple(variant.get("similarities", ("content",)))
    pools = tuple(int(x) for x in variant.get("pools", (MMR_POOL,)))
    plain = len(sims) == 1 and len(pools) == 1
    arms: dict[str, tuple[str, float, str, int]] = {}
    for by in sims:
        for pool in pools:
            for lam in lambdas:
                name = lambda_label(lam, by, pool, plain)
                arms.setdefault(name, (name, lam, by, pool))
    return list(arms.values())


def build_model(opts: Options, catalog: list[dict[str, Any]], exclude_all: bool = False, **extra: Any) -> Model:
    """A :class:`Model` from the config, the ``--param`` overrides and ``extra``, catalog loaded. ``exclude_all``:
    rank with ``exclude_types`` = every event type, so a user's list never holds an item they engaged (the offline
    protocols' exclusion rule)."""
    params = {**opts.params, **extra}
    params.setdefault("seed", opts.seed)
    if exclude_all:
        params["exclude_types"] = EVENT_TYPES
    return Model(Settings.from_config(opts.model_cfg, **params), catalog)


def split_for(kind: str, events: Sequence[Event], opts: Options) -> Split:
    """The split of an offline protocol (one of :data:`OFFLINE_KINDS`)."""
    if kind == "random":
        return random_split(events, opts.random_train_frac, seed=opts.seed)
    if kind == "temporal":
        return user_temporal_split(events, opts.temporal_test_frac)
    if kind == "loo":
        return leave_last_out(events)
    raise ValueError(f"offline protocol {kind!r} must be one of {', '.join(OFFLINE_KINDS)}")


@dataclass(frozen=True)
class BoundRow:
    """One row of the bounds table: which bound it varies, to which value (several rows may share a task)."""

    label: str  # e.g. "usercf max_raters=20"
    bound: str  # the config key, e.g. "model.hybrid.usercf_max_raters"
    value: int  # 0 = unlimited (exact)
    order: int  # position in the table


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "prequential", one of OFFLINE_KINDS, "diversity", "bounds" or "dislike"
    total: int  # progress units (events) for the bar
    variant: Mapping[str, Any] = field(default_factory=dict)  # bounds: model arguments; diversity: {"lambdas": [...]};
    # dislike: {"share", "as_dislike"}
    method: str = "itemcf"  # bounds: the one candidate generator kept (and ranked with)
    rows: tuple[BoundRow, ...] = ()  # bounds: the table rows this run fills


def load_data(opts: Options) -> tuple[list[Event], list[dict[str, Any]]]:
    events = load_events(opts.data_dir, limit=opts.limit)
    catalog = load_catalog(opts.data_dir)
    return events, catalog


def low_ratings(events: Sequence[Event], share: float, seed: int = 0) -> set[str]:
    """The ids of a seeded ``share`` of the ratings ``<= DISLIKE_MAX_RATING`` (each drawn by (seed, event id) alone,
    so a larger share holds a smaller one's events)."""
    if not 0 < share <= 1:
        raise ValueError(f"dislike share {share!r} must be in (0, 1]")
    cut = share * 2**32
    return {e.event_id for e in events if e.type == "rate" and e.weight <= DISLIKE_MAX_RATING
            and zlib.crc32(f"{seed}:{e.event_id}".encode()) < cut}


def as_dislikes(events: Sequence[Event], ids: set[str]) -> list[Event]:
    """``events`` with those of ``ids`` sent as ``dislike`` (weight 1) instead."""
    return [e._replace(type="dislike", weight=1.0) if e.event_id in ids else e for e in events]


def _arms(model: Model, opts: Options, catalog: list[dict[str, Any]],
          exclude_all: bool = False) -> dict[str, tuple[Model, str]]:
    """Every mode of the model (:data:`core.v2.model.FUSION`), in table order. A method the config leaves out
    (``factors`` by default) is ranked by a model of its own that learns it, so its column is the method's."""
    kept = model.state.settings.methods
    alone = {m: build_model(opts, catalog, exclude_all, methods=(m,), train_combiner=False)
             for m in METHODS if m not in kept}
    return {name: (alone.get(name, model), name) for name in (*ARMS, *[m for m in M.FUSION if m not in ARMS])}


def run_task(task: Task, opts: Options, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run one task and return its summary (plain data, picklable)."""
    t0 = time.perf_counter()
    events, catalog = load_data(opts)
    out: dict[str, Any] = {"name": task.name, "kind": task.kind, "pid": os.getpid()}
    if task.kind in OFFLINE_KINDS:
        model = build_model(opts, catalog, exclude_all=True)
        split = split_for(task.kind, events, opts)
        ores = offline(_arms(model, opts, catalog, exclude_all=True), split.train, split.test, k=opts.k,
                       progress=progress)
        out.update(_offline_summary(ores, split.train, split.test, catalog))
    elif task.kind == "prequential":
        model = build_model(opts, catalog)
        res = prequential(_arms(model, opts, catalog), events, k=opts.k, sample_every=opts.sample_every,
                          window=opts.window, seed=opts.seed, progress=progress)
        out.update(_prequential_summary(res))
        out["combiner"] = {"weights": M.combiner(model.state), "examples": int(model.state.comb_n[0])}
        out["model"] = _model_settings(model.state.settings)
    elif task.kind == "diversity":
        model = build_model(opts, catalog, diversity_lambda=0.0)  # the arms re-rank; the mode's lists stay plain
        mode = model.state.settings.mode
        spec = diversity_arms(task.variant)
        deep = DeepLists(model, max(pool for _, _, _, pool in spec))
        yard = Yardsticks.of(events, catalog)
        arms = {name: Diversified(deep, lam, by, pool, yard, learns=i == 0)
                for i, (name, lam, by, pool) in enumerate(spec)}
        res = prequential({name: (arm, mode) for name, arm in arms.items()}, events, k=opts.k,
                          sample_every=opts.sample_every, window=opts.window, seed=opts.seed, progress=progress)
        out.update(_prequential_summary(res))
        out.update({
            "mode": mode, "lambdas": [lam for _, lam, _, _ in spec], "headline": ILD_KINDS[0],
            "arms": {name: {"lambda": lam, "similarity": by, "pool": pool} for name, lam, by, pool in spec},
            "diversity": {name: {**{f"ILD_{kind}": arm.ild_sum[kind] / max(arm.lists, 1) for kind in ILD_KINDS},
                                 "coverage": len(arm.items) / max(len(catalog), 1)} for name, arm in arms.items()},
        })
    elif task.kind == "dislike":
        # the same scored events in both runs: the chosen low ratings are learned (as ratings, or as dislikes) and
        # never scored
        chosen = low_ratings(events, float(task.variant["share"]), opts.seed)
        model = build_model(opts, catalog)
        stream = as_dislikes(events, chosen) if task.variant["as_dislike"] else list(events)
        res = prequential(_arms(model, opts, catalog), stream, k=opts.k, sample_every=opts.sample_every,
                          window=opts.window, seed=opts.seed, progress=progress, unscored=chosen)
        out.update(_prequential_summary(res))
        out["variant"] = {**task.variant, "n_chosen": len(chosen),
                          "n_low": sum(1 for e in events if e.type == "rate" and e.weight <= DISLIKE_MAX_RATING)}
    elif task.kind == "bounds":
        variant = dict(task.variant)
        method = task.method
        if method not in ("itemcf", "usercf"):
            raise ValueError(f"bounds task {task.name!r}: method {method!r} must be itemcf or usercf")
        model = build_model(opts, catalog, methods=(method,), train_combiner=False, **variant)
        res = prequential({method: (model, method)}, events, k=opts.k, sample_every=opts.sample_every,
                          window=opts.window, seed=opts.seed, progress=progress)
        out.update(_prequential_summary(res))
        state, s = model.state, model.state.settings
        if method == "itemcf":  # co-occurrence entries; recent items kept over all users
            pool, kept = state.ipool, int(state.rc_len[: len(state.users)].sum())
        else:  # user-user dot products; raters kept over all items
            pool, kept = state.upool, int(state.ra_len[: len(state.items)].sum())
        out.update({
            "method": method,
            "variant": variant,
            "rows": [asdict(r) for r in task.rows] or [asdict(BoundRow(task.name, "", 0, 0))],
            "learn_us": 1e6 * res.learn_s / max(res.n_events, 1),
            "pairs": pool.entries(),
            "pruned": int(pool.meta[1]),
            "kept": kept,
            "half_life_s": s.half_life_s,
            "settings": {"history_cap": s.history_cap, "row_cap": s.row_cap,
                         "usercf_max_raters": s.usercf_max_raters, "usercf_row_cap": s.usercf_row_cap},
        })
    else:
        raise ValueError(f"task kind {task.kind!r} must be prequential, {', '.join(OFFLINE_KINDS)}, diversity, "
                         "bounds or dislike")
    out["seconds"] = time.perf_counter() - t0
    logger.info("task %s done in %.1f s", task.name, out["seconds"])
    return out


def _offline_summary(ores: Any, train: list[Event], test: list[Event],
                     catalog: list[dict[str, Any]]) -> dict[str, Any]:
    genres = {r["item_id"]: r["genres"] for r in catalog}
    items = [r["item_id"] for r in catalog]
    return {
        "n_train": len(train), "n_test": len(test), "n_users": ores.n_users, "n_cold": ores.n_cold,
        "n_no_relevant": ores.n_no_relevant, "learn_s": ores.learn_s,
        "metrics": {a: {m: ores.mean(a, m) for m in OFFLINE_METRICS} for a in ores.arms},
        "rank_ms": {a: 1000 * ores.rank_s[a] / max(ores.n_users, 1) for a in ores.arms},
        "beyond": {a: vars(beyond_accuracy(ores.lists[a], train, items, genres)) for a in ores.arms},
    }


def _prequential_summary(res: Any) -> dict[str, Any]:
    return {
        "n_events": res.n_events, "n_eligible": res.n_eligible, "n_scored": res.n_scored,
        "n_new_user": res.n_new_user, "n_repeat": res.n_repeat, "sample_every": res.sample_every,
        "window": res.window, "learn_s": res.learn_s,
        "metrics": {a: {m: res.mean(a, m) for m in PREQUENTIAL_METRICS} for a in res.arms},
        "rank_ms": {a: 1000 * res.rank_s[a] / max(res.n_scored, 1) for a in res.arms},
        "curves": {a: res.curve(a) for a in res.arms},
        "hits": {a: bytes(res.hits[a]) for a in res.arms},
    }


def _model_settings(s: Settings) -> dict[str, Any]:
    return {
        "history_cap": s.history_cap, "top_k": s.top_k, "candidate_pool": s.candidate_pool,
        "half_life_s": s.half_life_s, "trending_half_life_s": s.trending_half_life_s,
        "fusion_weights": dict(s.fusion_weights), "cold_start_items": s.cold_start_items,
        "combiner_sample": s.combiner_sample, "combiner_lr": s.combiner_lr, "n_neg": s.n_neg,
        "refresh_on_norms": s.refresh_on_norms, "rrf_k": s.rrf_k, "center_ratings": s.center_ratings,
    }
