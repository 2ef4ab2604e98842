"""The recommendation job: Kafka events -> item-CF state -> ranked top-N -> Redis + Kafka.

Topology (``job.shards`` virtual shards per side, ``job.window_ms`` tumbling windows)::

    KafkaSource(events) -> ParseEvents --dlq--> KafkaSink(events-dlq)
        -> key_by(user shard) -> UserWindow --(per item shard deltas)--> key_by(item shard) -> ItemWindow
                                     |                                                          |
                               rank requests                                     neighbour lists (broadcast)
                                     '-> key_by(user shard) -> Ranker <--------------------------'
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

from pyflink.common import Duration, Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)

from config import load_config
from jobs.flink_env import make_env
from operators.parse import DLQ_TAG, ParseEvents
from operators.ranker import COUNTS_STATE, NEIGHBORS_STATE, Ranker
from operators.redis_sink import NeighborsToRedis, RecsToRedis
from operators.windows import RANK_TAG, ItemWindow, UserWindow
from udfs.events import Limits
from udfs.shard import shard_of

logger = logging.getLogger(__name__)

PICKLED = Types.PICKLED_BYTE_ARRAY()


@dataclass
class RecommendOutputs:
    recommendations: DataStream  # JSON strings, one per updated user
    neighbors: DataStream  # pickled neighbour-list batches (item shard, {item: [(item, sim)]}, counts, ts)
    dlq: DataStream  # JSON strings: rejected input with the reason


def recommend(events: DataStream, cfg: dict[str, Any], *, redis: bool = True,
              parse_parallelism: int | None = None) -> RecommendOutputs:
    """Build the pipeline on a stream of raw JSON event strings and return its output streams.

    With ``redis=False`` nothing is written to Redis (tests collect the streams instead). The parser
    runs at ``parse_parallelism`` (default: the job's) chained to the source, which keeps each
    source partition's order: a user's events must reach the user state in order.
    """
    job, model = cfg["job"], cfg["model"]
    shards, window = job["shards"], job["window_ms"]
    parsed = events.process(ParseEvents(Limits.from_config(cfg)), output_type=PICKLED).name("parse")
    if parse_parallelism:
        parsed = parsed.set_parallelism(parse_parallelism)
    dlq = parsed.get_side_output(DLQ_TAG)

    users = (parsed.key_by(lambda e: shard_of(e.user_id, shards), key_type=Types.INT())
             .process(UserWindow(window, shards, model["history_cap"]), output_type=PICKLED)
             .name("user-window").uid("user-window"))
    items = (users.key_by(lambda d: d[0], key_type=Types.INT())
             .process(ItemWindow(window, model["top_k"], job["refresh_budget_ms"]), output_type=PICKLED)
             .name("item-window").uid("item-window"))
    ranked = (users.get_side_output(RANK_TAG)
              .key_by(lambda r: r[0], key_type=Types.INT())
              .connect(items.broadcast(NEIGHBORS_STATE, COUNTS_STATE))
              .process(Ranker(model["top_n"], model["trending_size"], window), output_type=PICKLED)
              .name("ranker").uid("ranker"))
    if redis:
        r = cfg["redis"]
        args = (r["host"], int(r["port"]), int(r["db"]), r["prefix"], int(r["pipeline_size"]))
        recs = ranked.flat_map(RecsToRedis(*args), output_type=Types.STRING()).name("recs-to-redis")
        items.flat_map(NeighborsToRedis(*args), output_type=Types.STRING()).name("similar-to-redis")
    else:
        from udfs.serde import dumps

        recs = ranked.flat_map(lambda b: [dumps(m) for m in b[1]], output_type=Types.STRING()).name("recs-json")
    return RecommendOutputs(recommendations=recs, neighbors=items, dlq=dlq)


class ProcessingTime(TimestampAssigner):
    """Stamps output records with the wall clock: results flushed by the end-of-input timer carry
    Long.MAX_VALUE as their Flink timestamp, which a Kafka broker rejects as a record timestamp."""

    def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
        return int(time.time() * 1000)


def restamp(stream: DataStream) -> DataStream:
    return stream.assign_timestamps_and_watermarks(
        WatermarkStrategy.no_watermarks().with_timestamp_assigner(ProcessingTime())).name("restamp")


def kafka_source(cfg: dict[str, Any]) -> KafkaSource:
    k = cfg["kafka"]
    start = (KafkaOffsetsInitializer.earliest() if cfg["job"]["starting_offsets"] == "earliest"
             else KafkaOffsetsInitializer.latest())
    builder = (KafkaSource.builder()
               .set_bootstrap_servers(k["bootstrap"])
               .set_topics(k["topics"]["events"])
               .set_group_id(k["group_id"])
               .set_starting_offsets(start)
               .set_value_only_deserializer(SimpleStringSchema())
               .set_property("partition.discovery.interval.ms", "10000")
               .set_property("isolation.level", "read_committed"))
    if cfg["job"]["bounded"]:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    return builder.build()


def kafka_sink(cfg: dict[str, Any], topic: str) -> KafkaSink:
    return (KafkaSink.builder()
            .set_bootstrap_servers(cfg["kafka"]["bootstrap"])
            .set_record_serializer(KafkaRecordSerializationSchema.builder()
                                   .set_topic(topic)
                                   .set_value_serialization_schema(SimpleStringSchema())
                                   .build())
            .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
            .build())


def recommend_job(env: StreamExecutionEnvironment, cfg: dict[str, Any]) -> None:
    """Wire the Kafka source and the Kafka/Redis sinks around :func:`recommend` and run it."""
    topics = cfg["kafka"]["topics"]
    watermarks = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_seconds(5))
    events = env.from_source(kafka_source(cfg), watermarks, "kafka-events")
    out = recommend(events, cfg)
    restamp(out.recommendations).sink_to(kafka_sink(cfg, topics["recommendations"])).name("kafka-recommendations")
    restamp(out.dlq).sink_to(kafka_sink(cfg, topics["dlq"])).name("kafka-dlq")
    env.execute(cfg["job"]["name"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.recommend",
        description="Run the real-time recommendation job: read events from Kafka, keep item-CF state, "
                    "write top-N recommendations to Redis and to the Kafka recommendations topic.",
        epilog="examples:\n"
               "  python -m jobs.recommend --bounded            # process what is in the topic, then stop\n"
               "  python -m jobs.recommend --set job.parallelism=2 --set model.top_n=20\n"
               "  FLINKREC_KAFKA__BOOTSTRAP=broker:9092 python -m jobs.recommend",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file merged over config/default.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. model.top_n=20 (repeatable)")
    parser.add_argument("--bounded", action="store_true",
                        help="stop when the events topic is drained (default: run until Ctrl-C)")
    parser.add_argument("--parallelism", type=int, help="shortcut for --set job.parallelism=N")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = list(args.set)
    if args.bounded:
        overrides.append("job.bounded=true")
    if args.parallelism:
        overrides.append(f"job.parallelism={args.parallelism}")
    cfg = load_config(args.config, overrides)
    env = make_env(cfg)
    logger.info("starting %s (parallelism %s, %s mode, bounded=%s)", cfg["job"]["name"],
                cfg["job"]["parallelism"], cfg["job"]["python_mode"], cfg["job"]["bounded"])
    recommend_job(env, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
