"""Events behind the watermark.

Timestamps and bounded-out-of-orderness watermarks come from the events' ``ts`` in the JVM front
(:mod:`operators.front`), which records the watermark at each event's arrival. :class:`LateCheck` is the
late-event policy, applied by the user operator (:class:`operators.windows.UserWindow`) with that
watermark: events behind it are counted (metric ``late``) and then applied (``apply``: the models are
order-insensitive sums, so state stays exact) or sent to the dead-letter output with reason
``late_event`` (``dlq``).
"""

from __future__ import annotations

import logging
from typing import Any

from udfs.events import Event

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

    def reject(self, event: Event, watermark: int) -> str | None:
        """None if the event is to be applied; else why it is refused (reason ``late_event``). Late events are
        counted in :attr:`pending` until :meth:`flush_count` adds them to the metric (once per batch: a metric
        update is a call into the JVM)."""
        if event.ts >= watermark:
            return None
        self.pending += 1
        if self.policy == "apply":
            return None
        return f"event {event.event_id} at ts {event.ts} is {watermark - event.ts} ms behind the watermark"
