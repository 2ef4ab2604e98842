"""Continuity of state across runs, through the real Kafka, Redis and mini-cluster (`python -m jobs.recommend`).

A bounded run ends with a savepoint; the next run of the same job identity continues from it (same state, same Kafka
positions), live or bounded; a run never restores another identity's state, a state of recreated topics or one past
the topics' end (it refuses, naming both sides); a resumed bounded run finishes; a start aborts the open
transactions a crashed run left. Every scenario has its own topics, consumer group, Redis prefix, state folders and
transactional prefix; the job checkpoints every 2 s. Results are compared with one uninterrupted bounded run over the
same events and catalog: every Redis key, wall-clock fields left out.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from conftest import REDIS_PORT
from job_runs import LOGS, assert_same_contents, kill, redis_contents, wait_for

from config import PROJECT_ROOT, load_config
from ingest import kafka_admin
from ingest.catalog import publish_catalog
from ingest.movielens import load_catalog, load_events
from ingest.producer import produce_events
from jobs.flink_env import latest_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.flink]

N_EVENTS = 3000
PREFIX = 1800  # the first run's share of the events
STATE_ROOT = PROJECT_ROOT / "var" / "test-checkpoints"
FINAL = re.compile(r"^final state: savepoint (\S+)$", re.M)


class Run(NamedTuple):
    rc: int
    output: str  # stdout and stderr

    @property
    def final(self) -> str:
        found = FINAL.findall(self.output)
        assert found, f"the run printed no final savepoint:\n{self.output[-3000:]}"
        return str(found[-1])


class Scenario:
    """One job identity's topics, consumer group, Redis prefix, state folders and config overrides."""

    def __init__(self, name: str, bootstrap: str, *, topics_of: Scenario | None = None, root: Path | None = None,
                 job_name: str | None = None) -> None:
        self.tag = f"{name}-{uuid.uuid4().hex[:6]}"
        self.bootstrap = bootstrap
        self.topics_tag: str = topics_of.topics_tag if topics_of else self.tag
        self.root = root or STATE_ROOT / f"cont-{self.tag}"
        self.overrides = [f"kafka.topics.{t}={t}-{self.topics_tag}" for t in ("events", "items", "dlq",
                                                                              "recommendations")]
        self.overrides += [
            f"kafka.bootstrap={bootstrap}", f"redis.port={REDIS_PORT}", f"kafka.group_id=g-{self.tag}",
            f"redis.prefix=cont-{self.tag}:", f"job.name={job_name or 'cont-' + self.topics_tag}",
            f"job.checkpoint_dir={self.root / 'checkpoints'}", f"job.savepoint_dir={self.root / 'savepoints'}",
            f"job.transactional_id_prefix=t-{self.tag}", "job.checkpoint_interval_ms=2000",
            "job.delivery=exactly_once"]
        self.cfg = load_config(overrides=self.overrides, env={})
        self.runs = 0
        if topics_of is None:
            kafka_admin.ensure_topics(bootstrap, kafka_admin.project_topics(self.cfg), partitions=2)

    @property
    def prefix(self) -> str:
        return str(self.cfg["redis"]["prefix"])

    @property
    def topics(self) -> dict[str, str]:
        return dict(self.cfg["kafka"]["topics"])

    def produce(self, events: Sequence[Any]) -> None:
        assert produce_events(events, self.bootstrap, self.topics["events"], progress=False) == len(events)

    def publish_catalog(self) -> None:
        publish_catalog(load_catalog(), self.bootstrap, self.topics["items"])

    def command(self, *args: str, also: Sequence[str] = ()) -> list[str]:
        """The job's command line: ``args``, this scenario's overrides, then ``also`` (which win)."""
        cmd = [sys.executable, "-m", "jobs.recommend", *args]
        for o in (*self.overrides, *also):
            cmd += ["--set", o]
        return cmd

    def start(self, *args: str, also: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], Path]:
        self.runs += 1
        LOGS.mkdir(parents=True, exist_ok=True)
        log = LOGS / f"continuity-{self.tag}-{self.runs}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(self.command(*args, also=also), cwd=PROJECT_ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        return proc, log

    def run(self, *args: str, timeout: float = 300) -> Run:
        proc, log = self.start(*args)
        try:
            rc = proc.wait(timeout)
        finally:
            kill(proc)
        return Run(rc, log.read_text(errors="replace"))

    def contents(self, redis_conn: Any) -> dict[str, Any]:
        return redis_contents(redis_conn, self.prefix)

    def cleanup(self, redis_conn: Any) -> None:
        if self.topics_tag == self.tag:
            kafka_admin.delete_topics(self.bootstrap, kafka_admin.project_topics(self.cfg))
        for key in redis_conn.scan_iter(match=f"{self.prefix}*", count=1000):
            redis_conn.unlink(key)
        shutil.rmtree(self.root, ignore_errors=True)


def assert_same_as_one_run(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Equal to one bounded run over everything (which has results), key by key."""
    assert sum(k.startswith("recs:") for k in want) >= 30 and sum(k.startswith("similar:") for k in want) > 500
    assert_same_contents(got, want)


def open_transactions(bootstrap: str, topic: str) -> bool:
    """Whether some partition of ``topic`` has an open transaction holding records: a read_committed reader's end
    (the last stable offset) is then below a read_uncommitted reader's (the high watermark)."""
    from kafka import KafkaConsumer, TopicPartition

    ends = []
    for isolation in ("read_committed", "read_uncommitted"):
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation, enable_auto_commit=False)
        try:
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            ends.append(consumer.end_offsets(parts))
        finally:
            consumer.close()
    return ends[0] != ends[1]


@pytest.fixture(scope="module")
def events() -> list[Any]:
    return load_events(limit=N_EVENTS)


@pytest.fixture(scope="module")
def reference(kafka_bootstrap: str, redis_conn: Any, events: list[Any]) -> Iterator[dict[str, Any]]:
    """Redis after one bounded run over every event and the catalog."""
    sc = Scenario("ref", kafka_bootstrap)
    try:
        sc.publish_catalog()
        sc.produce(events)
        result = sc.run("--bounded")
        assert result.rc == 0, result.output[-3000:]
        yield sc.contents(redis_conn)
    finally:
        sc.cleanup(redis_conn)


def test_prefix_then_the_rest_from_the_final_savepoint_equals_one_run(
        reference: dict[str, Any], kafka_bootstrap: str, redis_conn: Any, events: list[Any]) -> None:
    """A bounded run on a prefix ends with a savepoint; a bounded run resumed from it (the path it printed) reads the
    events produced after it. Between the two a run started --fresh is killed with an open transaction (its first
    checkpoint is minutes away, so the transaction it writes into stays open until the kill): the resumed run, which
    restores another lineage's state, aborts it (read_committed readers are not held up)."""
    sc = Scenario("prefix", kafka_bootstrap)
    try:
        sc.publish_catalog()
        sc.produce(events[:PREFIX])
        first = sc.run("--bounded")
        assert first.rc == 0, first.output[-3000:]
        assert Path(first.final, "_metadata").is_file()
        sc.produce(events[PREFIX:])

        recs = sc.topics["recommendations"]
        crashed, log = sc.start("--bounded", "--fresh", also=["job.checkpoint_interval_ms=600000"])
        try:
            wait_for(lambda: open_transactions(kafka_bootstrap, recs), 180, "an open transaction of the fresh run")
        finally:
            kill(crashed)
        assert open_transactions(kafka_bootstrap, recs), "the killed run left no open transaction to abort"
        assert "starting fresh (--fresh)" in log.read_text()

        resumed = sc.run("--bounded", "--resume", first.final)
        assert resumed.rc == 0, resumed.output[-3000:]
        assert f"continuing from {first.final}" in resumed.output
        assert_same_as_one_run(sc.contents(redis_conn), reference)
        assert not open_transactions(kafka_bootstrap, recs), "the crashed run's transaction is still open"
    finally:
        sc.cleanup(redis_conn)


def test_prefix_then_live_on_the_rest_equals_one_run(
        reference: dict[str, Any], kafka_bootstrap: str, redis_conn: Any, events: list[Any]) -> None:
    """`make run` then `make live`: the unbounded job continues from the bounded run's final savepoint by default;
    Ctrl-C stops it with a savepoint, and a bounded run continuing from that (nothing left to read) ends the input."""
    sc = Scenario("live", kafka_bootstrap)
    try:
        sc.publish_catalog()
        sc.produce(events[:PREFIX])
        first = sc.run("--bounded")
        assert first.rc == 0, first.output[-3000:]
        sc.produce(events[PREFIX:])

        last = {e.user_id: e.event_id for e in sorted(events, key=lambda e: (e.ts, e.event_id))}  # each newest
        rest_users = {e.user_id for e in events[PREFIX:]}

        def rest_applied() -> bool:
            raws = [redis_conn.get(f"{sc.prefix}recs:{u}") for u in rest_users]
            return all(raw is not None and json.loads(raw)["event_id"] == last[u]
                       for u, raw in zip(rest_users, raws, strict=True))

        live, log = sc.start()
        try:
            wait_for(rest_applied, 240, "the live job to apply the rest of the events")
            live.send_signal(signal.SIGINT)  # Ctrl-C: stop with a savepoint
            assert live.wait(180) == 0, log.read_text()[-3000:]
        finally:
            kill(live)
        stopped = Run(0, log.read_text())
        assert f"continuing from {first.final}" in stopped.output
        assert stopped.final != first.final

        ended = sc.run("--bounded")
        assert ended.rc == 0, ended.output[-3000:]
        assert f"continuing from {stopped.final}" in ended.output
        assert_same_as_one_run(sc.contents(redis_conn), reference)
    finally:
        sc.cleanup(redis_conn)


def test_killed_bounded_run_resumes_and_finishes(
        reference: dict[str, Any], kafka_bootstrap: str, redis_conn: Any, events: list[Any]) -> None:
    """SIGKILL after a checkpoint, then the same command again: it continues from the newest checkpoint of its own
    job identity and finishes (a resumed bounded run at checkpoint_interval_ms 2000 used to wait forever)."""
    sc = Scenario("kill", kafka_bootstrap)
    try:
        sc.publish_catalog()
        sc.produce(events)
        proc, _ = sc.start("--bounded")
        try:
            wait_for(lambda: latest_checkpoint(sc.cfg) is not None, 180, "a completed checkpoint")
            assert proc.poll() is None, "the job finished before it could be killed; use more events"
        finally:
            kill(proc)
        checkpoint = latest_checkpoint(sc.cfg)
        resumed = sc.run("--bounded")
        assert resumed.rc == 0, resumed.output[-3000:]
        assert f"continuing from {checkpoint}" in resumed.output
        assert_same_as_one_run(sc.contents(redis_conn), reference)
    finally:
        sc.cleanup(redis_conn)


def test_latest_never_picks_another_jobs_state(kafka_bootstrap: str, redis_conn: Any, events: list[Any]) -> None:
    """Two jobs on the same topics and state folders: the second never continues from the first's state by default,
    and refuses it when given its path, naming both jobs."""
    first = Scenario("job-a", kafka_bootstrap)
    second = Scenario("job-b", kafka_bootstrap, topics_of=first, root=first.root, job_name=f"other-{first.tag}")
    try:
        first.produce(events[:500])
        a = first.run("--bounded")
        assert a.rc == 0, a.output[-3000:]
        b = second.run("--bounded")
        assert b.rc == 0, b.output[-3000:]
        assert "no state to continue from" in b.output and "continuing from" not in b.output
        assert Path(b.final).parent != Path(a.final).parent  # each identity's own folder
        refused = second.run("--bounded", "--resume", a.final)
        assert refused.rc == 2, refused.output[-3000:]
        assert f"it belongs to job 'cont-{first.tag}', this is job 'other-{first.tag}'" in refused.output
    finally:
        second.cleanup(redis_conn)
        first.cleanup(redis_conn)


def test_state_of_recreated_topics_or_past_their_end_is_refused(
        kafka_bootstrap: str, redis_conn: Any, events: list[Any], tmp_path: Path) -> None:
    sc = Scenario("recreated", kafka_bootstrap)
    try:
        sc.produce(events[:500])
        first = sc.run("--bounded")
        assert first.rc == 0, first.output[-3000:]
        topic = sc.topics["events"]
        old_id = kafka_admin.topic_ids(kafka_bootstrap, [topic])[topic]
        topics = kafka_admin.project_topics(sc.cfg)
        kafka_admin.delete_topics(kafka_bootstrap, topics, wait=True)
        kafka_admin.ensure_topics(kafka_bootstrap, topics, partitions=2)
        new_id = kafka_admin.topic_ids(kafka_bootstrap, [topic])[topic]
        assert new_id != old_id
        sc.produce(events[:100])

        latest = sc.run("--bounded")  # the newest state of this job is the old topics': refused, not skipped
        assert latest.rc == 2, latest.output[-3000:]
        assert f"topic '{topic}' was deleted and created again" in latest.output
        assert old_id in latest.output and new_id in latest.output and "--fresh" in latest.output

        by_path = sc.run("--bounded", "--resume", first.final)
        assert by_path.rc == 2, by_path.output[-3000:]
        assert old_id in by_path.output and new_id in by_path.output
        assert re.search(rf"it has read topic '{topic}' partition \d up to offset \d+, but that partition ends at "
                         r"offset \d+ now", by_path.output)

        # the same savepoint outside its job-identity folder: only its positions can be checked, and they are past
        # the end of the new topic
        copy = tmp_path / "elsewhere" / Path(first.final).name
        shutil.copytree(first.final, copy)
        moved = sc.run("--bounded", "--resume", str(copy))
        assert moved.rc == 2, moved.output[-3000:]
        assert "ends at offset" in moved.output and "deleted and created again" not in moved.output

        for key in redis_conn.scan_iter(match=f"{sc.prefix}*", count=1000):
            redis_conn.unlink(key)
        fresh = sc.run("--bounded", "--fresh")
        assert fresh.rc == 0, fresh.output[-3000:]
        assert "starting fresh (--fresh)" in fresh.output
        assert {m.decode() for m in redis_conn.zrange(f"{sc.prefix}users", 0, -1)} == {e.user_id for e in events[:100]}
    finally:
        sc.cleanup(redis_conn)


def test_sigterm_cancels_the_job_before_the_process_ends(
        kafka_bootstrap: str, redis_conn: Any, events: list[Any]) -> None:
    """SIGTERM (how `make bench` and service managers stop a job) cancels the job and waits for it before the JVM
    and its embedded Python go: the process ends with 143, and the JVM leaves no crash report (hs_err_pid*.log)."""
    sc = Scenario("term", kafka_bootstrap)
    crash_reports = set(PROJECT_ROOT.glob("hs_err_pid*.log"))
    try:
        sc.publish_catalog()
        sc.produce(events[:PREFIX])
        live, log = sc.start("--fresh")
        try:
            wait_for(lambda: redis_conn.exists(f"{sc.prefix}users") == 1, 240, "the live job to write results")
            live.send_signal(signal.SIGTERM)
            assert live.wait(180) == 143, log.read_text()[-3000:]
        finally:
            kill(live)
        assert "cancelling job" in log.read_text()
        assert set(PROJECT_ROOT.glob("hs_err_pid*.log")) == crash_reports
    finally:
        sc.cleanup(redis_conn)
