"""Ranking metrics for offline (prequential) evaluation.

Single relevant item (prequential: before each event, rank, then check the item the user engaged):
:func:`hit_rate_at_k`, :func:`ndcg_at_k`, :func:`mrr` score one step; average them over the steps.

Sets of relevant items (a held-out history): :func:`precision_at_k`, :func:`recall_at_k`,
:func:`average_precision_at_k`. An empty relevant set scores 0.0 (recall and AP are undefined
there; count such users out before averaging if that matters).

Beyond accuracy: :func:`catalog_coverage`, :func:`novelty`, :func:`intra_list_diversity`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import combinations

logger = logging.getLogger(__name__)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k {k!r} must be a positive integer")
    return k


def _rank(ranked: Sequence[str], relevant: str, k: int | None) -> int | None:
    """1-based rank of ``relevant`` in the first ``k`` of ``ranked`` (all when k is None), None on a miss."""
    top = ranked if k is None else ranked[: _check_k(k)]
    for r, item in enumerate(top, start=1):
        if item == relevant:
            return r
    return None


def hit_rate_at_k(ranked: Sequence[str], relevant: str, k: int) -> float:
    """1.0 if ``relevant`` is in the top ``k``, else 0.0."""
    return 0.0 if _rank(ranked, relevant, k) is None else 1.0


def ndcg_at_k(ranked: Sequence[str], relevant: str, k: int) -> float:
    """``1 / log2(rank + 1)`` for a hit in the top ``k`` (the ideal DCG of one relevant item is 1), else 0.0."""
    r = _rank(ranked, relevant, k)
    return 0.0 if r is None else 1.0 / math.log2(r + 1)


def mrr(ranked: Sequence[str], relevant: str, k: int | None = None) -> float:
    """Reciprocal rank ``1 / rank`` of ``relevant`` (within the top ``k`` if given), 0.0 on a miss.

    One prequential step; the mean over steps is the MRR.
    """
    r = _rank(ranked, relevant, k)
    return 0.0 if r is None else 1.0 / r


def precision_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Relevant items among the top ``k``, divided by ``k``."""
    return sum(1 for item in ranked[: _check_k(k)] if item in relevant) / k


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Relevant items among the top ``k``, divided by the number of relevant items (0.0 if none)."""
    hits = sum(1 for item in ranked[: _check_k(k)] if item in relevant)
    return hits / len(relevant) if relevant else 0.0


def average_precision_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """``Σ_{r <= k, hit at r} precision@r / min(|relevant|, k)`` (0.0 if nothing is relevant)."""
    if not relevant:
        _check_k(k)
        return 0.0
    hits, total = 0, 0.0
    for r, item in enumerate(ranked[: _check_k(k)], start=1):
        if item in relevant:
            hits += 1
            total += hits / r
    return total / min(len(relevant), k)


def catalog_coverage(recommendations: Iterable[Sequence[str]], catalog: Collection[str]) -> float:
    """Share of the catalog that appears in at least one recommendation list (0.0 for an empty catalog)."""
    if not catalog:
        return 0.0
    shown = {item for rec in recommendations for item in rec if item in catalog}
    return len(shown) / len(catalog)


def novelty(ranked: Sequence[str], item_counts: Mapping[str, float], total: float) -> float:
    """Mean self-information ``-log2 p(item)`` of the list, ``p = count / total``.

    ``item_counts`` is e.g. the number of users who engaged each item and ``total`` the number of
    users. An item with no count is treated as seen once. 0.0 for an empty list.
    """
    if not total > 0:
        raise ValueError(f"total {total!r} must be positive")
    if not ranked:
        return 0.0
    bits = 0.0
    for item in ranked:
        count = float(item_counts.get(item, 0.0))
        if count < 1.0:
            logger.debug("metrics: item %s has count %s, treated as seen once", item, count)
            count = 1.0
        if count > total:
            raise ValueError(f"item_counts[{item!r}] {count!r} exceeds total {total!r}")
        bits -= math.log2(count / total)
    return bits / len(ranked)


def jaccard_distance(a: Collection[str], b: Collection[str]) -> float:
    """``1 - |a ∩ b| / |a ∪ b|``; two empty sets are identical (distance 0)."""
    sa, sb = set(a), set(b)
    union = sa | sb
    return 1.0 - len(sa & sb) / len(union) if union else 0.0


def intra_list_diversity(ranked: Sequence[str], genres: Mapping[str, Collection[str]]) -> float:
    """Mean pairwise genre Jaccard distance over the list (items without genres have an empty set).

    0.0 for fewer than two items.
    """
    pairs = list(combinations(ranked, 2))
    if not pairs:
        return 0.0
    return sum(jaccard_distance(genres.get(a, ()), genres.get(b, ())) for a, b in pairs) / len(pairs)
