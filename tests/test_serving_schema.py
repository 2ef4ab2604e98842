"""Property-based run of the API against its own OpenAPI document (schemathesis, in-process ASGI transport).

Every operation gets ``MAX_EXAMPLES`` generated requests (plus the documented examples) against the real
Redis and Kafka; the app must never answer 5xx and every answer must match the documented status codes,
content types and response schemas. Redis holds a small fake job output under a random prefix; the
events that pass validation go to a random events topic; both are removed afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config import load_config
from ingest.catalog import store_catalog
from serving.api import create_app
from serving.testing import (
    delete_prefix,
    drop_topics,
    fake_catalog,
    fill_fake_users,
    require_kafka,
    require_redis,
    unique,
    write_recs,
    write_similar,
    write_trending,
)

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 100
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# The app is built at import (it connects to nothing until a request comes), with a random Redis prefix and
# events topic; the module fixture below checks the services, writes the fake job output and cleans up. (The
# lazy ``schemathesis.pytest.from_fixture`` loader of schemathesis 4.32 does not work with pytest 9.)
PREFIX, TOPIC = unique("test-serving-schema") + ":", unique("test-serving-schema-events")
CFG = load_config(overrides=[f"redis.prefix={PREFIX}", f"kafka.topics.events={TOPIC}"])
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(CFG, kafka_timeout_s=5))


@pytest.fixture(scope="module", autouse=True)
def fake_job_output() -> Iterator[None]:
    bootstrap = require_kafka(CFG)
    client = require_redis(CFG)
    try:
        store_catalog(fake_catalog(300), client, prefix=PREFIX)
        fill_fake_users(client, PREFIX, 50, 300)
        write_recs(client, PREFIX, "196", [("242", 3.2, "because of 51"), ("1", 2.0, "similar users")])
        write_similar(client, PREFIX, "242", [("1", 0.9), ("2", 0.5)])
        write_trending(client, PREFIX, [("1", 10.0), ("2", 5.0)])
        yield
    finally:
        delete_prefix(client, PREFIX)
        client.close()
        drop_topics(bootstrap, [TOPIC])


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_api_follows_its_openapi_document(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)
