"""The evaluation's dislike protocol: a seeded share of the ratings <= 2 sent as ``dislike``, beside the same replay
with them sent as ratings, both scoring the same events."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.__main__ import main, parse_args
from evaluation.protocols import prequential
from evaluation.runner import as_dislikes, low_ratings
from udfs.events import Event


def test_low_ratings_are_a_seeded_nested_share_of_the_ratings_up_to_2() -> None:
    events = [Event(f"e{n}", "u", f"i{n}", "rate", float(1 + n % 5), n) for n in range(2000)] + \
        [Event("v", "u", "i", "view", 1.0, 1)]
    low = {e.event_id for e in events if e.type == "rate" and e.weight <= 2}
    half, all_ = low_ratings(events, 0.5), low_ratings(events, 1.0)
    assert all_ == low and half < all_ and 0.4 < len(half) / len(low) < 0.6
    assert low_ratings(events, 0.5) == half and low_ratings(events, 0.5, seed=1) != half
    sent = as_dislikes(events, half)
    assert [(e.type, e.weight) for e in sent if e.event_id in half] == [("dislike", 1.0)] * len(half)
    assert [e for e in sent if e.event_id not in half] == [e for e in events if e.event_id not in half]
    with pytest.raises(ValueError, match="dislike share 0 must be in"):
        low_ratings(events, 0)


class _Recorder:
    """A stand-in model that records what it is asked to rank."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def learn_one(self, event: Event) -> None:
        pass

    def rank(self, user: str, n: int | None = None, mode: str | None = None) -> list[tuple[str, float, str]]:
        self.asked.append(user)
        return []


def test_unscored_and_negative_events_are_learned_but_never_scored() -> None:
    events = [Event("a", "u", "1", "rate", 4.0, 1), Event("b", "u", "2", "rate", 1.0, 2),
              Event("c", "u", "3", "dislike", 1.0, 3), Event("d", "u", "4", "hide", 1.0, 4),
              Event("e", "u", "5", "view", 1.0, 5)]
    model = _Recorder()
    res = prequential({"m": (model, "m")}, events, unscored={"b"})
    assert (res.n_events, res.n_eligible, res.n_scored) == (5, 1, 1)


def test_cli_dislike_protocol(tmp_path: Path) -> None:
    assert parse_args([]).dislike_share == 0.5
    with pytest.raises(SystemExit):
        parse_args(["--dislike-share", "0"])
    assert main(["--limit", "2000", "--jobs", "1", "--no-progress", "--out", str(tmp_path), "--protocols", "dislike",
                 "--dislike-share", "1", "--sample-every", "2"]) == 0
    md = (tmp_path / "results.md").read_text()
    assert "## 5. Negative feedback: low ratings sent as `dislike`" in md
    assert "| learned |" in md and "ratings <= 2 (share 1," in md
