"""Incremental latent factors: one SGD step per event, over dense user and item rows.

Explicit ratings learn the biased model ``r̂ = μ + b_u + b_i + p_u · q_i`` (error ``r − r̂``); positive-only
events learn ``b_i + p_u · q_i`` towards 1 (ISGD, Vinagre et al. 2014, "Fast incremental matrix factorization for
recommendation with positive-only feedback") and, for ``n_neg`` sampled items, towards 0: without negatives every
score drifts to 1 and the ranking loses its order. Negatives are drawn, by a seeded draw of the event's key (the
same events in the same order draw the same items in every process), uniformly from the items engaged so far
(:func:`learn_uniform`), so ``b_i`` learns each item's popularity. Every step updates ``p_u`` and ``q_i`` from each
other's values before it, and ``μ`` is the running mean of the ratings before the event's own.

A new row starts from a seeded draw of its id's hash (:attr:`core.v2.ids.IdIndex.hash`), not of its dense index, so
a row is the same in every process that learns the same events in the same order, whatever order the ids arrived
in. Candidates are the items with the best ``b_i + p_u · q_i`` over the catalog, ties by id (:func:`top_items`).

The model core keeps the rows in its state (``State.f_*``) and learns them with these kernels in
:func:`core.v2.model.learn`; :class:`Factors` is the same model standalone (the unit tests' subject).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from core.v2.kernels import _fdot, _insert_top, mix


class FactorSpec(NamedTuple):
    dim: int = 16
    lr: float = 0.01  # SGD step
    reg: float = 0.02  # L2 penalty of the factors and biases
    init_std: float = 0.1  # rows start as N(0, init_std²) draws
    seed: int = 0
    explicit: bool = True  # biased MF of ratings; False: positive-only (target 1, sampled negatives target 0)
    n_neg: int = 4  # positive-only: sampled negatives per event

    def check(self) -> FactorSpec:
        if self.dim < 1:
            raise ValueError(f"factors.dim must be >= 1, got {self.dim!r}")
        for name in ("lr", "init_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"factors.{name} must be > 0, got {getattr(self, name)!r}")
        if not self.reg >= 0:
            raise ValueError(f"factors.reg must be >= 0, got {self.reg!r}")
        if self.n_neg < 0:
            raise ValueError(f"factors.n_neg must be >= 0, got {self.n_neg!r}")
        return self


@njit(cache=True)
def init_rows(out: np.ndarray, start: int, stop: int, hashes: np.ndarray, seed: int, std: float) -> None:
    """Rows ``start..stop`` of ``out``: N(0, std²) draws (Box–Muller) of (seed, id hash, column)."""
    d = out.shape[1]
    for r in range(start, stop):
        base = mix(seed, hashes[r])
        for k in range(d):
            x = mix(base, 2 * k)
            y = mix(base, 2 * k + 1)
            u1 = (((x >> 11) & 0x1FFFFFFFFFFFFF) + 1.0) / 9007199254740993.0  # (0, 1]
            u2 = ((y >> 11) & 0x1FFFFFFFFFFFFF) / 9007199254740992.0
            out[r, k] = std * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


@njit(cache=True, inline="always")
def _step(u: int, i: int, err: float, p: np.ndarray, q: np.ndarray, lr: float, reg: float) -> None:
    for k in range(p.shape[1]):
        pk = p[u, k]
        qk = q[i, k]
        p[u, k] = pk + lr * (err * qk - reg * pk)
        q[i, k] = qk + lr * (err * pk - reg * qk)


@njit(cache=True)
def learn_explicit(ev_user: np.ndarray, ev_item: np.ndarray, ev_rating: np.ndarray, p: np.ndarray, q: np.ndarray,
                   bu: np.ndarray, bi: np.ndarray, mean: np.ndarray, lr: float, reg: float) -> float:
    """One step per rating, in the order given; ``mean`` is [Σ ratings, count]. Returns the summed squared error
    of the predictions made before each step (the prequential loss)."""
    loss = 0.0
    for e in range(len(ev_user)):
        u, i, r = ev_user[e], ev_item[e], ev_rating[e]
        mu = mean[0] / mean[1] if mean[1] > 0 else r
        err = r - (mu + bu[u] + bi[i] + _fdot(u, i, p, q))
        loss += err * err
        bu[u] += lr * (err - reg * bu[u])
        bi[i] += lr * (err - reg * bi[i])
        _step(u, i, err, p, q, lr, reg)
        mean[0] += r
        mean[1] += 1.0
    return loss


@njit(cache=True, inline="always")
def _towards(u: int, i: int, target: float, p: np.ndarray, q: np.ndarray, bi: np.ndarray, lr: float,
             reg: float) -> float:
    err = target - (bi[i] + _fdot(u, i, p, q))
    bi[i] += lr * (err - reg * bi[i])
    _step(u, i, err, p, q, lr, reg)
    return err


@njit(cache=True)
def learn_uniform(ev_user: np.ndarray, ev_item: np.ndarray, ev_key: np.ndarray, p: np.ndarray, q: np.ndarray,
                  bi: np.ndarray, seen: np.ndarray, pool: np.ndarray, pool_n: np.ndarray, n_neg: int, seed: int,
                  lr: float, reg: float) -> float:
    """Positive-only steps, one per event in order: ``b_i + p_u · q_i`` towards 1, then ``n_neg`` items drawn by
    (seed, event key) uniformly from the distinct items engaged before the event (``pool[:pool_n[0]]``, in the order
    first engaged; ``seen[i]``: i is in it; ``pool`` holds room for every item) towards 0. Returns the summed squared
    error of the positive predictions."""
    loss = 0.0
    for e in range(len(ev_user)):
        u, i = ev_user[e], ev_item[e]
        err = _towards(u, i, 1.0, p, q, bi, lr, reg)
        loss += err * err
        filled = pool_n[0]
        if filled > 0:
            base = mix(seed, ev_key[e])
            for j in range(n_neg):
                k = pool[(mix(base, j) & 0x7FFFFFFFFFFFFFFF) % filled]
                if k != i:
                    _towards(u, k, 0.0, p, q, bi, lr, reg)
        if not seen[i]:
            seen[i] = True
            pool[filled] = i
            pool_n[0] = filled + 1
    return loss


@njit(cache=True)
def predict(users: np.ndarray, items: np.ndarray, p: np.ndarray, q: np.ndarray, bu: np.ndarray, bi: np.ndarray,
            mu: float) -> np.ndarray:
    """``mu + b_u + b_i + p_u · q_i`` per (user, item) pair (mu = 0 and zero biases: the positive-only score)."""
    out = np.empty(len(users))
    for e in range(len(users)):
        out[e] = mu + bu[users[e]] + bi[items[e]] + _fdot(users[e], items[e], p, q)
    return out


@njit(cache=True)
def top_items(u: int, n: int, p: np.ndarray, q: np.ndarray, bi: np.ndarray, skip: np.ndarray,
              rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` items with the best ``b_i + p_u · q_i`` (``skip[i]``: not a candidate), best first, ties by
    ``rank`` (the ids' string order)."""
    idx = np.empty(n, dtype=np.int64)
    val = np.empty(n)
    m = 0
    for i in range(q.shape[0]):
        if not skip[i]:
            m = _insert_top(n, m, idx, val, rank, i, bi[i] + _fdot(u, i, p, q))
    return idx[:m], val[:m]


class Factors:
    """User rows ``p``/``bu`` and item rows ``q``/``bi``, sized by :meth:`fit`; :meth:`learn` runs one step per
    event in the order given."""

    def __init__(self, spec: FactorSpec) -> None:
        self.spec = spec.check()
        self.p = np.zeros((0, spec.dim))
        self.q = np.zeros((0, spec.dim))
        self.bu = np.zeros(0)
        self.bi = np.zeros(0)
        self.mean = np.zeros(2)  # [Σ ratings, count]
        self.seen = np.zeros(0, dtype=np.bool_)  # positive-only: the items engaged so far (negatives), ...
        self.pool = np.zeros(0, dtype=np.int64)  # ... in the order first engaged
        self.pool_n = np.zeros(1, dtype=np.int64)

    def fit(self, user_hash: np.ndarray, item_hash: np.ndarray) -> None:
        """Grow the rows to ``len(user_hash)`` users and ``len(item_hash)`` items; new rows from their ids' hashes."""
        s = self.spec
        for name, bias, hashes, salt in (("p", "bu", user_hash, 1), ("q", "bi", item_hash, 2)):
            old = getattr(self, name)
            if len(hashes) > len(old):
                grown = np.zeros((len(hashes), s.dim))
                grown[: len(old)] = old
                init_rows(grown, len(old), len(hashes), np.asarray(hashes, dtype=np.int64), mix(s.seed, salt),
                          s.init_std)
                setattr(self, name, grown)
                b = np.zeros(len(hashes))
                b[: len(old)] = getattr(self, bias)
                setattr(self, bias, b)
        grow = len(item_hash) - len(self.seen)
        if grow > 0:
            self.seen = np.concatenate([self.seen, np.zeros(grow, dtype=np.bool_)])
            self.pool = np.concatenate([self.pool, np.zeros(grow, dtype=np.int64)])

    def learn(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray | None = None,
              keys: np.ndarray | None = None) -> float:
        """One step per event, in the order given: ``ratings`` for the explicit model, the events' ``keys``
        (:attr:`core.v2.model.Batch.key`) for the positive-only one. Returns the prequential squared-error sum."""
        s = self.spec
        if s.explicit:
            if ratings is None:
                raise ValueError("the explicit factor model learns ratings: pass ratings")
            return float(learn_explicit(users, items, np.asarray(ratings, dtype=np.float64), self.p, self.q, self.bu,
                                        self.bi, self.mean, s.lr, s.reg))
        if keys is None:
            raise ValueError("the positive-only factor model draws negatives by event key: pass keys")
        return float(learn_uniform(users, items, np.asarray(keys, dtype=np.int64), self.p, self.q, self.bi, self.seen,
                                   self.pool, self.pool_n, s.n_neg, s.seed, s.lr, s.reg))

    @property
    def mu(self) -> float:
        return float(self.mean[0] / self.mean[1]) if self.mean[1] else 0.0

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.asarray(predict(users, items, self.p, self.q, self.bu, self.bi, self.mu if self.spec.explicit
                                  else 0.0))

    def top(self, user: int, n: int, skip: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return top_items(user, n, self.p, self.q, self.bi, skip, rank)
