"""core.itemcf: incremental co-occurrence and cosine against a batch numpy recompute, and ranking."""

from __future__ import annotations

import random

import pytest
from reference import batch_cosine

from core.itemcf import ItemCF, ItemRows, PairDeltas, UserHistory, rank_items, top_k, top_n, user_event


def random_stream(seed: int, n: int, users: int, items: int, rerate: float) -> list[tuple[str, str, float]]:
    rng = random.Random(seed)
    out: list[tuple[str, str, float]] = []
    for _ in range(n):
        if out and rng.random() < rerate:  # re-rate something seen before with a new value
            u, i, _ = rng.choice(out)
        else:
            u, i = f"u{rng.randrange(users)}", f"i{int(rng.paretovariate(1.2)) % items}"
        out.append((u, i, rng.choice([0.5, 1.0, 2.5, 3.0, 4.0, 4.5, 5.0])))
    return out


def test_known_answer_small_matrix() -> None:
    # users a, b rate x, y alike; b also rates z: C[x][y] = 5*4 + 4*5 = 40, norms x: 25+16=41, y: 16+25=41,
    # z: 1; C[x][z] = 4*1, C[y][z] = 5*1. cos(x,y) = 40/41, cos(x,z) = 4/sqrt(41), cos(y,z) = 5/sqrt(41).
    m = ItemCF(top_k=5, history_cap=0)
    for u, i, w in [("a", "x", 5), ("a", "y", 4), ("b", "x", 4), ("b", "y", 5), ("b", "z", 1)]:
        m.learn_one(u, i, w)
    assert m.similarity("x", "y") == pytest.approx(40 / 41)
    assert m.similarity("z", "x") == pytest.approx(4 / 41**0.5)
    assert m.neighbors("z") == [("y", pytest.approx(5 / 41**0.5)), ("x", pytest.approx(4 / 41**0.5))]
    # a has seen x and y: the only unseen item is z, scored 5*cos(x,z) + 4*cos(y,z) = 40/sqrt(41)
    assert m.rank("a", 3) == [("z", pytest.approx(40 / 41**0.5), "because of x")]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_cosine_equals_batch_including_rerates(seed: int) -> None:
    events = random_stream(seed, 3000, users=60, items=80, rerate=0.15)
    m = ItemCF(top_k=1000, history_cap=0)
    for u, i, w in events:
        m.learn_one(u, i, w)
    index, cos, _ = batch_cosine(events)
    for a, ia in index.items():
        for b, ib in index.items():
            if a != b:
                assert m.similarity(a, b) == pytest.approx(cos[ia, ib], rel=1e-9, abs=1e-12)
        assert m.norm(a) == pytest.approx(sum(w * w for (u, i), w in {(u, i): w for u, i, w in events}.items()
                                              if i == a))


def test_neighbors_are_the_top_k_of_the_batch_cosine() -> None:
    events = random_stream(7, 2000, users=40, items=50, rerate=0.1)
    m = ItemCF(top_k=5, history_cap=0)
    for u, i, w in events:
        m.learn_one(u, i, w)
    index, cos, _ = batch_cosine(events)
    names = sorted(index, key=index.__getitem__)
    for a, ia in index.items():
        expected = sorted((-cos[ia, ib], names[ib]) for ib in range(len(names)) if ib != ia and cos[ia, ib] > 0)[:5]
        got = m.neighbors(a)
        assert [b for b, _ in got] == [b for _, b in expected]
        assert [s for _, s in got] == pytest.approx([-s for s, _ in expected], rel=1e-9)


def test_history_cap_bounds_the_pairs_and_keeps_every_weight() -> None:
    h = UserHistory()
    partners = [user_event(h, f"i{k}", 1.0 + k, k, history_cap=3)[2] for k in range(5)]
    assert [len(p) for p in partners] == [0, 1, 2, 3, 3]
    assert partners[4] == [("i1", 2.0), ("i2", 3.0), ("i3", 4.0)]
    assert h.recent == ["i2", "i3", "i4"] and len(h.weights) == 5
    # re-rating an evicted item: the difference goes to the pairs with the recent items
    norm_delta, dw, partners_again = user_event(h, "i0", 3.0, 9, history_cap=3)
    assert (norm_delta, dw) == (9.0 - 1.0, 2.0)
    assert partners_again == [("i2", 3.0), ("i3", 4.0), ("i4", 5.0)]
    assert h.recent == ["i3", "i4", "i0"]


def test_pair_deltas_are_symmetric_and_new_engagements_counted() -> None:
    d = PairDeltas()
    d.add("x", 25.0, 5.0, [("y", 4.0), ("z", 1.0)], new=True)
    d.add("x", -9.0, -3.0, [("y", 4.0)], new=False)  # x re-rated 5 -> 2
    assert d.pairs == {"x": {"y": 8.0, "z": 5.0}, "y": {"x": 8.0}, "z": {"x": 5.0}}
    assert d.norms == {"x": 16.0} and d.counts == {"x": 1}


def test_refresh_budget_carries_rows_over() -> None:
    rows = ItemRows(top_k=3)
    rows.apply({"a": 1.0, "b": 1.0, "c": 1.0}, {"a": {"b": 1.0}, "b": {"a": 1.0, "c": 0.5}, "c": {"b": 0.5}}, {})
    assert set(rows.dirty) == {"a", "b", "c"}
    assert rows.refresh(budget_s=0.0) == {}
    assert set(rows.refresh()) == {"a", "b", "c"} and not rows.dirty


def test_rows_restore_from_their_state_pieces() -> None:
    m = ItemCF(top_k=4, history_cap=0)
    for u, i, w in random_stream(5, 500, users=20, items=30, rerate=0.1):
        m.learn_one(u, i, w)
    copy = ItemRows(top_k=4)
    copy.load(dict(m.items.index), {a: dict(r) for a, r in m.items.rows.items()}, m.items.norms, m.items.counts)
    for a in m.items.rows:
        assert copy.neighbors(a) == m.items.neighbors(a)


def test_rank_items_drops_seen_and_fills_with_trending() -> None:
    neighbors = {"x": [("y", 0.9), ("z", 0.5)], "w": [("z", 0.4), ("x", 0.3)]}
    ranked = rank_items([("x", 2.0), ("w", 1.0)], neighbors, {"x", "w"}, 4, trending=[("x", 9), ("q", 5), ("y", 3)])
    # y = 2*0.9 = 1.8 (from x); z = 2*0.5 + 1*0.4 = 1.4 (x contributes most); then trending q (x, y excluded)
    assert ranked == [("y", pytest.approx(1.8), "because of x"), ("z", pytest.approx(1.4), "because of x"),
                      ("q", 0.0, "trending")]


def test_top_k_breaks_ties_by_id_and_drops_non_positive() -> None:
    assert top_k({"b": 1.0, "a": 1.0, "c": 2.0, "d": 0.0, "e": -1.0}, 3) == [("c", 2.0), ("a", 1.0), ("b", 1.0)]


def test_refresh_on_norms_off_refreshes_touched_rows_then_mark_all_is_exact() -> None:
    exact, lazy = ItemRows(5), ItemRows(5, refresh_on_norms=False)
    for rows in (exact, lazy):
        rows.apply({"a": 25.0, "b": 16.0, "c": 1.0}, {"a": {"b": 20.0, "c": 1.0}, "b": {"a": 20.0},
                                                      "c": {"a": 1.0}}, {})
        rows.refresh()
        rows.apply({"b": 9.0}, {}, {})  # only b's norm moves
    # exact: a (holds column b) and b itself; lazy: only b's own row, a keeps its list until touched
    assert set(exact.dirty) == {"a", "b"} and set(lazy.dirty) == {"b"}
    assert lazy.rev == {}  # no reverse index without refresh_on_norms
    lazy.mark_all()
    assert lazy.refresh() == exact.refresh() | {"c": exact.neighbors("c")}


def test_row_cap_keeps_the_best_entries_by_cosine_order() -> None:
    rows = ItemRows(2, row_cap=4)
    # norms: b..g; C[a][x] chosen so C/sqrt(norm_x) orders them g > f > e > d > c > b
    norms = {"a": 100.0, "b": 100.0, "c": 64.0, "d": 36.0, "e": 16.0, "f": 4.0, "g": 1.0}
    rows.apply(norms, {"a": {"b": 1.0, "c": 1.0, "d": 1.0, "e": 1.0}}, {})
    assert len(rows.rows["a"]) == 4 and rows.pruned == 0  # at the cap: nothing dropped
    rows.apply({}, {"a": {"f": 1.0, "g": 1.0}}, {})  # 6 > 4 + 4 // 4: prune back to 4
    kept = {rows.names[b] for b in rows.rows["a"]}
    assert kept == {"d", "e", "f", "g"} and rows.pruned == 2
    assert rows.neighbors("a") == [("g", pytest.approx(1 / 10)), ("f", pytest.approx(1 / 20))]
    with pytest.raises(ValueError, match="row_cap 1 must be 0 or at least top_k 2"):
        ItemRows(2, row_cap=1)
    with pytest.raises(ValueError, match="row_cap -1"):
        ItemRows(2, row_cap=-1)


@pytest.mark.parametrize("seed", range(4))
def test_top_n_is_the_full_sort_prefix_with_ties_and_sizes_around_the_numpy_switch(seed: int) -> None:
    rnd = random.Random(seed)
    for size in (0, 1, 5, 35, 36, 37, 200, 2000):
        # few distinct values: many ties at the n-th score, which must be broken by id as the full sort does
        scores = {f"i{rnd.randrange(10 ** 6)}": rnd.choice([-1.0, 0.0, 0.25, 0.5, 0.5, 1.0, rnd.random()])
                  for _ in range(size)}
        for n in (0, 1, 10, 50, size + 3):
            ordered = sorted(scores.items(), key=lambda t: (-t[1], t[0]))
            assert top_n(scores, n) == ordered[:n]
            assert top_n(scores, n, positive=True) == [(i, s) for i, s in ordered if s > 0][:n]
            assert top_k(scores, n) == top_k(list(scores.items()), n)
