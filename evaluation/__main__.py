"""``python -m evaluation``: evaluate the recommenders on MovieLens-100K and write tables and plots.

Runs every mode of the model (:mod:`core.v2.model`) through:

1. the prequential protocol (rank-then-learn over the time-ordered stream), the headline;
2. three offline protocols, each learning a training part and ranking every test user once:
   a. the random 75/25 per-user split with Microsoft Recommenders' metrics, SAR's published row beside it;
   b. a per-user temporal split (each user's last 20% of events by time in test);
   c. leave-last-one-out (each user's last event in test), HR@10 / NDCG@10 against every item;
3. beyond-accuracy metrics (coverage, novelty, intra-list diversity) of the random-split lists, and the MMR
   diversity re-rank of the configured mode for several λ, similarities and pools (``--mmr-lambdas``,
   ``--mmr-similarities``, ``--mmr-pools``): prequential HR@10 / NDCG@10 against intra-list diversity (co-occurrence,
   content and genre distance) and coverage, with the recommended arm;
4. the cost of the model's bounds ("cost of the bounds" table): each bound varied alone, the others as
   configured, with the one method it bounds running alone --
   item-CF's history cap (``model.history_cap``, ``--caps``; with and without time decay) and co-occurrence row cap
   (``model.row_cap``, ``--row-caps``); user-CF's fan-out cap (``model.hybrid.usercf_max_raters``,
   ``--max-raters``) and user-user row cap (``model.hybrid.usercf_row_cap``, ``--usercf-row-caps``). 0 is the
   exact (unbounded) variant; rows with the same settings share one run (e.g. ``row_cap`` 0 is the configured
   history cap's run with decay).
5. negative feedback (``dislike``): a seeded share (``--dislike-share``) of the ratings <= 2 sent as ``dislike``
   instead, prequential, beside the same replay with them sent as ratings; both score the same events (the chosen
   low ratings are learned, never scored).

Writes ``results.md``, ``results.json``, ``prequential.png``, ``offline.png``, ``diversity.png`` and ``bounds.png``
into ``--out``
and prints the Markdown. ``--docs DIR`` also copies the plots to ``DIR/eval-<name>.png`` (``docs/img`` is the
committed folder docs/evaluation.md embeds; ``results/`` is git-ignored).
"""

from __future__ import annotations

import os

# Small matrix-vector products (the content model) are ~40x slower with a multi-threaded BLAS on a small box,
# and the tasks already use every core: one BLAS thread per process. Set before numpy is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import multiprocessing  # noqa: E402
import queue  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402
from tqdm import tqdm  # noqa: E402

from config import ConfigError, load_config, resolve_path  # noqa: E402
from core.v2.settings import DIVERSITY_SIMILARITIES, Settings  # noqa: E402
from evaluation import report  # noqa: E402
from evaluation.runner import MMR_POOL, OFFLINE_KINDS, ORACLE, BoundRow, Options, Task, run_task  # noqa: E402

logger = logging.getLogger("evaluation")

PROTOCOLS = ("prequential", "random", "temporal", "loo", "diversity", "bounds", "dislike")
DISLIKE_TASKS = ("dislike: as ratings", "dislike: as dislikes")
"""The dislike protocol's two replays: the chosen low ratings sent as ratings (the baseline), then as dislikes."""
#: Each offline protocol's result name (the key in results.json), in report order.
OFFLINE_NAMES: dict[str, str] = {"random": "random split", "temporal": "temporal split", "loo": "leave-last-one-out"}
DEFAULT_CAPS = "10,20,50,0"
DEFAULT_ROW_CAPS = "0,100,60"  # exact; make bench's scale run (model.row_cap=100); the tightest at top_k 60
DEFAULT_MAX_RATERS = "0,50,20"  # exact; the configured default (model.hybrid.usercf_max_raters); tighter
DEFAULT_USERCF_ROW_CAPS = "0,50"  # exact; make bench's scale run (model.hybrid.usercf_row_cap=50)
DEFAULT_SAMPLE_EVERY = 10
DEFAULT_MMR_LAMBDAS = "0,0.3,0.5,0.7,1"
DEFAULT_MMR_SIMILARITIES = "content,itemcf,oracle"
DEFAULT_MMR_POOLS = "50,200"
DOCS_DIR = "docs/img"
EXAMPLES = """\
examples:
  python -m evaluation                                  # the full run (what `make eval` runs)
  python -m evaluation --sample-every 1                 # score every eligible event (slower, no sampling)
  python -m evaluation --limit 5000 --protocols prequential --caps 50
  python -m evaluation --protocols random,temporal,loo  # the offline protocols alone (about a minute)
  python -m evaluation --protocols bounds --caps '' --row-caps '' --usercf-row-caps '' --max-raters 0,50,10
  python -m evaluation --param half_life_s=null --param 'fusion_weights={itemcf: 1, usercf: 1, content: 0, popular: 0}'
  python -m evaluation --set model.top_k=30 --jobs 1 --out /tmp/eval
  python -m evaluation --docs                           # also copy the plots to docs/img/ (docs/evaluation.md's)
  python -m evaluation --protocols dislike --dislike-share 1  # every rating <= 2 sent as a dislike instead
  python -m evaluation --protocols diversity --mmr-similarities oracle --mmr-pools 50,200  # MMR's upper bound
"""


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _numbers(p: argparse.ArgumentParser, option: str, raw: str, kind: Callable[[str], float], least: float,
             what: str) -> list[Any]:
    """A non-empty comma-separated list of ``kind`` values >= ``least``; the error names the option and the value."""
    try:
        values = [kind(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        p.error(f"{option} {raw!r}: a comma-separated list of {what}")
    if not values or any(not v >= least for v in values):
        p.error(f"{option} {raw!r}: give one or more {what}")
    return values


def _bound_values(p: argparse.ArgumentParser, option: str, raw: str) -> list[int]:
    """A comma-separated list of integers >= 0 (0 = unlimited), duplicates dropped; '' = no rows."""
    values: list[int] = []
    for item in (x.strip() for x in raw.split(",")):
        if not item:
            continue
        try:
            value = int(item)
        except ValueError:
            p.error(f"{option} {raw!r}: {item!r} is not an integer")
        if value < 0:
            p.error(f"{option} {raw!r}: {value} must be >= 0 (0 = unlimited)")
        if value not in values:
            values.append(value)
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m evaluation",
        description="Evaluate every mode of the recommender on MovieLens-100K: prequential replay (the headline), "
                    "a random 75/25 per-user split (Microsoft Recommenders' metrics, SAR's published row beside "
                    "it), a per-user temporal split, leave-last-one-out, beyond-accuracy metrics and the accuracy "
                    "cost of the model's bounds on item-CF's and user-CF's work and state (history cap, row caps, "
                    "user-CF fan-out). Offline, a user's training items are never recommended to them. "
                    "Writes results.md, results.json and PNG plots into --out and prints the tables.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="YAML merged over config/default.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config override, e.g. --set model.history_cap=20 (repeatable)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="model setting (a field of core.v2.settings.Settings) overriding the config, VALUE "
                        "parsed as YAML, e.g. --param candidate_pool=100 (repeatable)")
    p.add_argument("--data-dir", metavar="DIR", help="ml-100k directory (default: config data.movielens_dir, "
                                                     "else the recbole wheel)")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="use only the first N events (quick runs)")
    p.add_argument("--out", default="results/eval", metavar="DIR", help="output directory (default: %(default)s)")
    p.add_argument("--docs", nargs="?", const=DOCS_DIR, metavar="DIR",
                   help=f"also copy the plots to DIR/eval-<name>.png (DIR default: {DOCS_DIR}, the folder "
                        "docs/evaluation.md embeds)")
    p.add_argument("--protocols", default=",".join(PROTOCOLS), metavar="LIST",
                   help=f"comma-separated subset of {','.join(PROTOCOLS)} (default: all)")
    p.add_argument("--k", type=_positive_int, default=10, help="list length and metric cutoff (default: %(default)s)")
    p.add_argument("--sample-every", type=_positive_int, default=DEFAULT_SAMPLE_EVERY, metavar="S",
                   help="prequential: score every S-th eligible event, learn from all (default: %(default)s)")
    p.add_argument("--window", type=_positive_int, default=5000, metavar="EVENTS",
                   help="prequential curve: events per window (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling, splits and negatives (default: %(default)s)")
    p.add_argument("--random-train-frac", type=float, default=0.75, metavar="F",
                   help="random split: each user's share of events for training, the rest for test (default: "
                        "%(default)s, Microsoft Recommenders' split)")
    p.add_argument("--temporal-test-frac", type=float, default=0.2, metavar="F",
                   help="temporal split: each user's last share of events by time for test (default: %(default)s)")
    p.add_argument("--caps", default=DEFAULT_CAPS, metavar="LIST",
                   help="bounds table: item-CF history caps (model.history_cap), 0 = unlimited, each with and "
                        "without decay; '' = none (default: %(default)s)")
    p.add_argument("--row-caps", default=DEFAULT_ROW_CAPS, metavar="LIST",
                   help="bounds table: item-CF co-occurrence row caps (model.row_cap), 0 = all (exact), else >= "
                        "model.top_k; '' = none (default: %(default)s: exact, make bench's scale run, tighter)")
    p.add_argument("--max-raters", default=DEFAULT_MAX_RATERS, metavar="LIST",
                   help="bounds table: user-CF fan-out caps (model.hybrid.usercf_max_raters), 0 = all raters "
                        "(exact); '' = none (default: %(default)s: exact, the configured default, tighter)")
    p.add_argument("--usercf-row-caps", default=DEFAULT_USERCF_ROW_CAPS, metavar="LIST",
                   help="bounds table: user-CF user-user row caps (model.hybrid.usercf_row_cap), 0 = all (exact), "
                        "else >= model.hybrid.usercf_top_k; '' = none (default: %(default)s: exact, make bench's "
                        "scale run)")
    p.add_argument("--dislike-share", type=float, default=0.5, metavar="F",
                   help="dislike protocol: share of the ratings <= 2 sent as dislike instead (seeded per event; "
                        "default: %(default)s)")
    p.add_argument("--mmr-lambdas", default=DEFAULT_MMR_LAMBDAS, metavar="LIST",
                   help="diversity table: MMR λ values, the first the reference (default: %(default)s)")
    p.add_argument("--mmr-similarities", default=DEFAULT_MMR_SIMILARITIES, metavar="LIST",
                   help="diversity table: MMR similarities, each of content, itemcf or oracle (the headline yardstick "
                        "itself, future events included: an upper bound; default: %(default)s)")
    p.add_argument("--mmr-pools", default=DEFAULT_MMR_POOLS, metavar="LIST",
                   help="diversity table: MMR candidate pools (the mode's best this many; default: %(default)s)")
    p.add_argument("--decay-half-life-s", type=float, metavar="S",
                   help="bounds table: half-life of the 'decay on' rows (default: the model's half_life_s, or 600)")
    p.add_argument("--jobs", type=_positive_int, default=min(2, os.cpu_count() or 1),
                   help="worker processes (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="log INFO messages")
    args = p.parse_args(argv)
    protocols = [x.strip() for x in args.protocols.split(",") if x.strip()]
    bad = [x for x in protocols if x not in PROTOCOLS]
    if bad or not protocols:
        p.error(f"--protocols {args.protocols!r}: unknown {', '.join(bad) or '(empty)'}; "
                f"choose from {', '.join(PROTOCOLS)}")
    args.protocols = protocols
    args.mmr_lambdas = _numbers(p, "--mmr-lambdas", args.mmr_lambdas, float, 0, "numbers >= 0, e.g. 0,0.2,0.5")
    sims = [x.strip() for x in args.mmr_similarities.split(",") if x.strip()]
    if not sims or any(x not in (*DIVERSITY_SIMILARITIES, ORACLE) for x in sims):
        p.error(f"--mmr-similarities {args.mmr_similarities!r}: one or more of "
                f"{', '.join((*DIVERSITY_SIMILARITIES, ORACLE))}")
    args.mmr_similarities = sims
    args.mmr_pools = _numbers(p, "--mmr-pools", args.mmr_pools, int, 1, "integers >= 1, e.g. 50,100")
    args.caps = _bound_values(p, "--caps", args.caps)
    args.row_caps = _bound_values(p, "--row-caps", args.row_caps)
    args.max_raters = _bound_values(p, "--max-raters", args.max_raters)
    args.usercf_row_caps = _bound_values(p, "--usercf-row-caps", args.usercf_row_caps)
    if not 0 < args.dislike_share <= 1:
        p.error(f"--dislike-share {args.dislike_share!r} must be in (0, 1]")
    for option, value in (("--random-train-frac", args.random_train_frac),
                          ("--temporal-test-frac", args.temporal_test_frac)):
        if not 0 < value < 1:
            p.error(f"{option} {value!r} must be between 0 and 1 (exclusive)")
    return args


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--param {item!r} must look like NAME=VALUE")
        try:
            params[name.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ValueError(f"--param {item!r}: cannot parse value {raw!r}: {exc}") from exc
    return params


@dataclass(frozen=True)
class Configured:
    """The model's configured bounds: a row of the bounds table varies one of them and keeps the others."""

    history_cap: int = 50
    half_life_s: float | None = None
    row_cap: int = 0
    usercf_max_raters: int = 50
    usercf_row_cap: int = 0

    @classmethod
    def of(cls, s: Settings) -> Configured:
        return cls(history_cap=s.history_cap, half_life_s=s.half_life_s, row_cap=s.row_cap,
                   usercf_max_raters=s.usercf_max_raters, usercf_row_cap=s.usercf_row_cap)


def _label(value: int) -> str:
    return "unlimited" if value == 0 else str(value)


def _descending(values: Sequence[int]) -> list[int]:
    return sorted(values, key=lambda c: (c != 0, -c))  # unlimited (exact) first: the slowest


def bound_rows(args: argparse.Namespace, half_life_s: float,
               configured: Configured) -> list[tuple[BoundRow, str, dict[str, Any]]]:
    """The rows of the bounds table in display order, as ``(row, method, model arguments of its run)``.

    Every run states all the bounds of its method, so rows with equal settings have equal arguments.
    """
    c = configured
    specs: list[tuple[str, int, str, str, dict[str, Any]]] = []  # (bound, value, label, method, variant)

    def itemcf(**kw: Any) -> dict[str, Any]:
        return {"history_cap": c.history_cap, "half_life_s": c.half_life_s, "row_cap": c.row_cap, **kw}

    def usercf(**kw: Any) -> dict[str, Any]:
        return {"usercf_max_raters": c.usercf_max_raters, "usercf_row_cap": c.usercf_row_cap, **kw}

    for cap in _descending(args.caps):
        specs.append(("model.history_cap", cap, f"itemcf cap={_label(cap)}", "itemcf",
                      itemcf(history_cap=cap, half_life_s=None)))
        specs.append(("model.history_cap", cap, f"itemcf cap={_label(cap)} +decay", "itemcf",
                      itemcf(history_cap=cap, half_life_s=half_life_s)))
    for cap in _descending(args.row_caps):
        specs.append(("model.row_cap", cap, f"itemcf row_cap={_label(cap)}", "itemcf", itemcf(row_cap=cap)))
    for n in _descending(args.max_raters):
        specs.append(("model.hybrid.usercf_max_raters", n, f"usercf max_raters={_label(n)}", "usercf",
                      usercf(usercf_max_raters=n)))
    for cap in _descending(args.usercf_row_caps):
        specs.append(("model.hybrid.usercf_row_cap", cap, f"usercf row_cap={_label(cap)}", "usercf",
                      usercf(usercf_row_cap=cap)))
    return [(BoundRow(label, bound, value, order), method, variant)
            for order, (bound, value, label, method, variant) in enumerate(specs)]


def build_tasks(args: argparse.Namespace, n_events: int, half_life_s: float,
                configured: Configured | None = None) -> list[Task]:
    """The tasks in the order they are started (longest first, so two workers finish close together).

    Bounds rows with equal settings (e.g. ``row_cap`` 0 and the configured history cap with decay) share one
    task, named after its first row. The history-cap runs start first, the other bounds (shorter runs) after
    them, user-CF first (the slower), and the offline protocols (the shortest) last, to fill the workers' ends.
    An offline task's progress counts its training events learned, then its test events as the modes rank.
    """
    configured = configured or Configured()
    head: list[Task] = []
    tail: list[Task] = []
    if "prequential" in args.protocols:
        head.append(Task("prequential", "prequential", n_events))
    if "dislike" in args.protocols:
        share = getattr(args, "dislike_share", 0.5)
        head += [Task(name, "dislike", n_events, {"share": share, "as_dislike": as_dislike})
                 for name, as_dislike in zip(DISLIKE_TASKS, (False, True), strict=True)]
    if "diversity" in args.protocols:
        head.append(Task("diversity", "diversity", n_events, {
            "lambdas": tuple(args.mmr_lambdas), "similarities": tuple(getattr(args, "mmr_similarities", ("content",))),
            "pools": tuple(getattr(args, "mmr_pools", (MMR_POOL,)))}))
    if "bounds" in args.protocols:
        runs: dict[tuple[Any, ...], tuple[str, dict[str, Any], list[BoundRow]]] = {}
        for row, method, variant in bound_rows(args, half_life_s, configured):
            key = (method, *sorted(variant.items()))
            runs.setdefault(key, (method, variant, []))[2].append(row)
        bounds = [Task(rows[0].label, "bounds", n_events, variant, method, tuple(rows))
                  for method, variant, rows in runs.values()]
        head += [t for t in bounds if t.rows[0].bound == "model.history_cap"]
        rest = [t for t in bounds if t.rows[0].bound != "model.history_cap"]
        tail += sorted(rest, key=lambda t: t.method != "usercf")
    tail += [Task(OFFLINE_NAMES[kind], kind, n_events) for kind in OFFLINE_KINDS if kind in args.protocols]
    return head + tail


def check_bounds(args: argparse.Namespace, settings: Settings) -> None:
    """ValueError naming the option and value of a row cap the model would reject (below its top-k)."""
    for option, values, top_k, key in (
            ("--row-caps", args.row_caps, settings.top_k, "model.top_k"),
            ("--usercf-row-caps", args.usercf_row_caps, settings.usercf_top_k, "model.hybrid.usercf_top_k")):
        for value in values:
            if value and value < top_k:
                raise ValueError(f"{option}: {value} must be 0 (all) or at least {key} {top_k}")


def run_tasks(tasks: Sequence[Task], opts: Options, jobs: int, progress: bool) -> dict[str, dict[str, Any]]:
    """Run the tasks (in ``jobs`` worker processes when > 1) with one progress bar each."""
    bars = {t.name: tqdm(total=t.total, desc=f"{t.name:<28}", unit="ev", position=i, leave=True,
                         disable=not progress, dynamic_ncols=True, mininterval=0.5)
            for i, t in enumerate(tasks)}
    results: dict[str, dict[str, Any]] = {}
    try:
        if jobs == 1:
            for t in tasks:
                results[t.name] = run_task(t, opts, bars[t.name].update)
            return results
        with multiprocessing.Manager() as manager:
            updates = manager.Queue()
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                pending: dict[Future[dict[str, Any]], str] = {
                    pool.submit(run_task, t, opts, _QueueProgress(updates, t.name)): t.name for t in tasks
                }
                while pending:
                    done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    _drain(updates, bars)
                    for fut in done:
                        name = pending.pop(fut)
                        results[name] = fut.result()
                _drain(updates, bars)
        return results
    finally:
        for bar in bars.values():
            bar.close()


class _QueueProgress:
    """A picklable progress callback that forwards counts to the parent's bars."""

    def __init__(self, q: Any, name: str) -> None:
        self.q, self.name = q, name

    def __call__(self, n: int) -> None:
        self.q.put((self.name, n))


def _drain(updates: Any, bars: dict[str, Any]) -> None:
    while True:
        try:
            name, n = updates.get_nowait()
        except queue.Empty:
            return
        bars[name].update(n)


def render(results: dict[str, dict[str, Any]], meta: dict[str, Any], k: int) -> str:
    parts = [f"# Evaluation on MovieLens-100K ({meta['date']})", ""]
    parts.append(f"Total runtime **{meta['runtime_s']:.0f} s** with {meta['jobs']} worker process(es) on "
                 f"{meta['cpus']} CPU(s). Model settings: `{json.dumps(meta['model'], sort_keys=True)}`. "
                 f"Seed {meta['seed']}. Command: `{' '.join(['python -m evaluation', *meta.get('argv', [])])}`.")
    pre = results.get("prequential")
    if pre:
        pre["k"] = k
        parts += ["", f"## 1. Prequential (rank-then-learn), HR@{k} / NDCG@{k} / MRR@{k}", "",
                  report.prequential_section(pre)]
        comb = pre.get("combiner")
        if comb:
            weights = ", ".join(f"{n} {v:+.2f}" for n, v in comb["weights"].items())
            parts += ["", f"Learned combiner after the stream ({comb['examples']:,} training examples): {weights}."]
        parts += ["", "Plot: `prequential.png`."]
    pct = round(100 * meta.get("random_train_frac", 0.75))
    test_pct = round(100 * meta.get("temporal_test_frac", 0.2))
    offline_titles = {
        "random split": f"2a. Random {pct}/{100 - pct} per-user split (seeded; Microsoft Recommenders' protocol)",
        "temporal split": f"2b. Offline temporal split per user (each user's last {test_pct}% of events by time)",
        "leave-last-one-out": f"2c. Leave-last-one-out (each user's last event), HR@{k} / NDCG@{k} against every item",
    }
    for key, title in offline_titles.items():
        if key in results:
            results[key]["k"] = k
            section = (report.loo_section(results[key]) if key == "leave-last-one-out"
                       else report.offline_section(results[key], with_microsoft=key == "random split"))
            parts += ["", f"## {title}", "", section]
    if "random split" in results:
        parts += ["", "## 3. Beyond accuracy (random split lists)", "", report.beyond_section(results["random split"])]
    if "diversity" in results:
        results["diversity"]["k"] = k
        parts += ["", f"## 3b. Diversity: MMR re-rank, prequential HR@{k} against intra-list diversity", "",
                  report.diversity_section(results["diversity"]), "", "Plot: `diversity.png`."]
    bounds = report.bound_rows(results.values())
    if bounds:
        parts += ["", "## 4. Cost of the bounds (item-CF and user-CF alone, prequential)", "",
                  report.bounds_section(bounds, meta.get("configured"))]
    if all(name in results for name in DISLIKE_TASKS):
        base, neg = (results[name] for name in DISLIKE_TASKS)
        parts += ["", f"## 5. Negative feedback: low ratings sent as `dislike` (prequential), HR@{k} / NDCG@{k} / "
                      f"MRR@{k}", "", report.dislike_section(base, neg)]
    return "\n".join(parts) + "\n"


def copy_plots(plots: Sequence[Path], docs: Path) -> list[Path]:
    """Copy the plots of this run to ``docs/eval-<name>.png``; returns the copies."""
    docs.mkdir(parents=True, exist_ok=True)
    copied = []
    for plot in plots:
        target = docs / f"eval-{plot.name}"
        shutil.copyfile(plot, target)
        copied.append(target)
    return copied


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    try:
        cfg = load_config(args.config, args.overrides)
        params = parse_params(args.param)
        probe = Settings.from_config(cfg["model"], **params)  # fail fast on bad settings
        check_bounds(args, probe)
    except (ConfigError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    half_life = args.decay_half_life_s or probe.half_life_s or 600.0
    from ingest.movielens import DatasetNotFound, load_events

    data_dir = args.data_dir or (str(resolve_path(cfg["data"]["movielens_dir"])) if cfg["data"].get("movielens_dir")
                                 else None)
    try:
        n_events = len(load_events(data_dir, limit=args.limit))
    except DatasetNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    opts = Options(model_cfg=cfg["model"], params=params, data_dir=data_dir, limit=args.limit, k=args.k,
                   sample_every=args.sample_every, window=args.window, seed=args.seed,
                   random_train_frac=args.random_train_frac, temporal_test_frac=args.temporal_test_frac)
    configured = Configured.of(probe)
    tasks = build_tasks(args, n_events, half_life, configured)
    logger.info("running %d tasks with %d workers", len(tasks), args.jobs)
    results = run_tasks(tasks, opts, min(args.jobs, len(tasks)), progress=not args.no_progress)
    runtime = time.perf_counter() - started

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "runtime_s": runtime,
            "jobs": min(args.jobs, len(tasks)), "cpus": os.cpu_count(), "seed": args.seed,
            "model": results.get("prequential", {}).get("model") or {"half_life_s": probe.half_life_s},
            "argv": list(sys.argv[1:] if argv is None else argv), "configured": asdict(configured),
            "random_train_frac": args.random_train_frac,
            "temporal_test_frac": args.temporal_test_frac}
    md = render(results, meta, args.k)
    plots: list[Path] = []
    if "prequential" in results:
        plots.append(out / "prequential.png")
        report.plot_prequential(results["prequential"], plots[-1])
    splits: dict[str, dict[str, Any]] = {n: results[n] for n in OFFLINE_NAMES.values() if n in results}
    if splits:
        plots.append(out / "offline.png")
        report.plot_offline(splits, plots[-1])
    if "diversity" in results:
        plots.append(out / "diversity.png")
        report.plot_diversity(results["diversity"], plots[-1])
    bounds = report.bound_rows(results.values())
    if bounds:
        plots.append(out / "bounds.png")
        report.plot_bounds(bounds, plots[-1])
    (out / "results.md").write_text(md, encoding="utf-8")
    serialisable = {name: {k: v for k, v in r.items() if k != "hits"} for name, r in results.items()}
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": serialisable}, indent=1, default=str),
                                      encoding="utf-8")
    print(md)
    print(f"wrote {out / 'results.md'} and plots in {out}/ ({runtime:.0f} s)", file=sys.stderr)
    if args.docs:
        copied = copy_plots(plots, Path(args.docs))
        print(f"copied {', '.join(str(p) for p in copied)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
