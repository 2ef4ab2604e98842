"""The model operator: every event, learned in event-time order once the watermark passes it; rankings per user shard.

Every subtask holds a whole copy of the model (:class:`core.v2.state.State`) and learns every event, in canonical
order (event time, then event id), with :func:`core.v2.model.learn`; the copies are the same function of the same
events, so they are equal whatever the parallelism, the batching or the timing. The operator holds no model
arithmetic: it owns the state, the timers and the I/O, and calls :mod:`core.v2.model`.

* **Broadcast input** (every subtask): the intake's :class:`~operators.records.EventBatch` es and the catalog's
  :class:`~operators.records.CatalogUpdate` s. Each is appended to the broadcast state (the model's log, the
  checkpointed truth) and to the working copy: events wait in ``pending`` until the watermark passes them,
  catalog records are added at once (they change rankings only).
* **Keyed input** (by user shard): :class:`~operators.records.RankRequest` s and :class:`~operators.records.Tick` s.
  Either sets an event-time timer of its shard at its ``due`` time (a request also waits in keyed list state).
  When a timer fires, the subtask first learns every pending event at or before the watermark, then refreshes and
  emits (``ITEMS_TAG``) the changed neighbour lists of the timer's shard's items (``shard_of(item, job.shards)``),
  then ranks the requested users that are due (:func:`core.v2.model.rank`, in ``model.hybrid.mode`` and the
  ``model.compare_modes``) and emits one :class:`~operators.records.RecsBatch`.
* Item lists are owned by shard, not by subtask: each list is written by the one subtask that holds its shard, at
  any parallelism (a subtask may hold no shard at all). The intake sends every shard a tick for every batch, so each
  shard's timers follow every event, also when the shard's own users are quiet.
* On the final watermark of a bounded input (or a draining stop) every shard's timer at the end of time writes
  every list of the shard from the final model; every user is ranked with it (the intake's final requests), and
  the user-CF lists of the shard's users go to ``USERS_TAG``. The end of event time can reach a subtask before an
  intake's last records do (through the other inputs, while that intake's were idle): records after it are
  answered, learned and written at once, since no timer fires any more.

After a restore a subtask rebuilds its copy from the log in its broadcast state (the same events in canonical order:
the same model); the log holds every event since the start of the state (docs/design.md, "State").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from pyflink.common import Types
from pyflink.datastream import KeyedBroadcastProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor

from core.v2 import model as M
from core.v2.session import published_trending
from core.v2.settings import Settings
from operators.compat import subtask
from operators.metrics_catalog import RANKING_MS_BOUNDS, Histogram, counter_adder, gauge_setter
from operators.records import (
    END_OF_TIME,
    PICKLED,
    CatalogUpdate,
    EventBatch,
    ItemLists,
    RankRequest,
    RecsBatch,
    Tick,
    UserLists,
    unpack,
)
from udfs.serde import recs_message
from udfs.shard import shard_of

logger = logging.getLogger(__name__)

LOG_STATE = MapStateDescriptor("model-log", Types.LONG(), Types.PICKLED_BYTE_ARRAY())
"""The broadcast state: every broadcast record received, by arrival number (packed bytes)."""
ITEMS_TAG = OutputTag("item-lists", PICKLED)
_CORE = threading.Lock()
"""Held around every call into the model core. The subtasks of a TaskManager share one interpreter (thread mode),
so they never run model code at once anyway; numba compiling or loading a kernel in two of them at once
deadlocks in the embedded interpreter."""
USERS_TAG = OutputTag("user-lists", PICKLED)


def training(settings: Settings, compare_modes: Sequence[str]) -> bool:
    """Whether the stream trains the learned combiner: only while ``learned`` ranks (the mode or a compared one)."""
    return settings.train_combiner and "learned" in (settings.mode, *compare_modes)


class Model(KeyedBroadcastProcessFunction):
    """Rank requests (keyed by user shard) and broadcast events and catalog in; :class:`RecsBatch` es out, item
    lists to ``ITEMS_TAG``, user lists to ``USERS_TAG`` (see the module docstring)."""

    def __init__(self, settings: Settings, compare_modes: Sequence[str] = (), stored_n: int | None = None, *,
                 shards: int) -> None:
        if shards < 1:
            raise ValueError(f"job.shards must be at least 1, got {shards!r}")
        self.shards = shards
        for mode in compare_modes:
            if mode not in M.FUSION:
                raise ValueError(f"model.compare_modes entry {mode!r} must be one of {', '.join(M.FUSION)}")
        self.settings = settings
        self.compare_modes = tuple(compare_modes)
        self.stored_n = settings.top_n if stored_n is None else stored_n
        self.train = training(settings, compare_modes)
        self.state: M.State | None = None

    def open(self, runtime_context: RuntimeContext) -> None:
        self.requests = runtime_context.get_list_state(ListStateDescriptor("requests", Types.PICKLED_BYTE_ARRAY()))
        self.index, self.parallelism = subtask(runtime_context)
        self.state = None
        self.pending: list[M.Batch] = []
        self.seq = 0
        self.owner = np.zeros(0, dtype=np.int32)  # per item: the shard whose timers write its list
        # per item, since its shard last emitted: its list changed (the core's dirty flag is not it: a ranking
        # refreshes the rows it reads and clears theirs); it was engaged (its count of users changed)
        self.changed = np.zeros(0, dtype=np.bool_)
        self.touched = np.zeros(0, dtype=np.bool_)
        self.held: set[int] = set()  # the shards this subtask has had records of, each with a timer at the end of time
        self.after_the_end = False  # a record came after the end of event time (logged once)
        self.combiner_seen = 0
        group = runtime_context.get_metrics_group()
        self._count = {"events_learned": counter_adder(group, "events_learned"),
                       "rankings": counter_adder(group, "rankings"),
                       "combiner_examples": counter_adder(group, "combiner_examples")}
        self._waiting = gauge_setter(group, "events_waiting")
        self._model_bytes = gauge_setter(group, "model_bytes")
        self._ranking_ms = Histogram(group, "ranking_ms", RANKING_MS_BOUNDS)

    # -- state ------------------------------------------------------------------------------------------------------
    def _model(self, ctx: Any) -> M.State:
        """The working copy, rebuilt from the broadcast state's log after a start or restore."""
        if self.state is None:
            self.state = M.new_state(self.settings)
            log = sorted(ctx.get_broadcast_state(LOG_STATE).items())
            for _, data in log:
                self._apply(unpack(data))
            self.seq = log[-1][0] + 1 if log else 0
            self.combiner_seen = int(self.state.comb_n[0])
            if log:
                logger.info("model subtask %d: %d records of its log read back, %d events wait for the watermark",
                            self.index, len(log), sum(map(len, self.pending)))
        return self.state

    def _apply(self, record: Any) -> None:
        if isinstance(record, EventBatch):
            self.pending.append(record.events)
        elif isinstance(record, CatalogUpdate):
            assert self.state is not None
            M.add_items(self.state, record.records)
        else:  # pragma: no cover - a wiring error
            raise TypeError(f"broadcast record {type(record).__name__} is not an EventBatch or CatalogUpdate")

    def process_broadcast_element(self, value, ctx):  # type: ignore[no-untyped-def]
        with _CORE:
            self._model(ctx)
            ctx.get_broadcast_state(LOG_STATE).put(self.seq, value)
            self.seq += 1
            self._apply(unpack(value))
            self._waiting(sum(map(len, self.pending)))
            if ctx.current_watermark() == END_OF_TIME:
                # after the end of event time (see process_element): learned now, and the changed lists written
                self._learn(END_OF_TIME)
                return [out for shard in sorted(self.held) for out in self._lists(shard, final=False)]
        return iter(())

    def _learn(self, watermark: int) -> None:
        """Learn every pending event at or before ``watermark``; mark the items whose lists changed and the items
        the events engage."""
        state = self.state
        assert state is not None
        if self.pending:
            batch = M.Batch.concat(self.pending)
            due = batch.ts <= watermark
            self.pending = [batch.take(~due)] if not due.all() else []
            if due.any():
                learned = batch.take(due)
                M.learn(state, learned, train=self.train)
                self._count["events_learned"](len(learned))
                n = len(self._owners(state))
                if "itemcf" in self.settings.methods:
                    self.changed |= state.dirty[:n].astype(np.bool_)
                self.touched[state.items.encode(learned.item_id.tolist())] = True
        self._waiting(sum(map(len, self.pending)))

    def _lists(self, shard: int, final: bool) -> Iterable[Any]:
        """Emit the shard's changed item lists (at the end of input: all of them, from the final model) and the
        distinct users of its items engaged since it last emitted."""
        state = self.state
        assert state is not None
        owner = self._owners(state)
        n = len(state.items)
        ours = owner[:n] == shard
        if "itemcf" not in self.settings.methods:
            rows = np.zeros(0, dtype=np.int64)
        elif final and not self.settings.refresh_on_norms:  # the end: every list exact with the final norms
            rows = M.refresh(state, all_rows=True, among=ours)
        else:
            rows = np.flatnonzero(ours & self.changed[:n])
            M.refresh(state, among=ours & self.changed[:n])  # those a ranking has not refreshed since
        if final:
            # the end of input: every list of the shard from the final model, whatever an earlier run wrote
            rows = np.union1d(rows, np.flatnonzero(ours & (state.nb_len[:n] > 0)))
        self.changed[rows] = False
        engaged = np.flatnonzero(ours & self.touched[:n])
        self.touched[engaged] = False
        if len(rows) or len(engaged):
            names = state.items.names
            lists = {names[i]: [(names[j], float(s)) for j, s in zip(state.nb_idx[i, : state.nb_len[i]].tolist(),
                                                                   state.nb_sim[i, : state.nb_len[i]].tolist(),
                                                                   strict=True)]
                     for i in rows.tolist()}
            users = {names[i]: int(state.i_users[i]) for i in np.union1d(rows, engaged).tolist()}
            yield ITEMS_TAG, ItemLists(lists, users, int(time.time() * 1000))

    def _owners(self, state: M.State) -> np.ndarray:
        """Per item: the shard that writes its list (extended for new items, with their flags)."""
        n = len(state.items)
        old = len(self.owner)
        if old < n:
            names = state.items.names
            new = np.fromiter((shard_of(names[i], self.shards) for i in range(old, n)), dtype=np.int32, count=n - old)
            self.owner = np.concatenate([self.owner, new])
            self.changed = np.concatenate([self.changed, np.zeros(n - old, dtype=np.bool_)])
            self.touched = np.concatenate([self.touched, np.zeros(n - old, dtype=np.bool_)])
        return self.owner

    # -- keyed side -------------------------------------------------------------------------------------------------
    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        record: RankRequest | Tick = unpack(value)
        timers = ctx.timer_service()
        if isinstance(record, RankRequest):
            self.requests.add(value)
        if timers.current_watermark() == END_OF_TIME:
            # The end of event time has passed already: it came through the other inputs while this one was idle
            # (a settled source goes idle), and no timer fires any more. Answered now, as that timer would have.
            if not self.after_the_end:
                logger.info("model subtask %d: records of shard %d came after the end of event time (their input "
                            "was idle when the others ended): answered at once", self.index, record.shard)
            self.after_the_end = True
            self.held.add(record.shard)
            with _CORE:
                return list(self._on_timer(END_OF_TIME, ctx))
        timers.register_event_time_timer(record.due)
        if record.shard not in self.held:  # the shard's final lists at the end of input (a set in Flink too)
            timers.register_event_time_timer(END_OF_TIME)
            self.held.add(record.shard)
        return iter(())

    def on_timer(self, timestamp, ctx):  # type: ignore[no-untyped-def]
        with _CORE:
            return list(self._on_timer(timestamp, ctx))

    def _on_timer(self, timestamp: int, ctx: Any) -> Iterable[Any]:
        state = self._model(ctx)
        # the final watermark fires every timer at once: the first one of the subtask learns everything, each shard's
        # writes its lists and answers its requests
        watermark = END_OF_TIME if timestamp == END_OF_TIME else max(timestamp, ctx.timer_service().current_watermark())
        self._learn(watermark)
        yield from self._lists(int(ctx.get_current_key()), final=watermark == END_OF_TIME)
        stored = list(self.requests.get() or ())
        due: list[RankRequest] = []
        left = []
        for data in stored:
            request = unpack(data)
            if request.due <= watermark:
                due.append(request)
            else:
                left.append(data)
        if not due:
            return
        if left:
            self.requests.update(left)
        else:
            self.requests.clear()
        yield self._rank(state, due, final=watermark == END_OF_TIME)
        final = sorted({u for r in due if r.final for u in r.users})
        if final and "usercf" in self.settings.methods:
            lists = {u: M.user_neighbors(state, u) for u in final}
            yield USERS_TAG, UserLists({u: nb for u, nb in lists.items() if nb})

    def _rank(self, state: M.State, requests: Sequence[RankRequest], final: bool = False) -> RecsBatch:
        """One message per requested user (the newest request of a user wins), ranked with the current model."""
        asked: dict[str, tuple[str, int, bool]] = {}
        for request in requests:
            for user, event_id, event_ts in zip(request.users, request.event_ids, request.event_ts, strict=True):
                old = asked.get(user)
                if old is None or (event_ts, event_id) >= (old[1], old[0]):
                    asked[user] = (event_id, event_ts, request.final or (old is not None and old[2]))
        users = list(asked)
        started = time.perf_counter()
        mode = self.settings.mode
        lists = M.render(state, M.rank(state, users, mode, n=self.stored_n))
        alternatives = {m: M.render(state, M.rank(state, users, m)) for m in self.compare_modes}
        now = int(time.time() * 1000)
        ids = state.users.encode(users)
        sizes = state.lpool.size[ids].tolist()
        messages = []
        for r, user in enumerate(users):
            event_id, event_ts, final = asked[user]
            msg = recs_message(user, lists[r], event_id, event_ts, now, sizes[r], "final" if final else "events", mode)
            if alternatives:
                msg["alternatives"] = {m: recs_message(user, alt[r], event_id, event_ts, now, 0, "", m)["items"]
                                       for m, alt in alternatives.items()}
            messages.append(msg)
        took = (time.perf_counter() - started) * 1000
        self._count["rankings"](len(users))
        self._ranking_ms.observe([took / len(users)] * len(users))
        self._model_bytes(state.nbytes())
        trending = published_trending(state, self.settings.trending_size)
        combiner = None
        seen = int(state.comb_n[0])
        if self.train and (seen != self.combiner_seen or final):
            self._count["combiner_examples"](seen - self.combiner_seen)
            self.combiner_seen = seen
            combiner = {"n_seen": seen, "weights": M.combiner(state)}
        return RecsBatch(messages, trending, combiner)

