"""operators.front.event_batches (the JVM front): validation, user shard, event time and one columnar batch per
shard and window; its watermarks (operators.front.source_watermarks, catalog_watermarks).

Each test runs the front alone in the mini-cluster, with a Python keyed operator that records what it receives:
(the key, the batch as a FrontBatch of lists); either with the front's own watermarks or with the source's
(``at_source``: the records checked by the source's timestamp assigner, as the job's Kafka source does). The tests of
watermarks on a quiet stream read real Kafka topics, which let the input pause while the job runs.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from pyflink.common import Types, WatermarkStrategy
from pyflink.datastream import KeyedProcessFunction

from config import load_config
from ingest import kafka_admin
from jobs.flink_env import make_env
from operators.front import (
    EVENT_BATCH,
    FrontBatch,
    catalog_watermarks,
    event_batches,
    event_check,
    jvm_class,
    source_records,
    source_watermarks,
)
from serving.testing import drop_topics, produce_values
from udfs.dlq import parse_source_event, payload_bytes
from udfs.events import EVENT_TYPES, InvalidEvent, Limits
from udfs.shard import shard_of

pytestmark = pytest.mark.flink

SHARDS = 4
NO_WATERMARK = -(2**63)
OOO_MS = 1000


def recorder() -> KeyedProcessFunction:
    """The Python keyed operator after the front: yields (shard, the batch as a FrontBatch of lists)."""
    # defined here, not at module level: the Python workers cannot import this test module, so these are
    # pickled by value
    class Record(KeyedProcessFunction):
        def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
            batch = FrontBatch.unpack(value)
            yield ctx.get_current_key(), FrontBatch._make(c if isinstance(c, bytes) else list(c) for c in batch)

    return Record()


def run_front(raws: list[str], parallelism: int, pace_s: float = 0.0,
              at_source: bool = False) -> list[tuple[int, FrontBatch]]:
    def slow(raw: str) -> str:
        """Paces the input (a collection is read in milliseconds), so periodic watermarks fall between records."""
        time.sleep(pace_s)
        return raw

    env = make_env(load_config(overrides=["job.checkpoint_interval_ms=0"], env={}), kafka=False,
                   parallelism=parallelism)
    source = env.from_collection(raws, type_info=Types.STRING()).set_parallelism(1)
    if pace_s:
        source = source.map(slow, output_type=Types.STRING()).set_parallelism(1)
    if at_source:  # as a Kafka source with source_watermarks: event time assigned before the front
        source = source_records(source).assign_timestamps_and_watermarks(source_watermarks(OOO_MS, Limits()))
    batches = event_batches(source, shards=SHARDS, window_ms=200, max_out_of_orderness_ms=OOO_MS, limits=Limits(),
                            parallelism=1, source_watermarks=at_source)
    out = batches.process(recorder(), output_type=Types.PICKLED_BYTE_ARRAY())
    with out.execute_and_collect() as records:
        return list(records)


def received(got: list[tuple[int, FrontBatch]]) -> list[tuple[int, str | None, int]]:
    """(shard, what identifies the record: a valid event's id, a refused record's payload, watermark at arrival)
    of every record received, valid events first in each batch (as the batch orders them)."""
    out = [(k, e, m) for k, b in got for e, m in zip(b.event_id, b.watermark, strict=True)]
    return out + [(k, p, NO_WATERMARK) for k, b in got for p in b.reject_payload]


def identity(raw: str) -> str:
    try:
        return parse_source_event(raw).event_id
    except InvalidEvent:
        return raw


def event(i: int, user: Any, ts: Any = None) -> str:
    return json.dumps({"event_id": f"e{i}", "user_id": user, "item_id": f"i{i % 7}", "type": "view",
                       "ts": 1_000_000 + i if ts is None else ts})


def expected_shard(raw: str) -> int:
    """The user's shard as the Python side names users (integer ids as their decimal string), else the record's."""
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    user = obj.get("user_id") if isinstance(obj, dict) else None
    if isinstance(user, bool) or not isinstance(user, (str, int)) or (isinstance(user, int) and user < 0):
        return zlib.crc32(raw.encode()) % SHARDS
    return shard_of(str(user), SHARDS)


RAWS = [event(i, f"u{i % 9}") for i in range(60)] + [
    event(100, 196), event(101, "196"),  # one user, written two ways: one shard
    "not json", "[1, 2]", event(102, True), event(103, -5), event(104, "u1", ts="soon"), "",
]


@pytest.mark.parametrize(("parallelism", "at_source"), [(1, False), (2, False), (1, True)])
def test_every_record_reaches_its_users_shard_once_in_order(parallelism: int, at_source: bool) -> None:
    got = run_front(RAWS, parallelism, at_source=at_source)
    assert Counter(r for _, r, _ in received(got)) == Counter(identity(r) for r in RAWS)  # nothing lost or twice
    by_identity = {identity(r): r for r in RAWS}
    for key, ident, _ in received(got):
        assert ident is not None and expected_shard(by_identity[ident]) == key, ident
    assert expected_shard(event(100, 196)) == expected_shard(event(101, "196"))
    for key in {k for k, _ in got}:  # each shard's valid events, and its refused records, in input order
        events = [e for k, b in got if k == key for e in b.event_id]
        refused = [p for k, b in got if k == key for p in b.reject_payload]
        assert events == [identity(r) for r in RAWS if expected_shard(r) == key and identity(r) != r]
        assert refused == [r for r in RAWS if expected_shard(r) == key and identity(r) == r]


@pytest.mark.parametrize("at_source", [False, True])
def test_columns_are_the_validated_events_and_refusals_carry_reason_and_message(at_source: bool) -> None:
    """The batch holds what udfs.dlq.parse_source_event makes of each record: the normalised fields of a valid
    event (integer ids as their decimal string, the type's weight when there is no value), the reason and the
    message of a refused one, and the CRC-32 of the event id as key."""
    got = run_front(RAWS, 1, at_source=at_source)
    events = {e.event_id: (e, k, m) for _, b in got
              for e, k, m in zip(b.events(), b.key, b.watermark, strict=True)}
    assert events["e100"][0] == parse_source_event(event(100, 196)) and events["e100"][0].user_id == "196"
    for raw in RAWS:
        try:
            expected = parse_source_event(raw)
        except InvalidEvent as exc:
            assert (raw, exc.reason, str(exc)) in {
                (p, r, m) for _, b in got for p, _, r, m in b.rejects()}
        else:
            ev, key, _ = events[expected.event_id]
            assert ev == expected and EVENT_TYPES[list(EVENT_TYPES).index(ev.type)] == expected.type
            assert key == zlib.crc32(expected.event_id.encode())
    # on time (no watermark yet): no record is kept for the dead-letter output
    assert all(p is None for _, b in got for p in b.late_payload)


def test_the_python_record_names_the_jvm_batch_fields() -> None:
    make_env(load_config(overrides=["job.checkpoint_interval_ms=0"], env={}), kafka=False, parallelism=1)
    java = jvm_class("EventFront").BATCH
    assert list(java.getFieldNames()) == list(FrontBatch._fields) == list(EVENT_BATCH.get_field_names())
    assert java.equals(EVENT_BATCH.get_java_type_info())


@pytest.mark.parametrize("at_source", [False, True])
def test_watermarks_come_from_valid_timestamps_only(at_source: bool) -> None:
    """A ts outside limits.min_ts_ms..max_ts_ms (or not a number) must not move the watermark: else every later
    event would look late. The recorded watermarks trail the largest earlier ts by the out-of-orderness bound."""
    far = Limits().max_ts_ms + 1
    raws = [event(0, "u0", ts=far), event(1, "u1", ts="x")] + [event(i, f"u{i % 5}") for i in range(2, 400)]
    got = run_front(raws, 1, pace_s=0.004, at_source=at_source)  # ~1.6 s of input: several periodic watermarks
    marks = {ident: m for _, ident, m in received(got)}
    assert set(marks) == {identity(r) for r in raws}
    advanced = [m for m in marks.values() if m != NO_WATERMARK]
    assert advanced, "no watermark reached the buffer: the test input is too fast to check anything"
    highest = 1_000_000
    for raw in raws[2:]:
        # Flink's bounded-out-of-orderness watermark: the largest timestamp seen - bound - 1
        assert marks[identity(raw)] <= highest - OOO_MS - 1, (raw, marks[identity(raw)])
        highest = max(highest, json.loads(raw)["ts"])


@pytest.mark.parametrize("at_source", [False, True])
def test_an_event_behind_the_watermark_keeps_its_record(at_source: bool) -> None:
    """Only an event behind the watermark at its arrival may go to the dead-letter output (late_event), with its
    source record: the batch carries the payload and origin of exactly those."""
    raws = [event(i, f"u{i % 5}", ts=1_000_000 + 100 * i) for i in range(300)]
    raws.append(event(999, "u1", ts=1_000_000))  # ~30 s behind the last: far behind the watermark by then
    got = run_front(raws, 1, pace_s=0.004, at_source=at_source)
    kept = {e: (p, o, t, m) for _, b in got
            for e, p, o, t, m in zip(b.event_id, b.late_payload, b.late_origin, b.ts, b.watermark, strict=True)}
    assert set(kept) == {identity(r) for r in raws}
    late = {e for e, (_, _, t, m) in kept.items() if t < m}
    assert "e999" in late
    by_id = {identity(r): r for r in raws}
    for e, (p, o, _, _) in kept.items():
        assert (p, o) == ((by_id[e], "") if e in late else (None, None)), e


def test_texts_that_python_would_not_receive_as_they_are_arrive_as_base64() -> None:
    """Strings starting with U+FEFF or U+FFFE lose (or byte-swap) their first character on the way from the JVM to
    Python; the front's rows carry them (and strings starting with the marker U+0000) as Base64 of their UTF-8."""
    texts = ["\ufeff{}", "\ufffex", "\x00abc", "x\ufeffy", "\U0001f600", "plain"]
    got = {p for _, b in run_front(texts, 1) for p in b.reject_payload if p is not None}
    assert {payload_bytes(r) for r in got} == {t.encode() for t in texts}
    assert {r for r in got if r[:1] != "\x00"} == {"x\ufeffy", "\U0001f600", "plain"}


def test_the_front_takes_the_check_the_sources_timestamp_assigner_made() -> None:
    """With source watermarks each record is checked once, by the source's timestamp assigner: the front chained
    after it (the same thread, the same payload string) takes that check and gets what its own would give; a
    record the assigner did not see (or saw under other rules) is checked again, and counted."""
    from py4j.java_gateway import get_field
    from pyflink.java_gateway import get_gateway

    make_env(load_config(overrides=["job.checkpoint_interval_ms=0"], env={}), kafka=False, parallelism=1)
    front, row_class = jvm_class("EventFront"), get_gateway().jvm.org.apache.flink.types.Row
    assigner = front.EventTimes(event_check(Limits()))
    taking = front.ShardEvents(SHARDS, event_check(Limits()), True)  # equal rules, another object (as in a job)
    checking = front.ShardEvents(SHARDS, event_check(Limits()), False)
    rows = jvm_class("SourceRows").FromString()
    fields = ("shard", "ts", "eventId", "userId", "itemId", "type", "weight", "payload", "origin", "reason", "message")
    for raw in RAWS:
        row = rows.map(raw)
        ts = assigner.extractTimestamp(row, NO_WATERMARK)
        took = taking.map(row_class.copy(row))  # a chained operator's copy of the row: the same strings
        fresh = checking.map(row_class.copy(row))
        assert [get_field(took, f) for f in fields] == [get_field(fresh, f) for f in fields], raw
        assert ts == get_field(fresh, "ts"), raw
    assert taking.rechecked() == 0
    row = rows.map(RAWS[0])
    taking.map(row)  # the assigner did not see it
    assert taking.rechecked() == 1
    assigner.extractTimestamp(rows.map(RAWS[0]), NO_WATERMARK)  # an equal payload, another string
    taking.map(row)
    assert taking.rechecked() == 2
    front.EventTimes(event_check(Limits(max_id_length=5))).extractTimestamp(row, NO_WATERMARK)
    taking.map(row)  # other rules
    assert taking.rechecked() == 3
    assert checking.rechecked() == 0  # without source watermarks every record is checked in the front: not counted


# --- watermarks on a quiet stream and the catalog's (real Kafka topics, read unbounded) ----------------------------

QUIET_MS = 4000  # a pause in the input: longer than a settle (SETTLE_MS + 2 watermark intervals) and a window
SETTLE_MS = 500


def kafka_rows(env: Any, bootstrap: str, topic: str, strategy: Any) -> Any:
    """An unbounded Kafka source of SOURCE_RECORD rows (flinkrec.SourceRecords, as the job's) from the start."""
    from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource

    builder = (KafkaSource.builder().set_bootstrap_servers(bootstrap).set_topics(topic)
               .set_group_id(f"{topic}-group").set_starting_offsets(KafkaOffsetsInitializer.earliest()))
    builder._j_builder.setDeserializer(jvm_class("SourceRecords")())
    return env.from_source(builder.build(), strategy, topic)


def kafka_env(bootstrap: str) -> Any:
    return make_env(load_config(overrides=["job.checkpoint_interval_ms=0", f"kafka.bootstrap={bootstrap}"], env={}),
                    parallelism=1)


def produce(bootstrap: str, topic: str, raws: list[str]) -> None:
    assert produce_values(bootstrap, topic, [r.encode() for r in raws]) == len(raws)


def read_until(records: Any, done: Any) -> list[Any]:
    """What the job yields, until ``done(everything so far)``."""
    got: list[Any] = []
    while not done(got):
        got.append(next(records))
    return got


def quiet_stream(bootstrap: str, topic: str, at_source: bool, settle_ms: int) -> dict[str, tuple[int, int]]:
    """Events of one partition, then a pause, then two more: one at the latest earlier event time (so that the
    watermark without a settle stays where it was), one before it. Returns each event's (ts, watermark when it
    reached the front's buffer)."""
    first = [event(i, f"u{i % 5}", ts=1_000_000 + 10 * i) for i in range(50)]
    after = [event(50, "u0", ts=1_000_000 + 10 * 49), event(51, "u1", ts=1_000_000 + 10 * 49 - 5)]
    kafka_admin.ensure_topics(bootstrap, {topic: {}}, partitions=1)
    try:
        produce(bootstrap, topic, first)
        env = kafka_env(bootstrap)
        if at_source:
            events = kafka_rows(env, bootstrap, topic, source_watermarks(OOO_MS, Limits(), settle_ms=settle_ms))
        else:
            events = kafka_rows(env, bootstrap, topic, WatermarkStrategy.no_watermarks())
        batches = event_batches(events, shards=SHARDS, window_ms=200, max_out_of_orderness_ms=OOO_MS,
                                limits=Limits(), parallelism=1, source_watermarks=at_source, settle_ms=settle_ms)
        out = batches.process(recorder(), output_type=Types.PICKLED_BYTE_ARRAY())

        def seen(got: list[tuple[int, FrontBatch]]) -> set[str]:
            return {e for _, b in got for e in b.event_id}

        with out.execute_and_collect() as records:
            got = read_until(records, lambda g: len(seen(g)) == len(first))
            time.sleep(QUIET_MS / 1000)  # the quiet stream: periodic watermarks, and a settle if any
            produce(bootstrap, topic, after)
            got += read_until(records, lambda g: len(seen(got + g)) == len(first) + len(after))
    finally:
        drop_topics(bootstrap, [topic])
    return {e: (t, m) for _, b in got for e, t, m in zip(b.event_id, b.ts, b.watermark, strict=True)}


@pytest.mark.parametrize("at_source", [False, True])
@pytest.mark.parametrize("settle_ms", [0, SETTLE_MS])
def test_a_quiet_streams_watermark_settles_at_its_latest_event_time(kafka_bootstrap: str, unique: str,
                                                                     at_source: bool, settle_ms: int) -> None:
    """After settle_ms without records the watermark reaches the largest event time seen, so the last events of a
    quiet stream are passed; a later event before it is then late. Without settling (0) the watermark stays
    max_out_of_orderness_ms + 1 behind, and the same event is on time."""
    marks = quiet_stream(kafka_bootstrap, f"test-front-settle-{unique}", at_source, settle_ms)
    latest = 1_000_000 + 10 * 49
    expected = latest if settle_ms else latest - OOO_MS - 1
    assert marks["e50"] == (latest, expected)  # on time either way
    assert marks["e51"] == (latest - 5, expected)
    assert (marks["e51"][0] < marks["e51"][1]) == bool(settle_ms)  # late only after a settle
    assert all(m <= latest for _, m in marks.values())  # never past the latest event time


def union_timers(bootstrap: str, unique: str, catalog_strategy: Callable[[], Any]) -> list[tuple[str, int, int]]:
    """Events (source watermarks) and an empty catalog topic (``catalog_strategy()``) into one keyed operator that sets
    an event-time timer at each event's ts: (what, ts, watermark) of each element and each timer that fired, until
    a last event produced after a pause has arrived."""
    class Timers(KeyedProcessFunction):
        def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
            ts = json.loads(value[0])["ts"]
            ctx.timer_service().register_event_time_timer(ts)
            yield "element", ts, ctx.timer_service().current_watermark()

        def on_timer(self, timestamp, ctx):  # type: ignore[no-untyped-def]
            yield "timer", timestamp, ctx.timer_service().current_watermark()

    events_topic, catalog_topic = f"test-front-events-{unique}", f"test-front-catalog-{unique}"
    kafka_admin.ensure_topics(bootstrap, {events_topic: {}, catalog_topic: {}}, partitions=1)
    try:
        produce(bootstrap, events_topic, [event(i, "u0", ts=1_000_000 + 100 * i) for i in range(20)])
        env = kafka_env(bootstrap)
        events = kafka_rows(env, bootstrap, events_topic, source_watermarks(OOO_MS, Limits()))
        catalog = kafka_rows(env, bootstrap, catalog_topic, catalog_strategy())
        out = (events.union(catalog).key_by(lambda r: 0, key_type=Types.INT())
               .process(Timers(), output_type=Types.PICKLED_BYTE_ARRAY()))
        with out.execute_and_collect() as records:
            got = read_until(records, lambda g: sum(w == "element" for w, _, _ in g) == 20)
            time.sleep(QUIET_MS / 1000)  # periodic watermarks of both sources
            produce(bootstrap, events_topic, [event(20, "u0", ts=1_000_000 + 100 * 19 + 1)])
            got += read_until(records, lambda g: any(w == "element" and t > 1_001_900 for w, t, _ in g))
    finally:
        drop_topics(bootstrap, [events_topic, catalog_topic])
    return got


def test_the_catalogs_watermarks_do_not_hold_back_the_events(kafka_bootstrap: str, unique: str) -> None:
    """A union of the events and a catalog with catalog_watermarks() fires the event-time timers as the events'
    watermark passes them; with no watermarks the catalog holds the union at Long.MIN_VALUE and none fires."""
    passed = 1_000_000 + 100 * 19 - OOO_MS - 1  # the events' watermark after the pause
    got = union_timers(kafka_bootstrap, unique, catalog_watermarks)
    assert got[-1] == ("element", 1_001_901, passed)
    fired = [(t, m) for w, t, m in got if w == "timer"]
    assert sorted(t for t, _ in fired) == [1_000_000 + 100 * i for i in range(20) if 1_000_000 + 100 * i <= passed]
    assert all(t <= m <= passed for t, m in fired)  # fired by the events' watermark, not the catalog's

    got = union_timers(kafka_bootstrap, unique + "-none", WatermarkStrategy.no_watermarks)
    assert got[-1] == ("element", 1_001_901, NO_WATERMARK)
    assert [w for w, _, _ in got if w == "timer"] == []
