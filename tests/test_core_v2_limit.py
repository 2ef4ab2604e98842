"""bench.core_limit: the windowed single-process driver learns every event and ranks each window's users once."""

from __future__ import annotations

from bench.core_limit import run
from core.v2.settings import Settings
from udfs.events import Event


def test_windows_learn_every_event_and_rank_each_acting_user_once_per_window() -> None:
    users = ["a", "b", "a", "c", "c", "c", "b", "d", "a", "a"]
    events = [Event(f"e{k}", u, f"i{k % 4}", "rate", 1.0 + k % 5, 1000 * k) for k, u in enumerate(users)]
    catalog = [{"item_id": f"i{k}", "title": "", "year": 2000, "genres": ["Drama"]} for k in range(4)]
    res = run(events, Settings(), window_events=4, render=True, catalog=catalog)
    # windows: [a b a c] [c c b d] [a a] -> 3 + 3 + 1 rankings
    assert (res["events"], res["windows"], res["ranks"], res["users"], res["items"]) == (10, 3, 7, 4, 4)
    assert res["events_per_s"] > 0 and res["mode"] == "weighted"
