"""The single-process limit on the array core: ``python -m bench.core_limit``.

Runs :mod:`core.v2.model` over a whole stream in windows, without Flink, Kafka or Redis: each window's events are
learned as one batch (:func:`core.v2.model.learn`), then every user who acted in it is ranked, all at once
(:func:`core.v2.model.rank`, the configured mode), as the job does per window. A window is ``--window-events``
consecutive events, or (``--window-ms``) as many events as the pace of the window before processes in that much
wall-clock time (``bench.limit.batched`` cuts its windows by the clock the same way, event by event).

Reports events/s over the whole stream (wall clock and CPU), the time in learning, ranking and turning events into
columns, the rankings, and separately the JIT warm-up: the first calls of every kernel on a tiny stream, which
load them from the numba cache (``NUMBA_CACHE_DIR``, default ``var/numba``) or compile them when it is empty.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import core.v2  # noqa: F401  (sets NUMBA_CACHE_DIR before numba is imported)
from config import ConfigError, load_config
from core.v2 import model as M
from core.v2.settings import Settings
from udfs.events import Event

logger = logging.getLogger(__name__)


def warm_up(settings: Settings, mode: str) -> float:
    """Seconds to load (or compile) every kernel: a tiny stream learned and ranked on a fresh state."""
    t = time.perf_counter()
    state = M.new_state(settings)
    events = [Event(f"w{k}", f"u{k % 3}", f"i{k % 5}", "rate", 1.0 + k % 4, 1000 * k) for k in range(12)]
    M.add_items(state, [{"item_id": "i1", "title": "A B", "year": 1990, "genres": ["Drama"]}])
    M.learn(state, M.Batch.of(events))
    M.rank(state, ["u0", "u1", "nobody"], mode)
    M.render(state, M.rank(state, ["u0"], mode))
    return time.perf_counter() - t


def run(events: Sequence[Event], settings: Settings, mode: str | None = None, window_events: int = 0,
        window_ms: float = 0.0, render: bool = False, catalog: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Learn and rank ``events`` window by window (see the module docstring); the measurements."""
    if (window_events > 0) == (window_ms > 0):
        raise ValueError("give exactly one of window_events and window_ms (> 0)")
    mode = settings.mode if mode is None else mode
    warm = warm_up(settings, mode)
    clock = time.perf_counter
    cpu0, wall0 = time.process_time(), clock()
    batch = M.Batch.of(events)
    columns_s = clock() - wall0
    state = M.new_state(settings)
    t = clock()
    M.add_items(state, catalog)
    catalog_s = clock() - t
    train = settings.train_combiner and mode == "learned"  # as the job: trained only while learned is ranked
    learn_s = rank_s = render_s = 0.0
    windows = ranks = 0
    n = len(events)
    start = 0
    step = window_events or 2000
    while start < n:
        end = min(n, start + step)
        part = batch.slice(start, end)
        t0 = clock()
        M.learn(state, part, train)
        t1 = clock()
        users = list(dict.fromkeys(part.user_id.tolist()))
        ranking = M.rank(state, users, mode)
        t2 = clock()
        if render:
            M.render(state, ranking)
        t3 = clock()
        learn_s += t1 - t0
        rank_s += t2 - t1
        render_s += t3 - t2
        ranks += len(users)
        windows += 1
        if window_ms > 0:  # the next window holds the events of window_ms of wall clock at the current pace
            per_event = (t3 - t0) / (end - start)
            step = max(1, int(window_ms / 1000.0 / max(per_event, 1e-9)))
        start = end
    wall, cpu = clock() - wall0, time.process_time() - cpu0
    return {
        "events": n, "users": len(state.users), "items": len(state.items), "mode": mode,
        "windows": windows, "ranks": ranks, "window_events": window_events or None, "window_ms": window_ms or None,
        "events_per_s": round(n / wall, 1), "cpu_us_per_event": round(1e6 * cpu / n, 2),
        "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "columns_s": round(columns_s, 3),
        "catalog_s": round(catalog_s, 3),
        "learn_s": round(learn_s, 3), "rank_s": round(rank_s, 3), "render_s": round(render_s, 3) if render else None,
        "rank_us_per_user": round(1e6 * rank_s / max(ranks, 1), 2), "jit_warmup_s": round(warm, 3),
        "co_occurrence_entries": state.ipool.entries(), "user_pairs": state.upool.entries(),
        "state_mib": round(state.nbytes() / 2**20, 1),
        "methods": list(settings.methods), "history_cap": settings.history_cap,
        "usercf_max_raters": settings.usercf_max_raters, "refresh_on_norms": settings.refresh_on_norms,
    }


def _stream(args: argparse.Namespace) -> tuple[list[Event], list[dict[str, Any]]]:
    if args.source == "movielens":
        from ingest.movielens import load_catalog, load_events

        return load_events(limit=args.events), load_catalog()
    from ingest.synthetic import generate, generate_catalog

    n = args.events or 1_000_000
    return list(generate(n, args.users, args.items, zipf_s=args.zipf, seed=args.seed)), generate_catalog(args.items)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.core_limit", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=("synthetic", "movielens"), default="synthetic",
                   help="the stream: make bench's synthetic one (default) or MovieLens-100K")
    p.add_argument("--events", type=int, help="the first N events (synthetic default 1000000; movielens: all)")
    p.add_argument("--users", type=int, default=100_000, help="synthetic users (default %(default)s)")
    p.add_argument("--items", type=int, default=20_000, help="synthetic items (default %(default)s)")
    p.add_argument("--zipf", type=float, default=1.1, help="synthetic item popularity exponent (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="synthetic seed (default %(default)s)")
    p.add_argument("--window-events", type=int, default=0, metavar="N", help="events per window")
    p.add_argument("--window-ms", type=float, default=0.0, metavar="MS",
                   help="wall-clock window (default 400, the job's window_ms, unless --window-events is given)")
    p.add_argument("--mode", help="fusion mode (default: model.hybrid.mode)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config override, e.g. --set model.history_cap=50 (repeatable)")
    p.add_argument("--render", action="store_true", help="also spell out the reasons (the sink's work)")
    args = p.parse_args(argv)
    try:
        cfg = load_config(None, args.overrides)
        settings = Settings.from_config(cfg["model"])
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    window_ms = args.window_ms or (0.0 if args.window_events else 400.0)
    t = time.perf_counter()
    events, catalog = _stream(args)
    print(f"stream: {len(events):,} {args.source} events in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    res = run(events, settings, args.mode, args.window_events, window_ms, args.render, catalog)
    res["source"] = args.source
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
