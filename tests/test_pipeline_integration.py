"""End to end through the real services: Kafka topic -> the job (bounded) -> Redis + Kafka topics.

Uses topics and a Redis prefix of its own, so it can share the broker and Redis with other tests.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import REDIS_PORT
from reference import batch_cosine

from config import load_config
from core.v2.model import FEATURES
from ingest import kafka_admin
from ingest.catalog import publish_catalog
from ingest.movielens import load_catalog, load_events
from ingest.producer import BAD_KINDS, bad_records, interleave, produce_events
from jobs.flink_env import make_env
from jobs.recommend import recommend_job
from serving.testing import read_topic
from udfs.dlq import original_bytes

pytestmark = [pytest.mark.integration, pytest.mark.flink]

N_EVENTS = 3000
N_BAD = len(BAD_KINDS)


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, redis_conn: Any) -> Iterator[dict[str, Any]]:
    import uuid

    tag = uuid.uuid4().hex[:8]
    overrides = [f"kafka.topics.{name}={name}-it-{tag}" for name in ("events", "items", "dlq", "recommendations")]
    overrides += [f"kafka.bootstrap={kafka_bootstrap}", f"redis.port={REDIS_PORT}",
                  f"kafka.group_id=it-{tag}", f"redis.prefix=it-{tag}:", "job.bounded=true",
                  "job.checkpoint_interval_ms=1000", f"job.checkpoint_dir=var/test-checkpoints/it-{tag}",
                  f"job.transactional_id_prefix=it-{tag}", "model.history_cap=0", "job.parallelism=2",
                  "model.compare_modes=[learned]", "model.hybrid.combiner_sample=1.0"]
    cfg = load_config(overrides=overrides, env={})
    topics = kafka_admin.project_topics(cfg)
    kafka_admin.ensure_topics(kafka_bootstrap, topics, partitions=2)
    events = load_events(limit=N_EVENTS)
    publish_catalog(load_catalog(), kafka_bootstrap, cfg["kafka"]["topics"]["items"])
    sent = produce_events(interleave(events, bad_records(N_BAD), len(events)), kafka_bootstrap,
                          cfg["kafka"]["topics"]["events"], progress=False)
    assert sent == N_EVENTS + N_BAD
    recommend_job(make_env(cfg), cfg)
    yield {"cfg": cfg, "events": events, "bad": bad_records(N_BAD)}
    kafka_admin.delete_topics(kafka_bootstrap, topics)
    for key in redis_conn.scan_iter(match=f"{cfg['redis']['prefix']}*", count=1000):
        redis_conn.unlink(key)


def test_redis_holds_recommendations_for_every_user(run: dict[str, Any], redis_conn: Any) -> None:
    p = run["cfg"]["redis"]["prefix"]
    users = {e.user_id for e in run["events"]}
    assert redis_conn.zcard(f"{p}users") == len(users)
    for user in sorted(users)[:50]:
        msg = json.loads(redis_conn.get(f"{p}recs:{user}"))
        assert msg["user_id"] == user
        seen = {e.item_id for e in run["events"] if e.user_id == user}
        assert msg["history_size"] == len(seen)
        assert 0 < len(msg["items"]) <= run["cfg"]["model"]["stored_n"]
        assert not {it["item_id"] for it in msg["items"]} & seen  # never an item the user has seen
        scores = [it["score"] for it in msg["items"]]
        assert scores == sorted(scores, reverse=True)
        last = [e for e in run["events"] if e.user_id == user][-1]
        assert (msg["event_id"], msg["event_ts"]) == (last.event_id, last.ts)
    assert json.loads(redis_conn.get(f"{p}trending"))


def test_every_method_reaches_the_results(run: dict[str, Any], redis_conn: Any) -> None:
    p = run["cfg"]["redis"]["prefix"]
    reasons: list[str] = []
    for key in redis_conn.scan_iter(match=f"{p}recs:*", count=1000):
        msg = json.loads(redis_conn.get(key))
        assert msg["mode"] == "weighted"
        reasons += [it["reason"] for it in msg["items"]]
    kinds = {r.split(" ")[0] for r in reasons}  # because / liked / matches / trending
    assert {"because", "liked", "trending"} <= kinds, kinds
    # the catalog from the items topic reached the ranker: item-CF reasons name titles, not ids
    assert any(r.startswith("because you rated Star Wars") for r in reasons)
    combiner = json.loads(redis_conn.get(f"{p}model:combiner"))
    # first engagements after a user's first one train it (combiner_sample 1)
    assert combiner["n_seen"] > 0
    assert set(combiner["weights"]) == {*FEATURES, "bias"} and combiner["updated_at"] > 0


def test_redis_similar_items_equal_the_batch_cosine(run: dict[str, Any], redis_conn: Any) -> None:
    p = run["cfg"]["redis"]["prefix"]
    items, cos, _ = batch_cosine((e.user_id, e.item_id, e.weight) for e in run["events"])
    keys = list(redis_conn.scan_iter(match=f"{p}similar:*", count=1000))
    assert len(keys) > 0.9 * len(items)
    for key in keys[:300]:
        msg = json.loads(redis_conn.get(key))
        for nb in msg["neighbors"]:
            assert nb["score"] == pytest.approx(cos[items[msg["item_id"]], items[nb["item_id"]]], rel=1e-6)


def test_output_topic_has_one_message_per_user_update(run: dict[str, Any], kafka_bootstrap: str) -> None:
    msgs = [json.loads(r.value) for r in read_topic(kafka_bootstrap, run["cfg"]["kafka"]["topics"]["recommendations"])]
    assert len(msgs) >= len({e.user_id for e in run["events"]})
    updates = [(m["user_id"], m["event_id"]) for m in msgs if m["trigger"] == "events"]
    assert len(updates) == len(set(updates))  # no update written twice
    # the end of the bounded input re-ranks every user once with the final model
    assert sorted(m["user_id"] for m in msgs if m["trigger"] == "final") == sorted({e.user_id for e in run["events"]})
    assert {m["user_id"] for m in msgs} == {e.user_id for e in run["events"]}
    assert all(m["processed_at"] >= m["event_ts"] for m in msgs)


def test_dlq_topic_has_every_malformed_record_with_its_reason(run: dict[str, Any], kafka_bootstrap: str) -> None:
    topics = run["cfg"]["kafka"]["topics"]
    records = read_topic(kafka_bootstrap, topics["dlq"])
    dlq = [json.loads(r.value) for r in records]
    assert sorted(d["reason"] for d in dlq) == sorted(BAD_KINDS.values())
    assert all(d["error"] for d in dlq)
    # each dead letter carries the refused record byte for byte, where it was read, and its key (as the Kafka key)
    sent = {rec.key: rec.value for rec in run["bad"]}
    for record, d in zip(records, dlq, strict=True):
        assert d["source"]["topic"] == topics["events"] and d["source"]["offset"] >= 0
        assert record.key == base64.b64decode(d["source"]["key_b64"])
        assert original_bytes(d) == sent[record.key]


def test_recommendations_are_keyed_by_user(run: dict[str, Any], kafka_bootstrap: str, redis_conn: Any) -> None:
    """Every user's messages are in one partition (keyed by user id), in event_ts order, the last equal to Redis."""
    partitions: dict[str, set[int]] = defaultdict(set)
    last: dict[str, dict[str, Any]] = {}
    for record in read_topic(kafka_bootstrap, run["cfg"]["kafka"]["topics"]["recommendations"]):
        msg = json.loads(record.value)
        assert record.key == msg["user_id"].encode()
        partitions[msg["user_id"]].add(record.partition)
        if msg["user_id"] in last:
            assert msg["event_ts"] >= last[msg["user_id"]]["event_ts"]
        last[msg["user_id"]] = msg
    assert last and all(len(p) == 1 for p in partitions.values())
    prefix, model = run["cfg"]["redis"]["prefix"], run["cfg"]["model"]
    deeper = 0
    for user, msg in last.items():  # the topic carries the first top_n items of the stored_n that Redis holds
        stored = json.loads(redis_conn.get(f"{prefix}recs:{user}"))
        assert {**stored, "items": stored["items"][: model["top_n"]]} == msg
        assert len(msg["items"]) <= model["top_n"] and len(stored["items"]) <= model["stored_n"]
        deeper += len(stored["items"]) > model["top_n"]
    assert deeper == len(last)  # candidates and the trending items fill every stored list past the message's
