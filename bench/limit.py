"""The limit: what the job computes, on the compiled array core (:mod:`core.v2.model`), in one process without Flink,
Kafka or Redis.

Built from the same config as the job (``model``, ``model.hybrid``) with the stream's
catalog added first, it does what the job does with a stream replayed at full speed:

* every event is learned (:func:`core.v2.model.learn`; the combiner trains in the stream only when the job trains
  it: ``train_combiner`` and the learned mode in ``model.hybrid.mode`` or ``model.compare_modes``);
* per window, every user who acted in it is ranked once, all at once (:func:`core.v2.model.rank`): in the
  configured mode to ``model.stored_n`` items (the list the job stores in Redis) and in each of
  ``model.compare_modes`` to ``model.top_n`` (the message's alternatives), as the ranker does;
* with ``render``, the ranked lists are also spelled out as ``(item, score, reason)`` (the sink's work).

A window is a fixed number of consecutive events (:func:`window_events`): the events that arrive in one
``job.window_ms`` tumbling window at a reference rate. The job's windows are processing-time windows of arrival;
at full speed they hold whatever arrived in ``window_ms``, so their size depends on the speed and the load. Fixed
windows make every run do the same work (the same windows, the same rankings), so runs compare by the machine
alone. Fewer events per window means more rankings per event, so a slower reference rate is a harder limit.

:func:`run_isolated` measures one stream in a child process (``python -m bench.limit``) so that its peak RSS is the
limit's own: the stream (generated window by window, never held whole for the synthetic one), the state and the
interpreter with numba.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any, NamedTuple

import psutil

from bench.common import BenchError, base_config, progress
from core.v2 import model as M
from core.v2.settings import Settings
from udfs.events import Event

REFERENCE_RATE = 50_000
"""Events/s at which a window of ``job.window_ms`` is cut into events (:func:`window_events`): the issue's floor
for the single-process core."""
SYNTHETIC = "synthetic"
MOVIELENS = "MovieLens-100K"


class Stream(NamedTuple):
    """A benchmark stream, built where it is measured: MovieLens-100K (its first ``events`` ratings, all when None)
    or the seeded synthetic stream of ``events`` events (``ingest.synthetic.generate``), each with its catalog."""

    dataset: str
    events: int | None = None
    users: int = 0
    items: int = 0
    zipf: float = 1.1
    seed: int = 0

    def open(self) -> tuple[Iterator[Event], int, list[dict[str, Any]]]:
        """The events (an iterator), their number and the catalog."""
        if self.dataset == MOVIELENS:
            from ingest.movielens import load_catalog, load_events

            events = load_events(limit=self.events)
            return iter(events), len(events), load_catalog()
        if self.dataset == SYNTHETIC:
            from ingest.synthetic import generate, generate_catalog

            if self.events is None:
                raise ValueError("a synthetic stream needs its number of events")
            return (generate(self.events, self.users, self.items, zipf_s=self.zipf, seed=self.seed), self.events,
                    generate_catalog(self.items, seed=self.seed))
        raise ValueError(f"dataset {self.dataset!r} must be {MOVIELENS!r} or {SYNTHETIC!r}")


class Plan(NamedTuple):
    """What the limit computes per window, from the config (:func:`plan`)."""

    settings: Settings
    compare_modes: tuple[str, ...]
    stored_n: int  # items ranked per user in the mode
    train: bool  # the combiner trains in the stream


def plan(cfg: Mapping[str, Any]) -> Plan:
    """The job's model settings, compared modes and list depth from a loaded config."""
    model = cfg["model"]
    settings = Settings.from_config(model)
    compare = tuple(model.get("compare_modes") or ())
    for mode in compare:
        if mode not in M.FUSION:
            raise ValueError(f"config key model.compare_modes has unknown mode {mode!r} (known: {', '.join(M.FUSION)})")
    stored_n = int(model.get("stored_n") or settings.top_n)
    return Plan(settings, compare, stored_n, settings.train_combiner and "learned" in (settings.mode, *compare))


def window_events(window_ms: int, rate: float = REFERENCE_RATE) -> int:
    """The events of one ``window_ms`` window of arrival at ``rate`` events/s (at least 1)."""
    if window_ms <= 0 or rate <= 0:
        raise ValueError(f"job.window_ms {window_ms!r} and the reference rate {rate!r} must be > 0")
    return max(1, round(window_ms / 1000 * rate))


def warm_up(p: Plan) -> float:
    """Seconds to load (or compile) every kernel the run calls: a tiny stream learned and ranked on a fresh state."""
    t = time.perf_counter()
    state = M.new_state(p.settings)
    events = [Event(f"w{k}", f"u{k % 3}", f"i{k % 5}", "rate", 1.0 + k % 4, 1000 * k) for k in range(12)]
    M.add_items(state, [{"item_id": "i1", "title": "A B", "year": 1990, "genres": ["Drama"]}])
    M.learn(state, M.Batch.of(events), p.train)
    for mode in (p.settings.mode, *p.compare_modes):
        M.render(state, M.rank(state, ["u0", "u1", "nobody"], mode))
    return time.perf_counter() - t


def _rss() -> int:
    """This process's resident set size now, in bytes."""
    return int(psutil.Process().memory_info().rss)


def _peak_rss() -> int:
    """This process's peak resident set size over its life, in bytes (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def run(events: Iterable[Event], p: Plan, catalog: Sequence[Mapping[str, Any]], window: int, render: bool = False,
        total: int | None = None, label: str = "limit", note_s: float = 10.0) -> dict[str, Any]:
    """Learn and rank ``events`` window by window (see the module docstring); the counts and measurements.

    ``window``: events per window. ``total``: the number of events, for the progress lines (one every ``note_s``
    seconds)."""
    if window < 1:
        raise ValueError(f"window {window!r} must be at least 1 event")
    mode = p.settings.mode
    warm = warm_up(p)
    rss_start = _rss()
    clock = time.perf_counter
    cpu0, wall0 = time.process_time(), clock()
    state = M.new_state(p.settings)
    M.add_items(state, catalog)
    catalog_s = clock() - wall0
    columns_s = learn_s = rank_s = render_s = 0.0
    n = windows = rankings = 0
    rss_peak = rss_start
    tenths: list[tuple[int, float, float]] = []  # (events, wall s, cpu s) at the first window end past each tenth
    next_note = wall0 + note_s
    it = iter(events)
    while True:
        t0 = clock()
        part = list(islice(it, window))
        if not part:
            break
        batch = M.Batch.of(part)
        t1 = clock()
        M.learn(state, batch, p.train)
        t2 = clock()
        users = list(dict.fromkeys(batch.user_id.tolist()))
        lists = [M.rank(state, users, mode, p.stored_n)]
        lists += [M.rank(state, users, m) for m in p.compare_modes]
        t3 = clock()
        if render:
            for ranking in lists:
                M.render(state, ranking)
        t4 = clock()
        columns_s += t1 - t0
        learn_s += t2 - t1
        rank_s += t3 - t2
        render_s += t4 - t3
        n += len(part)
        windows += 1
        rankings += len(users)
        rss_peak = max(rss_peak, _rss())
        if total and n * 10 >= total * (len(tenths) + 1):
            tenths.append((n, t4 - wall0, time.process_time() - cpu0))
        if t4 >= next_note:
            progress("  %s: %s/%s events, %d windows, %.0f s, %s events/s so far (CPU %.0f s), state %.0f MiB, "
                     "RSS %.0f MiB", label, f"{n:,}", f"{total:,}" if total else "?", windows, t4 - wall0,
                     f"{n / (t4 - wall0):,.0f}", time.process_time() - cpu0, state.nbytes() / 2**20, rss_peak / 2**20)
            next_note = t4 + note_s
    wall, cpu = clock() - wall0, time.process_time() - cpu0
    rates, last = [], (0, 0.0, 0.0)
    for mark in tenths:  # events/s in each tenth of the stream: the cost as the state grows
        rates.append(round((mark[0] - last[0]) / (mark[1] - last[1]), 1) if mark[1] > last[1] else None)
        last = mark
    return {
        "events": n, "windows": windows, "window_events": window, "rankings": rankings,
        "rankings_per_mode": {m: rankings for m in (mode, *p.compare_modes)},
        "rankings_per_event": round(rankings / n, 4) if n else None,
        "mode": mode, "compare_modes": list(p.compare_modes), "stored_n": p.stored_n, "top_n": p.settings.top_n,
        "trains_combiner": p.train, "rendered": render, "methods": list(p.settings.methods),
        "history_cap": p.settings.history_cap, "refresh_on_norms": p.settings.refresh_on_norms,
        "events_per_s": round(n / wall, 1) if n and wall > 0 else None,
        "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "cpu_us_per_event": round(1e6 * cpu / n, 2) if n else None,
        "catalog_s": round(catalog_s, 3), "columns_s": round(columns_s, 3), "learn_s": round(learn_s, 3),
        "rank_s": round(rank_s, 3), "render_s": round(render_s, 3) if render else None,
        "rank_us_per_user": round(1e6 * rank_s / rankings, 2) if rankings else None,
        "events_per_s_by_tenth": rates, "jit_warmup_s": round(warm, 3),
        "users": len(state.users), "items": len(state.items),
        "co_occurrence_entries": state.ipool.entries(), "user_pairs": state.upool.entries(),
        "state_bytes": state.nbytes(), "rss_start_bytes": rss_start, "rss_peak_sampled_bytes": rss_peak,
    }


def measure(stream: Stream, overrides: Sequence[str], window: int | None = None, render: bool = False,
            rate: float = REFERENCE_RATE) -> dict[str, Any]:
    """:func:`run` over ``stream`` with the config and ``--set`` ``overrides``; ``window`` events per window
    (default :func:`window_events` of ``job.window_ms`` at ``rate``)."""
    cfg = base_config(list(overrides))
    p = plan(cfg)
    size = window or window_events(int(cfg["job"]["window_ms"]), rate)
    t = time.perf_counter()
    events, total, catalog = stream.open()
    progress("limit %s: %s events, %s catalog items (opened in %.1f s); windows of %s events; mode %s%s, methods %s",
             stream.dataset, f"{total:,}", f"{len(catalog):,}", time.perf_counter() - t, f"{size:,}",
             p.settings.mode, f" + {','.join(p.compare_modes)}" if p.compare_modes else "",
             ",".join(p.settings.methods))
    res = run(events, p, catalog, size, render, total, label=f"limit {stream.dataset}")
    res.update(dataset=stream.dataset, overrides=list(overrides), window_ms=cfg["job"]["window_ms"],
               reference_rate=None if window else rate, stream=stream._asdict())
    return res


def run_isolated(stream: Stream, overrides: Sequence[str], window: int | None = None, render: bool = False,
                 rate: float = REFERENCE_RATE) -> dict[str, Any]:
    """:func:`measure` in a child process (``python -m bench.limit``), with its peak RSS (``peak_rss_bytes``: the
    child's maximum resident set over its life). Its progress lines go to this process's stderr."""
    spec = {"stream": stream._asdict(), "overrides": list(overrides), "window": window, "render": render,
            "rate": rate}
    proc = subprocess.Popen([sys.executable, "-m", "bench.limit", json.dumps(spec)], stdout=subprocess.PIPE,
                            text=True)
    try:
        out, _ = proc.communicate()
    finally:
        if proc.poll() is None:  # interrupted: stop the child we started
            proc.terminate()
            proc.wait(30)
    if proc.returncode != 0:
        raise BenchError(f"the limit on {stream.dataset} failed (exit {proc.returncode}; its error is above)")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point of :func:`run_isolated`: one JSON argument (stream, overrides, window, render, rate);
    prints the result as one JSON line. Run ``python -m bench --only limit`` rather than this."""
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(main.__doc__, file=sys.stderr)
        return 2
    spec = json.loads(args[0])
    res = measure(Stream(**spec["stream"]), spec["overrides"], spec["window"], spec["render"], spec["rate"])
    res["peak_rss_bytes"] = _peak_rss()
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
