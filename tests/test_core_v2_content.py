"""core.v2 content: item vectors and reasons against hand-worked answers, profiles and catalog searches against a
numpy brute force over the item vectors, and a new item reachable through content as soon as it is in the catalog."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from core.v2 import catalog as C
from core.v2 import model as M
from core.v2.kernels import MIN_POSITIVE_WEIGHT
from core.v2.settings import Settings
from udfs.events import Event

WEIGHTS = {"view": 1.0, "click": 2.0, "cart": 3.0, "purchase": 5.0}
MOVIES = [
    {"item_id": "1", "title": "Toy Story (1995)", "year": 1995, "genres": ["Animation", "Children's", "Comedy"]},
    {"item_id": "2", "title": "GoldenEye (1995)", "year": 1995, "genres": ["Action", "Adventure", "Thriller"]},
    {"item_id": "3", "title": "Four Rooms (1995)", "year": 1995, "genres": ["Thriller"]},
    {"item_id": "5", "title": "Sabrina (1954)", "year": 1954, "genres": ["Comedy", "Romance"]},
    {"item_id": "6", "title": "Annie Hall (1977)", "year": 1977, "genres": ["Comedy", "Romance", "Drama"]},
]


def mixed_stream(seed: int, n: int, users: int, items: int) -> list[Event]:
    """Ratings and implicit events, a tenth repeating an earlier (user, item); timestamps often equal."""
    rng = random.Random(seed)
    out: list[Event] = []
    ts = 1_000_000
    for k in range(n):
        ts += rng.choice([0, 0, 1000, 5000, 60000])
        if out and rng.random() < 0.1:
            e = rng.choice(out)
            u, i = e.user_id, e.item_id
        else:
            u, i = f"u{rng.randrange(users)}", f"i{int(rng.paretovariate(1.0)) % items}"
        t = rng.choice(["rate"] * 6 + list(WEIGHTS))
        out.append(Event(f"e{k:06d}", u, i, t, rng.choice([1.0, 2.0, 3.0, 4.0, 5.0]) if t == "rate" else WEIGHTS[t],
                         ts))
    return out


def random_catalog(seed: int, items: int) -> list[dict[str, Any]]:
    """Items i1..i<items - 1> except the multiples of 7 (not in the catalog), random titles, years and genres."""
    rng = random.Random(seed)
    words = ["star", "war", "love", "night", "day", "man", "dead", "city", "blue", "dark"]
    return [{"item_id": f"i{k}", "title": " ".join(rng.sample(words, rng.randrange(1, 4))),
             "year": 1950 + rng.randrange(60) if rng.random() < 0.9 else None,
             "genres": rng.sample(C.GENRES[1:], rng.randrange(0, 3))} for k in range(items) if k % 7]


def dense(state: M.State, item: str) -> np.ndarray:
    v = state.vectors
    assert v is not None
    i = state.items.get(item)
    x = np.zeros(C.DIM)
    x[v.col[v.ptr[i]:v.ptr[i + 1]]] = v.val[v.ptr[i]:v.ptr[i + 1]]
    return x


def test_item_vectors_have_weighted_unit_blocks() -> None:
    state = M.new_state(Settings(methods=("content",)))
    M.add_items(state, [{"item_id": "a", "title": "Star Wars", "year": 1977, "genres": ["Action", "Sci-Fi"]},
                        {"item_id": "b", "title": "Star Trek", "year": None, "genres": []}])
    state.content()
    a, b = dense(state, "a"), dense(state, "b")
    g, d = len(C.GENRES), len(C.GENRES) + C.N_DECADES
    assert np.linalg.norm(a[:g]) == pytest.approx(1.0) and np.linalg.norm(a[g:d]) == pytest.approx(0.5)
    assert np.linalg.norm(a[d:]) == pytest.approx(0.5) and np.linalg.norm(b[d:]) == pytest.approx(0.5)
    assert not b[:d].any()


@pytest.mark.parametrize(("seed", "half_life_s", "max_items"), [(1, None, 0), (2, None, 0), (3, 600.0, 0),
                                                             (4, 3600.0, 5), (5, None, 3)])
def test_content_mode_is_the_catalog_ranked_by_the_profile_cosine(seed: int, half_life_s: float | None,
                                                                  max_items: int) -> None:
    # the profile: Σ w⁺_j d_j x_j / Σ w⁺_j d_j over the user's max_items latest catalog items by (ts, id), d_j the
    # decay to the latest of them; one item: its vector
    settings = Settings(methods=("content", "popular"), half_life_s=half_life_s, profile_max_items=max_items)
    state = M.new_state(settings)
    cat = random_catalog(seed, 60)
    M.add_items(state, cat)
    events = mixed_stream(seed, 600, 20, 60)
    M.learn(state, M.Batch.of(events))
    state.content()
    final: dict[tuple[str, str], tuple[float, int]] = {}
    for e in sorted(events, key=lambda e: (e.ts, e.event_id)):
        final[(e.user_id, e.item_id)] = (e.weight, e.ts)
    in_cat = {r["item_id"] for r in cat}
    for user in sorted({e.user_id for e in events}):
        mine = sorted(((i, w, ts) for (u, i), (w, ts) in final.items() if u == user and i in in_cat),
                      key=lambda t: (t[2], t[0]))
        if max_items:
            mine = mine[-max_items:]
        got = M.render(state, M.rank(state, [user], "content", 10))[0]
        if not mine:
            continue
        t_ref = mine[-1][2]
        cw = {i: max(w, MIN_POSITIVE_WEIGHT) * (2.0 ** (-(t_ref - ts) / 1000 / half_life_s) if half_life_s else 1.0)
              for i, w, ts in mine}
        profile = sum(c * dense(state, i) for i, c in cw.items()) / sum(cw.values())
        if len(mine) == 1:
            profile = dense(state, mine[0][0])
        scores = {}
        for r in cat:
            x = dense(state, r["item_id"])
            if r["item_id"] not in {i for (u, i) in final if u == user} and np.linalg.norm(x) > 0:
                scores[r["item_id"]] = float(profile @ x / (np.linalg.norm(profile) * np.linalg.norm(x)))
        want = sorted(((i, s) for i, s in scores.items() if s > 1e-12), key=lambda t: (-round(t[1], 9), t[0]))[:10]
        shown = [(i, s) for i, s, r in got if r != "trending"]
        assert [s for _, s in shown] == pytest.approx([s for _, s in want[: len(shown)]], abs=1e-9)
        assert len(shown) == min(10, len(want))


def test_features_of_a_record() -> None:
    assert C.features({"item_id": "9", "title": "X", "year": 1995, "genres": ["Comedy", "Bogus", 7]})[1].genres == (
        C.GENRES.index("Comedy"),)  # unknown genres and non-strings are ignored
    decade = {year: C.features({"item_id": "x", "year": year})[1].decade for year in (1905, 1925, 1972, 1991, 1995,
                                                                                     2029, None, "1990")}
    # years before 1920 clamp into the first decade, after the last into the last; unknown or not an integer: -1
    assert decade == {1905: 0, 1925: 0, 1972: 5, 1991: 7, 1995: 7, 2029: C.N_DECADES - 1, None: -1, "1990": -1}
    # title terms: lower-case words without the year suffix, hashed with CRC-32 (the same in every process)
    _, f = C.features({"item_id": "t", "title": "Toy Story, Toy (1995)"})
    assert f.terms == tuple(sorted({110: 2, 56: 1}.items()))
    with pytest.raises(ValueError, match="item_id None"):
        C.features({"title": "x"})
    with pytest.raises(ValueError, match="genres 'Comedy' of item x"):
        C.features({"item_id": "x", "genres": "Comedy"})


def test_title_tfidf_known_answer_and_idf_over_the_current_catalog() -> None:
    state = M.new_state(Settings(methods=("content",)))
    M.add_items(state, [{"item_id": "t1", "title": "Toy Story (1995)", "year": None, "genres": []},
                        {"item_id": "t2", "title": "Toy Soldiers (1991)", "year": None, "genres": []}])
    state.content()
    # N = 2: idf(toy) = ln(3/3) + 1 = 1, idf(story) = idf(soldiers) = ln(3/2) + 1: title cosine 1 / (1 + idf²)
    assert M.render(state, M.rank(state, ["nobody"], "content", 1)) == [[]]  # a new user: trending (none yet)
    t1, t2 = dense(state, "t1"), dense(state, "t2")
    cos = float(t1 @ t2 / (np.linalg.norm(t1) * np.linalg.norm(t2)))
    assert cos == pytest.approx(1 / (1 + (math.log(1.5) + 1) ** 2), rel=1e-12)
    M.add_items(state, [{"item_id": "t2", "title": "Soldiers (1991)", "year": None, "genres": []}])  # an update
    state.content()
    assert float(dense(state, "t1") @ dense(state, "t2")) == 0.0 and len(state.catalog) == 2


def test_content_reasons_name_the_profiles_top_genres_the_item_shares() -> None:
    state = M.new_state(Settings(methods=("content", "popular"), half_life_s=None))
    M.add_items(state, MOVIES)
    M.learn(state, M.Batch.of([Event("e1", "u", "1", "rate", 1.0, 0), Event("e2", "u", "5", "rate", 1.0, 1)]))
    # genre block mean: Comedy (1/√3 + 1/√2)/2 = .642, Romance (1/√2)/2 = .354, Animation = Children's = (1/√3)/2
    # = .289 (ties: the name first in alphabetical order): top genres Comedy, Romance, Animation
    got = {i: r for i, _, r in M.render(state, M.rank(state, ["u"], "content", 10))[0]}
    assert got == {"6": "matches your taste for Comedy, Romance",  # Comedy, Romance, Drama
                   "2": "similar to items you engaged with",  # only the 1990s shared with Toy Story
                   "3": "similar to items you engaged with"}


def test_the_newest_items_keep_their_first_place() -> None:
    state = M.new_state(Settings(methods=("content",), content_new_items=2))
    M.add_items(state, MOVIES)
    state.content()
    assert [state.items.names[i] for i in state.newest] == ["5", "6"]
    M.add_items(state, [{"item_id": "zz", "title": "New", "genres": ["Comedy"]},
                        {"item_id": "1", "title": "Updated", "genres": ["Drama"]}])  # an update keeps its place
    state.content()
    assert [state.items.names[i] for i in state.newest] == ["6", "zz"]
    # a record's catalog position decides, whatever the order of arrival
    other = M.new_state(Settings(methods=("content",), content_new_items=2))
    M.add_items(other, [{**r, "position": p} for p, r in reversed(list(enumerate(MOVIES)))])
    other.content()
    assert [other.items.names[i] for i in other.newest] == ["5", "6"]


def test_a_new_catalog_item_is_reachable_through_content_at_once() -> None:
    settings = Settings(methods=("itemcf", "content", "popular"), content_search="candidates").replace(
        fusion_weights={"itemcf": 1.0, "content": 1.0, "popular": 0.1})
    state = M.new_state(settings)
    M.add_items(state, [{"item_id": f"i{k}", "title": "", "year": 1990, "genres": ["Drama"]} for k in range(5)])
    M.learn(state, M.Batch.of([Event(f"e{k}", "u", f"i{k}", "rate", 5.0, 1000 * k) for k in range(3)]))
    assert "new" not in [i for i, _, _ in M.render(state, M.rank(state, ["u"], "weighted", 10))[0]]
    M.add_items(state, [{"item_id": "new", "title": "", "year": 1990, "genres": ["Drama"]}])
    ranked = M.render(state, M.rank(state, ["u"], "weighted", 10))[0]
    assert ("new", "matches your taste for Drama") in [(i, r) for i, _, r in ranked]


@pytest.mark.parametrize("seed", [3, 4])
def test_the_indexed_catalog_search_equals_the_brute_force_bit_for_bit(seed: int) -> None:
    from core.v2 import kernels as K

    state = M.new_state(Settings(methods=("content",)))
    M.add_items(state, random_catalog(seed, 80))
    M.learn(state, M.Batch.of([Event("e0", "u", "i500", "view", 1.0, 0)]))  # an item with no vector
    (in_cat, vptr, vcol, vval, vnorm, _g, _new, _ci, _cs, _cl, _go, post_ptr, post_item, post_val) = state.content()
    n_items = len(state.items)
    rank = state.items.rank
    rng = np.random.default_rng(seed)
    for trial in range(40):
        q = np.zeros(C.DIM)
        if trial % 2:  # a one-item profile
            j = int(rng.choice(np.flatnonzero(in_cat)))
            q[vcol[vptr[j]:vptr[j + 1]]] = vval[vptr[j]:vptr[j + 1]]
        else:  # a mixed profile, some dimensions of no item
            q[rng.choice(C.DIM, 12, replace=False)] = rng.random(12)
        skip = rng.random(n_items) < 0.2
        qn = 0.0
        for x in q.tolist():  # summed in order, as the kernel does (numpy's np.sum adds pairwise)
            qn += x * x
        qn = float(np.sqrt(qn))
        brute = sorted((-c, rank[j], j) for j in range(n_items) if in_cat[j] and not skip[j]
                        for c in [K._cosine(j, q, qn, vptr, vcol, vval, vnorm)] if c > 0.0)[:15]
        idx, val = np.zeros(15, dtype=np.int64), np.zeros(15)
        acc, mark, touched = np.zeros(n_items), np.full(n_items, -1, dtype=np.int64), np.zeros(n_items, dtype=np.int64)
        m = K._catalog_search(q, 15, skip, post_ptr, post_item, post_val, vnorm, rank, acc, mark, touched, idx, val)
        assert idx[:m].tolist() == [j for _, _, j in brute]
        assert val[:m].tolist() == [-c for c, _, _ in brute]  # the same floats
        assert not acc.any() and (mark == -1).all()  # scratch left as found


def test_a_one_item_profile_with_more_denied_matches_than_the_memo_spares_searches_again() -> None:
    # every catalog item matches the one item; the 30 best matches are denied, more than the memo's 16 spare
    cat = [{"item_id": f"i{k:02d}", "title": "star" if k < 31 else "", "year": 1990, "genres": ["Drama"]}
           for k in range(60)]
    settings = Settings(methods=("content", "popular"), candidate_pool=5, deny=tuple(f"i{k:02d}" for k in range(1, 31)))
    state = M.new_state(settings)
    M.add_items(state, cat)
    M.learn(state, M.Batch.of([Event("e0", "u", "i00", "rate", 4.0, 0)]))
    got = M.render(state, M.rank(state, ["u"], "content", 5))[0]
    assert [i for i, _, _ in got] == ["i31", "i32", "i33", "i34", "i35"]  # equal cosines: id order
    assert len({s for _, s, _ in got}) == 1 and got[0][1] > 0
