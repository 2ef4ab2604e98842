"""Read access to the job's results in Redis, for the API (asyncio, one round trip per lookup).

The key layout is the one ``operators.redis_sink`` and ``ingest.catalog`` write (``prefix`` is
``redis.prefix``, ``rec:`` by default):

=============================  ======  =====================================================
key                            type    value
=============================  ======  =====================================================
``rec:recs:<user_id>``         string  ``{"user_id", "items": [{"item_id", "score", "reason"}], "event_id",
                                       "event_ts", "processed_at", "history_size"}``: ``model.stored_n`` items
``rec:users``                  zset    user_id -> processed_at (ms) of the latest update
``rec:similar:<item_id>``      string  ``{"item_id", "neighbors": [{"item_id", "score"}], "updated_at"}``
``rec:trending``               string  JSON list of ``{"item_id", "score"}``
``rec:item:<item_id>``         hash    ``title``, ``year`` (empty when unknown), ``genres`` (joined by ``|``)
``rec:items``                  set     all item ids of the catalog
=============================  ======  =====================================================

A list document and the catalog hashes of its first ``n`` entries are read in **one** round trip:
a small Lua script (``EVALSHA``) GETs the document and HGETALLs the listed items server-side. If
scripting is not available the store falls back to a GET followed by one pipelined HGETALL round
trip. The script touches keys it computes itself, which is fine for a standalone Redis (the
project's) but not for Redis Cluster.

:class:`Filters` (ids to exclude, a genre to keep) pick the first ``n`` matching entries of the whole stored list,
in its order; the script applies them too, so a filtered read is still one round trip. Python decides: it checks
every entry again against the hashes and reads any hash the script did not return.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import ResponseError

logger = logging.getLogger(__name__)

GENRE_SEPARATOR = "|"

#: KEYS[1] the JSON document; ARGV[1] the item hash key prefix; ARGV[2] the list field ("" when the
#: document is the list); ARGV[3] how many entries; ARGV[4] the genre to keep ("" for all); ARGV[5..] ids to skip.
#: Returns nil, or {document, catalog} where catalog is the JSON list of [item_id, HGETALL reply (flat [field,
#: value, ...])] of the entries read until ARGV[3] of them matched: two bulk strings, so the reply is cheap to parse
#: (redis-py's parser is pure Python and pays per element). Python matches the hashes to its own list entries by
#: id, applies the filters again and reads any hash it lacks itself.
_DOC_WITH_ITEMS_LUA = """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local ok, doc = pcall(cjson.decode, raw)
if not ok or type(doc) ~= 'table' then return {raw} end
local list = doc
if ARGV[2] ~= '' then list = doc[ARGV[2]] end
if type(list) ~= 'table' then return {raw} end
local catalog = {}
local limit = tonumber(ARGV[3])
local genre = ARGV[4]
local skip = {}
for i = 5, #ARGV do skip[ARGV[i]] = true end
local function has_genre(hash)
  for k = 1, #hash - 1, 2 do
    if hash[k] == 'genres' then
      for g in string.gmatch(hash[k + 1], '[^|]+') do
        if g == genre then return true end
      end
      return false
    end
  end
  return false
end
local matched = 0
for i = 1, #list do
  if matched >= limit then break end
  local entry = list[i]
  if type(entry) == 'table' then
    local id = entry['item_id']
    if type(id) == 'string' or type(id) == 'number' then
      id = tostring(id)
      if not skip[id] then
        local hash = redis.call('HGETALL', ARGV[1] .. id)
        catalog[#catalog + 1] = {id, hash}
        if genre == '' or has_genre(hash) then matched = matched + 1 end
      end
    end
  end
end
return {raw, cjson.encode(catalog)}
"""


def _script_catalog(reply: Sequence[Any]) -> dict[str, dict[str, str]]:
    """``{item_id: catalog hash}`` of a script reply; {} when missing or undecodable (the caller reads them itself)."""
    if len(reply) < 2:
        return {}
    try:
        pairs = orjson.loads(reply[1])
    except orjson.JSONDecodeError:  # e.g. a title that is not UTF-8
        return {}
    if not isinstance(pairs, list):  # cjson encodes an empty table as {}
        return {}
    return {str(p[0]): _pairs(p[1]) if isinstance(p[1], list) else {}
            for p in pairs if isinstance(p, list) and len(p) == 2}


@dataclass(frozen=True)
class Filters:
    """What a request keeps of a stored list: not the ids in ``exclude``, and with ``genre`` only the items whose
    catalog hash lists that genre (exact, case-sensitive: a genre name as the catalog spells it)."""

    exclude: frozenset[str] = frozenset()
    genre: str | None = None

    def __bool__(self) -> bool:
        return bool(self.exclude) or self.genre is not None

    def keeps(self, catalog: dict[str, str]) -> bool:
        """Whether an entry not excluded passes the genre filter (``catalog``: its hash, {} if not in the catalog)."""
        return self.genre is None or self.genre in catalog.get("genres", "").split(GENRE_SEPARATOR)


NO_FILTERS = Filters()


class CorruptDocument(ValueError):
    """A value in Redis that does not follow the layout (not JSON, wrong shape)."""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[Any] | dict[Any, Any]) -> dict[str, str]:
    """An HGETALL reply (a dict from redis-py, a flat list from Lua) as ``{field: value}``."""
    if isinstance(flat, dict):
        return {_text(k): _text(v) for k, v in flat.items()}
    if all(type(x) is str for x in flat):  # the common case (decoded replies, JSON from the script)
        return dict(zip(flat[0:len(flat) - 1:2], flat[1::2], strict=True))
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


def catalog_view(item_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """Title, year (int or None) and genres (list) of a catalog hash; ``title`` is None for an unknown item."""
    year_raw = fields.get("year", "")
    try:
        year: int | None = int(year_raw) if year_raw else None
    except ValueError:
        year = None
    genres = [g for g in fields.get("genres", "").split(GENRE_SEPARATOR) if g]
    return {"item_id": item_id, "title": fields.get("title"), "year": year, "genres": genres}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


@dataclass
class ListDoc:
    """A JSON document of the layout with the list entries a read selected (``item_id`` as a string), their catalog
    hashes and ``stored``, the number of entries in the document's list (what the filters chose from)."""

    doc: Any
    entries: list[dict[str, Any]]
    catalog: list[dict[str, str]] = field(default_factory=list)
    stored: int = 0


@dataclass
class _SearchIndex:
    built_at: float = 0.0
    items: list[tuple[str, str, str, str]] = field(default_factory=list)  # (title lowercased, id, year, genres)
    titles: dict[str, str] = field(default_factory=dict)
    genres: frozenset[str] = frozenset()  # every genre of the catalog items


def _list(doc: Any, list_field: str, key: str) -> list[Any]:
    """The document's list (the document itself when ``list_field`` is empty), entries not yet checked."""
    items = doc if not list_field else (doc.get(list_field) if isinstance(doc, dict) else None)
    if not isinstance(items, list):
        where = f"field {list_field!r}" if list_field else "the document"
        raise CorruptDocument(f"Redis key {key!r}: {where} is not a JSON list")
    return items


def _item_id(entry: Any) -> str | None:
    """A list entry's ``item_id`` as a string, None when the entry does not follow the layout (it is skipped)."""
    if not isinstance(entry, dict):
        return None
    item_id = entry.get("item_id")
    if isinstance(item_id, str):
        return item_id
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        return str(item_id)
    return None


class Store:
    """Async reads of the Redis layout through a ``redis.asyncio.Redis`` client (not owned: the caller closes it)."""

    def __init__(self, client: Any, prefix: str = "rec:", use_script: bool = True,
                 search_ttl_s: float = 30.0) -> None:
        self.client = client
        self.prefix = prefix
        self.use_script = use_script
        self.search_ttl_s = search_ttl_s
        self._script = client.register_script(_DOC_WITH_ITEMS_LUA)
        self._search = _SearchIndex()
        self._search_lock = asyncio.Lock()

    # --- keys ----------------------------------------------------------------------------------------------------
    def recs_key(self, user_id: str) -> str:
        return f"{self.prefix}recs:{user_id}"

    def similar_key(self, item_id: str) -> str:
        return f"{self.prefix}similar:{item_id}"

    def item_key(self, item_id: str) -> str:
        return f"{self.prefix}item:{item_id}"

    @property
    def users_key(self) -> str:
        return f"{self.prefix}users"

    @property
    def trending_key(self) -> str:
        return f"{self.prefix}trending"

    @property
    def items_key(self) -> str:
        return f"{self.prefix}items"

    # --- reads ---------------------------------------------------------------------------------------------------
    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def _catalog_many(self, item_ids: Iterable[str]) -> list[dict[str, str]]:
        pipe = self.client.pipeline(transaction=False)
        ids = list(item_ids)
        for item_id in ids:
            pipe.hgetall(self.item_key(item_id))
        if not ids:
            return []
        return [_pairs(h) for h in await pipe.execute()]

    async def _doc_with_items(self, key: str, list_field: str, n: int,
                              filters: Filters = NO_FILTERS) -> ListDoc | None:
        """The document at ``key`` with the first ``n`` list entries that pass ``filters`` and their catalog hashes,
        or None if absent."""
        if self.use_script:
            args = [f"{self.prefix}item:", list_field, n, filters.genre or "", *sorted(filters.exclude)]
            try:
                reply = await self._script(keys=[key], args=args)
            except ResponseError as exc:
                logger.warning("Lua lookup of %s failed (%s); trying GET + pipelined HGETALL", key, exc)
                reply = await self._doc_with_items_pipelined(key, list_field, n, filters)  # a data error raises too
                logger.warning("Redis scripting is unusable; the store now uses two round trips per lookup")
                self.use_script = False
                return reply
            if reply is None:
                return None
            doc = self._decode(key, reply[0])
            return await self._select(doc, _list(doc, list_field, key), n, filters, _script_catalog(reply))
        return await self._doc_with_items_pipelined(key, list_field, n, filters)

    async def _doc_with_items_pipelined(self, key: str, list_field: str, n: int,
                                        filters: Filters = NO_FILTERS) -> ListDoc | None:
        raw = await self.client.get(key)
        if raw is None:
            return None
        doc = self._decode(key, raw)
        return await self._select(doc, _list(doc, list_field, key), n, filters, {})

    async def _select(self, doc: Any, items: list[Any], n: int, filters: Filters,
                      by_id: dict[str, dict[str, str]]) -> ListDoc:
        """The first ``n`` entries of ``items`` (those that follow the layout, ``item_id`` made a string) that pass
        ``filters``, with their hashes: those in ``by_id`` (from the script) and the others read in one pipelined
        round trip when needed (the script read the list differently, its reply was not valid JSON, or there was no
        script). Only the entries up to the last one chosen are copied; the rest are only counted (``stored``)."""
        exclude, genre = filters.exclude, filters.genre
        chosen: list[dict[str, Any]] = []
        stored = 0
        for k, entry in enumerate(items):
            item_id = _item_id(entry)
            if item_id is None:
                continue
            stored += 1
            if len(chosen) >= n or item_id in exclude:
                continue
            if genre is not None:
                if item_id not in by_id:  # the genre needs the hash: read every one left at once
                    rest = (_item_id(e) for e in items[k:])
                    missing = list(dict.fromkeys(i for i in rest if i is not None and i not in exclude
                                                 and i not in by_id))
                    by_id.update(zip(missing, await self._catalog_many(missing), strict=True))
                if not filters.keeps(by_id[item_id]):
                    continue
            chosen.append(entry if entry["item_id"] is item_id else {**entry, "item_id": item_id})
        missing = list(dict.fromkeys(e["item_id"] for e in chosen if e["item_id"] not in by_id))
        if missing:
            by_id.update(zip(missing, await self._catalog_many(missing), strict=True))
        return ListDoc(doc, chosen, [by_id[e["item_id"]] for e in chosen], stored)

    @staticmethod
    def _decode(key: str, raw: Any) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CorruptDocument(f"Redis key {key!r} does not hold JSON: {exc}") from None

    async def recommendations(self, user_id: str, n: int, filters: Filters = NO_FILTERS) -> ListDoc | None:
        """``rec:recs:<user_id>`` with its first ``n`` items that pass ``filters`` and their catalog hashes, or None
        for an unknown user."""
        found = await self._doc_with_items(self.recs_key(user_id), "items", n, filters)
        if found is not None and not isinstance(found.doc, dict):
            raise CorruptDocument(f"Redis key {self.recs_key(user_id)!r} is not a JSON object")
        return found

    async def similar(self, item_id: str, n: int) -> ListDoc | None:
        """``rec:similar:<item_id>`` with the catalog hashes of its first ``n`` neighbours, or None."""
        found = await self._doc_with_items(self.similar_key(item_id), "neighbors", n)
        if found is not None and not isinstance(found.doc, dict):
            raise CorruptDocument(f"Redis key {self.similar_key(item_id)!r} is not a JSON object")
        return found

    async def trending(self, n: int, filters: Filters = NO_FILTERS) -> ListDoc | None:
        """``rec:trending`` (first ``n`` entries that pass ``filters``, with their catalog hashes), or None if the job
        wrote none yet."""
        return await self._doc_with_items(self.trending_key, "", n, filters)

    async def item(self, item_id: str) -> dict[str, str] | None:
        """The catalog hash of ``item_id`` or None."""
        fields = _pairs(await self.client.hgetall(self.item_key(item_id)))
        return fields or None

    async def users(self, limit: int) -> tuple[list[tuple[str, int]], int]:
        """The ``limit`` most recently updated users as ``(user_id, processed_at)`` and the number of users."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrevrange(self.users_key, 0, limit - 1, withscores=True)
        pipe.zcard(self.users_key)
        newest, total = await pipe.execute()
        return [(_text(u), int(s)) for u, s in newest], int(total)

    async def newest_update(self) -> tuple[str, int, int] | None:
        """``(user_id, processed_at, number of users)`` of the newest entry of ``rec:users``, or None if empty."""
        users, total = await self.users(1)
        if not users:
            return None
        return users[0][0], users[0][1], total

    async def search_items(self, query: str, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Catalog items whose title contains ``query`` (case-insensitive) or whose id equals it.

        Titles are read once into memory (``SMEMBERS`` + pipelined ``HMGET``) and re-read after
        ``search_ttl_s`` seconds. Items whose title starts with the query come first.
        """
        index = await self._search_index()
        q = query.strip().lower()
        starts, contains = [], []
        for lowered, item_id, year, genres in index.items:
            if item_id == query.strip() or lowered.startswith(q):
                starts.append((lowered, item_id, year, genres))
            elif q in lowered:
                contains.append((lowered, item_id, year, genres))
        hits = starts + contains
        out = [catalog_view(item_id, {"title": index.titles[item_id], "year": year, "genres": genres})
               for _, item_id, year, genres in hits[:limit]]
        return out, len(hits)

    async def genres(self) -> frozenset[str]:
        """Every genre of the catalog items (from the same in-memory copy as :meth:`search_items`, as fresh)."""
        return (await self._search_index()).genres

    async def _search_index(self) -> _SearchIndex:
        if time.monotonic() - self._search.built_at < self.search_ttl_s:
            return self._search
        async with self._search_lock:
            if time.monotonic() - self._search.built_at < self.search_ttl_s:
                return self._search
            ids = sorted(_text(m) for m in await self.client.smembers(self.items_key))
            index = _SearchIndex(built_at=time.monotonic())
            for start in range(0, len(ids), 1000):
                chunk = ids[start : start + 1000]
                pipe = self.client.pipeline(transaction=False)
                for item_id in chunk:
                    pipe.hmget(self.item_key(item_id), ["title", "year", "genres"])
                for item_id, (title, year, genres) in zip(chunk, await pipe.execute(), strict=True):
                    if title is None:
                        continue
                    t = _text(title)
                    index.titles[item_id] = t
                    index.items.append((t.lower(), item_id, _text(year or ""), _text(genres or "")))
            index.items.sort(key=lambda row: (row[0], row[1]))
            index.genres = frozenset(g for row in index.items for g in row[3].split(GENRE_SEPARATOR) if g)
            logger.debug("search index: %d titles", len(index.items))
            self._search = index
            return index


def make_client(redis_cfg: Mapping[str, Any], socket_timeout_s: float = 2.0) -> Any:
    """A ``redis.asyncio.Redis`` for the ``redis`` config section: str replies, bytes that are not UTF-8 replaced
    (a stray byte in a title must not fail the request), short timeouts so an outage answers 503 fast."""
    import redis.asyncio

    return redis.asyncio.Redis(host=redis_cfg["host"], port=int(redis_cfg["port"]), db=int(redis_cfg["db"]),
                               decode_responses=True, encoding_errors="replace", socket_timeout=socket_timeout_s,
                               socket_connect_timeout=min(1.0, socket_timeout_s))


def entry_view(rank: int, entry: dict[str, Any], catalog: dict[str, str]) -> dict[str, Any]:
    """One ranked entry of a list document joined with its catalog hash."""
    view = catalog_view(entry["item_id"], catalog)
    return {"rank": rank, "item_id": entry["item_id"], "score": _number(entry.get("score")),
            "reason": entry.get("reason") if isinstance(entry.get("reason"), str) else None,
            "title": view["title"], "year": view["year"], "genres": view["genres"]}


def doc_int(doc: Any, name: str) -> int | None:
    """An integer field of a JSON object, None if absent or not an integer."""
    return _int_or_none(doc.get(name)) if isinstance(doc, dict) else None


def doc_str(doc: Any, name: str) -> str | None:
    """A string field (integers are turned into their decimal string), None otherwise."""
    value = doc.get(name) if isinstance(doc, dict) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) else None
