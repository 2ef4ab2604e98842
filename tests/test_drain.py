"""jobs.state without services: when a bounded run has read everything, job identities, which state `latest` picks.

The integration side (real Kafka, Redis and mini-cluster) is tests/test_continuity.py.
"""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import pytest

from config import load_config
from jobs.state import (
    COMMITTED_OFFSET,
    EARLIEST_OFFSET,
    LATEST_OFFSET,
    JobIdentity,
    PartitionTarget,
    PendingTransaction,
    SplitPosition,
    StateDirs,
    StateRefused,
    caught_up,
    choose_restore,
    decode_committables,
    decode_split,
    job_identity,
    lag,
    latest_state,
    lingering_transactions,
    mark_fresh,
    prepare,
)

E0, E1 = ("events", 0), ("events", 1)
IDS = {"events": "id-events-1", "items": "id-items-1"}


def test_every_partition_read_to_its_last_record() -> None:
    targets = {E0: PartitionTarget(10), E1: PartitionTarget(7)}
    assert caught_up({E0: 10, E1: 7}, targets)
    assert caught_up({E0: 12, E1: 7}, targets)


def test_a_partition_behind_or_without_a_split_is_waited_for() -> None:
    targets = {E0: PartitionTarget(10), E1: PartitionTarget(7)}
    assert not caught_up({E0: 9, E1: 7}, targets)
    assert not caught_up({E0: 10}, targets)  # no split of partition 1 in the state: it was never read
    assert lag({E0: 10}, targets) == "events[1] not in the job's state of 7"
    assert lag({E0: 9, E1: 7}, targets) == "events[0] at 9 of 10"


def test_a_partition_with_nothing_to_read_needs_no_split() -> None:
    assert caught_up({}, {E0: PartitionTarget(None)})


def test_a_split_that_has_received_nothing_yet() -> None:
    """A split keeps its starting marker until its first record: latest starts past the target, earliest has it
    all to read, committed starts at the group's offset (none: at the earliest)."""
    target = PartitionTarget(10, committed=None)
    assert caught_up({E0: LATEST_OFFSET}, {E0: target})
    assert not caught_up({E0: EARLIEST_OFFSET}, {E0: target})
    assert not caught_up({E0: COMMITTED_OFFSET}, {E0: target})
    assert caught_up({E0: COMMITTED_OFFSET}, {E0: PartitionTarget(10, committed=10)})
    assert not caught_up({E0: COMMITTED_OFFSET}, {E0: PartitionTarget(10, committed=9)})


def split_bytes(topic: str, partition: int, offset: int, stopping: int, version: int = 0) -> bytes:
    """A KafkaPartitionSplit as flink-connector-kafka 5.0 writes it into SourceReaderState."""
    name = topic.encode()
    body = struct.pack(">H", len(name)) + name + struct.pack(">iqq", partition, offset, stopping)
    return struct.pack(">ii", version, len(body)) + body


def test_decode_split() -> None:
    assert decode_split(split_bytes("events-é", 3, 48377, -(2**63))) == SplitPosition("events-é", 3, 48377)
    assert decode_split(split_bytes("items", 0, EARLIEST_OFFSET, -(2**63))).offset == EARLIEST_OFFSET
    with pytest.raises(ValueError, match="version 1"):
        decode_split(split_bytes("events", 0, 1, 2, version=1))


def committable_bytes(transactional_id: str, producer_id: int, epoch: int) -> bytes:
    """A KafkaCommittable as flink-connector-kafka 5.0 writes it (serializer version 1)."""
    name = transactional_id.encode()
    return struct.pack(">hqH", epoch, producer_id, len(name)) + name


def test_decode_committables_in_a_committer_state() -> None:
    """Every committable of the raw state is found with its producer id and epoch, whatever surrounds it; a string
    that is not a whole transactional id is not one."""
    raw = (struct.pack(">iiq", 2, 1, 7) + committable_bytes("t-a-b-recommendations-0-3", 4012, 5)
           + struct.pack(">q", 0x30303030) + committable_bytes("t-similar-1-12", 2**40, 0)
           + struct.pack(">H", 20) + b"t-similar-recs-0-1-x")
    assert decode_committables(raw) == {PendingTransaction("t-a-b-recommendations-0-3", 4012, 5),
                                        PendingTransaction("t-similar-1-12", 2**40, 0)}
    assert decode_committables(b"") == set()


def test_an_open_transaction_is_kept_only_when_the_restored_state_commits_it() -> None:
    """The state's own pending transaction (same producer id and epoch) is left for the job to commit; an id of the
    state that another run reused (a --fresh run counts its checkpoints from 1 again: a newer epoch) is aborted,
    as is every id the state does not hold."""
    pending = {PendingTransaction("t-recs-0-3", 9, 2), PendingTransaction("t-recs-1-3", 9, 4)}
    open_now = {"t-recs-0-3": (9, 2), "t-recs-1-3": (9, 5), "t-recs-0-1": (11, 0), "t-dlq-0-3": (9, 2)}
    assert lingering_transactions(open_now, pending) == ["t-dlq-0-3", "t-recs-0-1", "t-recs-1-3"]
    assert lingering_transactions(open_now, ()) == sorted(open_now)
    assert lingering_transactions({}, pending) == []


def identity(**overrides: str) -> JobIdentity:
    cfg = load_config(overrides=[f"{k.replace('__', '.')}={v}" for k, v in overrides.items()], env={})
    topics = cfg["kafka"]["topics"]
    return job_identity(cfg, {topics["events"]: IDS["events"], topics["items"]: IDS["items"]})


def test_the_identity_namespace_changes_with_name_topics_and_state_keys_only() -> None:
    base = identity()
    assert base.namespace == identity().namespace
    assert base.namespace.startswith("flinkrec-recommend-")
    assert identity(model__top_n="20").namespace == base.namespace  # ranking only: the same state
    for changed in (identity(job__name="other"), identity(kafka__topics__events="events2"),
                    identity(job__shards="16"), identity(model__history_cap="50")):
        assert changed.namespace != base.namespace
    assert JobIdentity.from_json(json.loads(json.dumps(base.to_json()))) == base


def test_differences_name_both_sides() -> None:
    base = identity()
    recreated = JobIdentity(base.job, tuple(t._replace(topic_id="id-events-2") if t.role == "events" else t
                                            for t in base.topics), base.config)
    (why,) = base.differences(recreated)
    assert "deleted and created again" in why and "id-events-1" in why and "id-events-2" in why
    (why,) = identity(job__shards="16").differences(base)
    assert "job.shards=16" in why and "job.shards=8" in why
    foreign = identity(job__name="other", kafka__topics__events="events2").differences(base)
    assert any("'other'" in w and "'flinkrec-recommend'" in w for w in foreign)
    assert any("'events2'" in w and "'events'" in w for w in foreign)
    assert base.same_job(recreated) and not base.same_job(identity(job__name="other"))


def dirs_for(root: Path, ident: JobIdentity) -> StateDirs:
    return StateDirs((root / "ck" / ident.namespace).as_uri(), (root / "sp" / ident.namespace).as_uri(), ident)


def completed(folder: Path, when: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "_metadata").write_bytes(b"x")
    os.utime(folder / "_metadata", (when, when))
    return folder


def test_latest_is_the_newest_state_of_the_own_namespace_after_its_last_fresh_start(tmp_path: Path) -> None:
    mine, other = identity(), identity(job__name="other")
    dirs = dirs_for(tmp_path, mine)
    prepare(dirs)
    prepare(dirs_for(tmp_path, other))
    now = time.time()
    assert latest_state(dirs) is None
    chk = completed(tmp_path / "ck" / mine.namespace / "job1" / "chk-4", now - 30)
    completed(tmp_path / "ck" / other.namespace / "job2" / "chk-9", now - 5)  # newer, another job: never picked
    assert latest_state(dirs) == chk
    sp = completed(tmp_path / "sp" / mine.namespace / "savepoint-ab-1", now - 20)
    assert latest_state(dirs) == sp
    mark_fresh(dirs)  # written now: everything before it is ignored by latest (still on disk)
    assert latest_state(dirs) is None
    assert choose_restore(dirs, None, fresh=False) is None  # this identity started before: no refusal
    assert choose_restore(dirs, str(sp), fresh=False) == sp  # a path still reaches it
    assert choose_restore(dirs, "latest", fresh=True) is None


def test_latest_refuses_the_state_of_recreated_topics_in_a_never_used_namespace(tmp_path: Path) -> None:
    old = identity()
    completed(tmp_path / "sp" / old.namespace / "savepoint-ab-1", time.time())
    prepare(dirs_for(tmp_path, old))
    new = JobIdentity(old.job, tuple(t._replace(topic_id=t.topic_id + "-new") for t in old.topics), old.config)
    dirs = dirs_for(tmp_path, new)
    for resume in (None, "latest"):
        with pytest.raises(StateRefused, match=r"deleted and created again.*id-events-1.*id-events-1-new.*--fresh"):
            choose_restore(dirs, resume, fresh=False)
    assert choose_restore(dirs, None, fresh=True) is None
    # a foreign job's state beside it is no reason to refuse: it is simply not this job's
    foreign = dirs_for(tmp_path, identity(job__name="other"))
    assert choose_restore(foreign, None, fresh=False) is None


def test_resume_path_must_be_a_completed_state(tmp_path: Path) -> None:
    dirs = dirs_for(tmp_path, identity())
    with pytest.raises(StateRefused, match="no _metadata"):
        choose_restore(dirs, str(tmp_path / "nothing"), fresh=False)
