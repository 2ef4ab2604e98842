"""core.v2.factors: the incremental factor model learns planted low-rank structure, one SGD step per event."""

from __future__ import annotations

import numpy as np
import pytest

from core.v2.factors import Factors, FactorSpec

LAMBDA_ITEM, LAMBDA_USER = 25.0, 10.0  # the baseline's damping (config model.hybrid.baseline_lambda_*)


def planted(seed: int = 7, n_users: int = 400, n_items: int = 300, rank: int = 4, density: float = 0.3):
    """Ratings μ + b_u + b_i + p_u·q_i + noise of a random rank-``rank`` model on a random ``density`` of the pairs."""
    rng = np.random.default_rng(seed)
    p, q = rng.normal(0, 0.6, (n_users, rank)), rng.normal(0, 0.6, (n_items, rank))
    bu, bi = rng.normal(0, 0.3, n_users), rng.normal(0, 0.5, n_items)
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    r = 3.5 + bu[users] + bi[items] + np.einsum("ek,ek->e", p[users], q[items]) + rng.normal(0, 0.1, len(users))
    order = rng.permutation(len(users))
    return users[order].astype(np.int64), items[order].astype(np.int64), r[order]


def baseline_rmse(tu, ti, tr, hu, hi, hr, n_users, n_items) -> float:
    """The damped-mean baseline μ + b_u + b_i fitted on the training part, on the held-out part."""
    mu = tr.mean()
    bi = np.bincount(ti, tr - mu, n_items) / (LAMBDA_ITEM + np.bincount(ti, minlength=n_items))
    bu = np.bincount(tu, tr - mu - bi[ti], n_users) / (LAMBDA_USER + np.bincount(tu, minlength=n_users))
    return float(np.sqrt(np.mean((hr - (mu + bu[hu] + bi[hi])) ** 2)))


def ids(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.int64) * 2654435761


def test_one_step_known_answer() -> None:
    """The first rating sets μ; the step moves both biases and both rows from each other's values before it."""
    f = Factors(FactorSpec(dim=2, lr=0.1, reg=0.0))
    f.fit(ids(1), ids(1))
    f.p[0], f.q[0] = [1.0, 0.0], [0.5, 0.5]
    loss = f.learn(np.array([0]), np.array([0]), np.array([4.0]))  # error 4 - (4 + 0 + 0 + 0.5) = -0.5
    assert loss == pytest.approx(0.25)
    assert f.bu[0] == pytest.approx(-0.05) and f.bi[0] == pytest.approx(-0.05)
    np.testing.assert_allclose(f.p[0], [0.975, -0.025])
    np.testing.assert_allclose(f.q[0], [0.45, 0.5])
    assert f.mu == 4.0


def test_learns_a_planted_low_rank_matrix_well_below_the_baseline() -> None:
    users, items, r = planted()
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    cut = int(0.9 * len(r))
    tu, ti, tr, hu, hi, hr = users[:cut], items[:cut], r[:cut], users[cut:], items[cut:], r[cut:]
    f = Factors(FactorSpec(dim=8, lr=0.01, reg=0.02, seed=3))
    f.fit(ids(n_users), ids(n_items))
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(25):  # passes over the stream, each in a new order
        order = rng.permutation(cut)
        losses.append(f.learn(tu[order], ti[order], tr[order]) / cut)
    rmse = float(np.sqrt(np.mean((hr - f.predict(hu, hi)) ** 2)))
    base = baseline_rmse(tu, ti, tr, hu, hi, hr, n_users, n_items)
    assert losses[-1] < losses[0] / 4
    assert rmse < 0.3 * base, (rmse, base)  # noise alone: 0.1


@pytest.mark.parametrize("explicit", [True, False])
def test_rows_follow_the_id_not_the_dense_index(explicit: bool) -> None:
    """The same events with the ids indexed in another order give the same rows, bit for bit (positive-only: the
    same negatives too)."""
    users, items, r = planted(n_users=60, n_items=50)
    keys = np.arange(len(r), dtype=np.int64) * 7919
    spec = FactorSpec(dim=4, seed=5, explicit=explicit)
    a = Factors(spec)
    a.fit(ids(60), ids(50))
    a.learn(users, items, r, keys)
    perm_u, perm_i = np.random.default_rng(1).permutation(60), np.random.default_rng(2).permutation(50)
    b = Factors(spec)
    b.fit(ids(60)[perm_u], ids(50)[perm_i])  # dense index k holds the id perm[k]
    inv_u, inv_i = np.argsort(perm_u), np.argsort(perm_i)
    b.learn(inv_u[users], inv_i[items], r, keys)
    assert np.array_equal(a.p, b.p[inv_u]) and np.array_equal(a.q, b.q[inv_i])
    assert np.array_equal(a.bu, b.bu[inv_u]) and np.array_equal(a.bi, b.bi[inv_i])
    untrained = Factors(spec)
    untrained.fit(ids(60), ids(50))
    assert not np.array_equal(a.q, untrained.q)  # it learned


def test_growing_keeps_learned_rows_and_draws_new_ones_from_the_id() -> None:
    f = Factors(FactorSpec(dim=3))
    f.fit(ids(2), ids(2))
    f.learn(np.array([0, 1]), np.array([1, 0]), np.array([5.0, 1.0]))
    before = f.p.copy(), f.q.copy()
    f.fit(ids(5), ids(4))
    assert np.array_equal(f.p[:2], before[0]) and np.array_equal(f.q[:2], before[1])
    fresh = Factors(FactorSpec(dim=3))
    fresh.fit(ids(5), ids(4))
    assert np.array_equal(f.p[2:], fresh.p[2:]) and np.array_equal(f.q[2:], fresh.q[2:])
    assert f.bu.shape == (5,) and f.bi.shape == (4,)


def test_positive_only_factors_recommend_the_users_cluster() -> None:
    """Four user groups each engage with a quarter of the catalog: a user's best unseen items come from its group."""
    rng = np.random.default_rng(11)
    n_users, n_items, groups = 200, 120, 4
    ug, ig = np.arange(n_users) % groups, np.arange(n_items) % groups
    seen = (ug[:, None] == ig[None, :]) & (rng.random((n_users, n_items)) < 0.3)
    users, items = np.nonzero(seen)
    f = Factors(FactorSpec(dim=8, lr=0.05, reg=0.01, explicit=False))
    f.fit(ids(n_users), ids(n_items))
    keys = np.arange(len(users), dtype=np.int64)
    for _ in range(30):
        order = rng.permutation(len(users))
        f.learn(users[order].astype(np.int64), items[order].astype(np.int64), keys=keys + _ * len(users))
    rank = np.arange(n_items, dtype=np.int64)
    share = np.mean([np.mean(ig[f.top(u, 10, seen[u], rank)[0]] == ug[u]) for u in range(n_users)])
    assert share > 0.9, share  # chance: 0.25


def test_positive_only_known_answer_and_negatives_from_the_engaged_items() -> None:
    """The first event has no negatives to draw (nothing engaged before it); the second draws the first event's item
    (the only one engaged before) towards 0 after its own step towards 1."""
    f = Factors(FactorSpec(dim=1, lr=0.5, reg=0.0, explicit=False, n_neg=1))
    f.fit(ids(1), ids(2))
    f.p[0], f.q[:, 0] = [1.0], [0.0, 0.0]
    f.learn(np.array([0]), np.array([0]), keys=np.array([10]))  # error 1: b0 = 0.5, p = 1, q0 = 0.5
    assert f.bi.tolist() == [0.5, 0.0] and f.q[:, 0].tolist() == [0.5, 0.0] and f.p[0, 0] == 1.0
    f.learn(np.array([0]), np.array([1]), keys=np.array([11]))
    # towards 1 on item 1: error 1 -> b1 = 0.5, q1 = 0.5, p = 1; then item 0 towards 0: error -(0.5 + 0.5) = -1
    assert f.bi.tolist() == [0.0, 0.5] and f.q[:, 0].tolist() == [0.0, 0.5] and f.p[0, 0] == 0.75
    assert f.pool[:2].tolist() == [0, 1] and f.pool_n[0] == 2 and f.seen.tolist() == [True, True]


def test_top_items_best_first_ties_by_id_skips_and_short_catalogs() -> None:
    f = Factors(FactorSpec(dim=1))
    f.fit(ids(1), ids(4))
    f.p[0], f.q[:, 0], f.bi[:] = [1.0], [0.5, 0.2, 0.5, 0.9], [0.0, 0.3, 0.0, 0.0]
    rank = np.array([3, 2, 1, 0], dtype=np.int64)  # item 3 first in the id order, then 2, 1, 0
    idx, val = f.top(0, 3, np.zeros(4, dtype=np.bool_), rank)
    # 2, 1 (0.2 + 0.3) and 0 tie at 0.5: by rank
    assert idx.tolist() == [3, 2, 1] and val == pytest.approx([0.9, 0.5, 0.5])
    idx, _ = f.top(0, 10, np.array([False, False, False, True]), rank)
    assert idx.tolist() == [2, 1, 0]


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"factors\.dim must be >= 1, got 0"):
        FactorSpec(dim=0).check()
    with pytest.raises(ValueError, match=r"factors\.lr must be > 0"):
        FactorSpec(lr=0.0).check()
    with pytest.raises(ValueError, match=r"factors\.n_neg must be >= 0"):
        FactorSpec(n_neg=-1).check()
    with pytest.raises(ValueError, match="pass keys"):
        f = Factors(FactorSpec(explicit=False))
        f.fit(ids(1), ids(1))
        f.learn(np.array([0]), np.array([0]))
    with pytest.raises(ValueError, match="pass ratings"):
        f = Factors(FactorSpec())
        f.fit(ids(1), ids(1))
        f.learn(np.array([0]), np.array([0]))
