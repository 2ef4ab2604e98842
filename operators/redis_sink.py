"""Writes the job's results to Redis with pipelined round trips, and passes messages on to Kafka.

Key layout (``prefix`` is ``redis.prefix``, default ``rec:``; the README's "Outputs"):

=============================  ======  =====================================================
key                            type    value
=============================  ======  =====================================================
``rec:recs:<user_id>``         string  recommendation message (JSON, ``udfs.serde``) with the ``model.stored_n``
                                       best items; the ``recommendations`` topic gets the first ``model.top_n``
``rec:users``                  zset    user_id -> processed_at (ms) of the latest update
``rec:similar:<item_id>``      string  top-K neighbours (JSON, ``udfs.serde``); deleted while the item is gone
``rec:trending``               string  JSON list of ``{"item_id", "score"}``
``rec:model:combiner``         string  the learned combiner's weights (JSON, ``udfs.serde``)
``rec:item:<item_id>``         hash    title, year, genres (written by ``ingest.catalog``)
``rec:experiments``            hash    arm -> the arm's running totals (JSON, ``operators.experiments.summary``)
=============================  ======  =====================================================

A Redis outage does not fail the job: writes are retried with exponential backoff (capped) until
Redis answers again, which back-pressures the pipeline instead of dropping results.

Writes are idempotent and versioned: a recommendation replaces the stored one only if its version
(``event_ts``, the event time of the newest event it reflects) is not older, so a replay after a
recovery never leaves an older result over a newer one; ``rec:users`` only moves forward (``GT``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pyflink.datastream import FlatMapFunction, RuntimeContext

from operators.records import ItemLists, RecsBatch
from udfs.serde import dumps, published, similar_message

logger = logging.getLogger(__name__)

# KEYS[1] = rec:recs:<user>; ARGV[1] = version (event_ts); ARGV[2] = the message. Returns 1 if written.
SET_IF_NEWER = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, obj = pcall(cjson.decode, cur)
  if ok and type(obj) == 'table' and tonumber(obj['event_ts']) and tonumber(obj['event_ts']) > tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


class _RedisWriter(FlatMapFunction):
    def __init__(self, host: str, port: int, db: int, prefix: str, pipeline_size: int,
                 max_backoff_s: float = 5.0) -> None:
        self.host, self.port, self.db, self.prefix = host, port, db, prefix
        self.pipeline_size = pipeline_size
        self.max_backoff_s = max_backoff_s
        self._client: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        import redis

        self._client = redis.Redis(host=self.host, port=self.port, db=self.db, socket_timeout=10,
                                   socket_connect_timeout=5)
        self._set_if_newer = self._client.register_script(SET_IF_NEWER)
        self._unwritable = runtime_context.get_metrics_group().add_group("redis_sink").counter("unwritable")
        self._retries = runtime_context.get_metrics_group().add_group("redis_sink").counter("retries")
        self._backoff_ms = runtime_context.get_metrics_group().add_group("redis_sink").counter("backoff_ms")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _write(self, commands: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run ``commands`` in pipelines of ``pipeline_size``. While Redis is unavailable (no connection, loading,
        out of memory, read-only) the commands not yet written are retried with backoff; a command Redis refuses
        for itself (e.g. a key of another type) is dropped, counted (``redis_sink.unwritable``) and logged with its
        key: retrying it could never succeed, and failing would restart the job into the same command."""
        import redis

        for start in range(0, len(commands), self.pipeline_size):
            chunk = commands[start : start + self.pipeline_size]
            backoff = 0.1
            while chunk:
                try:
                    pipe = self._client.pipeline(transaction=False)
                    for name, args in chunk:
                        if name == "set_if_newer":
                            self._set_if_newer(keys=args[:1], args=args[1:], client=pipe)
                        else:
                            getattr(pipe, name)(*args)
                    results = pipe.execute(raise_on_error=False)
                except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError) as exc:
                    results = [exc] * len(chunk)
                retry = []
                for command, result in zip(chunk, results, strict=True):
                    if not isinstance(result, Exception):
                        continue
                    if _transient(result):
                        retry.append(command)
                    else:
                        self._unwritable.inc()
                        logger.error("redis refused %s of key %.200s (dropped): %s", command[0], command[1][0], result)
                if retry:
                    logger.warning("redis %s:%s unavailable (%s); retrying %d writes in %.1fs", self.host, self.port,
                                   next(r for r in results if isinstance(r, Exception)), len(retry), backoff)
                    self._retries.inc()
                    self._backoff_ms.inc(int(backoff * 1000))
                    time.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)
                chunk = retry


#: error replies of a Redis that cannot write now but will, which redis-py leaves as a plain ResponseError
TRANSIENT_REPLIES = ("BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS")


def _transient(error: Exception) -> bool:
    """Whether Redis is unavailable (retry) rather than refusing the command itself (drop)."""
    from redis import exceptions as ex

    if isinstance(error, (ex.ConnectionError, ex.TimeoutError, ex.BusyLoadingError, ex.OutOfMemoryError,
                          ex.ReadOnlyError, ex.MasterDownError, ex.TryAgainError, ex.ClusterDownError)):
        return True
    return str(error).startswith(TRANSIENT_REPLIES)


class RecsToRedis(_RedisWriter):
    """:class:`operators.records.RecsBatch` -> Redis, each message whole (its ``model.stored_n`` items, the list the
    API filters); yields each message for the Kafka sink as JSON with its first ``top_n`` items."""

    def __init__(self, host: str, port: int, db: int, prefix: str, pipeline_size: int, max_backoff_s: float = 5.0,
                 *, top_n: int) -> None:
        super().__init__(host, port, db, prefix, pipeline_size, max_backoff_s)
        self.top_n = top_n

    def flat_map(self, value):  # type: ignore[no-untyped-def]
        batch: RecsBatch = value
        p = self.prefix
        commands: list[tuple[str, tuple[Any, ...]]] = []
        out = []
        for msg in batch.messages:
            js = dumps(msg)
            shown = published(msg, self.top_n)
            out.append(js if shown is msg else dumps(shown))
            commands.append(("set_if_newer", (f"{p}recs:{msg['user_id']}", msg["event_ts"], js)))
            commands.append(("zadd", (f"{p}users", {msg["user_id"]: msg["processed_at"]}, False, False, False,
                                      False, True)))  # GT: only move forward
        if batch.trending:
            commands.append(("set", (f"{p}trending", dumps([{"item_id": i, "score": s} for i, s in batch.trending]))))
        if batch.combiner:
            body = dumps({**batch.combiner, "updated_at": int(time.time() * 1000)})
            commands.append(("set", (f"{p}model:combiner", body)))
        self._write(commands)
        return out


class ArmsToRedis(_RedisWriter):
    """Experiment summaries (JSON, ``operators.experiments``) -> each arm's running totals in the hash
    ``rec:experiments``; yields each summary on for the Kafka sink."""

    def flat_map(self, value):  # type: ignore[no-untyped-def]
        import json

        doc = json.loads(value)
        body = dumps({"experiment": doc["experiment"], "arm": doc["arm"], **doc["totals"],
                      "updated_at": doc["updated_at"]})
        self._write([("hset", (f"{self.prefix}experiments", doc["arm"], body))])
        return [value]


class NeighborsToRedis(_RedisWriter):
    """:class:`operators.records.ItemLists` -> ``rec:similar:<item>``; the list of an item gone (withdrawn, deleted,
    expired) is deleted."""

    def flat_map(self, value):  # type: ignore[no-untyped-def]
        lists: ItemLists = value
        p = self.prefix
        commands: list[tuple[str, tuple[Any, ...]]] = [
            ("set", (f"{p}similar:{item}", dumps(similar_message(item, nb, lists.updated_at))))
            for item, nb in lists.neighbors.items()]
        commands += [("delete", (f"{p}similar:{item}",)) for item in lists.removed]
        self._write(commands)
        return iter(())
