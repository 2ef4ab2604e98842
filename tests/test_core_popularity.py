import pickle

import pytest

from core.popularity import Trending


def test_window_counts_and_expiry() -> None:
    t = Trending(window_s=60, n_buckets=3)  # buckets of 20 s: [0,20s) [20s,40s) [40s,60s) ...
    t.learn_one("a", 2.0, 0)  # bucket 0
    t.learn_one("b", 1.0, 5_000)  # bucket 0
    t.learn_one("a", 1.0, 25_000)  # bucket 1
    t.learn_one("c", 5.0, 45_000)  # bucket 2
    assert t.top(3) == [("c", 5.0), ("a", 3.0), ("b", 1.0)]
    # ts 61 s is bucket 3: bucket 0 (a 2, b 1) expires -> a 1, b 0, then b gets 1
    t.learn_one("b", 1.0, 61_000)
    assert t.top(5) == [("c", 5.0), ("a", 1.0), ("b", 1.0)]  # a/b tie broken by id
    assert t.top(2, exclude={"c"}) == [("a", 1.0), ("b", 1.0)]
    # a late event for the expired bucket 0 is dropped
    t.learn_one("a", 10.0, 1_000)
    assert t.count("a") == 1.0
    # a late event for a live bucket counts
    t.learn_one("a", 1.0, 30_000)
    assert t.count("a") == 2.0
    # moving to bucket 6 expires buckets 1..3: nothing left
    t.advance(125_000)
    assert t.top(5) == [] and t.totals == {} and set(t.buckets) == set()


def test_unweighted_counts_events() -> None:
    t = Trending(window_s=10, n_buckets=1, weighted=False)
    for item, w in [("a", 5.0), ("b", 1.0), ("b", 1.0)]:
        t.learn_one(item, w, 0)
    assert t.top(2) == [("b", 2.0), ("a", 1.0)]
    t.learn_one("a", 1.0, 10_000)  # next bucket: the single-bucket window now holds only this event
    assert t.top(2) == [("a", 1.0)]


def test_decayed_popularity() -> None:
    t = Trending(window_s=60, n_buckets=3, half_life_s=10)
    t.learn_one("a", 1.0, 0)
    t.learn_one("a", 1.0, 10_000)  # 1·0.5 + 1 = 1.5 at 10 s
    t.learn_one("b", 2.0, 20_000)
    assert t.decayed_score("a") == pytest.approx(0.75)  # 1.5 decayed by one half-life to 20 s
    assert t.top_decayed(2) == [("b", 2.0), ("a", pytest.approx(0.75))]
    assert t.top_decayed(1, now=30_000) == [("b", pytest.approx(1.0))]
    assert t.top_decayed(1, exclude=["b"]) == [("a", pytest.approx(0.75))]


def test_decayed_out_of_order_event() -> None:
    t = Trending(half_life_s=10)
    t.learn_one("a", 1.0, 10_000)
    t.learn_one("a", 1.0, 0)  # 10 s older: counts 0.5 at the item's reference time
    assert t.decayed_score("a", now=10_000) == pytest.approx(1.5)


def test_validation_and_pickle() -> None:
    with pytest.raises(ValueError, match="window_s 0"):
        Trending(window_s=0)
    with pytest.raises(ValueError, match="n_buckets 0"):
        Trending(n_buckets=0)
    with pytest.raises(ValueError, match="whole number of milliseconds"):
        Trending(window_s=1, n_buckets=3)
    t = Trending()
    with pytest.raises(ValueError, match="w -1"):
        t.learn_one("a", -1, 0)
    with pytest.raises(ValueError, match="half_life_s None"):
        t.decayed_score("a")
    t.learn_one("a", 2.0, 0)
    assert pickle.loads(pickle.dumps(t)).top(1) == [("a", 2.0)]


def test_ranked_is_the_sorted_prefix_with_ties_by_id() -> None:
    """The numpy ranking equals Python's sort by (-score, id) for every n, with many ties, zeros and excludes."""
    import random

    from core.popularity import ranked

    rng = random.Random(7)
    for trial in range(200):
        size = rng.choice([0, 1, 2, 5, 30, 300])
        keys = [f"i{rng.randrange(10 ** 6)}" for _ in range(size)]
        keys = list(dict.fromkeys(keys))
        scores = [rng.choice([0.0, 0.5, 1.0, 2.0, -1.0, rng.random()]) for _ in keys]
        exclude = set(rng.sample(keys, min(len(keys), rng.randrange(4)))) if trial % 2 else None
        want = sorted(((k, s) for k, s in zip(keys, scores, strict=True) if s > 0 and k not in (exclude or ())),
                      key=lambda t: (-t[1], t[0]))
        for n in {0, 1, 2, 3, len(want) // 2, len(want), len(want) + 5}:
            assert ranked(keys, scores, n, exclude) == want[:n], (trial, n)


def test_top_decayed_matches_decayed_score() -> None:
    t = Trending(window_s=60, n_buckets=3, half_life_s=7)
    for k in range(400):
        t.learn_one(f"item{k % 37}", float(1 + k % 3), 1_000 * (k // 5))
    t.learn_one("late", 1.0, 0)  # out of order
    want = sorted(((i, t.decayed_score(i)) for i in t.decayed), key=lambda p: (-p[1], p[0]))
    assert t.top_decayed(len(t.decayed)) == [p for p in want if p[1] > 0]
    assert t.top_decayed(3, now=500_000, exclude=["item1"]) == sorted(
        ((i, t.decayed_score(i, 500_000)) for i in t.decayed if i != "item1"), key=lambda p: (-p[1], p[0]))[:3]
    assert Trending(half_life_s=7).top_decayed(5) == []
    with pytest.raises(ValueError, match="n -1"):
        t.top_decayed(-1)
