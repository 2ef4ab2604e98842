import math
import pickle
import random

import numpy as np
import pytest

from core.usercf import UserCF, batch_user_cosine, pair_deltas, rank_users, record_rater

# Hand-built matrix (users a, b, c; items x, y, z):
#   a: x=1, y=2          norm_a = 1 + 4     = 5
#   b: x=2, y=1, z=2     norm_b = 4 + 1 + 4 = 9
#   c: z=3               norm_c = 9
#   D[a][b] = 1·2 + 2·1 = 4  -> sim = 4/sqrt(45) ≈ 0.5963
#   D[b][c] = 2·3 = 6        -> sim = 6/sqrt(81) = 2/3
#   D[a][c] = 0 (nothing co-rated)
EVENTS = [("a", "x", 1.0, 1), ("a", "y", 2.0, 2), ("b", "x", 2.0, 3), ("b", "y", 1.0, 4),
          ("b", "z", 2.0, 5), ("c", "z", 3.0, 6)]
SIM_AB = 4 / math.sqrt(45)


def fitted(**kwargs: int) -> UserCF:
    m = UserCF(**kwargs)
    for e in EVENTS:
        m.learn_one(*e)
    return m


def test_known_answer_similarities_and_neighbours() -> None:
    m = fitted(max_raters=0)
    assert m.similarity("a", "b") == pytest.approx(SIM_AB, rel=1e-12)
    assert m.similarity("b", "c") == pytest.approx(2 / 3, rel=1e-12)
    assert m.similarity("a", "c") == 0.0
    assert m.users["a"]["norm"] == 5.0 and m.users["b"]["norm"] == 9.0
    assert m.neighbors("b") == [("c", pytest.approx(2 / 3)), ("a", pytest.approx(SIM_AB))]
    assert m.neighbors("b", k=1) == [("c", pytest.approx(2 / 3))]
    assert m.neighbors("nobody") == []


def test_known_answer_score_and_rank() -> None:
    m = fitted()
    # a's only neighbour is b: score(z) = sim(a,b)·w_bz = 2·4/sqrt(45); x, y are a's own items.
    assert m.score("a", ["z", "x", "unknown"]) == {
        "z": pytest.approx(8 / math.sqrt(45)), "x": pytest.approx(2 * SIM_AB), "unknown": 0.0}
    assert m.rank("a", 5) == [("z", pytest.approx(8 / math.sqrt(45)), "liked by similar user b")]
    # c's only neighbour is b (2/3): x = 2·2/3, y = 1·2/3; z is c's own.
    assert m.rank("c", 5) == [("x", pytest.approx(4 / 3), "liked by similar user b"),
                              ("y", pytest.approx(2 / 3), "liked by similar user b")]
    # Without exclusion z = 2·2/3 ties with x = 4/3: the tie goes to the smaller item id.
    assert [(i, s) for i, s, _ in m.rank("c", 2, exclude=[])] == [("x", pytest.approx(4 / 3)),
                                                                 ("z", pytest.approx(4 / 3))]
    assert m.rank("nobody", 5) == []


def test_reason_names_the_most_contributing_neighbour() -> None:
    m = fitted(max_raters=0)
    # b's neighbours: c (2/3) and a (4/sqrt(45)). Item y: from a 0.5963·2 = 1.193 (c has no y) -> reason a.
    # Item x is b's own; exclude nothing: x gets a 0.5963·1, z gets c 2/3·3 = 2.
    ranked = m.rank("b", 3, exclude=["x"])
    assert ranked[0] == ("z", pytest.approx(2.0), "liked by similar user c")
    assert ranked[1] == ("y", pytest.approx(2 * SIM_AB), "liked by similar user a")


def test_rerating_replaces_weight() -> None:
    m = fitted(max_raters=0)
    m.learn_one("a", "x", 3.0, 7)
    # norm_a = 9 + 4 = 13, D[a][b] = 3·2 + 2·1 = 8
    assert m.users["a"]["norm"] == 13.0
    b, a = m.rows.index["b"], m.rows.index["a"]
    assert m.rows.rows["a"][b] == 8.0 == m.rows.rows["b"][a]
    assert m.similarity("a", "b") == pytest.approx(8 / math.sqrt(13 * 9), rel=1e-12)


def test_incremental_equals_batch_with_rerating() -> None:
    rng = random.Random(7)
    events = []
    for ts in range(600):  # 30 users × 25 items, many repeated pairs (re-ratings)
        events.append((f"u{rng.randrange(30)}", f"i{rng.randrange(25)}", rng.choice([0.5, 1.0, 2.5, 4.0, 5.0]), ts))
    m = UserCF(top_k=100, max_raters=0)
    for e in events:
        m.learn_one(*e)
    users, sims = batch_user_cosine(events)
    for a, u in enumerate(users):
        for b, v in enumerate(users):
            if a != b:
                assert m.similarity(u, v) == pytest.approx(sims[a, b], rel=1e-9, abs=1e-12)
        expected = sorted(((v, sims[a, b]) for b, v in enumerate(users) if b != a and sims[a, b] > 0),
                          key=lambda p: (-p[1], p[0]))
        got = m.neighbors(u)
        assert [v for v, _ in got] == [v for v, _ in expected]
        assert np.allclose([s for _, s in got], [s for _, s in expected], rtol=1e-9)


def test_batch_user_cosine_known_answer() -> None:
    users, sims = batch_user_cosine(EVENTS)
    assert users == ["a", "b", "c"]
    assert np.allclose(sims, [[1, SIM_AB, 0], [SIM_AB, 1, 2 / 3], [0, 2 / 3, 1]], rtol=1e-12)


def test_max_raters_caps_fan_out() -> None:
    m = UserCF(max_raters=2)
    # raters of x: a, b -> c arrives, pairs with a and b, then a (oldest) is evicted -> d pairs with b and c only
    for k, u in enumerate("abcd"):
        m.learn_one(u, "x", 1.0, k)
    assert set(m.items["x"]) == {"c", "d"}
    assert m.similarity("d", "a") == 0.0
    assert m.similarity("d", "b") == pytest.approx(1.0)
    assert m.similarity("c", "a") == pytest.approx(1.0)


def test_record_rater_evicts_oldest_by_event_time() -> None:
    raters = {"a": (1.0, 50), "b": (2.0, 10)}
    assert record_rater(raters, "c", 3.0, 30, max_raters=2) == [("a", 1.0), ("b", 2.0)]
    assert raters == {"a": (1.0, 50), "c": (3.0, 30)}


def test_top_k_keeps_the_best_neighbour() -> None:
    m = fitted(top_k=1, max_raters=0)
    assert m.neighbors("b") == [("c", pytest.approx(2 / 3))]


def test_state_pickles_and_validation() -> None:
    m = fitted()
    clone = pickle.loads(pickle.dumps(m))
    assert clone.neighbors("b") == m.neighbors("b")
    with pytest.raises(ValueError, match="w 0"):
        m.learn_one("a", "x", 0, 1)
    with pytest.raises(ValueError, match="top_k 0"):
        UserCF(top_k=0)
    with pytest.raises(ValueError, match="max_raters -1"):
        UserCF(max_raters=-1)


def test_pair_deltas_and_rank_users_known_answer() -> None:
    assert pair_deltas("u", 2.0, [("v", 3.0), ("w", 0.5)]) == {"u": {"v": 6.0, "w": 1.0}, "v": {"u": 6.0},
                                                                "w": {"u": 1.0}}
    assert pair_deltas("u", 0.0, [("v", 3.0)]) == {}
    items = {"v": {"x": 2.0, "y": 1.0}, "w": {"x": 1.0, "z": 4.0}}
    # x: 0.5·2 + 0.25·1 = 1.25 (v contributes most), z: 0.25·4 = 1.0, y: 0.5 (skipped)
    ranked = rank_users([("v", 0.5), ("w", 0.25)], lambda v: items[v], 5, {"y"})
    assert ranked == [("x", 1.25, "liked by similar user v"), ("z", 1.0, "liked by similar user w")]
    with pytest.raises(ValueError, match="n -1"):
        rank_users([], lambda v: {}, -1, ())


def test_rank_users_equals_a_brute_force_sum_with_ties_past_the_numpy_switch() -> None:
    rnd = random.Random(7)
    items = {f"v{k}": {f"i{rnd.randrange(300)}": float(rnd.choice([1, 2, 4])) for _ in range(40)} for k in range(20)}
    neighbours = [(v, rnd.choice([0.5, 0.25, 0.125])) for v in items]
    skip = {f"i{k}" for k in range(0, 300, 7)}
    totals: dict[str, float] = {}
    for v, sim in neighbours:  # the same sums in the same order: equal floats, so equal ties
        for i, w in items[v].items():
            totals[i] = totals.get(i, 0.0) + sim * w
    want = sorted(((i, t) for i, t in totals.items() if i not in skip), key=lambda t: (-t[1], t[0]))[:50]
    got = rank_users(neighbours, items.__getitem__, 50, skip)
    assert [(i, s) for i, s, _ in got] == want
    for i, _, reason in got:  # the largest single contribution, ties to the smaller user id
        best = min((-sim * items[v][i], v) for v, sim in neighbours if i in items[v])
        assert reason == f"liked by similar user {best[1]}"
