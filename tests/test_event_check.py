"""The JVM's validator (flinkrec.EventCheck, what the job runs) against the specification (udfs.events, through
udfs.dlq.parse_source_event): on the same payloads, the same decision, reason code, message and normalised fields.

The payloads are the source payloads the front receives (``flinkrec.SourceRows``: text, or U+0000 + Base64 of bytes
that are not UTF-8 or start with U+0000/U+FEFF/U+FFFE, or None): the poison pills of tests/test_poison_pill.py, the
cases of tests/test_events.py, the inputs of tests/test_events_fuzz.py's strategies, and JSON-ish records drawn by
Hypothesis (thousands of each, drawn once per session and checked in one call into the JVM).
"""

from __future__ import annotations

import base64
import itertools
import json
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_events import FORBIDDEN, GOOD, OTHER_IDS, REJECTIONS
from test_events_fuzz import id_chars, near_valid
from test_poison_pill import bad_events, generated_records

from config import load_config
from jobs.flink_env import make_env
from operators.front import event_check
from udfs.dlq import parse_source_event
from udfs.events import EVENT_TYPES, InvalidEvent, Limits

pytestmark = pytest.mark.flink

# the decision of one payload: (reason, message, event_id, user_id, item_id, type, repr(weight), str(ts))
Verdict = tuple[str | None, ...]

STRICT = Limits(min_rating=1.0, max_rating=10.0, weights=(("view", 0.5), ("click", 1.5), ("cart", 2.5),
                                                           ("purchase", 4.0)),
                max_id_length=8, max_message_bytes=300, min_ts_ms=1000, max_ts_ms=2**40)


def source_payload(value: bytes | str | None) -> str | None:
    """What flinkrec.SourceRows makes of a record value (a str stands for its UTF-8 bytes, lone surrogates kept)."""
    if value is None:
        return None
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text[:1] not in ("\x00", "\ufeff", "\ufffe"):
        return text
    return "\x00" + base64.b64encode(data).decode("ascii")


def python_verdict(payload: str | None, limits: Limits) -> Verdict:
    try:
        ev = parse_source_event(payload, limits)
    except InvalidEvent as exc:
        return (exc.reason, str(exc), None, None, None, None, None, None)
    return (None, None, ev.event_id, ev.user_id, ev.item_id, ev.type, repr(ev.weight), str(ev.ts))


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _pack(fields: list[str | None]) -> str:
    return "".join("-1:" if f is None else f"{_utf16_len(f)}:{f}" for f in fields)


def _unpack(packed: str) -> Iterator[str | None]:
    at = 0
    while at < len(packed):
        colon = packed.index(":", at)
        n = int(packed[at:colon])
        if n < 0:
            at = colon + 1
            yield None
            continue
        # n counts UTF-16 units: walk code points until they add up
        end, units = colon + 1, 0
        while units < n:
            units += 2 if ord(packed[end]) > 0xFFFF else 1
            end += 1
        yield packed[colon + 1:end]
        at = end


def jvm_verdicts(check: Any, payloads: list[str | None]) -> list[Verdict]:
    fields = list(_unpack(check.checkPacked(_pack(payloads))))
    assert len(fields) == 8 * len(payloads)
    return [tuple(fields[k:k + 8]) for k in range(0, len(fields), 8)]


@pytest.fixture(scope="module")
def gateway() -> Any:
    """A Flink environment, for its JVM (the gateway that loads var/jars/flinkrec/flinkrec-jvm.jar)."""
    return make_env(load_config(overrides=["job.checkpoint_interval_ms=0"], env={}), kafka=False, parallelism=1)


@pytest.fixture(scope="module")
def unicode_differences(gateway: Any) -> set[str]:
    """Characters whose printability (repr escapes the others) differs between the JVM's Unicode tables and
    Python's (characters added by a later Unicode version): a message quoting one may differ, nothing else."""
    table = event_check(Limits()).printableTable()
    assert len(table) == 0x110000
    return {chr(cp) for cp, flag in enumerate(table) if (flag == "1") != (chr(cp).isprintable() or cp == 0x20)}


def compare(gateway: Any, values: Sequence[bytes | str | None], limits: Limits,
            unicode_differences: set[str] = frozenset()) -> dict[str, int]:  # type: ignore[assignment]
    """Assert that both validators agree on every value; returns how many of each verdict (reason or "valid")."""
    payloads = [source_payload(v) for v in values]
    got = jvm_verdicts(event_check(limits), payloads)
    counts: dict[str, int] = {}
    for payload, jvm in zip(payloads, got, strict=True):
        py = python_verdict(payload, limits)
        counts[py[0] or "valid"] = counts.get(py[0] or "valid", 0) + 1
        assert jvm[0] == py[0], (payload if payload is None else payload[:300], jvm[:2], py[:2])
        assert jvm[2:] == py[2:], (payload, jvm, py)
        if jvm[1] != py[1]:  # only where Python's own message depends on its stack or Unicode version
            assert payload is not None and (py[0] == "bad_json" or set(payload) & unicode_differences), \
                (payload if payload is None else payload[:300], jvm[1], py[1])
    return counts


def test_the_test_cases_of_the_specification(gateway: Any, unicode_differences: set[str]) -> None:
    values: list[bytes | str | None] = [json.dumps(GOOD), json.dumps({**GOOD, "user_id": 196, "event_id": 0}),
                                        json.dumps({**GOOD, "value": 3}), None]
    values += [raw for raw, _, _ in REJECTIONS]
    values += [json.dumps({**GOOD, f: f"a{c}b"}) for c in FORBIDDEN for f in ("event_id", "user_id", "item_id")]
    values += [json.dumps({**GOOD, "event_id": v, "user_id": v, "item_id": v}) for v in OTHER_IDS]
    values += [json.dumps({**GOOD, "type": t, "value": v}) for t in EVENT_TYPES for v in (None, 0.5, 5, 2.5, -1, 0)]
    counts = compare(gateway, values, Limits(), unicode_differences)
    assert counts["valid"] >= 25 and len(counts) >= 15, counts
    counts = compare(gateway, values, STRICT, unicode_differences)  # the limits reach the JVM
    assert counts["id_too_long"] >= 4 and counts["too_large"] >= 2, counts


def test_json_corners_and_python_json_quirks(gateway: Any, unicode_differences: set[str]) -> None:
    """What Python's decoder accepts and refuses: constants, number forms, escapes, white space, duplicates,
    nesting, integer digits; and every id, type, value and ts rule at its edges."""
    head = '"event_id": "e", "user_id": "u", "item_id": "i"'
    values: list[bytes | str | None] = [
        "", " ", "{}", "[]", "null", "1", "-", "-0", "01", "1.", ".5", "1e", "1e+", "1E5", '"s"', "true", "nan",
        "{" + head + ', "type": "view", "ts": 1e3}', "{" + head + ', "type": "view", "ts": 1.5e3}',
        "{" + head + ', "type": "view", "ts": -0.0}', "{" + head + ', "type": "view", "ts": 1.0000000000000001}',
        "{" + head + ', "type": "view", "ts": 4102444800000.0}', "{" + head + ', "type": "view", "ts": 4102444800001}',
        "{" + head + ', "type": "view", "ts": 1e300}', "{" + head + ', "type": "view", "ts": 99999999999999999999}',
        "{" + head + ', "type": "view", "ts": true}', "{" + head + ', "type": "view", "ts": null}',
        "{" + head + ', "type": "rate", "value": 5.000000000000001, "ts": 1}',
        "{" + head + ', "type": "rate", "value": 0.49999999999999994, "ts": 1}',
        "{" + head + ', "type": "rate", "value": 1e-400, "ts": 1}',
        "{" + head + ', "type": "view", "value": 1e-320, "ts": 1}',
        "{" + head + ', "type": "view", "value": -0.0, "ts": 1}',
        "{" + head + ', "type": "view", "value": 12345678901234567890123, "ts": 1}',
        "{" + head + ', "type": "view", "value": ' + "9" * 309 + ', "ts": 1}',
        "{" + head + ', "type": "view", "value": -Infinity, "ts": 1}',
        "{" + head + ', "type": "view", "value": [1, {"a": NaN}], "ts": 1}',
        "{" + head + ', "type": "view", "value": {"a": [1.5, null, true, "x\'y"]}, "ts": 1}',
        "{" + head + ', "type": "view", "value": null, "ts": 1}',
        "{" + head + ', "type": "view", "type": "rate", "value": 2, "ts": 1}',  # the last value of a key counts
        "{" + head + ', "type": "View", "ts": 1}', "{" + head + ', "type": 1, "ts": 1}',
        '{"event_id": 1' + "0" * 4400 + "}", '{"event_id": -1' + "0" * 4299 + ', "x": Infinity}',
        '{"event_id": "\\ud83d\\ude00", "user_id": "\\ud83d", "item_id": "i", "type": "view", "ts": 1}',
        '{"event_id": "\\ud83d\\u0041", "user_id": "u", "item_id": "i", "type": "view", "ts": 1}',
        '{"event_id": "\\u00e9", "user_id": "\\uDFFF", "item_id": "i", "type": "view", "ts": 1}',
        '{"event_id": "\\x41"}', '{"event_id": "\\u12"}', '{"event_id": "\\u12g4"}', '{"event_id": "a\tb"}',
        '{"event_id": "a', '{"event_id" "a"}', '{"event_id": "a",}', '{"event_id": "a" "b"}', "[1, 2,]",
        '\t\n\r {"a": 1} \n', '{"a": 1} x', "\u00a0{}", "{\u2028}", '{"\u00e9": 1, "\U0001f600": 2, "\uffff": 3}',
        '{"zz": 1, "aa": 2, "é": 3, "b": 4, "c": 5, "d": 6, "' + "k" * 60 + '": 7, "type": "view", "ts": 1, '
        + head + "}",
        "[" * 50 + "]" * 50, '{"a":' * 50 + "1" + "}" * 50, "[" * 20_000 + "]" * 20_000, "[" * 1200,
        "{" + head + ', "type": "view", "ts": 1, "value": 1}\n', b"\xef\xbb\xbf{}", b"\x00{}", "\ufffe{}",
        b"\xc0\xaf", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5", b"\xc2",
        b"\xe1\x80", b"\xf1\x80\x80", b"\xe1\x41", b"\xf1\x80\x41", b"\xf1\x80\x80\x41", b'{"a": "\xff"}',
    ]
    odd_ids: tuple[Any, ...] = (".", "..", "x" * 128, "x" * 129, "\U0001f600" * 128, "\U0001f600" * 129, " a",
                                "a\u3000", "\u00a0", "a\u1680", "\u2029", "\x85", "'", "'\"", "a\\b", 2**63, 2**64,
                                -(2**63), 1.0, [], {"a": 1}, None, False)
    values += [json.dumps({**GOOD, f: v}) for f in ("event_id", "user_id", "item_id") for v in odd_ids]
    counts = compare(gateway, values, Limits(), unicode_differences)
    assert {"bad_json", "bad_utf8", "bad_number", "bad_id", "wrong_type", "bad_timestamp", "rating_out_of_range",
            "bad_value", "unknown_type", "unknown_field", "not_an_object", "id_too_long", "valid"} <= set(counts)


def test_the_poison_pills(gateway: Any, unicode_differences: set[str]) -> None:
    values = [v for _, v in bad_events()] + [v for _, v in generated_records(10_000)]
    counts = compare(gateway, values, Limits(), unicode_differences)
    assert counts["valid"] > 1000 and len(counts) >= 10, counts


def _drawn(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """``n`` examples of a strategy (Hypothesis' own search: shrinking aside, the inputs a property test meets)."""
    out: list[Any] = []

    @settings(max_examples=n, database=None, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value: Any) -> None:
        out.append(value)

    collect()
    return out


NUMBERS = st.one_of(st.integers(), st.integers(-3, 12), st.floats(allow_nan=True, allow_infinity=True),
                    st.floats(0, 6), st.sampled_from([0, -0.0, 0.5, 5, 5.0, 1e16, 1e-5, 2**53 + 1, 10**400]))
TEXTS = st.one_of(st.text(max_size=20), st.lists(id_chars, max_size=12).map("".join),
                  st.sampled_from([*EVENT_TYPES, "", "u1", "i1", "e1", ".", " x"]))
JSONISH = st.recursive(st.none() | st.booleans() | NUMBERS | TEXTS,
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3),
                       max_leaves=6)


@st.composite
def records(draw: Any) -> str | bytes:
    """A JSON-ish record: an event with fields dropped, retyped, renamed or added, written with Python's or a
    sloppy producer's syntax (constants, white space, escapes), sometimes cut or with a byte flipped."""
    def field(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        return draw(good) if draw(st.integers(0, 5)) else draw(bad)  # mostly right: valid events are drawn too

    obj: dict[str, Any] = {
        "event_id": field(st.text(st.characters(codec="utf-8"), min_size=1, max_size=8) | st.integers(0, 2**70),
                          TEXTS | JSONISH),
        "user_id": field(st.sampled_from(["u1", "196", "\u00e9"]) | st.integers(0, 999), TEXTS | NUMBERS | JSONISH),
        "item_id": field(st.sampled_from(["i1", "242"]) | st.integers(0, 999), TEXTS | JSONISH),
        "type": field(st.sampled_from(EVENT_TYPES), TEXTS | JSONISH),
        "value": field(st.none() | st.floats(0.5, 5) | st.integers(1, 5), NUMBERS | JSONISH),
        "ts": field(st.integers(0, 2**42) | st.integers(0, 2**40).map(float), NUMBERS | JSONISH),
    }
    if draw(st.integers(0, 5)) == 0:
        del obj[draw(st.sampled_from(sorted(obj)))]
    if draw(st.integers(0, 5)) == 0:
        obj[draw(TEXTS)] = draw(JSONISH)
    text = json.dumps(obj, allow_nan=True, ensure_ascii=draw(st.booleans()),
                      indent=draw(st.sampled_from([None, 0, 2])))
    how = draw(st.sampled_from(["as is"] * 6 + ["cut", "flip", "bytes"]))
    if how == "cut":
        return text[: draw(st.integers(0, len(text)))]
    if how == "flip":
        data = bytearray(text.encode("utf-8", "surrogatepass"))
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if how == "bytes":
        return draw(st.binary(max_size=60))
    return text


def test_generated_records(gateway: Any, unicode_differences: set[str]) -> None:
    values: list[bytes | str | None] = _drawn(records(), 5000)
    values += [json.dumps(v, allow_nan=True) for v in _drawn(near_valid, 2000)]
    values += _drawn(st.binary(max_size=300), 1000) + _drawn(st.text(max_size=300), 1000)
    counts = compare(gateway, values, Limits(), unicode_differences)
    assert counts.get("valid", 0) > 100 and len(counts) >= 12, counts
    counts = compare(gateway, values, STRICT, unicode_differences)
    assert counts.get("valid", 0) > 10, counts


def test_unicode_tables_differ_only_in_a_few_recent_characters(unicode_differences: set[str]) -> None:
    """The exception the comparison allows for messages stays small (characters assigned after the JVM's
    Unicode version); none of them is one the id rules or JSON's syntax look at."""
    assert len(unicode_differences) < 2000
    assert not {c for c in unicode_differences if c.isspace() or unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")}


def test_every_short_utf8_error(gateway: Any) -> None:
    """Every lead byte class followed by 0 to 3 bytes from each continuation-range edge, inside a record and at its
    end: the same decision and CPython's decoder message (the first error's position, length and kind)."""
    leads = [0x80, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF]
    follow = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0]
    tails = [bytes(t) for n in range(4) for t in itertools.product(follow, repeat=n)]
    seqs = [bytes([lead]) + t for lead in leads for t in tails]
    values: list[bytes | str | None] = [b'{"event_id": "' + s + end for end in (b'"}', b"") for s in seqs]
    counts = compare(gateway, values, Limits())
    assert sum(counts.values()) == len(values) == 2 * len(leads) * 1111 and len(counts) >= 2, counts
