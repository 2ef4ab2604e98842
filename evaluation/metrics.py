"""Ranking metrics the offline protocols need and :mod:`core.metrics` does not have.

:func:`core.metrics.ndcg_at_k` scores one relevant item; the offline splits hold a set of relevant
items per user, so NDCG there uses binary gains and the ideal DCG of ``min(|relevant|, k)`` hits::

    DCG = Σ_{r <= k, ranked[r] ∈ relevant} 1 / log2(r + 1)        IDCG = Σ_{r=1}^{min(|relevant|, k)} 1 / log2(r + 1)

With one relevant item it equals :func:`core.metrics.ndcg_at_k`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence


def ndcg_set_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Binary-gain NDCG@k against a set of relevant items (0.0 if nothing is relevant)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k {k!r} must be a positive integer")
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(r + 1) for r, item in enumerate(ranked[:k], start=1) if item in relevant)
    idcg = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(relevant), k) + 1))
    return dcg / idcg
