import random

import numpy as np
import pytest

from core.baseline import BaselinePredictor


def test_known_answer_steps_and_rerating() -> None:
    m = BaselinePredictor(lr=0.1, l2=0.0)
    assert m.predict("u", "i") == 0.0  # prior_mean, no biases
    m.learn_one("u", "i", 4.0)  # μ = 4, error 4 - 4 = 0: biases stay 0
    assert (m.mean, m.user_bias("u"), m.item_bias("i")) == (4.0, 0.0, 0.0)
    m.learn_one("u", "j", 2.0)  # μ = 3, error 2 - 3 = -1: b_u = b_j = -0.1
    assert m.mean == 3.0
    assert m.user_bias("u") == pytest.approx(-0.1) and m.item_bias("j") == pytest.approx(-0.1)
    assert m.predict("u", "j") == pytest.approx(2.8)
    m.learn_one("u", "i", 5.0)  # re-rating replaces 4: μ = (5 + 2)/2 = 3.5, count stays 2
    assert (m.mean, m.count) == (3.5, 2)
    # error 5 - (3.5 - 0.1 + 0) = 1.6: b_u = -0.1 + 0.16 = 0.06, b_i = 0.16
    assert m.predict("u", "i") == pytest.approx(3.5 + 0.06 + 0.16)
    assert m.predict("stranger", "new") == 3.5


def test_l2_shrinks_and_clipping() -> None:
    m = BaselinePredictor(lr=0.5, l2=1.0, min_rating=1.0, max_rating=5.0)
    m.learn_one("u", "i", 5.0)
    m.learn_one("u", "j", 1.0)  # μ = 3, error -2: b_u = 0 + 0.5·(-2 - 0) = -1, b_j = -1
    m.learn_one("u", "j", 1.0)  # μ = 3, error 1 - (3 - 2) = 0: b_u = -1 + 0.5·(0 + 1) = -0.5 (only L2 acts)
    assert m.user_bias("u") == pytest.approx(-0.5)
    assert BaselinePredictor(min_rating=1.0, prior_mean=0.0).predict("u", "i") == 1.0
    assert BaselinePredictor(max_rating=5.0, prior_mean=9.0).predict("u", "i") == 5.0


def test_converges_to_known_biases() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items, mu = 60, 40, 3.5
    b_u, b_i = rng.normal(0, 0.5, n_users), rng.normal(0, 0.7, n_items)
    pairs = [(u, i) for u in range(n_users) for i in range(n_items) if rng.random() < 0.6]
    ratings = {(u, i): mu + b_u[u] + b_i[i] + rng.normal(0, 0.1) for u, i in pairs}
    m = BaselinePredictor(lr=0.02, l2=0.0)
    order = random.Random(1)
    for _ in range(20):  # passes over the stream; repeats are re-ratings with the same value
        order.shuffle(pairs)
        for u, i in pairs:
            m.learn_one(str(u), str(i), ratings[(u, i)])
    assert m.mean == pytest.approx(np.mean(list(ratings.values())), rel=1e-12)
    truth = np.array([[mu + b_u[u] + b_i[i] for i in range(n_items)] for u in range(n_users)])
    pred = np.array([[m.predict(str(u), str(i)) for i in range(n_items)] for u in range(n_users)])
    assert np.sqrt(np.mean((pred - truth) ** 2)) < 0.05  # noise sd is 0.1, bias sd 0.5 and 0.7
    assert np.corrcoef([m.user_bias(str(u)) for u in range(n_users)], b_u)[0, 1] > 0.99
    assert np.corrcoef([m.item_bias(str(i)) for i in range(n_items)], b_i)[0, 1] > 0.99


def test_validation() -> None:
    with pytest.raises(ValueError, match="lr 0"):
        BaselinePredictor(lr=0)
    with pytest.raises(ValueError, match="l2 -1"):
        BaselinePredictor(l2=-1)
    with pytest.raises(ValueError, match="min_rating 5"):
        BaselinePredictor(min_rating=5, max_rating=1)
    with pytest.raises(ValueError, match="rating nan"):
        BaselinePredictor().learn_one("u", "i", float("nan"))
