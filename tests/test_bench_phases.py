"""bench.phases and its run_windows: the dict core measured by position in the stream (pure Python, no JVM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.common import base_config
from bench.phases import _model, check_positions, main, phases, run_windows
from ingest.synthetic import generate, generate_catalog
from udfs.events import Event

ONE_WINDOW_MS = 10**9  # longer than any test: every user is ranked once, at the end


def _events(n: int = 1200) -> list[Event]:
    return list(generate(n, 60, 40, seed=3))


def _engaged(events: list[Event]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for ev in events:
        out.setdefault(ev.user_id, set()).add(ev.item_id)
    return out


def test_run_windows_ranks_each_acting_user_once_per_window() -> None:
    events = _events()
    model = _model(base_config([])["model"], generate_catalog(40, seed=3), False)
    r = run_windows(model, events, ONE_WINDOW_MS)
    engaged = _engaged(events)
    assert (r["events"], r["windows"], r["ranks"]) == (len(events), 1, len(engaged))
    # the final window ranks every user once, with their whole history learned
    assert r["ranked_history"] == sum(len(items) for items in engaged.values())
    assert 0 < r["rank_s"] <= r["wall_s"]


def test_phases_measure_each_span_after_the_events_before_it() -> None:
    events = _events()
    res = phases(events, base_config([])["model"], generate_catalog(40, seed=3), [700, 0], span=300, warmup=100,
                 window_ms=ONE_WINDOW_MS)
    assert [r["start"] for r in res] == [0, 700]
    assert [r["warmup"] for r in res] == [0, 100]
    for r in res:
        span = events[r["start"]:r["start"] + 300]
        before = _engaged(events[:r["start"] + 300])
        users = {ev.user_id for ev in span}
        assert (r["events"], r["windows"], r["rankings"]) == (300, 1, len(users))
        assert r["rankings_per_event"] == round(len(users) / 300, 3)
        # each span's users are ranked at its end, with everything learned up to there (the skipped part too)
        assert r["mean_ranked_history"] == round(sum(len(before[u]) for u in users) / len(users), 1)
        assert r["events_per_s"] > 0 and r["rank_us_per_ranking"] > 0


@pytest.mark.parametrize(("at", "span", "warmup", "message"), [
    ([0, 100], 200, 0, "overlaps the phase before it"),
    ([1000], 300, 0, "does not fit the 1,200 events"),
    ([-1], 10, 0, "does not fit"),
    ([], 10, 0, "at least one position"),
    ([0], 0, 0, "--span 0 must be at least 1"),
    ([0], 10, -1, "--warmup -1 must be >= 0"),
])
def test_phase_positions_are_checked(at: list[int], span: int, warmup: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_positions(at, span, warmup, 1200)


def test_cli_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ph"
    code = main(["--events", "1500", "--users", "80", "--items", "50", "--at", "0,1000", "--span", "400",
                 "--warmup", "50", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "phases.json").read_text())
    assert [p["start"] for p in report["phases"]] == [0, 1000]
    assert report["spec"]["events"] == 1500 and report["spec"]["overrides"][0] == "model.row_cap=100"
    assert (out / "phases.png").stat().st_size > 0
    assert "rankings/event" in capsys.readouterr().out
    assert main(["--events", "1500", "--users", "80", "--items", "50", "--at", "0,100", "--span", "400",
                 "--out", str(out)]) == 2
    assert "overlaps" in capsys.readouterr().err
