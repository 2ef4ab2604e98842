"""operators.late.LateEvents: events behind the watermark are counted, then applied or sent to the DLQ.

A unit test with a stand-in context (the watermark is what matters); the operator's place in the job
is covered by the mini-cluster tests.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from operators.late import EventTime, LateEvents
from operators.parse import DLQ_TAG
from udfs.events import Event


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def inc(self) -> None:
        self.n += 1


class Ctx:
    def __init__(self, watermark: int) -> None:
        self.watermark = watermark

    def timer_service(self) -> Any:
        return self

    def current_watermark(self) -> int:
        return self.watermark


class Runtime:
    def __init__(self) -> None:
        self.late = Counter()

    def get_metrics_group(self) -> Any:
        return self

    def counter(self, name: str) -> Counter:
        assert name == "late"
        return self.late


def run(policy: str, ts: int, watermark: int) -> tuple[list[Any], int]:
    op, rt = LateEvents(policy), Runtime()
    op.open(rt)  # type: ignore[arg-type]
    out = list(op.process_element(Event("e1", "u", "i", "rate", 4.0, ts), Ctx(watermark)))
    return out, rt.late.n


def test_on_time_events_pass_uncounted() -> None:
    out, late = run("dlq", ts=5000, watermark=5000)
    assert out == [Event("e1", "u", "i", "rate", 4.0, 5000)] and late == 0


def test_late_events_are_applied_and_counted() -> None:
    out, late = run("apply", ts=1000, watermark=5000)
    assert out == [Event("e1", "u", "i", "rate", 4.0, 1000)] and late == 1


def test_late_events_go_to_the_dlq_with_the_reason() -> None:
    out, late = run("dlq", ts=1000, watermark=5000)
    assert late == 1 and len(out) == 1 and out[0][0] is DLQ_TAG
    record = json.loads(out[0][1])
    assert record["reason"] == "late_event"
    assert "4000 ms behind the watermark" in record["error"]
    assert json.loads(record["payload"])["event_id"] == "e1"


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="late event policy 'drop' must be apply or dlq"):
        LateEvents("drop")


def test_event_time_is_the_ts_field() -> None:
    assert EventTime().extract_timestamp(Event("e", "u", "i", "view", 1.0, 1234), 99) == 1234
