"""Batch references the stream tests compare against (numpy, no Flink)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def batch_cosine(events: Iterable[tuple[str, str, float]]) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """Item cosine ``RᵀR / sqrt(norm_i norm_j)`` over the final weight of each (user, item) (last event wins).

    Returns the item index, the cosine matrix and the norms ``Σ_u w_ui²``.
    """
    final: dict[tuple[str, str], float] = {}
    for u, i, w in events:
        final[(u, i)] = w
    users = {u: n for n, u in enumerate(sorted({u for u, _ in final}))}
    items = {i: n for n, i in enumerate(sorted({i for _, i in final}))}
    r = np.zeros((len(users), len(items)))
    for (u, i), w in final.items():
        r[users[u], items[i]] = w
    c = r.T @ r
    norms = np.diag(c).copy()
    return items, c / np.sqrt(np.outer(norms, norms)), norms
