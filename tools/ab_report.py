"""`make ab-report`: the running experiment's arms compared, from the job's ``experiments`` topic.

Reads the topic (``kafka.topics.experiments``, committed records) to its current end and sums each arm's summaries
(``operators.experiments``) of one experiment (``--name``; default: that of the newest summary). Prints per arm
the engagements scored against a list served before them, the lists served, the hit rate (the engaged item was in
the user's last ``model.top_n``) with its 95% Wilson interval, the mean NDCG (1/log2(rank+1) per hit) with a 95%
normal interval, and the mean age of the lists; then a two-sided two-proportion z-test of the hit rates of the
first two arms.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


class ArmStats(NamedTuple):
    arm: str
    events: int
    lists: int
    hits: int
    ndcg: float  # sum
    ndcg_sq: float  # sum of squares
    age_sum_ms: int


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``hits / n`` (``(0, 1)`` for n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(total: float, total_sq: float, n: int, z: float = Z95) -> tuple[float, float, float]:
    """The mean of ``n`` values from their sum and sum of squares, and its normal 95% interval (sample variance)."""
    if n == 0:
        return 0.0, 0.0, 0.0
    mean = total / n
    var = max(0.0, (total_sq - n * mean * mean) / (n - 1)) if n > 1 else 0.0
    half = z * math.sqrt(var / n)
    return mean, mean - half, mean + half


def two_proportion_z(h1: int, n1: int, h2: int, n2: int) -> tuple[float, float]:
    """The pooled two-proportion z statistic of ``h1/n1 - h2/n2`` and its two-sided p-value."""
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    pooled = (h1 + h2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (h1 / n1 - h2 / n2) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def summarise(summaries: Iterable[Mapping[str, Any]], name: str | None = None) -> tuple[str | None, list[ArmStats]]:
    """Each arm's sums over the summaries of experiment ``name`` (default: the newest summary's), arms in order of
    first appearance."""
    docs = list(summaries)
    if name is None and docs:
        name = str(docs[-1]["experiment"])
    sums: dict[str, list[float]] = {}
    for d in docs:
        if d.get("experiment") != name:
            continue
        acc = sums.setdefault(str(d["arm"]), [0, 0, 0, 0.0, 0.0, 0])
        for i, key in enumerate(("events", "lists", "hits", "ndcg", "ndcg_sq", "age_sum_ms")):
            acc[i] += d[key]
    return name, [ArmStats(arm, int(a[0]), int(a[1]), int(a[2]), float(a[3]), float(a[4]), int(a[5]))
                  for arm, a in sums.items()]


def report(name: str | None, arms: Sequence[ArmStats]) -> str:
    """The per-arm table and the test between the first two arms."""
    if not arms:
        return "no experiment summaries yet (is an experiment running? experiments.name, --experiment demo)"
    lines = [f"experiment {name}: hit = the engaged item was in the list served before (its first model.top_n)",
             f"{'arm':<12}{'events':>9}{'lists':>9}{'hits':>7}  {'hit rate [95% CI]':<26}{'NDCG [95% CI]':<26}"
             f"{'mean age':>10}"]
    for a in arms:
        lo, hi = wilson(a.hits, a.events)
        rate = a.hits / a.events if a.events else 0.0
        ndcg, nlo, nhi = mean_interval(a.ndcg, a.ndcg_sq, a.events)
        age = a.age_sum_ms / a.events / 1000 if a.events else 0.0
        lines.append(f"{a.arm:<12}{a.events:>9,}{a.lists:>9,}{a.hits:>7,}  "
                     f"{f'{rate:.4f} [{lo:.4f}, {hi:.4f}]':<26}{f'{ndcg:.4f} [{nlo:.4f}, {nhi:.4f}]':<26}"
                     f"{_duration(age):>10}")
    if len(arms) >= 2:
        a, b = arms[0], arms[1]
        z, p = two_proportion_z(a.hits, a.events, b.hits, b.events)
        diff = (a.hits / a.events if a.events else 0.0) - (b.hits / b.events if b.events else 0.0)
        lines.append(f"hit rate {a.arm} - {b.arm}: {diff:+.4f}; two-proportion z = {z:+.2f}, p = {p:.3g} "
                     f"({'significant' if p < 0.05 else 'not significant'} at 5%)")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.ab_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example:\n  make run ARGS='--experiment demo' && make ab-report")
    parser.add_argument("--config", help="YAML file merged over config/default.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--name", help="the experiment to report (default: that of the newest summary)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the topic (default 30)")
    args = parser.parse_args(argv)
    from config import load_config
    from serving.testing import read_topic

    cfg = load_config(args.config, args.set)
    topic = cfg["kafka"]["topics"]["experiments"]
    try:
        records = read_topic(cfg["kafka"]["bootstrap"], topic, timeout=args.timeout)
    except ValueError as exc:  # no such topic
        print(f"error: {exc} (run an experiment first: make run ARGS='--experiment demo')", file=sys.stderr)
        return 1
    name, arms = summarise((json.loads(r.value) for r in records), args.name)
    print(f"{len(records):,} summaries on topic {topic!r}")
    print(report(name, arms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
