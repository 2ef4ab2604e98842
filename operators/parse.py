"""Rejected input: the dead-letter output (``DLQ_TAG``), its records and counters; the catalog parser."""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

from pyflink.common import Types
from pyflink.datastream import OutputTag, ProcessFunction, RuntimeContext

from operators.records import CatalogDelete, CatalogUpdate, pack
from udfs.catalog import parse_catalog, validate_item_id
from udfs.dlq import BINARY, Origin, dlq_record, payload_bytes
from udfs.events import DEFAULT_LIMITS

logger = logging.getLogger(__name__)

DLQ_TAG = OutputTag("dlq", Types.STRING())


class Rejects:
    """Dead-letter records (:func:`udfs.dlq.dlq_record`: the source record, the reason, the message), counted per
    reason in the Flink metric group ``dlq`` (``dlq.<reason>``) of the operator that rejects them:
    :class:`operators.intake.Intake` (invalid and late events) and :class:`ParseCatalog`."""

    def __init__(self, payload_cap: int = DEFAULT_LIMITS.dlq_payload_bytes) -> None:
        self.payload_cap = payload_cap
        self._metrics: Any = None
        self._counters: dict[str, Any] = {}

    def open(self, metrics_group: Any) -> None:
        self._metrics = metrics_group.add_group("dlq")
        self._counters = {}

    def record(self, payload: str | bytes | None, origin: str | None, reason: str, message: str) -> str:
        """The dead-letter record of one source record (``payload`` and ``origin`` as the source delivered them)."""
        counter = self._counters.get(reason)
        if counter is None and self._metrics is not None:
            counter = self._counters[reason] = self._metrics.counter(reason)
        if counter is not None:
            counter.inc()
        logger.debug("rejected record at %s (%s): %.300s", origin or "-", reason, message)
        return dlq_record(payload, origin, reason, message, int(time.time() * 1000), self.payload_cap)


class ParseCatalog(ProcessFunction):
    """Catalog source record (``items`` topic, ``Row(payload, origin)`` as :mod:`udfs.dlq` defines them) ->
    a :func:`operators.records.pack` ed :class:`operators.records.CatalogUpdate` of the record, normalised with its
    ``position`` in the topic (:func:`catalog_position`; None without an origin); invalid ones -> ``DLQ_TAG``
    (reason ``bad_catalog_record``, metric ``dlq.bad_catalog_record``). A null value (a tombstone of the compacted
    topic) for a key that is a valid item id is a :class:`operators.records.CatalogDelete` of that item; a tombstone
    without a key, or with one that is no item id, is a ``bad_catalog_record``."""

    def __init__(self, payload_cap: int = DEFAULT_LIMITS.dlq_payload_bytes, max_bytes: int = 65536) -> None:
        self.rejects = Rejects(payload_cap)
        self.max_bytes = max_bytes

    def open(self, runtime_context: RuntimeContext) -> None:
        self.rejects.open(runtime_context.get_metrics_group())

    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        payload, origin = value[0], value[1]
        if payload is None:
            try:
                yield pack(0, CatalogDelete(tombstone_item(origin), catalog_position(origin)))
            except ValueError as exc:
                yield DLQ_TAG, self.rejects.record(payload, origin, "bad_catalog_record", str(exc))
            return
        try:
            data = payload_bytes(payload) or b""
            if len(data) > self.max_bytes:
                raise ValueError(f"catalog record of {len(data)} bytes is larger than {self.max_bytes}")
            record = parse_catalog(data if payload[:1] == BINARY else payload)
            record["position"] = catalog_position(origin)
            yield pack(0, CatalogUpdate([record]))
        except ValueError as exc:
            yield DLQ_TAG, self.rejects.record(payload, origin, "bad_catalog_record", str(exc))


def catalog_position(origin: str | None) -> int | None:
    """A catalog record's place in the ``items`` topic: by offset, then partition (None without an origin). The
    content model's newest items are the ones placed last, the same in every run over the same topic contents."""
    where = Origin.parse(origin)
    return None if where is None else (where.offset << 16) | where.partition


def tombstone_item(origin: str | None) -> str:
    """The item a tombstone (a null value) deletes: its key, which must be a valid item id (UTF-8, the id rules of
    :func:`udfs.catalog.validate_item_id`); ValueError naming the key otherwise."""
    where = Origin.parse(origin)
    if where is None or where.key_b64 is None:
        raise ValueError("catalog tombstone (null value) without a key: it names no item to delete")
    raw = base64.b64decode(where.key_b64)
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"catalog tombstone key {raw[:80]!r} is not UTF-8: it names no item") from None
    return validate_item_id(key, "catalog tombstone")
