"""Submit the recommendation job to the local Flink session cluster, take savepoints, resume and rescale.

``python -m deploy.submit submit|savepoint|resume|cancel|list`` (``make submit`` / ``savepoint`` / ``resume``).

**submit** runs, with the cluster's ``FLINK_CONF_DIR`` (``var/flink/conf``, so the REST address comes from
there)::

    flink run -d -py jobs/recommend.py \\
        -pyfs var/flink/job/pyfs                        # the project packages (config core udfs operators jobs ingest)
        -pyreq var/flink/job/requirements.txt#var/flink/job/wheelhouse   # redis==<pin>, installed offline
        -pyclientexec <node python> -pyexec <node python> \\
        -j var/jars/flink/flink-sql-connector-kafka-5.0.0-2.2.jar [-p N] [-s <savepoint>] \\
        [--set k=v ...] [--set job.parallelism=N] \\
        --set job.checkpoint_dir=file://<var/flink/checkpoints/IDENTITY> --set job.savepoint_dir=file://<var/flink/savepoints/IDENTITY>

and prints the job id (stdout: the id alone; progress goes to stderr). It waits until every task runs.
IDENTITY is the job identity's folder (``jobs/state.py``: job name, input topics and their ids, state-shaping
config), so checkpoints and savepoints of different jobs, topic incarnations or state layouts never mix.

How the job's Python dependencies travel (the way they would to a remote cluster):

* the node interpreter (``python.executable`` of the cluster, see ``deploy/cluster.py``) has only
  ``apache-flink`` and its dependencies, like a node or the Kubernetes image;
* the project's code goes with the job as ``-pyfs``: a directory of links to the six packages, which the
  client zips and uploads through the JobManager's blob server and every TaskManager unpacks onto the
  workers' PYTHONPATH (the client, which runs ``jobs/recommend.py``, gets the same path);
* the job's JVM front (``var/jars/flinkrec/flinkrec-jvm.jar``, ``make jars``) is appended to ``pipeline.jars`` by
  ``jobs/flink_env.py`` and ships with the job graph beside the ``-j`` connector;
* the third-party packages the workers import beyond pyflink (``redis``, pinned in ``pyproject.toml``) go as
  ``-pyreq`` with a wheelhouse: ``pip download`` fills ``var/flink/job/wheelhouse`` once, and each
  TaskManager runs ``pip install --no-index --find-links <wheelhouse>`` into the job's directory at start.

**savepoint** stops the job with a savepoint into its identity's folder (``flink stop --savepointPath
var/flink/savepoints/IDENTITY``; with ``--keep-running``: ``flink savepoint``) and prints the savepoint's path.
**resume** submits the job again from a savepoint (default: the newest of its job identity, never another's)
with the same ``--set`` overrides as the last submission (``var/flink/job/last-submit.json``), at
``--parallelism N`` (``-p N`` and ``--set job.parallelism=N``: the job sets its parallelism from its config,
which wins over ``-p``). A savepoint given to ``submit``/``resume`` is checked first (``jobs.state.verify_restore``:
same identity, Kafka positions within the topics now) and refused with the reason otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.cluster import (
    CHECKPOINT_DIR,
    FLINK_VAR,
    LOG_DIR,
    ROOT,
    SAVEPOINT_DIR,
    ClusterError,
    configured_node_python,
    flink_bin,
    flink_env,
    overview,
    rest,
)
from jobs.state import (
    StateDirs,
    StatePositions,
    StateRefused,
    abort_lingering_transactions,
    describe,
    local_path,
    prepare,
    state_dirs,
    verify_restore,
)

logger = logging.getLogger(__name__)

JOB_DIR = FLINK_VAR / "job"
PYFS_DIR = JOB_DIR / "pyfs"
REQUIREMENTS = JOB_DIR / "requirements.txt"
WHEELHOUSE = JOB_DIR / "wheelhouse"
LAST_SUBMIT = JOB_DIR / "last-submit.json"
SUBMITTED_JOBS = JOB_DIR / "jobs"  # <job id>.json: the state folders each submitted job was given
ENTRY_POINT = ROOT / "jobs" / "recommend.py"
#: the packages the job's client and workers import (shipped with -pyfs; ingest: the client reads topic offsets)
PROJECT_PACKAGES = ("config", "core", "udfs", "operators", "jobs", "ingest")
#: third-party packages the workers import beyond pyflink's own dependencies (shipped with -pyreq); numba and
#: kafka-python, which the job's client needs too, are part of the node interpreter (deploy/cluster.py NODE_EXTRAS,
#: the image)
WORKER_REQUIREMENTS = ("redis",)
JOB_NAME = "flinkrec-recommend"
KEEP_CLI_LOGS = 50  # var/flink/log/cli-*.log: the output of each flink command run here
SUBMITTED = re.compile(r"Job has been submitted with JobID ([0-9a-f]{32})")
SAVEPOINT_DONE = re.compile(r"Savepoint completed\. Path: (\S+)")


class SubmitError(RuntimeError):
    """A submission, savepoint or cancellation that did not work; the message says why and where to look."""


@dataclass
class Submission:
    overrides: list[str] = field(default_factory=list)  # --set k=v for the job, in order
    config: str | None = None  # --config FILE for the job
    parallelism: int | None = None
    savepoint: str | None = None
    allow_non_restored_state: bool = False
    requirements: bool = True


# --- what travels with the job --------------------------------------------------------------------------
def connector_jar() -> Path:
    from jobs.flink_env import CONNECTOR_JAR

    jar = ROOT / "var" / "jars" / "flink" / CONNECTOR_JAR
    if not jar.is_file():
        raise SubmitError(f"Flink Kafka connector {jar} is missing: run `make jars`")
    return jar


def stage_project(target: Path = PYFS_DIR) -> Path:
    """A directory of links to the project's packages, for ``-pyfs``.

    ``-pyfs DIR`` puts DIR itself on the PYTHONPATH (so it must hold the packages, not be one). The client
    follows the links to the real tree (so ``config.PROJECT_ROOT`` is the checkout and the connector jar is
    found), and the upload to the cluster zips the files the links point to.
    """
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for pkg in PROJECT_PACKAGES:
        src = ROOT / pkg
        if not (src / "__init__.py").is_file():
            raise SubmitError(f"{src} is not a package")
        (target / pkg).symlink_to(src)
    return target


def pinned_requirements(names: Iterable[str] = WORKER_REQUIREMENTS) -> list[str]:
    """``name<spec>`` for each of ``names`` as pinned in pyproject.toml's dependencies."""
    from packaging.requirements import Requirement

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {Requirement(d).name.lower(): d.split(";")[0].strip() for d in deps}
    missing = [n for n in names if n.lower() not in pins]
    if missing:
        raise SubmitError(f"pyproject.toml does not pin {', '.join(missing)}")
    return [pins[n.lower()] for n in names]


def prepare_requirements(python: Path) -> tuple[Path, Path]:
    """requirements.txt with the pinned worker packages and a wheelhouse holding them (``pip download`` once)."""
    JOB_DIR.mkdir(parents=True, exist_ok=True)
    text = "\n".join(pinned_requirements()) + "\n"
    REQUIREMENTS.write_text(text)
    stamp = WHEELHOUSE / ".requirements"
    if stamp.is_file() and stamp.read_text() == text:
        return REQUIREMENTS, WHEELHOUSE
    shutil.rmtree(WHEELHOUSE, ignore_errors=True)
    WHEELHOUSE.mkdir(parents=True)
    logger.info("downloading the job's worker requirements (%s) into %s", text.strip().replace("\n", ", "),
                WHEELHOUSE.relative_to(ROOT))
    out = subprocess.run([str(python), "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(WHEELHOUSE),
                          "-r", str(REQUIREMENTS)], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SubmitError(f"pip download of {REQUIREMENTS.relative_to(ROOT)} failed (needs PyPI once; or submit "
                          f"with --no-requirements to rely on the node's packages): {out.stderr.strip()[-800:]}")
    stamp.write_text(text)
    return REQUIREMENTS, WHEELHOUSE


def job_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The CLI's environment: the cluster's conf dir, and only FLINKREC_* variables that are config overrides.

    The job's client calls ``config.load_config()``, which rejects ``FLINKREC_*`` names that are not
    ``FLINKREC_<SECTION>__<KEY>`` (e.g. ``REQUIRE_SERVICES`` set by ``make test``).
    """
    base = dict(os.environ if env is None else env)
    for name in list(base):
        if name.startswith("FLINKREC_") and "__" not in name:
            del base[name]
    return flink_env(base)


def cluster_overrides() -> list[str]:
    """Config overrides every submission gets: the job's checkpoint (and savepoint) dirs are the cluster's."""
    from config import load_config

    job = load_config(env={})["job"]
    out = [f"job.checkpoint_dir={CHECKPOINT_DIR.as_uri()}"]
    if "savepoint_dir" in job:
        out.append(f"job.savepoint_dir={SAVEPOINT_DIR.as_uri()}")
    return out


def submission_config(sub: Submission) -> dict[str, Any]:
    """The config the job's client will load for ``sub`` (the cluster's folders, the overrides, the environment)."""
    from config import load_config

    env = {k: v for k, v in os.environ.items() if not (k.startswith("FLINKREC_") and "__" not in k)}
    overrides = [*cluster_overrides(), *sub.overrides]
    if sub.parallelism:
        overrides.append(f"job.parallelism={sub.parallelism}")
    return load_config(sub.config, overrides, env=env)


def submission_dirs(sub: Submission, cfg: dict[str, Any] | None = None) -> StateDirs:
    """The folders of the submission's job identity under the cluster's checkpoint and savepoint folders
    (jobs/state.py: job name, input topics and their ids, state-shaping config); the job gets them as its
    ``job.checkpoint_dir`` / ``job.savepoint_dir``."""
    try:
        return state_dirs(cfg or submission_config(sub))
    except ValueError as exc:  # an input topic that does not exist
        raise SubmitError(str(exc)) from exc


def flink_command(sub: Submission, python: Path, pyfs: Path, requirements: tuple[Path, Path] | None,
                  dirs: StateDirs | None = None) -> list[str]:
    cmd = [str(flink_bin("flink")), "run", "--detached",
           "-py", str(ENTRY_POINT), "-pyfs", str(pyfs),
           "-pyclientexec", str(python), "-pyexec", str(python),
           "-j", str(connector_jar())]
    if requirements:
        cmd += ["-pyreq", f"{requirements[0]}#{requirements[1]}"]
    if sub.parallelism:
        cmd += ["-p", str(sub.parallelism)]
    if sub.savepoint:
        cmd += ["-s", sub.savepoint]
        if sub.allow_non_restored_state:
            cmd.append("--allowNonRestoredState")
    # program arguments (jobs/recommend.py)
    for item in cluster_overrides():
        cmd += ["--set", item]
    for item in sub.overrides:
        cmd += ["--set", item]
    if sub.parallelism:
        cmd += ["--set", f"job.parallelism={sub.parallelism}"]
    if sub.config:
        cmd += ["--config", str(Path(sub.config).resolve())]
    if dirs is not None:  # last: the identity's folders under whatever checkpoint folder the overrides chose
        cmd += ["--set", f"job.checkpoint_dir={dirs.checkpoints}", "--set", f"job.savepoint_dir={dirs.savepoints}"]
    return cmd


def _run_cli(cmd: Sequence[str], what: str, timeout: float) -> str:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    JOB_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"cli-{what}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    logger.debug("running %s", " ".join(cmd))
    try:
        # not the checkout as cwd: the client must import the project from what the job ships
        out = subprocess.run(list(cmd), env=job_environment(), capture_output=True, text=True, cwd=JOB_DIR,
                             timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise SubmitError(f"`flink {what}` did not finish within {timeout:.0f} s") from exc
    text = out.stdout + out.stderr
    log.write_text(" ".join(cmd) + "\n\n" + text)
    for old in sorted(LOG_DIR.glob("cli-*.log"), key=lambda p: p.stat().st_mtime)[:-KEEP_CLI_LOGS]:
        old.unlink(missing_ok=True)
    if out.returncode != 0:
        causes = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(("Caused by", "Traceback"))
                  or re.match(r"^\w+(\.\w+)*(Error|Exception): ", ln.strip())]
        root = causes[-1] if causes else text.strip()[-400:]
        raise SubmitError(f"`flink {what}` failed with exit code {out.returncode}: {root}\n"
                          f"full output: {log.relative_to(ROOT)}")
    return text


def _require_cluster() -> None:
    if overview() is None:
        raise SubmitError("the Flink cluster does not answer (its REST port is in var/flink/conf/config.yaml): "
                          "start it with `make cluster-up` (python -m deploy.cluster up)")


# --- commands -------------------------------------------------------------------------------------------
def submit(sub: Submission, *, wait: float = 180.0) -> str:
    """Submit the job (detached); return its id once all its tasks run (``wait=0``: right after submission)."""
    _require_cluster()
    cfg = submission_config(sub)
    dirs = submission_dirs(sub, cfg)
    restored = check_savepoint(Path(sub.savepoint), dirs, cfg) if sub.savepoint else None
    abort_lingering_transactions(cfg, restored)
    prepare(dirs)
    python = configured_node_python()
    pyfs = stage_project()
    requirements = prepare_requirements(python) if sub.requirements else None
    cmd = flink_command(sub, python, pyfs, requirements, dirs)
    t0 = time.monotonic()
    text = _run_cli(cmd, "run", timeout=300)
    m = SUBMITTED.search(text)
    if not m:
        raise SubmitError(f"`flink run` did not print a job id; output ends with: {text.strip()[-400:]}")
    job_id = m.group(1)
    record = {"job_id": job_id, "overrides": sub.overrides, "config": sub.config, "parallelism": sub.parallelism,
              "savepoint": sub.savepoint, "requirements": sub.requirements, "submitted_at": time.time(),
              "checkpoint_dir": dirs.checkpoints, "savepoint_dir": dirs.savepoints, "command": cmd}
    LAST_SUBMIT.write_text(json.dumps(record, indent=2))
    SUBMITTED_JOBS.mkdir(parents=True, exist_ok=True)
    (SUBMITTED_JOBS / f"{job_id}.json").write_text(json.dumps(record, indent=2))
    logger.info("submitted job %s in %.1f s%s", job_id, time.monotonic() - t0,
                f" from savepoint {sub.savepoint}" if sub.savepoint else "")
    if wait:
        wait_running(job_id, wait)
        logger.info("job %s is running (%.1f s after submission)", job_id, time.monotonic() - t0)
    return job_id


def job_details(job_id: str) -> dict[str, Any]:
    result: dict[str, Any] = rest(f"/jobs/{job_id}")
    return result


def wait_running(job_id: str, timeout: float) -> dict[str, Any]:
    """Until the job and every one of its tasks run; raise with the job's root exception if it fails."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            job = job_details(job_id)
        except (urllib.error.URLError, OSError) as exc:
            raise SubmitError(f"the cluster stopped answering while job {job_id} was starting ({exc})") from exc
        state = job.get("state")
        if state in ("FAILED", "FAILING", "RESTARTING", "CANCELED", "FINISHED"):
            raise SubmitError(f"job {job_id} is {state}: {root_exception(job_id)}")
        tasks = [v.get("status") for v in job.get("vertices", [])]
        if state == "RUNNING" and tasks and all(t in ("RUNNING", "FINISHED") for t in tasks):
            return job
        if time.monotonic() > deadline:
            raise SubmitError(f"job {job_id} not running after {timeout:.0f} s (state {state}, tasks {tasks}); "
                              f"see var/flink/log/*taskexecutor*.log")
        time.sleep(1.0)


def root_exception(job_id: str) -> str:
    try:
        exc = rest(f"/jobs/{job_id}/exceptions")
    except (urllib.error.URLError, OSError, ValueError):
        return "(no exception history)"
    history = (exc.get("exceptionHistory") or {}).get("entries") or []
    text = (history[0].get("stacktrace") if history else None) or exc.get("root-exception") or ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    causes = [ln.strip() for ln in lines if ln.strip().startswith("Caused by") or "Exception:" in ln]
    return (causes[-1] if causes else (lines[0] if lines else "(no exception recorded)"))[:600]


def running_jobs() -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = rest("/jobs/overview")["jobs"]
    return [j for j in jobs if j["state"] in ("RUNNING", "CREATED", "RESTARTING", "INITIALIZING")]


def resolve_job(job_id: str | None) -> str:
    """The given job, else the last submitted one if it still runs, else the only running flinkrec job."""
    if job_id:
        return job_id
    running = running_jobs()
    if LAST_SUBMIT.is_file():
        last = json.loads(LAST_SUBMIT.read_text())["job_id"]
        if any(j["jid"] == last for j in running):
            return str(last)
    ours = [j for j in running if j["name"] == JOB_NAME]
    if len(ours) == 1:
        return str(ours[0]["jid"])
    if not ours:
        raise SubmitError("no running flinkrec job on the cluster (`python -m deploy.submit list`)")
    raise SubmitError(f"{len(ours)} flinkrec jobs are running; name one: {', '.join(j['jid'] for j in ours)}")


def job_savepoint_dir(job_id: str) -> str:
    """The savepoint folder of a job submitted from here (its identity's, under var/flink/savepoints)."""
    record = SUBMITTED_JOBS / f"{job_id}.json"
    if record.is_file():
        return str(json.loads(record.read_text())["savepoint_dir"])
    logger.warning("job %s was not submitted from here (no %s): its savepoint goes to %s, outside any job-identity "
                   "folder, so `resume` will not find it as the latest", job_id, record.relative_to(ROOT),
                   SAVEPOINT_DIR.relative_to(ROOT))
    return SAVEPOINT_DIR.as_uri()


def savepoint(job_id: str | None = None, *, stop: bool = True, drain: bool = False) -> str:
    """Take a savepoint of the job (by default stopping it with it) into its job identity's folder under
    var/flink/savepoints; return its path."""
    _require_cluster()
    jid = resolve_job(job_id)
    target = job_savepoint_dir(jid)
    folder = local_path(target)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    if stop:
        cmd = [str(flink_bin("flink")), "stop", "--savepointPath", target, *(["--drain"] if drain else []), jid]
    else:
        cmd = [str(flink_bin("flink")), "savepoint", jid, target]
    t0 = time.monotonic()
    text = _run_cli(cmd, "stop" if stop else "savepoint", timeout=600)
    m = SAVEPOINT_DONE.search(text)
    if not m:
        raise SubmitError(f"no savepoint path in the output of `flink {'stop' if stop else 'savepoint'}`: "
                          f"{text.strip()[-400:]}")
    path = m.group(1)
    path = path[len("file:"):] if path.startswith("file:") else path
    path = re.sub(r"^/+", "/", path)
    logger.info("savepoint of job %s at %s (%.1f s%s)", jid, path, time.monotonic() - t0,
                ", job stopped" if stop else "")
    return path


def latest_savepoint(dirs: StateDirs) -> str:
    """The newest savepoint of the job identity ``dirs`` (never another identity's)."""
    folder = dirs.savepoint_path
    candidates = [p for p in folder.glob("savepoint-*") if (p / "_metadata").is_file()] if folder else []
    if not candidates:
        others = sorted(str(m.parent.relative_to(ROOT)) for m in SAVEPOINT_DIR.glob("*/savepoint-*/_metadata"))
        raise SubmitError(f"no savepoint of this job identity in {dirs.savepoints}: take one with `make savepoint`"
                          + (f" (savepoints of other job identities, not used: {', '.join(others)})" if others else ""))
    return str(max(candidates, key=lambda p: (p / "_metadata").stat().st_mtime))


def check_savepoint(path: Path, dirs: StateDirs, cfg: dict[str, Any]) -> StatePositions:
    """Refuse (:class:`SubmitError`) a savepoint of another job identity or past the end of the topics now
    (:func:`jobs.state.verify_restore`; its Kafka positions are read with a local PyFlink JVM)."""
    if not (path / "_metadata").is_file():
        raise SubmitError(f"{path} is not a completed savepoint or checkpoint (no _metadata)")
    try:
        positions = verify_restore(path, dirs, cfg)
    except StateRefused as exc:
        raise SubmitError(str(exc)) from exc
    logger.info("savepoint %s: checkpoint %d, %s", path, positions.checkpoint_id, describe(positions.splits))
    return positions


def resume(parallelism: int | None, savepoint_path: str | None = None, extra: Sequence[str] = (),
           *, config: str | None = None, allow_non_restored_state: bool = False, requirements: bool = True,
           wait: float = 180.0) -> str:
    """Submit again from a savepoint with the last submission's overrides (plus ``extra``) at ``parallelism``."""
    last: dict[str, Any] = json.loads(LAST_SUBMIT.read_text()) if LAST_SUBMIT.is_file() else {}
    overrides = [o for o in last.get("overrides", []) if not o.startswith("job.parallelism=")]
    sub = Submission(overrides=[*overrides, *extra], config=config or last.get("config"),
                     parallelism=parallelism or last.get("parallelism"),
                     allow_non_restored_state=allow_non_restored_state, requirements=requirements)
    sub.savepoint = savepoint_path or latest_savepoint(submission_dirs(sub))
    return submit(sub, wait=wait)


def cancel(job_id: str | None = None) -> str:
    _require_cluster()
    jid = resolve_job(job_id)
    _run_cli([str(flink_bin("flink")), "cancel", jid], "cancel", timeout=120)
    logger.info("cancelled job %s", jid)
    return jid


def list_jobs() -> None:
    _require_cluster()
    for job in sorted(rest("/jobs/overview")["jobs"], key=lambda j: j.get("start-time", 0)):
        print(f"{job['jid']}  {job['state']:<10} {job['name']}")


# --- command line ---------------------------------------------------------------------------------------
def _add_job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for the job, e.g. kafka.topics.events=my-events (repeatable)")
    p.add_argument("--config", help="YAML file merged over config/default.yaml (read by the job's client)")
    p.add_argument("--python-mode", choices=("thread", "process"),
                   help="shortcut for --set job.python_mode=... (both run on this cluster)")
    p.add_argument("--no-requirements", action="store_true",
                   help="do not ship the pinned worker packages with -pyreq (use the node's)")
    p.add_argument("--allow-non-restored-state", action="store_true",
                   help="with a savepoint: skip state of operators the job no longer has")
    p.add_argument("--no-wait", action="store_true", help="return right after submission, not once tasks run")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.submit",
        description="Submit the recommendation job to the local Flink cluster (`python -m deploy.cluster up`), "
                    "stop it with a savepoint, and resume it from one at another parallelism.",
        epilog="examples:\n"
               "  python -m deploy.submit submit --set kafka.topics.events=events      # prints the job id\n"
               "  python -m deploy.submit savepoint                                      # prints the savepoint path\n"
               "  python -m deploy.submit resume --parallelism 2                         # newest savepoint\n"
               "  FLINKREC_KAFKA__BOOTSTRAP=broker:9092 python -m deploy.submit submit   # env overrides reach the job",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_submit = sub.add_parser("submit", help="submit the job detached; prints the job id")
    p_submit.add_argument("--parallelism", "-p", type=int, help="-p N and --set job.parallelism=N")
    p_submit.add_argument("--savepoint", "-s", help="start from this savepoint (or 'latest')")
    _add_job_options(p_submit)
    p_sp = sub.add_parser("savepoint", help="stop the job with a savepoint; prints the savepoint path")
    p_sp.add_argument("job_id", nargs="?", help="default: the last submitted job if running, else the only one")
    p_sp.add_argument("--keep-running", action="store_true", help="take the savepoint without stopping the job")
    p_sp.add_argument("--drain", action="store_true", help="flush windows and timers before stopping (end of input)")
    p_res = sub.add_parser("resume", help="resubmit from a savepoint with the last submission's overrides")
    p_res.add_argument("--parallelism", "-p", type=int, default=2, help="new parallelism (default 2)")
    p_res.add_argument("--savepoint", "-s",
                       help="savepoint path (default: the newest of this job identity in var/flink/savepoints)")
    _add_job_options(p_res)
    p_cancel = sub.add_parser("cancel", help="cancel the job without a savepoint")
    p_cancel.add_argument("job_id", nargs="?")
    sub.add_parser("list", help="the cluster's jobs")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="[submit] %(message)s",
                        stream=sys.stderr)
    try:
        if args.command in ("submit", "resume"):
            overrides = list(args.set)
            if args.python_mode:
                overrides.append(f"job.python_mode={args.python_mode}")
            wait = 0.0 if args.no_wait else 180.0
            if args.command == "submit":
                new = Submission(overrides=overrides, config=args.config, parallelism=args.parallelism,
                                 allow_non_restored_state=args.allow_non_restored_state,
                                 requirements=not args.no_requirements)
                new.savepoint = latest_savepoint(submission_dirs(new)) if args.savepoint == "latest" else args.savepoint
                job_id = submit(new, wait=wait)
            else:
                job_id = resume(args.parallelism, args.savepoint, overrides, config=args.config,
                                allow_non_restored_state=args.allow_non_restored_state,
                                requirements=not args.no_requirements, wait=wait)
            print(job_id)
        elif args.command == "savepoint":
            print(savepoint(args.job_id, stop=not args.keep_running, drain=args.drain))
        elif args.command == "cancel":
            print(cancel(args.job_id))
        else:
            list_jobs()
    except (SubmitError, ClusterError) as exc:
        print(f"[submit] ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
