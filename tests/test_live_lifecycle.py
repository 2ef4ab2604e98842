"""A running job deletes an item on a tombstone of the catalog topic: through the real Kafka and Redis, the item
leaves every stored list that held it (a new ranking, trigger ``catalog``, without the user acting) and every
neighbour list, its own ``similar`` list is deleted, and it all comes back when the item is published again.

The job runs unbounded in its own process against the real Kafka and Redis, on topics and a Redis prefix of its own
(as ``tests/test_live_catalog.py``), in the default mode.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import REDIS_PORT
from job_runs import live_job
from test_live_catalog import wait_for

from ingest.catalog import delete_catalog, publish_catalog, store_catalog
from ingest.producer import produce_events
from udfs.events import Event

pytestmark = [pytest.mark.integration, pytest.mark.flink]

X = {"item_id": "x", "title": "The Item", "year": 1990, "genres": ["Comedy"]}


@pytest.fixture()
def job(kafka_bootstrap: str, redis_conn: Any) -> Iterator[dict[str, Any]]:
    with live_job("life", kafka_bootstrap, redis_conn, REDIS_PORT,
                  ["model.hybrid.half_life_s=null", "model.hybrid.train_combiner=false"]) as j:
        yield j


def test_a_tombstone_deletes_the_item_from_every_list_until_it_is_published_again(
        job: dict[str, Any], kafka_bootstrap: str, redis_conn: Any) -> None:
    cfg, proc, log, prefix = job["cfg"], job["proc"], job["log"], job["prefix"]
    events_topic, items_topic = cfg["kafka"]["topics"]["events"], cfg["kafka"]["topics"]["items"]
    publish_catalog([X], kafka_bootstrap, items_topic)
    store_catalog([X], redis_conn, prefix)
    t0 = 1_700_000_000_000
    # u2 and u3 rated x with c1 and c2; u1 rated c1: x is u1's best item-CF candidate and c1's neighbour
    first = [Event("e1", "u2", "c1", "rate", 5.0, t0), Event("e2", "u2", "x", "rate", 5.0, t0 + 1),
             Event("e3", "u3", "c2", "rate", 4.0, t0 + 2), Event("e4", "u3", "x", "rate", 4.0, t0 + 3),
             Event("e5", "u1", "c1", "rate", 5.0, t0 + 1000)]
    produce_events(first, kafka_bootstrap, events_topic, progress=False)

    def get(key: str) -> Any:
        raw = redis_conn.get(f"{prefix}{key}")
        return json.loads(raw) if raw else None

    def recs() -> Any:
        return get("recs:u1")

    def items(doc: Any, field: str) -> list[str]:
        return [it["item_id"] for it in doc[field]] if doc else []

    msg = wait_for("x in u1's list and c1's neighbours",
                   lambda: (m := recs()) and "x" in items(m, "items") and "x" in items(get("similar:c1"), "neighbors")
                   and get("similar:x") and m, 120, proc, log, recs)
    assert msg["event_id"] == "e5" and msg["items"][0]["item_id"] == "x"

    delete_catalog(["x"], kafka_bootstrap, items_topic, redis_conn, prefix)
    assert redis_conn.hgetall(f"{prefix}item:x") == {} and not redis_conn.sismember(f"{prefix}items", "x")
    time.sleep(1.0)  # the tombstone and the next event travel on different topics
    # another user acts (u1 does not): the model's next window ranks u1 again, without x
    produce_events([Event("e6", "u4", "c2", "view", 1.0, t0 + 2000)], kafka_bootstrap, events_topic, progress=False)
    msg = wait_for("u1's list ranked again without x",
                   lambda: (m := recs()) and m["trigger"] == "catalog" and m, 60, proc, log, recs)
    assert "x" not in items(msg, "items") and msg["event_id"] == "e5"
    assert len(msg["items"]) == min(cfg["model"]["stored_n"], len(msg["items"])) and msg["items"]
    wait_for("c1's neighbours without x and x's list deleted",
             lambda: "x" not in items(get("similar:c1"), "neighbors") and get("similar:x") is None, 30, proc, log,
             lambda: (get("similar:c1"), get("similar:x")))

    publish_catalog([X], kafka_bootstrap, items_topic)  # back
    time.sleep(1.0)
    produce_events([Event("e7", "u4", "c1", "view", 1.0, t0 + 3000)], kafka_bootstrap, events_topic, progress=False)
    msg = wait_for("x back in u1's list", lambda: (m := recs()) and "x" in items(m, "items") and m, 60, proc, log,
                   recs)
    assert msg["trigger"] == "catalog" and msg["event_id"] == "e5"  # u1 lost it: ranked again without acting
    wait_for("x back in c1's neighbours and its own list",
             lambda: "x" in items(get("similar:c1"), "neighbors") and get("similar:x"), 30, proc, log,
             lambda: (get("similar:c1"), get("similar:x")))
