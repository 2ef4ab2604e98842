"""core.v2 content: catalog searches against a numpy brute force over the item vectors, and a new item reachable
through content as soon as it is in the catalog."""

from __future__ import annotations

import numpy as np
import pytest
from test_core_v2_parity import mixed_stream, random_catalog

from core.v2 import catalog as C
from core.v2 import model as M
from core.v2.settings import Settings
from udfs.events import Event


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


@pytest.mark.parametrize("seed", [1, 2])
def test_content_mode_is_the_catalog_ranked_by_the_profile_cosine(seed: int) -> None:
    settings = Settings(methods=("content", "popular"), half_life_s=None, profile_max_items=0)
    state = M.new_state(settings)
    cat = random_catalog(seed, 60)
    M.add_items(state, cat)
    events = mixed_stream(seed, 600, 20, 60)
    M.learn(state, M.Batch.of(events))
    state.content()
    final: dict[tuple[str, str], float] = {}
    for e in sorted(events, key=lambda e: (e.ts, e.event_id)):
        final[(e.user_id, e.item_id)] = e.weight
    in_cat = {r["item_id"] for r in cat}
    for user in sorted({e.user_id for e in events}):
        mine = {i: w for (u, i), w in final.items() if u == user and i in in_cat}
        got = M.render(state, M.rank(state, [user], "content", 10))[0]
        if not mine:
            continue
        profile = sum(w * dense(state, i) for i, w in mine.items()) / sum(mine.values())
        if len(mine) == 1:
            profile = dense(state, next(iter(mine)))
        scores = {}
        for r in cat:
            x = dense(state, r["item_id"])
            if r["item_id"] not in {i for (u, i) in final if u == user} and np.linalg.norm(x) > 0:
                scores[r["item_id"]] = float(profile @ x / (np.linalg.norm(profile) * np.linalg.norm(x)))
        want = sorted(((i, s) for i, s in scores.items() if s > 1e-12), key=lambda t: (-round(t[1], 9), t[0]))[:10]
        shown = [(i, s) for i, s, r in got if r != "trending"]
        assert [s for _, s in shown] == pytest.approx([s for _, s in want[: len(shown)]], abs=1e-9)
        assert len(shown) == min(10, len(want))


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
