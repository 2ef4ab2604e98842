"""``python -m evaluation`` on core.v2: the prequential replay of every mode through the runner, and the bounds
protocol's measures of the model's state."""

from __future__ import annotations

from config import load_config
from core.v2 import model as M
from evaluation.runner import ARMS, FUSION_ARMS, BoundRow, Options, Task, run_task
from ingest.movielens import load_events


def test_prequential_scores_every_mode_on_the_same_events_and_reports_the_combiner() -> None:
    opts = Options(model_cfg=load_config(None, [])["model"], limit=3000, sample_every=3)
    res = run_task(Task("prequential", "prequential", 3000), opts)
    assert set(res["metrics"]) == set(ARMS) == set(M.FUSION)
    assert res["n_scored"] > 500 and all(len(h) == res["n_scored"] for h in res["hits"].values())
    for arm in ARMS:
        assert 0.0 <= res["metrics"][arm]["HR"] <= 1.0
    assert all(res["metrics"][a]["HR"] > res["metrics"]["popular"]["HR"] for a in FUSION_ARMS)
    # the combiner trained in the stream (recommend-then-learn), and the settings it ran with
    assert res["combiner"]["examples"] > 0 and set(res["combiner"]["weights"]) == {*M.FEATURES, "bias"}
    assert res["model"]["history_cap"] == opts.model_cfg["history_cap"]
    assert res["model"]["fusion_weights"] == opts.model_cfg["hybrid"]["fusion_weights"]
    again = run_task(Task("prequential", "prequential", 3000), opts)
    assert again["metrics"] == res["metrics"] and again["combiner"] == res["combiner"]  # same input, same output


def test_bounds_tasks_measure_the_item_cf_state() -> None:
    opts = Options(model_cfg={**load_config()["model"], "top_k": 20}, limit=3000, sample_every=5)  # row_cap 20 allowed
    events = load_events(limit=3000)
    pairs: dict[str, set[str]] = {}
    for e in events:
        pairs.setdefault(e.user_id, set()).add(e.item_id)
    capped = run_task(Task("capped", "bounds", 3000, {"history_cap": 5, "half_life_s": None, "row_cap": 0},
                           "itemcf"), opts)
    exact = run_task(Task("exact", "bounds", 3000, {"history_cap": 0, "half_life_s": None, "row_cap": 0}, "itemcf"),
                     opts)
    pruned = run_task(Task("pruned", "bounds", 3000, {"history_cap": 0, "half_life_s": None, "row_cap": 20},
                           "itemcf", (BoundRow("itemcf row_cap=20", "model.row_cap", 20, 0),)), opts)
    # recent items kept: each user's distinct items, at most 5 of them with the cap
    assert exact["kept"] == sum(len(items) for items in pairs.values())
    assert capped["kept"] == sum(min(len(items), 5) for items in pairs.values())
    assert capped["pairs"] < exact["pairs"] and exact["pruned"] == capped["pruned"] == 0
    assert pruned["pruned"] > 0 and pruned["pairs"] < exact["pairs"]
    assert set(exact["metrics"]) == {"itemcf"} and exact["settings"]["history_cap"] == 0
    assert pruned["settings"]["row_cap"] == 20 and pruned["rows"][0]["label"] == "itemcf row_cap=20"
