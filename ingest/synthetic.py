"""A seeded generator of synthetic events and the matching item catalog.

The workload looks like a real shop or streaming site, at any size:

* **items** are chosen with Zipf popularity: the item of popularity rank ``r`` (1-based) is drawn
  with probability proportional to ``1 / r**zipf_s``; a seeded permutation decides which item id
  holds which rank, so popular items are spread over the id space;
* **users** have their own Zipf-like activity (exponent ``user_zipf_s``, another permutation);
* **types** follow ``type_mix`` (mostly ``rate``, some ``view``/``click``/``cart``/``purchase``);
  implicit events carry the configured weight of their type;
* **ratings** (1..5) come from a small latent-factor model, so they are learnable: every item
  leans towards its genres, every user towards some genres, plus user and item biases and noise;
* **timestamps** start at ``start_ts`` and never decrease (exponential gaps of ``mean_gap_ms``,
  rounded down to whole milliseconds, so equal timestamps happen).

Everything is drawn from independent streams of one ``numpy.random.SeedSequence(seed)``, in
chunks, so the output is a pure function of the arguments (chunk size included or not: it is
the same for any ``chunk_size``) and a million events need only a few MB.

``generate_catalog(n_items, seed)`` returns the items in the format of
:func:`ingest.movielens.load_catalog`, with the same genres the rating model used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ingest.movielens import GENRES
from udfs.events import DEFAULT_LIMITS, EVENT_TYPES, Event

logger = logging.getLogger(__name__)

#: 2023-11-14T22:13:20Z, a fixed start so that two runs give the same events.
DEFAULT_START_TS = 1_700_000_000_000
DEFAULT_TYPE_MIX: Mapping[str, float] = {"rate": 0.70, "view": 0.15, "click": 0.10, "cart": 0.03, "purchase": 0.02}
DEFAULT_CHUNK = 65_536
#: How often each genre is drawn (roughly MovieLens-100K's genre frequencies).
GENRE_WEIGHTS = (251, 135, 42, 122, 505, 109, 50, 725, 22, 24, 92, 56, 61, 247, 101, 251, 71, 27)
LATENT_DIM = 4
MAX_GENRES = 3

# Independent random streams, spawned from SeedSequence(seed) in this order (never reorder).
_STREAMS = ("item_perm", "user_perm", "catalog", "factors", "items", "users", "types", "ratings", "gaps", "titles")

_ADJECTIVES = (
    "Silent", "Crimson", "Last", "Hidden", "Broken", "Golden", "Midnight", "Lost", "Wild", "Electric", "Frozen",
    "Secret", "Distant", "Burning", "Quiet", "Endless", "Hollow", "Iron", "Paper", "Velvet", "Savage", "Lonely",
)
_NOUNS = (
    "River", "Garden", "Empire", "Shadow", "Horizon", "Machine", "Harbor", "Letter", "Kingdom", "Storm", "Mirror",
    "Station", "Orchard", "Frontier", "Promise", "Circus", "Island", "Signal", "Winter", "Road", "Planet", "Song",
)


def _streams(seed: int) -> dict[str, np.random.Generator]:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    children = np.random.SeedSequence(int(seed)).spawn(len(_STREAMS))
    return {name: np.random.Generator(np.random.PCG64(child)) for name, child in zip(_STREAMS, children, strict=True)}


def zipf_probabilities(n: int, s: float) -> np.ndarray:
    """``p[r-1] ∝ 1 / r**s`` for ranks ``r = 1..n`` (``s = 0`` is uniform)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if not (isinstance(s, (int, float)) and math.isfinite(s) and s >= 0):
        raise ValueError(f"Zipf exponent must be a finite number >= 0, got {s!r}")
    weights = np.arange(1, n + 1, dtype=np.float64) ** -float(s)
    return weights / weights.sum()


def _cdf(p: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return cdf


def _draw(cdf: np.ndarray, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
    """Indices drawn from the distribution whose cumulative sums are ``cdf`` (one uniform per draw)."""
    idx = np.searchsorted(cdf, rng.random(size), side="right")
    return np.minimum(idx, len(cdf) - 1)


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _item_genres(n_items: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_items, MAX_GENRES)`` genre indices into :data:`GENRES`, ``-1`` padded, sorted, 1..3 per item."""
    cdf = _cdf(np.asarray(GENRE_WEIGHTS, dtype=np.float64))
    picks = _draw(cdf, rng, (n_items, MAX_GENRES))
    u = rng.random(n_items)
    count = 1 + (u < 0.45) + (u < 0.12)  # 55% one genre, 33% two, 12% three (before de-duplication)
    g = np.full((n_items, MAX_GENRES), -1, dtype=np.int64)
    g[:, 0] = picks[:, 0]
    second = (count >= 2) & (picks[:, 1] != picks[:, 0])
    g[second, 1] = picks[second, 1]
    third = (count >= 3) & (picks[:, 2] != picks[:, 0]) & (picks[:, 2] != picks[:, 1])
    g[third, 2] = picks[third, 2]
    g.sort(axis=1)  # -1 first, then ascending genre index
    return g[:, ::-1].copy()  # valid genres first (descending index), -1 padding last


class _World:
    """Everything about users and items that does not change while events are drawn."""

    def __init__(self, n_users: int, n_items: int, zipf_s: float, user_zipf_s: float,
                 rngs: Mapping[str, np.random.Generator]) -> None:
        self.item_of_rank = rngs["item_perm"].permutation(n_items)
        self.user_of_rank = rngs["user_perm"].permutation(n_users)
        self.item_cdf = _cdf(zipf_probabilities(n_items, zipf_s))
        self.user_cdf = _cdf(zipf_probabilities(n_users, user_zipf_s))
        self.genres = _item_genres(n_items, rngs["catalog"])
        f = rngs["factors"]
        genre_vec = f.normal(0.0, 1.0, (len(GENRES), LATENT_DIM))
        valid = self.genres >= 0
        summed = np.where(valid[:, :, None], genre_vec[np.maximum(self.genres, 0)], 0.0).sum(axis=1)
        self.item_vec = summed / valid.sum(axis=1, keepdims=True) + 0.5 * f.normal(0.0, 1.0, (n_items, LATENT_DIM))
        self.item_bias = f.normal(0.0, 0.45, n_items)
        self.user_vec = f.normal(0.0, 1.0, (n_users, LATENT_DIM))
        self.user_bias = f.normal(0.0, 0.35, n_users)

    def ratings(self, users: np.ndarray, items: np.ndarray, noise: np.ndarray) -> np.ndarray:
        affinity = np.einsum("ij,ij->i", self.user_vec[users], self.item_vec[items]) * 0.3
        raw = 3.65 + self.user_bias[users] + self.item_bias[items] + affinity + noise
        return np.clip(np.rint(raw), 1.0, 5.0)


def _type_cdf(type_mix: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    names, weights = [], []
    for name, w in type_mix.items():
        if name not in EVENT_TYPES:
            raise ValueError(f"type_mix has unknown event type {name!r} (known: {', '.join(EVENT_TYPES)})")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"type_mix[{name!r}] must be a finite number >= 0, got {w!r}")
        names.append(name)
        weights.append(float(w))
    if not names or sum(weights) <= 0:
        raise ValueError(f"type_mix must give some type a positive share, got {dict(type_mix)!r}")
    return names, _cdf(np.asarray(weights))


def generate(
    n_events: int,
    n_users: int,
    n_items: int,
    zipf_s: float = 1.1,
    seed: int = 0,
    start_ts: int = DEFAULT_START_TS,
    type_mix: Mapping[str, float] = DEFAULT_TYPE_MIX,
    *,
    user_zipf_s: float = 0.8,
    mean_gap_ms: float = 1000.0,
    weights: Mapping[str, float] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Iterator[Event]:
    """Yield ``n_events`` synthetic events (see the module docstring); deterministic for the arguments.

    ``weights`` are the values of the implicit types (default: the ``model.weights`` defaults).
    Users and items are ``"1".."n_users"`` and ``"1".."n_items"``; event ids ``syn<seed>-<n>``.
    """
    _check_count("n_events", n_events, 0)
    _check_count("n_users", n_users, 1)
    _check_count("n_items", n_items, 1)
    _check_count("chunk_size", chunk_size, 1)
    if isinstance(start_ts, bool) or not isinstance(start_ts, (int, np.integer)) or start_ts < 0:
        raise ValueError(f"start_ts must be a non-negative integer (epoch ms), got {start_ts!r}")
    if not (isinstance(mean_gap_ms, (int, float)) and math.isfinite(mean_gap_ms) and mean_gap_ms >= 0):
        raise ValueError(f"mean_gap_ms must be a finite number >= 0, got {mean_gap_ms!r}")
    type_names, type_cdf = _type_cdf(type_mix)
    implicit = dict(DEFAULT_LIMITS.weights) if weights is None else {k: float(v) for k, v in weights.items()}
    missing = [t for t in type_names if t != "rate" and t not in implicit]
    if missing:
        raise ValueError(f"weights has no value for event type(s) {', '.join(missing)}")
    rngs = _streams(seed)
    world = _World(n_users, n_items, zipf_s, user_zipf_s, rngs)
    type_weight = [implicit.get(t, 0.0) for t in type_names]
    rate_code = type_names.index("rate") if "rate" in type_names else -1
    prefix = f"syn{int(seed)}-"
    ts = int(start_ts)
    emitted = 0
    while emitted < n_events:
        m = min(chunk_size, n_events - emitted)
        items = world.item_of_rank[_draw(world.item_cdf, rngs["items"], m)]
        users = world.user_of_rank[_draw(world.user_cdf, rngs["users"], m)]
        types = _draw(type_cdf, rngs["types"], m)
        ratings = world.ratings(users, items, rngs["ratings"].normal(0.0, 0.8, m))
        gaps = np.floor(rngs["gaps"].exponential(mean_gap_ms, m)).astype(np.int64) if mean_gap_ms > 0 else (
            np.zeros(m, dtype=np.int64))
        times = ts + np.cumsum(gaps)
        ts = int(times[-1])
        for n, (u, i, t, r, when) in enumerate(
            zip(users.tolist(), items.tolist(), types.tolist(), ratings.tolist(), times.tolist(), strict=True),
            start=emitted + 1,
        ):
            yield Event(prefix + str(n), str(u + 1), str(i + 1), type_names[t],
                        r if t == rate_code else type_weight[t], when)
        emitted += m


def popularity_order(n_items: int, seed: int = 0) -> list[str]:
    """Item ids from the most to the least popular, as :func:`generate` ranks them for this seed."""
    _check_count("n_items", n_items, 1)
    perm = _streams(seed)["item_perm"].permutation(n_items)
    return [str(i + 1) for i in perm.tolist()]


def generate_catalog(n_items: int, seed: int = 0) -> list[dict[str, Any]]:
    """Items ``"1".."n_items"`` as ``{"item_id", "title", "year", "genres"}``, with the genres :func:`generate` uses."""
    _check_count("n_items", n_items, 1)
    rngs = _streams(seed)
    genres = _item_genres(n_items, rngs["catalog"])
    t = rngs["titles"]
    adjectives = _draw(_cdf(np.ones(len(_ADJECTIVES))), t, n_items).tolist()
    nouns = _draw(_cdf(np.ones(len(_NOUNS))), t, n_items).tolist()
    style = t.random(n_items).tolist()
    years = (2024 - np.minimum(np.floor(t.exponential(14.0, n_items)), 104)).astype(np.int64).tolist()
    no_year = (t.random(n_items) < 0.002).tolist()
    records: list[dict[str, Any]] = []
    for i in range(n_items):
        a, n = _ADJECTIVES[adjectives[i]], _NOUNS[nouns[i]]
        if style[i] < 0.4:
            title = f"The {a} {n}"
        elif style[i] < 0.75:
            title = f"{a} {n}"
        else:
            title = f"{n} of the {a} {_NOUNS[(nouns[i] + 7) % len(_NOUNS)]}"
        records.append({
            "item_id": str(i + 1),
            "title": f"{title} ({i + 1})",
            "year": None if no_year[i] else years[i],
            "genres": sorted((GENRES[g] for g in genres[i].tolist() if g >= 0), key=GENRES.index),
        })
    return records
