"""Scaling on paper: turn a `make bench` report into a sizing estimate for a large deployment.

``python -m bench.scaling [--report results/bench/report.json] [--rate 100000] [--users 10000000]
[--items 1000000]`` prints the estimate docs/bench.md quotes. It only does arithmetic on measured figures:
CPU per event (from the parallelism-1 throughput run), the parallel efficiency (p=2 against p=1), and
the state per event and per user/item of the 1M-event scale run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.report import on_cluster
from config import PROJECT_ROOT

DEFAULT_REPORT = PROJECT_ROOT / "results" / "bench" / "report.json"


def estimate(report: dict[str, Any], rate: float, users: int, items: int) -> dict[str, float]:
    # p=2: the run on single-slot TaskManagers when there is one (the production layout; in one JVM all
    # subtasks share one interpreter), else the mini-cluster run
    ordered = sorted(report["throughput"]["runs"], key=on_cluster)
    runs = {r["parallelism"]: r for r in ordered}
    e1, e2 = runs[1]["events_per_s"], runs.get(2, runs[1])["events_per_s"]
    cpu_us = runs[1]["job_cpu_us_per_event"]
    scale = report["scale"]
    processed = scale.get("events_processed") or scale["events"]
    spec = scale["spec"]
    ckpt = scale["state"]["checkpoint"]["bytes"]
    scale_cpu = scale.get("job_cpu_us_per_event") or cpu_us
    per_event_state = ckpt / processed
    # per-slot rate: one TaskManager with one slot per core (thread mode: one interpreter per JVM)
    slot_rate_small = 1e6 / cpu_us
    slot_rate_large = 1e6 / scale_cpu
    return {
        "E1": e1, "E2": e2, "efficiency_p2": e2 / (2 * e1), "cpu_us_per_event_ml": cpu_us,
        "cpu_us_per_event_scale": scale_cpu, "slot_rate_ml": slot_rate_small, "slot_rate_scale": slot_rate_large,
        "slots_ml": math.ceil(rate / slot_rate_small), "slots_scale": math.ceil(rate / slot_rate_large),
        "state_bytes_per_event": per_event_state, "scale_events": processed, "scale_users": spec["users"],
        "scale_items": spec["items"], "checkpoint_bytes": ckpt,
        "user_state_gib": users * per_event_state * processed / spec["users"] / 2**30,
        "neighbour_lists_gib_per_ranker": items * report["limit"]["top_k"] * 40 / 2**30,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="a report.json of `make bench`")
    parser.add_argument("--rate", type=float, default=100_000, help="target events/s (default 100,000)")
    parser.add_argument("--users", type=int, default=10_000_000, help="users (default 10M)")
    parser.add_argument("--items", type=int, default=1_000_000, help="items (default 1M)")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"no benchmark report at {args.report}: run `make bench` first", file=sys.stderr)
        return 1
    report = json.loads(args.report.read_text())
    est = estimate(report, args.rate, args.users, args.items)
    print(f"measured: {est['E1']:,.0f} events/s at p=1, {est['E2']:,.0f} at p=2 "
          f"(efficiency {est['efficiency_p2']:.2f}); {est['cpu_us_per_event_ml']:.0f} us CPU/event on MovieLens, "
          f"{est['cpu_us_per_event_scale']:.0f} us on the "
          f"{est['scale_users']:,}-user/{est['scale_items']:,}-item stream")
    print(f"one slot (one TaskManager per core, thread mode) sustains ~{est['slot_rate_ml']:,.0f} events/s with a "
          f"small catalog, ~{est['slot_rate_scale']:,.0f} with the larger one")
    print(f"{args.rate:,.0f} events/s needs ~{est['slots_ml']:,} slots (small catalog) to ~{est['slots_scale']:,} "
          f"slots (larger catalog; more as state grows)")
    print(f"state: {est['checkpoint_bytes'] / 2**20:,.0f} MiB checkpoint after {est['scale_events']:,} events = "
          f"{est['state_bytes_per_event']:,.0f} bytes/event; for {args.users:,} users with the same history per "
          f"user: ~{est['user_state_gib']:,.0f} GiB of keyed state (RocksDB, spread over the slots)")
    print(f"broadcast neighbour lists: {args.items:,} items x top_k {report['limit']['top_k']}"
          f" -> ~{est['neighbour_lists_gib_per_ranker']:,.1f} GiB in every ranker slot (~40 bytes an entry)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
