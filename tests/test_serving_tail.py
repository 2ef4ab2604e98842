"""``python -m serving.tail`` against the real Kafka broker (``bash deploy/services.sh up``).

The recommendations are produced here with ``udfs.serde`` (the job's encoder) to a random topic; the
job itself is tested elsewhere. Consumers stop by ``--max``, ``--until-end`` or a timeout, and the topic
is deleted afterwards. With ``REQUIRE_SERVICES=1`` a missing broker fails the tests.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config import PROJECT_ROOT, load_config
from ingest.kafka_admin import ensure_topics
from serving.tail import TailError, tail
from serving.testing import drop_topics, produce_values, recs_doc, require_kafka, unique

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer, KafkaProducer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kafka() -> str:
    return require_kafka(load_config())


@pytest.fixture()
def topic(kafka: str) -> Iterator[str]:
    name = unique("test-serving-recs")
    ensure_topics(kafka, {name: {}}, partitions=2)
    yield name
    drop_topics(kafka, [name])


def docs(users: list[str], event_prefix: str = "e") -> list[str]:
    return [recs_doc(u, [("50", 4.2, "because of 172"), ("1", 1.0, "trending")], processed_at=1764514800000 + i,
                     event_id=f"{event_prefix}-{i}") for i, u in enumerate(users)]


def produce_docs(kafka: str, topic: str, values: list[str]) -> None:
    assert produce_values(kafka, topic, (v.encode() for v in values)) == len(values)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_tail_from_beginning_then_resumes_from_the_committed_offsets(kafka: str, topic: str) -> None:
    first = docs(["196", "7", "42", "196", "8", "9"])
    produce_docs(kafka, topic, first)
    group = unique("test-tail-group")
    out = io.StringIO()
    assert tail(kafka, topic, group, out=out, from_beginning=True, max_messages=6, timeout_s=30) == 6
    assert sorted(json.dumps(d, sort_keys=True) for d in lines(out)) == sorted(
        json.dumps(json.loads(d), sort_keys=True) for d in first)

    again = io.StringIO()  # same group: the committed offsets win over --from-beginning
    assert tail(kafka, topic, group, out=again, from_beginning=True, until_end=True, timeout_s=30) == 0
    assert again.getvalue() == ""

    more = docs(["500", "501"], event_prefix="more")
    produce_docs(kafka, topic, more)
    later = io.StringIO()
    assert tail(kafka, topic, group, out=later, max_messages=2, timeout_s=30) == 2
    assert sorted(d["event_id"] for d in lines(later)) == ["more-0", "more-1"]


def test_tail_reads_committed_records_only(kafka: str, topic: str) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka, transactional_id=unique("test-tail-tx"))
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for v in docs(["aborted-1", "aborted-2"], event_prefix="aborted"):
            producer.send(topic, value=v.encode())
        producer.flush()
        producer.abort_transaction()
        producer.begin_transaction()
        for v in docs(["kept-1", "kept-2", "kept-3"], event_prefix="kept"):
            producer.send(topic, value=v.encode())
        producer.commit_transaction()
    finally:
        producer.close()
    out = io.StringIO()
    n = tail(kafka, topic, unique("test-tail-group"), out=out, from_beginning=True, until_end=True, timeout_s=30)
    assert n == 3
    assert sorted(d["user_id"] for d in lines(out)) == ["kept-1", "kept-2", "kept-3"]


def test_tail_user_filter_meta_and_non_json(kafka: str, topic: str, caplog: pytest.LogCaptureFixture) -> None:
    produce_values(kafka, topic, [b"not json at all"], key=b"x")
    produce_docs(kafka, topic, docs(["196", "7", "196"]))
    out = io.StringIO()
    n = tail(kafka, topic, unique("test-tail-group"), out=out, from_beginning=True, until_end=True, timeout_s=30,
             user="196", with_meta=True)
    assert n == 2
    got = lines(out)
    assert {d["value"]["user_id"] for d in got} == {"196"}
    assert all(d["topic"] == topic and d["partition"] in (0, 1) and isinstance(d["offset"], int)
               and isinstance(d["timestamp"], int) and d["key"] is None for d in got)
    assert "is not JSON" in caplog.text


def test_tail_on_a_missing_topic_fails_and_creates_nothing(kafka: str) -> None:
    name = unique("test-serving-missing")
    try:
        with pytest.raises(TailError, match=f"topic '{name}' does not exist"):
            tail(kafka, name, unique("test-tail-group"), out=io.StringIO(), wait_s=1)
        consumer = KafkaConsumer(bootstrap_servers=kafka, allow_auto_create_topics=False)
        try:
            assert name not in consumer.topics()
        finally:
            consumer.close()
    finally:
        drop_topics(kafka, [name])


def test_tail_cli_appends_to_an_output_file(kafka: str, topic: str, tmp_path: Path) -> None:
    produce_docs(kafka, topic, docs(["1", "2", "3", "4"]))
    target = tmp_path / "recs.jsonl"
    group = unique("test-tail-group")
    cmd = [sys.executable, "-m", "serving.tail", "--topic", topic, "--group", group, "--from-beginning",
           "--output", str(target), "--timeout", "60", "-q"]
    run = subprocess.run([*cmd, "--max", "3"], capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
    assert run.returncode == 0, run.stderr
    assert len(target.read_text().splitlines()) == 3
    run = subprocess.run([*cmd, "--until-end"], capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
    assert run.returncode == 0, run.stderr
    written = [json.loads(line) for line in target.read_text().splitlines()]
    assert sorted(d["user_id"] for d in written) == ["1", "2", "3", "4"]  # the second run resumed and appended


def test_tail_cli_help_and_errors(kafka: str) -> None:
    out = subprocess.run([sys.executable, "-m", "serving.tail", "--help"], capture_output=True, text=True,
                         timeout=60, cwd=PROJECT_ROOT, check=True).stdout
    assert "--group" in out and "--from-beginning" in out and "--max" in out and "examples:" in out
    bad = subprocess.run([sys.executable, "-m", "serving.tail", "--max", "0"], capture_output=True, text=True,
                         timeout=60, cwd=PROJECT_ROOT)
    assert bad.returncode == 2 and "'0' must be > 0" in bad.stderr
    name = unique("test-serving-missing")
    try:
        missing = subprocess.run([sys.executable, "-m", "serving.tail", "--topic", name, "--wait", "1"],
                                 capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
        assert missing.returncode == 1 and f"topic '{name}' does not exist" in missing.stderr
    finally:
        drop_topics(kafka, [name])


def test_tail_latest_prints_the_last_message_of_each_user(kafka: str, topic: str) -> None:
    """Keyed like the job's topic: the last message per key is each user's current list (what compaction keeps)."""
    values = docs(["196", "7", "196", "42", "7", "196"])
    for value in values:
        produce_values(kafka, topic, [value.encode()], key=json.loads(value)["user_id"].encode())
    out = io.StringIO()
    n = tail(kafka, topic, unique("g"), out=out, from_beginning=True, until_end=True, latest=True, timeout_s=60)
    got = lines(out)
    assert n == 3 and [d["user_id"] for d in got] == ["196", "42", "7"]  # sorted by key
    assert [d["event_id"] for d in got] == ["e-5", "e-3", "e-4"]
