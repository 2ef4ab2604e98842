"""core.v2 negative feedback (``dislike``, ``hide``): known answers for the negative terms of item-CF and content,
hidden and disliked items never recommended again in any mode whatever later events say, and neither type entering
the positive learners (co-occurrence, user-CF, trending, the log)."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest
from reference import NEG_CATALOG, NEG_SCORE_C, NEG_SIM_XC, NEG_STREAM

from core.v2 import catalog as C
from core.v2 import model as M
from core.v2.settings import Settings
from udfs.events import Event

EXACT: dict[str, Any] = {"half_life_s": None, "trending_half_life_s": None, "trending_window_s": 3600.0,
                         "trending_buckets": 12, "train_combiner": False,
                         "methods": ("itemcf", "usercf", "content", "popular")}  # the factors: test_core_v2_factors
# the hand-worked fixture of tests/reference.py: u1's item-CF score of c is 40/√205, cos(x, c) = 7/√65
STREAM, SCORE_C, SIM_XC = NEG_STREAM, NEG_SCORE_C, NEG_SIM_XC


def ev(n: int, user: str, item: str, w: float = 1.0, etype: str = "rate") -> Event:
    return Event(f"e{n:04d}", user, item, etype, w, 1000 * (n + 1))


def model(stream: list[tuple[str, str, float]] = STREAM, extra: list[Event] = (), **kwargs: Any  # type: ignore[assignment]
          ) -> M.State:
    state = M.new_state(Settings(**{**EXACT, **kwargs}))
    M.add_items(state, NEG_CATALOG)
    for n, (u, i, w) in enumerate(stream):
        M.learn(state, M.Batch.of([ev(n, u, i, w)]), train=state.settings.train_combiner)
    if extra:
        M.learn(state, M.Batch.of(list(extra)), train=state.settings.train_combiner)
    return state


def ranked(state: M.State, user: str, mode: str | None = None, n: int = 10) -> list[tuple[str, float, str]]:
    return M.render(state, M.rank(state, [user], mode, n))[0]


def scores(state: M.State, user: str, mode: str) -> dict[str, float]:
    return {i: s for i, s, r in ranked(state, user, mode, 50) if r != "trending"}


def test_the_fixture_by_hand() -> None:
    m = model()
    assert M.similarity(m, "x", "c") == pytest.approx(SIM_XC, rel=1e-12)
    assert scores(m, "u1", "itemcf")["c"] == pytest.approx(SCORE_C, rel=1e-12)


@pytest.mark.parametrize("weight", [1.0, 0.5, 0.0])
def test_a_dislike_lowers_its_neighbours_by_the_weight_times_the_cosine(weight: float) -> None:
    before = model(dislike_weight=weight)
    after = model(extra=[ev(100, "u1", "x", etype="dislike")], dislike_weight=weight)
    got = scores(after, "u1", "itemcf")
    assert "x" in scores(before, "u1", "itemcf") and "x" not in got  # the disliked item itself: never again
    assert got["c"] == pytest.approx(SCORE_C - weight * SIM_XC, rel=1e-12)
    assert ranked(after, "u1", "itemcf")[0][2] == "because you rated Alpha"  # never because of x
    # only u1 is affected: a dislike is u1's alone
    assert scores(after, "u2", "itemcf") == scores(before, "u2", "itemcf")


def test_a_disliked_history_item_is_no_reason_and_a_negative_term() -> None:
    # u1 rated a, then dislikes it: each candidate keeps b's term, loses a's and gets -cos(a, ·):
    # x: 4 · 15/√533 - 12/√533, c: 4 · 5/√205 - 4/√205
    m = model(extra=[ev(100, "u1", "a", etype="dislike")])
    got = [(i, s, r) for i, s, r in ranked(m, "u1", "itemcf") if r != "trending"]
    assert [(i, r) for i, _, r in got] == [("x", "because you rated Bravo"), ("c", "because you rated Bravo")]
    assert [s for _, s, _ in got] == pytest.approx([48 / math.sqrt(533), 16 / math.sqrt(205)], rel=1e-12)


def _dense(state: M.State, item: str) -> np.ndarray:
    v = state.vectors
    assert v is not None
    i = state.items.get(item)
    x = np.zeros(C.DIM)
    x[v.col[v.ptr[i]: v.ptr[i + 1]]] = v.val[v.ptr[i]: v.ptr[i + 1]]
    return x


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / math.sqrt((a @ a) * (b @ b)))


@pytest.mark.parametrize("search", ["catalog", "candidates"])
def test_a_dislike_lowers_content_scores_by_the_weight_times_the_cosine(search: str) -> None:
    # x (Comedy, Drama) disliked: each content candidate j of u1 loses dislike_weight · cos(x, j) (a mean of one)
    before = model(content_search=search, dislike_weight=0.5)
    after = model(extra=[ev(100, "u1", "x", etype="dislike")], content_search=search, dislike_weight=0.5)
    for mode in ("content", "weighted"):
        assert "x" not in {i for i, _, _ in ranked(after, "u1", mode, 50)}
    was = {i: s for i, s, r in ranked(before, "u1", "content", 50) if r != "trending"}
    now = {i: s for i, s, r in ranked(after, "u1", "content", 50) if r != "trending"}
    assert "x" in was and "d" in now
    xv = _dense(after, "x")
    for j, s in was.items():
        want = s - 0.5 * _cos(xv, _dense(after, j))
        if j != "x" and want > 0:
            assert now[j] == pytest.approx(want, rel=1e-12, abs=1e-15), j
        else:
            assert j not in now


def test_two_dislikes_lower_content_by_their_mean_vector() -> None:
    after = model(extra=[ev(100, "u1", "x", etype="dislike"), ev(101, "u1", "e", etype="dislike")])
    before = model()
    was = {i: s for i, s, r in ranked(before, "u1", "content", 50) if r != "trending"}
    now = {i: s for i, s, r in ranked(after, "u1", "content", 50) if r != "trending"}
    mean = (_dense(after, "x") + _dense(after, "e")) / 2
    assert now
    for j, s in now.items():
        assert s == pytest.approx(was[j] - _cos(mean, _dense(after, j)), rel=1e-12), j


@pytest.mark.parametrize("etype", ["hide", "dislike"])
def test_a_hidden_item_never_comes_back_whatever_later_events_say(etype: str) -> None:
    later = [ev(200, "u1", "c", 5.0, "purchase"), ev(201, "u1", "c", 5.0), ev(202, "u3", "c", 5.0),
             ev(203, "u4", "c", 5.0), ev(204, "u6", "c", 5.0, "view")]
    m = model(extra=[ev(100, "u1", "c", etype=etype), *later], exclude_types=())  # even when engaging re-includes
    free = model(extra=later, exclude_types=())
    assert "c" in {i for i, _, _ in ranked(free, "u1", "weighted", 50)}
    for mode in M.FUSION:
        assert "c" not in {i for i, _, _ in ranked(m, "u1", mode, 50)}, mode
    # another user still gets it
    assert "c" in {i for i, _, _ in ranked(m, "u2", "popular", 50)} | {i for i, _, _ in ranked(m, "u7", None, 50)}


def test_a_user_with_only_negative_feedback_gets_trending_without_the_item() -> None:
    m = model(extra=[ev(100, "new", "a", etype="hide")])
    got = [i for i, _, _ in ranked(m, "new", None, 50)]
    assert got and "a" not in got
    assert m.lpool.size[m.users.get("new")] == 0  # no engagement: the user has no history


def test_negative_feedback_is_no_engagement() -> None:
    rng = random.Random(3)
    base = [ev(n, f"u{rng.randrange(12)}", f"i{rng.randrange(20)}", float(rng.randrange(1, 6))) for n in range(400)]
    negs = [ev(1000 + n, f"u{rng.randrange(12)}", f"i{rng.randrange(20)}", etype=rng.choice(["hide", "dislike"]))
            for n in range(60)]
    mixed = sorted(base + negs, key=lambda e: rng.random())
    s = Settings(**EXACT)
    a, b = M.new_state(s), M.new_state(s)
    M.learn(a, M.Batch.of(base))
    M.learn(b, M.Batch.of(mixed))
    assert list(a.users.names) == list(b.users.names)
    n = len(a.items)
    for name in ("i_norm", "b_sum", "b_n", "tr_val", "tb", "i_users", "i_last"):
        assert np.array_equal(getattr(a, name)[:n], getattr(b, name)[:n]), name
    for name in ("u_norm", "u_last", "rc_len"):
        assert np.array_equal(getattr(a, name)[: len(a.users)], getattr(b, name)[: len(a.users)]), name
    assert np.array_equal(a.lpool.size[: len(a.users)], b.lpool.size[: len(a.users)])
    for item in a.items.names:
        assert M.neighbors(a, item) == M.neighbors(b, item)
    for user in a.users.names:
        assert M.user_neighbors(a, user) == M.user_neighbors(b, user)


def test_the_same_events_give_the_same_lists_however_they_are_batched() -> None:
    rng = random.Random(5)
    events = []
    for n in range(1500):
        t = rng.choice(["rate"] * 5 + ["view", "dislike", "hide"])
        events.append(Event(f"e{n:05d}", f"u{rng.randrange(25)}", f"i{int(rng.paretovariate(1.0)) % 40}", t,
                            float(rng.randrange(1, 6)), 1000 * (n // 3)))
    s = Settings(combiner_warmup=0, combiner_sample=0.5)

    def lists(batch: int) -> dict[str, Any]:
        state = M.new_state(s)
        M.add_items(state, [{"item_id": f"i{k}", "title": f"t{k}", "year": None, "genres": [C.GENRES[1 + k % 18]]}
                            for k in range(40)])
        step = batch or len(events)
        for p in range(0, len(events), step):
            M.learn(state, M.Batch.of(events[p: p + step]), train=True)
        users = sorted(state.users.names)
        return {mode: M.render(state, M.rank(state, users, mode)) for mode in M.FUSION} | \
            {"comb": state.comb.tolist()}

    one = lists(0)
    assert lists(1) == one and lists(97) == one
    # every hidden or disliked (user, item) is absent from every list
    gone = {(e.user_id, e.item_id) for e in events if e.type in ("dislike", "hide")}
    users = sorted({e.user_id for e in events})
    for mode in M.FUSION:
        for u, row in zip(users, one[mode], strict=True):
            assert not {(u, i) for i, _, _ in row} & gone, (mode, u)


def test_dislike_weight_is_checked() -> None:
    with pytest.raises(ValueError, match="dislike_weight -1 must be a number >= 0"):
        Settings(dislike_weight=-1)
