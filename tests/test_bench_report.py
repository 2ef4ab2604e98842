"""The benchmark report's pure parts: the machine speed probe and the summary rows (no services)."""

from __future__ import annotations

from typing import Any

from bench import cli
from bench import report as rep


def test_speed_probe_times_the_fixed_workload() -> None:
    ms = rep.speed_probe(rounds=2)
    assert isinstance(ms, float) and 0 < ms < 10_000


LIMIT_RUN = {"dataset": "synthetic", "mode": "weighted", "compare_modes": ["rrf"], "events": 12_000, "windows": 3,
             "window_events": 4_000, "rankings": 2_500, "events_per_s": 1200.0, "wall_s": 10.0, "cpu_s": 9.5,
             "cpu_us_per_event": 791.7, "peak_rss_bytes": 300 * 2**20, "state_bytes": 40 * 2**20}


def test_summary_names_the_machine_speed_before_each_part() -> None:
    report = {"machine": {"speed_probe_ms": {"throughput": 41.0, "scale": 77.5}}, "limit": {"runs": [LIMIT_RUN]}}
    rows = rep.summary_rows(report)
    assert rows[0] == ("machine speed probe (lower = faster)", "41 ms",
                       "before each part: throughput 41, scale 78 ms (bench.report.speed_probe)")
    assert rows[1][0] == "limit synthetic (compiled core)" and rows[1][1] == "1,200 ev/s"
    assert rep.summary_rows({"machine": {}}) == []


def test_limit_row_names_the_work_and_its_cost() -> None:
    (row,) = rep.summary_rows({"limit": {"runs": [LIMIT_RUN]}})
    assert row[2] == ("1 process (core.v2), no Flink/Kafka/Redis; 12,000 events in 3 windows of 4,000, 2,500 users "
                      "ranked (weighted+rrf); wall 10.0 s, CPU 9.5 s = 791.7 us/event; peak RSS 300 MiB, state 40 MiB")


def test_ratios_divide_each_job_run_by_the_limit_on_its_stream() -> None:
    job = {"parallelism": 2, "events": 12_000, "events_per_s": 600.0, "job_cpu_us_per_event": 1583.4,
           "elapsed_s": 20.0}
    other = {"parallelism": 1, "events": 5_000, "events_per_s": 300.0, "layout": "local cluster, 1 TM",
             "elapsed_s": 9.0}
    ml = dict(LIMIT_RUN, dataset="MovieLens-100K", events_per_s=3000.0, cpu_us_per_event=0.0)
    report: dict[str, Any] = {"throughput": {"runs": [dict(other, dataset="MovieLens-100K")]},
              "scale": dict(job, complete=False), "limit": {"runs": [LIMIT_RUN, ml]}}
    cli._ratios(report)
    ratios = report["limit"]["ratios"]
    assert ratios == [
        {"job": "MovieLens-100K p=1 (1 TMs)", "limit": "MovieLens-100K", "ratio": 0.1, "cpu_ratio": None,
         "note": "limit over 12,000 events, job over 5,000"},
        {"job": "synthetic p=2", "limit": "synthetic", "ratio": 0.5, "cpu_ratio": 2.0,
         "note": "job run incomplete (time cap)"},
    ]
    rows = rep.summary_rows(report)
    assert rows[-1] == ("ratio job/limit synthetic p=2 / synthetic", "0.50",
                        "CPU per event job/limit 2.00; job run incomplete (time cap)")
