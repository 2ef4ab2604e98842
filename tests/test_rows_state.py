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
from operators.windows import UserSimWindow


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


def run(op: UserSimWindow, ctx: FakeContext, batches: list[Any]) -> dict[str, Any]:
    op.open(ctx)  # type: ignore[arg-type]
    lists: dict[str, Any] = {}
    for batch in batches:
        lists.update(op.apply_rows(0, batch, None, final=False, only_norms=False))
    return lists


@pytest.mark.parametrize("compact_windows", [1, 3, 20])
@pytest.mark.parametrize("stop_after", [1, 3, 4, 7, 9])
def test_a_restore_rebuilds_the_exact_rows(compact_windows: int, stop_after: int) -> None:
    batches = window_batches(seed=stop_after, windows=9)
    ctx = FakeContext()
    first = UserSimWindow(500, top_k=5, refresh_budget_ms=0, compact_windows=compact_windows)
    run(first, ctx, batches[:stop_after])
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


# -- the rankers' copies of the user-CF rows (operators.ranker.Ranker, broadcast state) -------------------------------

class FakeBroadcastState(FakeMapState):
    def put(self, key: Any, value: Any) -> None:
        self.writes += 1
        self.data[key] = value

    def clear(self) -> None:
        self.data = {}


class FakeRankerContext:
    """Both what ``Ranker.open`` asks of a runtime context and what the broadcast side asks of its context."""

    def __init__(self, broadcast: dict[str, FakeBroadcastState] | None = None) -> None:
        self.broadcast = {} if broadcast is None else broadcast

    def get_broadcast_state(self, desc: Any) -> FakeBroadcastState:
        return self.broadcast.setdefault(desc.get_name(), FakeBroadcastState())

    def get_list_state(self, desc: Any) -> FakeListState:
        return FakeListState()

    def get_map_state(self, desc: Any) -> FakeMapState:
        return FakeMapState()

    def get_state(self, desc: Any) -> None:
        return None

    def get_metrics_group(self) -> Any:
        class Group:
            def counter(self, name: str) -> Any:
                return None
        return Group()


def user_items_records(seed: int, n: int) -> list[dict[str, dict[str, float]]]:
    """UserWindow's user_items records: per window the row entries it set, with re-engagements (new weights)."""
    rng = random.Random(seed)
    return [{f"u{rng.randrange(15)}": {f"i{rng.randrange(30)}": rng.choice([0.5, 1.0, 2.5, 4.0])
                                       for _ in range(rng.randrange(1, 4))}
             for _ in range(rng.randrange(1, 5))} for _ in range(n)]


def ranker(compact_records: int, ctx: FakeRankerContext) -> Any:
    from config import load_config
    from operators.ranker import Ranker

    op = Ranker(load_config(None)["model"], 500, compact_records=compact_records)
    op.open(ctx)  # type: ignore[arg-type]
    return op


@pytest.mark.parametrize("compact_records", [1, 4, 50])
@pytest.mark.parametrize("stop_after", [1, 4, 9, 13])
def test_ranker_user_items_log_restores_the_exact_rows(compact_records: int, stop_after: int) -> None:
    records = user_items_records(seed=stop_after, n=20)
    want: dict[str, dict[str, float]] = {}
    for rec in records[:stop_after]:
        for user, row in rec.items():
            want.setdefault(user, {}).update(row)
    ctx = FakeRankerContext()
    first = ranker(compact_records, ctx)
    for rec in records[:stop_after]:
        first.process_broadcast_element(("user_items", rec), ctx)
    assert first._user_items == want
    log = ctx.broadcast["user-items-log"].data
    assert len(log) == (stop_after % compact_records if compact_records > 1 else 0)
    if compact_records > stop_after:
        assert ctx.broadcast["user-items"].writes == 0  # nothing written whole yet: all of it is in the log
    # a restore: a new ranker on (a copy of) the same broadcast state
    copy = {name: FakeBroadcastState() for name in ctx.broadcast}
    for name, state in ctx.broadcast.items():
        copy[name].data = {k: {i: dict(r) for i, r in v.items()} if name == "user-items-log" else dict(v)
                           for k, v in state.data.items()}
    ctx2 = FakeRankerContext(copy)
    second = ranker(compact_records, ctx2)
    second._load(ctx2)
    assert second._user_items == want
    for rec in records[stop_after:]:  # and both go on alike, compactions included
        first.process_broadcast_element(("user_items", rec), ctx)
        second.process_broadcast_element(("user_items", rec), ctx2)
    assert second._user_items == first._user_items
    third = ranker(compact_records, FakeRankerContext(ctx2.broadcast))
    third._load(ctx2)
    assert third._user_items == first._user_items
