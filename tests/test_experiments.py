"""Experiments, pure logic: the arm assignment (stable, shares), the config's validation (errors name the key and
value), the per-event bookkeeping of :mod:`core.v2.experiments`, the report's statistics (known answers)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from config import ConfigError, experiment, load_config
from core.v2 import experiments as X
from core.v2.settings import Settings
from ingest.movielens import load_events
from tools.ab_report import ArmStats, mean_interval, report, summarise, two_proportion_z, wilson

ARMS = ("experiments.arms=[{name: weighted, share: 0.5, hybrid: {mode: weighted}}, "
        "{name: learned, share: 0.5, hybrid: {mode: learned}}]")


def exp_of(*overrides: str) -> X.Experiment:
    return experiment(load_config(overrides=["experiments.name=t", *overrides], env={}))


def test_off_by_default_and_the_demo_profile() -> None:
    assert experiment(load_config(env={})) is None
    demo = experiment(load_config(experiment="demo", env={}))
    assert demo.name == "demo" and demo.names == ("weighted", "learned")
    assert [a.share for a in demo.arms] == [0.5, 0.5]
    assert [a.settings.mode for a in demo.arms] == ["weighted", "learned"] and demo.ranks_learned
    with pytest.raises(ConfigError, match="experiment profile 'nope' does not exist"):
        load_config(experiment="nope", env={})


def test_assignment_is_a_pure_function_of_experiment_and_user() -> None:
    exp = exp_of(ARMS)
    users = [str(u) for u in range(2000)]
    first = exp.arms_of(users)
    assert (exp_of(ARMS).arms_of(list(reversed(users)))[::-1] == first).all()  # any order, any process
    assert X.bucket("t", "42") == X.bucket("t", "42") != X.bucket("u", "42")
    assert min(X.bucket("t", u) for u in users) >= 0 and max(X.bucket("t", u) for u in users) < 1
    # another experiment name reshuffles: about half the users change arm
    other = experiment(load_config(overrides=["experiments.name=other", ARMS], env={})).arms_of(users)
    assert 0.4 < (other != first).mean() < 0.6


@pytest.mark.parametrize("shares", [(0.5, 0.5), (0.1, 0.9), (0.2, 0.3, 0.5)])
def test_shares_of_many_users_within_two_percent(shares: tuple[float, ...]) -> None:
    arms = ", ".join(f"{{name: a{i}, share: {s}}}" for i, s in enumerate(shares))
    exp = exp_of(f"experiments.arms=[{arms}]")
    got = np.bincount(exp.arms_of([f"user-{u}" for u in range(100_000)]), minlength=len(shares)) / 100_000
    assert np.abs(got - np.array(shares)).max() <= 0.02, got


def test_demo_shares_of_the_movielens_users() -> None:
    demo = experiment(load_config(experiment="demo", env={}))
    users = sorted({e.user_id for e in load_events()})
    assert len(users) == 943
    assert abs((demo.arms_of(users) == 0).mean() - 0.5) <= 0.02


def test_arm_settings_override_the_hybrid_section() -> None:
    exp = exp_of("experiments.arms=[{name: a, share: 0.25, hybrid: {fusion_weights: {usercf: 0.9}, "
                 "diversity_lambda: 0.5, methods: [itemcf, popular]}}, {name: b, share: 0.75}]")
    a, b = exp.arms
    base = Settings.from_config(load_config(env={})["model"])
    assert dict(a.settings.fusion_weights) == {**dict(base.fusion_weights), "usercf": 0.9}  # merged key by key
    assert a.settings.diversity_lambda == 0.5 and a.settings.methods == ("itemcf", "popular")
    assert b.settings == base and not exp.ranks_learned
    assert a.settings.replace(fusion_weights=base.fusion_weights, diversity_lambda=0.0, methods=base.methods) == base


@pytest.mark.parametrize(("override", "message"), [
    ("experiments.arms=[]", r"experiments.arms must be a list of at least two arms"),
    ("experiments.arms=[{name: a, share: 0.5}, {name: b, share: 0.4}]", r"shares must sum to 1, got 0.5 \+ 0.4"),
    ("experiments.arms=[{name: a, share: 0}, {name: b, share: 1}]", r"experiments.arms\[0\].share .* got 0"),
    ("experiments.arms=[{name: a, share: 0.5}, {name: a, share: 0.5}]", r"arms\[1\].name 'a' names two arms"),
    ("experiments.arms=[{name: 'a b', share: 0.5}, {name: b, share: 0.5}]", r"arms\[0\].name .* got 'a b'"),
    ("experiments.arms=[{name: a, share: 0.5, hybrid: {half_life_s: 60}}, {name: b, share: 0.5}]",
     r"experiments.arms\[0\].hybrid.half_life_s cannot differ between arms"),
    ("experiments.arms=[{name: a, share: 0.5, hybrid: {mode: best}}, {name: b, share: 0.5}]",
     r"experiments.arms\[0\].hybrid: mode 'best' must be one of"),
    ("experiments.arms=[{name: a, share: 0.5, hybrid: {methods: [itemcf, nope]}}, {name: b, share: 0.5}]",
     r"arms\[0\].hybrid.methods must be a list within model.hybrid.methods .* got \['itemcf', 'nope'\]"),
    ("experiments.arms=[{name: a, share: 0.5, weight: 2}, {name: b, share: 0.5}]",
     r"experiments.arms\[0\].weight is unknown"),
    ("experiments.window_ms=0", r"experiments.window_ms must be a positive integer, got 0"),
])
def test_config_errors_name_the_key_and_value(override: str, message: str) -> None:
    overrides = ["experiments.name=t", ARMS, override] if "arms" not in override else ["experiments.name=t", override]
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides, env={})


def test_score_and_tally_known_answers() -> None:
    # two served lists: row 0 (version t=100, id "e1") items 7, 3, 9; row 1 (t=50, "x") items 4
    lists = np.array([[7, 3, 9], [4, -1, -1]])
    scored = X.score(lists, np.array([100, 50]), ["e1", "x"],
                     row=np.array([0, 0, 0, 1, -1, 0]), item=np.array([3, 5, 7, 4, 3, 9]),
                     ts=np.array([160, 170, 100, 80, 90, 100]), event_id=["a", "b", "e0", "c", "d", "e2"])
    # e0 at t=100 sorts before the list's version (100, "e1"): no list before it; e2 (100, "e2") after it
    assert scored.served.tolist() == [True, True, False, True, False, True]
    assert scored.rank.tolist() == [2, 0, 0, 1, 0, 3]
    assert scored.age_ms.tolist() == [60, 70, 0, 30, 0, 0]
    totals = X.tally(2, np.array([0, 0, 0, 1, 1, 1]), scored, lists_arm=np.array([0, 1, 1]))
    assert totals.events.tolist() == [2, 2] and totals.hits.tolist() == [1, 2] and totals.lists.tolist() == [1, 2]
    assert totals.ndcg.tolist() == pytest.approx([1 / math.log2(3), 1 + 1 / math.log2(4)])
    assert totals.ndcg_sq.tolist() == pytest.approx([1 / math.log2(3) ** 2, 1 + 0.25])
    assert totals.age_sum_ms.tolist() == [130, 30] and totals.age_max_ms.tolist() == [70, 30]


def test_wilson_interval_known_answers() -> None:
    lo, hi = wilson(50, 100)
    assert (lo, hi) == (pytest.approx(0.403832, abs=1e-6), pytest.approx(0.596168, abs=1e-6))
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.277533, abs=1e-6)
    assert wilson(0, 0) == (0.0, 1.0)


def test_two_proportion_z_known_answer() -> None:
    z, p = two_proportion_z(60, 100, 45, 100)  # pooled 0.525: se = sqrt(0.525 * 0.475 * 0.02)
    assert z == pytest.approx(0.15 / math.sqrt(0.525 * 0.475 * 0.02))
    assert z == pytest.approx(2.1240, abs=1e-4) and p == pytest.approx(0.0337, abs=1e-4)  # normal tables
    assert two_proportion_z(5, 10, 5, 10) == (0.0, 1.0)


def test_mean_interval_known_answer() -> None:
    values = [0.0, 1.0, 0.5, 0.0]
    mean, lo, hi = mean_interval(sum(values), sum(v * v for v in values), len(values))
    sd = float(np.std(values, ddof=1))
    assert mean == 0.375 and hi - mean == pytest.approx(1.959964 * sd / 2, rel=1e-6) and mean - lo == hi - mean


def test_report_sums_the_summaries_of_one_experiment() -> None:
    docs = [{"experiment": "old", "arm": "a", "events": 9, "lists": 9, "hits": 9, "ndcg": 9.0, "ndcg_sq": 9.0,
             "age_sum_ms": 9},
            *({"experiment": "demo", "arm": arm, "events": 50, "lists": 10, "hits": h, "ndcg": h / 2,
               "ndcg_sq": h / 4, "age_sum_ms": 60_000} for arm, h in (("weighted", 30), ("learned", 20)) * 2)]
    name, arms = summarise(docs)
    assert name == "demo"
    assert arms == [ArmStats("weighted", 100, 20, 60, 30.0, 15.0, 120_000),
                    ArmStats("learned", 100, 20, 40, 20.0, 10.0, 120_000)]
    text = report(name, arms)
    z, p = two_proportion_z(60, 100, 40, 100)
    assert "weighted" in text and "0.6000 [0.5020, 0.6906]" in text and f"z = {z:+.2f}, p = {p:.3g}" in text
    assert summarise(docs, "old")[1] == [ArmStats("a", 9, 9, 9, 9.0, 9.0, 9)]
