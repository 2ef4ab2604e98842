"""Anonymous session recommendations for the API (``POST /sessions/recommendations``): the model core ranks the
visitor's recent items (:mod:`core.v2.session`) from what the job publishes in Redis.

Per request **one** round trip reads the catalog version, ``rec:trending`` and the ``rec:similar:<item>`` list of
every item of the session (a pipeline of GET, GET and one MGET). The API process keeps the catalog in the core's
arrays (item vectors, the inverted index of the content search) and re-reads it (``SMEMBERS rec:items`` and
pipelined ``HGETALL``) only when ``rec:catalog:version`` changes (``ingest.catalog`` bumps it on every write; without
it, at most every :data:`CATALOG_TTL_S` seconds). The trending list is parsed again only when it changed.

The ranking itself runs in the event loop without awaiting (the shared :class:`core.v2.session.Live` is updated and
read by one request at a time); its numba kernels are compiled or loaded from numba's cache at start-up
(:meth:`Sessions.warm_up`) so that the first request is not slow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from core.v2.session import Live, SessionRanking, session_mode, warm_up
from core.v2.settings import Settings
from ingest.catalog import catalog_version_key
from serving.store import GENRE_SEPARATOR, Filters, _pairs, _text
from udfs.events import Event

logger = logging.getLogger(__name__)

CATALOG_TTL_S = 30.0
"""Without ``rec:catalog:version`` (a catalog written before it existed), the catalog is re-read this often."""
MAX_SESSION_ITEMS = 50
"""Default of the most events one session may hold (``python -m serving --session-max-items``)."""


def catalog_record(item_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """The catalog record (``udfs.catalog``) of a catalog hash."""
    year_raw = fields.get("year", "")
    try:
        year: int | None = int(year_raw) if year_raw else None
    except ValueError:
        year = None
    return {"item_id": item_id, "title": fields.get("title", ""), "year": year,
            "genres": [g for g in fields.get("genres", "").split(GENRE_SEPARATOR) if g]}


class Answer(NamedTuple):
    """A session's ranking after the request's filters."""

    items: list[dict[str, Any]]  # rank, item_id, score, reason, title, year, genres
    stored: int  # items ranked (model.stored_n deep) the filters chose from
    used: list[str]  # the session's items the model knows, in order of first appearance
    unknown: list[str]  # the session's items it does not know (neither in the catalog nor with a neighbour list)


class Sessions:
    """The session ranker of one API process over the Redis layout under ``prefix``."""

    def __init__(self, model_cfg: Mapping[str, Any], prefix: str, stored_n: int) -> None:
        self.settings = Settings.from_config(model_cfg)
        self.mode = session_mode(self.settings.mode)
        self.prefix = prefix
        self.stored_n = stored_n
        self.live = Live(self.settings)
        self._catalog_version: str | None = None
        self._catalog_read_at = -1.0
        self._catalog_signature: Any = None
        self._catalog_lock = asyncio.Lock()
        self._trending_raw: str | None = None
        self._warm = False

    def warm_up(self) -> None:
        """Compile or load the kernels a session ranking runs (blocking: seconds the first time, then cached)."""
        if not self._warm:
            started = time.perf_counter()
            warm_up(self.settings)
            self._warm = True
            logger.info("session ranking kernels ready in %.1f s", time.perf_counter() - started)

    async def rank(self, client: Any, events: Sequence[Event], mode: str | None, n: int, filters: Filters) -> Answer:
        """The session of ``events`` ranked in ``mode`` (default: the job's mode as a session mode), the first ``n``
        of the ``stored_n`` best that pass ``filters``."""
        items = list(dict.fromkeys(e.item_id for e in events))
        pipe = client.pipeline(transaction=False)
        pipe.get(catalog_version_key(self.prefix))
        pipe.get(f"{self.prefix}trending")
        if items:
            pipe.mget([f"{self.prefix}similar:{i}" for i in items])
        replies = await pipe.execute()
        version, trending_raw = replies[0], replies[1]
        lists_raw = replies[2] if items else []
        if self._catalog_stale(version):
            await self._read_catalog(client, version)
        self.warm_up()
        # from here on no await: the shared Live is updated and read by this request alone
        if trending_raw != self._trending_raw:
            self.live.set_trending(_trending(trending_raw))
            self._trending_raw = trending_raw
        lists: dict[str, list[tuple[str, float]] | None] = {}
        for item, raw in zip(items, lists_raw, strict=True):
            lists[item] = _neighbors(raw) if raw is not None else None
        known = {i for i in items if lists[i] is not None or self.live.known(i)}
        self.live.set_neighbors({i: nb for i, nb in lists.items() if i in known})
        kept = [e for e in events if e.item_id in known]
        ranking: SessionRanking = self.live.rank(kept, mode or self.mode, self.stored_n)
        chosen: list[dict[str, Any]] = []
        catalog = self.live.catalog
        for item, score, reason in ranking.items:
            if len(chosen) == n:
                break
            if item in filters.exclude:
                continue
            record = catalog.get(item)
            if filters.genre is not None and (record is None or filters.genre not in record["genres"]):
                continue
            chosen.append({"rank": len(chosen) + 1, "item_id": item, "score": score, "reason": reason,
                           "title": record["title"] if record else None, "year": record["year"] if record else None,
                           "genres": list(record["genres"]) if record else []})
        return Answer(chosen, len(ranking.items), ranking.used, [i for i in items if i not in known])

    def _catalog_stale(self, version: Any) -> bool:
        if self._catalog_read_at < 0:
            return True
        if version is not None:
            return _text(version) != self._catalog_version
        return time.monotonic() - self._catalog_read_at >= CATALOG_TTL_S

    async def _read_catalog(self, client: Any, version: Any) -> None:
        async with self._catalog_lock:
            if not self._catalog_stale(version):  # another request read it meanwhile
                return
            ids = sorted(_text(m) for m in await client.smembers(f"{self.prefix}items"))
            records = []
            for start in range(0, len(ids), 1000):
                chunk = ids[start : start + 1000]
                pipe = client.pipeline(transaction=False)
                for item_id in chunk:
                    pipe.hgetall(f"{self.prefix}item:{item_id}")
                for item_id, fields in zip(chunk, await pipe.execute(), strict=True):
                    if fields:
                        records.append(catalog_record(item_id, _pairs(fields)))
            signature = orjson.dumps(records)
            if signature != self._catalog_signature:
                started = time.perf_counter()
                self.live.set_catalog(records)
                self._catalog_signature = signature
                logger.info("session catalog: %d items in %.0f ms", len(records),
                            (time.perf_counter() - started) * 1000)
            self._catalog_version = _text(version) if version is not None else None
            self._catalog_read_at = time.monotonic()


def _trending(raw: Any) -> list[tuple[str, float]]:
    """``rec:trending`` as ``(item, score)``; entries without an id or a number are skipped."""
    if raw is None:
        return []
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        logger.warning("rec:trending does not hold JSON: sessions get no trending items")
        return []
    return _pairs_of(doc if isinstance(doc, list) else [])


def _neighbors(raw: Any) -> list[tuple[str, float]]:
    """A ``rec:similar:<item>`` document's neighbours as ``(item, score)`` ([] when it does not follow the layout)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    return _pairs_of(doc.get("neighbors") if isinstance(doc, dict) else None)


def _pairs_of(entries: Any) -> list[tuple[str, float]]:
    out = []
    for e in entries if isinstance(entries, list) else ():
        if not isinstance(e, dict):
            continue
        item, score = e.get("item_id"), e.get("score")
        if isinstance(item, (str, int)) and not isinstance(item, bool) and isinstance(score, (int, float)) \
                and not isinstance(score, bool):
            out.append((str(item), float(score)))
    return out
