"""The records between the job's operators, and their one packed form.

Between Python operators a record travels as :data:`PACKED` bytes (:func:`pack`): its key (a shard) in two bytes,
then the pickle of the record. PyFlink hands ``bytes`` to the JVM and back as they are, where a
``PICKLED_BYTE_ARRAY`` record is unpickled and pickled again at every Python operator it passes (the ``key_by``
map, the keyed operator); the key is read without unpickling (:func:`packed_shard`).
"""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

from pyflink.common import Types

from core.v2.model import Batch

END_OF_TIME = 2**63 - 1
"""Long.MAX_VALUE: an event-time timer for it fires on the final watermark of a bounded input."""
PACKED = Types.PRIMITIVE_ARRAY(Types.BYTE())
"""The type of a :func:`pack` ed record."""
PICKLED = Types.PICKLED_BYTE_ARRAY()


class EventBatch(NamedTuple):
    """Intake -> model (to every model subtask): a user shard's valid, de-duplicated events of one front batch."""

    shard: int
    events: Batch


class CatalogUpdate(NamedTuple):
    """Catalog parser -> model (to every model subtask): normalised catalog records (``udfs.catalog``), each with
    its ``position`` in the topic."""

    records: list[dict[str, Any]]


class CatalogDelete(NamedTuple):
    """Catalog parser -> model (to every model subtask): a tombstone of the catalog topic (a null value for the key
    ``item_id``) deletes the item; ``position``: its place in the topic (``operators.parse.catalog_position``)."""

    item_id: str
    position: int | None


class RankRequest(NamedTuple):
    """Intake -> model (keyed by user shard): rank these users once the model has learned every event up to
    ``due`` (the newest event time among theirs); each user's newest event (by time, then id) names the version of
    the answer. ``final``: the end of a bounded input, every user of the shard, answered with the final model.
    ``events``: with an experiment running, the batch's events themselves, scored against the lists their users
    were served before them (:mod:`core.v2.experiments`) when the request is answered."""

    shard: int
    users: list[str]
    event_ids: list[str]
    event_ts: list[int]
    due: int
    final: bool = False
    events: Batch | None = None


class Tick(NamedTuple):
    """Intake -> model (keyed by user shard, to every shard but the batch's own): the events of a batch up to ``due``
    are on their way to every model subtask. The subtask holding ``shard`` sets a timer at ``due``, so that it learns
    those events and refreshes the shard's item lists once the watermark passes them, however quiet the shard's own
    users are."""

    shard: int
    due: int


class RecsBatch(NamedTuple):
    """Model -> Redis and Kafka sinks: recommendation messages (``udfs.serde.recs_message``), the trending list
    ``[(item, score)]`` and the learned combiner's weights (None when they did not change)."""

    messages: list[dict[str, Any]]
    trending: list[tuple[str, float]]
    combiner: dict[str, Any] | None


class ArmTotals(NamedTuple):
    """Model -> experiment summaries (keyed by arm): what one arm's lists earned in one answer of a shard's requests
    (:class:`core.v2.experiments.Totals`, one arm's column) and the event-time range of the events scored."""

    experiment: str
    arm: str
    events: int
    hits: int
    ndcg: float
    ndcg_sq: float
    lists: int
    age_sum_ms: int
    age_max_ms: int
    first_ts: int | None
    last_ts: int | None


class ItemLists(NamedTuple):
    """Model -> Redis: changed item neighbour lists ``{item: [(item, cosine)]}`` of one item shard (an item's list is
    written only on the timers of its shard, ``shard_of(item, job.shards)``: by one subtask), each listed item's
    distinct users, and the shard's items whose lists are withdrawn (the item is gone)."""

    neighbors: dict[str, list[tuple[str, float]]]
    users: dict[str, int]
    updated_at: int
    removed: tuple[str, ...] = ()  # items of the shard gone (withdrawn, deleted, expired): their lists are deleted


class UserLists(NamedTuple):
    """Model -> inspection: user-CF neighbour lists ``{user: [(user, cosine)]}`` of a shard's users, at the end of a
    bounded input."""

    neighbors: dict[str, list[tuple[str, float]]]


def pack(shard: int, record: Any) -> bytes:
    """``record`` as :data:`PACKED` bytes, keyed by ``shard``."""
    return shard.to_bytes(2, "big") + pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)


def packed_shard(data: bytes | bytearray) -> int:
    """The key of a :func:`pack` ed record (read without unpickling it)."""
    return (data[0] << 8) | data[1]


def unpack(data: bytes | bytearray) -> Any:
    """The record :func:`pack` packed."""
    return pickle.loads(memoryview(data)[2:])
