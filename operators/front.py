"""The front of the job, on the JVM: raw events -> one batch of raw records per user shard per window.

A Python operator pays a fixed price for every record that crosses into it and for every state access
(parse, ``key_by`` and a keyed buffer per event cost more than the models' own work on MovieLens).
:func:`event_batches` therefore does the per-event part on the JVM, in
``jvm/src/flinkrec/EventFront.java`` (``var/jars/flinkrec/flinkrec-jvm.jar``, built by ``make jars``):

1. read each source record's ``user_id`` and ``ts`` (leniently, with Jackson; nothing is rejected here);
2. Flink timestamps and bounded-out-of-orderness watermarks from ``ts`` (records without a readable ``ts``
   in ``limits.min_ts_ms..max_ts_ms`` carry none and do not move the watermark);
3. key by user shard: ``crc32(user_id) % shards``, the same function as :func:`udfs.shard.shard_of`, with
   integer ids as their decimal string (so ``"user_id": 196`` and ``"196"`` are one user, as in
   :mod:`udfs.events`); a record without a readable user id goes to the shard of its own crc32;
4. buffer each shard's records in Flink (checkpointed) list state until the end of its processing-time
   window of ``window_ms``, then emit them as one record ``Row(payloads, watermark at each one's
   arrival, origins)``; an event-time timer at the end of time flushes the last buffer of a bounded input.

The Python user operator (:class:`operators.windows.UserWindow`) then validates each record fully
(:func:`udfs.dlq.parse_source_event`: invalid ones go to the dead-letter output with the reason and the record),
applies the late-event policy with the recorded watermark and updates the models: one Python call per shard and
window instead of three per event (the cost of both paths: docs/bench.md, tuning knobs).
"""

from __future__ import annotations

import logging
from typing import Any

from pyflink.common import Types, WatermarkStrategy
from pyflink.datastream import DataStream
from pyflink.datastream.data_stream import KeyedStream

from udfs.events import Limits

logger = logging.getLogger(__name__)

#: The value the user operator receives per shard and window: (payloads, watermark at each one's arrival, origins),
#: payload and origin as :mod:`udfs.dlq` defines them.
EVENT_BATCH = Types.ROW([Types.BASIC_ARRAY(Types.STRING()), Types.PRIMITIVE_ARRAY(Types.LONG()),
                         Types.BASIC_ARRAY(Types.STRING())])

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
                  source_watermarks: bool = False) -> KeyedStream:
    """Source records (or plain strings: :func:`source_records`) -> a stream keyed by user shard whose values are
    :data:`EVENT_BATCH` rows.

    The per-record part (steps 1-2) runs at ``parallelism`` (default: the job's), chained to the source, which
    keeps each source partition's order: a user's events reach the buffer, and the user state, in order; its
    output, the one hop every event takes, waits at most ``event_buffer_timeout_ms`` before a partly filled
    network buffer is sent (-1: only full buffers; below -1, the default: the environment's timeout). The
    arguments come from the validated config (``config.load_config``); the Java constructors reject a shard count
    or window below 1 as well.

    ``source_watermarks``: the source already assigns event time and watermarks (:func:`source_watermarks`, per
    partition); otherwise they are assigned here, one watermark per subtask.
    """
    j_keyed = jvm_class("EventFront").build(source_records(events)._j_data_stream, shards, max_out_of_orderness_ms,
                                            limits.min_ts_ms, limits.max_ts_ms, limits.max_message_bytes, window_ms,
                                            parallelism or 0, event_buffer_timeout_ms, source_watermarks)
    return KeyedStream(j_keyed, EVENT_BATCH, events)


def source_watermarks(max_out_of_orderness_ms: int, limits: Limits, idle_partition_ms: int = 0) -> WatermarkStrategy:
    """The watermark strategy of a Kafka source of events: event time from each record's ``ts`` (read on the JVM as
    the front reads it), watermarks per partition. Per partition, because a subtask that reads one partition
    ahead of another would otherwise make the other's events late; downstream state applied in event-time
    order (operators.windows, rater fan-out) relies on no event arriving behind the watermark. A partition without
    records for ``idle_partition_ms`` (0: never) stops holding the watermark back (its later events may be late)."""
    return WatermarkStrategy(jvm_class("EventFront").sourceWatermarks(max_out_of_orderness_ms, limits.min_ts_ms,
                                                                      limits.max_ts_ms, idle_partition_ms))
