"""Same input, same output: clean runs at parallelism 1 and 2, crashes (SIGKILL) and resume at three points, a full
replay, a Redis outage, a Kafka restart.

Each scenario runs the job (bounded, exactly-once, checkpoints every 2 s) as a separate process on the same 20,000
MovieLens ratings and the MovieLens catalog, with the default model config (content, the user-CF fan-out cap and
all), on topics, a Redis prefix and a checkpoint folder of its own, and compares every Redis key it wrote, and
every user's last message on the ``recommendations`` topic, with those of an uninterrupted run, exactly (only
the wall-clock fields left out). The bounded job re-ranks every user at the end of the input with the final
model, so the final contents do not depend on window timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from conftest import REDIS_PORT
from job_runs import LOGS, assert_same_contents, kill, last_messages, redis_contents, wait_for
from test_job_experiments import ARMS, recompute

from config import PROJECT_ROOT, experiment, load_config
from ingest import kafka_admin
from ingest.catalog import publish_catalog
from ingest.movielens import load_catalog, load_events
from ingest.producer import produce_events
from jobs.flink_env import latest_checkpoint
from serving.testing import read_topic
from udfs.serde import published

pytestmark = [pytest.mark.integration, pytest.mark.flink]

N_EVENTS = 20000


class Scenario:
    """One run's topics, Redis prefix, checkpoint folder and config overrides."""

    def __init__(self, name: str, bootstrap: str, parallelism: int = 2, extra: Sequence[str] = ()) -> None:
        tag = f"{name}-{uuid.uuid4().hex[:6]}"
        self.name, self.tag, self.bootstrap = name, tag, bootstrap
        self.overrides = [f"kafka.topics.{t}={t}-{tag}"
                          for t in ("events", "items", "dlq", "recommendations", "experiments")]
        self.overrides += [f"kafka.bootstrap={bootstrap}", f"redis.port={REDIS_PORT}", f"kafka.group_id=g-{tag}",
                           f"redis.prefix=rel-{tag}:", "job.checkpoint_interval_ms=2000",
                           f"job.checkpoint_dir=var/test-checkpoints/{tag}", f"job.transactional_id_prefix=t-{tag}",
                           "job.delivery=exactly_once", f"job.parallelism={parallelism}", *extra]
        self.cfg = load_config(overrides=self.overrides)
        kafka_admin.ensure_topics(bootstrap, kafka_admin.project_topics(self.cfg), partitions=2)

    @property
    def prefix(self) -> str:
        return str(self.cfg["redis"]["prefix"])

    def produce(self, events: list[Any], catalog: bool = True) -> None:
        if catalog:
            records = load_catalog()
            assert publish_catalog(records, self.bootstrap, self.cfg["kafka"]["topics"]["items"]) == len(records)
        assert produce_events(events, self.bootstrap, self.cfg["kafka"]["topics"]["events"], progress=False) == len(
            events)

    def start(self, resume: bool = False) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "jobs.recommend", "--bounded"]
        for o in self.overrides:
            cmd += ["--set", o]
        if resume:
            cmd += ["--resume", "latest"]
        LOGS.mkdir(parents=True, exist_ok=True)
        log = open(LOGS / f"job-{self.tag}.log", "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, resume: bool = False, timeout: float = 300) -> None:
        proc = self.start(resume)
        try:
            assert proc.wait(timeout) == 0, f"job failed, see {LOGS / f'job-{self.tag}.log'}"
        finally:
            kill(proc)

    def cleanup(self, redis_conn: Any) -> None:
        kafka_admin.delete_topics(self.bootstrap, kafka_admin.project_topics(self.cfg))
        for key in redis_conn.scan_iter(match=f"{self.prefix}*", count=1000):
            redis_conn.unlink(key)


def committed_updates(bootstrap: str, topic: str, isolation: str) -> list[tuple[str, str, str]]:
    return [(m["user_id"], m["event_id"], m["trigger"])
            for m in (json.loads(r.value) for r in read_topic(bootstrap, topic, isolation=isolation))]


@pytest.fixture(scope="module")
def events() -> list[Any]:
    return load_events(limit=N_EVENTS)


@pytest.fixture(scope="module")
def clean(kafka_bootstrap: str, redis_conn: Any, events: list[Any]) -> Iterator[tuple[Scenario, dict[str, Any]]]:
    sc = Scenario("clean", kafka_bootstrap)
    sc.produce(events)
    sc.run()
    yield sc, redis_contents(redis_conn, sc.prefix)
    sc.cleanup(redis_conn)


def messages_of(sc: Scenario) -> dict[str, Any]:
    return last_messages(sc.bootstrap, sc.cfg["kafka"]["topics"]["recommendations"])


def test_clean_run_is_complete(clean: tuple[Scenario, dict[str, Any]], events: list[Any]) -> None:
    sc, state = clean
    users = {e.user_id for e in events}
    assert {k for k in state if k.startswith("recs:")} == {f"recs:{u}" for u in users}
    assert len([k for k in state if k.startswith("similar:")]) > 1000
    assert state["users"] == sorted(users)
    final = messages_of(sc)
    assert set(final) == users
    top_n = sc.cfg["model"]["top_n"]
    assert all(final[u] == published(state[f"recs:{u}"], top_n) for u in users)


def test_clean_run_at_parallelism_1_is_identical(clean: tuple[Scenario, dict[str, Any]], kafka_bootstrap: str,
                                                 redis_conn: Any, events: list[Any]) -> None:
    sc = Scenario("p1", kafka_bootstrap, parallelism=1)
    try:
        sc.produce(events)
        sc.run()
        assert_same_contents(redis_contents(redis_conn, sc.prefix), clean[1])
        assert messages_of(sc) == messages_of(clean[0])
    finally:
        sc.cleanup(redis_conn)


@pytest.mark.parametrize("share", [0.1, 0.5, 0.8])
def test_sigkill_mid_stream_then_resume_equals_clean_run(
        share: float, clean: tuple[Scenario, dict[str, Any]], kafka_bootstrap: str, redis_conn: Any,
        events: list[Any]) -> None:
    sc = Scenario(f"kill{int(share * 100)}", kafka_bootstrap)
    users = int(share * len({e.user_id for e in events}))
    try:
        sc.produce(events)
        proc = sc.start()
        try:  # kill once a checkpoint is complete and results for a share of the users have come out
            wait_for(lambda: redis_conn.zcard(f"{sc.prefix}users") > users and latest_checkpoint(sc.cfg) is not None,
                     240, f"results of {users} users and a completed checkpoint")
            assert proc.poll() is None, "the job finished before it could be killed; use more events"
        finally:
            kill(proc)
        assert latest_checkpoint(sc.cfg) is not None
        sc.run(resume=True)
        assert_same_contents(redis_contents(redis_conn, sc.prefix), clean[1])
        assert messages_of(sc) == messages_of(clean[0])
        topic = sc.cfg["kafka"]["topics"]["recommendations"]
        committed = committed_updates(kafka_bootstrap, topic, "read_committed")
        everything = committed_updates(kafka_bootstrap, topic, "read_uncommitted")
        # The killed run's open transactions were aborted: a read_committed consumer sees every update once
        # (windows replayed after the restore were written again, in new transactions), plus one final
        # re-rank per user; a read_uncommitted one also sees what the aborted transactions held.
        updates = [(u, e) for u, e, t in committed if t == "events"]
        assert len(updates) == len(set(updates))
        assert sorted(u for u, _, t in committed if t == "final") == clean[1]["users"]
        assert set(committed) <= set(everything)
    finally:
        sc.cleanup(redis_conn)


def test_replaying_the_stream_again_changes_nothing(
        clean: tuple[Scenario, dict[str, Any]], kafka_bootstrap: str, redis_conn: Any, events: list[Any]) -> None:
    sc = Scenario("replay", kafka_bootstrap)
    try:
        sc.produce(events)
        sc.produce(events, catalog=False)  # the whole stream delivered a second time: same 20,000 event ids
        sc.run()
        assert_same_contents(redis_contents(redis_conn, sc.prefix), clean[1])
    finally:
        sc.cleanup(redis_conn)


def test_redis_outage_of_ten_seconds(clean: tuple[Scenario, dict[str, Any]], kafka_bootstrap: str,
                                     redis_conn: Any, events: list[Any]) -> None:
    sc = Scenario("redis", kafka_bootstrap)
    try:
        sc.produce(events)
        proc = sc.start()
        try:
            wait_for(lambda: redis_conn.zcard(f"{sc.prefix}users") > 20, 180, "the first results in Redis")
            redis_conn.shutdown(save=True)  # keep the data, drop every connection
            time.sleep(10)
            subprocess.run(["bash", "deploy/services.sh", "up"], cwd=PROJECT_ROOT, check=True,
                           env={**os.environ, "REDIS_PORT": str(REDIS_PORT)}, capture_output=True)
            assert proc.wait(300) == 0, "the job did not survive the Redis outage"
        finally:
            kill(proc)
        assert_same_contents(redis_contents(redis_conn, sc.prefix), clean[1])
    finally:
        sc.cleanup(redis_conn)


def test_kafka_broker_restart(clean: tuple[Scenario, dict[str, Any]], kafka_bootstrap: str, redis_conn: Any,
                              events: list[Any]) -> None:
    sc = Scenario("kafka", kafka_bootstrap)
    try:
        sc.produce(events)
        proc = sc.start()
        try:
            wait_for(lambda: redis_conn.zcard(f"{sc.prefix}users") > 20, 180, "the first results in Redis")
            subprocess.run(["bash", "deploy/services.sh", "restart-kafka"], cwd=PROJECT_ROOT, check=True,
                           capture_output=True)
            assert proc.wait(400) == 0, "the job did not survive the broker restart"
        finally:
            kill(proc)
        assert_same_contents(redis_contents(redis_conn, sc.prefix), clean[1])
    finally:
        sc.cleanup(redis_conn)


def test_two_arms_clean_runs_at_parallelism_1_and_2(kafka_bootstrap: str, redis_conn: Any, events: list[Any]) -> None:
    """With an experiment of two arms: every stored list and final message carries its user's arm, the final
    contents of p=1 and p=2 are equal (but for the arms' running totals, which depend on which lists were served
    when), and in each run the committed summaries sum to what the committed messages and the events give."""
    # weighted vs learned: the combiner trained in the stream (rec:model:combiner, the learned arm's lists) is compared
    runs = [Scenario(f"arms-p{p}", kafka_bootstrap, parallelism=p, extra=["experiments.name=demo", ARMS])
            for p in (1, 2)]
    try:
        contents = []
        for sc in runs:
            sc.produce(events)
            sc.run()
            exp = experiment(sc.cfg)
            state = redis_contents(redis_conn, sc.prefix)
            lists = {k[len("recs:"):]: v for k, v in state.items() if k.startswith("recs:")}
            assert len(lists) == len({e.user_id for e in events})
            assert all(v["arm"] == exp.names[exp.arm_of(u)] for u, v in lists.items())
            topics = sc.cfg["kafka"]["topics"]
            messages = [json.loads(r.value) for r in read_topic(kafka_bootstrap, topics["recommendations"])]
            want = recompute(events, messages, sc.cfg["model"]["top_n"], exp)
            got: dict[str, dict[str, int]] = {name: {"events": 0, "hits": 0, "lists": 0} for name in exp.names}
            for r in read_topic(kafka_bootstrap, topics["experiments"]):
                doc = json.loads(r.value)
                for key in got[doc["arm"]]:
                    got[doc["arm"]][key] += doc[key]
            assert got == {n: {k: want[n][k] for k in ("events", "hits", "lists")} for n in exp.names}
            totals = {json.loads(v)["arm"]: json.loads(v) for v in state.pop("experiments").values()}
            assert {n: {k: totals[n][k] for k in got[n]} for n in exp.names} == got
            contents.append(state)
        assert_same_contents(contents[1], contents[0])
        assert messages_of(runs[1]) == messages_of(runs[0])
    finally:
        for sc in runs:
            sc.cleanup(redis_conn)
