"""Rejected input: the dead-letter output (``DLQ_TAG``), its records and counters; the catalog parser."""

from __future__ import annotations

import logging
import time
from typing import Any

from pyflink.common import Types
from pyflink.datastream import OutputTag, ProcessFunction, RuntimeContext

from udfs.catalog import parse_catalog
from udfs.events import InvalidEvent, dlq_record

logger = logging.getLogger(__name__)

DLQ_TAG = OutputTag("dlq", Types.STRING())


class Rejects:
    """Dead-letter records for invalid events (the raw record, the reason, the message), counted per reason
    in the Flink metric group ``dlq`` (``dlq.<reason>``) of the operator that validates them
    (:class:`operators.windows.UserWindow`)."""

    def __init__(self) -> None:
        self._metrics: Any = None
        self._counters: dict[str, Any] = {}

    def open(self, metrics_group: Any) -> None:
        self._metrics = metrics_group.add_group("dlq")
        self._counters = {}

    def record(self, raw: str, exc: InvalidEvent) -> str:
        counter = self._counters.get(exc.reason)
        if counter is None and self._metrics is not None:
            counter = self._counters[exc.reason] = self._metrics.counter(exc.reason)
        if counter is not None:
            counter.inc()
        logger.debug("rejected record: %s", exc)
        return dlq_record(raw, exc.reason, str(exc), int(time.time() * 1000))


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
