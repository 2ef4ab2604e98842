"""The job's own Flink metrics: the one list of them, and the helpers the operators register them with.

:data:`JOB_METRICS` names every counter, gauge and histogram the job's operators register, as Flink's Prometheus
reporter exports them (``flink_taskmanager_job_task_operator_<group>_<name>``), with the operators that register
them and what they count. docs/metrics.md documents the same list; tests/test_metrics.py checks that the
operators' code registers exactly these names, that the Grafana dashboard and the alert rules (deploy/grafana,
deploy/prometheus) use no other names (besides Flink's own, :data:`FLINK_METRICS`), and that a running job
exports them.

Label values: Flink's Prometheus reporter keeps only ``[a-zA-Z0-9:_]`` in label values (the rest become ``_``),
so ``operator_name`` is ``parse_catalog`` for the operator named ``parse-catalog``, and histogram bounds
are integers (``le="5"``, ``le="Inf"``).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: the name prefix of every metric registered in an operator's metric group
OPERATOR_SCOPE = "flink_taskmanager_job_task_operator_"

#: the upper bounds (ms) of the ranking-time histogram's buckets; a last bucket ``le="Inf"`` counts every ranking
RANKING_MS_BOUNDS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


@dataclass(frozen=True)
class JobMetric:
    """One metric the job registers: ``registered`` is its path in the operator's metric group (dotted groups,
    ``<reason>`` where the code fills in a value); ``operators`` the ``operator_name`` label values it appears
    under (as the reporter filters them); ``lazy``: registered on first use (a DLQ reason only once a record is
    refused for it)."""

    registered: str
    kind: str  # counter | gauge | histogram
    operators: tuple[str, ...]
    meaning: str
    lazy: bool = False
    within: str = ""  # a group Flink puts the operator's group in (``user``: the Kafka sink's serializer metrics)

    @property
    def prometheus(self) -> str:
        """The name Prometheus shows (a histogram: the name of its bucket series, labelled ``le``)."""
        name = OPERATOR_SCOPE + (f"{self.within}_" if self.within else "") + self.registered.replace(".", "_")
        return name + "_le_bucket" if self.kind == "histogram" else name

    @property
    def name_regex(self) -> str | None:
        """For a family of names (``registered`` with a ``<placeholder>``): the regex matching its names."""
        if "<" not in self.prometheus:
            return None
        return re.sub(r"<[a-z_]+>", ".+", self.prometheus)

    @property
    def labels(self) -> str:
        extra = {"histogram": 'le (the bucket\'s upper bound in ms, "Inf" for all)'}.get(self.kind)
        return "operator labels" + (f" + {extra}" if extra else "")

    def matches(self, name: str) -> bool:
        regex = self.name_regex
        return re.fullmatch(regex, name) is not None if regex else name == self.prometheus


JOB_METRICS: tuple[JobMetric, ...] = (
    JobMetric("events_in", "counter", ("intake",),
              "records read from the events topic that reached the intake, valid or not"),
    JobMetric("events_valid", "counter", ("intake",),
              "records that passed validation and the late-event policy (duplicates among them are counted in "
              "duplicates and dropped)"),
    JobMetric("dlq.<reason>", "counter", ("intake", "parse_catalog"),
              "records sent to the dead-letter topic, one counter per reason (bad_json, missing_field, late_event, "
              "bad_catalog_record...: the reason field of the DLQ record)", lazy=True),
    JobMetric("late", "counter", ("intake",),
              "events behind the watermark (job.late_events: learned with the model's next step, or sent to the "
              "DLQ as late_event)"),
    JobMetric("duplicates", "counter", ("intake",),
              "events whose event_id the intake already holds for the user: dropped (a redelivery is learned once)"),
    JobMetric("users_held", "gauge", ("intake",),
              "users whose event ids the subtask keeps for de-duplication (every user of the shards it has seen)"),
    JobMetric("front.rechecked", "counter", ("shard_events",),
              "events the front checked a second time because the check of the source's timestamp assigner did "
              "not reach it (the front not chained to a source with the front's watermarks): 0 in the job as wired"),
    JobMetric("events_learned", "counter", ("model",),
              "events the subtask's copy of the model learned (every subtask learns every event: a job-wide rate "
              "is one subtask's, not the sum)"),
    JobMetric("events_waiting", "gauge", ("model",),
              "events the subtask holds until the watermark passes them, after its latest learning step"),
    JobMetric("model_bytes", "gauge", ("model",),
              "bytes of the arrays of the subtask's copy of the model (every subtask holds a whole copy), after its "
              "latest ranking"),
    JobMetric("rankings", "counter", ("model",), "rankings sent (one per answered user; rate() = rankings/s)"),
    JobMetric("ranking_ms", "histogram", ("model",),
              "wall time of a ranking per user in ms (a batch's time, all modes of the message, over its users), "
              "cumulative buckets: histogram_quantile() over rate() of the buckets"),
    JobMetric("combiner_examples", "counter", ("model",),
              "examples the learned combiner was trained on, while learned ranks (model.hybrid.mode or "
              "model.compare_modes); every subtask trains the same combiner: a job-wide rate is one subtask's",
              lazy=True),
    JobMetric("arm.events", "counter", ("model",),
              "with an experiment (experiments.name), per arm (label arm): engagements scored against the list their "
              "user was served before them", lazy=True),
    JobMetric("arm.hits", "counter", ("model",),
              "... of those, the engaged item was in that list's first model.top_n (hit rate: rate(hits) / "
              "rate(events))", lazy=True),
    JobMetric("arm.lists", "counter", ("model",), "... lists sent to the arm's users", lazy=True),
    JobMetric("redis_sink.retries", "counter", ("recs_to_redis", "similar_to_redis", "experiments_to_redis"),
              "rounds of Redis writes retried after a backoff (Redis unreachable, timing out, loading, out of memory, "
              "read-only)"),
    JobMetric("redis_sink.backoff_ms", "counter", ("recs_to_redis", "similar_to_redis", "experiments_to_redis"),
              "ms the sink slept backing off before those retries (the pipeline is back-pressured meanwhile)"),
    JobMetric("redis_sink.unwritable", "counter", ("recs_to_redis", "similar_to_redis", "experiments_to_redis"),
              "writes Redis refused for themselves (e.g. a key of another type): dropped and logged with the key"),
    JobMetric("kafka_sink.oversized", "counter", ("kafka_recommendations:_Writer", "kafka_dlq:_Writer",
                                                          "kafka_experiments:_Writer"),
              "output records over kafka.max_record_bytes: not written, logged with their key", within="user"),
)

#: Flink's own metrics the dashboard and alerts use, as the Prometheus reporter names them (Flink 2.2), and what
#: each is; the integration test finds each in a running job's scrape (pendingRecords: Kafka sources only).
FLINK_METRICS: dict[str, str] = {
    "flink_jobmanager_numRunningJobs": "jobs running on the JobManager",
    "flink_jobmanager_job_uptime": "ms the job has been running (0 while not running)",
    "flink_jobmanager_job_numRestarts": "restarts of the job since it was submitted",
    "flink_jobmanager_job_lastCheckpointDuration": "ms the last completed checkpoint took",
    "flink_jobmanager_job_lastCheckpointSize": "bytes the last checkpoint wrote (incremental size)",
    "flink_jobmanager_job_lastCheckpointFullSize": "bytes of the last checkpoint's full state",
    "flink_jobmanager_job_numberOfFailedCheckpoints": "checkpoints that failed",
    "flink_jobmanager_job_numberOfCompletedCheckpoints": "checkpoints that completed",
    "flink_taskmanager_job_task_operator_pendingRecords": "Kafka source: records behind the end of the topic (lag)",
    "flink_taskmanager_job_task_operator_numRecordsInPerSecond": "records into an operator per second",
    "flink_taskmanager_job_task_busyTimeMsPerSecond": "ms per second a task is busy (1000: saturated)",
    "flink_taskmanager_job_task_backPressuredTimeMsPerSecond": "ms per second a task waits for downstream",
}

#: Prometheus's own series the alerts use (``up``: whether the last scrape of a target succeeded)
PROMETHEUS_METRICS: dict[str, str] = {"up": "1 if Prometheus's last scrape of the target succeeded, else 0"}


def known(name: str) -> bool:
    """Whether ``name`` is a metric the job (:data:`JOB_METRICS`), Flink (:data:`FLINK_METRICS`) or Prometheus
    exports."""
    return name in FLINK_METRICS or name in PROMETHEUS_METRICS or any(m.matches(name) for m in JOB_METRICS)


def family_regexes() -> set[str]:
    """The regexes that select a family of job metrics by ``__name__`` (the DLQ counters, one name per reason)."""
    return {r for m in JOB_METRICS if (r := m.name_regex)}


# -- registering them -------------------------------------------------------------------------------------
def bucket_counts(values: Iterable[float], bounds: Sequence[float]) -> list[int]:
    """Cumulative histogram counts of ``values``: for each bound the values <= it, then all of them (``Inf``)."""
    per = [0] * (len(bounds) + 1)
    n = 0
    for v in values:
        per[bisect_left(bounds, v)] += 1
        n += 1
    out, running = [], 0
    for c in per[:-1]:
        running += c
        out.append(running)
    return [*out, n]


class Histogram:
    """A Prometheus-style histogram of counters (PyFlink has no histogram metric): one counter per bucket in the
    group ``<name>`` with the bucket's upper bound as the label ``le`` (:func:`counter_adder`); :meth:`observe`
    updates each bucket at most once per call (an update is a call into the JVM in thread mode), so pass a batch."""

    def __init__(self, group: Any, name: str, bounds: Sequence[int]) -> None:
        base = group.add_group(name)
        self.bounds = tuple(bounds)
        self._buckets = [counter_adder(base.add_group("le", str(b)), "bucket") for b in self.bounds]
        self._buckets.append(counter_adder(base.add_group("le", "Inf"), "bucket"))

    def observe(self, values: Iterable[float]) -> None:
        for add, n in zip(self._buckets, bucket_counts(values, self.bounds), strict=True):
            if n:
                add(n)


def _thread_mode(group: Any) -> bool:
    return type(group).__module__.startswith("pyflink.fn_execution.metrics.embedded")


def counter_adder(group: Any, name: str) -> Callable[[int], None]:
    """A counter the operator adds to, from an element or a timer; returns the adder.

    Thread mode: PyFlink's counter. Process mode: a gauge of the running total, which Flink exports as it exports a
    counter. The Beam worker drops a counter's updates made in a timer (only elements run in the step's metrics
    scope), while it reads every gauge at the end of each bundle.
    """
    if _thread_mode(group):
        return group.counter(name).inc  # type: ignore[no-any-return]
    total = [0]
    group.gauge(name, lambda: total[0])

    def add(n: int) -> None:
        total[0] += int(n)

    return add


def gauge_setter(group: Any, name: str) -> Callable[[float], None]:
    """A gauge the operator sets (Flink reports the last value set); returns the setter.

    Thread mode: PyFlink's ``distribution``, a Java gauge holding the last value, so a scrape never calls back
    into the Python interpreter from the reporter's thread. Process mode: a gauge whose callable the Beam worker
    reads when it reports its metrics.
    """
    if _thread_mode(group):
        distribution = group.distribution(name)
        return lambda value: distribution.update(int(value))
    cell = [0]
    group.gauge(name, lambda: cell[0])

    def set_value(value: float) -> None:
        cell[0] = int(value)

    return set_value
