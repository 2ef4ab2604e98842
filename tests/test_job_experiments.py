"""An experiment in the Flink job (mini-cluster): two arms, ``weighted`` and ``learned``, on MovieLens-100K.

Each run checks that every message carries its user's arm (the stable hash of :mod:`core.v2.experiments`) and was
ranked in that arm's mode, that the arms' shares of the users are within 2% of the config, that the final lists
equal the single-process model's with each arm's settings, and that the per-arm sums the job emitted (the
``experiments`` summaries) equal a recomputation, in one process, from the same events and the lists the job
served (its messages): for each engagement in canonical order (time, id), the last list its user was sent with a
version before it. At parallelism 1 and 2.

The events go in canonical order, so each user's events reach the model in the order the recomputation takes them
(the job scores an engagement against the list it last sent the user, if that list's version precedes it); the
model answers in band with them, so however late it runs, a list answered before an event's request is scored. The
input pauses every ``EVERY`` events, longer than the front's window, so the front cuts it into many batches and
users are served lists between their events; which lists depends on timing, the equality does not.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import defaultdict
from typing import Any

import pytest
from flink_harness import Pace, run_pipeline

from config import experiment, load_config
from core.v2 import experiments as X
from core.v2 import model as M
from core.v2.settings import Settings
from ingest.movielens import load_catalog, load_events
from operators.model import training
from udfs.events import NEGATIVE_TYPES, event_to_json

pytestmark = pytest.mark.flink

ARMS = ("experiments.arms=[{name: weighted, share: 0.5, hybrid: {mode: weighted}}, "
        "{name: learned, share: 0.5, hybrid: {mode: learned}}]")
# a pause longer than the front's window (job.window_ms) and shorter than a settle (a settled watermark would let
# a finished catalog's end-of-time watermark through: the model would take the input as ended)
EVERY, PAUSE_S = 500, 0.45
OVERRIDES = ["experiments.name=demo", ARMS, "job.settle_ms=5000"]


@pytest.fixture(scope="module")
def movielens() -> tuple[list[Any], list[dict[str, Any]]]:
    return sorted(load_events(limit=20000), key=lambda e: (e.ts, e.event_id)), load_catalog()


def exact_model(catalog: list[dict[str, Any]], events: list[Any], cfg: dict[str, Any]) -> M.State:
    """The single-process model after the whole stream, learned as one batch (trained as the job trains it)."""
    settings = Settings.from_config(cfg["model"])
    state = M.new_state(settings)
    M.add_items(state, catalog)
    M.learn(state, M.Batch.of(events), train=training(settings, cfg["model"]["compare_modes"], experiment(cfg)))
    return state


def recompute(events: list[Any], messages: list[dict[str, Any]], top_n: int,
              exp: X.Experiment) -> dict[str, dict[str, Any]]:
    """Per arm, from the events and the served lists alone (plain Python, not the job's code path)."""
    served: dict[str, list[tuple[tuple[int, str], list[str]]]] = defaultdict(list)
    totals = {name: {"events": 0, "hits": 0, "ndcg": 0.0, "lists": 0, "age_sum_ms": 0, "age_max_ms": 0}
              for name in exp.names}
    for m in messages:
        served[m["user_id"]].append(((m["event_ts"], m["event_id"]), [it["item_id"] for it in m["items"][:top_n]]))
        totals[m["arm"]]["lists"] += 1
    for e in sorted(events, key=lambda e: (e.ts, e.event_id)):
        if e.type in NEGATIVE_TYPES:
            continue
        before = [lst for lst in served[e.user_id] if lst[0] < (e.ts, e.event_id)]
        if not before:
            continue
        (version_ts, _), items = before[-1]
        t = totals[exp.names[exp.arm_of(e.user_id)]]
        t["events"] += 1
        t["age_sum_ms"] += e.ts - version_ts
        t["age_max_ms"] = max(t["age_max_ms"], e.ts - version_ts)
        if e.item_id in items:
            t["hits"] += 1
            t["ndcg"] += 1 / math.log2(items.index(e.item_id) + 2)
    return totals


@pytest.mark.parametrize("parallelism", [1, 2])
def test_two_arms_in_the_job(movielens: tuple[list[Any], list[dict[str, Any]]], parallelism: int) -> None:
    events, catalog = movielens
    cfg = load_config(overrides=OVERRIDES, env={})
    exp = experiment(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        res = run_pipeline([event_to_json(e) for e in events], parallelism, OVERRIDES,
                           catalog=[json.dumps(r) for r in catalog],
                           events_map=Pace(f"{tmp}/pace", PAUSE_S, every=EVERY))
    # every message carries its user's arm and was ranked in the arm's mode
    modes = {a.name: a.settings.mode for a in exp.arms}
    assert res.recs and all(m["arm"] == exp.names[exp.arm_of(m["user_id"])] for m in res.recs)
    assert all(m["mode"] == modes[m["arm"]] for m in res.recs)
    users = sorted({e.user_id for e in events})
    share = sum(exp.arm_of(u) == 0 for u in users) / len(users)
    assert {m["user_id"] for m in res.recs} == set(users)
    assert abs(share - 0.5) <= 0.02, share
    # the final lists are the single-process model's with each arm's settings
    model = exact_model(catalog, events, cfg)
    final = {m["user_id"]: m for m in res.recs if m["trigger"] == "final"}
    assert set(final) == set(users)
    for user in users:
        arm = exp.arms[exp.arm_of(user)]
        want = M.render(model, X.rank_as(model, arm.settings, [user]))[0]
        assert [(it["item_id"], it["score"], it["reason"]) for it in final[user]["items"]] == \
            [(i, round(s, 6), r) for i, s, r in want], user
    # the summaries' sums per arm equal the recomputation from the events and the served lists
    want_totals = recompute(events, res.recs, cfg["model"]["top_n"], exp)
    got: dict[str, dict[str, Any]] = {name: defaultdict(int) for name in exp.names}
    last: dict[str, dict[str, Any]] = {}
    for s in res.experiments:
        assert s["experiment"] == "demo"
        for key in ("events", "hits", "ndcg", "lists", "age_sum_ms"):
            got[s["arm"]][key] += s[key]
        got[s["arm"]]["age_max_ms"] = max(got[s["arm"]]["age_max_ms"], s["age_max_ms"])
        last[s["arm"]] = s["totals"]
    for name in exp.names:
        w, g = want_totals[name], got[name]
        assert w["events"] > 100 and w["hits"] > 0 and w["lists"] > 100, (name, w)  # lists were served between events
        assert {k: g[k] for k in ("events", "hits", "lists", "age_sum_ms", "age_max_ms")} == \
            {k: w[k] for k in ("events", "hits", "lists", "age_sum_ms", "age_max_ms")}, name
        assert g["ndcg"] == pytest.approx(w["ndcg"], rel=1e-9)
        assert {k: last[name][k] for k in ("events", "hits", "lists")} == {k: w[k] for k in ("events", "hits", "lists")}
