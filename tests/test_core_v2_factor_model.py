"""The factor model wired into the model core: learned in ``learn`` (one step per engagement, in canonical order),
ranked as the ``factors`` method (known answers against a numpy oracle), its reasons, a feature of the learned
combiner and a weight of ``weighted``, and its rows independent of batching and id arrival."""

from __future__ import annotations

import random

import numpy as np
import pytest

from core.v2 import model as M
from core.v2.factors import learn_uniform
from core.v2.kernels import mix
from core.v2.settings import METHODS, Settings
from udfs.events import Event

GENRES = ["Action", "Comedy", "Drama", "Sci-Fi", "Horror"]
CATALOG = [{"item_id": f"i{k:02d}", "title": f"Title {k}", "year": 1990, "genres": [GENRES[k % 5]]}
           for k in range(30)]


def stream(n: int = 600, seed: int = 3) -> list[Event]:
    """Users of three tastes (each a third of the catalog), some ratings, some views, a few dislikes."""
    rng = random.Random(seed)
    out = []
    for e in range(n):
        u = rng.randrange(12)
        item = 3 * rng.randrange(10) + u % 3 if rng.random() < 0.85 else rng.randrange(30)
        kind = "dislike" if rng.random() < 0.03 else "rate" if rng.random() < 0.7 else "view"
        w = float(rng.randint(1, 5)) if kind == "rate" else 1.0
        out.append(Event(f"e{e:04d}", f"u{u:02d}", f"i{item:02d}", kind, w, 1000 * (e // 2 + 1)))
    return out


def learned(events: list[Event], chunks: int = 1, **kw: object) -> M.State:
    kw.setdefault("methods", METHODS)  # factors is opt-in
    state = M.new_state(Settings(**kw))  # type: ignore[arg-type]
    M.add_items(state, CATALOG)
    ordered = sorted(events, key=lambda e: (e.ts, e.event_id))
    cuts = sorted(random.Random(chunks).sample(range(1, len(ordered)), chunks - 1)) if chunks > 1 else []
    for a, b in zip([0, *cuts], [*cuts, len(ordered)], strict=True):
        M.learn(state, M.Batch.of(ordered[a:b]), train=True)
    return state


def oracle(state: M.State, user: str, n: int) -> list[tuple[str, float]]:
    """``b_i + p_u · q_i`` in numpy over the items some user engaged, but the user's own (engaged or disliked),
    best first, ties by id."""
    u = state.users.get(user)
    names = state.items.names
    own = {e_item for e_item in _own(state, u)}
    rows = []
    for j in range(len(names)):
        if state.i_users[j] > 0 and j not in own:
            rows.append((-(state.f_bi[j] + float(np.dot(state.f_p[u], state.f_q[j]))), names[j]))
    rows.sort()
    return [(name, -s) for s, name in rows[:n]]


def _own(state: M.State, u: int) -> list[int]:
    out = []
    for pool in (state.lpool, state.npool):
        cols = pool.cols[pool.ptr[u]: pool.ptr[u] + pool.cap[u]]
        out += cols[cols != -1].tolist()
    return out


def test_factor_candidates_are_the_numpy_oracles_best_items() -> None:
    state = learned(stream())
    users = sorted({e.user_id for e in stream()})
    ranking = M.rank(state, users, "factors", 8)
    for row, user in zip(M.render(state, ranking), users, strict=True):
        want = oracle(state, user, 8)
        assert [i for i, _, _ in row] == [i for i, _ in want], user
        assert [s for _, s, _ in row] == pytest.approx([s for _, s in want], rel=1e-12, abs=1e-12)
    # every user's list came from the factors (none filled with trending)
    assert (ranking.method[:, :8] == M.k.FACTORS).all()


def test_rows_are_one_sgd_step_per_engagement_in_canonical_order() -> None:
    """The state's rows equal the standalone kernel run over the engagements in (time, id) order; dislikes are no
    engagement."""
    events = stream()
    state = learned(events)
    s = state.settings
    ordered = [e for e in sorted(events, key=lambda e: (e.ts, e.event_id)) if e.type != "dislike"]
    users = np.array([state.users.get(e.user_id) for e in ordered])
    items = np.array([state.items.get(e.item_id) for e in ordered])
    keys = M.Batch.of(ordered).key
    nu, ni = len(state.users), len(state.items)
    fresh = learned([], **{})  # the start rows of the same ids
    fresh.users.encode(state.users.names)
    fresh.items.encode(state.items.names)
    fresh.fit(0, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    p, q, bi = fresh.f_p[:nu].copy(), fresh.f_q[:ni].copy(), np.zeros(ni)
    learn_uniform(users, items, keys, p, q, bi, np.zeros(ni, dtype=np.bool_), np.zeros(ni, dtype=np.int64),
                  np.zeros(1, dtype=np.int64), s.factors_n_neg, mix(s.seed, M.FACTOR_SALT), s.factors_lr,
                  s.factors_reg)
    assert np.array_equal(state.f_p[:nu], p) and np.array_equal(state.f_q[:ni], q)
    assert np.array_equal(state.f_bi[:ni], bi)


def test_rows_do_not_depend_on_batching_or_id_arrival() -> None:
    events = stream()
    one = learned(events)
    cut = learned(events, chunks=37)
    # the ids arrive in another order: the catalog reversed, a user asked for before any event
    other = M.new_state(Settings(methods=METHODS))
    M.add_items(other, CATALOG[::-1])
    M.rank(other, ["u07", "u03"])
    for e in sorted(events, key=lambda e: (e.ts, e.event_id)):
        M.learn(other, M.Batch.of([e]), train=True)
    for st in (cut, other):
        for name in one.users.names:
            assert np.array_equal(one.f_p[one.users.get(name)], st.f_p[st.users.get(name)]), name
        for name in one.items.names:
            a, b = one.items.get(name), st.items.get(name)
            assert np.array_equal(one.f_q[a], st.f_q[b]) and one.f_bi[a] == st.f_bi[b], name
        users = sorted(one.users.names)
        for mode in ("factors", "weighted", "learned"):
            assert M.render(one, M.rank(one, users, mode)) == M.render(st, M.rank(st, users, mode)), mode


def _planted_reasons() -> M.State:
    """u1 engaged a (Sci-Fi) and c (Comedy); the factor rows are set by hand: b sits by a (and is Sci-Fi too), d by c
    (but is Horror)."""
    catalog = [{"item_id": "a", "title": "Alien", "genres": ["Sci-Fi"]},
               {"item_id": "b", "title": "Blade Runner", "genres": ["Sci-Fi", "Drama"]},
               {"item_id": "c", "title": "Clue", "genres": ["Comedy"]},
               {"item_id": "d", "title": "Dracula", "genres": ["Horror"]}]
    state = M.new_state(Settings(methods=("factors",), factors_dim=2, fusion_weights=(("factors", 1.0),)))
    M.add_items(state, catalog)
    evs = [("u1", "a"), ("u1", "c"), ("u2", "b"), ("u2", "d")]
    M.learn(state, M.Batch.of([Event(f"e{n}", u, i, "view", 1.0, 1000 * (n + 1)) for n, (u, i) in enumerate(evs)]))
    ix = state.items.get
    state.f_q[ix("a")], state.f_q[ix("b")] = [1.0, 0.0], [0.9, 0.1]
    state.f_q[ix("c")], state.f_q[ix("d")] = [0.0, 1.0], [0.1, 0.8]
    state.f_bi[:] = 0.0
    state.f_p[state.users.get("u1")] = [1.0, 0.5]
    return state


def test_reasons_name_the_shared_genre_or_the_nearest_item() -> None:
    state = _planted_reasons()
    # b: 0.9 + 0.05 = 0.95; d: 0.1 + 0.4 = 0.5
    for mode in ("factors", "weighted"):
        row = M.render(state, M.rank(state, ["u1"], mode, 2))[0]
        assert [i for i, _, _ in row] == ["b", "d"]
        assert [r for _, _, r in row] == ["popular with people who share your taste in Sci-Fi",
                                          "because you liked Clue"], mode
    assert M.render(state, M.rank(state, ["u1"], "factors", 2))[0][0][1] == pytest.approx(0.95)


def test_a_feature_of_the_combiner_and_a_weight_of_weighted() -> None:
    assert M.FEATURES[-2:] == ("factors", "factors_rank")
    state = learned(stream(), combiner_warmup=0)
    weights = M.combiner(state)
    assert weights["factors"] != 0.0 and weights["factors_rank"] != 0.0  # trained in the stream
    users = sorted(state.users.names)
    # weighted with every weight but the factors' at 0 ranks as the factors alone (min-max keeps the order)
    only = state.settings.replace(fusion_weights={"itemcf": 0, "usercf": 0, "content": 0, "popular": 0, "factors": 1})
    alone = M.new_state(only)
    M.add_items(alone, CATALOG)
    M.learn(alone, M.Batch.of(stream()), train=True)
    a = M.rank(alone, users, "weighted", 5)
    b = M.rank(alone, users, "factors", 5)
    assert np.array_equal(a.item, b.item) and (a.method == M.k.FACTORS).all()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("factors_dim", 0, "factors_dim 0 must be an integer >= 1"),
    ("factors_lr", 0.0, "factors_lr 0.0 must be a number > 0"),
    ("factors_reg", -1, "factors_reg -1 must be a number >= 0"),
    ("factors_init_std", "x", "factors_init_std 'x' must be a number > 0"),
    ("factors_n_neg", 1.5, "factors_n_neg 1.5 must be an integer >= 0"),
    ("factors_loss", "bpr", "factors_loss 'bpr' must be one of positive, explicit"),
    ("itemcf_profile", "all", "itemcf_profile 'all' must be one of history, engaged"),
    ("itemcf_profile_floor", 2, "itemcf_profile_floor 2 must be in 0..1"),
])
def test_settings_errors_name_the_field_and_value(key: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        Settings.from_config({"hybrid": {key: value}})


def test_explicit_loss_learns_the_ratings_only() -> None:
    events = stream()
    state = learned(events, factors_loss="explicit")
    rated = [e for e in events if e.type == "rate"]
    assert state.f_mean.tolist() == [sum(e.weight for e in rated), len(rated)]
    assert state.f_bu[: len(state.users)].any()
