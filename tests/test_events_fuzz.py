"""Property-based fuzzing of the event parser: no input crashes it, every rejection carries a reason."""

from __future__ import annotations

import json
import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udfs.events import EVENT_TYPES, Event, InvalidEvent, event_to_json, parse_event

REASONS = {"bad_json", "bad_utf8", "not_an_object", "missing_field", "unknown_field", "wrong_type", "bad_id",
           "id_too_long", "unknown_type", "bad_timestamp", "bad_number", "rating_out_of_range", "bad_value",
           "too_large"}

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                                           inner, max_size=3),
                      max_leaves=8)
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(st.text(max_size=140), st.integers(), values),
        "user_id": st.one_of(st.text(max_size=140), st.integers(min_value=-5), values),
        "item_id": st.one_of(st.text(max_size=10), st.integers(min_value=-5), values),
        "type": st.one_of(st.sampled_from([*EVENT_TYPES, "like", ""]), values),
        "value": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10), values),
        "ts": st.one_of(st.integers(min_value=-(2**63), max_value=2**63), st.floats(), values),
        "extra": values,
    },
)


def check(raw: str | bytes) -> None:
    try:
        ev = parse_event(raw)
    except InvalidEvent as exc:
        assert exc.reason in REASONS, exc.reason
        assert str(exc)
    else:
        assert isinstance(ev, Event)
        assert ev.type in EVENT_TYPES and ev.weight > 0 and isinstance(ev.ts, int)


@settings(max_examples=6000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_valid)
def test_structured_inputs(obj: dict) -> None:
    check(json.dumps(obj, allow_nan=True))


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw)


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text(raw: str) -> None:
    check(raw)


# ids: any code point (surrogates too, which st.characters leaves out), biased to the ones the rules are about
id_chars = st.one_of(st.characters(), st.characters(categories=["Cs"]),
                     st.sampled_from(["\x00", "\x1f", "\x7f", "\x85", "\x9f", "\xa0", "\u2028", "\u2029", "\u200b",
                                      "\u202e", "\ufeff", "/", ".", "%", "?", "#", " ", "a", "1"]))


def expected_id_reason(value: str) -> str | None:
    """The rule of udfs.events for a string id, written from Unicode categories (Cc is exactly C0, DEL and C1)."""
    if not value:
        return "bad_id"
    if len(value) > 128:
        return "id_too_long"
    if any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in value):
        return "bad_id"
    if value in (".", "..") or value.strip() != value:
        return "bad_id"
    return None


@settings(max_examples=4000, deadline=None)
# (lists of characters, not st.text(id_chars), which draws from the union of the characters nearly uniformly)
@given(st.sampled_from(["event_id", "user_id", "item_id"]), st.lists(id_chars, max_size=140).map("".join))
def test_string_ids_follow_the_rule(field: str, value: str) -> None:
    good = {"event_id": "e1", "user_id": "196", "item_id": "242", "type": "view", "ts": 881250949000}
    raw = json.dumps({**good, field: value})  # ensure_ascii: every character travels as an escape
    value = json.loads(json.dumps(value))  # what the escapes decode to: a high+low surrogate pair is one character
    want = expected_id_reason(value)
    try:
        ev = parse_event(raw)
    except InvalidEvent as exc:
        assert exc.reason == want, (value, str(exc))
        assert str(exc).startswith(field)
        assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in str(exc))  # shown escaped
    else:
        assert want is None, value
        assert getattr(ev, field) == value
        assert parse_event(event_to_json(ev).encode("utf-8")) == ev  # an accepted id is UTF-8 encodable
