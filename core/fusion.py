"""Fusion of per-method candidate lists into one ranking.

Input everywhere is ``lists: dict[method, list[(item, score)]]``. Within a list an item's rank is
its position after sorting by score (descending, ties by item id); a repeated item keeps its best
score. Every fusion returns ``list[(item, fused_score)]`` sorted by score descending, ties by item id.

* :func:`weighted`: ``Σ_m α_m · minmax_m(item)``, with each list's scores min-max normalised to
  0..1 (all-equal scores normalise to 1); an item missing from a list gets 0 from it.
* :func:`rrf`: reciprocal-rank fusion ``Σ_m 1 / (k + rank_m(item))`` over the lists holding the item.
* :func:`borda`: Borda-fuse (Aslam & Montague): with ``N`` distinct candidates over all lists, rank
  ``r`` of a list earns ``N - r + 1`` points; the items a list does not rank share its remaining
  points ``N - L .. 1`` equally, ``(N - L + 1) / 2`` each (``L`` = the list's length).
* :class:`LogisticCombiner`: online logistic regression ``P(engage | x)`` over named features,
  trained from recommend-then-learn pairs built by :func:`training_pairs`.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping, Sequence

from core.itemcf import top_n

logger = logging.getLogger(__name__)

Lists = Mapping[str, Sequence[tuple[str, float]]]


def _best_scores(candidates: Sequence[tuple[str, float]]) -> dict[str, float]:
    best: dict[str, float] = {}
    for item, score in candidates:
        if item not in best or score > best[item]:
            best[item] = float(score)
    return best


def _sorted(scores: Mapping[str, float], n: int | None = None) -> list[tuple[str, float]]:
    if n is not None:
        return top_n(scores, n)
    return sorted(scores.items(), key=lambda t: (-t[1], t[0]))


def ranking(candidates: Sequence[tuple[str, float]]) -> list[str]:
    """The distinct items of one list in rank order (score descending, ties by item id)."""
    return [item for item, _ in _sorted(_best_scores(candidates))]


def minmax(candidates: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Scores of one list min-max normalised to 0..1 (all 1.0 when they are all equal)."""
    best = _best_scores(candidates)
    if not best:
        return {}
    lo, hi = min(best.values()), max(best.values())
    return {i: (s - lo) / (hi - lo) if hi > lo else 1.0 for i, s in best.items()}


def candidate_features(lists: Lists) -> dict[str, dict[str, float]]:
    """item -> {method: min-max normalised score} over all lists (a method missing for an item is absent)."""
    feats: dict[str, dict[str, float]] = {}
    for method, candidates in lists.items():
        for item, s in minmax(candidates).items():
            feats.setdefault(item, {})[method] = s
    return feats


def weighted(lists: Lists, alphas: Mapping[str, float], n: int | None = None) -> list[tuple[str, float]]:
    """``Σ_m α_m · minmax_m(item)``. Every method in ``lists`` needs a non-negative finite ``alphas`` entry."""
    for method in lists:
        a = alphas.get(method)
        if a is None:
            raise ValueError(f"alphas has no weight for method {method!r} (have {sorted(alphas)})")
        if not math.isfinite(a) or a < 0:
            raise ValueError(f"alphas[{method!r}] {a!r} must be a non-negative finite number")
    return weighted_scaled({method: minmax(candidates) for method, candidates in lists.items()}, alphas, n)


def weighted_scaled(scaled: Mapping[str, Mapping[str, float]], alphas: Mapping[str, float],
                    n: int | None = None) -> list[tuple[str, float]]:
    """:func:`weighted` on lists already min-max normalised (``{method: minmax(list)}``), alphas not checked."""
    fused: dict[str, float] = {}
    get = fused.get
    for method, values in scaled.items():
        a = alphas[method]
        for item, s in values.items():
            fused[item] = get(item, 0.0) + a * s
    return _sorted(fused, n)


def rrf(lists: Lists, k: float = 60, n: int | None = None) -> list[tuple[str, float]]:
    """Reciprocal-rank fusion ``Σ_m 1 / (k + rank_m)`` (rank 1-based)."""
    if not k >= 0:
        raise ValueError(f"k {k!r} must be non-negative")
    fused: dict[str, float] = {}
    for candidates in lists.values():
        for r, item in enumerate(ranking(candidates), start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + r)
    return _sorted(fused, n)


def borda(lists: Lists, n: int | None = None) -> list[tuple[str, float]]:
    """Borda-fuse: ``N - r + 1`` points for rank ``r``, unranked items share the rest (``(N - L + 1) / 2`` each)."""
    rankings = [ranking(c) for c in lists.values()]
    universe = {item for r in rankings for item in r}
    big_n = len(universe)
    fused = dict.fromkeys(universe, 0.0)
    for ranked in rankings:
        share = (big_n - len(ranked) + 1) / 2.0
        points = {item: float(big_n - r) for r, item in enumerate(ranked)}
        for item in universe:
            fused[item] += points.get(item, share)
    return _sorted(fused, n)


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class LogisticCombiner:
    """Online logistic regression over named features, SGD on the log loss with L2 on the weights (not the bias).

    Features not given for an example are 0; names outside ``features`` are an error.
    """

    def __init__(self, features: Sequence[str], lr: float = 0.05, l2: float = 1e-4) -> None:
        names = list(features)
        if not names or len(set(names)) != len(names) or "bias" in names:
            raise ValueError(f"features {names!r} must be distinct, non-empty and not include 'bias'")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr {lr!r} must be positive")
        if not (isinstance(l2, (int, float)) and math.isfinite(l2) and l2 >= 0):
            raise ValueError(f"l2 {l2!r} must be non-negative")
        self.lr, self.l2 = float(lr), float(l2)
        self.coef: dict[str, float] = dict.fromkeys(names, 0.0)
        self.bias = 0.0
        self.n_seen = 0

    def _check(self, x: Mapping[str, float]) -> None:
        for name, value in x.items():
            if name not in self.coef:
                raise ValueError(f"feature {name!r} is not one of {list(self.coef)}")
            if not math.isfinite(value):
                raise ValueError(f"feature {name!r} value {value!r} must be finite")

    def decision(self, x: Mapping[str, float]) -> float:
        self._check(x)
        return self.bias + sum(self.coef[name] * v for name, v in x.items())

    def predict_proba(self, x: Mapping[str, float]) -> float:
        """``P(engage | x)``."""
        return _sigmoid(self.decision(x))

    def learn_one(self, x: Mapping[str, float], label: int) -> None:
        if label not in (0, 1) or isinstance(label, float):
            raise ValueError(f"label {label!r} must be 0 or 1")
        g = self.predict_proba(x) - label
        for name in self.coef:
            self.coef[name] -= self.lr * (g * x.get(name, 0.0) + self.l2 * self.coef[name])
        self.bias -= self.lr * g
        self.n_seen += 1

    def add_features(self, features: Sequence[str]) -> list[str]:
        """Add the ``features`` it does not have yet, with weight 0 (e.g. a combiner restored from an older
        checkpoint after features were added); returns the added names."""
        added = [name for name in features if name not in self.coef]
        if "bias" in added:
            raise ValueError("a feature cannot be named 'bias'")
        for name in added:
            self.coef[name] = 0.0
        if added:
            logger.info("fusion: combiner gained features %s (weight 0)", ", ".join(added))
        return added

    def weights(self) -> dict[str, float]:
        """The feature weights and the ``"bias"``, to log or store."""
        return {**self.coef, "bias": self.bias}

    def load_weights(self, weights: Mapping[str, float]) -> None:
        """Restore weights saved by :meth:`weights` (missing names keep their value)."""
        for name, value in weights.items():
            if name == "bias":
                self.bias = float(value)
            elif name in self.coef:
                self.coef[name] = float(value)
            else:
                raise ValueError(f"weights has unknown feature {name!r}")

    def rank(self, candidates: Mapping[str, Mapping[str, float]], n: int | None = None) -> list[tuple[str, float]]:
        """Candidates (item -> features, e.g. from :func:`candidate_features`) by ``P(engage)``."""
        return _sorted({item: self.predict_proba(x) for item, x in candidates.items()}, n)


def training_pairs(
    shown: Mapping[str, Mapping[str, float]], engaged: str, n_neg: int, rng: random.Random
) -> list[tuple[dict[str, float], int]]:
    """Recommend-then-learn examples: the engaged item (label 1) and ``n_neg`` sampled other shown items (label 0).

    ``shown`` maps the candidates scored *before* the event to their features. If the engaged item was
    not among them there is no positive to learn from and the result is empty.
    """
    if isinstance(n_neg, bool) or not isinstance(n_neg, int) or n_neg < 0:
        raise ValueError(f"n_neg {n_neg!r} must be a non-negative integer")
    if engaged not in shown:
        logger.debug("fusion: engaged item %s was not among %d shown candidates", engaged, len(shown))
        return []
    others = sorted(i for i in shown if i != engaged)
    negatives = rng.sample(others, min(n_neg, len(others)))
    return [(dict(shown[engaged]), 1)] + [(dict(shown[i]), 0) for i in negatives]
