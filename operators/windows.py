"""The windowed, sharded state operators of the recommendation pipeline.

Python state access and every record that crosses an operator boundary are the costs of a PyFlink
job, so no Python code runs per event: the events reach the user operator as one batch per user shard
and window (``job.window_ms``) from the JVM front (:mod:`operators.front`), and the similarity operators
buffer their (per-window) input records in one ``ListState.add`` each; all model work happens once per
tumbling processing-time window per *virtual shard* of keys:

* :class:`UserWindow` (keyed by user shard) validates the window's raw records and applies its events
  to each user's pieces (item-CF history, the hybrid's log, the user-CF row; :class:`UserPieces`) with
  the functions of :mod:`core.hybrid`, and emits per window one record per item shard (item-CF pair and norm deltas,
  and the engagements of that shard's items), one rank request batch per user shard (``RANK_TAG``) and
  the changed users' user-CF rows for the rankers (``USER_ITEMS_TAG``).
* :class:`ItemWindow` (keyed by item shard) adds the deltas into the co-occurrence rows it owns, keeps
  each owned item's recent raters (user-CF fan-out), statistics (distinct users, latest time, rating
  sums for the baseline), recomputes the top-K neighbours of changed rows, and emits one batch per
  window: neighbour lists, item statistics and the engagements (for trending). Its side output
  (``USER_DELTA_TAG``) carries the user–user dot-product and user-norm deltas to :class:`UserSimWindow`.
* :class:`UserSimWindow` (keyed by user shard) holds the user–user rows with the same engine as the
  item side (:class:`core.itemcf.ItemRows`) and emits the changed users' top-K neighbours.

Each keeps a Python working copy of its shard's state (a cache read back from Flink state after a
restore); Flink state stays the source of truth and is written each window for what changed.

Windows are processing-time; an event-time timer at the end of time flushes the last window when a
bounded input ends (the final watermark), so bounded runs lose nothing.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext, TimeDomain
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor

from core.hybrid import MIN_POSITIVE_WEIGHT, HybridRecommender, UserLog, log_event, new_user_log
from core.itemcf import ItemRows, PairDeltas, UserHistory, user_event
from core.usercf import UserState, new_user_state, pair_deltas, record_rater, set_weight
from operators.compat import put_all
from operators.front import FrontBatch
from operators.late import LateCheck
from operators.metrics_catalog import gauge_setter
from operators.parse import DLQ_TAG, Rejects
from udfs.events import DEFAULT_LIMITS, Event, Limits
from udfs.shard import shard_of

logger = logging.getLogger(__name__)

END_OF_TIME = 2**63 - 1  # Long.MAX_VALUE: fires on the final watermark of a bounded input
USER_ITEMS_TAG = OutputTag("user-items", Types.PICKLED_BYTE_ARRAY())
PACKED = Types.PRIMITIVE_ARRAY(Types.BYTE())
"""The type of the records into the similarity operators: :func:`pack` ed bytes. PyFlink hands ``bytes`` to the
JVM and back as they are, where a ``PICKLED_BYTE_ARRAY`` record is unpickled and pickled again at every Python
operator it passes (the ``key_by`` map, the keyed operator) and once more into a ``ListState`` buffer, a cost
that grows with the item-CF deltas, the largest records of the job (docs/bench.md, tuning knobs)."""
USER_DELTA_TAG = OutputTag("user-deltas", PACKED)
RANK_TAG = OutputTag("rank-requests", PACKED)

# Records between the operators (pickled tuples, kept small and flat; ItemDelta, UserDelta, RankRequest pack()ed):
#   ItemDelta   (item_shard, norms {item: d}, pairs {row item: {col item: d}}, engagements [Engagement])
#   Engagement  (item, user, ts, first engagement?, user-CF weight, previous user-CF weight, Δ rating sum, Δ rating n)
#   RankRequest (user_shard, [(user, log, recent [(item, w)], last_ts, event_id, event_ts, new items), ...], final)
#   UserItems   ("user_items", {user: {item: user-CF weight}})
#   ItemBatch   ("items", item_shard, {item: [(item, sim)]}, {item: (users, last ts, rating sum, rating n)},
#                [(item, ts) per engagement], processed_at)
#   UserDelta   (user_shard, user norms {user: d}, pairs {row user: {col user: d}})
#   UserBatch   ("users", user_shard, {user: [(user, sim)]}, processed_at)


def pack(shard: int, record: tuple[Any, ...]) -> bytes:
    """``record`` (whose first field is ``shard``) as :data:`PACKED` bytes: the shard in 2 bytes, then the pickle."""
    return shard.to_bytes(2, "big") + pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)


def packed_shard(data: bytes | bytearray) -> int:
    """The key of a :func:`pack` ed record (read without unpickling it)."""
    return (data[0] << 8) | data[1]


def unpack(data: bytes | bytearray) -> Any:
    """The record :func:`pack` packed."""
    return pickle.loads(memoryview(data)[2:])


def _logged_deltas(logged: Any) -> tuple[Mapping[str, float], Mapping[str, Mapping[str, float]]]:
    """(norm deltas, pair deltas) of a rows-log element: a packed ItemDelta/UserDelta record, or the pair itself."""
    if isinstance(logged, (bytes, bytearray)):
        record = unpack(logged)
        return record[1], record[2]
    return logged  # type: ignore[no-any-return]


@dataclass
class UserPieces:
    """What the job keeps per user: item-CF history (with de-duplication), the hybrid's log, the user-CF row."""

    hist: UserHistory = field(default_factory=UserHistory)
    log: UserLog = field(default_factory=new_user_log)
    ucf: UserState = field(default_factory=new_user_state)


class _Windowed(KeyedProcessFunction):
    """Buffers :func:`pack` ed elements per key in ListState (as bytes) and calls :meth:`flush` once per window
    with them unpacked."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._armed: dict[Any, int] = {}

    def open_buffer(self, runtime_context: RuntimeContext) -> None:
        self.buffer = runtime_context.get_list_state(ListStateDescriptor("buffer", Types.PICKLED_BYTE_ARRAY()))
        self._armed = {}
        self._window_lag = gauge_setter(runtime_context.get_metrics_group(), "window_lag_ms")

    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        self.buffer.add(value)
        # the key the stream is keyed by (packed_shard), read here: ctx.get_current_key() is a call into the JVM
        key = packed_shard(value)
        # Flink's processing time is the wall clock (System.currentTimeMillis): read here, without a call into
        # the JVM per record; it only picks the window end a timer is set for
        now = int(time.time() * 1000)
        end = now - now % self.window_ms + self.window_ms
        if self._armed.get(key) != end:
            if key not in self._armed:
                ctx.timer_service().register_event_time_timer(END_OF_TIME)
            ctx.timer_service().register_processing_time_timer(end)
            self._armed[key] = end
        return iter(())

    def on_timer(self, timestamp, ctx):  # type: ignore[no-untyped-def]
        raws = list(self.buffer.get() or ())
        if raws:
            self.buffer.clear()
        yield from self.flush(ctx.get_current_key(), [unpack(raw) for raw in raws], ctx, timestamp, raws)
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            self._window_lag(int(time.time() * 1000) - timestamp)

    def flush(self, key: Any, batch: list[Any], ctx: Any, timestamp: int,
              raws: list[bytes]) -> Any:  # pragma: no cover - abstract
        """One window of ``batch`` (the records unpacked; ``raws``: the same records packed, as they arrived)."""
        raise NotImplementedError


class UserWindow(KeyedProcessFunction):
    """Per-user pieces; emits item-shard deltas, rank requests and user-CF rows per window.

    Keyed by user shard, fed by :func:`operators.front.event_batches`: one record per shard and window, the
    window's records validated on the JVM, as columns (:class:`operators.front.FrontBatch`). Refused records go to
    ``DLQ_TAG`` with the front's reason and message (metric ``dlq.<reason>``); valid events are checked against
    the watermark at their arrival (:class:`operators.late.LateCheck`, ``job.late_events``: a late event
    is counted and applied, or sent to ``DLQ_TAG``), and the valid ones are applied in order.
    """

    def __init__(self, item_shards: int, model: Mapping[str, Any], dedup_ttl_ms: int, dedup_max_ids: int,
                 late_events: str = "apply", limits: Limits = DEFAULT_LIMITS) -> None:
        self.late = LateCheck(late_events)
        self.rejects = Rejects(limits.dlq_payload_bytes)
        self.limits = limits
        self.item_shards = item_shards
        self.model = dict(model)
        self.dedup_ttl_ms = dedup_ttl_ms
        self.dedup_max_ids = dedup_max_ids
        self._cache: dict[str, UserPieces] = {}
        self._armed: set[int] = set()
        self._loaded: set[int] = set()  # shards whose stored users are in _cache

    def open(self, runtime_context: RuntimeContext) -> None:
        self.rec = HybridRecommender.from_config(self.model)  # config, validation and the weight rule only
        self.itemcf, self.usercf = "itemcf" in self.rec.methods, "usercf" in self.rec.methods
        self.users = runtime_context.get_map_state(
            MapStateDescriptor("users", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
        self._cache, self._armed, self._loaded = {}, set(), set()
        self._duplicates = runtime_context.get_metrics_group().counter("duplicates")
        self._events_in = runtime_context.get_metrics_group().counter("events_in")
        self._events_valid = runtime_context.get_metrics_group().counter("events_valid")
        self._users_held = gauge_setter(runtime_context.get_metrics_group(), "users_held")
        self.late.open(runtime_context.get_metrics_group())
        self.rejects.open(runtime_context.get_metrics_group())

    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        key = ctx.get_current_key()
        if key not in self._armed:  # flushes the end of a bounded input (a set: once per shard in Flink too)
            ctx.timer_service().register_event_time_timer(END_OF_TIME)
            self._armed.add(key)
        batch = FrontBatch.unpack(value)
        for r in batch.rejects():  # validated on the JVM (operators.front): only the record is made here
            yield DLQ_TAG, self.rejects.record(r.payload, r.origin, r.reason, r.message)
        late = self.late.reject(batch.event_id, batch.ts, batch.watermark)
        for i, message in late.items():
            yield DLQ_TAG, self.rejects.record(batch.late_payload[i], batch.late_origin[i], "late_event", message)
        events = batch.events(drop=late)
        self.late.flush_count()
        self._events_in.inc(batch.n_records())
        self._events_valid.inc(len(events))
        yield from self.flush(key, events, final=False)
        self._users_held(len(self._cache))

    def on_timer(self, timestamp, ctx):  # type: ignore[no-untyped-def]
        if timestamp == END_OF_TIME:  # the only timer this operator sets
            yield from self.flush(ctx.get_current_key(), [], final=True)

    def _pieces(self, user: str) -> UserPieces:
        pieces = self._cache.get(user)
        if pieces is None:  # the shard's stored users are all in the cache (flush): a new user
            pieces = self._cache[user] = UserPieces()
        return pieces

    def flush(self, key: Any, batch: list[Event], *, final: bool) -> Any:
        if not batch and not final:
            return
        if key not in self._loaded:
            # the shard's users, read once after a start or restore: a miss of MapState.get (every new user) is a
            # call into the JVM, and the working copy ends up holding every user of the shard anyway
            self._cache.update(self.users.items())
            self._loaded.add(key)
        deltas = PairDeltas()
        n = self.item_shards
        engagements: list[list[tuple[Any, ...]]] = [[] for _ in range(n)]
        touched: dict[str, None] = {}  # users whose recommendations change, in first-touch order
        new_items: dict[str, list[str]] = {}  # items each user engaged for the first time in this window
        cap = self.rec.itemcf.history_cap
        for ev in batch:
            p = self._pieces(ev.user_id)
            if not p.hist.remember(ev.event_id, ev.ts, self.dedup_ttl_ms, self.dedup_max_ids):
                self._duplicates.inc()  # the same event delivered again: applied once only
                continue
            w = self.rec.model_weight(p.log, ev)
            old = log_event(p.log, ev, w)
            if old is None:
                new_items.setdefault(ev.user_id, []).append(ev.item_id)
            if self.itemcf:
                new = ev.item_id not in p.hist.weights
                deltas.add(ev.item_id, *user_event(p.hist, ev.item_id, w, ev.ts, cap, ev.event_id), new=new)
            elif ev.ts >= p.hist.last_ts:
                p.hist.last_ts, p.hist.last_event_id = ev.ts, ev.event_id
            w_pos = max(w, MIN_POSITIVE_WEIGHT)
            w_old = set_weight(p.ucf, ev.item_id, w_pos) if self.usercf else w_pos
            d_sum = (ev.weight if ev.type == "rate" else 0.0) - (old[0] if old and old[2] == "rate" else 0.0)
            d_n = (ev.type == "rate") - (old is not None and old[2] == "rate")
            engagements[shard_of(ev.item_id, n)].append(
                (ev.item_id, ev.user_id, ev.ts, old is None, w_pos, w_old, d_sum, d_n))
            touched[ev.user_id] = None
        put_all(self.users, {u: self._cache[u] for u in touched})
        if self.usercf and touched:
            yield USER_ITEMS_TAG, ("user_items", {u: dict(self._cache[u].ucf["items"]) for u in touched})
        if final:  # end of a bounded input: re-rank every user of the shard with the final model (all in _cache)
            for user in self.users:  # MapState iterates its keys (values are not read)
                touched.setdefault(user, None)
        per_shard: list[dict[str, dict[str, float]]] = [{} for _ in range(n)]
        for row, cols in deltas.pairs.items():
            per_shard[shard_of(row, n)][row] = cols
        for s in range(n):
            # every shard needs every norm (for the cosine of its rows' columns)
            if per_shard[s] or deltas.norms or engagements[s]:
                yield pack(s, (s, deltas.norms, per_shard[s], engagements[s]))
        requests = []
        for user in touched:
            p = self._cache[user]
            requests.append((user, p.log, p.hist.recent_weights(), p.hist.last_ts, p.hist.last_event_id,
                             p.hist.last_ts, new_items.get(user, [])))
        if requests:
            yield RANK_TAG, pack(key, (key, requests, final))


class _RefreshBudget:
    """Refresh time per window shared by every similarity operator of one Python interpreter.

    In thread mode all Python operators of a TaskManager run in one interpreter (one GIL): a budget per
    subtask would let p subtasks spend p budgets of the same core and starve the rankers.
    """

    window = -1
    until = 0.0

    @classmethod
    def left(cls, window_ms: int, budget_ms: int) -> float:
        now = time.time()
        window = int(now * 1000) // window_ms
        if window != cls.window:
            cls.window, cls.until = window, time.perf_counter() + budget_ms / 1000
        return max(0.0, cls.until - time.perf_counter())


@dataclass
class _Unwritten:
    """What a shard changed since its rows were last written whole to Flink state (see :class:`_RowsWindow`)."""

    rows: set[str] = field(default_factory=set)
    norms: set[str] = field(default_factory=set)
    windows: int = 0


class _RowsWindow(_Windowed):
    """Similarity rows of one shard (:class:`ItemRows`): sums in, changed top-K neighbour lists out.

    State: the rows and norms as of the last *compaction*, plus a log (ListState) of the delta batches
    applied since, one entry per window; every ``compact_windows`` windows the rows and norms changed since
    are written whole and the log is cleared. A window thus writes one list entry of the size of its
    deltas instead of every row it touched (on MovieLens almost every row, each window). A restore loads
    the rows and replays the log in order: the same additions in the same order give the same floats.
    ``compact_windows`` <= 1 writes the rows every window (no log).
    """

    def __init__(self, window_ms: int, top_k: int, refresh_budget_ms: int, refresh_on_norms: bool = False,
                 row_cap: int = 0, compact_windows: int = 20) -> None:
        super().__init__(window_ms)
        self.top_k = top_k
        self.refresh_budget_ms = refresh_budget_ms
        self.refresh_on_norms = refresh_on_norms
        self.row_cap = row_cap
        self.compact_windows = compact_windows
        self._models: dict[int, ItemRows] = {}
        self._unwritten: dict[int, _Unwritten] = {}

    def open_rows(self, runtime_context: RuntimeContext) -> None:
        self.open_buffer(runtime_context)
        self.rows = runtime_context.get_map_state(
            MapStateDescriptor("rows", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
        self.norms = runtime_context.get_map_state(MapStateDescriptor("norms", Types.STRING(), Types.DOUBLE()))
        self.index = runtime_context.get_map_state(MapStateDescriptor("index", Types.STRING(), Types.INT()))
        self.log = runtime_context.get_list_state(ListStateDescriptor("rows-log", Types.PICKLED_BYTE_ARRAY()))
        self._models, self._unwritten = {}, {}
        self._rows_held = gauge_setter(runtime_context.get_metrics_group(), "rows_held")
        self._refresh_backlog = gauge_setter(runtime_context.get_metrics_group(), "refresh_backlog")

    def _report_sizes(self) -> None:
        """The gauges of the rows held and of the neighbour lists waiting for a recompute (all shards)."""
        self._rows_held(sum(len(m.rows) for m in self._models.values()))
        self._refresh_backlog(sum(len(m.dirty) for m in self._models.values()))

    def _budget_left(self) -> float:
        """Seconds of refresh work left in this window for this interpreter (shared by its subtasks and shards)."""
        return _RefreshBudget.left(self.window_ms, self.refresh_budget_ms)

    def _model(self, shard: int) -> ItemRows:
        model = self._models.get(shard)
        if model is None:  # first use of this shard in this process (fresh start or restore)
            model = ItemRows(self.top_k, refresh_on_norms=self.refresh_on_norms, row_cap=self.row_cap)
            model.load(dict(self.index.items()), dict(self.rows.items()), dict(self.norms.items()), {})
            unwritten = _Unwritten()
            for batch in self.log.get() or ():  # the windows applied since the last compaction, in order
                for logged in batch:
                    n_d, p_d = _logged_deltas(logged)
                    unwritten.rows |= model.apply(n_d, p_d, {})[0]
                    unwritten.norms.update(n_d)
                unwritten.windows += 1
            model.dirty = dict.fromkeys(model.rows)  # neighbour lists are derived: recompute them
            self._models[shard], self._unwritten[shard] = model, unwritten
            if model.rows:
                logger.info("%s shard %s restored: %d rows, %d norms, %d logged windows", type(self).__name__,
                            shard, len(model.rows), len(model.norms), unwritten.windows)
        return model

    def apply_rows(self, key: Any, deltas: Iterable[tuple[Mapping[str, float], Mapping[str, Mapping[str, float]]]],
                   ctx: Any, final: bool, only_norms: bool = False,
                   raws: Sequence[bytes] | None = None) -> dict[str, list[tuple[str, float]]]:
        """Add (norm deltas, pair deltas) batches, record them in state, return refreshed lists.

        ``only_norms``: refresh only the dirty rows whose own norm moved in this window (the rows of the users
        who acted; the others stay dirty until their owner acts, or the end of a bounded input).
        ``raws``: the records the deltas came in, :func:`pack` ed, one per batch in the same order; the log then
        keeps these bytes as they are instead of pickling the deltas again.
        """
        model = self._model(key)
        known = len(model.names)
        changed: set[str] = set()
        norms: dict[str, None] = {}
        pairs = list(deltas)
        if raws is not None and len(raws) != len(pairs):
            raise ValueError(f"{len(raws)} packed records for {len(pairs)} delta batches")
        kept = [k for k, (n_d, p_d) in enumerate(pairs) if n_d or p_d]
        for k in kept:  # the deltas are additive: apply each upstream shard's as it is
            n_d, p_d = pairs[k]
            changed |= model.apply(n_d, p_d, {})[0]
            norms.update(dict.fromkeys(n_d))
        if len(model.names) > known:
            put_all(self.index, {model.names[i]: i for i in range(known, len(model.names))})
        if kept:
            logged = [raws[k] for k in kept] if raws is not None else [pairs[k] for k in kept]
            self._record(key, model, logged, changed, norms)
        if final and not self.refresh_on_norms:
            model.mark_all()  # end of a bounded input: every list exact with the final norms
        if only_norms and not final:
            return model.refresh(only=[r for r in norms if r in model.rows])
        neighbors = model.refresh(None if final or not self.refresh_budget_ms else self._budget_left())
        if model.dirty and not final:  # over budget: carry on in the next window even without input
            now = ctx.timer_service().current_processing_time()
            ctx.timer_service().register_processing_time_timer(now - now % self.window_ms + self.window_ms)
        return neighbors

    def _record(self, key: Any, model: ItemRows, batch: list[Any], changed: set[str], norms: Mapping[str, Any]) -> None:
        """Make this window's deltas durable: one log entry, or (every ``compact_windows``) the changed rows."""
        u = self._unwritten[key]
        u.rows |= changed
        u.norms.update(norms)
        u.windows += 1
        if u.windows < self.compact_windows:
            self.log.add(batch)
            return
        put_all(self.rows, {a: model.rows[a] for a in u.rows})  # ItemRows never deletes a row
        put_all(self.norms, {i: model.norm(i) for i in u.norms})
        if u.windows > 1:
            self.log.clear()
        self._unwritten[key] = _Unwritten()


class ItemWindow(_RowsWindow):
    """Item shard: co-occurrence rows, recent raters, item statistics; emits neighbour lists and statistics."""

    def __init__(self, window_ms: int, top_k: int, refresh_budget_ms: int, user_shards: int,
                 max_raters: int, usercf: bool, refresh_on_norms: bool = False, row_cap: int = 0,
                 compact_windows: int = 20) -> None:
        super().__init__(window_ms, top_k, refresh_budget_ms, refresh_on_norms, row_cap, compact_windows)
        self.user_shards = user_shards
        self.max_raters = max_raters
        self.usercf = usercf
        self._raters: dict[int, dict[str, dict[str, tuple[float, int]]]] = {}
        self._stats: dict[int, dict[str, tuple[int, int, float, int]]] = {}

    def open(self, runtime_context: RuntimeContext) -> None:
        self.open_rows(runtime_context)
        self.raters = runtime_context.get_map_state(
            MapStateDescriptor("raters", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
        self.stats = runtime_context.get_map_state(
            MapStateDescriptor("stats", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
        self.held = runtime_context.get_list_state(ListStateDescriptor("held-raters", Types.PICKLED_BYTE_ARRAY()))
        self._raters, self._stats = {}, {}

    def flush(self, key: Any, batch: list[Any], ctx: Any, timestamp: int, raws: list[bytes]) -> Any:
        final = timestamp == END_OF_TIME
        neighbors = self.apply_rows(key, ((n_d, p_d) for _, n_d, p_d, _ in batch), ctx, final, raws=raws)
        self._report_sizes()
        if key not in self._stats:
            self._stats[key] = dict(self.stats.items())
            self._raters[key] = dict(self.raters.items()) if self.usercf else {}
        stats, raters = self._stats[key], self._raters[key]
        changed: dict[str, None] = {}
        trending: list[tuple[str, int]] = []
        arrived: list[tuple[Any, ...]] = []
        for _, _, _, engagements in batch:
            for item, user, ts, first, w, w_old, d_sum, d_n in engagements:
                users, last, r_sum, r_n = stats.get(item, (0, ts, 0.0, 0))
                stats[item] = (users + first, max(last, ts), r_sum + d_sum, r_n + d_n)
                changed[item] = None
                trending.append((item, ts))
                if self.usercf:
                    arrived.append((item, user, ts, w, w_old))
        if changed:
            put_all(self.stats, {i: stats[i] for i in changed})
        if self.usercf:
            yield from self._pair_raters(raters, self._ready(arrived, ctx, final))
        if neighbors or changed:
            yield ("items", key, neighbors, {i: stats[i] for i in changed}, trending, int(time.time() * 1000))

    def _ready(self, arrived: list[tuple[Any, ...]], ctx: Any, final: bool) -> list[tuple[Any, ...]]:
        """The rater updates to apply now, in event-time order (ts, user, item), and hold the others.

        With a fan-out cap (``max_raters``) the raters an update pairs with depend on the order of the updates, so
        they are applied in event-time order: an update waits (keyed state ``held-raters``) until the watermark
        has passed its time, when every update of an earlier time has arrived (except late events). Without a cap
        the pairs are the same in any order and nothing waits."""
        if not self.max_raters:
            return arrived
        held = list(self.held.get() or ())
        if not held and not arrived:
            return []
        updates = held + arrived
        watermark = END_OF_TIME if final else ctx.timer_service().current_watermark()
        ready = [u for u in updates if u[2] <= watermark]
        wait = [u for u in updates if u[2] > watermark]
        if wait:
            self.held.update(wait)
        elif held:
            self.held.clear()
        if wait:  # fires when the watermark passes the newest waiting update
            ctx.timer_service().register_event_time_timer(max(u[2] for u in wait))
        ready.sort(key=lambda u: (u[2], u[1], u[0]))  # stable: one user's updates of one time keep their order
        return ready

    def _pair_raters(self, raters: dict[str, dict[str, tuple[float, int]]],
                     updates: list[tuple[Any, ...]]) -> Any:
        """Record the updates' users as raters and emit the user–user deltas they make (``USER_DELTA_TAG``)."""
        changed_raters: dict[str, None] = {}
        user_norms: dict[str, float] = {}
        user_pairs: dict[str, dict[str, float]] = {}
        for item, user, ts, w, w_old in updates:
            partners = record_rater(raters.setdefault(item, {}), user, w, ts, self.max_raters)
            changed_raters[item] = None
            if w != w_old:
                user_norms[user] = user_norms.get(user, 0.0) + w * w - w_old * w_old
                for row, cols in pair_deltas(user, w - w_old, partners).items():
                    target = user_pairs.setdefault(row, {})
                    for col, d in cols.items():
                        target[col] = target.get(col, 0.0) + d
        if changed_raters:
            put_all(self.raters, {i: raters[i] for i in changed_raters})
        if user_norms or user_pairs:
            n = self.user_shards
            per_shard: list[dict[str, dict[str, float]]] = [{} for _ in range(n)]
            for row, cols in user_pairs.items():
                per_shard[shard_of(row, n)][row] = cols
            for s in range(n):
                if per_shard[s] or user_norms:
                    yield USER_DELTA_TAG, pack(s, (s, user_norms, per_shard[s]))


class UserSimWindow(_RowsWindow):
    """User shard: user–user dot-product rows and every user's norm; emits the top-K neighbours of the users
    who acted in the window (the only ones ranked next), and of every changed user at the end of the input."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.open_rows(runtime_context)

    def flush(self, key: Any, batch: list[Any], ctx: Any, timestamp: int, raws: list[bytes]) -> Any:
        # a user's neighbours are read only when that user is ranked, i.e. after they acted: refresh those rows
        neighbors = self.apply_rows(key, ((n_d, p_d) for _, n_d, p_d in batch), ctx, timestamp == END_OF_TIME,
                                    only_norms=True, raws=raws)
        self._report_sizes()
        if neighbors:
            yield ("users", key, neighbors, int(time.time() * 1000))
