"""Per-user ranking metrics of the offline protocols, with Microsoft Recommenders' definitions.

Microsoft Recommenders (``recommenders/evaluation/python_evaluation.py``) scores a user's top-k list
``ranked`` against the user's test items ``relevant`` (every test item is relevant, binary gains) and
averages each metric over the users:

* ``Precision@k = hits / k`` (even when the user has fewer than k relevant items);
* ``Recall@k = hits / |relevant|``;
* ``NDCG@k = DCG / IDCG`` with ``DCG = Σ_{hit at rank r <= k} 1 / log(1 + r)`` and the ideal DCG of
  ``min(|relevant|, k)`` hits (the base of the log cancels);
* ``MAP@k`` (their ``map_at_k``) ``= Σ_{hit at rank r <= k} precision@r / min(|relevant|, k)``;
* ``MAP`` (their ``map``, the ``map_at_k`` of their older releases and of the published benchmark table)
  divides the same sum by ``|relevant|``.

Leave-one-out adds ``HR@k`` (1 if any relevant item is in the top k) and ``MRR@k`` (1 / rank of the first
relevant item in the top k, else 0). With one relevant item, ``NDCG@k`` is ``1 / log2(1 + rank)``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

#: The columns of :func:`user_metrics`, in table order.
METRICS: tuple[str, ...] = ("Precision", "Recall", "NDCG", "MAP", "MAP_rel", "HR", "MRR")


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k {k!r} must be a positive integer")
    return k


def ndcg_set_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Binary-gain NDCG@k against a set of relevant items (0.0 if nothing is relevant)."""
    _check_k(k)
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(r + 1) for r, item in enumerate(ranked[:k], start=1) if item in relevant)
    idcg = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(relevant), k) + 1))
    return dcg / idcg


def user_metrics(ranked: Sequence[str], relevant: Collection[str], k: int) -> dict[str, float]:
    """Every column of :data:`METRICS` for one user's list (all 0.0 if nothing is relevant).

    Only the first ``k`` of ``ranked`` count; a list that repeats an item there is an error.
    """
    _check_k(k)
    top = ranked[:k]
    if len(set(top)) != len(top):
        raise ValueError(f"ranked list {list(top)!r} repeats an item")
    out = dict.fromkeys(METRICS, 0.0)
    if not relevant:
        return out
    hits, ap_sum, first = 0, 0.0, 0
    for r, item in enumerate(top, start=1):
        if item in relevant:
            hits += 1
            ap_sum += hits / r
            first = first or r
    out["Precision"] = hits / k
    out["Recall"] = hits / len(relevant)
    out["NDCG"] = ndcg_set_at_k(top, relevant, k)
    out["MAP"] = ap_sum / min(len(relevant), k)
    out["MAP_rel"] = ap_sum / len(relevant)
    out["HR"] = 1.0 if hits else 0.0
    out["MRR"] = 1.0 / first if first else 0.0
    return out
