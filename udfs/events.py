"""The event schema and its validation.

An event is one JSON object per Kafka message::

    {"event_id": "ml-1", "user_id": "196", "item_id": "242", "type": "rate", "value": 3.0, "ts": 881250949000}

=========  ==========================================================================
field      rule
=========  ==========================================================================
event_id   id (below), or an integer
user_id    id, or a non-negative integer
item_id    id, or a non-negative integer
type       one of ``rate``, ``view``, ``click``, ``cart``, ``purchase`` (engagements), ``dislike``,
           ``hide`` (negative feedback: :data:`NEGATIVE_TYPES`)
value      ``rate``: the rating, a finite number in ``model.min_rating..max_rating``;
           other types: optional positive finite number, default ``model.weights[type]``
           (``dislike``, ``hide``: default 1; the model uses only the fact, not the value)
ts         event time, integer epoch milliseconds in ``limits.min_ts_ms..max_ts_ms``
=========  ==========================================================================

No other field is accepted. Integers given for ids are turned into their decimal string, so
``"user_id": 196`` and ``"user_id": "196"`` are the same user.

An id is a non-empty string of at most ``limits.max_id_length`` characters without surrounding white
space, compared exactly (no case or Unicode normalisation). Refused with ``bad_id`` (:func:`id_problem`,
also used for catalog ``item_id`` s):

* control characters: C0 ``U+0000-U+001F``, DEL ``U+007F``, C1 ``U+0080-U+009F`` (they corrupt logs,
  terminals and line-oriented files);
* the line and paragraph separators ``U+2028``, ``U+2029`` (``str.splitlines`` and JavaScript break
  lines at them, so a JSON-lines file written without ASCII escaping would split the record);
* lone surrogates ``U+D800-U+DFFF`` (a JSON ``\\ud800`` escape decodes to one; no UTF-8 Kafka or Redis key
  can carry it);
* the whole id ``.`` or ``..``: URL clients remove such path segments (RFC 3986, and browsers even when
  they are written ``%2E``), so the API's ``/items/{item_id}`` could not address it.

Everything else is allowed, on purpose: white space and other reserved characters inside
(``/``, ``?``, ``#``, ``%``, spaces, no-break spaces), format characters (zero-width joiners of emoji
sequences, bidi marks), any script. Ids are opaque keys that travel as exact UTF-8 bytes through Kafka,
Redis and JSON, and through the API's URL paths as one percent-encoded segment (``docs/serving.md``);
messages that show an id use ``repr``, which escapes the invisible ones.

``parse_event`` returns an :class:`Event` or raises :class:`InvalidEvent` whose ``reason`` is a
short machine-readable code (``bad_json``, ``missing_field`` ...) and whose message names the
field and the value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

EVENT_TYPES = ("rate", "view", "click", "cart", "purchase", "dislike", "hide")
"""Every event type; a type's code is its index (the JVM front's ``EventCheck.TYPES`` is the same list)."""
NEGATIVE_TYPES = ("dislike", "hide")
"""Negative feedback: the item is never recommended to the user again (``dislike`` also lowers its neighbours for
the user); neither enters the log, co-occurrence, user-CF or trending (core.v2.model.learn)."""
NEGATIVE_WEIGHT = 1.0
"""The weight of a negative event without a value (the model uses only the fact of it)."""
POSITIVE_TYPES = tuple(t for t in EVENT_TYPES if t not in NEGATIVE_TYPES)
"""The engagement types (learned as positives)."""
FIELDS = ("event_id", "user_id", "item_id", "type", "value", "ts")
REQUIRED = ("event_id", "user_id", "item_id", "type", "ts")


class Event(NamedTuple):
    """A validated event. ``weight`` is the value the models use (rating or implicit weight)."""

    event_id: str
    user_id: str
    item_id: str
    type: str
    weight: float
    ts: int


class InvalidEvent(ValueError):
    """An input record that does not follow the event schema."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """The validation limits, taken from the config (``model`` and ``limits`` sections)."""

    min_rating: float = 0.5
    max_rating: float = 5.0
    weights: tuple[tuple[str, float], ...] = (("view", 1.0), ("click", 2.0), ("cart", 3.0), ("purchase", 5.0))
    max_id_length: int = 128
    max_message_bytes: int = 65536
    min_ts_ms: int = 0
    max_ts_ms: int = 4102444800000
    dlq_payload_bytes: int = 65536

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Limits:
        m, lim = cfg["model"], cfg["limits"]
        return cls(
            min_rating=float(m["min_rating"]),
            max_rating=float(m["max_rating"]),
            weights=tuple((k, float(v)) for k, v in m["weights"].items()),
            max_id_length=int(lim["max_id_length"]),
            max_message_bytes=int(lim["max_message_bytes"]),
            min_ts_ms=int(lim["min_ts_ms"]),
            max_ts_ms=int(lim["max_ts_ms"]),
            dlq_payload_bytes=int(lim["dlq_payload_bytes"]),
        )


DEFAULT_LIMITS = Limits()


def _reject_constant(name: str) -> float:
    raise InvalidEvent("bad_number", f"non-finite number {name} is not allowed")


def _finite(value: int | float) -> bool:
    """Whether a JSON number is a finite float (an integer beyond the float range is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


# the characters an id must not hold, and why: see the module docstring
_BAD_ID_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_DOT_SEGMENTS = (".", "..")


def id_problem(value: str) -> str | None:
    """What makes a non-empty string unfit as an id (``"has the control character U+0000 at index 1"``), or None.

    The rules of the module docstring except emptiness, surrounding space and length.
    """
    bad = _BAD_ID_CHAR.search(value)
    if bad is not None:
        code = ord(bad.group())
        what = ("the line separator" if code == 0x2028 else "the paragraph separator" if code == 0x2029
                else "a lone surrogate" if code >= 0xD800 else "the control character")
        return f"has {what} U+{code:04X} at index {bad.start()}"
    if value in _DOT_SEGMENTS:
        return "is a URL dot segment ('.' or '..'), which a URL path cannot carry"
    return None


def _id(obj: Mapping[str, Any], field: str, limits: Limits) -> str:
    raw = obj[field]
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise InvalidEvent("wrong_type", f"{field} must be a string or integer, got {type(raw).__name__} {raw!r:.80}")
    if isinstance(raw, int):
        if raw < 0:
            raise InvalidEvent("bad_id", f"{field} {raw!r} must not be negative")
        raw = str(raw)
    if not raw:
        raise InvalidEvent("bad_id", f"{field} must be non-empty")
    if len(raw) > limits.max_id_length:
        raise InvalidEvent("id_too_long", f"{field} has {len(raw)} characters, more than {limits.max_id_length}")
    problem = id_problem(raw)
    if problem is not None:
        raise InvalidEvent("bad_id", f"{field} {raw!r:.80} {problem}")
    if raw.strip() != raw:
        raise InvalidEvent("bad_id", f"{field} {raw!r:.80} must not have surrounding white space")
    return raw


def validate_event(obj: Any, limits: Limits = DEFAULT_LIMITS) -> Event:
    """Check a decoded JSON value against the schema and return the :class:`Event`."""
    if not isinstance(obj, dict):
        raise InvalidEvent("not_an_object", f"event must be a JSON object, got {type(obj).__name__}")
    missing = [f for f in REQUIRED if f not in obj]
    if missing:
        raise InvalidEvent("missing_field", f"missing field(s) {', '.join(missing)}")
    extra = sorted(k for k in obj if k not in FIELDS)
    if extra:
        raise InvalidEvent("unknown_field", f"unknown field(s) {', '.join(repr(k)[:40] for k in extra[:5])}")
    event_id = _id(obj, "event_id", limits)
    user_id = _id(obj, "user_id", limits)
    item_id = _id(obj, "item_id", limits)
    etype = obj["type"]
    if not isinstance(etype, str):
        raise InvalidEvent("wrong_type", f"type must be a string, got {type(etype).__name__} in event {event_id}")
    if etype not in EVENT_TYPES:
        raise InvalidEvent("unknown_type",
                           f"type {etype!r:.40} is not one of {', '.join(EVENT_TYPES)} in event {event_id}")
    ts = obj["ts"]
    if isinstance(ts, bool) or not isinstance(ts, int):
        if isinstance(ts, float) and math.isfinite(ts) and ts.is_integer():
            ts = int(ts)
        else:
            raise InvalidEvent("wrong_type", f"ts {ts!r:.40} must be an integer (epoch ms) in event {event_id}")
    if not limits.min_ts_ms <= ts <= limits.max_ts_ms:
        raise InvalidEvent("bad_timestamp",
                           f"ts {ts} outside {limits.min_ts_ms}..{limits.max_ts_ms} in event {event_id}")
    value = obj.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise InvalidEvent("wrong_type", f"value {value!r:.40} must be a number in event {event_id}")
    if value is not None and not _finite(value):
        raise InvalidEvent("bad_number", f"value {value!r} is not finite in event {event_id}")
    if etype == "rate":
        if value is None:
            raise InvalidEvent("missing_field", f"rate event {event_id} needs a value (the rating)")
        if not limits.min_rating <= value <= limits.max_rating:
            raise InvalidEvent(
                "rating_out_of_range",
                f"rating {value!r} out of range {limits.min_rating:g}..{limits.max_rating:g} for event {event_id}",
            )
        weight = float(value)
    else:
        weights = dict(limits.weights)
        if value is not None:
            weight = float(value)
        else:  # every engagement type has a configured weight; negative feedback need not
            weight = weights.get(etype, NEGATIVE_WEIGHT) if etype in NEGATIVE_TYPES else weights[etype]
        if not weight > 0:
            raise InvalidEvent("bad_value", f"value {value!r} of {etype} event {event_id} must be positive")
    return Event(event_id, user_id, item_id, etype, weight, ts)


# one decoder for every message (json.loads with an argument builds a new one per call)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_event(raw: bytes | str, limits: Limits = DEFAULT_LIMITS) -> Event:
    """Decode one Kafka message (UTF-8 JSON) and validate it."""
    if isinstance(raw, str):
        size = len(raw) if raw.isascii() else len(raw.encode("utf-8", "surrogatepass"))
    else:
        size = len(raw)
    if size > limits.max_message_bytes:
        raise InvalidEvent("too_large", f"message of {size} bytes is larger than {limits.max_message_bytes}")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEvent("bad_utf8", f"message is not UTF-8: {exc}") from None
    try:
        obj = _DECODER.decode(raw)
    except InvalidEvent:
        raise
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent("bad_json", f"message is not JSON: {exc}") from None
    return validate_event(obj, limits)


def event_to_json(event: Event) -> str:
    """The wire form of an event (``value`` carries the weight)."""
    return json.dumps(
        {"event_id": event.event_id, "user_id": event.user_id, "item_id": event.item_id,
         "type": event.type, "value": event.weight, "ts": event.ts},
        separators=(",", ":"),
    )
