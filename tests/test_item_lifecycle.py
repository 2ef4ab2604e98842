"""The item lifecycle from the catalog topic (issue #26, item 2): a record with ``available: false`` withdraws an
item, one with ``expires_at`` expires it at that event time, a tombstone deletes it; a gone item is never a
candidate nor a neighbour, the lists that held it are recomputed, and it comes back when made available again.

The core (:mod:`core.v2.model`) against models that never knew the item or never lost it, exactly; the catalog
records' validation and the tombstone's parsing; and the real intake and model operators under the stand-in for Flink
of ``tests/test_model_shards.py``, window by window: within the first timer after a withdrawal (or the event that
reaches ``expires_at``) no list of a user and no neighbour list written holds the item, at p=1, 2 and 4.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from test_model_shards import ASSIGNMENTS, OUT_OF_ORDERNESS_MS, SHARDS, Job

from core.v2 import model as M
from core.v2.settings import Settings
from operators.parse import DLQ_TAG, ParseCatalog, tombstone_item
from operators.records import CatalogDelete, CatalogUpdate, ItemLists, RecsBatch, pack, unpack
from udfs.catalog import parse_catalog, validate_record
from udfs.events import Event
from udfs.shard import shard_of

GENRES = ["Comedy", "Drama", "Western", "Action"]
EXACT = Settings(half_life_s=None, trending_half_life_s=None, trending_window_s=3600.0, trending_buckets=12,
                 train_combiner=False, top_n=10)


def catalog(n_items: int = 80) -> list[dict[str, Any]]:
    return [{"item_id": f"i{k}", "title": f"Item {k}", "year": 1990 + k % 10, "genres": [GENRES[k % 4]],
             "position": k} for k in range(n_items)]


def stream(n: int = 900, seed: int = 3, users: int = 40, t0: int = 1_000_000) -> list[Event]:
    rng = random.Random(seed)
    out, ts = [], t0
    for e in range(n):
        ts += rng.randrange(1, 2000)
        item = f"i{min(int(rng.paretovariate(0.9)) - 1, 79)}"
        out.append(Event(f"e{e}", f"u{rng.randrange(users)}", item, "rate", float(rng.randrange(1, 6)), ts))
    return out


def popular(events: Sequence[Event], settings: Settings | None = None) -> str:
    """The item in most users' lists (top 10, weighted) after ``events``."""
    state = model(settings or EXACT, catalog(), events)
    counts: dict[str, int] = {}
    for row in lists(state, sorted({e.user_id for e in events}), "weighted", n=10):
        for item, _ in row:
            counts[item] = counts.get(item, 0) + 1
    return max(sorted(counts), key=counts.__getitem__)


def lists(state: M.State, users: Sequence[str], mode: str | None = None, n: int = 20) -> list[list[tuple[str, float]]]:
    return [[(i, s) for i, s, _ in row] for row in M.render(state, M.rank(state, list(users), mode, n=n))]


def all_neighbors(state: M.State) -> dict[str, list[tuple[str, float]]]:
    return {item: M.neighbors(state, item) for item in state.items.names}


def model(settings: Settings, records: Sequence[dict[str, Any]], events: Sequence[Event], cut: int = 0) -> M.State:
    state = M.new_state(settings)
    M.add_items(state, records)
    if cut:
        for start in range(0, len(events), cut):
            M.learn(state, M.Batch.of(events[start:start + cut]), train=settings.train_combiner)
    else:
        M.learn(state, M.Batch.of(events), train=settings.train_combiner)
    return state


# -- the core ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["itemcf", "usercf", "content", "popular", "weighted"])
def test_a_withdrawn_item_is_no_candidate_nor_neighbour_and_comes_back(mode: str) -> None:
    events = stream()
    x = popular(events)
    users = sorted({e.user_id for e in events})
    state = model(EXACT, catalog(), events)
    before_lists, before_nb = lists(state, users, mode), all_neighbors(state)
    assert any(x in [i for i, _ in row] for row in before_lists) or mode == "content"
    assert any(x in [j for j, _ in nb] for nb in before_nb.values())

    M.add_items(state, [{**catalog()[int(x[1:])], "available": False, "position": 100}])
    assert state.gone[state.items.get(x)]
    after = lists(state, users, mode)
    assert all(x not in [i for i, _ in row] for row in after)
    nb = all_neighbors(state)
    assert all(x not in [j for j, _ in lst] for lst in nb.values())
    # the neighbour lists are recomputed exactly: those of a model where the item's column never counted
    for item, lst in nb.items():
        want = [(j, s) for j, s in before_nb[item] if j != x]
        assert [j for j, _ in lst[: len(want)]] == [j for j, _ in want], item
        assert len(lst) == min(EXACT.top_k, len(lst))
    # the item's own list stays (its raters' history is history) and the trending list leaves it out
    assert M.neighbors(state, x) == before_nb[x]
    assert x not in [state.items.names[i] for i in M.trending(state)[0]]

    M.add_items(state, [{**catalog()[int(x[1:])], "available": True, "position": 101}])
    assert lists(state, users, mode) == before_lists
    assert all_neighbors(state) == before_nb


def test_withdrawn_lists_equal_a_model_whose_rows_never_listed_the_item() -> None:
    """Every neighbour list after a withdrawal: the exact top-K of the sums without the item's column."""
    events = stream()
    x = popular(events)
    state = model(EXACT.replace(top_k=5), catalog(), events)
    M.add_items(state, [{"item_id": x, "title": "x", "available": False, "position": 99}])
    wide = model(EXACT.replace(top_k=40), catalog(), events)
    for item in state.items.names:
        want = [(j, s) for j, s in M.neighbors(wide, item) if j != x][:5]
        got = M.neighbors(state, item)
        assert [j for j, _ in got] == [j for j, _ in want], item
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-12)


@pytest.mark.parametrize("cut", [1, 7, 50])
def test_an_item_expires_at_its_event_time_whatever_the_batches(cut: int) -> None:
    """With the learned combiner trained in the stream: an item that expires mid-stream is gone for every ranking
    (training ones too) after the first event at or past ``expires_at``, however the events are batched."""
    events = stream(600)
    x = popular(events[:300])
    t = events[300].ts
    settings = Settings(combiner_sample=1.0, combiner_warmup=0)
    records = catalog()
    records[int(x[1:])] = {**records[int(x[1:])], "expires_at": t}
    users = sorted({e.user_id for e in events})
    early = model(settings, records, events[:300])
    assert not early.gone[early.items.get(x)]
    assert any(x in [i for i, _ in row] for row in lists(early, users))
    once = model(settings, records, events)
    batched = model(settings, records, events, cut)
    for state in (once, batched):
        assert state.gone[state.items.get(x)]
        assert all(x not in [i for i, _ in row] for row in lists(state, users, "weighted"))
        assert all(x not in [j for j, _ in nb] for nb in all_neighbors(state).values())
    assert np.array_equal(once.comb, batched.comb)  # the combiner trained on the same candidates
    for mode in M.FUSION:
        assert lists(once, users, mode) == lists(batched, users, mode), mode
    # a later expiry brings it back (the catalog's record, placed later, wins)
    M.add_items(once, [{**records[int(x[1:])], "expires_at": None, "position": 500}])
    assert not once.gone[once.items.get(x)]


def test_the_record_placed_last_wins_whatever_the_arrival_order() -> None:
    events = stream()
    x = popular(events)
    base = catalog()
    rec = base[int(x[1:])]
    records = [{**rec, "available": False, "position": 40}, {**rec, "title": "Back", "position": 41}]
    in_order = model(EXACT, base, events)
    M.add_items(in_order, records)
    reordered = model(EXACT, base, events)
    M.add_items(reordered, records[::-1])
    deleted_late = model(EXACT, base, events)
    M.delete_items(deleted_late, [(x, 39)])  # placed before both: ignored once they are in
    M.add_items(deleted_late, records[::-1])
    M.delete_items(deleted_late, [(x, 39)])
    for state in (in_order, reordered, deleted_late):
        assert not state.gone[state.items.get(x)]
        assert state.titles[x] == "Back"
    users = sorted({e.user_id for e in events})
    assert lists(in_order, users) == lists(reordered, users) == lists(deleted_late, users)


def test_a_deleted_item_leaves_the_catalog_and_a_new_record_adds_it_again() -> None:
    events = stream()
    x = popular(events)
    users = sorted({e.user_id for e in events})
    state = model(EXACT, catalog(), events)
    before = lists(state, users, "content")
    M.delete_items(state, [(x, 50)])
    xi = state.items.get(x)
    assert state.gone[xi] and xi not in state.catalog
    assert all(x not in [i for i, _ in row] for row in lists(state, users))
    assert all(x not in [j for j, _ in nb] for nb in all_neighbors(state).values())
    # the content model is the catalog's without it: as a model whose catalog never had it, but its events
    never = model(EXACT, [r for r in catalog() if r["item_id"] != x], events)
    M.delete_items(never, [(x, 50)])
    assert lists(state, users, "content") == lists(never, users, "content")
    M.add_items(state, [{**catalog()[int(x[1:])], "position": 51}])
    assert lists(state, users, "content") == before


def test_a_catalog_published_again_changes_nothing() -> None:
    """Records equal to what their items have (the same catalog, written to the topic again) leave the model as it
    is: no catalog rebuild, no new version, the same lists; a record that differs still applies."""
    events = stream()
    state = model(Settings(top_n=10), catalog(), events)
    users = sorted({e.user_id for e in events})
    version, before = state.version, lists(state, users)
    state.content()
    M.add_items(state, [{**r, "position": 100 + r["position"]} for r in catalog()])
    assert (state.version, state.catalog_changed) == (version, False)
    assert lists(state, users) == before
    M.add_items(state, [{**catalog()[3], "genres": ["Western"], "position": 300}])
    assert state.version > version and state.catalog_changed


# -- the records -------------------------------------------------------------------------------------------------------
TOY = {"item_id": "1", "title": "Toy Story", "year": 1995, "genres": ["Comedy"]}


def test_lifecycle_fields_are_validated() -> None:
    assert validate_record(TOY) == TOY  # absent: not added
    assert parse_catalog(json.dumps({**TOY, "available": False, "expires_at": 1_700_000_000_000})) == \
        {**TOY, "available": False, "expires_at": 1_700_000_000_000}
    assert validate_record({**TOY, "expires_at": None})["expires_at"] is None


@pytest.mark.parametrize(("field", "value", "words"), [
    ("available", "false", "item 1: available must be true or false, got 'false'"),
    ("available", 0, "item 1: available must be true or false, got 0"),
    ("available", None, "item 1: available must be true or false, got None"),
    ("expires_at", 1.5e12, "item 1: expires_at must be null or integer epoch milliseconds in 0..4102444800000, "
                           "got 1500000000000.0"),
    ("expires_at", "2030-01-01", "got '2030-01-01'"),
    ("expires_at", True, "got True"),
    ("expires_at", -1, "got -1"),
    ("expires_at", 10**16, f"got {10**16}"),
])
def test_bad_lifecycle_fields_name_the_field_and_value(field: str, value: object, words: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_record({**TOY, field: value})
    assert words in str(info.value)


class Group:
    def add_group(self, name: str) -> Group:
        return self

    def counter(self, name: str) -> Group:
        return self

    def inc(self, n: int = 1) -> None:
        pass


class Context:
    def get_metrics_group(self) -> Group:
        return Group()


def parse(payload: str | None, origin: str) -> list[Any]:
    parser = ParseCatalog()
    parser.open(Context())  # type: ignore[arg-type]
    return list(parser.process_element((payload, origin), None))


def key_origin(key: bytes | None, offset: int = 7) -> str:
    return f"items 1 {offset}" + ("" if key is None else " " + base64.b64encode(key).decode())


def test_a_tombstone_is_a_delete_record_of_its_key() -> None:
    [out] = parse(None, key_origin(b"i-42"))
    assert unpack(out) == CatalogDelete("i-42", (7 << 16) | 1)
    [out] = parse(json.dumps({**TOY, "available": "no"}), key_origin(b"1"))
    assert out[0] is DLQ_TAG
    dead = json.loads(out[1])
    assert dead["reason"] == "bad_catalog_record" and "available must be true or false, got 'no'" in dead["error"]


@pytest.mark.parametrize(("origin", "words"), [
    (key_origin(None), "catalog tombstone (null value) without a key"),
    ("", "catalog tombstone (null value) without a key"),
    (key_origin(b"\xff\xfe"), "is not UTF-8"),
    (key_origin(b"a\x00b"), "catalog tombstone has a bad item_id 'a\\x00b': it has"),
    (key_origin(b" a"), "has surrounding white space"),
])
def test_a_tombstone_without_a_valid_item_key_goes_to_the_dlq(origin: str, words: str) -> None:
    with pytest.raises(ValueError) as info:
        tombstone_item(origin)
    assert words in str(info.value)
    [out] = parse(None, origin)
    assert out[0] is DLQ_TAG
    dead = json.loads(out[1])
    assert dead["reason"] == "bad_catalog_record" and words in dead["error"] and dead["payload_b64"] is None


# -- the operators, window by window -----------------------------------------------------------------------------------
class Run:
    """The intake and model subtasks of ``test_model_shards`` with every output kept: each user's messages and each
    item's written lists and removals, in order."""

    def __init__(self, settings: Settings, owner: dict[int, int], parallelism: int) -> None:
        self.job = Job(settings, owner, parallelism)
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.lists: dict[str, list[str] | None] = {}  # item -> its last written list (None: removed)
        self.job.collect = self.collect  # type: ignore[method-assign]

    def collect(self, task: Any, outputs: Any) -> None:
        for out in outputs:
            if isinstance(out, RecsBatch):
                for m in out.messages:
                    self.messages.setdefault(m["user_id"], []).append(m)
            else:
                lists: ItemLists = out[1]
                for item, nb in lists.neighbors.items():
                    self.lists[item] = [j for j, _ in nb]
                for item in lists.removed:
                    self.lists[item] = None

    def window(self, events: Sequence[Event]) -> None:
        self.job.window(events)
        self.job.advance(max(e.ts for e in events) - OUT_OF_ORDERNESS_MS - 1)

    def catalog(self, record: Any) -> None:
        self.job.broadcast(pack(0, record))

    def last(self) -> dict[str, list[str]]:
        return {u: [it["item_id"] for it in ms[-1]["items"]] for u, ms in self.messages.items()}


def holders(run: Run, x: str) -> set[str]:
    return {u for u, items in run.last().items() if x in items}


def listing(run: Run, x: str) -> set[str]:
    return {i for i, nb in run.lists.items() if nb and x in nb}


@pytest.mark.parametrize("name", ["p1", "flink-p2", "flink-p4-a-subtask-without-shards"])
def test_operators_withdraw_within_one_window_and_bring_back(name: str) -> None:
    owner, parallelism = ASSIGNMENTS[name]
    settings = Settings(history_cap=0, half_life_s=None, train_combiner=False)
    events = stream(1200, users=60)
    x = popular(events[:600])
    run = Run(settings, owner, parallelism)
    run.catalog(CatalogUpdate(catalog()))
    windows = [events[s:s + 40] for s in range(0, len(events), 40)]
    for w in windows[:15]:
        run.window(w)
    held = holders(run, x)
    assert len(held) >= 3 and listing(run, x), "the item must be in users' and items' lists before"
    version = {u: run.messages[u][-1]["event_id"] for u in held}

    run.catalog(CatalogUpdate([{**catalog()[int(x[1:])], "available": False, "position": 1000}]))
    run.window(windows[15])  # one window: every list re-ranked, not only filtered
    assert holders(run, x) == set()
    assert listing(run, x) == set() and run.lists[x] is None
    for user in held:
        msg = run.messages[user][-1]
        assert msg["trigger"] in ("catalog", "events")
        if msg["trigger"] == "catalog":  # no event of the user: the version of the last message, ranked again
            assert msg["event_id"] == version[user]
            assert len(msg["items"]) == settings.top_n  # a full list, not the old one filtered
    for w in windows[16:20]:
        run.window(w)
        assert holders(run, x) == set() and listing(run, x) == set()

    run.catalog(CatalogUpdate([{**catalog()[int(x[1:])], "available": True, "position": 1001}]))
    run.window(windows[20])
    # back: exactly the lists of one model that learned the same events and never lost it
    learned = [e for w in windows[:21] for e in w if e.ts <= max(e.ts for e in windows[20]) - OUT_OF_ORDERNESS_MS - 1]
    ref = M.new_state(settings)
    M.add_items(ref, catalog())
    M.learn(ref, M.Batch.of(learned))
    assert held & holders(run, x), "the users who lost it get it back"
    for user in held & holders(run, x):
        assert run.last()[user] == [i for i, _, _ in M.render(ref, M.rank(ref, [user]))[0]], user
    for item, nb in run.lists.items():
        if nb is not None and shard_of(item, SHARDS) in owner and (x in nb or item == x):
            assert nb == [j for j, _ in M.neighbors(ref, item)], item
    assert run.lists[x] == [j for j, _ in M.neighbors(ref, x)]


@pytest.mark.parametrize("name", ["p1", "flink-p2"])
def test_operators_expire_at_event_time_within_one_window(name: str) -> None:
    owner, parallelism = ASSIGNMENTS[name]
    settings = Settings(history_cap=0, half_life_s=None)
    events = stream(1200, users=60)
    x = popular(events[:600])
    windows = [events[s:s + 40] for s in range(0, len(events), 40)]
    t = windows[16][20].ts  # mid-window
    run = Run(settings, owner, parallelism)
    run.catalog(CatalogUpdate([{**r, "expires_at": t} if r["item_id"] == x else r for r in catalog()]))
    for w in windows[:16]:
        run.window(w)
    held = holders(run, x)
    assert len(held) >= 3 and listing(run, x)
    run.window(windows[16])  # the watermark has not reached t yet
    run.window(windows[17])  # it has: learned, the item expired, its lists re-ranked on the same timers
    assert max(e.ts for e in windows[17]) - OUT_OF_ORDERNESS_MS - 1 >= t
    assert holders(run, x) == set()
    assert listing(run, x) == set() and run.lists[x] is None
    triggers = {run.messages[u][-1]["trigger"] for u in held}
    assert triggers <= {"catalog", "events"} and "catalog" in triggers
