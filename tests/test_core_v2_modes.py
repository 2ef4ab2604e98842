"""core.v2 on hand-worked streams: every mode's list, scores and reasons, the learned combiner's features, cold
start, filters, re-rating, centring and decay, each against an answer worked out by hand (tests/reference.py)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from reference import CATALOG, STREAM

import config
from core.v2 import kernels as K
from core.v2 import model as M
from core.v2.settings import Settings
from udfs.events import Event

ITEMCF_C = 40 / math.sqrt(41)
USERCF_C = 40 / math.sqrt(41 * 42)

# Exact settings for known answers: no decay, trending as window counts, no training.
EXACT: dict[str, Any] = {"half_life_s": None, "trending_half_life_s": None, "trending_window_s": 3600.0,
                         "trending_buckets": 12, "train_combiner": False,
                         "methods": ("itemcf", "usercf", "content", "popular"),  # the factors: test_core_v2_factor*
                         "itemcf_profile": "history"}


def ev(n: int, user: str, item: str, w: float, etype: str = "rate", ts: int | None = None) -> Event:
    return Event(f"e{n}", user, item, etype, w, 1000 * (n + 1) if ts is None else ts)


def learn(state: M.State, *events: Event) -> None:
    M.learn(state, M.Batch.of(list(events)), train=state.settings.train_combiner)


def model(stream: list[tuple[str, str, float]] = STREAM, **kwargs: Any) -> M.State:
    state = M.new_state(Settings(**{**EXACT, **kwargs}))
    M.add_items(state, CATALOG)
    for n, (u, i, w) in enumerate(stream):
        learn(state, ev(n, u, i, w))
    return state


def ranked(state: M.State, user: str, mode: str | None = None, n: int = 10) -> list[tuple[str, float, str]]:
    return M.render(state, M.rank(state, [user], mode, n))[0]


def items(ranking: list[tuple[str, float, str]]) -> list[str]:
    return [i for i, _, _ in ranking]


def features(state: M.State, user: str) -> dict[str, dict[str, float]]:
    """Each candidate's learned-mode features, read back through the combiner: with the weight of feature f alone
    set to 1 (bias 0) an item's probability is ``sigmoid(x_f)``, so ``x_f = logit(p)``."""
    saved = state.comb.copy()
    out: dict[str, dict[str, float]] = {}
    for f, name in enumerate(M.FEATURES):
        state.comb[:] = 0.0
        state.comb[f] = 1.0
        for item, p, _ in ranked(state, user, "learned", 100):
            out.setdefault(item, {})[name] = math.log(p / (1 - p))
    state.comb[:] = saved
    return out


def log_weight(state: M.State, user: str, item: str) -> float:
    """The model weight of the (user, item) pair in the user's log."""
    lp = state.lpool
    slot = K.ulog_find(state.users.get(user), state.items.get(item), lp.ptr, lp.cap, lp.cols, lp.vals)
    assert slot >= 0, (user, item)
    return float(state.lg_w[slot])


def test_single_method_modes_fill_with_trending() -> None:
    m = model()
    assert ranked(m, "u1", "itemcf", 3) == [("c", pytest.approx(ITEMCF_C), "because you rated Alpha"),
                                            ("e", 0.0, "trending")]
    assert ranked(m, "u1", "usercf", 3) == [("c", pytest.approx(USERCF_C), "liked by similar user u2"),
                                            ("e", 0.0, "trending")]
    content = ranked(m, "u1", "content", 3)
    assert content[0][::2] == ("d", "matches your taste for Comedy") and content[0][1] > 0
    assert items(content) == ["d", "e", "c"]
    assert ranked(m, "u1", "popular", 3) == [("e", 2.0, "trending"), ("c", 1.0, "trending")]


def test_weighted_known_answer_and_the_reason_of_the_largest_term() -> None:
    # min-max per list: itemcf c 1; usercf c 1; content d 1; popular e 1, c 0.
    # α = itemcf 1, usercf .5, content .1, popular .2: c = 1 + .5 + 0 = 1.5, e = .2, d = .1
    m = model(fusion_weights={"itemcf": 1.0, "usercf": 0.5, "content": 0.1, "popular": 0.2})
    assert ranked(m, "u1", "weighted", 5) == [
        ("c", pytest.approx(1.5), "because you rated Alpha"),
        ("e", pytest.approx(0.2), "trending"),
        ("d", pytest.approx(0.1), "matches your taste for Comedy"),
    ]
    m2 = model(fusion_weights={"itemcf": 1.0, "usercf": 2.0, "content": 0.1, "popular": 0.2})
    assert ranked(m2, "u1", "weighted", 1) == [("c", pytest.approx(3.0), "liked by similar user u2")]


def test_rrf_and_borda_known_answer() -> None:
    m = model(rrf_k=60)
    # ranks: itemcf [c], usercf [c], content [d], popular [e, c]
    assert ranked(m, "u1", "rrf", 3) == [
        ("c", pytest.approx(2 / 61 + 1 / 62), "because you rated Alpha"),
        ("d", pytest.approx(1 / 61), "matches your taste for Comedy"),  # d and e tie: item id
        ("e", pytest.approx(1 / 61), "trending"),
    ]
    # Borda, N = 3 candidates; a list of L items gives N - r + 1 and its missing items share (N - L + 1) / 2:
    # c 3 + 3 + 1.5 + 2 = 9.5; e 1.5 · 3 + 3 = 7.5; d 1.5 + 1.5 + 3 + 1 = 7
    assert ranked(m, "u1", "borda", 3) == [("c", 9.5, "because you rated Alpha"), ("e", 7.5, "trending"),
                                           ("d", 7.0, "matches your taste for Comedy")]


def test_learned_features_known_answer_and_ranking() -> None:
    m = model(combiner_warmup=0)
    f = features(m, "u1")
    assert set(f) == {"c", "d", "e"}
    assert f["c"]["itemcf"] == 1.0 and f["c"]["usercf"] == 1.0 and f["c"]["content"] == 0.0
    assert f["c"]["popularity"] == pytest.approx(math.log(2) / math.log(3))  # 1 user of c, at most 2 of any item
    assert f["e"]["popularity"] == pytest.approx(1.0)
    assert f["d"]["popularity"] == 0.0 and f["d"]["recency"] == 0.0  # d was never engaged
    assert f["e"]["recency"] == pytest.approx(2 ** (-(7000 - 5000) / 86400e3))  # last engaged at 5 s, now 7 s
    assert all(0.0 <= v <= 1.0 + 1e-12 for x in f.values() for v in x.values())
    # rank features: 1 - ln(rank) / ln(candidate_pool + 1), 0 when the method did not list the item
    assert f["c"]["itemcf_rank"] == 1.0 and f["c"]["content_rank"] == 0.0 and f["d"]["content_rank"] == 1.0
    assert f["c"]["popular_rank"] == pytest.approx(1 - math.log(2) / math.log(m.settings.candidate_pool + 1))
    # baseline: clip((μ + b_u + b_i - min) / (max - min)), μ = 27/7 over the 7 ratings, damped biases
    mu = 27 / 7
    b_item = {"a": (9 - 2 * mu) / (25 + 2), "b": (9 - 2 * mu) / (25 + 2), "c": (1 - mu) / (25 + 1),
              "d": 0.0, "e": (8 - 2 * mu) / (25 + 2)}
    b_u1 = ((5 - mu - b_item["a"]) + (4 - mu - b_item["b"])) / (10 + 2)
    for item in ("c", "d", "e"):
        assert f[item]["baseline"] == pytest.approx((mu + b_u1 + b_item[item] - 0.5) / 4.5, rel=1e-9)
    # a combiner that only trusts content (and a little popularity) ranks d first, and says why
    m.comb[:] = 0.0
    m.comb[M.FEATURES.index("content")] = 5.0
    m.comb[M.FEATURES.index("popularity")] = 1.0
    got = ranked(m, "u1", "learned", 3)
    assert got[0] == ("d", pytest.approx(1 / (1 + math.exp(-5.0))), "matches your taste for Comedy")
    assert items(got)[1:] == ["e", "c"] and got[1][2] == "trending"  # popularity: e (2 users) before c (1)
    assert M.combiner(m) == {**dict.fromkeys(M.FEATURES, 0.0), "content": 5.0, "popularity": 1.0, "bias": 0.0}


def test_learned_features_score_every_candidate() -> None:
    # u2: a 4, b 5, c 1, d 2; u3: a 3, c 2; u1: a 5, b 4. candidate_pool=1 keeps one item per method.
    # Item-CF norms: a 16+9+25 = 50, b 25+16 = 41, c 1+4 = 5, d 4; co-occurrence C[a][c] = 4·1 + 3·2 = 10,
    #   C[b][c] = 5, C[a][d] = 8, C[b][d] = 10.  For u1 (a 5, b 4), the terms w·sim:
    #   c: 5·10/√250 and 4·5/√205;  d: 5·8/√200 and 4·10/√164  -> d scores higher: the item-CF list is [d].
    # User-CF: sim(u1, u2) = 40/√(41·46), sim(u1, u3) = 15/√(41·13);
    #   c: s12·1 + s13·2 (terms s12, 2·s13);  d: s12·2  -> the user-CF list is [c].
    # Trending (counts): a 3, b 2, c 2, d 1 -> popular [c]; content (Comedy profile) [d]. Candidates {c, d}.
    stream = [("u2", "a", 4.0), ("u2", "b", 5.0), ("u2", "c", 1.0), ("u2", "d", 2.0), ("u3", "a", 3.0),
              ("u3", "c", 2.0), ("u1", "a", 5.0), ("u1", "b", 4.0)]
    m = model(stream, candidate_pool=1, combiner_warmup=0)
    assert items(ranked(m, "u1", "itemcf", 1)) == ["d"] and items(ranked(m, "u1", "usercf", 1)) == ["c"]
    icf_c = [50 / math.sqrt(250), 20 / math.sqrt(205)]
    icf_d = [40 / math.sqrt(200), 40 / math.sqrt(164)]
    s12, s13 = 40 / math.sqrt(41 * 46), 15 / math.sqrt(41 * 13)
    f = features(m, "u1")
    assert set(f) == {"c", "d"}
    # c is not in the item-CF list of one, but gets its item-CF score
    assert f["d"]["itemcf"] == pytest.approx(1.0)
    assert f["c"]["itemcf"] == pytest.approx(sum(icf_c) / sum(icf_d))
    assert f["c"]["itemcf_max"] == pytest.approx(1.0)  # 50/√250 = 3.162 > 40/√164 = 3.123
    assert f["d"]["itemcf_max"] == pytest.approx(icf_d[1] / icf_c[0])
    # likewise d gets its user-CF score although only c is in the user-CF list
    assert f["c"]["usercf"] == pytest.approx(1.0)
    assert f["d"]["usercf"] == pytest.approx(2 * s12 / (s12 + 2 * s13))
    assert f["d"]["usercf_max"] == pytest.approx(1.0)  # 2·s12 = 1.842 > 2·s13 = 1.299
    assert f["c"]["usercf_max"] == pytest.approx(s13 / s12)
    assert f["d"]["content"] == 1.0 and f["c"]["content"] == 0.0  # d is the only Comedy candidate
    assert f["d"]["itemcf_rank"] == 1.0 and f["c"]["itemcf_rank"] == 0.0  # ranks still come from the lists
    # a method that is switched off contributes nothing
    f2 = features(model(stream, candidate_pool=1, combiner_warmup=0, methods=("itemcf", "popular")), "u1")
    assert all(x["usercf"] == x["usercf_max"] == x["content"] == 0.0 for x in f2.values())
    assert f2["c"]["itemcf"] == pytest.approx(sum(icf_c) / sum(icf_d))


def test_learned_falls_back_to_weighted_until_warm() -> None:
    m = model(combiner_warmup=10)
    m.comb[:] = 1.0  # weights that would change the order, but no example seen yet
    assert int(m.comb_n[0]) == 0
    assert ranked(m, "u1", "learned", 3) == ranked(m, "u1", "weighted", 3)


def test_recommend_then_learn_trains_the_combiner() -> None:
    m = model(train_combiner=True, combiner_sample=1.0, n_neg=1)
    before = int(m.comb_n[0])  # u2's and u1's later events already trained it
    learn(m, ev(20, "u1", "c", 4.0))  # c was a candidate: one positive and one negative
    assert int(m.comb_n[0]) == before + 2
    learn(m, ev(21, "u1", "c", 2.0))  # a re-rating: the item is seen, nothing to learn
    assert int(m.comb_n[0]) == before + 2
    learn(m, ev(22, "u9", "a", 4.0))  # a new user: no history, nothing to learn
    assert int(m.comb_n[0]) == before + 2
    w = M.combiner(m)
    assert w["itemcf"] > 0 and w["usercf"] > 0  # c had the full item-CF and user-CF score
    # without train, learning the same kind of event leaves the combiner alone
    M.learn(m, M.Batch.of([ev(23, "u1", "d", 4.0)]))
    assert int(m.comb_n[0]) == before + 2


def test_the_combiner_is_trained_the_same_however_the_events_are_batched() -> None:
    # the draws are keyed by (seed, event id) and each step sees the state just before its event
    settings = Settings(methods=("itemcf", "usercf", "content", "popular"), history_cap=5, usercf_max_raters=4,
                        candidate_pool=8, combiner_sample=0.5, n_neg=2)
    rng = random.Random(4)
    events = [Event(f"e{k:04d}", f"u{rng.randrange(25)}", f"i{int(rng.paretovariate(1.0)) % 40}", "rate",
                    float(rng.randint(1, 5)), 1000 * (k // 3)) for k in range(600)]
    runs = []
    for step in (1, 37, len(events)):
        state = M.new_state(settings)
        M.add_items(state, [{"item_id": f"i{k}", "title": f"T{k % 7}", "year": 1990 + k % 20,
                             "genres": [["Drama"], ["Comedy"], ["Action", "Drama"]][k % 3]} for k in range(40)])
        for start in range(0, len(events), step):
            M.learn(state, M.Batch.of(events[start:start + step]), train=True)
        runs.append((int(state.comb_n[0]), state.comb.tolist()))
    assert runs[0][0] > 100
    assert runs[1] == runs[0] and runs[2] == runs[0]



def test_the_combiner_is_trained_the_same_whatever_order_the_catalog_arrives_in() -> None:
    # dense item ids follow the order records arrive in (two catalog partitions interleave differently at another
    # parallelism); the combiner's sums must not, to the last bit (its weights reach Redis unrounded)
    from ingest.movielens import load_catalog, load_events

    settings = Settings.from_config(config.load_config(overrides=["model.hybrid.mode=learned"], env={})["model"])
    events = load_events(limit=4000)
    catalog = [{**r, "position": n} for n, r in enumerate(load_catalog())]
    runs = []
    for seed in (None, 1, 2):
        records = list(catalog)
        if seed is not None:
            random.Random(seed).shuffle(records)
        state = M.new_state(settings)
        M.add_items(state, records)
        M.learn(state, M.Batch.of(events), train=True)
        runs.append((int(state.comb_n[0]), state.comb.tolist()))
    assert runs[0][0] > 100
    assert runs[1] == runs[0] and runs[2] == runs[0]

def test_sgd_known_first_step_and_decision() -> None:
    comb, comb_n = K.np.zeros(K.N_FEATURES + 1), K.np.zeros(1, dtype=K.np.int64)
    x = K.np.zeros(K.N_FEATURES)
    x[0] = 1.0
    K._sgd(comb, comb_n, x, 1.0, 0.5, 0.0)  # p = 0.5, gradient -0.5: w_0 = 0.25, bias = 0.25, the rest untouched
    assert comb.tolist() == [0.25] + [0.0] * (K.N_FEATURES - 1) + [0.25] and comb_n[0] == 1
    assert K._decision(comb, x) == 0.5
    K._sgd(comb, comb_n, x, 0.0, 0.5, 0.1)  # a negative with L2: w -= lr (g x + l2 w), bias -= lr g
    g = 1 / (1 + math.exp(-0.5))
    assert comb[0] == pytest.approx(0.25 - 0.5 * (g + 0.1 * 0.25)) and comb[-1] == pytest.approx(0.25 - 0.5 * g)


def test_sgd_learns_the_informative_feature() -> None:
    rng = random.Random(0)
    comb, comb_n = K.np.zeros(K.N_FEATURES + 1), K.np.zeros(1, dtype=K.np.int64)
    for _ in range(4000):
        # 10 candidates with uniform features; the user engages one with probability ∝ exp(4·x_0), so for an
        # engaged-vs-other pair the log-odds are 4·Δx_0 and the other features carry nothing
        shown = [K.np.array([rng.random() for _ in range(K.N_FEATURES)]) for _ in range(10)]
        engaged = rng.choices(range(10), weights=[math.exp(4 * x[0]) for x in shown])[0]
        K._sgd(comb, comb_n, shown[engaged], 1.0, 0.05, 1e-4)
        for other in rng.sample([k for k in range(10) if k != engaged], 3):
            K._sgd(comb, comb_n, shown[other], 0.0, 0.05, 1e-4)
    assert comb[0] > 3.0
    assert all(abs(comb[f]) < 0.4 < comb[0] / 8 for f in range(1, K.N_FEATURES))


def test_new_user_gets_trending_in_every_mode() -> None:
    m = model()
    expected = [("a", 2.0, "trending"), ("b", 2.0, "trending"), ("e", 2.0, "trending"), ("c", 1.0, "trending")]
    for mode in M.FUSION:
        assert ranked(m, "nobody", mode, 10) == expected, mode
    assert ranked(m, "nobody", None, 2) == expected[:2]


def test_one_event_user_gets_trending_blended_with_content() -> None:
    m = model(cold_start_items=2, cold_start_weights={"popular": 1.0, "content": 0.5})
    learn(m, ev(30, "u5", "d", 4.0))
    # popular (d seen): a, b, e 2 -> 1.0 each, c 1 -> 0.0; content of a Comedy profile: a, b equal -> 1.0 each
    got = ranked(m, "u5", "weighted", 4)
    assert got == [("a", pytest.approx(1.5), "trending"), ("b", pytest.approx(1.5), "trending"),
                   ("e", pytest.approx(1.0), "trending"), ("c", pytest.approx(0.0), "trending")]
    assert ranked(m, "u5", "rrf", 4) == got  # every fusion mode uses the cold-start blend
    learn(m, ev(31, "u5", "e", 4.0))  # two events: no longer cold, the mode's own fusion
    assert ranked(m, "u5", "weighted", 4) != ranked(m, "u5", "rrf", 4)


@pytest.mark.parametrize("content_search", ["catalog", "candidates"])
def test_new_item_mid_stream_is_reachable_through_content(content_search: str) -> None:
    m = model(fusion_weights={"itemcf": 1.0, "usercf": 0.5, "content": 0.1, "popular": 0.2},
              content_search=content_search)
    M.add_items(m, [{"item_id": "n", "title": "November", "year": None, "genres": ["Comedy"]}])
    assert "n" in items(ranked(m, "u1", "content"))
    assert "n" not in items(ranked(m, "u1", "itemcf"))  # no co-occurrence yet
    assert ("n", pytest.approx(0.1), "matches your taste for Comedy") in ranked(m, "u1", "weighted")
    learn(m, ev(40, "u2", "n", 5.0))  # once engaged, the new item takes part in co-occurrence like any other
    assert ("n", "because you rated Alpha") in [(i, r) for i, _, r in ranked(m, "u1", "itemcf")]


def test_content_search_candidates_reranks_the_other_methods_candidates() -> None:
    """``content_search: candidates``: a warm user's content pool is the others' candidates (and the newest catalog
    items) by cosine; ``catalog`` searches the whole catalog. Seen through ``weighted`` with content alone weighted."""
    stream = [*STREAM, ("u1", "e", 2.0)]  # u1 (a, b, e) has history; d (Comedy) is proposed by no other method
    only_content = {"fusion_weights": {"itemcf": 0.0, "usercf": 0.0, "content": 1.0, "popular": 0.0}}
    full = model(stream, **only_content)
    assert ranked(full, "u1", "weighted", 1) == [("d", 1.0, "matches your taste for Comedy")]
    cand = model(stream, content_search="candidates", content_new_items=0, **only_content)
    assert "d" not in items(ranked(cand, "u1", "weighted"))
    assert ranked(cand, "u1", "content") == ranked(full, "u1", "content")  # the content mode alone: the catalog
    # the newest catalog items are re-ranked too: d is one of the 2 added last (d, e)
    newest = model(stream, content_search="candidates", content_new_items=2, **only_content)
    assert ranked(newest, "u1", "weighted", 1) == [("d", 1.0, "matches your taste for Comedy")]


def test_rerating_replaces_the_weight_everywhere() -> None:
    m = model()
    learn(m, ev(50, "u1", "a", 1.0))  # u1 re-rates a: 5 -> 1
    a = m.items.get("a")
    assert log_weight(m, "u1", "a") == 1.0
    assert m.i_norm[a] == 1.0 + 16.0  # u1's 1² and u2's 4²
    assert (m.b_sum[a], m.b_n[a], m.i_users[a]) == (5.0, 2, 2)  # the rating sums move, the counts stay
    assert m.u_norm[m.users.get("u1")] == 1.0 + 16.0
    # norm_a = 17: score(c) = 1·4/√17 + 4·5/√41; D[u1][u2] = 1·4 + 4·5 = 24
    assert ranked(m, "u1", "itemcf", 1) == [("c", pytest.approx(4 / math.sqrt(17) + 20 / math.sqrt(41)),
                                             "because you rated Bravo")]
    assert M.user_similarity(m, "u1", "u2") == pytest.approx(24 / math.sqrt(17 * 42))
    assert "a" not in items(ranked(m, "u1"))


def test_mean_centred_ratings() -> None:
    m = model(stream=[], center_ratings=True)
    learn(m, ev(0, "x", "p", 4.0))  # no other rating of x: centred on the global mean (the prior, 2.75)
    assert log_weight(m, "x", "p") == pytest.approx(4.0 - 2.75)
    learn(m, ev(1, "x", "q", 2.0))  # centred on x's other ratings: 2 - 4 = -2
    assert log_weight(m, "x", "q") == pytest.approx(-2.0)
    learn(m, ev(2, "x", "q", 5.0))  # a re-rating is centred on the *other* ratings: 5 - 4 = 1
    assert log_weight(m, "x", "q") == pytest.approx(1.0)
    learn(m, ev(3, "x", "r", 2.0, etype="click"))  # implicit events keep their weight
    assert log_weight(m, "x", "r") == 2.0
    # user-CF reads positive weights only, w⁺ = max(w, MIN_POSITIVE_WEIGHT): x's p (1 - 2.75 < 0) counts as the
    # floor in x's norm, q (5 - 1 = 4) and y's q (4 - 3, the global mean) as they are
    m2 = model(stream=[], center_ratings=True)
    learn(m2, ev(0, "x", "p", 1.0), ev(1, "x", "q", 5.0))
    learn(m2, ev(2, "y", "q", 4.0))
    assert log_weight(m2, "x", "p") < 0 < log_weight(m2, "x", "q") and log_weight(m2, "y", "q") > 0
    # D[x][y] = w⁺_xq · w⁺_yq, norm_x = w⁺_xp² + w⁺_xq²
    wxq, wyq, wxp = log_weight(m2, "x", "q"), log_weight(m2, "y", "q"), K.MIN_POSITIVE_WEIGHT
    assert M.user_similarity(m2, "x", "y") == pytest.approx(wxq * wyq / math.sqrt((wxp ** 2 + wxq ** 2) * wyq ** 2))


def test_reasons_name_the_event_type() -> None:
    m = model(stream=[])
    learn(m, *[ev(n, u, i, 1.0, etype=t) for n, (u, i, t) in
               enumerate([("v", "a", "view"), ("v", "b", "view"), ("w", "a", "purchase")])])
    # norm_a = 1 + 1, norm_b = 1, C[a][b] = 1: score(b) = 1 · 1/√2
    assert ranked(m, "w", "itemcf", 1) == [("b", pytest.approx(1 / math.sqrt(2)), "because you bought Alpha")]


def test_filters_seen_denied_and_at_most_n() -> None:
    m = model(deny=("e",))
    got = ranked(m, "u1")
    assert "e" not in items(got) and not {"a", "b"} & set(items(got))
    assert len(ranked(m, "u1", None, 1)) == 1 and ranked(m, "u1", None, 0) == []
    M.deny(m, ["c"])
    assert "c" not in items(ranked(m, "u1")) and "c" not in items(ranked(m, "u1", "itemcf"))
    for mode in M.FUSION:
        assert len(ranked(m, "u1", mode, 2)) <= 2
        assert not {"a", "b", "c", "e"} & set(items(ranked(m, "u1", mode))), mode


def test_exclude_types_keeps_viewed_items_recommendable() -> None:
    m = model(stream=[], exclude_types=("rate", "purchase"))
    learn(m, *[ev(n, u, i, w, etype=t) for n, (u, i, t, w) in
               enumerate([("v", "a", "rate", 5.0), ("v", "b", "rate", 4.0), ("w", "a", "rate", 5.0),
                          ("w", "b", "view", 1.0)])])
    assert "b" in items(ranked(m, "w", "itemcf", 5))  # the view of b does not hide b
    assert "a" not in items(ranked(m, "w", "itemcf", 5))  # the rating of a does
    with pytest.raises(ValueError, match=r"exclude_types .* unknown event types \['like'\]"):
        Settings(exclude_types=("like",))


def test_decay_favours_the_recent_history() -> None:
    # old: u rated x a day ago; recent: u rated y now. x's neighbour p, y's neighbour q.
    day = 86_400_000
    stream = [Event("1", "o1", "x", "rate", 5.0, 0), Event("2", "o1", "p", "rate", 5.0, 1),
              Event("3", "o2", "y", "rate", 5.0, 2), Event("4", "o2", "q", "rate", 4.0, 3),
              Event("5", "u", "x", "rate", 5.0, 4), Event("6", "u", "y", "rate", 4.0, day)]
    undecayed, decayed = model(stream=[]), model(stream=[], half_life_s=3600.0)
    for state in (undecayed, decayed):
        learn(state, *stream)
    # sim(x, p) = 25/√(50·25) = 1/√2, sim(y, q) = 20/√(41·16): undecayed p 5/√2 ≈ 3.54 > q 4·0.781 ≈ 3.12
    assert items(ranked(undecayed, "u", "itemcf"))[:2] == ["p", "q"]
    got = ranked(decayed, "u", "itemcf", 2)
    assert items(got) == ["q", "p"]
    assert got[0][1] == pytest.approx(4 * 20 / math.sqrt(41 * 16))  # y is the latest item: no decay
    assert got[1][1] == pytest.approx(5 * 2 ** (-(day - 4) / 3_600_000) / math.sqrt(2))  # x: ~24 half-lives


def test_popular_reads_past_the_items_a_user_engaged() -> None:
    # item k engaged by k + 1 users: a strict order; u engaged the 30 most popular: popular gives the next ones
    m = model(stream=[], trending_size=5, candidate_pool=5)
    events = [ev(100 * k + j, f"v{j}", f"i{k:03d}", 1.0, ts=0) for k in range(40) for j in range(k + 1)]
    events += [ev(10_000 + k, "u", f"i{k:03d}", 1.0, ts=0) for k in range(10, 40)]
    learn(m, *events)
    assert ranked(m, "u", "popular", 4) == [(f"i{k:03d}", float(k + 1), "trending") for k in (9, 8, 7, 6)]


def test_itemcf_known_answer_small_matrix() -> None:
    # users a, b rate x, y alike; b also rates z: C[x][y] = 5·4 + 4·5 = 40, norms x: 25+16 = 41, y: 16+25 = 41,
    # z: 1; C[x][z] = 4·1, C[y][z] = 5·1. cos(x,y) = 40/41, cos(x,z) = 4/√41, cos(y,z) = 5/√41.
    m = model(stream=[], history_cap=0, methods=("itemcf", "popular"))
    learn(m, *[ev(n, u, i, w) for n, (u, i, w) in
               enumerate([("a", "x", 5), ("a", "y", 4), ("b", "x", 4), ("b", "y", 5), ("b", "z", 1)])])
    assert M.similarity(m, "x", "y") == pytest.approx(40 / 41)
    assert M.similarity(m, "z", "x") == pytest.approx(4 / 41 ** 0.5)
    assert M.neighbors(m, "z") == [("y", pytest.approx(5 / 41 ** 0.5)), ("x", pytest.approx(4 / 41 ** 0.5))]
    # a has seen x and y: the only unseen item is z, scored 5·cos(x,z) + 4·cos(y,z) = 40/√41; x and y contribute
    # 20/√41 each: the reason is the smaller id
    assert ranked(m, "a", "itemcf", 3) == [("z", pytest.approx(40 / 41 ** 0.5), "because you rated x")]


def test_history_cap_bounds_the_pairs_and_keeps_every_weight() -> None:
    # history cap 3: the 5th item pairs with the 3 before it, not with the first; every norm still counts
    m = model(stream=[], history_cap=3, methods=("itemcf", "popular"))
    learn(m, *[ev(k, "u", f"i{k}", 1.0 + k) for k in range(5)])
    assert M.similarity(m, "i4", "i0") == 0.0
    assert [M.similarity(m, "i4", f"i{k}") > 0 for k in (1, 2, 3)] == [True, True, True]
    assert [m.i_norm[m.items.get(f"i{k}")] for k in range(5)] == [1.0, 4.0, 9.0, 16.0, 25.0]
    u = m.users.get("u")
    assert [m.items.names[j] for j in m.rc_item[u, : m.rc_len[u]]] == ["i2", "i3", "i4"]  # oldest first


# Hand-built matrix (users a, b, c; items x, y, z):
#   a: x=1, y=2          norm_a = 1 + 4     = 5
#   b: x=2, y=1, z=2     norm_b = 4 + 1 + 4 = 9
#   c: z=3               norm_c = 9
#   D[a][b] = 1·2 + 2·1 = 4  -> sim = 4/√45;  D[b][c] = 2·3 = 6 -> sim = 6/√81 = 2/3;  D[a][c] = 0
USERCF_EVENTS = [("a", "x", 1.0), ("a", "y", 2.0), ("b", "x", 2.0), ("b", "y", 1.0), ("b", "z", 2.0), ("c", "z", 3.0)]
SIM_AB = 4 / math.sqrt(45)


def test_usercf_known_answer_similarities_neighbours_and_lists() -> None:
    m = model(USERCF_EVENTS, methods=("usercf", "popular"), usercf_max_raters=0)
    assert M.user_similarity(m, "a", "b") == pytest.approx(SIM_AB, rel=1e-12)
    assert M.user_similarity(m, "b", "c") == pytest.approx(2 / 3, rel=1e-12)
    assert M.user_similarity(m, "a", "c") == 0.0
    assert M.user_neighbors(m, "b") == [("c", pytest.approx(2 / 3)), ("a", pytest.approx(SIM_AB))]
    assert M.user_neighbors(m, "nobody") == []
    # a's only neighbour is b: score(z) = sim(a,b)·w_bz = 2·4/√45; x, y are a's own items
    assert ranked(m, "a", "usercf") == [("z", pytest.approx(8 / math.sqrt(45)), "liked by similar user b")]
    # c's only neighbour is b (2/3): x = 2·2/3, y = 1·2/3; z is c's own
    assert ranked(m, "c", "usercf") == [("x", pytest.approx(4 / 3), "liked by similar user b"),
                                        ("y", pytest.approx(2 / 3), "liked by similar user b")]
    # nothing excluded: b's own items are candidates too; the reason is the neighbour contributing most
    # (z: c 2/3·3 = 2 > none from a; y: a 2·4/√45; x: a 1·4/√45)
    free = model(USERCF_EVENTS, methods=("usercf", "popular"), usercf_max_raters=0, exclude_types=())
    assert ranked(free, "b", "usercf") == [("z", pytest.approx(2.0), "liked by similar user c"),
                                           ("y", pytest.approx(2 * SIM_AB), "liked by similar user a"),
                                           ("x", pytest.approx(SIM_AB), "liked by similar user a")]
    # a re-rating replaces the weight: norm_a = 9 + 4 = 13, D[a][b] = 3·2 + 2·1 = 8
    learn(m, ev(7, "a", "x", 3.0))
    assert M.user_similarity(m, "a", "b") == pytest.approx(8 / math.sqrt(13 * 9), rel=1e-12)
    # usercf_top_k 1 keeps the best neighbour
    assert M.user_neighbors(model(USERCF_EVENTS, usercf_top_k=1, usercf_max_raters=0), "b") == [
        ("c", pytest.approx(2 / 3))]


def test_usercf_fan_out_cap_pairs_with_the_latest_raters() -> None:
    # raters of x: a, b -> c arrives, pairs with a and b, then a (oldest) leaves -> d pairs with b and c only
    m = model(stream=[], methods=("usercf", "popular"), usercf_max_raters=2)
    learn(m, *[ev(k, u, "x", 1.0) for k, u in enumerate("abcd")])
    assert M.user_similarity(m, "d", "a") == 0.0
    assert M.user_similarity(m, "d", "b") == pytest.approx(1.0)
    assert M.user_similarity(m, "c", "a") == pytest.approx(1.0)


def test_baseline_sums_known_answer_and_rerating() -> None:
    # λ_item 1, λ_user 0; ratings u-i 4, v-i 2, u-j 5: μ = 11/3; b_i = (6 - 2·11/3) / (1 + 2) = -4/9;
    # b_j = (5 - 11/3) / 2 = 2/3; b_u = ((4 - 11/3 + 4/9) + (5 - 11/3 - 2/3)) / 2 = 13/18;
    # the feature: (μ + b_u + b_j - min) / (max - min), max_rating 10 so nothing clips
    m = model(stream=[("u", "i", 4.0), ("v", "i", 2.0), ("u", "j", 5.0)], baseline_lambda_item=1.0,
              baseline_lambda_user=0.0, max_rating=10.0, exclude_types=(), methods=("popular",),
              combiner_warmup=0)
    i, j = m.items.get("i"), m.items.get("j")
    assert (m.fmeta[0], m.meta[3]) == (11.0, 3) and (m.b_sum[i], m.b_n[i], m.b_sum[j], m.b_n[j]) == (6.0, 2, 5.0, 1)
    f = features(m, "u")
    assert f["j"]["baseline"] == pytest.approx((11 / 3 + 13 / 18 + 2 / 3 - 0.5) / 9.5, rel=1e-12)
    assert f["i"]["baseline"] == pytest.approx((11 / 3 + 13 / 18 - 4 / 9 - 0.5) / 9.5, rel=1e-12)
    learn(m, ev(9, "v", "i", 3.0))  # re-rating replaces 2: the sums move by +1, the counts stay
    assert (m.fmeta[0], m.meta[3], m.b_sum[i], m.b_n[i]) == (12.0, 3, 7.0, 2)
    # a view is no rating: no sum moves
    learn(m, ev(10, "w", "j", 1.0, etype="view"))
    assert (m.fmeta[0], m.meta[3], m.b_sum[j], m.b_n[j]) == (12.0, 3, 5.0, 1)


def test_baseline_feature_equals_a_batch_recompute() -> None:
    rng = random.Random(2)
    stream = [(f"u{rng.randrange(12)}", f"i{rng.randrange(15)}", float(rng.choice([1, 2, 3, 4, 5])))
              for _ in range(300)]
    m = model(stream, exclude_types=(), methods=("popular",), combiner_warmup=0, candidate_pool=100,
              baseline_lambda_item=3.0, baseline_lambda_user=2.0, max_rating=12.0)
    final = {(u, i): r for u, i, r in stream}  # the last rating of each pair
    mu = sum(final.values()) / len(final)
    by_item: dict[str, list[float]] = {}
    for (_, i), r in final.items():
        by_item.setdefault(i, []).append(r)
    b_item = {i: (sum(rs) - len(rs) * mu) / (3.0 + len(rs)) for i, rs in by_item.items()}
    for user in sorted({u for u, _ in final}):
        mine = [(i, r) for (u, i), r in final.items() if u == user]
        b_u = sum(r - mu - b_item[i] for i, r in mine) / (2.0 + len(mine))
        f = features(m, user)
        assert set(f) == set(by_item)
        for i, x in f.items():
            assert x["baseline"] == pytest.approx((mu + b_u + b_item[i] - 0.5) / 11.5, abs=1e-9), (user, i)


def test_settings_from_config_and_errors_name_the_field() -> None:
    cfg = config.load_config()
    s = Settings.from_config(cfg["model"])
    assert s.top_n == cfg["model"]["top_n"] and s.history_cap == cfg["model"]["history_cap"]
    s2 = Settings.from_config(dict(cfg["model"], hybrid={"mode": "rrf", "candidate_pool": 7}), candidate_pool=9)
    assert s2.mode == "rrf" and s2.candidate_pool == 9
    with pytest.raises(ValueError, match=r"model\.hybrid\.nope"):
        Settings.from_config(dict(cfg["model"], hybrid={"nope": 1}))
    with pytest.raises(ValueError, match="setting 'bogus'"):
        Settings.from_config(cfg["model"], bogus=1)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"mode": "best"}, "mode 'best'"),
        ({"fusion_weights": {"itemcf": -1, "usercf": 1, "content": 1, "popular": 1}},
         r"fusion_weights\['itemcf'\] -1"),
        ({"fusion_weights": {"itemcf": 1, "content": 1, "popular": 1}},
         "has no weight for usercf"),
        ({"methods": ("itemcf", "svd")}, "methods"),
        ({"candidate_pool": 0}, "candidate_pool 0"),
        ({"combiner_sample": 2}, "combiner_sample 2"),
        ({"content_search": "all"}, "content_search 'all'"),
        ({"row_cap": 5}, "row_cap 5 must be 0 \\(all\\) or at least top_k 20"),
        ({"trending_window_s": 1, "trending_buckets": 3}, "whole number of milliseconds")]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            Settings(**kwargs)
    with pytest.raises(ValueError, match="mode 'x'"):
        M.rank(model(), ["u1"], "x")


@pytest.mark.parametrize(("profile", "diversity"), [("history", 0.0), ("engaged", 0.5)])
def test_a_user_ranked_in_a_batch_gets_the_list_ranked_alone(profile: str, diversity: float) -> None:
    """The job ranks a shard's users in one call, the single-process model often one at a time: no scratch state
    may carry from one user to the next (MovieLens-100K's first 4,000 ratings, every fusion mode)."""
    from ingest.movielens import load_catalog, load_events

    cfg = config.load_config(overrides=[f"model.hybrid.itemcf_profile={profile}",
                                        f"model.hybrid.diversity_lambda={diversity}"], env={})
    settings = Settings.from_config(cfg["model"])
    events = load_events(limit=4000)
    state = M.new_state(settings)
    M.add_items(state, load_catalog())
    M.learn(state, M.Batch.of(events), train=True)
    users = sorted({e.user_id for e in events})
    for mode in M.FUSION:
        together = M.render(state, M.rank(state, users, mode))
        assert together == [M.render(state, M.rank(state, [u], mode))[0] for u in users], mode
