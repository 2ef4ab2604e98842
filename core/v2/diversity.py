"""Diversity of a ranked list: the maximal-marginal-relevance re-rank and intra-list diversity.

MMR (Carbonell & Goldstein 1998) picks, one at a time, the candidate with the best
``rel(c) − λ · max_{s chosen} sim(c, s)``, where ``rel`` is the candidate's score min-max scaled over the candidates
(so λ does not depend on the scale of a fusion's scores) and ``sim`` is the cosine of the content vectors
(:class:`core.v2.catalog.Vectors`) or, with ``sim_kind=ITEMCF``, the item-CF cosine from the neighbour lists (0 for a
pair neither list holds). λ = 0 keeps the order; ties go to the better original position. Intra-list diversity is
``1 − mean pairwise similarity`` of a list; :func:`cooccurrence_vectors` gives the collaborative vectors it is
measured on in CF papers (each item's set of users, so the cosine is the co-occurrence cosine).
"""

from __future__ import annotations

import numpy as np
from numba import njit

CONTENT, ITEMCF = 0, 1


@njit(cache=True)
def _scatter(x: int, dense: np.ndarray, vptr: np.ndarray, vcol: np.ndarray, vval: np.ndarray, on: bool) -> None:
    """Item x's vector into the zero ``dense`` (on), or those entries back to 0."""
    for p in range(vptr[x], vptr[x + 1]):
        dense[vcol[p]] = vval[p] if on else 0.0


@njit(cache=True)
def _content_sim(c: int, x: int, dense: np.ndarray, vptr: np.ndarray, vcol: np.ndarray, vval: np.ndarray,
                 vnorm: np.ndarray) -> float:
    """cos(c, x) with x's vector scattered into ``dense``."""
    if vnorm[c] <= 0.0 or vnorm[x] <= 0.0:
        return 0.0
    d = 0.0
    for p in range(vptr[c], vptr[c + 1]):
        d += vval[p] * dense[vcol[p]]
    return d / (vnorm[c] * vnorm[x])


@njit(cache=True)
def _itemcf_sim(c: int, x: int, nb_idx: np.ndarray, nb_sim: np.ndarray, nb_len: np.ndarray) -> float:
    for k in range(nb_len[x]):
        if nb_idx[x, k] == c:
            return nb_sim[x, k]
    for k in range(nb_len[c]):
        if nb_idx[c, k] == x:
            return nb_sim[c, k]
    return 0.0


@njit(cache=True)
def _sim(kind: int, c: int, x: int, dense: np.ndarray, vptr: np.ndarray, vcol: np.ndarray, vval: np.ndarray,
         vnorm: np.ndarray, nb_idx: np.ndarray, nb_sim: np.ndarray, nb_len: np.ndarray) -> float:
    if kind == CONTENT:
        return _content_sim(c, x, dense, vptr, vcol, vval, vnorm)
    return _itemcf_sim(c, x, nb_idx, nb_sim, nb_len)


@njit(cache=True)
def mmr(items: np.ndarray, scores: np.ndarray, n: int, lam: float, kind: int, vptr: np.ndarray, vcol: np.ndarray,
        vval: np.ndarray, vnorm: np.ndarray, nb_idx: np.ndarray, nb_sim: np.ndarray,
        nb_len: np.ndarray) -> np.ndarray:
    """The positions in ``items`` (best first, scores descending) of the ``n`` the MMR re-rank picks, in order."""
    m = len(items)
    n = min(n, m)
    out = np.empty(n, dtype=np.int64)
    if n == 0:
        return out
    lo, hi = scores.min(), scores.max()
    span = hi - lo
    rel = np.empty(m)
    for c in range(m):
        rel[c] = (scores[c] - lo) / span if span > 0 else 1.0
    maxsim = np.zeros(m)
    taken = np.zeros(m, dtype=np.bool_)
    dense = np.zeros(vcol.max() + 1 if kind == CONTENT and len(vcol) else 1)
    for t in range(n):
        best, best_v = -1, 0.0
        for c in range(m):
            if not taken[c]:
                v = rel[c] - lam * maxsim[c]
                if best < 0 or v > best_v:  # strict: a tie keeps the better original position
                    best, best_v = c, v
        out[t] = best
        taken[best] = True
        if t + 1 < n and lam != 0.0:
            x = items[best]
            if kind == CONTENT:
                _scatter(x, dense, vptr, vcol, vval, True)
            for c in range(m):
                if not taken[c]:
                    s = _sim(kind, items[c], x, dense, vptr, vcol, vval, vnorm, nb_idx, nb_sim, nb_len)
                    if s > maxsim[c]:
                        maxsim[c] = s
            if kind == CONTENT:
                _scatter(x, dense, vptr, vcol, vval, False)
    return out


@njit(cache=True)
def intra_list_diversity(items: np.ndarray, kind: int, vptr: np.ndarray, vcol: np.ndarray, vval: np.ndarray,
                         vnorm: np.ndarray, nb_idx: np.ndarray, nb_sim: np.ndarray, nb_len: np.ndarray) -> float:
    """``1 − mean pairwise similarity`` of a list (0 for fewer than two items)."""
    m = len(items)
    if m < 2:
        return 0.0
    dense = np.zeros(vcol.max() + 1 if kind == CONTENT and len(vcol) else 1)
    total = 0.0
    for a in range(m):
        if kind == CONTENT:
            _scatter(items[a], dense, vptr, vcol, vval, True)
        for b in range(a + 1, m):
            total += _sim(kind, items[b], items[a], dense, vptr, vcol, vval, vnorm, nb_idx, nb_sim, nb_len)
        if kind == CONTENT:
            _scatter(items[a], dense, vptr, vcol, vval, False)
    return 1.0 - total / (m * (m - 1) / 2)


def cooccurrence_vectors(item: np.ndarray, user: np.ndarray,
                         n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each item's binary vector over users, as CSR ``(ptr, col, val, norm)`` over ``n_items`` rows, from the
    (item, user) pairs of the events (a pair seen twice counts once): the cosine of two rows is the co-occurrence
    cosine ``|U_a ∩ U_b| / sqrt(|U_a| · |U_b|)``."""
    item, user = np.asarray(item, dtype=np.int64), np.asarray(user, dtype=np.int64)
    if len(item) and (item.min() < 0 or item.max() >= n_items or user.min() < 0):
        raise ValueError(f"item ids must be in [0, {n_items}) and user ids >= 0")
    pairs = np.unique(np.stack([item, user], axis=1), axis=0) if len(item) else np.zeros((0, 2), dtype=np.int64)
    counts = np.bincount(pairs[:, 0], minlength=n_items)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return ptr, pairs[:, 1].copy(), np.ones(len(pairs)), np.sqrt(counts.astype(np.float64))


@njit(cache=True)
def mmr_rows(item: np.ndarray, score: np.ndarray, length: np.ndarray, n: int, lam: float, kind: int,
             vptr: np.ndarray, vcol: np.ndarray, vval: np.ndarray, vnorm: np.ndarray, nb_idx: np.ndarray,
             nb_sim: np.ndarray, nb_len: np.ndarray, out_pos: np.ndarray, out_len: np.ndarray) -> None:
    """:func:`mmr` of every row ``r`` of ``item/score[r, :length[r]]`` into ``out_pos[r, :out_len[r]]``."""
    for r in range(item.shape[0]):
        m = length[r]
        picked = mmr(item[r, :m], score[r, :m], n, lam, kind, vptr, vcol, vval, vnorm, nb_idx, nb_sim, nb_len)
        out_len[r] = len(picked)
        out_pos[r, : len(picked)] = picked
