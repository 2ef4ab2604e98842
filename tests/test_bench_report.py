"""The benchmark report's pure parts: the machine speed probe and the summary rows (no services)."""

from __future__ import annotations

from bench import report as rep


def test_speed_probe_times_the_fixed_workload() -> None:
    ms = rep.speed_probe(rounds=2)
    assert isinstance(ms, float) and 0 < ms < 10_000


def test_summary_names_the_machine_speed_before_each_part() -> None:
    report = {"machine": {"speed_probe_ms": {"throughput": 41.0, "scale": 77.5}},
              "limit": {"runs": [{"dataset": "synthetic", "variant": "batched", "events_per_s": 1200.0,
                                  "complete": True, "wall_s": 10.0, "cpu_s": 9.5, "cpu_us_per_event": 790.0,
                                  "events": 12_000}]}}
    rows = rep.summary_rows(report)
    assert rows[0] == ("machine speed probe (lower = faster)", "41 ms",
                       "before each part: throughput 41, scale 78 ms (bench.report.speed_probe)")
    assert rows[1][0] == "limit synthetic batched" and rows[1][1] == "1,200 ev/s"
    assert rep.summary_rows({"machine": {}}) == []
