"""operators.late.LateCheck: events behind the watermark are counted, then applied or sent to the DLQ.

A unit test with a stand-in context (the watermark is what matters); its place in the job (the user operator)
is covered by the mini-cluster tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from operators.late import LateCheck
from udfs.events import Event


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def inc(self, n: int = 1) -> None:
        self.n += n


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


def run(policy: str, ts: int, watermark: int) -> tuple[str | None, int]:
    check, rt = LateCheck(policy), Runtime()
    check.open(rt)
    out = check.reject(Event("e1", "u", "i", "rate", 4.0, ts), watermark)
    check.flush_count()
    return out, rt.late.n


def test_the_count_reaches_the_metric_once_per_batch() -> None:
    check, rt = LateCheck("apply"), Runtime()
    check.open(rt)
    for ts in (1000, 2000, 6000, 3000):
        check.reject(Event(f"e{ts}", "u", "i", "rate", 4.0, ts), 5000)
    assert rt.late.n == 0 and check.pending == 3
    check.flush_count()
    check.flush_count()
    assert rt.late.n == 3 and check.pending == 0


def test_on_time_events_pass_uncounted() -> None:
    assert run("dlq", ts=5000, watermark=5000) == (None, 0)


def test_late_events_are_applied_and_counted() -> None:
    assert run("apply", ts=1000, watermark=5000) == (None, 1)


def test_late_events_are_refused_with_the_reason() -> None:
    out, late = run("dlq", ts=1000, watermark=5000)
    assert late == 1
    assert out == "event e1 at ts 1000 is 4000 ms behind the watermark"


def test_unknown_policy_is_an_error() -> None:
    with pytest.raises(ValueError, match="late event policy 'drop' must be apply or dlq"):
        LateCheck("drop")
