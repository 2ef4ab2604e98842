"""The synthetic generator and catalog, plus the pure helpers of the producer (bad records, pacing)."""

from __future__ import annotations

import inspect
import itertools
import json
import math
import tracemalloc
from collections import Counter

import numpy as np
import pytest

from ingest import producer, synthetic
from ingest.movielens import GENRES
from ingest.producer import BAD_KINDS, Pacer, Record, bad_records, interleave
from udfs.events import POSITIVE_TYPES, InvalidEvent, event_to_json, parse_event


def test_deterministic_for_a_seed() -> None:
    a = list(synthetic.generate(20_000, 300, 1_000, seed=42))
    b = list(synthetic.generate(20_000, 300, 1_000, seed=42))
    c = list(synthetic.generate(20_000, 300, 1_000, seed=43))
    assert a == b
    assert a != c
    assert [e.event_id for e in a[:2]] == ["syn42-1", "syn42-2"]


def test_chunk_size_does_not_change_the_stream() -> None:
    a = list(synthetic.generate(5_000, 100, 400, seed=1))
    assert list(synthetic.generate(5_000, 100, 400, seed=1, chunk_size=333)) == a
    assert list(synthetic.generate(5_000, 100, 400, seed=1, chunk_size=1)) == a
    assert list(synthetic.generate(2_000, 100, 400, seed=1)) == a[:2_000]  # a prefix is the shorter run


def test_shape_of_the_events() -> None:
    events = list(synthetic.generate(30_000, 500, 2_000, seed=3, start_ts=1_000_000, mean_gap_ms=50))
    assert len(events) == 30_000
    assert len({e.event_id for e in events}) == 30_000
    assert {int(e.user_id) for e in events} <= set(range(1, 501))
    assert {int(e.item_id) for e in events} <= set(range(1, 2_001))
    ts = [e.ts for e in events]
    assert ts == sorted(ts) and ts[0] >= 1_000_000
    assert 30_000 * 50 * 0.9 < ts[-1] - 1_000_000 < 30_000 * 50 * 1.1
    share = Counter(e.type for e in events)
    for etype, p in synthetic.DEFAULT_TYPE_MIX.items():
        assert abs(share[etype] / len(events) - p) < 0.015, etype
    ratings = [e.weight for e in events if e.type == "rate"]
    assert set(ratings) <= {1.0, 2.0, 3.0, 4.0, 5.0} and len(set(ratings)) == 5
    assert 3.0 < float(np.mean(ratings)) < 4.0
    assert {e.weight for e in events if e.type == "purchase"} == {5.0}
    for e in events[::101]:
        assert parse_event(event_to_json(e)) == e  # valid against the event schema


def test_item_popularity_follows_zipf() -> None:
    s = 1.1
    counts = Counter(e.item_id for e in synthetic.generate(300_000, 2_000, 2_000, zipf_s=s, seed=5))
    order = synthetic.popularity_order(2_000, seed=5)
    ranked = np.array([counts[i] for i in order[:100]], dtype=float)
    slope = np.polyfit(np.log(np.arange(1, 101)), np.log(ranked), 1)[0]
    assert -s - 0.15 < slope < -s + 0.15
    assert counts.most_common(1)[0][0] == order[0]
    assert set(order[:5]) != {"1", "2", "3", "4", "5"}  # ranks are permuted over the ids
    uniform = Counter(e.item_id for e in synthetic.generate(100_000, 50, 100, zipf_s=0.0, seed=5))
    assert max(uniform.values()) / min(uniform.values()) < 1.5


def test_user_activity_is_skewed() -> None:
    counts = Counter(e.user_id for e in synthetic.generate(100_000, 1_000, 500, seed=9))
    ordered = sorted(counts.values(), reverse=True)
    assert ordered[0] > 20 * ordered[len(ordered) // 2]


def test_type_mix_and_weights() -> None:
    events = list(synthetic.generate(2_000, 10, 10, type_mix={"view": 1, "click": 1}, weights={"view": 0.5,
                                                                                                "click": 2.5}))
    assert {e.type for e in events} == {"view", "click"}
    assert {e.weight for e in events if e.type == "view"} == {0.5}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_users": 0}, "n_users must be an integer >= 1"),
        ({"n_items": 0}, "n_items"),
        ({"n_events": -1}, "n_events"),
        ({"zipf_s": -1.0}, "Zipf exponent"),
        ({"zipf_s": math.nan}, "Zipf exponent"),
        ({"type_mix": {"like": 1.0}}, "unknown event type 'like'"),
        ({"type_mix": {"rate": -1.0}}, r"type_mix\['rate'\]"),
        ({"type_mix": {"rate": 0.0}}, "positive share"),
        ({"seed": -3}, "seed"),
        ({"start_ts": -1}, "start_ts"),
        ({"type_mix": {"view": 1.0}, "weights": {"click": 1.0}}, "no value for event type"),
    ],
)
def test_argument_errors_name_the_argument(kwargs: dict, message: str) -> None:
    args = {"n_events": 10, "n_users": 5, "n_items": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        list(synthetic.generate(**args))


def test_streams_without_materialising() -> None:
    gen = synthetic.generate(10**12, 1_000, 1_000, chunk_size=1_000)
    assert inspect.isgenerator(gen)
    assert len(list(itertools.islice(gen, 2_500))) == 2_500
    tracemalloc.start()
    try:
        n = sum(1 for _ in synthetic.generate(60_000, 10_000, 5_000, chunk_size=4_096))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 60_000
    assert peak < 6 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # the 60,000 events as a list would take ~17 MiB


def test_catalog() -> None:
    cat = synthetic.generate_catalog(3_000, seed=4)
    assert cat == synthetic.generate_catalog(3_000, seed=4)
    assert cat != synthetic.generate_catalog(3_000, seed=5)
    assert [c["item_id"] for c in cat] == [str(i) for i in range(1, 3_001)]
    assert len({c["title"] for c in cat}) == 3_000
    for c in cat:
        assert set(c) == {"item_id", "title", "year", "genres"}
        assert 1 <= len(c["genres"]) <= 3 and len(set(c["genres"])) == len(c["genres"])
        assert set(c["genres"]) <= set(GENRES)
        assert c["year"] is None or 1920 <= c["year"] <= 2024
    shares = Counter(g for c in cat for g in c["genres"])
    assert shares["Drama"] > shares["Film-Noir"]
    # the items of generate() with the same seed are catalog items
    assert {e.item_id for e in synthetic.generate(5_000, 50, 3_000, seed=4)} <= {c["item_id"] for c in cat}


# --- producer helpers (no Kafka needed) ----------------------------------------------------------------------------

def test_bad_records_are_rejected_for_the_announced_reason() -> None:
    recs = bad_records(len(BAD_KINDS) + 2)
    reasons = []
    for rec in recs:
        with pytest.raises(InvalidEvent) as info:
            parse_event(rec.value)
        reasons.append(info.value.reason)
    expected = list(BAD_KINDS.values())
    assert reasons == expected + expected[:2]
    assert recs[0].key == b"bad-1"
    assert b"NaN" in recs[list(BAD_KINDS).index("nan")].value


def test_interleave_spreads_extras_evenly() -> None:
    out = list(interleave(range(10), ["a", "b", "c", "d"], 10))
    assert [x for x in out if isinstance(x, int)] == list(range(10))
    assert [i for i, x in enumerate(out) if isinstance(x, str)] == [2, 5, 8, 11]
    assert list(interleave(range(3), ["a", "b"], 100)) == [0, 1, 2, "a", "b"]  # unreached places: at the end
    assert list(interleave([], ["a"], 0)) == ["a"]
    assert list(interleave(range(3), [], 3)) == [0, 1, 2]


class FakeClock:
    def __init__(self, send_cost: float, oversleep: float) -> None:
        self.now, self.send_cost, self.oversleep, self.sleeps = 100.0, send_cost, oversleep, 0

    def clock(self) -> float:
        self.now += self.send_cost  # every clock read stands for one send
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds + self.oversleep


@pytest.mark.parametrize(("rate", "send_cost"), [(1_000.0, 1e-5), (100_000.0, 1e-6), (50.0, 0.0)])
def test_pacer_does_not_drift(rate: float, send_cost: float) -> None:
    fake = FakeClock(send_cost=send_cost, oversleep=0.0005)  # every sleep overshoots by 0.5 ms
    pacer = Pacer(rate, clock=fake.clock, sleep=fake.sleep)
    n = 5_000
    pacer.wait(0)
    start = fake.now
    for i in range(1, n):
        pacer.wait(i)
    elapsed = fake.now - start
    assert elapsed == pytest.approx((n - 1) / rate, rel=0.01, abs=0.002)


def test_pacer_rate_zero_never_sleeps() -> None:
    fake = FakeClock(send_cost=0.0, oversleep=0.0)
    pacer = Pacer(0, clock=fake.clock, sleep=fake.sleep)
    for i in range(100):
        pacer.wait(i)
    assert fake.sleeps == 0
    with pytest.raises(ValueError, match="rate"):
        Pacer(-1)


def test_producer_dry_run(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert producer.main(["--source", "synthetic", "--events", "50", "--users", "5", "--items", "9", "--seed", "2",
                          "--bad", "3", "--dry-run", "-q"]) == 0
    lines = capsysbinary.readouterr().out.splitlines()
    assert len(lines) == 53
    good = [json.loads(line) for line in lines if line.startswith(b'{"event_id":"syn')]
    expected = [json.loads(event_to_json(e)) for e in synthetic.generate(50, 5, 9, seed=2)]
    assert good == expected
    assert set(BAD_KINDS) and all(isinstance(r, Record) for r in bad_records(1))


def dry_run(capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> list[bytes]:
    assert producer.main([*args, "--dry-run", "-q"]) == 0
    return capsysbinary.readouterr().out.splitlines()


SYNTHETIC = ("--source", "synthetic", "--events", "300", "--users", "20", "--items", "50", "--seed", "4")


@pytest.mark.parametrize("source", [SYNTHETIC, ("--source", "movielens")], ids=["synthetic", "movielens"])
def test_skip_then_the_rest_is_the_whole_stream(capsysbinary: pytest.CaptureFixture[bytes],
                                                source: tuple[str, ...]) -> None:
    whole = dry_run(capsysbinary, *source, "--limit", "300")
    assert len(whole) == len(set(whole)) == 300
    prefix = dry_run(capsysbinary, *source, "--limit", "120")
    rest = dry_run(capsysbinary, *source, "--skip", "120", "--limit", "180")
    assert prefix + rest == whole  # same events, same ids, same order
    assert dry_run(capsysbinary, *source, "--skip", "100", "--limit", "50") == whole[100:150]
    assert dry_run(capsysbinary, *source, "--skip", "0", "--limit", "300") == whole
    assert dry_run(capsysbinary, *source, "--skip", "299", "--limit", "1") == whole[299:]


def test_skip_without_limit_sends_the_rest(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    whole = dry_run(capsysbinary, *SYNTHETIC)
    assert dry_run(capsysbinary, *SYNTHETIC, "--skip", "250") == whole[250:]
    from ingest.movielens import load_events

    assert dry_run(capsysbinary, "--skip", "99990") == [event_to_json(e).encode() for e in load_events()[99990:]]


def test_skip_with_bad_records_counts_only_events(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    whole = dry_run(capsysbinary, *SYNTHETIC)
    lines = dry_run(capsysbinary, *SYNTHETIC, "--skip", "10", "--limit", "20", "--bad", "2")
    assert len(lines) == 22
    assert [line for line in lines if line.startswith(b'{"event_id":"syn')] == whole[10:30]


def test_skip_past_the_end_sends_nothing_and_says_so(capsysbinary: pytest.CaptureFixture[bytes],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    assert dry_run(capsysbinary, *SYNTHETIC, "--skip", "301") == []
    assert "--skip 301 leaves no event: the synthetic stream has 300" in caplog.text
    with pytest.raises(SystemExit):
        producer.main(["--skip", "-1"])
    assert "'-1' must be >= 0" in capsysbinary.readouterr().err.decode()


def test_producer_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        producer.main(["--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--source synthetic" in text and "--rate" in text
    assert "--skip 5000 " in text and "after a --limit 5000 run" in text


def test_event_types_cover_the_default_mix() -> None:
    # every engagement type; negative feedback (dislike, hide) is not generated by default
    assert set(synthetic.DEFAULT_TYPE_MIX) == set(POSITIVE_TYPES)


def test_stream_stats_known_answer() -> None:
    from bench.streamstats import stream_stats
    from udfs.events import Event

    ev = [Event(f"e{k}", u, i, "rate", 3.0, k) for k, (u, i) in
          enumerate([("a", "x"), ("a", "y"), ("b", "x"), ("a", "y"), ("a", "z"), ("c", "x")])]
    s = stream_stats(ev, 1, 6, window=2)
    # acting users' distinct items at events 1..5: a 2, b 1, a 2, a 3, c 1
    assert (s["events"], s["median"], s["p99"], s["mean"]) == (5, 2, 3, 9 / 5)
    assert s["top_users"][0] == ("a", 4) and s["users_so_far"] == 3
    assert s["rankings_per_event"] == (2 + 1) / 4  # windows {a, b}, {a}; the last, partial one is left out
    with pytest.raises(ValueError, match="--from 3"):
        stream_stats(ev, 3, 3, 2)
