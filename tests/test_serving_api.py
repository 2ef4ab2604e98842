"""The serving API against the real Redis and Kafka (``bash deploy/services.sh up``).

The Flink job is not run here: fixtures write ``rec:recs:``, ``rec:users``, ``rec:similar:``,
``rec:trending`` and the catalog hashes in exactly the job's layout (``serving.testing`` builds them with
``udfs.serde``). Each test uses a random Redis prefix and a random events topic and removes them.
With ``REQUIRE_SERVICES=1`` missing services fail the tests instead of skipping them.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from config import PROJECT_ROOT, load_config
from ingest.catalog import store_catalog
from serving.api import MAX_BATCH, create_app
from serving.store import Filters, Store, make_client
from serving.testing import (
    ODD_IDS,
    delete_prefix,
    drop_topics,
    fake_catalog,
    free_port,
    now_ms,
    read_topic,
    require_kafka,
    require_redis,
    unique,
    write_recs,
    write_similar,
    write_trending,
)
from udfs.events import event_to_json, validate_event

pytestmark = pytest.mark.integration

CATALOG: list[dict[str, Any]] = [
    {"item_id": "1", "title": "Toy Story", "year": 1995, "genres": ["Animation", "Children's", "Comedy"]},
    {"item_id": "2", "title": "GoldenEye", "year": 1995, "genres": ["Action", "Adventure", "Thriller"]},
    {"item_id": "50", "title": "Star Wars", "year": 1977, "genres": ["Action", "Sci-Fi", "War"]},
    {"item_id": "172", "title": "Empire Strikes Back, The", "year": 1980, "genres": ["Action", "Sci-Fi"]},
    {"item_id": "181", "title": "Return of the Jedi", "year": 1983, "genres": ["Action", "Romance", "Sci-Fi"]},
    {"item_id": "242", "title": "Kolya", "year": 1996, "genres": ["Comedy"]},
    {"item_id": "267", "title": "unknown", "year": None, "genres": []},
]
RECS_196 = [("50", 4.21, "because of 172"), ("181", 3.9, "because of 172"), ("242", 2.5, "similar users"),
            ("999", 1.25, "trending"), ("1", 1.0, "because of 2")]


@pytest.fixture(scope="module")
def base_cfg() -> dict[str, Any]:
    return load_config()


@pytest.fixture(scope="module")
def kafka(base_cfg: dict[str, Any]) -> str:
    return require_kafka(base_cfg)


@pytest.fixture(scope="module")
def rds(base_cfg: dict[str, Any]) -> Iterator[Any]:
    client = require_redis(base_cfg)
    yield client
    client.close()


@pytest.fixture()
def prefix(rds: Any) -> Iterator[str]:
    p = unique("test-serving") + ":"
    yield p
    delete_prefix(rds, p)


@pytest.fixture()
def events_topic(kafka: str) -> Iterator[str]:
    """A random events topic name; the app creates it on the first POST; deleted afterwards."""
    topic = unique("test-serving-events")
    yield topic
    drop_topics(kafka, [topic])


@pytest.fixture()
def seeded(rds: Any, prefix: str) -> dict[str, Any]:
    """Catalog, two users, similar items of 50 and trending items, as the job and ingest.catalog write them."""
    store_catalog(CATALOG, rds, prefix=prefix)
    now = now_ms()
    write_recs(rds, prefix, "196", RECS_196, processed_at=now - 1500, event_id="ml-17", event_ts=881250949000,
               history_size=12)
    write_recs(rds, prefix, "7", [("2", 2.0, "because of 1")], processed_at=now - 60_000, event_id="ml-3")
    write_similar(rds, prefix, "50", [("172", 0.91), ("181", 0.87), ("888", 0.5)], updated_at=now - 2000)
    write_trending(rds, prefix, [("50", 120.0), ("1", 99.5), ("2", 80.0)])
    return {"now": now}


def make_cfg(prefix: str, topic: str, *extra: str) -> dict[str, Any]:
    return load_config(overrides=[f"redis.prefix={prefix}", f"kafka.topics.events={topic}", *extra])


@pytest.fixture()
def cfg(kafka: str, prefix: str, events_topic: str) -> dict[str, Any]:
    return make_cfg(prefix, events_topic)


@pytest.fixture()
def client(cfg: dict[str, Any]) -> Iterator[TestClient]:
    with TestClient(create_app(cfg, kafka_timeout_s=5)) as c:
        yield c


def event(i: int, user: str = "196", **over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"event_id": f"t-{i}", "user_id": user, "item_id": str(100 + i), "type": "rate",
                         "value": 4.0, "ts": 1764514800000 + i}
    e.update(over)
    return e


# --- recommendations -------------------------------------------------------------------------------------------

def test_recommendations_are_ranked_with_catalog_fields(client: TestClient, seeded: dict[str, Any]) -> None:
    before = now_ms()
    resp = client.get("/users/196/recommendations")
    after = now_ms()
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["user_id"] == "196" and body["cold_start"] is False
    assert body["count"] == 5 and [it["rank"] for it in body["items"]] == [1, 2, 3, 4, 5]
    assert [(it["item_id"], it["score"], it["reason"]) for it in body["items"]] == [
        (i, s, r) for i, s, r in RECS_196]
    first = body["items"][0]
    assert (first["title"], first["year"], first["genres"]) == ("Star Wars", 1977, ["Action", "Sci-Fi", "War"])
    unknown = body["items"][3]
    assert unknown["item_id"] == "999" and (unknown["title"], unknown["year"], unknown["genres"]) == (None, None, [])
    assert body["event_id"] == "ml-17" and body["event_ts"] == 881250949000 and body["history_size"] == 12
    assert body["trigger"] == "events" and body["mode"] == "itemcf"
    assert body["processed_at"] == seeded["now"] - 1500
    assert before - body["processed_at"] <= body["age_ms"] <= after - body["processed_at"]  # now - processed_at


def test_recommendations_n_truncates(client: TestClient, seeded: dict[str, Any]) -> None:
    body = client.get("/users/196/recommendations", params={"n": 2}).json()
    assert [it["item_id"] for it in body["items"]] == ["50", "181"] and body["count"] == 2
    assert client.get("/users/196/recommendations", params={"n": 100}).json()["count"] == 5


@pytest.mark.parametrize("n", ["0", "101", "-1", "ten", "1.5"])
def test_recommendations_bad_n_is_400_naming_the_parameter(client: TestClient, seeded: dict[str, Any],
                                                           n: str) -> None:
    resp = client.get("/users/196/recommendations", params={"n": n})
    assert resp.status_code == 400
    body = resp.json()
    assert "query parameter n" in body["error"] and repr(n) in body["error"], body
    assert body["details"][0]["loc"] == ["query", "n"]


def test_unknown_user_is_404_with_a_message(client: TestClient, seeded: dict[str, Any]) -> None:
    resp = client.get("/users/nobody-here/recommendations")
    assert resp.status_code == 404
    assert resp.json()["user_id"] == "nobody-here"
    assert "no recommendations for user 'nobody-here'" in resp.json()["error"]
    assert "cold_start=true" in resp.json()["error"]


def test_cold_start_returns_trending_items(client: TestClient, seeded: dict[str, Any]) -> None:
    body = client.get("/users/nobody-here/recommendations", params={"cold_start": "true", "n": 2}).json()
    assert body["cold_start"] is True and body["user_id"] == "nobody-here"
    assert [(it["item_id"], it["title"], it["reason"]) for it in body["items"]] == [
        ("50", "Star Wars", "trending"), ("1", "Toy Story", "trending")]
    assert body["age_ms"] is None and body["processed_at"] is None and body["trigger"] is None and body["mode"] is None
    # a known user is not affected by the flag
    assert client.get("/users/196/recommendations", params={"cold_start": "true"}).json()["cold_start"] is False


def test_cold_start_without_trending_is_404(client: TestClient, rds: Any, prefix: str, seeded: dict[str, Any]
                                            ) -> None:
    rds.delete(f"{prefix}trending")
    resp = client.get("/users/nobody-here/recommendations", params={"cold_start": "true"})
    assert resp.status_code == 404 and "no trending items yet" in resp.json()["error"]


# --- per-request filters over the deeper stored list -------------------------------------------------------------

DEEP_CATALOG = fake_catalog(80, seed=7)
DEEP_GENRES = {r["item_id"]: r["genres"] for r in DEEP_CATALOG}
DEEP_TITLES = {r["item_id"]: r["title"] for r in DEEP_CATALOG}
# a user's stored list as the job writes it (model.stored_n = 50 deep), best first; "x,y" and "gone" are not in the
# catalog (no hash: no genres), "x,y" holds a comma
DEEP_IDS = [str(i) for i in range(1, 49)] + ["x,y", "gone"]
DEEP = [(item, 100.0 - k, f"because of {k}") for k, item in enumerate(DEEP_IDS)]


def oracle(ids: list[str], n: int, exclude: tuple[str, ...] = (), genre: str | None = None) -> list[str]:
    """What the filters must return: the first n ids, in the stored order, not excluded and of the genre."""
    return [i for i in ids if i not in exclude and (genre is None or genre in DEEP_GENRES.get(i, []))][:n]


def genre_counts(ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in ids:
        for g in DEEP_GENRES.get(i, []):
            counts[g] = counts.get(g, 0) + 1
    return counts


@pytest.fixture()
def deep(rds: Any, prefix: str, seeded: dict[str, Any]) -> None:
    store_catalog(DEEP_CATALOG, rds, prefix=prefix)  # ids 1..80 (1, 2, 50 and 242 of CATALOG are replaced)
    write_recs(rds, prefix, "deep", DEEP)
    write_trending(rds, prefix, [(str(i), 200.0 - i) for i in range(41, 81)])


def get_recs(client: TestClient, user: str = "deep", **params: Any) -> dict[str, Any]:
    resp = client.get(f"/users/{user}/recommendations", params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    assert [it["rank"] for it in body["items"]] == list(range(1, body["count"] + 1))
    assert body["count"] == len(body["items"]) and body["requested"] == params.get("n", 10)
    assert body["complete"] == (body["count"] == body["requested"])
    return body


def ids_of(body: dict[str, Any]) -> list[str]:
    return [it["item_id"] for it in body["items"]]


def test_unfiltered_request_is_the_head_of_the_stored_list(client: TestClient, deep: None) -> None:
    body = get_recs(client)
    assert ids_of(body) == DEEP_IDS[:10] and body["stored"] == 50 and body["complete"] is True
    assert [(it["score"], it["reason"]) for it in body["items"][:2]] == [(100.0, "because of 0"),
                                                                         (99.0, "because of 1")]
    assert ids_of(get_recs(client, n=50)) == DEEP_IDS


def test_exclude_is_repeatable_and_the_deeper_list_fills_in(client: TestClient, deep: None) -> None:
    gone = ("2", "5", "9", "10", "not-stored")
    body = get_recs(client, n=10, exclude=list(gone))
    assert ids_of(body) == oracle(DEEP_IDS, 10, gone) == ["1", "3", "4", "6", "7", "8", "11", "12", "13", "14"]
    assert body["complete"] is True and body["stored"] == 50
    eleven = {"rank": 7, "item_id": "11", "score": 90.0, "reason": "because of 10", "title": DEEP_TITLES["11"],
              "genres": DEEP_GENRES["11"]}
    assert {k: v for k, v in body["items"][6].items() if k != "year"} == eleven


def test_an_id_with_a_comma_is_one_excluded_id(client: TestClient, deep: None) -> None:
    assert "x,y" in ids_of(get_recs(client, n=50, exclude=["x", "y"]))
    body = get_recs(client, n=50, exclude=["x,y"])
    assert ids_of(body) == oracle(DEEP_IDS, 50, ("x,y",)) and body["count"] == 49 and body["complete"] is False
    resp = client.get("/users/deep/recommendations?n=50&exclude=x%2Cy&exclude=gone")  # query-encoded by hand
    assert resp.json()["count"] == 48 and not {"x,y", "gone"} & set(ids_of(resp.json()))


def test_genre_returns_n_items_from_deeper_in_the_list(client: TestClient, deep: None) -> None:
    counts, head = genre_counts(DEEP_IDS), genre_counts(DEEP_IDS[:10])
    # a genre with at least 5 items in the stored list but fewer in its first 10 (the fixture's data has some)
    genre = min((g for g, c in counts.items() if c >= 5 and head.get(g, 0) < 5), key=lambda g: (head.get(g, 0), g))
    body = get_recs(client, n=5, genre=genre)
    assert ids_of(body) == oracle(DEEP_IDS, 5, genre=genre) and body["complete"] is True
    assert all(genre in it["genres"] for it in body["items"])
    assert max(DEEP_IDS.index(i) for i in ids_of(body)) >= 10  # reached past the head
    both = get_recs(client, n=5, genre=genre, exclude=ids_of(body)[:2])
    assert ids_of(both) == oracle(DEEP_IDS, 5, tuple(ids_of(body)[:2]), genre)


def test_fewer_than_n_after_filtering_says_so(client: TestClient, deep: None) -> None:
    counts = genre_counts(DEEP_IDS)
    genre = min(counts, key=lambda g: (counts[g], g))
    body = get_recs(client, n=counts[genre] + 3, genre=genre)
    assert body["count"] == counts[genre] and body["complete"] is False and body["stored"] == 50
    assert ids_of(body) == oracle(DEEP_IDS, 100, genre=genre)
    body = get_recs(client, n=80)  # deeper than the stored list
    assert body["count"] == 50 and body["complete"] is False
    everything = get_recs(client, n=10, exclude=DEEP_IDS)
    assert everything["count"] == 0 and everything["items"] == [] and everything["complete"] is False


def test_cold_start_trending_is_filtered_too(client: TestClient, deep: None) -> None:
    trending = [str(i) for i in range(41, 81)]
    counts = genre_counts(trending)
    genre = max(counts, key=lambda g: (counts[g], g))
    body = get_recs(client, "nobody-here", n=4, cold_start="true", genre=genre, exclude=trending[:3])
    assert body["cold_start"] is True and body["stored"] == 40 and body["complete"] is True
    assert ids_of(body) == oracle(trending, 4, tuple(trending[:3]), genre)
    none = get_recs(client, "nobody-here", n=4, cold_start="true", exclude=trending)
    assert none["count"] == 0 and none["complete"] is False and none["stored"] == 40


# --- known answers: a stored list deeper than model.top_n, filters filled from past the published head ---------

# 30 stored items m01..m30, best first; the head (m01..m10) is all Comedy, the Westerns are spread past it
SHELF_IDS = [f"m{k:02d}" for k in range(1, 31)]
SHELF_GENRES = {**{i: ["Drama"] for i in SHELF_IDS}, **{f"m{k:02d}": ["Comedy"] for k in range(1, 11)},
                "m04": ["Comedy", "Western"], "m13": ["Western"], "m15": ["Comedy", "Drama"], "m17": ["Western"],
                "m21": ["Drama", "Western"], "m28": ["Western"]}
SHELF = [(item, 30.0 - k, f"because of {k}") for k, item in enumerate(SHELF_IDS)]


@pytest.fixture()
def shelf(rds: Any, prefix: str) -> None:
    store_catalog([{"item_id": i, "title": f"Movie {i}", "year": 2000, "genres": SHELF_GENRES[i]} for i in SHELF_IDS],
                  rds, prefix=prefix)
    write_recs(rds, prefix, "shelf", SHELF)
    write_trending(rds, prefix, [(i, float(k)) for k, i in enumerate(reversed(SHELF_IDS))])  # m30 first


def test_the_stored_list_is_deeper_than_what_kafka_gets(client: TestClient, cfg: dict[str, Any], shelf: None) -> None:
    top_n = cfg["model"]["top_n"]
    assert top_n == 10 < len(SHELF) <= cfg["model"]["stored_n"]  # the published head is m01..m10
    body = get_recs(client, "shelf")
    assert ids_of(body) == SHELF_IDS[:top_n] and body["stored"] == 30


def test_a_genre_fills_n_from_past_the_published_head(client: TestClient, shelf: None) -> None:
    body = get_recs(client, "shelf", n=4, genre="Western")
    assert ids_of(body) == ["m04", "m13", "m17", "m21"]
    assert (body["count"], body["complete"], body["stored"]) == (4, True, 30)
    assert [(it["score"], it["reason"], it["genres"]) for it in body["items"]] == [
        (27.0, "because of 3", ["Comedy", "Western"]), (18.0, "because of 12", ["Western"]),
        (14.0, "because of 16", ["Western"]), (10.0, "because of 20", ["Drama", "Western"])]


def test_excluding_the_head_returns_the_next_n(client: TestClient, shelf: None) -> None:
    body = get_recs(client, "shelf", n=10, exclude=SHELF_IDS[:10])
    assert ids_of(body) == ["m11", "m12", "m13", "m14", "m15", "m16", "m17", "m18", "m19", "m20"]
    assert body["complete"] is True and body["items"][0]["title"] == "Movie m11"


def test_genre_and_exclude_together_say_when_fewer_are_available(client: TestClient, shelf: None) -> None:
    body = get_recs(client, "shelf", n=5, genre="Western", exclude=["m13"])
    assert ids_of(body) == ["m04", "m17", "m21", "m28"]
    assert (body["count"], body["requested"], body["complete"], body["stored"]) == (4, 5, False, 30)
    body = get_recs(client, "shelf", n=10, genre="Comedy", exclude=["m02", "m05"])
    assert ids_of(body) == ["m01", "m03", "m04", "m06", "m07", "m08", "m09", "m10", "m15"]
    assert (body["count"], body["complete"]) == (9, False)


def test_trending_takes_the_same_filters(client: TestClient, shelf: None) -> None:
    resp = client.get("/trending", params={"n": 3, "genre": "Western", "exclude": "m28"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [it["item_id"] for it in body["items"]] == ["m21", "m17", "m13"]
    assert [it["rank"] for it in body["items"]] == [1, 2, 3]
    assert (body["count"], body["requested"], body["stored"], body["complete"]) == (3, 3, 30, True)
    body = client.get("/trending", params={"n": 6, "genre": "Western"}).json()
    assert [it["item_id"] for it in body["items"]] == ["m28", "m21", "m17", "m13", "m04"] and not body["complete"]
    assert [it["item_id"] for it in client.get("/trending", params={"n": 2}).json()["items"]] == ["m30", "m29"]
    resp = client.get("/trending", params={"genre": "western"})
    assert resp.status_code == 400 and "did you mean 'Western'?" in resp.json()["error"]
    resp = client.get("/trending", params={"n": 101})
    assert resp.status_code == 400 and "query parameter n" in resp.json()["error"]


@pytest.mark.parametrize(("query", "where", "named"), [
    ("n=0", "query parameter n", "(got '0')"),
    ("n=101", "query parameter n", "(got '101')"),
    ("exclude=" + "&exclude=".join(str(i) for i in range(101)), "query parameter exclude",
     "at most 100 items after validation, not 101"),
    ("exclude=", "query parameter exclude.0", "''"),
    ("exclude=" + "a" * 257, "query parameter exclude.0", "'aaaa"),
    ("genre=", "query parameter genre", "''"),
    ("genre=" + "g" * 65, "query parameter genre", "'gggg"),
])
def test_filter_parameters_out_of_range_are_400_naming_them(client: TestClient, deep: None, query: str, where: str,
                                                           named: str) -> None:
    resp = client.get(f"/users/deep/recommendations?{query}")
    assert resp.status_code == 400, resp.text
    assert where in resp.json()["error"] and named in resp.json()["error"], resp.json()


def test_unknown_genre_is_400_naming_it(client: TestClient, deep: None) -> None:
    resp = client.get("/users/deep/recommendations", params={"genre": "Polka"})
    assert resp.status_code == 400
    body = resp.json()
    assert body["error"].startswith("invalid request: query parameter genre: 'Polka' is not a genre of any "
                                    "catalog item")
    assert "known: Action, Adventure" in body["error"]
    assert body["details"] == [{"type": "unknown_genre", "loc": ["query", "genre"], "msg": body["details"][0]["msg"],
                                "input": "Polka"}]
    resp = client.get("/users/deep/recommendations", params={"genre": "sci-fi"})
    assert resp.status_code == 400 and "did you mean 'Sci-Fi'?" in resp.json()["error"]
    assert get_recs(client, genre="Sci-Fi")["count"] > 0


def test_script_and_pipeline_filter_the_same(cfg: dict[str, Any], deep: None) -> None:
    """Random filters read through the Lua script (in one round trip) and through GET + pipeline agree with the
    oracle."""
    rng = random.Random(11)
    genres = sorted({g for gs in DEEP_GENRES.values() for g in gs})
    cases = [(rng.randint(1, 60), tuple(rng.sample(DEEP_IDS, rng.randint(0, 20))),
              rng.choice([None, *genres])) for _ in range(40)]

    async def read(use_script: bool) -> list[tuple[list[str], list[dict[str, str]], int]]:
        client = make_client(cfg["redis"])
        try:
            store = Store(client, cfg["redis"]["prefix"], use_script=use_script)
            if use_script:  # the script reads every hash the filters need: one round trip per request
                async def no_second_trip(ids: Any) -> list[dict[str, str]]:
                    raise AssertionError(f"hashes read after the script: {list(ids)}")

                store._catalog_many = no_second_trip  # type: ignore[method-assign,assignment]
            out = []
            for n, exclude, genre in cases:
                found = await store.recommendations("deep", n, Filters(frozenset(exclude), genre))
                assert found is not None
                out.append(([e["item_id"] for e in found.entries], found.catalog, found.stored))
            return out
        finally:
            await client.aclose()

    scripted, pipelined = asyncio.run(read(True)), asyncio.run(read(False))
    assert scripted == pipelined
    for (n, exclude, genre), (ids, catalog, stored) in zip(cases, scripted, strict=True):
        assert ids == oracle(DEEP_IDS, n, exclude, genre) and stored == 50
        assert [c.get("title") for c in catalog] == [DEEP_TITLES.get(i) for i in ids]


def test_users_lists_the_most_recent_first(client: TestClient, seeded: dict[str, Any]) -> None:
    body = client.get("/users", params={"limit": 10}).json()
    assert body["total"] == 2
    assert [u["user_id"] for u in body["users"]] == ["196", "7"]
    assert body["users"][0]["processed_at"] == seeded["now"] - 1500
    assert client.get("/users", params={"limit": 0}).status_code == 400


def test_trending(client: TestClient, seeded: dict[str, Any]) -> None:
    body = client.get("/trending", params={"n": 3}).json()
    assert [(it["item_id"], it["score"], it["title"]) for it in body["items"]] == [
        ("50", 120.0, "Star Wars"), ("1", 99.5, "Toy Story"), ("2", 80.0, "GoldenEye")]


# --- items -----------------------------------------------------------------------------------------------------

def test_item_from_the_catalog_hash(client: TestClient, seeded: dict[str, Any]) -> None:
    assert client.get("/items/1").json() == {"item_id": "1", "title": "Toy Story", "year": 1995,
                                             "genres": ["Animation", "Children's", "Comedy"]}
    assert client.get("/items/267").json() == {"item_id": "267", "title": "unknown", "year": None, "genres": []}


def test_unknown_item_is_404(client: TestClient, prefix: str, seeded: dict[str, Any]) -> None:
    resp = client.get("/items/4242")
    assert resp.status_code == 404
    assert resp.json() == {"error": f"item '4242' is not in the catalog ({prefix}item:4242)",
                           "item_id": "4242"}


def test_similar_items_with_titles(client: TestClient, seeded: dict[str, Any]) -> None:
    body = client.get("/items/50/similar", params={"n": 10}).json()
    assert body["item_id"] == "50" and body["title"] == "Star Wars" and body["count"] == 3
    assert [(n["item_id"], n["score"], n["title"]) for n in body["neighbors"]] == [
        ("172", 0.91, "Empire Strikes Back, The"), ("181", 0.87, "Return of the Jedi"), ("888", 0.5, None)]
    assert body["updated_at"] == seeded["now"] - 2000 and body["age_ms"] >= 2000
    assert client.get("/items/50/similar", params={"n": 1}).json()["count"] == 1


def test_similar_404s_tell_unknown_from_not_computed(client: TestClient, seeded: dict[str, Any]) -> None:
    unknown = client.get("/items/4242/similar")
    assert unknown.status_code == 404 and "not in the catalog" in unknown.json()["error"]
    pending = client.get("/items/1/similar")
    assert pending.status_code == 404 and "no similar items computed for item '1' yet" in pending.json()["error"]


def test_search_by_title_prefix_first(client: TestClient, seeded: dict[str, Any]) -> None:
    body = client.get("/items", params={"q": "star"}).json()
    assert body["total"] == 1 and body["items"][0]["title"] == "Star Wars"
    body = client.get("/items", params={"q": "E"}).json()  # case-insensitive substring, starts-with first
    titles = [it["title"] for it in body["items"]]
    assert titles[0] == "Empire Strikes Back, The" and "GoldenEye" in titles
    assert client.get("/items", params={"q": "242"}).json()["items"][0]["title"] == "Kolya"  # an exact id
    assert client.get("/items", params={"q": "zzz"}).json() == {"query": "zzz", "total": 0, "items": []}
    assert client.get("/items", params={"q": ""}).status_code == 400


def test_lua_script_and_pipeline_read_the_same(cfg: dict[str, Any], seeded: dict[str, Any]) -> None:

    async def both() -> list[Any]:
        client = make_client(cfg["redis"])
        try:
            out = []
            for use_script in (True, False):
                store = Store(client, cfg["redis"]["prefix"], use_script=use_script)
                found = await store.recommendations("196", 4)
                sim = await store.similar("50", 10)
                trend = await store.trending(2)
                assert found is not None and sim is not None and trend is not None
                out.append((found.entries, found.catalog, sim.catalog, trend.entries, trend.catalog,
                            await store.recommendations("nobody", 4)))
            return out
        finally:
            await client.aclose()

    scripted, pipelined = asyncio.run(both())
    assert scripted == pipelined
    assert scripted[1][0]["title"] == "Star Wars" and scripted[1][3] == {}  # item 999 has no hash
    assert scripted[5] is None


def test_script_and_pipeline_agree_on_odd_lists(cfg: dict[str, Any], rds: Any, prefix: str,
                                                 seeded: dict[str, Any]) -> None:
    """Entries that are not objects, ids that are floats, ints or booleans, a title that is not UTF-8."""

    items = [{"item_id": "50", "score": 1}, "junk", {"item_id": 2.0}, {"item_id": 242, "score": 0.5},
             {"item_id": True}, [1, 2], {"no_id": 1}, {"item_id": "bad-utf8"}, {"item_id": "1"}, {"item_id": "50"}]
    rds.set(f"{prefix}recs:odd", json.dumps({"user_id": "odd", "items": items, "processed_at": now_ms()}))
    rds.hset(f"{prefix}item:bad-utf8", mapping={"title": b"Caf\xe9", "year": "2001", "genres": "Drama"})

    async def read(use_script: bool) -> list[tuple[str, str | None]]:
        client = make_client(cfg["redis"])
        try:
            found = await Store(client, prefix, use_script=use_script).recommendations("odd", 10)
            assert found is not None
            return [(e["item_id"], c.get("title")) for e, c in zip(found.entries, found.catalog, strict=True)]
        finally:
            await client.aclose()

    expected = [("50", "Star Wars"), ("242", "Kolya"), ("bad-utf8", "Caf\ufffd"), ("1", "Toy Story"),
                ("50", "Star Wars")]
    assert asyncio.run(read(True)) == expected
    assert asyncio.run(read(False)) == expected


def test_corrupt_document_is_a_clear_500(client: TestClient, rds: Any, prefix: str, seeded: dict[str, Any]) -> None:
    rds.set(f"{prefix}recs:broken", "{not json")
    resp = client.get("/users/broken/recommendations")
    assert resp.status_code == 500 and "does not hold JSON" in resp.json()["error"]
    rds.hset(f"{prefix}recs:hash", mapping={"a": "1"})  # a key of the wrong type
    resp = client.get("/users/hash/recommendations")
    assert resp.status_code == 500 and "WRONGTYPE" in resp.json()["error"]


# --- ids with reserved characters ------------------------------------------------------------------------------

def seg(value: str) -> str:
    """An id as one path segment, the rule of docs/serving.md (what encodeURIComponent does)."""
    return quote(value, safe="")


def after(value: str) -> str:
    return ODD_IDS[(ODD_IDS.index(value) + 1) % len(ODD_IDS)]


@pytest.fixture()
def odd(rds: Any, prefix: str) -> None:
    """Every id of ODD_IDS as an item, a user and an item with neighbours; plus the plain ids x and u."""
    store_catalog([{"item_id": i, "title": f"Title of {i}", "year": 2001, "genres": ["Drama"]}
                   for i in (*ODD_IDS, "x", "u")], rds, prefix=prefix)
    for k, value in enumerate(ODD_IDS):
        write_recs(rds, prefix, value, [(after(value), 2.5, f"because of {value}")], event_id=f"ev-{k}")
        write_similar(rds, prefix, value, [(after(value), 0.5)])
    write_recs(rds, prefix, "u", [("x", 1.0, "plain")])
    write_similar(rds, prefix, "x", [("u", 0.25)])


@pytest.mark.parametrize("value", ODD_IDS)
def test_ids_with_reserved_characters_round_trip_every_route(client: TestClient, odd: None, value: str) -> None:
    nxt = after(value)
    item = client.get(f"/items/{seg(value)}")
    assert item.status_code == 200, item.text
    assert item.json() == {"item_id": value, "title": f"Title of {value}", "year": 2001, "genres": ["Drama"]}

    similar = client.get(f"/items/{seg(value)}/similar")
    assert similar.status_code == 200, similar.text
    assert similar.json()["item_id"] == value and similar.json()["title"] == f"Title of {value}"
    assert [(n["item_id"], n["title"]) for n in similar.json()["neighbors"]] == [(nxt, f"Title of {nxt}")]

    recs = client.get(f"/users/{seg(value)}/recommendations", params={"n": 5})
    assert recs.status_code == 200, recs.text
    assert recs.json()["user_id"] == value and recs.json()["cold_start"] is False
    assert [(i["item_id"], i["title"], i["reason"]) for i in recs.json()["items"]] == [
        (nxt, f"Title of {nxt}", f"because of {value}")]

    found = client.get("/items", params={"q": value})
    assert found.status_code == 200 and value in [i["item_id"] for i in found.json()["items"]]

    # the reserved characters JavaScript's encodeURIComponent leaves as they are, and lower-case escapes
    loose = quote(value, safe="!'()*~").replace("%2F", "%2f")
    assert client.get(f"/items/{loose}").json()["item_id"] == value


def test_users_lists_ids_with_reserved_characters(client: TestClient, odd: None) -> None:
    body = client.get("/users", params={"limit": 1000}).json()
    assert sorted(u["user_id"] for u in body["users"]) == sorted([*ODD_IDS, "u"])


def test_an_encoded_slash_or_dot_never_reaches_another_route(client: TestClient, prefix: str, odd: None) -> None:
    # "x/similar" is an item; /items/x/similar are the neighbours of item x
    assert client.get("/items/x%2Fsimilar").json()["title"] == "Title of x/similar"
    assert client.get("/items/x/similar").json()["neighbors"][0]["item_id"] == "u"
    assert client.get("/items/x%2Fsimilar/similar").json()["item_id"] == "x/similar"
    assert client.get("/users/u%2Frecommendations/recommendations").json()["user_id"] == "u/recommendations"
    assert client.get("/users/u/recommendations").json()["items"][0]["item_id"] == "x"
    # a path traversal is an id like any other: looked up, never resolved
    assert client.get("/items/..%2F..%2Fetc%2Fpasswd").json()["title"] == "Title of ../../etc/passwd"
    traversal = client.get("/items/..%2F..%2Fusers")
    assert traversal.status_code == 404 and traversal.json()["item_id"] == "../../users"
    assert "item '../../users' is not in the catalog" in traversal.json()["error"]
    dots = client.get("/items/%2E%2E")  # the id "..", which udfs.events refuses: an unknown item
    assert dots.status_code == 404 and dots.json()["item_id"] == ".."
    assert client.get("/users/%2E%2E%2Fitems/recommendations").json()["user_id"] == "../items"
    # each level of escaping is decoded once: the ids "%252F", "%2F" (seeded) and "/" (not seeded)
    assert client.get("/items/%25252F").json()["title"] == "Title of %252F"
    assert client.get("/items/%252F").json()["title"] == "Title of %2F"
    assert client.get("/items/%2F").json() == {"error": f"item '/' is not in the catalog ({prefix}item:/)",
                                                "item_id": "/"}
    # a slash that is not escaped separates segments, as always
    unescaped = client.get("/items/a/b")
    assert unescaped.status_code == 404
    assert unescaped.json() == {"error": "no such endpoint: GET /items/a/b (see /docs)"}


def test_metrics_count_escaped_ids_under_the_route_template(client: TestClient, odd: None) -> None:
    client.get("/items/a%2Fb")
    client.get("/items/a%2Fb/similar")
    client.get("/users/a%2Fb/recommendations")
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    routes = {s.labels["route"] for s in families["flinkrec_api_requests"].samples if s.name.endswith("_total")}
    assert {"/items/{item_id}", "/items/{item_id}/similar", "/users/{user_id}/recommendations"} <= routes
    assert not [r for r in routes if "%" in r or ":" in r]


def test_events_with_reserved_characters_in_ids_are_produced_exactly(client: TestClient, kafka: str,
                                                                     events_topic: str) -> None:
    batch = [event(k, user=value, item_id=value, event_id=value) for k, value in enumerate(ODD_IDS)]
    resp = client.post("/events", json=batch)
    assert resp.status_code == 202, resp.text
    assert resp.json()["accepted"] == list(ODD_IDS)
    records = read_topic(kafka, events_topic)
    got = {json.loads(r.value)["event_id"]: (r.key, json.loads(r.value)) for r in records}
    assert sorted(got) == sorted(ODD_IDS)
    for value, (key, doc) in got.items():
        assert key == value.encode("utf-8") and doc["user_id"] == doc["item_id"] == value


@pytest.mark.parametrize(("field", "value", "words"), [
    ("user_id", "a\x00b", "user_id 'a\\x00b' has the control character U+0000 at index 1"),
    ("item_id", "a\x85", "item_id 'a\\x85' has the control character U+0085 at index 1"),
    ("event_id", "a\u2028", "event_id 'a\\u2028' has the line separator U+2028 at index 1"),
    ("item_id", "..", "is a URL dot segment"),
])
def test_events_with_control_characters_in_ids_are_refused(client: TestClient, kafka: str, events_topic: str,
                                                           field: str, value: str, words: str) -> None:
    resp = client.post("/events", json=[event(0), event(1, **{field: value})])
    assert resp.status_code == 422, resp.text
    assert resp.json()["accepted"] == ["t-0"]
    [rejected] = resp.json()["rejected"]
    assert (rejected["index"], rejected["reason"]) == (1, "bad_id") and words in rejected["error"]
    assert [json.loads(r.value)["event_id"] for r in read_topic(kafka, events_topic)] == ["t-0"]


# --- events ----------------------------------------------------------------------------------------------------

def test_post_one_event_is_produced_keyed_by_user(client: TestClient, kafka: str, events_topic: str) -> None:
    e = event(1, user="196", value=3.5)
    resp = client.post("/events", json=e)
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"accepted": ["t-1"], "rejected": []}
    records = read_topic(kafka, events_topic)
    assert [(r.key, r.value) for r in records] == [(b"196", event_to_json(validate_event(e)).encode())]


def test_post_a_batch_of_valid_events(client: TestClient, kafka: str, events_topic: str) -> None:
    batch = [event(i, user=f"u{i % 3}", type="view", value=None) for i in range(6)]
    for e in batch:
        del e["value"]
    resp = client.post("/events", json=batch)
    assert resp.status_code == 202 and resp.json()["accepted"] == [f"t-{i}" for i in range(6)]
    records = read_topic(kafka, events_topic)
    assert sorted(json.loads(r.value)["event_id"] for r in records) == [f"t-{i}" for i in range(6)]
    assert all(r.key.decode() == json.loads(r.value)["user_id"] for r in records)
    assert {json.loads(r.value)["value"] for r in records} == {1.0}  # the view weight of the config


def test_post_negative_feedback(client: TestClient, kafka: str, events_topic: str) -> None:
    # what the live page's "not interested" sends (a hide without a value), a dislike, and a type that is neither
    batch = [event(0, type="hide"), event(1, type="dislike"), event(2, type="like")]
    for e in batch:
        del e["value"]
    resp = client.post("/events", json=batch)
    assert resp.status_code == 422 and resp.json()["accepted"] == ["t-0", "t-1"]
    [rejected] = resp.json()["rejected"]
    assert (rejected["index"], rejected["reason"]) == (2, "unknown_type")
    assert "type 'like' is not one of rate, view, click, cart, purchase, dislike, hide" in rejected["error"]
    docs = sorted((json.loads(r.value) for r in read_topic(kafka, events_topic)), key=lambda d: d["event_id"])
    assert [(d["type"], d["value"]) for d in docs] == [("hide", 1.0), ("dislike", 1.0)]


def test_mixed_batch_is_422_and_the_valid_events_still_arrive(client: TestClient, kafka: str,
                                                              events_topic: str) -> None:
    batch: list[Any] = [
        event(0),
        event(1, value=9.5),                       # rating out of range
        event(2, user="42"),
        {"event_id": "t-3", "user_id": "196"},     # missing fields
        "not an object",
        event(5, type="like"),                     # unknown type
        event(6, ts="yesterday"),                  # wrong type
        event(7, extra=1),                         # unknown field
        event(8, user_id=17),                      # an integer id is accepted as "17"
    ]
    resp = client.post("/events", json=batch)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["accepted"] == ["t-0", "t-2", "t-8"]
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
        (1, "rating_out_of_range"), (3, "missing_field"), (4, "not_an_object"), (5, "unknown_type"),
        (6, "wrong_type"), (7, "unknown_field")]
    assert body["rejected"][0]["event_id"] == "t-1" and "rating 9.5 out of range" in body["rejected"][0]["error"]
    assert "item_id" in body["rejected"][1]["error"] and "ts" in body["rejected"][1]["error"]
    assert "'like'" in body["rejected"][3]["error"] and "'extra'" in body["rejected"][5]["error"]
    records = read_topic(kafka, events_topic)
    got = {json.loads(r.value)["event_id"]: (r.key, json.loads(r.value)) for r in records}
    assert sorted(got) == ["t-0", "t-2", "t-8"]
    assert got["t-8"][0] == b"17" and got["t-8"][1]["user_id"] == "17"
    assert got["t-2"][0] == b"42"


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b'{"event_id": "x", ', 400, "request body is not JSON"),
    (b"", 400, "request body is not JSON"),
    (b"[]", 400, "empty list"),
    (b'{"event_id": "x", "user_id": "1", "item_id": "2", "type": "rate", "value": NaN, "ts": 1}', 400, "NaN"),
    (b"\xff\xfe\xfa", 400, "not JSON"),
    (b"42", 422, "must be a JSON object"),
])
def test_post_bad_bodies(client: TestClient, events_topic: str, body: bytes, status: int, needle: str) -> None:
    resp = client.post("/events", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    text = resp.json().get("error") or resp.json()["rejected"][0]["error"]
    assert needle in text


def test_post_too_many_events_is_413(client: TestClient) -> None:
    resp = client.post("/events", json=[event(i) for i in range(MAX_BATCH + 1)])
    assert resp.status_code == 413 and f"more than {MAX_BATCH}" in resp.json()["error"]
    resp = client.post("/events", content=b" " * (3 * 1024 * 1024), headers={"content-type": "application/json"})
    assert resp.status_code == 413


def test_post_events_with_kafka_down_is_503(kafka: str, prefix: str, events_topic: str) -> None:
    cfg = make_cfg(prefix, events_topic, f"kafka.bootstrap=127.0.0.1:{free_port()}")
    with TestClient(create_app(cfg, kafka_timeout_s=1)) as c:
        resp = c.post("/events", json=[event(1), event(2, value=99)])
    assert resp.status_code == 503
    body = resp.json()
    assert "not available" in body["error"] and body["accepted"] == [] and body["failed"] == ["t-1"]
    assert [r["reason"] for r in body["rejected"]] == ["rating_out_of_range"]


# --- operations ------------------------------------------------------------------------------------------------

def test_healthz_ok(client: TestClient, seeded: dict[str, Any], events_topic: str) -> None:
    before = now_ms()
    resp = client.get("/healthz")
    after = now_ms()
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ok"
    checks = body["checks"]
    assert checks["redis"]["ok"] and checks["kafka"]["ok"] and checks["job"]["ok"]
    assert checks["job"]["newest_user"] == "196" and checks["job"]["users"] == 2
    processed_at = seeded["now"] - 1500
    assert checks["job"]["newest_processed_at"] == processed_at
    assert before - processed_at <= checks["job"]["age_ms"] <= after - processed_at
    assert checks["kafka"]["events_topic"] == {"name": events_topic, "exists": False}


def test_healthz_stale_job_is_503(cfg: dict[str, Any], rds: Any, prefix: str) -> None:
    write_recs(rds, prefix, "old", [("1", 1.0, "x")], processed_at=now_ms() - 3_600_000)
    with TestClient(create_app(cfg, max_age_s=600)) as c:
        resp = c.get("/healthz")
    assert resp.status_code == 503
    job = resp.json()["checks"]["job"]
    assert job["ok"] is False and "is the Flink job running?" in job["error"] and job["age_ms"] >= 3_600_000
    with TestClient(create_app(cfg, max_age_s=0)) as c:  # freshness rule off
        assert c.get("/healthz").status_code == 200


def test_healthz_without_any_result_is_503(client: TestClient, prefix: str) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["job"] == {"max_age_s": 600.0, "ok": False, "users": 0,
                                            "error": f"no recommendations written yet ({prefix}users is empty)"}


def test_healthz_with_redis_and_kafka_down_is_503(prefix: str, events_topic: str) -> None:
    cfg = make_cfg(prefix, events_topic, f"redis.port={free_port()}", f"kafka.bootstrap=127.0.0.1:{free_port()}")
    with TestClient(create_app(cfg, kafka_timeout_s=1)) as c:
        resp = c.get("/healthz")
        recs = c.get("/users/196/recommendations")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"]["ok"] is False and "Connect" in body["checks"]["redis"]["error"]
    assert body["checks"]["kafka"]["ok"] is False and body["checks"]["kafka"]["error"]
    assert recs.status_code == 503 and "Redis at 127.0.0.1:" in recs.json()["error"]


def test_metrics_in_prometheus_text_format(client: TestClient, seeded: dict[str, Any]) -> None:
    processed_at = seeded["now"] - 1500
    before = now_ms()
    for _ in range(3):
        client.get("/users/196/recommendations")
    client.get("/users/nobody/recommendations")
    client.get("/no/such/path")
    before_scrape = now_ms()
    resp = client.get("/metrics")
    after = now_ms()
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    route = "/users/{user_id}/recommendations"
    counts = {(s.labels["route"], s.labels["status"]): s.value
              for s in families["flinkrec_api_requests"].samples if s.name.endswith("_total")}
    assert counts[(route, "200")] == 3 and counts[(route, "404")] == 1 and counts[("<unmatched>", "404")] == 1
    latency = families["flinkrec_api_request_duration_seconds"]
    assert latency.type == "histogram"
    buckets = [s for s in latency.samples if s.name.endswith("_bucket") and s.labels["route"] == route]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 4
    age = {s.name: s.value for s in families["flinkrec_api_recommendation_age_seconds"].samples}
    assert age["flinkrec_api_recommendation_age_seconds_count"] == 3
    age_sum_ms = round(age["flinkrec_api_recommendation_age_seconds_sum"] * 1000)
    assert 3 * (before - processed_at) <= age_sum_ms <= 3 * (after - processed_at)
    job_age_ms = round(families["flinkrec_job_last_update_age_seconds"].samples[0].value * 1000)
    assert before_scrape - processed_at <= job_age_ms <= after - processed_at
    assert families["flinkrec_job_users"].samples[0].value == 2
    assert {s.labels["outcome"] for s in families["flinkrec_api_events"].samples} == {"accepted", "rejected", "failed"}


def test_metrics_without_redis_still_answer(prefix: str, events_topic: str) -> None:
    cfg = make_cfg(prefix, events_topic, f"redis.port={free_port()}")
    with TestClient(create_app(cfg)) as c:
        resp = c.get("/metrics")
    assert resp.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    assert math.isnan(families["flinkrec_job_last_update_age_seconds"].samples[0].value)


def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    resp = client.get("/nope")
    assert resp.status_code == 404 and resp.json() == {"error": "no such endpoint: GET /nope (see /docs)"}


def test_page_and_static_files_are_served_without_external_urls(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "flinkrec" in page.text and "/static/app.js" in page.text
    for name in ("app.js", "style.css"):
        resp = client.get(f"/static/{name}")
        assert resp.status_code == 200 and len(resp.text) > 1000
        assert "http://" not in resp.text and "https://" not in resp.text, f"{name} refers to an external URL"
    assert "http://" not in page.text and "https://" not in page.text


def test_openapi_and_offline_docs(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {"/users/{user_id}/recommendations", "/items/{item_id}", "/items/{item_id}/similar", "/events",
            "/healthz", "/metrics"} <= set(doc["paths"])
    assert doc["components"]["schemas"]["Event"]["required"] == ["event_id", "user_id", "item_id", "type", "ts"]
    html = client.get("/docs")
    assert html.status_code == 200
    assert "https://" not in html.text and "http://" not in html.text
    assert "/docs-assets/swagger-ui-bundle.js" in html.text
    bundle = client.get("/docs-assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200


def test_a_synchronous_redis_client_is_refused(cfg: dict[str, Any]) -> None:
    import redis

    with pytest.raises(TypeError, match=r"redis\.asyncio\.Redis"):
        create_app(cfg, redis_client=redis.Redis())


# --- the command line ------------------------------------------------------------------------------------------

def test_cli_help_has_examples() -> None:
    out = subprocess.run([sys.executable, "-m", "serving", "--help"], capture_output=True, text=True, timeout=60,
                         cwd=PROJECT_ROOT, check=True).stdout
    assert "--host" in out and "--port" in out and "--config" in out and "--set" in out and "examples:" in out


def test_cli_serves_the_api(seeded: dict[str, Any], rds: Any, prefix: str, events_topic: str) -> None:
    import requests

    odd = "../a/b c?#%\u00e9"  # through uvicorn's own path decoding
    store_catalog([{"item_id": odd, "title": "Odd", "year": None, "genres": []}], rds, prefix=prefix)
    write_similar(rds, prefix, odd, [("50", 0.5)])
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "serving", "--port", str(port), "--log-level", "warning",
                             "--set", f"redis.prefix={prefix}", "--set", f"kafka.topics.events={events_topic}"],
                            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                resp = requests.get(f"http://127.0.0.1:{port}/users/196/recommendations?n=1", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, f"python -m serving exited: {proc.stdout.read() if proc.stdout else ''}"
                assert time.monotonic() < deadline, "python -m serving did not answer within 30 s"
                time.sleep(0.2)
        assert resp.status_code == 200 and resp.json()["items"][0]["title"] == "Star Wars"
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/items/{seg(odd)}", timeout=10).json()["title"] == "Odd"
        similar = requests.get(f"{base}/items/{seg(odd)}/similar", timeout=10).json()
        assert similar["item_id"] == odd and similar["neighbors"][0]["title"] == "Star Wars"
        traversal = requests.get(f"{base}/items/..%2F..%2Fetc%2Fpasswd", timeout=10)
        assert traversal.status_code == 404 and traversal.json()["item_id"] == "../../etc/passwd"
        assert requests.get(f"{base}/items/%25252F", timeout=10).json()["item_id"] == "%252F"
    finally:
        proc.terminate()
        output = proc.communicate(timeout=15)[0]
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal so the exit status tells why it stopped
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output


def test_cli_bad_config_override_exits_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "serving", "--set", "redis.nope=1"], capture_output=True, text=True,
                          timeout=60, cwd=PROJECT_ROOT)
    assert proc.returncode == 2 and "unknown config key 'redis.nope'" in proc.stderr
