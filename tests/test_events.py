"""udfs.events: the event schema, one test per rejection reason, and the DLQ record."""

from __future__ import annotations

import json

import pytest

from udfs.events import Event, InvalidEvent, Limits, event_to_json, parse_event, validate_event

GOOD = {"event_id": "e1", "user_id": "196", "item_id": "242", "type": "rate", "value": 3.0, "ts": 881250949000}


def test_valid_rating() -> None:
    assert parse_event(json.dumps(GOOD)) == Event("e1", "196", "242", "rate", 3.0, 881250949000)


def test_integer_ids_become_strings_and_bytes_are_decoded() -> None:
    ev = parse_event(json.dumps({**GOOD, "user_id": 196, "item_id": 242, "event_id": 7}).encode())
    assert (ev.event_id, ev.user_id, ev.item_id) == ("7", "196", "242")


def test_implicit_types_take_the_configured_weight() -> None:
    limits = Limits(weights=(("view", 1.5), ("click", 2.0), ("cart", 3.0), ("purchase", 5.0)))
    ev = validate_event({**GOOD, "type": "view", "value": None}, limits)
    assert ev.weight == 1.5
    assert validate_event({**GOOD, "type": "purchase", "value": 2}, limits).weight == 2.0


@pytest.mark.parametrize("etype", ["dislike", "hide"])
def test_negative_feedback_types_are_events_with_weight_one_by_default(etype: str) -> None:
    limits = Limits(weights=(("view", 1.5), ("click", 2.0), ("cart", 3.0), ("purchase", 5.0)))  # none for them
    assert validate_event({**GOOD, "type": etype, "value": None}, limits) == \
        Event("e1", "196", "242", etype, 1.0, 881250949000)
    assert validate_event({k: v for k, v in GOOD.items() if k != "value"} | {"type": etype}).weight == 1.0
    assert validate_event({**GOOD, "type": etype, "value": 2}).weight == 2.0
    with pytest.raises(InvalidEvent, match=f"value 0 of {etype} event e1 must be positive") as info:
        validate_event({**GOOD, "type": etype, "value": 0})
    assert info.value.reason == "bad_value"


def test_round_trip() -> None:
    ev = parse_event(json.dumps(GOOD))
    assert parse_event(event_to_json(ev)) == ev


# every character an id must not hold: C0, DEL, C1 (the Cc category), the line/paragraph separators, surrogates
FORBIDDEN = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, 0xD800, 0xDBFF, 0xDC00,
                              0xDFFF)]


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id"])
@pytest.mark.parametrize("char", FORBIDDEN, ids=lambda c: f"U+{ord(c):04X}")
def test_ids_with_control_characters_are_bad_ids(field: str, char: str) -> None:
    value = f"a{char}b"
    with pytest.raises(InvalidEvent) as info:
        parse_event(json.dumps({**GOOD, field: value}))  # json.dumps escapes them all (ensure_ascii)
    assert info.value.reason == "bad_id"
    message = str(info.value)
    assert message.startswith(f"{field} {value!r} has ") and f"U+{ord(char):04X} at index 1" in message
    assert char not in message  # shown escaped, so the message itself is safe to log


def test_bad_id_messages_are_escaped_and_truncated() -> None:
    value = "x" * 100 + "\x00"  # under the length limit, too long to show whole
    with pytest.raises(InvalidEvent) as info:
        validate_event({**GOOD, "item_id": value})
    assert info.value.reason == "bad_id" and "U+0000 at index 100" in str(info.value)
    assert len(str(info.value)) < 200 and "\x00" not in str(info.value)
    with pytest.raises(InvalidEvent) as info:
        validate_event({**GOOD, "event_id": "\u2028"})
    assert str(info.value) == "event_id '\\u2028' has the line separator U+2028 at index 0"


@pytest.mark.parametrize("value", [".", ".."])
def test_dot_segment_ids_are_bad_ids(value: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_event({**GOOD, "item_id": value})
    assert info.value.reason == "bad_id" and "URL dot segment" in str(info.value)


OTHER_IDS = [
    "a/b", "../../etc/passwd", "..%2F..", "?x=1#y", "100%", "two words", "a\u00a0b", "a\u2003b", "\u00e9t\u00e9",
    "\u6f22\u5b57", "\U0001f468\u200d\U0001f469\u200d\U0001f467", "rtl\u202eltr", "zero\u200bwidth", "\ufeffbom",
    "\U0010fffd", "...", ".a", "a.", "a\\b", "+", "~",
]


@pytest.mark.parametrize("value", OTHER_IDS)
def test_other_ids_are_kept_exactly(value: str) -> None:
    """Reserved URL characters, inner white space, format characters and any script are plain id characters."""
    raw = json.dumps({**GOOD, "event_id": value, "user_id": value, "item_id": value})
    ev = parse_event(raw)
    assert (ev.event_id, ev.user_id, ev.item_id) == (value, value, value)
    assert parse_event(event_to_json(ev).encode("utf-8")) == ev  # and they survive the wire form


#: (input, reason, words of the message) of records the schema refuses
REJECTIONS: list[tuple[str | bytes, str, str]] = [
    (b'{"event_id": "e1", "user_id"', "bad_json", "not JSON"),
    (b"\xff\xfe{}", "bad_utf8", "not UTF-8"),
    ('["e1", "u", "i"]', "not_an_object", "JSON object"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "item_id"}), "missing_field", "item_id"),
    (json.dumps({**GOOD, "extra": 1}), "unknown_field", "'extra'"),
    (json.dumps({**GOOD, "user_id": 1.5}), "wrong_type", "user_id must be a string or integer"),
    (json.dumps({**GOOD, "user_id": True}), "wrong_type", "user_id"),
    (json.dumps({**GOOD, "ts": "1997-12-04"}), "wrong_type", "ts '1997-12-04'"),
    (json.dumps({**GOOD, "value": "4"}), "wrong_type", "value '4' must be a number"),
    (json.dumps({**GOOD, "type": "like"}), "unknown_type",
     "type 'like' is not one of rate, view, click, cart, purchase, dislike, hide in event e1"),
    (json.dumps({**GOOD, "type": "Dislike"}), "unknown_type", "type 'Dislike' is not one of"),
    (json.dumps({**GOOD, "value": 7.5}), "rating_out_of_range", "rating 7.5 out of range 0.5..5 for event e1"),
    (json.dumps({**GOOD, "value": 0}), "rating_out_of_range", "rating 0"),
    (json.dumps({**GOOD, "type": "rate", "value": None}), "missing_field", "needs a value"),
    ('{"event_id": "e1", "user_id": "u", "item_id": "i", "type": "rate", "value": NaN, "ts": 1}', "bad_number",
     "NaN"),
    ('{"event_id": "e1", "user_id": "u", "item_id": "i", "type": "rate", "value": Infinity, "ts": 1}',
     "bad_number", "Infinity"),
    (json.dumps({**GOOD, "value": 1e309}), "bad_number", "Infinity"),  # json.dumps writes the literal Infinity
    (json.dumps({**GOOD, "ts": -1}), "bad_timestamp", "ts -1 outside"),
    (json.dumps({**GOOD, "ts": 10**16}), "bad_timestamp", "outside"),
    (json.dumps({**GOOD, "user_id": "u" * 129}), "id_too_long", "129 characters"),
    (json.dumps({**GOOD, "user_id": ""}), "bad_id", "non-empty"),
    (json.dumps({**GOOD, "user_id": " 196"}), "bad_id", "surrounding white space"),
    (json.dumps({**GOOD, "user_id": "1\u0000"}), "bad_id", "user_id '1\\x00' has the control character U+0000"),
    (json.dumps({**GOOD, "item_id": -3}), "bad_id", "must not be negative"),
    (json.dumps({**GOOD, "type": "view", "value": -1}), "bad_value", "must be positive"),
    ("x" * 70000, "too_large", "70000 bytes"),
    # an integer value beyond the float range is not finite either
    (json.dumps({**GOOD, "type": "view", "value": 10**400}), "bad_number", "is not finite"),
    (json.dumps({**GOOD, "value": -(10**309)}), "bad_number", "is not finite"),
]


@pytest.mark.parametrize(("raw", "reason", "words"), REJECTIONS)
def test_rejections_have_a_reason_and_name_the_field(raw: str | bytes, reason: str, words: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    assert info.value.reason == reason
    assert words in str(info.value)
