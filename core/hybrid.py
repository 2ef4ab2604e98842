"""Hybrid recommender: item-CF, user-CF, content and trending candidates, fused into one ranking.

One :class:`HybridRecommender` owns one instance of every part and feeds each event to all of them. The
state is plain dicts of small per-key pieces, so that each part can be held by a Flink operator keyed the
same way:

* item-CF (:class:`core.itemcf.ItemCF`): ``itemcf.users[user]`` (UserHistory, keyed by user) and
  ``itemcf.items`` (ItemRows: co-occurrence rows, keyed by item shard);
* user-CF (:class:`core.usercf.UserCF`): ``usercf.users[user]`` (UserState) and ``usercf.items[item]`` (raters);
* content (:class:`core.content.ContentModel`): ``content.items[item]`` (ItemFeatures) and the title IDF counts;
  ``profiles[user]`` (:class:`core.content.UserProfile`);
* baseline (:class:`core.baseline.BaselinePredictor`): ``baseline.users[user]``, ``baseline.items[item]``, μ;
* trending (:class:`core.popularity.Trending`) and the learned combiner (:class:`core.fusion.LogisticCombiner`,
  one weight per feature): small global state, broadcast in the job;
* the hybrid's own pieces: ``logs[user]`` (:class:`UserLog`: engaged items with value, time and event type)
  and ``item_stats[item]`` (distinct users, latest engagement time).

Each candidate method returns its own top ``candidate_pool`` unseen items (:meth:`HybridRecommender.candidates`):

* ``itemcf``: ``Σ_{k ∈ recent history} w_uk · d_k · sim(k, j)`` with :func:`core.itemcf.rank_items`, where
  ``d_k = 2^(-(T_u - ts_k) / half_life_s)`` decays the user's older history items (``T_u`` the user's latest
  event; ``half_life_s=None`` gives ``d_k = 1``, exactly :meth:`ItemCF.rank`; the content profile decays with the
  same half-life). Neighbour lists are
  recomputed only for rows the co-occurrence update marked dirty, and with ``refresh_events > 0`` a dirty
  list is reused until it is that many events old (the lag the Flink job's windowed refresh has too);
* ``usercf``: :meth:`UserCF.rank`; ``content``: the items closest to the user's profile, in the whole catalog
  (:meth:`ContentModel.top_items`) or among the other methods' candidates and the newest catalog items
  (``content_search``), so an item with no co-occurrence yet is reachable as soon as it is in the catalog;
  ``popular``: the trending window
  (or the decayed popularity when ``trending_half_life_s`` is set), its ranking likewise reused for up to
  ``refresh_events`` events (it is broadcast state in the job).

``rank(user, n, mode)`` fuses them (:mod:`core.fusion`): ``weighted`` (min-max scores times
``fusion_weights``), ``rrf`` / ``borda`` (votes over ranks), ``learned`` (an online
:class:`~core.fusion.LogisticCombiner` over :data:`FEATURES`), or returns one method's list (``itemcf``,
``usercf``, ``content``, ``popular``; for evaluation). Every list is filled up to ``n`` with trending items.
A user with no history gets trending; a user with fewer than ``cold_start_items`` engaged items gets
trending blended with content matches (``cold_start_weights``) in every fusion mode.

The learned combiner is trained in the stream by *recommend-then-learn*: before an event of a user with
history is learned, the candidates are built from the current state; the engaged item (when it is among
them) is a positive and ``n_neg`` other candidates (sampled with the seeded RNG) are negatives. Until it has
seen ``combiner_warmup`` examples, ``learned`` ranks like ``weighted``.

Weights: a ``rate`` event uses the rating, optionally centred on the user's mean of their *other* current
ratings (``center_ratings``; the global mean when there is none); other event types use their weight. The
centred weight may be zero or negative: item-CF takes it as is, while the parts that need a positive weight
(user-CF, the content profile) get ``max(w, MIN_POSITIVE_WEIGHT)``, i.e. a below-average rating counts as
(almost) no preference there. Trending counts events; the baseline learns the raw ratings.

Reasons: each recommended item carries the reason of the method that contributed most to its fused score
(``"because you rated 50"``, ``"liked by similar users"``, ``"matches your taste for Comedy"``, ``"trending"``).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import random
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from core.baseline import BaselinePredictor, predict, user_bias
from core.content import ContentModel, UserProfile
from core.fusion import LogisticCombiner, borda, minmax, ranking, rrf, training_pairs, weighted_scaled
from core.itemcf import ItemCF, Neighbors, UserHistory, rank_items
from core.popularity import Trending
from core.popularity import ranked as rank_scores
from core.usercf import UserCF, score_users, user_reason
from udfs.events import EVENT_TYPES, Event

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("itemcf", "usercf", "content", "popular")
"""The candidate generators, in the order used to break ties between reasons."""
FUSIONS: tuple[str, ...] = ("weighted", "rrf", "borda", "learned")
MODES: tuple[str, ...] = FUSIONS + METHODS
CONTENT_SEARCHES: tuple[str, ...] = ("catalog", "candidates")
"""Where a user's ``content`` candidates come from (``content_search``, see :class:`HybridRecommender`)."""
FEATURES: tuple[str, ...] = ("itemcf", "usercf", "content", "popularity", "recency", "baseline",
                             "itemcf_rank", "usercf_rank", "content_rank", "popular_rank", "itemcf_max", "usercf_max")
"""Features of the learned combiner, each in 0..1 (see :meth:`HybridRecommender.features`)."""
MIN_POSITIVE_WEIGHT = 1e-3
"""Weight given to user-CF and the content profile for a centred rating that is not positive."""

_FEATURE_METHOD = {"itemcf": "itemcf", "usercf": "usercf", "content": "content", "popularity": "popular",
                   "itemcf_max": "itemcf", "usercf_max": "usercf",
                   **{f"{m}_rank": m for m in METHODS}}
_VERBS = {"rate": "rated", "view": "viewed", "click": "clicked", "cart": "put in your cart", "purchase": "bought"}
_ITEMCF_REASON = "because of "  # the prefix core.itemcf.rank_items gives its reasons

DEFAULT_FUSION_WEIGHTS: dict[str, float] = {"itemcf": 1.0, "usercf": 0.3, "content": 0.05, "popular": 0.1}
DEFAULT_COLD_START_WEIGHTS: dict[str, float] = {"popular": 1.0, "content": 0.5}

Ranked = list[tuple[str, float, str]]
"""``[(item, score, reason)]``, best first."""
Candidates = dict[str, list[tuple[str, float]]]
"""``{method: [(item, score)]}``, each list best first."""

#: Config keys read from ``model`` (shared with the rest of the job) and their constructor arguments.
MODEL_KEYS: dict[str, str] = {
    "top_n": "top_n", "top_k": "top_k", "history_cap": "history_cap", "trending_size": "trending_size",
    "min_rating": "min_rating", "max_rating": "max_rating", "row_cap": "row_cap",
}


class UserLog(TypedDict):
    """The hybrid's own per-user piece: what the user engaged (for filters, reasons, decay and centring)."""

    # item -> (event value, ts, event type, model weight) of the latest engagement; the model weight is the
    # value after centring (item-CF uses it; user-CF and the content profile use max(it, MIN_POSITIVE_WEIGHT))
    items: dict[str, tuple[float, int, str, float]]
    rating_sum: float  # Σ current explicit ratings of the user
    rating_n: int  # number of items the user rated explicitly


def new_user_log() -> UserLog:
    return {"items": {}, "rating_sum": 0.0, "rating_n": 0}


def log_event(log: UserLog, event: Event, w: float) -> tuple[float, int, str, float] | None:
    """Record ``event`` (model weight ``w``) in the user's log; returns the engagement it replaces (None if new)."""
    old = log["items"].get(event.item_id)
    if old is not None and old[2] == "rate":
        log["rating_sum"] -= old[0]
        log["rating_n"] -= 1
    if event.type == "rate":
        log["rating_sum"] += event.weight
        log["rating_n"] += 1
    log["items"][event.item_id] = (float(event.weight), event.ts, event.type, float(w))
    return old


def decayed_history(recent: Sequence[tuple[str, float]], log: UserLog, last_ts: int,
                    half_life_s: float | None) -> list[tuple[str, float]]:
    """The item-CF history ``(item, w · d)``, ``d = 2^(-(T_u - ts) / half_life)``; plain weights with decay off."""
    if half_life_s is None:
        return list(recent)
    h_ms = half_life_s * 1000.0
    items = log["items"]
    return [(k, w * 2.0 ** (-(last_ts - items[k][1]) / h_ms)) if k in items else (k, w) for k, w in recent]


def profile_items(log: UserLog, only: Iterable[str] | None = None) -> dict[str, tuple[float, int]]:
    """The content-profile input of a user: ``item -> (max(model weight, MIN_POSITIVE_WEIGHT), ts)`` (of the items
    ``only``, default all)."""
    items = log["items"]
    if only is not None:
        return {i: (max(items[i][3], MIN_POSITIVE_WEIGHT), items[i][1]) for i in only}
    return {i: (max(e[3], MIN_POSITIVE_WEIGHT), e[1]) for i, e in items.items()}


def most_recent(items: Mapping[str, tuple[Any, ...]], n: int) -> list[str]:
    """The ``n`` latest of ``items`` (``item -> (value, ts, ...)``) by (ts, item), oldest first: the last ``n`` of
    ``sorted((ts, item))``, found with one numpy partition instead of sorting every item."""
    size = len(items)
    if n <= 0:
        return []
    if size <= n:
        return [i for _, i in sorted((e[1], i) for i, e in items.items())]
    ts = np.fromiter((e[1] for e in items.values()), dtype=np.int64, count=size)
    kth = ts[np.argpartition(ts, size - n)[size - n]]  # the n-th latest time: every item at least as late may qualify
    keys = list(items)
    return [i for _, i in sorted((int(ts[p]), keys[p]) for p in np.flatnonzero(ts >= kth).tolist())][-n:]


def ratings_of(log: UserLog) -> dict[str, float]:
    """The user's current explicit ratings (the baseline's ``R(u)``)."""
    return {i: e[0] for i, e in log["items"].items() if e[2] == "rate"}


@dataclass
class UserView:
    """Everything ranking reads about one user, and how to read the shared models, at one moment.

    :meth:`HybridRecommender.view` builds it from the in-process state; the Flink ranker builds it from
    the rank request (the user's pieces) and its broadcast state (neighbour lists, catalog, item stats).
    """

    user: str
    log: UserLog
    itemcf_history: list[tuple[str, float]]  # recent (item, decayed weight)
    item_neighbors: Callable[[str], Neighbors]
    user_neighbors: Callable[[], list[tuple[str, float]]]
    user_items: Callable[[str], Mapping[str, float]]
    cache_key: Any = None  # pools are cached while (user, cache_key) is unchanged (None: never)


@dataclass
class _Pool:
    """Candidates of one user at one state version, with every method's reason per item."""

    lists: Candidates
    reasons: dict[str, Mapping[str, str]]
    profile: UserProfile | None = None  # the user's content profile (None: content is not a method)
    content_catalog: bool = True  # the content list was searched in the whole catalog


@dataclass
class _Trend:
    """The trending scores taken at one state ``version`` and the ranking built from them so far."""

    version: int
    keys: list[str]
    scores: list[float]
    ranking: list[tuple[str, float]]
    complete: bool  # ranking holds every item with a positive score


class _LazyReasons(Mapping[str, str]):
    """Reasons of a pool's items, each computed by ``reason(item)`` when first asked for (and kept): a ranking
    shows ``top_n`` of the ``candidate_pool`` items of each list."""

    def __init__(self, reason: Callable[[str], str], items: Collection[str]) -> None:
        self._reason, self._items = reason, items
        self._done: dict[str, str] = {}

    def __getitem__(self, item: str) -> str:
        if item not in self._items:
            raise KeyError(item)
        reason = self._done.get(item)
        if reason is None:
            reason = self._done[item] = self._reason(item)
        return reason

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def _content_reasons(content: ContentModel, profile: UserProfile) -> Callable[[str], str]:
    """The content reason of an item; the profile's top genres are computed once, at the first reason."""
    top = functools.cache(lambda: content.profile_genres(profile))
    return lambda item: content.reason(profile, item, top=top())


def _scaled(values: Mapping[str, float]) -> dict[str, float]:
    """``max(v, 0) / max(values)`` for each value; empty when no value is positive."""
    best = max(values.values(), default=0.0)
    return {i: max(v, 0.0) / best for i, v in values.items()} if best > 0 else {}


def _number(name: str, value: Any, lo: float = 0.0, allow_lo: bool = True, integer: bool = False) -> Any:
    """``value`` if it is a (integer) number >= lo (> lo when not allow_lo), else ValueError naming ``name``."""
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < lo or (value == lo and not allow_lo):
        what = "an integer" if integer else "a number"
        raise ValueError(f"{name} {value!r} must be {what} {'>=' if allow_lo else '>'} {lo:g}")
    return value


def _optional_half_life(name: str, value: Any) -> float | None:
    if value is None or value == 0:
        return None
    return float(_number(name, value, allow_lo=False))


def _weights(name: str, value: Mapping[str, float], allowed: Sequence[str]) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} {value!r} must be a mapping of method -> weight")
    out: dict[str, float] = {}
    for method, w in value.items():
        if method not in allowed:
            raise ValueError(f"{name} has unknown method {method!r} (known: {', '.join(allowed)})")
        out[method] = float(_number(f"{name}[{method!r}]", w))
    return out


class HybridRecommender:
    """Item-CF, user-CF, content and trending, learned event by event and fused at query time.

    Arguments (the config key is ``model.<name>`` for the first six, ``model.hybrid.<name>`` for the rest,
    see :meth:`from_config`):

    * ``top_n``: default list length of :meth:`rank`; ``top_k``: neighbours kept per item (item-CF);
      ``history_cap``: recent items per user that pair with a new event in item-CF (0 = all);
      ``trending_size``: trending items available to fill a short list; ``min_rating``/``max_rating``: the
      rating range (clips the baseline, normalises its feature).
    * ``mode``: default fusion, one of :data:`MODES`. ``methods``: the candidate generators kept up to date
      (a subset of :data:`METHODS`; trending is always kept, it fills lists and serves new users).
    * ``candidate_pool``: candidates per method. ``fusion_weights``: ``α`` per method for ``weighted``.
      ``rrf_k``: the ``k`` of reciprocal-rank fusion.
    * ``cold_start_items``: users with fewer engaged items than this get trending blended with content,
      weighted by ``cold_start_weights`` (``popular``/``content``), in every fusion mode (1 = only users
      with no history, who always get trending).
    * ``content_search``: where the ``content`` candidates of a user with history come from. ``catalog``: the
      profile's best matches in the whole catalog (:meth:`ContentModel.top_items`); ``candidates``: the
      other methods' candidates and the ``content_new_items`` items added to the catalog last, re-ranked by the
      same cosine (:meth:`ContentModel.top_among`): content then orders what the others propose, and still
      proposes new items no one engaged yet (item cold start). Cold-start users and the ``content`` mode alone
      always search the catalog. ``candidates`` costs a few candidates'
      cosines instead of a catalog search per ranking; ``make eval`` shows what it changes (docs/evaluation.md).
    * ``usercf_top_k``, ``usercf_max_raters``, ``usercf_row_cap``: :class:`UserCF`'s ``top_k``, ``max_raters`` and
      ``row_cap``; ``row_cap`` (config ``model.row_cap``): entries kept per item-CF co-occurrence row (0 = all).
      ``refresh_on_norms``: item-CF also recomputes the neighbour list of every row holding an item whose norm
      moved (exact cosines, as a batch recompute); False recomputes only the lists whose own row or norm changed,
      as the Flink job does by default (``job.refresh_on_norms``). ``profile_max_items``: items kept per content
      profile (0 = all).
    * ``half_life_s``: decay of the user's history, in seconds of event time (item-CF history weights at
      query time, the content profile); None or 0 = off. ``trending_window_s``, ``trending_buckets``:
      the trending window; ``trending_half_life_s``: rank ``popular`` by decayed popularity instead.
    * ``recency_half_life_s``: the half-life of the ``recency`` feature. ``center_ratings``: centre
      ratings on the user's mean. ``refresh_events``: events a derived list (a dirty item-CF neighbour list,
      the trending ranking) may be reused for (0 = always current: item-CF then equals :meth:`ItemCF.rank`).
    * ``train_combiner``: train the learned combiner in the stream; ``combiner_lr``, ``combiner_l2``: its
      SGD step and L2; ``n_neg``: negatives per positive; ``combiner_sample``: share of eligible events
      that train it (a cost knob, drawn with the seeded RNG); ``combiner_warmup``: examples before
      ``learned`` stops falling back to ``weighted``. ``baseline_lambda_item``, ``baseline_lambda_user``: the
      baseline's damping (:mod:`core.baseline`).
    * ``seed``: the RNG of negative sampling. ``deny``: items never recommended. ``exclude_types``: event
      types after which an item is never recommended to that user again (default: every type).
    """

    def __init__(
        self,
        *,
        top_n: int = 10,
        top_k: int = 20,
        history_cap: int = 20,
        trending_size: int = 100,
        min_rating: float = 0.5,
        max_rating: float = 5.0,
        mode: str = "weighted",
        methods: Sequence[str] = METHODS,
        candidate_pool: int = 50,
        fusion_weights: Mapping[str, float] | None = None,
        rrf_k: float = 60.0,
        cold_start_items: int = 2,
        cold_start_weights: Mapping[str, float] | None = None,
        content_search: str = "catalog",
        content_new_items: int = 200,
        usercf_top_k: int = 20,
        usercf_max_raters: int = 20,
        usercf_row_cap: int = 0,
        row_cap: int = 0,
        refresh_on_norms: bool = True,
        profile_max_items: int = 200,
        half_life_s: float | None = 180.0,
        trending_window_s: float = 7 * 86400.0,
        trending_buckets: int = 7,
        trending_half_life_s: float | None = 7 * 86400.0,
        recency_half_life_s: float = 86400.0,
        center_ratings: bool = False,
        refresh_events: int = 1000,
        train_combiner: bool = True,
        combiner_lr: float = 0.1,
        combiner_l2: float = 1e-4,
        n_neg: int = 4,
        combiner_sample: float = 0.2,
        combiner_warmup: int = 200,
        baseline_lambda_item: float = 25.0,
        baseline_lambda_user: float = 10.0,
        seed: int = 0,
        deny: Iterable[str] = (),
        exclude_types: Sequence[str] = EVENT_TYPES,
    ) -> None:
        self.top_n = _number("top_n", top_n, 1, integer=True)
        self.mode = self._check_mode(mode)
        bad = [m for m in methods if m not in METHODS]
        if bad or not methods:
            raise ValueError(f"methods {list(methods)!r} must be a non-empty subset of {', '.join(METHODS)}")
        self.methods: tuple[str, ...] = tuple(m for m in METHODS if m in methods)
        self.candidate_pool = _number("candidate_pool", candidate_pool, 1, integer=True)
        self.fusion_weights = _weights("fusion_weights", DEFAULT_FUSION_WEIGHTS if fusion_weights is None
                                       else fusion_weights, METHODS)
        missing = [m for m in self.methods if m not in self.fusion_weights]
        if missing:
            raise ValueError(f"fusion_weights {dict(self.fusion_weights)!r} has no weight for {', '.join(missing)}")
        self.rrf_k = float(_number("rrf_k", rrf_k))
        self.cold_start_items = _number("cold_start_items", cold_start_items, 0, integer=True)
        if content_search not in CONTENT_SEARCHES:
            raise ValueError(f"content_search {content_search!r} must be one of {', '.join(CONTENT_SEARCHES)}")
        self.content_search = content_search
        self.content_new_items = _number("content_new_items", content_new_items, 0, integer=True)
        self.cold_start_weights = _weights("cold_start_weights", DEFAULT_COLD_START_WEIGHTS if cold_start_weights
                                           is None else cold_start_weights, ("popular", "content"))
        if not (isinstance(min_rating, (int, float)) and isinstance(max_rating, (int, float))
                and min_rating < max_rating):
            raise ValueError(f"min_rating {min_rating!r} must be a number below max_rating {max_rating!r}")
        self.min_rating, self.max_rating = float(min_rating), float(max_rating)
        self.half_life_s = _optional_half_life("half_life_s", half_life_s)
        self.trending_half_life_s = _optional_half_life("trending_half_life_s", trending_half_life_s)
        self.recency_half_life_s = float(_number("recency_half_life_s", recency_half_life_s, allow_lo=False))
        self.center_ratings = bool(center_ratings)
        self.refresh_events = _number("refresh_events", refresh_events, 0, integer=True)
        self.trending_size = _number("trending_size", trending_size, 1, integer=True)
        self.train_combiner = bool(train_combiner)
        self.n_neg = _number("n_neg", n_neg, 0, integer=True)
        self.combiner_sample = float(_number("combiner_sample", combiner_sample))
        if self.combiner_sample > 1:
            raise ValueError(f"combiner_sample {combiner_sample!r} must be in 0..1")
        self.combiner_warmup = _number("combiner_warmup", combiner_warmup, 0, integer=True)
        self.profile_max_items = _number("profile_max_items", profile_max_items, 0, integer=True)
        bad = [t for t in exclude_types if t not in EVENT_TYPES]
        if bad:
            raise ValueError(f"exclude_types {list(exclude_types)!r} has unknown event types {bad} "
                             f"(known: {', '.join(EVENT_TYPES)})")
        self.exclude_types = frozenset(exclude_types)

        # the parts (each validates its own arguments and names them in its errors)
        self.itemcf = ItemCF(top_k=top_k, history_cap=history_cap, trending_size=trending_size, row_cap=row_cap,
                             refresh_on_norms=refresh_on_norms)
        self.usercf = UserCF(top_k=usercf_top_k, max_raters=usercf_max_raters, row_cap=usercf_row_cap)
        self.content = ContentModel()
        self.titles: dict[str, str] = {}
        self.trending = Trending(window_s=trending_window_s, n_buckets=trending_buckets, weighted=False,
                                 half_life_s=self.trending_half_life_s)
        self.baseline = BaselinePredictor(lambda_item=baseline_lambda_item, lambda_user=baseline_lambda_user,
                                          prior_mean=(min_rating + max_rating) / 2,
                                          min_rating=min_rating, max_rating=max_rating)
        self.combiner = LogisticCombiner(FEATURES, lr=combiner_lr, l2=combiner_l2)
        self.logs: dict[str, UserLog] = {}
        self.item_stats: dict[str, tuple[int, int]] = {}  # item -> (distinct users engaged, latest ts)
        self.max_users = 0  # the largest distinct-user count of any item (popularity normalisation)
        self.now_ms: int | None = None  # latest event time seen
        self.denied: set[str] = set(deny)
        self.rng = random.Random(seed)
        self.version = 0  # bumped by every state change; keys the candidate cache
        self._pool_cache: tuple[str, Any, _Pool] | None = None
        self._nb_cache: dict[str, tuple[int, Neighbors]] = {}
        self._trend_cache: _Trend | None = None

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_config(cls, model: Mapping[str, Any], **overrides: Any) -> HybridRecommender:
        """Build from the config ``model`` section (keys :data:`MODEL_KEYS` and the ``hybrid`` subsection).

        Every key of ``model.hybrid`` is a constructor argument of the same name (an unknown key is an
        error naming it); ``overrides`` win over the config.
        """
        kwargs: dict[str, Any] = {arg: model[key] for key, arg in MODEL_KEYS.items() if key in model}
        hybrid = model.get("hybrid") or {}
        if not isinstance(hybrid, Mapping):
            raise ValueError(f"config key model.hybrid {hybrid!r} must be a mapping")
        known = set(cls.__init__.__kwdefaults__ or {})
        for key, value in hybrid.items():
            if key not in known or key in MODEL_KEYS:
                raise ValueError(f"config key model.hybrid.{key} is unknown (known: {', '.join(sorted(known))})")
            kwargs[key] = value
        for key in overrides:
            if key not in known:
                raise ValueError(f"argument {key!r} is unknown (known: {', '.join(sorted(known))})")
        kwargs.update(overrides)
        logger.debug("hybrid: from config with %s", kwargs)
        return cls(**kwargs)

    def trains_in_stream(self, compare_modes: Iterable[str] = ()) -> bool:
        """Whether a deployment ranking ``mode`` and ``compare_modes`` trains the combiner in the stream: only when
        the learned mode is ranked (recommend-then-learn costs a second candidate pool per trained user). The Flink
        ranker and the benchmark's single-process limit both follow it."""
        return self.train_combiner and "learned" in (self.mode, *compare_modes)

    @staticmethod
    def _check_mode(mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} must be one of {', '.join(MODES)}")
        return mode

    # -- updates ----------------------------------------------------------------------------------
    def add_item(self, record: Mapping[str, Any], position: int | None = None) -> str:
        """Add or update a catalog item (see :meth:`ContentModel.add_item`); returns its id."""
        item = self.content.add_item(record, position)
        title = record.get("title")
        if isinstance(title, str) and title:
            self.titles[item] = title
        self.version += 1
        return item

    def deny(self, items: Iterable[str]) -> None:
        """Never recommend these items from now on."""
        self.denied.update(items)
        self.version += 1

    def model_weight(self, log: UserLog, event: Event) -> float:
        """The weight the models learn for a valid ``event``: the rating or the type's weight, centred if configured.

        The Flink job calls it for events its parser validated; :meth:`learn_one` checks its events first.
        """
        if event.type != "rate" or not self.center_ratings:
            return event.weight
        total, n = log["rating_sum"], log["rating_n"]
        old = log["items"].get(event.item_id)
        if old is not None and old[2] == "rate":  # a re-rating: centre on the *other* ratings
            total, n = total - old[0], n - 1
        return event.weight - (total / n if n > 0 else self.baseline.mean)

    def learn_one(self, event: Event) -> None:
        """Learn one event (recommend-then-learn: the combiner trains on the state before the event)."""
        if not (isinstance(event.weight, (int, float)) and math.isfinite(event.weight) and event.weight > 0):
            raise ValueError(f"weight {event.weight!r} of event {event.event_id} must be a positive finite number")
        if event.type not in EVENT_TYPES:
            raise ValueError(f"type {event.type!r} of event {event.event_id} is not one of {', '.join(EVENT_TYPES)}")
        user, item, ts = event.user_id, event.item_id, event.ts
        log = self.logs.get(user)
        if log is None:
            log = self.logs[user] = new_user_log()
        w = self.model_weight(log, event)
        if (self.train_combiner and log["items"] and item not in log["items"]
                and self.rng.random() < self.combiner_sample):
            self.train(self.view(user), item, self.combiner, self.rng)
        w_pos = max(w, MIN_POSITIVE_WEIGHT)
        old = log_event(log, event, w)
        if "itemcf" in self.methods:
            self.itemcf.learn_one(user, item, w, ts)
        if "usercf" in self.methods:
            self.usercf.learn_one(user, item, w_pos, ts)
        if event.type == "rate":
            self.baseline.learn_one(user, item, event.weight)
        self.learn_item(item, ts, old is None)

    def learn_item(self, item: str, ts: int, new_user: bool) -> None:
        """The item-side statistics of one engagement: trending, distinct users, latest time, event time."""
        self.trending.learn_one(item, 1.0, ts)
        users, last = self.item_stats.get(item, (0, ts))
        self.set_item_stats(item, (users + 1 if new_user else users, max(last, ts)))
        self.now_ms = ts if self.now_ms is None else max(self.now_ms, ts)
        self.version += 1

    def set_item_stats(self, item: str, stats: tuple[int, int]) -> None:
        self.item_stats[item] = stats
        self.max_users = max(self.max_users, stats[0])

    def train(self, view: UserView, item: str, combiner: LogisticCombiner, rng: random.Random) -> int:
        """Recommend-then-learn: ``item`` (engaged next) against ``n_neg`` sampled candidates of ``view``."""
        feats = self.features(view)
        if len(combiner.coef) < len(FEATURES):
            combiner.add_features(FEATURES)  # a combiner from before a feature was added
        pairs = training_pairs(feats, item, self.n_neg, rng)
        for x, label in pairs:
            combiner.learn_one(x, label)
        logger.debug("hybrid: combiner learned %d examples for user %s item %s (%d candidates)",
                     len(pairs), view.user, item, len(feats))
        return len(pairs)

    # -- reads ------------------------------------------------------------------------------------
    def has_history(self, user: str) -> bool:
        log = self.logs.get(user)
        return bool(log and log["items"])

    def seen(self, user: str) -> set[str]:
        """Items the user engaged with an event of ``exclude_types`` (never recommended to them)."""
        log = self.logs.get(user)
        return self.seen_in(log) if log else set()

    def seen_in(self, log: UserLog) -> set[str]:
        if len(self.exclude_types) == len(EVENT_TYPES):
            return set(log["items"])
        return {i for i, e in log["items"].items() if e[2] in self.exclude_types}

    def _neighbors(self, item: str) -> Neighbors:
        cached = self._nb_cache.get(item)
        dirty = self.itemcf.items.dirty
        if cached is not None and (item not in dirty or self.version - cached[0] < self.refresh_events):
            return cached[1]
        nb = self.itemcf.neighbors(item)
        dirty.pop(item, None)
        self._nb_cache[item] = (self.version, nb)
        return nb

    def view(self, user: str) -> UserView:
        """The :class:`UserView` of ``user`` on the in-process state."""
        log = self.logs.get(user) or new_user_log()
        hist = self.itemcf.users.get(user) or UserHistory()
        return UserView(
            user=user, log=log,
            itemcf_history=decayed_history(hist.recent_weights(), log, hist.last_ts, self.half_life_s),
            item_neighbors=self._neighbors,
            user_neighbors=lambda: self.usercf.neighbors(user),
            user_items=self.usercf._items_of,
            cache_key=self.version)

    def refresh_trending(self) -> None:
        """Recompute the trending ranking at its next use (the job calls it once per window)."""
        self._trend_cache = None

    def trending_ranking(self) -> list[tuple[str, float]]:
        """Every item with a positive trending score (decayed popularity if ``trending_half_life_s``, else the
        window count), best first."""
        return self._trending(complete=True).ranking

    def _trending(self, complete: bool) -> _Trend:
        """The scores are taken once per refresh and the ranking built from them a prefix at a time: a ranking
        reads the first ~100 items, so listing a large catalog's every item each window would be wasted."""
        cached = self._trend_cache
        if cached is None or (cached.version != self.version and self.version - cached.version >= self.refresh_events):
            keys, scores = self.trending.scores(decayed=self.trending_half_life_s is not None)
            prefix = self._trend_prefix()
            cached = self._trend_cache = _Trend(self.version, keys, scores, rank_scores(keys, scores, prefix),
                                                len(keys) <= prefix)
        if complete and not cached.complete:
            cached.ranking, cached.complete = rank_scores(cached.keys, cached.scores, len(cached.keys)), True
        return cached

    def _trend_prefix(self) -> int:
        return max(1000, 10 * self.trending_size, 10 * self.candidate_pool)

    def popular(self, n: int, skip: Collection[str] = ()) -> list[tuple[str, float]]:
        """The ``n`` most trending items not in ``skip`` (or denied)."""
        out: list[tuple[str, float]] = []
        if n <= 0:
            return out
        trend = self._trending(complete=False)
        start = 0
        while True:
            for item in itertools.islice(trend.ranking, start, None):
                if item[0] not in skip and item[0] not in self.denied:
                    out.append(item)
                    if len(out) >= n:
                        return out
            if trend.complete:
                return out
            start = len(trend.ranking)  # the prefix ran out: go on in the whole ranking (the same scores)
            trend = self._trending(complete=True)

    def _title(self, item: str) -> str:
        return self.titles.get(item, item)

    def _reason_itemcf(self, log: UserLog, reason: str) -> str:
        anchor = reason.removeprefix(_ITEMCF_REASON)
        engaged = log["items"].get(anchor)
        if reason == anchor or engaged is None:
            return reason
        return f"because you {_VERBS.get(engaged[2], 'engaged with')} {self._title(anchor)}"

    def profile(self, log: UserLog) -> UserProfile:
        """The user's content profile: the decayed, value-weighted mean of the engaged items' vectors.

        A profile keeps the ``profile_max_items`` latest items of the catalog; for a long history (the heaviest
        users of the scale run engage thousands of items) they are picked without sorting the whole history, and
        the profile is the same (when one of them is not in the catalog, the whole history is sorted)."""
        cap = self.profile_max_items
        only = None
        if cap and len(log["items"]) > 2 * cap:
            recent = most_recent(log["items"], cap)
            if all(i in self.content.items for i in recent):
                only = recent
        return UserProfile.from_items(profile_items(log, only), self.content, self.half_life_s, cap)

    def _pool(self, view: UserView) -> _Pool:
        cached = self._pool_cache
        if view.cache_key is not None and cached is not None and cached[:2] == (view.user, view.cache_key):
            return cached[2]
        log = view.log
        skip = self.seen_in(log) | self.denied
        n = self.candidate_pool
        lists: Candidates = {}
        reasons: dict[str, Mapping[str, str]] = {}
        if "itemcf" in self.methods:
            history = view.itemcf_history
            nb = {k: view.item_neighbors(k) for k, _ in history}
            ranked = rank_items(history, nb, skip, n)
            lists["itemcf"] = [(i, s) for i, s, _ in ranked]
            anchors = {i: r for i, _, r in ranked}
            reasons["itemcf"] = _LazyReasons(lambda i: self._reason_itemcf(log, anchors[i]), anchors)
        if "usercf" in self.methods:
            best, rows = score_users(view.user_neighbors(), view.user_items, n, skip)
            lists["usercf"] = best
            reasons["usercf"] = _LazyReasons(lambda i: user_reason(i, rows), {i for i, _ in best})
        if "popular" in self.methods:
            lists["popular"] = self.popular(n, skip)
            reasons["popular"] = dict.fromkeys((i for i, _ in lists["popular"]), "trending")
        profile = None
        catalog = True
        if "content" in self.methods:
            profile = self.profile(log)
            # the others' candidates (unseen and not denied already) and the newest items, unless this user searches
            # the catalog
            others: set[str] = set()
            if self.content_search == "candidates" and len(log["items"]) >= self.cold_start_items:
                others = {i for c in lists.values() for i, _ in c}
            catalog = not others
            if not profile.items:
                lists["content"] = []
            elif catalog:
                lists["content"] = self.content.top_items(profile, n, exclude=skip)
            else:
                fresh = [i for i in self.content.newest(self.content_new_items) if i not in skip]
                lists["content"] = self.content.top_among(profile, [*others, *fresh], n)
            # reasons only for the few items a ranking shows (a pool holds candidate_pool of them)
            reasons["content"] = _LazyReasons(_content_reasons(self.content, profile),
                                              {i for i, _ in lists["content"]})
            lists = {m: lists[m] for m in METHODS if m in lists}  # the methods' order (ties between reasons)
        pool = _Pool(lists, reasons, profile, catalog)
        if view.cache_key is not None:
            self._pool_cache = (view.user, view.cache_key, pool)
        return pool

    def candidates(self, user: str) -> Candidates:
        """Each method's own top ``candidate_pool`` unseen, not denied items, as ``{method: [(item, score)]}``."""
        return {m: list(c) for m, c in self._pool(self.view(user)).lists.items()}

    def features(self, view: UserView | str, lists: Candidates | None = None) -> dict[str, dict[str, float]]:
        """Learned-mode features of every candidate (the union of ``lists``, default the view's candidates).

        Every feature is in 0..1. The method scores are computed for *every* candidate, not only for the
        items of that method's own list (an item proposed by user-CF still gets its item-CF score), and
        each is divided by its best value over the candidates (0 when that best is not positive):

        * ``itemcf``: ``Σ_k w_uk · d_k · sim(k, j)`` over the view's (decayed) item-CF history;
          ``itemcf_max``: the largest single term of that sum (one recent item very like ``j``);
        * ``usercf``: ``Σ_v sim(u, v) · w_vj`` over the user's neighbours; ``usercf_max``: its largest term;
        * ``content``: the cosine of the user's content profile and the item;
        * ``popularity``: ``ln(1 + users) / ln(1 + most users of any item)``; ``recency``:
          ``2^(-(now - last engagement) / recency_half_life_s)``; ``baseline``: ``μ + b_u + b_i`` scaled
          from the rating range to 0..1;
        * ``<method>_rank``: ``1 - ln(rank) / ln(candidate_pool + 1)`` for the item's 1-based rank in that
          method's list (0 when absent), which keeps the order information the score ratio loses.
        """
        if isinstance(view, str):
            view = self.view(view)
        if lists is None:
            lists = self._pool(view).lists
        items = {i for c in lists.values() for i, _ in c}
        scores = self._method_scores(view, items)
        scaled = {name: _scaled(values) for name, values in scores.items()}
        log_pool = math.log(max(self.candidate_pool, max((len(c) for c in lists.values()), default=0)) + 1)
        ranks: dict[str, dict[str, float]] = {
            method: {i: 1.0 - math.log(r) / log_pool for r, i in enumerate(ranking(lists.get(method, ())), start=1)}
            for method in METHODS
        }
        pop_norm = math.log1p(self.max_users) if self.max_users > 0 else 1.0
        h_ms = self.recency_half_life_s * 1000.0
        now = self.now_ms or 0
        span = self.max_rating - self.min_rating
        mu = self.baseline.mean
        b_u = user_bias(ratings_of(view.log), self.baseline.item_bias, mu, self.baseline.lambda_user)
        out: dict[str, dict[str, float]] = {}
        for item in items:
            users, last = self.item_stats.get(item, (0, None))
            pred = (predict(mu, b_u, self.baseline.item_bias(item)) - self.min_rating) / span
            out[item] = {
                **{name: values.get(item, 0.0) for name, values in scaled.items()},
                "popularity": math.log1p(users) / pop_norm,
                "recency": 2.0 ** (-max(now - last, 0) / h_ms) if last is not None else 0.0,
                "baseline": min(max(pred, 0.0), 1.0),
                **{f"{method}_rank": ranks[method].get(item, 0.0) for method in METHODS},
            }
        return out

    def _method_scores(self, view: UserView, items: Collection[str]) -> dict[str, dict[str, float]]:
        """The raw item-CF, user-CF (sum and largest term) and content scores of ``items`` (absent = 0)."""
        icf: dict[str, float] = {}
        icf_max: dict[str, float] = {}
        ucf: dict[str, float] = {}
        ucf_max: dict[str, float] = {}
        content: dict[str, float] = {}
        if "itemcf" in self.methods:
            for k, wk in view.itemcf_history:
                for j, s in view.item_neighbors(k):
                    if j in items:
                        c = wk * s
                        icf[j] = icf.get(j, 0.0) + c
                        if c > icf_max.get(j, 0.0):
                            icf_max[j] = c
        if "usercf" in self.methods:
            for v, sim in view.user_neighbors():
                engaged = view.user_items(v)
                for j in items:
                    w = engaged.get(j)
                    if w is not None:
                        c = sim * w
                        ucf[j] = ucf.get(j, 0.0) + c
                        if c > ucf_max.get(j, 0.0):
                            ucf_max[j] = c
        if "content" in self.methods and view.log["items"]:
            profile = self.profile(view.log)
            if profile.items:
                content = self.content.score(profile, items)
        return {"itemcf": icf, "usercf": ucf, "content": content, "itemcf_max": icf_max, "usercf_max": ucf_max}

    # -- ranking ----------------------------------------------------------------------------------
    def rank(self, user: str, n: int | None = None, mode: str | None = None,
             exclude: Iterable[str] = ()) -> Ranked:
        """The top ``n`` (default ``top_n``) items for ``user`` as ``(item, score, reason)``.

        Never returns items the user engaged, denied items or ``exclude``; lists shorter than ``n`` are
        filled with trending items (score 0.0).
        """
        return self.rank_view(self.view(user), n, mode, exclude)

    def rank_view(self, view: UserView, n: int | None = None, mode: str | None = None,
                  exclude: Iterable[str] = (), combiner: LogisticCombiner | None = None) -> Ranked:
        """:meth:`rank` on a :class:`UserView` (``combiner``: the learned mode's model, default this one's)."""
        n = self.top_n if n is None else _number("n", n, 0, integer=True)
        mode = self._check_mode(self.mode if mode is None else mode)
        combiner = self.combiner if combiner is None else combiner
        extra = set(exclude)
        skip = self.seen_in(view.log) | self.denied | extra
        if not view.log["items"]:
            return [(i, s, "trending") for i, s in self.popular(n, skip)]
        pool = self._pool(view)
        lists = pool.lists
        if extra:
            lists = {m: [(i, s) for i, s in c if i not in extra] for m, c in lists.items()}
        if mode == "content" and not pool.content_catalog and pool.profile is not None:
            # content alone is a recommender of its own: its best matches in the whole catalog
            reason = _content_reasons(self.content, pool.profile)
            out = [(i, s, reason(i)) for i, s in self.content.top_items(pool.profile, n, exclude=skip)]
        elif mode in METHODS:
            out = [(i, s, pool.reasons[mode][i]) for i, s in lists.get(mode, [])[:n]]
        elif len(view.log["items"]) < self.cold_start_items:
            logger.debug("hybrid: user %s has %d items, cold-start blend", view.user, len(view.log["items"]))
            cold: Candidates = {m: lists[m] for m in ("popular", "content") if m in lists}
            out = self._weighted(cold, self.cold_start_weights, n, pool)
        elif mode == "weighted" or (mode == "learned" and combiner.n_seen < self.combiner_warmup):
            out = self._weighted(lists, self.fusion_weights, n, pool)
        elif mode == "learned":
            out = self._learned(view, lists, n, pool, combiner)
        else:
            fused = rrf(lists, k=self.rrf_k, n=n) if mode == "rrf" else borda(lists, n=n)
            ranks = {m: {i: r for r, i in enumerate(ranking(c))} for m, c in lists.items()}
            out = [(i, s, self._reason(i, {m: -float(r[i]) for m, r in ranks.items() if i in r}, pool))
                   for i, s in fused]
        return self._fill(out, n, skip)

    def _weighted(self, lists: Candidates, alphas: Mapping[str, float], n: int, pool: _Pool) -> Ranked:
        alphas = {m: alphas.get(m, 0.0) for m in lists}
        scaled = {m: minmax(c) for m, c in lists.items()}
        return [(i, s, self._reason(i, {m: alphas[m] * v[i] for m, v in scaled.items() if i in v}, pool))
                for i, s in weighted_scaled(scaled, alphas, n)]

    def _learned(self, view: UserView, lists: Candidates, n: int, pool: _Pool, combiner: LogisticCombiner) -> Ranked:
        feats = self.features(view, lists)
        if len(combiner.coef) < len(FEATURES):
            combiner.add_features(FEATURES)  # a combiner from before a feature was added
        coef = combiner.coef
        out = []
        for i, p in combiner.rank(feats, n):
            contrib: dict[str, float] = {}
            for f, method in _FEATURE_METHOD.items():
                contrib[method] = contrib.get(method, 0.0) + coef[f] * feats[i][f]
            out.append((i, p, self._reason(i, contrib, pool)))
        return out

    @staticmethod
    def _reason(item: str, contributions: Mapping[str, float], pool: _Pool) -> str:
        """The reason of the method with the largest contribution that has one for ``item``."""
        order = sorted(contributions, key=lambda m: (-contributions[m], METHODS.index(m)))
        for method in order:
            reason = pool.reasons.get(method, {}).get(item)
            if reason is not None:
                return reason
        for method in METHODS:  # e.g. the learned model's best feature is popularity, the item not in that list
            reason = pool.reasons.get(method, {}).get(item)
            if reason is not None:
                return reason
        return "trending"

    def _fill(self, out: Ranked, n: int, skip: set[str]) -> Ranked:
        if len(out) >= n:
            return out[:n]
        taken = skip | {i for i, _, _ in out}
        fill = self.popular(max(self.trending_size, n), taken)
        return out + [(i, 0.0, "trending") for i, _ in fill[: n - len(out)]]
