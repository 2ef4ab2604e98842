"""Follow the ``recommendations`` topic: ``python -m serving.tail`` (the example of a downstream consumer).

The Flink job writes one JSON message per updated user to ``kafka.topics.recommendations`` (the same
document as ``rec:recs:<user_id>``). This consumer:

* joins a consumer group (``--group``, default ``flinkrec-tail``): several copies share the partitions,
  and a restarted one goes on where the group stopped;
* reads with ``isolation_level=read_committed`` (records of aborted or still open transactions are never
  seen) and commits its offsets only after the lines are written and flushed (at-least-once);
* starts, for a group without committed offsets, at the end of the topic, or at the beginning with
  ``--from-beginning`` (like ``kafka-console-consumer``: offsets the group committed win);
* prints one JSON document per line (``--with-meta`` wraps it with topic, partition, offset, timestamp),
  to stdout or appended to ``--output FILE``; ``--user`` keeps one user's updates;
* with ``--latest``, prints only the last message of each key (the topic is keyed by ``user_id``, so that is
  every user's current list, equal to ``rec:recs:<user_id>``: what a compacted topic keeps), once it stops;
* stops after ``--max N`` messages, ``--timeout S`` seconds, ``--idle S`` seconds without a message,
  at the end offsets with ``--until-end``, or on Ctrl-C / SIGTERM (after committing what it wrote).

Library use::

    from serving.tail import tail
    n = tail("127.0.0.1:9092", "recommendations", group="my-app", out=sys.stdout, max_messages=10)
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

import orjson

from config import ConfigError, load_config

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # kafka-python 3.0 on Python 3.11
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

logger = logging.getLogger(__name__)

DEFAULT_GROUP = "flinkrec-tail"


class TailError(RuntimeError):
    """The topic cannot be followed (broker unreachable, topic missing)."""


def _line(record: Any, with_meta: bool) -> tuple[bytes | None, str | None]:
    """The output line of a record (without newline) and the user id it is about; None for a non-JSON value."""
    raw: bytes = record.value or b""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        logger.warning("skipping %s[%d]@%d: the value is not JSON (%r)", record.topic, record.partition,
                       record.offset, raw[:80])
        return None, None
    user = doc.get("user_id") if isinstance(doc, dict) else None
    user_id = str(user) if isinstance(user, (str, int)) and not isinstance(user, bool) else None
    if not with_meta:
        return raw.strip(), user_id
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    meta = {"topic": record.topic, "partition": record.partition, "offset": record.offset,
            "timestamp": record.timestamp, "key": key, "value": doc}
    return orjson.dumps(meta), user_id


def tail(bootstrap: str, topic: str, group: str = DEFAULT_GROUP, *, out: TextIO, from_beginning: bool = False,
         max_messages: int | None = None, timeout_s: float | None = None, idle_s: float | None = None,
         until_end: bool = False, user: str | None = None, with_meta: bool = False, wait_s: float = 10.0,
         latest: bool = False, stop: threading.Event | None = None, consumer_factory: Any = KafkaConsumer) -> int:
    """Write the messages of ``topic`` as JSON lines to ``out``; return how many were written.

    Offsets are committed for the group after each written and flushed batch. With ``latest`` only the last message
    of each record key is kept, and those are written (sorted by key) when the tail stops, and committed after.
    Raises :class:`TailError` when the broker does not answer or the topic does not exist within ``wait_s`` seconds.
    """
    if max_messages is not None and max_messages < 1:
        raise ValueError(f"max_messages must be >= 1, got {max_messages!r}")
    stop = stop or threading.Event()
    started = time.monotonic()
    try:
        consumer = consumer_factory(
            bootstrap_servers=bootstrap, group_id=group, client_id="flinkrec-tail", enable_auto_commit=False,
            isolation_level="read_committed", auto_offset_reset="earliest" if from_beginning else "latest",
            allow_auto_create_topics=False, request_timeout_ms=max(1000, int(wait_s * 1000)) + 30_000,
            value_deserializer=None)
    except (KafkaError, OSError) as exc:
        raise TailError(f"cannot connect to Kafka at {bootstrap}: {exc!r}; start it with "
                        "`bash deploy/services.sh up`") from exc
    written = 0
    last: dict[bytes, bytes] = {}  # latest: the last line of each key
    try:
        deadline = time.monotonic() + wait_s
        while not consumer.partitions_for_topic(topic):
            if time.monotonic() >= deadline or stop.is_set():
                raise TailError(f"topic {topic!r} does not exist on {bootstrap} (waited {wait_s:g} s); it is one "
                                "of the project's topics (ingest.kafka_admin.project_topics): is the job set up?")
            time.sleep(0.2)
        consumer.subscribe([topic])
        logger.info("following %s on %s as group %s (%s)", topic, bootstrap, group,
                    "from the beginning" if from_beginning else "new messages only")
        last_message = time.monotonic()
        ends: dict[Any, int] = {}
        while not stop.is_set():
            now = time.monotonic()
            if timeout_s is not None and now - started >= timeout_s:
                logger.info("stopping: --timeout %g s reached", timeout_s)
                break
            if idle_s is not None and now - last_message >= idle_s:
                logger.info("stopping: no message for %g s", idle_s)
                break
            budget = 0.5 if timeout_s is None else max(0.01, min(0.5, timeout_s - (now - started)))
            left = None if max_messages is None else max_messages - written
            batch = consumer.poll(timeout_ms=int(budget * 1000), max_records=left or 500)
            lines: list[bytes] = []
            for tp in sorted(batch, key=lambda t: t.partition):
                for record in batch[tp]:
                    line, user_id = _line(record, with_meta)
                    if line is not None and (user is None or user_id == user):
                        if latest:
                            last[record.key if record.key is not None else (user_id or "").encode()] = line
                        else:
                            lines.append(line)
            if batch:
                last_message = time.monotonic()
            if lines:
                out.write(b"\n".join(lines).decode("utf-8", "replace") + "\n")
                out.flush()
                written += len(lines)
            if batch:
                consumer.commit()  # after the flush: a crash before it re-delivers (at-least-once)
            if max_messages is not None and written >= max_messages:
                logger.info("stopping: --max %d reached", max_messages)
                break
            if until_end and _at_end(consumer, ends):
                logger.info("stopping: reached the end offsets")
                break
        if last:
            out.write(b"\n".join(last[k] for k in sorted(last)).decode("utf-8", "replace") + "\n")
            out.flush()
            written += len(last)
            consumer.commit()
    except KafkaError as exc:
        raise TailError(f"reading {topic!r} from {bootstrap} failed after {written} message(s): {exc!r}") from exc
    finally:
        consumer.close(autocommit=False)
    return written


def _at_end(consumer: Any, ends: dict[Any, int]) -> bool:
    """True once every assigned partition is at the end offset it had when first seen (read_committed: the LSO)."""
    assigned = consumer.assignment()
    if not assigned:
        return False
    unknown = [tp for tp in assigned if tp not in ends]
    if unknown:
        ends.update(consumer.end_offsets(unknown))
    return all(consumer.position(tp) >= ends[tp] for tp in assigned)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.tail",
        description="Follow the recommendations topic (kafka.topics.recommendations) from a consumer group and "
                    "print one JSON document per line: the example of a downstream consumer. Reads "
                    "read_committed and commits offsets after the lines are written (at-least-once).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  python -m serving.tail                                  new updates, as they come (Ctrl-C to stop)
  python -m serving.tail --from-beginning --max 10        the first 10 messages (for a new group)
  python -m serving.tail --group audit --output recs.jsonl --timeout 60
  python -m serving.tail --user 196 --with-meta           one user's updates with topic/partition/offset
  python -m serving.tail --from-beginning --until-end --group "check-$RANDOM"    what the topic holds now
  python -m serving.tail --from-beginning --until-end --latest --group "snap-$RANDOM"   every user's current list
  python -m serving.tail --from-beginning --max 100 | jq -c '{user_id, top: .items[0].item_id}'

--from-beginning applies to a group without committed offsets (as in kafka-console-consumer); use a new
--group to read everything again.
""")
    parser.add_argument("--topic", help="topic to follow (default: kafka.topics.recommendations)")
    parser.add_argument("--group", default=DEFAULT_GROUP, help=f"consumer group (default {DEFAULT_GROUP})")
    parser.add_argument("--from-beginning", action="store_true",
                        help="a group without committed offsets starts at the oldest message (default: the newest)")
    parser.add_argument("--output", metavar="FILE", help="append the lines to FILE instead of stdout")
    parser.add_argument("--max", dest="max_messages", type=_positive(int), metavar="N",
                        help="stop after N messages")
    parser.add_argument("--timeout", type=_positive(float), metavar="S", help="stop after S seconds")
    parser.add_argument("--idle", type=_positive(float), metavar="S", help="stop after S seconds without a message")
    parser.add_argument("--until-end", action="store_true",
                        help="stop at the end offsets the partitions had when they were assigned")
    parser.add_argument("--user", metavar="USER_ID", help="print only the updates of this user")
    parser.add_argument("--latest", action="store_true",
                        help="print only the last message of each user (key), when the tail stops: every user's "
                             "current list (use with --from-beginning --until-end)")
    parser.add_argument("--with-meta", action="store_true",
                        help='print {"topic", "partition", "offset", "timestamp", "key", "value"} per message')
    parser.add_argument("--wait", type=_positive(float), default=10.0, metavar="S",
                        help="how long to wait for the broker and the topic (default 10)")
    parser.add_argument("--config", metavar="FILE", help="YAML file merged over config/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set kafka.bootstrap=broker:9092 (repeatable)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    return parser


def _positive(kind: type) -> Any:
    def parse(raw: str) -> Any:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a valid {kind.__name__}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{raw!r} must be > 0")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    bootstrap = str(cfg["kafka"]["bootstrap"])
    topic = args.topic or str(cfg["kafka"]["topics"]["recommendations"])
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        logger.info("signal %d: stopping after the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        out: TextIO = open(args.output, "a", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    except OSError as exc:
        logger.error("cannot open --output %s: %s", args.output, exc)
        return 2
    try:
        n = tail(bootstrap, topic, args.group, out=out, from_beginning=args.from_beginning, latest=args.latest,
                 max_messages=args.max_messages, timeout_s=args.timeout, idle_s=args.idle, until_end=args.until_end,
                 user=args.user, with_meta=args.with_meta, wait_s=args.wait, stop=stop)
    except TailError as exc:
        logger.error("%s", exc)
        return 1
    except BrokenPipeError:  # e.g. | head
        return 0
    finally:
        if out is not sys.stdout:
            out.close()
    logger.info("%d message(s) from %s%s", n, topic, f" written to {args.output}" if args.output else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
