"""Freshness: how long after an event is produced does the user's updated recommendation show in Redis.

Measured from outside the job, with the job running unbounded on a paced background stream:

* **background**: MovieLens-100K ratings cycled (fresh event ids ``bg<cycle>-<n>``, event time = the
  wall clock), sent at ``rate`` events/s by a thread of their own (:class:`ingest.producer.Pacer`);
* **probes**: ``probes`` dedicated users (``probe-<k>``). Each has at most one outstanding *marked*
  event (``probe-<k>-<seq>``, a rating of an item drawn from the background stream, event time =
  the wall clock and strictly increasing per probe user), so a later event can never hide it. The
  start time is the wall clock just before ``KafkaProducer.send`` (a producer of its own with
  ``linger_ms=0``);
* **watcher**: every ``poll_ms`` ms one pipelined ``GET`` of the keys of the probe users with an
  outstanding event; the end time is the wall clock when the reply that first carries the marked
  ``event_id`` arrived (resolution: ``poll_ms`` plus one round trip). Polling was chosen over
  keyspace notifications because those need ``CONFIG SET notify-keyspace-events``, a server-wide
  change on a Redis other people use. After a probe is seen, its user waits a random 0..``gap_ms``
  ms before the next one, so probes fall at random points of the job's windows.

Probes start after ``warmup_s`` seconds of background (state and JIT warm); they run for
``duration_s``; then outstanding probes get ``probe_timeout_s`` to show up (those that do not are
counted as timed out, not as samples).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import BenchError, RunNames, base_config, percentile, progress, redis_client
from bench.jobrun import LOG_DIR, JobProcess
from bench.replay import Warmup, teardown
from udfs.events import Event

logger = logging.getLogger(__name__)


@dataclass
class FreshnessOptions:
    parallelism: int = 1
    rate: float = 1000.0
    duration_s: float = 60.0
    warmup_s: float = 10.0
    probes: int = 16
    poll_ms: float = 10.0
    gap_ms: float = 250.0
    probe_timeout_s: float = 30.0
    startup_timeout: float = 240.0
    seed: int = 0
    overrides: list[str] = field(default_factory=list)
    samples_csv: Path | None = None


class Background(threading.Thread):
    """Sends the cycled events at ``rate``/s until stopped; counts what it sent."""

    def __init__(self, events: Sequence[Event], bootstrap: str, topic: str, rate: float) -> None:
        super().__init__(name="bench-background", daemon=True)
        self.events, self.bootstrap, self.topic, self.rate = events, bootstrap, topic, rate
        self.sent = 0
        self.started = self.finished = 0.0
        self.error: BaseException | None = None
        self.stop_event = threading.Event()

    def run(self) -> None:
        from ingest.producer import Pacer, event_record, make_producer

        try:
            producer = make_producer(self.bootstrap)
        except BaseException as exc:
            self.error = exc
            return
        pacer = Pacer(self.rate)
        n = len(self.events)
        self.started = time.time()
        try:
            while not self.stop_event.is_set():
                pacer.wait(self.sent)
                cycle, i = divmod(self.sent, n)
                e = self.events[i]
                ev = Event(f"bg{cycle}-{e.event_id}", e.user_id, e.item_id, e.type, e.weight, int(time.time() * 1000))
                rec = event_record(ev)
                producer.send(self.topic, key=rec.key, value=rec.value)
                self.sent += 1
            producer.flush(timeout=30)
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            self.finished = time.time()
            producer.close(timeout=5)

    @property
    def achieved_rate(self) -> float:
        end = self.finished or time.time()
        return self.sent / (end - self.started) if end > self.started else 0.0


class CheckpointWatch:
    """Notes when checkpoints start (``chk-N`` appears) and complete (its ``_metadata`` is written)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: dict[str, float | None] = {}  # None: already there at the first poll (start unknown)
        self.completed: dict[str, float] = {}
        self.polled = False

    def poll(self) -> None:
        now = time.time()
        for chk in self.root.glob("*/*/chk-*"):  # <job identity>/<job id>/chk-N (jobs.state)
            if chk.name not in self.started:
                self.started[chk.name] = now if self.polled else None
            if chk.name not in self.completed:
                meta = chk / "_metadata"
                try:
                    self.completed[chk.name] = meta.stat().st_mtime
                except OSError:
                    continue
        self.polled = True

    def relative(self, start: float, end: float) -> list[list[float | None]]:
        """``[[started_s, completed_s], ...]`` relative to ``start`` for checkpoints between start and end."""
        out: list[list[float | None]] = []
        known = [(name, t) for name, t in self.started.items() if t is not None]
        for name, t in sorted(known, key=lambda kv: kv[1]):
            if t <= end:
                done = self.completed.get(name)
                out.append([round(t - start, 2), round(done - start, 2) if done else None])
        return out


@dataclass
class _Probe:
    user: str
    seq: int = 0
    last_ts: int = 0
    event_id: str | None = None
    sent_at: float = 0.0
    acked_at: float = 0.0
    next_at: float = 0.0


def run_freshness(events: Sequence[Event], opts: FreshnessOptions) -> dict[str, Any]:
    """Start the job, run background + probes (see the module docstring), return the latency statistics."""
    from ingest.producer import event_record, make_producer

    names = RunNames("fresh")
    overrides = [*opts.overrides, *names.overrides(), f"job.parallelism={opts.parallelism}"]
    cfg = base_config(overrides)
    bootstrap, prefix, topic = cfg["kafka"]["bootstrap"], names.prefix, names.topics["events"]
    client = redis_client(cfg)
    producer = make_producer(bootstrap, linger_ms=0)
    job = JobProcess(overrides, LOG_DIR / f"{names.suffix}.log")
    background = Background(events, bootstrap, topic, opts.rate)
    rng = random.Random(opts.seed)
    items = [e.item_id for e in events]
    probes = [_Probe(f"probe-{k}") for k in range(opts.probes)]
    samples: list[tuple[float, float, float, float]] = []  # (sent_at - start, latency, ack latency, to ranker) s
    timeouts = 0
    result: dict[str, Any] = {"parallelism": opts.parallelism, "rate": opts.rate, "duration_s": opts.duration_s,
                              "probes": opts.probes, "poll_ms": opts.poll_ms, "job_log": str(job.log_path)}
    progress("freshness: %g events/s background for %.0f s + %d probe users, parallelism %d (prefix %s)",
             opts.rate, opts.warmup_s + opts.duration_s, opts.probes, opts.parallelism, prefix)

    def send_probe(p: _Probe, now: float) -> None:
        p.seq += 1
        p.last_ts = max(p.last_ts + 1, int(now * 1000))
        p.event_id = f"{p.user}-{p.seq}"
        rec = event_record(Event(p.event_id, p.user, rng.choice(items), "rate", float(rng.randint(1, 5)), p.last_ts))
        p.acked_at = 0.0
        p.sent_at = time.time()
        future = producer.send(topic, key=rec.key, value=rec.value)

        def on_ack(_: Any, probe: _Probe = p, eid: str = p.event_id) -> None:
            if probe.event_id == eid:
                probe.acked_at = time.time()

        future.add_callback(on_ack)

    try:
        names.create(cfg)
        from ingest.catalog import publish_catalog
        from ingest.movielens import load_catalog

        publish_catalog(load_catalog(), cfg["kafka"]["bootstrap"], names.topics["items"])
        job.start()
        warm = Warmup(producer, topic, client, prefix)
        job.wait_until_serving(warm.ready, warm.poke, opts.startup_timeout)
        result["startup_s"] = round(time.time() - job.started_at, 2)
        progress("freshness: job answering after %.1f s; background on, probes start in %.0f s",
                 result["startup_s"], opts.warmup_s)
        background.start()
        warm_end = time.time() + opts.warmup_s
        while time.time() < warm_end:
            job.check_alive()
            time.sleep(0.2)
        checkpoints = CheckpointWatch(names.checkpoint_dir)
        checkpoints.poll()
        start = time.time()
        cpu0 = job.cpu_seconds()
        sent0 = background.sent
        probe_end = start + opts.duration_s
        hard_end = probe_end + opts.probe_timeout_s
        next_note = start + 10
        next_chk = start
        poll_s = opts.poll_ms / 1000.0
        for p in probes:
            p.next_at = start + rng.uniform(0, opts.gap_ms / 1000.0)
        while True:
            now = time.time()
            if background.error is not None:
                raise BenchError(f"the background producer failed: {background.error}")
            for p in probes:
                if p.event_id is None and now < probe_end and now >= p.next_at:
                    send_probe(p, now)
                elif p.event_id is not None and now - p.sent_at > opts.probe_timeout_s:
                    timeouts += 1
                    logger.warning("probe %s not visible after %.0f s", p.event_id, opts.probe_timeout_s)
                    p.event_id, p.next_at = None, now
            waiting = [p for p in probes if p.event_id is not None]
            if not waiting and now >= probe_end:
                break
            if now >= hard_end:
                break
            if waiting:
                pipe = client.pipeline(transaction=False)
                for p in waiting:
                    pipe.get(f"{prefix}recs:{p.user}")
                values = pipe.execute()
                seen_at = time.time()
                for p, raw in zip(waiting, values, strict=True):
                    msg = json.loads(raw) if raw is not None else None
                    if msg is not None and msg.get("event_id") == p.event_id:
                        ack = p.acked_at - p.sent_at if p.acked_at else float("nan")
                        # the ranker's clock when it began the batch that answered the probe (same machine)
                        ranked = msg.get("processed_at", 0) / 1000.0 - p.sent_at
                        samples.append((p.sent_at - start, seen_at - p.sent_at, ack, ranked))
                        p.event_id = None
                        p.next_at = seen_at + rng.uniform(0, opts.gap_ms / 1000.0)
            if now >= next_chk:
                checkpoints.poll()
                next_chk = now + 0.5
            if now >= next_note:
                job.check_alive()
                so_far = sorted(s[1] for s in samples)
                progress("  freshness: %.0f s, %d probes seen, p50 %.0f ms, background %.0f events/s",
                         now - start, len(samples), 1000 * percentile(so_far, 50), background.achieved_rate)
                next_note = now + 10
            time.sleep(poll_s)
        cpu = job.cpu_seconds() - cpu0
        elapsed = time.time() - start
        background.stop_event.set()
        background.join(timeout=30)
        timeouts += sum(1 for p in probes if p.event_id is not None)
        bg_sent = background.sent - sent0
        result.update(_stats([s[1] for s in samples]))
        acks = sorted(s[2] for s in samples if s[2] == s[2])
        ranked = sorted(s[3] for s in samples)
        after = sorted(1000 * (s[1] - s[3]) for s in samples)
        result.update({
            "timeouts": timeouts,
            "probe_rate_per_s": round(len(samples) / opts.duration_s, 1),
            "background_sent": background.sent,
            "background_achieved_per_s": round(background.achieved_rate, 1),
            "produce_ack_p50_ms": round(1000 * percentile(acks, 50), 1) if acks else None,
            "produce_ack_p99_ms": round(1000 * percentile(acks, 99), 1) if acks else None,
            # where the time goes: produced -> the ranker starts the answering batch (Kafka, the windows, the
            # rank delay, waiting for the interpreter), and from there to visible in Redis (ranking, the sink)
            "to_ranker_p50_ms": round(1000 * percentile(ranked, 50), 1) if ranked else None,
            "to_ranker_p99_ms": round(1000 * percentile(ranked, 99), 1) if ranked else None,
            "after_ranker_p50_ms": round(percentile(after, 50), 1) if after else None,
            "after_ranker_p99_ms": round(percentile(after, 99), 1) if after else None,
            "job_cpu_s": round(cpu, 2),
            "job_cpu_us_per_event": round(1e6 * cpu / max(1, bg_sent + len(samples)), 1),
            "measured_s": round(elapsed, 1),
            "samples": [[round(t, 3), round(1000 * lat, 1)] for t, lat, _, _ in samples],
            # seen by polling every 0.5 s: start times are late by up to that much
            "checkpoints_s": checkpoints.relative(start, start + elapsed),
        })
        if opts.samples_csv is not None:
            opts.samples_csv.parent.mkdir(parents=True, exist_ok=True)
            with open(opts.samples_csv, "w", encoding="utf-8") as fh:
                fh.write("sent_s,latency_ms,produce_ack_ms,to_ranker_ms\n")
                for t, lat, ack, ranked_s in samples:
                    fh.write(f"{t:.4f},{1000 * lat:.2f},{1000 * ack:.2f},{1000 * ranked_s:.2f}\n")
        progress("freshness: %d samples, p50 %.0f ms, p95 %.0f ms, p99 %.0f ms, max %.0f ms, %d timed out",
                 len(samples), result["p50_ms"] or 0, result["p95_ms"] or 0, result["p99_ms"] or 0,
                 result["max_ms"] or 0, timeouts)
    finally:
        background.stop_event.set()
        teardown(job, producer, client, names, cfg, result)
    if not samples:
        raise BenchError(f"freshness: no probe event became visible in Redis; {job.failure_hint()}")
    return result


def _stats(latencies_s: list[float]) -> dict[str, Any]:
    ms = sorted(1000 * v for v in latencies_s)
    if not ms:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "min_ms": None,
                "mean_ms": None}
    return {"count": len(ms), "min_ms": round(ms[0], 1), "p50_ms": round(percentile(ms, 50), 1),
            "p95_ms": round(percentile(ms, 95), 1), "p99_ms": round(percentile(ms, 99), 1),
            "max_ms": round(ms[-1], 1), "mean_ms": round(sum(ms) / len(ms), 1)}
