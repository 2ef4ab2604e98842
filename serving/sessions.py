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

import numpy as np
import orjson
from redis.exceptions import ResponseError

from core.v2.session import Live, SessionRanking, session_mode, warm_up
from core.v2.settings import Settings
from ingest.catalog import catalog_version_key
from serving.store import Filters, _pairs, _text, catalog_view
from udfs.events import Event

logger = logging.getLogger(__name__)

CATALOG_TTL_S = 30.0
"""Without ``rec:catalog:version`` (a catalog written before it existed), the catalog is re-read this often."""
MAX_SESSION_ITEMS = 50
"""Default of the most events one session may hold (``python -m serving --session-max-items``)."""


def catalog_record(item_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """The catalog record (``udfs.catalog``) of a catalog hash, with its lifecycle (``available``, ``expires_at``)."""
    view = catalog_view(item_id, dict(fields))
    expires_raw = fields.get("expires_at", "")
    return {**view, "title": view["title"] or "", "available": fields.get("available", "true") != "false",
            "expires_at": int(expires_raw) if expires_raw.lstrip("-").isdigit() else None}


#: KEYS[1] the catalog version, KEYS[2] rec:trending; ARGV[1] the key prefix of the neighbour lists
#: (``rec:similar:``), ARGV[2] the session's item ids joined by newlines (an id holds no control character:
#: ``udfs.events``), so that the command is a handful of arguments however long the session. Returns one string: the
#: values of KEYS[1], KEYS[2] and of each item's list joined by newlines (an absent key: an empty line), which
#: redis-py parses at once (its parser is pure Python and pays per element). The job's JSON has no raw newline; a reply
#: with the wrong number of lines is read again with a pipeline. The script reads keys it computes itself: fine for
#: a standalone Redis, not for Redis Cluster (as :mod:`serving.store`).
_READ_LUA = """
local out = {}
for i = 1, 2 do
  local v = redis.call('GET', KEYS[i])
  if v then out[i] = v else out[i] = '' end
end
if ARGV[2] ~= '' then
  for id in string.gmatch(ARGV[2], '[^\\n]+') do
    local v = redis.call('GET', ARGV[1] .. id)
    if v then out[#out + 1] = v else out[#out + 1] = '' end
  end
end
return table.concat(out, '\\n')
"""
_NO_RECORD: dict[str, Any] = {"genres": ()}
NEIGHBOR_CACHE = 20_000
"""Parsed neighbour lists kept (by item, with the document they came from: a changed document is parsed again;
about 1 kB each; past this many the cache starts over)."""


class Answer(NamedTuple):
    """A session's ranking after the request's filters."""

    items: list[dict[str, Any]]  # rank, item_id, score, reason, title, year, genres
    stored: int  # items ranked (model.stored_n deep) the filters chose from
    used: list[str]  # the session's items the model knows, in order of first appearance
    unknown: list[str]  # the session's items it does not know (neither in the catalog nor with a neighbour list)


class Sessions:
    """The session ranker of one API process over the Redis layout under ``prefix``."""

    def __init__(self, model_cfg: Mapping[str, Any], prefix: str, stored_n: int, use_script: bool = True) -> None:
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
        self.use_script = use_script
        self._script: Any = None
        self._lists: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}  # item -> (document, ids, cosines)

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
        version, trending_raw, lists_raw = await self._read(client, items)
        if self._catalog_stale(version):
            await self._read_catalog(client, version)
        self.warm_up()
        # from here on no await: the shared Live is updated and read by this request alone
        if trending_raw != self._trending_raw:
            self.live.set_trending(_trending(trending_raw))
            self._trending_raw = trending_raw
        lists: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for item, raw in zip(items, lists_raw, strict=True):
            if raw is None:
                continue
            cached = self._lists.get(item)
            if cached is None or cached[0] != raw:
                nb = _neighbors(raw)
                if len(self._lists) >= NEIGHBOR_CACHE:
                    self._lists.clear()
                cached = self._lists[item] = (raw, self.live.encode([j for j, _ in nb]),
                                              np.array([v for _, v in nb], dtype=np.float64))
            lists[item] = cached[1], cached[2]
        known = {i for i in items if i in lists or self.live.known(i)}
        self.live.set_neighbor_arrays({i: lists.get(i) for i in known})
        kept = [e for e in events if e.item_id in known]
        catalog = self.live.catalog
        exclude, genre = filters.exclude, filters.genre

        def keep(item: str) -> bool:
            if item in exclude:
                return False
            return genre is None or genre in catalog.get(item, _NO_RECORD)["genres"]

        ranking: SessionRanking = self.live.rank(kept, mode or self.mode, self.stored_n,
                                                 keep if filters else None, n)
        chosen = []
        for rank, (item, score, reason) in enumerate(ranking.items, 1):
            record = catalog.get(item)
            chosen.append({"rank": rank, "item_id": item, "score": score, "reason": reason,
                           "title": record["title"] if record else None, "year": record["year"] if record else None,
                           "genres": list(record["genres"]) if record else []})
        return Answer(chosen, ranking.ranked, ranking.used, [i for i in items if i not in known])

    async def _read(self, client: Any, items: list[str]) -> tuple[Any, Any, list[Any]]:
        """The catalog version, ``rec:trending`` and each item's ``rec:similar:`` document (None when absent), in one
        round trip: a script that returns them as one string, or a pipeline (GET, GET, MGET) without scripting."""
        keys = [catalog_version_key(self.prefix), f"{self.prefix}trending"]
        if self.use_script:
            if self._script is None:
                self._script = client.register_script(_READ_LUA)
            try:
                reply = await self._script(keys=keys, args=[f"{self.prefix}similar:", "\n".join(items)])
            except ResponseError as exc:
                logger.warning("session read script failed (%s); sessions read with a pipeline from now on", exc)
                self.use_script = False
            else:
                values = _text(reply).split("\n")
                if len(values) == 2 + len(items):
                    out = [v if v else None for v in values]
                    return out[0], out[1], out[2:]
        pipe = client.pipeline(transaction=False)
        pipe.get(keys[0])
        pipe.get(keys[1])
        if items:
            pipe.mget([f"{self.prefix}similar:{i}" for i in items])
        replies = await pipe.execute()
        return replies[0], replies[1], (replies[2] if items else [])

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
