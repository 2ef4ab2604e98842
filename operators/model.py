"""The model operator: every event, learned in event-time order once the watermark passes it; rankings per user shard.

Every subtask holds a whole copy of the model (:class:`core.v2.state.State`) and learns every event, in canonical
order (event time, then event id), with :func:`core.v2.model.learn`; the copies are the same function of the same
events, so they are equal whatever the parallelism, the batching or the timing. The operator holds no model
arithmetic: it owns the state, the timers and the I/O, and calls :mod:`core.v2.model`.

* **Broadcast input** (every subtask): the intake's :class:`~operators.records.EventBatch` es and the catalog's
  :class:`~operators.records.CatalogUpdate` s. Each is appended to the broadcast state (the model's log, the
  checkpointed truth) and to the working copy: events wait in ``pending`` until the watermark passes them,
  catalog records are added at once (they change rankings only).
* **Keyed input** (by user shard): :class:`~operators.records.RankRequest` s. A request waits (keyed list state)
  for an event-time timer at its ``due`` time; when it fires, the subtask first learns every pending event at or
  before the watermark, then ranks the requested users (:func:`core.v2.model.rank`, in ``model.hybrid.mode`` and
  the ``model.compare_modes``) and emits one :class:`~operators.records.RecsBatch`.
* After each learning step a subtask refreshes and emits (``ITEMS_TAG``) the changed neighbour lists of *its*
  items (``crc32(item) % parallelism`` = its index): each list is written by one subtask.
* On the final watermark of a bounded input every user is ranked with the final model (the intake's final
  requests), and the user-CF lists of the shard's users go to ``USERS_TAG``.

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

    def __init__(self, settings: Settings, compare_modes: Sequence[str] = (), stored_n: int | None = None) -> None:
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
        self.mine = np.zeros(0, dtype=np.bool_)  # per item: this subtask writes its list
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
        return iter(())

    def _learn(self, watermark: int, final: bool) -> Iterable[Any]:
        """Learn every pending event at or before ``watermark``; emit this subtask's changed item lists."""
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
                engaged = np.unique(state.items.encode(learned.item_id.tolist()))
            else:
                engaged = np.zeros(0, dtype=np.int64)
        else:
            engaged = np.zeros(0, dtype=np.int64)
        self._waiting(sum(map(len, self.pending)))
        mine = self._mine(state)
        exact = final and not self.settings.refresh_on_norms  # the end: every list exact with the final norms
        rows = M.refresh(state, all_rows=exact, among=mine) if "itemcf" in self.settings.methods else engaged[:0]
        if final and len(rows) < len(mine):
            # the end of input: every list of this subtask from the final model, whatever an earlier run wrote
            listed = np.flatnonzero(mine[: len(state.items)] & (state.nb_len[: len(state.items)] > 0))
            rows = np.union1d(rows, listed)
        engaged = engaged[mine[engaged]]
        if len(rows) or len(engaged):
            names = state.items.names
            lists = {names[i]: [(names[j], float(s)) for j, s in zip(state.nb_idx[i, : state.nb_len[i]].tolist(),
                                                                   state.nb_sim[i, : state.nb_len[i]].tolist(),
                                                                   strict=True)]
                     for i in rows.tolist()}
            users = {names[i]: int(state.i_users[i]) for i in np.union1d(rows, engaged).tolist()}
            yield ITEMS_TAG, ItemLists(lists, users, int(time.time() * 1000))

    def _mine(self, state: M.State) -> np.ndarray:
        """Per item: whether this subtask writes its neighbour list (extended for new items)."""
        n = len(state.items)
        if len(self.mine) < n:
            names = state.items.names
            new = np.fromiter((shard_of(names[i], self.parallelism) == self.index for i in range(len(self.mine), n)),
                              dtype=np.bool_, count=n - len(self.mine))
            self.mine = np.concatenate([self.mine, new])
        return self.mine

    # -- keyed side -------------------------------------------------------------------------------------------------
    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        request: RankRequest = unpack(value)
        self.requests.add(value)
        ctx.timer_service().register_event_time_timer(request.due)
        return iter(())

    def on_timer(self, timestamp, ctx):  # type: ignore[no-untyped-def]
        with _CORE:
            return list(self._on_timer(timestamp, ctx))

    def _on_timer(self, timestamp: int, ctx: Any) -> Iterable[Any]:
        state = self._model(ctx)
        # the final watermark fires every timer at once: the first one learns and answers everything
        watermark = END_OF_TIME if timestamp == END_OF_TIME else max(timestamp, ctx.timer_service().current_watermark())
        yield from self._learn(watermark, final=watermark == END_OF_TIME)
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
        items, scores = M.trending(state)
        names = state.items.names
        # trending scores are decayed sums: published rounded, as recommendation scores are (udfs.serde.recs_message)
        trending = [(names[i], round(float(s), 6)) for i, s in zip(items[: self.settings.top_n].tolist(),
                                                                   scores[: self.settings.top_n].tolist(), strict=True)]
        combiner = None
        seen = int(state.comb_n[0])
        if self.train and (seen != self.combiner_seen or final):
            self._count["combiner_examples"](seen - self.combiner_seen)
            self.combiner_seen = seen
            combiner = {"n_seen": seen, "weights": M.combiner(state)}
        return RecsBatch(messages, trending, combiner)

