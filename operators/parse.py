"""Parse and validate raw Kafka records; rejected records go to a side output (the DLQ)."""

from __future__ import annotations

import logging
import time
from typing import Any

from pyflink.common import Types
from pyflink.datastream import OutputTag, ProcessFunction, RuntimeContext

from udfs.catalog import parse_catalog
from udfs.events import InvalidEvent, Limits, dlq_record, parse_event

logger = logging.getLogger(__name__)

DLQ_TAG = OutputTag("dlq", Types.STRING())


class ParseEvents(ProcessFunction):
    """str -> ``(Event, ts)`` (for :func:`operators.late.assign_event_time`); anything invalid -> ``DLQ_TAG``
    as JSON with the reason.

    Counts rejections per reason in the Flink metric group ``dlq`` (``dlq.<reason>``).
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._metrics: Any = None
        self._counters: dict[str, Any] = {}

    def open(self, runtime_context: RuntimeContext) -> None:
        self._metrics = runtime_context.get_metrics_group().add_group("dlq")
        self._counters = {}

    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        try:
            event = parse_event(value, self.limits)
        except InvalidEvent as exc:
            counter = self._counters.get(exc.reason)
            if counter is None and self._metrics is not None:
                counter = self._counters[exc.reason] = self._metrics.counter(exc.reason)
            if counter is not None:
                counter.inc()
            logger.debug("rejected record: %s", exc)
            yield DLQ_TAG, dlq_record(value, exc.reason, str(exc), int(time.time() * 1000))
            return
        yield event, event.ts


class ParseCatalog(ProcessFunction):
    """Catalog message (``items`` topic) -> ``("catalog", [record])``; invalid ones -> ``DLQ_TAG``
    (reason ``bad_catalog_record``, metric ``dlq.bad_catalog_record``)."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self._rejected = runtime_context.get_metrics_group().add_group("dlq").counter("bad_catalog_record")

    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        try:
            yield ("catalog", [parse_catalog(value)])
        except ValueError as exc:
            self._rejected.inc()
            logger.debug("rejected catalog record: %s", exc)
            yield DLQ_TAG, dlq_record(value, "bad_catalog_record", str(exc), int(time.time() * 1000))
