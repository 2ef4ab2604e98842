"""Kafka housekeeping: wait for the broker, create the project's topics, count what a topic holds.

* :func:`wait_for_kafka` blocks until the broker answers (or raises :class:`KafkaUnavailable`).
* :func:`ensure_topics` creates missing topics and brings the given topic configs
  (e.g. ``cleanup.policy=compact`` for the item catalog) onto existing ones; safe to call again.
* :func:`project_topics` is the topic set of the config (``events``, ``items`` compacted, ``dlq``,
  ``recommendations``).
* :func:`count_messages` reads a topic from the beginning and counts the records a consumer with
  the given isolation level sees. For transactional topics the offsets alone are not a count:
  commit/abort markers take offsets and aborted records are skipped by ``read_committed``.
* :func:`topic_ids` (a topic's incarnation), :func:`last_offsets` (where a reader of a partition stops),
  :func:`committed_offsets` (a consumer group's offsets), :func:`open_transactions` and
  :func:`abort_transactions` serve the job's state continuity (jobs/state.py).
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

with warnings.catch_warnings():
    # kafka-python 3.0 loads its protocol schemas with importlib.resources calls deprecated since Python 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import (
        KafkaError,
        TopicAlreadyExistsError,
        TransactionalIdNotFoundError,
        UnknownTopicOrPartitionError,
    )

logger = logging.getLogger(__name__)

START_HINT = "start the services with `bash deploy/services.sh up` (or `make services-up`)"
COMPACTED = {"cleanup.policy": "compact"}


class KafkaUnavailable(TimeoutError):
    """The broker did not answer in time."""


def _admin(bootstrap: str, timeout: float) -> KafkaAdminClient:
    ms = max(1000, int(timeout * 1000))
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="flinkrec-admin",
                            request_timeout_ms=ms, bootstrap_timeout_ms=ms)


def wait_for_kafka(bootstrap: str, timeout: float = 30.0) -> None:
    """Return once the broker at ``bootstrap`` lists its topics; raise :class:`KafkaUnavailable` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            admin = _admin(bootstrap, min(max(remaining, 1.0), 10.0))
            try:
                admin.list_topics()
            finally:
                admin.close()
            logger.debug("kafka at %s answered (attempt %d)", bootstrap, attempt)
            return
        except (KafkaError, OSError) as exc:
            last = exc
        if time.monotonic() + 0.5 >= deadline:
            raise KafkaUnavailable(
                f"Kafka at {bootstrap} did not answer within {timeout:g} s ({last}); {START_HINT}"
            ) from last
        time.sleep(0.5)


def project_topics(cfg: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The topics the project uses, from the ``kafka.topics`` config section, with their topic configs (the
    ``experiments`` topic only while an experiment runs)."""
    topics = cfg["kafka"]["topics"]
    out = {
        topics["events"]: {},
        topics["items"]: dict(COMPACTED),
        topics["dlq"]: {},
        topics["recommendations"]: {},
    }
    if cfg.get("experiments", {}).get("name") is not None:  # written only while an experiment runs
        out[topics["experiments"]] = {}
    return out


def topic_configs(bootstrap: str, topic: str, timeout: float = 30.0) -> dict[str, str | None]:
    """All configs of ``topic`` (defaults included) as ``{name: value}`` (``None`` for sensitive values)."""
    admin = _admin(bootstrap, timeout)
    try:
        return _describe(admin, [topic])[topic]
    finally:
        admin.close()


def _describe(admin: KafkaAdminClient, topics: Iterable[str]) -> dict[str, dict[str, str | None]]:
    resources = [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
    result = admin.describe_configs(resources, config_filter="all")
    found = result.get("topic", {})
    return {name: {k: (v.get("value") if isinstance(v, dict) else v) for k, v in cfgs.items()}
            for name, cfgs in found.items()}


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, Mapping[str, str]],
    partitions: int = 2,
    timeout: float = 30.0,
    replication_factor: int = -1,
) -> list[str]:
    """Create the missing topics of ``{name: {config: value}}``; return the names created.

    Existing topics keep their partitions (more partitions would move keys and break per-key order;
    a mismatch is logged) but get the requested configs set if they differ. ``replication_factor=-1``
    uses the broker default. Waits until every topic has a leader for each partition.
    """
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ValueError(f"partitions must be a positive integer, got {partitions!r}")
    if not topics:
        return []
    admin = _admin(bootstrap, timeout)
    try:
        existing = set(admin.list_topics())
        missing = {name: cfg for name, cfg in topics.items() if name not in existing}
        created: list[str] = []
        if missing:
            request = {name: {"num_partitions": partitions, "replication_factor": replication_factor,
                              "configs": {k: str(v) for k, v in cfg.items()}}
                       for name, cfg in missing.items()}
            response = admin.create_topics(request, timeout_ms=int(timeout * 1000), raise_errors=False)
            for entry in response.get("topics", []):
                name, code = entry.get("name"), entry.get("error_code", 0)
                if code == 0:
                    created.append(name)
                elif code != TopicAlreadyExistsError.errno:  # created meanwhile by someone else: fine
                    raise KafkaError(f"creating topic {name!r} failed: error {code} "
                                     f"{entry.get('error_message') or ''}".rstrip())
            logger.info("created topic(s) %s with %d partition(s)", ", ".join(sorted(created)) or "-", partitions)
        admin.wait_for_topics(list(topics), timeout_ms=int(timeout * 1000))
        _reconcile(admin, {n: c for n, c in topics.items() if n not in created}, partitions)
        return sorted(created)
    finally:
        admin.close()


def _reconcile(admin: KafkaAdminClient, topics: Mapping[str, Mapping[str, str]], partitions: int) -> None:
    """Bring configs of already existing topics to the requested values; warn about partition counts."""
    if not topics:
        return
    for info in admin.describe_topics(list(topics)):
        have = len(info.get("partitions") or [])
        if have != partitions:
            logger.warning("topic %s has %d partition(s), config asks for %d; left unchanged",
                           info.get("name"), have, partitions)
    wanted = {n: {k: str(v) for k, v in c.items()} for n, c in topics.items() if c}
    if not wanted:
        return
    current = _describe(admin, wanted)
    changes = []
    for name, cfg in wanted.items():
        diff = {k: v for k, v in cfg.items() if current.get(name, {}).get(k) != v}
        if diff:
            logger.info("setting %s on existing topic %s", diff, name)
            changes.append(ConfigResource(ConfigResourceType.TOPIC, name, diff))
    if changes:
        admin.alter_configs(changes)
        # the broker applies config changes asynchronously: wait until they read back
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            current = _describe(admin, wanted)
            if all(current.get(n, {}).get(k) == v for n, c in wanted.items() for k, v in c.items()):
                return
            time.sleep(0.2)
        logger.warning("config changes on %s not visible after 15 s", ", ".join(wanted))


def delete_topics(bootstrap: str, topics: Iterable[str], timeout: float = 30.0, wait: bool = False) -> None:
    """Delete topics, ignoring those that do not exist; with ``wait``, until the broker no longer lists them."""
    names = list(topics)
    if not names:
        return
    deadline = time.monotonic() + timeout
    admin = _admin(bootstrap, timeout)
    try:
        response = admin.delete_topics(names, timeout_ms=int(timeout * 1000), raise_errors=False)
        for entry in response.get("topics", []):
            code = entry.get("error_code", 0)
            if code not in (0, UnknownTopicOrPartitionError.errno):
                logger.warning("deleting topic %s failed with error %d", entry.get("name"), code)
        while wait:
            left = sorted(set(names) & set(admin.list_topics()))
            if not left:
                break
            if time.monotonic() >= deadline:
                logger.warning("topic(s) %s still listed %.0f s after deletion", ", ".join(left), timeout)
                break
            time.sleep(0.2)
    finally:
        admin.close()


def count_messages(bootstrap: str, topic: str, isolation: str = "read_committed", timeout: float = 60.0) -> int:
    """Consume ``topic`` from the beginning to its current end and return how many records were read.

    ``isolation`` is ``read_committed`` (aborted and still open transactions are not counted; the end
    is the last stable offset) or ``read_uncommitted``. Raises :class:`TimeoutError` if the end is not
    reached within ``timeout`` seconds and :class:`ValueError` if the topic does not exist.
    """
    if isolation not in ("read_committed", "read_uncommitted"):
        raise ValueError(f"isolation must be read_committed or read_uncommitted, got {isolation!r}")
    deadline = time.monotonic() + timeout
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             isolation_level=isolation, auto_offset_reset="earliest", allow_auto_create_topics=False,
                             client_id="flinkrec-count", request_timeout_ms=max(1000, int(timeout * 1000)))
    try:
        parts = None
        while not parts:
            parts = consumer.partitions_for_topic(topic)
            if parts:
                break
            if time.monotonic() >= deadline:
                raise ValueError(f"topic {topic!r} does not exist on {bootstrap}")
            time.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        pending = {tp for tp in tps if end[tp] > 0}
        count = 0
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"counting {topic!r}: partitions {sorted(tp.partition for tp in pending)} did not "
                                   f"reach their end offsets within {timeout:g} s ({count} records so far)")
            batch = consumer.poll(timeout_ms=int(min(remaining, 1.0) * 1000), max_records=10_000)
            count += sum(len(records) for records in batch.values())
            pending = {tp for tp in pending if consumer.position(tp) < end[tp]}
        logger.debug("topic %s holds %d %s record(s)", topic, count, isolation)
        return count
    finally:
        consumer.close()


def topic_ids(bootstrap: str, topics: Iterable[str], timeout: float = 30.0) -> dict[str, str]:
    """``{topic: topic id}``: the id (a UUID) is the topic's incarnation, a topic deleted and created again under the
    same name gets a new one. Raises :class:`ValueError` naming the topics that do not exist."""
    names = list(dict.fromkeys(topics))
    admin = _admin(bootstrap, timeout)
    try:
        described = admin.describe_topics(names)
    finally:
        admin.close()
    ids = {info["name"]: str(info["topic_id"]) for info in described
           if not info.get("error_code") and info.get("topic_id")}
    missing = [name for name in names if name not in ids]
    if missing:
        raise ValueError(f"topic(s) {', '.join(repr(m) for m in missing)} do not exist on {bootstrap}: create them "
                         "(`make produce` creates the events topic, `make catalog` the items topic, `make run` all of "
                         "the project's topics)")
    return ids


def last_offsets(bootstrap: str, topic: str, timeout: float = 30.0) -> dict[int, int | None]:
    """``{partition: the offset after the last record a read_committed consumer reads there now}`` (``None``: none).

    That is the end offset unless the partition ends with what a consumer never receives (transaction markers,
    aborted records); a reader's position only moves with the records it receives, so this is where it stops."""
    deadline = time.monotonic() + timeout
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             isolation_level="read_committed", allow_auto_create_topics=False,
                             client_id="flinkrec-last-offsets", request_timeout_ms=max(1000, int(timeout * 1000)))
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or ())
        if not parts:
            raise ValueError(f"topic {topic!r} does not exist on {bootstrap}")
        tps = [TopicPartition(topic, p) for p in parts]
        begin, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        out: dict[int, int | None] = {}
        for tp in tps:
            out[tp.partition] = None
            window = 16
            while end[tp] > begin[tp]:
                start = max(begin[tp], end[tp] - window)
                consumer.assign([tp])
                consumer.seek(tp, start)
                last = None
                while consumer.position(tp) < end[tp]:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"reading the tail of {topic!r} partition {tp.partition} took over "
                                           f"{timeout:g} s")
                    for record in consumer.poll(timeout_ms=500, max_records=1000).get(tp, []):
                        if record.offset < end[tp]:
                            last = record.offset
                if last is not None:
                    out[tp.partition] = last + 1
                    break
                if start == begin[tp]:
                    break
                window *= 16
        return out
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str, timeout: float = 60.0) -> dict[int, int]:
    """``{partition: offset}`` the consumer ``group`` committed on ``topic`` (partitions without one are absent).

    Retries retriable errors until ``timeout`` s: a fresh broker answers COORDINATOR_NOT_AVAILABLE while it creates
    its offsets topic on the first group request."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = _admin(bootstrap, min(max(deadline - time.monotonic(), 1.0), 10.0))
            try:
                found = admin.list_group_offsets(group).get(group, {})
            finally:
                admin.close()
            return {tp.partition: meta.offset for tp, meta in found.items() if tp.topic == topic and meta.offset >= 0}
        except KafkaError as exc:
            if not getattr(exc, "retriable", False) or time.monotonic() + 0.5 >= deadline:
                raise
            logger.info("offsets of group %r not readable yet (%s); retrying", group, exc)
        time.sleep(0.5)


def open_transactions(bootstrap: str, pattern: str, timeout: float = 30.0) -> list[str]:
    """The transactional ids matching the regular expression ``pattern`` (whole id) whose transaction is open
    (``Ongoing``) on the broker: until it ends, read_committed consumers of its partitions read nothing after it."""
    matcher = re.compile(pattern)
    admin = _admin(bootstrap, timeout)
    try:
        listed = admin.list_transactions(state_filters=["Ongoing"])
    finally:
        admin.close()
    return sorted({t.transactional_id for found in listed.values() for t in found
                   if matcher.fullmatch(t.transactional_id)})


def transaction_producers(bootstrap: str, transactional_ids: Iterable[str],
                          timeout: float = 30.0) -> dict[str, tuple[int, int]]:
    """Each id's current producer id and epoch on its coordinator (ids it does not know are left out)."""
    ids = list(transactional_ids)
    if not ids:
        return {}
    admin = _admin(bootstrap, timeout)
    try:
        out = {}
        for tid in ids:
            try:
                described = admin.describe_transactions([tid])[tid]
            except TransactionalIdNotFoundError:
                continue
            out[tid] = (int(described.producer_id), int(described.producer_epoch))
        return out
    finally:
        admin.close()


def abort_transactions(bootstrap: str, transactional_ids: Iterable[str], timeout: float = 60.0) -> None:
    """Abort each id's open transaction: a producer initialising that id fences the old one (new epoch) and the
    coordinator aborts what it left open."""
    for tid in transactional_ids:
        producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=tid, client_id="flinkrec-abort",
                                 max_block_ms=int(timeout * 1000))
        try:
            producer.init_transactions()
        finally:
            producer.close(timeout=timeout)
