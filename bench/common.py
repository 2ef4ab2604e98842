"""What every benchmark shares: the output folder, service checks, per-run names, cleanup, progress.

Every run gets its own topics, Redis prefix, consumer group and checkpoint directory (a random
suffix), so a benchmark can share the broker and Redis with other people's tests; :meth:`RunNames.cleanup`
deletes them afterwards.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config import PROJECT_ROOT, load_config

logger = logging.getLogger(__name__)

RESULTS_DIR = PROJECT_ROOT / "results" / "bench"
FLINK_LOG_DIR = Path(".venv") / "lib" / "python3.11" / "site-packages" / "pyflink" / "log"
SERVICES_HINT = "start the services with `make services-up` (or `bash deploy/services.sh up`)"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class BenchError(RuntimeError):
    """A benchmark cannot go on; the message says why and what to do."""


def service_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean Kafka or Redis went away during a run (e.g. restarted by someone else's test)."""
    import redis
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    from ingest.kafka_admin import KafkaUnavailable

    return (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError, KafkaConnectionError,
            KafkaTimeoutError, KafkaUnavailable)


def flink_log_dir() -> Path:
    """Where PyFlink's mini-cluster writes its log (inside the installed ``pyflink`` package)."""
    try:
        import pyflink

        return Path(next(iter(pyflink.__path__))) / "log"
    except (ImportError, StopIteration):  # pragma: no cover - pyflink is a dependency
        return PROJECT_ROOT / FLINK_LOG_DIR


def progress(message: str, *args: Any) -> None:
    """One progress line on stderr (the summary table goes to stdout)."""
    text = message % args if args else message
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def base_config(overrides: list[str]) -> dict[str, Any]:
    """The project config (default.yaml, FLINKREC_* variables) with the benchmark's ``--set`` overrides."""
    cfg = load_config(None, overrides)
    for dotted in ("kafka.bootstrap", "redis.host"):
        section, key = dotted.split(".")
        host = str(cfg[section][key]).split(",")[0].rsplit(":", 1)[0].strip("[]")
        if host not in LOOPBACK:
            raise BenchError(f"{dotted} is {cfg[section][key]!r}: the benchmark only talks to 127.0.0.1")
    return cfg


def redis_client(cfg: dict[str, Any]) -> Any:
    import redis

    r = cfg["redis"]
    return redis.Redis(host=r["host"], port=int(r["port"]), db=int(r["db"]), socket_timeout=10,
                       socket_connect_timeout=3)


def check_services(cfg: dict[str, Any], timeout: float = 10.0) -> None:
    """Raise :class:`BenchError` with a hint when Kafka or Redis does not answer."""
    import redis

    from ingest.kafka_admin import KafkaUnavailable, wait_for_kafka

    r = cfg["redis"]
    client = redis_client(cfg)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                break
            except redis.RedisError as exc:
                if time.monotonic() >= deadline:
                    raise BenchError(f"Redis at {r['host']}:{r['port']} does not answer ({exc}); "
                                     f"{SERVICES_HINT}") from exc
                time.sleep(0.5)
    finally:
        client.close()
    try:
        wait_for_kafka(cfg["kafka"]["bootstrap"], timeout=timeout)
    except KafkaUnavailable as exc:
        raise BenchError(f"Kafka at {cfg['kafka']['bootstrap']} does not answer; {SERVICES_HINT}") from exc


@dataclass
class RunNames:
    """Topics, Redis prefix, consumer group and checkpoint directory of one benchmark run."""

    label: str
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    clean: bool = True  # False from create() until a cleanup() that fully succeeded

    @property
    def suffix(self) -> str:
        return f"bench-{self.label}-{self.tag}"

    @property
    def topics(self) -> dict[str, str]:
        return {name: f"{name}-{self.suffix}" for name in ("events", "items", "dlq", "recommendations")}

    @property
    def prefix(self) -> str:
        return f"{self.suffix}:"

    @property
    def checkpoint_dir(self) -> Path:
        return RESULTS_DIR / "tmp" / self.suffix / "checkpoints"

    def overrides(self) -> list[str]:
        """``--set`` overrides that point the job at this run's names."""
        out = [f"kafka.topics.{name}={topic}" for name, topic in self.topics.items()]
        out += [f"redis.prefix={self.prefix}", f"kafka.group_id={self.suffix}",
                f"job.checkpoint_dir={self.checkpoint_dir}", f"job.name=flinkrec-{self.suffix}"]
        return out

    def create(self, cfg: dict[str, Any]) -> None:
        from ingest.kafka_admin import ensure_topics, project_topics

        self.clean = False
        _CREATED.append(self)
        named = dict(cfg, kafka=dict(cfg["kafka"], topics=self.topics))
        ensure_topics(cfg["kafka"]["bootstrap"], project_topics(named), partitions=int(cfg["kafka"]["partitions"]))

    def cleanup(self, cfg: dict[str, Any]) -> None:
        """Delete this run's topics, Redis keys and checkpoints; log (do not raise) what fails."""
        from ingest.kafka_admin import delete_topics

        ok = True
        try:
            delete_topics(cfg["kafka"]["bootstrap"], list(self.topics.values()), timeout=20)
        except Exception as exc:  # cleanup must not hide the result or the original error
            ok = False
            logger.warning("could not delete topics of %s: %s", self.suffix, exc)
        try:
            client = redis_client(cfg)
            try:
                n = delete_prefix(client, self.prefix)
            finally:
                client.close()
            logger.debug("deleted %d Redis keys under %s", n, self.prefix)
        except Exception as exc:
            ok = False
            logger.warning("could not delete Redis keys under %s: %s", self.prefix, exc)
        shutil.rmtree(self.checkpoint_dir.parent, ignore_errors=True)
        self.clean = ok


_CREATED: list[RunNames] = []


def cleanup_leftovers(cfg: dict[str, Any]) -> None:
    """Clean up again the runs whose cleanup failed (e.g. Redis was restarting at that moment)."""
    for names in _CREATED:
        if not names.clean:
            logger.info("cleaning up %s again", names.suffix)
            names.cleanup(cfg)


def delete_prefix(client: Any, prefix: str) -> int:
    """Unlink every key under ``prefix`` (SCAN, pipelined); return how many."""
    n = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=2000):
        batch.append(key)
        if len(batch) >= 1000:
            n += client.unlink(*batch)
            batch = []
    if batch:
        n += client.unlink(*batch)
    return n


def scan_keys(client: Any, prefix: str) -> Iterator[bytes]:
    yield from client.scan_iter(match=f"{prefix}*", count=2000)


def dir_size(path: Path) -> int:
    """Bytes of the files under ``path`` (0 if it does not exist)."""
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, nearest-rank (a value that was measured)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]
