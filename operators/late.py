"""Events behind the watermark.

Timestamps and bounded-out-of-orderness watermarks come from the events' ``ts`` in the JVM front
(:mod:`operators.front`), which records the watermark at each event's arrival. :class:`LateCheck` is the
late-event policy, applied by the intake (:class:`operators.intake.Intake`) with that watermark: events
behind it are counted (metric ``late``) and then applied (``apply``: the model learns them with its next step,
after events of a later time it has already learned) or sent to the dead-letter output with reason ``late_event``
(``dlq``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

LATE_POLICIES = ("apply", "dlq")


class LateCheck:
    """The late-event policy: ``apply`` (count, keep) or ``dlq`` (count, reject with reason ``late_event``)."""

    def __init__(self, policy: str) -> None:
        if policy not in LATE_POLICIES:
            raise ValueError(f"late event policy {policy!r} must be apply or dlq")
        self.policy = policy
        self._late: Any = None
        self.pending = 0

    def open(self, metrics_group: Any) -> None:
        self._late = metrics_group.counter("late")
        self.pending = 0

    def flush_count(self) -> None:
        """Add the late events counted since the last call to the ``late`` metric."""
        if self.pending:
            self._late.inc(self.pending)
            self.pending = 0

    def reject(self, event_id: Sequence[str], ts: Sequence[int], watermark: Sequence[int]) -> dict[int, str]:
        """Events as columns (``operators.front.FrontBatch``: each one's id, time and the watermark at its arrival)
        -> the index of each event to refuse (reason ``late_event``) -> why; empty with ``apply``. Late events are
        counted in :attr:`pending` until :meth:`flush_count` adds them to the metric (once per batch: a metric
        update is a call into the JVM)."""
        late = [i for i, (t, w) in enumerate(zip(ts, watermark, strict=True)) if t < w]
        self.pending += len(late)
        if self.policy == "apply":
            return {}
        return {i: late_message(event_id[i], ts[i], watermark[i]) for i in late}


def late_message(event_id: str, ts: int, watermark: int) -> str:
    """Why a late event is refused."""
    return f"event {event_id} at ts {ts} is {watermark - ts} ms behind the watermark"
