"""Event time: timestamps from the event's ``ts`` and the handling of events behind the watermark."""

from __future__ import annotations

import logging
import time
from typing import Any

from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import ProcessFunction, RuntimeContext

from operators.parse import DLQ_TAG
from udfs.events import dlq_record, event_to_json

logger = logging.getLogger(__name__)


class EventTime(TimestampAssigner):
    """The Flink timestamp of a parsed event is its ``ts`` (epoch ms)."""

    def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
        return int(value.ts)


class LateEvents(ProcessFunction):
    """Counts events whose time is behind the current watermark (``late`` metric).

    ``policy="apply"`` passes them on (the models are order-insensitive sums, so state stays correct);
    ``policy="dlq"`` routes them to the dead-letter output with reason ``late_event`` instead.
    """

    def __init__(self, policy: str) -> None:
        if policy not in ("apply", "dlq"):
            raise ValueError(f"late event policy {policy!r} must be apply or dlq")
        self.policy = policy

    def open(self, runtime_context: RuntimeContext) -> None:
        self._late = runtime_context.get_metrics_group().counter("late")

    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        watermark = ctx.timer_service().current_watermark()
        if value.ts >= watermark:
            yield value
            return
        self._late.inc()
        if self.policy == "apply":
            yield value
        else:
            message = f"event {value.event_id} at ts {value.ts} is {watermark - value.ts} ms behind the watermark"
            yield DLQ_TAG, dlq_record(event_to_json(value), "late_event", message, int(time.time() * 1000))
