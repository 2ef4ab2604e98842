"""Replay events into the ``events`` Kafka topic: ``python -m ingest.producer`` (``flinkrec-produce``).

Every event is one JSON message (:func:`udfs.events.event_to_json`) keyed by its ``user_id``, so one
user's events stay in order in one partition. The Kafka record timestamp is left to the producer
clock (MovieLens times are from 1997; as record timestamps they would fall out of retention at once);
the event time travels in the ``ts`` field.

Library use::

    from ingest.producer import produce_events
    n = produce_events(events, "127.0.0.1:9092", "events", rate=500)

``--bad N`` mixes ``N`` malformed records (:func:`bad_records`, one of each kind in
:data:`BAD_KINDS` in turn) evenly into the stream, for the dead-letter path.

``--skip N`` leaves out the first ``N`` events of the source's stream and ``--limit M`` sends at most ``M``
of the rest: events ``N .. N+M-1``, the same events (ids, times) as in the whole stream. So a replay in two
parts is ``--limit N`` and then ``--skip N``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from config import ConfigError, load_config
from udfs.events import Event, event_to_json

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_LINGER_MS = 20
DEFAULT_BATCH_BYTES = 256 * 1024
FLUSH_TIMEOUT_S = 120.0  # longest wait for the acknowledgements of the records still buffered after the last send


class Record(NamedTuple):
    """A raw Kafka record: ``key`` (bytes or None) and ``value`` (bytes)."""

    key: bytes | None
    value: bytes


class ProduceError(RuntimeError):
    """Kafka did not accept some of the records."""


def event_record(event: Event) -> Record:
    """The Kafka record of an event: key ``user_id``, value the event JSON."""
    return Record(event.user_id.encode("utf-8"), event_to_json(event).encode("utf-8"))


# --- malformed records ---------------------------------------------------------------------------------------------

def _bad_payload(kind: str, n: int) -> bytes:
    eid = f"bad-{n}"
    ok: dict[str, Any] = {"event_id": eid, "user_id": "bad-user", "item_id": "1", "type": "rate", "value": 4.0,
                          "ts": 881250949000}
    if kind == "bad_json":
        return f'{{"event_id": "{eid}", "user_id": "bad-user", "item_id": '.encode()
    if kind == "missing_field":
        del ok["item_id"]
    elif kind == "wrong_type":
        ok["ts"] = "1997-12-04T15:55:49Z"
    elif kind == "unknown_type":
        ok["type"] = "like"
    elif kind == "rating_out_of_range":
        ok["value"] = 7.5
    elif kind == "nan":
        ok["value"] = math.nan  # json.dumps writes the non-standard literal NaN
    elif kind == "not_an_object":
        return json.dumps([eid, "bad-user", "1", "rate", 4.0]).encode()
    elif kind == "bad_timestamp":
        ok["ts"] = -1
    else:
        raise ValueError(f"unknown bad record kind {kind!r} (known: {', '.join(BAD_KINDS)})")
    return json.dumps(ok).encode()


#: Kinds of malformed records and the ``InvalidEvent.reason`` the validator gives each.
BAD_KINDS: dict[str, str] = {
    "bad_json": "bad_json",
    "missing_field": "missing_field",
    "wrong_type": "wrong_type",
    "unknown_type": "unknown_type",
    "rating_out_of_range": "rating_out_of_range",
    "nan": "bad_number",
    "not_an_object": "not_an_object",
    "bad_timestamp": "bad_timestamp",
}


def bad_records(n: int) -> list[Record]:
    """``n`` malformed records cycling through :data:`BAD_KINDS`; event ids ``bad-1..bad-n``, keys the same."""
    if n < 0:
        raise ValueError(f"number of bad records must be >= 0, got {n!r}")
    kinds = list(BAD_KINDS)
    return [Record(f"bad-{k + 1}".encode(), _bad_payload(kinds[k % len(kinds)], k + 1)) for k in range(n)]


def interleave(items: Iterable[T], extra: Sequence[R], total: int) -> Iterator[T | R]:
    """Yield ``items`` with ``extra`` spread evenly among them (``total`` is the expected number of items).

    ``extra[k]`` comes just before item number ``(k + 1) * total // (len(extra) + 1)`` (0-based); extras
    whose place is never reached (fewer items than ``total``) come at the end.
    """
    slots = [(k + 1) * max(total, 0) // (len(extra) + 1) for k in range(len(extra))]
    k = 0
    for i, item in enumerate(items):
        while k < len(extra) and slots[k] <= i:
            yield extra[k]
            k += 1
        yield item
    yield from extra[k:]


# --- pacing --------------------------------------------------------------------------------------------------------

class Pacer:
    """Hold a rate over time: message ``i`` (0-based) is released at ``start + i / rate``.

    Because every deadline is computed from the start, sleep overshoot does not accumulate: a
    late message makes the following ones go sooner. Sleeps shorter than ``min_sleep`` are
    skipped, so high rates go out in short bursts.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, min_sleep: float = 0.001) -> None:
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate >= 0):
            raise ValueError(f"rate must be a finite number >= 0 (events per second), got {rate!r}")
        self.rate = float(rate)
        self._clock, self._sleep, self._min_sleep = clock, sleep, min_sleep
        self._start: float | None = None

    def wait(self, index: int) -> None:
        """Block until message ``index`` is due (no-op for rate 0)."""
        if self.rate == 0:
            return
        now = self._clock()
        if self._start is None:
            self._start = now
            return
        ahead = self._start + index / self.rate - now
        if ahead >= self._min_sleep:
            self._sleep(ahead)


# --- producing -----------------------------------------------------------------------------------------------------

def make_producer(bootstrap: str, linger_ms: int = DEFAULT_LINGER_MS, batch_size: int = DEFAULT_BATCH_BYTES,
                  **extra: Any) -> Any:
    """A batching, idempotent ``KafkaProducer`` with ``acks=all``."""
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms, batch_size=batch_size,
                         client_id="flinkrec-producer", **extra)


def bulk_producer(bootstrap: str, linger_ms: int = DEFAULT_LINGER_MS, batch_size: int = DEFAULT_BATCH_BYTES) -> Any:
    """The producer of :func:`send_records`: librdkafka (``confluent_kafka``), idempotent, ``acks=all``.

    A replay then leaves the machine's cores to the job it feeds (``make bench`` runs both on one machine;
    ``produce_s`` in its report). kafka-python stays for the admin client, the consumers and the producers that want a
    future per record (the API, the freshness probes)."""
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                     "linger.ms": linger_ms, "batch.size": batch_size, "client.id": "flinkrec-producer",
                     "queue.buffering.max.messages": 200_000})


def send_records(
    records: Iterable[Record],
    bootstrap: str,
    topic: str,
    rate: float = 0.0,
    progress: bool = True,
    total: int | None = None,
    unit: str = "ev",
) -> int:
    """Send raw records (with :func:`bulk_producer`); flush and wait for every acknowledgement; return how many
    were sent.

    Raises :class:`ProduceError` if the broker refused any record or did not acknowledge them all.
    """
    from confluent_kafka import KafkaException
    from tqdm import tqdm

    pacer = Pacer(rate)
    prod = bulk_producer(bootstrap)
    failed: list[Any] = []
    acked = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal acked
        if err is not None:
            failed.append(err)
        else:
            acked += 1

    show = progress and sys.stderr.isatty()
    bar = tqdm(total=total, unit=unit, unit_scale=True, desc=f"-> {topic}", disable=not show, mininterval=0.5)
    count = 0
    started = time.perf_counter()
    try:
        for rec in records:
            pacer.wait(count)
            while True:
                try:
                    prod.produce(topic, value=rec.value, key=rec.key, on_delivery=on_delivery)
                    break
                except BufferError:  # the local queue is full: let librdkafka send some
                    prod.poll(0.05)
            count += 1
            if count % 512 == 0:
                prod.poll(0)
                bar.update(512)
            if failed:
                break
        left = prod.flush(FLUSH_TIMEOUT_S)
    except KafkaException as exc:
        raise ProduceError(f"sending to topic {topic!r} on {bootstrap} failed after {count} records: {exc}") from exc
    finally:
        bar.update(count % 512)
        bar.close()
    elapsed = time.perf_counter() - started
    if failed:
        raise ProduceError(f"{len(failed)} of {count} records to topic {topic!r} failed; first error: {failed[0]}")
    if left or acked != count:
        raise ProduceError(f"{count - acked} of {count} records to topic {topic!r} on {bootstrap} were not "
                           f"acknowledged within {FLUSH_TIMEOUT_S:.0f} s")
    logger.info("produced %d records to %s in %.2f s (%.0f records/s)", count, topic, elapsed,
                count / elapsed if elapsed > 0 else float("inf"))
    return count


def produce_events(
    events_iter: Iterable[Event | Record],
    bootstrap: str,
    topic: str,
    rate: float = 0,
    progress: bool = True,
    total: int | None = None,
) -> int:
    """Send events (keyed by ``user_id``) and raw :class:`Record` s to ``topic``; return the number sent.

    ``rate`` is in records per second (0: as fast as possible), held over the whole run.
    """
    records = (e if isinstance(e, Record) else event_record(e) for e in events_iter)
    return send_records(records, bootstrap, topic, rate=rate, progress=progress, total=total)


# --- command line --------------------------------------------------------------------------------------------------

def number_arg(kind: type, minimum: float) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a valid {kind.__name__}") from None
        if not (math.isfinite(value) and value >= minimum):
            raise argparse.ArgumentTypeError(f"{raw!r} must be >= {minimum:g}")
        return value

    return parse


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--set``, ``--wait``, ``--quiet`` and ``--verbose``, shared by the ingest CLIs."""
    parser.add_argument("--config", metavar="FILE", help="YAML file merged over config/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set kafka.bootstrap=broker:9092 (repeatable)")
    parser.add_argument("--wait", type=number_arg(float, 0), default=30.0, metavar="SECONDS",
                        help="how long to wait for the Kafka broker to answer (default 30)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, including the Kafka client's")


def setup_logging(quiet: bool, verbose: bool) -> None:
    """Log to stderr; the chatty Kafka client only with --verbose."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # no-op if already configured
    logging.getLogger().setLevel(level)
    logging.getLogger("kafka").setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flinkrec-produce",
        description="Replay MovieLens-100K ratings or synthetic events into the events topic (kafka.topics.events), "
                    "one JSON message per event keyed by user_id.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  python -m ingest.producer                              all 100,000 MovieLens ratings, as fast as possible
  python -m ingest.producer --limit 5000 --rate 200      the first 5,000 ratings (in time order) at 200 events/s
  python -m ingest.producer --limit 1000 --bad 20        1,000 ratings with 20 malformed records mixed in
  python -m ingest.producer --skip 5000                  the rest of the ratings, after a --limit 5000 run
  python -m ingest.producer --skip 5000 --limit 1000     ratings 5,000..5,999 (0-based, in time order)
  python -m ingest.producer --source synthetic --events 1000000 --users 50000 --items 20000 --zipf 1.2 --seed 7
  python -m ingest.producer --set kafka.topics.events=demo-events --set kafka.bootstrap=broker:9092
  python -m ingest.producer --source synthetic --events 10 --dry-run     print the JSON instead of sending it

The item catalog goes separately: python -m ingest.catalog [--source synthetic --items N --seed N].
""")
    parser.add_argument("--source", choices=("movielens", "synthetic"), default="movielens",
                        help="where events come from (default: movielens)")
    parser.add_argument("--skip", type=number_arg(int, 0), default=0, metavar="N",
                        help="leave out the first N events of the stream (the rest keeps its ids and times), "
                             "e.g. after a --limit N run; counted before --limit")
    parser.add_argument("--limit", type=number_arg(int, 0), metavar="N",
                        help="send at most N events (of those after --skip)")
    parser.add_argument("--rate", type=number_arg(float, 0), default=0.0, metavar="EVENTS_PER_S",
                        help="target send rate, held on average over the run (default 0: as fast as possible)")
    parser.add_argument("--bad", type=number_arg(int, 0), default=0, metavar="N",
                        help=f"mix N malformed records into the stream (kinds: {', '.join(BAD_KINDS)})")
    syn = parser.add_argument_group("synthetic source")
    syn.add_argument("--events", type=number_arg(int, 0), default=100_000, metavar="N", help="events (default 100000)")
    syn.add_argument("--users", type=number_arg(int, 1), default=1_000, metavar="N", help="users (default 1000)")
    syn.add_argument("--items", type=number_arg(int, 1), default=5_000, metavar="N", help="items (default 5000)")
    syn.add_argument("--zipf", type=number_arg(float, 0), default=1.1, metavar="S",
                     help="Zipf exponent of item popularity (default 1.1; 0 = uniform)")
    syn.add_argument("--seed", type=number_arg(int, 0), default=0, metavar="N", help="random seed (default 0)")
    parser.add_argument("--no-create-topic", action="store_true",
                        help="do not create the topic (with kafka.partitions partitions) if it is missing")
    parser.add_argument("--dry-run", action="store_true", help="write the records to stdout, one per line, "
                        "instead of sending them")
    add_config_args(parser)
    return parser


class Selection(NamedTuple):
    """The events to send (after ``--skip``, at most ``--limit``), their number, and how many events of the
    source's stream were read to select them (all of it, or up to the end of the selection)."""

    events: Iterable[Event]
    n_events: int
    stream_length: int


def _events(args: argparse.Namespace, cfg: dict[str, Any]) -> Selection:
    end = None if args.limit is None else args.skip + args.limit
    if args.source == "movielens":
        from ingest.movielens import load_events

        prefix = load_events(limit=end, cfg=cfg)
        rest = prefix[args.skip:]
        return Selection(rest, len(rest), len(prefix))
    from ingest.synthetic import generate

    n = args.events if end is None else min(args.events, end)
    w = cfg["model"]["weights"]
    stream = generate(n, args.users, args.items, zipf_s=args.zipf, seed=args.seed, weights=w)
    return Selection(itertools.islice(stream, args.skip, None), max(0, n - args.skip), n)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    from ingest.movielens import DatasetNotFound

    bootstrap, topic = str(cfg["kafka"]["bootstrap"]), str(cfg["kafka"]["topics"]["events"])
    try:
        events, total, length = _events(args, cfg)
        if args.skip and not total:
            logger.warning("--skip %d leaves no event: the %s stream has %d", args.skip, args.source, length)
        bad = bad_records(args.bad)
        stream = interleave(events, bad, total)
        if args.dry_run:
            out = sys.stdout.buffer
            for item in stream:
                rec = item if isinstance(item, Record) else event_record(item)
                out.write(rec.value + b"\n")
            out.flush()
            return 0
        from kafka.errors import KafkaError

        from ingest.kafka_admin import ensure_topics, wait_for_kafka

        wait_for_kafka(bootstrap, timeout=args.wait)
        if not args.no_create_topic:
            try:
                ensure_topics(bootstrap, {topic: {}}, partitions=int(cfg["kafka"]["partitions"]))
            except KafkaError as exc:
                raise ProduceError(f"cannot create topic {topic!r} on {bootstrap}: {exc}") from exc
        logger.info("sending %d %s events%s%s to %s on %s%s", total, args.source,
                    f" (after the first {args.skip})" if args.skip else "",
                    f" and {len(bad)} bad records" if bad else "", topic, bootstrap,
                    f" at {args.rate:g}/s" if args.rate else "")
        started = time.perf_counter()
        n = produce_events(stream, bootstrap, topic, rate=args.rate, progress=not args.quiet, total=total + len(bad))
        elapsed = time.perf_counter() - started
        logger.info("done: %d records in %.2f s, %.0f events/s", n, elapsed, n / elapsed if elapsed > 0 else 0.0)
    except (DatasetNotFound, TimeoutError, ProduceError, ValueError) as exc:  # TimeoutError: KafkaUnavailable
        logger.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        logger.warning("interrupted")
        return 130
    except BrokenPipeError:
        return 0
    return 0


__all__ = [
    "BAD_KINDS", "Pacer", "ProduceError", "Record", "bad_records", "bulk_producer", "event_record", "interleave",
    "main", "produce_events", "send_records",
]

if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
