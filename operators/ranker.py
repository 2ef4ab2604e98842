"""The ranker: joins rank requests (keyed by user shard) with the broadcast neighbour lists.

Every ranker subtask receives every neighbour-list update (a broadcast stream) and keeps them in
broadcast state, with a Python working copy. A rank request batch (one per user shard per window)
is answered half a window after the next window boundary, so that the neighbour lists of the
window that produced it have arrived: ``score(j) = Σ_{k ∈ recent history} w_uk · sim(k, j)``,
seen items dropped, trending items filling the list up to N. On the final watermark of a bounded
input every pending request is answered with the final lists.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedBroadcastProcessFunction, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor

from core.itemcf import Neighbors, rank_items, top_k
from operators.compat import put_all
from operators.windows import END_OF_TIME
from udfs.serde import recs_message

logger = logging.getLogger(__name__)

NEIGHBORS_STATE = MapStateDescriptor("neighbors", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
COUNTS_STATE = MapStateDescriptor("popularity", Types.STRING(), Types.LONG())


class Ranker(KeyedBroadcastProcessFunction):
    """Rank request batches in, one batch of recommendation messages out (``("recs", [msg...], trending)``)."""

    def __init__(self, top_n: int, trending_size: int, window_ms: int) -> None:
        self.window_ms = window_ms
        self.top_n = top_n
        self.trending_size = trending_size
        self._neighbors: dict[str, Neighbors] | None = None
        self._counts: dict[str, int] = {}
        self._trending: Neighbors = []
        self._trending_dirty = False

    def open(self, runtime_context: RuntimeContext) -> None:
        self._neighbors = None
        self._armed: dict[Any, int] = {}
        self.pending = runtime_context.get_list_state(ListStateDescriptor("pending", Types.PICKLED_BYTE_ARRAY()))
        # requests made at the end of a bounded input wait for the final watermark (and so for the final
        # neighbour lists), never for a processing-time timer
        self.final = runtime_context.get_list_state(ListStateDescriptor("final", Types.PICKLED_BYTE_ARRAY()))

    def _load(self, ctx: Any) -> dict[str, Neighbors]:
        if self._neighbors is None:  # fresh start or restore: read the broadcast state once
            self._neighbors = dict(ctx.get_broadcast_state(NEIGHBORS_STATE).items())
            self._counts = dict(ctx.get_broadcast_state(COUNTS_STATE).items())
            self._trending_dirty = True
        return self._neighbors

    def process_broadcast_element(self, value, ctx):  # type: ignore[no-untyped-def]
        _, neighbors, counts, _ = value
        cache = self._load(ctx)
        if neighbors:
            put_all(ctx.get_broadcast_state(NEIGHBORS_STATE), neighbors)
            cache.update(neighbors)
        if counts:
            put_all(ctx.get_broadcast_state(COUNTS_STATE), counts)
            self._counts.update(counts)
            self._trending_dirty = True
        return iter(())

    def trending(self) -> Neighbors:
        if self._trending_dirty:
            self._trending = top_k(((i, float(c)) for i, c in self._counts.items()), self.trending_size)
            self._trending_dirty = False
        return self._trending

    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        _, requests, final = value
        key = ctx.get_current_key()
        if final:
            self.final.add(requests)
            ctx.timer_service().register_event_time_timer(END_OF_TIME)
            return iter(())
        self.pending.add(requests)
        now = ctx.timer_service().current_processing_time()
        due = now - now % self.window_ms + self.window_ms + self.window_ms // 2
        if self._armed.get(key) != due:
            if key not in self._armed:
                ctx.timer_service().register_event_time_timer(END_OF_TIME)
            ctx.timer_service().register_processing_time_timer(due)
            self._armed[key] = due
        return iter(())

    def on_timer(self, timestamp, ctx):  # type: ignore[no-untyped-def]
        batches = list(self.pending.get() or ())
        if batches:
            self.pending.clear()
        final_users: set[str] = set()
        if timestamp == END_OF_TIME:
            final = list(self.final.get() or ())
            if final:
                self.final.clear()
                batches += final
                final_users = {req[0] for requests in final for req in requests}
        if not batches:
            return
        neighbors = self._load(ctx)
        trending = self.trending()
        now = int(time.time() * 1000)
        latest: dict[str, tuple[Any, ...]] = {}
        for requests in batches:  # a user asked twice: answer the latest request only
            for req in requests:
                latest[req[0]] = req
        out = []
        for user, recent, seen, event_id, event_ts in latest.values():
            ranked = rank_items(recent, neighbors, set(seen), self.top_n, trending)
            out.append(recs_message(user, ranked, event_id, event_ts, now, len(seen),
                                    "final" if user in final_users else "events"))
        yield ("recs", out, trending[: self.top_n])
