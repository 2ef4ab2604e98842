"""The experiment's summaries: each arm's :class:`~operators.records.ArmTotals` from every model subtask, summed.

Keyed by arm. Sums what the model's answers scored since the last summary and since the start, in keyed state
(checkpointed: with exactly-once sinks every answer's totals are in exactly one committed summary), and emits one
summary per arm every ``experiments.window_ms`` of wall time and at the end of a bounded input (the final
watermark): a JSON object (:func:`summary`) for the ``experiments`` topic and the Redis hash of running totals
(``operators.redis_sink.ArmsToRedis``). Which answers fall in which summary depends on timing; their sums do not.
"""

from __future__ import annotations

import time
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from operators.records import END_OF_TIME, ArmTotals
from udfs.serde import dumps

FIELDS = ("events", "hits", "ndcg", "ndcg_sq", "lists", "age_sum_ms", "age_max_ms", "first_ts", "last_ts")
"""The summed fields of a summary (ages and times in ms; first_ts/last_ts: the event-time range of the events)."""


def zero() -> dict[str, Any]:
    return {"events": 0, "hits": 0, "ndcg": 0.0, "ndcg_sq": 0.0, "lists": 0, "age_sum_ms": 0, "age_max_ms": 0,
            "first_ts": None, "last_ts": None}


def add(acc: dict[str, Any], t: ArmTotals) -> None:
    """``acc`` += ``t`` (sums; the max age and the event-time range widened)."""
    for key in ("events", "hits", "ndcg", "ndcg_sq", "lists", "age_sum_ms"):
        acc[key] += getattr(t, key)
    acc["age_max_ms"] = max(acc["age_max_ms"], t.age_max_ms)
    if t.first_ts is not None:
        acc["first_ts"] = t.first_ts if acc["first_ts"] is None else min(acc["first_ts"], t.first_ts)
    if t.last_ts is not None:
        acc["last_ts"] = t.last_ts if acc["last_ts"] is None else max(acc["last_ts"], t.last_ts)


def summary(experiment: str, arm: str, window: dict[str, Any], totals: dict[str, Any], now_ms: int) -> str:
    """One summary as the ``experiments`` topic carries it: the window's sums at the top level, the running totals
    since the start under ``totals``."""
    return dumps({"experiment": experiment, "arm": arm, **{k: window[k] for k in FIELDS},
                  "totals": {k: totals[k] for k in FIELDS}, "updated_at": now_ms})


class ArmSummaries(KeyedProcessFunction):
    """:class:`ArmTotals` in (keyed by arm), JSON summaries out (see the module docstring)."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self.acc = runtime_context.get_state(ValueStateDescriptor("arm-summary", Types.PICKLED_BYTE_ARRAY()))

    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        t: ArmTotals = value
        acc = self.acc.value() or {"experiment": t.experiment, "window": zero(), "totals": zero(), "armed": False}
        add(acc["window"], t)
        add(acc["totals"], t)
        timers = ctx.timer_service()
        if timers.current_watermark() == END_OF_TIME:  # after the end of input: no timer fires any more
            yield from self._flush(acc, ctx.get_current_key())
        elif not acc["armed"]:
            timers.register_processing_time_timer(timers.current_processing_time() + self.window_ms)
            timers.register_event_time_timer(END_OF_TIME)
            acc["armed"] = True
        self.acc.update(acc)

    def on_timer(self, timestamp, ctx):  # type: ignore[no-untyped-def]
        acc = self.acc.value()
        if acc is None:
            return
        yield from self._flush(acc, ctx.get_current_key())
        acc["armed"] = False
        self.acc.update(acc)

    def _flush(self, acc: dict[str, Any], arm: str) -> Any:
        window = acc["window"]
        if window["events"] or window["lists"]:
            yield summary(acc["experiment"], arm, window, acc["totals"], int(time.time() * 1000))
        acc["window"] = zero()
