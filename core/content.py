"""Content-based model: item feature vectors from catalog records and decayed user taste profiles.

An item vector is the concatenation of three blocks, each L2-normalised and then multiplied by its
weight (an empty block stays zero)::

    [ genre one-hot (the 19 ML-100K genres) | release decade one-hot | hashed title TF-IDF (n_hash) ]

Title terms are the lower-cased alphanumeric tokens of the title without a trailing ``(YYYY)``;
each term is hashed (CRC-32, stable across processes) into one of ``n_hash`` buckets, so a new item
never needs a vocabulary refit. TF is the count of terms in a bucket, IDF is
``ln((1 + N) / (1 + df)) + 1`` from document frequencies that are updated as items are added or
changed. Because IDF moves as the catalog grows, :meth:`ContentModel.vector` always uses the
current IDF.

A :class:`UserProfile` is the decayed, value-weighted mean of the vectors of the items a user
engaged: ``Σ_j w_j·d_j·x_j / Σ_j w_j·d_j`` with ``d_j = 2^(-(T - ts_j) / half_life)`` (``T`` the latest
event time; without a half-life ``d_j = 1``, the plain weighted mean). It is kept incrementally as a
sparse sum; a re-engagement replaces the item's weight and time, and the ``max_items`` most recent
items are kept. The profile sums the item vectors as they were when engaged; after catalog changes
:meth:`UserProfile.rebuild` recomputes it exactly from the kept items.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

logger = logging.getLogger(__name__)

GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
_GENRE_INDEX = {g.lower(): k for k, g in enumerate(GENRES)}
_YEAR_SUFFIX = re.compile(r"\(\s*\d{4}\s*\)\s*$")
_TOKEN = re.compile(r"[a-z0-9]+")


class ItemFeatures(TypedDict):
    """The per-item piece: raw features, turned into a vector with the current IDF."""

    genres: list[int]  # indices into GENRES
    decade: int | None  # index into the decade block, None when the year is unknown
    terms: dict[int, int]  # title hash bucket -> term count


def title_terms(title: str) -> list[str]:
    """Lower-cased alphanumeric tokens of a title, without a trailing ``(YYYY)``."""
    return _TOKEN.findall(_YEAR_SUFFIX.sub("", title).lower())


MEMO_MAX = 4096  # ContentModel._best_memo: queries kept (~5 KB each)
MEMO_EXTRA = 16  # ... and items kept per query beyond the n asked for (room for skipped ones)


def hash_bucket(term: str, n_hash: int) -> int:
    """The feature-hashing bucket of a term (CRC-32, identical in every process)."""
    return zlib.crc32(term.encode("utf-8")) % n_hash


def _positive(name: str, value: float, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} {value!r} must be {'non-negative' if allow_zero else 'positive'}")
    return float(value)


def _spans(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The positions ``starts[0]..ends[0]-1, starts[1]..ends[1]-1, ...`` as one array, and each span's length."""
    lengths = ends - starts
    pos = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(int(lengths.sum()))
    return pos, lengths


@dataclass
class _Csr:
    """The catalog's vectors as compressed sparse rows: row k (item ``ids[k]``) holds ``data[indptr[k]:indptr[k+1]]``
    at columns ``indices[...]``; ``row`` is the row of each stored value, ``norms`` each row's L2 norm."""

    ids: list[str]
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    row: np.ndarray
    norms: np.ndarray
    # scoring layout: the few always-present dimensions (genres, decades) as a dense block stored once per
    # distinct row (``sig``; item k has row ``sig_of[k]``: a catalog has far fewer genre/decade combinations
    # than items), the rest (title buckets) as (row, column, value) triples in row order, row k's at
    # ``t_ptr[k]:t_ptr[k+1]``, and each row's title norm ``t_norms``. (Not column order: a few common title words
    # hold most of the triples, so touching only a profile's buckets saves little.)
    sig: np.ndarray
    sig_of: np.ndarray
    t_row: np.ndarray
    t_col: np.ndarray
    t_data: np.ndarray
    t_ptr: np.ndarray
    t_norms: np.ndarray
    # the items of each distinct genre/decade row: rows ``g_items[g_ptr[s]:g_ptr[s+1]]`` have ``sig_of == s``;
    # per row s, over its items with a non-zero vector: how many (``g_count``), the smallest and largest norm
    # (``g_min_norm``: inf when none) and the largest title norm; the bounds of :meth:`ContentModel._best`
    g_items: np.ndarray
    g_ptr: np.ndarray
    g_count: np.ndarray
    g_min_norm: np.ndarray
    g_max_norm: np.ndarray
    g_max_tnorm: np.ndarray


def _groups(sig_of: np.ndarray, n_sigs: int, norms: np.ndarray, t_norms: np.ndarray) -> tuple[np.ndarray, ...]:
    """The per-signature arrays of :class:`_Csr` (``g_items`` ... ``g_max_tnorm``)."""
    items = np.argsort(sig_of, kind="stable")
    ptr = np.searchsorted(sig_of[items], np.arange(n_sigs + 1))
    live = norms > 0
    count = np.bincount(sig_of[live], minlength=n_sigs)
    min_norm = np.full(n_sigs, np.inf)
    np.minimum.at(min_norm, sig_of[live], norms[live])
    max_norm = np.zeros(n_sigs)
    np.maximum.at(max_norm, sig_of, norms)
    max_tnorm = np.zeros(n_sigs)
    np.maximum.at(max_tnorm, sig_of, t_norms)
    return items, ptr, count, min_norm, max_norm, max_tnorm


class ContentModel:
    """The item catalog as feature vectors; scores user profiles and finds similar items."""

    def __init__(
        self,
        n_hash: int = 256,
        genre_weight: float = 1.0,
        year_weight: float = 0.5,
        title_weight: float = 0.5,
        first_decade: int = 1920,
        last_decade: int = 2020,
    ) -> None:
        if isinstance(n_hash, bool) or not isinstance(n_hash, int) or n_hash < 1:
            raise ValueError(f"n_hash {n_hash!r} must be a positive integer")
        if first_decade % 10 or last_decade % 10 or last_decade < first_decade:
            raise ValueError(f"first_decade {first_decade!r} and last_decade {last_decade!r} must be decades, in order")
        self.n_hash = n_hash
        self.genre_weight = _positive("genre_weight", genre_weight, allow_zero=True)
        self.year_weight = _positive("year_weight", year_weight, allow_zero=True)
        self.title_weight = _positive("title_weight", title_weight, allow_zero=True)
        self.first_decade = first_decade
        self.n_decades = (last_decade - first_decade) // 10 + 1
        self.items: dict[str, ItemFeatures] = {}
        # each item's place in the catalog: its record's position (an update keeps the first), or the order of
        # arrival for records without one
        self.positions: dict[str, tuple[int, int]] = {}
        self.df: dict[int, int] = {}  # title bucket -> number of items whose title has it
        self._cache: dict[str, np.ndarray] = {}
        self._matrix: _Csr | None = None
        self._newest: list[str] | None = None
        self._rows: dict[str, int] = {}
        # single-item profiles' catalog searches: query bytes -> (best MEMO_EXTRA + n items unskipped, all of them?)
        self._memo: dict[bytes, tuple[list[tuple[str, float]], bool]] = {}

    @property
    def dim(self) -> int:
        return len(GENRES) + self.n_decades + self.n_hash

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"], state["_matrix"], state["_newest"], state["_memo"] = {}, None, None, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_memo", {})  # pickled by a version without it

    def features(self, record: Mapping[str, Any]) -> tuple[str, ItemFeatures]:
        """Validate a catalog record and extract ``(item_id, features)`` (pure; the catalog is not changed)."""
        item = record.get("item_id")
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str) or not item:
            raise ValueError(f"item_id {item!r} must be a non-empty string")
        title = record.get("title") or ""
        if not isinstance(title, str):
            raise ValueError(f"title {title!r} of item {item} must be a string")
        raw_genres = record.get("genres") or []
        if isinstance(raw_genres, str) or not isinstance(raw_genres, Iterable):
            raise ValueError(f"genres {raw_genres!r} of item {item} must be a list of strings")
        genres: set[int] = set()
        for g in raw_genres:
            k = _GENRE_INDEX.get(g.lower()) if isinstance(g, str) else None
            if k is None:
                logger.debug("content: ignoring unseen genre %r of item %s", g, item)
            else:
                genres.add(k)
        year = record.get("year")
        decade: int | None = None
        if isinstance(year, int) and not isinstance(year, bool):
            decade = min(max((year // 10 * 10 - self.first_decade) // 10, 0), self.n_decades - 1)
        elif year is not None:
            logger.debug("content: ignoring year %r of item %s (not an integer)", year, item)
        terms: dict[int, int] = {}
        for t in title_terms(title):
            b = hash_bucket(t, self.n_hash)
            terms[b] = terms.get(b, 0) + 1
        return item, {"genres": sorted(genres), "decade": decade, "terms": terms}

    def add_item(self, record: Mapping[str, Any], position: int | None = None) -> str:
        """Add a new item or replace a changed one; its vector is usable immediately. Returns the item id.

        ``position``: the record's place in the catalog topic (:func:`catalog_position`), which orders
        :meth:`newest` whatever order records are added in (a restore re-adds them in another); records without one
        are placed after every other, in the order they are added."""
        item, feats = self.features(record)
        if item not in self.positions:
            self.positions[item] = (0, position) if position is not None else (1, len(self.positions))
        old = self.items.get(item)
        if old is not None:
            for b in old["terms"]:
                self.df[b] -= 1
                if self.df[b] == 0:
                    del self.df[b]
        for b in feats["terms"]:
            self.df[b] = self.df.get(b, 0) + 1
        self.items[item] = feats
        self._cache.clear()  # IDF changed for every item
        self._matrix = None
        self._newest = None
        self._memo = {}
        logger.debug("content: %s item %s", "updated" if old else "added", item)
        return item

    def idf(self, bucket: int) -> float:
        n = len(self.items)
        return math.log((1 + n) / (1 + self.df.get(bucket, 0))) + 1.0

    def vector(self, item: str) -> np.ndarray | None:
        """The item's feature vector with the current IDF, None for an unknown item."""
        cached = self._cache.get(item)
        if cached is not None:
            return cached
        feats = self.items.get(item)
        if feats is None:
            return None
        cols, vals = self._nonzeros(feats, self.idf, np.zeros(self.n_hash))
        vec = np.zeros(self.dim)
        vec[cols] = vals
        self._cache[item] = vec
        return vec

    def _nonzeros(self, feats: ItemFeatures, idf: Callable[[int], float],
                  buf: np.ndarray) -> tuple[list[int], list[float]]:
        """The non-zeros of an item's vector in column order: ``[genre one-hot | decade one-hot | title TF-IDF]``,
        each block L2-normalised and weighted (``buf``: an all-zero scratch row of ``n_hash``, left all zero; the
        title norm is taken of that dense row, as numpy would of the vector's block)."""
        cols: list[int] = []
        vals: list[float] = []
        genres = feats["genres"]
        if genres and self.genre_weight:
            cols.extend(genres)
            vals.extend([self.genre_weight * (1.0 / math.sqrt(len(genres)))] * len(genres))
        if feats["decade"] is not None and self.year_weight:
            cols.append(len(GENRES) + feats["decade"])
            vals.append(self.year_weight * 1.0)
        if feats["terms"] and self.title_weight:
            terms = sorted((b, tf * idf(b)) for b, tf in feats["terms"].items())
            buckets = [b for b, _ in terms]
            buf[buckets] = [x for _, x in terms]
            norm = float(np.linalg.norm(buf))
            buf[buckets] = 0.0
            n_fixed = len(GENRES) + self.n_decades
            cols.extend(n_fixed + b for b in buckets)
            vals.extend(self.title_weight * (x / norm) for _, x in terms)
        return cols, vals

    def genres(self, item: str) -> list[str]:
        feats = self.items.get(item)
        return [GENRES[k] for k in feats["genres"]] if feats else []

    def _catalog(self) -> _Csr:
        """All item vectors as a sparse row matrix, item ids sorted (cached until the catalog changes).

        An item vector has a handful of non-zeros (its genres, its decade, its title's buckets) out of
        ``dim``; kept sparse, scoring a profile against the whole catalog costs O(non-zeros), not
        O(items x dim).
        """
        if self._matrix is None:
            ids = sorted(self.items)
            idf = {b: self.idf(b) for b in self.df}
            buf = np.zeros(self.n_hash)
            cols: list[int] = []
            vals: list[float] = []
            lengths = np.zeros(len(ids), dtype=np.int64)
            for k, item in enumerate(ids):
                c, v = self._nonzeros(self.items[item], idf.__getitem__, buf)
                cols.extend(c)
                vals.extend(v)
                lengths[k] = len(c)
            data, indices = np.array(vals, dtype=np.float64), np.array(cols, dtype=np.int64)
            indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            row = np.repeat(np.arange(len(ids)), lengths)
            nd = len(GENRES) + self.n_decades
            dense = np.zeros((len(ids), nd))
            low = indices < nd
            dense[row[low], indices[low]] = data[low]
            # the distinct genre/decade rows (a row is a function of the item's genres and decade), first seen first
            index: dict[tuple[tuple[int, ...], int | None], int] = {}
            first: list[int] = []
            sig_of = np.empty(len(ids), dtype=np.int64)
            for k, item in enumerate(ids):
                feats = self.items[item]
                key = (tuple(feats["genres"]), feats["decade"])
                found = index.get(key)
                if found is None:
                    found = index[key] = len(first)
                    first.append(k)
                sig_of[k] = found
            sig = dense[first]
            t_row, t_data = row[~low], data[~low]
            norms = np.sqrt(np.bincount(row, weights=data * data, minlength=len(ids)))
            t_norms = np.sqrt(np.bincount(t_row, weights=t_data * t_data, minlength=len(ids)))
            self._matrix = _Csr(ids, data, indices, indptr, row, norms, np.ascontiguousarray(sig), sig_of,
                                t_row, indices[~low], t_data, np.searchsorted(t_row, np.arange(len(ids) + 1)),
                                t_norms, *_groups(sig_of, len(first), norms, t_norms))
            self._rows = {i: k for k, i in enumerate(ids)}
        return self._matrix

    def weighted_sum(self, items: list[str], weights: np.ndarray) -> np.ndarray:
        """``Σ_k weights[k] · vector(items[k])`` as a dense vector (each item must be in the catalog)."""
        m = self._catalog()
        rows = np.array([self._rows[i] for i in items], dtype=np.int64)
        pos, lengths = _spans(m.indptr[rows], m.indptr[rows + 1])
        return np.bincount(m.indices[pos], weights=m.data[pos] * np.repeat(weights, lengths), minlength=self.dim)

    @staticmethod
    def _signature_dots(m: _Csr, query: np.ndarray) -> tuple[np.ndarray, float]:
        """Each distinct genre/decade row's dot product with ``query``, and ``|query|``: the parts of every cosine
        that :meth:`_cosines` and :meth:`_bounded` share (so both compute the same floats)."""
        return m.sig @ query[: m.sig.shape[1]], float(np.linalg.norm(query))

    def _cosines(self, query: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Every catalog item's cosine with ``query`` (the brute-force reference of :meth:`_best`)."""
        m = self._catalog()
        n = len(m.ids)
        g, q_norm = self._signature_dots(m, query)
        dots = g[m.sig_of] + np.bincount(m.t_row, weights=m.t_data * query[m.t_col], minlength=n)
        denom = m.norms * q_norm
        return m.ids, np.divide(dots, denom, out=np.zeros(n), where=denom > 0)

    def score(self, profile: UserProfile, items: Iterable[str]) -> dict[str, float]:
        """Cosine of the profile and each item's vector (0.0 for unknown items or an empty profile)."""
        p = profile.vector(self.dim)
        pn = float(np.linalg.norm(p))
        out: dict[str, float] = {}
        for item in items:
            v = self.vector(item)
            vn = float(np.linalg.norm(v)) if v is not None else 0.0
            out[item] = float(p @ v) / (pn * vn) if v is not None and pn > 0 and vn > 0 else 0.0
        return out

    def profile_genres(self, profile: UserProfile, n: int = 3) -> list[str]:
        """The profile's ``n`` strongest genres (positive weight only), strongest first."""
        g = profile.vector(self.dim)[: len(GENRES)]
        order = sorted((k for k in range(len(GENRES)) if g[k] > 0), key=lambda k: (-g[k], GENRES[k]))
        return [GENRES[k] for k in order[:n]]

    def reason(self, profile: UserProfile, item: str, n_genres: int = 3, top: list[str] | None = None) -> str:
        """Why ``item`` fits the profile: the genres it shares with the profile's top ``n_genres`` (``top``)."""
        item_genres = set(self.genres(item))
        shared = [g for g in (self.profile_genres(profile, n_genres) if top is None else top) if g in item_genres]
        if shared:
            return f"matches your taste for {', '.join(shared)}"
        return "similar to items you engaged with"

    def rank(
        self, profile: UserProfile, n: int, exclude: Iterable[str] | None = None
    ) -> list[tuple[str, float, str]]:
        """The ``n`` catalog items most similar to the profile, as ``(item, cosine, reason)``.

        ``exclude`` defaults to the items in the profile. Items with a cosine of 0 are not returned.
        """
        best = self.top_items(profile, n, exclude)
        top = self.profile_genres(profile)
        return [(i, s, self.reason(profile, i, top=top)) for i, s in best]

    def top_items(self, profile: UserProfile, n: int, exclude: Iterable[str] | None = None) -> list[tuple[str, float]]:
        """:meth:`rank` without the reasons: ``(item, cosine)``."""
        if n < 0:
            raise ValueError(f"n {n!r} must be non-negative")
        skip = profile.items if exclude is None else exclude
        if len(profile.items) == 1:
            return self._best_memo(profile.vector(self.dim), n, skip)
        return self._best(profile.vector(self.dim), n, skip)

    def _best_memo(self, query: np.ndarray, n: int, skip: Iterable[str]) -> list[tuple[str, float]]:
        """:meth:`_best` through a memo of searches by query vector, for the profiles of one item: a new user's
        (cold start searches the whole catalog), whose query is the same for everyone who began with that item and
        weight. The memo keeps ``n + MEMO_EXTRA`` items searched without skipping any; the skipped ones (the user's
        item, denied items) are taken out after, which gives :meth:`_best`'s list (the order is total: cosine, then
        id). It holds at most ``MEMO_MAX`` queries and is emptied when the catalog changes."""
        if n <= 0:
            return []
        skip = skip if isinstance(skip, (set, frozenset, dict)) else set(skip)
        key = query.tobytes()
        found = self._memo.get(key)
        if found is None or (len(found[0]) < n + MEMO_EXTRA and not found[1]):  # new, or filled for a smaller n
            want = n + MEMO_EXTRA
            ranking = self._best(query, want, ())
            found = (ranking, len(ranking) < want)
            if len(self._memo) >= MEMO_MAX:
                del self._memo[next(iter(self._memo))]  # the oldest query
            self._memo[key] = found
        out = [x for x in found[0] if x[0] not in skip][:n]
        if len(out) < n and not found[1]:  # more skipped items than the memo has spare: search
            return self._best(query, n, skip)
        return out

    def _best(self, query: np.ndarray, n: int, skip: Iterable[str]) -> list[tuple[str, float]]:
        """The ``n`` items of highest positive cosine with ``query``, ``skip`` left out, as ``(item, cosine)`` by
        cosine then id: what sorting :meth:`_cosines` gives, bit for bit, with the title part computed only for
        the items that can still make the list.

        An item's cosine is at least its genre/decade part alone (title terms only add: every feature and every
        profile weight is non-negative) and at most that part plus ``|title_i| · |title_query|`` (Cauchy-Schwarz).
        The n-th best lower bound is a floor the n-th best cosine reaches, so no item whose upper bound lies
        below it can be in the list. The bounds are computed per genre/decade signature (:meth:`_bounded`: 1,723
        signatures for the 20,000-item synthetic catalog); about a tenth of the items pass.
        """
        m = self._catalog()
        total = len(m.ids)
        if n <= 0 or total == 0:
            return []
        if not query.any():
            return []
        skip_rows = np.fromiter((r for r in map(self._rows.get, skip) if r is not None), dtype=np.int64)
        if float(query.min()) < 0.0:  # rounding left a tiny negative weight: the bounds need non-negative weights
            rows, sims = np.arange(total), self._cosines(query)[1]
            sims[skip_rows] = 0.0
        else:
            rows, sims = self._bounded(m, query, n, skip_rows)
        return self._listed(m, rows, sims, n)

    @staticmethod
    def _listed(m: _Csr, rows: np.ndarray, sims: np.ndarray, n: int) -> list[tuple[str, float]]:
        """The ``n`` best positive ``(item, cosine)`` of these catalog rows, by cosine then id."""
        keep = sims > 0.0
        rows, sims = rows[keep], sims[keep]
        if len(rows) > n:
            kth = np.partition(sims, len(sims) - n)[len(sims) - n]
            keep = sims >= kth  # every tie of the n-th score, so the id tie-break below is exact
            rows, sims = rows[keep], sims[keep]
        order = np.lexsort((rows, -sims))[:n]  # by cosine, then row: rows are in id order, so then by id
        ids = m.ids
        return [(ids[r], s) for r, s in zip(rows[order].tolist(), sims[order].tolist(), strict=True)]

    @staticmethod
    def _row_cosines(m: _Csr, query: np.ndarray, g: np.ndarray, q_norm: float, rows: np.ndarray) -> np.ndarray:
        """The cosines of these catalog rows (non-zero vectors) with ``query``, given :meth:`_signature_dots`: the
        same products summed in the same order as :meth:`_cosines`' bincount, over the same denominators (the same
        floats), with the title part computed for these rows only."""
        pos, lengths = _spans(m.t_ptr[rows], m.t_ptr[rows + 1])
        title = np.bincount(np.repeat(np.arange(len(rows)), lengths), weights=m.t_data[pos] * query[m.t_col[pos]],
                            minlength=len(rows))
        return (g[m.sig_of[rows]] + title) / (m.norms[rows] * q_norm)

    @staticmethod
    def _bounded(m: _Csr, query: np.ndarray, n: int, skip_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_best`'s candidates (rows, exact cosines) for a non-negative ``query``: the items whose upper bound
        reaches the floor, found per genre/decade row (signature) s, whose items share its part ``g_s``: every item
        of s has a cosine of at least ``g_s / (max norm in s · |q|)`` and at most
        ``(g_s + max title norm in s · |title_q|) / (min norm in s · |q|)``."""
        g, q_norm = ContentModel._signature_dots(m, query)
        live = m.g_count > 0
        lower = np.divide(g, m.g_max_norm * q_norm, out=np.zeros(len(g)), where=live)
        upper = np.divide(g + m.g_max_tnorm * float(np.linalg.norm(query[m.sig.shape[1]:])), m.g_min_norm * q_norm,
                          out=np.zeros(len(g)), where=live)
        skipped = np.zeros(len(m.ids), dtype=bool)
        skipped[skip_rows] = True
        count = m.g_count
        if len(skip_rows):
            hit = np.unique(skip_rows[m.norms[skip_rows] > 0])
            count = count - np.bincount(m.sig_of[hit], minlength=len(g))
        # the floor: going down the signatures by lower bound, the one where n (unskipped, non-zero) items are
        # reached; n items have a cosine at least that high, so the n-th best does
        floor = 0.0
        for top in (min(len(g), 64), len(g)):  # usually the 64 best signatures hold n items: sort only those
            best = np.argpartition(-lower, top - 1)[:top] if top < len(g) else np.arange(len(g))
            best = best[np.argsort(-lower[best], kind="stable")]
            reached = int(np.searchsorted(np.cumsum(count[best]), n))
            if reached < top:
                floor = float(lower[best[reached]])
                break
        chosen = np.flatnonzero((upper * (1.0 + 1e-9) >= floor) & (upper > 0.0))
        pos, _ = _spans(m.g_ptr[chosen], m.g_ptr[chosen + 1])
        rows = m.g_items[pos]
        rows = rows[~skipped[rows] & (m.norms[rows] > 0)]
        return rows, ContentModel._row_cosines(m, query, g, q_norm, rows)

    def newest(self, n: int) -> list[str]:
        """The ``n`` items placed last in the catalog (see :meth:`add_item`; an update keeps an item's place),
        newest last."""
        if n <= 0:
            return []
        cached = self._newest
        if cached is None or len(cached) < min(n, len(self.items)):
            cached = self._newest = heapq.nlargest(n, self.items, key=self.positions.__getitem__)[::-1]
        return cached[-n:]

    def top_among(self, profile: UserProfile, items: Iterable[str], n: int) -> list[tuple[str, float]]:
        """The ``n`` of ``items`` (catalog items; others are left out) of highest positive cosine with the profile,
        as ``(item, cosine)`` by cosine then id, in one vectorised step: what :meth:`top_items` gives over the
        catalog, restricted to ``items`` (the cosines computed as :meth:`_bounded` computes them: the same floats)."""
        if n <= 0 or not profile.items:
            return []
        m = self._catalog()
        rows = np.fromiter(map(self._rows.get, items, itertools.repeat(-1)), dtype=np.int64)
        query = profile.vector(self.dim)
        rows = np.unique(rows[rows >= 0])  # sorted: rows are in id order
        rows = rows[m.norms[rows] > 0]
        if not len(rows) or not query.any():
            return []
        g, q_norm = self._signature_dots(m, query)
        return self._listed(m, rows, self._row_cosines(m, query, g, q_norm, rows), n)

    def similar_items(self, item: str, n: int) -> list[tuple[str, float]]:
        """The ``n`` items with the highest cosine to ``item`` (cold start for a new item); [] if unknown."""
        v = self.vector(item)
        if v is None:
            logger.debug("content: similar_items of unknown item %s", item)
            return []
        return self._best(v, n, (item,))


class UserProfile:
    """The per-user piece: a decayed, value-weighted mean of engaged item vectors, kept as a sparse sum.

    ``half_life_s``: decay half-life in seconds (0 or None = no decay). ``max_items``: most recent items
    kept (0 = unlimited); the oldest is removed from the sum when the cap is exceeded.
    """

    def __init__(self, half_life_s: float | None = None, max_items: int = 200) -> None:
        self.half_life_s = _positive("half_life_s", half_life_s, allow_zero=True) if half_life_s else None
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 0:
            raise ValueError(f"max_items {max_items!r} must be a non-negative integer (0 = unlimited)")
        self.max_items = max_items
        self.items: dict[str, tuple[float, int]] = {}  # item -> (weight, ts)
        self.sums: dict[int, float] = {}  # dimension -> Σ w·d·x (decayed to t_ref)
        self.z = 0.0  # Σ w·d
        self.t_ref: int | None = None  # the time the sums are decayed to (the latest ts seen)

    def _decay(self, dt_ms: float) -> float:
        return 1.0 if self.half_life_s is None else 2.0 ** (-(dt_ms / 1000.0) / self.half_life_s)

    def _add(self, w: float, ts: int, x: np.ndarray) -> None:
        if self.t_ref is None:
            self.t_ref = ts
        if ts > self.t_ref:
            f = self._decay(ts - self.t_ref)
            self.sums = {k: v * f for k, v in self.sums.items()}
            self.z *= f
            self.t_ref = ts
        c = w * self._decay(self.t_ref - ts)
        for k in np.flatnonzero(x).tolist():
            self.sums[k] = self.sums.get(k, 0.0) + c * float(x[k])
        self.z += c

    def _clear(self) -> None:
        self.sums, self.z, self.t_ref = {}, 0.0, None

    def learn_one(self, item: str, w: float, ts: int, model: ContentModel) -> bool:
        """Engage ``item`` with weight ``w`` at ``ts``, replacing an earlier engagement. False if not in the catalog."""
        _positive("w", w)
        x = model.vector(item)
        if x is None:
            logger.debug("content: profile skips item %s, not in the catalog", item)
            return False
        old = self.items.pop(item, None)
        if old is not None:
            self._add(-old[0], old[1], x)
        self._add(w, ts, x)
        self.items[item] = (float(w), ts)
        while self.max_items and len(self.items) > self.max_items:
            oldest = min(self.items, key=lambda i: (self.items[i][1], i))
            ow, ots = self.items.pop(oldest)
            ox = model.vector(oldest)
            if ox is not None:
                self._add(-ow, ots, ox)
        if not self.items:
            self._clear()
        return True

    @classmethod
    def from_items(cls, items: Mapping[str, tuple[float, int]], model: ContentModel,
                   half_life_s: float | None = None, max_items: int = 200) -> UserProfile:
        """The profile :meth:`learn_one` builds from these ``item -> (w, ts)`` engagements in time order,
        computed in one vectorised step (items not in the catalog are skipped)."""
        p = cls(half_life_s, max_items)
        kept = sorted((ts, i, w) for i, (w, ts) in items.items() if i in model.items)
        if max_items:
            kept = kept[-max_items:]
        if not kept:
            return p
        t_ref = kept[-1][0]
        ts = np.array([t for t, _, _ in kept], dtype=np.float64)
        w = np.array([w for _, _, w in kept], dtype=np.float64)
        if np.any(w <= 0) or not np.all(np.isfinite(w)):
            raise ValueError(f"w {float(w[(w <= 0) | ~np.isfinite(w)][0])!r} must be a positive finite number")
        c = w if p.half_life_s is None else w * np.exp2(-((t_ref - ts) / 1000.0) / p.half_life_s)
        sums = model.weighted_sum([i for _, i, _ in kept], c)
        p.sums = {int(k): float(sums[k]) for k in np.flatnonzero(sums)}
        p.z = float(c.sum())
        p.t_ref = t_ref
        p.items = {i: (float(wi), t) for t, i, wi in kept}
        return p

    def rebuild(self, model: ContentModel) -> None:
        """Recompute the sums from the kept items with the model's current vectors."""
        kept = self.items
        self.items = {}
        self._clear()
        for item, (w, ts) in sorted(kept.items(), key=lambda kv: (kv[1][1], kv[0])):
            x = model.vector(item)
            if x is not None:
                self._add(w, ts, x)
                self.items[item] = (w, ts)

    def vector(self, dim: int) -> np.ndarray:
        """The profile mean as a dense vector of length ``dim`` (zeros for an empty profile)."""
        v = np.zeros(dim)
        if self.z > 0:
            for k, s in self.sums.items():
                v[k] = s / self.z
        return v
