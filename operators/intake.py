"""The intake: a user shard's front batches -> dead letters, de-duplicated events for the model, rank requests.

Keyed by user shard, fed by :func:`operators.front.event_batches` (one columnar :class:`operators.front.FrontBatch`
per shard and front window, validated on the JVM). Per batch it

* sends each refused record to ``DLQ_TAG`` with the front's reason and message (metric ``dlq.<reason>``);
* applies the late-event policy to the columns (:class:`operators.late.LateCheck`, ``job.late_events``);
* drops events whose ``event_id`` the user's state already holds (a redelivery: applied once; metric
  ``duplicates``; :class:`Seen`);
* emits the rest as one :class:`operators.records.EventBatch` (for every model subtask) and one
  :class:`operators.records.RankRequest` for the shard's users in it (``RANK_TAG``), and a
  :class:`operators.records.Tick` at the same time for each of the other ``job.shards`` shards (``RANK_TAG``): a
  model subtask learns, and writes its shards' item lists, on the timers of its own shards, which must therefore
  follow every event whatever shard its user is in.

On the final watermark of a bounded input it asks for every user of the shard (``final``). It holds no model
state: the model (:mod:`operators.model`) learns the events once the watermark passes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor

from operators.compat import put_all
from operators.front import FrontBatch
from operators.late import LateCheck
from operators.metrics_catalog import gauge_setter
from operators.parse import DLQ_TAG, Rejects
from operators.records import END_OF_TIME, PACKED, EventBatch, RankRequest, Tick, pack
from udfs.events import DEFAULT_LIMITS, Limits

RANK_TAG = OutputTag("rank-requests", PACKED)


@dataclass
class Seen:
    """A user's event ids (id -> event time) for de-duplication, and the user's newest event (by time, then id)."""

    ids: dict[str, int] = field(default_factory=dict)
    last_ts: int = -(2**63)
    last_id: str = ""

    def remember(self, event_id: str, ts: int, ttl_ms: int, max_ids: int) -> bool:
        """Record ``event_id``; False if it was seen before (a duplicate delivery to drop).

        Ids are forgotten only when the user has more than ``max_ids`` of them: those older (in event time) than
        ``ttl_ms`` before the user's newest event first, then the oldest, down to half."""
        ids = self.ids
        if event_id in ids:
            return False
        ids[event_id] = ts
        if (ts, event_id) > (self.last_ts, self.last_id):
            self.last_ts, self.last_id = ts, event_id
        if len(ids) > max_ids:
            horizon = self.last_ts - ttl_ms
            kept = sorted(((t, e) for e, t in ids.items() if t >= horizon))
            self.ids = {e: t for t, e in kept[-(max_ids // 2 or 1):]}
        return True


class Intake(KeyedProcessFunction):
    """Front batches of one user shard in; :class:`EventBatch` es (main output), :class:`RankRequest` s
    (``RANK_TAG``) and dead letters (``DLQ_TAG``) out (see the module docstring)."""

    def __init__(self, dedup_ttl_ms: int, dedup_max_ids: int, late_events: str = "apply",
                 limits: Limits = DEFAULT_LIMITS, *, shards: int, scored: bool = False) -> None:
        if shards < 1:
            raise ValueError(f"job.shards must be at least 1, got {shards!r}")
        self.shards = shards
        self.scored = scored  # an experiment runs: each rank request carries its events (RankRequest.events)
        self.late = LateCheck(late_events)
        self.rejects = Rejects(limits.dlq_payload_bytes)
        self.dedup_ttl_ms = dedup_ttl_ms
        self.dedup_max_ids = dedup_max_ids
        self._cache: dict[str, Seen] = {}
        self._armed: set[int] = set()
        self._loaded: set[int] = set()

    def open(self, runtime_context: RuntimeContext) -> None:
        self.seen = runtime_context.get_map_state(
            MapStateDescriptor("seen", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
        self._cache, self._armed, self._loaded = {}, set(), set()
        group = runtime_context.get_metrics_group()
        self._duplicates = group.counter("duplicates")
        self._events_in = group.counter("events_in")
        self._events_valid = group.counter("events_valid")
        self._users_held = gauge_setter(group, "users_held")
        self.late.open(group)
        self.rejects.open(group)

    def _users(self, key: int) -> dict[str, Seen]:
        """Every user of the subtask's shards seen so far: the shard's stored users are read once after a start or
        restore (a miss of ``MapState.get``, every new user, is a call into the JVM)."""
        if key not in self._loaded:
            self._cache.update(self.seen.items())
            self._loaded.add(key)
        return self._cache

    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        key = ctx.get_current_key()
        if key not in self._armed:  # the end of a bounded input (a set: once per shard in Flink too)
            ctx.timer_service().register_event_time_timer(END_OF_TIME)
            self._armed.add(key)
        batch = FrontBatch.unpack(value)
        for r in batch.rejects():  # validated on the JVM (operators.front): only the record is made here
            yield DLQ_TAG, self.rejects.record(r.payload, r.origin, r.reason, r.message)
        late = self.late.reject(batch.event_id, batch.ts, batch.watermark)
        for i, message in late.items():
            yield DLQ_TAG, self.rejects.record(batch.late_payload[i], batch.late_origin[i], "late_event", message)
        self.late.flush_count()
        self._events_in.inc(batch.n_records())
        events = batch.model_batch(drop=late)
        self._events_valid.inc(len(events))
        if len(events):
            yield from self._emit(key, events)
        self._users_held(len(self._cache))

    def _emit(self, key: int, events: Any) -> Iterable[Any]:
        users = self._users(key)
        keep = np.ones(len(events), dtype=np.bool_)
        touched: dict[str, Seen] = {}
        for n, (user, event_id, ts) in enumerate(zip(events.user_id.tolist(), events.event_id.tolist(),
                                                     events.ts.tolist(), strict=True)):
            seen = users.get(user)
            if seen is None:
                seen = users[user] = Seen()
            if not seen.remember(event_id, ts, self.dedup_ttl_ms, self.dedup_max_ids):
                keep[n] = False
                continue
            touched[user] = seen
        if not keep.all():
            self._duplicates.inc(int((~keep).sum()))
            events = events.take(keep)
        if not touched:
            return
        put_all(self.seen, touched)
        due = int(events.ts.max())
        yield pack(key, EventBatch(key, events))
        yield RANK_TAG, pack(key, self._request(key, sorted(touched), due, final=False,
                                                events=events if self.scored else None))
        for shard in range(self.shards):
            if shard != key:
                yield RANK_TAG, pack(shard, Tick(shard, due))

    def _request(self, key: int, users: list[str], due: int, final: bool, events: Any = None) -> RankRequest:
        seen = self._cache
        return RankRequest(key, users, [seen[u].last_id for u in users], [seen[u].last_ts for u in users], due,
                           final, events)

    def on_timer(self, timestamp, ctx):  # type: ignore[no-untyped-def]
        if timestamp == END_OF_TIME:  # the only timer this operator sets
            key = ctx.get_current_key()
            users = self._users(key)
            # the shard's users: every stored user of this key (MapState iterates the current key's entries)
            mine = sorted(u for u in self.seen if u in users)
            if mine:
                yield RANK_TAG, pack(key, self._request(key, mine, END_OF_TIME, final=True))
