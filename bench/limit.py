"""The limit: the same item-CF algorithm in one plain Python process, without Flink, Kafka or Redis.

Two variants over a list of events, both with :class:`core.itemcf.ItemCF` ``(top_k, history_cap)``:

* **per_event**: ``learn_one`` for every event and ``rank(user, top_n)`` for the acting user after
  every event. Ranking every event is slow (``ItemCF.rank`` computes the neighbour lists of the
  user's history on the fly), so with ``rank_stride`` k > 1 only every k-th event is ranked and the
  rate is an estimate: ``1 / (learn time per event + rank time per ranked event)``, both measured
  over the whole stream (the sampled events are spread evenly, so the state they see grows as it
  does for all). ``rank_stride=1`` measures it exactly.
* **batched**: ``learn_one`` for every event, and once per ``window_ms`` of wall-clock time,
  ``rank`` once for each user who acted in that window (what the job does with its tumbling
  processing-time windows); every event and every rank is done, the rate is measured.

* **windowed** (for reference; not the ``ItemCF`` API): the job's own per-window work in one process,
  from the same ``core.itemcf`` pieces the operators use: per ``window_ms`` of wall-clock time the
  window's events go through ``user_event``/``PairDeltas`` into one ``ItemRows`` (all items, one
  shard), the neighbour lists of every changed row are recomputed once (``ItemRows.refresh``, no
  time budget), and each acting user is ranked with ``rank_items`` over the cached lists, trending
  computed once per window. This is what the job does minus Flink, Kafka, Redis and serialisation.

All variants report wall-clock and CPU time (``time.process_time``), since the machine may be shared.
A ``max_seconds`` cap stops a variant early; the result then says how many events it covered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from bench.common import progress
from core.itemcf import ItemCF, ItemRows, Neighbors, PairDeltas, UserHistory, rank_items, top_k, user_event
from udfs.events import Event

logger = logging.getLogger(__name__)


def per_event(events: Sequence[Event], top_k: int, history_cap: int, top_n: int, rank_stride: int = 1,
              max_seconds: float = 0.0) -> dict[str, Any]:
    """learn_one + rank per event (rank on every ``rank_stride``-th event); see the module docstring."""
    if rank_stride < 1:
        raise ValueError(f"rank_stride must be >= 1, got {rank_stride!r}")
    model = ItemCF(top_k=top_k, history_cap=history_cap)
    learn_s = rank_s = 0.0
    ranked = 0
    clock = time.perf_counter
    cpu0, wall0 = time.process_time(), clock()
    stop_at = wall0 + max_seconds if max_seconds > 0 else float("inf")
    next_note = wall0 + 10
    n = 0
    for n, ev in enumerate(events, 1):
        t = clock()
        model.learn_one(ev.user_id, ev.item_id, ev.weight, ev.ts)
        t2 = clock()
        learn_s += t2 - t
        if (n - 1) % rank_stride == 0:
            model.rank(ev.user_id, top_n)
            rank_s += clock() - t2
            ranked += 1
        if t2 >= next_note:
            progress("  limit per-event: %d/%d events, %.0f s", n, len(events), t2 - wall0)
            next_note = t2 + 10
            if t2 >= stop_at:
                break
    wall, cpu = clock() - wall0, time.process_time() - cpu0
    per_ev = learn_s / n + (rank_s / ranked if ranked else 0.0)
    return {
        "variant": "per_event", "events": n, "complete": n == len(events), "rank_stride": rank_stride,
        "ranked": ranked, "learn_s": round(learn_s, 3), "rank_s": round(rank_s, 3),
        "learn_us_per_event": round(1e6 * learn_s / n, 1),
        "rank_us_per_call": round(1e6 * rank_s / ranked, 1) if ranked else None,
        "events_per_s": round(1.0 / per_ev, 1) if per_ev > 0 else None,
        "estimated": rank_stride > 1,
        "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        # with sampled ranks the CPU time covers only part of the ranking: no per-event CPU figure then
        "cpu_us_per_event": None if rank_stride > 1 else round(1e6 * cpu / n, 1),
    }


def batched(events: Sequence[Event], top_k: int, history_cap: int, top_n: int, window_ms: int,
            max_seconds: float = 0.0) -> dict[str, Any]:
    """learn_one per event; rank each acting user once per ``window_ms`` of wall-clock time."""
    model = ItemCF(top_k=top_k, history_cap=history_cap)
    window_s = window_ms / 1000.0
    clock = time.perf_counter
    cpu0, wall0 = time.process_time(), clock()
    stop_at = wall0 + max_seconds if max_seconds > 0 else float("inf")
    window_end = wall0 + window_s
    touched: dict[str, None] = {}
    windows = ranks = 0
    rank_s = 0.0
    next_note = wall0 + 10
    n = 0
    for n, ev in enumerate(events, 1):
        model.learn_one(ev.user_id, ev.item_id, ev.weight, ev.ts)
        touched[ev.user_id] = None
        now = clock()
        if now >= window_end:
            for user in touched:
                model.rank(user, top_n)
            ranks += len(touched)
            windows += 1
            touched = {}
            end = clock()
            rank_s += end - now
            window_end = end - (end - wall0) % window_s + window_s
            if end >= next_note:
                progress("  limit batched: %d/%d events, %.0f s", n, len(events), end - wall0)
                next_note = end + 10
            if end >= stop_at:
                break
    t = clock()
    for user in touched:  # the last, partial window
        model.rank(user, top_n)
    rank_s += clock() - t
    ranks += len(touched)
    windows += 1 if touched else 0
    wall, cpu = clock() - wall0, time.process_time() - cpu0
    return {
        "variant": "batched", "events": n, "complete": n == len(events), "window_ms": window_ms,
        "windows": windows, "ranks": ranks, "mean_events_per_window": round(n / windows, 1) if windows else None,
        "rank_s": round(rank_s, 3), "learn_s": round(wall - rank_s, 3),
        "events_per_s": round(n / wall, 1) if wall > 0 else None,
        "estimated": False, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        "cpu_us_per_event": round(1e6 * cpu / n, 1) if n else None,
    }


def windowed(events: Sequence[Event], top_k_: int, history_cap: int, top_n: int, window_ms: int,
             trending_size: int = 100, max_seconds: float = 0.0) -> dict[str, Any]:
    """The job's per-window work (user state -> pair deltas -> rows -> refresh -> rank) in one process."""
    users: dict[str, UserHistory] = {}
    rows = ItemRows(top_k_)
    neighbors: dict[str, Neighbors] = {}
    window_s = window_ms / 1000.0
    clock = time.perf_counter
    cpu0, wall0 = time.process_time(), clock()
    stop_at = wall0 + max_seconds if max_seconds > 0 else float("inf")
    window_end = wall0 + window_s
    deltas = PairDeltas()
    touched: dict[str, None] = {}
    windows = ranks = refreshed = 0
    flush_s = 0.0
    next_note = wall0 + 10

    def flush() -> None:
        nonlocal deltas, touched, windows, ranks, refreshed
        rows.apply(deltas.norms, deltas.pairs, deltas.counts)
        fresh = rows.refresh(None)
        neighbors.update(fresh)
        refreshed += len(fresh)
        trending = top_k(((i, float(c)) for i, c in rows.counts.items()), trending_size)
        for user in touched:
            hist = users[user]
            rank_items(hist.recent_weights(), neighbors, hist.weights, top_n, trending)
        ranks += len(touched)
        windows += 1
        deltas, touched = PairDeltas(), {}

    n = 0
    for n, ev in enumerate(events, 1):
        hist = users.get(ev.user_id)
        if hist is None:
            hist = users[ev.user_id] = UserHistory()
        new = ev.item_id not in hist.weights
        deltas.add(ev.item_id, *user_event(hist, ev.item_id, ev.weight, ev.ts, history_cap), new=new)
        touched[ev.user_id] = None
        now = clock()
        if now >= window_end:
            flush()
            end = clock()
            flush_s += end - now
            window_end = end - (end - wall0) % window_s + window_s
            if end >= next_note:
                progress("  limit windowed: %d/%d events, %.0f s", n, len(events), end - wall0)
                next_note = end + 10
            if end >= stop_at:
                break
    if touched or deltas:
        t = clock()
        flush()
        flush_s += clock() - t
    wall, cpu = clock() - wall0, time.process_time() - cpu0
    return {
        "variant": "windowed", "events": n, "complete": n == len(events), "window_ms": window_ms,
        "windows": windows, "ranks": ranks, "rows_refreshed": refreshed,
        "mean_events_per_window": round(n / windows, 1) if windows else None,
        "flush_s": round(flush_s, 3), "events_per_s": round(n / wall, 1) if wall > 0 else None,
        "estimated": False, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        "cpu_us_per_event": round(1e6 * cpu / n, 1) if n else None,
    }
