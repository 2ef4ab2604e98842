"""Catalog records (the ``items`` topic): one JSON object per item.

``{"item_id": "1", "title": "Toy Story", "year": 1995, "genres": ["Animation", "Children's", "Comedy"]}``;
``year`` may be null, ``genres`` may be empty; a title has at most :data:`MAX_TITLE_CHARS` characters, a record at
most :data:`MAX_GENRES` genres of at most :data:`MAX_GENRE_CHARS` characters, none of them lone surrogates.
``item_id`` follows the id rules of :mod:`udfs.events` (:func:`udfs.events.id_problem`: no control characters, line
separators or surrogates, not ``.`` or ``..``, no surrounding white space). The job joins the records into the
stream (content features); ``ingest.catalog`` publishes them.

The item's lifecycle: ``"available": false`` withdraws it (``true``, the default, makes it available again);
``"expires_at"``: epoch milliseconds of event time from which it is no longer recommended (null: never). A null value
(a tombstone) for the item's key deletes it. Withdrawn, expired and deleted items are never recommended nor listed as
neighbours (``core.v2.model.settle``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from udfs.events import DEFAULT_LIMITS, id_problem

GENRE_SEPARATOR = "|"
MAX_TITLE_CHARS = 500
MAX_GENRES = 30
MAX_GENRE_CHARS = 64
MAX_EXPIRES_AT = DEFAULT_LIMITS.max_ts_ms
"""The latest ``expires_at`` (the latest event time an event may have)."""


def _text_problem(text: str, limit: int) -> str | None:
    """Why a title or genre is refused: longer than ``limit`` characters, or a lone surrogate (no encoding has it)."""
    if len(text) > limit:
        return f"has {len(text)} characters, more than {limit}"
    if any("\ud800" <= c <= "\udfff" for c in text):
        return "contains a lone surrogate"
    return None


def validate_item_id(item_id: str, what: str, context: str = "") -> str:
    """``item_id`` if it follows the id rules; ValueError ``"<what> has a bad item_id ...: it <problem><context>"``."""
    problem = id_problem(item_id) or ("has surrounding white space" if item_id.strip() != item_id else None)
    if not item_id:
        problem = "must be a non-empty string"
    if problem is not None:
        raise ValueError(f"{what} has a bad item_id {item_id!r:.80}: it {problem}{context}")
    return item_id


def validate_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """Check one catalog record and return it normalised; the error names the field and the value."""
    item_id = record.get("item_id")
    if not isinstance(item_id, str) or not item_id:
        raise ValueError(f"catalog record has a bad item_id {item_id!r:.80}: it must be a non-empty string: "
                         f"{dict(record)!r:.200}")
    validate_item_id(item_id, "catalog record", f": {dict(record)!r:.200}")
    title = record.get("title")
    if not isinstance(title, str):
        raise ValueError(f"item {item_id}: title must be a string, got {title!r:.200}")
    problem = _text_problem(title, MAX_TITLE_CHARS)
    if problem is not None:
        raise ValueError(f"item {item_id}: title {title!r:.80} {problem}")
    year = record.get("year")
    if year is not None and (isinstance(year, bool) or not isinstance(year, int)):
        raise ValueError(f"item {item_id}: year must be an integer or None, got {year!r}")
    genres = record.get("genres", [])
    if not isinstance(genres, (list, tuple)) or not all(isinstance(g, str) and g for g in genres):
        raise ValueError(f"item {item_id}: genres must be a list of non-empty strings, got {genres!r:.200}")
    if len(genres) > MAX_GENRES:
        raise ValueError(f"item {item_id}: {len(genres)} genres, more than {MAX_GENRES}")
    for genre in genres:
        problem = _text_problem(genre, MAX_GENRE_CHARS)
        if problem is not None:
            raise ValueError(f"item {item_id}: genre {genre!r:.80} {problem}")
    bad = [g for g in genres if GENRE_SEPARATOR in g]
    if bad:
        raise ValueError(f"item {item_id}: genre {bad[0]!r} contains the separator {GENRE_SEPARATOR!r}")
    out: dict[str, Any] = {"item_id": item_id, "title": title, "year": year, "genres": list(genres)}
    if "available" in record:
        available = record["available"]
        if not isinstance(available, bool):
            raise ValueError(f"item {item_id}: available must be true or false, got {available!r:.80}")
        out["available"] = available
    if "expires_at" in record:
        expires = record["expires_at"]
        if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int)
                                    or not 0 <= expires <= MAX_EXPIRES_AT):
            raise ValueError(f"item {item_id}: expires_at must be null or integer epoch milliseconds in "
                             f"0..{MAX_EXPIRES_AT}, got {expires!r:.80}")
        out["expires_at"] = expires
    return out


def parse_catalog(raw: str | bytes) -> dict[str, Any]:
    """Decode and validate one catalog message; ValueError (naming the field and value) when invalid."""
    import json

    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ValueError(f"catalog record is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"catalog record must be a JSON object, got {type(obj).__name__}")
    if isinstance(obj.get("item_id"), int) and not isinstance(obj.get("item_id"), bool):
        obj["item_id"] = str(obj["item_id"])
    return validate_record(obj)
