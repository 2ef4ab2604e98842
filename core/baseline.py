"""Online baseline predictor ``r̂(u, i) = μ + b_u + b_i`` (Koren's baseline estimates, learned online).

Method: ``μ`` is the exact running mean of the current ratings (a re-rating replaces the old value,
so the sum changes by the difference and the count does not), and the biases are learned by
stochastic gradient descent on the squared error with L2 regularisation, one step per rating::

    e    = r - (μ + b_u + b_i)
    b_u += lr · (e - l2 · b_u)
    b_i += lr · (e - l2 · b_i)          (both from the values before the step)

State is split into per-key pieces: a :class:`UserBias` per user (its bias and its current ratings,
needed for the replace rule), a float per item, and the global sum and count.
"""

from __future__ import annotations

import logging
import math
from typing import TypedDict

logger = logging.getLogger(__name__)


class UserBias(TypedDict):
    """The per-user piece."""

    b: float
    ratings: dict[str, float]  # item -> current rating


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} {value!r} must be a finite number")
    return float(value)


class BaselinePredictor:
    """Online ``μ + b_u + b_i`` with SGD biases. ``lr`` > 0 learning rate, ``l2`` >= 0 regularisation.

    ``min_rating``/``max_rating`` (optional) clip predictions; with no rating seen, ``μ`` is ``prior_mean``.
    """

    def __init__(
        self,
        lr: float = 0.02,
        l2: float = 0.02,
        prior_mean: float = 0.0,
        min_rating: float | None = None,
        max_rating: float | None = None,
    ) -> None:
        if _finite("lr", lr) <= 0:
            raise ValueError(f"lr {lr!r} must be positive")
        if _finite("l2", l2) < 0:
            raise ValueError(f"l2 {l2!r} must be non-negative")
        if min_rating is not None and max_rating is not None and min_rating > max_rating:
            raise ValueError(f"min_rating {min_rating!r} must not exceed max_rating {max_rating!r}")
        self.lr, self.l2 = float(lr), float(l2)
        self.prior_mean = _finite("prior_mean", prior_mean)
        self.min_rating, self.max_rating = min_rating, max_rating
        self.total = 0.0  # Σ current ratings
        self.count = 0  # number of (user, item) pairs rated
        self.users: dict[str, UserBias] = {}
        self.items: dict[str, float] = {}  # item -> b_i

    @property
    def mean(self) -> float:
        """The global mean ``μ`` of the current ratings (``prior_mean`` before any rating)."""
        return self.total / self.count if self.count else self.prior_mean

    def learn_one(self, user: str, item: str, rating: float) -> None:
        r = _finite("rating", rating)
        ub = self.users.setdefault(user, {"b": 0.0, "ratings": {}})
        old = ub["ratings"].get(item)
        if old is None:
            self.total += r
            self.count += 1
        else:
            self.total += r - old
            logger.debug("baseline: user %s re-rated item %s from %s to %s", user, item, old, r)
        ub["ratings"][item] = r
        bu, bi = ub["b"], self.items.get(item, 0.0)
        err = r - (self.mean + bu + bi)
        ub["b"] = bu + self.lr * (err - self.l2 * bu)
        self.items[item] = bi + self.lr * (err - self.l2 * bi)

    def user_bias(self, user: str) -> float:
        ub = self.users.get(user)
        return ub["b"] if ub else 0.0

    def item_bias(self, item: str) -> float:
        return self.items.get(item, 0.0)

    def predict(self, user: str, item: str) -> float:
        """``μ + b_u + b_i`` (unknown users/items have bias 0), clipped to the rating range if one is set."""
        p = self.mean + self.user_bias(user) + self.item_bias(item)
        if self.min_rating is not None:
            p = max(p, self.min_rating)
        if self.max_rating is not None:
            p = min(p, self.max_rating)
        return p
