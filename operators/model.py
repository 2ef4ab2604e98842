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
* With an experiment (:mod:`core.v2.experiments`), each user is ranked with the settings of their arm and the
  message names the arm; before a shard's requests are answered, their events (``RankRequest.events``) are scored
  against the lists their users were served before them (:class:`Shown`), and each arm's sums go to
  ``EXPERIMENTS_TAG`` (:class:`~operators.records.ArmTotals`) and to the counters ``arm.<name>``.
* The item lifecycle (docs/design.md, "Item lifecycle"): a catalog record or a learned event may make items gone
  (withdrawn, deleted, expired) or bring them back; on each shard's next timer the shard's lists holding them are
  recomputed (the gone items' own lists withdrawn: ``ItemLists.removed``) and the shard's users whose last list held
  one (:class:`Shown`) are ranked again (trigger ``catalog``), as are those who lost one that is back.
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
import pickle
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from pyflink.common import Types
from pyflink.datastream import KeyedBroadcastProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor

from core.v2 import experiments as X
from core.v2 import model as M
from core.v2.session import published_trending
from core.v2.settings import Settings
from operators.compat import put_all, subtask
from operators.metrics_catalog import RANKING_MS_BOUNDS, Histogram, counter_adder, gauge_setter
from operators.records import (
    END_OF_TIME,
    PICKLED,
    ArmTotals,
    CatalogDelete,
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
SHOWN_STATE = MapStateDescriptor("shown", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
"""Keyed by user shard: each ranked user's last list (:class:`Shown`)."""
_CORE = threading.Lock()
"""Held around every call into the model core. The subtasks of a TaskManager share one interpreter (thread mode),
so they never run model code at once anyway; numba compiling or loading a kernel in two of them at once
deadlocks in the embedded interpreter."""
USERS_TAG = OutputTag("user-lists", PICKLED)
EXPERIMENTS_TAG = OutputTag("experiment-totals", PICKLED)


def training(settings: Settings, compare_modes: Sequence[str], experiment: X.Experiment | None = None) -> bool:
    """Whether the stream trains the learned combiner: only while ``learned`` ranks (the mode, a compared one or an
    experiment's arm)."""
    arms = experiment is not None and experiment.ranks_learned
    return settings.train_combiner and ("learned" in (settings.mode, *compare_modes) or arms)


class Model(KeyedBroadcastProcessFunction):
    """Rank requests (keyed by user shard) and broadcast events and catalog in; :class:`RecsBatch` es out, item
    lists to ``ITEMS_TAG``, user lists to ``USERS_TAG`` (see the module docstring)."""

    def __init__(self, settings: Settings, compare_modes: Sequence[str] = (), stored_n: int | None = None, *,
                 shards: int, experiment: X.Experiment | None = None) -> None:
        if shards < 1:
            raise ValueError(f"job.shards must be at least 1, got {shards!r}")
        self.shards = shards
        for mode in compare_modes:
            if mode not in M.FUSION:
                raise ValueError(f"model.compare_modes entry {mode!r} must be one of {', '.join(M.FUSION)}")
        self.settings = settings
        self.compare_modes = tuple(compare_modes)
        self.stored_n = settings.top_n if stored_n is None else stored_n
        self.experiment = experiment
        self.train = training(settings, compare_modes, experiment)
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
        # the item lifecycle, per shard: the items gone when the shard last wrote its lists / ranked its users
        self.listed_gone: dict[int, np.ndarray] = {}
        self.ranked_gone: dict[int, np.ndarray] = {}
        self.shown = Shown(runtime_context.get_map_state(SHOWN_STATE))
        self.after_the_end = False  # a record came after the end of event time (logged once)
        self.combiner_seen = 0
        group = runtime_context.get_metrics_group()
        self._count = {"events_learned": counter_adder(group, "events_learned"),
                       "rankings": counter_adder(group, "rankings"),
                       "combiner_examples": counter_adder(group, "combiner_examples")}
        self._waiting = gauge_setter(group, "events_waiting")
        self._model_bytes = gauge_setter(group, "model_bytes")
        self._ranking_ms = Histogram(group, "ranking_ms", RANKING_MS_BOUNDS)
        self._arm_count: list[dict[str, Any]] = []
        for name in self.experiment.names if self.experiment is not None else ():
            arm = group.add_group("arm", name)
            self._arm_count.append({"events": counter_adder(arm, "events"), "hits": counter_adder(arm, "hits"),
                                    "lists": counter_adder(arm, "lists")})

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
        elif isinstance(record, CatalogUpdate | CatalogDelete):
            state = self.state
            assert state is not None
            if isinstance(record, CatalogUpdate):
                M.add_items(state, record.records)
            else:
                M.delete_items(state, [(record.item_id, record.position)])
            n = len(self._owners(state))
            if "itemcf" in self.settings.methods:  # the lists holding an item withdrawn or back (core.v2.model.settle)
                self.changed |= state.dirty[:n].astype(np.bool_)
        else:  # pragma: no cover - a wiring error
            raise TypeError(f"broadcast record {type(record).__name__} is not an EventBatch, CatalogUpdate or "
                            "CatalogDelete")

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
        went, came = self._flips(self.listed_gone, shard)
        gone = state.gone[:n]
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
        if "itemcf" in self.settings.methods:
            # an item back: its list again (a ranking may have refreshed it, and cleared its flag, while it was gone);
            # an item gone: its list withdrawn, not written (at the end of input: every gone item's of the shard)
            back = came[ours[came]]
            if len(back):
                M.refresh(state, among=np.isin(np.arange(n), back))
                rows = np.union1d(rows, back)
            rows = rows[~gone[rows]]
            removed = np.flatnonzero(ours & gone) if final else went[ours[went]]
        else:
            removed = np.zeros(0, dtype=np.int64)
        engaged = np.flatnonzero(ours & self.touched[:n])
        self.touched[engaged] = False
        if len(rows) or len(engaged) or len(removed):
            names = state.items.names
            lists = {names[i]: [(names[j], float(s)) for j, s in zip(state.nb_idx[i, : state.nb_len[i]].tolist(),
                                                                   state.nb_sim[i, : state.nb_len[i]].tolist(),
                                                                   strict=True)]
                     for i in rows.tolist()}
            users = {names[i]: int(state.i_users[i]) for i in np.union1d(rows, engaged).tolist()}
            yield ITEMS_TAG, ItemLists(lists, users, int(time.time() * 1000),
                                         tuple(names[i] for i in removed.tolist()))

    def _flips(self, seen: dict[int, np.ndarray], shard: int) -> tuple[np.ndarray, np.ndarray]:
        """The items gone, and the items back, since ``seen[shard]`` (the items gone when the shard last looked),
        which becomes the items gone now."""
        state = self.state
        assert state is not None
        gone = state.gone[: len(state.items)]
        last = seen.get(shard)
        if last is None:
            last = np.zeros(0, dtype=np.bool_)
        if len(last) < len(gone):
            last = np.concatenate([last, np.zeros(len(gone) - len(last), dtype=np.bool_)])
        seen[shard] = gone.copy()
        return np.flatnonzero(gone & ~last), np.flatnonzero(~gone & last)

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
        shard = int(ctx.get_current_key())
        yield from self._lists(shard, final=watermark == END_OF_TIME)
        # the shard's users whose last list holds an item gone since, or lost one that is back: ranked again
        went, came = self._flips(self.ranked_gone, shard)
        again = self.shown.affected(state, shard, went, came)
        stored = list(self.requests.get() or ())
        due: list[RankRequest] = []
        left = []
        for data in stored:
            request = unpack(data)
            if request.due <= watermark:
                due.append(request)
            else:
                left.append(data)
        if not due and not again:
            return
        if due and left:
            self.requests.update(left)
        elif due:
            self.requests.clear()
        scored = self._score(state, shard, due) if self.experiment is not None else None
        batch = self._rank(state, shard, due, final=watermark == END_OF_TIME, again=again)
        yield batch
        if scored is not None:
            yield from self._arm_totals(scored, batch)
        final = sorted({u for r in due if r.final for u in r.users})
        if final and "usercf" in self.settings.methods:
            lists = {u: M.user_neighbors(state, u) for u in final}
            yield USERS_TAG, UserLists({u: nb for u, nb in lists.items() if nb})

    def _rank(self, state: M.State, shard: int, requests: Sequence[RankRequest], final: bool = False,
              again: dict[str, tuple[str, int]] | None = None) -> RecsBatch:
        """One message per requested user (the newest request of a user wins), ranked with the current model; the
        users ``again`` (user -> the version of their last message) too, with the trigger ``catalog``, unless
        requested."""
        asked: dict[str, tuple[str, int, bool]] = {}
        for request in requests:
            for user, event_id, event_ts in zip(request.users, request.event_ids, request.event_ts, strict=True):
                old = asked.get(user)
                if old is None or (event_ts, event_id) >= (old[1], old[0]):
                    asked[user] = (event_id, event_ts, request.final or (old is not None and old[2]))
        triggers = {u: "final" if f else "events" for u, (_, _, f) in asked.items()}
        for user, (event_id, event_ts) in sorted((again or {}).items()):
            if user not in asked:
                asked[user] = (event_id, event_ts, False)
                triggers[user] = "catalog"
        users = list(asked)
        started = time.perf_counter()
        now = int(time.time() * 1000)
        by_user: dict[str, dict[str, Any]] = {}
        for arm, settings, group in self._groups(users):
            mode = settings.mode
            ranking = X.rank_as(state, settings, group, mode, n=self.stored_n)
            lists = M.render(state, ranking)
            self.shown.remember(state, shard, group, [asked[u][:2] for u in group], ranking)
            alternatives = {m: M.render(state, X.rank_as(state, settings, group, m)) for m in self.compare_modes}
            sizes = state.lpool.size[state.users.encode(group)].tolist()
            for r, user in enumerate(group):
                event_id, event_ts, _ = asked[user]
                msg = recs_message(user, lists[r], event_id, event_ts, now, sizes[r], triggers[user], mode, arm)
                if alternatives:
                    msg["alternatives"] = {m: recs_message(user, alt[r], event_id, event_ts, now, 0, "", m)["items"]
                                           for m, alt in alternatives.items()}
                by_user[user] = msg
        messages = [by_user[u] for u in users]
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

    def _groups(self, users: list[str]) -> list[tuple[str | None, Settings, list[str]]]:
        """The users by arm, each with the settings it ranks with: (arm name, settings, users); without an
        experiment one group, no arm, the job's settings."""
        exp = self.experiment
        if exp is None:
            return [(None, self.settings, users)]
        arm = exp.arms_of(users)
        return [(a.name, a.settings, [u for u, x in zip(users, arm.tolist(), strict=True) if x == i])
                for i, a in enumerate(exp.arms) if (arm == i).any()]

    def _score(self, state: M.State, shard: int, requests: Sequence[RankRequest]) -> tuple[X.Scored, np.ndarray,
                                                                                          np.ndarray]:
        """The engagements of ``requests`` (RankRequest.events), in canonical order, scored against the first
        ``top_n`` of the lists their users were last sent (the shard's :class:`Shown`, before this answer ranks
        them again): (per event: :class:`core.v2.experiments.Scored`, its arm, its time)."""
        exp = self.experiment
        assert exp is not None
        batch = M.Batch.concat([r.events for r in requests if r.events is not None])
        batch = batch.take(M.NEG_FLAG[batch.type] == 0)  # negative feedback is no engagement
        batch = batch.take(np.lexsort((batch.event_id, batch.ts)))
        shown = self.shown
        shown.load(state, shard)
        users = batch.user_id.tolist()
        at = np.array([shown.at.get(u, -1) for u in users], dtype=np.int64)
        rows = np.where(at >= 0, at, 0)
        width = min(self.settings.top_n, shown.rows.shape[1])
        lists = shown.rows[rows, :width] if len(shown.rows) else np.full((len(users), 0), -1, dtype=np.int32)
        version = [shown.version[r] if a >= 0 else ("", 0) for r, a in zip(rows.tolist(), at.tolist(), strict=True)]
        scored = X.score(lists, np.array([v[1] for v in version], dtype=np.int64), [v[0] for v in version],
                         np.where(at >= 0, np.arange(len(users)), -1), state.items.lookup(batch.item_id.tolist()),
                         batch.ts, batch.event_id.tolist())
        return scored, exp.arms_of(users), batch.ts

    def _arm_totals(self, scored: tuple[X.Scored, np.ndarray, np.ndarray], batch: RecsBatch) -> Iterable[Any]:
        """Each arm's sums of one answer (events scored, lists sent) to ``EXPERIMENTS_TAG`` and its counters."""
        exp = self.experiment
        assert exp is not None
        result, arm, ts = scored
        index = {a: i for i, a in enumerate(exp.names)}
        sent = np.array([index[m["arm"]] for m in batch.messages], dtype=np.int64)
        totals = X.tally(len(exp.arms), arm, result, sent)
        for i, name in enumerate(exp.names):
            if not (totals.events[i] or totals.lists[i]):
                continue
            when = ts[result.served & (arm == i)]
            count = self._arm_count[i]
            for key in ("events", "hits", "lists"):
                if getattr(totals, key)[i]:
                    count[key](int(getattr(totals, key)[i]))
            yield EXPERIMENTS_TAG, ArmTotals(exp.name, name, int(totals.events[i]), int(totals.hits[i]),
                                             float(totals.ndcg[i]), float(totals.ndcg_sq[i]), int(totals.lists[i]),
                                             int(totals.age_sum_ms[i]), int(totals.age_max_ms[i]),
                                             int(when.min()) if len(when) else None,
                                             int(when.max()) if len(when) else None)



class Shown:
    """The last list each user of the subtask's shards was sent, to find the users whose list holds an item that is
    gone (withdrawn, deleted, expired), and the items each lost that way while they stay gone (ranked again when one
    is back).

    In memory, one row of ``stored_n`` dense item ids (int32, -1 pads) per user the subtask has ranked: 4 bytes per
    item per user (200 bytes at ``model.stored_n`` 50), found by a vectorized scan of the shard's rows, only on a
    timer where an item went or came back (O(users of the shard x stored_n)). Checkpointed in keyed map state (per
    user shard: user -> (event id, event time, item ids, lost item ids)), written with every ranking and read back on
    the shard's first timer after a start or restore."""

    def __init__(self, map_state: Any) -> None:
        self.map_state = map_state
        self.loaded: set[int] = set()
        self.at: dict[str, int] = {}  # user -> row
        self.users: list[str] = []
        self.shard = np.zeros(0, dtype=np.int32)
        self.rows = np.zeros((0, 0), dtype=np.int32)
        self.version: list[tuple[str, int]] = []
        self.lost: dict[str, frozenset[str]] = {}  # users with items lost while they stay gone

    def load(self, state: M.State, shard: int) -> None:
        """The shard's rows from the keyed state (the current key must be ``shard``), once."""
        if shard in self.loaded:
            return
        self.loaded.add(shard)
        for user, data in list(self.map_state.items()):
            event_id, event_ts, items, lost = pickle.loads(data)
            ids = state.items.lookup(list(items))
            self._set(shard, user, (event_id, event_ts), ids[ids >= 0])
            if lost:
                self.lost[user] = frozenset(lost)

    def _set(self, shard: int, user: str, version: tuple[str, int], items: np.ndarray) -> None:
        row = self.at.get(user)
        if row is None:
            row = self.at[user] = len(self.users)
            self.users.append(user)
            self.version.append(version)
            if row >= len(self.shard):
                size = max(16, 2 * len(self.shard))
                self.shard = np.concatenate([self.shard, np.full(size - len(self.shard), -1, dtype=np.int32)])
                grown = np.full((size, max(self.rows.shape[1], len(items))), -1, dtype=np.int32)
                grown[: len(self.rows), : self.rows.shape[1]] = self.rows
                self.rows = grown
        if len(items) > self.rows.shape[1]:
            wider = np.full((len(self.rows), len(items)), -1, dtype=np.int32)
            wider[:, : self.rows.shape[1]] = self.rows
            self.rows = wider
        self.shard[row] = shard
        self.version[row] = version
        self.rows[row] = -1
        self.rows[row, : len(items)] = items

    def affected(self, state: M.State, shard: int, went: np.ndarray, came: np.ndarray) -> dict[str, tuple[str, int]]:
        """The shard's users whose last list holds an item of ``went``, or who lost one of ``came``: user -> the
        version (event id, event time) of their last message. The lost items are recorded."""
        self.load(state, shard)
        out: dict[str, tuple[str, int]] = {}
        if len(went) and len(self.users):
            mine = np.flatnonzero(self.shard[: len(self.users)] == shard)
            rows = self.rows[mine]
            hit = np.isin(rows, went)
            names = state.items.names
            for x in np.flatnonzero(hit.any(axis=1)).tolist():
                user = self.users[int(mine[x])]
                out[user] = self.version[int(mine[x])]
                self.lost[user] = self.lost.get(user, frozenset()) | {names[j] for j in rows[x][hit[x]].tolist()}
        if len(came) and self.lost:
            names = state.items.names
            back = {names[j] for j in came.tolist()}
            for user, had in self.lost.items():
                row = self.at.get(user)
                if row is not None and self.shard[row] == shard and had & back:
                    out[user] = self.version[row]
        return out

    def remember(self, state: M.State, shard: int, users: Sequence[str], versions: Sequence[tuple[str, int]],
                 ranking: M.Ranking) -> None:
        """The lists just ranked for ``users`` (of ``shard``, the current key) and the versions of their messages."""
        self.load(state, shard)
        names = state.items.names
        gone = state.gone
        put: dict[str, bytes] = {}
        for r, user in enumerate(users):
            items = ranking.item[r, : int(ranking.length[r])].astype(np.int32)
            self._set(shard, user, versions[r], items)
            lost = self.lost.get(user)
            if lost:  # kept while they stay gone
                lost = frozenset(i for i in lost if gone[state.items.get(i)])
                if lost:
                    self.lost[user] = lost
                else:
                    del self.lost[user]
            put[user] = pickle.dumps((versions[r][0], versions[r][1], tuple(names[j] for j in items.tolist()),
                                      tuple(sorted(lost or ()))), protocol=pickle.HIGHEST_PROTOCOL)
        put_all(self.map_state, put)
