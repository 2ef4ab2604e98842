"""The windowed, sharded state operators of the item-CF pipeline.

Python state access and every record that crosses an operator boundary are the costs of a PyFlink
job, so the per-event hot path is one ``ListState.add``; all model work happens once per tumbling
processing-time window (``job.window_ms``) per *virtual shard* of keys:

* :class:`UserWindow` (keyed by user shard) applies the window's events to the per-user state
  (``MapState`` user -> :class:`core.itemcf.UserHistory`), and emits per window one record per
  item shard with that shard's co-occurrence deltas and the norm deltas of all items, plus one
  rank request per user shard to the ranker (side output ``RANK_TAG``).
* :class:`ItemWindow` (keyed by item shard) adds the deltas into the co-occurrence rows it owns
  (``MapState`` item -> row), keeps a copy of all norms, recomputes the top-K neighbours of every
  row whose similarities moved, and emits one neighbour-update batch per window.

Both keep a Python working copy of their shard's state (a cache read back from Flink state after a
restore); Flink state stays the source of truth and is written each window for what changed.

Windows are processing-time; an event-time timer at the end of time flushes the last window
when a bounded input ends (the final watermark), so bounded runs lose nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor

from core.itemcf import ItemRows, PairDeltas, UserHistory, user_event
from operators.compat import put_all
from udfs.events import Event
from udfs.shard import shard_of

logger = logging.getLogger(__name__)

END_OF_TIME = 2**63 - 1  # Long.MAX_VALUE: fires on the final watermark of a bounded input
RANK_TAG = OutputTag("rank-requests", Types.PICKLED_BYTE_ARRAY())

# Records between the operators (pickled tuples, kept small and flat):
#   ItemDelta   (item_shard, norms {item: d}, pairs {row item: {col item: d}}, counts {item: n})
#   RankRequest (user_shard, [(user, recent [(item, w)], seen [item], event_id, event_ts), ...], final)
#   Neighbors   (item_shard, {item: [(item, sim), ...]}, counts {item: n}, processed_at)


class _Windowed(KeyedProcessFunction):
    """Buffers elements per key in ListState and calls :meth:`flush` once per window."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._armed: dict[Any, int] = {}

    def open_buffer(self, runtime_context: RuntimeContext) -> None:
        self.buffer = runtime_context.get_list_state(ListStateDescriptor("buffer", Types.PICKLED_BYTE_ARRAY()))
        self._armed = {}

    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        self.buffer.add(value)
        key = ctx.get_current_key()
        now = ctx.timer_service().current_processing_time()
        end = now - now % self.window_ms + self.window_ms
        if self._armed.get(key) != end:
            if key not in self._armed:
                ctx.timer_service().register_event_time_timer(END_OF_TIME)
            ctx.timer_service().register_processing_time_timer(end)
            self._armed[key] = end
        return iter(())

    def on_timer(self, timestamp, ctx):  # type: ignore[no-untyped-def]
        batch = list(self.buffer.get() or ())
        if batch:
            self.buffer.clear()
        yield from self.flush(ctx.get_current_key(), batch, ctx, timestamp)

    def flush(self, key: Any, batch: list[Any], ctx: Any, timestamp: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class UserWindow(_Windowed):
    """Per-user history state; emits item-shard deltas and rank requests per window."""

    def __init__(self, window_ms: int, item_shards: int, history_cap: int, dedup_ttl_ms: int,
                 dedup_max_ids: int) -> None:
        super().__init__(window_ms)
        self.item_shards = item_shards
        self.history_cap = history_cap
        self.dedup_ttl_ms = dedup_ttl_ms
        self.dedup_max_ids = dedup_max_ids
        self._cache: dict[str, UserHistory] = {}

    def open(self, runtime_context: RuntimeContext) -> None:
        self.open_buffer(runtime_context)
        self.users = runtime_context.get_map_state(
            MapStateDescriptor("users", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
        self._cache = {}
        self._duplicates = runtime_context.get_metrics_group().counter("duplicates")

    def _history(self, user: str) -> UserHistory:
        hist = self._cache.get(user)
        if hist is None:
            hist = self.users.get(user) or UserHistory()
            self._cache[user] = hist
        return hist

    def flush(self, key: Any, batch: list[Event], ctx: Any, timestamp: int) -> Any:
        final = timestamp == END_OF_TIME
        if not batch and not final:
            return
        deltas = PairDeltas()
        touched: dict[str, None] = {}  # users whose recommendations change, in first-touch order
        for ev in batch:
            hist = self._history(ev.user_id)
            if not hist.remember(ev.event_id, ev.ts, self.dedup_ttl_ms, self.dedup_max_ids):
                self._duplicates.inc()  # the same event delivered again: applied once only
                continue
            new = ev.item_id not in hist.weights
            deltas.add(ev.item_id, *user_event(hist, ev.item_id, ev.weight, ev.ts, self.history_cap, ev.event_id),
                       new=new)
            touched[ev.user_id] = None
        put_all(self.users, {u: self._cache[u] for u in touched})
        if final:  # end of a bounded input: re-rank every user of the shard with the final model
            for user, hist in self.users.items():
                if user not in touched:
                    self._cache.setdefault(user, hist)
                    touched[user] = None
        if deltas:
            n = self.item_shards
            per_shard: list[dict[str, dict[str, float]]] = [{} for _ in range(n)]
            for row, cols in deltas.pairs.items():
                per_shard[shard_of(row, n)][row] = cols
            for s in range(n):
                # every shard needs every norm (for the cosine of its rows' columns)
                if per_shard[s] or deltas.norms or deltas.counts:
                    yield (s, deltas.norms, per_shard[s], deltas.counts if s == 0 else {})
        requests = []
        for user in touched:
            hist = self._cache[user]
            requests.append((user, hist.recent_weights(), list(hist.weights), hist.last_event_id, hist.last_ts))
        if requests:
            yield RANK_TAG, (key, requests, final)


class ItemWindow(_Windowed):
    """Co-occurrence rows and norms of one item shard; emits changed top-K neighbour lists."""

    def __init__(self, window_ms: int, top_k: int, refresh_budget_ms: int) -> None:
        super().__init__(window_ms)
        self.top_k = top_k
        self.refresh_budget_ms = refresh_budget_ms
        self._models: dict[int, ItemRows] = {}

    def open(self, runtime_context: RuntimeContext) -> None:
        self.open_buffer(runtime_context)
        self.rows = runtime_context.get_map_state(
            MapStateDescriptor("rows", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
        self.norms = runtime_context.get_map_state(MapStateDescriptor("norms", Types.STRING(), Types.DOUBLE()))
        self.counts = runtime_context.get_map_state(MapStateDescriptor("counts", Types.STRING(), Types.LONG()))
        self.index = runtime_context.get_map_state(MapStateDescriptor("index", Types.STRING(), Types.INT()))
        self._models = {}
        self._budget_window, self._budget_until = -1, 0.0

    def _budget_left(self) -> float:
        """Seconds of refresh work left in this window for this subtask (shared by its shards)."""
        now = time.time()
        window = int(now * 1000) // self.window_ms
        if window != self._budget_window:
            self._budget_window, self._budget_until = window, time.perf_counter() + self.refresh_budget_ms / 1000
        return max(0.0, self._budget_until - time.perf_counter())

    def _model(self, shard: int) -> ItemRows:
        model = self._models.get(shard)
        if model is None:  # first use of this shard in this process (fresh start or restore)
            model = ItemRows(self.top_k)
            model.load(dict(self.index.items()), dict(self.rows.items()), dict(self.norms.items()),
                       dict(self.counts.items()))
            model.dirty = dict.fromkeys(model.rows)  # neighbour lists are derived: recompute them
            self._models[shard] = model
            if model.rows:
                logger.info("item shard %s restored: %d rows, %d norms", shard, len(model.rows), len(model.norms))
        return model

    def flush(self, key: Any, batch: list[Any], ctx: Any, timestamp: int) -> Any:
        model = self._model(key)
        known = len(model.names)
        changed: set[str] = set()
        norms: dict[str, None] = {}
        counts: dict[str, None] = {}
        for _, n_d, p_d, c_d in batch:  # the deltas are additive: apply each user shard's as it is
            changed |= model.apply(n_d, p_d, c_d)[0]
            norms.update(dict.fromkeys(n_d))
            counts.update(dict.fromkeys(c_d))
        if len(model.names) > known:
            put_all(self.index, {model.names[i]: i for i in range(known, len(model.names))})
        if changed:
            put_all(self.rows, {a: model.rows[a] for a in changed})
        if norms:
            put_all(self.norms, {i: model.norm(i) for i in norms})
        if counts:
            put_all(self.counts, {i: model.counts[i] for i in counts})
        final = timestamp == END_OF_TIME
        neighbors = model.refresh(None if final or not self.refresh_budget_ms else self._budget_left())
        if model.dirty and not final:  # over budget: carry on in the next window even without input
            now = ctx.timer_service().current_processing_time()
            ctx.timer_service().register_processing_time_timer(now - now % self.window_ms + self.window_ms)
        if neighbors or counts:
            yield (key, neighbors, {i: model.counts[i] for i in counts}, int(time.time() * 1000))
