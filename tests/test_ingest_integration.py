"""The ingest side against the real Kafka broker and Redis (``bash deploy/services.sh up``).

Every test uses topics and Redis keys with a random suffix and removes them afterwards, so it can
run next to other tests on the same services.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import connect_redis

from config import PROJECT_ROOT
from ingest import kafka_admin
from ingest.catalog import item_key, items_key, publish_catalog, store_catalog
from ingest.movielens import load_catalog, load_events
from ingest.producer import BAD_KINDS, bad_records, interleave, produce_events
from ingest.synthetic import generate
from serving.testing import read_topic
from udfs.events import Event, InvalidEvent, event_to_json, parse_event

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def kafka(kafka_bootstrap: str) -> str:
    return kafka_bootstrap  # the shared conftest fixture, under this module's name


@pytest.fixture(scope="module")
def redis_client() -> Iterator[Any]:
    client = connect_redis(decode_responses=True)
    yield client
    client.close()


@pytest.fixture()
def topics(kafka: str) -> Iterator[Any]:
    """A factory of unique topic names; the topics are deleted after the test."""
    made: list[str] = []

    def name(base: str) -> str:
        made.append(f"test-{base}-{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield name
    kafka_admin.delete_topics(kafka, made, wait=True)
    time.sleep(0.5)  # a late metadata request of a closed client could auto-create a topic again: check twice
    kafka_admin.delete_topics(kafka, made, wait=True)


@pytest.fixture()
def prefix(redis_client: Any) -> Iterator[str]:
    """A unique Redis key prefix; every key under it is deleted after the test."""
    p = f"test-ingest-{uuid.uuid4().hex[:10]}:"
    yield p
    keys = list(redis_client.scan_iter(match=p + "*", count=1000))
    if keys:
        redis_client.delete(*keys)


def test_movielens_replay_round_trip(kafka: str, topics: Any) -> None:
    topic = topics("events")
    assert kafka_admin.ensure_topics(kafka, {topic: {}}, partitions=2) == [topic]
    events = load_events(limit=500)
    bad = bad_records(5)
    sent = produce_events(interleave(events, bad, len(events)), kafka, topic, progress=False)
    assert sent == 505

    records = read_topic(kafka, topic)
    assert len(records) == 505
    assert kafka_admin.count_messages(kafka, topic) == 505

    by_user: dict[str, list[Event]] = defaultdict(list)
    partition_of: dict[bytes, set[int]] = defaultdict(set)
    reasons: dict[str, str] = {}
    for rec in records:
        partition_of[rec.key].add(rec.partition)
        try:
            event = parse_event(rec.value)
        except InvalidEvent as exc:
            reasons[rec.key.decode()] = exc.reason
            continue
        assert rec.key == event.user_id.encode()
        assert rec.value.decode() == event_to_json(event)  # exact wire content
        by_user[event.user_id].append(event)

    expected: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        expected[e.user_id].append(e)
    assert by_user == expected  # same events, and per user in the produced (time) order
    assert all(len(parts) == 1 for parts in partition_of.values())  # one user, one partition
    assert len({p for parts in partition_of.values() for p in parts}) == 2  # both partitions used
    assert reasons == {f"bad-{k + 1}": reason for k, reason in enumerate(list(BAD_KINDS.values())[:5])}


def test_producer_cli_synthetic_with_bad_records(kafka: str, topics: Any) -> None:
    topic = topics("cli")
    cmd = [sys.executable, "-m", "ingest.producer", "--source", "synthetic", "--events", "3000", "--users", "40",
           "--items", "300", "--seed", "11", "--bad", "4", "-q", "--set", f"kafka.topics.events={topic}"]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FLINKREC_KAFKA__BOOTSTRAP": kafka})
    assert proc.returncode == 0, proc.stderr
    assert kafka_admin.count_messages(kafka, topic) == 3004
    values = {r.value.decode() for r in read_topic(kafka, topic)}
    assert {event_to_json(e) for e in generate(3000, 40, 300, seed=11)} <= values
    assert len(values) == 3004


def test_producer_cli_prefix_then_the_rest(kafka: str, topics: Any) -> None:
    """``--limit N`` and then ``--skip N`` put the whole stream on the topic, each user's events in order."""
    topic = topics("skip")
    base = [sys.executable, "-m", "ingest.producer", "--source", "synthetic", "--events", "2000", "--users", "30",
            "--items", "200", "--seed", "5", "-q", "--set", f"kafka.topics.events={topic}"]
    env = {**os.environ, "FLINKREC_KAFKA__BOOTSTRAP": kafka}
    for part in (["--limit", "1234"], ["--skip", "1234"]):
        proc = subprocess.run([*base, *part], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr
    events = list(generate(2000, 30, 200, seed=5))
    by_user: dict[str, list[str]] = defaultdict(list)
    for rec in sorted(read_topic(kafka, topic), key=lambda r: (r.partition, r.offset)):
        by_user[rec.key.decode()].append(rec.value.decode())
    expected: dict[str, list[str]] = defaultdict(list)
    for e in events:
        expected[e.user_id].append(event_to_json(e))
    assert by_user == expected


def test_rate_is_held(kafka: str, topics: Any) -> None:
    """Record ``i`` is handed to Kafka no sooner than ``i / rate`` after the call: read from the records' own
    CreateTime, which the producer client stamps when ``produce`` is called. Lower bounds only: a slow or
    loaded machine can send later, never sooner."""
    topic = topics("rate")
    kafka_admin.ensure_topics(kafka, {topic: {}}, partitions=2)
    rate, n = 2000, 1000
    events = list(generate(n, 20, 50, seed=1))
    called_ms = time.time() * 1000  # the pacer's clock starts after this
    assert produce_events(events, kafka, topic, rate=rate, progress=False) == n

    position = {e.event_id: i for i, e in enumerate(events)}
    records = read_topic(kafka, topic)
    assert len(records) == n and {r.timestamp_type for r in records} == {0}  # 0: CreateTime, the producer's
    stamped = sorted((position[json.loads(r.value)["event_id"]], r.timestamp) for r in records)
    assert [i for i, _ in stamped] == list(range(n))
    # the pacer skips waits under 1 ms, and the timestamps are whole milliseconds: 2 ms, and a little for clocks
    slack_ms = 3
    early = [(i, round(ts - called_ms, 1)) for i, ts in stamped if ts - called_ms < i * 1000 / rate - slack_ms]
    assert not early, f"records sent before their time (index, ms after the call): {early[:10]}"
    assert stamped[-1][1] - called_ms >= (n - 1) * 1000 / rate - slack_ms  # the whole run: at least (n-1)/rate


def test_catalog_to_kafka_and_redis(kafka: str, topics: Any, redis_client: Any, prefix: str) -> None:
    topic = topics("items")
    kafka_admin.ensure_topics(kafka, {topic: dict(kafka_admin.COMPACTED)}, partitions=2)
    assert kafka_admin.topic_configs(kafka, topic)["cleanup.policy"] == "compact"

    catalog = load_catalog()
    assert publish_catalog(catalog, kafka, topic) == 1682
    records = read_topic(kafka, topic)
    assert len(records) == 1682
    published = {r.key.decode(): json.loads(r.value) for r in records}
    assert published["1"] == {"item_id": "1", "title": "Toy Story", "year": 1995,
                              "genres": ["Animation", "Children's", "Comedy"]}
    assert published["543"]["title"] == "Misérables, Les"

    assert store_catalog(catalog, redis_client, prefix=prefix, pipeline_size=100) == 1682
    live = {"available": "true", "expires_at": ""}
    assert redis_client.hgetall(item_key(prefix, "1")) == {
        "title": "Toy Story", "year": "1995", "genres": "Animation|Children's|Comedy", **live}
    assert redis_client.hgetall(item_key(prefix, "2")) == {
        "title": "GoldenEye", "year": "1995", "genres": "Action|Adventure|Thriller", **live}
    assert redis_client.hgetall(item_key(prefix, "267")) == {"title": "unkonwn", "year": "", "genres": "", **live}
    # the lifecycle fields (the API's sessions read them): a withdrawn or expiring record, then available again
    store_catalog([dict(catalog[0], available=False, expires_at=900)], redis_client, prefix=prefix)
    assert redis_client.hmget(item_key(prefix, "1"), ["available", "expires_at"]) == ["false", "900"]
    store_catalog([catalog[0]], redis_client, prefix=prefix)
    assert redis_client.hmget(item_key(prefix, "1"), ["available", "expires_at"]) == ["true", ""]
    assert redis_client.scard(items_key(prefix)) == 1682
    assert redis_client.sismember(items_key(prefix), "1682")

    # storing a smaller catalog with replace drops the items that are gone
    store_catalog(catalog[:10], redis_client, prefix=prefix, replace=True)
    assert redis_client.scard(items_key(prefix)) == 10
    assert not redis_client.exists(item_key(prefix, "11"))
    assert redis_client.hget(item_key(prefix, "10"), "title") == catalog[9]["title"]


def test_catalog_cli(kafka: str, topics: Any, redis_client: Any, prefix: str) -> None:
    topic = topics("items-cli")
    cmd = [sys.executable, "-m", "ingest.catalog", "--source", "synthetic", "--items", "250", "--seed", "3", "-q",
           "--set", f"kafka.topics.items={topic}", "--set", f'redis.prefix="{prefix}"']
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FLINKREC_KAFKA__BOOTSTRAP": kafka})
    assert proc.returncode == 0, proc.stderr
    assert kafka_admin.topic_configs(kafka, topic)["cleanup.policy"] == "compact"
    assert kafka_admin.count_messages(kafka, topic) == 250
    assert redis_client.scard(items_key(prefix)) == 250
    assert redis_client.hget(item_key(prefix, "1"), "title")


def test_ensure_topics_is_idempotent_and_fixes_configs(kafka: str, topics: Any) -> None:
    a, b = topics("a"), topics("b")
    assert kafka_admin.ensure_topics(kafka, {a: {}, b: {}}, partitions=3) == sorted([a, b])
    assert kafka_admin.ensure_topics(kafka, {a: {}, b: {}}, partitions=3) == []
    assert kafka_admin.topic_configs(kafka, b)["cleanup.policy"] == "delete"
    assert kafka_admin.ensure_topics(kafka, {b: dict(kafka_admin.COMPACTED)}, partitions=3) == []
    assert kafka_admin.topic_configs(kafka, b)["cleanup.policy"] == "compact"
    assert kafka_admin.count_messages(kafka, a) == 0


def test_count_messages_skips_aborted_transactions(kafka: str, topics: Any) -> None:
    from kafka import KafkaProducer

    topic = topics("tx")
    kafka_admin.ensure_topics(kafka, {topic: {}}, partitions=2)
    prod = KafkaProducer(bootstrap_servers=kafka, transactional_id=f"test-ingest-{uuid.uuid4().hex[:10]}")
    try:
        prod.init_transactions()
        prod.begin_transaction()
        for i in range(7):
            prod.send(topic, value=b"committed", key=str(i).encode())
        prod.commit_transaction()
        prod.begin_transaction()
        for i in range(4):
            prod.send(topic, value=b"aborted", key=str(i).encode())
        prod.flush()
        prod.abort_transaction()
    finally:
        prod.close()
    assert kafka_admin.count_messages(kafka, topic, isolation="read_committed") == 7
    assert kafka_admin.count_messages(kafka, topic, isolation="read_uncommitted") == 11
    with pytest.raises(ValueError, match="isolation"):
        kafka_admin.count_messages(kafka, topic, isolation="dirty")


def test_unknown_topic_and_unreachable_broker(kafka: str) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        kafka_admin.count_messages(kafka, f"test-missing-{uuid.uuid4().hex[:10]}", timeout=2)
    with pytest.raises(kafka_admin.KafkaUnavailable, match=r"deploy/services\.sh up"):
        kafka_admin.wait_for_kafka("127.0.0.1:9", timeout=1.5)


def test_committed_offsets_reads_a_group_and_retries_a_coordinator_still_loading(
        kafka: str, topics: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import CoordinatorNotAvailableError
    from kafka.structs import OffsetAndMetadata

    topic, group = topics("offsets"), f"test-group-{uuid.uuid4().hex[:10]}"
    kafka_admin.ensure_topics(kafka, {topic: {}}, partitions=2)
    assert kafka_admin.committed_offsets(kafka, group, topic) == {}
    consumer = KafkaConsumer(bootstrap_servers=kafka, group_id=group, enable_auto_commit=False)
    try:
        consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(5, "", -1)})
    finally:
        consumer.close()
    # a fresh broker answers COORDINATOR_NOT_AVAILABLE until its offsets topic exists: the first call fails so
    real, calls = kafka_admin._admin, []

    def flaky(bootstrap: str, timeout: float) -> Any:
        calls.append(timeout)
        if len(calls) == 1:
            raise CoordinatorNotAvailableError("offsets topic being created")
        return real(bootstrap, timeout)

    monkeypatch.setattr(kafka_admin, "_admin", flaky)
    assert kafka_admin.committed_offsets(kafka, group, topic) == {0: 5}
    assert len(calls) == 2
    assert kafka_admin.committed_offsets(kafka, group, f"{topic}-other") == {}
