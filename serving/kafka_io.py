"""Kafka for the API: produce accepted events, and check that the broker answers.

Both use kafka-python, which blocks: the API calls them from worker threads. Clients are created on
first use (the API starts while Kafka is down and answers 503 until it is back) and kept.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ingest.producer import Record

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # kafka-python 3.0 on Python 3.11
    from kafka.errors import KafkaError

logger = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """Kafka did not take (all of) the records; ``sent`` holds the indexes that were acknowledged."""

    def __init__(self, message: str, sent: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.sent = list(sent)


class EventPublisher:
    """Produces records to one topic with ``acks=all`` and waits for every acknowledgement.

    ``producer`` (optional) is an existing ``KafkaProducer``-like object (``send(topic, key=, value=)``
    returning a future with ``get(timeout)``, ``flush``); it is not closed by :meth:`close`. Without one,
    a producer is made on first use, after making sure the topic exists (``kafka.partitions`` partitions).
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int = 2, producer: Any = None,
                 timeout_s: float = 10.0, linger_ms: int = 1) -> None:
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.timeout_s = timeout_s
        self.linger_ms = linger_ms
        self._producer = producer
        self._own = producer is None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._producer is None:
                from ingest.kafka_admin import ensure_topics
                from ingest.producer import make_producer

                ms = max(1000, int(self.timeout_s * 1000))
                try:
                    ensure_topics(self.bootstrap, {self.topic: {}}, partitions=self.partitions, timeout=self.timeout_s)
                    self._producer = make_producer(self.bootstrap, linger_ms=self.linger_ms, max_block_ms=ms,
                                                   request_timeout_ms=ms, delivery_timeout_ms=max(ms + 1000, 2000))
                except (KafkaError, OSError) as exc:
                    raise PublishError(f"Kafka at {self.bootstrap} is not available: {exc!r}") from exc
                logger.info("producing events to topic %s on %s", self.topic, self.bootstrap)
            return self._producer

    def publish(self, records: Sequence[Record]) -> None:
        """Send ``records`` (key, value) and wait until Kafka acknowledged each; raise :class:`PublishError`."""
        if not records:
            return
        producer = self._get()
        futures: list[Any] = []
        try:
            for rec in records:
                futures.append(producer.send(self.topic, key=rec.key, value=rec.value))
            producer.flush(timeout=self.timeout_s)
        except KafkaError as exc:
            logger.warning("sending to %s failed after %d of %d record(s): %r", self.topic, len(futures),
                           len(records), exc)
        sent: list[int] = []
        first: BaseException | None = None
        for i, fut in enumerate(futures):
            try:
                fut.get(timeout=self.timeout_s)
                sent.append(i)
            except (KafkaError, TimeoutError) as exc:
                first = first or exc
        if len(sent) < len(records):
            raise PublishError(f"Kafka at {self.bootstrap} acknowledged {len(sent)} of {len(records)} record(s) "
                               f"to topic {self.topic!r}" + (f": {first!r}" if first else ""), sent)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None and self._own:
                try:
                    self._producer.close(timeout=self.timeout_s)
                except KafkaError as exc:  # pragma: no cover - closing a broken producer
                    logger.warning("closing the Kafka producer: %r", exc)
                self._producer = None


@dataclass
class ProbeResult:
    ok: bool
    latency_ms: float
    error: str | None = None
    topic_exists: bool | None = None


class KafkaProbe:
    """Asks the broker for its topic list (a metadata request: creates nothing) with a short timeout."""

    def __init__(self, bootstrap: str, topic: str, timeout_s: float = 2.0) -> None:
        self.bootstrap, self.topic, self.timeout_s = bootstrap, topic, timeout_s
        self._admin: Any = None
        self._lock = threading.Lock()

    def check(self) -> ProbeResult:
        started = time.perf_counter()
        with self._lock:
            try:
                if self._admin is None:
                    from kafka import KafkaAdminClient

                    ms = max(1000, int(self.timeout_s * 1000))
                    self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="flinkrec-api-health",
                                                   request_timeout_ms=ms, bootstrap_timeout_ms=ms)
                topics = self._admin.list_topics()
            except (KafkaError, OSError) as exc:
                self._close_admin()
                return ProbeResult(False, (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}")
        return ProbeResult(True, (time.perf_counter() - started) * 1000, topic_exists=self.topic in topics)

    def _close_admin(self) -> None:
        if self._admin is not None:
            try:
                self._admin.close()
            except Exception:  # pragma: no cover - a broken client
                logger.debug("closing the Kafka admin client failed", exc_info=True)
            self._admin = None

    def close(self) -> None:
        with self._lock:
            self._close_admin()
