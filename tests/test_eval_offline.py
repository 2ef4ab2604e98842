"""The offline protocol (evaluation.protocols.offline) with a stub, and on the model through the runner."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from config import load_config
from core.v2 import model as M
from evaluation import runner
from evaluation.__main__ import main, parse_args
from evaluation.protocols import Progress, offline, relevant_items, training_items
from evaluation.runner import Model, Options, Task, build_model, run_task, split_for
from ingest.movielens import load_catalog, load_events
from udfs.events import Event

TOP10 = [f"h{r}" for r in range(1, 11)]  # the stub always ranks h1 .. h10


class Stub:
    """A batch recommender with a fixed ranking that records what it was asked."""

    def __init__(self, ranking: list[str] = TOP10) -> None:
        self.ranking = ranking
        self.learned: list[str] = []
        self.asked: list[tuple[tuple[str, ...], int, str]] = []

    def learn_all(self, events: Sequence[Event], progress: Progress | None = None) -> None:
        self.learned += [e.event_id for e in events]
        if progress is not None:
            progress(len(events))

    def top(self, users: Sequence[str], n: int, mode: str) -> list[list[str]]:
        self.asked.append((tuple(users), n, mode))
        return [self.ranking[:n] for _ in users]


def e(n: int, user: str, item: str) -> Event:
    return Event(f"e{n}", user, item, "rate", 4.0, 1000 * n)


def test_offline_known_answer() -> None:
    train = [e(1, "u1", "t1"), e(2, "u2", "t2"), e(3, "u4", "h9")]
    test = [e(4, "u1", "h1"), e(5, "u1", "h3"), e(6, "u1", "q"), e(7, "u3", "h2"), e(8, "u1", "t1"),
            e(9, "u2", "t2")]
    assert training_items(train) == {"u1": {"t1"}, "u2": {"t2"}, "u4": {"h9"}}
    assert relevant_items(train, test) == {"u1": {"h1", "h3", "q"}, "u3": {"h2"}}  # t1, t2 were training items
    stub, done = Stub(), list[int]()
    res = offline({"a": (stub, "m1"), "b": (stub, "m2")}, train, test, k=10, progress=done.append)
    assert stub.learned == ["e1", "e2", "e3"]  # one model, learned once
    assert stub.asked == [(("u1", "u3"), 10, "m1"), (("u1", "u3"), 10, "m2")]  # users in id order, once per arm
    assert (res.n_users, res.n_cold, res.n_no_relevant) == (2, 1, 1)  # u3 untrained; u2 has no relevant item
    assert done == [3, 3, 3]  # training events, then the 6 test events in a share per arm
    # u1: hits at ranks 1 and 3 of 3 relevant; u3: hit at rank 2 of 1 relevant
    assert res.mean("a", "Precision") == pytest.approx((2 / 10 + 1 / 10) / 2)
    assert res.mean("a", "Recall") == pytest.approx((2 / 3 + 1) / 2)
    assert res.mean("a", "HR") == 1.0
    assert res.mean("a", "MRR") == pytest.approx((1 + 1 / 2) / 2)
    ap_u1 = (1 + 2 / 3) / 3  # precision@1 + precision@3, over min(3, 10) = |rel|
    assert res.mean("a", "MAP") == pytest.approx((ap_u1 + 1 / 2) / 2)
    assert res.mean("a", "MAP_rel") == pytest.approx((ap_u1 + 1 / 2) / 2)
    ndcg_u1 = (1 + 0.5) / (1 + 1 / math.log2(3) + 0.5)
    assert res.mean("b", "NDCG") == pytest.approx((ndcg_u1 + 1 / math.log2(3)) / 2)
    assert res.lists["b"]["u3"] == TOP10


def test_offline_refuses_a_list_with_a_training_item() -> None:
    train = [e(1, "u1", "h4")]
    test = [e(2, "u1", "h1")]
    with pytest.raises(ValueError, match="arm 'a': user 'u1''s list holds training item 'h4'"):
        offline({"a": (Stub(), "m")}, train, test)
    with pytest.raises(ValueError, match="arms is empty"):
        offline({}, train, test)


@pytest.fixture(scope="module")
def small() -> tuple[list[Event], list[dict[str, object]]]:
    return load_events(limit=2500), load_catalog()


def test_learning_in_chunks_equals_learning_one_by_one(small: tuple[list[Event], list[dict[str, object]]],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    events, catalog = small
    opts = Options(model_cfg=load_config()["model"], params={"combiner_warmup": 20})
    monkeypatch.setattr(runner, "LEARN_CHUNK", 700)
    chunked = build_model(opts, catalog, exclude_all=True)
    reported: list[int] = []
    chunked.learn_all(list(reversed(events)), reported.append)  # any order in: learned in (time, id) order
    assert reported == [700, 700, 700, 400]
    single = build_model(opts, catalog, exclude_all=True)
    for event in sorted(events, key=lambda x: (x.ts, x.event_id)):  # the core's canonical order
        single.learn_one(event)
    users = sorted({x.user_id for x in events})
    for mode in M.FUSION:
        assert chunked.top(users, 10, mode) == single.top(users, 10, mode), mode


def test_every_offline_protocol_runs_every_mode_deterministically() -> None:
    opts = Options(model_cfg=load_config()["model"], limit=2500)
    events = load_events(limit=2500)
    for kind in ("random", "temporal", "loo"):
        first = run_task(Task(kind, kind, 2500), opts)
        assert set(first["metrics"]) == set(M.FUSION)  # every mode of core.v2
        assert first["n_users"] > 20 and first["n_train"] + first["n_test"] == len(events)
        assert first["n_cold"] == 0  # every test user has training history
        assert any(m["HR"] > 0 for m in first["metrics"].values())
        second = run_task(Task(kind, kind, 2500), opts)
        assert second["metrics"] == first["metrics"]  # seeded and deterministic
    loo = run_task(Task("loo", "loo", 2500), opts)
    assert loo["n_test"] == loo["n_users"]  # one held-out event per user


def test_the_model_never_lists_a_training_item() -> None:
    opts = Options(model_cfg=load_config()["model"], limit=2500, params={"exclude_types": ["view"]})
    events, catalog = load_events(limit=2500), load_catalog()
    split = split_for("random", events, opts)
    model: Model = build_model(opts, catalog, exclude_all=True)  # overrides the --param
    model.learn_all(split.train)
    seen = training_items(split.train)
    users = sorted(seen)
    for mode in ("popular", "weighted", "learned"):
        for user, ranked in zip(users, model.top(users, 10, mode), strict=True):
            assert len(ranked) == 10 and not set(ranked) & seen[user]


def test_cli_offline_protocols_and_their_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args([])
    assert (args.random_train_frac, args.temporal_test_frac) == (0.75, 0.2)
    assert args.protocols == ["prequential", "random", "temporal", "loo", "diversity", "bounds", "dislike"]
    with pytest.raises(SystemExit):
        parse_args(["--random-train-frac", "1"])
    assert "--random-train-frac 1.0 must be between 0 and 1" in capsys.readouterr().err
    assert main(["--limit", "1500", "--jobs", "1", "--no-progress", "--out", str(tmp_path), "--protocols",
                 "random,temporal,loo", "--random-train-frac", "0.5", "--temporal-test-frac", "0.3"]) == 0
    md = (tmp_path / "results.md").read_text()
    for text in ("## 2a. Random 50/50 per-user split", "each user's last 30% of events", "## 2c. Leave-last-one-out",
                 "| learned |", "| MAP (÷|rel|) |", "Best of ours by NDCG@10"):
        assert text in md
    assert (tmp_path / "offline.png").stat().st_size > 1000
