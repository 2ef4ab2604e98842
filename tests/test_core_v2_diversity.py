"""core.v2.diversity: the MMR re-rank and intra-list diversity against a plain-numpy oracle and known answers."""

from __future__ import annotations

import numpy as np
import pytest

from config import load_config
from core.v2 import model as M
from core.v2.diversity import CONTENT, ITEMCF, cooccurrence_vectors, intra_list_diversity, mmr
from core.v2.settings import Settings
from ingest.movielens import load_catalog, load_events

NO_NB = (np.zeros((0, 1), dtype=np.int64), np.zeros((0, 1)), np.zeros(0, dtype=np.int64))


def csr(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(dense)
    ptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(dense)))]).astype(np.int64)
    return ptr, cols.astype(np.int64), dense[rows, cols], np.linalg.norm(dense, axis=1)


def oracle(items: np.ndarray, scores: np.ndarray, n: int, lam: float, sim: np.ndarray) -> list[int]:
    rel = (scores - scores.min()) / (scores.max() - scores.min()) if scores.max() > scores.min() \
        else np.ones(len(scores))
    chosen: list[int] = []
    while len(chosen) < min(n, len(items)):
        rest = [c for c in range(len(items)) if c not in chosen]
        value = [rel[c] - lam * max((sim[items[c], items[s]] for s in chosen), default=0.0) for c in rest]
        chosen.append(rest[int(np.argmax(value))])  # argmax: the first of equal values, the better position
    return chosen


def test_known_answer() -> None:
    """A and B are the same vector, C another: λ = 1 puts C before B, λ = 0.5 does not, λ = 0 keeps the order."""
    vec = csr(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    items, scores = np.array([0, 1, 2]), np.array([1.0, 0.9, 0.5])  # rel 1, 0.8, 0
    assert mmr(items, scores, 3, 0.0, CONTENT, *vec, *NO_NB).tolist() == [0, 1, 2]
    assert mmr(items, scores, 3, 1.0, CONTENT, *vec, *NO_NB).tolist() == [0, 2, 1]  # B: 0.8 - 1 < C: 0
    assert mmr(items, scores, 3, 0.5, CONTENT, *vec, *NO_NB).tolist() == [0, 1, 2]  # B: 0.8 - 0.5 > C: 0
    assert mmr(items, scores, 2, 1.0, CONTENT, *vec, *NO_NB).tolist() == [0, 2]
    assert intra_list_diversity(np.array([0, 1]), CONTENT, *vec, *NO_NB) == pytest.approx(0.0)
    assert intra_list_diversity(np.array([0, 2]), CONTENT, *vec, *NO_NB) == pytest.approx(1.0)
    assert intra_list_diversity(np.array([0]), CONTENT, *vec, *NO_NB) == 0.0


@pytest.mark.parametrize("lam", [0.0, 0.2, 0.5, 1.0, 3.0])
def test_equals_the_oracle_on_random_catalogs(lam: float) -> None:
    rng = np.random.default_rng(int(lam * 10))
    dense = rng.random((80, 12)) * (rng.random((80, 12)) < 0.3)
    vec = csr(dense)
    unit = dense / np.where(vec[3] > 0, vec[3], 1.0)[:, None]
    sim = unit @ unit.T
    for _ in range(20):
        items = rng.choice(80, 30, replace=False).astype(np.int64)
        scores = np.sort(rng.random(30))[::-1].copy()
        got = mmr(items, scores, 10, lam, CONTENT, *vec, *NO_NB).tolist()
        assert got == oracle(items, scores, 10, lam, sim)
        ild = 1 - np.mean([sim[a, b] for x, a in enumerate(items[:10]) for b in items[x + 1:10]])
        assert intra_list_diversity(items[:10], CONTENT, *vec, *NO_NB) == pytest.approx(ild)


def test_itemcf_similarity_from_either_neighbour_list() -> None:
    """sim(a, b) is the cosine either list holds (they are symmetric), 0 for a pair neither holds."""
    nb_idx = np.array([[1, -1], [0, -1], [-1, -1]], dtype=np.int64)
    nb_sim = np.array([[0.9, 0.0], [0.9, 0.0], [0.0, 0.0]])
    nb_len = np.array([1, 1, 0], dtype=np.int64)
    empty = (np.zeros(4, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(3))
    items, scores = np.array([0, 1, 2]), np.array([1.0, 0.9, 0.5])
    assert mmr(items, scores, 3, 1.0, ITEMCF, *empty, nb_idx, nb_sim, nb_len).tolist() == [0, 2, 1]
    assert intra_list_diversity(np.array([0, 1, 2]), ITEMCF, *empty, nb_idx, nb_sim,
                                nb_len) == pytest.approx(1 - 0.9 / 3)


def test_equal_scores_and_empty_lists() -> None:
    vec = csr(np.eye(3))
    assert mmr(np.array([2, 0, 1]), np.array([0.4, 0.4, 0.4]), 3, 0.7, CONTENT, *vec, *NO_NB).tolist() == [0, 1, 2]
    assert mmr(np.zeros(0, dtype=np.int64), np.zeros(0), 5, 0.5, CONTENT, *vec, *NO_NB).tolist() == []


def test_diversify_a_ranking_of_the_model() -> None:
    """The model's lists re-ranked: λ = 0 is the first n unchanged; λ > 0 is a permutation of items of the deeper
    list with their scores and reasons, first item kept, equal to mmr on each row."""
    state = M.new_state(Settings.from_config(load_config(env={})["model"]))
    M.add_items(state, load_catalog())
    M.learn(state, M.Batch.of(load_events(limit=4000)))
    users = sorted(state.users.names)[:40]
    deep = M.rank(state, users, "weighted", 30)
    same = M.diversify(state, deep, 10, 0.0)
    assert np.array_equal(same.item, deep.item[:, :10]) and np.array_equal(same.length, np.minimum(deep.length, 10))
    assert M.render(state, same) == [row[:10] for row in M.render(state, deep)]
    div = M.diversify(state, deep, 10, 0.5)
    assert not np.array_equal(div.item, same.item)
    full = M.render(state, deep)
    _, vptr, vcol, vval, vnorm = state.content()[:5]
    for r, row in enumerate(M.render(state, div)):
        assert row[:1] == full[r][:1] and all(entry in full[r] for entry in row)
        m = int(deep.length[r])
        want = mmr(deep.item[r, :m], deep.score[r, :m], 10, 0.5, CONTENT, vptr, vcol, vval, vnorm, state.nb_idx,
                   state.nb_sim, state.nb_len)
        assert div.item[r, : div.length[r]].tolist() == deep.item[r, want].tolist()
    with pytest.raises(ValueError, match="must be content or itemcf"):
        M.diversify(state, deep, 10, 0.5, by="genre")


def test_rank_with_diversity_on_is_mmr_over_the_pool() -> None:
    """``diversity_lambda`` > 0: rank's lists are diversify(λ) of the mode's best max(n, diversity_pool); the
    first picks do not depend on n."""
    base = Settings.from_config(load_config(env={})["model"])
    events, catalog = load_events(limit=3000), load_catalog()
    plain, diverse = M.new_state(base), M.new_state(base.replace(diversity_lambda=0.7, diversity_pool=40))
    for state in (plain, diverse):
        M.add_items(state, catalog)
        M.learn(state, M.Batch.of(events))
    users = sorted(plain.users.names)[:30]
    want = M.diversify(plain, M.rank(plain, users, "weighted", 40), 10, 0.7)
    got = M.rank(diverse, users, "weighted", 10)
    assert np.array_equal(got.item, want.item) and np.array_equal(got.score, want.score)
    assert np.array_equal(M.rank(diverse, users, "weighted", 25).item[:, :10], got.item)
    assert not np.array_equal(got.item, M.rank(plain, users, "weighted", 10).item)
    with pytest.raises(ValueError, match="diversity_similarity 'genre' must be one of content, itemcf"):
        base.replace(diversity_similarity="genre")


def test_cooccurrence_vectors_give_the_cooccurrence_cosine() -> None:
    """Each item's user set (a repeated pair once): intra-list diversity on them is 1 − mean pairwise
    |U_a ∩ U_b| / sqrt(|U_a| · |U_b|), against a dense numpy oracle; an item without users has cosine 0."""
    rng = np.random.default_rng(7)
    item, user = rng.integers(0, 30, 400), rng.integers(0, 25, 400)
    item, user = np.concatenate([item, item[:50]]), np.concatenate([user, user[:50]])  # repeats count once
    vec = cooccurrence_vectors(item, user, 32)  # items 30, 31 (and any unseen) have no users
    binary = np.zeros((32, 25))
    binary[item, user] = 1.0
    norm = np.linalg.norm(binary, axis=1)
    assert np.array_equal(vec[3], norm) and vec[0][-1] == binary.sum()
    unit = binary / np.where(norm > 0, norm, 1.0)[:, None]
    sim = unit @ unit.T
    for _ in range(20):
        items = rng.choice(32, 8, replace=False).astype(np.int64)
        ild = 1 - np.mean([sim[a, b] for x, a in enumerate(items) for b in items[x + 1:]])
        assert intra_list_diversity(items, CONTENT, *vec, *NO_NB) == pytest.approx(ild)
    a, b = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0])  # U_0 = {0, 1}, U_1 = {1}, U_2 = {0}
    assert intra_list_diversity(np.array([0, 1]), CONTENT, *cooccurrence_vectors(a, b, 3),
                                *NO_NB) == pytest.approx(1 - 1 / np.sqrt(2))
    assert intra_list_diversity(np.array([1, 2]), CONTENT, *cooccurrence_vectors(a, b, 3), *NO_NB) == 1.0
    with pytest.raises(ValueError, match=r"item ids must be in \[0, 2\)"):
        cooccurrence_vectors(a, b, 2)
