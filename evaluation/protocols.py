"""Evaluation protocols: prequential replay, offline temporal and random splits, beyond-accuracy.

Everything here drives a recommender through two calls, ``learn_one(event)`` and ``rank(user, n, mode)``
(:class:`Recommender`): in the CLI that is :class:`core.hybrid.HybridRecommender`, the same classes the
Flink job uses, so the numbers measure that code and not a second implementation.

Prequential (test-then-train, Gama et al. 2013): events are replayed in time order; for an event of a
user who already has history, the user's top-k is computed from the current state first and scored
against the engaged item (HR@k, NDCG@k, MRR@k), then the event is learned. Every event is learned;
with ``sample_every = s`` only every s-th eligible event is scored (a seeded offset picks which).
Events that repeat an item the user already engaged are not scored (seen items are never recommended).

Several *arms* (a model and a mode) can share one replay: each distinct model learns every event once
and each arm ranks with its own mode, so all arms are scored on exactly the same events.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core.metrics import (
    average_precision_at_k,
    catalog_coverage,
    hit_rate_at_k,
    intra_list_diversity,
    mrr,
    ndcg_at_k,
    novelty,
    precision_at_k,
    recall_at_k,
)
from evaluation.metrics import ndcg_set_at_k
from udfs.events import Event

logger = logging.getLogger(__name__)

PREQUENTIAL_METRICS = ("HR", "NDCG", "MRR")
OFFLINE_METRICS = ("Precision", "Recall", "NDCG", "HR", "MAP", "MAP_rel")


class Recommender(Protocol):
    """What the protocols need from a model."""

    def learn_one(self, event: Event) -> None: ...

    def rank(self, user: str, n: int | None = None, mode: str | None = None,
             exclude: Iterable[str] = ()) -> list[tuple[str, float, str]]: ...


Arm = tuple[Recommender, str]
"""A model and the mode it ranks with."""
Progress = Callable[[int], None]
"""Called with the number of events processed since the last call."""


@dataclass
class PrequentialResult:
    """Sums and counts of a prequential replay, per arm; averages via :meth:`mean`."""

    arms: list[str]
    k: int
    window: int
    sample_every: int
    n_events: int = 0
    n_eligible: int = 0  # events of users with history, item not engaged before
    n_scored: int = 0
    n_new_user: int = 0  # events skipped: the user had no history
    n_repeat: int = 0  # events skipped: the user had engaged the item before
    sums: dict[str, dict[str, float]] = field(default_factory=dict)
    windows: dict[str, dict[int, list[float]]] = field(default_factory=dict)  # arm -> window -> [hits, scored]
    hits: dict[str, bytearray] = field(default_factory=dict)  # arm -> 1/0 per scored event, in order (paired tests)
    rank_s: dict[str, float] = field(default_factory=dict)  # arm -> seconds spent ranking
    learn_s: float = 0.0  # seconds spent learning (all models)

    def mean(self, arm: str, metric: str) -> float:
        return self.sums[arm][metric] / self.n_scored if self.n_scored else 0.0

    def curve(self, arm: str) -> list[tuple[int, float]]:
        """``(events replayed at the end of the window, HR@k in the window)`` for windows with scored events."""
        return [(min((w + 1) * self.window, self.n_events), hits / scored)
                for w, (hits, scored) in sorted(self.windows[arm].items()) if scored]


def prequential(
    arms: Mapping[str, Arm],
    events: Sequence[Event],
    k: int = 10,
    sample_every: int = 1,
    window: int = 5000,
    seed: int = 0,
    progress: Progress | None = None,
) -> PrequentialResult:
    """Replay ``events`` (time-ordered) through every arm: rank-then-learn, see the module docstring."""
    if isinstance(sample_every, bool) or not isinstance(sample_every, int) or sample_every < 1:
        raise ValueError(f"sample_every {sample_every!r} must be a positive integer")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window {window!r} must be a positive integer")
    if not arms:
        raise ValueError("arms is empty: nothing to evaluate")
    offset = random.Random(seed).randrange(sample_every)
    res = PrequentialResult(list(arms), k, window, sample_every)
    res.sums = {a: dict.fromkeys(PREQUENTIAL_METRICS, 0.0) for a in arms}
    res.windows = {a: {} for a in arms}
    res.rank_s = dict.fromkeys(arms, 0.0)
    res.hits = {a: bytearray() for a in arms}
    models = _distinct_models(arms)
    engaged: dict[str, set[str]] = {}
    done = 0
    for pos, event in enumerate(events):
        items = engaged.get(event.user_id)
        if items is None:
            res.n_new_user += 1
            items = engaged[event.user_id] = set()
        elif event.item_id in items:
            res.n_repeat += 1
        else:
            if res.n_eligible % sample_every == offset:
                res.n_scored += 1
                for name, (model, mode) in arms.items():
                    t0 = time.perf_counter()
                    ranked = [i for i, _, _ in model.rank(event.user_id, k, mode)]
                    res.rank_s[name] += time.perf_counter() - t0
                    sums = res.sums[name]
                    hit = hit_rate_at_k(ranked, event.item_id, k)
                    res.hits[name].append(int(hit))
                    sums["HR"] += hit
                    sums["NDCG"] += ndcg_at_k(ranked, event.item_id, k)
                    sums["MRR"] += mrr(ranked, event.item_id, k)
                    w = res.windows[name].setdefault(pos // window, [0.0, 0.0])
                    w[0] += hit
                    w[1] += 1
            res.n_eligible += 1
        items.add(event.item_id)
        t0 = time.perf_counter()
        for model in models:
            model.learn_one(event)
        res.learn_s += time.perf_counter() - t0
        res.n_events += 1
        done += 1
        if progress is not None and done == 1000:
            progress(done)
            done = 0
    if progress is not None and done:
        progress(done)
    logger.info("prequential: %d events, %d eligible, %d scored (every %d), %d new-user and %d repeat events skipped",
                res.n_events, res.n_eligible, res.n_scored, sample_every, res.n_new_user, res.n_repeat)
    return res


def _distinct_models(arms: Mapping[str, Arm]) -> list[Recommender]:
    """Each model once, in arm order (arms may share a model)."""
    models: list[Recommender] = []
    for model, _ in arms.values():
        if not any(model is m for m in models):
            models.append(model)
    return models


def mcnemar(a: Sequence[int], b: Sequence[int]) -> tuple[int, int, float]:
    """Paired comparison of two hit sequences: ``(a hit & b missed, b hit & a missed, z)``.

    ``z = (n_ab - n_ba) / sqrt(n_ab + n_ba)`` (McNemar's statistic without continuity correction, signed;
    |z| > 1.96 is significant at 5%). 0.0 when the sequences never disagree.
    """
    if len(a) != len(b):
        raise ValueError(f"hit sequences of length {len(a)} and {len(b)} must be paired (same length)")
    ab = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    ba = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    return ab, ba, (ab - ba) / math.sqrt(ab + ba) if ab + ba else 0.0


# -- offline splits -------------------------------------------------------------------------------------
def temporal_split(events: Sequence[Event], train_frac: float = 0.8) -> tuple[list[Event], list[Event]]:
    """The first ``train_frac`` of the (time-ordered) events, and the rest."""
    if not 0 < train_frac < 1:
        raise ValueError(f"train_frac {train_frac!r} must be between 0 and 1")
    cut = round(len(events) * train_frac)
    return list(events[:cut]), list(events[cut:])


def random_split(events: Sequence[Event], train_frac: float = 0.8, seed: int = 0) -> tuple[list[Event], list[Event]]:
    """Per user, a seeded random ``train_frac`` of their events for training and the rest for test.

    Each user keeps ``round(train_frac · n)`` events (at least one) in training. Both parts keep the
    original (time) order, so the training part can be replayed as a stream.
    """
    if not 0 < train_frac < 1:
        raise ValueError(f"train_frac {train_frac!r} must be between 0 and 1")
    rng = random.Random(seed)
    by_user: dict[str, list[int]] = {}
    for pos, e in enumerate(events):
        by_user.setdefault(e.user_id, []).append(pos)
    test: set[int] = set()
    for user in sorted(by_user):
        positions = by_user[user]
        n_train = max(1, round(len(positions) * train_frac))
        shuffled = positions[:]
        rng.shuffle(shuffled)
        test.update(shuffled[n_train:])
    return ([e for p, e in enumerate(events) if p not in test], [e for p, e in enumerate(events) if p in test])


@dataclass
class OfflineResult:
    """Per arm metric sums over the evaluated users, and every user's top-k list (for beyond-accuracy)."""

    arms: list[str]
    k: int
    n_users: int = 0  # test users with at least one relevant item
    n_cold: int = 0  # of those, users without any training event (they get trending)
    sums: dict[str, dict[str, float]] = field(default_factory=dict)
    lists: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # arm -> user -> top-k
    learn_s: float = 0.0
    rank_s: dict[str, float] = field(default_factory=dict)

    def mean(self, arm: str, metric: str) -> float:
        return self.sums[arm][metric] / self.n_users if self.n_users else 0.0


def relevant_items(train: Iterable[Event], test: Iterable[Event]) -> dict[str, set[str]]:
    """Per user, the test items they did not already engage in training (all of them count as relevant)."""
    seen: dict[str, set[str]] = {}
    for e in train:
        seen.setdefault(e.user_id, set()).add(e.item_id)
    rel: dict[str, set[str]] = {}
    for e in test:
        if e.item_id not in seen.get(e.user_id, ()):
            rel.setdefault(e.user_id, set()).add(e.item_id)
    return rel


def offline(
    arms: Mapping[str, Arm],
    train: Sequence[Event],
    test: Sequence[Event],
    k: int = 10,
    progress: Progress | None = None,
) -> OfflineResult:
    """Learn ``train`` as a stream, then rank top-k for every test user and score against their test items.

    Relevance is every test item of the user (not a rating threshold), as in Microsoft Recommenders' table.
    ``MAP`` is :func:`core.metrics.average_precision_at_k` (÷ min(|relevant|, k)); ``MAP_rel`` divides the
    same sum by |relevant| instead, the normalisation of Microsoft's ``map``.
    """
    res = OfflineResult(list(arms), k)
    res.sums = {a: dict.fromkeys(OFFLINE_METRICS, 0.0) for a in arms}
    res.lists = {a: {} for a in arms}
    res.rank_s = dict.fromkeys(arms, 0.0)
    models = _distinct_models(arms)
    t0 = time.perf_counter()
    trained_users: set[str] = set()
    for pos, event in enumerate(train, start=1):
        for model in models:
            model.learn_one(event)
        trained_users.add(event.user_id)
        if progress is not None and pos % 1000 == 0:
            progress(1000)
    res.learn_s = time.perf_counter() - t0
    if progress is not None and len(train) % 1000:
        progress(len(train) % 1000)
    rel = relevant_items(train, test)
    for user in sorted(rel):
        relevant = rel[user]
        res.n_users += 1
        res.n_cold += user not in trained_users
        for name, (model, mode) in arms.items():
            t1 = time.perf_counter()
            ranked = [i for i, _, _ in model.rank(user, k, mode)]
            res.rank_s[name] += time.perf_counter() - t1
            res.lists[name][user] = ranked
            s = res.sums[name]
            p = precision_at_k(ranked, relevant, k)
            ap = average_precision_at_k(ranked, relevant, k)
            s["Precision"] += p
            s["Recall"] += recall_at_k(ranked, relevant, k)
            s["NDCG"] += ndcg_set_at_k(ranked, relevant, k)
            s["HR"] += 1.0 if p > 0 else 0.0
            s["MAP"] += ap
            s["MAP_rel"] += ap * min(len(relevant), k) / len(relevant)
    logger.info("offline: %d train events, %d test users (%d without training events)",
                len(train), res.n_users, res.n_cold)
    return res


@dataclass
class BeyondAccuracy:
    coverage: float  # share of the catalog recommended to anyone
    novelty: float  # mean self-information of the recommended items, bits
    diversity: float  # mean intra-list genre diversity (Jaccard distance)


def beyond_accuracy(
    lists: Mapping[str, Sequence[str]],
    train: Iterable[Event],
    catalog: Collection[str],
    genres: Mapping[str, Collection[str]],
) -> BeyondAccuracy:
    """Coverage, novelty and intra-list diversity of one arm's lists (``user -> top-k``).

    Novelty uses the training popularity: ``p(item) = users who engaged it / users``.
    """
    users_of: dict[str, set[str]] = {}
    all_users: set[str] = set()
    for e in train:
        users_of.setdefault(e.item_id, set()).add(e.user_id)
        all_users.add(e.user_id)
    counts = {i: float(len(u)) for i, u in users_of.items()}
    total = float(max(len(all_users), 1))
    recs = [list(r) for r in lists.values()]
    if not recs:
        return BeyondAccuracy(0.0, 0.0, 0.0)
    return BeyondAccuracy(
        coverage=catalog_coverage(recs, catalog),
        novelty=math.fsum(novelty(r, counts, total) for r in recs) / len(recs),
        diversity=math.fsum(intra_list_diversity(r, genres) for r in recs) / len(recs),
    )


