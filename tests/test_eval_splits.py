"""The offline splits have their stated properties, on MovieLens-100K and on small hand-made streams."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from evaluation.protocols import Split, leave_last_out, random_split, train_size, user_temporal_split
from ingest.movielens import load_events
from udfs.events import Event


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return load_events()


def _order(e: Event) -> tuple[int, str]:
    return (e.ts, e.event_id)


def _check_partition(events: list[Event], split: Split) -> None:
    """Disjoint, nothing lost, and each part keeps the order of the events given."""
    train_ids = [e.event_id for e in split.train]
    test_ids = [e.event_id for e in split.test]
    assert not set(train_ids) & set(test_ids)
    assert sorted(train_ids + test_ids) == sorted(e.event_id for e in events)
    position = {e.event_id: p for p, e in enumerate(events)}
    for part in (train_ids, test_ids):
        assert [position[i] for i in part] == sorted(position[i] for i in part)


def test_train_size_rounds_half_up_and_keeps_both_sides() -> None:
    assert [train_size(n, 0.75) for n in (0, 1, 2, 3, 4, 5, 6, 20, 21)] == [0, 1, 1, 2, 3, 4, 5, 15, 16]
    assert train_size(2, 0.99) == 1 and train_size(10, 0.01) == 1  # at least one event on each side
    assert train_size(10, 0.8) == 8 and train_size(5, 0.8) == 4


def test_random_split_is_per_user_75_25_and_seeded(events: list[Event]) -> None:
    split = random_split(events, 0.75, seed=0)
    _check_partition(events, split)
    n = Counter(e.user_id for e in events)
    n_train = Counter(e.user_id for e in split.train)
    n_test = Counter(e.user_id for e in split.test)
    assert set(n_train) == set(n_test) == set(n)  # every user on both sides (MovieLens: >= 20 events each)
    for user, total in n.items():
        assert n_train[user] == train_size(total, 0.75)
        assert abs(n_train[user] - 0.75 * total) <= 0.5
    assert len(split.test) == 24_886  # 25% of 100,000 within each user's rounding
    again = random_split(events, 0.75, seed=0)
    assert again == split
    other = random_split(events, 0.75, seed=1)
    assert other.test != split.test and len(other.test) == len(split.test)


def test_temporal_split_holds_out_each_users_last_20_percent(events: list[Event]) -> None:
    split = user_temporal_split(events, 0.2)
    _check_partition(events, split)
    train_by: dict[str, list[Event]] = {}
    test_by: dict[str, list[Event]] = {}
    for e in split.train:
        train_by.setdefault(e.user_id, []).append(e)
    for e in split.test:
        test_by.setdefault(e.user_id, []).append(e)
    assert set(test_by) <= set(train_by)  # every test user has training history
    assert len(test_by) == 943
    for user, test in test_by.items():
        train = train_by[user]
        total = len(train) + len(test)
        assert len(test) == total - train_size(total, 0.8)
        assert abs(len(test) - 0.2 * total) <= 0.5
        assert max(map(_order, train)) < min(map(_order, test))  # no test event before a training event of theirs
    assert len(split.test) == 20_000


def test_leave_last_out_holds_out_one_last_event_per_user(events: list[Event]) -> None:
    split = leave_last_out(events)
    _check_partition(events, split)
    assert Counter(e.user_id for e in split.test) == Counter({u: 1 for u in {e.user_id for e in events}})
    last: dict[str, Event] = {}
    for e in events:
        if e.user_id not in last or _order(e) > _order(last[e.user_id]):
            last[e.user_id] = e
    assert {e.user_id: e for e in split.test} == last
    assert len(split.train) == len(events) - 943


def test_small_streams_ties_and_single_events() -> None:
    def ev(n: int, user: str, ts: int) -> Event:
        return Event(f"e{n:02d}", user, f"i{n}", "rate", 4.0, ts)

    # u1: five events, two at the last time stamp (the event id breaks the tie); u2: one event (training only)
    stream = [ev(1, "u1", 10), ev(2, "u2", 15), ev(3, "u1", 20), ev(5, "u1", 30), ev(4, "u1", 30), ev(6, "u1", 25)]
    loo = leave_last_out(stream)
    assert [e.event_id for e in loo.test] == ["e05"]
    temporal = user_temporal_split(stream, 0.4)  # u1: 5 events, 3 in training
    assert sorted(e.event_id for e in temporal.test) == ["e04", "e05"]
    assert [e.event_id for e in temporal.train] == ["e01", "e02", "e03", "e06"]
    rnd = random_split(stream, 0.75, seed=3)
    assert "e02" in {e.event_id for e in rnd.train}  # a single event stays in training
    assert sum(e.user_id == "u1" for e in rnd.train) == 4


@pytest.mark.parametrize(("call", "message"), [
    (lambda: random_split([], 1.0), "train_frac 1.0 must be between 0 and 1"),
    (lambda: random_split([], 0), "train_frac 0 must be between 0 and 1"),
    (lambda: user_temporal_split([], -0.2), "test_frac -0.2 must be between 0 and 1"),
])
def test_bad_fractions_are_named(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
