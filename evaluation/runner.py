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

from core.metrics import intra_list_diversity
from core.v2 import model as M
from core.v2.settings import Settings
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
"""The diversity task: each list is picked by MMR from the mode's best this many."""
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


class Diversified:
    """A prequential arm that ranks ``pool`` deep and picks ``n`` by MMR with ``lam`` (:func:`core.v2.model.diversify`,
    content similarity); the arms of one diversity task share ``model``, and only the arm with ``learns`` feeds it
    events. Records each list's intra-list diversity (genre Jaccard, :func:`core.metrics.intra_list_diversity`, as in
    the beyond-accuracy table) and the items it recommended."""

    def __init__(self, model: Model, lam: float, genres: Mapping[str, Collection[str]], learns: bool,
                 pool: int = MMR_POOL) -> None:
        self.model, self.lam, self.genres, self.learns, self.pool = model, lam, genres, learns, pool
        self.ild_sum = 0.0
        self.lists = 0
        self.items: set[str] = set()

    def learn_one(self, event: Event) -> None:
        if self.learns:
            self.model.learn_one(event)

    def rank(self, user: str, n: int | None = None, mode: str | None = None) -> list[tuple[str, float, str]]:
        state = self.model.state
        n = state.settings.top_n if n is None else n
        deep = M.rank(state, [user], mode, max(n, self.pool))
        row = M.render(state, M.diversify(state, deep, n, self.lam))[0]
        ids = [item for item, _, _ in row]
        self.ild_sum += intra_list_diversity(ids, self.genres)
        self.lists += 1
        self.items.update(ids)
        return row


def lambda_label(lam: float) -> str:
    return f"λ={lam:g}"


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


def _arms(model: Model) -> dict[str, tuple[Model, str]]:
    """Every mode of the model (:data:`core.v2.model.FUSION`), in table order."""
    return {name: (model, name) for name in (*ARMS, *[m for m in M.FUSION if m not in ARMS])}


def run_task(task: Task, opts: Options, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run one task and return its summary (plain data, picklable)."""
    t0 = time.perf_counter()
    events, catalog = load_data(opts)
    out: dict[str, Any] = {"name": task.name, "kind": task.kind, "pid": os.getpid()}
    if task.kind in OFFLINE_KINDS:
        model = build_model(opts, catalog, exclude_all=True)
        split = split_for(task.kind, events, opts)
        ores = offline(_arms(model), split.train, split.test, k=opts.k, progress=progress)
        out.update(_offline_summary(ores, split.train, split.test, catalog))
    elif task.kind == "prequential":
        model = build_model(opts, catalog)
        res = prequential(_arms(model), events, k=opts.k, sample_every=opts.sample_every, window=opts.window,
                          seed=opts.seed, progress=progress)
        out.update(_prequential_summary(res))
        out["combiner"] = {"weights": M.combiner(model.state), "examples": int(model.state.comb_n[0])}
        out["model"] = _model_settings(model.state.settings)
    elif task.kind == "diversity":
        model = build_model(opts, catalog)
        genres = {r["item_id"]: r["genres"] for r in catalog}
        lambdas = [float(x) for x in task.variant["lambdas"]]
        mode = model.state.settings.mode
        arms = {lambda_label(lam): Diversified(model, lam, genres, learns=i == 0) for i, lam in enumerate(lambdas)}
        res = prequential({name: (arm, mode) for name, arm in arms.items()}, events, k=opts.k,
                          sample_every=opts.sample_every, window=opts.window, seed=opts.seed, progress=progress)
        out.update(_prequential_summary(res))
        out.update({
            "mode": mode, "lambdas": lambdas, "pool": MMR_POOL,
            "diversity": {name: {"ILD": arm.ild_sum / max(arm.lists, 1),
                                 "coverage": len(arm.items) / max(len(catalog), 1)} for name, arm in arms.items()},
        })
    elif task.kind == "dislike":
        # the same scored events in both runs: the chosen low ratings are learned (as ratings, or as dislikes) and
        # never scored
        chosen = low_ratings(events, float(task.variant["share"]), opts.seed)
        model = build_model(opts, catalog)
        stream = as_dislikes(events, chosen) if task.variant["as_dislike"] else list(events)
        res = prequential(_arms(model), stream, k=opts.k, sample_every=opts.sample_every, window=opts.window,
                          seed=opts.seed, progress=progress, unscored=chosen)
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
