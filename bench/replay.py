"""Throughput and scale: replay a fixed list of events through Kafka -> the job -> Redis as fast as possible.

One run:

1. create the run's topics (``events-bench-<label>-<tag>`` ...), start the job as a subprocess with
   ``--set`` overrides for topics, Redis prefix, consumer group, checkpoint directory and parallelism;
2. warm up: send a warm-up event (user ``bench-warmup``) every 2 s until its recommendation is in
   Redis, so the JVM start and the Kafka source's partition discovery are not measured;
3. ``t0`` = the wall clock just before the first event is sent; every event is sent (Kafka producer
   in a thread, as fast as the broker takes them) while the main thread polls Redis;
4. done when every user of the replay has a Redis entry whose ``event_id`` is the id of that user's
   last event (so both Kafka partitions are drained, not only the one of the last event); ``t_end``
   = the latest ``processed_at`` among those entries (the ranker stamps it just before the pipelined
   Redis write); ``events/s = n_events / (t_end - t0)``;
5. optionally (scale) wait for a checkpoint completed after ``t_end`` and measure its size, and the
   Redis memory of the run's keys (``MEMORY USAGE`` summed over them);
6. stop the job (its whole process tree), delete the run's topics, keys and checkpoints.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import BenchError, RunNames, base_config, dir_size, progress, redis_client, scan_keys
from bench.jobrun import LOG_DIR, ClusterJob, JobProcess, latest_checkpoint
from bench.profile import Profiler, summarize
from udfs.events import Event

logger = logging.getLogger(__name__)

WARMUP_USER = "bench-warmup"
WARMUP_ITEM = "bench-warmup-item"
POLL_S = 0.05
MGET_CHUNK = 1000


@dataclass
class ReplayOptions:
    label: str
    parallelism: int
    overrides: list[str] = field(default_factory=list)
    startup_timeout: float = 240.0
    stall_timeout: float = 180.0  # no new user entry/confirmation for this long -> fail
    timeout: float = 1800.0  # from the first event sent
    partial_ok: bool = False  # at the timeout: report the part done (approximate) instead of failing
    state_size: bool = False
    checkpoint_wait: float = 60.0
    profile_s: float = 0.0  # > 0: py-spy record the JVM for this long, profile_delay s after the first event
    profile_delay: float = 10.0
    profile_out: Path | None = None
    catalog: Sequence[Mapping[str, Any]] = ()  # published to the run's items topic before the job starts
    cluster: bool = False  # run on a local standalone cluster of `parallelism` TaskManagers (one slot each)


class Warmup:
    """Sends warm-up events and tells when the job has answered one."""

    def __init__(self, producer: Any, topic: str, client: Any, prefix: str, ts: int | None = None) -> None:
        self.producer, self.topic, self.client, self.prefix = producer, topic, client, prefix
        self.ts = ts  # event time of the warm-up events (None: now); not after the replay's first event
        self.sent = 0

    def poke(self) -> None:
        from ingest.producer import event_record

        self.sent += 1
        ts = self.ts if self.ts is not None else int(time.time() * 1000)
        ev = Event(f"bench-warmup-{self.sent}", WARMUP_USER, WARMUP_ITEM, "rate", 3.0, ts)
        rec = event_record(ev)
        self.producer.send(self.topic, key=rec.key, value=rec.value)
        self.producer.flush(timeout=10)

    def ready(self) -> bool:
        return bool(self.client.exists(f"{self.prefix}recs:{WARMUP_USER}"))


class _Sender(threading.Thread):
    def __init__(self, records: Sequence[Any], bootstrap: str, topic: str) -> None:
        super().__init__(name="bench-producer", daemon=True)
        self.records, self.bootstrap, self.topic = records, bootstrap, topic
        self.sent = 0
        self.started = self.finished = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        from ingest.producer import send_records

        self.started = time.time()
        try:
            self.sent = send_records(self.records, self.bootstrap, self.topic, progress=False)
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        self.finished = time.time()


def last_event_ids(events: Sequence[Event]) -> dict[str, str]:
    """user -> the id of that user's newest event by (ts, event id), the one the job's final message names (events
    of one user at the same ts are ordered by id, not by their order in the replay)."""
    newest: dict[str, tuple[int, str]] = {}
    for e in events:
        if e.user_id not in newest or (e.ts, e.event_id) > newest[e.user_id]:
            newest[e.user_id] = (e.ts, e.event_id)
    return {user: event_id for user, (_, event_id) in newest.items()}


def confirm(client: Any, prefix: str, expected: dict[str, str], pending: list[str]) -> tuple[list[str], float]:
    """Read the Redis entries of ``pending`` users; return the ones not final yet and the latest processed_at (s)."""
    left: list[str] = []
    latest = 0.0
    for start in range(0, len(pending), MGET_CHUNK):
        users = pending[start : start + MGET_CHUNK]
        values = client.mget([f"{prefix}recs:{u}" for u in users])
        for user, raw in zip(users, values, strict=True):
            if raw is None:
                left.append(user)
                continue
            msg = json.loads(raw)
            if msg.get("event_id") != expected[user]:
                left.append(user)
            else:
                latest = max(latest, float(msg["processed_at"]) / 1000.0)
    return left, latest


def redis_footprint(client: Any, prefix: str) -> dict[str, Any]:
    """Key counts by kind and the summed ``MEMORY USAGE`` of the run's keys."""
    counts: dict[str, int] = {}
    total = 0
    batch: list[bytes] = []

    def flush() -> int:
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=0)
        return sum(int(v or 0) for v in pipe.execute())

    for key in scan_keys(client, prefix):
        kind = key.decode(errors="replace")[len(prefix):].split(":", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
        batch.append(key)
        if len(batch) >= 1000:
            total += flush()
            batch = []
    if batch:
        total += flush()
    return {"keys": sum(counts.values()), "keys_by_kind": counts, "memory_usage_bytes": total}


def run_replay(events: Sequence[Event], opts: ReplayOptions) -> dict[str, Any]:
    """Replay ``events`` through the job at ``opts.parallelism``; return the measurements (see the module doc)."""
    from ingest.producer import event_record, make_producer

    names = RunNames(opts.label)
    overrides = [*opts.overrides, *names.overrides(), f"job.parallelism={opts.parallelism}"]
    cfg = base_config(overrides)
    bootstrap, prefix, topic = cfg["kafka"]["bootstrap"], names.prefix, names.topics["events"]
    expected = last_event_ids(events)
    last = events[-1]
    records = [event_record(e) for e in events]
    progress("%s: %d events, %d users, parallelism %d (topics *-%s, Redis prefix %s)", opts.label, len(events),
             len(expected), opts.parallelism, names.suffix, prefix)
    client = redis_client(cfg)
    producer = make_producer(bootstrap, linger_ms=0)
    log = LOG_DIR / f"{names.suffix}.log"
    job = ClusterJob(overrides, log, opts.parallelism) if opts.cluster else JobProcess(overrides, log)
    result: dict[str, Any] = {"label": opts.label, "parallelism": opts.parallelism, "events": len(events),
                              "users": len(expected), "job_log": str(job.log_path),
                              "layout": (f"local cluster, {opts.parallelism} TaskManager(s) x 1 slot" if opts.cluster
                                         else "mini-cluster (one JVM)")}
    try:
        names.create(cfg)
        if opts.catalog:
            from ingest.catalog import publish_catalog

            publish_catalog(opts.catalog, bootstrap, names.topics["items"])
        job.start()
        # event time of the first event: the warm-up must not move the watermark past the replay
        warm = Warmup(producer, topic, client, prefix, ts=min(e.ts for e in events[:1000]))
        startup = job.wait_until_serving(warm.ready, warm.poke, opts.startup_timeout)
        result["startup_s"] = round(time.time() - job.started_at, 2)
        progress("%s: job answering %.1f s after its start (warm-up answered after %.1f s of pokes); sending",
                 opts.label, result["startup_s"], startup)
        sender = _Sender(records, bootstrap, topic)
        profiler = _profiler(job, opts)
        cpu0 = job.cpu_seconds()
        t0 = time.time()
        sender.start()
        if profiler is not None:
            profiler.start()
        result.update(_wait_done(job, client, prefix, expected, last, sender, t0, opts, events))
        cpu = job.cpu_seconds() - cpu0  # up to the confirmation: includes a little idle time after t_end
        result["job_cpu_s"] = round(cpu, 2)
        result["job_cpu_us_per_event"] = round(1e6 * cpu / max(1, result["events_processed"]), 1)
        if profiler is not None:
            result["profile"] = _profile_result(profiler, opts)
        if opts.state_size:
            result["state"] = _state_size(job, names, client, prefix, result["t_end"], opts.checkpoint_wait,
                                          int(cfg["job"]["checkpoint_interval_ms"]))
    finally:
        teardown(job, producer, client, names, cfg, result)
    return result


def teardown(job: Any, producer: Any, client: Any, names: RunNames, cfg: dict[str, Any],
             result: dict[str, Any]) -> None:
    """Stop the job and the clients, record the job's peak RSS in ``result``, delete the run's topics and keys."""
    job.stop()
    producer.close(timeout=5)
    if job.sampler is not None:
        result["rss"] = job.sampler.result()
    client.close()
    names.cleanup(cfg)


def _profiler(job: JobProcess, opts: ReplayOptions) -> Profiler | None:
    if opts.profile_s <= 0 or opts.profile_out is None:
        return None
    pids = job.java_pids()
    if not pids:
        logger.warning("no java process below the job: not profiling")
        return None
    return Profiler(pids[0], opts.profile_s, opts.profile_out, delay=opts.profile_delay)


def _profile_result(profiler: Profiler, opts: ReplayOptions) -> dict[str, Any]:
    if not profiler.recording:  # the run ended before the recording began
        profiler.cancel()
    profiler.join(timeout=opts.profile_s + opts.profile_delay + 90)
    out: dict[str, Any] = {"seconds": opts.profile_s, "delay_s": opts.profile_delay, "raw": str(opts.profile_out)}
    if profiler.error:
        out["error"] = profiler.error
    elif opts.profile_out is not None and opts.profile_out.exists():
        out.update(summarize(opts.profile_out))
    else:
        out["error"] = "the run ended before the profile was taken"
    return out


class _Position:
    """How far the job has got: the stream position of the event behind the most recent Redis update."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.index = {e.event_id: i for i, e in enumerate(events, 1)}
        self.best = 0
        self.best_at = 0.0

    def update(self, client: Any, prefix: str) -> int:
        newest = client.zrevrange(f"{prefix}users", 0, 3)
        if newest:
            for raw in client.mget([f"{prefix}recs:{u.decode()}" for u in newest]):
                if raw is None:
                    continue
                msg = json.loads(raw)
                pos = self.index.get(msg.get("event_id", ""), 0)
                if pos > self.best:
                    self.best, self.best_at = pos, float(msg["processed_at"]) / 1000.0
        return self.best


def _wait_done(job: JobProcess, client: Any, prefix: str, expected: dict[str, str], last: Event, sender: _Sender,
               t0: float, opts: ReplayOptions, events: Sequence[Event]) -> dict[str, Any]:
    n_users = len(expected)
    n = len(sender.records)
    pending = list(expected)
    position = _Position(events)
    latest = 0.0
    last_change = time.monotonic()
    last_seen = (-1, -1, -1)
    next_note = time.monotonic() + 5
    deadline = time.monotonic() + opts.timeout
    checking = False
    complete = True
    while True:
        job.check_alive()
        if sender.error is not None:
            raise BenchError(f"producing the events failed: {sender.error}")
        in_redis = int(client.zcard(f"{prefix}users")) - (1 if client.zscore(f"{prefix}users", WARMUP_USER) else 0)
        if not checking and not sender.is_alive() and in_redis >= n_users:
            raw = client.get(f"{prefix}recs:{last.user_id}")
            checking = raw is not None and json.loads(raw).get("event_id") == last.event_id
        if checking:
            pending, newest = confirm(client, prefix, expected, pending)
            latest = max(latest, newest)
            if not pending:
                break
        now = time.monotonic()
        if now >= next_note or now > deadline:
            position.update(client, prefix)
        seen = (in_redis, len(pending), position.best)
        if seen != last_seen:
            last_seen, last_change = seen, now
        elif now - last_change > opts.stall_timeout:
            raise BenchError(f"{opts.label}: no progress for {opts.stall_timeout:.0f} s ({in_redis}/{n_users} users "
                             f"in Redis, {len(pending)} not at their last event); {job.failure_hint()}")
        if now > deadline:
            if not opts.partial_ok:
                raise BenchError(f"{opts.label}: not done within {opts.timeout:.0f} s; {job.failure_hint()}")
            progress("%s: time cap of %.0f s reached at about event %d of %d; reporting the part done",
                     opts.label, opts.timeout, position.best, n)
            complete = False
            break
        if now >= next_note:
            rss = job.sampler.last_total / 2**20 if job.sampler else 0.0
            progress("  %s: %.0f s, sent %s/%d, processed ~%d (%.0f%%), users in Redis %d/%d%s, job RSS %.0f MiB",
                     opts.label, time.time() - t0, f"{sender.sent:,}" if not sender.is_alive() else "...", n,
                     position.best, 100.0 * position.best / n, in_redis, n_users,
                     f", {len(pending)} users not final yet" if checking else "", rss)
            next_note = now + 5
        time.sleep(POLL_S)
    observed = time.time()
    if complete:
        done, end = n, latest
    else:  # the position of the newest update and when it was made: an approximation, said so in the result
        done, end = position.best, position.best_at
    elapsed = end - t0
    out = {
        "complete": complete, "events_processed": done,
        "t0": t0, "t_end": end, "observed_done_at": observed,
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(done / elapsed, 1) if elapsed > 0 else None,
        "produce_s": round(sender.finished - sender.started, 3) if sender.finished else None,
        "produce_events_per_s": round(n / (sender.finished - sender.started), 1) if sender.finished else None,
        "observed_elapsed_s": round(observed - t0, 3),
    }
    if complete:
        progress("%s: %d events in %.2f s = %.0f events/s (producing took %.2f s)", opts.label, n, elapsed,
                 out["events_per_s"] or 0, out["produce_s"] or 0)
    else:
        progress("%s: incomplete: ~%d of %d events in %.1f s = ~%.0f events/s", opts.label, done, n, elapsed,
                 out["events_per_s"] or 0)
    return out


def _state_size(job: JobProcess, names: RunNames, client: Any, prefix: str, t_end: float, wait: float,
                interval_ms: int) -> dict[str, Any]:
    out: dict[str, Any] = {"redis": redis_footprint(client, prefix)}
    if interval_ms <= 0:
        out["checkpoint"] = None
        out["checkpoint_note"] = "checkpointing is off (job.checkpoint_interval_ms=0)"
        return out
    wait = max(wait, 2 * interval_ms / 1000 + 10)  # two intervals: one may have started before the end
    progress("  waiting (at most %.0f s) for a checkpoint completed after the last recommendation", wait)
    deadline = time.monotonic() + wait
    chk = None
    while time.monotonic() < deadline:
        job.check_alive()
        chk = latest_checkpoint(names.checkpoint_dir, after=t_end)
        if chk is not None:
            time.sleep(1.0)  # _metadata is written last, but let the file system settle
            break
        time.sleep(0.5)
    if chk is None:
        out["checkpoint"] = None
        out["checkpoint_note"] = f"no checkpoint completed within {wait:.0f} s after the run"
        return out
    out["checkpoint"] = {"name": chk.name, "bytes": dir_size(chk),
                         "shared_bytes": dir_size(chk.parent / "shared"),
                         "files": sum(1 for p in chk.rglob("*") if p.is_file())}
    return out
