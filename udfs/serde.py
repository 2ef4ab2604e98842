"""The JSON messages the job writes (Kafka output topic and Redis values).

Recommendation message (Redis ``rec:recs:<user_id>``; the Kafka ``recommendations`` topic carries :func:`published`)::

    {"user_id": "196",
     "items": [{"item_id": "242", "score": 3.21, "reason": "because you rated Star Wars (1977)"}, ...],
     "event_id": "ml-17", "event_ts": 881250949000, "processed_at": 1764514800123,
     "history_size": 12, "trigger": "events", "mode": "weighted",
     "alternatives": {"rrf": [...], ...}}      # only with model.compare_modes: the same user in other modes

In Redis ``items`` holds the ``model.stored_n`` best items (the API filters per request from them); on the topic the
same message holds the first ``model.top_n`` of them (the ranking is the same: a longer list only adds items after).

Learned combiner (Redis ``rec:model:combiner``)::

    {"n_seen": 5120, "weights": {"itemcf": 1.9, ..., "bias": -2.1}, "updated_at": 1764514800123}

Similar items (Redis ``rec:similar:<item_id>``)::

    {"item_id": "242", "neighbors": [{"item_id": "51", "score": 0.81}, ...], "updated_at": 1764514800123}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


#: a reason longer than this is cut (ending in "..."): reasons quote catalog text (titles, genres), and a message must
#: stay far below the output record limit (kafka.max_record_bytes) whatever the catalog holds
MAX_REASON_CHARS = 200


def short_reason(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 3] + "..."


def recs_message(user_id: str, ranked: Iterable[tuple[str, float, str]], event_id: str, event_ts: int,
                 processed_at: int, history_size: int, trigger: str = "events", mode: str = "itemcf",
                 arm: str | None = None) -> dict[str, Any]:
    """``trigger``: ``events`` (the user acted), ``catalog`` (the user's last list held an item that is gone, or
    lost one that is back: ranked again with that list's version) or ``final`` (the re-rank at the end of a bounded
    input);
    ``mode``: the fusion mode (or single method) that ranked the items; reasons are cut to :data:`MAX_REASON_CHARS`;
    ``arm``: the user's arm of the running experiment (the key ``arm`` only then)."""
    msg: dict[str, Any] = {
        "user_id": user_id,
        "items": [{"item_id": j, "score": round(s, 6), "reason": short_reason(r)} for j, s, r in ranked],
        "event_id": event_id,
        "event_ts": event_ts,
        "processed_at": processed_at,
        "history_size": history_size,
        "trigger": trigger,
        "mode": mode,
    }
    if arm is not None:
        msg["arm"] = arm
    return msg


def published(msg: Mapping[str, Any], top_n: int) -> Mapping[str, Any]:
    """The recommendation message as the ``recommendations`` topic carries it: its first ``top_n`` items."""
    return msg if len(msg["items"]) <= top_n else {**msg, "items": msg["items"][:top_n]}


def similar_message(item_id: str, neighbors: Iterable[tuple[str, float]], updated_at: int) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "neighbors": [{"item_id": j, "score": s} for j, s in neighbors],
        "updated_at": updated_at,
    }


def dumps(obj: Mapping[str, Any] | list[Any]) -> str:
    return _DUMPS(obj)
