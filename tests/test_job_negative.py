"""Negative feedback in the Flink job (mini-cluster, in-memory events and catalog), at parallelism 1 and 2.

u1 dislikes x and hides d (tests/reference.py's hand-worked fixture), then engages d and others rate it: from the
window of the hide on, d is in none of u1's lists, in any mode, and u1's item-CF score of c is the hand answer
lowered by exactly ``dislike_weight`` · cos(x, c). The final lists equal the single-process model's. An unknown
type goes to the DLQ naming the field and value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flink_harness import event_json, run_pipeline
from reference import NEG_CATALOG, NEG_SCORE_C, NEG_SIM_XC, NEG_STREAM

from config import load_config
from core.v2 import model as M
from core.v2.settings import Settings
from udfs.events import Event

pytestmark = pytest.mark.flink

EXACT = ["model.hybrid.trending_half_life_s=null", "model.hybrid.trending_window_s=3600",
         "model.hybrid.trending_buckets=12", "model.hybrid.train_combiner=false", "model.hybrid.half_life_s=null",
         "model.hybrid.exclude_types=[]",  # engaged items stay recommendable: only the hide keeps d out
         "model.hybrid.dislike_weight=0.5", f"model.compare_modes=[{','.join(m for m in M.FUSION if m != 'weighted')}]"]
HIDE_TS = 20_000
# (user, item, weight, type, ts): the fixture, then u1's negative feedback, then later events that engage d
EVENTS: list[tuple[str, str, float, str, int]] = [
    *[(u, i, w, "rate", 1000 * (n + 1)) for n, (u, i, w) in enumerate(NEG_STREAM)],
    ("u1", "x", 1.0, "dislike", HIDE_TS), ("u1", "d", 1.0, "hide", HIDE_TS),
    ("u1", "d", 5.0, "purchase", 30_000), ("u3", "d", 5.0, "rate", 31_000), ("u4", "d", 4.0, "rate", 32_000),
    ("u1", "d", 5.0, "rate", 33_000),  # (no one who engaged c engages d: cos(d, c) stays 0)
]


def records() -> list[str]:
    out = [event_json(f"e{n:03d}", u, i, w, ts, t) for n, (u, i, w, t, ts) in enumerate(EVENTS)]
    out.insert(9, json.dumps({"event_id": "bad", "user_id": "u1", "item_id": "d", "type": "like", "ts": 21_000}))
    return out


def exact_model(keep: Callable[[tuple[str, str, float, str, int]], bool] = lambda e: True) -> M.State:
    """The single-process model with the job's settings after the events (those ``keep`` keeps), as one batch."""
    cfg = load_config(overrides=EXACT, env={})
    state = M.new_state(Settings.from_config(cfg["model"]))
    M.add_items(state, NEG_CATALOG)
    M.learn(state, M.Batch.of([Event(f"e{n:03d}", u, i, t, w, ts) for n, (u, i, w, t, ts) in enumerate(EVENTS)
                               if keep((u, i, w, t, ts))]))
    return state


def lists(msg: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {msg["mode"]: msg["items"], **msg.get("alternatives", {})}


@pytest.mark.parametrize("parallelism", [1, 2])
def test_hidden_item_never_reappears_and_dislike_lowers_its_neighbours(parallelism: int) -> None:
    res = run_pipeline(records(), parallelism, EXACT, catalog=[json.dumps(r) for r in NEG_CATALOG])
    mine = [m for m in res.recs if m["user_id"] == "u1"]
    after = [m for m in mine if m["event_ts"] >= HIDE_TS]
    assert any(m["trigger"] == "final" for m in after)
    for msg in after:  # from the window of the hide on, whatever u1 and the others did with d later
        for mode, items in lists(msg).items():
            assert "d" not in [it["item_id"] for it in items], (msg["event_ts"], mode)
            assert "x" not in [it["item_id"] for it in items], (msg["event_ts"], mode)
    # without the negative feedback, u1 would get x and d (a later purchase does not bring d back)
    free = exact_model(lambda e: e[3] not in ("dislike", "hide"))
    assert {"x", "d"} <= {i for i, _, _ in M.render(free, M.rank(free, ["u1"], "weighted"))[0]}
    final = next(m for m in after if m["trigger"] == "final")
    c = next(it for it in lists(final)["itemcf"] if it["item_id"] == "c")
    assert c["score"] == pytest.approx(NEG_SCORE_C - 0.5 * NEG_SIM_XC, abs=1e-6)  # the message rounds to 6 places
    assert c["reason"] == "because you rated Alpha"
    # every user's final lists are the single-process model's, in every mode
    model = exact_model()
    finals = {m["user_id"]: m for m in res.recs if m["trigger"] == "final"}
    assert set(finals) == {"u1", "u2", "u3", "u4", "u5"}
    for user, msg in finals.items():
        for mode, items in lists(msg).items():
            want = M.render(model, M.rank(model, [user], mode, n=len(items)))[0]
            assert [(it["item_id"], it["score"], it["reason"]) for it in items] == \
                [(i, round(s, 6), r) for i, s, r in want], (user, mode)
    assert [(d["reason"], "type 'like'" in d["error"]) for d in res.dlq] == [("unknown_type", True)]
