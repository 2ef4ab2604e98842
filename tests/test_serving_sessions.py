"""``POST /sessions/recommendations`` against the real Redis: the model core learns a known event stream, its item
neighbour lists, trending list and catalog are written to Redis as the job and ``ingest.catalog`` write them, and a
session holding a user's events must be ranked exactly as the core ranks that user (items, reasons, scores).

The core runs with the session's settings (:func:`core.v2.session.session_settings`: the job's, without user-CF,
content candidates from the whole catalog); ``tests/test_core_v2_session.py`` checks the same without Redis in
every mode and with more users.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from config import load_config
from core.v2 import model as M
from core.v2.session import SESSION_MODES, published_trending, session_settings
from core.v2.settings import Settings
from ingest.catalog import store_catalog
from serving.api import create_app, parse_session
from serving.testing import (
    delete_prefix,
    fake_catalog,
    fake_events,
    require_redis,
    unique,
    write_similar,
    write_trending,
)
from udfs.events import Event, Limits

pytestmark = pytest.mark.integration

PATH = "/sessions/recommendations"
WEIGHTS = {"view": 1.0, "click": 2.0, "cart": 3.0, "purchase": 5.0}
CATALOG = fake_catalog(150, seed=4)


def stream(seed: int, n: int, users: int, items: int) -> list[Event]:
    return fake_events(seed, n, users, items, WEIGHTS, start_ms=1_764_500_000_000)


EVENTS = stream(11, 4000, users=90, items=170)  # items 151..170 are not in the catalog


@pytest.fixture(scope="module")
def rds() -> Iterator[Any]:
    client = require_redis(load_config())
    yield client
    client.close()


@pytest.fixture(scope="module")
def prefix(rds: Any) -> Iterator[str]:
    p = unique("test-sessions") + ":"
    yield p
    delete_prefix(rds, p)


@pytest.fixture(scope="module")
def cfg(prefix: str) -> dict[str, Any]:
    return load_config(overrides=[f"redis.prefix={prefix}", f"kafka.topics.events={unique('test-sessions-ev')}"])


@pytest.fixture(scope="module")
def core(cfg: dict[str, Any], rds: Any, prefix: str) -> M.State:
    """The core learned on EVENTS with the session settings, published to Redis as the job publishes it."""
    settings = session_settings(Settings.from_config(cfg["model"]))
    state = M.new_state(settings)
    M.add_items(state, CATALOG)
    M.learn(state, M.Batch.of(EVENTS))
    M.refresh(state, all_rows=True)
    store_catalog(CATALOG, rds, prefix=prefix)
    for item in state.items.names:
        write_similar(rds, prefix, item, M.neighbors(state, item))  # NeighborsToRedis: udfs.serde.similar_message
    write_trending(rds, prefix, published_trending(state, settings.trending_size))  # RecsToRedis's rec:trending
    return state


@pytest.fixture(scope="module")
def client(cfg: dict[str, Any], core: M.State) -> Iterator[TestClient]:
    with TestClient(create_app(cfg, kafka_timeout_s=5, session_max_items=60)) as c:
        yield c


def session_of(user: str) -> list[dict[str, Any]]:
    return [{"item_id": e.item_id, "type": e.type, "value": e.weight, "ts": e.ts} for e in EVENTS if e.user_id == user]


def post(client: TestClient, items: list[dict[str, Any]], **query: Any) -> Any:
    return client.post(PATH, json={"items": items}, params=query)


def users_with_sessions(limit: int = 60) -> list[str]:
    counts: dict[str, int] = {}
    for e in EVENTS:
        counts[e.user_id] = counts.get(e.user_id, 0) + 1
    return sorted(u for u, c in counts.items() if c <= limit)


@pytest.mark.parametrize("mode", SESSION_MODES)
def test_session_equals_the_core_ranking_of_the_same_events(client: TestClient, core: M.State, cfg: dict[str, Any],
                                                             mode: str) -> None:
    users = users_with_sessions()
    assert len(users) >= 20
    stored_n = cfg["model"]["stored_n"]
    for user in users[::3]:
        resp = post(client, session_of(user), mode=mode, n=stored_n)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        want = M.render(core, M.rank(core, [user], mode, n=stored_n))[0]
        assert [(it["item_id"], it["reason"]) for it in body["items"]] == [(i, r) for i, _, r in want], (user, mode)
        assert [it["score"] for it in body["items"]] == pytest.approx([s for _, s, _ in want], abs=1e-6)
        assert body["mode"] == mode and body["unknown"] == 0 and body["stored"] == len(want)
        assert body["used"] == list(dict.fromkeys(it["item_id"] for it in session_of(user)))
        assert body["complete"] == (len(want) == stored_n)


def test_the_default_mode_is_the_jobs_and_reasons_and_titles_are_the_cores(client: TestClient, core: M.State) -> None:
    user = users_with_sessions()[5]
    body = post(client, session_of(user), n=5).json()
    assert body["mode"] == "weighted" and body["count"] == 5
    want = M.render(core, M.rank(core, [user], "weighted", n=5))[0]
    assert [it["item_id"] for it in body["items"]] == [i for i, _, _ in want]
    titles = {r["item_id"]: r for r in CATALOG}
    for rank, it in enumerate(body["items"], 1):
        assert it["rank"] == rank
        if it["item_id"] in titles:
            assert (it["title"], it["genres"]) == (titles[it["item_id"]]["title"], titles[it["item_id"]]["genres"])
    seen = {i["item_id"] for i in session_of(user)}
    assert not seen & {it["item_id"] for it in body["items"]}  # the session's own items are not recommended


def test_filters_pick_from_the_ranked_list_like_get_recommendations(client: TestClient, cfg: dict[str, Any]) -> None:
    session = session_of(users_with_sessions()[2])
    full = [it["item_id"] for it in post(client, session, n=cfg["model"]["stored_n"]).json()["items"]]
    genres = {r["item_id"]: r["genres"] for r in CATALOG}
    genre = max({g for r in CATALOG for g in r["genres"]}, key=lambda g: sum(g in genres.get(i, ()) for i in full))
    body = post(client, session, n=4, genre=genre, exclude=full[:2]).json()
    want = [i for i in full if i not in full[:2] and genre in genres.get(i, ())][:4]
    assert [it["item_id"] for it in body["items"]] == want and body["requested"] == 4
    assert body["complete"] == (len(want) == 4)


def test_unknown_items_are_ignored_and_counted(client: TestClient, core: M.State) -> None:
    user = users_with_sessions()[7]
    session = session_of(user)
    mixed = [{"item_id": "no-such-item", "type": "view"}, *session, {"item_id": "nor-this", "type": "purchase"}]
    body = post(client, mixed, n=10).json()
    assert body["unknown"] == 2 and "no-such-item" not in body["used"]
    assert body["items"] == post(client, session, n=10).json()["items"]


def test_items_without_ts_are_now_in_list_order_and_types_default_to_view(client: TestClient) -> None:
    body = post(client, [{"item_id": "1"}, {"item_id": 2}, {"item_id": "3", "type": "click"}], n=5).json()
    assert body["used"] == ["1", "2", "3"] and body["count"] == 5
    assert not {"1", "2", "3"} & {it["item_id"] for it in body["items"]}
    reasons = {it["reason"].split(" ")[2] for it in body["items"] if it["reason"].startswith("because you ")}
    assert reasons and reasons <= {"viewed", "clicked"}, reasons


def test_a_sessions_events_are_in_list_order_at_equal_times() -> None:
    """The core orders events by ts, then event id: the ids parse_session gives keep the list's order past 10."""
    limits = Limits.from_config(load_config())
    events = parse_session({"items": [{"item_id": str(i)} for i in range(25)]}, limits, 60, 1_764_500_000_000)
    assert sorted(events, key=lambda e: (e.ts, e.event_id)) == events
    assert [e.item_id for e in events] == [str(i) for i in range(25)]


def test_an_empty_session_gets_the_trending_items(client: TestClient, core: M.State) -> None:
    body = post(client, [], n=5).json()
    want = published_trending(core, 5)
    assert [(it["item_id"], it["reason"]) for it in body["items"]] == [(i, "trending") for i, _ in want]
    assert body["used"] == [] and body["unknown"] == 0


def test_a_new_catalog_version_is_read(client: TestClient, core: M.State, rds: Any, prefix: str) -> None:
    item = next(r for r in CATALOG if M.neighbors(core, r["item_id"]))
    before = post(client, [{"item_id": item["item_id"]}], n=3, mode="itemcf").json()["items"]
    assert before[0]["reason"] == f"because you viewed {item['title']}"
    store_catalog([{**item, "title": "Renamed Movie"}], rds, prefix=prefix)  # bumps rec:catalog:version
    try:
        after = post(client, [{"item_id": item["item_id"]}], n=3, mode="itemcf").json()["items"]
        assert [it["item_id"] for it in after] == [it["item_id"] for it in before]
        assert after[0]["reason"] == "because you viewed Renamed Movie"
    finally:
        store_catalog([item], rds, prefix=prefix)


@pytest.mark.parametrize(("body", "named"), [
    (b"{not json", "the body is not JSON"),
    (b"[]", "must be a JSON object"),
    (b'{"items": {}}', "items {} must be a list"),
    (b'{"events": []}', "unknown field(s) 'events'"),
    (b'{"items": [{"item_id": "1", "type": "like"}]}', "items[0]: type 'like' is not one of"),
    (b'{"items": [{"item_id": "1", "type": "rate"}]}', "items[0]: rate event needs a value"),
    (b'{"items": [{"item_id": "1", "type": "rate", "value": 9}]}', "items[0]: rating 9 out of range"),
    (b'{"items": [{"item_id": "1"}, {"item_id": ""}]}', "items[1]: item_id must be non-empty"),
    (b'{"items": [{"item_id": "1", "ts": -5}]}', "items[0]: ts -5 outside"),
    (b'{"items": [{"item_id": "1", "when": 3}]}', "items[0]: unknown field(s) 'when'"),
    (b'{"items": [{"type": "view"}]}', "items[0]: missing field item_id"),
    (b'{"items": [' + b",".join(b'{"item_id": "1"}' for _ in range(61)) + b"]}", "items holds 61 events, more than 60"),
])
def test_bad_sessions_are_400s_naming_the_field_and_value(client: TestClient, body: bytes, named: str) -> None:
    resp = client.post(PATH, content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert named in resp.json()["error"], resp.json()


@pytest.mark.parametrize(("query", "named"), [
    ({"n": 0}, "query parameter n"), ({"mode": "usercf"}, "query parameter mode"),
    ({"genre": "Polka"}, "query parameter genre: 'Polka'"),
])
def test_bad_parameters_are_400s(client: TestClient, query: dict[str, Any], named: str) -> None:
    resp = post(client, [{"item_id": "1"}], **query)
    assert resp.status_code == 400 and named in resp.json()["error"], resp.text


def test_openapi_documents_the_session_endpoint(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    op = doc["paths"][PATH]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Session"}
    session = doc["components"]["schemas"]["Session"]
    assert session["properties"]["items"]["maxItems"] == 60
    assert set(session["properties"]["items"]["items"]["properties"]) == {"item_id", "type", "value", "ts"}
    assert {"200", "400", "413", "503"} <= set(op["responses"])
    assert {p["name"] for p in op["parameters"]} == {"n", "exclude", "genre", "mode"}


def test_without_scripting_the_pipeline_reads_the_same(cfg: dict[str, Any], client: TestClient) -> None:
    session = session_of(users_with_sessions()[4])
    with TestClient(create_app(cfg, kafka_timeout_s=5, use_script=False, session_max_items=60)) as plain:
        assert post(plain, session, n=20).json() == post(client, session, n=20).json()


def test_a_rewritten_neighbour_list_is_read_again(client: TestClient, core: M.State, rds: Any, prefix: str) -> None:
    item = next(r["item_id"] for r in CATALOG if len(M.neighbors(core, r["item_id"])) >= 3)
    first = [it["item_id"] for it in post(client, [{"item_id": item}], n=3, mode="itemcf").json()["items"]]
    assert first == [j for j, _ in M.neighbors(core, item)[:3]]
    write_similar(rds, prefix, item, [("77", 0.9), ("78", 0.8)])
    try:
        again = [it["item_id"] for it in post(client, [{"item_id": item}], n=2, mode="itemcf").json()["items"]]
        assert again == ["77", "78"]
    finally:
        write_similar(rds, prefix, item, M.neighbors(core, item))


def test_catalog_record_reads_the_lifecycle_fields() -> None:
    """The hash ``ingest.catalog`` writes, back to the record the core applies (withdrawn, expiry)."""
    from serving.sessions import catalog_record

    fields = {"title": "T", "year": "1999", "genres": "Drama|War", "available": "false", "expires_at": "900"}
    assert catalog_record("7", fields) == {"item_id": "7", "title": "T", "year": 1999, "genres": ["Drama", "War"],
                                           "available": False, "expires_at": 900}
    older = catalog_record("8", {"title": "U", "year": "", "genres": ""})  # a hash without them: available
    assert older["available"] is True and older["expires_at"] is None
