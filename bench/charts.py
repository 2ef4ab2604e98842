"""PNG charts of a benchmark report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def throughput_chart(bars: list[tuple[str, float, str]], path: Path, title: str) -> Path | None:
    """Horizontal bars ``(label, events/s, group)``; groups get their own colour."""
    if not bars:
        return None
    plt = _plt()
    colours = {"job": "#1f77b4", "limit": "#ff7f0e", "scale": "#2ca02c"}
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(bars) + 1.6))
    labels = [b[0] for b in bars]
    values = [b[1] for b in bars]
    ax.barh(range(len(bars)), values, color=[colours.get(b[2], "#7f7f7f") for b in bars])
    ax.set_yticks(range(len(bars)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("events/s")
    ax.set_title(title)
    top = max(values) if values else 1.0
    for i, v in enumerate(values):
        ax.text(v + top * 0.01, i, f"{v:,.0f}", va="center", fontsize=9)
    ax.set_xlim(0, top * 1.18)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def freshness_chart(samples: list[list[float]], stats: dict[str, Any], path: Path, title: str) -> Path | None:
    """CDF, histogram and latency over time of the probe samples ``[[sent_s, latency_ms], ...]``."""
    if not samples:
        return None
    plt = _plt()
    lat = sorted(s[1] for s in samples)
    n = len(lat)
    fig, (cdf, hist, over) = plt.subplots(1, 3, figsize=(15, 4.2))
    cdf.plot(lat, [(i + 1) / n for i in range(n)], drawstyle="steps-post")
    marks = (("p50", "p50_ms", "#2ca02c"), ("p95", "p95_ms", "#ff7f0e"), ("p99", "p99_ms", "#d62728"))
    for name, key, colour in marks:
        if stats.get(key) is not None:
            cdf.axvline(stats[key], color=colour, linestyle="--", linewidth=1, label=f"{name} {stats[key]:,.0f} ms")
    cdf.set_xlabel("latency: produced -> visible in Redis (ms)")
    cdf.set_ylabel("fraction of probe events")
    cdf.set_title("CDF")
    cdf.grid(alpha=0.3)
    cdf.legend(loc="lower right")
    hist.hist(lat, bins=min(60, max(10, n // 20)), color="#1f77b4")
    hist.set_xlabel("latency (ms)")
    hist.set_ylabel("probe events")
    hist.set_title("histogram")
    hist.grid(alpha=0.3)
    over.scatter([s[0] for s in samples], [s[1] for s in samples], s=4, alpha=0.5)
    for k, (begun, done) in enumerate(stats.get("checkpoints_s") or []):
        over.axvspan(begun, done if done is not None else begun + 0.2, color="#d62728", alpha=0.15,
                     label="checkpoint (start..complete)" if k == 0 else None)
    if stats.get("checkpoints_s"):
        over.legend(loc="upper right", fontsize=8)
    over.set_xlabel("probe sent at (s after the start of probing)")
    over.set_ylabel("latency (ms)")
    over.set_title("over time")
    over.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
