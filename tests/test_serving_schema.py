"""Property-based run of the API against its own OpenAPI document (schemathesis, in-process ASGI transport).

Every operation gets ``MAX_EXAMPLES`` generated requests (plus the documented examples) against the real
Redis and Kafka; the app must never answer 5xx and every answer must match the documented status codes,
content types and response schemas. Redis holds a small fake job output under a random prefix; the
events that pass validation go to a random events topic; both are removed afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

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
    ODD_IDS,
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
        write_recs(client, PREFIX, "deep", DEEP)  # a list as deep as model.stored_n, for the filters
        write_similar(client, PREFIX, "242", [("1", 0.9), ("2", 0.5)])
        write_trending(client, PREFIX, [("1", 10.0), ("2", 5.0)])
        # the documented examples and ids with reserved characters, as users, items and items with neighbours
        store_catalog([{"item_id": i, "title": f"Title of {i}", "year": None, "genres": []} for i in ODD_EXAMPLES],
                      client, prefix=PREFIX)
        for i in ODD_EXAMPLES:
            write_recs(client, PREFIX, i, [("242", 1.5, f"because of {i}")])
            write_similar(client, PREFIX, i, [("1", 0.5)])
        yield
    finally:
        delete_prefix(client, PREFIX)
        client.close()
        drop_topics(bootstrap, [TOPIC])


# the ids of the `examples` of the path parameters (schemathesis sends them too) that hold a "/", and ODD_IDS
EXAMPLE_IDS = sorted({ex for op in schema.raw_schema["paths"].values() for method in op.values()
                      for param in method.get("parameters", []) if param["in"] == "path"
                      for ex in param["schema"].get("examples", []) if "/" in ex})
ODD_EXAMPLES = sorted({*ODD_IDS, *EXAMPLE_IDS})


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_api_follows_its_openapi_document(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)


RECS = "/users/{user_id}/recommendations"
DEEP = [(str(i), 100.0 - i, f"because of {i}") for i in range(1, CFG["model"]["stored_n"] + 1)]
CATALOG = {r["item_id"]: r["genres"] for r in fake_catalog(300)}


@pytest.mark.parametrize("query", [
    {"genre": "Western", "n": 5}, {"exclude": ["1", "2", "3", "x,y"], "n": 20}, {"genre": "Drama", "exclude": ["4"]},
    {"n": 100}, {"exclude": [str(i) for i in range(1, 101)]}, {"genre": "Comedy", "n": 3, "cold_start": "true"},
])
@pytest.mark.parametrize("user", ["deep", "nobody"])
def test_filters_follow_the_document(user: str, query: dict[str, Any]) -> None:
    """Explicit cases of the filters (a known genre, excluded ids, n past the stored list) on a list as deep as
    model.stored_n and on the cold-start trending list: 200s that match the document and the filters' rule."""
    case = schema[RECS]["GET"].Case(path_parameters={"user_id": user}, query=query)
    response = case.call()
    case.validate_response(response, checks=CHECKS)
    if user == "nobody" and "cold_start" not in query:
        assert response.status_code == 404
        return
    assert response.status_code == 200, response.text
    body = response.json()
    stored = [i for i, _, _ in DEEP] if user == "deep" else ["1", "2"]
    n, genre, exclude = query.get("n", 10), query.get("genre"), set(query.get("exclude", ()))
    want = [i for i in stored if i not in exclude and (genre is None or genre in CATALOG[i])][:n]
    assert [it["item_id"] for it in body["items"]] == want
    assert (body["requested"], body["stored"], body["complete"]) == (n, len(stored), len(want) == n)


@pytest.mark.parametrize("query", [
    {"genre": "Western", "n": 5}, {"exclude": ["1", "x,y"], "n": 1}, {"genre": "Drama", "exclude": ["2"]}, {"n": 100},
])
def test_trending_filters_follow_the_document(query: dict[str, Any]) -> None:
    case = schema["/trending"]["GET"].Case(query=query)
    response = case.call()
    case.validate_response(response, checks=CHECKS)
    assert response.status_code == 200, response.text
    body = response.json()
    n, genre, exclude = query.get("n", 10), query.get("genre"), set(query.get("exclude", ()))
    want = [i for i in ("1", "2") if i not in exclude and (genre is None or genre in CATALOG[i])][:n]
    assert [it["item_id"] for it in body["items"]] == want
    assert (body["requested"], body["stored"], body["complete"]) == (n, 2, len(want) == n)


@pytest.mark.parametrize("path", [RECS, "/trending"])
@pytest.mark.parametrize(("query", "named"), [
    ({"n": 0}, "query parameter n"), ({"n": 101}, "query parameter n"),
    ({"exclude": [str(i) for i in range(101)]}, "query parameter exclude"),
    ({"genre": "Polka"}, "query parameter genre: 'Polka'"), ({"genre": "western"}, "did you mean 'Western'?"),
])
def test_bad_filters_are_documented_400s(path: str, query: dict[str, Any], named: str) -> None:
    case = schema[path]["GET"].Case(query=query, path_parameters={"user_id": "deep"} if path == RECS else None)
    response = case.call()
    case.validate_response(response, checks=CHECKS)
    assert response.status_code == 400, response.text
    assert named in response.json()["error"]


@pytest.mark.parametrize("path", [RECS, "/trending"])
def test_the_filters_are_documented_with_their_limits(path: str) -> None:
    params = {p["name"]: p["schema"] for p in schema.raw_schema["paths"][path]["get"]["parameters"]}
    assert (params["n"]["minimum"], params["n"]["maximum"]) == (1, 100)
    assert params["exclude"]["type"] == "array" and params["exclude"]["maxItems"] == 100
    assert params["exclude"]["items"] == {"type": "string", "minLength": 1, "maxLength": CFG["limits"]["max_id_length"]}
    assert {"type": "string", "minLength": 1, "maxLength": 64} in params["genre"]["anyOf"]
    assert "repeat the parameter" in params["exclude"]["description"]
    out = schema.raw_schema["components"]["schemas"]["RecommendationsOut" if path == RECS else "TrendingOut"]
    assert {"requested", "stored", "complete"} <= set(out["required"])


def test_invalid_parameters_are_documented_as_400_not_422() -> None:
    """Every operation with parameters documents the 400 it gives for them; only POST /events has a 422 (some
    records of its body invalid), and FastAPI's own 422 shape is gone from the document."""
    for path, ops in schema.raw_schema["paths"].items():
        for method, op in ops.items():
            if op.get("parameters"):
                assert op["responses"]["400"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ValidationErrorOut"}, (method, path)
            assert ("422" in op["responses"]) == ((method, path) == ("post", "/events")), (method, path)
    assert "HTTPValidationError" not in schema.raw_schema["components"]["schemas"]


# every path operation with an id, and the field of the answer that must give the id back
ID_ROUTES = [("/users/{user_id}/recommendations", "user_id", "user_id"), ("/items/{item_id}", "item_id", "item_id"),
             ("/items/{item_id}/similar", "item_id", "item_id")]


@pytest.mark.parametrize("value", ODD_EXAMPLES)
@pytest.mark.parametrize(("path", "param", "field"), ID_ROUTES)
def test_ids_with_reserved_characters_follow_the_document(path: str, param: str, field: str, value: str) -> None:
    """Explicit schemathesis cases: the id percent-encoded as one segment, as the parameter's description says."""
    case = schema[path]["GET"].Case(path_parameters={param: quote(value, safe="")})
    response = case.call()
    case.validate_response(response, checks=CHECKS)
    assert response.status_code == 200, response.text
    assert response.json()[field] == value


def test_the_path_parameters_document_the_encoding() -> None:
    for path, param, _ in ID_ROUTES:
        [spec] = [p for p in schema.raw_schema["paths"][path]["get"]["parameters"] if p["name"] == param]
        assert "%2F" in spec["description"] and any("/" in ex for ex in spec["schema"]["examples"])
    assert set(EXAMPLE_IDS) == {"shop/Ana Mar\u00eda?#%", "books/978 0?#%"}


SESSIONS = "/sessions/recommendations"


@pytest.mark.parametrize(("body", "query"), [
    ({"items": [{"item_id": "242", "type": "view"}]}, {"mode": "itemcf"}),
    ({"items": [{"item_id": "242", "type": "rate", "value": 4.5, "ts": 1764514800000}, {"item_id": 7}]}, {"n": 3}),
    ({"items": [{"item_id": "242"}]}, {"exclude": ["1"], "genre": "Drama", "n": 100}),
    ({"items": []}, {}),
    ({"items": [{"item_id": i} for i in ODD_EXAMPLES]}, {"mode": "content"}),
])
def test_sessions_follow_the_document(body: dict[str, Any], query: dict[str, Any]) -> None:
    case = schema[SESSIONS]["POST"].Case(body=body, query=query)
    response = case.call()
    case.validate_response(response, checks=CHECKS)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["used"] == list(dict.fromkeys(str(it["item_id"]) for it in body["items"]))
    if query.get("mode") == "itemcf":
        assert [(it["item_id"], it["reason"]) for it in out["items"][:2]] == [
            ("1", "because you viewed " + TITLES["242"]), ("2", "because you viewed " + TITLES["242"])]


TITLES = {r["item_id"]: r["title"] for r in fake_catalog(300)}


@pytest.mark.parametrize(("body", "named"), [
    ({"items": [{"item_id": "1", "type": "rate"}]}, "items[0]: rate event needs a value"),
    ({"items": [{"item_id": "1"}] * 51}, "more than 50"),
    ({"items": [{"item_id": "1", "ts": 1.5}]}, "items[0]: ts 1.5 must be an integer"),
])
def test_bad_sessions_are_documented_400s(body: dict[str, Any], named: str) -> None:
    case = schema[SESSIONS]["POST"].Case(body=body)
    response = case.call()
    case.validate_response(response, checks=CHECKS)
    assert response.status_code == 400 and named in response.json()["error"], response.text
