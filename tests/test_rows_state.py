"""The similarity operators' durable state (``operators.windows._RowsWindow``) without a JVM.

Flink's keyed state is replaced by dicts and lists (one key, the shard): the point is the logic that
decides what goes to state each window (a delta log, compacted every ``compact_windows`` windows) and
that a fresh operator restoring that state rebuilds exactly the rows, norms and neighbour lists of the
operator that wrote it, wherever between two compactions it stopped.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from core.itemcf import ItemRows
from operators.windows import UserSimWindow, pack


class FakeMapState:
    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}
        self.writes = 0

    def get(self, key: Any) -> Any:
        return self.data.get(key)

    def put_all(self, mapping: Any) -> None:
        self.writes += len(mapping)
        self.data.update(dict(mapping.items()))

    def items(self) -> Any:
        return list(self.data.items())


class FakeListState:
    def __init__(self) -> None:
        self.data: list[Any] = []

    def add(self, value: Any) -> None:
        self.data.append(value)

    def get(self) -> list[Any]:
        return list(self.data)

    def clear(self) -> None:
        self.data = []


class FakeContext:
    def __init__(self) -> None:
        self.states: dict[str, Any] = {}

    def get_map_state(self, desc: Any) -> FakeMapState:
        return self.states.setdefault(desc.get_name(), FakeMapState())

    def get_list_state(self, desc: Any) -> FakeListState:
        return self.states.setdefault(desc.get_name(), FakeListState())

    def get_metrics_group(self) -> Any:  # the operators' gauges (operators.metrics_catalog.gauge_setter): not read here
        return self

    def gauge(self, name: str, value: Any) -> None:
        pass


def window_batches(seed: int, windows: int) -> list[list[tuple[dict[str, float], dict[str, dict[str, float]]]]]:
    """Per window, two upstream shards' (norm deltas, pair deltas), with cancellations and new columns."""
    rng = random.Random(seed)
    out = []
    for _ in range(windows):
        batch = []
        for _ in range(2):
            norms = {f"u{rng.randrange(40)}": rng.choice([1.0, 4.0, -1.0 + 4.0]) for _ in range(5)}
            pairs: dict[str, dict[str, float]] = {}
            for _ in range(6):
                row = pairs.setdefault(f"u{rng.randrange(12)}", {})
                col = f"u{rng.randrange(40)}"
                row[col] = row.get(col, 0.0) + rng.choice([0.5, 2.0, 3.0, -0.5])
            batch.append((norms, pairs))
        out.append(batch)
    return out


def packed(batch: list[Any]) -> list[bytes]:
    """The records a batch of (norm deltas, pair deltas) arrives in (UserDelta records of shard 0)."""
    return [pack(0, (0, n_d, p_d)) for n_d, p_d in batch]


def run(op: UserSimWindow, ctx: FakeContext, batches: list[Any], as_packed: bool = False) -> dict[str, Any]:
    op.open(ctx)  # type: ignore[arg-type]
    lists: dict[str, Any] = {}
    for batch in batches:
        lists.update(op.apply_rows(0, batch, None, final=False, only_norms=False,
                                   raws=packed(batch) if as_packed else None))
    return lists


@pytest.mark.parametrize("as_packed", [False, True])
@pytest.mark.parametrize("compact_windows", [1, 3, 20])
@pytest.mark.parametrize("stop_after", [1, 3, 4, 7, 9])
def test_a_restore_rebuilds_the_exact_rows(compact_windows: int, stop_after: int, as_packed: bool) -> None:
    """The log holds the deltas, or (as the job runs) the packed records they came in: a restore replays either."""
    batches = window_batches(seed=stop_after, windows=9)
    ctx = FakeContext()
    first = UserSimWindow(500, top_k=5, refresh_budget_ms=0, compact_windows=compact_windows)
    run(first, ctx, batches[:stop_after], as_packed)
    if as_packed and compact_windows > 1 and stop_after % compact_windows:
        assert all(isinstance(x, bytes) for entry in ctx.states["rows-log"].data for x in entry)
    before: ItemRows = first._models[0]
    log = ctx.states["rows-log"].data
    assert len(log) == (stop_after % compact_windows if compact_windows > 1 else 0)
    # a new operator on the same state (a restore), then the rest of the stream on both
    second = UserSimWindow(500, top_k=5, refresh_budget_ms=0, compact_windows=compact_windows)
    second.open(ctx)  # type: ignore[arg-type]
    restored = second._model(0)
    assert restored.rows == before.rows  # identical floats: the same additions in the same order
    assert restored.norms == before.norms
    assert {a: restored.neighbors(a) for a in restored.rows} == {a: before.neighbors(a) for a in before.rows}
    rest = batches[stop_after:]
    for batch in rest:
        first.apply_rows(0, batch, None, final=False)
        second.apply_rows(0, batch, None, final=False)
    assert second._models[0].rows == first._models[0].rows and second._models[0].norms == first._models[0].norms


def test_compaction_writes_rows_only_every_n_windows() -> None:
    batches = window_batches(seed=1, windows=10)
    ctx = FakeContext()
    op = UserSimWindow(500, top_k=5, refresh_budget_ms=0, compact_windows=5)
    run(op, ctx, batches[:4])
    assert ctx.states["rows"].writes == 0 and len(ctx.states["rows-log"].data) == 4
    run_more = [op.apply_rows(0, b, None, final=False) for b in batches[4:5]]
    assert run_more and ctx.states["rows"].writes > 0 and ctx.states["rows-log"].data == []
    model = op._models[0]
    assert ctx.states["rows"].data == model.rows and ctx.states["norms"].data == model.norms


def test_rankers_packed_neighbour_lists_give_back_the_same_list_with_shared_names() -> None:
    import pickle
    import sys

    from operators.ranker import pack_neighbors, unpack_neighbors

    rng = random.Random(3)
    lists = {f"u{k}": [(f"u{rng.randrange(50)}", rng.random()) for _ in range(rng.randrange(0, 21))]
             for k in range(200)}
    # as the ranker receives them: unpickled from a record, every name a string object of its own
    received = pickle.loads(pickle.dumps(lists))
    packed = {u: pack_neighbors(nb) for u, nb in received.items()}
    for u, nb in lists.items():
        assert unpack_neighbors(packed[u]) == nb  # same names, same floats, same order
    assert unpack_neighbors(None) == []
    names = [v for p in packed.values() for v in p[0]]
    assert all(v is sys.intern(v) for v in names)  # one object per user id
    assert len({id(v) for v in names}) == len(set(names))
    flat = sum(sys.getsizeof(nb) + sum(sys.getsizeof(t) + sys.getsizeof(t[1]) for t in nb) for nb in received.values())
    small = sum(sys.getsizeof(p) + sys.getsizeof(p[0]) + sys.getsizeof(p[1]) for p in packed.values())
    assert small * 2 < flat  # strings not counted: the unpacked lists hold a string per entry besides


class PickledMapState(FakeMapState):
    """Values stored as Flink stores them (pickled on write), so that later changes of an object do not leak in."""

    def put_all(self, mapping: Any) -> None:
        import pickle

        super().put_all({k: pickle.loads(pickle.dumps(v)) for k, v in mapping.items()})

    def remove(self, key: Any) -> None:
        del self.data[key]


class FakeBroadcastContext:
    """The broadcast side's context: one map state per descriptor."""

    def __init__(self) -> None:
        self.states: dict[str, PickledMapState] = {}

    def get_broadcast_state(self, desc: Any) -> PickledMapState:
        return self.states.setdefault(desc.get_name(), PickledMapState())


def _fresh_ranker() -> Any:
    import config
    from operators.ranker import Ranker

    ranker = Ranker(config.load_config()["model"], 500)
    ranker.open_model()
    return ranker


@pytest.mark.parametrize("batches", [1, 57, 99, 100, 101, 263])
def test_ranker_trending_restores_from_snapshot_plus_log(batches: int) -> None:
    import pickle

    from operators.ranker import TRENDING_LOG_MAX

    rng = random.Random(batches)
    writer, ctx = _fresh_ranker(), FakeBroadcastContext()
    writer._loaded = True
    t = 1_000_000
    for _ in range(batches):
        engagements = []
        for _ in range(rng.randrange(1, 30)):
            t += rng.randrange(0, 5000)
            engagements.append((f"i{int(rng.paretovariate(1.1)) % 300}", t))
        stats = {i: (1, ts, 0.0, 0) for i, ts in engagements}
        writer.process_broadcast_element(("items", 0, {}, stats, engagements, 0), ctx)
    globals_ = ctx.states["globals"].data
    logged = [k for k in globals_ if k.startswith("trending-log-")]
    assert len(logged) == batches % TRENDING_LOG_MAX == globals_["trending_log"]
    # a restore: the state as a checkpoint holds it (pickled), read by a fresh ranker
    restored_ctx = pickle.loads(pickle.dumps(ctx))
    reader = _fresh_ranker()
    reader._load(restored_ctx)
    w, r = writer.rec.trending, reader.rec.trending
    assert len(w.decayed) > 1
    # the same additions in the same order after the same snapshot: the same floats
    assert (r.decayed, r.totals, r.buckets, r.now_ms) == (w.decayed, w.totals, w.buckets, w.now_ms)
    assert r.top_decayed(len(w.decayed)) == w.top_decayed(len(w.decayed))
    assert reader.rec.now_ms == writer.rec.now_ms == t
    assert reader._trend_log == writer._trend_log
