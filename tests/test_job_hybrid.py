"""The hybrid recommender in the Flink job (mini-cluster, in-memory events and catalog).

Known answers per method on a hand-built stream, the stream's final recommendations against the
single-process model (:mod:`core.v2.model` learning the same events in one batch: the same code, the job cuts
the stream into other batches and runs it on several subtasks, so they must agree), and the stream's user–user
cosines against a numpy batch recompute. Every test runs at parallelism 1 and 2.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flink_harness import Gate, Pace, event_json, run_pipeline
from reference import CATALOG, STREAM, batch_user_cosine

from config import load_config
from core.v2 import model as M
from core.v2.settings import METHODS, Settings
from ingest.movielens import load_catalog, load_events
from operators.model import training
from udfs.events import event_to_json

pytestmark = pytest.mark.flink

# CATALOG and STREAM: the hand-worked fixture of tests/reference.py.
MODES = ["itemcf", "usercf", "content", "popular", "weighted", "rrf", "borda"]
EXACT = ["model.hybrid.trending_half_life_s=null", "model.hybrid.trending_window_s=3600",
         "model.hybrid.trending_buckets=12", "model.hybrid.train_combiner=false", "model.hybrid.half_life_s=null"]


def final_messages(res: Any) -> dict[str, dict[str, Any]]:
    out = {m["user_id"]: m for m in res.recs if m["trigger"] == "final"}
    assert out, "no final re-rank messages"
    return out


def exact_model(catalog: list[dict[str, Any]], events: list[Any], overrides: list[str]) -> M.State:
    """The single-process model with the job's settings (the default config and ``overrides``) after the whole
    stream, learned as one batch."""
    cfg = load_config(overrides=overrides, env={})
    settings = Settings.from_config(cfg["model"])
    state = M.new_state(settings)
    M.add_items(state, catalog)
    M.learn(state, M.Batch.of(events), train=training(settings, cfg["model"]["compare_modes"]))
    return state


def want(state: M.State, user: str, mode: str | None = None) -> list[tuple[str, float, str]]:
    """The single-process model's list of ``user`` in ``mode`` (default: the settings' mode)."""
    return M.render(state, M.rank(state, [user], mode))[0]


def ranked(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(it["item_id"], it["reason"]) for it in items]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_every_method_known_answer(parallelism: int) -> None:
    events = [event_json(f"e{n}", u, i, w, 1000 * (n + 1)) for n, (u, i, w) in enumerate(STREAM)]
    overrides = [*EXACT, "model.hybrid.mode=weighted", f"model.compare_modes=[{','.join(MODES)}]"]
    res = run_pipeline(events, parallelism, overrides, catalog=[json.dumps(r) for r in CATALOG])
    u1 = final_messages(res)["u1"]
    alt = u1["alternatives"]
    # each method alone (lists shorter than 10 are filled with trending items, score 0)
    assert ranked(alt["itemcf"]) == [("c", "because you rated Alpha"), ("e", "trending")]
    assert alt["itemcf"][0]["score"] == pytest.approx(40 / math.sqrt(41), rel=1e-6)
    assert ranked(alt["usercf"]) == [("c", "liked by similar user u2"), ("e", "trending")]
    assert alt["usercf"][0]["score"] == pytest.approx(40 / math.sqrt(1722), rel=1e-6)
    assert ranked(alt["content"])[0] == ("d", "matches your taste for Comedy")
    assert ranked(alt["popular"])[:2] == [("e", "trending"), ("c", "trending")]
    assert [it["score"] for it in alt["popular"][:2]] == [2.0, 1.0]
    # weighted: c is first (item-CF and user-CF, α 1 + 0.3, plus 0.1 · popularity 0 after min-max)
    assert u1["mode"] == "weighted" and u1["items"][0]["item_id"] == "c"
    assert {it["item_id"] for it in u1["items"]} == {"c", "d", "e"}  # never a, b (seen)
    for mode in ("rrf", "borda"):
        assert {it["item_id"] for it in alt[mode]} == {"c", "d", "e"}
    # a new user with one event gets trending blended with content (cold start), never the seen item
    u3 = final_messages(res)["u3"]
    assert "e" not in {it["item_id"] for it in u3["items"]} and u3["items"]
    # the catalog reached the ranker: titles in the reasons; user-CF neighbour lists came out
    assert res.user_neighbors["u1"] == [("u2", pytest.approx(40 / math.sqrt(41 * 42)))]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_new_item_reachable_through_content(parallelism: int) -> None:
    # item n has no events at all: only its catalog record (a Comedy) makes it recommendable
    catalog = [*CATALOG, {"item_id": "n", "title": "November", "year": None, "genres": ["Comedy"]}]
    events = [event_json(f"e{n}", u, i, w, 1000 * (n + 1)) for n, (u, i, w) in enumerate(STREAM)]
    res = run_pipeline(events, parallelism, [*EXACT, "model.compare_modes=[content]"],
                       catalog=[json.dumps(r) for r in catalog] + ["not a record"])
    u1 = final_messages(res)["u1"]
    assert {it["item_id"] for it in u1["alternatives"]["content"][:2]} == {"d", "n"}
    assert [d["reason"] for d in res.dlq] == ["bad_catalog_record"]


@pytest.fixture(scope="module")
def movielens() -> tuple[list[Any], list[dict[str, Any]]]:
    """The first 4,000 MovieLens ratings, every 40th re-rated to a new value 500 events later, and the catalog."""
    events = list(load_events(limit=4000))
    for k, e in enumerate(events[:3500:40]):
        again = e._replace(event_id=f"re-{e.event_id}", weight=6.0 - e.weight if e.weight != 3.0 else 1.0,
                           ts=e.ts + 1)
        events.insert(events.index(e) + 500 + k, again)
    return events, load_catalog()


@pytest.mark.parametrize(("parallelism", "content_search", "diversity", "factors", "profile"),
                         [(1, "catalog", 0.0, False, "history"), (2, "catalog", 0.0, False, "history"),
                          (2, "candidates", 0.5, False, "history"), (1, "candidates", 0.0, True, "history"),
                          (2, "candidates", 0.0, True, "history"), (2, "candidates", 0.5, False, "engaged"),
                          (2, "candidates", 0.5, True, "engaged")])
def test_stream_equals_the_single_process_model(movielens: tuple[list[Any], list[dict[str, Any]]],
                                                parallelism: int, content_search: str, diversity: float,
                                                factors: bool, profile: str) -> None:
    """The default config (user-CF fan-out cap, decayed trending, the newest catalog items, the learned combiner
    trained in the stream): the job learns in event-time order, so its final lists are the single-process model's,
    in every mode, item by item and score by score; likewise with the MMR re-rank on, and with the opt-in factor
    model (its own mode's lists are its candidates) and with item-CF scored from every engaged item."""
    events, catalog = movielens
    overrides = [f"model.compare_modes=[{','.join(M.FUSION)}]", f"model.hybrid.content_search={content_search}",
                 f"model.hybrid.diversity_lambda={diversity}", f"model.hybrid.itemcf_profile={profile}"]
    if factors:
        overrides.append(f"model.hybrid.methods=[{','.join(METHODS)}]")
    res = run_pipeline([event_to_json(e) for e in events], parallelism, overrides,
                       catalog=[json.dumps(r) for r in catalog])
    got = final_messages(res)
    model = exact_model(catalog, events, overrides)
    assert model.comb_n[0] > 0  # the combiner was trained
    users = sorted({e.user_id for e in events})
    assert set(got) == set(users)
    compared = 0
    for user in users:
        assert [(it["item_id"], it["score"], it["reason"]) for it in got[user]["items"]] == \
            [(i, round(s, 6), r) for i, s, r in want(model, user)], user  # the topic's first top_n
        for mode in M.FUSION:
            have = got[user]["alternatives"][mode]
            assert [(it["item_id"], it["score"], it["reason"]) for it in have] == \
                [(i, round(s, 6), r) for i, s, r in want(model, user, mode)], (user, mode)
            compared += 1
    assert compared == len(users) * len(M.FUSION)
    factor_reasons = sum(it["reason"].startswith(("popular with people who share", "because you liked"))
                         for user in users for it in got[user]["alternatives"]["factors"])
    assert (factor_reasons > len(users)) == factors  # on: the factors mode lists its own candidates


@pytest.mark.parametrize("parallelism", [1, 2])
def test_user_cosines_equal_batch_recompute(movielens: tuple[list[Any], list[dict[str, Any]]],
                                            parallelism: int) -> None:
    events = movielens[0]
    k = 30
    res = run_pipeline([event_to_json(e) for e in events], parallelism,
                       ["model.hybrid.usercf_max_raters=0", f"model.hybrid.usercf_top_k={k}"])
    users, sims = batch_user_cosine([(e.user_id, e.item_id, e.weight, e.ts) for e in events])
    index = {u: n for n, u in enumerate(users)}
    checked = 0
    for user, nbrs in res.user_neighbors.items():
        row = sims[index[user]].copy()
        row[index[user]] = 0.0
        expected = sorted(-row[j] for j in np.flatnonzero(row > 0))[:k]
        assert [s for _, s in nbrs] == pytest.approx([-s for s in expected], rel=1e-9)
        for v, s in nbrs:
            assert s == pytest.approx(row[index[v]], rel=1e-9)
            checked += 1
    assert set(res.user_neighbors) == {u for u in users if np.count_nonzero(sims[index[u]] > 0) > 1}
    assert checked > 1000


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("whole", [False, True], ids=["second-half", "whole"])
def test_catalog_read_after_the_events_trains_the_same_combiner(parallelism: int, whole: bool) -> None:
    """The second half of the catalog (``whole``: all of it, so its split has no record at all for seconds) reaches
    the job only once half the events have: the catalog's watermark (its targets, as the Kafka job sets them; no idle
    timeout, ``job.idle_partition_ms=0``) holds event time back until its last record, so no event is learned, and
    the combiner trained on no ranking, with part of the catalog; the learned lists are the single-process model's
    (the whole catalog, then every event). The events are in time order (none late), paced."""
    events, catalog = load_events(limit=4000), load_catalog()
    overrides = ["model.hybrid.mode=learned"]
    held = 0 if whole else len(catalog) // 2
    with tempfile.TemporaryDirectory() as tmp:
        pace, gate = f"{tmp}/pace", f"{tmp}/gate"
        res = run_pipeline([event_to_json(e) for e in events], parallelism, overrides,
                           catalog=[json.dumps(r) for r in catalog], events_map=Pace(pace, 0.002),
                           catalog_map=Gate(gate, {held: (pace, len(events) // 2)}), catalog_ends={0: len(catalog)})
        released = int(Path(f"{gate}.{held}").read_text())
    assert res.recs and min(m["processed_at"] for m in res.recs) >= released  # nothing ranked before the catalog
    model = exact_model(catalog, events, overrides)
    assert model.comb_n[0] >= model.settings.combiner_warmup  # the learned lists use the combiner
    got = final_messages(res)
    assert set(got) == {e.user_id for e in events}
    for user, message in got.items():
        assert [(it["item_id"], it["score"], it["reason"]) for it in message["items"]] == \
            [(i, round(s, 6), r) for i, s, r in want(model, user)], user
