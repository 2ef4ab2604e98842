"""Helpers of the tests that run the job as a process (tests/test_reliability.py, tests/test_continuity.py,
tests/test_live_catalog.py, tests/test_live_lifecycle.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from config import PROJECT_ROOT, load_config
from ingest import kafka_admin
from serving.testing import read_topic

LOGS = PROJECT_ROOT / "var" / "test-artifacts"

WALL_CLOCK = ("processed_at", "updated_at")
"""Fields that hold the time of writing: left out of every comparison of two runs."""


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the job's whole process group (the Python client and its JVM)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


@contextmanager
def live_job(name: str, kafka_bootstrap: str, redis_conn: Any, redis_port: int, settings: Sequence[str],
             before: Callable[[dict[str, Any]], object] | None = None) -> Iterator[dict[str, Any]]:
    """An unbounded job (``python -m jobs.recommend``, p=1) on topics, group, Redis prefix, state folder and
    transactional prefix of its own, with the config ``settings`` on top; ``before(cfg)`` runs once the topics
    exist, before the job starts. Yields ``{"cfg", "proc", "log", "prefix"}``; afterwards the job is stopped and
    its topics and keys are deleted."""
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    overrides = [f"kafka.topics.{t}={t}-{tag}" for t in ("events", "items", "dlq", "recommendations")]
    overrides += [f"kafka.bootstrap={kafka_bootstrap}", f"redis.port={redis_port}", f"kafka.group_id=g-{tag}",
                  f"redis.prefix={tag}:", f"job.checkpoint_dir=var/test-checkpoints/{tag}",
                  f"job.transactional_id_prefix=t-{tag}", "job.parallelism=1", *settings]
    cfg = load_config(overrides=overrides, env={})
    topics = kafka_admin.project_topics(cfg)
    kafka_admin.ensure_topics(kafka_bootstrap, topics, partitions=2)
    if before is not None:
        before(cfg)
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"job-{tag}.log"
    cmd = [sys.executable, "-m", "jobs.recommend"] + [a for o in overrides for a in ("--set", o)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield {"cfg": cfg, "proc": proc, "log": str(log), "prefix": cfg["redis"]["prefix"]}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        kafka_admin.delete_topics(kafka_bootstrap, topics)
        for key in redis_conn.scan_iter(match=f"{cfg['redis']['prefix']}*", count=1000):
            redis_conn.unlink(key)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def timeless(value: Any) -> Any:
    """A JSON value without its wall-clock fields (at any depth)."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if k not in WALL_CLOCK}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


def redis_contents(redis_conn: Any, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix``: JSON strings decoded without their wall-clock fields, sorted-set members (their
    scores are times of writing), hashes."""
    out: dict[str, Any] = {}
    for key in redis_conn.scan_iter(match=f"{prefix}*", count=1000):
        name = key.decode()[len(prefix):]
        kind = redis_conn.type(key).decode()
        value: Any
        if kind == "string":
            value = timeless(json.loads(redis_conn.get(key)))
        elif kind == "zset":
            value = sorted(m.decode() for m in redis_conn.zrange(key, 0, -1))
        elif kind == "hash":
            value = {k.decode(): v.decode() for k, v in redis_conn.hgetall(key).items()}
        else:
            value = kind
        out[name] = value
    return out


def assert_same_contents(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Two :func:`redis_contents` equal, key by key."""
    assert set(got) == set(want), f"keys only here: {sorted(set(got) - set(want))[:5]}, " \
                                  f"only there: {sorted(set(want) - set(got))[:5]}"
    bad = sorted(k for k in want if got[k] != want[k])
    assert not bad, f"{len(bad)} of {len(want)} keys differ, e.g. {[(k, got[k], want[k]) for k in bad[:2]]}"


def last_messages(bootstrap: str, topic: str) -> dict[str, Any]:
    """Each user's last committed message on ``topic`` (by offset) without the wall-clock fields; every user's
    messages must be in one partition (the topic is keyed by user id)."""
    last: dict[str, Any] = {}
    where: dict[str, int] = {}
    for record in read_topic(bootstrap, topic):
        m = json.loads(record.value)
        assert where.setdefault(m["user_id"], record.partition) == record.partition, m["user_id"]
        last[m["user_id"]] = timeless(m)
    return last
