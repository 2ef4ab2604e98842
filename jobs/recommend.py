"""The recommendation job: Kafka events + catalog -> the model (learned in event-time order) -> ranked top-N ->
Redis + Kafka.

Topology (``job.shards`` virtual user shards; docs/design.md, "The job")::

    KafkaSource(events) -> [JVM: check, event time, user shard, batch per window] -> Intake --dlq--> KafkaSink(dlq)
      Intake --(events of the batch)--------------------------------------.
      KafkaSource(items) -> ParseCatalog --(catalog records)--------------+-> broadcast -.
      Intake --(rank requests)--> key_by(user shard) ---------------------------------> Model
          Model -> RecsToRedis -> KafkaSink(recommendations)
          Model --(item lists)--> NeighborsToRedis
          Model --(per-arm totals, with experiments.name)--> key_by(arm) -> ArmSummaries -> ArmsToRedis
                -> KafkaSink(experiments)

Run ``python -m jobs.recommend --help``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyflink.common import Types
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaSink,
    KafkaSource,
)

from config import experiment as config_experiment
from config import load_config
from core.v2.model import FUSION
from core.v2.settings import Settings
from jobs.flink_env import in_python_processes, make_env
from jobs.state import (
    PartitionTarget,
    RunError,
    StateDirs,
    StateRefused,
    abort_lingering_transactions,
    bounded_targets,
    caught_up,
    choose_restore,
    describe,
    lag,
    mark_fresh,
    newest_checkpoint,
    read_positions,
    savepoint_path,
    state_dirs,
    submitted,
    verify_restore,
)
from operators import front
from operators.experiments import ArmSummaries
from operators.front import event_batches, jvm_class, source_records, source_watermarks
from operators.intake import RANK_TAG, Intake
from operators.model import EXPERIMENTS_TAG, ITEMS_TAG, LOG_STATE, USERS_TAG, Model
from operators.parse import DLQ_TAG, ParseCatalog
from operators.records import PACKED, PICKLED, packed_shard
from operators.redis_sink import ArmsToRedis, NeighborsToRedis, RecsToRedis
from udfs.events import Limits

logger = logging.getLogger(__name__)


@dataclass
class RecommendOutputs:
    recommendations: DataStream  # JSON strings, one per updated user
    neighbors: DataStream  # operators.records.ItemLists
    user_neighbors: DataStream | None  # operators.records.UserLists (end of a bounded input); None without user-CF
    dlq: DataStream  # JSON strings: rejected input with the reason
    experiments: DataStream | None = None  # JSON: per-arm summaries (operators.experiments); None: no experiment


def recommend(events: DataStream, cfg: dict[str, Any], *, redis: bool = True,
              parse_parallelism: int | None = None, catalog: DataStream | None = None,
              source_watermarks: bool = False) -> RecommendOutputs:
    """Build the pipeline on a stream of raw JSON event strings and return its output streams.

    ``catalog``: raw JSON catalog records (the ``items`` topic), broadcast to the model with the events.
    With ``redis=False`` nothing is written to Redis (tests collect the streams instead). The per-event
    front (:func:`operators.front.event_batches`, on the JVM) runs at ``parse_parallelism`` (default: the
    job's) chained to the source, which keeps each source partition's order. ``source_watermarks``: ``events``
    carries event time and watermarks from its source (:func:`operators.front.source_watermarks`, the Kafka
    source); otherwise the front assigns them.
    """
    job, model = cfg["job"], cfg["model"]
    settings = Settings.from_config(model)  # validates the model section before anything runs
    experiment = config_experiment(cfg)
    ranker = Model(settings, model.get("compare_modes") or (), model["stored_n"], shards=job["shards"],
                   experiment=experiment)
    limits = Limits.from_config(cfg)
    # event time from the events' ts field, user shard and one batch per shard and window, on the JVM
    batches = event_batches(events, shards=job["shards"], window_ms=job["window_ms"], limits=limits,
                            max_out_of_orderness_ms=job["max_out_of_orderness_ms"], parallelism=parse_parallelism,
                            event_buffer_timeout_ms=job["event_buffer_timeout_ms"],
                            source_watermarks=source_watermarks, settle_ms=job["settle_ms"])
    intake = (batches.process(Intake(job["dedup_ttl_ms"], job["dedup_max_ids"], job["late_events"], limits,
                                     shards=job["shards"], scored=experiment is not None),
                              output_type=PACKED)
              .name("intake").uid("intake"))
    dlq = intake.get_side_output(DLQ_TAG)
    shared = intake
    if catalog is not None:
        parse = ParseCatalog(limits.dlq_payload_bytes, limits.max_message_bytes)
        parsed_catalog = source_records(catalog).process(parse, output_type=PACKED).name("parse-catalog")
        dlq = dlq.union(parsed_catalog.get_side_output(DLQ_TAG))
        shared = shared.union(parsed_catalog)
    ranked = in_python_processes(intake.get_side_output(RANK_TAG)
                                 .key_by(packed_shard, key_type=Types.INT())
                                 .connect(shared.broadcast(LOG_STATE))
                                 .process(ranker, output_type=PICKLED)
                                 .name("model").uid("model"))
    items = ranked.get_side_output(ITEMS_TAG)
    users = ranked.get_side_output(USERS_TAG) if "usercf" in settings.methods else None
    summaries = None
    if experiment is not None:
        summaries = (ranked.get_side_output(EXPERIMENTS_TAG)
                     .key_by(lambda totals: totals.arm, key_type=Types.STRING())
                     .process(ArmSummaries(experiment.window_ms), output_type=Types.STRING())
                     .name("experiment-summaries").uid("experiment-summaries")
                     .disable_chaining())  # not fused with the Python operator after it (its uid would be taken twice)
    r = cfg["redis"]
    args = (r["host"], int(r["port"]), int(r["db"]), r["prefix"], int(r["pipeline_size"]))
    if redis:
        recs = (ranked.flat_map(RecsToRedis(*args, top_n=model["top_n"]), output_type=Types.STRING())
                .name("recs-to-redis"))
        # its own operator, not fused with the side output's map: metrics and logs name it similar-to-redis
        items.flat_map(NeighborsToRedis(*args), output_type=Types.STRING()).name("similar-to-redis") \
            .disable_chaining()
        if summaries is not None:
            summaries = summaries.flat_map(ArmsToRedis(*args), output_type=Types.STRING()).name("experiments-to-redis")
    else:
        from udfs.serde import dumps, published

        recs = ranked.flat_map(lambda b: [dumps(published(m, model["top_n"])) for m in b.messages],
                               output_type=Types.STRING()).name("recs-json")
    return RecommendOutputs(recommendations=recs, neighbors=items, user_neighbors=users, dlq=dlq,
                            experiments=summaries)


def _source(cfg: dict[str, Any], topic: str, group: str, start: Any) -> KafkaSource:
    builder = (KafkaSource.builder()
               .set_bootstrap_servers(cfg["kafka"]["bootstrap"])
               .set_topics(topic)
               .set_group_id(group)
               .set_starting_offsets(start)
               .set_property("isolation.level", "read_committed"))
    # every record as (payload, origin), lossless for any bytes (udfs.dlq)
    builder._j_builder.setDeserializer(jvm_class("SourceRecords")())
    if cfg["job"]["bounded"]:
        # no partition discovery: with it, a bounded source restored from a checkpoint never ends
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    else:
        builder = builder.set_property("partition.discovery.interval.ms", "10000")
    return builder.build()


def catalog_source(cfg: dict[str, Any]) -> KafkaSource:
    """The catalog (``items`` topic, compacted): always read from the beginning, in its own consumer group."""
    k = cfg["kafka"]
    return _source(cfg, k["topics"]["items"], f"{k['group_id']}-catalog", KafkaOffsetsInitializer.earliest())


def kafka_source(cfg: dict[str, Any]) -> KafkaSource:
    """The events; where a job without restored source state starts is ``job.starting_offsets``."""
    k = cfg["kafka"]
    start = {"committed": KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST),
             "earliest": KafkaOffsetsInitializer.earliest(),
             "latest": KafkaOffsetsInitializer.latest()}[cfg["job"]["starting_offsets"]]
    return _source(cfg, k["topics"]["events"], k["group_id"], start)


def kafka_sink(cfg: dict[str, Any], topic: str, name: str, key_pointer: str, key_is_base64: bool = False) -> KafkaSink:
    """A Kafka sink of JSON messages, keyed by the string at the JSON pointer ``key_pointer`` (the bytes it holds in
    Base64 with ``key_is_base64``); exactly-once (transactional) when the config asks for it and checkpoints are on.

    Records over ``kafka.max_record_bytes`` are counted and skipped, not sent (``flinkrec.KeyedJsonRecords``): the
    producer would fail the job on them, and the restart would meet them again."""
    job, limit = cfg["job"], cfg["kafka"]["max_record_bytes"]
    builder = (KafkaSink.builder()
               .set_bootstrap_servers(cfg["kafka"]["bootstrap"])
               .set_property("max.request.size", str(max(1048576, limit + 65536))))
    builder._j_builder.setRecordSerializer(jvm_class("KeyedJsonRecords")(topic, key_pointer, key_is_base64, limit))
    if job["delivery"] == "exactly_once":
        if not job["checkpoint_interval_ms"]:
            raise ValueError("job.delivery=exactly_once needs checkpoints: set job.checkpoint_interval_ms > 0 "
                             "or job.delivery=at_least_once")
        builder = (builder.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
                   .set_transactional_id_prefix(f"{job['transactional_id_prefix']}-{name}")
                   .set_property("transaction.timeout.ms", str(job["transaction_timeout_ms"])))
    else:
        builder = builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    return builder.build()


def recommend_job(env: StreamExecutionEnvironment, cfg: dict[str, Any], dirs: StateDirs | None = None) -> str | None:
    """Wire the Kafka source and the Kafka/Redis sinks around :func:`recommend`, run it, and return the location of
    the state it ended with (a savepoint), or None.

    A bounded run (``job.bounded``, checkpoints on) runs its sources unbounded and stops with a draining savepoint,
    its retained final state, once its checkpoints show every partition of ``events`` and ``items`` read to where it
    ended at the start (:func:`drain`); a drained stop fires the end-of-input timers exactly like the end of a bounded
    input, and the savepoint's sources can be continued (a *bounded* KafkaSource restored from state never finishes,
    FLINK-31006, and a finished split is not in the state at all). Without checkpoints it reads a bounded source and
    keeps no state. An unbounded run started here runs until Ctrl-C, which stops it with a savepoint
    (:func:`run_until_interrupted`). ``dirs``: the job identity's folders (:func:`jobs.state.state_dirs` if not given).
    """
    from ingest.kafka_admin import last_offsets

    topics = cfg["kafka"]["topics"]
    bounded, checkpoints = cfg["job"]["bounded"], bool(cfg["job"]["checkpoint_interval_ms"])
    drained = bounded and checkpoints
    source_cfg = {**cfg, "job": {**cfg["job"], "bounded": False}} if drained else cfg
    # event time comes from the events' ts field (operators.front), not the Kafka record time; watermarks per partition
    watermarks = source_watermarks(cfg["job"]["max_out_of_orderness_ms"], Limits.from_config(cfg),
                                   cfg["job"]["idle_partition_ms"], cfg["job"]["settle_ms"])
    events = env.from_source(kafka_source(source_cfg), watermarks, "kafka-events").uid("kafka-events")
    # the catalog in the topic now is applied before the model learns any event (front.catalog_watermarks)
    catalog_ends = last_offsets(cfg["kafka"]["bootstrap"], topics["items"])
    catalog = env.from_source(catalog_source(source_cfg),
                              front.catalog_watermarks(catalog_ends, cfg["job"]["idle_partition_ms"]), "kafka-items") \
        .uid("kafka-items")
    out = recommend(events, cfg, catalog=catalog, source_watermarks=True)
    # recommendations keyed by user id (one partition per user: per-user order), dead letters by their source key
    out.recommendations.sink_to(kafka_sink(cfg, topics["recommendations"], "recs", "/user_id")) \
        .name("kafka-recommendations").uid("kafka-recommendations")
    out.dlq.sink_to(kafka_sink(cfg, topics["dlq"], "dlq", "/source/key_b64", key_is_base64=True)) \
        .name("kafka-dlq").uid("kafka-dlq")
    if out.experiments is not None:  # one partition per arm
        out.experiments.sink_to(kafka_sink(cfg, topics["experiments"], "experiments", "/arm")) \
            .name("kafka-experiments").uid("kafka-experiments")
    name = cfg["job"]["name"]
    if bounded and not checkpoints:
        logger.warning("job.checkpoint_interval_ms is 0: this bounded run keeps no final state to continue from")
    if not drained and (bounded or submitted()):  # a bounded source; or `flink run -d`, which returns at submission
        env.execute(name)
        return None
    dirs = dirs or state_dirs(cfg)
    if not drained:
        return run_until_interrupted(env.execute_async(name), cfg, dirs)
    targets = bounded_targets(cfg)  # before the job starts: what it must read is what the topics hold now
    return drain(env.execute_async(name), cfg, dirs, targets)


TERMINAL = ("FAILED", "CANCELED", "FINISHED")


def _status(client: Any) -> str:
    return str(client.get_job_status().result())


def _failure(client: Any) -> str:
    """The cause a finished job failed with ("" if it did not fail)."""
    try:
        client.get_job_execution_result().result()
    except Exception as exc:  # py4j wraps the job's exception
        lines = [ln.strip() for ln in str(exc).splitlines() if "Exception" in ln or "Error" in ln]
        return lines[-1][:600] if lines else str(exc)[:600]
    return ""


def drain(client: Any, cfg: dict[str, Any], dirs: StateDirs,
          targets: dict[tuple[str, int], PartitionTarget]) -> str:
    """Wait until the job's newest completed checkpoint has read every partition's target, then stop it with a
    draining savepoint and return where it is. Raises :class:`RunError` (after cancelling the job) when the job
    ends first, or when the checkpointed positions have not moved for ``job.stall_timeout_s`` (at least three
    checkpoint intervals) before they got there: a bounded run either finishes or fails with the partitions behind."""
    job_id = str(client.get_job_id())
    interval_s = cfg["job"]["checkpoint_interval_ms"] / 1000
    stall = max(float(cfg["job"]["stall_timeout_s"]), 3 * interval_s)
    folder = dirs.checkpoint_path
    if folder is None:
        raise RunError(f"job {job_id}: a bounded run reads its progress from its checkpoints, which must be in a "
                       f"local folder ({dirs.checkpoints} is not)")
    logger.info("job %s: stops with a draining savepoint once its checkpoints have read %s", job_id,
                ", ".join(f"{t}[{p}] to {'its end (empty)' if x.end is None else x.end}"
                          for (t, p), x in sorted(targets.items())))
    positions: dict[tuple[str, int], int] | None = None
    seen: Path | None = None
    moved = time.monotonic()
    try:
        while positions is None or not caught_up(positions, targets):
            status = _status(client)
            if status in TERMINAL:
                raise RunError(f"job {job_id} ended ({status}) before it read its topics to the end "
                               f"({lag(positions or {}, targets)}): {_failure(client) or 'no failure recorded'}")
            newest = newest_checkpoint(folder / job_id)
            if newest is not None and newest != seen:
                try:
                    now = read_positions(newest).offsets()
                except Exception as exc:
                    logger.debug("could not read %s: %s", newest, exc)
                else:
                    seen = newest
                    if now != positions:
                        positions, moved = now, time.monotonic()
            if time.monotonic() - moved > stall:
                raise RunError(
                    f"job {job_id}: its checkpointed source positions have not moved for {stall:.0f} s "
                    f"(job.stall_timeout_s) and it has not read its topics to the end: "
                    f"{lag(positions or {}, targets)}; newest checkpoint {seen or 'none'}, job {status}. "
                    "The state it had is kept; see the job's log (var/log/) for why it does not progress")
            time.sleep(1)
        logger.info("job %s has read its topics to the end (%s): stopping with a draining savepoint", job_id, seen)
        savepoint = stop_with_savepoint(client, dirs.savepoints, drain=True, timeout_s=stall)
    except BaseException:
        _cancel(client)
        raise
    logger.info("job %s drained; its final state: savepoint %s", job_id, savepoint)
    return savepoint


def _cancel(client: Any, wait_s: float = 60.0) -> None:
    """Cancel the job and wait (at most ``wait_s``) until it has stopped: its Python operators finish the call they
    are in before the process, and with it the JVM and its embedded interpreter, goes away."""
    try:
        if _status(client) in TERMINAL:
            return
        logger.info("cancelling job %s", client.get_job_id())
        client.cancel().result()
        deadline = time.monotonic() + wait_s
        while _status(client) not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.2)
    except Exception as exc:
        logger.debug("cancelling the job: %s", exc)


class Terminated(SystemExit):
    """SIGTERM: the run cancels its job (orderly) and the process exits with 143."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated(128 + signum)


def run_until_interrupted(client: Any, cfg: dict[str, Any], dirs: StateDirs) -> str | None:
    """Wait for an unbounded job; the first Ctrl-C stops it with a savepoint (returned), a second one at once (the
    last completed checkpoint stays). Raises when the job fails."""
    stop = threading.Event()
    interrupts = 0

    def on_sigint(signum: int, frame: Any) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() \
        else None
    job_id = str(client.get_job_id())
    try:
        while not stop.wait(1.0):
            status = _status(client)
            if status in TERMINAL:
                failure = _failure(client)
                if failure:
                    raise RunError(f"job {job_id} {status}: {failure}")
                return None
        logger.info("stopping job %s with a savepoint (Ctrl-C again: stop at once, from the last checkpoint)", job_id)
        savepoint = stop_with_savepoint(client, dirs.savepoints, drain=False,
                                        timeout_s=float(cfg["job"]["stall_timeout_s"]))
        logger.info("job %s stopped; its state: savepoint %s (the next run continues from it)", job_id, savepoint)
        return savepoint
    except BaseException:  # a second Ctrl-C, SIGTERM (Terminated), a failure: stop the job before the process goes
        _cancel(client)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def stop_with_savepoint(client: Any, directory: str, drain: bool, timeout_s: float) -> str:
    """``JobClient.stop_with_savepoint`` (PyFlink 2.2's wrapper misses the savepoint format argument), waiting at most
    ``timeout_s``; returns the savepoint's local path (or URI)."""
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    fmt = jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    future = client._j_job_client.stopWithSavepoint(drain, directory, fmt)
    try:
        location = str(future.get(int(timeout_s * 1000), jvm.java.util.concurrent.TimeUnit.MILLISECONDS))
    except Exception as exc:
        raise RunError(f"job {client.get_job_id()}: the stop with a savepoint into {directory} failed or did not "
                       f"complete within {timeout_s:.0f} s (job.stall_timeout_s): {str(exc).splitlines()[0][:400]}"
                       ) from exc
    return savepoint_path(location)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.recommend",
        description="Run the real-time recommendation job: read events and the item catalog from Kafka, keep "
                    "item-CF, user-CF, content and trending state, fuse them (model.hybrid.mode: weighted, rrf, "
                    "borda or learned), write top-N recommendations with reasons to Redis and to the Kafka "
                    "recommendations topic.",
        epilog="state:\n"
               "  A run continues from the newest checkpoint or savepoint of its job identity (job.name, the events\n"
               "  and items topics and their incarnation, the state-shaping config keys of jobs/state.py) under\n"
               "  job.checkpoint_dir and job.savepoint_dir: same state, same Kafka positions. It refuses a state of\n"
               "  another identity, or one past the end of the topics now, with the reason. A bounded run ends\n"
               "  with a savepoint (its final state); Ctrl-C stops an unbounded one with a savepoint. Where state\n"
               "  lives: docs/deployment.md.\n"
               "examples:\n"
               "  python -m jobs.recommend --bounded            # process what is in the topics, then stop\n"
               "  python -m jobs.recommend                      # run until Ctrl-C, continuing from the latest state\n"
               "  python -m jobs.recommend --fresh              # start anew: empty state, topics from the beginning\n"
               "  python -m jobs.recommend --resume var/savepoints/<identity>/savepoint-xxxx\n"
               "  python -m jobs.recommend --set job.parallelism=2 --set model.top_n=20\n"
               "  python -m jobs.recommend --mode learned        # = --set model.hybrid.mode=learned\n"
               "  FLINKREC_KAFKA__BOOTSTRAP=broker:9092 python -m jobs.recommend",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file merged over config/default.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. model.top_n=20 (repeatable)")
    parser.add_argument("--bounded", action="store_true",
                        help="stop, with a final savepoint, once the events and items topics are read to where they "
                             "ended at the start (default: run until Ctrl-C)")
    parser.add_argument("--parallelism", type=int, help="shortcut for --set job.parallelism=N")
    parser.add_argument("--mode", choices=list(FUSION),
                        help="fusion mode (or one method alone), shortcut for --set model.hybrid.mode=MODE")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", metavar="latest|PATH",
                       help="restore state and Kafka positions from this checkpoint or savepoint folder (checked: "
                            "same job identity, positions within the topics); 'latest' (the default) is the newest "
                            "state of this job identity, if there is one")
    start.add_argument("--fresh", action="store_true",
                       help="start anew: ignore the saved state of this job identity (it stays on disk, --resume "
                            "PATH still reaches it) and read the topics from the beginning "
                            "(job.starting_offsets=earliest unless set with --set)")
    parser.add_argument("--experiment", metavar="NAME",
                        help="run the experiment profile config/experiments/NAME.yaml (e.g. demo: weighted vs learned)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = list(args.set)
    if args.fresh and not any(o.split("=", 1)[0].strip() == "job.starting_offsets" for o in args.set):
        overrides.append("job.starting_offsets=earliest")
    if args.bounded:
        overrides.append("job.bounded=true")
    if args.parallelism:
        overrides.append(f"job.parallelism={args.parallelism}")
    if args.mode:
        overrides.append(f"model.hybrid.mode={args.mode}")
    cfg = load_config(args.config, overrides, experiment=args.experiment)
    if submitted():  # `flink run`: its -s decides the restore, the submitter the folders (deploy/submit.py)
        recommend_job(make_env(cfg), cfg)
        return 0
    try:
        dirs = state_dirs(cfg)
        restore = choose_restore(dirs, args.resume, args.fresh)
        env = make_env(cfg, restore=restore.as_uri() if restore else None, dirs=dirs)
        logging.getLogger().setLevel(level)  # importing PyFlink's Beam worker set the root logger to WARNING
        positions = verify_restore(restore, dirs, cfg) if restore is not None else None
        if positions is not None:
            logger.info("continuing from %s (checkpoint %d: %s)", restore, positions.checkpoint_id,
                        describe(positions.splits))
        else:
            if args.fresh:
                mark_fresh(dirs)
            logger.info("no state to continue from in %s: starting %s, from job.starting_offsets=%s",
                        dirs.checkpoints, "fresh (--fresh)" if args.fresh else "anew",
                        cfg["job"]["starting_offsets"])
        abort_lingering_transactions(cfg, positions)
    except (StateRefused, ValueError) as exc:  # ValueError: e.g. an input topic that does not exist
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logger.info("starting %s (parallelism %s, %s mode, bounded=%s)", cfg["job"]["name"],
                cfg["job"]["parallelism"], cfg["job"]["python_mode"], cfg["job"]["bounded"])
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)  # SIGTERM cancels the job first (a bare JVM exit can crash it)
    try:
        final = recommend_job(env, cfg, dirs)
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if final:
        print(f"final state: savepoint {final}\n"
              "the next run of this job continues from it (same state, same Kafka positions); --fresh starts anew",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
