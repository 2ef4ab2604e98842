"""core.v2 user-CF: user-user cosines against ``R Rᵀ`` in numpy with the fan-out cap off, and the cap's choice of
raters by (event time, user id)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from reference import batch_user_cosine
from test_core_v2_itemcf import EXACT, learned, stream

from core.v2 import model as M
from core.v2.kernels import MIN_POSITIVE_WEIGHT
from udfs.events import Event


@pytest.mark.parametrize("seed", [1, 2])
def test_user_cosines_equal_the_batch_recompute_with_the_cap_off(seed: int) -> None:
    events = stream(seed, 2500, users=40, items=60)
    state = learned(events, batch=101)
    final = {(e.user_id, e.item_id): max(e.weight, MIN_POSITIVE_WEIGHT) for e in events}
    users = sorted({u for u, _ in final})
    items = sorted({i for _, i in final})
    r = np.zeros((len(users), len(items)))
    for (u, i), w in final.items():
        r[users.index(u), items.index(i)] = w
    norms = np.linalg.norm(r, axis=1)
    cos = (r @ r.T) / np.outer(norms, norms)
    for a, u in enumerate(users):
        for b, v in enumerate(users):
            if a != b:
                assert M.user_similarity(state, u, v) == pytest.approx(cos[a, b], abs=1e-6)


def test_the_fan_out_cap_keeps_the_latest_raters_by_time_then_id() -> None:
    # four users rate x at the same time; cap 2 keeps the two largest ids (the oldest are evicted by (ts, id)),
    # whatever the order of arrival; a fifth rater pairs with exactly those two
    settings = EXACT.replace(usercf_max_raters=2)
    base = [Event(f"e{u}", u, "x", "rate", 3.0, 100) for u in ("c", "a", "d", "b")]
    late = Event("e9", "z", "x", "rate", 4.0, 200)
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        state = learned([base[p] for p in order] + [late], settings)
        paired = {u for u in "abcd" if M.user_similarity(state, "z", u) > 0}
        assert paired == {"c", "d"}


def test_the_log_pool_keeps_each_slots_weight_and_time_beside_it() -> None:
    # rows grow (and move) many times, the pool doubles, pairs are re-engaged: the copies beside the pool equal the
    # slot arrays
    rng = random.Random(3)
    events: list[Event] = []
    for k in range(4000):
        if events and rng.random() < 0.15:
            e = events[rng.randrange(len(events))]
            u, i = e.user_id, e.item_id
        else:
            u, i = f"u{rng.randrange(6)}", f"i{rng.randrange(1000)}"
        events.append(Event(f"e{k:05d}", u, i, rng.choice(["rate", "view"]), rng.choice([1.0, 3.0, 5.0]), 1000 * k))
    state = learned(events, batch=37)
    lp = state.lpool
    checked = 0
    for row in range(len(state.users)):
        for x in range(int(lp.ptr[row]), int(lp.ptr[row] + lp.cap[row])):
            if lp.cols[x] != -1:
                slot = lp.vals[x]
                assert state.lp_w[x] == state.lg_w[slot] and state.lp_ts[x] == state.lg_ts[slot]
                checked += 1
    assert checked == lp.entries() > 1000


@pytest.mark.parametrize("seed", [3, 4])
def test_user_neighbours_are_the_top_k_of_the_batch_cosine_ties_by_id(seed: int) -> None:
    events = stream(seed, 1500, users=30, items=25)
    state = learned(events, EXACT.replace(usercf_top_k=5), batch=61)
    users, cos = batch_user_cosine((e.user_id, e.item_id, max(e.weight, MIN_POSITIVE_WEIGHT), e.ts) for e in events)
    for a, u in enumerate(users):
        want = sorted(((v, float(cos[a, b])) for b, v in enumerate(users) if b != a and cos[a, b] > 1e-9),
                      key=lambda t: (-round(t[1], 9), t[0]))[:5]
        got = M.user_neighbors(state, u)
        assert [v for v, _ in got] == [v for v, _ in want], u
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-9)


def test_usercf_ranking_is_the_neighbours_weighted_sum_with_the_largest_contributor_as_reason() -> None:
    # score(j) = Σ_{v in u's neighbours} sim(u, v) · w⁺_vj over items u has not engaged; the reason is the neighbour
    # of the largest term (ties: the smaller user id)
    events = stream(6, 1200, users=25, items=40)
    state = learned(events, EXACT.replace(usercf_top_k=6, candidate_pool=200), batch=50)
    final = {(e.user_id, e.item_id): max(e.weight, MIN_POSITIVE_WEIGHT) for e in events}
    for user in sorted({u for u, _ in final})[:10]:
        seen = {i for u, i in final if u == user}
        totals: dict[str, float] = {}
        best: dict[str, tuple[float, str]] = {}
        for v, sim in M.user_neighbors(state, user):
            for (w_user, item), w in final.items():
                if w_user == v and item not in seen:
                    totals[item] = totals.get(item, 0.0) + sim * w
                    if item not in best or sim * w > best[item][0] or (sim * w == best[item][0] and v < best[item][1]):
                        best[item] = (sim * w, v)
        want = sorted(totals.items(), key=lambda t: (-t[1], t[0]))[:10]
        got = [(i, s, r) for i, s, r in M.render(state, M.rank(state, [user], "usercf", 10))[0] if r != "trending"]
        assert [i for i, _, _ in got] == [i for i, _ in want], user
        assert [s for _, s, _ in got] == pytest.approx([s for _, s in want], rel=1e-12)
        assert [r for _, _, r in got] == [f"liked by similar user {best[i][1]}" for i, _ in want]
