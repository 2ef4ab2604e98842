"""Latency benchmark of ``GET /users/{user_id}/recommendations`` and ``POST /sessions/recommendations``:
``python -m serving.bench_api`` (not a test).

1. fills Redis with ``--users`` fake users (``model.stored_n`` recommendations each, the job's layout), ``--items``
   catalog hashes, a ``model.top_k`` neighbour list per item and ``model.trending_size`` trending items under a random
   prefix;
2. starts the API (``python -m serving``, uvicorn, one worker) in a subprocess on 127.0.0.1;
3. from a separate process sends GET requests open-loop at ``--rate`` requests/s for ``--duration`` s
   (after ``--warmup`` s that are not counted) over up to ``--connections`` keep-alive connections:
   request ``i`` is due at ``start + i / rate`` whether or not earlier ones have been answered, and its
   latency is measured from that due time, so a slow server cannot hide queueing (no coordinated omission);
4. then the same for anonymous sessions: ``POST /sessions/recommendations`` with ``--session-items`` events each
   (distinct random sessions) at ``--session-rate`` requests/s (0: not run) for ``--duration`` s;
5. writes p50/p95/p99/max latency, errors and the server's CPU use (share of a core, and ms per request sent,
   warm-up included) as JSON to ``--output`` (default ``results/bench-api.json``; the sessions under
   ``"sessions"``), prints a short table per endpoint, and removes the Redis keys.

Traffic only goes to 127.0.0.1; the number of requests and the run time are bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import multiprocessing
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from config import ConfigError, load_config, resolve_path

logger = logging.getLogger("serving.bench_api")

HOST = "127.0.0.1"
MAX_RATE = 5000.0
MAX_DURATION_S = 600.0
TARGET_P99_MS = 10.0
SESSION_TARGET_P99_MS = 20.0
KEEP_ALIVE_REUSE_S = 3.0  # reuse an idle connection only this long (uvicorn closes idle ones after 5 s)


# --- the load generator (runs in its own process) --------------------------------------------------------------------

async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"content-length:")
    if at < 0:
        raise ValueError("response without Content-Length")
    length = int(lower[at + 15 : lower.find(b"\r\n", at)].strip())
    return status, await reader.readexactly(length)


async def _load(port: int, requests: list[bytes], rate: float, warmup: int, timeout_s: float,
                max_connections: int, marker: bytes = b'"user_id"') -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    clock = time.perf_counter  # the loop's own clock has millisecond resolution under uvloop
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []  # (reader, writer, last used)
    opened = 0
    latencies: list[float] = []
    service: list[float] = []
    errors: Counter[str] = Counter()
    max_lag = 0.0

    async def one(i: int, due: float) -> None:
        nonlocal opened
        measured = i >= warmup
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while idle and conn is None:
            reader, writer, last_used = idle.pop()
            if clock() - last_used < KEEP_ALIVE_REUSE_S:
                conn = (reader, writer)
            else:  # the server may have closed it (uvicorn's keep-alive timeout is 5 s): do not race it
                writer.close()
                opened -= 1
        if conn is None:
            if opened >= max_connections:
                if measured:
                    errors["all connections busy"] += 1
                return
            opened += 1
            try:
                conn = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout_s)
            except (OSError, TimeoutError) as exc:
                opened -= 1
                if measured:
                    errors[f"connect: {type(exc).__name__}"] += 1
                return
        reader, writer = conn
        sent = clock()
        try:
            writer.write(requests[i % len(requests)])
            status, body = await asyncio.wait_for(_read_response(reader), timeout_s)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            writer.close()
            opened -= 1
            if measured:
                errors[type(exc).__name__] += 1
            return
        done = clock()
        idle.append((reader, writer, done))
        if not measured:
            return
        if status != 200 or marker not in body:
            errors[f"HTTP {status}"] += 1
            return
        latencies.append(done - due)
        service.append(done - sent)

    total = len(requests)
    start = clock() + 0.2
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        max_lag = max(max_lag, clock() - due)
        tasks.append(loop.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    elapsed = clock() - start
    for _, writer, _ in idle:
        writer.close()
    return {"latencies": latencies, "service": service, "errors": dict(errors), "max_send_lag_s": max_lag,
            "elapsed_s": elapsed, "connections_opened": opened + 0}


def run_load(port: int, requests: list[bytes], rate: float, warmup: int, timeout_s: float,
             max_connections: int, nice: int = 0, marker: bytes = b'"user_id"') -> dict[str, Any]:
    """Send ``requests`` open-loop at ``rate``/s to 127.0.0.1:``port``; the first ``warmup`` are not measured; an
    answer is an error unless it is a 200 holding ``marker``."""
    if nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is optional
        loop_factory = None
    loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_load(port, requests, rate, warmup, timeout_s, max_connections, marker))
    finally:
        loop.close()


# --- statistics and reporting ----------------------------------------------------------------------------------------

def percentiles(values_s: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p95/p99/p99.9/max/mean in milliseconds (nearest rank), None when there are no values."""
    keys = ("p50", "p90", "p95", "p99", "p99_9", "max", "mean")
    if not values_s:
        return dict.fromkeys(keys)
    xs = sorted(values_s)

    def rank(q: float) -> float:
        return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))] * 1000

    return {"p50": rank(0.50), "p90": rank(0.90), "p95": rank(0.95), "p99": rank(0.99), "p99_9": rank(0.999),
            "max": xs[-1] * 1000, "mean": sum(xs) / len(xs) * 1000}


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _rows(result: dict[str, Any]) -> list[str]:
    lat, svc = result["latency_ms"], result["service_time_ms"]
    req = result["requests"]
    rows = [
        ("", "latency (from due time)", "service time (from send)"),
        *[(k, f"{lat[k]:.2f} ms" if lat[k] is not None else "-", f"{svc[k]:.2f} ms" if svc[k] is not None else "-")
          for k in ("p50", "p95", "p99", "p99_9", "max", "mean")],
    ]
    lines = [f"  {a:<7}{b:>26}{c:>28}" for a, b, c in rows]
    kinds = f" {req['error_kinds']}" if req["error_kinds"] else ""
    lines.append(f"  requests {req['sent']}, ok {req['ok']}, errors {req['errors']}{kinds}")
    return lines


def _per_request(result: dict[str, Any]) -> str:
    per = result["server"].get("cpu_ms_per_request")
    return f" ({per:.2f} ms per request)" if per is not None else ""


def _table(result: dict[str, Any]) -> str:
    lines = [f"GET /users/{{user_id}}/recommendations?n={result['config']['n']}  "
             f"{result['config']['rate']:g} req/s x {result['config']['duration_s']:g} s, "
             f"{result['config']['users']} users, uvicorn 1 worker, "
             f"{'Lua script' if result['config']['lua_script'] else 'GET + pipelined HGETALL'}"
             + (f", nice {result['config']['nice']}" if result["config"]["nice"] else "")]
    lines += _rows(result)
    lines.append(f"  achieved {result['achieved_rate']:.1f} req/s; server CPU {result['server']['cpu_utilization']}"
                 f"{_per_request(result)}; "
                 f"max send lag {result['max_send_lag_ms']:.2f} ms; "
                 f"load average {result['machine']['load_average_before'][0]:.1f} on {result['machine']['cpus']} CPUs")
    verdict = "met" if result["target"]["met"] else "NOT met"
    lines.append(f"  target p99 < {TARGET_P99_MS:g} ms: {verdict}")
    sessions = result.get("sessions")
    if sessions is not None:
        c = sessions["config"]
        lines.append(f"POST /sessions/recommendations?n={c['n']}  {c['rate']:g} req/s x {c['duration_s']:g} s, "
                     f"{c['session_items']}-item sessions over {c['items']} items (top_k {c['top_k']}), "
                     f"mode {c['mode']}")
        lines += _rows(sessions)
        lines.append(f"  achieved {sessions['achieved_rate']:.1f} req/s; server CPU "
                     f"{sessions['server']['cpu_utilization']}{_per_request(sessions)}; "
                     f"max send lag {sessions['max_send_lag_ms']:.2f} ms")
        lat = sessions["latency_ms"]
        if lat["p50"] is not None:
            lines.append(f"  sessions p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms")
        verdict = "met" if sessions["target"]["met"] else "NOT met"
        lines.append(f"  target p99 < {SESSION_TARGET_P99_MS:g} ms: {verdict}")
    if result["machine"]["busy"]:
        lines.append(f"  WARNING: load average {result['machine']['load_average_before'][0]:.1f} on "
                     f"{result['machine']['cpus']} CPUs: the machine is busy and the latencies include waiting for "
                     "a CPU (the server, Redis and the load generator compete with other work)")
    return "\n".join(lines)


# --- orchestration ---------------------------------------------------------------------------------------------------

def _wait_ready(port: int, path: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with status {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            raise RuntimeError(f"the API did not answer on {HOST}:{port} within {timeout_s:g} s")
        time.sleep(0.2)


def fill_model(client: Any, prefix: str, items: int, top_k: int, trending: int, seed: int = 0) -> None:
    """What the job publishes for sessions: a ``top_k`` neighbour list per item "1".."items" (cosines falling from
    1) and ``trending`` trending items, in the job's layout (``serving.testing``: ``udfs.serde``)."""
    from udfs.serde import dumps, similar_message

    rng = random.Random(seed)
    at = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for i in range(1, items + 1):
        picks = rng.sample([j for j in range(max(1, i - 200), min(items, i + 200) + 1) if j != i], top_k)
        nb = [(str(j), round(0.9 ** r * rng.uniform(0.5, 1.0), 6)) for r, j in enumerate(picks)]
        pipe.set(f"{prefix}similar:{i}", dumps(similar_message(str(i), nb, at)))
        if i % 1000 == 0:
            pipe.execute()
    hot = rng.sample(range(1, items + 1), min(trending, items))
    pipe.set(f"{prefix}trending", dumps([{"item_id": str(j), "score": round(1000.0 / (r + 1), 6)}
                                        for r, j in enumerate(hot)]))
    pipe.execute()


def session_requests(port: int, items: int, size: int, n: int, count: int, seed: int = 0) -> list[bytes]:
    """``count`` distinct sessions of ``size`` events (random items of a neighbourhood, mixed types, the last
    minutes) as raw HTTP requests."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    weights = {"view": 6, "click": 3, "cart": 1, "purchase": 1}
    out = []
    for _ in range(count):
        centre = rng.randint(1, items)
        events = [{"item_id": str(min(items, max(1, centre + rng.randint(-300, 300)))),
                   "type": rng.choices(list(weights), list(weights.values()))[0],
                   "ts": now - (size - k) * rng.randint(5_000, 30_000)} for k in range(size)]
        body = json.dumps({"items": events}, separators=(",", ":")).encode()
        out.append((f"POST /sessions/recommendations?n={n} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    "Accept: application/json\r\n\r\n").encode() + body)
    return out


def _measure(proc: subprocess.Popen[bytes], port: int, requests: list[bytes], rate: float, warmup: int,
             timeout_s: float, connections: int, nice: int, marker: bytes) -> dict[str, Any]:
    cpu_before, wall_before = _cpu_seconds(proc.pid), time.monotonic()
    load_before = list(os.getloadavg())
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        load = pool.apply(run_load, (port, requests, rate, warmup, timeout_s, connections, nice, marker))
    cpu_after, wall = _cpu_seconds(proc.pid), time.monotonic() - wall_before
    load["cpu"] = (cpu_after - cpu_before) if cpu_before is not None and cpu_after is not None else None
    load["wall"] = wall
    load["load_before"] = load_before
    load["rss"] = _rss_mb(proc.pid)
    return load


def _report(name: str, load: dict[str, Any], measured: int, duration_s: float, target_ms: float,
            sent: int) -> dict[str, Any]:
    """The figures of one load run; ``sent``: the requests sent, warm-up included (the server's CPU covers them)."""
    errors = sum(load["errors"].values())
    cpu, wall = load["cpu"], load["wall"]
    lat = percentiles(load["latencies"])
    return {
        "benchmark": name,
        "requests": {"sent": measured, "ok": len(load["latencies"]), "errors": errors, "error_kinds": load["errors"]},
        "achieved_rate": len(load["latencies"]) / duration_s if duration_s else 0.0,
        "latency_ms": lat,
        "service_time_ms": percentiles(load["service"]),
        "max_send_lag_ms": load["max_send_lag_s"] * 1000,
        "connections_opened": load["connections_opened"],
        "server": {"cpu_seconds": cpu, "cpu_utilization": f"{cpu / wall:.0%}" if cpu is not None and wall else None,
                   "cpu_ms_per_request": cpu * 1000 / sent if cpu is not None and sent else None,
                   "rss_mb": load["rss"]},
        "target": {"p99_ms": target_ms, "met": lat["p99"] is not None and lat["p99"] < target_ms and errors == 0},
    }


def bench(cfg: dict[str, Any], users: int, items: int, n: int, rate: float, duration_s: float, warmup_s: float,
          connections: int, timeout_s: float, use_script: bool, seed: int, nice: int = 0, session_rate: float = 200.0,
          session_items: int = 20) -> dict[str, Any]:
    import redis

    from ingest.catalog import store_catalog
    from serving.testing import delete_prefix, fake_catalog, fill_fake_users, free_port, unique

    r = cfg["redis"]
    client = redis.Redis(host=r["host"], port=int(r["port"]), db=int(r["db"]), socket_connect_timeout=3)
    prefix = unique("bench-api") + ":"
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="bench-api-server-", suffix=".log", delete=False)  # noqa: SIM115
    proc: subprocess.Popen[bytes] | None = None
    sessions: dict[str, Any] | None = None
    try:
        client.ping()
        t0 = time.perf_counter()
        store_catalog(fake_catalog(items, seed=seed), client, prefix=prefix, pipeline_size=1000)
        stored_n = int(cfg["model"]["stored_n"])  # as deep as the job's documents: the script decodes all of it
        ids = fill_fake_users(client, prefix, users, items, top_n=stored_n, seed=seed)
        if session_rate:
            fill_model(client, prefix, items, int(cfg["model"]["top_k"]), int(cfg["model"]["trending_size"]), seed)
        logger.info("filled Redis under %s with %d users and %d items in %.1f s", prefix, users, items,
                    time.perf_counter() - t0)
        cmd = [sys.executable, "-m", "serving", "--host", HOST, "--port", str(port), "--log-level", "warning",
               "--set", f"redis.prefix={prefix}", "--set", f"redis.host={r['host']}",
               "--set", f"redis.port={r['port']}", "--set", f"redis.db={r['db']}"]
        if not use_script:
            cmd.append("--no-script")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        if nice:
            os.setpriority(os.PRIO_PROCESS, proc.pid, nice)
        # the API compiles (or loads from numba's cache) the session kernels before it answers
        _wait_ready(port, f"/users/{ids[0]}/recommendations?n={n}", proc, timeout_s=300.0)
        rng = random.Random(seed)
        warmup = int(rate * warmup_s)
        total = warmup + int(rate * duration_s)
        requests = [(f"GET /users/{rng.choice(ids)}/recommendations?n={n} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                     "Accept: application/json\r\n\r\n").encode() for _ in range(min(total, 50_000))]
        requests = (requests * (total // len(requests) + 1))[:total]
        logger.info("sending %d requests at %g/s (%g s warm-up + %g s measured) to %s:%d", total, rate, warmup_s,
                    duration_s, HOST, port)
        load = _measure(proc, port, requests, rate, warmup, timeout_s, connections, nice, b'"user_id"')
        if session_rate:
            s_warmup = int(session_rate * warmup_s)
            s_total = s_warmup + int(session_rate * duration_s)
            s_requests = session_requests(port, items, session_items, n, min(s_total, 20_000), seed)
            s_requests = (s_requests * (s_total // len(s_requests) + 1))[:s_total]
            logger.info("sending %d sessions of %d items at %g/s (%g s warm-up + %g s measured)", s_total,
                        session_items, session_rate, warmup_s, duration_s)
            s_load = _measure(proc, port, s_requests, session_rate, s_warmup, timeout_s, connections, nice,
                              b'"used"')
            sessions = _report("POST /sessions/recommendations", s_load, s_total - s_warmup, duration_s,
                               SESSION_TARGET_P99_MS, s_total)
            sessions["config"] = {"rate": session_rate, "session_items": session_items, "n": n,
                                  "duration_s": duration_s, "warmup_s": warmup_s, "items": items,
                                  "top_k": int(cfg["model"]["top_k"]), "mode": cfg["model"]["hybrid"]["mode"]}
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        try:
            deleted = delete_prefix(client, prefix)
            logger.info("removed %d Redis key(s) under %s", deleted, prefix)
        finally:
            client.close()
            log.close()
    if proc.returncode not in (0, -15):
        logger.warning("the API exited with %s; its log: %s", proc.returncode, log.name)
    else:
        os.unlink(log.name)
    load_before = load["load_before"]
    result = {
        **_report("GET /users/{user_id}/recommendations", load, total - warmup, duration_s, TARGET_P99_MS, total),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
                    "busy": max(load_before[0], os.getloadavg()[0]) > (os.cpu_count() or 1)},
        "config": {"users": users, "items": items, "stored_n": stored_n, "n": n, "rate": rate, "duration_s": duration_s,
                   "warmup_s": warmup_s, "max_connections": connections, "timeout_s": timeout_s,
                   "lua_script": use_script, "server": "uvicorn, 1 worker", "address": f"{HOST}:{port}",
                   "nice": nice},
    }
    if sessions is not None:
        result["sessions"] = sessions
    return result


def _bounded(kind: type, low: float, high: float) -> Any:
    def parse(raw: str) -> Any:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a valid {kind.__name__}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{raw!r} must be in {low:g}..{high:g}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.bench_api",
        description="Latency benchmark of GET /users/{user_id}/recommendations, then of POST "
                    "/sessions/recommendations (20-item sessions at 200 req/s): fake job output in Redis, the API in "
                    "a uvicorn subprocess (1 worker) on 127.0.0.1, open-loop load from a separate process. Needs "
                    "Redis (bash deploy/services.sh up); Kafka is not used.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  python -m serving.bench_api                                500 req/s for 30 s over 10,000 users
  python -m serving.bench_api --rate 1000 --duration 10      a shorter, harder run
  python -m serving.bench_api --session-rate 0               GET only, no session run
  python -m serving.bench_api --session-rate 400 --session-items 50   harder sessions
  python -m serving.bench_api --no-script                    GET + pipelined HGETALL instead of the Lua script
  python -m serving.bench_api --output results/bench-api-nolua.json --no-script
  python -m serving.bench_api --nice -10 --output results/bench-api-nice.json   on a busy shared machine
""")
    parser.add_argument("--users", type=_bounded(int, 1, 1_000_000), default=10_000, help="fake users (10000)")
    parser.add_argument("--items", type=_bounded(int, 10, 1_000_000), default=2_000, help="catalog items (2000)")
    parser.add_argument("--n", type=_bounded(int, 1, 100), default=10, help="?n= of the requests (10)")
    parser.add_argument("--rate", type=_bounded(float, 1, MAX_RATE), default=500.0,
                        help=f"requests per second (500; at most {MAX_RATE:g})")
    parser.add_argument("--duration", type=_bounded(float, 1, MAX_DURATION_S), default=30.0,
                        help=f"measured seconds (30; at most {MAX_DURATION_S:g})")
    parser.add_argument("--warmup", type=_bounded(float, 0, 60), default=3.0, help="seconds not measured first (3)")
    parser.add_argument("--connections", type=_bounded(int, 1, 1024), default=64,
                        help="most keep-alive connections open at once (64)")
    parser.add_argument("--timeout", type=_bounded(float, 0.1, 30), default=2.0, help="per-request timeout, s (2)")
    parser.add_argument("--session-rate", type=_bounded(float, 0, MAX_RATE), default=200.0,
                        help="POST /sessions/recommendations per second after the GET run (200; 0: none)")
    parser.add_argument("--session-items", type=_bounded(int, 1, 50), default=20,
                        help="events per session (20)")
    parser.add_argument("--no-script", action="store_true", help="start the API with --no-script")
    parser.add_argument("--seed", type=_bounded(int, 0, 2**31), default=0, help="random seed (0)")
    parser.add_argument("--nice", type=_bounded(int, -20, 19), default=0,
                        help="scheduling priority of the benchmark's own server and load processes (0; negative "
                             "needs root): on a shared, busy machine it measures the API rather than the run "
                             "queue; they use the same CPU, they only wait less for it")
    parser.add_argument("--output", default="results/bench-api.json", metavar="FILE",
                        help="JSON result file, relative to the project root (results/bench-api.json)")
    parser.add_argument("--config", metavar="FILE", help="YAML file merged over config/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set redis.port=6380 (repeatable)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    from redis.exceptions import RedisError

    try:
        result = bench(cfg, args.users, args.items, args.n, args.rate, args.duration, args.warmup, args.connections,
                       args.timeout, not args.no_script, args.seed, args.nice, args.session_rate,
                       args.session_items)
    except RedisError as exc:
        logger.error("Redis at %s:%s: %s; start it with `bash deploy/services.sh up`", cfg["redis"]["host"],
                     cfg["redis"]["port"], exc)
        return 1
    except (RuntimeError, PermissionError) as exc:
        logger.error("%s", exc)
        return 1
    out = resolve_path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(_table(result))
    print(f"  written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
