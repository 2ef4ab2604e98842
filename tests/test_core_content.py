import math
import pickle
import random

import numpy as np
import pytest

from core.content import GENRES, ContentModel, UserProfile, hash_bucket, title_terms

CATALOG = [
    {"item_id": "1", "title": "Toy Story (1995)", "year": 1995, "genres": ["Animation", "Children's", "Comedy"]},
    {"item_id": "2", "title": "GoldenEye (1995)", "year": 1995, "genres": ["Action", "Adventure", "Thriller"]},
    {"item_id": "3", "title": "Four Rooms (1995)", "year": 1995, "genres": ["Thriller"]},
    {"item_id": "5", "title": "Sabrina (1954)", "year": 1954, "genres": ["Comedy", "Romance"]},
    {"item_id": "6", "title": "Annie Hall (1977)", "year": 1977, "genres": ["Comedy", "Romance", "Drama"]},
]


def genre_only() -> ContentModel:
    m = ContentModel(genre_weight=1.0, year_weight=0.0, title_weight=0.0)
    for r in CATALOG:
        m.add_item(r)
    return m


def full_model() -> ContentModel:
    m = ContentModel()
    for r in CATALOG:
        m.add_item(r)
    return m


def vec(m: ContentModel, item: str) -> np.ndarray:
    v = m.vector(item)
    assert v is not None
    return v


def test_title_terms_and_stable_hash() -> None:
    assert title_terms("Usual Suspects, The (1995)") == ["usual", "suspects", "the"]
    assert title_terms("Apollo 13 (1995)") == ["apollo", "13"]
    # CRC-32 is the same in every process (Python's hash() is not)
    assert [hash_bucket(t, 256) for t in ("toy", "story", "soldiers")] == [110, 56, 10]


def test_genre_block_known_answers() -> None:
    m = genre_only()
    v1 = vec(m, "1")
    assert v1.shape == (m.dim,) and m.dim == 19 + 11 + 256
    # three genres, one-hot then L2-normalised: 1/sqrt(3) each
    assert v1[GENRES.index("Comedy")] == pytest.approx(1 / math.sqrt(3))
    # 2 (Action, Adventure, Thriller) vs 3 (Thriller): cosine = (1/sqrt3)·1 = 1/sqrt(3)
    assert m.similar_items("3", 5) == [("2", pytest.approx(1 / math.sqrt(3)))]
    assert m.vector("nope") is None and m.similar_items("nope", 3) == []


def test_unseen_genre_is_ignored() -> None:
    m = genre_only()
    m.add_item({"item_id": "9", "title": "X", "year": 1990, "genres": ["Comedy", "Bogus", 7]})
    assert m.genres("9") == ["Comedy"]
    assert vec(m, "9")[GENRES.index("Comedy")] == 1.0


def test_decade_block() -> None:
    m = ContentModel(genre_weight=0.0, year_weight=1.0, title_weight=0.0)
    for item, year in [("a", 1995), ("b", 1991), ("c", 1972), ("d", 1905), ("e", 1925), ("f", None)]:
        m.add_item({"item_id": item, "title": "", "year": year, "genres": []})
    assert m.similar_items("a", 5) == [("b", 1.0)]  # same decade; 1972 has cosine 0
    assert m.similar_items("d", 5) == [("e", 1.0)]  # years before 1920 clamp into the first decade
    assert not np.any(vec(m, "f"))  # unknown year: zero block


def test_title_tfidf_known_answer_and_incremental_df() -> None:
    m = ContentModel(genre_weight=0.0, year_weight=0.0, title_weight=1.0)
    m.add_item({"item_id": "t1", "title": "Toy Story (1995)", "year": 1995, "genres": []})
    m.add_item({"item_id": "t2", "title": "Toy Soldiers (1991)", "year": 1991, "genres": []})
    # N = 2: idf(toy) = ln(3/3) + 1 = 1, idf(story) = idf(soldiers) = ln(3/2) + 1.
    # cos = 1·1 / (1 + (ln 1.5 + 1)²) ≈ 0.336097
    assert m.similar_items("t1", 1) == [("t2", pytest.approx(1 / (1 + (math.log(1.5) + 1) ** 2), rel=1e-12))]
    # The changed t2 no longer shares "toy": df(toy) drops to 1 and the cosine to 0.
    m.add_item({"item_id": "t2", "title": "Soldiers (1991)", "year": 1991, "genres": []})
    assert m.df[hash_bucket("toy", 256)] == 1 and len(m.items) == 2
    assert m.similar_items("t1", 1) == []


def test_new_item_usable_immediately_for_cold_start() -> None:
    m = full_model()
    m.add_item({"item_id": "7", "title": "Toy Story 2 (1999)", "year": 1999, "genres": ["Animation", "Comedy"]})
    assert m.similar_items("7", 1)[0][0] == "1"


def test_profile_without_decay_is_plain_weighted_mean() -> None:
    m = full_model()
    x1, x3 = vec(m, "1"), vec(m, "3")
    for half_life in (None, 0):
        p = UserProfile(half_life_s=half_life)
        assert p.learn_one("1", 4.0, 1_000, m) and p.learn_one("3", 2.0, 9_000_000, m)
        np.testing.assert_allclose(p.vector(m.dim), (4 * x1 + 2 * x3) / 6, rtol=1e-12)
        p.learn_one("1", 1.0, 9_500_000, m)  # re-engagement replaces 4 by 1
        np.testing.assert_allclose(p.vector(m.dim), (1 * x1 + 2 * x3) / 3, rtol=1e-12, atol=1e-15)
    assert not UserProfile().learn_one("unknown", 1.0, 0, m)


def test_profile_decay_known_answer() -> None:
    m = full_model()
    x1, x3 = vec(m, "1"), vec(m, "3")
    p = UserProfile(half_life_s=3600)
    p.learn_one("1", 1.0, 0, m)
    p.learn_one("3", 1.0, 3_600_000, m)  # one half-life later: weights 0.5 and 1
    np.testing.assert_allclose(p.vector(m.dim), (0.5 * x1 + x3) / 1.5, rtol=1e-12)


def test_profile_matches_batch_recompute() -> None:
    m = full_model()
    rng = random.Random(3)
    items = [str(r["item_id"]) for r in CATALOG]
    half_life = 1800.0
    p = UserProfile(half_life_s=half_life, max_items=0)
    final: dict[str, tuple[float, int]] = {}
    for _ in range(200):  # out-of-order times and re-engagements included
        item, w, ts = rng.choice(items), rng.uniform(0.5, 5.0), rng.randrange(0, 20_000_000)
        p.learn_one(item, w, ts, m)
        final[item] = (w, ts)
    t = max(ts for _, ts in final.values())
    d = {i: w * 2 ** (-(t - ts) / 1000 / half_life) for i, (w, ts) in final.items()}
    x = np.array([vec(m, i) for i in d])
    batch = (np.array(list(d.values())) @ x) / sum(d.values())
    np.testing.assert_allclose(p.vector(m.dim), batch, rtol=1e-9, atol=1e-12)


def test_from_items_equals_learning_in_time_order() -> None:
    m = full_model()
    rng = random.Random(5)
    items = [str(r["item_id"]) for r in CATALOG]
    engaged = {rng.choice(items): (rng.uniform(0.5, 5.0), rng.randrange(0, 9_000_000)) for _ in range(40)}
    engaged["not-in-catalog"] = (1.0, 5)
    for half_life, cap in [(None, 0), (600.0, 0), (600.0, 3)]:
        incremental = UserProfile(half_life, cap)
        for item, (w, ts) in sorted(engaged.items(), key=lambda kv: (kv[1][1], kv[0])):
            incremental.learn_one(item, w, ts, m)
        batch = UserProfile.from_items(engaged, m, half_life, cap)
        assert batch.items == incremental.items
        np.testing.assert_allclose(batch.vector(m.dim), incremental.vector(m.dim), rtol=1e-9, atol=1e-12)
    assert UserProfile.from_items({}, m).z == 0.0
    with pytest.raises(ValueError, match="w -1"):
        UserProfile.from_items({items[0]: (-1.0, 0)}, m)


def test_profile_max_items_and_rebuild() -> None:
    m = full_model()
    p = UserProfile(max_items=2)
    for ts, item in enumerate(["1", "2", "3"]):
        p.learn_one(item, 1.0, ts, m)
    assert set(p.items) == {"2", "3"}
    x2, x3 = vec(m, "2"), vec(m, "3")
    np.testing.assert_allclose(p.vector(m.dim), (x2 + x3) / 2, rtol=1e-12, atol=1e-15)
    m.add_item({"item_id": "8", "title": "Rooms for Four", "year": 2001, "genres": ["Drama"]})  # IDF moves
    p.rebuild(m)
    x2, x3 = vec(m, "2"), vec(m, "3")
    np.testing.assert_allclose(p.vector(m.dim), (x2 + x3) / 2, rtol=1e-12, atol=1e-15)


def test_score_rank_and_reason() -> None:
    m = genre_only()
    p = UserProfile()
    p.learn_one("3", 1.0, 0, m)  # Thriller only
    assert m.score(p, ["2", "1", "zzz"]) == {"2": pytest.approx(1 / math.sqrt(3)), "1": 0.0, "zzz": 0.0}
    assert m.score(UserProfile(), ["2"]) == {"2": 0.0}

    p = UserProfile()
    p.learn_one("1", 1.0, 0, m)
    p.learn_one("5", 1.0, 1, m)
    # genre mean: Comedy (1/√3 + 1/√2)/2 = .642, Romance (1/√2)/2 = .354, Animation = Children's = (1/√3)/2 = .289
    # (the tie goes to the name first in alphabetical order)
    assert m.profile_genres(p) == ["Comedy", "Romance", "Animation"]
    assert m.reason(p, "6") == "matches your taste for Comedy, Romance"
    assert m.reason(p, "3") == "similar to items you engaged with"
    ranked = m.rank(p, 3)
    assert [i for i, _, _ in ranked] == ["6"]  # 1 and 5 are seen; 2 and 3 share no genre (cosine 0)
    assert ranked[0][2] == "matches your taste for Comedy, Romance"


def test_validation_and_pickle() -> None:
    m = full_model()
    m.vector("1")  # fill the cache; it is not pickled
    clone = pickle.loads(pickle.dumps(m))
    assert clone._cache == {}
    np.testing.assert_array_equal(vec(clone, "1"), vec(m, "1"))
    with pytest.raises(ValueError, match="item_id None"):
        m.add_item({"title": "x"})
    with pytest.raises(ValueError, match="genres 'Comedy'"):
        m.add_item({"item_id": "x", "genres": "Comedy"})
    with pytest.raises(ValueError, match="half_life_s -1"):
        UserProfile(half_life_s=-1)
    with pytest.raises(ValueError, match="n_hash 0"):
        ContentModel(n_hash=0)


def test_rank_equals_a_full_sort_including_ties() -> None:
    m = full_model()
    items = [str(r["item_id"]) for r in CATALOG]
    for seed in range(5):
        rng = random.Random(seed)
        p = UserProfile()
        for k in range(3):
            p.learn_one(rng.choice(items), rng.uniform(0.5, 5.0), k, m)
        scores = m.score(p, items)
        for n in (0, 1, 3, len(items)):
            want = sorted(((i, s) for i, s in scores.items() if s > 0 and i not in p.items),
                          key=lambda t: (-t[1], t[0]))[:n]
            got = [(i, s) for i, s, _ in m.rank(p, n)]
            assert [i for i, _ in got] == [i for i, _ in want]
            assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-12)


def _brute_force(m: ContentModel, query: np.ndarray, n: int, skip: set[str]) -> list[tuple[str, float]]:
    ids, sims = m._cosines(query)
    return sorted(((i, float(s)) for i, s in zip(ids, sims, strict=True) if s > 0 and i not in skip),
                  key=lambda t: (-t[1], t[0]))[:n]


def test_pruned_top_items_equal_the_brute_force_sort_bit_for_bit() -> None:
    """The bounds skip most title scores; the lists must still be the full sort's, floats and ties included."""
    from ingest.synthetic import generate_catalog

    m = ContentModel()
    for r in generate_catalog(3000, seed=7):  # few genre/decade combinations and title words: many exact ties
        m.add_item(r)
    # items with no title (a smaller norm than their signature's others), no year, or nothing at all (zero vector)
    for k, r in enumerate(generate_catalog(60, seed=8)):
        m.add_item({**r, "item_id": f"bare{k}", "title": "" if k % 2 else r["title"],
                    "year": None if k % 3 == 0 else r["year"], "genres": [] if k % 5 == 0 else r["genres"]})
    items = sorted(m.items)
    rng = random.Random(3)
    for trial in range(60):
        p = UserProfile(max_items=rng.choice([0, 3]))  # a cap of 3 subtracts old items: rounding can leave
        for k in range(rng.randint(1, 12)):            # tiny negative weights, the fallback path's case
            p.learn_one(rng.choice(items[:300]), rng.uniform(0.5, 5.0), 1000 * k, m)
        q = p.vector(m.dim)
        for n in (1, 10, 50, 400):
            assert m.top_items(p, n) == _brute_force(m, q, n, set(p.items)), (trial, n)
        other = rng.sample(items, 200)
        assert m.top_items(p, 50, exclude=other + other[:50]) == _brute_force(m, q, 50, set(other))  # repeats too
        assert m.top_items(p, len(items) + 5) == _brute_force(m, q, len(items) + 5, set(p.items))
    for item in items[:30]:
        assert m.similar_items(item, 20) == _brute_force(m, vec(m, item), 20, {item})
    assert m.top_items(UserProfile(), 5) == []



def test_single_item_searches_come_from_the_memo_and_equal_the_search() -> None:
    """A one-item profile (a new user) reuses the search of the same query: the same list as searching, whatever
    is skipped, and a catalog change forgets it."""
    from core import content as content_module
    from ingest.synthetic import generate_catalog

    m = ContentModel()
    for r in generate_catalog(1500, seed=9):
        m.add_item(r)
    items = sorted(m.items)
    rng = random.Random(5)
    searches = 0
    search = m._best

    def counted(*args: object) -> list[tuple[str, float]]:
        nonlocal searches
        searches += 1
        return search(*args)  # type: ignore[arg-type]

    m._best = counted  # type: ignore[method-assign,assignment]
    for trial in range(200):
        p = UserProfile()
        p.learn_one(rng.choice(items[:40]), rng.choice([1.0, 4.0]), 1000, m)  # 80 distinct queries at most
        q = p.vector(m.dim)
        skip = set(p.items) | set(rng.sample(items, rng.choice([0, 3, 40])))
        for n in (1, 10, 50):
            assert m.top_items(p, n, exclude=skip) == _brute_force(m, q, n, skip), (trial, n)
    assert 0 < len(m._memo) <= 80 and searches < 200 * 3 / 2  # most came from the memo
    m.add_item({"item_id": "new", "title": "a new title", "year": 2001, "genres": ["Drama"]})
    assert m._memo == {}
    p = UserProfile()
    p.learn_one(items[0], 2.0, 1000, m)
    assert m.top_items(p, 1500) == _brute_force(m, p.vector(m.dim), 1500, set(p.items))  # past the memo's length
    assert len(m._memo) <= content_module.MEMO_MAX
    del m._best  # the counting wrapper
    assert pickle.loads(pickle.dumps(m))._memo == {}


def test_top_among_is_the_brute_force_sort_of_those_items_bit_for_bit() -> None:
    """``content_search: candidates`` re-ranks other methods' candidates: the same cosines as the catalog search."""
    from ingest.synthetic import generate_catalog

    m = ContentModel()
    for r in generate_catalog(2000, seed=5):
        m.add_item(r)
    m.add_item({"item_id": "bare", "title": "", "year": None, "genres": []})  # a zero vector: never listed
    items = sorted(m.items)
    rng = random.Random(11)
    for trial in range(40):
        p = UserProfile()
        for k in range(rng.randint(1, 8)):
            p.learn_one(rng.choice(items[:200]), rng.uniform(0.5, 5.0), 1000 * k, m)
        q = p.vector(m.dim)
        among = set(rng.sample(items, rng.choice([1, 30, 150]))) | {"bare", "not-in-catalog"}
        outside = set(items) - among
        for n in (1, 10, 50):
            assert m.top_among(p, list(among) + list(among)[:5], n) == _brute_force(m, q, n, outside), (trial, n)
    assert m.top_among(UserProfile(), ["x"], 5) == [] and m.top_among(p, [], 5) == []


def test_newest_items_in_the_order_added() -> None:
    m = genre_only()
    order = list(m.items)
    assert m.newest(2) == order[-2:] and m.newest(100) == order and m.newest(0) == []
    m.add_item({"item_id": "zz", "title": "New", "genres": ["Comedy"]})
    m.add_item({"item_id": order[0], "title": "Updated", "genres": ["Drama"]})  # an update keeps its place
    assert m.newest(2) == [order[-1], "zz"] and m.newest(1) == ["zz"]
    assert pickle.loads(pickle.dumps(m)).newest(3) == [*order[-2:], "zz"]
