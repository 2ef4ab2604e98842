"""Incremental item-based collaborative filtering.

The model is the item co-occurrence matrix of user weights and the item norms,

    C[i][j] = Σ_u w_ui · w_uj        norm_i = Σ_u w_ui²        sim(i, j) = C[i][j] / sqrt(norm_i · norm_j)

kept exactly under a stream of (user, item, weight) events where a repeated (user, item) *replaces*
the old weight: every derived sum is updated by the difference.

When user u engages item i with weight w (old weight w0, 0 if new), the pairs (i, k) for k in u's
*recent history* (the ``history_cap`` most recent other items; 0 = every item of u) change by
``(w - w0) · w_uk`` and norm_i by ``w² - w0²``. With the cap off, C equals ``Rᵀ R`` of the final
user×item weight matrix R, whatever the order of the events; with the cap on, a pair only counts
while both items are in the user's recent window (a bounded-work approximation).

The pieces are split the way the Flink job partitions them:

* :class:`UserHistory` is the per-user state (keyed by user);
* :func:`user_event` turns one event into norm and pair deltas;
* :class:`ItemRows` holds co-occurrence rows of the items one shard owns, a copy of every norm, and
  each owned item's top-K neighbours;
* :func:`rank_items` scores unseen items for a user from the neighbour lists of their history.

:class:`ItemCF` glues them together in one process: the reference implementation, the evaluation's
and the benchmark's single-process model, and what the stream tests compare against.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

Neighbors = list[tuple[str, float]]


@dataclass
class UserHistory:
    """What the job keeps per user: every engaged item's current weight, and the recent items."""

    weights: dict[str, float] = field(default_factory=dict)
    recent: list[str] = field(default_factory=list)  # most recent last, at most history_cap (0 = all)
    last_ts: int = 0
    last_event_id: str = ""
    event_ids: dict[str, int] = field(default_factory=dict)  # event id -> ts, for de-duplication

    def recent_weights(self) -> list[tuple[str, float]]:
        return [(k, self.weights[k]) for k in self.recent]

    def remember(self, event_id: str, ts: int, ttl_ms: int, max_ids: int) -> bool:
        """Record ``event_id``; False if it was seen before (a duplicate delivery to drop).

        Ids are forgotten only when a user has more than ``max_ids`` of them: first those older (in
        event time) than ``ttl_ms`` before the user's newest event, then the oldest, down to half.
        """
        ids = self.event_ids
        if event_id in ids:
            return False
        ids[event_id] = ts
        if len(ids) > max_ids:
            horizon = max(self.last_ts, ts) - ttl_ms
            kept = [(e, t) for e, t in ids.items() if t >= horizon]
            self.event_ids = dict(kept[-(max_ids // 2 or 1):])
        return True


def user_event(hist: UserHistory, item: str, weight: float, ts: int,
               history_cap: int, event_id: str = "") -> tuple[float, float, Neighbors]:
    """Apply one event to ``hist`` (in place).

    Returns ``(norm_delta, weight_delta, partners)``: norm_item changes by ``norm_delta`` and every
    pair (item, k) for ``(k, w_k)`` in ``partners`` changes by ``weight_delta · w_k``.
    """
    old = hist.weights.get(item, 0.0)
    dw = weight - old
    partners = [(k, hist.weights[k]) for k in hist.recent if k != item]
    if item in hist.weights:
        with contextlib.suppress(ValueError):  # not there if evicted from the recent window earlier
            hist.recent.remove(item)
    hist.weights[item] = weight
    hist.recent.append(item)
    if history_cap and len(hist.recent) > history_cap:
        del hist.recent[: len(hist.recent) - history_cap]
    if ts >= hist.last_ts:  # the newest event (in event time) names the state's version
        hist.last_ts, hist.last_event_id = ts, event_id
    return weight * weight - old * old, dw, partners


class PairDeltas:
    """Accumulates symmetric co-occurrence deltas and norm deltas of a batch of events."""

    __slots__ = ("counts", "norms", "pairs")

    def __init__(self) -> None:
        self.norms: dict[str, float] = {}
        self.pairs: dict[str, dict[str, float]] = {}  # row item -> {column item: delta}
        self.counts: dict[str, int] = {}  # engagements per item in the batch (popularity)

    def add(self, item: str, norm_delta: float, dw: float, partners: Neighbors, new: bool) -> None:
        if norm_delta:
            self.norms[item] = self.norms.get(item, 0.0) + norm_delta
        if new:
            self.counts[item] = self.counts.get(item, 0) + 1
        if dw == 0.0 or not partners:
            return
        row = self.pairs.setdefault(item, {})
        for k, wk in partners:
            d = dw * wk
            row[k] = row.get(k, 0.0) + d
            other = self.pairs.setdefault(k, {})
            other[item] = other.get(item, 0.0) + d

    def __bool__(self) -> bool:
        return bool(self.norms or self.pairs or self.counts)


def top_k(scores: Mapping[str, float] | Iterable[tuple[str, float]], k: int) -> Neighbors:
    """The k highest (item, score) pairs, ties broken by item id, positive scores only."""
    if isinstance(scores, Mapping):
        return top_n(scores, k, positive=True)
    best = heapq.nsmallest(k, ((-s, i) for i, s in scores if s > 0.0))
    return [(i, -s) for s, i in best]


def top_n(scores: Mapping[str, float], n: int, positive: bool = False) -> Neighbors:
    """The ``n`` highest ``(item, score)`` of a mapping, by score then item id (only scores > 0 with
    ``positive``): exactly ``sorted(..., key=(-score, item))[:n]``, with numpy choosing the few candidates
    (every tie of the n-th score, so the id tie-break stays exact) before Python sorts them."""
    size = len(scores)
    if n <= 0 or size == 0:
        return []
    if size <= 2 * n + 16:  # small: a plain sort is cheaper than the numpy round trip
        pairs = [(-s, i) for i, s in scores.items() if s > 0.0] if positive else [(-s, i) for i, s in scores.items()]
        pairs.sort()
        return [(i, -s) for s, i in pairs[:n]]
    keys = list(scores)
    vals = np.fromiter(scores.values(), dtype=np.float64, count=size)
    pos = np.flatnonzero(vals > 0.0) if positive else np.arange(size)
    if len(pos) > n:
        sub = vals[pos]
        kth = np.partition(sub, len(sub) - n)[len(sub) - n]
        pos = pos[sub >= kth]
    best = sorted([(-s, keys[p]) for p, s in zip(pos.tolist(), vals[pos].tolist(), strict=True)])[:n]
    return [(i, -s) for s, i in best]


class ItemRows:
    """Co-occurrence rows of the items one shard owns, plus a copy of every item's norm.

    Columns are small integers from a shard-local, append-only index (``index``/``names``) so that a
    row's similarities are computed with numpy in one pass: ``rows[a]`` maps column index -> C[a][b].
    ``rev[b]`` lists the owned rows holding column b, so that a change of norm_b refreshes exactly
    the similarities it changes; it is derived from ``rows`` and rebuilt by :meth:`rebuild_index`
    (kept only with ``refresh_on_norms``).
    """

    def __init__(self, top_k: int, eps: float = 1e-12, refresh_on_norms: bool = True, row_cap: int = 0) -> None:
        if isinstance(row_cap, bool) or not isinstance(row_cap, int) or row_cap < 0:
            raise ValueError(f"row_cap {row_cap!r} must be a non-negative integer (0 = unlimited)")
        if row_cap and row_cap < top_k:
            raise ValueError(f"row_cap {row_cap!r} must be 0 or at least top_k {top_k!r}")
        self.k = top_k
        self.eps = eps
        # > 0: a row that grows past 1.25 x row_cap entries is pruned to the row_cap entries with the largest
        # C[a][b] / sqrt(norm_b) (the order of a's neighbours); a pruned pair restarts from 0 if it comes back
        self.row_cap = row_cap
        self.pruned = 0  # entries dropped by the cap so far
        # True: a change of norm_b marks every row holding column b for refresh (lists always exact, but a
        # popular item's or an active user's norm moves with every event and dirties most rows). False: a row
        # is refreshed when its own sums or its own norm change, with every column's current norm; lists of
        # untouched rows may use older column norms until then (:meth:`mark_all` makes them exact again).
        self.refresh_on_norms = refresh_on_norms
        self.index: dict[str, int] = {}
        self.names: list[str] = []
        self.rows: dict[str, dict[int, float]] = {}
        self._norm = np.zeros(64)
        self.counts: dict[str, int] = {}
        self.rev: dict[int, set[str]] = {}
        self.dirty: dict[str, None] = {}  # owned rows whose neighbour lists are out of date, oldest first

    # -- index and norms ------------------------------------------------------------------------
    def idx(self, item: str) -> int:
        i = self.index.get(item)
        if i is None:
            i = self.index[item] = len(self.names)
            self.names.append(item)
            if i >= len(self._norm):
                self._norm = np.concatenate([self._norm, np.zeros(len(self._norm))])
        return i

    @property
    def norms(self) -> dict[str, float]:
        return {name: float(self._norm[i]) for i, name in enumerate(self.names) if self._norm[i] > 0}

    def norm(self, item: str) -> float:
        i = self.index.get(item)
        return float(self._norm[i]) if i is not None else 0.0

    def load(self, index: Mapping[str, int], rows: Mapping[str, dict[int, float]], norms: Mapping[str, float],
             counts: Mapping[str, int]) -> None:
        """Restore from Flink state (the index as written by :meth:`idx`, rows, norms, counts)."""
        self.names = [""] * len(index)
        for name, i in index.items():
            self.names[i] = name
        self.index = dict(index)
        self._norm = np.zeros(max(64, 2 * len(self.names)))
        for name, v in norms.items():
            self._norm[self.idx(name)] = v
        self.rows = dict(rows)
        self.counts = dict(counts)
        self.rebuild_index()

    def rebuild_index(self) -> None:
        self.rev = {}
        if not self.refresh_on_norms:
            return
        for a, row in self.rows.items():
            for b in row:
                self.rev.setdefault(b, set()).add(a)

    # -- updates --------------------------------------------------------------------------------
    def apply(self, norms: Mapping[str, float], pairs: Mapping[str, Mapping[str, float]],
              counts: Mapping[str, int]) -> tuple[set[str], set[str]]:
        """Add norm deltas (all items) and pair deltas (owned rows only).

        Returns ``(changed_rows, refresh)``: the owned rows whose entries changed, and every owned row
        whose similarities may have changed (changed rows plus rows holding an item whose norm moved).
        """
        norm = self._norm
        for item, d in norms.items():
            i = self.idx(item)
            norm = self._norm
            n = norm[i] + d
            norm[i] = n if n > self.eps else 0.0
        for item, c in counts.items():
            self.counts[item] = self.counts.get(item, 0) + c
        changed: set[str] = set()
        rev = self.rev
        track = self.refresh_on_norms
        eps = self.eps
        for a, deltas in pairs.items():
            row = self.rows.get(a)
            if row is None:
                row = self.rows[a] = {}
            for b_name, d in deltas.items():
                b = self.idx(b_name)
                v = row.get(b, 0.0) + d
                if abs(v) <= eps:
                    if b in row:
                        del row[b]
                        if track:
                            rev.get(b, set()).discard(a)
                else:
                    if track and b not in row:
                        rev.setdefault(b, set()).add(a)
                    row[b] = v
            if self.row_cap and len(row) > self.row_cap + self.row_cap // 4:
                self._prune(a, row)
            changed.add(a)
        refresh = set(changed)
        for item in norms:
            if track:
                refresh.update(rev.get(self.index[item], ()))
            if item in self.rows:
                refresh.add(item)
        self.dirty.update(dict.fromkeys(refresh))
        return changed, refresh

    def _prune(self, a: str, row: dict[int, float]) -> None:
        """Keep the ``row_cap`` entries of row ``a`` with the largest ``C[a][b] / sqrt(norm_b)``."""
        n = len(row)
        cols = np.fromiter(row.keys(), dtype=np.int64, count=n)
        vals = np.fromiter(row.values(), dtype=np.float64, count=n)
        nb = self._norm[cols]
        with np.errstate(divide="ignore", invalid="ignore"):
            key = np.where(nb > 0, vals / np.sqrt(nb), -np.inf)
        drop = np.argpartition(key, n - self.row_cap)[: n - self.row_cap]
        for b in cols[drop].tolist():
            del row[b]
            if self.refresh_on_norms:
                self.rev.get(b, set()).discard(a)
        self.pruned += len(drop)

    def mark_all(self) -> None:
        """Mark every row for refresh (e.g. at the end of a bounded input, when ``refresh_on_norms`` is off)."""
        self.dirty.update(dict.fromkeys(self.rows))

    def refresh(self, budget_s: float | None = None, only: Iterable[str] | None = None) -> dict[str, Neighbors]:
        """Recompute the neighbour lists of dirty rows, oldest first, for at most ``budget_s`` seconds.

        Rows left over stay dirty for the next call; ``budget_s=None`` refreshes them all. Under load
        this bounds the work per window, at the price of neighbour lists that lag behind the sums.
        ``only``: refresh just these rows (those of them that are dirty); the others stay dirty.
        """
        out: dict[str, Neighbors] = {}
        if only is not None:
            for a in only:
                if a in self.dirty:
                    del self.dirty[a]
                    out[a] = self.neighbors(a)
            return out
        if budget_s is None:
            out = {a: self.neighbors(a) for a in self.dirty}
            self.dirty.clear()
            return out
        deadline = time.perf_counter() + budget_s
        dirty = self.dirty
        while dirty and budget_s > 0:
            a = next(iter(dirty))
            del dirty[a]
            out[a] = self.neighbors(a)
            if len(out) % 16 == 0 and time.perf_counter() > deadline:
                break
        return out

    # -- reads ----------------------------------------------------------------------------------
    def similarity(self, a: str, b: str) -> float:
        ib = self.index.get(b)
        c = self.rows.get(a, {}).get(ib, 0.0) if ib is not None else 0.0
        na, nb = self.norm(a), self.norm(b)
        return c / math.sqrt(na * nb) if c and na > 0 and nb > 0 else 0.0

    def neighbors(self, a: str) -> Neighbors:
        """The top-K most similar items of an owned item, by cosine, computed from the current sums."""
        row = self.rows.get(a)
        na = self.norm(a)
        if not row or na <= 0:
            return []
        n = len(row)
        cols = np.fromiter(row.keys(), dtype=np.int64, count=n)
        vals = np.fromiter(row.values(), dtype=np.float64, count=n)
        nb = self._norm[cols]
        with np.errstate(divide="ignore", invalid="ignore"):
            sims = np.where(nb > 0, vals / np.sqrt(nb * na), 0.0)
        pos = np.flatnonzero(sims > 0)
        if len(pos) > self.k:
            # the k-th largest value; keep every tie of it so the name tie-break below is exact
            kth = np.partition(sims[pos], len(pos) - self.k)[len(pos) - self.k]
            pos = pos[sims[pos] >= kth]
        names = self.names
        best = sorted((-float(sims[p]), names[int(cols[p])]) for p in pos)[: self.k]
        return [(name, -s) for s, name in best]


def rank_items(history: Iterable[tuple[str, float]], neighbors: Mapping[str, Neighbors], seen: Iterable[str] | Mapping,
               n: int, trending: Iterable[tuple[str, float]] = ()) -> list[tuple[str, float, str]]:
    """Top-n unseen items for a user: ``score(j) = Σ_{k ∈ history} w_uk · sim(k, j)``.

    Returns ``(item, score, reason)`` where the reason names the history item that contributed the
    most (``"because of <item>"``) or ``"trending"`` for fill-in items when fewer than n score.
    """
    seen_set = seen if isinstance(seen, (set, frozenset, dict)) else set(seen)
    scores: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}
    for k, wk in history:
        for j, s in neighbors.get(k, ()):
            if j in seen_set:
                continue
            c = wk * s
            scores[j] = scores.get(j, 0.0) + c
            b = best.get(j)
            if b is None or c > b[0] or (c == b[0] and k < b[1]):
                best[j] = (c, k)
    ranked = top_k(scores, n)
    out = [(j, s, f"because of {best[j][1]}") for j, s in ranked]
    if len(out) < n:
        taken = {j for j, _, _ in out}
        for j, _ in trending:
            if j in seen_set or j in taken:
                continue
            out.append((j, 0.0, "trending"))
            taken.add(j)
            if len(out) >= n:
                break
    return out


class ItemCF:
    """Single-process incremental item-CF: the reference for the Flink job (same functions).

    >>> m = ItemCF(top_k=5)
    >>> for u, i, w in [("a", "x", 5), ("a", "y", 4), ("b", "x", 4), ("b", "y", 5), ("b", "z", 1)]:
    ...     m.learn_one(u, i, w)
    >>> [j for j, _, _ in m.rank("a", 3)]
    ['z']
    """

    def __init__(self, top_k: int = 20, history_cap: int = 20, trending_size: int = 100, row_cap: int = 0,
                 refresh_on_norms: bool = True) -> None:
        if top_k <= 0:
            raise ValueError(f"top_k {top_k!r} must be positive")
        if history_cap < 0:
            raise ValueError(f"history_cap {history_cap!r} must be >= 0")
        self.history_cap = history_cap
        self.trending_size = trending_size
        self.users: dict[str, UserHistory] = {}
        self.items = ItemRows(top_k, refresh_on_norms=refresh_on_norms, row_cap=row_cap)

    def learn_one(self, user: str, item: str, weight: float, ts: int = 0) -> None:
        hist = self.users.get(user)
        if hist is None:
            hist = self.users[user] = UserHistory()
        new = item not in hist.weights
        deltas = PairDeltas()
        deltas.add(item, *user_event(hist, item, weight, ts, self.history_cap), new=new)
        self.items.apply(deltas.norms, deltas.pairs, deltas.counts)

    def similarity(self, a: str, b: str) -> float:
        return self.items.similarity(a, b)

    def norm(self, item: str) -> float:
        return self.items.norm(item)

    def neighbors(self, item: str) -> Neighbors:
        return self.items.neighbors(item)

    def trending(self, n: int | None = None) -> Neighbors:
        return top_k(((i, float(c)) for i, c in self.items.counts.items()), n or self.trending_size)

    def rank(self, user: str, n: int = 10) -> list[tuple[str, float, str]]:
        hist = self.users.get(user) or UserHistory()
        items = {k for k, _ in hist.recent_weights()}
        nb = {k: self.items.neighbors(k) for k in items}
        return rank_items(hist.recent_weights(), nb, hist.weights, n, self.trending())
