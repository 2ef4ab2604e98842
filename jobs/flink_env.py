"""One place that turns the config into a configured StreamExecutionEnvironment."""

from __future__ import annotations

import logging
import os
import re
import site
import sys
import time
from pathlib import Path
from typing import Any

from pyflink.common import Configuration
from pyflink.datastream import CheckpointingMode, DataStream, StreamExecutionEnvironment

from config import PROJECT_ROOT, resolve_path
from jobs.metrics import configure_metrics
from jobs.state import StateDirs, prepare, state_dirs

logger = logging.getLogger(__name__)

CONNECTOR_JAR = "flink-sql-connector-kafka-5.0.0-2.2.jar"
JVM_JAR = "var/jars/flinkrec/flinkrec-jvm.jar"  # relative to the project root; jvm/build.sh writes it


def connector_jar() -> Path:
    """The Flink Kafka connector fetched by ``make jars`` (deploy/maven/pom.xml)."""
    jar = PROJECT_ROOT / "var" / "jars" / "flink" / CONNECTOR_JAR
    if not jar.is_file():
        raise FileNotFoundError(f"Flink Kafka connector {jar} is missing: run `make jars` (or `make run`)")
    return jar


def jvm_jar() -> Path:
    """The job's own JVM operators (``jvm/src``, :mod:`operators.front`), built by ``make jars`` (jvm/build.sh)."""
    jar = PROJECT_ROOT / JVM_JAR
    if not jar.is_file():
        raise FileNotFoundError(f"the job's JVM jar {jar} is missing: run `make jars` (it compiles jvm/src)")
    return jar


def _export_pythonpath() -> None:
    """Let the embedded (thread-mode) interpreter see this venv and the project.

    pemja initialises CPython from the base installation and ignores the venv (FLINK-38585), so its
    workers would miss ``pemja``/``pyflink``; the JVM launched by PyFlink inherits PYTHONPATH.
    """
    wanted = [*site.getsitepackages(), str(PROJECT_ROOT)]
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(wanted + current))


#: numerical libraries' thread pools: one thread each. The operators' numpy work is small (a row's cosines, a
#: catalog mat-vec) and runs in many subtasks at once; OpenBLAS's own threads then only fight over the cores.
#: Must be set before the JVM (and its Python) starts.
SINGLE_THREADED_MATH = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _export_math_threads() -> None:
    for var, value in SINGLE_THREADED_MATH.items():
        os.environ.setdefault(var, value)


def _export_jvm_memory(job: dict[str, Any]) -> None:
    """Memory of the local mini-cluster JVM (the one PyFlink starts; a cluster's own config decides there).

    * ``job.local_jvm_heap`` -> ``-Xmx`` in ``JVM_ARGS`` (unless it already has one): without it the JVM may
      grow its heap to a quarter of the machine's RAM before collecting, far past the live state;
    * ``job.jvm_options`` appended to ``JVM_ARGS`` (default ``-XX:TieredStopAtLevel=1``, see config/default.yaml);
    * ``MALLOC_ARENA_MAX=2``: the embedded interpreter allocates from many JVM threads, and glibc would give
      each its own 64 MiB arenas. Both must be set before the JVM starts (the first environment of a process).
    """
    heap = job.get("local_jvm_heap")
    if heap and not re.fullmatch(r"[1-9][0-9]*[kKmMgG]", str(heap)):
        raise ValueError(f"job.local_jvm_heap {heap!r} must be a size like 1536m or 2g (or null)")
    args = os.environ.get("JVM_ARGS", "")
    if heap and "-Xmx" not in args:
        args = f"{args} -Xmx{heap}".strip()
    options = job.get("jvm_options")
    if options is not None and not isinstance(options, str):
        raise ValueError(f"job.jvm_options {options!r} must be a string of JVM options (or null)")
    for option in (options or "").split():
        if option not in args.split():
            args = f"{args} {option}".strip()
    if args:
        os.environ["JVM_ARGS"] = args
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")


def latest_checkpoint(cfg: dict[str, Any]) -> Path | None:
    """The newest completed checkpoint (a ``chk-N`` folder with ``_metadata``) of the job identity ``cfg`` describes
    (its namespace under ``job.checkpoint_dir``: :mod:`jobs.state`)."""
    folder = state_dirs(cfg).checkpoint_path
    found = [m.parent for m in folder.glob("*/chk-*/_metadata")] if folder is not None and folder.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def restart_strategy(job: dict[str, Any]) -> dict[str, str]:
    """Flink's restart strategy from ``job.restart_attempts`` / ``job.restart_delay_ms``: exponential delay from
    the given delay (x1.5, at most 30 s), and after that many failures in a row (a run of 10 minutes without one
    resets the count) the job fails with the cause instead of restarting forever; 0 attempts: never restart."""
    if not job["restart_attempts"]:
        return {"restart-strategy.type": "none"}
    return {"restart-strategy.type": "exponential-delay",
            "restart-strategy.exponential-delay.initial-backoff": f"{max(job['restart_delay_ms'], 1)} ms",
            "restart-strategy.exponential-delay.max-backoff": "30 s",
            "restart-strategy.exponential-delay.backoff-multiplier": "1.5",
            "restart-strategy.exponential-delay.reset-backoff-threshold": "10 min",
            "restart-strategy.exponential-delay.jitter-factor": "0.1",
            "restart-strategy.exponential-delay.attempts-before-reset-backoff": str(job["restart_attempts"])}


def _uri(folder: Any) -> str:
    return str(folder) if "://" in str(folder) else resolve_path(str(folder)).as_uri()


def make_env(cfg: dict[str, Any], *, kafka: bool = True, parallelism: int | None = None,
             restore: str | None = None, dirs: StateDirs | None = None) -> StreamExecutionEnvironment:
    """The environment for the job; ``restore`` is a checkpoint/savepoint URI (see :func:`jobs.state.choose_restore`).

    With ``kafka`` and checkpoints on, checkpoints and savepoints go to the folders of the job's identity (``dirs``,
    else :func:`jobs.state.state_dirs`: looked up on the broker), created here with their ``identity.json``."""
    job = cfg["job"]
    _export_pythonpath()
    _export_math_threads()
    if "FLINK_LOG_DIR" not in os.environ:  # one folder per process, instead of one file inside the wheel
        log_dir = PROJECT_ROOT / "var" / "log" / f"flink-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        log_dir.mkdir(parents=True, exist_ok=True)
        os.environ["FLINK_LOG_DIR"] = str(log_dir)
        logger.info("Flink logs: %s", log_dir)
    submitted = "PYFLINK_GATEWAY_PORT" in os.environ  # started by `flink run`: -pyexec, -j ... decide
    if not submitted:
        _export_jvm_memory(job)  # before anything of PyFlink starts the JVM (Configuration() does)
    # Python operators in process mode (the model: in_python_processes) get worker processes of their own, not
    # PyFlink's "loopback" worker inside this process: that one shares this interpreter (one GIL for every model
    # subtask) and leaves its worker settings in os.environ, which breaks any PyFlink client started from here later
    os.environ["_python_worker_execution_mode"] = "process"  # noqa: SIM112 - PyFlink reads this name
    conf = Configuration()
    if not submitted:
        # The Python worker must be this interpreter (the venv's), not whatever `python` is on PATH.
        conf.set_string("python.executable", sys.executable)
        conf.set_string("python.client.executable", sys.executable)
    conf.set_string("python.execution-mode", job["python_mode"])
    conf.set_string("python.fn-execution.bundle.size", str(job["bundle_size"]))
    conf.set_string("python.fn-execution.bundle.time", str(job["bundle_time_ms"]))
    conf.set_string("state.backend.type", job["state_backend"])
    # a watermark at most once per user window: each one that passes buffered events flushes the front's buffers
    # (operators.front), so a shorter interval would cut the per-window batches into smaller ones
    conf.set_string("pipeline.auto-watermark-interval", f"{job['window_ms']} ms")
    configure_metrics(conf, cfg, submitted=submitted)  # Flink's Prometheus reporter (metrics.prometheus_port)
    for key, value in restart_strategy(job).items():
        conf.set_string(key, value)
    if kafka and not submitted:
        conf.set_string("pipeline.jars", connector_jar().as_uri())
    interval = job["checkpoint_interval_ms"]
    if interval:
        if dirs is None:
            plain = StateDirs(_uri(job["checkpoint_dir"]), _uri(job["savepoint_dir"]), None)
            dirs = state_dirs(cfg) if kafka else plain
        prepare(dirs)
        conf.set_string("execution.checkpointing.interval", f"{interval} ms")
        conf.set_string("execution.checkpointing.mode", "EXACTLY_ONCE")
        conf.set_string("execution.checkpointing.storage", "filesystem")
        conf.set_string("execution.checkpointing.dir", dirs.checkpoints)
        conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
        conf.set_string("execution.checkpointing.num-retained", "3")
        conf.set_string("execution.checkpointing.savepoint-dir", dirs.savepoints)
    if restore:
        logger.info("restoring state from %s", restore)
        conf.set_string("execution.state-recovery.path", restore)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    # appended to pipeline.jars (the connector here, the -j jar of `flink run`) and loaded for py4j
    env.add_jars(jvm_jar().as_uri())
    env.set_parallelism(parallelism or job["parallelism"])
    # how long a partly filled network buffer may wait before it is sent downstream (Flink's default is 100 ms,
    # paid on every hop a batch, a rank request or a neighbour list takes); the one per-event hop (the front's)
    # has job.event_buffer_timeout_ms (operators.front.event_batches). Both validated by config.validate
    env.set_buffer_timeout(job["buffer_timeout_ms"])
    if interval:
        env.enable_checkpointing(interval, CheckpointingMode.EXACTLY_ONCE)
    return env



def in_python_processes(stream: DataStream) -> DataStream:
    """``stream``'s Python operator, run in Beam worker processes (``python.execution-mode=process``) whatever
    ``job.python_mode`` says. The model core's numba kernels deadlock in the embedded interpreter of thread mode (a
    kernel called with a numpy array releases it with ``PyGILState_Ensure``, which the embedded interpreter's threads
    cannot take). PyFlink gives an operator the environment's configuration itself and reads the mode from it when
    the job is translated, so the operator gets a copy with the mode changed."""
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    transformation = stream._j_data_stream.getTransformation()
    field = transformation.getClass().getDeclaredField("configuration")
    field.setAccessible(True)
    conf = jvm.org.apache.flink.configuration.Configuration(field.get(transformation))
    conf.set(jvm.org.apache.flink.python.PythonOptions.PYTHON_EXECUTION_MODE, "process")
    field.set(transformation, conf)
    return stream
