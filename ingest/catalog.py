"""Publish the item catalog: ``python -m ingest.catalog`` (``flinkrec-catalog``).

The catalog (MovieLens-100K movies or the synthetic items) goes to two places:

* Kafka, topic ``kafka.topics.items`` (log-compacted): one JSON message per item, keyed by
  ``item_id``: ``{"item_id": "1", "title": "Toy Story", "year": 1995, "genres": ["Animation", ...]}``;
* Redis, for display: a HASH ``{prefix}item:{item_id}`` with fields ``title``, ``year`` (empty when
  unknown) and ``genres`` (joined by ``|``), and a SET ``{prefix}items`` of all item ids
  (``prefix`` is ``redis.prefix``, ``rec:`` by default), then ``INCR {prefix}catalog:version`` (the API's session
  ranking keeps the catalog in memory while the version holds). Writes are pipelined.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from config import ConfigError, load_config
from ingest.producer import Record, add_config_args, number_arg, send_records, setup_logging
from udfs.catalog import GENRE_SEPARATOR, validate_record

logger = logging.getLogger(__name__)

__all__ = ["GENRE_SEPARATOR", "validate_record"]  # re-exported: they moved to udfs.catalog


def catalog_record(record: Mapping[str, Any]) -> Record:
    """The Kafka record of an item: key ``item_id``, value its JSON."""
    rec = validate_record(record)
    value = json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Record(rec["item_id"].encode("utf-8"), value)


def publish_catalog(records: Iterable[Mapping[str, Any]], bootstrap: str, topic: str, progress: bool = False) -> int:
    """Send every item to the compacted ``topic`` keyed by ``item_id``; return the number sent."""
    items = list(records)
    return send_records((catalog_record(r) for r in items), bootstrap, topic, progress=progress,
                        total=len(items), unit="item")


def item_key(prefix: str, item_id: str) -> str:
    """The Redis key of an item's display hash."""
    return f"{prefix}item:{item_id}"


def items_key(prefix: str) -> str:
    """The Redis key of the set of all item ids."""
    return f"{prefix}items"


def catalog_version_key(prefix: str) -> str:
    """The Redis key incremented after every catalog write (``serving.sessions`` keeps the catalog while it holds)."""
    return f"{prefix}catalog:version"


def redis_fields(record: Mapping[str, Any]) -> dict[str, str]:
    """The HASH fields stored for an item."""
    rec = validate_record(record)
    return {"title": rec["title"], "year": "" if rec["year"] is None else str(rec["year"]),
            "genres": GENRE_SEPARATOR.join(rec["genres"])}


def store_catalog(records: Iterable[Mapping[str, Any]], redis_client: Any, prefix: str = "rec:",
                  pipeline_size: int = 500, replace: bool = False) -> int:
    """Write the item hashes and the id set to Redis in pipelined batches; return the number of items.

    With ``replace`` the hashes of ids in the old set that are not in ``records`` are deleted and the
    set ends up holding exactly the new ids.
    """
    if pipeline_size < 1:
        raise ValueError(f"pipeline_size must be >= 1, got {pipeline_size!r}")
    if not isinstance(prefix, str):
        raise ValueError(f"Redis key prefix must be a string, got {prefix!r} (on the command line quote it: "
                         "--set 'redis.prefix=\"demo:\"', or a bare `demo:` is read as a YAML mapping)")
    set_key = items_key(prefix)
    ids: list[str] = []
    pipe = redis_client.pipeline(transaction=False)
    queued = 0
    for record in records:
        fields = redis_fields(record)
        item_id = record["item_id"]
        ids.append(item_id)
        pipe.hset(item_key(prefix, item_id), mapping=fields)
        pipe.sadd(set_key, item_id)
        queued += 1
        if queued >= pipeline_size:
            pipe.execute()
            queued = 0
    if queued:
        pipe.execute()
    if replace:
        stale = {m.decode() if isinstance(m, bytes) else str(m) for m in redis_client.smembers(set_key)} - set(ids)
        stale_ids = sorted(stale)
        for start in range(0, len(stale_ids), pipeline_size):
            chunk = stale_ids[start:start + pipeline_size]
            pipe.delete(*(item_key(prefix, i) for i in chunk))
            pipe.srem(set_key, *chunk)
            pipe.execute()
        if stale_ids:
            logger.info("removed %d stale item(s) from Redis", len(stale_ids))
    redis_client.incr(catalog_version_key(prefix))  # readers that keep the catalog (API sessions) re-read it
    logger.info("stored %d item(s) in Redis under %s", len(ids), item_key(prefix, "*"))
    return len(ids)


def redis_client_from_config(cfg: Mapping[str, Any]) -> Any:
    """A ``redis.Redis`` client for the ``redis`` config section."""
    import redis

    r = cfg["redis"]
    return redis.Redis(host=r["host"], port=int(r["port"]), db=int(r["db"]), socket_connect_timeout=5)


def load_records(source: str, n_items: int = 5000, seed: int = 0, cfg: Mapping[str, Any] | None = None
                 ) -> list[dict[str, Any]]:
    """The catalog of ``movielens`` or ``synthetic`` (``n_items`` items, ``seed``)."""
    if source == "movielens":
        from ingest.movielens import load_catalog

        return load_catalog(cfg=cfg)
    if source == "synthetic":
        from ingest.synthetic import generate_catalog

        return generate_catalog(n_items, seed=seed)
    raise ValueError(f"unknown catalog source {source!r} (known: movielens, synthetic)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flinkrec-catalog",
        description="Publish the item catalog to the compacted items topic (kafka.topics.items, JSON keyed by "
                    "item_id) and store it in Redis for display (HASH {prefix}item:{id} with title, year, genres "
                    "and SET {prefix}items).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  python -m ingest.catalog                                   the 1,682 MovieLens movies, to Kafka and Redis
  python -m ingest.catalog --source synthetic --items 20000 --seed 7    the items of the synthetic producer run
  python -m ingest.catalog --no-kafka --replace              only Redis, dropping items not in this catalog
  python -m ingest.catalog --set 'redis.prefix="demo:"' --set kafka.topics.items=demo-items

Quote a prefix ending in ':' as above: a bare --set redis.prefix=demo: is read as a YAML mapping.
""")
    parser.add_argument("--source", choices=("movielens", "synthetic"), default="movielens",
                        help="which catalog (default: movielens)")
    parser.add_argument("--items", type=number_arg(int, 1), default=5_000, metavar="N",
                        help="synthetic: number of items (default 5000; use the producer's --items)")
    parser.add_argument("--seed", type=number_arg(int, 0), default=0, metavar="N",
                        help="synthetic: random seed (default 0; use the producer's --seed)")
    parser.add_argument("--no-kafka", action="store_true", help="do not publish to Kafka")
    parser.add_argument("--no-redis", action="store_true", help="do not store in Redis")
    parser.add_argument("--replace", action="store_true",
                        help="Redis: also delete items stored earlier that are not in this catalog")
    add_config_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    from kafka.errors import KafkaError
    from redis.exceptions import RedisError

    from ingest.kafka_admin import COMPACTED, KafkaUnavailable, ensure_topics, wait_for_kafka
    from ingest.movielens import DatasetNotFound
    from ingest.producer import ProduceError

    try:
        records = load_records(args.source, args.items, args.seed, cfg)
        if not args.no_kafka:
            bootstrap, topic = str(cfg["kafka"]["bootstrap"]), str(cfg["kafka"]["topics"]["items"])
            wait_for_kafka(bootstrap, timeout=args.wait)
            try:
                ensure_topics(bootstrap, {topic: dict(COMPACTED)}, partitions=int(cfg["kafka"]["partitions"]))
            except KafkaError as exc:
                raise ProduceError(f"cannot create topic {topic!r} on {bootstrap}: {exc}") from exc
            n = publish_catalog(records, bootstrap, topic, progress=not args.quiet)
            logger.info("published %d item(s) to topic %s", n, topic)
        if not args.no_redis:
            client = redis_client_from_config(cfg)
            try:
                store_catalog(records, client, prefix=cfg["redis"]["prefix"],
                              pipeline_size=int(cfg["redis"]["pipeline_size"]), replace=args.replace)
            finally:
                client.close()
    except RedisError as exc:
        r = cfg["redis"]
        logger.error("Redis at %s:%s: %s; start it with `bash deploy/services.sh up`", r["host"], r["port"], exc)
        return 1
    except (DatasetNotFound, KafkaUnavailable, ProduceError, ValueError) as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
