import math
import random

import pytest

from core.fusion import (
    LogisticCombiner,
    borda,
    candidate_features,
    minmax,
    ranking,
    rrf,
    training_pairs,
    weighted,
    weighted_scaled,
)

# A ranks x > y > z; B ranks y > w. Distinct candidates: w, x, y, z (N = 4).
LISTS = {"A": [("y", 2.0), ("x", 3.0), ("z", 1.0)], "B": [("y", 0.9), ("w", 0.3)]}


def test_ranking_and_minmax() -> None:
    assert ranking(LISTS["A"]) == ["x", "y", "z"]
    assert ranking([("b", 1.0), ("a", 1.0), ("b", 5.0)]) == ["b", "a"]  # repeat keeps best score; ties by id
    assert minmax(LISTS["A"]) == {"x": 1.0, "y": 0.5, "z": 0.0}
    assert minmax([("a", 2.0), ("b", 2.0)]) == {"a": 1.0, "b": 1.0}  # all equal -> 1
    assert minmax([]) == {}
    assert candidate_features(LISTS) == {"x": {"A": 1.0}, "y": {"A": 0.5, "B": 1.0}, "z": {"A": 0.0}, "w": {"B": 0.0}}


def test_weighted_known_answer() -> None:
    # A normalised: x 1, y 0.5, z 0; B normalised: y 1, w 0.
    # α_A = 1, α_B = 0.5: x = 1, y = 0.5 + 0.5 = 1, z = 0, w = 0 -> ties broken by item id
    assert weighted(LISTS, {"A": 1.0, "B": 0.5}) == [("x", 1.0), ("y", 1.0), ("w", 0.0), ("z", 0.0)]
    assert weighted(LISTS, {"A": 0.0, "B": 2.0}, n=1) == [("y", 2.0)]
    with pytest.raises(ValueError, match="no weight for method 'B'"):
        weighted(LISTS, {"A": 1.0})
    with pytest.raises(ValueError, match=r"alphas\['A'\] -1"):
        weighted(LISTS, {"A": -1.0, "B": 1.0})


def test_rrf_known_answer() -> None:
    # x: 1/61; y: 1/62 + 1/61; z: 1/63; w: 1/62
    assert rrf(LISTS) == [("y", pytest.approx(1 / 62 + 1 / 61)), ("x", pytest.approx(1 / 61)),
                          ("w", pytest.approx(1 / 62)), ("z", pytest.approx(1 / 63))]
    # k = 0: x 1, y 1/2 + 1 = 1.5, z 1/3, w 1/2
    assert rrf(LISTS, k=0, n=2) == [("y", 1.5), ("x", 1.0)]
    assert rrf({}) == []


def test_borda_known_answer() -> None:
    # A (L = 3): x 4, y 3, z 2; unranked w shares the rest (1): (4 - 3 + 1)/2 = 1
    # B (L = 2): y 4, w 3; unranked x, z share 2 and 1: (4 - 2 + 1)/2 = 1.5 each
    # totals: y 7, x 5.5, w 4, z 3.5
    assert borda(LISTS) == [("y", 7.0), ("x", 5.5), ("w", 4.0), ("z", 3.5)]
    assert borda({"A": [("b", 1.0), ("a", 1.0)]}) == [("a", 2.0), ("b", 1.0)]  # tie in score: id order
    assert borda({}) == []


def test_logistic_known_first_step() -> None:
    lc = LogisticCombiner(["a", "b"], lr=0.5, l2=0.0)
    assert lc.predict_proba({"a": 1.0}) == 0.5
    lc.learn_one({"a": 1.0}, 1)  # p = 0.5, gradient -0.5: w_a = 0.25, bias = 0.25, w_b untouched
    assert lc.weights() == {"a": 0.25, "b": 0.0, "bias": 0.25}
    assert lc.predict_proba({"a": 1.0}) == pytest.approx(1 / (1 + math.exp(-0.5)))
    assert lc.rank({"p": {"a": 1.0}, "q": {}, "r": {"a": 1.0}}) == [
        ("p", pytest.approx(0.6224593)), ("r", pytest.approx(0.6224593)), ("q", pytest.approx(0.5621765))]
    other = LogisticCombiner(["a", "b"])
    other.load_weights(lc.weights())
    assert other.weights() == lc.weights()


def test_logistic_learns_the_informative_feature() -> None:
    names = ["itemcf", "usercf", "content", "popularity"]
    rng = random.Random(0)
    lc = LogisticCombiner(names, lr=0.05, l2=1e-4)
    for _ in range(4000):
        # 10 candidates with uniform features; the user engages one with probability ∝ exp(4·itemcf),
        # so for an engaged-vs-other pair the log-odds are 4·Δitemcf and the other features carry nothing.
        shown = {f"i{k}": {n: rng.random() for n in names} for k in range(10)}
        items = sorted(shown)
        engaged = rng.choices(items, weights=[math.exp(4 * shown[i]["itemcf"]) for i in items])[0]
        for x, y in training_pairs(shown, engaged, 3, rng):
            lc.learn_one(x, y)
    w = lc.weights()
    assert w["itemcf"] > 3.0
    for noise in ("usercf", "content", "popularity"):
        assert abs(w[noise]) < 0.4 < w["itemcf"] / 8


def test_training_pairs() -> None:
    shown = {"a": {"f": 0.1}, "b": {"f": 0.2}, "c": {"f": 0.3}, "d": {"f": 0.4}}
    pairs = training_pairs(shown, "b", 2, random.Random(42))
    assert pairs[0] == ({"f": 0.2}, 1)
    negatives = [x["f"] for x, y in pairs[1:] if y == 0]
    assert len(pairs) == 3 and len(negatives) == 2 and 0.2 not in negatives
    # seeded: the same sample every time, whatever the order of the dict
    again = training_pairs(dict(reversed(list(shown.items()))), "b", 2, random.Random(42))
    assert again == pairs
    assert len(training_pairs(shown, "b", 10, random.Random(0))) == 4  # all 3 others
    assert training_pairs(shown, "zzz", 2, random.Random(0)) == []  # engaged item was not shown


def test_logistic_validation() -> None:
    with pytest.raises(ValueError, match="features"):
        LogisticCombiner(["a", "a"])
    with pytest.raises(ValueError, match="lr 0"):
        LogisticCombiner(["a"], lr=0)
    lc = LogisticCombiner(["a"])
    with pytest.raises(ValueError, match="feature 'zz'"):
        lc.predict_proba({"zz": 1.0})
    with pytest.raises(ValueError, match="label 2"):
        lc.learn_one({"a": 1.0}, 2)
    with pytest.raises(ValueError, match="n_neg -1"):
        training_pairs({}, "a", -1, random.Random(0))


def test_logistic_add_features_keeps_the_weights() -> None:
    c = LogisticCombiner(["a"], lr=1.0, l2=0.0)
    c.learn_one({"a": 1.0}, 1)  # p = 0.5: a += 0.5, bias += 0.5
    assert c.add_features(["a", "b"]) == ["b"]
    assert c.weights() == {"a": 0.5, "b": 0.0, "bias": 0.5}
    assert c.decision({"a": 1.0, "b": 1.0}) == 1.0  # b now accepted, weight 0
    assert c.add_features(["a", "b"]) == []
    with pytest.raises(ValueError, match="bias"):
        c.add_features(["bias"])


def test_weighted_top_n_is_the_prefix_of_the_full_fused_order() -> None:
    rnd = random.Random(3)
    lists = {m: [(f"i{rnd.randrange(120)}", float(rnd.randrange(5))) for _ in range(50)] for m in "ABC"}
    alphas = {"A": 1.0, "B": 0.5, "C": 0.25}
    full = weighted(lists, alphas)
    assert len(full) > 36  # past the size where top_n switches to numpy
    for n in (1, 10, 20, len(full)):
        assert weighted(lists, alphas, n=n) == full[:n]
    assert weighted_scaled({m: minmax(c) for m, c in lists.items()}, alphas, 10) == full[:10]
