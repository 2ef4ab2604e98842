"""Dead-letter records (udfs.dlq): bounded whatever the input, lossless up to the cap, the source record's origin."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config import ConfigError, load_config
from udfs.dlq import (
    BINARY,
    MAX_ERROR_CHARS,
    MAX_KEY_BYTES,
    Origin,
    dlq_record,
    original_bytes,
    parse_source_event,
    payload_bytes,
)
from udfs.events import InvalidEvent

CAP = 65536
DEFAULT_MAX_RECORD = load_config(env={})["kafka"]["max_record_bytes"]


def encoded(data: bytes) -> str:
    """The payload string flinkrec.SourceRows makes of a record value."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return BINARY + base64.b64encode(data).decode()
    return BINARY + base64.b64encode(data).decode() if text[:1] in (BINARY, "\ufeff", "\ufffe") else text


def test_a_control_character_flood_stays_far_below_the_record_limit() -> None:
    """The record of the poison pill: 200,000 bytes of 0x01 (valid UTF-8), whose JSON-escaped form was 1.2 MB."""
    data = b"\x01" * 200_000
    rec = dlq_record(encoded(data), "events 1 42 MTk2", "too_large", "message of 200000 bytes is too large", 5, CAP)
    assert len(rec) < 4 * CAP // 3 + 2000 < DEFAULT_MAX_RECORD and rec.isascii()
    d = json.loads(rec)
    assert d["payload_bytes"] == 200_000 and d["payload_truncated"]
    assert d["payload_sha256"] == hashlib.sha256(data).hexdigest()
    assert base64.b64decode(d["payload_b64"]) == data[:CAP]
    assert d["source"] == {"topic": "events", "partition": 1, "offset": 42, "key_b64": "MTk2", "key_bytes": 3}
    with pytest.raises(ValueError, match="keeps only the first bytes of 200000"):
        original_bytes(d)


@settings(max_examples=300)
@given(st.binary(max_size=3000))
def test_any_bytes_round_trip(data: bytes) -> None:
    payload = encoded(data)
    assert payload_bytes(payload) == data
    rec = json.loads(dlq_record(payload, "", "bad_json", "x", 1, CAP))
    assert original_bytes(rec) == data and rec["source"] is None
    assert rec["payload_sha256"] == hashlib.sha256(data).hexdigest()


def test_invalid_utf8_is_kept_byte_for_byte_and_refused_as_bad_utf8() -> None:
    data = b'{"event_id": "\xff\xfe"}'
    with pytest.raises(InvalidEvent) as err:
        parse_source_event(encoded(data))
    assert err.value.reason == "bad_utf8"
    assert original_bytes(dlq_record(encoded(data), "", "bad_utf8", str(err.value), 1, CAP)) == data


def test_a_valid_text_with_a_replacement_character_is_not_bad_utf8() -> None:
    """U+FFFD in the source is a character like any other now that invalid bytes never become one."""
    event = parse_source_event(json.dumps({"event_id": "e\ufffd", "user_id": "u", "item_id": "i", "type": "view",
                                           "ts": 1}, ensure_ascii=False))
    assert event.event_id == "e\ufffd"


def test_a_null_value_is_a_dead_letter_without_a_payload() -> None:
    with pytest.raises(InvalidEvent) as err:
        parse_source_event(None)
    assert err.value.reason == "null_value"
    rec = json.loads(dlq_record(None, "events 0 7", "null_value", str(err.value), 1, CAP))
    assert rec["payload_b64"] is None and rec["payload_bytes"] == 0 and original_bytes(rec) is None
    assert rec["source"]["key_b64"] is None and rec["source"]["offset"] == 7


def test_a_long_key_and_a_long_error_are_cut() -> None:
    key = base64.b64encode(b"k" * (MAX_KEY_BYTES + 1)).decode()
    rec = json.loads(dlq_record("x", f"events 0 1 {key}", "bad_json", "e" * 5000, 1, CAP))
    assert rec["source"]["key_b64"] is None and rec["source"]["key_bytes"] == MAX_KEY_BYTES + 1
    assert len(rec["error"]) == MAX_ERROR_CHARS and rec["error"].endswith("...")


def test_origin_parses_with_and_without_a_key() -> None:
    assert Origin.parse("events 1 2 a2V5") == Origin("events", 1, 2, "a2V5")
    assert Origin.parse("events 1 2 ") == Origin("events", 1, 2, "")  # an empty key is a key
    assert Origin.parse("events 1 2") == Origin("events", 1, 2, None)
    assert Origin.parse("") is None


def test_the_cap_must_fit_the_output_record_limit() -> None:
    with pytest.raises(ConfigError, match=r"limits\.dlq_payload_bytes 900000 makes dead-letter records of up to"):
        load_config(overrides=["limits.dlq_payload_bytes=900000"], env={})
    with pytest.raises(ConfigError, match=r"kafka\.max_record_bytes must be a positive integer, got 0"):
        load_config(overrides=["kafka.max_record_bytes=0"], env={})
