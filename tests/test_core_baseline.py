import random

import numpy as np
import pytest

from core.baseline import BaselinePredictor, item_bias, predict, user_bias


def test_known_answer_and_rerating() -> None:
    m = BaselinePredictor(lambda_item=1.0, lambda_user=0.0)
    assert m.predict("u", "i") == 0.0  # prior_mean, no biases
    m.learn_one("u", "i", 4.0)
    m.learn_one("v", "i", 2.0)
    m.learn_one("u", "j", 5.0)
    # μ = 11/3; b_i = (6 - 2·11/3) / (1 + 2) = -4/9; b_j = (5 - 11/3) / 2 = 2/3
    assert m.mean == pytest.approx(11 / 3)
    assert m.item_bias("i") == pytest.approx(-4 / 9) and m.item_bias("j") == pytest.approx(2 / 3)
    # b_u = ((4 - 11/3 + 4/9) + (5 - 11/3 - 2/3)) / 2 = (7/9 + 6/9) / 2 = 13/18
    assert m.user_bias("u") == pytest.approx(13 / 18)
    assert m.predict("u", "j") == pytest.approx(11 / 3 + 13 / 18 + 2 / 3)
    m.learn_one("v", "i", 3.0)  # re-rating replaces 2: sums move by +1, counts stay
    assert (m.total, m.count, m.items["i"]) == (12.0, 3, (7.0, 2))
    assert m.predict("stranger", "new") == pytest.approx(4.0)


def test_order_does_not_matter_and_clipping() -> None:
    events = [(f"u{k % 7}", f"i{k % 5}", float(1 + k % 5)) for k in range(60)]
    a, b = BaselinePredictor(), BaselinePredictor()
    for u, i, r in events:
        a.learn_one(u, i, r)
    shuffled = list(events)
    random.Random(3).shuffle(shuffled)
    last = {(u, i): r for u, i, r in events}  # the last rating of each pair wins in both orders
    for u, i, _ in shuffled:
        b.learn_one(u, i, last[(u, i)])
    for u, i, _ in events:
        assert a.predict(u, i) == pytest.approx(b.predict(u, i), abs=1e-12)
    assert BaselinePredictor(min_rating=1.0, prior_mean=0.0).predict("u", "i") == 1.0
    assert BaselinePredictor(max_rating=5.0, prior_mean=9.0).predict("u", "i") == 5.0
    assert predict(3.0, 1.5, 1.0, 1.0, 5.0) == 5.0


def test_functions_are_the_class() -> None:
    m = BaselinePredictor(lambda_item=2.0, lambda_user=3.0)
    for u, i, r in [("a", "x", 4.0), ("a", "y", 1.0), ("b", "x", 5.0)]:
        m.learn_one(u, i, r)
    mu = m.mean
    assert m.item_bias("x") == item_bias(m.items["x"], mu, 2.0) == (9.0 - 2 * mu) / 4
    assert item_bias(None, mu, 2.0) == 0.0 and user_bias({}, m.item_bias, mu, 3.0) == 0.0
    assert m.user_bias("a") == user_bias(m.users["a"], m.item_bias, mu, 3.0)


def test_recovers_known_biases() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items, mu = 60, 40, 3.5
    b_u, b_i = rng.normal(0, 0.5, n_users), rng.normal(0, 0.7, n_items)
    pairs = [(u, i) for u in range(n_users) for i in range(n_items) if rng.random() < 0.6]
    ratings = {(u, i): mu + b_u[u] + b_i[i] + rng.normal(0, 0.1) for u, i in pairs}
    m = BaselinePredictor(lambda_item=1.0, lambda_user=1.0)
    for u, i in pairs:
        m.learn_one(str(u), str(i), ratings[(u, i)])
    assert m.mean == pytest.approx(np.mean(list(ratings.values())), rel=1e-12)
    assert np.corrcoef([m.user_bias(str(u)) for u in range(n_users)], b_u)[0, 1] > 0.95
    assert np.corrcoef([m.item_bias(str(i)) for i in range(n_items)], b_i)[0, 1] > 0.95


def test_validation() -> None:
    with pytest.raises(ValueError, match="lambda_item -1"):
        BaselinePredictor(lambda_item=-1)
    with pytest.raises(ValueError, match="lambda_user nan"):
        BaselinePredictor(lambda_user=float("nan"))
    with pytest.raises(ValueError, match="min_rating 5"):
        BaselinePredictor(min_rating=5, max_rating=1)
    with pytest.raises(ValueError, match="rating nan"):
        BaselinePredictor().learn_one("u", "i", float("nan"))


def test_set_item_sums_equals_learning_the_ratings() -> None:
    learned, summed = BaselinePredictor(), BaselinePredictor()
    for u, i, r in [("a", "x", 4.0), ("b", "x", 2.0), ("a", "y", 5.0), ("b", "x", 3.0)]:
        learned.learn_one(u, i, r)
    summed.set_item_sums("x", (6.0, 2))
    summed.set_item_sums("y", (5.0, 1))
    summed.set_item_sums("x", (7.0, 2))  # the re-rating, as the job's item shard reports it
    assert (summed.total, summed.count, summed.items) == (learned.total, learned.count, learned.items)
    assert summed.item_bias("x") == learned.item_bias("x")
