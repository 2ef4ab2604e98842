"""The recommendation job: Kafka events + catalog -> hybrid model state -> ranked top-N -> Redis + Kafka.

Topology (``job.shards`` virtual shards per side; tumbling windows of ``job.window_ms`` for the user side and
``job.model_window_ms`` for the similarity operators)::

    KafkaSource(events) -> [JVM: user shard, event time, buffer per window] -> UserWindow --dlq--> KafkaSink(events-dlq)
      UserWindow --(item-CF deltas, engagements)--> key_by(item shard) -> ItemWindow
              |        |                                                            |        |
              |   user-CF rows                                       user-user deltas   neighbour lists,
              |        |                                      key_by(user shard) -> UserSimWindow  item stats,
        rank requests  |                                                     |          trending
              |        '----------------------------+------------------------+----------'
              |                   KafkaSource(items) -> ParseCatalog ---------'   (union, broadcast)
              '-> key_by(user shard) -> Ranker <-------------------------------------'
                                           -> RecsToRedis -> KafkaSink(recommendations)
                                 ItemWindow -> NeighborsToRedis

Run ``python -m jobs.recommend --help``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from pyflink.common import Types, WatermarkStrategy
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaSink,
    KafkaSource,
)

from config import load_config, resolve_path
from core.hybrid import MODES, HybridRecommender
from jobs.flink_env import make_env, resolve_restore
from operators.front import event_batches, jvm_class, source_records
from operators.parse import DLQ_TAG, ParseCatalog
from operators.ranker import BROADCAST_STATES, Ranker
from operators.redis_sink import NeighborsToRedis, RecsToRedis
from operators.windows import (
    PACKED,
    RANK_TAG,
    USER_DELTA_TAG,
    USER_ITEMS_TAG,
    ItemWindow,
    UserSimWindow,
    UserWindow,
    packed_shard,
)
from udfs.events import Limits

logger = logging.getLogger(__name__)

PICKLED = Types.PICKLED_BYTE_ARRAY()


@dataclass
class RecommendOutputs:
    recommendations: DataStream  # JSON strings, one per updated user
    neighbors: DataStream  # item batches ("items", shard, {item: [(item, sim)]}, stats, engagements, ts)
    user_neighbors: DataStream | None  # user batches ("users", shard, {user: [(user, sim)]}, ts); None without user-CF
    dlq: DataStream  # JSON strings: rejected input with the reason


def recommend(events: DataStream, cfg: dict[str, Any], *, redis: bool = True,
              parse_parallelism: int | None = None, catalog: DataStream | None = None) -> RecommendOutputs:
    """Build the pipeline on a stream of raw JSON event strings and return its output streams.

    ``catalog``: raw JSON catalog records (the ``items`` topic), joined into the ranker by broadcast.
    With ``redis=False`` nothing is written to Redis (tests collect the streams instead). The per-event
    front (:func:`operators.front.event_batches`, on the JVM) runs at ``parse_parallelism`` (default: the
    job's) chained to the source, which keeps each source partition's order: a user's events must reach
    the user state in order.
    """
    job, model = cfg["job"], cfg["model"]
    shards, window = job["shards"], job["window_ms"]
    hybrid = HybridRecommender.from_config(model)  # validates the model section before anything runs
    for mode in model.get("compare_modes") or ():
        hybrid._check_mode(mode)
    usercf = "usercf" in hybrid.methods
    limits = Limits.from_config(cfg)
    # event time from the events' ts field, user shard and one batch per shard and window, on the JVM
    batches = event_batches(events, shards=shards, window_ms=window, limits=limits,
                            max_out_of_orderness_ms=job["max_out_of_orderness_ms"], parallelism=parse_parallelism,
                            event_buffer_timeout_ms=job["event_buffer_timeout_ms"])
    users = (batches.process(UserWindow(shards, model, job["dedup_ttl_ms"], job["dedup_max_ids"], job["late_events"],
                                        limits), output_type=PACKED)
             .name("user-window").uid("user-window"))
    dlq = users.get_side_output(DLQ_TAG)
    items = (users.key_by(packed_shard, key_type=Types.INT())
             .process(ItemWindow(job["model_window_ms"], model["top_k"], job["refresh_budget_ms"], shards,
                                 hybrid.usercf.max_raters, usercf, job["refresh_on_norms"],
                                 hybrid.itemcf.items.row_cap, job["state_compact_windows"]), output_type=PICKLED)
             .name("item-window").uid("item-window"))
    shared = items
    user_sims = None
    if usercf:
        user_sims = (items.get_side_output(USER_DELTA_TAG)
                     .key_by(packed_shard, key_type=Types.INT())
                     .process(UserSimWindow(job["model_window_ms"], hybrid.usercf.top_k, job["refresh_budget_ms"],
                                            job["refresh_on_norms"], hybrid.usercf.rows.row_cap,
                                            job["state_compact_windows"]),
                              output_type=PICKLED)
                     .name("user-similarity").uid("user-similarity"))
        shared = shared.union(user_sims, users.get_side_output(USER_ITEMS_TAG))
    if catalog is not None:
        parse = ParseCatalog(limits.dlq_payload_bytes, limits.max_message_bytes)
        parsed_catalog = source_records(catalog).process(parse, output_type=PICKLED).name("parse-catalog")
        dlq = dlq.union(parsed_catalog.get_side_output(DLQ_TAG))
        shared = shared.union(parsed_catalog)
    ranked = (users.get_side_output(RANK_TAG)
              .key_by(packed_shard, key_type=Types.INT())
              .connect(shared.broadcast(*BROADCAST_STATES))
              .process(Ranker(model, window, model.get("compare_modes") or (), job["rank_delay_ms"],
                              job["rank_budget_ms"]),
                       output_type=PICKLED)
              .name("ranker").uid("ranker"))
    if redis:
        r = cfg["redis"]
        args = (r["host"], int(r["port"]), int(r["db"]), r["prefix"], int(r["pipeline_size"]))
        recs = ranked.flat_map(RecsToRedis(*args), output_type=Types.STRING()).name("recs-to-redis")
        items.flat_map(NeighborsToRedis(*args), output_type=Types.STRING()).name("similar-to-redis")
    else:
        from udfs.serde import dumps

        recs = ranked.flat_map(lambda b: [dumps(m) for m in b[1]], output_type=Types.STRING()).name("recs-json")
    return RecommendOutputs(recommendations=recs, neighbors=items, user_neighbors=user_sims, dlq=dlq)


def _source(cfg: dict[str, Any], topic: str, group: str, start: Any) -> KafkaSource:
    builder = (KafkaSource.builder()
               .set_bootstrap_servers(cfg["kafka"]["bootstrap"])
               .set_topics(topic)
               .set_group_id(group)
               .set_starting_offsets(start)
               .set_property("isolation.level", "read_committed"))
    # every record as (payload, origin), lossless for any bytes (udfs.dlq)
    builder._j_builder.setDeserializer(jvm_class("SourceRecords")())
    if cfg["job"]["bounded"]:
        # no partition discovery: with it, a bounded source restored from a checkpoint never ends
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    else:
        builder = builder.set_property("partition.discovery.interval.ms", "10000")
    return builder.build()


def catalog_source(cfg: dict[str, Any]) -> KafkaSource:
    """The catalog (``items`` topic, compacted): always read from the beginning, in its own consumer group."""
    k = cfg["kafka"]
    return _source(cfg, k["topics"]["items"], f"{k['group_id']}-catalog", KafkaOffsetsInitializer.earliest())


def kafka_source(cfg: dict[str, Any]) -> KafkaSource:
    """The events; where a job without restored source state starts is ``job.starting_offsets``."""
    k = cfg["kafka"]
    start = {"committed": KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST),
             "earliest": KafkaOffsetsInitializer.earliest(),
             "latest": KafkaOffsetsInitializer.latest()}[cfg["job"]["starting_offsets"]]
    return _source(cfg, k["topics"]["events"], k["group_id"], start)


def kafka_sink(cfg: dict[str, Any], topic: str, name: str, key_pointer: str, key_is_base64: bool = False) -> KafkaSink:
    """A Kafka sink of JSON messages, keyed by the string at the JSON pointer ``key_pointer`` (the bytes it holds in
    Base64 with ``key_is_base64``); exactly-once (transactional) when the config asks for it and checkpoints are on.

    Records over ``kafka.max_record_bytes`` are counted and skipped, not sent (``flinkrec.KeyedJsonRecords``): the
    producer would fail the job on them, and the restart would meet them again."""
    job, limit = cfg["job"], cfg["kafka"]["max_record_bytes"]
    builder = (KafkaSink.builder()
               .set_bootstrap_servers(cfg["kafka"]["bootstrap"])
               .set_property("max.request.size", str(max(1048576, limit + 65536))))
    builder._j_builder.setRecordSerializer(jvm_class("KeyedJsonRecords")(topic, key_pointer, key_is_base64, limit))
    if job["delivery"] == "exactly_once":
        if not job["checkpoint_interval_ms"]:
            raise ValueError("job.delivery=exactly_once needs checkpoints: set job.checkpoint_interval_ms > 0 "
                             "or job.delivery=at_least_once")
        builder = (builder.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
                   .set_transactional_id_prefix(f"{job['transactional_id_prefix']}-{name}")
                   .set_property("transaction.timeout.ms", str(job["transaction_timeout_ms"])))
    else:
        builder = builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    return builder.build()


def recommend_job(env: StreamExecutionEnvironment, cfg: dict[str, Any], *, drain: bool = False) -> None:
    """Wire the Kafka source and the Kafka/Redis sinks around :func:`recommend` and run it.

    ``drain=True`` (a bounded run restored from a checkpoint) runs the source unbounded and stops the job
    with a draining savepoint once the offsets it commits reach the end of the topic as it was at the
    start: a *bounded* KafkaSource restored from state never finishes (FLINK-31006), while a drained
    stop fires the end-of-input timers exactly like the end of a bounded input.
    """
    topics = cfg["kafka"]["topics"]
    source_cfg = {**cfg, "job": {**cfg["job"], "bounded": False}} if drain else cfg
    # event time comes from the events' ts field (operators.front), not the Kafka record time
    events = env.from_source(kafka_source(source_cfg), WatermarkStrategy.no_watermarks(), "kafka-events") \
        .uid("kafka-events")
    catalog = env.from_source(catalog_source(source_cfg), WatermarkStrategy.no_watermarks(), "kafka-items") \
        .uid("kafka-items")
    out = recommend(events, cfg, catalog=catalog)
    # recommendations keyed by user id (one partition per user: per-user order), dead letters by their source key
    out.recommendations.sink_to(kafka_sink(cfg, topics["recommendations"], "recs", "/user_id")) \
        .name("kafka-recommendations").uid("kafka-recommendations")
    out.dlq.sink_to(kafka_sink(cfg, topics["dlq"], "dlq", "/source/key_b64", key_is_base64=True)) \
        .name("kafka-dlq").uid("kafka-dlq")
    if not drain:
        env.execute(cfg["job"]["name"])
        return
    end = end_offsets(cfg["kafka"]["bootstrap"], topics["events"])
    client = env.execute_async(cfg["job"]["name"])
    logger.info("job %s: draining once group %s has committed %s", client.get_job_id(), cfg["kafka"]["group_id"], end)
    job_checkpoints = resolve_path(str(cfg["job"]["checkpoint_dir"])) / str(client.get_job_id())
    while not caught_up(committed_offsets(cfg["kafka"]["bootstrap"], cfg["kafka"]["group_id"], topics["events"]), end,
                        settled=len(list(job_checkpoints.glob("chk-*/_metadata"))) >= 2):
        if str(client.get_job_status().result()) in ("FAILED", "CANCELED", "FINISHED"):
            raise RuntimeError(f"job {client.get_job_id()} ended before it caught up to {end}")
        time.sleep(1)
    logger.info("caught up: stopping with a draining savepoint")
    savepoint = stop_with_savepoint(client, resolve_path(cfg["job"]["savepoint_dir"]).as_uri(), drain=True)
    logger.info("drained; final savepoint %s", savepoint)


def stop_with_savepoint(client: Any, directory: str, drain: bool) -> str:
    """``JobClient.stop_with_savepoint`` (PyFlink 2.2's wrapper misses the savepoint format argument)."""
    from pyflink.java_gateway import get_gateway

    fmt = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    return str(client._j_job_client.stopWithSavepoint(drain, directory, fmt).get())


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def caught_up(committed: dict[int, int], end: dict[int, int], *, settled: bool) -> bool:
    """Whether a drained run has read every partition to ``end``: its committed offset is there, or, once the job has
    completed two checkpoints (``settled``: by then it has committed the offset of every partition it reads), the
    partition has no committed offset at all. Such a partition was read to its end before the checkpoint the job
    restored (a finished split is not in the checkpoint, so this job never reads nor commits it) while the run that
    read it was stopped before it committed the offset (the commit follows the checkpoint)."""
    return all(committed.get(p, -1) >= off or (settled and p not in committed) for p, off in end.items())


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        found = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in found.items() if tp.topic == topic}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.recommend",
        description="Run the real-time recommendation job: read events and the item catalog from Kafka, keep "
                    "item-CF, user-CF, content and trending state, fuse them (model.hybrid.mode: weighted, rrf, "
                    "borda or learned), write top-N recommendations with reasons to Redis and to the Kafka "
                    "recommendations topic.",
        epilog="examples:\n"
               "  python -m jobs.recommend --bounded            # process what is in the topic, then stop\n"
               "  python -m jobs.recommend --set job.parallelism=2 --set model.top_n=20\n"
               "  python -m jobs.recommend --mode learned        # = --set model.hybrid.mode=learned\n"
               "  FLINKREC_KAFKA__BOOTSTRAP=broker:9092 python -m jobs.recommend",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file merged over config/default.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. model.top_n=20 (repeatable)")
    parser.add_argument("--bounded", action="store_true",
                        help="stop when the events topic is drained (default: run until Ctrl-C)")
    parser.add_argument("--parallelism", type=int, help="shortcut for --set job.parallelism=N")
    parser.add_argument("--mode", choices=MODES,
                        help="fusion mode (or one method alone), shortcut for --set model.hybrid.mode=MODE")
    parser.add_argument("--resume", metavar="latest|PATH",
                        help="restore state and Kafka offsets from a checkpoint or savepoint: a path, or 'latest' "
                             "for the newest checkpoint under job.checkpoint_dir")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = list(args.set)
    if args.bounded:
        overrides.append("job.bounded=true")
    if args.parallelism:
        overrides.append(f"job.parallelism={args.parallelism}")
    if args.mode:
        overrides.append(f"model.hybrid.mode={args.mode}")
    cfg = load_config(args.config, overrides)
    restore = resolve_restore(cfg, args.resume)
    env = make_env(cfg, restore=restore)
    logger.info("starting %s (parallelism %s, %s mode, bounded=%s)", cfg["job"]["name"],
                cfg["job"]["parallelism"], cfg["job"]["python_mode"], cfg["job"]["bounded"])
    recommend_job(env, cfg, drain=bool(restore) and cfg["job"]["bounded"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
