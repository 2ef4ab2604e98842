"""Event time: timestamps and watermarks from the event's ``ts``, and events behind the watermark.

:func:`assign_event_time` attaches Flink timestamps and bounded-out-of-orderness watermarks to the
parser's ``(event, ts)`` output with Flink's Java operators only. PyFlink's own
``assign_timestamps_and_watermarks`` with a Python ``TimestampAssigner`` adds a Python operator per
event and runs it at the job's default parallelism behind a REBALANCE edge, which reorders the events
of a lower-parallelism parser (a user's events must reach the user state in order).

:class:`LateCheck` is the late-event policy, applied where the watermark is known per event (the user
operator, :class:`operators.windows.UserWindow`): events behind the watermark are counted (metric
``late``) and then applied (``apply``: the models are order-insensitive sums, so state stays exact)
or sent to the dead-letter output with reason ``late_event`` (``dlq``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pyflink.common import Duration, TypeInformation, WatermarkStrategy
from pyflink.datastream import DataStream

from udfs.events import Event, dlq_record, event_to_json

logger = logging.getLogger(__name__)

LATE_POLICIES = ("apply", "dlq")


def assign_event_time(timestamped: DataStream, value_type: TypeInformation, max_out_of_orderness_ms: int,
                      parallelism: int | None = None) -> DataStream:
    """``(value, ts)`` tuples -> values with Flink timestamp ``ts`` and watermarks (two Java operators)."""
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    eventtime = jvm.org.apache.flink.streaming.api.functions.python.eventtime
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(max_out_of_orderness_ms))
    j_timed = timestamped._j_data_stream.assignTimestampsAndWatermarks(
        strategy._j_watermark_strategy.withTimestampAssigner(eventtime.CustomTimestampAssigner()))
    j_timed.name("event-time")
    j_values = j_timed.map(eventtime.RemoveTimestampMapFunction(), value_type.get_java_type_info())
    j_values.name("remove-timestamp")
    if parallelism:
        j_timed.setParallelism(parallelism)
        j_values.setParallelism(parallelism)
    return DataStream(j_values)


class LateCheck:
    """The late-event policy: ``apply`` (count, keep) or ``dlq`` (count, reject with reason ``late_event``)."""

    def __init__(self, policy: str) -> None:
        if policy not in LATE_POLICIES:
            raise ValueError(f"late event policy {policy!r} must be apply or dlq")
        self.policy = policy
        self._late: Any = None

    def open(self, metrics_group: Any) -> None:
        self._late = metrics_group.counter("late")

    def reject(self, event: Event, watermark: int) -> str | None:
        """None if the event is to be applied; else its dead-letter record (JSON)."""
        if event.ts >= watermark:
            return None
        self._late.inc()
        if self.policy == "apply":
            return None
        message = f"event {event.event_id} at ts {event.ts} is {watermark - event.ts} ms behind the watermark"
        return dlq_record(event_to_json(event), "late_event", message, int(time.time() * 1000))
