"""Run the job as a subprocess (``python -m jobs.recommend``), wait until it answers, sample its memory, stop it.

The job is started in a session of its own, so stopping it reaches the JVM (the mini-cluster, started
by PyFlink's gateway) and any Python workers it spawned: :meth:`JobProcess.stop` sends SIGTERM to each
process of the tree, by pid, then SIGKILL to what is left. Every started job is registered, and an
``atexit`` hook and the SIGTERM handler of the CLI stop whatever is still running.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import psutil

from bench.common import RESULTS_DIR, BenchError, flink_log_dir, progress
from config import PROJECT_ROOT

logger = logging.getLogger(__name__)

_RUNNING: set[JobProcess] = set()
_FLINK_LOGS = re.compile(r"Flink logs?: (\S+)")
_LOCK = threading.Lock()


def stop_all() -> None:
    """Stop every job this process started and that still runs (atexit, signal handlers)."""
    with _LOCK:
        jobs = list(_RUNNING)
    for job in jobs:
        job.stop()


atexit.register(stop_all)


class RssSampler(threading.Thread):
    """Samples the resident memory of a process tree every ``interval`` s; keeps the peaks.

    ``peak_total`` is the largest sum over the tree at one sample; ``peak_jvm`` the largest RSS of a
    ``java`` process; ``peak_python_workers`` the largest sum of Python processes below the JVM
    (process mode's Beam workers; in thread mode the Python code runs inside the JVM process);
    ``peak_client`` the launching ``python -m jobs.recommend`` process.
    """

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_total = self.peak_jvm = self.peak_python_workers = self.peak_client = 0
        self.samples = 0
        self.last_total = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        self._account(procs)

    def _account(self, procs: list[psutil.Process]) -> None:
        """One sample over ``procs``: their RSS summed, by kind, and the peaks updated."""
        total = jvm = workers = client = 0
        for p in procs:
            try:
                rss = p.memory_info().rss
                name = p.name()
            except psutil.Error:
                continue
            total += rss
            if p.pid == self.pid:
                client = rss
            elif name == "java":
                jvm += rss
            elif name.startswith("python"):
                workers += rss
        self.samples += 1
        self.last_total = total
        self.peak_total = max(self.peak_total, total)
        self.peak_jvm = max(self.peak_jvm, jvm)
        self.peak_python_workers = max(self.peak_python_workers, workers)
        self.peak_client = max(self.peak_client, client)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()

    def result(self) -> dict[str, int]:
        return {"peak_total_bytes": self.peak_total, "peak_jvm_bytes": self.peak_jvm,
                "peak_python_workers_bytes": self.peak_python_workers, "peak_client_bytes": self.peak_client,
                "samples": self.samples}


class JobProcess:
    """``python -m jobs.recommend --set ...`` in its own session, its output in ``log_path``."""

    def __init__(self, overrides: list[str], log_path: Path, *, sample_rss: bool = True) -> None:
        self.overrides = overrides
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.sampler: RssSampler | None = None
        self.sample_rss = sample_rss
        self._log: IO[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        cmd = [sys.executable, "-m", "jobs.recommend"]
        for item in self.overrides:
            cmd += ["--set", item]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        logger.debug("starting job: %s", " ".join(cmd))
        self.proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.started_at = time.time()
        with _LOCK:
            _RUNNING.add(self)
        if self.sample_rss:
            self.sampler = RssSampler(self.proc.pid)
            self.sampler.start()

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def java_pids(self) -> list[int]:
        if not self.alive():
            return []
        try:
            return [p.pid for p in psutil.Process(self.pid).children(recursive=True) if p.name() == "java"]
        except psutil.Error:
            return []

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by the job's process tree (the JVM included)."""
        if self.proc is None:
            return 0.0
        total = 0.0
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def flink_log(self) -> str:
        """Where the mini-cluster logs: the folder the job names in its log, else PyFlink's default."""
        try:
            m = _FLINK_LOGS.search(self.log_path.read_text(errors="replace"))
        except OSError:
            m = None
        if m:
            return m.group(1)
        return f"{flink_log_dir()} (.venv/lib/python3.11/site-packages/pyflink/log/)"

    def failure_hint(self) -> str:
        return f"job log: {self.log_path}; Flink log: {self.flink_log()}"

    def check_alive(self) -> None:
        """Raise :class:`BenchError` with the end of the job's log if the job has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"the job exited with code {self.proc.returncode}; {self.failure_hint()}\n"
                             f"--- last lines of the job log ---\n{self.tail()}")

    def wait_until_serving(self, is_ready: Callable[[], bool], poke: Callable[[], None], timeout: float,
                           poke_every: float = 2.0) -> float:
        """Call ``poke`` (send a warm-up event) every ``poke_every`` s until ``is_ready()``; return seconds waited."""
        t0 = time.monotonic()
        next_poke = t0
        next_note = t0 + 15
        while True:
            self.check_alive()
            now = time.monotonic()
            if now >= next_poke:
                poke()
                next_poke = now + poke_every
            if is_ready():
                return time.monotonic() - t0
            if now - t0 > timeout:
                raise BenchError(f"the job produced no output within {timeout:.0f} s of its start (no warm-up "
                                 f"recommendation in Redis); {self.failure_hint()}\n"
                                 f"--- last lines of the job log ---\n{self.tail()}")
            if now >= next_note:
                progress("  ... waiting for the job to start (%.0f s)", now - t0)
                next_note = now + 15
            time.sleep(0.1)

    def stop(self, grace: float = 15.0) -> None:
        """Stop the whole process tree: SIGTERM the job's launcher first (``jobs.recommend`` cancels its job and waits
        for it before its JVM goes: a JVM ended under a running Python operator can crash in native code), then each
        process left by pid, then SIGKILL what is left after ``grace`` s."""
        proc = self.proc
        if proc is None:
            return
        if self.sampler is not None:
            self.sampler.stop()
        procs: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(proc.pid)
            procs = [root, *root.children(recursive=True)]
        with contextlib.suppress(psutil.Error, subprocess.TimeoutExpired):
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=max(grace, 60.0))
        for p in reversed(procs):  # what is left, children first
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                logger.debug("killing pid %d (%s)", p.pid, p.name())
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        with _LOCK:
            _RUNNING.discard(self)

    def __enter__(self) -> JobProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def latest_checkpoint(root: Path, after: float = 0.0) -> Path | None:
    """The newest completed checkpoint ``<root>/<job identity>/<job id>/chk-N`` (it has ``_metadata``; jobs.state)
    written after ``after``."""
    best: tuple[float, Path] | None = None
    for meta in root.glob("*/*/chk-*/_metadata"):
        try:
            mtime = meta.stat().st_mtime
        except OSError:
            continue
        if mtime >= after and (best is None or mtime > best[0]):
            best = (mtime, meta.parent)
    return best[1] if best else None


LOG_DIR = RESULTS_DIR / "logs"


class _TreeRssSampler(RssSampler):
    """:class:`RssSampler` over the processes ``pids()`` returns (the cluster's JVMs) instead of one tree."""

    def __init__(self, pids: Callable[[], list[int]], interval: float = 0.5) -> None:
        super().__init__(-1, interval)
        self._pids = pids

    def sample(self) -> None:
        procs: list[psutil.Process] = []
        for pid in self._pids():
            try:
                procs += [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
            except psutil.Error:
                continue
        self._account(procs)


class ClusterJob(JobProcess):
    """The job on a local standalone cluster of ``taskmanagers`` TaskManagers with one slot each.

    In thread mode every Python operator of a TaskManager runs in that JVM's one embedded interpreter
    (one GIL): parallelism beyond 1 uses more cores only with more TaskManagers, the production layout
    (``deploy/k8s``: one slot per TaskManager pod). :meth:`start` brings the cluster up
    (``deploy.cluster``) and submits the job the way ``make submit`` does (``flink run`` with the project
    shipped as ``-pyfs``); :meth:`stop` cancels it and stops the cluster. Refuses to run beside a cluster it
    did not start. Memory and CPU are those of the JobManager and TaskManager JVMs.
    """

    def __init__(self, overrides: list[str], log_path: Path, taskmanagers: int, *, sample_rss: bool = True) -> None:
        super().__init__(overrides, log_path, sample_rss=sample_rss)
        self.taskmanagers = taskmanagers
        self.job_id: str | None = None
        self._up = False

    def start(self) -> None:
        from deploy import cluster
        from deploy.submit import Submission, submit

        if any(cluster.running_daemons().values()) or cluster.overview() is not None:
            raise BenchError("a Flink cluster is already running (make cluster-status): the benchmark starts its "
                             "own with one slot per TaskManager; stop it first with `make cluster-down`")
        settings = cluster.Settings.from_env({**os.environ, "CLUSTER_TASKMANAGERS": str(self.taskmanagers),
                                              "CLUSTER_SLOTS": "1"})
        self.started_at = time.time()
        with _LOCK:
            _RUNNING.add(self)
        self._up = True
        try:
            cluster.up(settings)
            # file:// URIs: the job's client runs in var/flink/job, not in the checkout
            overrides = [f"job.checkpoint_dir={Path(o.split('=', 1)[1]).resolve().as_uri()}"
                         if o.startswith("job.checkpoint_dir=") else o for o in self.overrides]
            self.job_id = submit(Submission(overrides=overrides, parallelism=self.taskmanagers), wait=180)
        except Exception as exc:
            self.stop()
            raise BenchError(f"could not run the job on the local cluster: {exc}; logs in {cluster.LOG_DIR}") from exc
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text(f"job {self.job_id} on the local cluster; logs in {cluster.LOG_DIR}\n")
        if self.sample_rss:
            self.sampler = _TreeRssSampler(self._cluster_pids)
            self.sampler.start()

    @staticmethod
    def _cluster_pids() -> list[int]:
        from deploy import cluster

        return [p for pids in cluster.running_daemons().values() for p in pids]

    @property
    def pid(self) -> int:
        pids = self._cluster_pids()
        return pids[0] if pids else -1

    def alive(self) -> bool:
        return self._state() == "RUNNING"

    def _state(self) -> str | None:
        from deploy.submit import job_details

        if self.job_id is None:
            return None
        try:
            return str(job_details(self.job_id).get("state"))
        except Exception:  # the cluster is gone
            return None

    def java_pids(self) -> list[int]:
        """The TaskManager JVMs (where the Python code runs), then the JobManager."""
        from deploy import cluster

        running = cluster.running_daemons()
        return [*running["taskexecutor"], *running["standalonesession"]]

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self._cluster_pids():
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        return total

    def flink_log(self) -> str:
        from deploy import cluster

        return str(cluster.LOG_DIR)

    def check_alive(self) -> None:
        state = self._state()
        if state != "RUNNING":
            from deploy.submit import root_exception

            why = root_exception(self.job_id) if self.job_id and state else "the cluster does not answer"
            raise BenchError(f"the job on the local cluster is {state}: {why}; {self.failure_hint()}")

    def stop(self, grace: float = 15.0) -> None:
        from deploy import cluster
        from deploy.submit import cancel

        if self.sampler is not None:
            self.sampler.stop()
        if self.job_id is not None and self._state() == "RUNNING":
            with contextlib.suppress(Exception):
                cancel(self.job_id)
        if self._up:
            cluster.down()
            self._up = False
        with _LOCK:
            _RUNNING.discard(self)
