import json
import math
from pathlib import Path

import pytest

from config import load_config
from core.v2 import model as M
from core.v2.settings import Settings
from evaluation import report
from evaluation.__main__ import Configured, build_tasks, main, parse_args, parse_params
from evaluation.protocols import beyond_accuracy, mcnemar, prequential
from evaluation.runner import BoundRow, Model, Options, Task, run_task
from ingest.movielens import load_catalog, load_events
from udfs.events import Event

TOP10 = [f"h{r}" for r in range(1, 11)]  # the stub always ranks h1 .. h10


class Stub:
    """A recommender with a fixed ranking that records the order of calls."""

    def __init__(self, ranking: list[str] = TOP10) -> None:
        self.ranking = ranking
        self.calls: list[str] = []

    def learn_one(self, event: Event) -> None:
        self.calls.append(f"learn {event.event_id}")

    def rank(self, user: str, n: int | None = None, mode: str | None = None) -> list[tuple[str, float, str]]:
        self.calls.append(f"rank {user}")
        return [(i, 1.0, "stub") for i in self.ranking[:n]]


def e(n: int, user: str, item: str) -> Event:
    return Event(f"e{n}", user, item, "rate", 4.0, 1000 * n)


STREAM = [
    e(1, "u1", "x0"),   # u1 has no history yet: not scored
    e(2, "u1", "h1"),   # hit at rank 1: HR 1, NDCG 1, MRR 1
    e(3, "u1", "h10"),  # hit at rank 10: HR 1, NDCG 1/log2(11), MRR 1/10
    e(4, "u1", "zz"),   # miss: 0, 0, 0
    e(5, "u2", "h1"),   # u2's first event: not scored
    e(6, "u1", "h1"),   # u1 engaged h1 before: a repeat, not scored
]


def test_prequential_known_answer() -> None:
    stub = Stub()
    res = prequential({"stub": (stub, "any")}, STREAM, k=10, window=2)
    assert (res.n_events, res.n_eligible, res.n_scored, res.n_new_user, res.n_repeat) == (6, 3, 3, 2, 1)
    assert res.mean("stub", "HR") == pytest.approx(2 / 3)
    assert res.mean("stub", "NDCG") == pytest.approx((1 + 1 / math.log2(11)) / 3)
    assert res.mean("stub", "MRR") == pytest.approx((1 + 0.1) / 3)
    assert list(res.hits["stub"]) == [1, 1, 0]
    # windows of 2 events: e2 (position 1) in window 0, e3 and e4 (positions 2, 3) in window 1
    assert res.curve("stub") == [(2, 1.0), (4, 0.5)]
    # rank-then-learn: every scored event is ranked before it is learned, and every event is learned
    assert stub.calls == ["learn e1", "rank u1", "learn e2", "rank u1", "learn e3", "rank u1", "learn e4",
                          "learn e5", "learn e6"]


def test_prequential_sampling_is_seeded_and_learns_everything() -> None:
    stream = [e(n, "u", f"i{n}") for n in range(1, 22)]  # 20 eligible events
    a = prequential({"s": (Stub(), "m")}, stream, sample_every=4, seed=7)
    b = prequential({"s": (Stub(), "m")}, stream, sample_every=4, seed=7)
    assert a.n_scored == b.n_scored == 5 and a.n_eligible == 20
    stub = Stub()
    prequential({"s": (stub, "m")}, stream, sample_every=4, seed=7)
    assert sum(c.startswith("learn") for c in stub.calls) == 21
    with pytest.raises(ValueError, match="sample_every 0"):
        prequential({"s": (Stub(), "m")}, stream, sample_every=0)


def test_arms_sharing_a_model_learn_once() -> None:
    stub = Stub()
    prequential({"a": (stub, "x"), "b": (stub, "y")}, STREAM)
    assert sum(c.startswith("learn") for c in stub.calls) == len(STREAM)
    assert sum(c.startswith("rank") for c in stub.calls) == 2 * 3


def test_mcnemar_and_beyond_accuracy() -> None:
    assert mcnemar([1, 1, 0, 1], [0, 1, 1, 0]) == (2, 1, pytest.approx(1 / math.sqrt(3)))
    assert mcnemar([1, 0], [1, 0]) == (0, 0, 0.0)
    train = [e(1, "a", "x"), e(2, "b", "x"), e(3, "b", "y"), e(4, "c", "x"), e(5, "d", "z")]
    genres = {"x": ["Comedy"], "y": ["Comedy", "Drama"], "z": ["Drama"]}
    ba = beyond_accuracy({"a": ["y", "z"], "c": ["y"]}, train, ["x", "y", "z", "w"], genres)
    assert ba.coverage == 0.5  # y and z of 4 catalog items
    # 4 users: p(y) = 1/4 (2 bits), p(z) = 1/4 (2 bits): novelty 2 for both lists
    assert ba.novelty == pytest.approx(2.0)
    # ILD: [y, z] distance 1 - 1/2 = 0.5; [y] has no pairs -> 0
    assert ba.diversity == pytest.approx(0.25)


def test_smoke_prequential_and_offline_on_movielens() -> None:
    events = load_events(limit=400)
    catalog = load_catalog()
    m = Model(Settings(combiner_warmup=20, combiner_sample=1.0), catalog)
    arms = {mode: (m, mode) for mode in M.FUSION}
    res = prequential(arms, events, sample_every=2, window=100)
    assert res.n_events == 400 and res.n_scored > 50
    for arm in arms:
        assert 0.0 <= res.mean(arm, "HR") <= 1.0 and len(res.hits[arm]) == res.n_scored
    assert m.state.comb_n[0] > 0  # the learned combiner trained in the stream


def test_cli_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, docs = tmp_path / "eval", tmp_path / "docs" / "img"
    rc = main(["--limit", "300", "--jobs", "1", "--no-progress", "--out", str(out), "--caps", "10",
               "--sample-every", "3", "--window", "100", "--docs", str(docs)])
    assert rc == 0
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "Command: `python -m evaluation --limit 300 " in md
    for heading in ("## 1. Prequential", "## 2a. Random 75/25 per-user split", "## 2b. Offline temporal split per "
                    "user (each user's last 20%", "## 2c. Leave-last-one-out", "## 3. Beyond",
                    "## 3b. Diversity: MMR re-rank", "ILD co-occurrence cosine (headline)", "## 4. Cost of the bounds",
                    "NOT ours",
                    "every test item of the user is relevant",
                    "| *Microsoft Recommenders SAR — their published row, NOT ours* | 0.3308 | 0.1764 | 0.3825 | n/a | "
                    "0.1106 |"):
        assert heading in md
    for png in ("prequential.png", "offline.png", "diversity.png", "bounds.png"):
        assert (out / png).stat().st_size > 1000
        assert (docs / f"eval-{png}").read_bytes() == (out / png).read_bytes()  # --docs: the README's copies
    assert "| learned |" in capsys.readouterr().out
    # the bounds table: each bound's rows name the bound and its value; the defaults of the new bounds ran
    for row in ("| itemcf cap=10 | `model.history_cap` | 10 | off |", "| itemcf row_cap=100 | `model.row_cap` | 100 |",
                "| itemcf row_cap=unlimited | `model.row_cap` | unlimited |",
                "| usercf max_raters=unlimited | `model.hybrid.usercf_max_raters` | unlimited | n/a |",
                "| usercf max_raters=20 |", "| usercf row_cap=50 | `model.hybrid.usercf_row_cap` | 50 |",
                "`model.hybrid.usercf_row_cap`: user-CF's row cap",
                "`usercf row_cap=unlimited` is the `usercf max_raters=20` run"):
        assert row in md
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))["results"]
    shared = results["usercf max_raters=20"]  # usercf row_cap=0 is the same run (max_raters as configured)
    assert [r["label"] for r in shared["rows"]] == ["usercf max_raters=20", "usercf row_cap=unlimited"]
    assert "usercf row_cap=unlimited" not in results and shared["method"] == "usercf"
    assert set(shared["metrics"]) == {"usercf"} and shared["pairs"] > 0 and shared["kept"] > 0
    # a run of one protocol copies only the plot it made (no stale plots of an earlier run)
    docs2 = tmp_path / "docs2"
    assert main(["--limit", "200", "--jobs", "1", "--no-progress", "--out", str(out), "--protocols", "prequential",
                 "--docs", str(docs2)]) == 0
    assert sorted(p.name for p in docs2.iterdir()) == ["eval-prequential.png"]
    assert parse_args(["--docs"]).docs == "docs/img" and parse_args([]).docs is None


def test_cli_help_and_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--help"])
    assert exc.value.code == 0 and "examples:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parse_args(["--protocols", "prequential,nope"])
    assert "unknown nope" in capsys.readouterr().err
    assert parse_params(["candidate_pool=100", "half_life_s=null"]) == {"candidate_pool": 100, "half_life_s": None}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_params(["oops"])
    assert main(["--param", "mode=best", "--no-progress", "--out", "/nonexistent"]) == 2
    assert "mode 'best'" in capsys.readouterr().err


def test_diversity_task_lambda_zero_is_the_mode_and_larger_lambdas_diversify() -> None:
    """The λ = 0 arm scores exactly like the mode's own prequential arm (same events, same lists); larger λ give
    more diverse lists by the similarity MMR uses; every arm ranks the same scored events. Arms picking from a
    shared deeper list equal the same arms run alone (its first ``pool`` is the mode's best ``pool``)."""
    opts = Options(model_cfg=load_config(env={})["model"], limit=3000, sample_every=3, window=1000)
    div = run_task(Task("diversity", "diversity", 3000, {"lambdas": (0.0, 1.0, 3.0)}), opts)
    pre = run_task(Task("prequential", "prequential", 3000), opts)
    mode = div["mode"]
    assert div["hits"]["λ=0"] == pre["hits"][mode] and div["n_scored"] == pre["n_scored"] > 100
    assert div["metrics"]["λ=0"] == pre["metrics"][mode]
    assert list(div["diversity"]) == ["λ=0", "λ=1", "λ=3"] and div["headline"] == "cf"
    ild = [div["diversity"][a]["ILD_content"] for a in ("λ=0", "λ=1", "λ=3")]
    assert ild[0] < ild[1] < ild[2]
    assert all(0 < div["diversity"][a][key] <= 1 for a in div["diversity"]
               for key in ("coverage", "ILD_cf", "ILD_content", "ILD_genre"))
    grid = run_task(Task("diversity", "diversity", 3000, {"lambdas": (0.0, 1.0), "similarities": ("content", "itemcf"),
                                                         "pools": (50, 120)}), opts)
    assert list(grid["diversity"]) == ["λ=0", "λ=1 content/50", "λ=1 content/120", "λ=1 itemcf/50",
                                       "λ=1 itemcf/120"]
    assert grid["arms"]["λ=1 itemcf/120"] == {"lambda": 1.0, "similarity": "itemcf", "pool": 120}
    for a, b in (("λ=0", "λ=0"), ("λ=1 content/50", "λ=1")):
        assert grid["hits"][a] == div["hits"][b] and grid["diversity"][a] == div["diversity"][b]
    assert grid["hits"]["λ=1 itemcf/50"] != grid["hits"]["λ=1 content/50"]
    oracle = run_task(Task("diversity", "diversity", 3000, {"lambdas": (0.0, 3.0), "similarities": ("oracle",)}),
                      opts)
    assert oracle["diversity"]["λ=3"]["ILD_cf"] > max(grid["diversity"][a]["ILD_cf"] for a in grid["diversity"])


def test_recommended_lambda_is_the_most_diverse_within_the_hr_budget() -> None:
    def summary(hr: list[float], ild: list[float]) -> dict[str, object]:
        arms = [f"λ={x}" for x in range(len(hr))]
        return {"metrics": {a: {"HR": h, "NDCG": h / 2} for a, h in zip(arms, hr, strict=True)},
                "diversity": {a: {"ILD_cf": d, "ILD_content": d / 2, "ILD_genre": 0.8, "coverage": 0.5}
                              for a, d in zip(arms, ild, strict=True)},
                "mode": "weighted", "headline": "cf"}

    assert report.recommended_lambda(summary([0.2, 0.199, 0.191, 0.189], [0.7, 0.75, 0.8, 0.9])) == "λ=2"
    assert report.recommended_lambda(summary([0.2, 0.18], [0.7, 0.9])) is None
    md = report.diversity_section(summary([0.2, 0.199, 0.191, 0.189], [0.7, 0.75, 0.8, 0.9]))
    assert "| **λ=2** | 0.1910 | -4.5% | 0.0955 | 0.8000 | +14.3% | 0.4000 | +14.3% | 0.8000 | +0.0% | 0.5000 |" in md
    assert "ILD co-occurrence cosine (headline)" in md and "headline ILD +14.3% for -4.5% HR@10" in md
    assert "No arm keeps HR@10 within 5%" in report.diversity_section(summary([0.2, 0.18], [0.7, 0.9]))
    oracle = {**summary([0.2, 0.199, 0.191, 0.189], [0.7, 0.75, 0.8, 0.9]),
              "arms": {"λ=2": {"lambda": 2.0, "similarity": "oracle", "pool": 50}}}
    assert report.recommended_lambda(oracle) == "λ=1"  # the upper bound is never the recommendation
    assert report.recommended_lambda(oracle, oracle=True) == "λ=2"
    assert "Upper bound, the oracle similarity within the same budget: λ=2, headline ILD +14.3% for -4.5% HR@10" \
        in report.diversity_section(oracle)


@pytest.mark.parametrize("raw", ["", "0,x", "0,-1"])
def test_mmr_lambdas_errors_name_the_value(raw: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--mmr-lambdas", raw])
    assert "--mmr-lambdas" in capsys.readouterr().err
    assert parse_args(["--mmr-lambdas", "0, 0.5"]).mmr_lambdas == [0.0, 0.5]


@pytest.mark.parametrize(("flag", "raw"), [("--mmr-similarities", "genre"), ("--mmr-similarities", ""),
                                           ("--mmr-pools", "0"), ("--mmr-pools", "x")])
def test_mmr_grid_errors_name_the_flag(flag: str, raw: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args([flag, raw])
    assert flag in capsys.readouterr().err
    args = parse_args(["--mmr-similarities", "itemcf, content", "--mmr-pools", "50,200"])
    assert (args.mmr_similarities, args.mmr_pools) == (["itemcf", "content"], [50, 200])
    assert (parse_args([]).mmr_similarities, parse_args([]).mmr_pools) == (["content", "itemcf", "oracle"], [50, 200])


def test_bounds_options() -> None:
    args = parse_args([])
    assert (args.caps, args.row_caps, args.max_raters, args.usercf_row_caps) == (
        [10, 20, 50, 0], [0, 100, 60], [0, 50, 20], [0, 50])  # exact, the configured / scale-run values, tighter
    args = parse_args(["--caps", "", "--row-caps", "100, 100,0", "--max-raters", "7", "--usercf-row-caps", ""])
    assert (args.caps, args.row_caps, args.max_raters, args.usercf_row_caps) == ([], [100, 0], [7], [])


@pytest.mark.parametrize(("argv", "message"), [
    (["--max-raters", "0,x"], "--max-raters '0,x': 'x' is not an integer"),
    (["--row-caps", "100,-1"], "--row-caps '100,-1': -1 must be >= 0"),
    (["--usercf-row-caps", "1.5"], "--usercf-row-caps '1.5': '1.5' is not an integer"),
    (["--caps", "-2"], "--caps '-2': -2 must be >= 0"),
])
def test_bounds_options_errors_name_the_value(argv: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_bounds_row_caps_below_top_k_are_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--row-caps", "0,10", "--no-progress", "--out", "/nonexistent"]) == 2
    assert "--row-caps: 10 must be 0 (all) or at least model.top_k 60" in capsys.readouterr().err
    assert main(["--usercf-row-caps", "5", "--param", "usercf_top_k=8", "--no-progress", "--out", "/nonexistent"]) == 2
    assert "--usercf-row-caps: 5 must be 0 (all) or at least model.hybrid.usercf_top_k 8" in capsys.readouterr().err


def test_bounds_tasks_share_the_exact_runs() -> None:
    configured = Configured(history_cap=20, half_life_s=180.0, row_cap=0, usercf_max_raters=50, usercf_row_cap=0)
    tasks = build_tasks(parse_args([]), 1000, 180.0, configured)
    names = [t.name for t in tasks]
    assert len(set(names)) == len(names)
    labels = {r.label: t for t in tasks for r in t.rows}
    # the exact variant of a new bound reuses the run that already has its settings
    assert labels["itemcf row_cap=unlimited"] is labels["itemcf cap=20 +decay"]
    assert labels["usercf row_cap=unlimited"] is labels["usercf max_raters=50"]
    assert labels["usercf max_raters=50"].method == "usercf" and labels["itemcf row_cap=100"].method == "itemcf"
    assert dict(labels["itemcf row_cap=60"].variant) == {"history_cap": 20, "half_life_s": 180.0, "row_cap": 60}
    assert dict(labels["usercf max_raters=unlimited"].variant) == {"usercf_max_raters": 0, "usercf_row_cap": 0}
    bounds = [t for t in tasks if t.kind == "bounds"]
    assert len(bounds) == 8 + 2 + 3 + 1  # caps (x2 decay) + row caps 100, 60 + max_raters + usercf 50
    assert len(labels) == 8 + 3 + 3 + 2
    # the history-cap runs first, the shorter bounds runs after them (user-CF first), the offline protocols last
    assert names.index("itemcf cap=10") < names.index("usercf max_raters=unlimited") < names.index(
        "itemcf row_cap=100") < names.index("random split")
    assert names[-3:] == ["random split", "temporal split", "leave-last-one-out"]
    assert {t.kind for t in tasks[-3:]} == {"random", "temporal", "loo"} and tasks[-1].total == 1000
    rows = sorted((r for t in bounds for r in t.rows), key=lambda r: r.order)
    assert [r.bound for r in rows] == (["model.history_cap"] * 8 + ["model.row_cap"] * 3
                                       + ["model.hybrid.usercf_max_raters"] * 3 + ["model.hybrid.usercf_row_cap"] * 2)
    assert [r.value for r in rows if r.bound == "model.row_cap"] == [0, 100, 60]
    # another decay half-life than the configured one: row_cap 0 is a run of its own
    other = build_tasks(parse_args(["--protocols", "bounds"]), 1000, 600.0, configured)
    labels = {r.label: t for t in other for r in t.rows}
    assert labels["itemcf row_cap=unlimited"].name == "itemcf row_cap=unlimited"
    # decay off in the config: row_cap 0 shares the cap run without decay
    plain = build_tasks(parse_args(["--protocols", "bounds"]), 1000, 600.0, Configured(history_cap=20))
    labels = {r.label: t for t in plain for r in t.rows}
    assert labels["itemcf row_cap=unlimited"] is labels["itemcf cap=20"]


def test_bounds_tasks_measure_the_user_cf_state() -> None:
    opts = Options(model_cfg=load_config()["model"], limit=3000, sample_every=5)
    rows = (BoundRow("usercf max_raters=2", "model.hybrid.usercf_max_raters", 2, 0),)
    capped = run_task(Task("capped", "bounds", 3000, {"usercf_max_raters": 2, "usercf_row_cap": 0}, "usercf", rows),
                      opts)
    exact = run_task(Task("exact", "bounds", 3000, {"usercf_max_raters": 0, "usercf_row_cap": 0}, "usercf"), opts)
    events = load_events(limit=3000)
    assert exact["kept"] == len({(x.user_id, x.item_id) for x in events})  # every rater of every item
    assert capped["kept"] <= 2 * len({x.item_id for x in events}) < exact["kept"]
    assert capped["pairs"] < exact["pairs"] and exact["pruned"] == 0
    assert capped["rows"] == [{"label": "usercf max_raters=2", "bound": "model.hybrid.usercf_max_raters", "value": 2,
                               "order": 0}]
    assert exact["rows"][0]["label"] == "exact" and set(exact["metrics"]) == {"usercf"}
    table = report.bounds_section(report.bound_rows([capped, exact]))
    assert "| usercf max_raters=2 | `model.hybrid.usercf_max_raters` | 2 | n/a |" in table
