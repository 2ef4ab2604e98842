import math
from collections.abc import Iterable
from pathlib import Path

import pytest

from core.hybrid import HybridRecommender
from core.metrics import ndcg_at_k
from evaluation.__main__ import main, parse_args, parse_params
from evaluation.metrics import ndcg_set_at_k
from evaluation.protocols import (
    beyond_accuracy,
    mcnemar,
    offline,
    prequential,
    random_split,
    relevant_items,
    temporal_split,
)
from ingest.movielens import load_catalog, load_events
from udfs.events import Event

TOP10 = [f"h{r}" for r in range(1, 11)]  # the stub always ranks h1 .. h10


class Stub:
    """A recommender with a fixed ranking that records the order of calls."""

    def __init__(self, ranking: list[str] = TOP10) -> None:
        self.ranking = ranking
        self.calls: list[str] = []

    def learn_one(self, event: Event) -> None:
        self.calls.append(f"learn {event.event_id}")

    def rank(self, user: str, n: int | None = None, mode: str | None = None,
             exclude: Iterable[str] = ()) -> list[tuple[str, float, str]]:
        self.calls.append(f"rank {user}")
        return [(i, 1.0, "stub") for i in self.ranking[:n]]


def e(n: int, user: str, item: str) -> Event:
    return Event(f"e{n}", user, item, "rate", 4.0, 1000 * n)


STREAM = [
    e(1, "u1", "x0"),   # u1 has no history yet: not scored
    e(2, "u1", "h1"),   # hit at rank 1: HR 1, NDCG 1, MRR 1
    e(3, "u1", "h10"),  # hit at rank 10: HR 1, NDCG 1/log2(11), MRR 1/10
    e(4, "u1", "zz"),   # miss: 0, 0, 0
    e(5, "u2", "h1"),   # u2's first event: not scored
    e(6, "u1", "h1"),   # u1 engaged h1 before: a repeat, not scored
]


def test_prequential_known_answer() -> None:
    stub = Stub()
    res = prequential({"stub": (stub, "any")}, STREAM, k=10, window=2)
    assert (res.n_events, res.n_eligible, res.n_scored, res.n_new_user, res.n_repeat) == (6, 3, 3, 2, 1)
    assert res.mean("stub", "HR") == pytest.approx(2 / 3)
    assert res.mean("stub", "NDCG") == pytest.approx((1 + 1 / math.log2(11)) / 3)
    assert res.mean("stub", "MRR") == pytest.approx((1 + 0.1) / 3)
    assert list(res.hits["stub"]) == [1, 1, 0]
    # windows of 2 events: e2 (position 1) in window 0, e3 and e4 (positions 2, 3) in window 1
    assert res.curve("stub") == [(2, 1.0), (4, 0.5)]
    # rank-then-learn: every scored event is ranked before it is learned, and every event is learned
    assert stub.calls == ["learn e1", "rank u1", "learn e2", "rank u1", "learn e3", "rank u1", "learn e4",
                          "learn e5", "learn e6"]


def test_prequential_sampling_is_seeded_and_learns_everything() -> None:
    stream = [e(n, "u", f"i{n}") for n in range(1, 22)]  # 20 eligible events
    a = prequential({"s": (Stub(), "m")}, stream, sample_every=4, seed=7)
    b = prequential({"s": (Stub(), "m")}, stream, sample_every=4, seed=7)
    assert a.n_scored == b.n_scored == 5 and a.n_eligible == 20
    stub = Stub()
    prequential({"s": (stub, "m")}, stream, sample_every=4, seed=7)
    assert sum(c.startswith("learn") for c in stub.calls) == 21
    with pytest.raises(ValueError, match="sample_every 0"):
        prequential({"s": (Stub(), "m")}, stream, sample_every=0)


def test_arms_sharing_a_model_learn_once() -> None:
    stub = Stub()
    prequential({"a": (stub, "x"), "b": (stub, "y")}, STREAM)
    assert sum(c.startswith("learn") for c in stub.calls) == len(STREAM)
    assert sum(c.startswith("rank") for c in stub.calls) == 2 * 3


def test_ndcg_set_known_answer() -> None:
    ranked = ["a", "x", "b", "y"]
    # hits at 1 and 3: DCG = 1 + 1/2; |relevant| = 3, IDCG = 1 + 1/log2(3) + 1/2
    assert ndcg_set_at_k(ranked, {"a", "b", "c"}, 4) == pytest.approx(1.5 / (1 + 1 / math.log2(3) + 0.5))
    assert ndcg_set_at_k(ranked, {"x"}, 4) == pytest.approx(ndcg_at_k(ranked, "x", 4))  # one item: core's NDCG
    assert ndcg_set_at_k(ranked, set(), 4) == 0.0
    with pytest.raises(ValueError, match="k 0"):
        ndcg_set_at_k(ranked, {"a"}, 0)


def test_offline_known_answer() -> None:
    train = [e(1, "u1", "t1"), e(2, "u2", "t2")]
    test = [e(3, "u1", "h1"), e(4, "u1", "h3"), e(5, "u1", "q"), e(6, "u3", "h2"), e(7, "u1", "t1")]
    assert relevant_items(train, test) == {"u1": {"h1", "h3", "q"}, "u3": {"h2"}}  # t1 was a training item
    res = offline({"stub": (Stub(), "m")}, train, test, k=10)
    assert (res.n_users, res.n_cold) == (2, 1)  # u3 has no training event
    # u1: hits at ranks 1 and 3 of 3 relevant; u3: hit at rank 2 of 1 relevant
    assert res.mean("stub", "Precision") == pytest.approx((2 / 10 + 1 / 10) / 2)
    assert res.mean("stub", "Recall") == pytest.approx((2 / 3 + 1) / 2)
    assert res.mean("stub", "HR") == 1.0
    ap_u1 = (1 + 2 / 3) / 3  # precision@1 + precision@3, over min(3, 10)
    assert res.mean("stub", "MAP") == pytest.approx((ap_u1 + 1 / 2) / 2)
    assert res.mean("stub", "MAP_rel") == pytest.approx((ap_u1 + 1 / 2) / 2)  # |rel| <= k: same normalisation
    ndcg_u1 = (1 + 0.5) / (1 + 1 / math.log2(3) + 0.5)
    assert res.mean("stub", "NDCG") == pytest.approx((ndcg_u1 + 1 / math.log2(3)) / 2)
    assert res.lists["stub"]["u3"] == TOP10


def test_splits() -> None:
    events = [e(n, f"u{n % 3}", f"i{n}") for n in range(1, 101)]
    train, test = temporal_split(events, 0.8)
    assert train == events[:80] and test == events[80:]
    a_train, a_test = random_split(events, 0.8, seed=1)
    b_train, b_test = random_split(events, 0.8, seed=1)
    assert a_train == b_train and a_test == b_test
    assert len(a_train) + len(a_test) == 100 and not {x.event_id for x in a_train} & {x.event_id for x in a_test}
    for user in ("u0", "u1", "u2"):
        n = sum(x.user_id == user for x in events)
        assert sum(x.user_id == user for x in a_train) == round(0.8 * n)
    assert [x.ts for x in a_train] == sorted(x.ts for x in a_train)  # still a time-ordered stream
    assert random_split(events, 0.8, seed=2)[1] != a_test
    with pytest.raises(ValueError, match=r"train_frac 1\.5"):
        temporal_split(events, 1.5)


def test_mcnemar_and_beyond_accuracy() -> None:
    assert mcnemar([1, 1, 0, 1], [0, 1, 1, 0]) == (2, 1, pytest.approx(1 / math.sqrt(3)))
    assert mcnemar([1, 0], [1, 0]) == (0, 0, 0.0)
    train = [e(1, "a", "x"), e(2, "b", "x"), e(3, "b", "y"), e(4, "c", "x"), e(5, "d", "z")]
    genres = {"x": ["Comedy"], "y": ["Comedy", "Drama"], "z": ["Drama"]}
    ba = beyond_accuracy({"a": ["y", "z"], "c": ["y"]}, train, ["x", "y", "z", "w"], genres)
    assert ba.coverage == 0.5  # y and z of 4 catalog items
    # 4 users: p(y) = 1/4 (2 bits), p(z) = 1/4 (2 bits): novelty 2 for both lists
    assert ba.novelty == pytest.approx(2.0)
    # ILD: [y, z] distance 1 - 1/2 = 0.5; [y] has no pairs -> 0
    assert ba.diversity == pytest.approx(0.25)


def test_smoke_prequential_and_offline_on_movielens() -> None:
    events = load_events(limit=400)
    catalog = load_catalog()
    m = HybridRecommender(refresh_events=0, combiner_warmup=20, combiner_sample=1.0)
    for record in catalog:
        m.add_item(record)
    arms = {mode: (m, mode) for mode in ("popular", "itemcf", "usercf", "content", "weighted", "rrf", "learned")}
    res = prequential(arms, events, sample_every=2, window=100)
    assert res.n_events == 400 and res.n_scored > 50
    for arm in arms:
        assert 0.0 <= res.mean(arm, "HR") <= 1.0 and len(res.hits[arm]) == res.n_scored
    assert m.combiner.n_seen > 0  # the learned combiner trained in the stream
    train, test = random_split(events, 0.8, seed=0)
    m2 = HybridRecommender(refresh_events=0)
    for record in catalog:
        m2.add_item(record)
    ores = offline({"weighted": (m2, "weighted"), "popular": (m2, "popular")}, train, test)
    assert ores.n_users > 0 and all(len(lst) <= 10 for lst in ores.lists["weighted"].values())


def test_cli_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, docs = tmp_path / "eval", tmp_path / "docs" / "img"
    rc = main(["--limit", "300", "--jobs", "1", "--no-progress", "--out", str(out), "--caps", "10",
               "--sample-every", "3", "--window", "100", "--docs", str(docs)])
    assert rc == 0
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "Command: `python -m evaluation --limit 300 " in md
    for heading in ("## 1. Prequential", "## 2a. Offline temporal", "## 2b. Offline random", "## 3. Beyond",
                    "## 4. Cost of the bounds", "NOT ours", "every test item of the user is relevant"):
        assert heading in md
    for png in ("prequential.png", "offline.png", "bounds.png"):
        assert (out / png).stat().st_size > 1000
        assert (docs / f"eval-{png}").read_bytes() == (out / png).read_bytes()  # --docs: the README's copies
    assert "| learned |" in capsys.readouterr().out
    # a run of one protocol copies only the plot it made (no stale plots of an earlier run)
    docs2 = tmp_path / "docs2"
    assert main(["--limit", "200", "--jobs", "1", "--no-progress", "--out", str(out), "--protocols", "prequential",
                 "--docs", str(docs2)]) == 0
    assert sorted(p.name for p in docs2.iterdir()) == ["eval-prequential.png"]
    assert parse_args(["--docs"]).docs == "docs/img" and parse_args([]).docs is None


def test_cli_help_and_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--help"])
    assert exc.value.code == 0 and "examples:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parse_args(["--protocols", "prequential,nope"])
    assert "unknown nope" in capsys.readouterr().err
    assert parse_params(["candidate_pool=100", "half_life_s=null"]) == {"candidate_pool": 100, "half_life_s": None}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_params(["oops"])
    assert main(["--param", "mode=best", "--no-progress", "--out", "/nonexistent"]) == 2
    assert "mode 'best'" in capsys.readouterr().err
