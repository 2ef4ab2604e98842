"""Where the job's state lives, which state a run continues from, and when a bounded run has read everything.

**Job identity.** A state (checkpoint or savepoint) belongs to one *job identity*: the job name, the input topics
(``events``, ``items``) with their topic ids (a topic deleted and created again gets a new id: offsets of the old
one mean nothing in the new one), and the values of the state-shaping config keys (:data:`STATE_KEYS`). Its
namespace is a folder named ``<job name>-<16 hex digits of the identity's SHA-256>`` under ``job.checkpoint_dir``
and under ``job.savepoint_dir``; each holds ``identity.json``::

    var/checkpoints/flinkrec-recommend-0123456789abcdef/identity.json
    var/checkpoints/flinkrec-recommend-0123456789abcdef/<flink job id>/chk-<n>/_metadata
    var/savepoints/flinkrec-recommend-0123456789abcdef/savepoint-<...>/_metadata

**Latest.** :func:`latest_state` is the newest completed checkpoint or savepoint of the run's own namespace that is
newer than its last fresh start (``FRESH``, written by :func:`mark_fresh`); other namespaces are never considered.
When the namespace was never used but a state of the same job name and topic names exists under another identity
(topics recreated, a state-shaping key changed), :func:`refuse_other_incarnations` refuses with the differences,
instead of starting from nothing where the user expects their model.

**Checks.** :func:`verify_restore` refuses a state of another identity, and a state whose source positions (read from
the state itself: :func:`read_positions`) lie past the end of the topic now or in a topic this job does not read.

**Caught up.** A bounded run runs its Kafka sources unbounded and stops with a draining savepoint once the positions
in its newest completed checkpoint reached, for every partition, the last record there at its start
(:func:`caught_up`); the positions are those the source itself checkpoints, not the consumer group's commits, which
lag and miss partitions whose split is not in the job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlparse

from config import resolve_path

logger = logging.getLogger(__name__)

#: config keys whose values shape the saved state: a state written with other values is another job's
STATE_KEYS = (
    "job.shards",  # the virtual shards are the keys of all keyed state
    "model.history_cap", "model.row_cap", "model.weights", "model.hybrid.center_ratings",  # the item-CF sums
    "model.hybrid.methods", "model.hybrid.usercf_max_raters", "model.hybrid.usercf_row_cap",  # which state, user-CF
    "model.hybrid.trending_window_s", "model.hybrid.trending_buckets", "model.hybrid.trending_half_life_s",
)
INPUT_ROLES = ("events", "items")  # kafka.topics.* the job reads
IDENTITY_FILE = "identity.json"
FRESH_FILE = "FRESH"

# KafkaPartitionSplit (flink-connector-kafka 5.0) in the source operators' state "SourceReaderState"
SPLIT_STATE = "SourceReaderState"
SPLIT_SERIALIZER_VERSION = 0
LATEST_OFFSET, EARLIEST_OFFSET, COMMITTED_OFFSET = -1, -2, -3  # a split that has not received a record yet
# the Kafka sinks' committer state: their pending (precommitted) transactions, named <prefix>-<sink>-<subtask>-<n>,
# each a KafkaCommittable (flink-connector-kafka 5.0, serializer version 1: short epoch, long producer id, UTF id)
COMMITTER_STATE = "streaming_committer_raw_states"
TRANSACTIONAL_ID = re.compile(rb"[A-Za-z0-9._-]+-[0-9]+-[0-9]+")


class StateRefused(RuntimeError):
    """A checkpoint or savepoint that must not be restored into this job; the message says why and what to do."""


class RunError(RuntimeError):
    """A run that could not end as it should: it failed, a bounded one stopped progressing, or its savepoint failed."""


class TopicIncarnation(NamedTuple):
    role: str  # events or items
    name: str
    topic_id: str


@dataclass(frozen=True)
class JobIdentity:
    job: str
    topics: tuple[TopicIncarnation, ...]
    config: tuple[tuple[str, str], ...]  # (key, canonical JSON of its value), in STATE_KEYS order

    @property
    def namespace(self) -> str:
        digest = hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.job).strip("-.") or "job"
        return f"{slug}-{digest}"

    def to_json(self) -> dict[str, Any]:
        return {"job": self.job,
                "topics": {t.role: {"name": t.name, "id": t.topic_id} for t in self.topics},
                "config": {key: json.loads(value) for key, value in self.config}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobIdentity:
        topics = tuple(TopicIncarnation(role, str(t["name"]), str(t["id"])) for role, t in data["topics"].items())
        config = tuple((key, _canonical(value)) for key, value in data["config"].items())
        return cls(str(data["job"]), topics, config)

    def same_job(self, other: JobIdentity) -> bool:
        """Same job name and input topic names (the topics' incarnations and the config may differ)."""
        return self.job == other.job and _names(self) == _names(other)

    def differences(self, current: JobIdentity) -> list[str]:
        """What makes a state of ``self`` unusable for a job of ``current``, one sentence each."""
        out = []
        if self.job != current.job:
            out.append(f"it belongs to job {self.job!r}, this is job {current.job!r}")
        mine, theirs = {t.role: t for t in self.topics}, {t.role: t for t in current.topics}
        for role in sorted(set(mine) | set(theirs)):
            old, new = mine.get(role), theirs.get(role)
            if old is None or new is None:
                out.append(f"it does not have the same {role} input as this job")
            elif old.name != new.name:
                out.append(f"it reads {role} topic {old.name!r}, this job reads {new.name!r}")
            elif old.topic_id != new.topic_id:
                out.append(f"topic {new.name!r} was deleted and created again since: the state was written for "
                           f"topic id {old.topic_id}, the topic now has id {new.topic_id}")
        old_cfg, new_cfg = dict(self.config), dict(current.config)
        for key in sorted(set(old_cfg) | set(new_cfg)):
            if old_cfg.get(key) != new_cfg.get(key):
                out.append(f"it was written with {key}={old_cfg.get(key, 'unset')}, this run has "
                           f"{key}={new_cfg.get(key, 'unset')} (state-shaping keys are fixed for the life of a state)")
        return out


def _names(identity: JobIdentity) -> dict[str, str]:
    return {t.role: t.name for t in identity.topics}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _lookup(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def job_identity(cfg: Mapping[str, Any], ids: Mapping[str, str] | None = None) -> JobIdentity:
    """The identity of the job ``cfg`` describes; ``ids`` (topic -> topic id): looked up on the broker if not given."""
    topics = cfg["kafka"]["topics"]
    if ids is None:
        from ingest.kafka_admin import topic_ids

        ids = topic_ids(cfg["kafka"]["bootstrap"], [topics[role] for role in INPUT_ROLES])
    return JobIdentity(
        job=str(cfg["job"]["name"]),
        topics=tuple(TopicIncarnation(role, topics[role], ids[topics[role]]) for role in INPUT_ROLES),
        config=tuple((key, _canonical(_lookup(cfg, key))) for key in STATE_KEYS))


# --- where the state of a job lives -----------------------------------------------------------------------------
def _location(value: str) -> str:
    """A configured directory as a URI (a plain path is resolved against the project root)."""
    return value if "://" in value else resolve_path(value).as_uri()


def local_path(location: str) -> Path | None:
    """The local folder of a ``file:`` URI or plain path; None for other file systems (s3://, hdfs://, ...)."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if "://" not in location:
        return resolve_path(location)
    return None


@dataclass(frozen=True)
class StateDirs:
    """The checkpoint and savepoint folders (URIs) of one job identity; ``identity`` None: the folders as configured
    (a job started by ``flink run``, whose submitter namespaced them: deploy/submit.py)."""

    checkpoints: str
    savepoints: str
    identity: JobIdentity | None

    @property
    def checkpoint_path(self) -> Path | None:
        return local_path(self.checkpoints)

    @property
    def savepoint_path(self) -> Path | None:
        return local_path(self.savepoints)


def submitted() -> bool:
    """Whether this client was started by ``flink run`` (its restore is ``-s``, its folders are the submitter's)."""
    return "PYFLINK_GATEWAY_PORT" in os.environ


def state_dirs(cfg: Mapping[str, Any], identity: JobIdentity | None = None) -> StateDirs:
    """The namespaced folders of the job ``cfg`` describes (its identity looked up on the broker unless given)."""
    job = cfg["job"]
    if identity is None and submitted():
        return StateDirs(_location(str(job["checkpoint_dir"])), _location(str(job["savepoint_dir"])), None)
    identity = identity or job_identity(cfg)
    ns = identity.namespace
    return StateDirs(f"{_location(str(job['checkpoint_dir'])).rstrip('/')}/{ns}",
                     f"{_location(str(job['savepoint_dir'])).rstrip('/')}/{ns}", identity)


def prepare(dirs: StateDirs) -> None:
    """Create the namespace's folders with their ``identity.json`` (local folders only)."""
    if dirs.identity is None:
        return
    text = json.dumps({**dirs.identity.to_json(), "namespace": dirs.identity.namespace}, indent=2) + "\n"
    for folder in (dirs.checkpoint_path, dirs.savepoint_path):
        if folder is None:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / IDENTITY_FILE
        if not target.is_file():
            target.write_text(text)


def mark_fresh(dirs: StateDirs) -> None:
    """Record a fresh start: :func:`latest_state` ignores the namespace's states written before it."""
    folder = dirs.checkpoint_path
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / FRESH_FILE).write_text(f"{time.time():.3f}\n")


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def states(dirs: StateDirs) -> list[Path]:
    """The namespace's completed checkpoints and savepoints (folders with ``_metadata``), oldest first."""
    found: list[tuple[float, Path]] = []
    if dirs.checkpoint_path is not None:
        found += [(t, m.parent) for m in dirs.checkpoint_path.glob("*/chk-*/_metadata") if (t := _mtime(m))]
    if dirs.savepoint_path is not None:
        found += [(t, m.parent) for m in dirs.savepoint_path.glob("savepoint-*/_metadata") if (t := _mtime(m))]
    return [p for _, p in sorted(found)]


def latest_state(dirs: StateDirs) -> Path | None:
    """The newest completed checkpoint or savepoint of the namespace written after its last fresh start."""
    if dirs.checkpoint_path is None:
        raise StateRefused(f"cannot search {dirs.checkpoints} for the latest state (not a local folder): pass the "
                           "checkpoint or savepoint to restore with --resume PATH")
    fresh = _mtime(dirs.checkpoint_path / FRESH_FILE) or 0.0
    newer = [p for p in states(dirs) if (_mtime(p / "_metadata") or 0.0) > fresh]
    return newer[-1] if newer else None


def used(dirs: StateDirs) -> bool:
    """Whether a run of this identity ever started here (its ``identity.json`` exists)."""
    return any(f is not None and (f / IDENTITY_FILE).is_file() for f in (dirs.checkpoint_path, dirs.savepoint_path))


def other_incarnations(dirs: StateDirs) -> list[tuple[JobIdentity, Path]]:
    """Namespaces beside this one of the same job name and topic names (another topic incarnation or state-shaping
    config) that hold a state: ``(their identity, their newest state)``, newest first."""
    assert dirs.identity is not None
    out: list[tuple[float, JobIdentity, Path]] = []
    for own in (dirs.checkpoint_path, dirs.savepoint_path):
        if own is None or not own.parent.is_dir():
            continue
        for file in own.parent.glob(f"*/{IDENTITY_FILE}"):
            if file.parent.name == own.name:
                continue
            try:
                other = JobIdentity.from_json(json.loads(file.read_text()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue
            if not other.same_job(dirs.identity):
                continue
            found = states(StateDirs(file.parent.as_uri(), file.parent.as_uri(), other))
            if found:
                out.append((_mtime(found[-1] / "_metadata") or 0.0, other, found[-1]))
    return [(identity, path) for _, identity, path in sorted(out, key=lambda x: -x[0])]


def refuse_other_incarnations(dirs: StateDirs) -> None:
    """Raise :class:`StateRefused` when this identity was never run but the same job (name and topic names) has a
    state under another identity: a user continuing their job would otherwise silently start from nothing."""
    if used(dirs):
        return
    others = other_incarnations(dirs)
    if not others:
        return
    assert dirs.identity is not None
    identity, path = others[0]
    raise StateRefused(
        f"the newest state of job {dirs.identity.job!r} ({path}) cannot be continued: "
        + "; ".join(identity.differences(dirs.identity))
        + ". Start anew with --fresh (its model is rebuilt from what the topics hold), or restore the topics or "
          "the config keys it was written with")


def choose_restore(dirs: StateDirs, resume: str | None, fresh: bool) -> Path | None:
    """The state a run restores: none with ``fresh``; ``resume`` a path: that one; else (``None`` or ``"latest"``)
    the namespace's newest (:func:`latest_state`), refusing other incarnations' (:func:`refuse_other_incarnations`)."""
    if fresh:
        return None
    if resume and resume != "latest":
        path = local_path(resume) if "://" in resume else Path(resume).expanduser().resolve()  # relative: to the cwd
        if path is None:
            raise StateRefused(f"--resume {resume}: only local checkpoints and savepoints can be checked before a "
                               "restore; on a cluster use `python -m deploy.submit resume --savepoint`")
        if not (path / "_metadata").is_file():
            raise StateRefused(f"--resume {resume}: {path} is not a completed checkpoint or savepoint (no _metadata)")
        return path
    found = latest_state(dirs)
    if found is None:
        refuse_other_incarnations(dirs)
    return found


def identity_of(state: Path) -> JobIdentity | None:
    """The identity recorded in the namespace holding ``state`` (``identity.json`` up to two folders above it)."""
    for folder in (state.parent, state.parent.parent):
        file = folder / IDENTITY_FILE
        if file.is_file():
            return JobIdentity.from_json(json.loads(file.read_text()))
    return None


# --- what a state has read ------------------------------------------------------------------------------------------
class SplitPosition(NamedTuple):
    topic: str
    partition: int
    offset: int  # the next offset to read; < 0: one of the *_OFFSET markers (nothing received yet)


class PendingTransaction(NamedTuple):
    """A transaction a Kafka sink's committer holds in the state: the restored job commits it with this producer id
    and epoch."""
    transactional_id: str
    producer_id: int
    epoch: int


class StatePositions(NamedTuple):
    checkpoint_id: int
    splits: tuple[SplitPosition, ...]
    transactions: frozenset[PendingTransaction] = frozenset()  # in the Kafka sinks' committer state

    def offsets(self) -> dict[tuple[str, int], int]:
        return {(s.topic, s.partition): s.offset for s in self.splits}


def decode_split(raw: bytes) -> SplitPosition:
    """One element of ``SourceReaderState``: ``SimpleVersionedSerialization`` (version, length) of a
    ``KafkaPartitionSplit`` (UTF topic, int partition, long starting offset, long stopping offset)."""
    version, length = struct.unpack_from(">ii", raw)
    if version != SPLIT_SERIALIZER_VERSION:
        raise ValueError(f"Kafka split serialized with version {version}, this code reads version "
                         f"{SPLIT_SERIALIZER_VERSION} (flink-connector-kafka 5.0)")
    body = raw[8:8 + length]
    (n,) = struct.unpack_from(">H", body)
    topic = body[2:2 + n].decode("utf-8")
    partition, offset, _stopping = struct.unpack_from(">iqq", body, 2 + n)
    return SplitPosition(topic, partition, offset)


def decode_committables(raw: bytes) -> set[PendingTransaction]:
    """The Kafka committables in a sink committer's raw operator state: every UTF string (2-byte length) that is a
    whole transactional id, with the short epoch and long producer id written before it (KafkaCommittable)."""
    found: set[PendingTransaction] = set()
    for start in range(12, len(raw)):
        (length,) = struct.unpack_from(">H", raw, start - 2)
        if length >= 5 and start + length <= len(raw) and TRANSACTIONAL_ID.fullmatch(raw, start, start + length):
            epoch, producer_id = struct.unpack_from(">hq", raw, start - 12)
            found.add(PendingTransaction(raw[start:start + length].decode(), producer_id, epoch))
    return found


def read_positions(state: Path | str) -> StatePositions:
    """The Kafka source positions stored in a completed checkpoint or savepoint, read with Flink's own classes
    (PyFlink's JVM: started if it is not running yet)."""
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    location = state.as_uri() if isinstance(state, Path) else _location(state)
    folder = jvm.org.apache.flink.core.fs.Path(location)
    fs = folder.getFileSystem()
    stream = fs.open(jvm.org.apache.flink.core.fs.Path(folder, "_metadata"))
    try:
        metadata = jvm.org.apache.flink.runtime.checkpoint.Checkpoints.loadCheckpointMetadata(
            jvm.java.io.DataInputStream(stream), jvm.java.lang.Thread.currentThread().getContextClassLoader(),
            location)
    finally:
        stream.close()
    element = jvm.org.apache.flink.api.common.typeutils.base.array.BytePrimitiveArraySerializer.INSTANCE
    splits: list[SplitPosition] = []
    transactions: set[PendingTransaction] = set()
    for operator in metadata.getOperatorStates():
        for subtask in operator.getSubtaskStates().values():
            for handle in subtask.getManagedOperatorState().asList():
                names = handle.getStateNameToPartitionOffsets()
                if names.containsKey(COMMITTER_STATE):
                    data = handle.openInputStream()
                    try:
                        transactions.update(decode_committables(bytes(data.readAllBytes())))
                    finally:
                        data.close()
                info = names.get(SPLIT_STATE)
                if info is None:
                    continue
                data = handle.openInputStream()
                try:
                    view = jvm.org.apache.flink.core.memory.DataInputViewStreamWrapper(data)
                    for offset in info.getOffsets():
                        data.seek(offset)
                        splits.append(decode_split(bytes(element.deserialize(view))))
                finally:
                    data.close()
    return StatePositions(int(metadata.getCheckpointId()), tuple(sorted(splits)), frozenset(transactions))


def verify_restore(state: Path, dirs: StateDirs, cfg: Mapping[str, Any]) -> StatePositions:
    """Raise :class:`StateRefused` if ``state`` is not one this job can continue from: another identity's (when its
    namespace records one), positions in a topic this job does not read, or past the end of a topic now."""
    problems: list[str] = []
    saved = identity_of(state)
    if saved is None:
        logger.warning("%s is not in a job-identity folder (no %s beside it): only its Kafka positions are checked",
                       state, IDENTITY_FILE)
    elif dirs.identity is not None:
        problems += saved.differences(dirs.identity)
    positions = read_positions(state)
    topics = {cfg["kafka"]["topics"][role] for role in INPUT_ROLES}
    bootstrap = cfg["kafka"]["bootstrap"]
    ends: dict[str, dict[int, int]] = {}
    for split in positions.splits:
        if split.topic not in topics:
            problems.append(f"it reads topic {split.topic!r}, which this job does not read "
                            f"({', '.join(sorted(topics))})")
            continue
        if split.topic not in ends:
            ends[split.topic] = _end_offsets(bootstrap, split.topic)
        end = ends[split.topic].get(split.partition)
        if end is None:
            problems.append(f"it reads partition {split.partition} of topic {split.topic!r}, which has no such "
                            "partition now")
        elif split.offset > end:
            problems.append(f"it has read topic {split.topic!r} partition {split.partition} up to offset "
                            f"{split.offset}, but that partition ends at offset {end} now")
    if problems:
        raise StateRefused(f"refusing to restore {state}: " + "; ".join(dict.fromkeys(problems))
                           + ". Start anew with --fresh, or pass a state of this job with --resume PATH")
    return positions


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


# --- has a bounded run read everything -------------------------------------------------------------------------------
class PartitionTarget(NamedTuple):
    """What a bounded run must read of one partition: up to ``end`` (the offset after the last record a read_committed
    consumer read there at the run's start; None: nothing to read); ``committed`` is the consumer group's offset,
    where a split still marked COMMITTED_OFFSET starts (None: the group has none, it starts at the earliest)."""

    end: int | None
    committed: int | None = None


def bounded_targets(cfg: Mapping[str, Any]) -> dict[tuple[str, int], PartitionTarget]:
    """The targets of a bounded run of ``cfg``, taken now: every partition of the events and items topics."""
    from ingest.kafka_admin import committed_offsets, last_offsets

    k = cfg["kafka"]
    groups = {k["topics"]["events"]: k["group_id"], k["topics"]["items"]: f"{k['group_id']}-catalog"}
    out: dict[tuple[str, int], PartitionTarget] = {}
    for topic, group in groups.items():
        committed = committed_offsets(k["bootstrap"], group, topic)
        for partition, end in last_offsets(k["bootstrap"], topic).items():
            out[(topic, partition)] = PartitionTarget(end, committed.get(partition))
    return out


def partition_done(position: int | None, target: PartitionTarget) -> bool:
    """Whether a source at ``position`` (None: the job has no split of the partition) has read ``target``."""
    if target.end is None:
        return True
    if position is None:
        return False
    if position >= 0:
        return position >= target.end
    if position == LATEST_OFFSET:  # starts at the end as of its assignment, after the target was taken
        return True
    if position == COMMITTED_OFFSET:
        return target.committed is not None and target.committed >= target.end
    return False  # EARLIEST_OFFSET: it will read from the beginning


def caught_up(positions: Mapping[tuple[str, int], int], targets: Mapping[tuple[str, int], PartitionTarget]) -> bool:
    """Whether the checkpointed ``positions`` ({(topic, partition): offset}) have read every partition's target."""
    return all(partition_done(positions.get(tp), t) for tp, t in targets.items())


def lag(positions: Mapping[tuple[str, int], int], targets: Mapping[tuple[str, int], PartitionTarget]) -> str:
    """The partitions not read yet, e.g. ``events[1] at 47121 of 48377, items[0] not assigned``."""
    parts = []
    for (topic, partition), target in sorted(targets.items()):
        position = positions.get((topic, partition))
        if not partition_done(position, target):
            at = "not in the job's state" if position is None else (
                f"at {position}" if position >= 0 else "no record received yet")
            parts.append(f"{topic}[{partition}] {at} of {target.end}")
    return ", ".join(parts) or "none"


def newest_checkpoint(job_folder: Path) -> Path | None:
    """The newest completed ``chk-N`` of one Flink job's checkpoint folder."""
    done = [(int(m.parent.name.split("-")[1]), m.parent) for m in job_folder.glob("chk-*/_metadata")
            if m.parent.name.split("-")[1].isdigit()]
    return max(done)[1] if done else None


def savepoint_path(location: str) -> str:
    """A savepoint location Flink returned (``file:/...``) as the local path a user types, when it is local."""
    path = local_path(location)
    return str(path) if path is not None else location


def describe(positions: Iterable[SplitPosition]) -> str:
    return ", ".join(f"{s.topic}[{s.partition}]@{s.offset}" for s in positions) or "no Kafka positions"


# --- transactions a crashed run left open ---------------------------------------------------------------------------
def lingering_transactions(open_now: Mapping[str, tuple[int, int]],
                           pending: Iterable[PendingTransaction]) -> list[str]:
    """Which open transactions (id → the broker's producer id and epoch) to abort: all but those the restored state
    commits itself, the same id with the same producer id and epoch. Another run that reused an id of the state
    (a --fresh run counts its checkpoints from 1 again) holds it with a newer epoch: that one is lingering."""
    held = {p.transactional_id: (p.producer_id, p.epoch) for p in pending}
    return sorted(t for t, producer in open_now.items() if held.get(t) != producer)


def abort_lingering_transactions(cfg: Mapping[str, Any], restored: StatePositions | None) -> list[str]:
    """Abort the open transactions of this job's Kafka sinks (``<job.transactional_id_prefix>-<sink>-<subtask>-<n>``)
    that the restored state does not commit itself (:func:`lingering_transactions`), and return their ids: a run
    that crashed leaves one open per sink subtask, and read_committed readers of the output topics read nothing after
    it until ``job.transaction_timeout_ms``. The sinks' own abort at start only probes the ids after the restored
    checkpoint's, which misses a crashed run of another lineage (a --fresh run, an older savepoint)."""
    if cfg["job"]["delivery"] != "exactly_once":
        return []
    from ingest.kafka_admin import abort_transactions, open_transactions, transaction_producers

    bootstrap = cfg["kafka"]["bootstrap"]
    pattern = rf"{re.escape(str(cfg['job']['transactional_id_prefix']))}-[^-]+-[0-9]+-[0-9]+"
    pending = restored.transactions if restored is not None else frozenset()
    lingering = lingering_transactions(transaction_producers(bootstrap, open_transactions(bootstrap, pattern)),
                                       pending)
    if lingering:
        logger.info("aborting %d open transaction(s) left by an earlier run: %s", len(lingering),
                    ", ".join(lingering))
        abort_transactions(bootstrap, lingering)
    return lingering
