"""bench.limit: the compiled core learns every event and ranks each window's acting users once per mode; the
isolated run and ``python -m bench --only limit`` report it (no services, no JVM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import cli, limit
from bench.common import base_config
from core.v2 import model as M
from ingest.synthetic import generate, generate_catalog
from udfs.events import Event

N, USERS, ITEMS, SEED = 1200, 60, 40, 3


def _events(n: int = N, users: int = USERS, items: int = ITEMS, seed: int = SEED) -> list[Event]:
    return list(generate(n, users, items, seed=seed))


def _window_users(events: list[Event], window: int) -> list[set[str]]:
    """The acting users of each window of ``window`` consecutive events."""
    return [{e.user_id for e in events[k:k + window]} for k in range(0, len(events), window)]


def test_run_learns_every_event_and_ranks_each_acting_user_once_per_window_and_mode() -> None:
    events = _events()
    p = limit.plan(base_config(["model.compare_modes=[rrf,learned]"]))
    assert p.train and p.compare_modes == ("rrf", "learned") and p.stored_n == 50
    res = limit.run(iter(events), p, generate_catalog(ITEMS, seed=SEED), window=250, total=len(events))
    pairs = _window_users(events, 250)
    assert (res["events"], res["windows"], res["window_events"]) == (N, 5, 250)
    assert res["rankings"] == sum(map(len, pairs)) > len({e.user_id for e in events})
    assert res["rankings_per_mode"] == {"weighted": res["rankings"], "rrf": res["rankings"],
                                        "learned": res["rankings"]}
    assert res["users"] == len({e.user_id for e in events}) and res["items"] == ITEMS
    # learning window by window gives the state of one batch of all events: every event learned exactly once
    state = M.new_state(p.settings)
    M.add_items(state, generate_catalog(ITEMS, seed=SEED))
    M.learn(state, M.Batch.of(events), p.train)
    assert (res["co_occurrence_entries"], res["user_pairs"]) == (state.ipool.entries(), state.upool.entries())
    assert res["state_bytes"] >= state.nbytes() > 0  # the same content; capacities grown by more steps
    assert len(res["events_per_s_by_tenth"]) == 5  # one mark per window end past each tenth (5 windows: 5 marks)
    assert res["render_s"] is None and res["cpu_s"] > 0


def test_a_window_larger_than_the_stream_ranks_every_user_once_and_render_spells_them_out() -> None:
    events = _events(300)
    p = limit.plan(base_config([]))
    assert not p.train and p.compare_modes == () and p.settings.refresh_on_norms  # the default: exact lists
    res = limit.run(events, p, (), window=10**6, render=True)
    assert (res["events"], res["windows"], res["rankings"]) == (300, 1, len({e.user_id for e in events}))
    assert res["render_s"] is not None and res["events_per_s_by_tenth"] == []  # no total given: no tenths


def test_window_events_is_the_window_at_the_reference_rate() -> None:
    assert limit.window_events(400) == 20_000
    assert limit.window_events(400, rate=10_000) == 4_000
    assert limit.window_events(1, rate=10) == 1
    with pytest.raises(ValueError, match=r"job\.window_ms 0"):
        limit.window_events(0)
    with pytest.raises(ValueError, match="window 0 must be at least 1"):
        limit.run([], limit.plan(base_config([])), (), window=0)


def test_plan_checks_the_compared_modes() -> None:
    with pytest.raises(ValueError, match=r"model\.compare_modes has unknown mode 'best'"):
        limit.plan(base_config(["model.compare_modes=[best]"]))
    p = limit.plan(base_config(["model.hybrid.mode=learned", "model.stored_n=20", "model.hybrid.n_neg=2"]))
    assert p.train and p.stored_n == 20 and p.settings.n_neg == 2
    assert not limit.plan(base_config(["model.hybrid.mode=learned", "model.hybrid.train_combiner=false"])).train


def test_isolated_run_reports_the_child_process_peak_rss() -> None:
    stream = limit.Stream(limit.SYNTHETIC, 500, 30, 20, seed=5)
    res = limit.run_isolated(stream, ["model.row_cap=80"], window=100)
    events = _events(500, 30, 20, seed=5)
    assert (res["events"], res["windows"]) == (500, 5)
    assert res["rankings"] == sum(map(len, _window_users(events, 100)))
    assert res["peak_rss_bytes"] >= res["rss_peak_sampled_bytes"] >= res["rss_start_bytes"] > 0
    assert res["stream"] == stream._asdict() and res["overrides"] == ["model.row_cap=80"]
    assert res["dataset"] == "synthetic" and res["reference_rate"] is None


def test_bench_only_limit_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--only", "limit", "--limit-streams", "synthetic", "--scale-events", "800", "--scale-users", "50",
            "--scale-items", "30", "--limit-window-events", "200", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    (run,) = report["limit"]["runs"]
    events = list(generate(800, 50, 30, seed=0))
    assert (run["events"], run["windows"], run["window_events"]) == (800, 4, 200)
    assert run["rankings"] == sum(map(len, _window_users(events, 200)))
    assert run["overrides"] == list(cli.SCALE_OVERRIDES)
    assert report["limit"]["ratios"] == []  # no job ran
    assert "limit synthetic (compiled core)" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--limit-streams", "movielens,kafka"], "--limit-streams 'movielens,kafka' must name some of"),
    (["--limit-streams", ","], "must name some of movielens,synthetic"),
    (["--limit-window-events", "-1"], "--limit-window-events -1 must be >= 0"),
])
def test_bench_limit_options_are_checked_before_anything_runs(args: list[str], message: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--only", "limit", *args]) == 2
    assert message in capsys.readouterr().err
