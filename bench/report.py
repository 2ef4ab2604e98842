"""The report: machine, versions and config of a run, the summary table, the JSON file."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

logger = logging.getLogger(__name__)

PACKAGES = ("apache-flink", "apache-beam", "pemja", "kafka-python", "redis", "numpy", "psutil", "matplotlib")
#: config keys recorded with the results (missing ones are left out: the job's config evolves)
CONFIG_KEYS = (
    "job.parallelism", "job.python_mode", "job.window_ms", "job.shards", "job.max_out_of_orderness_ms",
    "job.settle_ms", "job.bundle_size", "job.bundle_time_ms", "job.buffer_timeout_ms",
    "job.checkpoint_interval_ms", "job.state_backend", "job.delivery",
    "job.dedup_max_ids", "kafka.partitions", "redis.pipeline_size", "model.top_n", "model.top_k",
    "model.history_cap", "model.trending_size",
)


def machine_info() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    return {
        "cpus_logical": os.cpu_count(),
        "cpus_physical": psutil.cpu_count(logical=False),
        "memory_bytes": vm.total,
        "memory_gib": round(vm.total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def speed_probe(rounds: int = 3) -> float:
    """Milliseconds of a fixed single-threaded Python workload (dict updates and a sort, the kind of work the
    algorithm core does), the best of ``rounds``: how fast the machine is at that moment, lower is faster. The
    development machine's speed moves by ~2x between runs (a shared VM); a part's numbers are comparable across
    reports only at a similar probe."""
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        scores: dict[str, float] = {}
        get = scores.get
        for i in range(150_000):
            key = str(i % 4_096)
            scores[key] = get(key, 0.0) + i * 0.5
        sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        best = min(best, time.perf_counter() - t)
    return round(best * 1000, 1)


def versions(redis_client: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=20)
        out["java"] = (java.stderr or java.stdout).splitlines()[0] if (java.stderr or java.stdout) else None
    except (OSError, subprocess.TimeoutExpired):
        out["java"] = None
    if redis_client is not None:
        try:
            out["redis_server"] = redis_client.info("server").get("redis_version")
        except Exception as exc:  # informational only
            logger.debug("redis INFO failed: %s", exc)
    return out


def config_used(cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted in CONFIG_KEYS:
        section, key = dotted.split(".")
        if key in cfg.get(section, {}):
            out[dotted] = cfg[section][key]
    return out


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def _fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def on_cluster(run: dict[str, Any]) -> bool:
    """The run was on the local cluster of single-slot TaskManagers (not the one-JVM mini-cluster)."""
    return str(run.get("layout", "")).startswith("local cluster")


def run_name(run: dict[str, Any]) -> str:
    """``p=2`` for a mini-cluster run, ``p=2 (2 TMs)`` for one on the local cluster of single-slot TaskManagers."""
    return f"p={run['parallelism']}" + (f" ({run['parallelism']} TMs)" if on_cluster(run) else "")


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(measurement, value, detail)`` rows of the summary table."""
    rows: list[tuple[str, str, str]] = []
    probes = report.get("machine", {}).get("speed_probe_ms") or {}
    if probes:
        rows.append(("machine speed probe (lower = faster)", f"{min(probes.values()):,.0f} ms",
                     "before each part: " + ", ".join(f"{part} {ms:,.0f}" for part, ms in probes.items())
                     + " ms (bench.report.speed_probe)"))
    for run in report.get("throughput", {}).get("runs", []):
        rows.append((f"throughput {run['dataset']} {run_name(run)}", f"{_fmt(run.get('events_per_s'))} ev/s",
                     f"{run['events']:,} events in {_fmt(run.get('elapsed_s'), '.2f')} s; job CPU "
                     f"{_fmt(run.get('job_cpu_us_per_event'))} us/event; peak RSS "
                     f"{_fmt((run.get('rss') or {}).get('peak_total_bytes', 0) / 2**20)} MiB"))
    fr = report.get("freshness")
    if fr and fr.get("count"):
        rows.append((f"freshness p={fr['parallelism']} @ {fr['rate']:g} ev/s",
                     f"p50 {_fmt(fr['p50_ms'])} ms",
                     f"p95 {_fmt(fr['p95_ms'])}, p99 {_fmt(fr['p99_ms'])}, max {_fmt(fr['max_ms'])} ms; "
                     f"{fr['count']:,} probes over {fr['duration_s']:.0f} s, {fr['timeouts']} timed out; "
                     f"background {fr['background_achieved_per_s']:,.0f} ev/s"))
    sc = report.get("scale")
    if sc and sc.get("events_per_s"):
        state = sc.get("state") or {}
        chk = state.get("checkpoint") or {}
        red = state.get("redis") or {}
        rss = sc.get("rss") or {}
        rows.append((f"scale {sc['events']:,} events {run_name(sc)}", f"{_fmt(sc['events_per_s'])} ev/s",
                     f"{_fmt(sc['elapsed_s'], '.1f')} s; peak RSS JVM "
                     f"{_fmt(rss.get('peak_jvm_bytes', 0) / 2**20)} MiB, "
                     f"tree {_fmt(rss.get('peak_total_bytes', 0) / 2**20)} MiB; checkpoint "
                     f"{_fmt(chk.get('bytes', 0) / 2**20, ',.1f') if chk else '-'} MiB; Redis "
                     f"{_fmt(red.get('memory_usage_bytes', 0) / 2**20, ',.1f')} MiB in {red.get('keys', 0):,} keys"))
    for run in report.get("limit", {}).get("runs", []):
        rows.append((f"limit {run['dataset']} (compiled core)", f"{_fmt(run.get('events_per_s'))} ev/s",
                     limit_detail(run)))
    for ratio in report.get("limit", {}).get("ratios", []):
        cpu = ratio.get("cpu_ratio")
        detail = "; ".join(x for x in (f"CPU per event job/limit {cpu:.2f}" if cpu else "", ratio.get("note", "")) if x)
        rows.append((f"ratio job/limit {ratio['job']} / {ratio['limit']}", f"{ratio['ratio']:.2f}", detail))
    return rows


def limit_detail(run: dict[str, Any]) -> str:
    """The summary's detail of one limit run: the work (windows, rankings) and its cost (CPU, memory)."""
    modes = "+".join([run["mode"], *run.get("compare_modes", [])])
    return (f"1 process (core.v2), no Flink/Kafka/Redis; {run['events']:,} events in {run['windows']:,} "
            f"window{'' if run['windows'] == 1 else 's'} of {run['window_events']:,}, {run['rankings']:,} users "
            f"ranked ({modes}"
            f"{', rendered' if run.get('rendered') else ''}); wall {run['wall_s']:,.1f} s, CPU "
            f"{run['cpu_s']:,.1f} s = {_fmt(run.get('cpu_us_per_event'), ',.1f')} us/event; peak RSS "
            f"{_fmt(run.get('peak_rss_bytes', 0) / 2**20)} MiB, state {_fmt(run['state_bytes'] / 2**20)} MiB")


def summary_table(report: dict[str, Any]) -> str:
    rows = summary_rows(report)
    if not rows:
        return "(nothing measured)"
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    head = f"{'measurement':<{w0}}  {'result':>{w1}}  detail"
    lines = [head, "-" * len(head)]
    lines += [f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
