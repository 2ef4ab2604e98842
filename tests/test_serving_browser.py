"""The live page in headless Debian Chromium (Playwright), against the real Redis and Kafka.

The page is served by the API in a uvicorn thread on a free port. A user is picked, a movie is rated
(found with the search box, then one from the shown list with its stars), and the list must change; then one
recommendation is marked "not interested" (a ``hide`` event) and must leave the list.

STAND-IN FOR THE FLINK JOB: a small thread of this test (``FakeJob``) consumes the test's events topic
and, for each event, rewrites that user's ``rec:recs:<user>`` key (and ``rec:users``) in the job's layout.
It is not the recommender: the full pipeline is tested elsewhere. A screenshot of the page is saved to
``var/test-artifacts/serving-page.png``.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config import PROJECT_ROOT, load_config
from ingest.catalog import store_catalog
from ingest.kafka_admin import ensure_topics
from serving.api import create_app
from serving.testing import (
    delete_prefix,
    drop_topics,
    free_port,
    now_ms,
    require_kafka,
    require_redis,
    unavailable,
    unique,
    write_recs,
    write_trending,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer, TopicPartition


pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = PROJECT_ROOT / "var" / "test-artifacts" / "serving-page.png"
USER = "196"
CATALOG: list[dict[str, Any]] = [
    {"item_id": "1", "title": "Toy Story", "year": 1995, "genres": ["Animation", "Children's", "Comedy"]},
    {"item_id": "50", "title": "Star Wars", "year": 1977, "genres": ["Action", "Sci-Fi", "War"]},
    {"item_id": "56", "title": "Pulp Fiction", "year": 1994, "genres": ["Crime", "Drama"]},
    {"item_id": "64", "title": "Shawshank Redemption, The", "year": 1994, "genres": ["Drama"]},
    {"item_id": "98", "title": "Silence of the Lambs, The", "year": 1991, "genres": ["Drama", "Thriller"]},
    {"item_id": "100", "title": "Fargo", "year": 1996, "genres": ["Crime", "Drama", "Thriller"]},
    {"item_id": "127", "title": "Godfather, The", "year": 1972, "genres": ["Action", "Crime", "Drama"]},
    {"item_id": "172", "title": "Empire Strikes Back, The", "year": 1980, "genres": ["Action", "Sci-Fi", "War"]},
    {"item_id": "174", "title": "Raiders of the Lost Ark", "year": 1981, "genres": ["Action", "Adventure"]},
    {"item_id": "181", "title": "Return of the Jedi", "year": 1983, "genres": ["Action", "Romance", "Sci-Fi"]},
    {"item_id": "204", "title": "Back to the Future", "year": 1985, "genres": ["Comedy", "Sci-Fi"]},
    {"item_id": "242", "title": "Kolya", "year": 1996, "genres": ["Comedy"]},
    {"item_id": "258", "title": "Contact", "year": 1997, "genres": ["Drama", "Sci-Fi"]},
    {"item_id": "318", "title": "Schindler's List", "year": 1993, "genres": ["Drama", "War"]},
]
TITLES = {c["item_id"]: c["title"] for c in CATALOG}
INITIAL = [("56", 4.1, "because of 100"), ("64", 3.9, "because of 127"), ("98", 3.7, "because of 100"),
           ("1", 3.2, "because of 242"), ("204", 3.0, "similar users"), ("258", 2.8, "because of 242"),
           ("318", 2.7, "because of 64"), ("127", 2.5, "because of 56"), ("174", 2.1, "trending"),
           ("242", 1.9, "because of 1")]
#: what the stand-in puts on top after a rating of the key
NEIGHBORS = {"50": ["172", "181"], "204": ["174", "100"]}


class FakeJob(threading.Thread):
    """STAND-IN FOR THE FLINK JOB (not the recommender): on each event of ``topic``, rewrite the user's recs.

    The rated item's neighbours (``NEIGHBORS``) go to the top with the reason "because you rated …", followed
    by the previous list; a hidden item leaves the list; the document carries the event's id, as the job's does.
    """

    def __init__(self, bootstrap: str, topic: str, redis_client: Any, prefix: str) -> None:
        super().__init__(name="fake-flink-job", daemon=True)
        self.redis, self.prefix = redis_client, prefix
        self.stop_event = threading.Event()
        self.events: list[dict[str, Any]] = []
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                      isolation_level="read_committed", allow_auto_create_topics=False)
        tps = [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or [])]
        assert tps, f"topic {topic} has no partitions"
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                for records in self.consumer.poll(timeout_ms=100).values():
                    for record in records:
                        self.on_event(json.loads(record.value))
        finally:
            self.consumer.close()

    def on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        user, item = event["user_id"], event["item_id"]
        current = json.loads(self.redis.get(f"{self.prefix}recs:{user}") or '{"items": [], "history_size": 0}')
        if event["type"] == "hide":
            rest = [(i["item_id"], i["score"], i["reason"]) for i in current["items"] if i["item_id"] != item]
            write_recs(self.redis, self.prefix, user, rest, event_id=event["event_id"], event_ts=event["ts"],
                       history_size=current.get("history_size", 0))
            return
        stars = int(event["value"])
        because = f"because you rated {TITLES.get(item, item)} {stars}★"
        neighbors = NEIGHBORS.get(item, [])
        top = [(j, 5.0 + 0.1 * (len(neighbors) - k), because) for k, j in enumerate(neighbors)]
        fresh = {j for j, _, _ in top} | {item}
        rest = [(i["item_id"], i["score"], i["reason"]) for i in current["items"] if i["item_id"] not in fresh]
        write_recs(self.redis, self.prefix, user, (top + rest)[:10], event_id=event["event_id"],
                   event_ts=event["ts"], history_size=current.get("history_size", 0) + 1)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)


class ServerThread:
    """The API in uvicorn on 127.0.0.1:``port`` in a background thread."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.port = port
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def offline(page: Any, base_url: str) -> list[str]:
    """Abort every request that does not go to ``base_url``; return the list the aborted URLs are added to."""
    blocked: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith(base_url + "/") or r.request.url.startswith("data:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return blocked


@pytest.fixture()
def services() -> Iterator[tuple[str, Any]]:
    cfg = load_config()
    bootstrap = require_kafka(cfg)
    client = require_redis(cfg)
    yield bootstrap, client
    client.close()


@pytest.fixture()
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install playwright; the browser is Debian's chromium)")
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} not found: apt-get update && apt-get install -y chromium")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def test_pick_a_user_rate_movies_and_see_the_list_change(services: tuple[str, Any], browser: Any) -> None:
    bootstrap, rds = services
    prefix, topic = unique("test-serving-page") + ":", unique("test-serving-page-events")
    ensure_topics(bootstrap, {topic: {}}, partitions=2)
    job: FakeJob | None = None
    try:
        store_catalog(CATALOG, rds, prefix=prefix)
        write_recs(rds, prefix, USER, INITIAL, event_id="ml-17", history_size=12)
        write_recs(rds, prefix, "7", INITIAL[3:], processed_at=now_ms() - 5000)
        write_recs(rds, prefix, "42", INITIAL[5:], processed_at=now_ms() - 9000)
        write_trending(rds, prefix, [("50", 120.0), ("100", 99.0)])
        job = FakeJob(bootstrap, topic, rds, prefix)
        job.start()
        cfg = load_config(overrides=[f"redis.prefix={prefix}", f"kafka.topics.events={topic}"])
        with ServerThread(create_app(cfg, kafka_timeout_s=10), free_port()) as url:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            external = offline(page, url)
            page.goto(url + "/")

            # pick the user among the recently updated ones
            page.locator("#recent-users .chip", has_text=USER).click()
            page.wait_for_function("document.querySelectorAll('#recs .rec').length === 10")
            first = page.locator("#recs .rec .title").first
            assert first.inner_text() == "Pulp Fiction"
            assert "updated" in page.locator("#recs-meta").inner_text()
            assert page.locator("#recs .rec").first.locator(".genre").all_inner_texts() == ["Crime", "Drama"]
            assert page.locator("#recs .rec .reason").first.inner_text() == "because of 100"

            # rate any movie: search it by title, give it 5 stars
            page.fill("#search-input", "star wars")
            result = page.locator("#search-results .result", has_text="Star Wars")
            result.wait_for()
            clicked_ms = now_ms()
            result.locator("button.star[data-stars='5']").click()
            page.wait_for_function(
                "document.querySelector('#recs .rec .title').textContent === 'Empire Strikes Back, The'",
                timeout=10_000)
            assert page.locator("#recs .rec .reason").first.inner_text() == "because you rated Star Wars 5★"
            assert page.locator("#recs .rec .title").nth(1).inner_text() == "Return of the Jedi"
            assert page.locator("#recs .rec").first.locator(".badge").inner_text().lower() == "new"
            page.locator(".toast-ok", has_text="Recommendations updated").wait_for(timeout=5000)
            sent = job.events[-1]
            assert (sent["user_id"], sent["item_id"], sent["type"], sent["value"]) == (USER, "50", "rate", 5.0)
            assert sent["event_id"].startswith("web-") and clicked_ms <= sent["ts"] <= now_ms()  # ts = Date.now()

            # rate one of the shown movies with its stars
            row = page.locator("#recs .rec", has_text="Back to the Future")
            row.locator("button.star[data-stars='4']").click()
            page.wait_for_function(
                "document.querySelector('#recs .rec .title').textContent === 'Raiders of the Lost Ark'",
                timeout=10_000)
            assert page.locator("#recs .rec .reason").first.inner_text() == "because you rated Back to the Future 4★"
            assert page.locator("#recs .rec .title").nth(1).inner_text() == "Fargo"
            assert page.locator("#health").inner_text().startswith("job live")

            # not interested in one of the shown movies: a hide event, and the movie leaves the list
            page.wait_for_function("document.querySelectorAll('.toast').length === 0", timeout=15_000)
            assert "Fargo" in page.locator("#recs .rec .title").all_inner_texts()
            clicked_ms = now_ms()
            page.locator("#recs .rec", has_text="Fargo").locator("button.not-interested").click()
            page.wait_for_function(
                "![...document.querySelectorAll('#recs .rec .title')].some((t) => t.textContent === 'Fargo')",
                timeout=10_000)
            left_ms = now_ms() - clicked_ms
            page.locator(".toast-ok", has_text="Recommendations updated from your hiding").wait_for(timeout=5000)
            sent = job.events[-1]
            # the page sends no value; the API writes the event's weight (1 for a hide without one)
            assert (sent["user_id"], sent["item_id"], sent["type"], sent["value"]) == (USER, "100", "hide", 1.0)
            assert page.locator("#recs .rec .title").first.inner_text() == "Raiders of the Lost Ark"
            assert left_ms < 5000, left_ms  # the page polls every second (the stand-in answers at once)
            assert [e["item_id"] for e in job.events] == ["50", "204", "100"]
            assert errors == [], f"JavaScript errors on the page: {errors}"
            assert external == [], f"the page asked for external URLs: {external}"

            page.fill("#search-input", "lambs")
            page.locator("#search-results .result", has_text="Silence of the Lambs").wait_for()
            page.wait_for_function("document.querySelectorAll('.toast').length === 0", timeout=15_000)
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            page.close()
    finally:
        if job is not None:
            job.stop()
        delete_prefix(rds, prefix)
        drop_topics(bootstrap, [topic])
    assert SCREENSHOT.stat().st_size > 10_000


def test_swagger_ui_renders_offline(services: tuple[str, Any], browser: Any) -> None:
    _, rds = services
    prefix = unique("test-serving-docs") + ":"
    cfg = load_config(overrides=[f"redis.prefix={prefix}"])
    try:
        with ServerThread(create_app(cfg), free_port()) as url:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            external = offline(page, url)
            page.goto(url + "/docs")
            page.locator(".opblock-summary-path", has_text="/users/{user_id}/recommendations").wait_for(timeout=15_000)
            assert page.locator(".opblock").count() >= 9
            assert "flinkrec serving API" in page.locator(".info .title").inner_text()
            assert external == [], f"/docs asked for external URLs: {external}"
            page.close()
    finally:
        delete_prefix(rds, prefix)
