"""Rejected input: the dead-letter output (``DLQ_TAG``), its records and counters; the catalog parser."""

from __future__ import annotations

import logging
import time
from typing import Any

from pyflink.common import Types
from pyflink.datastream import OutputTag, ProcessFunction, RuntimeContext

from udfs.catalog import parse_catalog
from udfs.events import dlq_record

logger = logging.getLogger(__name__)

DLQ_TAG = OutputTag("dlq", Types.STRING())


class Rejects:
    """Dead-letter records (the raw record, the reason, the message), counted per reason in the Flink metric group
    ``dlq`` (``dlq.<reason>``) of the operator that rejects them: :class:`operators.windows.UserWindow` (invalid
    events) and :class:`ParseCatalog`."""

    def __init__(self) -> None:
        self._metrics: Any = None
        self._counters: dict[str, Any] = {}

    def open(self, metrics_group: Any) -> None:
        self._metrics = metrics_group.add_group("dlq")
        self._counters = {}

    def record(self, raw: str, reason: str, message: str) -> str:
        counter = self._counters.get(reason)
        if counter is None and self._metrics is not None:
            counter = self._counters[reason] = self._metrics.counter(reason)
        if counter is not None:
            counter.inc()
        logger.debug("rejected record (%s): %s", reason, message)
        return dlq_record(raw, reason, message, int(time.time() * 1000))


class ParseCatalog(ProcessFunction):
    """Catalog message (``items`` topic) -> ``("catalog", [record])``; invalid ones -> ``DLQ_TAG``
    (reason ``bad_catalog_record``, metric ``dlq.bad_catalog_record``)."""

    def __init__(self) -> None:
        self.rejects = Rejects()

    def open(self, runtime_context: RuntimeContext) -> None:
        self.rejects.open(runtime_context.get_metrics_group())

    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        try:
            yield ("catalog", [parse_catalog(value)])
        except ValueError as exc:
            yield DLQ_TAG, self.rejects.record(value, "bad_catalog_record", str(exc))
