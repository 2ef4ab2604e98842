"""The job on a real Flink cluster: submit, stop with a savepoint, resume at parallelism 2, same answer.

Starts the local standalone session cluster (``python -m deploy.cluster up``: a JobManager and a TaskManager
JVM from the apache-flink wheel), submits the job unbounded with ``python -m deploy.submit submit`` (the
project's code and pinned packages travel with the job: ``-pyfs``/``-pyreq``), feeds it the first 10,000
MovieLens ratings through Kafka, checks the recommendations and item similarities in Redis, stops it with a
savepoint, resumes it from the savepoint at parallelism 2, feeds the next 10,000 ratings and checks that every
stored similarity equals one uninterrupted computation over all 20,000 (``core.v2.model`` with
``history_cap=0``, i.e. the cosine of RᵀR) to 1e-6 relative.

Topics, consumer group, Redis prefix and Kafka transactional ids are unique to the run, so it shares the
broker and Redis with other tests. The cluster is stopped at the end if this test started it (a cluster
that was already running, e.g. from ``make cluster-up``, is reused and left running); the jobs are always
cancelled. Needs Java 17, the connector jar (``make jars``), Kafka and Redis (``make services-up``):
missing pieces skip the test, or fail it under REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
import urllib.error
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import REDIS_PORT, unavailable

from config import PROJECT_ROOT, load_config
from core.v2 import model as M
from core.v2.settings import Settings
from deploy.cluster import CHECKPOINT_DIR
from ingest import kafka_admin
from ingest.movielens import DatasetNotFound, load_events
from ingest.producer import produce_events
from udfs.events import Event

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.cluster]

logger = logging.getLogger(__name__)

N_FIRST, N_TOTAL = 10_000, 20_000
SETTLE_TIMEOUT_S = 150.0  # per phase; each takes ~10 s on 2 cores
STABLE_FOR_S = 3.0  # similar-item lists unchanged this long (6 windows of 500 ms) = done
REL = 1e-6
REDIS_OUTAGE_S = 60.0  # how long a Redis restart by another test on the shared server is waited out
T = TypeVar("T")


def run_cli(module: str, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def cli_value(module: str, *args: str, timeout: float = 300.0) -> str:
    """Run a deploy CLI and return the last line it printed on stdout (a job id or a savepoint path)."""
    res = run_cli(module, *args, timeout=timeout)
    if res.returncode != 0 or not res.stdout.strip():
        pytest.fail(f"python -m {module} {' '.join(args)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    logger.info("%s %s: %s", module, args[0], res.stderr.strip())
    return res.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def cluster(kafka_bootstrap: str, redis_conn: Any) -> Iterator[None]:
    from deploy.cluster import ClusterError, flink_home
    from jobs.flink_env import CONNECTOR_JAR

    if shutil.which("java") is None:
        unavailable("java not found (install a JDK 17)")
    if not (PROJECT_ROOT / "var" / "jars" / "flink" / CONNECTOR_JAR).is_file():
        unavailable(f"the Flink Kafka connector {CONNECTOR_JAR} is missing (`make jars`)")
    try:
        flink_home()
    except ClusterError as exc:
        unavailable(str(exc))
    was_up = run_cli("deploy.cluster", "status", timeout=60).returncode == 0
    t0 = time.monotonic()
    res = run_cli("deploy.cluster", "up", timeout=300)
    if res.returncode != 0:
        message = f"`python -m deploy.cluster up` failed:\n{res.stderr[-3000:]}"
        if "is taken by a process" in res.stderr:
            unavailable(message)
        pytest.fail(message)
    logger.info("cluster up in %.1f s (%s)", time.monotonic() - t0, "reused" if was_up else "started")
    try:
        yield
    finally:
        if not was_up:
            down = run_cli("deploy.cluster", "down", timeout=180)
            assert down.returncode == 0, down.stderr


def rest(path: str, method: str = "GET") -> Any:
    from deploy.cluster import rest as cluster_rest

    return cluster_rest(path, method=method)


def cancel_quietly(job_id: str) -> None:
    try:
        if rest(f"/jobs/{job_id}")["state"] in ("RUNNING", "CREATED", "RESTARTING", "INITIALIZING"):
            rest(f"/jobs/{job_id}?mode=cancel", method="PATCH")
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        logger.warning("could not cancel job %s: %s", job_id, exc)


def last_events(events: Sequence[Event]) -> dict[str, Event]:
    """Each user's newest event by (ts, event id): the one the job's messages name (a tie in ts is broken by id,
    not by the order of arrival)."""
    out: dict[str, Event] = {}
    for e in events:
        old = out.get(e.user_id)
        if old is None or (e.ts, e.event_id) > (old.ts, old.event_id):
            out[e.user_id] = e
    return out


def seen_items(events: Sequence[Event]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for e in events:
        out.setdefault(e.user_id, set()).add(e.item_id)
    return out


def redis_retry(read: Callable[[], T], timeout: float = REDIS_OUTAGE_S) -> T:
    """``read()``, retried while Redis is briefly unavailable (other tests on the shared server restart it)."""
    import redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError) as exc:
            if time.monotonic() > deadline:
                raise
            logger.warning("redis unavailable (%s); retrying", exc)
            time.sleep(1.0)


def read_recs(redis_conn: Any, prefix: str, users: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    values = redis_retry(lambda: redis_conn.mget([f"{prefix}recs:{u}" for u in users]))
    return {u: (json.loads(v) if v else None) for u, v in zip(users, values, strict=True)}


def read_similar(redis_conn: Any, prefix: str) -> dict[str, bytes]:
    def read() -> dict[str, bytes]:
        keys = sorted(redis_conn.scan_iter(match=f"{prefix}similar:*", count=1000))
        return dict(zip(keys, redis_conn.mget(keys), strict=True)) if keys else {}

    return redis_retry(read)


def wait_until_settled(redis_conn: Any, prefix: str, events: Sequence[Event], what: str) -> float:
    """Until every user's recommendations reflect all of their events and the similar-item lists stop changing."""
    t0 = time.monotonic()
    seen, last = seen_items(events), last_events(events)
    users = sorted(seen)
    snapshot: dict[str, bytes] = {}
    stable_since = time.monotonic()
    state = "nothing yet"
    while time.monotonic() - t0 < SETTLE_TIMEOUT_S:
        recs = read_recs(redis_conn, prefix, users)
        behind = [u for u, m in recs.items()
                  if m is None or m.get("history_size") != len(seen[u]) or m.get("event_id") != last[u].event_id]
        similar = read_similar(redis_conn, prefix)
        if similar != snapshot:
            snapshot, stable_since = similar, time.monotonic()
        state = f"{len(users) - len(behind)}/{len(users)} users up to date, {len(similar)} similar-item keys"
        if not behind and similar and time.monotonic() - stable_since >= STABLE_FOR_S:
            elapsed = time.monotonic() - t0
            logger.info("%s settled after %.1f s: %s", what, elapsed, state)
            return elapsed
        time.sleep(0.5)
    pytest.fail(f"{what}: not settled within {SETTLE_TIMEOUT_S:.0f} s ({state}); "
                f"see var/flink/log/*taskexecutor*.log")


def check_recommendations(redis_conn: Any, prefix: str, events: Sequence[Event], stored_n: int) -> None:
    seen, last = seen_items(events), last_events(events)
    assert redis_retry(lambda: redis_conn.zcard(f"{prefix}users")) == len(seen)
    for user, msg in read_recs(redis_conn, prefix, sorted(seen)).items():
        assert msg is not None, f"no recommendations for user {user}"
        assert msg["user_id"] == user
        assert msg["history_size"] == len(seen[user])
        assert 0 < len(msg["items"]) <= stored_n
        assert not {it["item_id"] for it in msg["items"]} & seen[user], f"user {user} got an item already seen"
        scores = [it["score"] for it in msg["items"]]
        assert scores == sorted(scores, reverse=True)
        assert (msg["event_id"], msg["event_ts"]) == (last[user].event_id, last[user].ts)
    assert json.loads(redis_retry(lambda: redis_conn.get(f"{prefix}trending")))


def check_similarities(redis_conn: Any, prefix: str, events: Sequence[Event], top_k: int) -> int:
    """Every stored neighbour list against one uninterrupted run of the model (RᵀR cosine); returns the pairs
    checked."""
    state = M.new_state(Settings(top_k=top_k, history_cap=0, methods=("itemcf",)))
    M.learn(state, M.Batch.of(events))
    stored = {json.loads(v)["item_id"]: json.loads(v) for v in read_similar(redis_conn, prefix).values()}
    items = {e.item_id for e in events}
    expected_items = {i for i in items if M.neighbors(state, i)}
    assert expected_items <= set(stored), f"no similar-item list for {sorted(expected_items - set(stored))[:10]}"
    pairs = 0
    for item, msg in stored.items():
        assert item in items, f"similar-item list for {item}, which no event mentions"
        got = [(nb["item_id"], nb["score"]) for nb in msg["neighbors"]]
        want = M.neighbors(state, item)
        assert len(got) == len(want), f"item {item}: {len(got)} neighbours stored, {len(want)} expected"
        for (j, score), (_, want_score) in zip(got, want, strict=True):
            # the k-th best may tie with others: compare the ranked scores, and each stored pair's own cosine
            assert score == pytest.approx(want_score, rel=REL), f"item {item}: ranked scores differ"
            assert score == pytest.approx(M.similarity(state, item, j), rel=REL), f"sim({item}, {j}) differs"
            pairs += 1
    return pairs


def test_savepoint_and_rescale_keep_the_model_exact(cluster: None, kafka_bootstrap: str, redis_conn: Any,
                                                    unique: str) -> None:
    tag = f"cl-{unique}"
    defaults = load_config(env={})
    overrides = [f"kafka.topics.{name}={tag}-{name}" for name in defaults["kafka"]["topics"]]
    overrides += [f"kafka.bootstrap={kafka_bootstrap}", f"kafka.group_id={tag}", f"redis.port={REDIS_PORT}",
                  f"redis.prefix={tag}:", "model.history_cap=0"]
    if "transactional_id_prefix" in defaults["job"]:  # no fencing with other runs' Kafka transactions
        overrides.append(f"job.transactional_id_prefix={tag}")
    cfg = load_config(overrides=overrides, env={})
    prefix, top_k, stored_n = cfg["redis"]["prefix"], cfg["model"]["top_k"], cfg["model"]["stored_n"]
    topics = kafka_admin.project_topics(cfg)
    try:
        events = load_events(limit=N_TOTAL)
    except DatasetNotFound as exc:
        unavailable(f"MovieLens-100K not found ({exc})")
    assert len(events) == N_TOTAL
    sets = [arg for o in overrides for arg in ("--set", o)]
    job_ids: list[str] = []
    savepoint = ""
    kafka_admin.ensure_topics(kafka_bootstrap, topics, partitions=2)
    try:
        # phase 1: parallelism 1, the first half
        assert produce_events(events[:N_FIRST], kafka_bootstrap, cfg["kafka"]["topics"]["events"],
                              progress=False) == N_FIRST
        t0 = time.monotonic()
        job_ids.append(cli_value("deploy.submit", "submit", *sets))
        logger.info("job %s submitted and running after %.1f s", job_ids[0], time.monotonic() - t0)
        wait_until_settled(redis_conn, prefix, events[:N_FIRST], "phase 1")
        check_recommendations(redis_conn, prefix, events[:N_FIRST], stored_n)
        check_similarities(redis_conn, prefix, events[:N_FIRST], top_k)

        # stop with a savepoint, resume from it at parallelism 2
        savepoint = cli_value("deploy.submit", "savepoint", job_ids[0])
        assert (Path(savepoint) / "_metadata").is_file(), savepoint
        assert rest(f"/jobs/{job_ids[0]}")["state"] == "FINISHED"
        job_ids.append(cli_value("deploy.submit", "resume", "--parallelism", "2", "--savepoint", savepoint, *sets))
        job = rest(f"/jobs/{job_ids[1]}")
        assert {v["parallelism"] for v in job["vertices"]} == {2}, [(v["name"], v["parallelism"]) for v in
                                                                    job["vertices"]]
        restored = rest(f"/jobs/{job_ids[1]}/checkpoints")["latest"]["restored"]
        assert restored["is_savepoint"] and restored["external_path"].rstrip("/").endswith(Path(savepoint).name)

        # phase 2: the second half, then the whole model must equal one uninterrupted run
        assert produce_events(events[N_FIRST:], kafka_bootstrap, cfg["kafka"]["topics"]["events"],
                              progress=False) == N_TOTAL - N_FIRST
        wait_until_settled(redis_conn, prefix, events, "phase 2")
        check_recommendations(redis_conn, prefix, events, stored_n)
        pairs = check_similarities(redis_conn, prefix, events, top_k)
        assert pairs > 10 * len({e.item_id for e in events})
    finally:
        for job_id in job_ids:
            cancel_quietly(job_id)
            for folder in CHECKPOINT_DIR.glob(f"*/{job_id}"):  # <job identity>/<job id> (jobs/state.py)
                shutil.rmtree(folder.parent, ignore_errors=True)
        if savepoint:
            shutil.rmtree(Path(savepoint).parent, ignore_errors=True)  # the job identity's savepoint folder
        kafka_admin.delete_topics(kafka_bootstrap, topics)
        def clean() -> None:
            for key in redis_conn.scan_iter(match=f"{prefix}*", count=1000):
                redis_conn.unlink(key)

        redis_retry(clean)
