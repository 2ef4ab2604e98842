import math

import pytest

from core.metrics import (
    average_precision_at_k,
    catalog_coverage,
    hit_rate_at_k,
    intra_list_diversity,
    jaccard_distance,
    mrr,
    ndcg_at_k,
    novelty,
    precision_at_k,
    recall_at_k,
)

TEN = list("abcdefghij")


def test_single_item_hit_at_rank_1() -> None:
    assert hit_rate_at_k(TEN, "a", 10) == 1.0
    assert ndcg_at_k(TEN, "a", 10) == 1.0  # 1/log2(2)
    assert mrr(TEN, "a") == 1.0


def test_single_item_hit_at_rank_10() -> None:
    assert hit_rate_at_k(TEN, "j", 10) == 1.0
    assert ndcg_at_k(TEN, "j", 10) == pytest.approx(1 / math.log2(11))  # ≈ 0.2891
    assert mrr(TEN, "j") == pytest.approx(0.1)
    # outside the cut-off it is a miss
    assert hit_rate_at_k(TEN, "j", 5) == 0.0 and ndcg_at_k(TEN, "j", 5) == 0.0 and mrr(TEN, "j", k=5) == 0.0


def test_single_item_miss_and_empty_list() -> None:
    for ranked in (TEN, []):
        assert hit_rate_at_k(ranked, "z", 10) == 0.0
        assert ndcg_at_k(ranked, "z", 10) == 0.0
        assert mrr(ranked, "z") == 0.0
    with pytest.raises(ValueError, match="k 0"):
        hit_rate_at_k(TEN, "a", 0)


def test_set_metrics_known_answers() -> None:
    ranked, rel = list("abcde"), {"a", "c", "x"}
    # top 5 hits a (rank 1) and c (rank 3)
    assert precision_at_k(ranked, rel, 5) == pytest.approx(2 / 5)
    assert recall_at_k(ranked, rel, 5) == pytest.approx(2 / 3)
    # AP@5 = (P@1 + P@3) / min(3, 5) = (1 + 2/3) / 3
    assert average_precision_at_k(ranked, rel, 5) == pytest.approx((1 + 2 / 3) / 3)
    assert precision_at_k(ranked, rel, 1) == 1.0 and recall_at_k(ranked, rel, 1) == pytest.approx(1 / 3)
    assert average_precision_at_k(ranked, rel, 1) == 1.0  # 1 / min(3, 1)
    assert average_precision_at_k(ranked, rel, 2) == 0.5  # P@1 / min(3, 2)
    # a list shorter than k: precision still divides by k
    assert precision_at_k(["a"], {"a"}, 5) == pytest.approx(0.2)
    assert recall_at_k(["a"], {"a"}, 5) == 1.0 and average_precision_at_k(["a"], {"a"}, 5) == 1.0


def test_set_metrics_empty_list_and_empty_history() -> None:
    for ranked, rel in (([], {"a"}), (list("abc"), set())):
        assert precision_at_k(ranked, rel, 3) == 0.0
        assert recall_at_k(ranked, rel, 3) == 0.0
        assert average_precision_at_k(ranked, rel, 3) == 0.0
    with pytest.raises(ValueError, match="k -1"):
        average_precision_at_k([], set(), -1)


def test_catalog_coverage() -> None:
    # a, b, c of 4 catalog items appear; "zz" is not in the catalog
    assert catalog_coverage([["a", "b"], ["b", "c"], ["zz"]], {"a", "b", "c", "d"}) == 0.75
    assert catalog_coverage([], {"a"}) == 0.0
    assert catalog_coverage([["a"]], set()) == 0.0


def test_novelty() -> None:
    counts = {"a": 50, "b": 25, "c": 100}
    # p = 0.5, 0.25, 1 -> 1, 2, 0 bits -> mean 1
    assert novelty(["a", "b", "c"], counts, 100) == pytest.approx(1.0)
    assert novelty(["d"], counts, 100) == pytest.approx(math.log2(100))  # unseen counts as 1
    assert novelty([], counts, 100) == 0.0
    with pytest.raises(ValueError, match="total 0"):
        novelty(["a"], counts, 0)
    with pytest.raises(ValueError, match="item_counts"):
        novelty(["c"], counts, 10)


def test_intra_list_diversity() -> None:
    genres = {"a": {"Comedy", "Romance"}, "b": {"Comedy"}, "c": {"Action"}}
    # (a,b): 1 - 1/2 = 0.5; (a,c): 1; (b,c): 1 -> 2.5 / 3
    assert intra_list_diversity(["a", "b", "c"], genres) == pytest.approx(2.5 / 3)
    assert intra_list_diversity(["a"], genres) == 0.0
    assert intra_list_diversity([], genres) == 0.0
    assert intra_list_diversity(["x", "y"], genres) == 0.0  # two items without genres: identical
    assert jaccard_distance(set(), {"Comedy"}) == 1.0
