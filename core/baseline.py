"""Baseline predictor ``r̂(u, i) = μ + b_u + b_i`` from damped means (Koren's baseline estimates, closed form).

Method (Koren, "Factor in the neighbors", 2008, section 2.1), recomputed from running sums at query time::

    μ   = Σ r / n                                    over the current ratings
    b_i = Σ_{u ∈ R(i)} (r_ui - μ) / (λ_item + |R(i)|)   = (S_i - n_i·μ) / (λ_item + n_i)
    b_u = Σ_{i ∈ R(u)} (r_ui - μ - b_i) / (λ_user + |R(u)|)

A re-rating replaces the old value: the sums change by the difference and the counts do not. The
result does not depend on the order of the events, and the state splits into per-key pieces a Flink
job can hold where it is keyed: the item sums ``(S_i, n_i)`` by item, the user's ratings by user,
and the global ``(Σ r, n)`` (the sum of the item pieces). :func:`predict` is the one formula both the
single-process :class:`BaselinePredictor` and the job's ranker call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)

ItemSums = tuple[float, int]
"""The per-item piece: ``(Σ ratings of the item, number of users who rated it)``."""


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} {value!r} must be a finite number")
    return float(value)


def item_bias(sums: ItemSums | None, mu: float, lam: float) -> float:
    """``b_i = (S_i - n_i·μ) / (λ + n_i)`` (0 for an item nobody rated)."""
    if not sums or sums[1] <= 0:
        return 0.0
    s, n = sums
    return (s - n * mu) / (lam + n)


def user_bias(ratings: Mapping[str, float], b_item: Callable[[str], float], mu: float, lam: float) -> float:
    """``b_u = Σ (r_ui - μ - b_i) / (λ + |R(u)|)`` over the user's current ratings (0 for none)."""
    if not ratings:
        return 0.0
    return sum(r - mu - b_item(i) for i, r in ratings.items()) / (lam + len(ratings))


def predict(mu: float, b_u: float, b_i: float, lo: float | None = None, hi: float | None = None) -> float:
    """``μ + b_u + b_i`` clipped to ``lo..hi`` when given."""
    p = mu + b_u + b_i
    if lo is not None:
        p = max(p, lo)
    if hi is not None:
        p = min(p, hi)
    return p


class BaselinePredictor:
    """``μ + b_u + b_i`` from damped means. ``lambda_item``, ``lambda_user`` >= 0 shrink the biases to 0.

    ``min_rating``/``max_rating`` (optional) clip predictions; with no rating seen, ``μ`` is ``prior_mean``.
    """

    def __init__(
        self,
        lambda_item: float = 25.0,
        lambda_user: float = 10.0,
        prior_mean: float = 0.0,
        min_rating: float | None = None,
        max_rating: float | None = None,
    ) -> None:
        if _finite("lambda_item", lambda_item) < 0:
            raise ValueError(f"lambda_item {lambda_item!r} must be non-negative")
        if _finite("lambda_user", lambda_user) < 0:
            raise ValueError(f"lambda_user {lambda_user!r} must be non-negative")
        if min_rating is not None and max_rating is not None and min_rating > max_rating:
            raise ValueError(f"min_rating {min_rating!r} must not exceed max_rating {max_rating!r}")
        self.lambda_item, self.lambda_user = float(lambda_item), float(lambda_user)
        self.prior_mean = _finite("prior_mean", prior_mean)
        self.min_rating, self.max_rating = min_rating, max_rating
        self.total = 0.0  # Σ current ratings
        self.count = 0  # number of (user, item) pairs rated
        self.users: dict[str, dict[str, float]] = {}  # user -> item -> current rating
        self.items: dict[str, ItemSums] = {}

    @property
    def mean(self) -> float:
        """The global mean ``μ`` of the current ratings (``prior_mean`` before any rating)."""
        return self.total / self.count if self.count else self.prior_mean

    def learn_one(self, user: str, item: str, rating: float) -> None:
        r = _finite("rating", rating)
        ratings = self.users.setdefault(user, {})
        old = ratings.get(item)
        s, n = self.items.get(item, (0.0, 0))
        if old is None:
            self.total += r
            self.count += 1
            self.items[item] = (s + r, n + 1)
        else:
            self.total += r - old
            self.items[item] = (s + r - old, n)
            logger.debug("baseline: user %s re-rated item %s from %s to %s", user, item, old, r)
        ratings[item] = r

    def set_item_sums(self, item: str, sums: ItemSums) -> None:
        """Replace an item's ``(Σ ratings, n)`` (kept elsewhere, e.g. by the job's item shards); μ follows."""
        old_sum, old_n = self.items.get(item, (0.0, 0))
        self.total += sums[0] - old_sum
        self.count += sums[1] - old_n
        self.items[item] = (float(sums[0]), int(sums[1]))

    def item_bias(self, item: str) -> float:
        return item_bias(self.items.get(item), self.mean, self.lambda_item)

    def user_bias(self, user: str) -> float:
        return user_bias(self.users.get(user, {}), self.item_bias, self.mean, self.lambda_user)

    def predict(self, user: str, item: str) -> float:
        """``μ + b_u + b_i`` (unknown users/items have bias 0), clipped to the rating range if one is set."""
        return predict(self.mean, self.user_bias(user), self.item_bias(item), self.min_rating, self.max_rating)
