"""``python -m bench`` (``make bench``): throughput, freshness, scale and the single-process limit.

Writes ``results/bench/report.json``, PNG charts and logs into ``results/bench/`` and prints a summary
table. See ``docs/bench.md`` for what each number means.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench.common import (
    RESULTS_DIR,
    SERVICES_HINT,
    BenchError,
    base_config,
    check_services,
    cleanup_leftovers,
    progress,
    redis_client,
    service_errors,
)
from bench.report import run_name
from config import ConfigError

logger = logging.getLogger(__name__)

PARTS = ("throughput", "freshness", "scale", "limit")

EPILOG = """\
examples:
  make bench                                   # everything (under 20 minutes on 2 cores)
  make bench ARGS="--quick"                    # smoke version of every part (a few minutes)
  python -m bench --only throughput            # MovieLens-100K at parallelism 1 and 2
  python -m bench --only freshness --rate 500 --duration 120
  python -m bench --only scale --scale-events 200000 --profile 30
  python -m bench --only limit                 # the compiled core alone, whole streams; no services
  python -m bench --set job.window_ms=250 --set job.shards=16 --only throughput,freshness

services: Kafka on 127.0.0.1:9092 and Redis on 127.0.0.1:6379 (`make services-up`); every run uses
topics, a Redis prefix, a consumer group and a checkpoint directory of its own and deletes them after.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(PARTS), metavar="PARTS",
                   help=f"comma-separated parts to run, of {','.join(PARTS)} (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="short smoke version: 20k MovieLens events, 15 s freshness, 100k-event scale and limit")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="output folder (default results/bench)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override passed to the job and used by the limit, e.g. job.window_ms=250 "
                        "(repeatable; topics, Redis prefix, group and parallelism are set per run)")
    g = p.add_argument_group("throughput")
    g.add_argument("--parallelism", default="1,2", metavar="LIST",
                   help="job parallelisms to measure in the local mini-cluster, one JVM (default 1,2)")
    g.add_argument("--cluster-parallelism", default="2", metavar="LIST",
                   help="job parallelisms to measure on a local standalone cluster with that many TaskManagers of "
                        "one slot each (thread mode runs one Python interpreter per TaskManager); '' to skip "
                        "(default 2)")
    g.add_argument("--events", type=int, metavar="N", help="replay only the first N MovieLens ratings")
    g = p.add_argument_group("freshness")
    g.add_argument("--rate", type=float, default=1000.0, help="background events/s (default 1000)")
    g.add_argument("--duration", type=float, help="seconds of probing (default 60; --quick 15)")
    g.add_argument("--probes", type=int, default=16, help="probe users, one outstanding event each (default 16)")
    g.add_argument("--poll-ms", type=float, default=10.0, help="Redis polling interval of the watcher (default 10)")
    g = p.add_argument_group("scale")
    g.add_argument("--scale-events", type=int, help="synthetic events (default 1000000; --quick 100000)")
    g.add_argument("--scale-users", type=int, help="users (default 100000; --quick 10000)")
    g.add_argument("--scale-items", type=int, help="items (default 20000; --quick 2000)")
    g.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of item popularity (default 1.1)")
    g.add_argument("--seed", type=int, default=0, help="seed of the synthetic stream (default 0)")
    g.add_argument("--scale-timeout", type=float, default=480.0,
                   help="seconds after the first event after which the scale run reports the part it finished "
                        "(approximate, marked incomplete) instead of waiting on (default 480)")
    g.add_argument("--scale-parallelism", type=int, default=1, metavar="N",
                   help="parallelism of the scale run (default 1)")
    g.add_argument("--scale-cluster", action="store_true",
                   help="run the scale part on the local standalone cluster of single-slot TaskManagers, one per "
                        "subtask, like the 'p=2 (2 TMs)' throughput run (default: the mini-cluster)")
    g.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                   help="py-spy the JVM for this long during the scale run and each MovieLens replay (default 0: off)")
    g.add_argument("--profile-delay", type=float, default=None, metavar="SECONDS",
                   help="start the profile this long after the first event (default: 3 for the MovieLens replays, "
                        "10 for the scale run); e.g. 300 profiles the scale run once its state has grown")
    g = p.add_argument_group("limit")
    g.add_argument("--limit-streams", default="movielens,synthetic", metavar="LIST",
                   help="streams of the limit, of movielens,synthetic (default both; synthetic: the scale part's "
                        "stream, --scale-events etc., with its row caps)")
    g.add_argument("--limit-window-events", type=int, default=0, metavar="N",
                   help="events per window of the limit (default: those of one job.window_ms at 50,000 events/s, "
                        "20,000 at 400 ms)")
    g.add_argument("--limit-render", action="store_true",
                   help="the limit also spells out every ranked list with its reasons (the sink's work; default off)")
    p.add_argument("--keep-going", action="store_true", help="run the other parts when one fails (default: stop)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _missing_packages() -> list[str]:
    import importlib.util

    return [name for name in ("psutil", "matplotlib") if importlib.util.find_spec(name) is None]


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("bench").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    for noisy in ("py4j", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # the benchmark reports Kafka trouble itself
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        print(f"error: unknown part(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(PARTS)}",
              file=sys.stderr)
        return 2
    if "limit" in parts:
        try:
            _limit_streams(args)
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    missing = _missing_packages()
    if "psutil" in missing:
        print("error: the benchmark needs psutil: .venv/bin/pip install psutil==7.1.3", file=sys.stderr)
        return 2
    if "matplotlib" in missing:
        logger.warning("matplotlib is not installed: no charts (.venv/bin/pip install matplotlib==3.10.8)")
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        try:
            return run(args, parts)
        finally:
            with contextlib.suppress(Exception):
                cleanup_leftovers(base_config(list(args.overrides)))
    except KeyboardInterrupt:
        progress("interrupted: the job subprocesses were stopped and the run's topics and keys deleted")
        return 130
    except (BenchError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, parts: list[str]) -> int:
    from bench import report as rep

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = base_config(list(args.overrides))
    started = time.time()
    report: dict[str, Any] = {
        "generated_at": rep.stamp(), "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "quick": args.quick, "parts": parts, "machine": rep.machine_info(), "config": rep.config_used(cfg),
        "overrides": list(args.overrides), "durations_s": {}, "loadavg_after": {}, "errors": {},
    }
    needs_services = any(p != "limit" for p in parts)
    client = None
    if needs_services:
        check_services(cfg)
        client = redis_client(cfg)
    report["versions"] = rep.versions(client)
    if client is not None:
        client.close()

    steps: dict[str, Callable[[], None]] = {
        "throughput": lambda: _throughput(args, report, out),
        "freshness": lambda: _freshness(args, report, out),
        "scale": lambda: _scale(args, report, out),
        "limit": lambda: _limit(args, report, cfg),
    }
    failed = False
    lost = service_errors()
    for part in parts:
        report["machine"].setdefault("speed_probe_ms", {})[part] = probe = rep.speed_probe()
        progress("=== %s === (machine speed probe %.0f ms, lower = faster)", part, probe)
        t = time.time()
        try:
            for attempt in (1, 2):
                try:
                    steps[part]()
                    break
                except lost as exc:  # a service restarted under us: the part's numbers are void, run it again
                    if attempt == 2:
                        raise BenchError(f"{part}: lost the connection to Kafka or Redis again ({exc}); "
                                         f"{SERVICES_HINT}") from exc
                    progress("%s: lost the connection to Kafka or Redis (%s); retrying the part once when both "
                             "answer", part, exc)
                    check_services(cfg, timeout=120)
        except BenchError as exc:
            failed = True
            report["errors"][part] = str(exc)
            progress("%s failed: %s", part, exc)
            if not args.keep_going:
                break
        except Exception as exc:
            failed = True
            report["errors"][part] = f"{type(exc).__name__}: {exc}"
            logger.error("%s failed:\n%s", part, traceback.format_exc())
            if not args.keep_going:
                break
        finally:
            report["durations_s"][part] = round(time.time() - t, 1)
            report["loadavg_after"][part] = [round(x, 2) for x in os.getloadavg()]
            rep.write_json(report, out / "report.json")  # what is done so far survives an interruption
    with contextlib.suppress(OSError):
        (RESULTS_DIR / "tmp").rmdir()  # the runs' checkpoint folders are gone; drop their parent if empty
    _ratios(report)
    report["charts"] = _charts(report, out)
    report["durations_s"]["total"] = round(time.time() - started, 1)
    report["machine"]["loadavg_at_end"] = rep.machine_info()["loadavg_at_start"]
    rep.write_json(report, out / "report.json")
    print(rep.summary_table(report))
    print(f"\nreport: {out / 'report.json'}; charts: {', '.join(report['charts']) or '-'}; "
          f"total {report['durations_s']['total']:.0f} s")
    return 1 if failed else 0


# --- parts ---------------------------------------------------------------------------------------------------------

def _movielens(limit: int | None) -> list[Any]:
    from ingest.movielens import DatasetNotFound, load_events

    try:
        return load_events(limit=limit)
    except DatasetNotFound as exc:
        raise BenchError(str(exc)) from exc


def _throughput(args: argparse.Namespace, report: dict[str, Any], out: Path) -> None:
    from bench.replay import ReplayOptions, run_replay

    events = _movielens(args.events or (20_000 if args.quick else None))
    runs: list[dict[str, Any]] = []
    report["throughput"] = {"dataset": "MovieLens-100K", "events": len(events), "runs": runs}
    plan = [(int(x), False) for x in args.parallelism.split(",") if x.strip()]
    plan += [(int(x), True) for x in args.cluster_parallelism.split(",") if x.strip()]
    for par, on_cluster in plan:
        label = f"tp-p{par}" + ("-cluster" if on_cluster else "")
        res = run_replay(events, ReplayOptions(label, par, overrides=list(args.overrides), cluster=on_cluster,
                                               catalog=_movielens_catalog(), profile_s=args.profile,
                                               profile_delay=3.0 if args.profile_delay is None else args.profile_delay,
                                               profile_out=out / f"profile_{label}.txt"))
        res["dataset"] = "MovieLens-100K"
        runs.append(res)


def _freshness(args: argparse.Namespace, report: dict[str, Any], out: Path) -> None:
    from bench.freshness import FreshnessOptions, run_freshness

    events = _movielens(None)
    duration = args.duration or (15.0 if args.quick else 60.0)
    opts = FreshnessOptions(rate=args.rate, duration_s=duration, warmup_s=5.0 if args.quick else 10.0,
                            probes=args.probes, poll_ms=args.poll_ms, overrides=list(args.overrides),
                            samples_csv=out / "freshness_samples.csv")
    report["freshness"] = run_freshness(events, opts)


def _scale_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The synthetic stream of the scale part and the limit: events, users, items, zipf, seed."""
    return {"events": args.scale_events or (100_000 if args.quick else 1_000_000),
            "users": args.scale_users or (10_000 if args.quick else 100_000),
            "items": args.scale_items or (2_000 if args.quick else 20_000), "zipf": args.zipf, "seed": args.seed}


def _scale_events(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    from ingest.synthetic import generate

    spec = _scale_spec(args)
    n, users, items = spec["events"], spec["users"], spec["items"]
    t = time.time()
    events = list(generate(n, users, items, zipf_s=args.zipf, seed=args.seed))
    progress("generated %d synthetic events (%d users, %d items, Zipf %.2f, seed %d) in %.1f s", n, users, items,
             args.zipf, args.seed, time.time() - t)
    return events, spec


def _movielens_catalog() -> list[dict[str, Any]]:
    from ingest.movielens import load_catalog

    return load_catalog()


SCALE_OVERRIDES = ("model.row_cap=100", "model.hybrid.usercf_row_cap=50")
"""The scale run's bounds for 100k users / 20k items (the job's and the limit's): similarity rows capped (make eval:
what each costs)."""


def _scale_catalog(spec: dict[str, Any]) -> list[dict[str, Any]]:
    from ingest.synthetic import generate_catalog

    return generate_catalog(spec["items"], seed=spec["seed"])


def _scale(args: argparse.Namespace, report: dict[str, Any], out: Path) -> None:
    from bench.replay import ReplayOptions, run_replay

    events, spec = _scale_events(args)
    # the row caps bound the similarity state at 100k users / 20k items (0 = exact, the default, would not fit in
    # 4 GiB); --set overrides them
    overrides = [*SCALE_OVERRIDES, *args.overrides]
    if args.scale_parallelism < 1:
        raise BenchError(f"--scale-parallelism must be at least 1, got {args.scale_parallelism}")
    opts = ReplayOptions("scale", args.scale_parallelism, overrides=overrides, cluster=args.scale_cluster,
                         state_size=True, partial_ok=True,
                         timeout=args.scale_timeout, profile_s=args.profile, profile_out=out / "profile_scale.txt",
                         profile_delay=10.0 if args.profile_delay is None else args.profile_delay,
                         catalog=_scale_catalog(spec))
    res = run_replay(events, opts)
    res["dataset"] = "synthetic"
    res["spec"] = spec
    res["overrides"] = overrides
    report["scale"] = res


LIMIT_STREAMS = ("movielens", "synthetic")


def _limit_streams(args: argparse.Namespace) -> list[str]:
    """The streams of ``--limit-streams``, after checking them and ``--limit-window-events``."""
    streams = [s.strip() for s in args.limit_streams.split(",") if s.strip()]
    bad = sorted(set(streams) - set(LIMIT_STREAMS))
    if bad or not streams:
        raise BenchError(f"--limit-streams {args.limit_streams!r} must name some of {','.join(LIMIT_STREAMS)}")
    if args.limit_window_events < 0:
        raise BenchError(f"--limit-window-events {args.limit_window_events!r} must be >= 0 (0: from job.window_ms)")
    return streams


def _limit(args: argparse.Namespace, report: dict[str, Any], cfg: dict[str, Any]) -> None:
    from bench import limit

    streams = _limit_streams(args)
    try:
        p = limit.plan(cfg)
    except ValueError as exc:
        raise BenchError(str(exc)) from exc
    window = args.limit_window_events or limit.window_events(cfg["job"]["window_ms"])
    runs: list[dict[str, Any]] = []
    report["limit"] = {"core": "core.v2", "mode": p.settings.mode, "compare_modes": list(p.compare_modes),
                       "methods": list(p.settings.methods), "stored_n": p.stored_n, "top_n": p.settings.top_n,
                       "window_ms": cfg["job"]["window_ms"], "window_events": window,
                       "reference_rate": None if args.limit_window_events else limit.REFERENCE_RATE,
                       "rendered": args.limit_render, "runs": runs}
    plan: list[tuple[limit.Stream, list[str]]] = []
    if "movielens" in streams:
        plan.append((limit.Stream(limit.MOVIELENS, args.events or (20_000 if args.quick else None)),
                     list(args.overrides)))
    if "synthetic" in streams:
        spec = _scale_spec(args)
        # the model settings of the job's scale run (its bounds for a large catalog)
        plan.append((limit.Stream(limit.SYNTHETIC, spec["events"], spec["users"], spec["items"], spec["zipf"],
                                  spec["seed"]), [*SCALE_OVERRIDES, *args.overrides]))
    for stream, overrides in plan:
        res = limit.run_isolated(stream, overrides, args.limit_window_events or None, render=args.limit_render)
        runs.append(res)
        progress("limit %s: %s events/s (%s events, CPU %.1f s, peak RSS %.0f MiB, state %.0f MiB)", res["dataset"],
                 f"{res['events_per_s'] or 0:,.0f}", f"{res['events']:,}", res["cpu_s"], res["peak_rss_bytes"] / 2**20,
                 res["state_bytes"] / 2**20)


def _ratios(report: dict[str, Any]) -> None:
    """The job's events/s over the limit's on the same stream, and its CPU time per event over the limit's."""
    lim = report.get("limit")
    if not lim:
        return
    jobs: list[tuple[str, str, dict[str, Any]]] = []
    for run in report.get("throughput", {}).get("runs", []):
        jobs.append((f"MovieLens-100K {run_name(run)}", "MovieLens-100K", run))
    if report.get("scale"):
        jobs.append((f"synthetic {run_name(report['scale'])}", "synthetic", report["scale"]))
    ratios = []
    for label, dataset, run in jobs:
        for lr in lim["runs"]:
            if lr["dataset"] != dataset or not lr.get("events_per_s") or not run.get("events_per_s"):
                continue
            notes = []
            if lr["events"] != run.get("events"):
                notes.append(f"limit over {lr['events']:,} events, job over {run.get('events') or 0:,}")
            if run.get("complete") is False:
                notes.append("job run incomplete (time cap)")
            job_cpu, lim_cpu = run.get("job_cpu_us_per_event"), lr.get("cpu_us_per_event")
            ratios.append({"job": label, "limit": dataset,
                           "ratio": round(run["events_per_s"] / lr["events_per_s"], 3),
                           # CPU time per event, job / limit: how much more CPU the job spends on an event
                           "cpu_ratio": round(job_cpu / lim_cpu, 2) if job_cpu and lim_cpu else None,
                           "note": "; ".join(notes)})
    lim["ratios"] = ratios


def _charts(report: dict[str, Any], out: Path) -> list[str]:
    from bench import charts

    made: list[str] = []
    bars: list[tuple[str, float, str]] = []
    for run in report.get("throughput", {}).get("runs", []):
        if run.get("events_per_s"):
            bars.append((f"job, MovieLens-100K ({run['events']:,}), {run_name(run)}", run["events_per_s"],
                         "job"))
    sc = report.get("scale")
    if sc and sc.get("events_per_s"):
        part = "" if sc.get("complete", True) else " (partial)"
        bars.append((f"job, synthetic ({sc['events']:,}), {run_name(sc)}{part}", sc["events_per_s"], "scale"))
    for lr in report.get("limit", {}).get("runs", []):
        if lr.get("events_per_s"):
            bars.append((f"limit: compiled core, 1 process, {lr['dataset']} ({lr['events']:,})", lr["events_per_s"],
                         "limit"))
    try:
        path = charts.throughput_chart(bars, out / "throughput.png",
                                       "throughput: Kafka -> Flink -> Redis vs. the compiled core in one process")
        if path:
            made.append(str(path))
        fr = report.get("freshness")
        if fr and fr.get("samples"):
            path = charts.freshness_chart(fr["samples"], fr, out / "freshness.png",
                                          f"freshness at {fr['rate']:g} events/s, parallelism {fr['parallelism']} "
                                          f"({fr['count']:,} probe events)")
            if path:
                made.append(str(path))
    except Exception as exc:  # charts are a convenience: never lose the report over them
        logger.error("charts failed: %s", exc)
    return made
