"""The dict core's cost by position in the stream: one process measured at several points.

``python -m bench.phases`` (``make bench-phases``) runs the dict core (:class:`core.hybrid.HybridRecommender` with
the job's model config; on the synthetic stream with the scale run's row caps) over one stream and measures it in
*phases*: for each position ``--at`` it learns the events before it without ranking (fast: the state only has to
get there), runs the ``--warmup`` events just before it as measured ones (learn each event, rank each acting user
once per ``job.window_ms`` of wall-clock time) so the caches a ranking keeps are warm, and then measures ``--span``
events that way (:func:`run_windows`).

Each phase reports the machine's speed probe just before it (:func:`bench.report.speed_probe`, lower is faster:
the development machine's speed moves by ~2x), learn time per event, rank time per ranking, rankings per event,
the mean history (engaged items) of the ranked users and the rate ``events / wall time``. ``make bench``'s limit runs
the compiled core (:mod:`bench.limit`) over whole streams instead.
Writes ``phases.json`` and ``phases.png`` into ``--out``. No services are needed: it is one Python process.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.common import BenchError, base_config, progress
from bench.report import speed_probe
from bench.streamstats import add_stream_args, stream_events
from core.hybrid import HybridRecommender
from udfs.events import Event

logger = logging.getLogger(__name__)

DEFAULT_AT = {"synthetic": (0, 300_000, 600_000, 900_000), "movielens": (0, 30_000, 60_000, 85_000)}
DEFAULT_OUT = Path("results/bench/phases")


def _model(model_cfg: Mapping[str, Any], catalog: Sequence[Mapping[str, Any]],
           refresh_on_norms: bool) -> HybridRecommender:
    rec = HybridRecommender.from_config(model_cfg, refresh_on_norms=refresh_on_norms)
    rec.train_combiner = rec.trains_in_stream(model_cfg.get("compare_modes") or ())  # as the job's ranker does
    for record in catalog:
        rec.add_item(record)
    return rec


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


def check_positions(at: Sequence[int], span: int, warmup: int, n_events: int) -> list[int]:
    """``at`` sorted, after checking that every phase (its warm-up and its span) fits the stream without overlap."""
    if span < 1:
        raise ValueError(f"--span {span!r} must be at least 1")
    if warmup < 0:
        raise ValueError(f"--warmup {warmup!r} must be >= 0")
    positions = sorted(at)
    if not positions:
        raise ValueError("--at needs at least one position")
    end = 0
    for start in positions:
        if start < 0 or start + span > n_events:
            raise ValueError(f"--at position {start:,} with --span {span:,} does not fit the {n_events:,} events")
        if start < end:
            raise ValueError(f"--at position {start:,} overlaps the phase before it (which ends at {end:,}): "
                             f"positions must be at least --span {span:,} apart")
        end = start + span
    return positions


def phases(events: Sequence[Event], model_cfg: Mapping[str, Any], catalog: Sequence[Mapping[str, Any]],
           at: Sequence[int], span: int, warmup: int, window_ms: int,
           refresh_on_norms: bool = False) -> list[dict[str, Any]]:
    """One result per position of ``at`` (see the module docstring)."""
    positions = check_positions(at, span, warmup, len(events))
    model = _model(model_cfg, catalog, refresh_on_norms)
    done = 0
    out: list[dict[str, Any]] = []
    for start in positions:
        first = max(done, start - warmup)
        t = time.perf_counter()
        next_note = t + 10
        for k in range(done, first):
            model.learn_one(events[k])
            if k % 1000 == 0 and time.perf_counter() >= next_note:
                progress("phases: learning up to %d: %d/%d events", start, k, first)
                next_note = time.perf_counter() + 10
        if first > done:
            progress("phases: learned events %d..%d in %.1f s", done, first - 1, time.perf_counter() - t)
        if start > first:
            run_windows(model, events[first:start], window_ms, label=f"phases warm-up before {start}")
        probe = speed_probe()
        r = run_windows(model, events[start:start + span], window_ms, label=f"phases at {start}")
        n, ranks, wall, rank_s = r["events"], r["ranks"], r["wall_s"], r["rank_s"]
        res = {
            "start": start, "events": n, "warmup": start - first, "windows": r["windows"], "rankings": ranks,
            "rankings_per_event": round(ranks / n, 3),
            "mean_ranked_history": round(r["ranked_history"] / ranks, 1) if ranks else None,
            "learn_us_per_event": round(1e6 * (wall - rank_s) / n, 1),
            "rank_us_per_ranking": round(1e6 * rank_s / ranks, 1) if ranks else None,
            "rank_us_per_event": round(1e6 * rank_s / n, 1),
            "events_per_s": round(n / wall, 1) if wall > 0 else None,
            "cpu_us_per_event": round(1e6 * r["cpu_s"] / n, 1), "speed_probe_ms": probe,
        }
        progress("phases at %d: %s events/s (learn %s us/event, %s us per ranking, %s rankings/event)", start,
                 res["events_per_s"], res["learn_us_per_event"], res["rank_us_per_ranking"], res["rankings_per_event"])
        out.append(res)
        done = start + span
    return out


def _positions(text: str) -> list[int]:
    try:
        return [int(p.replace("_", "")) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated event positions, e.g. 0,300000") from None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.phases", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stream_args(p)
    p.add_argument("--at", type=_positions, default=None,
                   help="comma-separated positions (events from the start) of the phases (default: synthetic "
                        "0,300000,600000,900000; movielens 0,30000,60000,85000)")
    p.add_argument("--span", type=int, default=None,
                   help="events measured per phase (default 15,000 synthetic, 10,000 MovieLens)")
    p.add_argument("--warmup", type=int, default=2000,
                   help="events before each position run as measured ones but not counted (default 2,000)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. model.hybrid.candidate_pool=30 (repeatable; the synthetic stream "
                        "also gets make bench's scale-run row caps)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    synthetic = args.source == "synthetic"
    if synthetic:
        from bench.cli import SCALE_OVERRIDES
        from ingest.synthetic import generate_catalog

        overrides = [*SCALE_OVERRIDES, *args.overrides]
        catalog = generate_catalog(args.items, seed=args.seed)
    else:
        from ingest.movielens import load_catalog

        overrides = list(args.overrides)
        catalog = load_catalog()
    span = args.span or (15_000 if synthetic else 10_000)
    at = args.at if args.at is not None else list(DEFAULT_AT[args.source])
    try:
        cfg = base_config(overrides)
        t = time.perf_counter()
        events = stream_events(args)
        progress("phases: %d %s events in %.1f s; positions %s, %d events each", len(events), args.source,
                 time.perf_counter() - t, ",".join(map(str, at)), span)
        results = phases(events, cfg["model"], catalog, at, span, args.warmup, cfg["job"]["window_ms"],
                         refresh_on_norms=cfg["job"]["refresh_on_norms"])
    except (ValueError, BenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    spec = {"source": args.source, "events": len(events), "span": span, "warmup": args.warmup,
            "window_ms": cfg["job"]["window_ms"], "overrides": overrides}
    if synthetic:
        spec.update(users=args.users, items=args.items, zipf=args.zipf, seed=args.seed)
    report = {"spec": spec, "phases": results}
    (args.out / "phases.json").write_text(json.dumps(report, indent=2) + "\n")
    from bench.charts import phases_chart

    chart = phases_chart(results, args.out / "phases.png",
                         f"the algorithm in one process, {args.source} stream ({len(events):,} events), by position")
    print(f"{'position':>10} {'events/s':>9} {'learn us/event':>15} {'us/ranking':>11} {'rankings/event':>15} "
          f"{'ranked history':>15} {'probe ms':>9}")
    for r in results:
        print(f"{r['start']:>10,} {r['events_per_s']:>9,.0f} {r['learn_us_per_event']:>15,.0f} "
              f"{r['rank_us_per_ranking'] or 0:>11,.0f} {r['rankings_per_event']:>15.2f} "
              f"{r['mean_ranked_history'] or 0:>15,.1f} {r['speed_probe_ms']:>9}")
    print(f"report: {args.out / 'phases.json'}" + (f", chart: {chart}" if chart else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
