"""Source records as the job reads them, and dead-letter records: what the job writes to the ``events-dlq`` topic
for every input record it refuses.

The job reads Kafka records through ``flinkrec.SourceRecords`` (jvm/src, rows as ``flinkrec.SourceRows`` defines
them): each arrives as a *payload* (the value
as text when it is valid UTF-8, else ``"\\x00"`` + Base64 of the bytes, as also when the text starts with U+0000,
U+FEFF or U+FFFE, which the hand-over of strings to Python would not keep; ``None`` for a null value) and an *origin*
(``"topic partition offset"`` plus ``" " + Base64(key)`` when the record has a key; empty for in-memory test
sources). A dead-letter record is one JSON object, ASCII only, whose size is bounded whatever the input::

    {"reason": "bad_json", "error": "message is not JSON: ...",
     "source": {"topic": "events", "partition": 1, "offset": 4711, "key_b64": "MTk2"},
     "payload_b64": "eyJldmVudF9pZCI6...", "payload_bytes": 1234, "payload_truncated": false,
     "payload_sha256": "9f86d0...", "rejected_at": 1764514800123}

* ``payload_b64``: the Base64 of the original value bytes, cut to the first ``limits.dlq_payload_bytes`` bytes;
  ``payload_bytes`` and ``payload_sha256`` describe the whole original, so a truncated record still identifies it
  (the full record stays in the source topic at ``source.partition``/``source.offset`` while retained);
  a source key longer than :data:`MAX_KEY_BYTES` is left out (``key_b64`` null, ``key_bytes`` its length);
  ``payload_b64`` is null for a null value (``reason: null_value``);
* ``error``: the validation message, at most :data:`MAX_ERROR_CHARS` characters;
* ``source``: null for records that did not come from Kafka (tests); ``key_b64`` null for a record without a key.
  The job's Kafka sink keys each dead-letter record by its source key (``flinkrec.KeyedJsonRecords``).

:func:`original_bytes` turns a record back into the bytes, for a replay after a fix.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from udfs.events import DEFAULT_LIMITS, Event, InvalidEvent, Limits, parse_event

#: the marker of a Base64 payload (``flinkrec.SourceRows.BINARY``)
BINARY = "\x00"
MAX_ERROR_CHARS = 1000
#: a longer source key is not repeated in the record (``key_b64`` null, ``key_bytes`` its length)
MAX_KEY_BYTES = 1024


class Origin(NamedTuple):
    """Where a source record came from; see the module docstring."""

    topic: str
    partition: int
    offset: int
    key_b64: str | None

    @classmethod
    def parse(cls, origin: str | None) -> Origin | None:
        if not origin:
            return None
        parts = origin.split(" ")
        return cls(parts[0], int(parts[1]), int(parts[2]), parts[3] if len(parts) > 3 else None)


def payload_bytes(payload: str | None) -> bytes | None:
    """The original value bytes of a payload string (None for a null value)."""
    if payload is None:
        return None
    if payload[:1] == BINARY:
        return base64.b64decode(payload[1:])
    return payload.encode("utf-8", "surrogatepass")


def dlq_record(payload: str | bytes | None, origin: str | None, reason: str, message: str, ts_ms: int,
               cap: int) -> str:
    """The dead-letter JSON of one refused record; ``payload`` is a source payload string or the bytes themselves."""
    data = payload if isinstance(payload, bytes) else payload_bytes(payload)
    where = Origin.parse(origin)
    source: dict[str, Any] | None = None
    if where is not None:
        key = None if where.key_b64 is None else base64.b64decode(where.key_b64)
        source = {**where._asdict(), "key_bytes": None if key is None else len(key)}
        if key is not None and len(key) > MAX_KEY_BYTES:
            source["key_b64"] = None
    record: dict[str, Any] = {
        "reason": reason,
        "error": message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 3] + "...",
        "source": source,
        "payload_b64": None if data is None else base64.b64encode(data[:cap]).decode("ascii"),
        "payload_bytes": 0 if data is None else len(data),
        "payload_truncated": data is not None and len(data) > cap,
        "payload_sha256": None if data is None else hashlib.sha256(data).hexdigest(),
        "rejected_at": ts_ms,
    }
    return json.dumps(record, separators=(",", ":"), ensure_ascii=True)


def original_bytes(record: Mapping[str, Any] | str | bytes) -> bytes | None:
    """The original value of a dead-letter record (JSON or decoded); ValueError when it was truncated."""
    rec = json.loads(record) if isinstance(record, (str, bytes)) else record
    if rec["payload_b64"] is None:
        return None
    if rec["payload_truncated"]:
        raise ValueError(f"the dead-letter record keeps only the first bytes of {rec['payload_bytes']}: read the "
                         f"source record at {rec['source']}")
    return base64.b64decode(rec["payload_b64"])


def parse_source_event(payload: str | None, limits: Limits = DEFAULT_LIMITS) -> Event:
    """:func:`udfs.events.parse_event` of a source payload: a null value is ``null_value``, a Base64 payload is
    parsed from its bytes (so invalid UTF-8 is ``bad_utf8``)."""
    if payload is None:
        raise InvalidEvent("null_value", "the record has no value (a tombstone)")
    if payload[:1] == BINARY:
        return parse_event(base64.b64decode(payload[1:]), limits)
    return parse_event(payload, limits)
