"""Trending items: popularity in a sliding event-time window, and an optional decayed popularity.

The window of ``window_s`` seconds is cut into ``n_buckets`` buckets of ``window_s / n_buckets``
each; bucket ``b`` holds the events with ``b·width <= ts < (b+1)·width``. The window is the
``n_buckets`` buckets ending at the bucket of the latest event time seen (or :meth:`Trending.advance`):
when time moves into bucket ``B``, the buckets ``<= B - n_buckets`` expire and their amounts are
subtracted from the running totals. An event for an already expired bucket is dropped.

Each event adds its weight ``w`` (``weighted=True``) or 1 (``weighted=False``). Popularity counts
event volume, so unlike the per-user models a repeat event adds again (there is no user to replace).

With ``half_life_s`` set, every item also has a decayed popularity ``Σ w·2^(-(now - ts) / half_life)``,
kept per item as ``(value, time of value)`` and decayed lazily.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import numpy as np

logger = logging.getLogger(__name__)


def ranked(keys: list[str], scores: list[float] | np.ndarray, n: int, exclude: Iterable[str] | None = None
            ) -> list[tuple[str, float]]:
    """The ``n`` best positive ``(key, score)`` not in ``exclude``, by score then key: exactly
    ``sorted(..., key=lambda t: (-t[1], t[0]))[:n]``, with numpy doing the sort (a stable sort by score, then each
    run of equal scores put in key order). Trending ranks every item once per window: ~20k of them."""
    if n < 0:
        raise ValueError(f"n {n!r} must be non-negative")
    if n == 0 or not keys:
        return []
    vals = np.asarray(scores, dtype=np.float64)
    keep = vals > 0
    skip = set(exclude or ())
    if skip:
        keep &= np.fromiter((k not in skip for k in keys), dtype=bool, count=len(keys))
    pos = np.flatnonzero(keep)
    order = pos[np.argsort(-vals[pos], kind="stable")]
    if len(order) > n:
        # the n best and every tie of the n-th, so the key order of that run is decided below
        last = np.searchsorted(-vals[order], -vals[order[n - 1]], side="right")
        order = order[:last]
    best = vals[order]
    out = list(zip(map(keys.__getitem__, order.tolist()), best.tolist(), strict=True))
    tie = best[1:] == best[:-1]
    if tie.any():
        edges = np.diff(np.concatenate(([0], tie.view(np.int8), [0])))
        for a, b in zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True):
            out[a:b + 1] = sorted(out[a:b + 1])
    return out[:n]


class Trending:
    """Sliding-window (and optionally decayed) item popularity over event time (ms)."""

    def __init__(
        self, window_s: float = 3600.0, n_buckets: int = 12, weighted: bool = True, half_life_s: float | None = None
    ) -> None:
        if isinstance(window_s, bool) or not isinstance(window_s, (int, float)) or not window_s > 0:
            raise ValueError(f"window_s {window_s!r} must be positive")
        if isinstance(n_buckets, bool) or not isinstance(n_buckets, int) or n_buckets < 1:
            raise ValueError(f"n_buckets {n_buckets!r} must be a positive integer")
        if half_life_s is not None and not (isinstance(half_life_s, (int, float)) and half_life_s >= 0):
            raise ValueError(f"half_life_s {half_life_s!r} must be positive (0 or None = off)")
        width = window_s * 1000.0 / n_buckets
        if width != int(width):
            raise ValueError(f"window_s {window_s!r} / n_buckets {n_buckets!r} must be a whole number of milliseconds")
        self.width_ms = int(width)
        self.n_buckets = n_buckets
        self.weighted = weighted
        self.half_life_s = float(half_life_s) if half_life_s else None
        self.buckets: dict[int, dict[str, float]] = {}  # bucket index -> item -> amount
        self.totals: dict[str, float] = {}  # item -> amount in the live buckets
        self.current: int | None = None  # index of the newest bucket
        self.decayed: dict[str, tuple[float, int]] = {}  # item -> (decayed popularity at ts, ts)
        self.now_ms: int | None = None  # latest event time seen

    def advance(self, ts: int) -> None:
        """Move event time forward to ``ts`` (e.g. on a watermark), expiring buckets that left the window."""
        if self.now_ms is None or ts > self.now_ms:
            self.now_ms = ts
        b = ts // self.width_ms
        if self.current is not None and b <= self.current:
            return
        self.current = b
        for old in [k for k in self.buckets if k <= b - self.n_buckets]:
            for item, amount in self.buckets.pop(old).items():
                left = self.totals[item] - amount
                if abs(left) <= 1e-9:
                    del self.totals[item]
                else:
                    self.totals[item] = left
            logger.debug("trending: bucket %d expired at ts %d", old, ts)

    def learn_one(self, item: str, w: float, ts: int) -> None:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise ValueError(f"w {w!r} must be a positive finite number")
        self.advance(ts)
        amount = float(w) if self.weighted else 1.0
        if self.half_life_s is not None:
            value, t = self.decayed.get(item, (0.0, ts))
            if ts >= t:
                self.decayed[item] = (value * self._decay(ts - t) + amount, ts)
            else:  # out of order: decay the event to the item's reference time
                self.decayed[item] = (value + amount * self._decay(t - ts), t)
        b = ts // self.width_ms
        assert self.current is not None
        if b <= self.current - self.n_buckets:
            logger.debug("trending: dropped late event for item %s at ts %d (bucket expired)", item, ts)
            return
        bucket = self.buckets.setdefault(b, {})
        bucket[item] = bucket.get(item, 0.0) + amount
        self.totals[item] = self.totals.get(item, 0.0) + amount

    def _require_decay(self) -> None:
        if self.half_life_s is None:
            raise ValueError("half_life_s None: decayed popularity is off")

    def _decay(self, dt_ms: float) -> float:
        assert self.half_life_s is not None
        return 2.0 ** (-(dt_ms / 1000.0) / self.half_life_s)

    def count(self, item: str) -> float:
        """The item's amount in the current window."""
        return self.totals.get(item, 0.0)

    def decayed_score(self, item: str, now: int | None = None) -> float:
        """The item's decayed popularity at ``now`` (default: the latest event time seen)."""
        self._require_decay()
        value, t = self.decayed.get(item, (0.0, 0))
        ref = self.now_ms if now is None else now
        return value * self._decay(ref - t) if ref is not None and value else 0.0

    def top(self, n: int, exclude: Iterable[str] | None = None) -> list[tuple[str, float]]:
        """The ``n`` items with the largest amount in the window, as ``(item, amount)``; ties by item id."""
        return ranked(*self.scores(), n, exclude)

    def top_decayed(
        self, n: int, exclude: Iterable[str] | None = None, now: int | None = None
    ) -> list[tuple[str, float]]:
        """The ``n`` items with the largest decayed popularity at ``now`` (:meth:`decayed_score` of every item, in
        one pass over them)."""
        return ranked(*self.scores(decayed=True, now=now), n, exclude)

    def scores(self, decayed: bool = False, now: int | None = None) -> tuple[list[str], list[float]]:
        """Every item and its score: the window amount, or (``decayed``) the decayed popularity at ``now``; what
        :meth:`top` and :meth:`top_decayed` rank (:func:`ranked` ranks them, a prefix at a time)."""
        if not decayed:
            return list(self.totals), list(self.totals.values())
        self._require_decay()
        ref = self.now_ms if now is None else now
        if ref is None:  # nothing learnt yet
            return [], []
        decay = self._decay
        return list(self.decayed), [value * decay(ref - t) if value else 0.0 for value, t in self.decayed.values()]
