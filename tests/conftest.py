"""Shared fixtures: the real services (Kafka, Redis) and the PyFlink mini-cluster runner.

``make test`` starts the services first and sets REQUIRE_SERVICES=1, so a missing service
fails the run there instead of skipping tests silently; a bare ``pytest`` skips such tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

BOOTSTRAP = os.environ.get("FLINKREC_KAFKA__BOOTSTRAP", "127.0.0.1:9092")
REDIS_HOST, REDIS_PORT = "127.0.0.1", int(os.environ.get("FLINKREC_REDIS__PORT", "6379"))


def unavailable(message: str) -> NoReturn:
    """Skip, or fail when the run promised the services (REQUIRE_SERVICES=1)."""
    hint = f"{message}; start them with `make services-up`"
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(hint)
    pytest.skip(hint)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    from ingest import kafka_admin

    try:
        kafka_admin.wait_for_kafka(BOOTSTRAP, timeout=20)
    except kafka_admin.KafkaUnavailable as exc:
        unavailable(f"no Kafka broker at {BOOTSTRAP} ({exc})")
    return BOOTSTRAP


def connect_redis(decode_responses: bool = False) -> Any:
    """A client of the test Redis, after a ping (:func:`unavailable` when there is none)."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, decode_responses=decode_responses, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        unavailable(f"no Redis at {REDIS_HOST}:{REDIS_PORT} ({exc})")
    return client


@pytest.fixture(scope="session")
def redis_conn() -> Iterator[Any]:
    client = connect_redis()
    yield client
    client.close()


@pytest.fixture()
def unique() -> str:
    """A short random suffix for topic names and Redis prefixes, so tests can share the services."""
    return uuid.uuid4().hex[:10]
