"""Evaluation protocols: prequential replay, offline splits (random and temporal per user, leave-last-one-out),
beyond-accuracy.

The prequential replay drives a recommender through ``learn_one(event)`` and ``rank(user, n, mode)``
(:class:`Recommender`); the offline protocols through ``learn_all(events)`` and ``top(users, n, mode)``
(:class:`BatchRecommender`). In the CLI this is ``evaluation.runner.Model``, which calls the model's functions
(:mod:`core.v2.model`) and nothing else, so the numbers measure that code and not a second implementation.

Prequential (test-then-train, Gama et al. 2013): events are replayed in time order; for an event of a
user who already has history, the user's top-k is computed from the current state first and scored
against the engaged item (HR@k, NDCG@k, MRR@k), then the event is learned. Every event is learned;
with ``sample_every = s`` only every s-th eligible event is scored (a seeded offset picks which).
Events that repeat an item the user already engaged are not scored (seen items are never recommended).

Several *arms* (a model and a mode) can share one replay: each distinct model learns every event once
and each arm ranks with its own mode, so all arms are scored on exactly the same events.

Offline: a split (:class:`Split`) is learned as a training part, then every test user's top-k is scored
against their test items (:func:`offline`); the splits are :func:`random_split` (per user, seeded),
:func:`user_temporal_split` (per user, the last share by time) and :func:`leave_last_out`.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeVar

from core.metrics import catalog_coverage, hit_rate_at_k, intra_list_diversity, mrr, ndcg_at_k, novelty
from evaluation.metrics import METRICS, user_metrics
from udfs.events import NEGATIVE_TYPES, Event

logger = logging.getLogger(__name__)

PREQUENTIAL_METRICS = ("HR", "NDCG", "MRR")
OFFLINE_METRICS = METRICS


class Recommender(Protocol):
    """What the protocols need from a model."""

    def learn_one(self, event: Event) -> None: ...

    def rank(self, user: str, n: int | None = None, mode: str | None = None) -> list[tuple[str, float, str]]: ...


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
    unscored: Collection[str] = (),
) -> PrequentialResult:
    """Replay ``events`` (time-ordered) through every arm: rank-then-learn, see the module docstring. Events whose id
    is in ``unscored`` (and negative feedback, ``dislike`` and ``hide``) are learned but never scored nor counted
    eligible."""
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
        elif event.type in NEGATIVE_TYPES or event.event_id in unscored:
            pass
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


M = TypeVar("M")


def _distinct_models(arms: Mapping[str, tuple[M, str]]) -> list[M]:
    """Each model once, in arm order (arms may share a model)."""
    models: list[M] = []
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
class Split(NamedTuple):
    """A training part (learned) and a test part (scored), each in the order of the events given."""

    train: list[Event]
    test: list[Event]


def _check_frac(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError(f"{name} {value!r} must be between 0 and 1 (exclusive)")
    return float(value)


def train_size(n: int, train_frac: float) -> int:
    """How many of a user's ``n`` events go to training: ``train_frac · n`` rounded half up, but at least one
    event on each side when ``n >= 2`` (one event: training only)."""
    if n < 2:
        return n
    return min(max(math.floor(n * train_frac + 0.5), 1), n - 1)


def _per_user(events: Sequence[Event]) -> dict[str, list[int]]:
    """Positions of each user's events, users in id order, each list in (time, event id) order."""
    by_user: dict[str, list[int]] = {}
    for pos, e in enumerate(events):
        by_user.setdefault(e.user_id, []).append(pos)
    return {u: sorted(by_user[u], key=lambda p: (events[p].ts, events[p].event_id)) for u in sorted(by_user)}


def _split(events: Sequence[Event], test: set[int]) -> Split:
    return Split([e for p, e in enumerate(events) if p not in test], [e for p, e in enumerate(events) if p in test])


def random_split(events: Sequence[Event], train_frac: float = 0.75, seed: int = 0) -> Split:
    """Per user, a seeded random :func:`train_size` of their events for training and the rest for test (Microsoft
    Recommenders' stratified split: 75/25 per user in their benchmark). Users are drawn in id order from one
    ``random.Random(seed)``, so the split depends only on the events and the seed."""
    train_frac = _check_frac("train_frac", train_frac)
    rng = random.Random(seed)
    test: set[int] = set()
    for positions in _per_user(events).values():
        shuffled = positions[:]
        rng.shuffle(shuffled)
        test.update(shuffled[train_size(len(positions), train_frac):])
    return _split(events, test)


def user_temporal_split(events: Sequence[Event], test_frac: float = 0.2) -> Split:
    """Per user, the last ``test_frac`` of their events by (time, event id) for test, the earlier ones for training
    (:func:`train_size` of ``1 - test_frac``): every test user has training history, and no test event of a user
    precedes one of their training events."""
    test_frac = _check_frac("test_frac", test_frac)
    test: set[int] = set()
    for positions in _per_user(events).values():
        test.update(positions[train_size(len(positions), 1.0 - test_frac):])
    return _split(events, test)


def leave_last_out(events: Sequence[Event]) -> Split:
    """Per user with at least two events, the last by (time, event id) for test, the rest for training."""
    test = {positions[-1] for positions in _per_user(events).values() if len(positions) >= 2}
    return _split(events, test)


class BatchRecommender(Protocol):
    """What the offline protocols need from a model: learn a training part, then rank many users at once."""

    def learn_all(self, events: Sequence[Event], progress: Progress | None = None) -> None: ...

    def top(self, users: Sequence[str], n: int, mode: str) -> list[list[str]]: ...


BatchArm = tuple[BatchRecommender, str]


@dataclass
class OfflineResult:
    """Per arm metric sums over the evaluated users, and every user's top-k list (for beyond-accuracy)."""

    arms: list[str]
    k: int
    n_users: int = 0  # test users with at least one relevant item
    n_cold: int = 0  # of those, users without any training event (they get trending)
    n_no_relevant: int = 0  # test users left out: every test item of theirs was a training item too
    sums: dict[str, dict[str, float]] = field(default_factory=dict)
    lists: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # arm -> user -> top-k
    learn_s: float = 0.0
    rank_s: dict[str, float] = field(default_factory=dict)

    def mean(self, arm: str, metric: str) -> float:
        return self.sums[arm][metric] / self.n_users if self.n_users else 0.0


def training_items(train: Iterable[Event]) -> dict[str, set[str]]:
    """Per user, the items of their training events."""
    seen: dict[str, set[str]] = {}
    for e in train:
        seen.setdefault(e.user_id, set()).add(e.item_id)
    return seen


def relevant_items(train: Iterable[Event], test: Iterable[Event]) -> dict[str, set[str]]:
    """Per user, the test items they did not already engage in training (all of them count as relevant)."""
    seen = training_items(train)
    rel: dict[str, set[str]] = {}
    for e in test:
        if e.item_id not in seen.get(e.user_id, ()):
            rel.setdefault(e.user_id, set()).add(e.item_id)
    return rel


def offline(
    arms: Mapping[str, BatchArm],
    train: Sequence[Event],
    test: Sequence[Event],
    k: int = 10,
    progress: Progress | None = None,
) -> OfflineResult:
    """Learn ``train``, then rank the top-k of every test user in each arm and score it (:mod:`evaluation.metrics`).

    Relevance: every test item of the user that is not one of their training items (binary), as in Microsoft
    Recommenders' evaluation; a test user with no such item is left out (counted in ``n_no_relevant``). Each mean
    is over the evaluated users. Exclusion: no list may hold one of the user's training items (the model must
    exclude them); a list that does is a ValueError naming the user and the item. ``progress`` gets the training
    events learned, then ``len(test)`` in shares as the arms finish ranking.
    """
    if not arms:
        raise ValueError("arms is empty: nothing to evaluate")
    res = OfflineResult(list(arms), k)
    res.sums = {a: dict.fromkeys(METRICS, 0.0) for a in arms}
    res.lists = {a: {} for a in arms}
    res.rank_s = dict.fromkeys(arms, 0.0)
    t0 = time.perf_counter()
    for model in _distinct_models(arms):
        model.learn_all(train, progress)
    res.learn_s = time.perf_counter() - t0
    seen = training_items(train)
    rel = relevant_items(train, test)
    users = sorted(rel)
    res.n_users = len(users)
    res.n_cold = sum(1 for u in users if u not in seen)
    res.n_no_relevant = len({e.user_id for e in test} - set(rel))
    for pos, (name, (model, mode)) in enumerate(arms.items()):
        t1 = time.perf_counter()
        lists = model.top(users, k, mode)
        res.rank_s[name] = time.perf_counter() - t1
        if len(lists) != len(users):
            raise ValueError(f"arm {name!r}: {len(lists)} lists for {len(users)} users")
        sums = res.sums[name]
        for user, ranked in zip(users, lists, strict=True):
            trained = seen.get(user, set())
            leaked = [i for i in ranked if i in trained]
            if leaked:
                raise ValueError(f"arm {name!r}: user {user!r}'s list holds training item {leaked[0]!r}")
            res.lists[name][user] = ranked
            for metric, value in user_metrics(ranked, rel[user], k).items():
                sums[metric] += value
        if progress is not None:
            share = len(test) // len(arms)
            progress(share + (len(test) - share * len(arms) if pos == len(arms) - 1 else 0))
    logger.info("offline: %d train events, %d test users (%d without training events, %d without relevant items)",
                len(train), res.n_users, res.n_cold, res.n_no_relevant)
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


