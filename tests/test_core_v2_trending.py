"""core.v2 trending: the event-time window of buckets (counts, expiry, late events) and the decayed popularity,
against answers worked out by hand, and the ranking's ties by id."""

from __future__ import annotations

import random

import pytest

from core.v2 import model as M
from core.v2.settings import Settings
from udfs.events import Event

WINDOW = Settings(methods=("popular",), trending_window_s=60.0, trending_buckets=3, trending_half_life_s=None)


def trend(state: M.State) -> list[tuple[str, float]]:
    items, scores = M.trending(state)
    return [(state.items.names[i], float(s)) for i, s in zip(items.tolist(), scores.tolist(), strict=True)]


def learn(state: M.State, *pairs: tuple[str, int]) -> None:
    """One event per ``(item, ts)``, each by a user of its own."""
    start = len(state.users)
    M.learn(state, M.Batch.of([Event(f"e{start + k}", f"u{start + k}", item, "view", 1.0, ts)
                               for k, (item, ts) in enumerate(pairs)]))


def test_window_counts_and_expiry() -> None:
    state = M.new_state(WINDOW)  # buckets of 20 s: [0,20s) [20s,40s) [40s,60s) ...
    learn(state, ("a", 0), ("b", 5_000), ("a", 25_000), ("c", 45_000))  # a: buckets 0 and 1; b: 0; c: 2
    assert trend(state) == [("a", 2.0), ("b", 1.0), ("c", 1.0)]  # b and c tie: id order
    # ts 61 s is bucket 3: bucket 0 (a 1, b 1) leaves the window -> a 1, b 0, then b gets 1
    learn(state, ("b", 61_000))
    assert trend(state) == [("a", 1.0), ("b", 1.0), ("c", 1.0)]
    learn(state, ("a", 1_000))  # a late event for the expired bucket 0 is dropped
    assert trend(state) == [("a", 1.0), ("b", 1.0), ("c", 1.0)]
    learn(state, ("a", 30_000))  # a late event for a live bucket counts
    assert trend(state) == [("a", 2.0), ("b", 1.0), ("c", 1.0)]
    learn(state, ("z", 125_000))  # bucket 6: buckets 1..3 leave, only z is left
    assert trend(state) == [("z", 1.0)]
    assert M.render(state, M.rank(state, ["nobody"], "popular", 5)) == [[("z", 1.0, "trending")]]


def test_a_single_bucket_window_holds_only_its_bucket() -> None:
    state = M.new_state(WINDOW.replace(trending_window_s=10.0, trending_buckets=1))
    learn(state, ("a", 0), ("b", 0), ("b", 0))
    assert trend(state) == [("b", 2.0), ("a", 1.0)]  # events are counted, whatever their weight
    learn(state, ("a", 10_000))
    assert trend(state) == [("a", 1.0)]


def test_decayed_popularity_known_answer() -> None:
    state = M.new_state(WINDOW.replace(trending_half_life_s=10.0))
    learn(state, ("a", 0), ("a", 10_000))  # 1·0.5 + 1 = 1.5 at 10 s
    learn(state, ("b", 20_000))
    assert trend(state) == [("b", 1.0), ("a", pytest.approx(0.75))]  # a: 1.5 decayed by one half-life to 20 s
    learn(state, ("c", 30_000))  # now 30 s: b 0.5, a 0.375
    assert trend(state) == [("c", 1.0), ("b", pytest.approx(0.5)), ("a", pytest.approx(0.375))]


def test_decayed_out_of_order_event() -> None:
    state = M.new_state(WINDOW.replace(trending_half_life_s=10.0))
    learn(state, ("a", 10_000))
    learn(state, ("a", 0))  # 10 s older: counts 0.5 at the item's reference time
    assert trend(state) == [("a", pytest.approx(1.5))]


def test_decayed_scores_equal_the_sum_over_the_events() -> None:
    rng = random.Random(7)
    pairs = [(f"i{rng.randrange(30)}", rng.randrange(0, 200_000)) for _ in range(400)]
    state = M.new_state(WINDOW.replace(trending_half_life_s=7.0))
    for start in range(0, len(pairs), 50):
        learn(state, *pairs[start:start + 50])
    now = max(ts for _, ts in pairs)
    want: dict[str, float] = {}
    for item, ts in pairs:
        want[item] = want.get(item, 0.0) + 2.0 ** (-(now - ts) / 7_000.0)
    got = trend(state)
    assert [i for i, _ in got] == [i for i, _ in sorted(want.items(), key=lambda t: (-round(t[1], 9), t[0]))]
    assert dict(got) == pytest.approx(want, rel=1e-9)


def test_ties_are_broken_by_id_whatever_the_order_of_arrival() -> None:
    # i0..i39 once each, the multiples of 4 twice; string order, not arrival or dense-id order, breaks the ties
    names = [f"i{k}" for k in range(40)]
    twice = [f"i{k}" for k in range(0, 40, 4)]
    want = [(i, 2.0) for i in sorted(twice)] + [(i, 1.0) for i in sorted(set(names) - set(twice))]
    for seed in range(3):
        shuffled = names[:]
        random.Random(seed).shuffle(shuffled)
        state = M.new_state(WINDOW)
        learn(state, *[(i, 1_000) for i in shuffled], *[(i, 2_000) for i in shuffled if i in twice])
        assert trend(state) == want, seed
