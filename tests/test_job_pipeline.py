"""The recommendation job in the PyFlink mini-cluster (in-memory source, collected outputs).

Every stream test runs at parallelism 1 and 2: the model state must not depend on it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from flink_harness import event_json, run_pipeline
from reference import batch_cosine

from ingest.movielens import load_events
from udfs.dlq import original_bytes
from udfs.events import event_to_json

pytestmark = pytest.mark.flink

K = 20


@pytest.mark.parametrize("parallelism", [1, 2])
def test_known_answer_fixture(parallelism: int) -> None:
    # a and b agree on x and y; b also liked z (a little); c has only seen x (5).
    # norms: x 25+16+25=66, y 16+25=41, z 1; C[x][y]=5*4+4*5=40, C[x][z]=4, C[y][z]=5, so
    # cos(x,y)=40/sqrt(66*41)~0.769, cos(x,z)=4/sqrt(66)~0.492, cos(y,z)=5/sqrt(41)~0.781.
    rows = [("a", "x", 5), ("a", "y", 4), ("b", "x", 4), ("b", "y", 5), ("b", "z", 1), ("c", "x", 5)]
    events = [event_json(f"e{n}", u, i, w, 1000 + n) for n, (u, i, w) in enumerate(rows)]
    res = run_pipeline(events, parallelism, overrides=["model.hybrid.mode=itemcf"])
    cxy, cxz, cyz = 40 / math.sqrt(66 * 41), 4 / math.sqrt(66), 5 / math.sqrt(41)
    assert res.neighbors["x"] == [("y", pytest.approx(cxy)), ("z", pytest.approx(cxz))]
    assert res.neighbors["y"] == [("z", pytest.approx(cyz)), ("x", pytest.approx(cxy))]
    assert res.neighbors["z"] == [("y", pytest.approx(cyz)), ("x", pytest.approx(cxz))]
    latest = res.latest_recs()
    # c saw x: y scores 5*cos(x,y)~3.84, z scores 5*cos(x,z)~2.46; both because of x
    assert [(it["item_id"], it["reason"]) for it in latest["c"]["items"]] == [("y", "because you rated x"),
                                                                              ("z", "because you rated x")]
    assert [it["score"] for it in latest["c"]["items"]] == pytest.approx([5 * cxy, 5 * cxz], rel=1e-5)
    # a saw x and y: only z is left; b saw everything and gets nothing (no unseen item exists)
    assert [it["item_id"] for it in latest["a"]["items"]] == ["z"]
    assert latest["b"]["items"] == []
    assert latest["c"]["event_id"] == "e5" and latest["c"]["history_size"] == 1
    assert res.counts == {"x": 3, "y": 2, "z": 1}
    assert res.dlq == []


def movielens_prefix(n: int) -> list[tuple[str, str, str, float, int]]:
    return [(e.event_id, e.user_id, e.item_id, e.weight, e.ts) for e in load_events(limit=n)]


@pytest.fixture(scope="module")
def prefix_with_rerates() -> list[str]:
    """The first 20,000 MovieLens ratings, with every 50th (user, item) re-rated later to a new value."""
    rows = movielens_prefix(20000)
    rerates = [(f"re-{eid}", u, i, 6.0 - w if w != 3.0 else 1.0, ts + 1) for eid, u, i, w, ts in rows[::50]]
    # interleave the re-ratings 1,000 events after the original
    out = [event_to_json_row(r) for r in rows]
    for k, r in enumerate(rerates):
        out.insert(min(len(out), k * 51 + 1000), event_to_json_row(r))
    return out


def event_to_json_row(r: tuple[str, str, str, float, int]) -> str:
    return event_json(*r)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_cosines_equal_batch_recompute_on_movielens(prefix_with_rerates: list[str], parallelism: int) -> None:
    res = run_pipeline(prefix_with_rerates, parallelism, overrides=["model.history_cap=0", f"model.top_k={K}"])
    triples = []
    for raw in prefix_with_rerates:
        e = json.loads(raw)
        triples.append((e["user_id"], e["item_id"], float(e["value"])))
    index, cos, _ = batch_cosine(triples)
    names = sorted(index, key=index.__getitem__)
    assert set(res.neighbors) == {i for i in index if np.count_nonzero(cos[index[i]] > 0) > 1}
    checked = 0
    for item, nbrs in res.neighbors.items():
        row = cos[index[item]].copy()
        row[index[item]] = 0.0
        expected = sorted((-row[j], names[j]) for j in np.flatnonzero(row > 0))[:K]
        assert len(nbrs) == len(expected)
        for b, sim in nbrs:  # every stored cosine equals the batch value
            assert sim == pytest.approx(row[index[b]], rel=1e-6)
            checked += 1
        # and the stored list is the top-K (ties may order differently only among equal values)
        assert [s for _, s in nbrs] == pytest.approx([-s for s, _ in expected], rel=1e-6)
    assert checked > 20000


@pytest.mark.parametrize("parallelism", [1, 2])
def test_malformed_records_go_to_the_dlq_and_good_ones_are_processed(parallelism: int) -> None:
    good = [event_json(f"g{n}", u, i, w, 1000 + n)
            for n, (u, i, w) in enumerate([("a", "x", 5), ("a", "y", 4), ("b", "x", 4), ("b", "y", 5)])]
    bad = {
        "not json": "bad_json",
        '{"event_id": "m1", "user_id": "a", "type": "rate", "value": 3, "ts": 5}': "missing_field",
        '{"event_id": "m2", "user_id": "a", "item_id": "x", "type": "rate", "value": "3", "ts": 5}': "wrong_type",
        '{"event_id": "m3", "user_id": "a", "item_id": "x", "type": "like", "value": 3, "ts": 5}': "unknown_type",
        '{"event_id": "m4", "user_id": "a", "item_id": "x", "type": "rate", "value": 9, "ts": 5}':
            "rating_out_of_range",
        '{"event_id": "m5", "user_id": "a", "item_id": "x", "type": "rate", "value": NaN, "ts": 5}': "bad_number",
    }
    stream = [good[0], *list(bad)[:3], good[1], good[2], *list(bad)[3:], good[3]]
    res = run_pipeline(stream, parallelism)
    assert sorted(((original_bytes(d) or b"").decode(), d["reason"]) for d in res.dlq) == sorted(bad.items())
    assert all(d["error"] for d in res.dlq)
    assert res.neighbors["x"] == [("y", pytest.approx(40 / 41))]  # norms x: 25+16, y: 16+25; C = 40
    assert res.counts == {"x": 2, "y": 2}


def test_event_to_json_is_what_the_pipeline_reads() -> None:
    (ev,) = load_events(limit=1)
    assert json.loads(event_to_json(ev))["event_id"] == ev.event_id
