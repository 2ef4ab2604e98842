"""The front of the job, on the JVM: raw events -> one columnar batch of checked events per user shard per window.

A Python operator pays a fixed price for every record that crosses into it, for every state access and for every
event it decodes and validates (``json.loads`` and the schema's rules cost more per event than the models' own
work on MovieLens). :func:`event_batches` therefore does the per-event part on the JVM, in
``jvm/src/flinkrec/EventFront.java`` (``var/jars/flinkrec/flinkrec-jvm.jar``, built by ``make jars``):

1. parse and validate each source record (``flinkrec.EventCheck``: exactly the rules of :mod:`udfs.events` and
   :func:`udfs.dlq.parse_source_event`, the same decision, reason code, message and normalised fields, integer ids
   as their decimal string; ``tests/test_event_check.py`` holds the two to each other);
2. Flink timestamps and bounded-out-of-orderness watermarks from ``ts`` (records without a valid ``ts``
   in ``limits.min_ts_ms..max_ts_ms`` carry none and do not move the watermark), which settle at the largest
   ``ts`` once the input has been quiet for ``settle_ms`` (``flinkrec.SettlingWatermarks``); on a Kafka source,
   per partition, in the source (:func:`source_watermarks`: the record is checked there, once);
3. key by user shard: ``crc32(user_id) % shards``, the same function as :func:`udfs.shard.shard_of`; a refused
   record goes to the shard of the user id it names, if any, else of its own crc32;
4. buffer each shard's records in Flink (checkpointed) list state until the end of its processing-time
   window of ``window_ms``, then emit them as one :class:`FrontBatch`; an event-time timer at the end of time
   flushes the last buffer of a bounded input.

The intake (:class:`operators.intake.Intake`) then formats a dead-letter record for each refused one
(:class:`operators.parse.Rejects`, reason and message as the front gives them), applies the late-event policy to the
columns (:class:`operators.late.LateCheck`) and hands the events on to the model as columns: one Python call per
shard and window, and no per-event parsing (the cost of both paths: docs/bench.md, tuning knobs).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

from pyflink.common import Types, WatermarkStrategy
from pyflink.datastream import DataStream
from pyflink.datastream.data_stream import KeyedStream

from udfs.events import EVENT_TYPES, Event, Limits

logger = logging.getLogger(__name__)


class Reject(NamedTuple):
    """A source record the front refused: as the source delivered it (:mod:`udfs.dlq`), why, and the message."""

    payload: str | None
    origin: str | None
    reason: str
    message: str


class FrontBatch(NamedTuple):
    """One shard's window from the front, as columns.

    The valid events, in arrival order, one entry per event in each of the first ten columns (the fields of
    :class:`udfs.events.Event`, validated and normalised; ``type`` as codes, indexes into ``EVENT_TYPES``;
    ``key`` the CRC-32 of the event id, as ``core.v2.model.Batch.key``), the watermark when each reached the
    front's buffer, and the payload and origin of the events behind it (None for the others: only a late event
    may go to the dead-letter output, with its record). Then the refused records, one entry each in the last four.
    """

    event_id: Sequence[str]
    user_id: Sequence[str]
    item_id: Sequence[str]
    type: bytes
    weight: Sequence[float]
    ts: Sequence[int]
    key: Sequence[int]
    watermark: Sequence[int]
    late_payload: Sequence[str | None]
    late_origin: Sequence[str | None]
    reject_payload: Sequence[str | None]
    reject_origin: Sequence[str | None]
    reject_reason: Sequence[str]
    reject_message: Sequence[str]

    @classmethod
    def unpack(cls, value: Any) -> FrontBatch:
        """The batch of an :data:`EVENT_BATCH` row (the one place that reads it by position)."""
        return cls._make(value)

    def n_records(self) -> int:
        """The number of records: valid events and refused ones."""
        return len(self.ts) + len(self.reject_reason)

    def rejects(self) -> list[Reject]:
        return list(map(Reject._make, zip(self.reject_payload, self.reject_origin, self.reject_reason,
                                          self.reject_message, strict=True)))

    def events(self, drop: Collection[int] = ()) -> list[Event]:
        """The valid events as :class:`udfs.events.Event` s, in arrival order, without the ones at ``drop``."""
        types = [EVENT_TYPES[code] for code in self.type]
        events = list(map(Event._make, zip(self.event_id, self.user_id, self.item_id, types, self.weight, self.ts,
                                           strict=True)))
        return [e for i, e in enumerate(events) if i not in drop] if drop else events

    def model_batch(self, drop: Collection[int] = ()) -> Any:
        """The valid events as a ``core.v2.model.Batch`` (numpy columns), without the ones at ``drop``."""
        import numpy as np

        from core.v2.model import Batch

        keep = np.ones(len(self.ts), dtype=bool)
        keep[list(drop)] = False
        return Batch(np.array(self.event_id, dtype=np.str_)[keep], np.array(self.user_id, dtype=np.str_)[keep],
                     np.array(self.item_id, dtype=np.str_)[keep], np.frombuffer(self.type, dtype=np.int8)[keep],
                     np.array(self.weight, dtype=np.float64)[keep], np.array(self.ts, dtype=np.int64)[keep],
                     np.array(self.key, dtype=np.int64)[keep])


#: The value the user operator receives per shard and window: a :class:`FrontBatch` (``flinkrec.EventFront.BATCH``).
EVENT_BATCH = Types.ROW_NAMED(
    list(FrontBatch._fields),
    [Types.BASIC_ARRAY(Types.STRING()), Types.BASIC_ARRAY(Types.STRING()), Types.BASIC_ARRAY(Types.STRING()),
     Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.PRIMITIVE_ARRAY(Types.DOUBLE()), Types.PRIMITIVE_ARRAY(Types.LONG()),
     Types.PRIMITIVE_ARRAY(Types.LONG()), Types.PRIMITIVE_ARRAY(Types.LONG()), Types.BASIC_ARRAY(Types.STRING()),
     Types.BASIC_ARRAY(Types.STRING()), Types.BASIC_ARRAY(Types.STRING()), Types.BASIC_ARRAY(Types.STRING()),
     Types.BASIC_ARRAY(Types.STRING()), Types.BASIC_ARRAY(Types.STRING())])


#: A source record as ``flinkrec.SourceRecords`` delivers it: Row(payload, origin).
SOURCE_RECORD = Types.ROW([Types.STRING(), Types.STRING()])


def jvm_class(name: str) -> Any:
    from py4j.java_gateway import JavaClass
    from pyflink.java_gateway import get_gateway

    cls = get_gateway().jvm.flinkrec
    for part in name.split("."):
        cls = getattr(cls, part)
    if not isinstance(cls, JavaClass):  # py4j answers an unknown class with a JavaPackage
        raise RuntimeError(f"flinkrec.{name} is not on the JVM's classpath: the environment must load "
                           "var/jars/flinkrec/flinkrec-jvm.jar (jobs.flink_env.make_env does; `make jars` builds it)")
    return cls


def source_records(stream: DataStream) -> DataStream:
    """A stream of :data:`SOURCE_RECORD` rows: a Kafka source's (``flinkrec.SourceRecords``) as it is, a stream of
    plain strings (tests, collections) converted with an empty origin."""
    from pyflink.java_gateway import get_gateway

    strings = get_gateway().jvm.org.apache.flink.api.common.typeinfo.Types.STRING
    if not strings.equals(stream._j_data_stream.getType()):
        return stream
    return DataStream(jvm_class("SourceRows").fromStrings(stream._j_data_stream))


def event_batches(events: DataStream, *, shards: int, window_ms: int, max_out_of_orderness_ms: int,
                  limits: Limits, parallelism: int | None = None, event_buffer_timeout_ms: int = -2,
                  source_watermarks: bool = False, settle_ms: int = 0) -> KeyedStream:
    """Source records (or plain strings: :func:`source_records`) -> a stream keyed by user shard whose values are
    :data:`EVENT_BATCH` rows.

    The per-record part (steps 1-2) runs at ``parallelism`` (default: the job's), chained to the source, which
    keeps each source partition's order: a user's events reach the buffer, and the user state, in order; its
    output, the one hop every event takes, waits at most ``event_buffer_timeout_ms`` before a partly filled
    network buffer is sent (-1: only full buffers; below -1, the default: the environment's timeout). The
    arguments come from the validated config (``config.load_config``); the Java constructors reject a shard count
    or window below 1 as well.

    ``source_watermarks``: the source already assigns event time and watermarks (:func:`source_watermarks`, per
    partition); otherwise they are assigned here, one watermark per subtask, settling as :func:`source_watermarks`
    describes after ``settle_ms`` (0: never; ignored with ``source_watermarks``, where the source's strategy has its
    own).
    """
    j_keyed = jvm_class("EventFront").build(source_records(events)._j_data_stream, shards, max_out_of_orderness_ms,
                                            event_check(limits), window_ms, parallelism or 0, event_buffer_timeout_ms,
                                            source_watermarks, settle_ms)
    return KeyedStream(j_keyed, EVENT_BATCH, events)


def source_watermarks(max_out_of_orderness_ms: int, limits: Limits, idle_partition_ms: int = 0,
                      settle_ms: int = 0) -> WatermarkStrategy:
    """The watermark strategy of a Kafka source of events: event time from each record's ``ts`` (the record is
    checked there, on the JVM, and the front chained to the source takes that check instead of making its own),
    watermarks per partition. Per partition, because a subtask that reads one partition ahead of another would
    otherwise make the other's events late; downstream state applied in event-time order (operators.model, rater
    fan-out) relies on no event arriving behind the watermark.

    A partition's watermark trails its largest ``ts`` by ``max_out_of_orderness_ms`` + 1 while records come; once
    it has had no record with a ``ts`` for ``settle_ms`` (0: never; plus up to one watermark interval), the
    watermark moves up to that largest ``ts``, so the last events of a quiet stream are passed too (a record then
    arriving with an earlier ``ts`` is late). A partition without any records for ``idle_partition_ms`` (0: never)
    stops holding the watermark back (its later events may be late). Watermarks never go back."""
    return WatermarkStrategy(jvm_class("EventFront").sourceWatermarks(max_out_of_orderness_ms, event_check(limits),
                                                                      idle_partition_ms, settle_ms))


def catalog_watermarks(targets: Mapping[int, int | None] | None = None, idle_ms: int = 0) -> WatermarkStrategy:
    """The watermark strategy of the catalog source (``flinkrec.CatalogWatermarks``): idle. Catalog records have no
    event time; an operator fed by the events and the catalog (union, two inputs) takes the least of its active
    inputs' watermarks, so the catalog neither holds the events' back nor moves it.

    ``targets`` (partition -> the offset after its last record at the job's start, None: empty;
    :func:`ingest.kafka_admin.last_offsets`): until a split has read its partition's last record it holds event time
    back, so the catalog in the topic is applied before the model learns any event (the combiner's training ranks
    with the catalog); a split without any record for ``idle_ms`` (0: never) stops holding it."""
    spec = ",".join(f"{p}={end}" for p, end in sorted((targets or {}).items()) if end is not None)
    return WatermarkStrategy(jvm_class("CatalogWatermarks").strategy(spec, idle_ms))


def event_check(limits: Limits) -> Any:
    """The JVM's validator (``flinkrec.EventCheck``) of the event schema with these limits."""
    weights = ",".join(f"{t}={w!r}" for t, w in limits.weights)
    return jvm_class("EventCheck")(float(limits.min_rating), float(limits.max_rating), weights, limits.max_id_length,
                                   limits.max_message_bytes, limits.min_ts_ms, limits.max_ts_ms)
