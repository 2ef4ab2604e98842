"""Known answers of the offline metrics (evaluation.metrics, Microsoft Recommenders' definitions), computed by hand."""

from __future__ import annotations

import math

import pytest

from evaluation.metrics import METRICS, ndcg_set_at_k, user_metrics


def test_more_relevant_items_than_k() -> None:
    # top 3 = a x b: hits at ranks 1 and 3; 4 relevant items, so min(|rel|, k) = 3
    m = user_metrics(["a", "x", "b", "y", "c"], {"a", "b", "c", "d"}, 3)
    assert m["Precision"] == pytest.approx(2 / 3)
    assert m["Recall"] == pytest.approx(2 / 4)
    assert m["NDCG"] == pytest.approx((1 + 1 / 2) / (1 + 1 / math.log2(3) + 1 / 2))  # DCG / IDCG of 3 hits
    assert m["MAP"] == pytest.approx((1 / 1 + 2 / 3) / 3)  # precision@1 + precision@3, over min(4, 3)
    assert m["MAP_rel"] == pytest.approx((1 / 1 + 2 / 3) / 4)  # the same sum over |rel|
    assert (m["HR"], m["MRR"]) == (1.0, 1.0)
    assert m["NDCG"] == pytest.approx(0.7039180890341347)  # the same, as a number


def test_fewer_relevant_items_than_k() -> None:
    # k = 5, hits at 1, 3 and 5 of 4 relevant: precision still divides by k
    m = user_metrics(["a", "x", "b", "y", "c"], {"a", "b", "c", "d"}, 5)
    assert m["Precision"] == pytest.approx(3 / 5)
    assert m["Recall"] == pytest.approx(3 / 4)
    dcg = 1 + 1 / math.log2(4) + 1 / math.log2(6)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)
    assert m["NDCG"] == pytest.approx(dcg / idcg)
    assert m["MAP"] == m["MAP_rel"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 4)  # |rel| < k: same normalisation


def test_one_held_out_item() -> None:
    m = user_metrics(["x", "y", "b"], {"b"}, 3)
    assert m == pytest.approx({"Precision": 1 / 3, "Recall": 1.0, "NDCG": 0.5, "MAP": 1 / 3, "MAP_rel": 1 / 3,
                               "HR": 1.0, "MRR": 1 / 3})
    # the hit below the cutoff does not count
    assert user_metrics(["x", "y", "b"], {"b"}, 2) == dict.fromkeys(METRICS, 0.0)


def test_misses_and_empty_inputs() -> None:
    assert user_metrics(["x", "y"], {"a"}, 10) == dict.fromkeys(METRICS, 0.0)
    assert user_metrics([], {"a"}, 10) == dict.fromkeys(METRICS, 0.0)
    assert user_metrics(["a"], set(), 10) == dict.fromkeys(METRICS, 0.0)
    assert ndcg_set_at_k(["a"], set(), 10) == 0.0


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="k 0 must be a positive integer"):
        user_metrics(["a"], {"a"}, 0)
    with pytest.raises(ValueError, match="k True"):
        ndcg_set_at_k(["a"], {"a"}, True)
    with pytest.raises(ValueError, match=r"repeats an item"):
        user_metrics(["a", "b", "a"], {"a"}, 3)
    user_metrics(["a", "b", "a"], {"a"}, 2)  # a repeat below the cutoff does not matter
