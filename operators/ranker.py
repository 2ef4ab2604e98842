"""The ranker: rank requests (keyed by user shard) joined with the broadcast model state.

Every ranker subtask receives every update of the shared model pieces (one broadcast stream, a union
of four kinds of record) and keeps them in broadcast state, with a Python working copy inside a
:class:`core.hybrid.HybridRecommender` (whose per-user pieces stay empty: they come with the request):

* ``items``: item-CF neighbour lists, item statistics (distinct users, latest time, rating sums for
  the baseline) and the engagements that feed the trending window (``ItemWindow``);
* ``users``: user-CF neighbour lists (``UserSimWindow``); ``user_items``: the users' user-CF rows
  (``UserWindow``), which the user-CF score ``Σ_v sim(u, v)·w_vj`` reads;
* ``catalog``: catalog records from the ``items`` topic (content vectors, titles), usable without a
  restart from the first ranking of the next window on (they are applied together, once per window).

The trending state (every item's counts) is written to broadcast state whole only every
``TRENDING_LOG_MAX`` ``items`` records; in between each record's engagements are logged as one entry, and a
restore replays them after the last whole copy (the same additions in the same order).

A rank request batch (one per user shard per window) is answered ``job.rank_delay_ms`` after it
arrives (rounded up to 10 ms), which gives the neighbour lists of the window that produced it time
to arrive; requests arriving while a batch waits join it. For each user the
ranker first trains the learned combiner by recommend-then-learn (the items the user engaged for the
first time in the window are positives against candidates built from the state without them), then
ranks with :meth:`HybridRecommender.rank_view` in ``model.hybrid.mode`` (and the modes of
``model.compare_modes``, carried in the message as ``alternatives``). The combiner is state of the
user shard (keyed ``ValueState``), so it is checkpointed, and its weights go out with the results.
On the final watermark of a bounded input every pending request is answered with the final state.

Overload: a user shard may rank for ``job.rank_budget_ms`` per window; the requests left wait, in order, for
the next window, where a user who asked again keeps the place and is answered once with the newer request.
Under a sustained overload the ranker thus sheds intermediate rankings instead of falling ever further behind
(a user's answer reflects all their events; it arrives later). The ``rank_requests_deferred`` counter
(Flink metrics) counts the deferred requests.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedBroadcastProcessFunction, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor

from core.fusion import LogisticCombiner
from core.hybrid import FEATURES, HybridRecommender, UserLog, UserView, decayed_history
from core.itemcf import Neighbors
from operators.compat import put_all
from operators.metrics_catalog import RANKING_MS_BOUNDS, Histogram, gauge_setter
from operators.windows import END_OF_TIME, pack, packed_shard, unpack
from udfs.serde import recs_message

logger = logging.getLogger(__name__)

NEIGHBORS_STATE = MapStateDescriptor("neighbors", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
USER_NEIGHBORS_STATE = MapStateDescriptor("user-neighbors", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
USER_ITEMS_STATE = MapStateDescriptor("user-items", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
ITEM_STATS_STATE = MapStateDescriptor("item-stats", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
CATALOG_STATE = MapStateDescriptor("catalog", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
GLOBALS_STATE = MapStateDescriptor("globals", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
BROADCAST_STATES = (NEIGHBORS_STATE, USER_NEIGHBORS_STATE, USER_ITEMS_STATE, ITEM_STATS_STATE, CATALOG_STATE,
                    GLOBALS_STATE)
RANK_TICK_MS = 10
TRENDING_LOG_MAX = 100  # "items" records whose engagements are logged before the trending state is written whole
PackedNeighbors = tuple[tuple[str, ...], array]
COMBINER_LOG_EVERY = 1000  # log a shard's combiner weights each time it has learned this many more examples


def pack_neighbors(neighbors: Neighbors) -> PackedNeighbors:
    """A user-CF neighbour list as the ranker holds it: the names interned (one string object per user id, however
    many lists name it) and the similarities in one array of doubles (the same floats). A ranker holds a list
    for every user, several times smaller this way than as a list of tuples."""
    return tuple(sys.intern(v) for v, _ in neighbors), array("d", [s for _, s in neighbors])


def unpack_neighbors(packed: PackedNeighbors | None) -> Neighbors:
    """The list :func:`pack_neighbors` packed (empty for None)."""
    return list(zip(packed[0], packed[1], strict=True)) if packed is not None else []


class Ranker(KeyedBroadcastProcessFunction):
    """Rank request batches in; ``("recs", [msg...], trending, combiner)`` out (combiner: None or its weights)."""

    def __init__(self, model: Mapping[str, Any], window_ms: int, compare_modes: Sequence[str] = (),
                 rank_delay_ms: int | None = None, rank_budget_ms: int = 0) -> None:
        self.model = dict(model)
        self.window_ms = window_ms
        self.compare_modes = tuple(compare_modes)
        self.rank_delay_ms = window_ms // 2 if rank_delay_ms is None else rank_delay_ms
        self.rank_budget_ms = rank_budget_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self.open_model()
        self.pending = runtime_context.get_list_state(ListStateDescriptor("pending", Types.PICKLED_BYTE_ARRAY()))
        # requests made at the end of a bounded input wait for the final watermark (and so for the final
        # model state), never for a processing-time timer
        self.final = runtime_context.get_list_state(ListStateDescriptor("final", Types.PICKLED_BYTE_ARRAY()))
        self.combiner = runtime_context.get_state(ValueStateDescriptor("combiner", Types.PICKLED_BYTE_ARRAY()))
        self._trained = runtime_context.get_metrics_group().counter("combiner_examples")
        self._deferred = runtime_context.get_metrics_group().counter("rank_requests_deferred")
        self._rankings = runtime_context.get_metrics_group().counter("rankings")
        self._ranking_ms = Histogram(runtime_context.get_metrics_group(), "ranking_ms", RANKING_MS_BOUNDS)
        self._window_lag = gauge_setter(runtime_context.get_metrics_group(), "window_lag_ms")
        self._rank_queue = gauge_setter(runtime_context.get_metrics_group(), "rank_queue")
        self._budget: dict[Any, tuple[int, float]] = {}  # key -> (window, perf_counter deadline)
        # requests left over by the budget: user -> (order, request) in keyed state, written once when deferred
        # and removed once when answered; the order of each shard's queue (user -> order, oldest first) is kept
        # in memory too, read back from the state after a restart, so a window costs state accesses for the
        # requests it answers or newly defers, never for the whole backlog
        self.deferred = runtime_context.get_map_state(
            MapStateDescriptor("deferred", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
        self._queues: dict[Any, dict[str, tuple[int, int]]] = {}
        self._defer_n = 0

    def open_model(self) -> None:
        """The Python side of :meth:`open`: the model and the working copies of the broadcast state (empty until
        :meth:`_load` reads that state)."""
        self.rec = HybridRecommender.from_config(self.model)
        for mode in self.compare_modes:
            self.rec._check_mode(mode)
        self.training = self.rec.trains_in_stream(self.compare_modes)
        self._loaded = False
        # catalog records received but not yet in the content model: they are applied together before the next
        # ranking (a change of the catalog rebuilds the content matrix, ~0.4 s at 20,000 items: once per window
        # rather than once per record while a catalog streams in)
        self._new_items: dict[str, Mapping[str, Any]] = {}
        self._catalog_at = -1  # the window they were last applied in
        self._neighbors: dict[str, Neighbors] = {}
        self._user_neighbors: dict[str, PackedNeighbors] = {}
        self._user_items: dict[str, dict[str, float]] = {}
        self._combiners: dict[int, tuple[LogisticCombiner, random.Random]] = {}
        self._armed: dict[Any, int] = {}
        self._seq = 0
        self._trend_at = (-1, -1)  # (model version, window) the trending ranking was computed at
        self._trend_log = 0  # engagement batches logged in the broadcast state since trending was written whole

    # -- broadcast side -----------------------------------------------------------------------------
    def _load(self, ctx: Any) -> None:
        """Fresh start or restore: read the broadcast state into the working copy once."""
        if self._loaded:
            return
        self._loaded = True
        rec = self.rec
        for _, record in ctx.get_broadcast_state(CATALOG_STATE).items():
            rec.add_item(record, record.get("position"))
        self._set_stats(dict(ctx.get_broadcast_state(ITEM_STATS_STATE).items()))
        self._neighbors = dict(ctx.get_broadcast_state(NEIGHBORS_STATE).items())
        self._user_neighbors = {u: pack_neighbors(nb)
                                for u, nb in ctx.get_broadcast_state(USER_NEIGHBORS_STATE).items()}
        self._user_items = dict(ctx.get_broadcast_state(USER_ITEMS_STATE).items())
        globals_ = dict(ctx.get_broadcast_state(GLOBALS_STATE).items())
        if "trending" in globals_:
            rec.trending = globals_["trending"]
            rec.now_ms = globals_.get("now_ms")
        self._trend_log = globals_.get("trending_log", 0)
        for k in range(1, self._trend_log + 1):  # the batches learned since, in order: the same sums again
            self._learn_engagements(globals_[f"trending-log-{k}"])
        if self._neighbors or rec.content.items:
            logger.info("ranker restored: %d neighbour lists, %d user lists, %d catalog items",
                        len(self._neighbors), len(self._user_neighbors), len(rec.content.items))

    def _apply_catalog(self, timestamp: int) -> None:
        window = timestamp // self.window_ms
        if self._new_items and (window != self._catalog_at or timestamp == END_OF_TIME):
            self._catalog_at = window
            for record in self._new_items.values():
                self.rec.add_item(record, record.get("position"))
            logger.debug("ranker: %d catalog records applied", len(self._new_items))
            self._new_items = {}

    def _set_stats(self, stats: Mapping[str, tuple[int, int, float, int]]) -> None:
        for item, (users, last, r_sum, r_n) in stats.items():
            self.rec.set_item_stats(item, (users, last))
            self.rec.baseline.set_item_sums(item, (r_sum, r_n))

    def _learn_engagements(self, engagements: Sequence[tuple[str, int]]) -> None:
        rec = self.rec
        for item, ts in engagements:
            rec.trending.learn_one(item, 1.0, ts)
            rec.now_ms = ts if rec.now_ms is None else max(rec.now_ms, ts)
        rec.version += len(engagements)

    def _record_engagements(self, state: Any, engagements: Sequence[tuple[str, int]]) -> None:
        """Make a batch of engagements durable: logged as one broadcast-state entry, and every
        :data:`TRENDING_LOG_MAX` batches the trending state written whole (every item's counts: too large a
        pickle on a large catalog to write per batch) and the log removed. :meth:`_load` reads the whole state and
        replays the log after it."""
        if self._trend_log + 1 < TRENDING_LOG_MAX:
            self._trend_log += 1
            put_all(state, {f"trending-log-{self._trend_log}": engagements, "trending_log": self._trend_log})
            return
        rec = self.rec
        put_all(state, {"trending": rec.trending, "now_ms": rec.now_ms, "trending_log": 0})
        for k in range(1, self._trend_log + 1):
            state.remove(f"trending-log-{k}")
        self._trend_log = 0

    def process_broadcast_element(self, value, ctx):  # type: ignore[no-untyped-def]
        self._load(ctx)
        kind = value[0]
        if kind == "items":
            _, _, neighbors, stats, engagements, _ = value
            if neighbors:
                put_all(ctx.get_broadcast_state(NEIGHBORS_STATE), neighbors)
                self._neighbors.update(neighbors)
            if stats:
                put_all(ctx.get_broadcast_state(ITEM_STATS_STATE), stats)
                self._set_stats(stats)
            if engagements:
                self._learn_engagements(engagements)
                self._record_engagements(ctx.get_broadcast_state(GLOBALS_STATE), engagements)
        elif kind == "users":
            _, _, neighbors, _ = value
            put_all(ctx.get_broadcast_state(USER_NEIGHBORS_STATE), neighbors)
            self._user_neighbors.update({u: pack_neighbors(nb) for u, nb in neighbors.items()})
        elif kind == "user_items":
            put_all(ctx.get_broadcast_state(USER_ITEMS_STATE), value[1])
            self._user_items.update(value[1])
        elif kind == "catalog":
            records: dict[str, Any] = {}
            catalog = ctx.get_broadcast_state(CATALOG_STATE)
            for record in value[1]:  # normalised by ParseCatalog
                item = record["item_id"]
                # an update keeps the item's first place in the catalog (ContentModel.newest), in the stored record too
                first = records.get(item) or self._new_items.get(item) or catalog.get(item)
                if first is not None and first.get("position") is not None and record.get("position") is not None:
                    record = {**record, "position": min(first["position"], record["position"])}
                records[item] = record
            put_all(catalog, records)
            self._new_items.update(records)
        else:  # pragma: no cover - a wiring error
            raise ValueError(f"broadcast record kind {kind!r} is not items, users, user_items or catalog")
        return iter(())

    # -- keyed side ---------------------------------------------------------------------------------
    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        # a pack()ed (shard, requests, final) batch, kept packed until the timer (a final batch too: the timer moves
        # it to the final list, answered on the final watermark)
        key = packed_shard(value)
        self.pending.add(value)
        now = ctx.timer_service().current_processing_time()
        due = now + self.rank_delay_ms
        due += -due % RANK_TICK_MS  # requests of one shard arriving close together share a timer
        if self._armed.get(key, -1) <= now:  # no timer of this key still to come: arm one
            if key not in self._armed:
                ctx.timer_service().register_event_time_timer(END_OF_TIME)
            ctx.timer_service().register_processing_time_timer(due)
            self._armed[key] = due
        return iter(())

    def _combiner(self, key: int) -> tuple[LogisticCombiner, random.Random]:
        found = self._combiners.get(key)
        if found is None:
            found = self.combiner.value()
            if found is None:
                rec = self.rec
                found = (LogisticCombiner(FEATURES, lr=rec.combiner.lr, l2=rec.combiner.l2),
                         random.Random(f"{self.model.get('hybrid', {}).get('seed', 0)}-{key}"))
            self._combiners[key] = found
        return found

    def view(self, user: str, log: UserLog, recent: list[tuple[str, float]], last_ts: int) -> UserView:
        self._seq += 1
        return UserView(
            user=user, log=log,
            itemcf_history=decayed_history(recent, log, last_ts, self.rec.half_life_s),
            item_neighbors=lambda k: self._neighbors.get(k, []),
            user_neighbors=lambda: unpack_neighbors(self._user_neighbors.get(user)),
            user_items=lambda v: self._user_items.get(v, {}),
            cache_key=self._seq)

    def _refresh_trending(self, timestamp: int) -> None:
        """Re-rank trending at most once per window (it sorts every item), and always at the end of input."""
        rec = self.rec
        window = timestamp // self.window_ms if timestamp != END_OF_TIME else END_OF_TIME
        if rec.version != self._trend_at[0] and window != self._trend_at[1]:
            rec.refresh_trending()
            self._trend_at = (rec.version, window)

    def _train(self, request: tuple[Any, ...], combiner: LogisticCombiner, rng: random.Random) -> int:
        """Recommend-then-learn: each of the window's first engagements of this user (in event order), drawn with
        probability ``combiner_sample``, against the candidates of the state before it (the log without it and
        without the items engaged after it)."""
        user, log, recent, last_ts, _, _, new_items = request
        rec = self.rec
        if not self.training or not new_items:
            return 0
        learned = 0
        for k, item in enumerate(new_items):
            if rng.random() >= rec.combiner_sample:
                continue
            later = set(new_items[k:])
            before: UserLog = {"items": {i: e for i, e in log["items"].items() if i not in later},
                               "rating_sum": log["rating_sum"], "rating_n": log["rating_n"]}
            if not before["items"]:
                continue  # the user's first engagement: nothing was recommended from history
            view = self.view(user, before, [(i, w) for i, w in recent if i not in later], last_ts)
            learned += rec.train(view, item, combiner, rng)
        return learned

    def _pending(self, timestamp: int) -> tuple[list[Any], list[Any]]:
        """The request batches waiting (pending, and on the final watermark the final ones), emptied: (batches,
        final batches). Before the final watermark a final batch moves to the final list."""
        stored = list(self.pending.get() or ())
        if stored:
            self.pending.clear()
        batches: list[Any] = []
        final: list[Any] = []
        for data in stored:
            _, requests, is_final = unpack(data)
            if not is_final:
                batches.append(requests)
            elif timestamp == END_OF_TIME:
                final.append(requests)
            else:
                self.final.add(requests)
        if timestamp == END_OF_TIME:
            stored_final = list(self.final.get() or ())
            if stored_final:
                self.final.clear()
            final = stored_final + final
        return batches, final

    def on_timer(self, timestamp, ctx):  # type: ignore[no-untyped-def]
        batches, final = self._pending(timestamp)
        final_users = {req[0] for requests in final for req in requests}
        batches += final
        key = ctx.get_current_key()
        queue = self._queue(key)
        if not batches and not queue:
            return
        self._load(ctx)
        self._apply_catalog(timestamp)
        if timestamp != END_OF_TIME and not self.rec.trending.totals and not self.rec.trending.decayed:
            # no item state has reached this subtask yet (the job's first window): wait for it rather than
            # answer with empty lists
            for requests in batches:
                self.pending.add(pack(key, (key, requests, False)))
            due = timestamp + self.window_ms
            ctx.timer_service().register_processing_time_timer(due)
            self._armed[key] = due
            return
        self._refresh_trending(timestamp)
        combiner, rng = self._combiner(key)
        seen_before = combiner.n_seen
        # the deferred users first, in their order (None: the request is in the deferred state), then the new ones
        latest: dict[str, tuple[Any, ...] | None] = dict.fromkeys(queue)
        for requests in batches:  # a user asked twice: train on both, answer the latest request only
            for req in requests:
                if self._train(req, combiner, rng):
                    latest.pop(req[0], None)
                latest[req[0]] = req
        rec = self.rec
        now = int(time.time() * 1000)
        out = []
        requests = list(latest.items())
        deadline = self._deadline(key, timestamp)
        answered = len(requests)
        took: list[float] = []  # ms per ranking
        for done, (user, found) in enumerate(requests):
            if deadline is not None and done and time.perf_counter() > deadline:
                answered = done
                break
            req = found if found is not None else self.deferred.get(user)[1]
            _, log, recent, last_ts, event_id, event_ts, _ = req
            started = time.perf_counter()
            view = self.view(user, log, recent, last_ts)
            ranked = rec.rank_view(view, self.model.get("stored_n"), combiner=combiner)
            msg = recs_message(user, ranked, event_id, event_ts, now, len(log["items"]),
                               "final" if user in final_users else "events", rec.mode)
            if self.compare_modes:
                msg["alternatives"] = {mode: recs_message(user, rec.rank_view(view, mode=mode, combiner=combiner),
                                                          event_id, event_ts, now, 0, "", mode)["items"]
                                       for mode in self.compare_modes}
            out.append(msg)
            took.append((time.perf_counter() - started) * 1000)
        self._requeue(key, queue, requests[:answered], requests[answered:], timestamp, ctx)
        self._rankings.inc(len(out))
        self._ranking_ms.observe(took)
        self._rank_queue(sum(len(q) for q in self._queues.values()))
        if timestamp != END_OF_TIME:
            self._window_lag(int(time.time() * 1000) - timestamp)
        weights = None
        if combiner.n_seen != seen_before:
            self._trained.inc(combiner.n_seen - seen_before)
            self.combiner.update((combiner, rng))
            weights = {"shard": key, "n_seen": combiner.n_seen, "weights": combiner.weights()}
            if combiner.n_seen // COMBINER_LOG_EVERY != seen_before // COMBINER_LOG_EVERY:
                logger.info("combiner of user shard %s after %d examples: %s", key, combiner.n_seen,
                            ", ".join(f"{f} {w:+.3f}" for f, w in combiner.weights().items()))
        # trending scores are decayed counts whose last bits depend on the order they were added in: published rounded,
        # as recommendation scores are (udfs.serde.recs_message)
        yield ("recs", out, [(i, round(s, 6)) for i, s in rec.popular(rec.top_n)], weights)

    def _deadline(self, key: Any, timestamp: int) -> float | None:
        """When this shard's ranking time of the current window (``job.rank_budget_ms``) runs out; None: no limit."""
        if not self.rank_budget_ms or timestamp == END_OF_TIME:
            return None
        window = timestamp // self.window_ms
        found = self._budget.get(key)
        if found is None or found[0] != window:
            found = self._budget[key] = (window, time.perf_counter() + self.rank_budget_ms / 1000)
        return found[1]

    def _queue(self, key: Any) -> dict[str, tuple[int, int]]:
        """This shard's deferred users, oldest first (read from the keyed state once after a start or restore)."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = {user: order for user, (order, _) in
                                         sorted(self.deferred.items(), key=lambda kv: kv[1][0])}
        return queue

    def _requeue(self, key: Any, queue: dict[str, tuple[int, int]], answered: list[tuple[str, Any]],
                 left: list[tuple[str, Any]], timestamp: int, ctx: Any) -> None:
        """After a window's ranking: the deferred requests now answered leave the deferred state; over budget, the
        requests ``left`` wait for the next window, in their order; a user who asks again by then keeps the place
        and is answered once, with the newer request (overload sheds intermediate rankings)."""
        if queue:
            for user, _ in answered:
                if user in queue:
                    self.deferred.remove(user)
        if not left:
            if queue:
                self._queues[key] = {}
            return
        kept: dict[str, tuple[int, int]] = {}
        changed: dict[str, tuple[tuple[int, int], tuple[Any, ...]]] = {}
        for user, req in left:
            order = queue.get(user)
            if order is None:
                self._defer_n += 1
                order = (timestamp, self._defer_n)
            kept[user] = order
            if req is not None:  # new, or newer than the deferred one
                changed[user] = (order, req)
        if changed:
            put_all(self.deferred, changed)
        self._queues[key] = kept
        self._deferred.inc(len(left))
        due = timestamp - timestamp % self.window_ms + self.window_ms
        ctx.timer_service().register_processing_time_timer(due)
        self._armed[key] = due
        logger.debug("ranker shard %s over its budget: %d requests wait for the next window", key, len(left))
