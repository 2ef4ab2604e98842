"""The limit: the job's algorithm in one plain Python process, without Flink, Kafka or Redis.

Both variants drive :class:`core.hybrid.HybridRecommender` built from the same config as the job
(``model`` and ``model.hybrid``: item-CF, user-CF, content, trending, the fusion mode and, as in the job
only when the learned mode is ranked (``model.hybrid.mode`` or ``model.compare_modes``), the in-stream
training of the learned combiner, and ``refresh_on_norms`` as ``job.refresh_on_norms``: which
item-CF neighbour lists a change recomputes), over a list of events, with the MovieLens catalog
added first when given:

* **per_event**: ``learn_one`` for every event and ``rank(user)`` for the acting user after every
  event. With ``rank_stride`` k > 1 only every k-th event is ranked and the rate is an estimate:
  ``1 / (learn time per event + rank time per ranked event)``, both measured over the whole stream
  (the sampled events are spread evenly, so the state they see grows as it does for all).
  ``rank_stride=1`` measures it exactly.
* **batched**: ``learn_one`` for every event, and once per ``window_ms`` of wall-clock time, ``rank``
  once for each user who acted in that window (what the job does with its tumbling processing-time
  windows); every event and every rank is done, the rate is measured.

Both report wall-clock and CPU time (``time.process_time``), since the machine may be shared. A
``max_seconds`` cap stops a variant early; the result then says how many events it covered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench.common import progress
from core.hybrid import HybridRecommender
from udfs.events import Event

logger = logging.getLogger(__name__)


def _model(model_cfg: Mapping[str, Any], catalog: Sequence[Mapping[str, Any]],
           refresh_on_norms: bool) -> HybridRecommender:
    rec = HybridRecommender.from_config(model_cfg, refresh_on_norms=refresh_on_norms)
    rec.train_combiner = rec.trains_in_stream(model_cfg.get("compare_modes") or ())  # as the job's ranker does
    for record in catalog:
        rec.add_item(record)
    return rec


def per_event(events: Sequence[Event], model_cfg: Mapping[str, Any], catalog: Sequence[Mapping[str, Any]] = (),
              rank_stride: int = 1, max_seconds: float = 0.0, refresh_on_norms: bool = False) -> dict[str, Any]:
    """learn_one + rank per event (rank on every ``rank_stride``-th event); see the module docstring."""
    if rank_stride < 1:
        raise ValueError(f"rank_stride must be >= 1, got {rank_stride!r}")
    model = _model(model_cfg, catalog, refresh_on_norms)
    learn_s = rank_s = 0.0
    ranked = 0
    clock = time.perf_counter
    cpu0, wall0 = time.process_time(), clock()
    stop_at = wall0 + max_seconds if max_seconds > 0 else float("inf")
    next_note = wall0 + 10
    n = 0
    for n, ev in enumerate(events, 1):
        t = clock()
        model.learn_one(ev)
        t2 = clock()
        learn_s += t2 - t
        if (n - 1) % rank_stride == 0:
            model.rank(ev.user_id)
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


def run_windows(model: HybridRecommender, events: Sequence[Event], window_ms: int, max_seconds: float = 0.0,
                label: str = "limit batched") -> dict[str, Any]:
    """``learn_one`` per event of ``model``; once per ``window_ms`` of wall-clock time, ``rank`` once for each user who
    acted in that window (and for the last, partial window's users at the end). Stops after the window in which
    ``max_seconds`` of wall-clock time have passed (0 = never).

    Returns ``events`` (learned), ``windows``, ``ranks``, ``rank_s`` (wall-clock time in ``rank``), ``wall_s``,
    ``cpu_s`` and ``ranked_history`` (the sum, over the rankings, of the ranked user's engaged items)."""
    window_s = window_ms / 1000.0
    clock = time.perf_counter
    cpu0, wall0 = time.process_time(), clock()
    stop_at = wall0 + max_seconds if max_seconds > 0 else float("inf")
    window_end = wall0 + window_s
    touched: dict[str, None] = {}
    windows = ranks = history = 0
    rank_s = 0.0
    next_note = wall0 + 10
    logs = model.logs
    n = 0

    def rank_touched() -> int:
        size = 0
        for user in touched:
            model.rank(user)
            log = logs.get(user)
            size += len(log["items"]) if log is not None else 0
        return size

    for n, ev in enumerate(events, 1):
        model.learn_one(ev)
        touched[ev.user_id] = None
        now = clock()
        if now >= window_end:
            history += rank_touched()
            ranks += len(touched)
            windows += 1
            touched = {}
            end = clock()
            rank_s += end - now
            window_end = end - (end - wall0) % window_s + window_s
            if end >= next_note:
                progress("  %s: %d/%d events, %.0f s", label, n, len(events), end - wall0)
                next_note = end + 10
            if end >= stop_at:
                break
    t = clock()
    history += rank_touched()  # the last, partial window
    rank_s += clock() - t
    ranks += len(touched)
    windows += 1 if touched else 0
    return {"events": n, "windows": windows, "ranks": ranks, "rank_s": rank_s, "wall_s": clock() - wall0,
            "cpu_s": time.process_time() - cpu0, "ranked_history": history}


def batched(events: Sequence[Event], model_cfg: Mapping[str, Any], window_ms: int,
            catalog: Sequence[Mapping[str, Any]] = (), max_seconds: float = 0.0,
            refresh_on_norms: bool = False) -> dict[str, Any]:
    """learn_one per event; rank each acting user once per ``window_ms`` of wall-clock time (:func:`run_windows`)."""
    model = _model(model_cfg, catalog, refresh_on_norms)
    r = run_windows(model, events, window_ms, max_seconds)
    n, windows, wall, cpu, rank_s = r["events"], r["windows"], r["wall_s"], r["cpu_s"], r["rank_s"]
    return {
        "variant": "batched", "events": n, "complete": n == len(events), "window_ms": window_ms,
        "windows": windows, "ranks": r["ranks"], "mean_events_per_window": round(n / windows, 1) if windows else None,
        "mean_ranked_history": round(r["ranked_history"] / r["ranks"], 1) if r["ranks"] else None,
        "rank_s": round(rank_s, 3), "learn_s": round(wall - rank_s, 3),
        "events_per_s": round(n / wall, 1) if wall > 0 else None,
        "estimated": False, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        "cpu_us_per_event": round(1e6 * cpu / n, 1) if n else None,
    }
