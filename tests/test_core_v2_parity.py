"""core.v2 against the dict-based ``core.hybrid.HybridRecommender`` it replaces: the same lists, scores and reasons
in every mode both have, event by event (the old model with its lags off: neighbour lists and trending current).

Transitional: it goes with the old model; the numpy oracles (test_core_v2_itemcf, test_core_v2_usercf) stay."""

from __future__ import annotations

import random
from typing import Any

import pytest

from core.hybrid import HybridRecommender
from core.v2 import model as M
from core.v2.settings import Settings
from udfs.events import Event

WEIGHTS = {"view": 1.0, "click": 2.0, "cart": 3.0, "purchase": 5.0}


def mixed_stream(seed: int, n: int, users: int, items: int) -> list[Event]:
    rng = random.Random(seed)
    out: list[Event] = []
    ts = 1_000_000
    for k in range(n):
        ts += rng.choice([0, 0, 1000, 5000, 60000])
        if out and rng.random() < 0.1:
            e = rng.choice(out)
            u, i = e.user_id, e.item_id
        else:
            u, i = f"u{rng.randrange(users)}", f"i{int(rng.paretovariate(1.0)) % items}"
        t = rng.choice(["rate"] * 6 + list(WEIGHTS))
        out.append(Event(f"e{k:06d}", u, i, t, rng.choice([1.0, 2.0, 3.0, 4.0, 5.0]) if t == "rate" else WEIGHTS[t],
                         ts))
    return out


@pytest.mark.parametrize(("seed", "history_cap", "max_raters", "center"),
                         [(1, 5, 4, False), (2, 0, 0, False), (3, 20, 20, False), (4, 3, 2, True)])
def test_same_lists_as_the_dict_model_in_every_shared_mode(seed: int, history_cap: int, max_raters: int,
                                                           center: bool) -> None:
    kw: dict[str, Any] = {"methods": ("itemcf", "usercf", "popular"), "history_cap": history_cap,
                          "usercf_max_raters": max_raters, "candidate_pool": 10, "center_ratings": center,
                          "deny": ("i3",)}
    old = HybridRecommender(refresh_events=0, refresh_on_norms=True, train_combiner=False, **kw)
    state = M.new_state(Settings(**kw))
    events = mixed_stream(seed, 1500, 50, 60)
    compared = expected = 0
    for k, e in enumerate(events):
        old.learn_one(e)
        M.learn(state, M.Batch.of([e]))
        if k % 150 == 149:
            users = [*sorted({x.user_id for x in events[:k + 1]}), "nobody"]
            expected += 6 * len(users)
            for mode in ("itemcf", "usercf", "popular", "weighted", "rrf", "borda"):
                new = M.render(state, M.rank(state, users, mode, 10))
                for u, got in zip(users, new, strict=True):
                    want = old.rank(u, 10, mode)
                    assert [(i, r) for i, _, r in got] == [(i, r) for i, _, r in want], (k, mode, u)
                    assert [s for _, s, _ in got] == pytest.approx([s for _, s, _ in want], rel=1e-9, abs=1e-12)
                    compared += 1
    assert compared == expected > 2000


def random_catalog(seed: int, items: int) -> list[dict[str, Any]]:
    from core.v2.catalog import GENRES

    rng = random.Random(seed)
    words = ["star", "war", "love", "night", "day", "man", "dead", "city", "blue", "dark"]
    return [{"item_id": f"i{k}", "title": " ".join(rng.sample(words, rng.randrange(1, 4))),
             "year": 1950 + rng.randrange(60) if rng.random() < 0.9 else None,
             "genres": rng.sample(GENRES[1:], rng.randrange(0, 3))} for k in range(items) if k % 7]


@pytest.mark.parametrize(("seed", "search"), [(1, "candidates"), (2, "catalog")])
def test_same_lists_with_content_and_a_catalog(seed: int, search: str) -> None:
    # items i0, i7, ... are not in the catalog; content_new_items small so the newest matter
    kw: dict[str, Any] = {"methods": ("itemcf", "usercf", "content", "popular"), "history_cap": 5,
                          "usercf_max_raters": 4, "candidate_pool": 10, "content_search": search,
                          "content_new_items": 15}
    old = HybridRecommender(refresh_events=0, refresh_on_norms=True, train_combiner=False, **kw)
    state = M.new_state(Settings(**kw))
    catalog = random_catalog(seed, 60)
    for record in catalog:
        old.add_item(record)
    M.add_items(state, catalog)
    events = mixed_stream(seed, 1200, 50, 60)
    compared = 0
    for k, e in enumerate(events):
        old.learn_one(e)
        M.learn(state, M.Batch.of([e]))
        if k % 200 == 199:
            users = [*sorted({x.user_id for x in events[: k + 1]}), "nobody"]
            for mode in ("content", "weighted", "rrf", "borda"):
                new = M.render(state, M.rank(state, users, mode, 10))
                for u, got in zip(users, new, strict=True):
                    want = old.rank(u, 10, mode)
                    assert [(i, r) for i, _, r in got] == [(i, r) for i, _, r in want], (k, mode, u)
                    assert [s for _, s, _ in got] == pytest.approx([s for _, s, _ in want], rel=1e-9, abs=1e-12)
                    compared += 1
    assert compared > 1000


def test_learned_mode_ranks_like_the_dict_model_with_the_same_weights() -> None:
    # the same combiner weights in both, no training: the same features, probabilities, order and reasons
    kw: dict[str, Any] = {"methods": ("itemcf", "usercf", "content", "popular"), "history_cap": 5,
                          "usercf_max_raters": 4, "candidate_pool": 8, "content_new_items": 15, "combiner_warmup": 0,
                          "train_combiner": False}
    old = HybridRecommender(refresh_events=0, refresh_on_norms=True, **kw)
    state = M.new_state(Settings(**kw))
    catalog = random_catalog(3, 60)
    for record in catalog:
        old.add_item(record)
    M.add_items(state, catalog)
    rng = random.Random(5)
    weights = {f: rng.uniform(-2, 2) for f in M.FEATURES}
    old.combiner.load_weights({**weights, "bias": 0.3})
    state.comb[:] = [*(weights[f] for f in M.FEATURES), 0.3]
    events = mixed_stream(3, 1000, 40, 60)
    for e in events:
        old.learn_one(e)
    M.learn(state, M.Batch.of(events))
    users = sorted({e.user_id for e in events})
    new = M.render(state, M.rank(state, users, "learned", 10))
    for u, got in zip(users, new, strict=True):
        want = old.rank(u, 10, "learned")
        assert [(i, r) for i, _, r in got] == [(i, r) for i, _, r in want], u
        assert [s for _, s, _ in got] == pytest.approx([s for _, s, _ in want], rel=1e-9)


def test_the_combiner_learns_like_the_dict_model_with_positives_only() -> None:
    # every eligible event trains (sample 1) on its positive alone (n_neg 0): no draw is involved, so the weights
    # after the stream equal the dict model's
    kw: dict[str, Any] = {"methods": ("itemcf", "usercf", "content", "popular"), "history_cap": 5,
                          "usercf_max_raters": 4, "candidate_pool": 8, "content_new_items": 15,
                          "combiner_sample": 1.0, "n_neg": 0}
    old = HybridRecommender(refresh_events=0, refresh_on_norms=True, **kw)
    state = M.new_state(Settings(**kw))
    catalog = random_catalog(4, 60)
    for record in catalog:
        old.add_item(record)
    M.add_items(state, catalog)
    events = mixed_stream(4, 500, 30, 60)
    for e in events:
        old.learn_one(e)
    for start in range(0, len(events), 100):  # batches: training steps see the state just before their event
        M.learn(state, M.Batch.of(events[start:start + 100]), train=True)
    assert int(state.comb_n[0]) == old.combiner.n_seen > 50
    want = old.combiner.weights()
    assert list(state.comb) == pytest.approx([*(want[f] for f in M.FEATURES), want["bias"]], rel=1e-6, abs=1e-9)
