"""core.v2.session: a session ranked from the published item side (neighbour lists, trending, catalog) equals
core.v2.model.rank of a user whose events are the session's (negative feedback among them), in every session
mode."""

from __future__ import annotations

from typing import Any

import pytest

from core.v2 import model as M
from core.v2.session import SESSION_MODES, Live, published_trending, session_mode, session_settings
from core.v2.settings import Settings
from serving.testing import fake_catalog, fake_events
from udfs.events import Event

WEIGHTS = {"view": 1.0, "click": 2.0, "cart": 3.0, "purchase": 5.0, "dislike": 1.0, "hide": 1.0}


def stream(seed: int, n: int, users: int, items: int) -> list[Event]:
    """Mixed event types, negative feedback too, a few re-engagements, some equal times."""
    return fake_events(seed, n, users, items, WEIGHTS)


def published(settings: Settings, events: list[Event], catalog: list[dict[str, Any]]) -> tuple[M.State, Live]:
    """The core learned on ``events`` (session settings) and a Live fed what the job publishes of it."""
    state = M.new_state(settings)
    M.add_items(state, catalog)
    M.learn(state, M.Batch.of(events))
    M.refresh(state, all_rows=True)
    live = Live(settings)
    live.set_catalog(catalog)
    live.set_trending(published_trending(state, settings.trending_size))  # as the job writes rec:trending
    live.set_neighbors({item: M.neighbors(state, item) for item in state.items.names})
    return state, live


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("mode", SESSION_MODES)
def test_session_equals_core_rank_of_the_same_events(seed: int, mode: str) -> None:
    settings = session_settings(Settings(trending_half_life_s=None))  # window counts: published exactly
    catalog = fake_catalog(120, seed=seed)
    events = stream(seed, 3000, users=80, items=150)  # items 121..150 are not in the catalog
    state, live = published(settings, events, catalog)
    by_user: dict[str, list[Event]] = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e)
    users = sorted(by_user, key=lambda u: len(by_user[u]))
    for user in users[:: max(1, len(users) // 12)]:
        want = M.render(state, M.rank(state, [user], mode, n=30))[0]
        got = live.rank(by_user[user], mode, 30)
        assert [(i, r) for i, _, r in got.items] == [(i, r) for i, _, r in want], (user, mode)
        assert [s for _, s, _ in got.items] == pytest.approx([s for _, s, _ in want], abs=1e-9)
        assert got.used == list(dict.fromkeys(e.item_id for e in by_user[user]))
        hidden = {e.item_id for e in by_user[user] if e.type in ("dislike", "hide")}
        assert not hidden & {i for i, _, _ in got.items}, (user, mode)
        assert live.rank(by_user[user], mode, 30) == got  # again: a session leaves nothing behind


@pytest.mark.parametrize("history_cap", [0, 5])
def test_long_and_short_sessions_in_turn_equal_the_core(history_cap: int) -> None:
    """Sessions longer than the reused user side (which then grows), with the whole history (``history_cap`` 0) or a
    short one, and short sessions after long ones: each equals the core's rank of its user."""
    settings = session_settings(Settings(trending_half_life_s=None, history_cap=history_cap))
    catalog = fake_catalog(80, seed=7)
    events = stream(7, 3000, users=15, items=90)
    state, live = published(settings, events, catalog)
    by_user: dict[str, list[Event]] = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e)
    users = sorted(by_user, key=lambda u: (len(by_user[u]), u))
    assert len(by_user[users[-1]]) > 100
    for user in [users[0], users[-1], users[1], users[-2], users[0]]:
        want = M.render(state, M.rank(state, [user], "weighted", n=20))[0]
        got = live.rank(by_user[user], "weighted", 20).items
        assert [(i, r) for i, _, r in got] == [(i, r) for i, _, r in want], user
        assert [sc for _, sc, _ in got] == pytest.approx([sc for _, sc, _ in want], abs=1e-9)


def test_decayed_trending_published_rounded_gives_the_same_items() -> None:
    settings = session_settings(Settings())  # decayed trending and history
    catalog = fake_catalog(100, seed=5)
    events = stream(5, 2000, users=50, items=100)
    state, live = published(settings, events, catalog)
    for user in ("u1", "u2", "u3", "u7"):
        mine = [e for e in events if e.user_id == user]
        want = M.render(state, M.rank(state, [user], "weighted", n=20))[0]
        got = live.rank(mine, "weighted", 20).items
        assert [(i, r) for i, _, r in got] == [(i, r) for i, _, r in want]
        assert [s for _, s, _ in got] == pytest.approx([s for _, s, _ in want], abs=1e-6)


def test_no_events_is_the_trending_list_and_modes_map() -> None:
    live = Live(Settings())
    live.set_catalog(fake_catalog(10))
    live.set_trending([("3", 5.0), ("1", 2.0)])
    got = live.rank([], None, 5)
    assert got.items == [("3", 5.0, "trending"), ("1", 2.0, "trending")] and got.used == []
    assert session_mode("learned") == "weighted" and session_mode("usercf") == "weighted"
    assert "usercf" not in live.settings.methods and live.settings.content_search == "catalog"
    with pytest.raises(ValueError, match="mode 'usercf'"):
        live.rank([], "usercf", 5)


def test_lists_change_between_sessions_and_the_catalog_can_be_replaced() -> None:
    live = Live(Settings())
    live.set_catalog(fake_catalog(10))
    live.set_neighbors({"1": [("2", 0.9), ("3", 0.5)]})
    e = [Event("1", "x", "1", "view", 1.0, 1000)]
    assert [i for i, _, _ in live.rank(e, "itemcf", 2).items] == ["2", "3"]
    live.set_neighbors({"1": [("4", 0.7)]})
    assert [i for i, _, _ in live.rank(e, "itemcf", 1).items] == ["4"]
    live.set_catalog(fake_catalog(12, seed=3))  # the lists stay
    first = live.rank(e, "itemcf", 1).items[0]
    assert first[0] == "4" and first[2].startswith("because you viewed ")


def test_withdrawn_and_expired_items_are_not_recommended_to_a_session() -> None:
    """The catalog's lifecycle as the core applies it: a withdrawn item is never a session candidate (equal to the
    core's rank of a user with the same events and catalog); an item that expires is one only while the session's
    newest event is before its ``expires_at``."""
    settings = session_settings(Settings(trending_half_life_s=None))
    events = stream(3, 2000, users=40, items=60)
    user = max({e.user_id for e in events}, key=lambda u: sum(e.user_id == u for e in events))
    mine = [e for e in events if e.user_id == user]
    base = fake_catalog(60, seed=3)
    plain, _ = published(settings, events, base)
    top = [i for i, _, _ in M.render(plain, M.rank(plain, [user], "weighted", n=10))[0]]
    withdrawn, expiring = top[0], top[1]
    cutoff = events[-1].ts + 60_000  # after the published model's clock
    catalog = [dict(r, available=False) if r["item_id"] == withdrawn else
               dict(r, expires_at=cutoff) if r["item_id"] == expiring else r for r in base]
    state, live = published(settings, events, catalog)
    got = [i for i, _, _ in live.rank(mine, "weighted", 10).items]
    assert withdrawn not in got and expiring in got
    assert got == [i for i, _, _ in M.render(state, M.rank(state, [user], "weighted", n=10))[0]]
    later = [*mine, mine[-1]._replace(event_id="late", item_id=mine[0].item_id, ts=cutoff)]
    got_later = [i for i, _, _ in live.rank(later, "weighted", 10).items]  # the session's clock reaches the cut
    assert withdrawn not in got_later and expiring not in got_later and len(got_later) == 10
