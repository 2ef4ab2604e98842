"""Helpers for the serving tests and the benchmark: fake job output in the Redis layout, topic reading.

The documents are built with :mod:`udfs.serde` (the job's own encoders), so a fake ``rec:recs:<user>``
has exactly the layout the Flink job writes. Nothing here is used by the API itself.
"""

from __future__ import annotations

import os
import random
import socket
import time
import uuid
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

from udfs.events import Event
from udfs.serde import dumps, recs_message, similar_message

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # kafka-python 3.0 on Python 3.11
    from kafka import KafkaConsumer, TopicPartition

REQUIRE_ENV = "REQUIRE_SERVICES"  # set by `make test` (FLINKREC_* would be read as config keys)
START_HINT = "start them with `bash deploy/services.sh up`"

GENRES = ("Action", "Adventure", "Animation", "Comedy", "Crime", "Documentary", "Drama", "Fantasy", "Horror",
          "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
WORDS = ("Red", "Silent", "Last", "Golden", "Midnight", "Lost", "Electric", "Paper", "Hidden", "Winter", "Broken",
         "Iron", "Glass", "Northern", "Wild", "Quiet", "Distant", "Burning", "Secret", "Blue")
NOUNS = ("River", "Garden", "City", "Letter", "Kingdom", "Harbor", "Machine", "Dream", "Station", "Forest", "Mirror",
         "Island", "Engine", "Road", "Empire", "Signal", "Orchard", "Tower", "Voyage", "Symphony")


def services_required() -> bool:
    """True when ``REQUIRE_SERVICES=1``: missing services fail the tests instead of skipping them."""
    return os.environ.get(REQUIRE_ENV, "") == "1"


def unavailable(message: str) -> NoReturn:
    """Skip the calling test, or fail it when ``REQUIRE_SERVICES=1`` (as ``make test`` sets)."""
    import pytest

    if services_required():
        pytest.fail(f"{message} (REQUIRE_SERVICES=1)")
    pytest.skip(message)


def require_kafka(cfg: Mapping[str, Any]) -> str:
    """The config's bootstrap servers once a broker answers (else :func:`unavailable`)."""
    from ingest.kafka_admin import KafkaUnavailable, wait_for_kafka

    bootstrap = str(cfg["kafka"]["bootstrap"])
    try:
        wait_for_kafka(bootstrap, timeout=10)
    except KafkaUnavailable as exc:
        unavailable(f"no Kafka broker at {bootstrap} ({exc}); {START_HINT}")
    return bootstrap


def require_redis(cfg: Mapping[str, Any]) -> Any:
    """A ``redis.Redis`` (str responses) of the config's Redis once it answers a PING (else :func:`unavailable`)."""
    import redis

    r = cfg["redis"]
    client = redis.Redis(host=r["host"], port=int(r["port"]), db=int(r["db"]), decode_responses=True,
                         socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"no Redis at {r['host']}:{r['port']} ({exc}); {START_HINT}")
    return client


def unique(base: str) -> str:
    """``base`` with a random suffix, for topic names, prefixes and groups that other tests do not share."""
    return f"{base}-{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def now_ms() -> int:
    return int(time.time() * 1000)

#: Ids that :mod:`udfs.events` accepts and a URL path must carry as one percent-encoded segment: reserved URL
#: characters, path traversals, escapes that look already decoded, white space inside, any script.
ODD_IDS = ("a/b", "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "x/similar", "u/recommendations", "/lead", "trail/",
           "a//b", "?q=1&n=2#frag", "100%", "%2F", "%252F", "two  words", "a+b", "caf\u00e9/\u00fc \u6f22\u5b57",
           "\U0001f468\u200d\U0001f469", "zero\u200bwidth", "...", "~._-!'()*", "\\", "{}", "<b>&amp;</b>")


# --- fake job output --------------------------------------------------------------------------------------------

def fake_events(seed: int, n: int, users: int, items: int, types: Mapping[str, float],
                start_ms: int = 1_700_000_000_000) -> list[Event]:
    """``n`` seeded events of users "u0".. over items "1".."items" (Pareto popularity: a few re-engagements), of
    ``rate`` (ratings 1..5) and the ``types`` with their weights, some at equal times."""
    rng = random.Random(seed)
    out: list[Event] = []
    ts = start_ms
    for k in range(n):
        ts += rng.choice([0, 1000, 15_000, 60_000])
        u, i = f"u{rng.randrange(users)}", str(1 + int(rng.paretovariate(1.1)) % items)
        t = rng.choice(["rate", *types])
        w = rng.choice([1.0, 2.5, 4.0, 5.0]) if t == "rate" else types[t]
        out.append(Event(f"e{k:05d}", u, i, t, w, ts))
    return out


def fake_catalog(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` catalog records (``item_id`` "1".."n", invented titles, years, 1-3 genres) for ``ingest.catalog``."""
    rng = random.Random(seed)
    out = []
    for i in range(1, n + 1):
        title = f"The {rng.choice(WORDS)} {rng.choice(NOUNS)}" + (f" {rng.randint(2, 4)}" if rng.random() < .1 else "")
        out.append({"item_id": str(i), "title": title, "year": rng.randint(1950, 2024) if rng.random() < .95 else None,
                    "genres": sorted(rng.sample(GENRES, rng.randint(1, 3)))})
    return out


def recs_doc(user_id: str, items: Sequence[tuple[str, float, str]], processed_at: int | None = None,
             event_id: str = "test-1", event_ts: int | None = None, history_size: int = 1) -> str:
    """The JSON of ``rec:recs:<user_id>`` for ranked ``(item_id, score, reason)``, as the job writes it."""
    at = now_ms() if processed_at is None else processed_at
    return dumps(recs_message(user_id, items, event_id, at if event_ts is None else event_ts, at, history_size))


def write_recs(client: Any, prefix: str, user_id: str, items: Sequence[tuple[str, float, str]],
               processed_at: int | None = None, **fields: Any) -> str:
    """Write a user's recommendations like ``operators.redis_sink.RecsToRedis``: the string and the ``users`` zset."""
    at = now_ms() if processed_at is None else processed_at
    doc = recs_doc(user_id, items, processed_at=at, **fields)
    pipe = client.pipeline(transaction=False)
    pipe.set(f"{prefix}recs:{user_id}", doc)
    pipe.zadd(f"{prefix}users", {user_id: at})
    pipe.execute()
    return doc


def write_similar(client: Any, prefix: str, item_id: str, neighbors: Sequence[tuple[str, float]],
                  updated_at: int | None = None) -> None:
    """Write ``rec:similar:<item_id>`` like ``operators.redis_sink.NeighborsToRedis``."""
    at = now_ms() if updated_at is None else updated_at
    client.set(f"{prefix}similar:{item_id}", dumps(similar_message(item_id, neighbors, at)))


def write_trending(client: Any, prefix: str, trending: Sequence[tuple[str, float]]) -> None:
    """Write ``rec:trending`` (JSON list of ``{"item_id", "score"}``)."""
    client.set(f"{prefix}trending", dumps([{"item_id": i, "score": s} for i, s in trending]))


def fill_fake_users(client: Any, prefix: str, n_users: int, n_items: int, top_n: int = 10, seed: int = 0,
                    pipeline_size: int = 1000) -> list[str]:
    """``n_users`` users ("u1".."uN") with ``top_n`` recommendations each over items "1".."n_items"; return the ids."""
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(1, n_users + 1)]
    at = now_ms()
    pipe = client.pipeline(transaction=False)
    for k, user in enumerate(users, 1):
        picks = rng.sample(range(1, n_items + 1), min(top_n, n_items))
        ranked = [(str(j), round(5.0 - 0.3 * r - rng.random() * 0.1, 6), f"because of {rng.randint(1, n_items)}")
                  for r, j in enumerate(picks)]
        pipe.set(f"{prefix}recs:{user}", recs_doc(user, ranked, processed_at=at, event_id=f"bench-{k}"))
        pipe.zadd(f"{prefix}users", {user: at})
        if k % pipeline_size == 0:
            pipe.execute()
    pipe.execute()
    return users


def delete_prefix(client: Any, prefix: str) -> int:
    """Delete every key starting with ``prefix``; return how many."""
    if not prefix:
        raise ValueError("refusing to delete with an empty prefix")
    n = 0
    batch: list[Any] = []
    for key in client.scan_iter(match=prefix + "*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            n += client.delete(*batch)
            batch = []
    if batch:
        n += client.delete(*batch)
    return n


# --- Kafka --------------------------------------------------------------------------------------------------------

def read_topic(bootstrap: str, topic: str, timeout: float = 30.0, isolation: str = "read_committed") -> list[Any]:
    """Every record of ``topic`` up to its current end offsets (``isolation``: read_committed, or read_uncommitted
    for the records of open and aborted transactions too), partition by partition.

    Stops at the end offsets instead of polling on, so no late metadata request re-creates a topic a
    test deletes afterwards.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             isolation_level=isolation, auto_offset_reset="earliest",
                             allow_auto_create_topics=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not tps:
            raise ValueError(f"topic {topic!r} has no partitions on {bootstrap}")
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: dict[int, list[Any]] = defaultdict(list)
        pending = {tp for tp in tps if end[tp] > 0}
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{topic}: partitions {sorted(tp.partition for tp in pending)} not read to the end "
                                   f"in {timeout:g} s")
            for tp, recs in consumer.poll(timeout_ms=500).items():
                out[tp.partition].extend(recs)
            pending = {tp for tp in pending if consumer.position(tp) < end[tp]}
        return [r for p in sorted(out) for r in out[p]]
    finally:
        consumer.close()


def produce_values(bootstrap: str, topic: str, values: Iterable[bytes], key: bytes | None = None) -> int:
    """Send raw values to ``topic`` and wait for the acknowledgements; return how many."""
    from ingest.producer import Record, send_records

    return send_records((Record(key, v) for v in values), bootstrap, topic, progress=False)


def drop_topics(bootstrap: str, topics: Iterable[str]) -> None:
    """Delete the topics that exist; twice, half a second apart (a late metadata request could re-create one)."""
    from ingest.kafka_admin import delete_topics

    names = list(topics)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, allow_auto_create_topics=False)
    try:
        present = [t for t in names if t in consumer.topics()]
    finally:
        consumer.close()
    if present:
        delete_topics(bootstrap, present, wait=True)
        time.sleep(0.5)
        delete_topics(bootstrap, present, wait=True)
