"""core.v2 item-CF: stored cosines and neighbour lists against a numpy batch recompute, ranking against a numpy
score, and the same state however the events are cut into batches."""

from __future__ import annotations

import random

import numpy as np
import pytest
from reference import batch_cosine

from core.v2 import model as M
from core.v2.ids import IdIndex
from core.v2.settings import Settings
from udfs.events import Event

EXACT = Settings(methods=("itemcf", "usercf", "popular"), history_cap=0, usercf_max_raters=0, half_life_s=None)


def stream(seed: int, n: int, users: int, items: int, rerate: float = 0.15, ts_step: int = 1000) -> list[Event]:
    """Rate events, a share re-rating an earlier (user, item) with a new value; timestamps often equal."""
    rng = random.Random(seed)
    out: list[Event] = []
    ts = 1_000_000
    for k in range(n):
        ts += rng.choice([0, 0, ts_step])
        if out and rng.random() < rerate:
            e = rng.choice(out)
            u, i = e.user_id, e.item_id
        else:
            u, i = f"u{rng.randrange(users)}", f"i{int(rng.paretovariate(1.2)) % items}"
        out.append(Event(f"e{k:05d}", u, i, "rate", rng.choice([0.5, 1.0, 2.5, 3.0, 4.0, 4.5, 5.0]), ts))
    return out


def learned(events: list[Event], settings: Settings = EXACT, batch: int = 0) -> M.State:
    state = M.new_state(settings)
    step = batch or len(events)
    for start in range(0, len(events), step):
        M.learn(state, M.Batch.of(events[start:start + step]))
    return state


def test_ids_rank_in_string_order_as_they_are_added() -> None:
    ids = IdIndex()
    rng = random.Random(3)
    for _ in range(200):
        ids.encode([f"u{rng.randrange(3000)}" + "x" * rng.randrange(4) for _ in range(rng.randrange(1, 5))])
    by_rank = sorted(range(len(ids)), key=lambda i: int(ids.rank[i]))
    assert [ids.names[i] for i in by_rank] == sorted(ids.names)
    assert ids.encode(["u1", "u1"]).tolist()[0] == ids.encode(["u1"]).tolist()[0]
    assert ids.lookup(["nobody"]).tolist() == [-1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cosines_and_norms_equal_the_batch_recompute_with_caps_off(seed: int) -> None:
    events = stream(seed, 3000, users=60, items=80)
    state = learned(events, batch=97)
    index, cos, norms = batch_cosine((e.user_id, e.item_id, e.weight) for e in events)
    for a, ia in index.items():
        assert state.i_norm[state.items.get(a)] == pytest.approx(norms[ia], rel=1e-9)
        for b, ib in index.items():
            if a != b:
                assert M.similarity(state, a, b) == pytest.approx(cos[ia, ib], abs=1e-6)


def test_neighbour_lists_are_the_top_k_of_the_batch_cosine_ties_by_id() -> None:
    events = stream(7, 2000, users=40, items=50, rerate=0.1)
    state = learned(events, EXACT.replace(top_k=5), batch=50)
    index, cos, _ = batch_cosine((e.user_id, e.item_id, e.weight) for e in events)
    names = sorted(index, key=index.__getitem__)
    for a, ia in index.items():
        want = sorted(((names[j], float(cos[ia, j])) for j in range(len(names)) if j != ia and cos[ia, j] > 1e-9),
                      key=lambda t: (-round(t[1], 9), t[0]))[:5]
        got = M.neighbors(state, a)
        assert [i for i, _ in got] == [i for i, _ in want], a
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-9)


@pytest.mark.parametrize(("profile", "floor"), [("history", 0.0), ("engaged", 0.0), ("engaged", 0.2),
                                               ("engaged", 1.0)])
def test_itemcf_ranking_equals_a_numpy_score_over_the_scoring_profile(profile: str, floor: float) -> None:
    # history: cap 3 and decay on, score(j) = Σ_{k in the 3 latest items} w_k · 2^(-(T - ts_k)/h) · sim(k, j);
    # engaged: every engaged item k (the cap only bounds pairing), weight w_k · (floor + (1 - floor) · 2^(...))
    events = stream(11, 1500, users=30, items=60, rerate=0.0, ts_step=20_000)
    settings = Settings(methods=("itemcf", "popular"), history_cap=3, half_life_s=60.0, top_k=1000,
                        candidate_pool=1000, itemcf_profile=profile, itemcf_profile_floor=floor)
    state = learned(events, settings, batch=64)
    for user in sorted({e.user_id for e in events})[:12]:
        mine = [e for e in events if e.user_id == user]
        last: dict[str, Event] = {}
        for e in mine:
            last.pop(e.item_id, None)
            last[e.item_id] = e
        recent = list(last.values())[-3:] if profile == "history" else list(last.values())
        t_u = max(e.ts for e in mine)
        scores: dict[str, float] = {}
        for e in recent:
            d = 2.0 ** (-(t_u - e.ts) / 60_000.0)
            wk = e.weight * (d if profile == "history" else floor + (1 - floor) * d)
            for j, s in M.neighbors(state, e.item_id):
                if j not in last:
                    scores[j] = scores.get(j, 0.0) + wk * s
        want = sorted(((j, s) for j, s in scores.items() if s > 0), key=lambda t: (-t[1], t[0]))[:10]
        ranked = M.render(state, M.rank(state, [user], "itemcf", 10))[0]
        got = [(i, s) for i, s, r in ranked if r != "trending"]
        assert [i for i, _ in got] == [i for i, _ in want[: len(got)]]
        assert len(got) == min(10, len(want))
        assert [s for _, s in got] == pytest.approx([s for _, s in want[: len(got)]], rel=1e-9)


def _snapshot(state: M.State) -> dict[str, object]:
    users = sorted(state.users.names)
    lists = {mode: M.render(state, M.rank(state, users, mode)) for mode in ("itemcf", "usercf", "weighted", "rrf")}
    n, m = len(state.items), len(state.users)
    arrays = {name: getattr(state, name)[:n].tolist() for name in ("i_norm", "b_sum", "tr_val", "i_users")}
    arrays["u_norm"] = state.u_norm[:m].tolist()
    arrays["item_names"] = list(state.items.names)
    return {"lists": lists, **arrays}


def test_the_same_events_give_the_same_state_however_they_are_batched() -> None:
    # caps on (history 4, fan-out 3) and many equal timestamps: the caps' choices follow (ts, event id), not arrival
    settings = Settings(methods=("itemcf", "usercf", "popular"), history_cap=4, usercf_max_raters=3)
    events = stream(5, 2500, users=50, items=40)
    one = _snapshot(learned(events, settings))
    for batch in (1, 7, 333):
        assert _snapshot(learned(events, settings, batch=batch)) == one
    # within a batch the order of arrival does not matter either
    shuffled = events[:]
    random.Random(1).shuffle(shuffled)
    assert _snapshot(learned(shuffled, settings)) == one


def test_rank_checks_mode_and_n() -> None:
    state = learned(stream(1, 50, 5, 5))
    with pytest.raises(ValueError, match="mode 'bogus'"):
        M.rank(state, ["u1"], "bogus")
    with pytest.raises(ValueError, match="n -1"):
        M.rank(state, ["u1"], "itemcf", -1)
    assert M.render(state, M.rank(state, ["u1", "nobody"], "weighted", 0)) == [[], []]
    with pytest.raises(ValueError, match="weight nan of event x"):
        M.learn(state, M.Batch.of([Event("x", "u1", "i1", "rate", float("nan"), 5)]))


def test_pools_grow_past_their_first_capacity() -> None:
    # 200 items all co-engaged: rows outgrow their first tables and the pool reallocates many times
    events = [Event(f"e{k}", f"u{k % 7}", f"i{k % 200}", "rate", 1.0 + k % 5, 1000 + k) for k in range(3000)]
    state = learned(events, batch=500)
    index, cos, _ = batch_cosine((e.user_id, e.item_id, e.weight) for e in events)
    for a in ("i0", "i77", "i199"):
        for b in ("i1", "i150"):
            assert M.similarity(state, a, b) == pytest.approx(cos[index[a], index[b]], abs=1e-9)
    assert np.all(state.ipool.size[: len(state.items)] == 199)


def test_a_row_over_its_cap_keeps_the_entries_of_largest_key_ties_by_id() -> None:
    # user a rates x 2.0 then six items: C[x][j] = 2 w_j, norm_j = w_j², key C/sqrt(norm_j) = 2 for every j (a tie);
    # cap 4 prunes x's row when the 6th item makes it 6 entries (> 4 + 1): the 4 smallest ids stay
    settings = Settings(methods=("itemcf",), history_cap=0, top_k=2, row_cap=4)
    events = [Event("e0", "a", "x", "rate", 2.0, 0)]
    events += [Event(f"e{k}", "a", j, "rate", float(k), 10 * k) for k, j in enumerate(["q", "m", "z", "b", "k", "c"],
                                                                                          start=1)]
    state = learned(events, settings)
    kept = {j for j in "qmzbkc" if M.similarity(state, "x", j) > 0}
    assert kept == {"b", "c", "k", "m"}
    assert state.ipool.meta[1] >= 2  # pruned entries counted


def test_row_caps_keep_the_same_state_however_the_events_are_batched() -> None:
    settings = Settings(methods=("itemcf", "usercf", "popular"), history_cap=5, usercf_max_raters=6, top_k=3,
                        usercf_top_k=3, row_cap=4, usercf_row_cap=5)
    events = stream(8, 2000, users=40, items=60)
    one = _snapshot(learned(events, settings))
    assert _snapshot(learned(events, settings, batch=13)) == one
    assert learned(events, settings).ipool.meta[1] > 0


def test_compacted_pools_hold_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pools copied without the blocks of rows that grew (whenever those are most of the pool) give the same state
    and lists as pools never compacted, and end much smaller."""
    settings = Settings(methods=("itemcf", "usercf", "popular"), history_cap=4, usercf_max_raters=3)
    events = stream(7, 3000, users=60, items=50)
    plain = learned(events, settings, batch=100)
    monkeypatch.setattr(M, "COMPACT_ABOVE", 0)
    compacted = learned(events, settings, batch=100)
    assert _snapshot(compacted) == _snapshot(plain)
    for pool in ("ipool", "upool"):
        a, b = getattr(plain, pool), getattr(compacted, pool)
        assert b.meta[0] < a.meta[0] and b.entries() == a.entries()
        n = len(plain.items) if pool == "ipool" else len(plain.users)
        for r in range(n):  # slot for slot: every row's table is the same
            ta = a.cols[a.ptr[r]: a.ptr[r] + a.cap[r]], a.vals[a.ptr[r]: a.ptr[r] + a.cap[r]]
            tb = b.cols[b.ptr[r]: b.ptr[r] + b.cap[r]], b.vals[b.ptr[r]: b.ptr[r] + b.cap[r]]
            assert ta[0].tolist() == tb[0].tolist() and ta[1].tolist() == tb[1].tolist()


def test_refresh_on_norms_off_leaves_lists_stale_until_every_list_is_refreshed() -> None:
    # without refresh_on_norms a list is recomputed when its own row or norm changes, not when a column's norm
    # moves; refresh(all_rows=True) (what the job does at the end of a bounded input) makes every list exact
    events = stream(9, 1500, users=15, items=25, rerate=0.2)
    exact, lazy = M.new_state(EXACT), M.new_state(EXACT.replace(refresh_on_norms=False))
    names = [f"i{k}" for k in range(25)]
    stale = 0
    for e in events:
        for state in (exact, lazy):
            M.learn(state, M.Batch.of([e]))
        stale += sum(M.neighbors(lazy, i) != M.neighbors(exact, i) for i in names[:5])
    assert stale > 0
    M.refresh(lazy, all_rows=True)
    for i in names:
        assert M.neighbors(lazy, i) == M.neighbors(exact, i)
    users = sorted({e.user_id for e in events})
    assert M.render(lazy, M.rank(lazy, users, "itemcf")) == M.render(exact, M.rank(exact, users, "itemcf"))
