"""Property-based fuzzing of the event parser: no input crashes it, every rejection carries a reason."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udfs.events import EVENT_TYPES, Event, InvalidEvent, parse_event

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
