"""The evaluation's tasks: each builds its models from the config, runs one protocol and returns a summary.

Tasks are plain top-level functions of a picklable :class:`Task`, so the CLI can run them in worker
processes. Progress is reported through a callback (events processed), which the CLI turns into tqdm bars.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from core.hybrid import HybridRecommender
from core.v2 import model as array_model
from core.v2.settings import Settings
from evaluation.protocols import (
    OFFLINE_METRICS,
    PREQUENTIAL_METRICS,
    Arm,
    BatchArm,
    Progress,
    Recommender,
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

#: The arms of the main tables, in display order: single methods first, then the fusions.
ARMS: tuple[str, ...] = ("popular", "itemcf", "usercf", "content", "weighted", "rrf", "borda", "learned")
FUSION_ARMS: tuple[str, ...] = ("weighted", "rrf", "borda", "learned")
CORES: tuple[str, ...] = ("array", "dict")
"""The model implementations: ``array`` (core.v2) or ``dict`` (core.hybrid.HybridRecommender)."""
OFFLINE_KINDS: tuple[str, ...] = ("random", "temporal", "loo")
"""The offline protocols (array core only): random per-user split, temporal per-user split, leave-last-one-out."""
LEARN_CHUNK = 5000
"""Events per ``learn`` call when an offline protocol learns its training part (the state does not depend on it)."""


@dataclass(frozen=True)
class Options:
    """What every task needs to know (built from the command line)."""

    model_cfg: Mapping[str, Any]
    params: Mapping[str, Any] = field(default_factory=dict)  # HybridRecommender keyword overrides
    data_dir: str | None = None
    limit: int | None = None
    k: int = 10
    sample_every: int = 10
    window: int = 5000
    seed: int = 0
    random_train_frac: float = 0.75  # random split: each user's share of events in training
    temporal_test_frac: float = 0.2  # temporal split: each user's last share of events (by time) in test
    core: str = "array"  # one of CORES


class ArrayModel:
    """The array core (:mod:`core.v2.model`, public functions only) behind the protocols: ``learn_one`` / ``rank`` for
    the prequential replay (each event is a batch), ``learn_all`` / ``top`` for the offline protocols. Learning trains
    the combiner when ``train_combiner``, as the dict model does in one process."""

    def __init__(self, settings: Settings, catalog: list[dict[str, Any]]) -> None:
        self.state = array_model.new_state(settings)
        array_model.add_items(self.state, catalog)

    def learn_one(self, event: Event) -> None:
        array_model.learn(self.state, array_model.Batch.of([event]), train=self.state.settings.train_combiner)

    def learn_all(self, events: Sequence[Event], progress: Progress | None = None) -> None:
        """Learn ``events`` in canonical order (time, event id), :data:`LEARN_CHUNK` at a time: the same state as
        learning them one by one."""
        ordered = sorted(events, key=lambda e: (e.ts, e.event_id))
        for start in range(0, len(ordered), LEARN_CHUNK):
            chunk = ordered[start:start + LEARN_CHUNK]
            array_model.learn(self.state, array_model.Batch.of(chunk), train=self.state.settings.train_combiner)
            if progress is not None:
                progress(len(chunk))

    def top(self, users: Sequence[str], n: int, mode: str) -> list[list[str]]:
        """Each user's top ``n`` item ids in ``mode``, ranked as one batch."""
        ranking = array_model.rank(self.state, list(users), mode, n)
        return [[item for item, _, _ in row] for row in array_model.render(self.state, ranking)]

    def rank(self, user: str, n: int | None = None, mode: str | None = None,
             exclude: Iterable[str] = ()) -> list[tuple[str, float, str]]:
        if tuple(exclude):
            raise ValueError("the array core ranks without an exclude list")
        return array_model.render(self.state, array_model.rank(self.state, [user], mode, n))[0]


def build_array_model(opts: Options, catalog: list[dict[str, Any]], exclude_all: bool = False) -> ArrayModel:
    """An :class:`ArrayModel` from the config and the ``--param`` overrides (``refresh_events`` is not a setting of
    the array core: its lists are always current), catalog loaded. ``exclude_all``: rank with ``exclude_types`` =
    every event type, so a user's list never holds an item they engaged (the offline protocols' exclusion rule)."""
    params = {k: v for k, v in opts.params.items() if k != "refresh_events"}
    params.setdefault("seed", opts.seed)
    if exclude_all:
        params["exclude_types"] = EVENT_TYPES
    return ArrayModel(Settings.from_config(opts.model_cfg, **params), catalog)


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
    kind: str  # "prequential", one of OFFLINE_KINDS, or "bounds"
    total: int  # progress units (events) for the bar
    variant: Mapping[str, Any] = field(default_factory=dict)  # bounds: model arguments of this run
    method: str = "itemcf"  # bounds: the one candidate generator kept (and ranked with)
    rows: tuple[BoundRow, ...] = ()  # bounds: the table rows this run fills


def load_data(opts: Options) -> tuple[list[Event], list[dict[str, Any]]]:
    events = load_events(opts.data_dir, limit=opts.limit)
    catalog = load_catalog(opts.data_dir)
    return events, catalog


def build_model(opts: Options, catalog: list[dict[str, Any]], **extra: Any) -> HybridRecommender:
    """A :class:`HybridRecommender` from the config, the ``--param`` overrides and ``extra``, catalog loaded."""
    params = {**opts.params, **extra}
    if "seed" not in params:
        params["seed"] = opts.seed
    model = HybridRecommender.from_config(opts.model_cfg, **params)
    for record in catalog:
        model.add_item(record)
    return model


def _arms(model: Recommender, names: tuple[str, ...] = ARMS) -> dict[str, Arm]:
    if isinstance(model, ArrayModel):
        names = tuple(n for n in names if n in array_model.FUSION)
    return {name: (model, name) for name in names}


def _batch_arms(model: ArrayModel) -> dict[str, BatchArm]:
    """Every mode of the array core (:data:`core.v2.model.FUSION`), in table order."""
    return {name: (model, name) for name in (*[a for a in ARMS if a in array_model.FUSION],
                                             *[m for m in array_model.FUSION if m not in ARMS])}


def run_task(task: Task, opts: Options, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run one task and return its summary (plain data, picklable)."""
    t0 = time.perf_counter()
    events, catalog = load_data(opts)
    out: dict[str, Any] = {"name": task.name, "kind": task.kind, "pid": os.getpid()}
    if task.kind in OFFLINE_KINDS:
        if opts.core != "array":
            raise ValueError(f"task {task.name!r}: the offline protocols ({', '.join(OFFLINE_KINDS)}) run on the "
                             f"array core, not {opts.core!r}")
        array = build_array_model(opts, catalog, exclude_all=True)
        split = split_for(task.kind, events, opts)
        ores = offline(_batch_arms(array), split.train, split.test, k=opts.k, progress=progress)
        out.update(_offline_summary(ores, split.train, split.test, catalog))
    elif task.kind == "prequential" and opts.core == "array":
        array = build_array_model(opts, catalog)
        pres = prequential(_arms(array), events, k=opts.k, sample_every=opts.sample_every, window=opts.window,
                           seed=opts.seed, progress=progress)
        out.update(_prequential_summary(pres))
        out["model"] = {"core": "array", **{k: v for k, v in asdict(array.state.settings).items()
                                            if k in ("history_cap", "top_k", "candidate_pool", "half_life_s",
                                                     "trending_half_life_s", "refresh_on_norms", "rrf_k",
                                                     "fusion_weights")}}
    elif task.kind == "prequential":
        model = build_model(opts, catalog)
        res = prequential(_arms(model), events, k=opts.k, sample_every=opts.sample_every, window=opts.window,
                          seed=opts.seed, progress=progress)
        out.update(_prequential_summary(res))
        out["combiner"] = {"weights": model.combiner.weights(), "examples": model.combiner.n_seen}
        out["model"] = _model_settings(model)
    elif task.kind == "bounds":  # the dict core's bounds, whatever opts.core
        variant = dict(task.variant)
        method = task.method
        if method not in ("itemcf", "usercf"):
            raise ValueError(f"bounds task {task.name!r}: method {method!r} must be itemcf or usercf")
        model = build_model(opts, catalog, methods=(method,), train_combiner=False, **variant)
        res = prequential({method: (model, method)}, events, k=opts.k, sample_every=opts.sample_every,
                          window=opts.window, seed=opts.seed, progress=progress)
        out.update(_prequential_summary(res))
        if method == "itemcf":  # co-occurrence entries; recent items kept over all users
            rows, pruned = model.itemcf.items.rows, model.itemcf.items.pruned
            kept = sum(len(h.recent) for h in model.itemcf.users.values())
        else:  # user-user dot products; raters kept over all items
            rows, pruned = model.usercf.rows.rows, model.usercf.rows.pruned
            kept = sum(len(r) for r in model.usercf.items.values())
        out.update({
            "method": method,
            "variant": variant,
            "rows": [asdict(r) for r in task.rows] or [asdict(BoundRow(task.name, "", 0, 0))],
            "learn_us": 1e6 * res.learn_s / max(res.n_events, 1),
            "pairs": sum(len(r) for r in rows.values()),
            "pruned": pruned,
            "kept": kept,
            "refresh_events": model.refresh_events,
            "half_life_s": model.half_life_s,
            "settings": {"history_cap": model.itemcf.history_cap, "row_cap": model.itemcf.items.row_cap,
                         "usercf_max_raters": model.usercf.max_raters, "usercf_row_cap": model.usercf.rows.row_cap},
        })
    else:
        raise ValueError(f"task kind {task.kind!r} must be prequential, {', '.join(OFFLINE_KINDS)} or bounds")
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


def _model_settings(model: HybridRecommender) -> dict[str, Any]:
    return {
        "history_cap": model.itemcf.history_cap, "top_k": model.itemcf.items.k, "candidate_pool": model.candidate_pool,
        "half_life_s": model.half_life_s, "trending_half_life_s": model.trending_half_life_s,
        "fusion_weights": dict(model.fusion_weights), "cold_start_items": model.cold_start_items,
        "combiner_sample": model.combiner_sample, "combiner_lr": model.combiner.lr, "n_neg": model.n_neg,
        "refresh_events": model.refresh_events,
        "rrf_k": model.rrf_k, "center_ratings": model.center_ratings,
    }
