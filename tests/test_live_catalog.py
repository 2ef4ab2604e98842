"""A running job joins catalog changes in: a new item published to the ``items`` topic mid-stream becomes
recommendable (through content similarity, before anyone has engaged it) within seconds, with no restart.

The job runs unbounded in its own process against the real Kafka and Redis, on topics and a Redis
prefix of its own, serving the content-based list (``model.hybrid.mode=content``).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import REDIS_PORT
from job_runs import live_job

from ingest.catalog import publish_catalog
from ingest.producer import produce_events
from udfs.events import Event

pytestmark = [pytest.mark.integration, pytest.mark.flink]

# u1 likes Westerns; everything else in the catalog is Comedy or Drama, and the Westerns are seen by u1
CATALOG = [{"item_id": f"c{k}", "title": f"Comedy {k}", "year": 1990, "genres": ["Comedy"]} for k in range(8)] + [
    {"item_id": f"d{k}", "title": f"Drama {k}", "year": 1990, "genres": ["Drama"]} for k in range(8)] + [
    {"item_id": "w1", "title": "Red River", "year": 1948, "genres": ["Western"]},
    {"item_id": "w2", "title": "Rio Bravo", "year": 1959, "genres": ["Western"]}]
NEW_ITEM = {"item_id": "w-new", "title": "The Searchers", "year": 1956, "genres": ["Western"]}


def wait_for(what: str, check: Any, timeout: float, proc: subprocess.Popen[bytes], log: str,
             seen: Any = None) -> Any:
    """Poll ``check`` until it returns something true; on a timeout the error shows what ``seen()`` last gave."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the job exited ({proc.returncode}) while waiting for {what}; see {log}"
        found = check()
        if found:
            return found
        time.sleep(0.2)
    last = f"; last seen: {seen()}" if seen else ""
    raise AssertionError(f"no {what} after {timeout:.0f} s{last}; see {log}")


@pytest.fixture()
def job(kafka_bootstrap: str, redis_conn: Any) -> Iterator[dict[str, Any]]:
    with live_job("live", kafka_bootstrap, redis_conn, REDIS_PORT,
                  ["model.hybrid.mode=content", "model.hybrid.half_life_s=null"],
                  before=lambda cfg: publish_catalog(CATALOG, kafka_bootstrap, cfg["kafka"]["topics"]["items"])) as j:
        yield j


def test_new_catalog_item_is_recommended_without_restart(job: dict[str, Any], kafka_bootstrap: str,
                                                         redis_conn: Any) -> None:
    cfg, proc, log, prefix = job["cfg"], job["proc"], job["log"], job["prefix"]
    topic = cfg["kafka"]["topics"]["events"]
    t0 = 1_700_000_000_000
    first = [Event("e1", "u1", "w1", "rate", 5.0, t0), Event("e2", "u1", "w2", "rate", 5.0, t0 + 1000),
             Event("e3", "u2", "c1", "rate", 4.0, t0 + 2000)]
    produce_events(first, kafka_bootstrap, topic, progress=False)

    def recs() -> dict[str, Any] | None:
        raw = redis_conn.get(f"{prefix}recs:u1")
        return json.loads(raw) if raw else None

    msg = wait_for("recommendations for u1", lambda: (m := recs()) and m["event_id"] == "e2" and m, 120, proc, log)
    assert msg["mode"] == "content"
    assert "w-new" not in [it["item_id"] for it in msg["items"]]  # not in the catalog yet

    publish_catalog([NEW_ITEM], kafka_bootstrap, cfg["kafka"]["topics"]["items"])
    time.sleep(1.0)  # the catalog record and the next event travel on different topics
    produce_events([Event("e4", "u1", "c1", "view", 1.0, t0 + 3000)], kafka_bootstrap, topic, progress=False)
    msg = wait_for("the new item in u1's recommendations",
                   lambda: (m := recs()) and m["event_id"] == "e4" and
                   "w-new" in [it["item_id"] for it in m["items"]] and m, 30, proc, log, recs)
    top = msg["items"][0]
    assert top["item_id"] == "w-new", msg["items"]  # the only unseen Western: the best content match
    assert top["reason"] == "matches your taste for Western"
