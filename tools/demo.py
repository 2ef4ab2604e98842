"""`make run`: the whole pipeline on MovieLens-100K, from an empty broker to printed recommendations.

Steps: (1) reset the project's topics and Redis keys, (2) publish the catalog to the compacted
``items`` topic and to Redis, (3) replay the ratings in timestamp order into ``events`` (plus a few
malformed records, to show the dead-letter topic), (4) run the Flink job from nothing in bounded mode
until the topic is drained, ending with a savepoint that ``make live`` continues from, (5) print the
top-10 of three users read back from Redis, with titles and reasons, under each fusion mode
(``--modes``; the job computes them beside the served mode), the learned combiner's weights, count
the messages on the output topics, and say where the job's state is and how to start anew.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from config import load_config

logger = logging.getLogger(__name__)


def reset(cfg: dict[str, Any], r: Any) -> None:
    from ingest.kafka_admin import delete_topics, ensure_topics, project_topics, wait_for_kafka

    k = cfg["kafka"]
    wait_for_kafka(k["bootstrap"], timeout=60)
    topics = project_topics(cfg)
    delete_topics(k["bootstrap"], topics, wait=True)
    forget_group(k["bootstrap"], k["group_id"])
    ensure_topics(k["bootstrap"], topics, partitions=int(k["partitions"]))
    prefix = cfg["redis"]["prefix"]
    n = 0
    for key in r.scan_iter(match=f"{prefix}*", count=1000):
        r.unlink(key)
        n += 1
    logger.info("reset topics %s and %d Redis keys under %r", ", ".join(topics), n, prefix)


def forget_group(bootstrap: str, group: str) -> None:
    """Delete the job's consumer group, so its committed offsets do not outlive the deleted topics."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_groups([group])
    except KafkaError as exc:  # no such group yet: nothing to forget
        logger.debug("consumer group %s not deleted: %s", group, exc)
    finally:
        admin.close()


FUSIONS = ("weighted", "rrf", "borda", "learned")


def show_user(r: Any, prefix: str, user: str, modes: Sequence[str] = (), top_n: int = 10) -> str:
    """The user's top ``top_n`` from Redis with titles and reasons: the served list (Redis keeps ``model.stored_n``
    items), then each mode of ``modes``."""
    raw = r.get(f"{prefix}recs:{user}")
    if raw is None:
        return f"user {user}: no recommendations in Redis"
    msg = json.loads(raw)
    lists = {msg.get("mode", "served"): msg["items"][:top_n]}
    for mode in modes:
        if mode in msg.get("alternatives", {}):
            lists[mode] = msg["alternatives"][mode]
    ids = sorted({it["item_id"] for items in lists.values() for it in items})
    pipe = r.pipeline(transaction=False)
    for i in ids:
        pipe.hmget(f"{prefix}item:{i}", "title", "year")
    titles = {}
    for i, (t, y) in zip(ids, pipe.execute(), strict=True):
        titles[i] = f"{t.decode()} ({y.decode()})" if t and y else (t.decode() if t else f"item {i}")
    lines = [f"user {user}: {msg['history_size']} items engaged (latest event {msg['event_id']})"]
    for mode, items in lists.items():
        served = " (served)" if mode == msg.get("mode") else ""
        lines.append(f"  mode {mode}{served}:")
        for rank, it in enumerate(items, 1):
            lines.append(f"    {rank:2d}. {titles[it['item_id']]:<48.48} {it['score']:8.3f}  {it['reason']}")
    return "\n".join(lines)


def show_combiner(r: Any, prefix: str) -> str:
    """The learned combiner (from Redis), summarised: examples and weights."""
    raw = r.get(f"{prefix}model:combiner")
    if not raw:
        return "learned combiner: not trained (model.hybrid.train_combiner is off, or no user came back)"
    combiner = json.loads(raw)
    body = ", ".join(f"{f} {w:+.2f}" for f, w in sorted(combiner["weights"].items(), key=lambda kv: -abs(kv[1])))
    return f"learned combiner ({combiner['n_seen']:,} examples): {body}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.demo",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  make run\n  make run ARGS='--limit 20000 --users 1,2,3'\n"
               "  make run ARGS='--set job.parallelism=2'\n"
               "  make run ARGS='--experiment demo'   # half the users weighted, half learned; then make ab-report")
    parser.add_argument("--config", help="YAML file merged over config/default.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--experiment", metavar="NAME",
                        help="run the experiment profile config/experiments/NAME.yaml (demo: weighted vs learned)")
    parser.add_argument("--limit", type=int, help="replay only the first N ratings (default: all 100,000)")
    parser.add_argument("--bad", type=int, default=8, help="malformed records mixed into the replay (default 8)")
    parser.add_argument("--users", default="1,196,405", help="comma-separated users to print (default 1,196,405)")
    parser.add_argument("--modes", default=",".join(FUSIONS),
                        help="fusion modes to compute beside the served one (model.hybrid.mode) and print for "
                             f"each user (default {','.join(FUSIONS)}; '' = the served list only)")
    parser.add_argument("--no-reset", action="store_true", help="keep the topics and Redis keys of an earlier run")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--serve", action="store_true", help="afterwards, serve the API and page until Ctrl-C")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    # a fresh start reads the topics from the beginning (jobs.recommend --fresh does the same)
    cfg = load_config(args.config, [f"model.compare_modes=[{','.join(modes)}]", "job.starting_offsets=earliest",
                                    *args.set, "job.bounded=true"], experiment=args.experiment)

    import redis

    from ingest import catalog, movielens, producer
    from ingest.kafka_admin import count_messages
    from jobs.flink_env import make_env
    from jobs.recommend import recommend_job
    from jobs.state import abort_lingering_transactions, mark_fresh, state_dirs

    k, rc = cfg["kafka"], cfg["redis"]
    prefix = rc["prefix"]
    r = redis.Redis(host=rc["host"], port=int(rc["port"]), db=int(rc["db"]))
    if not args.no_reset:
        reset(cfg, r)
    print("[1/4] publishing the MovieLens-100K catalog (items topic + Redis)", flush=True)
    items = movielens.load_catalog(cfg=cfg)
    catalog.publish_catalog(items, k["bootstrap"], k["topics"]["items"])
    catalog.store_catalog(items, r, prefix)
    events = movielens.load_events(limit=args.limit, cfg=cfg)
    print(f"[2/4] replaying {len(events):,} ratings in timestamp order (+{args.bad} malformed) into "
          f"topic {k['topics']['events']!r}", flush=True)
    stream = producer.interleave(events, producer.bad_records(args.bad), len(events))
    t0 = time.time()
    producer.produce_events(stream, k["bootstrap"], k["topics"]["events"], progress=not args.quiet,
                            total=len(events) + args.bad)
    print(f"      produced in {time.time() - t0:.1f}s", flush=True)

    print(f"[3/4] running the Flink job (parallelism {cfg['job']['parallelism']}, bounded: stops when the "
          "topic is drained)", flush=True)
    done = threading.Event()

    def progress() -> None:
        while not done.wait(5):
            print(f"      ... {r.zcard(f'{prefix}users'):,} users with recommendations in Redis", flush=True)

    threading.Thread(target=progress, daemon=True).start()
    t0 = time.time()
    dirs = state_dirs(cfg)  # this job identity's folders (the reset topics are a new incarnation)
    try:
        env = make_env(cfg, dirs=dirs)
        mark_fresh(dirs)  # the demo always starts from nothing
        abort_lingering_transactions(cfg, None)
        final = recommend_job(env, cfg, dirs)
    finally:
        done.set()
    print(f"      job finished in {time.time() - t0:.1f}s", flush=True)

    print("[4/4] results", flush=True)
    for user in [u.strip() for u in args.users.split(",") if u.strip()]:
        print(show_user(r, prefix, user, modes, cfg["model"]["top_n"]))
    print(show_combiner(r, prefix))
    n_recs = count_messages(k["bootstrap"], k["topics"]["recommendations"])
    n_dlq = count_messages(k["bootstrap"], k["topics"]["dlq"])
    print(f"users with recommendations in Redis ({prefix}users): {r.zcard(f'{prefix}users'):,}")
    print(f"item neighbour lists in Redis ({prefix}similar:*): "
          f"{sum(1 for _ in r.scan_iter(match=f'{prefix}similar:*', count=1000)):,}")
    print(f"messages on {k['topics']['recommendations']!r}: {n_recs:,} (one per user update)")
    print(f"messages on {k['topics']['dlq']!r}: {n_dlq:,} (malformed input with the reason)")
    if cfg["experiments"]["name"] is not None:
        from serving.testing import read_topic
        from tools.ab_report import report, summarise

        records = read_topic(k["bootstrap"], k["topics"]["experiments"])
        print(f"experiment {cfg['experiments']['name']!r}: {len(records):,} summaries on "
              f"{k['topics']['experiments']!r} (make ab-report prints this table again)")
        print(report(*summarise((json.loads(r.value) for r in records), cfg["experiments"]["name"])))
    if args.serve:
        import uvicorn

        from serving.api import create_app

        print("serving the API and the live page on http://127.0.0.1:8000/ (Ctrl-C stops)", flush=True)
        uvicorn.run(create_app(cfg), host="127.0.0.1", port=8000, log_level="warning")
    else:
        print("browse them: `make serve`, then http://127.0.0.1:8000/ (or `make run ARGS=--serve`)")
    print(state_note(final, dirs.checkpoints, dirs.savepoints))
    return 0


def state_note(final: str | None, checkpoints: str, savepoints: str) -> str:
    """Where the run left its state, and how the next run continues from it or starts anew."""
    where = (f"final savepoint {final}" if final else
             "none kept (checkpoints are off: job.checkpoint_interval_ms 0)")
    return (f"state of this job: {where}\n"
            f"  (this job identity's checkpoints: {checkpoints}, savepoints: {savepoints})\n"
            "  `make live` continues from it: the same model and Kafka positions (rate movies, watch the lists move)\n"
            "  `make live ARGS=--fresh` starts anew (empty state, topics from the beginning); `make run` resets all")


if __name__ == "__main__":
    sys.exit(main())
