"""Batch references the stream tests compare against (numpy, no Flink)."""

from __future__ import annotations

import math
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


def batch_user_cosine(events: Iterable[tuple[str, str, float, int]]) -> tuple[list[str], np.ndarray]:
    """Dense batch recompute: ``(users sorted, S)`` with ``S = R Rᵀ / outer(‖R_u‖, ‖R_u‖)`` over the final weight of
    each (user, item) (the last event wins)."""
    final: dict[tuple[str, str], float] = {}
    for user, item, w, _ts in events:
        final[(user, item)] = float(w)
    users = sorted({u for u, _ in final})
    items = sorted({i for _, i in final})
    uidx = {u: k for k, u in enumerate(users)}
    iidx = {i: k for k, i in enumerate(items)}
    r = np.zeros((len(users), len(items)))
    for (u, i), w in final.items():
        r[uidx[u], iidx[i]] = w
    norms = np.linalg.norm(r, axis=1)
    denom = np.outer(norms, norms)
    sims = np.divide(r @ r.T, denom, out=np.zeros_like(denom), where=denom > 0)
    return users, sims


# A hand-built stream whose lists are worked out by hand (tests/test_job_hybrid.py):
# u2: a 4, b 5, c 1; u3: e 5; u4: e 3; u1: a 5, b 4.
# Item-CF for u1 (seen a, b): norm_a = 25 + 16 = 41, norm_b = 16 + 25 = 41, norm_c = 1,
#   sim(a, c) = 4/√41, sim(b, c) = 5/√41 -> score(c) = 5·4/√41 + 4·5/√41 = 40/√41 (a and b tie: reason a).
# User-CF for u1: D[u1][u2] = 5·4 + 4·5 = 40, norm_u1 = 41, norm_u2 = 42 -> score(c) = 40/√1722 · 1.
# Content: u1's profile is pure Comedy -> d (the only unseen Comedy).
# Trending (window counts): a 2, b 2, e 2, c 1 -> unseen by u1: e 2, c 1.
CATALOG = [
    {"item_id": "a", "title": "Alpha", "year": None, "genres": ["Comedy"]},
    {"item_id": "b", "title": "Bravo", "year": None, "genres": ["Comedy"]},
    {"item_id": "c", "title": "Charlie", "year": None, "genres": ["Drama"]},
    {"item_id": "d", "title": "Delta", "year": None, "genres": ["Comedy"]},
    {"item_id": "e", "title": "Echo", "year": None, "genres": ["Action"]},
]
STREAM = [("u2", "a", 4.0), ("u2", "b", 5.0), ("u2", "c", 1.0), ("u3", "e", 5.0), ("u4", "e", 3.0),
          ("u1", "a", 5.0), ("u1", "b", 4.0)]

# Negative feedback (tests/test_core_v2_negative.py, tests/test_job_negative.py), worked out by hand:
# u2: a 4, b 5, c 1, x 3; u5: x 2, c 2; u1: a 5, b 4.
# norm_a = 41, norm_b = 41, norm_c = 1 + 4 = 5, norm_x = 9 + 4 = 13; C[a][c] = 4, C[b][c] = 5, C[x][c] = 3 + 4 = 7.
# u1's item-CF score of c: 5 · 4/√205 + 4 · 5/√205 = 40/√205; a dislike of x takes dislike_weight · 7/√65 off it.
NEG_CATALOG = [*CATALOG, {"item_id": "x", "title": "Xray", "year": None, "genres": ["Comedy", "Drama"]}]
NEG_STREAM = [("u2", "a", 4.0), ("u2", "b", 5.0), ("u2", "c", 1.0), ("u2", "x", 3.0), ("u5", "x", 2.0),
              ("u5", "c", 2.0), ("u1", "a", 5.0), ("u1", "b", 4.0)]
NEG_SCORE_C = 40 / math.sqrt(205)
NEG_SIM_XC = 7 / math.sqrt(65)
