"""What a stream asks of the ranker: the acting users' history sizes and the rankings per event.

``python -m bench.streamstats [--source synthetic|movielens] [--events N] [--from K] [--to K] [--window N]``
prints, for the events ``K..K2`` of the stream (``make bench``'s scale stream by default):

* the number of distinct items the acting user has engaged so far, at each event (median, p75, p90, p99,
  mean): the length of the history a ranking of that user reads and the size of the log their rank request
  carries;
* the users with the most events;
* rankings per event when every ``--window`` consecutive events are one window of the job (each user who acted
  in a window is ranked once): distinct users per window / events per window.

It reads only the events (no model, no services); docs/bench.md quotes it.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from bench.common import percentile
from udfs.events import Event


def stream_stats(events: Iterable[Event], start: int, end: int, window: int) -> dict[str, Any]:
    """History sizes of the acting users of events ``start..end-1``, top users, rankings per event."""
    if not 0 <= start < end:
        raise ValueError(f"--from {start!r} must be >= 0 and below --to {end!r}")
    if window < 1:
        raise ValueError(f"--window {window!r} must be >= 1")
    engaged: dict[str, set[str]] = {}
    counts: Counter[str] = Counter()
    sizes: list[int] = []
    windows: list[int] = []
    in_window: set[str] = set()
    n = 0
    for k, ev in enumerate(events):
        if k >= end:
            break
        engaged.setdefault(ev.user_id, set()).add(ev.item_id)
        counts[ev.user_id] += 1
        if k >= start:
            n += 1
            sizes.append(len(engaged[ev.user_id]))
            in_window.add(ev.user_id)
            if n % window == 0:
                windows.append(len(in_window))
                in_window = set()
    if not sizes:
        raise ValueError(f"the stream has no events in {start}..{end - 1}")
    sizes.sort()
    pct = {q: int(percentile(sizes, q)) for q in (50, 75, 90, 99)}
    return {
        "events": len(sizes), "median": pct[50], "p75": pct[75], "p90": pct[90], "p99": pct[99],
        "mean": sum(sizes) / len(sizes), "top_users": counts.most_common(5), "users_so_far": len(engaged),
        "rankings_per_event": sum(windows) / (len(windows) * window) if windows else None,
    }


def add_stream_args(p: argparse.ArgumentParser) -> None:
    """The options that pick the stream: MovieLens-100K or ``make bench``'s synthetic one (the default)."""
    p.add_argument("--source", choices=("synthetic", "movielens"), default="synthetic",
                   help="the stream: make bench's synthetic scale stream (default) or MovieLens-100K")
    p.add_argument("--events", type=int, default=1_000_000, help="synthetic events (default 1,000,000)")
    p.add_argument("--users", type=int, default=100_000, help="synthetic users (default 100,000)")
    p.add_argument("--items", type=int, default=20_000, help="synthetic items (default 20,000)")
    p.add_argument("--zipf", type=float, default=1.1, help="synthetic item popularity exponent (default 1.1)")
    p.add_argument("--seed", type=int, default=0, help="synthetic seed (default 0)")


def stream_events(args: argparse.Namespace) -> list[Event]:
    """The events :func:`add_stream_args` picked."""
    if args.source == "movielens":
        from ingest.movielens import load_events

        return list(load_events())
    from ingest.synthetic import generate

    return list(generate(args.events, args.users, args.items, zipf_s=args.zipf, seed=args.seed))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.streamstats", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stream_args(p)
    p.add_argument("--from", dest="start", type=int, default=0, help="first event to describe (default 0)")
    p.add_argument("--to", dest="end", type=int, default=None, help="end of the events described (default: all)")
    p.add_argument("--window", type=int, default=450,
                   help="events per job window for the rankings-per-event figure (default 450: ~900 events/s "
                        "and job.window_ms 500)")
    args = p.parse_args(argv)
    events = stream_events(args)
    end = len(events) if args.end is None else args.end
    try:
        s = stream_stats(events, args.start, end, args.window)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.source} events {args.start:,}..{end - 1:,} ({s['events']:,}): distinct items the acting user has "
          f"engaged so far: median {s['median']:,}, p75 {s['p75']:,}, p90 {s['p90']:,}, p99 {s['p99']:,}, "
          f"mean {s['mean']:,.1f}")
    print(f"users so far {s['users_so_far']:,}; most events: "
          + ", ".join(f"user {u} {c:,}" for u, c in s["top_users"]))
    if s["rankings_per_event"] is not None:
        print(f"rankings per event with windows of {args.window} events: {s['rankings_per_event']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
