"""Markdown tables and PNG plots of the evaluation results (matplotlib, Agg backend)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from evaluation.protocols import mcnemar
from evaluation.runner import ARMS, FUSION_ARMS

logger = logging.getLogger(__name__)

#: Microsoft Recommenders' published MovieLens-100K row for SAR (README "Algorithm Comparison"; the output of their
#: examples/00_quick_start/sar_movielens.ipynb): their numbers, on their split (75/25 stratified per user, seed 42),
#: k = 10 -- quoted for comparison, not measured here. Their MAP divides by |relevant| (our ``MAP_rel``).
MICROSOFT_SAR: dict[str, float] = {"Precision": 0.330753, "Recall": 0.176385, "NDCG": 0.382461, "MAP_rel": 0.110591}
MICROSOFT_SOURCE = "https://github.com/recommenders-team/recommenders#algorithm-comparison"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; floats are printed with 4 decimals."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return str(v)

    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"
    lines = ["| " + " | ".join(headers) + " |", rule]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _every(n: int) -> str:
    if n == 1:
        return "each"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"every {n}{suffix} (seeded offset)"


def _arms(metrics: Mapping[str, Any]) -> list[str]:
    return [a for a in ARMS if a in metrics] + [a for a in metrics if a not in ARMS]


def prequential_section(s: Mapping[str, Any]) -> str:
    m, k = s["metrics"], s.get("k", 10)
    rows = [(a, m[a]["HR"], m[a]["NDCG"], m[a]["MRR"], f"{s['rank_ms'][a]:.2f}") for a in _arms(m)]
    table = md_table(("method", f"HR@{k}", f"NDCG@{k}", f"MRR@{k}", "ms/query"), rows)
    notes = [
        f"Replayed {s['n_events']:,} events in timestamp order; {s['n_eligible']:,} were events of a user with history "
        f"on an item new to them; {_every(s['sample_every'])} of those was scored: "
        f"**{s['n_scored']:,} scored events**. Skipped: {s['n_new_user']:,} first events of a user, "
        f"{s['n_repeat']:,} repeats. Every event was learned. Learning took {s['learn_s']:.0f} s in total "
        "(including the learned combiner's recommend-then-learn training).",
        "ms/query is the time of `rank()` for one user: a fusion builds every method's candidate pool, a single "
        "method only its own.",
    ]
    return table + "\n\n" + "\n".join(f"* {n}" for n in notes) + "\n\n" + acceptance(s)


def acceptance(s: Mapping[str, Any]) -> str:
    """The issue's acceptance check: best fusion vs popularity (>= 2x HR) and vs item-CF alone."""
    m = s["metrics"]
    fusions = [a for a in FUSION_ARMS if a in m]
    if not fusions or "popular" not in m or "itemcf" not in m:
        return ""
    best = max(fusions, key=lambda a: m[a]["HR"])
    hr, pop, icf = m[best]["HR"], m["popular"]["HR"], m["itemcf"]["HR"]
    ratio = hr / pop if pop > 0 else float("inf")
    b, c, z = mcnemar(s["hits"][best], s["hits"]["itemcf"])
    rel = (hr / icf - 1) * 100 if icf else 0.0
    ok_pop, ok_icf = ratio >= 2.0, hr > icf
    lines = [
        "**Acceptance** (prequential HR@10):",
        f"* best fusion `{best}` {hr:.4f} vs `popular` {pop:.4f}: **{ratio:.2f}x** (needs >= 2x) -> "
        f"{'met' if ok_pop else 'NOT met'}",
        f"* `{best}` {hr:.4f} vs `itemcf` alone {icf:.4f}: {hr - icf:+.4f} ({rel:+.1f}%) "
        f"-> {'met' if ok_icf else 'NOT met'}; paired on the same events: `{best}` hit where `itemcf` missed {b}x, "
        f"the reverse {c}x, McNemar z = {z:.2f} ({'significant' if abs(z) > 1.96 else 'not significant'} at 5%)",
    ]
    half = len(s["hits"][best]) // 2
    if half:
        parts = []
        for label, sl in (("first", slice(None, half)), ("second", slice(half, None))):
            f_hits, i_hits = s["hits"][best][sl], s["hits"]["itemcf"][sl]
            parts.append(f"{label} half of the scored events `{best}` {sum(f_hits) / len(f_hits):.4f} vs `itemcf` "
                         f"{sum(i_hits) / len(i_hits):.4f}")
        lines.append("* over time: " + "; ".join(parts))
    return "\n".join(lines)


def offline_section(s: Mapping[str, Any], with_microsoft: bool) -> str:
    m, k = s["metrics"], s.get("k", 10)
    headers = ("method", f"Precision@{k}", f"Recall@{k}", f"NDCG@{k}", f"MAP@{k}", "MAP (÷|rel|)", f"HR@{k}",
               "ms/user")
    rows: list[Sequence[Any]] = [
        (a, m[a]["Precision"], m[a]["Recall"], m[a]["NDCG"], m[a]["MAP"], m[a]["MAP_rel"], m[a]["HR"],
         f"{s['rank_ms'][a]:.2f}") for a in _arms(m)
    ]
    if with_microsoft:
        ms = MICROSOFT_SAR
        rows.append(("*Microsoft Recommenders SAR — their published row, NOT ours*", ms["Precision"], ms["Recall"],
                     ms["NDCG"], "n/a", ms["MAP_rel"], "n/a", ""))
    notes = [
        f"{s['n_train']:,} training events (learned as a stream in time order, the combiner trained on them as in "
        f"the stream), {s['n_test']:,} test events; {s['n_users']:,} test users"
        + (f", of whom {s['n_cold']:,} had no training event (they get trending)" if s.get("n_cold") else
           ", every one with training history")
        + (f"; {s['n_no_relevant']:,} test users left out (all their test items were training items)"
           if s.get("n_no_relevant") else "") + ".",
        "Relevance: **every test item of the user is relevant** (binary, no rating threshold), as in Microsoft's "
        "evaluation; a user's training items are never in their list (the model ranks with `exclude_types` = every "
        "event type, and the protocol checks every list). Each metric is the mean over the test users "
        "(docs/evaluation.md has the definitions).",
        f"MAP@{k} divides the sum of precision@r over the hits by min(|relevant|, {k}) (Microsoft's current "
        "`map_at_k`); \"MAP (÷|rel|)\" divides the same sum by |relevant| (their `map`, and the `map_at_k` that "
        "produced their published table): the column to compare with their MAP.",
    ]
    if with_microsoft:
        notes.append(
            f"The Microsoft row is quoted from {MICROSOFT_SOURCE} (MovieLens-100K, k = 10, their 75/25 stratified "
            "random split with seed 42, a batch model): a published reference point, not produced by this code, on "
            "the same protocol but another draw of the split."
        )
        best = max(m, key=lambda a: (m[a]["NDCG"], a))
        ms = MICROSOFT_SAR
        notes.append(
            f"Best of ours by NDCG@{k}: `{best}` {m[best]['NDCG']:.4f} vs SAR {ms['NDCG']:.4f} "
            f"({m[best]['NDCG'] - ms['NDCG']:+.4f}); its Precision@{k} {m[best]['Precision']:.4f} vs SAR "
            f"{ms['Precision']:.4f} ({m[best]['Precision'] - ms['Precision']:+.4f})."
        )
    return md_table(headers, rows) + "\n\n" + "\n".join(f"* {n}" for n in notes)


def loo_section(s: Mapping[str, Any]) -> str:
    m, k = s["metrics"], s.get("k", 10)
    rows = [(a, m[a]["HR"], m[a]["NDCG"], m[a]["MRR"], f"{s['rank_ms'][a]:.2f}") for a in _arms(m)]
    notes = [
        f"{s['n_train']:,} training events, {s['n_test']:,} held-out events: each user's last event by (time, event "
        f"id); {s['n_users']:,} test users, every one with training history"
        + (f"; {s['n_no_relevant']:,} left out (their last item was also a training item)"
           if s.get("n_no_relevant") else "") + ".",
        f"Against all items: the model's own top-{k} over the whole catalog (no sampled negatives), minus the user's "
        f"training items (never recommended, checked). HR@{k}: the held-out item is in the top {k}; NDCG@{k}: "
        f"1/log2(1 + its rank); MRR@{k}: 1/rank. The model's state at ranking time is the end of the training part, "
        "so a user's last event may be ranked long after their previous one.",
    ]
    return (md_table(("method", f"HR@{k}", f"NDCG@{k}", f"MRR@{k}", "ms/user"), rows) + "\n\n"
            + "\n".join(f"* {n}" for n in notes))


def beyond_section(s: Mapping[str, Any]) -> str:
    b = s["beyond"]
    rows = [(a, b[a]["coverage"], b[a]["novelty"], b[a]["diversity"]) for a in _arms(b)]
    note = ("From the top-10 lists of every test user of the random split. Coverage: share of the 1,682-item "
            "catalog recommended to anyone. Novelty: mean -log2(share of training users who engaged the item), bits. "
            "Diversity: mean pairwise genre Jaccard distance within a list (genres from the catalog).")
    return md_table(("method", "catalog coverage", "novelty (bits)", "intra-list diversity"), rows) + "\n\n* " + note


#: How the bounds table names each bound, and what it bounds (the notes under the table).
BOUND_NOTES: dict[str, str] = {
    "model.history_cap": "item-CF's history cap: the most recent items of the user that a new event pairs with "
                         "(per-event work and co-occurrence pairs; 0 = all)",
    "model.row_cap": "item-CF's row cap: co-occurrence entries kept per item row, the largest C[a][b]/sqrt(norm_b) "
                     "(a row is pruned when it grows past 1.25x the cap; a pruned pair restarts from 0; 0 = all, "
                     "exact; make bench's scale run uses 100)",
    "model.hybrid.usercf_max_raters": "user-CF's fan-out cap: a new event pairs with at most this many recent raters "
                                      "of the item (older raters are evicted, so pairs that only co-rated evicted "
                                      "items are missed; 0 = all, exact)",
    "model.hybrid.usercf_row_cap": "user-CF's row cap: user-user dot products kept per user row, pruned like item-CF's "
                                   "rows (0 = all, exact; make bench's scale run uses 50)",
}


def dislike_section(base: Mapping[str, Any], neg: Mapping[str, Any]) -> str:
    """The dislike protocol: each mode's metrics with the chosen low ratings learned as ratings and as dislikes,
    the difference, and McNemar's paired z of HR (both replays score the same events)."""
    k = base.get("k", 10)
    mb, mn = base["metrics"], neg["metrics"]
    rows = []
    for a in _arms(mb):
        _, _, z = mcnemar(base["hits"][a], neg["hits"][a]) if "hits" in base and "hits" in neg else (0, 0, 0.0)
        rows.append((a, mb[a]["HR"], mn[a]["HR"], f"{mn[a]['HR'] - mb[a]['HR']:+.4f}", f"{0.0 - z:+.2f}",
                     mb[a]["NDCG"], mn[a]["NDCG"], f"{mn[a]['NDCG'] - mb[a]['NDCG']:+.4f}",
                     mb[a]["MRR"], mn[a]["MRR"], f"{mn[a]['MRR'] - mb[a]['MRR']:+.4f}"))
    table = md_table(("method", f"HR@{k} rated", "dislike", "Δ", "z", f"NDCG@{k} rated", "dislike", "Δ",
                      f"MRR@{k} rated", "dislike", "Δ"), rows)
    v = neg.get("variant", {})
    notes = [
        f"{v.get('n_chosen', 0):,} of the {v.get('n_low', 0):,} ratings <= 2 (share {v.get('share', 0):g}, drawn by "
        "seed and event id) are sent as `dislike` instead of the rating; the column *rated* is the same replay "
        "with them sent as ratings. Both learn every event and score the same "
        f"**{neg['n_scored']:,} events** (the chosen ones are never scored).",
        "z: McNemar's paired statistic of HR (dislike against rated; |z| > 1.96 is significant at 5%).",
    ]
    return table + "\n\n" + "\n".join(f"* {n}" for n in notes)


def bound_rows(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the bounds table, in table order: each bounds result once per row it fills (runs are shared)."""
    rows = [dict(r, **row) for r in results if r.get("kind") == "bounds"
            for row in r.get("rows") or [{"label": r["name"], "bound": "", "value": 0, "order": 0}]]
    return sorted(rows, key=lambda r: r["order"])


def _unlimited(value: int) -> str | int:
    return "unlimited" if value == 0 else value


def bounds_section(rows: Sequence[Mapping[str, Any]], configured: Mapping[str, Any] | None = None) -> str:
    table = []
    for r in rows:
        method = r.get("method", "itemcf")
        hl = r["variant"].get("half_life_s") if method == "itemcf" else None
        decay = "n/a" if method != "itemcf" else "off" if not hl else f"{hl:g} s"
        table.append((
            r["label"], f"`{r['bound']}`" if r["bound"] else "", _unlimited(r["value"]), decay,
            r["metrics"][method]["HR"], r["metrics"][method]["NDCG"],
            f"{r['learn_us']:.0f}", f"{r['rank_ms'][method]:.2f}", f"{r['pairs']:,}", f"{r['kept']:,}",
        ))
    shown = [b for b in BOUND_NOTES if any(r["bound"] == b for r in rows)]
    shared = [f"`{r['label']}` is the `{r['name']}` run" for r in rows if r.get("name", r["label"]) != r["label"]]
    notes = [
        "Each group varies one bound and runs the one method it bounds alone (`mode=itemcf` or `mode=usercf`, the "
        "other candidate generators switched off), same prequential protocol and scored events as above; "
        + (f"the other bounds keep their configured values ({_configured(configured)}); " if configured else "")
        + "value 0 is the exact (unbounded) variant, *unlimited* in the table."
        + (f" Rows with the same settings are one run, shown in each group: {'; '.join(shared)}." if shared else ""),
        *(f"`{b}`: {BOUND_NOTES[b]}." for b in shown),
        "µs/event: learning cost per event (the method plus the trending and bookkeeping every model keeps); "
        "ms/query: `rank()`; pairs: entries stored in the rows, both directions (item-CF: co-occurrence entries; "
        "user-CF: user-user dot products); history / raters: item-CF's recent items kept over all users, user-CF's "
        "raters kept over all items. An item-CF neighbour list is recomputed from the current sums before it is read "
        "when its row changed (and, with `model.hybrid.refresh_on_norms`, when a column's norm moved: exact); "
        "user-CF's neighbours are computed at query time. Decay (the user's history half-life) applies to item-CF "
        "only. Timings were taken while the other evaluation tasks ran on the "
        "second core.",
    ]
    headers = ("variant", "bound", "value", "decay half-life", "HR@10", "NDCG@10", "µs/event", "ms/query", "pairs",
               "history / raters")
    return md_table(headers, table) + "\n\n" + "\n".join(f"* {n}" for n in notes)


def _configured(c: Mapping[str, Any]) -> str:
    hl = c.get("half_life_s")
    parts = [f"history cap {_unlimited(c['history_cap'])}", f"decay {'off' if not hl else f'{hl:g} s'}",
             f"row_cap {_unlimited(c['row_cap'])}", f"usercf_max_raters {_unlimited(c['usercf_max_raters'])}",
             f"usercf_row_cap {_unlimited(c['usercf_row_cap'])}"]
    return ", ".join(parts)


# -- plots ----------------------------------------------------------------------------------------------
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_prequential(s: Mapping[str, Any], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    for arm in _arms(s["curves"]):
        curve = s["curves"][arm]
        if curve:
            xs, ys = zip(*curve, strict=True)
            ax.plot(xs, ys, marker="o", markersize=3, label=arm, linewidth=2 if arm in FUSION_ARMS else 1.2,
                    linestyle="-" if arm in FUSION_ARMS else "--")
    ax.set_xlabel("events replayed")
    ax.set_ylabel(f"HR@{s.get('k', 10)} in the window")
    ax.set_title(f"Prequential HR@{s.get('k', 10)} per window of {s['window']:,} events (MovieLens-100K)")
    ax.grid(alpha=0.3)
    ax.legend(ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_offline(splits: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """NDCG@k and Precision@k per mode of each split (HR@k instead of Precision for leave-last-one-out)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4.5), squeeze=False)
    for ax, (title, s) in zip(axes[0], splits.items(), strict=True):
        arms = _arms(s["metrics"])
        k = s.get("k", 10)
        second = "HR" if title == "leave-last-one-out" else "Precision"
        width = 0.4
        xs = range(len(arms))
        ax.bar([x - width / 2 for x in xs], [s["metrics"][a]["NDCG"] for a in arms], width, label=f"NDCG@{k}")
        ax.bar([x + width / 2 for x in xs], [s["metrics"][a][second] for a in arms], width, label=f"{second}@{k}")
        if title == "random split":
            ax.axhline(MICROSOFT_SAR["NDCG"], color="tab:red", linestyle=":", linewidth=1,
                       label="SAR NDCG@10 (published)")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(arms, rotation=30, ha="right")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


#: Bar colours of the bounds plot: per bound (the history cap: without / with decay).
BOUND_COLORS: dict[str, str] = {"model.row_cap": "tab:green", "model.hybrid.usercf_max_raters": "tab:purple",
                                "model.hybrid.usercf_row_cap": "tab:brown"}


def plot_bounds(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, max(4.5, 1.2 + 0.28 * len(rows))))
    labels = [r["label"] for r in rows]
    colors = [BOUND_COLORS.get(r.get("bound", ""),
                               "tab:orange" if r.get("method", "itemcf") == "itemcf" and r["variant"].get("half_life_s")
                               else "tab:blue")
              for r in rows]
    ax.barh(range(len(rows)), [r["metrics"][r.get("method", "itemcf")]["HR"] for r in rows], color=colors)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("prequential HR@10 (the bounded method alone)")
    ax.set_title("Cost of the bounds. Item-CF: history cap (blue; orange: decay on), row cap (green)\n"
                 "User-CF: fan-out max_raters (purple), row cap (brown)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- diversity (MMR) ------------------------------------------------------------------------------------
MAX_HR_LOSS = 0.05
"""The recommended arm: the most diverse lists that lose at most this share of the λ = 0 arm's HR@k."""
ILD_NAMES = {"cf": "co-occurrence cosine", "content": "content cosine", "genre": "genre Jaccard"}
"""The intra-list diversity yardsticks of the diversity task (``ILD_<key>``): mean pairwise distance within a list."""


def _ild(s: Mapping[str, Any], arm: str, kind: str | None = None) -> float:
    return float(s["diversity"][arm][f"ILD_{kind or s['headline']}"])


def recommended_lambda(s: Mapping[str, Any], oracle: bool = False) -> str | None:
    """The arm with the highest headline intra-list diversity among those within :data:`MAX_HR_LOSS` of the first
    arm's HR@k (λ = 0, the mode's own lists); None if no other arm qualifies. The oracle similarity (an upper bound
    that sees future events) is never recommended; ``oracle``: the best oracle arm instead (the bound)."""
    arms = list(s["diversity"])
    base = s["metrics"][arms[0]]["HR"]
    spec = s.get("arms", {})
    ok = [a for a in arms[1:] if s["metrics"][a]["HR"] >= (1 - MAX_HR_LOSS) * base
          and (spec.get(a, {}).get("similarity") == "oracle") == oracle]
    return max(ok, key=lambda a: _ild(s, a)) if ok else None


def diversity_section(s: Mapping[str, Any]) -> str:
    arms = list(s["diversity"])
    base, k = arms[0], s.get("k", 10)
    hr0 = s["metrics"][base]["HR"]
    kinds = [s["headline"], *[x for x in ILD_NAMES if x != s["headline"]]]
    best = recommended_lambda(s)

    def rel(value: float, ref: float) -> str:
        return f"{100 * (value / ref - 1):+.1f}%" if ref else "n/a"

    rows = [(f"**{a}**" if a == best else a, s["metrics"][a]["HR"], rel(s["metrics"][a]["HR"], hr0),
             s["metrics"][a]["NDCG"],
             *[x for kind in kinds for x in (_ild(s, a, kind), rel(_ild(s, a, kind), _ild(s, base, kind)))],
             s["diversity"][a]["coverage"]) for a in arms]
    head = [f"ILD {ILD_NAMES[kind]}" + (" (headline)" if kind == s["headline"] else "") for kind in kinds]
    table = md_table(("arm", f"HR@{k}", f"HR vs {base}", f"NDCG@{k}",
                      *[x for h in head for x in (h, f"vs {base}")], "catalog coverage"), rows)
    pick = (f"Most diverse within {100 * MAX_HR_LOSS:g}% of the HR@{k} of {base}: **{best}**, "
            f"headline ILD {rel(_ild(s, best), _ild(s, base))} for {rel(s['metrics'][best]['HR'], hr0)} HR@{k}."
            if best else f"No arm keeps HR@{k} within {100 * MAX_HR_LOSS:g}% of {base}.")
    bound = recommended_lambda(s, oracle=True)
    if bound:
        pick += (f" Upper bound, the oracle similarity within the same budget: {bound}, headline ILD "
                 f"{rel(_ild(s, bound), _ild(s, base))} for {rel(s['metrics'][bound]['HR'], hr0)} HR@{k}.")
    note = (f"Mode `{s['mode']}`, prequential (the same scored events as section 1's sampling). An arm `λ=x sim/p` "
            f"picks each list by MMR from the mode's best p: score − λ · max similarity (`sim`: content cosine, "
            "item-CF neighbour cosine, or `oracle`: the headline yardstick itself, future events included, an upper "
            "bound not a model) to the items already picked, scores min-max scaled per list. Intra-list "
            "diversity (ILD) = mean pairwise distance within a list: 1 − co-occurrence cosine of the items' user sets "
            "over every event of the run (the headline: the collaborative distance of CF papers, a yardstick fixed "
            "apart from the model), 1 − cosine of the content vectors, genre Jaccard distance (section 3). Coverage: "
            "share of the catalog recommended to anyone.")
    return f"{table}\n\n{pick}\n\n* {note}"


def plot_diversity(s: Mapping[str, Any], path: Path) -> None:
    """HR@k against the headline intra-list diversity: one line per similarity and pool, from λ = 0 up."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    arms = list(s["diversity"])
    base = arms[0]
    spec = s.get("arms") or {a: {"similarity": "content", "pool": s.get("pool", 50)} for a in arms}
    lines: dict[tuple[str, int], list[str]] = {}
    for a in arms[1:]:
        lines.setdefault((spec[a]["similarity"], spec[a]["pool"]), []).append(a)
    for (by, pool), members in lines.items():
        pts = [base, *members]
        ax.plot([_ild(s, a) for a in pts], [s["metrics"][a]["HR"] for a in pts], marker="o",
                label=f"MMR {by}, pool {pool}")
        for a in members:
            ax.annotate(f"{spec[a]['lambda']:g}" if "lambda" in spec[a] else a, (_ild(s, a), s["metrics"][a]["HR"]),
                        textcoords="offset points", xytext=(3, 3), fontsize=7)
    hr0 = s["metrics"][base]["HR"]
    ax.axhline((1 - MAX_HR_LOSS) * hr0, color="grey", ls=":", lw=1, label=f"HR@k −{100 * MAX_HR_LOSS:g}%")
    ax.axvline(1.2 * _ild(s, base), color="grey", ls="--", lw=1, label="ILD +20%")
    ax.set_xlabel(f"intra-list diversity ({ILD_NAMES[s['headline']]} distance)")
    ax.set_ylabel(f"prequential HR@{s.get('k', 10)}")
    ax.set_title(f"MMR re-rank of {s['mode']}: accuracy against diversity, labels = λ (MovieLens-100K)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
