"""The intake and the model operator, driven outside Flink: item lists are owned by item shard, at any parallelism.

The real :class:`operators.intake.Intake` and :class:`operators.model.Model` run under a small stand-in for what Flink
gives them (keyed list and map state, broadcast state, event-time timers fired in time order as the watermark
passes them, metric groups): the intake's outputs are broadcast (event batches) or routed by shard to the model
subtask that holds the shard (rank requests, ticks). Whatever the assignment of shards to subtasks (one subtask;
Flink's assignment at parallelism 2; at 4, where one subtask holds no shard; shards whose users are all quiet at the
end), every item's list is written by one subtask, and the last lists written equal those of one model that learned
every event at once, before the end of input as well as at it, also when the end of event time reaches a model
subtask before an intake's last records.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from core.v2 import model as M
from core.v2.settings import Settings
from operators.front import FrontBatch
from operators.intake import RANK_TAG, Intake
from operators.model import ITEMS_TAG, Model
from operators.records import END_OF_TIME, ItemLists, RecsBatch, packed_shard
from udfs.events import EVENT_TYPES, Event
from udfs.shard import shard_of

SHARDS = 8
LONG_MIN = -(2**63)
OUT_OF_ORDERNESS_MS = 500
# Flink's assignment of the model's keys Row(shard) to subtasks (KeyGroupRangeAssignment, max parallelism 128)
FLINK_P2 = {0: 0, 1: 0, 2: 1, 3: 1, 4: 0, 5: 0, 6: 1, 7: 0}
FLINK_P4 = {0: 1, 1: 1, 2: 3, 3: 3, 4: 0, 5: 0, 6: 3, 7: 0}  # subtask 2 holds no shard


class Group:
    """A metric group as PyFlink's process mode has it (the operators register counters and gauges)."""

    def add_group(self, name: str, extra: str | None = None) -> Group:
        return self

    def counter(self, name: str) -> Any:
        return self

    def inc(self, n: int = 1) -> None:
        pass

    def gauge(self, name: str, obj: Any) -> None:
        pass


class Subtask:
    """One parallel instance of a keyed operator: its current key, keyed state, timers and watermark."""

    def __init__(self, index: int, parallelism: int) -> None:
        self.index, self.parallelism = index, parallelism
        self.key: int | None = None
        self.lists: dict[tuple[str, int], list[Any]] = {}
        self.maps: dict[tuple[str, int], dict[Any, Any]] = {}
        self.broadcast = BroadcastState()
        self.timers: set[tuple[int, int]] = set()
        self.watermark = LONG_MIN

    # the runtime context
    def get_index_of_this_subtask(self) -> int:
        return self.index

    def get_number_of_parallel_subtasks(self) -> int:
        return self.parallelism

    def get_metrics_group(self) -> Group:
        return Group()

    def get_list_state(self, descriptor: Any) -> KeyedList:
        return KeyedList(self, descriptor.name)

    def get_map_state(self, descriptor: Any) -> KeyedMap:
        return KeyedMap(self, descriptor.name)

    # the function's context
    def get_current_key(self) -> int:
        assert self.key is not None
        return self.key

    def get_broadcast_state(self, descriptor: Any) -> BroadcastState:
        return self.broadcast

    def timer_service(self) -> Subtask:
        return self

    def register_event_time_timer(self, ts: int) -> None:
        assert self.key is not None
        self.timers.add((ts, self.key))

    def current_watermark(self) -> int:
        return self.watermark

    def due_timers(self, watermark: int) -> Iterator[tuple[int, int]]:
        """Advance the watermark; the timers it passes, in time order, each removed before it fires. As in Flink,
        timers fire only when the watermark advances: one set at or before the current watermark waits for the
        next advance (after the end of event time, there is none)."""
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        while True:
            due = sorted(t for t in self.timers if t[0] <= self.watermark)
            if not due:
                return
            self.timers.discard(due[0])
            yield due[0]


class BroadcastState(dict):  # type: ignore[type-arg]
    def put(self, key: Any, value: Any) -> None:
        self[key] = value


class KeyedList:
    def __init__(self, task: Subtask, name: str) -> None:
        self.task, self.name = task, name

    def _cell(self) -> list[Any]:
        assert self.task.key is not None
        return self.task.lists.setdefault((self.name, self.task.key), [])

    def add(self, value: Any) -> None:
        self._cell().append(value)

    def get(self) -> list[Any]:
        return list(self._cell())

    def update(self, values: Sequence[Any]) -> None:
        self._cell()[:] = values

    def clear(self) -> None:
        self._cell().clear()


class KeyedMap:
    def __init__(self, task: Subtask, name: str) -> None:
        self.task, self.name = task, name

    def _cell(self) -> dict[Any, Any]:
        assert self.task.key is not None
        return self.task.maps.setdefault((self.name, self.task.key), {})

    def items(self) -> Any:
        return list(self._cell().items())

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._cell()))

    def put_all(self, pairs: Any) -> None:
        self._cell().update(dict(pairs))


def front_batch(events: Sequence[Event]) -> FrontBatch:
    """One shard's window as the JVM front hands it on: valid events as columns, none late or refused."""
    codes = {t: c for c, t in enumerate(EVENT_TYPES)}
    n = len(events)
    return FrontBatch([e.event_id for e in events], [e.user_id for e in events], [e.item_id for e in events],
                      bytes(codes[e.type] for e in events), [e.weight for e in events], [e.ts for e in events],
                      [zlib.crc32(e.event_id.encode()) for e in events], [LONG_MIN] * n, [None] * n, [None] * n,
                      [], [], [], [])


class Job:
    """The intake (one subtask, every shard) feeding ``parallelism`` model subtasks; subtask ``owner[s]`` holds shard
    ``s``."""

    def __init__(self, settings: Settings, owner: dict[int, int], parallelism: int) -> None:
        self.owner = owner
        self.intake_task = Subtask(0, 1)
        self.intake = Intake(10**12, 10**6, shards=SHARDS)
        self.intake.open(self.intake_task)
        self.tasks = [Subtask(i, parallelism) for i in range(parallelism)]
        self.models = [Model(settings, shards=SHARDS) for _ in self.tasks]
        for model, task in zip(self.models, self.tasks, strict=True):
            model.open(task)
        self.written: dict[str, tuple[int, list[tuple[str, float]]]] = {}  # item -> (subtask, last list)
        self.messages: dict[str, dict[str, Any]] = {}

    def window(self, events: Sequence[Event], held: list[bytes] | None = None) -> None:
        """One front window: each shard's events through the intake, its outputs on to the model subtasks (the event
        batches into ``held`` instead, if given: delivered later, after records of the other edge)."""
        by_shard: dict[int, list[Event]] = {}
        for e in events:
            by_shard.setdefault(shard_of(e.user_id, SHARDS), []).append(e)
        for shard, chunk in sorted(by_shard.items()):
            self.intake_task.key = shard
            for out in self.intake.process_element(front_batch(chunk), self.intake_task):
                if isinstance(out, tuple):
                    tag, data = out
                    assert tag is RANK_TAG
                    self.keyed(data)
                elif held is not None:
                    held.append(out)
                else:
                    self.broadcast(out)

    def broadcast(self, data: bytes) -> None:
        for model, task in zip(self.models, self.tasks, strict=True):
            task.key = None
            self.collect(task, model.process_broadcast_element(data, task))

    def keyed(self, data: bytes) -> None:
        """A rank request or tick to the model subtask that holds its shard."""
        task = self.tasks[self.owner[packed_shard(data)]]
        task.key = packed_shard(data)
        self.collect(task, self.models[task.index].process_element(data, task))

    def advance(self, watermark: int) -> None:
        for model, task in zip(self.models, self.tasks, strict=True):
            for ts, key in task.due_timers(watermark):
                task.key = key
                self.collect(task, model.on_timer(ts, task))

    def collect(self, task: Subtask, outputs: Any) -> None:
        for out in outputs:
            if isinstance(out, RecsBatch):
                self.messages.update({m["user_id"]: m for m in out.messages})
            elif out[0] is ITEMS_TAG:
                lists: ItemLists = out[1]
                for item, nb in lists.neighbors.items():
                    writer = self.written.get(item, (task.index, []))[0]
                    assert writer == task.index, f"item {item}: lists from subtasks {writer} and {task.index}"
                    self.written[item] = (task.index, nb)


def stream(seed: int = 7) -> list[Event]:
    """1,500 ratings in time order; the last 300 by users of shard 0 only, 60 of them of items nobody rated before
    (whose lists belong to shards whose users are quiet by then)."""
    rng = random.Random(seed)
    users = [f"u{n}" for n in range(60)]
    quiet_end = [u for u in users if shard_of(u, SHARDS) == 0]
    assert len(quiet_end) >= 3
    events, ts = [], 1_000_000_000_000
    for n in range(1500):
        late_part = n >= 1200
        user = rng.choice(quiet_end if late_part else users)
        item = f"new{rng.randrange(20)}" if late_part and n % 5 == 0 else f"i{min(int(rng.paretovariate(1.2)), 80)}"
        ts += rng.randrange(1, 4000)
        events.append(Event(f"e{n}", user, item, "rate", float(rng.randrange(1, 6)), ts))
    return events


def reference(events: Sequence[Event], settings: Settings) -> dict[str, list[tuple[str, float]]]:
    state = M.new_state(settings)
    M.learn(state, M.Batch.of(events))
    lists = {e.item_id: M.neighbors(state, e.item_id) for e in events}
    return {item: nb for item, nb in lists.items() if nb}


def run(events: Sequence[Event], settings: Settings, owner: dict[int, int], parallelism: int, end: str,
        window: int = 40) -> Job:
    """``end``: ``settled`` (the watermark stops at the newest event), ``final`` (the end of input: the intake's
    final requests, then the end of event time), ``early`` (the end of event time reaches the model before the
    last window and the final requests, as it does through other inputs while the intake's were idle) or
    ``early-reordered`` (and the last window's event batches, on the broadcast edge, come after everything the
    keyed edge carries)."""
    job = Job(settings, owner, parallelism)
    starts = range(0, len(events), window)
    held: list[bytes] | None = None
    for start in starts:
        if end.startswith("early") and start == starts[-1]:
            job.advance(END_OF_TIME)
            held = [] if end == "early-reordered" else None
        chunk = events[start:start + window]
        job.window(chunk, held)
        job.advance(max(e.ts for e in chunk) - OUT_OF_ORDERNESS_MS - 1)
    if end == "settled":
        job.advance(max(e.ts for e in events))  # a quiet input: the watermark settles at the newest event
        return job
    for shard in sorted({shard_of(e.user_id, SHARDS) for e in events}):
        job.intake_task.key = shard
        for _tag, data in job.intake.on_timer(END_OF_TIME, job.intake_task):
            job.keyed(data)
    for data in held or ():
        job.broadcast(data)
    job.advance(END_OF_TIME)
    return job


ASSIGNMENTS = {
    "p1": ({s: 0 for s in range(SHARDS)}, 1),
    "flink-p2": (FLINK_P2, 2),
    "flink-p4-a-subtask-without-shards": (FLINK_P4, 4),
    "quiet-shards-alone": ({s: 0 if s == 0 else 1 for s in range(SHARDS)}, 2),
}


@pytest.mark.parametrize("end", ["settled", "final", "early", "early-reordered"])
@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_every_item_list_is_written_once_and_equals_one_model(name: str, end: str) -> None:
    owner, parallelism = ASSIGNMENTS[name]
    settings = Settings(history_cap=0, methods=("itemcf",))
    events = stream()
    job = run(events, settings, owner, parallelism, end)
    want = reference(events, settings)
    got = {item: nb for item, (_, nb) in job.written.items()}
    assert sorted(set(want) - set(got))[:10] == [], "items without a written list"
    assert set(got) == set(want)
    for item, nb in want.items():
        assert [j for j, _ in got[item]] == [j for j, _ in nb], f"item {item}: neighbours differ"
        assert [s for _, s in got[item]] == pytest.approx([s for _, s in nb], rel=1e-12), f"item {item}: scores"
    for item, (writer, _) in job.written.items():
        shard = shard_of(item, SHARDS)
        assert writer == owner[shard], f"item {item} of shard {shard} written by subtask {writer}"
    if end == "early-reordered":
        return  # the lists are exact; a user ranked before the events it ranks on arrived is not (nor can be)
    # every user answered with its newest event, by the subtask holding its shard
    last: dict[str, Event] = {}
    for e in events:
        last[e.user_id] = e
    assert {u: m["event_id"] for u, m in job.messages.items()} == {u: e.event_id for u, e in last.items()}
    if end != "settled":  # and at the end of input with the final model, whenever the end of event time came
        assert {m["trigger"] for m in job.messages.values()} == {"final"}
        assert {u: m["history_size"] for u, m in job.messages.items()} == {
            u: len({e.item_id for e in events if e.user_id == u}) for u in last}
