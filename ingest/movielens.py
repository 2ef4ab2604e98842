"""MovieLens-100K, read from the copy that ships inside the ``recbole`` wheel.

The files are RecBole's "atomic files": tab-separated, UTF-8, with a typed header such as
``user_id:token	item_id:token	rating:float	timestamp:float``. ``recbole`` itself is never
imported (it would pull in torch); only its install location is looked up.

Where the data comes from, first match wins:

1. the ``path`` argument (the ``ml-100k`` directory, or a file inside it);
2. the config key ``data.movielens_dir``;
3. ``<site-packages>/recbole/dataset_example/ml-100k``.

``load_events()`` turns every rating into an :class:`udfs.events.Event`::

    Event(event_id="ml-1", user_id="196", item_id="242", type="rate", weight=3.0, ts=881250949000)

where ``ml-<n>`` is the 1-based row of the rating in ``ml-100k.inter`` (header not counted),
sorted by time (ties keep the file order). ``load_catalog()`` returns the 1,682 movies as
``{"item_id": "1", "title": "Toy Story", "year": 1995, "genres": ["Animation", "Children's", "Comedy"]}``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from udfs.events import Event

logger = logging.getLogger(__name__)

DATASET = "ml-100k"
INTER_FILE = f"{DATASET}.inter"
ITEM_FILE = f"{DATASET}.item"
INSTALL_HINT = "install it with `pip install --no-deps recbole==1.2.1` (or run `make venv`)"
#: Genre placeholder of MovieLens (items 267 and 1373); not a genre, so it is left out of ``genres``.
UNKNOWN_GENRE = "unknown"
#: The 18 real genres of MovieLens-100K.
GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)

PathLike = str | os.PathLike[str]
_TITLE_YEAR = re.compile(r"^(.*\S)\s*\((\d{4})\)$")


class DatasetNotFound(FileNotFoundError):
    """The MovieLens files are not where they were looked for."""


class DatasetFormatError(ValueError):
    """A MovieLens file that does not have the expected columns or values."""


def recbole_dataset_dir() -> Path | None:
    """``recbole/dataset_example/ml-100k`` inside the installed wheel, without importing recbole."""
    try:
        spec = importlib.util.find_spec("recbole")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "dataset_example" / DATASET
        if candidate.is_dir():
            return candidate
    return Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / DATASET


def find_dataset_dir(path: PathLike | None = None, cfg: Mapping[str, Any] | None = None) -> Path:
    """The directory holding ``ml-100k.inter`` and ``ml-100k.item`` (see the module docstring for the order).

    Raises :class:`DatasetNotFound` naming the path that was tried and how to fix it.
    """
    if path is not None:
        p = Path(path)
        where = "the path argument"
        if p.is_file():
            p = p.parent
    elif cfg is not None and cfg.get("data", {}).get("movielens_dir"):
        from config import resolve_path

        p = resolve_path(cfg["data"]["movielens_dir"])
        where = "config key data.movielens_dir"
    else:
        found = recbole_dataset_dir()
        if found is None:
            raise DatasetNotFound(
                f"MovieLens-100K not found: the recbole package is not installed; {INSTALL_HINT}, "
                "or point config key data.movielens_dir at a directory holding ml-100k.inter and ml-100k.item"
            )
        p, where = found, "the recbole wheel"
    missing = [name for name in (INTER_FILE, ITEM_FILE) if not (p / name).is_file()]
    if missing:
        raise DatasetNotFound(
            f"MovieLens-100K not found: {', '.join(missing)} missing in {p} (from {where}); {INSTALL_HINT}, "
            "or set data.movielens_dir to a directory holding ml-100k.inter and ml-100k.item"
        )
    return p


def _read_atomic(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(row, [values of columns])`` for each data line of a RecBole atomic file (row is 1-based)."""
    with open(path, encoding="utf-8", newline="") as fh:
        header = fh.readline().rstrip("\r\n").split("\t")
        names = [h.split(":", 1)[0] for h in header]
        try:
            idx = [names.index(c) for c in columns]
        except ValueError:
            absent = [c for c in columns if c not in names]
            raise DatasetFormatError(f"{path}: missing column(s) {', '.join(absent)} in header {header!r}") from None
        width = len(names)
        for row, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != width:
                raise DatasetFormatError(f"{path}:{row + 1}: expected {width} tab-separated fields, got {len(fields)}")
            yield row, [fields[i] for i in idx]


def _number(raw: str, field: str, path: Path, row: int) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetFormatError(f"{path}:{row + 1}: {field} {raw!r} is not a finite number")
    return value


def iter_ratings(path: PathLike | None = None, cfg: Mapping[str, Any] | None = None) -> Iterator[Event]:
    """The ratings in file order (not time order), as events."""
    inter = find_dataset_dir(path, cfg) / INTER_FILE
    for row, (user, item, rating, ts) in _read_atomic(inter, ("user_id", "item_id", "rating", "timestamp")):
        if not user or not item:
            raise DatasetFormatError(f"{inter}:{row + 1}: empty user_id {user!r} or item_id {item!r}")
        seconds = _number(ts, "timestamp", inter, row)
        yield Event(f"ml-{row}", user, item, "rate", _number(rating, "rating", inter, row), round(seconds * 1000))


def load_events(
    path: PathLike | None = None, limit: int | None = None, cfg: Mapping[str, Any] | None = None
) -> list[Event]:
    """All 100,000 ratings as ``rate`` events in timestamp order (stable), the first ``limit`` if given."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit!r}")
    events = sorted(iter_ratings(path, cfg), key=lambda e: e.ts)  # sorted() is stable: ties keep file order
    logger.debug("loaded %d MovieLens ratings", len(events))
    return events if limit is None else events[:limit]


def load_catalog(path: PathLike | None = None, cfg: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The movies in file order: ``{"item_id", "title", "year" (int or None), "genres": [...]}``.

    The placeholder genre ``unknown`` is dropped, so two movies have no genre. A year that is not a
    number is taken from a trailing ``(YYYY)`` of the title if there is one (item 1412, whose year
    column is ``V``), else it is ``None`` (item 267, ``unkonwn``).
    """
    item_file = find_dataset_dir(path, cfg) / ITEM_FILE
    records: list[dict[str, Any]] = []
    for row, (item, title, year, genres) in _read_atomic(
        item_file, ("item_id", "movie_title", "release_year", "class")
    ):
        if not item:
            raise DatasetFormatError(f"{item_file}:{row + 1}: empty item_id")
        title, year = title.strip(), year.strip()
        release: int | None = int(year) if year.isdigit() else None
        if release is None and (m := _TITLE_YEAR.match(title)):
            title, release = m.group(1), int(m.group(2))  # item 1412: "... (1995)" with year "V"
        records.append({
            "item_id": item,
            "title": title,
            "year": release,
            "genres": [g for g in genres.split() if g != UNKNOWN_GENRE],
        })
    logger.debug("loaded %d MovieLens items", len(records))
    return records
