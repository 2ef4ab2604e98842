"""operators.front.event_batches (the JVM front): validation, user shard, event time and one columnar batch per
shard and window.

Each test runs the front alone in the mini-cluster, with a Python keyed operator that records what it receives:
(the key, the batch as a FrontBatch of lists).
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from typing import Any

import pytest
from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction

from config import load_config
from jobs.flink_env import make_env
from operators.front import EVENT_BATCH, FrontBatch, event_batches, jvm_class
from udfs.dlq import parse_source_event, payload_bytes
from udfs.events import EVENT_TYPES, InvalidEvent, Limits
from udfs.shard import shard_of

pytestmark = pytest.mark.flink

SHARDS = 4
NO_WATERMARK = -(2**63)
OOO_MS = 1000


def run_front(raws: list[str], parallelism: int, pace_s: float = 0.0) -> list[tuple[int, FrontBatch]]:
    # defined here, not at module level: the Python workers cannot import this test module, so these are
    # pickled by value
    class Record(KeyedProcessFunction):
        def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
            batch = FrontBatch.unpack(value)
            yield ctx.get_current_key(), FrontBatch._make(c if isinstance(c, bytes) else list(c) for c in batch)

    def slow(raw: str) -> str:
        """Paces the input (a collection is read in milliseconds), so periodic watermarks fall between records."""
        time.sleep(pace_s)
        return raw

    env = make_env(load_config(overrides=["job.checkpoint_interval_ms=0"], env={}), kafka=False,
                   parallelism=parallelism)
    source = env.from_collection(raws, type_info=Types.STRING()).set_parallelism(1)
    if pace_s:
        source = source.map(slow, output_type=Types.STRING()).set_parallelism(1)
    batches = event_batches(source, shards=SHARDS, window_ms=200, max_out_of_orderness_ms=OOO_MS, limits=Limits(),
                            parallelism=1)
    out = batches.process(Record(), output_type=Types.PICKLED_BYTE_ARRAY())
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


@pytest.mark.parametrize("parallelism", [1, 2])
def test_every_record_reaches_its_users_shard_once_in_order(parallelism: int) -> None:
    got = run_front(RAWS, parallelism)
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


def test_columns_are_the_validated_events_and_refusals_carry_reason_and_message() -> None:
    """The batch holds what udfs.dlq.parse_source_event makes of each record: the normalised fields of a valid
    event (integer ids as their decimal string, the type's weight when there is no value), the reason and the
    message of a refused one, and the CRC-32 of the event id as key."""
    got = run_front(RAWS, 1)
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


def test_watermarks_come_from_valid_timestamps_only() -> None:
    """A ts outside limits.min_ts_ms..max_ts_ms (or not a number) must not move the watermark: else every later
    event would look late. The recorded watermarks trail the largest earlier ts by the out-of-orderness bound."""
    far = Limits().max_ts_ms + 1
    raws = [event(0, "u0", ts=far), event(1, "u1", ts="x")] + [event(i, f"u{i % 5}") for i in range(2, 400)]
    got = run_front(raws, 1, pace_s=0.004)  # ~1.6 s of input: several periodic watermarks
    marks = {ident: m for _, ident, m in received(got)}
    assert set(marks) == {identity(r) for r in raws}
    advanced = [m for m in marks.values() if m != NO_WATERMARK]
    assert advanced, "no watermark reached the buffer: the test input is too fast to check anything"
    highest = 1_000_000
    for raw in raws[2:]:
        # Flink's bounded-out-of-orderness watermark: the largest timestamp seen - bound - 1
        assert marks[identity(raw)] <= highest - OOO_MS - 1, (raw, marks[identity(raw)])
        highest = max(highest, json.loads(raw)["ts"])


def test_an_event_behind_the_watermark_keeps_its_record() -> None:
    """Only an event behind the watermark at its arrival may go to the dead-letter output (late_event), with its
    source record: the batch carries the payload and origin of exactly those."""
    raws = [event(i, f"u{i % 5}", ts=1_000_000 + 100 * i) for i in range(300)]
    raws.append(event(999, "u1", ts=1_000_000))  # ~30 s behind the last: far behind the watermark by then
    got = run_front(raws, 1, pace_s=0.004)
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
