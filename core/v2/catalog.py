"""The item catalog of the array core: raw features per item (Python, per catalog record) and the item vectors
built from them (numpy, once per catalog change).

An item vector is ``[genre one-hot | release-decade one-hot | hashed title TF-IDF]``, each block L2-normalised and
weighted (1, 0.5, 0.5); title terms are hashed with CRC-32 into ``N_HASH`` buckets, IDF is
``ln((1 + N) / (1 + df)) + 1`` over the current catalog (README "The model", content-based).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
GENRE_ORDER = np.argsort(np.argsort(np.array(GENRES, dtype=np.str_))).astype(np.int64)
"""Each genre's place in the order of the genre names (ties between equally strong genres)."""
N_HASH = 256
FIRST_DECADE, N_DECADES = 1920, 11
DIM = len(GENRES) + N_DECADES + N_HASH
GENRE_WEIGHT, YEAR_WEIGHT, TITLE_WEIGHT = 1.0, 0.5, 0.5
_GENRE_INDEX = {g.lower(): k for k, g in enumerate(GENRES)}
_YEAR_SUFFIX = re.compile(r"\(\s*\d{4}\s*\)\s*$")
_TOKEN = re.compile(r"[a-z0-9]+")


class Features(NamedTuple):
    """One item's raw features."""

    genres: tuple[int, ...]  # indices into GENRES, sorted
    decade: int  # index into the decade block, -1 when the year is unknown
    terms: tuple[tuple[int, int], ...]  # (title hash bucket, term count), by bucket


def features(record: Mapping[str, Any]) -> tuple[str, Features]:
    """``(item_id, features)`` of a catalog record (genres not in GENRES and a non-integer year are ignored)."""
    item = record.get("item_id")
    if isinstance(item, int) and not isinstance(item, bool):
        item = str(item)
    if not isinstance(item, str) or not item:
        raise ValueError(f"item_id {item!r} must be a non-empty string")
    title = record.get("title") or ""
    if not isinstance(title, str):
        raise ValueError(f"title {title!r} of item {item} must be a string")
    raw = record.get("genres") or []
    if isinstance(raw, str) or not isinstance(raw, list | tuple):
        raise ValueError(f"genres {raw!r} of item {item} must be a list of strings")
    genres = sorted({_GENRE_INDEX[g.lower()] for g in raw if isinstance(g, str) and g.lower() in _GENRE_INDEX})
    year = record.get("year")
    decade = -1
    if isinstance(year, int) and not isinstance(year, bool):
        decade = min(max((year // 10 * 10 - FIRST_DECADE) // 10, 0), N_DECADES - 1)
    terms: dict[int, int] = {}
    for t in _TOKEN.findall(_YEAR_SUFFIX.sub("", title).lower()):
        b = zlib.crc32(t.encode("utf-8")) % N_HASH
        terms[b] = terms.get(b, 0) + 1
    return item, Features(tuple(genres), decade, tuple(sorted(terms.items())))


class Vectors(NamedTuple):
    """Every item's vector as compressed rows over the dense item ids (an item outside the catalog has none)."""

    ptr: np.ndarray  # (items + 1,) row k is col/val[ptr[k]:ptr[k+1]]
    col: np.ndarray
    val: np.ndarray
    norm: np.ndarray  # (items,) L2 norm of each vector
    genres: np.ndarray  # (items,) bitmask of the item's genres
    post_ptr: np.ndarray  # (DIM + 1,) the inverted index: dimension d's items and values are
    post_item: np.ndarray  # post_item/post_val[post_ptr[d]:post_ptr[d+1]], by item id (a search reads only the
    post_val: np.ndarray  # items sharing a dimension with the profile)


def build(n_items: int, feats: Mapping[int, Features]) -> Vectors:
    """The vectors of the catalog ``feats`` (dense item id -> features) with the current IDF."""
    n_cat = len(feats)
    df = np.zeros(N_HASH, dtype=np.int64)
    for f in feats.values():
        for b, _ in f.terms:
            df[b] += 1
    idf = np.log((1 + n_cat) / (1 + df)) + 1.0
    rows: list[tuple[list[int], list[float]]] = [([], [])] * n_items
    gmask = np.zeros(n_items, dtype=np.int64)
    nd = len(GENRES) + N_DECADES
    for i, f in feats.items():
        cols: list[int] = []
        vals: list[float] = []
        if f.genres:
            cols.extend(f.genres)
            vals.extend([GENRE_WEIGHT * (1.0 / np.sqrt(len(f.genres)))] * len(f.genres))
            gmask[i] = sum(1 << g for g in f.genres)
        if f.decade >= 0:
            cols.append(len(GENRES) + f.decade)
            vals.append(YEAR_WEIGHT)
        if f.terms:
            x = [tf * idf[b] for b, tf in f.terms]
            t_norm = float(np.sqrt(sum(v * v for v in x)))
            cols.extend(nd + b for b, _ in f.terms)
            vals.extend(TITLE_WEIGHT * (v / t_norm) for v in x)
        rows[i] = (cols, vals)
    lengths = np.array([len(c) for c, _ in rows], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    col = np.array([c for cs, _ in rows for c in cs], dtype=np.int64)
    val = np.array([v for _, vs in rows for v in vs], dtype=np.float64)
    owner = np.repeat(np.arange(n_items), lengths)
    norm = np.sqrt(np.bincount(owner, weights=val * val, minlength=n_items))
    by_dim = np.lexsort((owner, col))
    post_ptr = np.concatenate([[0], np.cumsum(np.bincount(col, minlength=DIM))]).astype(np.int64)
    return Vectors(ptr, col, val, norm, gmask, post_ptr, owner[by_dim].astype(np.int64), val[by_dim])
