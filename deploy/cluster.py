"""A local standalone Flink session cluster, built from the ``apache-flink`` wheel's own distribution.

``python -m deploy.cluster up|down|status|logs`` (``make cluster-up`` / ``cluster-down``):

* **up** renders ``deploy/flink-conf/config.yaml.in`` into ``var/flink/conf/`` (the cluster's
  ``FLINK_CONF_DIR``), links the wheel's ``lib/`` jars plus ``opt/flink-python-*.jar`` into
  ``var/flink/lib/`` (``FLINK_LIB_DIR``: the JobManager needs the Python operators' classes), prepares the
  *node interpreter* (below), and runs the wheel's ``bin/start-cluster.sh``: one JobManager
  (``standalonesession``) and one TaskManager (``taskexecutor``), two JVMs, web UI and REST API on
  ``http://127.0.0.1:8081``. It returns once the REST API answers with the TaskManager's slots registered.
  Idempotent: a running cluster is left alone.
* **down** runs ``bin/stop-cluster.sh`` and makes sure the two JVMs (only those, by the pids in
  ``var/flink/run/``) are gone. Running jobs die with the cluster: take a savepoint first
  (``python -m deploy.submit savepoint``).
* **status** prints whether the cluster answers, its slots and its jobs (exit code 0 up; 3 down, or up
  without a TaskManager, which ``up`` repairs by restarting the cluster).

Everything lives in ``var/flink/`` (git-ignored): ``conf/``, ``lib/``, ``log/``, ``run/`` (pid files),
``checkpoints/``, ``savepoints/``, ``tmp/``, ``blobs/``, ``pyenv/``.

The node interpreter is what a cluster node has installed: Python 3.11 with ``apache-flink`` and its
dependencies and ``numba`` (the model core's compiler), and nothing of this project. By default it is
``var/flink/pyenv``, a virtualenv whose ``site-packages`` holds links to exactly the distributions ``apache-flink``,
``numba``, pip and setuptools pull into ``.venv`` (no download). The project's code then reaches the workers only
the way it would reach a remote cluster: with the job (``deploy/submit.py``: ``-pyfs``/``-pyreq``).
``CLUSTER_PYTHON=/path/python`` uses another interpreter instead (it must import ``pyflink``, ``pemja`` and
``numba``).

Settings (environment): ``CLUSTER_REST_PORT`` (8081), ``CLUSTER_RPC_PORT`` (6123), ``CLUSTER_SLOTS`` (2, per
TaskManager), ``CLUSTER_TASKMANAGERS`` (1; thread mode runs one Python interpreter per TaskManager JVM, so Python
work uses more than one core only with more TaskManagers), ``CLUSTER_JM_MEMORY`` (1024m), ``CLUSTER_TM_MEMORY``
(3072m), ``CLUSTER_JVM_OPTS`` (``-XX:TieredStopAtLevel=1``; empty: the JVM default), ``CLUSTER_PYTHON``,
``CLUSTER_PROM_PORTS`` (9250-9259: the ports of Flink's Prometheus reporter, one per JVM, taken in the order the
JVMs start; the local mini-cluster keeps 9249, docs/metrics.md). They
are not named ``FLINKREC_*``: that prefix is reserved for config overrides (``config.load_config`` rejects unknown
keys).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as md
import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
FLINK_VAR = ROOT / "var" / "flink"
CONF_DIR = FLINK_VAR / "conf"
LIB_DIR = FLINK_VAR / "lib"
LOG_DIR = FLINK_VAR / "log"
RUN_DIR = FLINK_VAR / "run"
CHECKPOINT_DIR = FLINK_VAR / "checkpoints"
SAVEPOINT_DIR = FLINK_VAR / "savepoints"
PYENV_DIR = FLINK_VAR / "pyenv"
TEMPLATE = ROOT / "deploy" / "flink-conf" / "config.yaml.in"
IDENT = "flinkrec"  # FLINK_IDENT_STRING: part of the daemons' pid and log file names
DAEMONS = ("standalonesession", "taskexecutor")  # JobManager, TaskManager
#: what a node needs besides apache-flink's own dependencies: pip for `-pyreq`, setuptools for Beam's pkg_resources,
#: numba for the model core (the job's client imports it to build the job, the model's workers run it)
NODE_EXTRAS = ("pip", "setuptools", "numba", "kafka-python")
RUNTIME_STAMP = ".flinkrec-runtime"
DOWN_EXIT = 3


class ClusterError(RuntimeError):
    """The cluster could not be brought up, down or reached; the message names the port or log file."""


@dataclass(frozen=True)
class Settings:
    rest_port: int = 8081
    rpc_port: int = 6123
    slots: int = 2
    taskmanagers: int = 1  # TaskManager JVMs (thread mode: one Python interpreter, one GIL, each)
    jm_memory: str = "1024m"
    tm_memory: str = "3072m"
    python: str | None = None  # the node interpreter; None: var/flink/pyenv built from this venv
    jvm_opts: str = "-XX:TieredStopAtLevel=1"  # of the JobManager and TaskManager JVMs (job.jvm_options: why)
    prom_ports: str = "9250-9259"  # Prometheus reporter: each JVM takes the first free port of the range

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env

        def integer(name: str, default: int) -> int:
            raw = e.get(name, "")
            if not raw:
                return default
            if not raw.isdigit() or int(raw) <= 0:
                raise ClusterError(f"{name} must be a positive integer, got {raw!r}")
            return int(raw)

        return cls(rest_port=integer("CLUSTER_REST_PORT", cls.rest_port),
                   rpc_port=integer("CLUSTER_RPC_PORT", cls.rpc_port),
                   slots=integer("CLUSTER_SLOTS", cls.slots),
                   taskmanagers=integer("CLUSTER_TASKMANAGERS", cls.taskmanagers),
                   jm_memory=e.get("CLUSTER_JM_MEMORY") or cls.jm_memory,
                   tm_memory=e.get("CLUSTER_TM_MEMORY") or cls.tm_memory,
                   python=e.get("CLUSTER_PYTHON") or None,
                   jvm_opts=e.get("CLUSTER_JVM_OPTS", cls.jvm_opts),
                   prom_ports=prom_ports(e.get("CLUSTER_PROM_PORTS") or cls.prom_ports))


def prom_ports(value: str) -> str:
    """``CLUSTER_PROM_PORTS`` checked: a port or a range ``first-last`` (the reporter cannot be switched off here)."""
    from config import ConfigError, port_range

    try:
        ports = port_range(value, "CLUSTER_PROM_PORTS")
    except ConfigError as exc:
        raise ClusterError(str(exc)) from exc
    if ports is None:
        raise ClusterError(f"CLUSTER_PROM_PORTS must be a port or a range like 9250-9259, got {value!r}")
    return str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}-{ports[1]}"


# --- the Flink distribution inside the wheel ------------------------------------------------------------
def flink_home() -> Path:
    """``site-packages/pyflink``: the wheel ships bin/, conf/, lib/, opt/ and plugins/ of Flink 2.2."""
    spec = importlib.util.find_spec("pyflink")
    if spec is None or not spec.submodule_search_locations:
        raise ClusterError("pyflink is not importable: run this with the project's venv (`make venv`)")
    home = Path(next(iter(spec.submodule_search_locations)))
    if not (home / "bin" / "start-cluster.sh").is_file():
        raise ClusterError(f"{home} has no bin/start-cluster.sh: is apache-flink installed from the wheel?")
    return home


def flink_bin(name: str) -> Path:
    return flink_home() / "bin" / name


def flink_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) plus our conf, lib, log and pid dirs, for the wheel's
    scripts (``flink``, ``start-cluster.sh``...)."""
    from jobs.flink_env import SINGLE_THREADED_MATH

    env = {**SINGLE_THREADED_MATH, **(os.environ if base is None else base)}
    env.update(FLINK_CONF_DIR=str(CONF_DIR), FLINK_LIB_DIR=str(LIB_DIR), FLINK_IDENT_STRING=IDENT,
               FLINK_LOG_DIR=str(LOG_DIR), FLINK_PID_DIR=str(RUN_DIR))
    return env


# --- the node interpreter -------------------------------------------------------------------------------
def _requirement_names(dist: md.Distribution) -> Iterable[str]:
    from packaging.requirements import Requirement  # pip's dependency; installed with apache-flink's closure

    for raw in dist.requires or ():
        req = Requirement(raw)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            yield req.name


def runtime_closure(roots: Iterable[str] = ("apache-flink", *NODE_EXTRAS)) -> dict[str, md.Distribution]:
    """The installed distributions ``roots`` need, transitively (markers evaluated, no extras)."""
    from packaging.utils import canonicalize_name

    found: dict[str, md.Distribution] = {}
    todo = list(roots)
    while todo:
        name = str(canonicalize_name(todo.pop()))
        if name in found:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError as exc:
            raise ClusterError(f"{name} (needed by the node interpreter) is not installed in {sys.prefix}") from exc
        found[name] = dist
        todo.extend(_requirement_names(dist))
    return found


def build_node_runtime(target: Path = PYENV_DIR) -> Path:
    """A virtualenv at ``target`` holding links to apache-flink's closure from this venv; returns its python.

    Rebuilt only when the closure (names and versions) changed since the last build.
    """
    if sys.prefix == sys.base_prefix:
        raise ClusterError("building the node interpreter needs the project's venv (run with .venv/bin/python), "
                           "or set CLUSTER_PYTHON to an interpreter with apache-flink")
    closure = runtime_closure()
    stamp_text = "\n".join(sorted(f"{n}=={d.version}" for n, d in closure.items())) + f"\nfrom {sys.prefix}\n"
    python = target / "bin" / "python"
    stamp = target / RUNTIME_STAMP
    if python.exists() and stamp.is_file() and stamp.read_text() == stamp_text:
        return python
    logger.info("building the node interpreter in %s (%d distributions linked from %s)",
                _rel(target), len(closure), sys.prefix)
    shutil.rmtree(target, ignore_errors=True)
    base = getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable
    subprocess.run([base, "-m", "venv", "--without-pip", str(target)], check=True)
    site_dir = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
    for dist in closure.values():
        for f in dist.files or ():
            top = f.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".data"):
                continue  # scripts outside site-packages, caches, wheel data dirs
            link = site_dir / top
            source = Path(str(dist.locate_file(top)))
            if not link.exists() and not link.is_symlink() and source.exists():
                link.symlink_to(source)
    check_node_python(python)
    stamp.write_text(stamp_text)
    return python


def check_node_python(python: Path | str) -> list[str]:
    """Fail unless ``python`` imports pyflink and pemja; return its site-packages directories."""
    probe = ("import json, site, sysconfig, pyflink, pemja; "
             "print(json.dumps(list(dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()['purelib']]))))")
    try:
        out = subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise ClusterError(f"node interpreter {python} cannot import pyflink and pemja: "
                           f"{detail.strip()[-500:]}") from exc
    paths: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return [p for p in paths if Path(p).is_dir()]


def node_python(settings: Settings) -> Path:
    if settings.python:
        path = Path(settings.python)
        resolved = path if path.is_absolute() else Path(shutil.which(settings.python) or path)
        check_node_python(resolved)
        return resolved
    if sys.prefix == sys.base_prefix:
        check_node_python(sys.executable)
        return Path(sys.executable)
    return build_node_runtime()


def configured_node_python() -> Path:
    """The node interpreter the running cluster was configured with (from var/flink/conf/config.yaml)."""
    value = read_conf().get("python.executable")
    if not value:
        raise ClusterError(f"{_rel(CONF_DIR / 'config.yaml')} has no python.executable: run `make cluster-up`")
    return Path(value)


# --- configuration --------------------------------------------------------------------------------------
def render_conf(settings: Settings, python: Path) -> str:
    pythonpath = os.pathsep.join(check_node_python(python))
    values = {"VAR": str(FLINK_VAR), "REST_PORT": str(settings.rest_port), "RPC_PORT": str(settings.rpc_port),
              "SLOTS": str(settings.slots), "JM_MEMORY": settings.jm_memory, "TM_MEMORY": settings.tm_memory,
              "PYTHON": str(python), "PYTHONPATH": pythonpath, "JVM_OPTS": settings.jvm_opts or '""',
              "PROM_PORTS": settings.prom_ports}
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = sorted(set(re.findall(r"@([A-Z_]+)@", text)))
    if left:
        raise ClusterError(f"{_rel(TEMPLATE)} has placeholders this script does not fill: {', '.join(left)}")
    return text


def write_conf(text: str, settings: Settings) -> None:
    CONF_DIR.mkdir(parents=True, exist_ok=True)
    (CONF_DIR / "config.yaml").write_text(text)
    for src in sorted((flink_home() / "conf").iterdir()):
        if src.name.startswith(("log4j", "logback")):
            shutil.copyfile(src, CONF_DIR / src.name)
    (CONF_DIR / "masters").write_text(f"127.0.0.1:{settings.rest_port}\n")
    (CONF_DIR / "workers").write_text("127.0.0.1\n" * settings.taskmanagers)  # start-cluster.sh: one TM a line


def read_conf(conf_dir: Path = CONF_DIR) -> dict[str, str]:
    """The flattened ``key: value`` lines of the rendered config.yaml (the template only uses flat keys)."""
    path = conf_dir / "config.yaml"
    return _parse_conf(path.read_text()) if path.is_file() else {}


def link_lib() -> None:
    """var/flink/lib = the wheel's lib/*.jar + opt/flink-python-*.jar (as in a PyFlink-ready distribution)."""
    home = flink_home()
    python_jars = sorted((home / "opt").glob("flink-python-*.jar"))
    if not python_jars:
        raise ClusterError(f"{home / 'opt'} has no flink-python-*.jar")
    shutil.rmtree(LIB_DIR, ignore_errors=True)
    LIB_DIR.mkdir(parents=True)
    for jar in [*sorted((home / "lib").glob("*.jar")), python_jars[-1]]:
        (LIB_DIR / jar.name).symlink_to(jar)


# --- processes and the REST API -------------------------------------------------------------------------
def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def pid_file(daemon: str) -> Path:
    return RUN_DIR / f"flink-{IDENT}-{daemon}.pid"


def daemon_pids(daemon: str) -> list[int]:
    f = pid_file(daemon)
    if not f.is_file():
        return []
    return [int(x) for x in f.read_text().split() if x.isdigit()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie or a reused pid is not our daemon
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"org.apache.flink" in cmdline


def running_daemons() -> dict[str, list[int]]:
    return {d: [p for p in daemon_pids(d) if alive(p)] for d in DAEMONS}


def log_files(daemon: str | None = None) -> list[Path]:
    """The daemons' current log files, the most recently written last (a cluster of two TaskManagers leaves a
    ``-1`` log behind that a later one-TaskManager cluster does not write)."""
    def written(f: Path) -> tuple[float, str]:
        try:
            return f.stat().st_mtime, f.name
        except OSError:  # rotated away meanwhile
            return 0.0, f.name

    return sorted(LOG_DIR.glob(f"flink-{IDENT}-{daemon or '*'}-*.log"), key=written)


def rest_url(path: str = "", port: int | None = None) -> str:
    if port is None:
        conf = read_conf()
        port = int(conf.get("rest.port", Settings.rest_port))
    return f"http://127.0.0.1:{port}{path}"


def rest(path: str, *, method: str = "GET", body: Any = None, port: int | None = None, timeout: float = 10.0) -> Any:
    """One call of the Flink REST API; returns the decoded JSON (``None`` for an empty answer)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(rest_url(path, port), data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def overview(port: int | None = None) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = rest("/overview", port=port, timeout=3)
        return result
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_until_up(settings: Settings, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    jm_log = (log_files("standalonesession") or [LOG_DIR / f"flink-{IDENT}-standalonesession-0-*.log"])[-1]
    missing: dict[str, int] = {}
    while True:
        ov = overview(settings.rest_port)
        if (ov and ov.get("taskmanagers", 0) >= settings.taskmanagers
                and ov.get("slots-total", 0) >= settings.slots * settings.taskmanagers):
            return ov
        running = running_daemons()
        for daemon, pids in running.items():
            # gone in three polls in a row: one look can miss a JVM that is there (seen once in CI: a
            # TaskManager reported gone that registered a moment later)
            missing[daemon] = 0 if pids else missing.get(daemon, 0) + 1
            if missing[daemon] >= 3:
                log = (log_files(daemon) or [LOG_DIR])[-1]
                raise ClusterError(f"the {daemon} JVM exited while starting; see {_rel(log)} "
                                   f"(and the .out file next to it)")
        if time.monotonic() > deadline:
            what = ("answer" if ov is None else f"register {settings.taskmanagers} TaskManager(s) with "
                    f"{settings.slots * settings.taskmanagers} slots (it has {ov.get('taskmanagers')} with "
                    f"{ov.get('slots-total')})")
            raise ClusterError(f"the JobManager REST API on 127.0.0.1:{settings.rest_port} did not {what} within "
                               f"{timeout:.0f} s; see {_rel(jm_log)} and {_rel(LOG_DIR)}/*taskexecutor*.log")
        time.sleep(0.5)


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# --- commands -------------------------------------------------------------------------------------------
def up(settings: Settings | None = None, timeout: float = 120.0) -> dict[str, Any]:
    """Start the cluster unless it runs; return the REST ``/overview`` once the TaskManager's slots are in."""
    settings = settings or Settings.from_env()
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise ClusterError("java not found: install a JDK 17 (apt-get install -y openjdk-17-jre-headless)")
    running = running_daemons()
    ov = overview(settings.rest_port)
    if all(running.values()) and ov is not None:
        python = node_python(settings) if settings.python else configured_node_python()
        if read_conf() != _parse_conf(render_conf(settings, python)) or ov.get("taskmanagers") != settings.taskmanagers:
            logger.warning("the running cluster was started with other settings; `down` and `up` to apply them")
        logger.info("flink cluster already up on %s (%d slot(s), %d job(s) running)", rest_url("", settings.rest_port),
                    ov.get("slots-total", 0), ov.get("jobs-running", 0))
        return ov
    if any(running.values()):
        logger.info("a half-started cluster is left over (%s); stopping it first", running)
        down()
    for port, what, var in ((settings.rest_port, "REST/web UI", "CLUSTER_REST_PORT"),
                            (settings.rpc_port, "JobManager RPC", "CLUSTER_RPC_PORT")):
        if port_open(port):
            raise ClusterError(f"port {port} ({what}) is taken by a process this script did not start "
                               f"(ss -ltnp | grep {port}); free it or set {var}")
    for scratch in (FLINK_VAR / "tmp", FLINK_VAR / "blobs", FLINK_VAR / "web-upload"):
        shutil.rmtree(scratch, ignore_errors=True)  # a previous cluster's working files (none of ours runs)
    for d in (LOG_DIR, RUN_DIR, CHECKPOINT_DIR, SAVEPOINT_DIR, FLINK_VAR / "tmp", FLINK_VAR / "blobs",
              FLINK_VAR / "web-upload"):
        d.mkdir(parents=True, exist_ok=True)
    for f in RUN_DIR.glob(f"flink-{IDENT}-*.pid"):
        f.unlink()
    python = node_python(settings)
    write_conf(render_conf(settings, python), settings)
    link_lib()
    logger.info("starting flink (JobManager + TaskManager, %d slots) on 127.0.0.1:%d, logs in %s",
                settings.slots, settings.rest_port, _rel(LOG_DIR))
    # The daemons' working directory is var/flink, not the checkout: Python workers put their cwd first on
    # sys.path (`python -m ...`), which would let them import the project from the checkout instead of what
    # the job ships (-pyfs), hiding a broken submission.
    out = subprocess.run([str(flink_bin("start-cluster.sh"))], env=flink_env(), capture_output=True, text=True,
                         cwd=FLINK_VAR, timeout=120)
    if out.returncode != 0:
        raise ClusterError(f"start-cluster.sh failed ({out.returncode}): {(out.stdout + out.stderr).strip()[-1000:]}")
    t0 = time.monotonic()
    ov = wait_until_up(settings, timeout)
    logger.info("flink up: web UI %s, %d TaskManager(s), %d slot(s) after %.1f s", rest_url("", settings.rest_port),
                ov["taskmanagers"], ov["slots-total"], time.monotonic() - t0)
    return ov


def _parse_conf(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+):\s*(.*?)\s*$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def down(timeout: float = 60.0) -> None:
    """Stop the JobManager and TaskManager this project started (by their pid files); no-op when down."""
    running = running_daemons()
    if not any(running.values()):
        logger.info("flink cluster is not running")
        for f in RUN_DIR.glob(f"flink-{IDENT}-*.pid"):
            f.unlink()
        return
    logger.info("stopping flink (%s)", ", ".join(f"{d} pid {p}" for d, ps in running.items() for p in ps))
    if (CONF_DIR / "config.yaml").is_file():
        subprocess.run([str(flink_bin("stop-cluster.sh"))], env=flink_env(), capture_output=True, text=True,
                       cwd=FLINK_VAR, timeout=120, check=False)
    pids = [p for ps in running.values() for p in ps]
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    for p in pids:
        if alive(p):
            logger.warning("pid %d did not stop within %.0f s; killing it", p, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, 9)
    for f in RUN_DIR.glob(f"flink-{IDENT}-*.pid"):
        f.unlink()
    logger.info("flink stopped")


def status() -> int:
    settings_port = int(read_conf().get("rest.port", Settings.rest_port))
    ov = overview(settings_port)
    running = running_daemons()
    if ov is None:
        state = "down" if not any(running.values()) else f"not answering (pids {running})"
        print(f"flink: {state}")
        return DOWN_EXIT
    print(f"flink: up   {rest_url('', settings_port)}  taskmanagers {ov['taskmanagers']}  "
          f"slots {ov['slots-available']}/{ov['slots-total']} free  jobs running {ov['jobs-running']}")
    degraded = not ov["taskmanagers"] or not running["taskexecutor"]
    if degraded:
        log = (log_files("taskexecutor") or [LOG_DIR])[-1]
        print(f"flink: the TaskManager is gone (see {_rel(log)}); `python -m deploy.cluster up` restarts the cluster")
    try:
        jobs = rest("/jobs/overview", port=settings_port)["jobs"]
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        jobs = []
    for job in sorted(jobs, key=lambda j: j.get("start-time", 0)):
        print(f"  {job['jid']}  {job['state']:<10} {job['name']}")
    return DOWN_EXIT if degraded else 0


def logs(lines: int) -> None:
    for f in log_files():
        print(f"==> {_rel(f)} <==")
        print("\n".join(f.read_text(errors="replace").splitlines()[-lines:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.cluster",
        description="Run a local standalone Flink 2.2 session cluster (one JobManager, one TaskManager, two "
                    "JVMs) from the apache-flink wheel's distribution; config, logs, checkpoints and savepoints "
                    "in var/flink/.",
        epilog="environment: CLUSTER_REST_PORT (8081), CLUSTER_RPC_PORT (6123), CLUSTER_SLOTS (2), "
               "CLUSTER_JM_MEMORY (1024m), CLUSTER_TM_MEMORY (3072m), CLUSTER_JVM_OPTS (-XX:TieredStopAtLevel=1), "
               "CLUSTER_PYTHON (node interpreter; "
               "default: var/flink/pyenv, apache-flink's dependencies linked from this venv)\n"
               "examples:\n  python -m deploy.cluster up && python -m deploy.submit submit\n"
               "  python -m deploy.cluster status\n  python -m deploy.cluster down",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the cluster (idempotent); returns when the REST API has the slots")
    p_up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the REST API (default 120)")
    sub.add_parser("down", help="stop the cluster (running jobs stop with it; take a savepoint first)")
    sub.add_parser("status", help="whether the cluster answers, its slots and jobs "
                                  "(exit 0 up, 3 down or without TaskManager)")
    p_logs = sub.add_parser("logs", help="the last lines of the JobManager and TaskManager logs")
    p_logs.add_argument("-n", "--lines", type=int, default=40)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[cluster] %(message)s")
    try:
        if args.command == "up":
            up(timeout=args.timeout)
        elif args.command == "down":
            down()
        elif args.command == "status":
            return status()
        else:
            logs(args.lines)
    except ClusterError as exc:
        print(f"[cluster] ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
