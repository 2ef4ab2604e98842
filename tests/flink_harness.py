"""Runs the recommendation pipeline in the PyFlink mini-cluster on in-memory input, collecting its outputs.

The source is an in-memory collection (one subtask, so one user's events stay in order, as one Kafka
partition keeps them); the rest of the pipeline runs at the requested parallelism.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
from pyflink.common import Row, Types
from pyflink.datastream import MapFunction

from config import load_config
from jobs.flink_env import make_env
from jobs.recommend import recommend
from operators.front import SOURCE_RECORD, catalog_watermarks


@dataclass
class PipelineResult:
    recs: list[dict[str, Any]] = field(default_factory=list)  # every recommendation message, in output order
    neighbors: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # last list emitted per item
    counts: dict[str, int] = field(default_factory=dict)  # last popularity (distinct users) emitted per item
    user_neighbors: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # last list per user
    dlq: list[dict[str, Any]] = field(default_factory=list)
    # every item-lists record in output order: ({item: [neighbour ids]}, items whose lists were removed, updated_at)
    item_lists: list[tuple[dict[str, list[str]], list[str], int]] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)  # every experiment summary, in output order

    def latest_recs(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for msg in self.recs:
            out[msg["user_id"]] = msg
        return out


def run_pipeline(events: Sequence[str], parallelism: int, overrides: Sequence[str] = (),
                 catalog: Sequence[str] | None = None, events_map: MapFunction | None = None,
                 catalog_map: MapFunction | None = None, recs_map: MapFunction | None = None,
                 catalog_ends: Mapping[int, int | None] | None = None) -> PipelineResult:
    """Run the job on ``events`` (and ``catalog`` records, JSON strings, when given) and collect its outputs.
    ``events_map``, ``catalog_map``, ``recs_map``: a map on each source (one subtask) and on the recommendations,
    e.g. :class:`Pace`, :class:`Gate` and :class:`Holding`. ``catalog_ends``: with ``catalog_map``, the catalog's
    watermark targets (:func:`operators.front.catalog_watermarks`), as the Kafka job sets them."""
    cfg = load_config(overrides=["job.checkpoint_interval_ms=0", *overrides], env={})
    env = make_env(cfg, kafka=False, parallelism=parallelism)
    # one source subtask keeps the input order (as one Kafka partition does): PyFlink's from_collection
    # is an InputFormatSourceFunction, a *parallel* source that splits the collection among the subtasks
    source = env.from_collection(list(events), type_info=Types.STRING()).set_parallelism(1)
    if events_map is not None:
        # a task of its own: while it waits, the source and the front go on (watermarks, buffers flushed)
        source = source.map(events_map, output_type=Types.STRING()).set_parallelism(1).disable_chaining()
    # catalog records as a Kafka source delivers them: with an origin (topic, partition, offset), so that the
    # newest items are the same whatever order the parallel parser hands them on in (operators.parse)
    items = (env.from_collection([Row(r, f"items 0 {n}") for n, r in enumerate(catalog)], type_info=SOURCE_RECORD)
             .set_parallelism(1) if catalog is not None else None)
    if items is not None and catalog_map is not None:
        # a catalog still open must not hold the events' watermark back: idle, as the Kafka catalog source is, once
        # it has read up to its targets; no idle timeout (the Kafka job's job.idle_partition_ms; 0: never), so a
        # catalog held back by ``catalog_map`` holds event time whatever the machine's speed
        items = (items.map(catalog_map, output_type=SOURCE_RECORD).set_parallelism(1).disable_chaining()
                 .assign_timestamps_and_watermarks(catalog_watermarks(catalog_ends, idle_ms=0)))
    out = recommend(source, cfg, redis=False, parse_parallelism=1, catalog=items)
    streams = [
        out.dlq.map(lambda s: "D" + s, output_type=Types.STRING()),
        out.neighbors.map(lambda b: "N" + json.dumps([b.neighbors, b.users, b.removed, b.updated_at]),
                          output_type=Types.STRING()),
    ]
    if out.user_neighbors is not None:
        streams.append(out.user_neighbors.map(lambda b: "U" + json.dumps(b.neighbors), output_type=Types.STRING()))
    if out.experiments is not None:
        streams.append(out.experiments.map(lambda s: "X" + s, output_type=Types.STRING()))
    recs = out.recommendations
    if recs_map is not None:
        recs = recs.map(recs_map, output_type=Types.STRING()).set_parallelism(1)
    tagged = recs.map(lambda s: "R" + s, output_type=Types.STRING()).union(*streams)
    result = PipelineResult()
    with tagged.execute_and_collect() as records:
        for rec in records:
            kind, body = rec[0], json.loads(rec[1:])
            if kind == "R":
                result.recs.append(body)
            elif kind == "D":
                result.dlq.append(body)
            elif kind == "X":
                result.experiments.append(body)
            elif kind == "U":
                result.user_neighbors.update({u: [(v, s) for v, s in lst] for u, lst in body.items()})
            else:
                nbrs, counts, removed, updated_at = body
                result.neighbors.update({i: [(j, s) for j, s in lst] for i, lst in nbrs.items()})
                for item in removed:
                    result.neighbors.pop(item, None)
                result.counts.update(counts)
                result.item_lists.append(({i: [j for j, _ in lst] for i, lst in nbrs.items()}, removed, updated_at))
    return result


def event_json(event_id: str, user: str, item: str, value: float, ts: int, etype: str = "rate") -> str:
    return json.dumps({"event_id": event_id, "user_id": user, "item_id": item, "type": etype, "value": value,
                       "ts": ts})


# the Python workers cannot import this module (tests/ is not on their path): its functions go by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def counter(path: str) -> int:
    """The number a :class:`Pace` or :class:`Holding` wrote to ``path`` (0 before it did)."""
    try:
        return int(Path(path).read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _write(path: str, n: int) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(str(n))
    tmp.replace(path)


class Pace(MapFunction):
    """A pause of ``delay_s`` (wall time) before every ``every``-th event (with ``hold``, from event ``hold[0]`` on,
    which first waits until the counter at ``hold[1]`` reaches ``hold[2]``, at most ``timeout_s``), the number passed
    so far written to ``path``."""

    def __init__(self, path: str, delay_s: float, hold: tuple[int, str, int] | None = None,
                 timeout_s: float = 120.0, every: int = 1) -> None:
        self.path, self.delay_s, self.hold, self.timeout_s, self.n = path, delay_s, hold, timeout_s, 0
        self.every = every

    def map(self, value: str) -> str:
        if self.hold is not None and self.n == self.hold[0]:
            deadline = time.monotonic() + self.timeout_s
            while counter(self.hold[1]) < self.hold[2] and time.monotonic() < deadline:
                time.sleep(0.01)
        if (self.hold is None or self.n >= self.hold[0]) and self.n % self.every == 0:
            time.sleep(self.delay_s)
        self.n += 1
        _write(self.path, self.n)
        return value


class Holding(MapFunction):
    """Recommendation messages as they are; the number of those listing ``item`` written to ``path``."""

    def __init__(self, path: str, item: str) -> None:
        self.path, self.item, self.n = path, item, 0

    def map(self, value: str) -> str:
        if self.item in [it["item_id"] for it in json.loads(value)["items"]]:
            self.n += 1
            _write(self.path, self.n)
        return value


class Gate(MapFunction):
    """Catalog records held back: record ``k`` of ``after`` waits until the counter at ``after[k][0]`` (a
    :class:`Pace`'s) reaches ``after[k][1]`` (at most ``timeout_s``), and the wall time (ms) it went on is written to
    ``path.<k>``."""

    def __init__(self, path: str, after: dict[int, tuple[str, int]], timeout_s: float = 120.0) -> None:
        self.path, self.after, self.timeout_s, self.n = path, after, timeout_s, 0

    def map(self, value: Row) -> Row:
        k = self.n
        self.n += 1
        if k in self.after:
            deadline = time.monotonic() + self.timeout_s
            while counter(self.after[k][0]) < self.after[k][1] and time.monotonic() < deadline:
                time.sleep(0.01)
            Path(f"{self.path}.{k}").write_text(str(int(time.time() * 1000)))
        return value
