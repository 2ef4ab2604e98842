"""operators.late.LateCheck: events behind the watermark are counted, then applied or sent to the DLQ.

A unit test with a stand-in context (the watermark is what matters); its place in the job (the user operator)
is covered by the mini-cluster tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from operators.late import LateCheck


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
    out = check.reject(["e1"], [ts], [watermark])
    check.flush_count()
    return out.get(0), rt.late.n


def test_the_count_reaches_the_metric_once_per_batch() -> None:
    check, rt = LateCheck("apply"), Runtime()
    check.open(rt)
    check.reject([f"e{ts}" for ts in (1000, 2000, 6000)], [1000, 2000, 6000], [5000] * 3)
    check.reject(["e3000"], [3000], [5000])
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


def test_columns_refuse_exactly_the_events_behind_their_own_watermark() -> None:
    check, rt = LateCheck("dlq"), Runtime()
    check.open(rt)
    out = check.reject(["a", "b", "c", "d"], [100, 200, 300, 400], [150, 150, 301, -(2**63)])
    assert out == {0: "event a at ts 100 is 50 ms behind the watermark",
                   2: "event c at ts 300 is 1 ms behind the watermark"}
    assert check.pending == 2
    assert LateCheck("apply").reject(["a"], [100], [150]) == {}


def test_unknown_policy_is_an_error() -> None:
    with pytest.raises(ValueError, match="late event policy 'drop' must be apply or dlq"):
        LateCheck("drop")
