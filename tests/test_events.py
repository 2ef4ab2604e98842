"""udfs.events: the event schema, one test per rejection reason, and the DLQ record."""

from __future__ import annotations

import json

import pytest

from udfs.events import Event, InvalidEvent, Limits, dlq_record, event_to_json, parse_event, validate_event

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


def test_round_trip() -> None:
    ev = parse_event(json.dumps(GOOD))
    assert parse_event(event_to_json(ev)) == ev


@pytest.mark.parametrize(
    ("raw", "reason", "words"),
    [
        (b'{"event_id": "e1", "user_id"', "bad_json", "not JSON"),
        (b"\xff\xfe{}", "bad_utf8", "not UTF-8"),
        ('["e1", "u", "i"]', "not_an_object", "JSON object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "item_id"}), "missing_field", "item_id"),
        (json.dumps({**GOOD, "extra": 1}), "unknown_field", "'extra'"),
        (json.dumps({**GOOD, "user_id": 1.5}), "wrong_type", "user_id must be a string or integer"),
        (json.dumps({**GOOD, "user_id": True}), "wrong_type", "user_id"),
        (json.dumps({**GOOD, "ts": "1997-12-04"}), "wrong_type", "ts '1997-12-04'"),
        (json.dumps({**GOOD, "value": "4"}), "wrong_type", "value '4' must be a number"),
        (json.dumps({**GOOD, "type": "like"}), "unknown_type", "type 'like' is not one of"),
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
        (json.dumps({**GOOD, "item_id": -3}), "bad_id", "must not be negative"),
        (json.dumps({**GOOD, "type": "view", "value": -1}), "bad_value", "must be positive"),
        ("x" * 70000, "too_large", "70000 bytes"),
    ],
)
def test_rejections_have_a_reason_and_name_the_field(raw: str | bytes, reason: str, words: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    assert info.value.reason == reason
    assert words in str(info.value)


def test_dlq_record_keeps_the_payload_and_reason() -> None:
    rec = json.loads(dlq_record(b"\xffbad", "bad_utf8", "message is not UTF-8", 123))
    assert rec == {"reason": "bad_utf8", "error": "message is not UTF-8", "payload": "\ufffdbad", "rejected_at": 123}
