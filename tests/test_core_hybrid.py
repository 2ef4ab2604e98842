import math
import pickle
import random
from typing import Any

import pytest

import config
from core.fusion import LogisticCombiner
from core.hybrid import FEATURES, MIN_POSITIVE_WEIGHT, HybridRecommender
from core.itemcf import ItemCF
from udfs.events import Event

# Catalog: a, b, d are Comedy, c Drama, e Action; no years and distinct one-word titles (distinct hash
# buckets), so content cosines come from the genre block only: d matches a Comedy profile, c and e do not.
CATALOG = [
    {"item_id": "a", "title": "Alpha", "year": None, "genres": ["Comedy"]},
    {"item_id": "b", "title": "Bravo", "year": None, "genres": ["Comedy"]},
    {"item_id": "c", "title": "Charlie", "year": None, "genres": ["Drama"]},
    {"item_id": "d", "title": "Delta", "year": None, "genres": ["Comedy"]},
    {"item_id": "e", "title": "Echo", "year": None, "genres": ["Action"]},
]
# u2: a 4, b 5, c 1; u3: e 5; u4: e 3; u1: a 5, b 4.
# Item-CF for u1 (seen a, b): norm_a = 25 + 16 = 41, norm_b = 16 + 25 = 41, norm_c = 1,
#   sim(a, c) = 4/√41, sim(b, c) = 5/√41 -> score(c) = 5·4/√41 + 4·5/√41 = 40/√41 (a and b tie: reason a).
# User-CF for u1: D[u1][u2] = 5·4 + 4·5 = 40, norm_u1 = 41, norm_u2 = 42 -> score(c) = 40/√1722 · 1.
# Trending (window counts): a 2, b 2, e 2, c 1 -> unseen by u1: e 2, c 1.
STREAM = [("u2", "a", 4.0), ("u2", "b", 5.0), ("u2", "c", 1.0), ("u3", "e", 5.0), ("u4", "e", 3.0),
          ("u1", "a", 5.0), ("u1", "b", 4.0)]
ITEMCF_C = 40 / math.sqrt(41)
USERCF_C = 40 / math.sqrt(41 * 42)

# Exact settings for known answers: neighbour lists and trending always current, no decay, window counts.
EXACT: dict[str, Any] = {"refresh_events": 0, "half_life_s": None, "trending_half_life_s": None,
                         "trending_window_s": 3600.0, "trending_buckets": 12, "train_combiner": False}


def ev(n: int, user: str, item: str, w: float, etype: str = "rate", ts: int | None = None) -> Event:
    return Event(f"e{n}", user, item, etype, w, 1000 * (n + 1) if ts is None else ts)


def model(stream: list[tuple[str, str, float]] = STREAM, **kwargs: Any) -> HybridRecommender:
    m = HybridRecommender(**{**EXACT, **kwargs})
    for record in CATALOG:
        m.add_item(record)
    for n, (u, i, w) in enumerate(stream):
        m.learn_one(ev(n, u, i, w))
    return m


def items(ranked: list[tuple[str, float, str]]) -> list[str]:
    return [i for i, _, _ in ranked]


def test_candidates_known_answer() -> None:
    c = model().candidates("u1")
    assert c["itemcf"] == [("c", pytest.approx(ITEMCF_C))]
    assert c["usercf"] == [("c", pytest.approx(USERCF_C))]
    assert [i for i, _ in c["content"]] == ["d"] and c["content"][0][1] > 0
    assert c["popular"] == [("e", 2.0), ("c", 1.0)]


def test_single_method_modes_fill_with_trending() -> None:
    m = model()
    assert m.rank("u1", 3, "itemcf") == [("c", pytest.approx(ITEMCF_C), "because you rated Alpha"),
                                         ("e", 0.0, "trending")]
    assert m.rank("u1", 3, "usercf") == [("c", pytest.approx(USERCF_C), "liked by similar user u2"),
                                         ("e", 0.0, "trending")]
    assert m.rank("u1", 3, "content")[0][::2] == ("d", "matches your taste for Comedy")
    assert items(m.rank("u1", 3, "content")) == ["d", "e", "c"]
    assert m.rank("u1", 3, "popular") == [("e", 2.0, "trending"), ("c", 1.0, "trending")]


def test_weighted_known_answer() -> None:
    # min-max per list: itemcf c 1; usercf c 1; content d 1; popular e 1, c 0.
    # α = itemcf 1, usercf .5, content .1, popular .2: c = 1 + .5 + 0 = 1.5, e = .2, d = .1
    m = model(fusion_weights={"itemcf": 1.0, "usercf": 0.5, "content": 0.1, "popular": 0.2})
    assert m.rank("u1", 5, "weighted") == [
        ("c", pytest.approx(1.5), "because you rated Alpha"),
        ("e", pytest.approx(0.2), "trending"),
        ("d", pytest.approx(0.1), "matches your taste for Comedy"),
    ]
    # the reason follows the largest contribution: with usercf weighted up, c is "liked by similar user u2"
    m2 = model(fusion_weights={"itemcf": 1.0, "usercf": 2.0, "content": 0.1, "popular": 0.2})
    assert m2.rank("u1", 1, "weighted") == [("c", pytest.approx(3.0), "liked by similar user u2")]


def test_rrf_and_borda_known_answer() -> None:
    m = model(rrf_k=60)
    # ranks: itemcf [c], usercf [c], content [d], popular [e, c]
    assert m.rank("u1", 3, "rrf") == [
        ("c", pytest.approx(2 / 61 + 1 / 62), "because you rated Alpha"),
        ("d", pytest.approx(1 / 61), "matches your taste for Comedy"),  # d and e tie: item id
        ("e", pytest.approx(1 / 61), "trending"),
    ]
    # Borda, N = 3: c 3 + 3 + 1.5 + 2 = 9.5; e 1.5 · 3 + 3 = 7.5; d 1.5 + 1.5 + 3 + 1 = 7
    assert m.rank("u1", 3, "borda") == [("c", 9.5, "because you rated Alpha"), ("e", 7.5, "trending"),
                                        ("d", 7.0, "matches your taste for Comedy")]


def test_learned_mode_features_and_ranking() -> None:
    m = model(combiner_warmup=0)
    f = m.features("u1")
    assert set(f) == {"c", "d", "e"} and all(set(x) == set(FEATURES) for x in f.values())
    assert f["c"]["itemcf"] == 1.0 and f["c"]["usercf"] == 1.0 and f["c"]["content"] == 0.0
    assert f["c"]["popularity"] == pytest.approx(math.log(2) / math.log(3))  # 1 user of c, at most 2 of any item
    assert f["d"]["popularity"] == 0.0 and f["d"]["recency"] == 0.0  # d was never engaged
    assert f["e"]["recency"] == pytest.approx(2 ** (-(7000 - 5000) / 86400e3))  # last engaged at 5 s, now 7 s
    assert all(0.0 <= v <= 1.0 for x in f.values() for v in x.values())
    # rank features: 1 - ln(rank) / ln(candidate_pool + 1), 0 when the method did not list the item
    assert f["c"]["itemcf_rank"] == 1.0 and f["c"]["content_rank"] == 0.0
    assert f["c"]["popular_rank"] == pytest.approx(1 - math.log(2) / math.log(m.candidate_pool + 1))
    # a combiner that only trusts content ranks d first, and says why
    m.combiner.load_weights(dict.fromkeys(FEATURES, 0.0) | {"content": 5.0, "popularity": 1.0, "bias": 0.0})
    ranked = m.rank("u1", 3, "learned")
    assert ranked[0] == ("d", pytest.approx(1 / (1 + math.exp(-5.0))), "matches your taste for Comedy")
    assert items(ranked)[1:] == ["e", "c"]  # popularity: e (2 users) before c (1 user)
    assert ranked[1][2] == "trending"


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
    m = model(stream, candidate_pool=1)
    c = m.candidates("u1")
    assert [i for i, _ in c["itemcf"]] == ["d"] and [i for i, _ in c["usercf"]] == ["c"]
    icf_c = [50 / math.sqrt(250), 20 / math.sqrt(205)]
    icf_d = [40 / math.sqrt(200), 40 / math.sqrt(164)]
    s12, s13 = 40 / math.sqrt(41 * 46), 15 / math.sqrt(41 * 13)
    f = m.features("u1")
    assert set(f) == {"c", "d"}
    # c is not in the item-CF list of one, but gets its item-CF score (it used to get 0)
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
    f2 = model(stream, candidate_pool=1, methods=("itemcf", "popular")).features("u1")
    assert all(x["usercf"] == x["usercf_max"] == x["content"] == 0.0 for x in f2.values())
    assert f2["c"]["itemcf"] == pytest.approx(sum(icf_c) / sum(icf_d))


def test_combiner_from_before_new_features_still_ranks_and_trains() -> None:
    m = model(combiner_warmup=0)
    old = LogisticCombiner(FEATURES[:10], lr=m.combiner.lr)  # e.g. restored from an older checkpoint
    old.load_weights({"content": 5.0, "bias": 0.0})
    assert items(m.rank_view(m.view("u1"), 3, "learned", combiner=old))[0] == "d"
    assert set(old.coef) == set(FEATURES) and old.coef["itemcf_max"] == 0.0 and old.coef["content"] == 5.0
    old2 = LogisticCombiner(FEATURES[:10])
    assert m.train(m.view("u1"), "c", old2, random.Random(0)) == 3  # c and both other candidates
    assert set(old2.coef) == set(FEATURES)


def test_learned_falls_back_to_weighted_until_warm() -> None:
    m = model(combiner_warmup=10)
    assert m.combiner.n_seen == 0
    assert m.rank("u1", 3, "learned") == m.rank("u1", 3, "weighted")


def test_recommend_then_learn_trains_the_combiner() -> None:
    m = model(train_combiner=True, combiner_sample=1.0, n_neg=1)
    before = m.combiner.n_seen  # u2's and u1's later events already trained it
    m.learn_one(ev(20, "u1", "c", 4.0))  # c was a candidate: one positive and one negative
    assert m.combiner.n_seen == before + 2
    m.learn_one(ev(21, "u1", "c", 2.0))  # a re-rating: the item is seen, nothing to learn
    assert m.combiner.n_seen == before + 2
    m.learn_one(ev(22, "u9", "a", 4.0))  # a new user: no history, nothing to learn
    assert m.combiner.n_seen == before + 2
    w = m.combiner.weights()
    assert w["itemcf"] > 0 and w["usercf"] > 0  # c had the full item-CF and user-CF score


def test_new_user_gets_trending_in_every_mode() -> None:
    m = model()
    expected = [("a", 2.0, "trending"), ("b", 2.0, "trending"), ("e", 2.0, "trending"), ("c", 1.0, "trending")]
    for mode in ("weighted", "rrf", "borda", "learned", "itemcf", "usercf", "content", "popular"):
        assert m.rank("nobody", 10, mode) == expected
    assert m.rank("nobody", 2) == expected[:2]


def test_one_event_user_gets_trending_blended_with_content() -> None:
    m = model(cold_start_items=2, cold_start_weights={"popular": 1.0, "content": 0.5})
    m.learn_one(ev(30, "u5", "d", 4.0))
    # popular (d seen): a, b, e 2 -> 1.0 each, c 1 -> 0.0; content of a Comedy profile: a, b equal -> 1.0 each
    ranked = m.rank("u5", 4, "weighted")
    assert ranked == [("a", pytest.approx(1.5), "trending"), ("b", pytest.approx(1.5), "trending"),
                      ("e", pytest.approx(1.0), "trending"), ("c", pytest.approx(0.0), "trending")]
    assert m.rank("u5", 4, "rrf") == ranked  # every fusion mode uses the cold-start blend
    m.learn_one(ev(31, "u5", "e", 4.0))  # two events: no longer cold, the mode's own fusion
    assert m.rank("u5", 4, "weighted") != m.rank("u5", 4, "rrf")


@pytest.mark.parametrize("content_search", ["catalog", "candidates"])
def test_new_item_mid_stream_is_reachable_through_content(content_search: str) -> None:
    m = model(fusion_weights={"itemcf": 1.0, "usercf": 0.5, "content": 0.1, "popular": 0.2},
              content_search=content_search)
    assert "n" not in m.content.items
    m.add_item({"item_id": "n", "title": "November", "year": None, "genres": ["Comedy"]})
    c = m.candidates("u1")
    assert "n" in [i for i, _ in c["content"]]
    assert "n" not in [i for i, _ in c["itemcf"]]  # no co-occurrence yet
    ranked = m.rank("u1", 10, "weighted")
    assert ("n", pytest.approx(0.1), "matches your taste for Comedy") in ranked  # content α 0.1 · min-max 1.0
    # once engaged, the new item takes part in co-occurrence like any other
    m.learn_one(ev(40, "u2", "n", 5.0))
    assert "n" in [i for i, _ in m.candidates("u1")["itemcf"]]


def test_rerating_replaces_the_weight_everywhere() -> None:
    m = model()
    m.learn_one(ev(50, "u1", "a", 1.0))  # u1 re-rates a: 5 -> 1
    assert m.itemcf.users["u1"].weights["a"] == 1.0
    assert m.usercf.users["u1"]["items"]["a"] == 1.0
    assert m.baseline.users["u1"]["a"] == 1.0
    assert m.logs["u1"]["items"]["a"][0] == 1.0 and m.logs["u1"]["rating_n"] == 2
    assert m.logs["u1"]["rating_sum"] == 5.0
    assert m.item_stats["a"][0] == 2  # still two users engaged a
    # norm_a = 1 + 16 = 17: score(c) = 1·4/√17 + 4·5/√41
    assert m.candidates("u1")["itemcf"] == [("c", pytest.approx(4 / math.sqrt(17) + 20 / math.sqrt(41)))]
    assert "a" not in items(m.rank("u1", 10))


def test_mean_centred_ratings() -> None:
    m = model(stream=[], center_ratings=True)
    m.learn_one(ev(0, "x", "p", 4.0))  # no other rating of x: centred on the global mean (the prior, 2.75)
    assert m.itemcf.users["x"].weights["p"] == pytest.approx(4.0 - 2.75)
    m.learn_one(ev(1, "x", "q", 2.0))  # centred on x's other ratings: 2 - 4 = -2
    assert m.itemcf.users["x"].weights["q"] == pytest.approx(-2.0)
    assert m.usercf.users["x"]["items"]["q"] == MIN_POSITIVE_WEIGHT  # positive-only parts get the floor
    m.learn_one(ev(2, "x", "q", 5.0))  # a re-rating is centred on the *other* ratings: 5 - 4 = 1
    assert m.itemcf.users["x"].weights["q"] == pytest.approx(1.0)
    m.learn_one(ev(3, "x", "r", 2.0, etype="click"))  # implicit events keep their weight
    assert m.itemcf.users["x"].weights["r"] == 2.0


def test_reasons_name_the_event_type() -> None:
    m = model(stream=[])
    for n, (u, i, t) in enumerate([("v", "a", "view"), ("v", "b", "view"), ("w", "a", "purchase")]):
        m.learn_one(ev(n, u, i, 1.0, etype=t))
    # norm_a = 1 + 1, norm_b = 1, C[a][b] = 1: score(b) = 1 · 1/√2
    assert m.rank("w", 1, "itemcf") == [("b", pytest.approx(1 / math.sqrt(2)), "because you bought Alpha")]


def test_filters_seen_denied_excluded_and_at_most_n() -> None:
    m = model(deny=["e"])
    ranked = m.rank("u1", 10)
    assert "e" not in items(ranked) and not {"a", "b"} & set(items(ranked))
    assert "c" not in items(m.rank("u1", 10, exclude=["c"]))
    assert len(m.rank("u1", 1)) == 1 and m.rank("u1", 0) == []
    m.deny(["c"])
    assert "c" not in items(m.rank("u1", 10)) and "c" not in [i for i, _ in m.candidates("u1")["itemcf"]]
    for mode in ("weighted", "rrf", "learned", "popular"):
        assert len(m.rank("u1", 2, mode)) <= 2


def test_exclude_types_keeps_viewed_items_recommendable() -> None:
    m = model(stream=[], exclude_types=["rate", "purchase"])
    for n, (u, i, t, w) in enumerate([("v", "a", "rate", 5.0), ("v", "b", "rate", 4.0), ("w", "a", "rate", 5.0),
                                      ("w", "b", "view", 1.0)]):
        m.learn_one(ev(n, u, i, w, etype=t))
    assert m.seen("w") == {"a"}  # the view of b does not hide b
    assert "b" in items(m.rank("w", 5, "itemcf"))
    with pytest.raises(ValueError, match=r"exclude_types .* unknown event types \['like'\]"):
        HybridRecommender(exclude_types=["like"])


def random_stream(n: int = 400, seed: int = 3) -> list[Event]:
    rng = random.Random(seed)
    return [Event(f"r{k}", f"u{rng.randrange(15)}", f"i{int(rng.paretovariate(1.2)) % 25}", "rate",
                  float(rng.randint(1, 5)), 60_000 * k) for k in range(n)]


def test_itemcf_equals_the_reference_with_decay_off() -> None:
    stream = random_stream()
    m = HybridRecommender(**{**EXACT, "candidate_pool": 50}, top_k=5, history_cap=7)
    ref = ItemCF(top_k=5, history_cap=7)
    for e in stream:
        m.learn_one(e)
        ref.learn_one(e.user_id, e.item_id, e.weight, e.ts)
    for user in sorted({e.user_id for e in stream}):
        expected = [(i, pytest.approx(s)) for i, s, r in ref.rank(user, 50) if r != "trending"]
        assert m.candidates(user)["itemcf"] == expected
    # a half-life far longer than the stream gives the same ranking
    slow = HybridRecommender(**{**EXACT, "candidate_pool": 50, "half_life_s": 1e15}, top_k=5, history_cap=7)
    for e in stream:
        slow.learn_one(e)
    for user in sorted({e.user_id for e in stream}):
        assert [i for i, _ in slow.candidates(user)["itemcf"]] == [i for i, _ in m.candidates(user)["itemcf"]]


def test_decay_favours_the_recent_history() -> None:
    # old: u rated x a day ago; recent: u rated y now. x's neighbour p, y's neighbour q.
    day = 86_400_000
    stream = [Event("1", "o1", "x", "rate", 5.0, 0), Event("2", "o1", "p", "rate", 5.0, 1),
              Event("3", "o2", "y", "rate", 5.0, 2), Event("4", "o2", "q", "rate", 4.0, 3),
              Event("5", "u", "x", "rate", 5.0, 4), Event("6", "u", "y", "rate", 4.0, day)]
    undecayed = HybridRecommender(**EXACT)
    decayed = HybridRecommender(**{**EXACT, "half_life_s": 3600.0})
    for e in stream:
        undecayed.learn_one(e)
        decayed.learn_one(e)
    # sim(x, p) = 25/√(50·25) = 1/√2, sim(y, q) = 20/√(41·16): undecayed p 5/√2 ≈ 3.54 > q 4·0.781 ≈ 3.12
    assert [i for i, _ in undecayed.candidates("u")["itemcf"]] == ["p", "q"]
    got = decayed.candidates("u")["itemcf"]
    assert [i for i, _ in got] == ["q", "p"]
    assert got[0][1] == pytest.approx(4 * 20 / math.sqrt(41 * 16))  # y is the latest item: no decay
    assert got[1][1] == pytest.approx(5 * 2 ** (-(day - 4) / 3_600_000) / math.sqrt(2))  # x: ~24 half-lives


def test_lagged_neighbour_lists_catch_up() -> None:
    stream = random_stream(300)
    lagged = HybridRecommender(**{**EXACT, "refresh_events": 50})
    exact = HybridRecommender(**EXACT)
    for e in stream:
        lagged.learn_one(e)
        exact.learn_one(e)
        lagged.candidates(e.user_id)  # cache lists as the stream goes
    lagged.version += 50  # 50 events later every dirty list is recomputed
    for user in sorted({e.user_id for e in stream}):
        assert lagged.candidates(user)["itemcf"] == exact.candidates(user)["itemcf"]


def test_lists_refreshed_on_own_changes_only_as_the_job_then_exact_after_mark_all() -> None:
    stream = random_stream(300)
    lazy = HybridRecommender(**EXACT, refresh_on_norms=False)
    exact = HybridRecommender(**EXACT)
    assert lazy.itemcf.items.refresh_on_norms is False and exact.itemcf.items.refresh_on_norms is True
    assert not lazy.usercf.rows.refresh_on_norms  # user-CF lists are always recomputed: no reverse index kept
    stale = 0
    for e in stream:
        lazy.learn_one(e)
        exact.learn_one(e)
        got, want = lazy.candidates(e.user_id)["itemcf"], exact.candidates(e.user_id)["itemcf"]
        stale += got != want  # a list holding an item whose norm moved is not recomputed
    assert stale > 0 and not lazy.itemcf.items.rev
    lazy.itemcf.items.mark_all()  # what the job does at the end of a bounded input
    for user in sorted({e.user_id for e in stream}):
        assert lazy.candidates(user)["itemcf"] == exact.candidates(user)["itemcf"]
        assert lazy.candidates(user)["usercf"] == exact.candidates(user)["usercf"]


def test_the_limit_follows_the_jobs_refresh_setting() -> None:
    from bench.phases import _model

    cfg = config.load_config()
    assert cfg["job"]["refresh_on_norms"] is False
    assert _model(cfg["model"], (), cfg["job"]["refresh_on_norms"]).itemcf.items.refresh_on_norms is False
    assert _model(cfg["model"], (), True).itemcf.items.refresh_on_norms is True


def test_the_limit_trains_the_combiner_only_when_the_job_does() -> None:
    from bench.phases import _model

    cfg = config.load_config()
    assert cfg["model"]["hybrid"]["mode"] == "weighted" and not cfg["model"]["compare_modes"]
    assert _model(cfg["model"], (), False).train_combiner is False  # the ranker trains only for learned
    learned = dict(cfg["model"], hybrid={**cfg["model"]["hybrid"], "mode": "learned"})
    assert _model(learned, (), False).train_combiner is True
    compared = dict(cfg["model"], compare_modes=["rrf", "learned"])
    assert _model(compared, (), False).train_combiner is True


def test_from_config_reads_the_model_section() -> None:
    cfg = config.load_config()
    m = HybridRecommender.from_config(cfg["model"])
    assert m.top_n == cfg["model"]["top_n"] and m.itemcf.history_cap == cfg["model"]["history_cap"]
    model_cfg = dict(cfg["model"], hybrid={"mode": "rrf", "candidate_pool": 7})
    m2 = HybridRecommender.from_config(model_cfg, candidate_pool=9)
    assert m2.mode == "rrf" and m2.candidate_pool == 9
    with pytest.raises(ValueError, match=r"model\.hybrid\.nope"):
        HybridRecommender.from_config(dict(cfg["model"], hybrid={"nope": 1}))
    with pytest.raises(ValueError, match="argument 'bogus'"):
        HybridRecommender.from_config(cfg["model"], bogus=1)


def test_invalid_arguments_name_the_field() -> None:
    with pytest.raises(ValueError, match="mode 'best'"):
        HybridRecommender(mode="best")
    with pytest.raises(ValueError, match="mode 'x'"):
        model().rank("u1", 3, "x")
    with pytest.raises(ValueError, match=r"fusion_weights\['itemcf'\] -1"):
        HybridRecommender(fusion_weights={"itemcf": -1, "usercf": 1, "content": 1, "popular": 1})
    with pytest.raises(ValueError, match=r"fusion_weights .* has no weight for usercf"):
        HybridRecommender(fusion_weights={"itemcf": 1, "content": 1, "popular": 1})
    with pytest.raises(ValueError, match="methods"):
        HybridRecommender(methods=["itemcf", "svd"])
    with pytest.raises(ValueError, match="candidate_pool 0"):
        HybridRecommender(candidate_pool=0)
    with pytest.raises(ValueError, match="combiner_sample 2"):
        HybridRecommender(combiner_sample=2)
    with pytest.raises(ValueError, match=r"weight -1\.0 of event e0"):
        HybridRecommender().learn_one(ev(0, "u", "i", -1.0))
    with pytest.raises(ValueError, match="type 'like'"):
        HybridRecommender().learn_one(ev(0, "u", "i", 1.0, etype="like"))


def test_state_is_plain_per_key_pieces_and_pickles() -> None:
    m = model(train_combiner=True)
    assert isinstance(m.logs["u1"], dict) and isinstance(m.item_stats["c"], tuple)
    assert isinstance(m.usercf.users["u1"], dict) and isinstance(m.baseline.users["u1"], dict)
    clone = pickle.loads(pickle.dumps(m))
    for mode in ("weighted", "rrf", "learned", "itemcf", "content"):
        assert clone.rank("u1", 5, mode) == m.rank("u1", 5, mode)


def test_content_search_candidates_reranks_the_other_methods_candidates() -> None:
    """``content_search: candidates``: a warm user's content list is the others' candidates by cosine; the content
    mode alone and cold-start users still search the whole catalog."""
    stream = [*STREAM, ("u1", "e", 2.0)]  # u1 (a, b, e) has history; d (Comedy) is proposed by no other method
    full, cand = model(stream), model(stream, content_search="candidates", content_new_items=0)
    others = {i for m, c in cand.candidates("u1").items() if m != "content" for i, _ in c}
    want = sorted(((i, s) for i, s in full.content.score(full.profile(full.logs["u1"]), others).items() if s > 0),
                  key=lambda t: (-t[1], t[0]))
    assert [i for i, _ in cand.candidates("u1")["content"]] == [i for i, _ in want] and "d" not in others
    assert full.candidates("u1")["content"][0][0] == "d"  # the catalog search finds d
    assert cand.rank("u1", 3, "content") == full.rank("u1", 3, "content")  # content alone: the catalog
    # the newest catalog items are re-ranked too: d is one of the 2 added last (d, e)
    assert model(stream, content_search="candidates", content_new_items=2).candidates("u1")["content"][0][0] == "d"
    cold = {"cold_start_items": 5}  # every user is cold: the catalog, as before
    assert model(stream, content_search="candidates", **cold).candidates("u1") == model(stream, **cold).candidates("u1")
    with pytest.raises(ValueError, match="content_search 'all'"):
        HybridRecommender(content_search="all")


def test_popular_reads_past_the_trending_prefix() -> None:
    """The trending ranking is built a prefix at a time; a user who saw the whole prefix gets the next items."""
    m = HybridRecommender(**EXACT, trending_size=5, candidate_pool=5)
    n_items = m._trend_prefix() + 30
    for k in range(n_items):  # item k engaged k + 1 times: a strict order
        for j in range(k + 1 if k < 40 or k > n_items - 40 else 1):
            m.learn_item(f"i{k:05d}", 1000 * j, True)
    full = sorted(m.trending.top(n_items), key=lambda t: (-t[1], t[0]))
    seen = {i for i, _ in full[: m._trend_prefix() + 3]}
    assert m.popular(4, seen) == [t for t in full if t[0] not in seen][:4]
    assert m.popular(4) == full[:4]
    assert m.trending_ranking() == full


def test_profile_of_a_long_history_equals_the_full_sort() -> None:
    """Past 2 x profile_max_items the latest items are picked with a partition: the same profile, ties included."""
    from core.content import UserProfile
    from core.hybrid import UserLog, most_recent, profile_items

    m = HybridRecommender(**{**EXACT, "half_life_s": 60.0}, profile_max_items=5)
    names = [f"i{k:03d}" for k in range(40)]
    for name in names[:-3]:  # the last three are not in the catalog
        m.add_item({"item_id": name, "title": f"T {name}", "year": 1990, "genres": ["Comedy"]})
    rng = random.Random(4)
    for trial in range(200):
        engaged = {i: (rng.uniform(0.5, 5), rng.choice([0, 1000, 2000, 3000, rng.randint(0, 9999)]), "rate",
                       rng.uniform(0.5, 5)) for i in rng.sample(names, rng.randint(0, 40))}
        log: UserLog = {"items": engaged, "rating_sum": 0.0, "rating_n": 0}
        want = UserProfile.from_items(profile_items(log), m.content, 60.0, 5)
        got = m.profile(log)
        assert (got.items, got.sums, got.z, got.t_ref) == (want.items, want.sums, want.z, want.t_ref), trial
        by_time = [i for _, i in sorted((e[1], i) for i, e in engaged.items())]
        for n in (1, 5, 50):
            assert most_recent(engaged, n) == by_time[-n:], (trial, n)
        assert most_recent(engaged, 0) == []
