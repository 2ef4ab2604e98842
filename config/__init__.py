"""Configuration: one YAML file with environment and command-line overrides.

``load_config()`` returns a plain nested ``dict`` built from, in order of precedence
(last wins):

1. ``config/default.yaml`` (shipped with the project, documented key by key);
2. an optional user YAML file (``--config``), merged key by key, then an experiment profile
   (``--experiment NAME``: ``config/experiments/NAME.yaml``);
3. environment variables ``FLINKREC_<SECTION>__<KEY>[__<SUBKEY>]=value``;
4. explicit overrides ``["model.top_n=20", ...]`` (the ``--set`` flag of the CLIs).

Values from 3 and 4 are parsed as YAML scalars, so ``20`` is an int and ``true`` a bool.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

DEFAULT_PATH = Path(__file__).with_name("default.yaml")
EXPERIMENTS_DIR = Path(__file__).with_name("experiments")
ENV_PREFIX = "FLINKREC_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A configuration file, variable or override that cannot be used."""


MAX_SHARDS = 65535  # job.shards: the shard travels in 2 bytes (operators.records.pack)
DLQ_OVERHEAD_BYTES = 8192  # a dead-letter record's fields besides the payload (udfs.dlq: error <= 1000 chars escaped)
MAX_STORED_N = 1000  # model.stored_n: bounds the Redis value per user and what one API request reads


def _merge(base: dict[str, Any], extra: Mapping[str, Any], where: str) -> None:
    for key, value in extra.items():
        if key not in base:
            raise ConfigError(f"unknown config key {where}{key!r} (known: {sorted(base)})")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {where}{key} must be a mapping, got {value!r}")
            _merge(base[key], value, f"{where}{key}.")
        else:
            base[key] = value


def _set_path(cfg: dict[str, Any], dotted: str, raw: str, source: str) -> None:
    parts = [p for p in dotted.split(".") if p]
    if not parts:
        raise ConfigError(f"empty config key in {source}")
    node: Any = cfg
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"unknown config key {'.'.join(parts[: i + 1])!r} in {source}")
        node = node[part]
    leaf = parts[-1]
    if not isinstance(node, dict) or leaf not in node:
        raise ConfigError(f"unknown config key {dotted!r} in {source}")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse value {raw!r} for {dotted} in {source}: {exc}") from exc
    if isinstance(node[leaf], dict) and not isinstance(value, dict):
        raise ConfigError(f"config key {dotted} is a section; set one of its keys instead ({source})")
    if isinstance(node[leaf], str) and not isinstance(value, str) and value is not None:
        value = raw  # a string setting stays the string typed (e.g. redis.prefix=demo: is not a mapping); null unsets
    elif isinstance(node[leaf], float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    node[leaf] = value


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    experiment: str | None = None,
) -> dict[str, Any]:
    """Load the default config, then merge ``path``, the ``experiment`` profile, environment variables and
    ``overrides``."""
    with open(DEFAULT_PATH, encoding="utf-8") as fh:
        cfg: dict[str, Any] = yaml.safe_load(fh)
    files = [Path(path)] if path is not None else []
    if experiment is not None:
        profile = EXPERIMENTS_DIR / f"{experiment}.yaml"
        if not profile.is_file():
            known = ", ".join(sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml")))
            raise ConfigError(f"experiment profile {experiment!r} does not exist (known: {known})")
        files.append(profile)
    for p in files:
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        with open(p, encoding="utf-8") as fh:
            extra = yaml.safe_load(fh) or {}
        if not isinstance(extra, Mapping):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
        _merge(cfg, extra, "")
    environ = os.environ if env is None else env
    for name, raw in sorted(environ.items()):
        if name.startswith(ENV_PREFIX):
            dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            _set_path(cfg, dotted, raw, f"environment variable {name}")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        _set_path(cfg, dotted.strip(), raw.strip(), f"override {item!r}")
    validate(cfg)
    return copy.deepcopy(cfg)


def validate(cfg: Mapping[str, Any]) -> None:
    """Fail early, naming the key, on values the job cannot run with."""
    def integer(dotted: str, minimum: int = 1, what: str = "") -> None:
        node: Any = cfg
        for part in dotted.split("."):
            node = node[part]
        if not (isinstance(node, int) and not isinstance(node, bool) and node >= minimum):
            names = {1: "a positive integer", 0: "a non-negative integer"}
            what = what or names.get(minimum, f"an integer >= {minimum}")
            raise ConfigError(f"config key {dotted} must be {what}, got {node!r}")

    for key in ("model.top_n", "model.top_k", "job.parallelism", "job.shards", "job.window_ms",
                "redis.pipeline_size", "kafka.partitions", "limits.max_id_length", "job.dedup_ttl_ms",
                "job.dedup_max_ids", "kafka.max_record_bytes", "limits.dlq_payload_bytes", "job.stall_timeout_s"):
        integer(key)
    # a dead-letter record (Base64 of the kept bytes and at most DLQ_OVERHEAD_BYTES of fields) must fit a Kafka record
    dlq_bytes = 4 * -(-cfg["limits"]["dlq_payload_bytes"] // 3) + DLQ_OVERHEAD_BYTES
    if dlq_bytes > cfg["kafka"]["max_record_bytes"]:
        raise ConfigError(f"config key limits.dlq_payload_bytes {cfg['limits']['dlq_payload_bytes']!r} makes "
                          f"dead-letter records of up to {dlq_bytes} bytes, more than kafka.max_record_bytes "
                          f"{cfg['kafka']['max_record_bytes']!r}")
    top_n, stored_n = cfg["model"]["top_n"], cfg["model"]["stored_n"]
    if not (isinstance(stored_n, int) and not isinstance(stored_n, bool) and top_n <= stored_n <= MAX_STORED_N):
        raise ConfigError(f"config key model.stored_n must be an integer from model.top_n ({top_n!r}) to "
                          f"{MAX_STORED_N}, got {stored_n!r}")
    if cfg["job"]["shards"] > MAX_SHARDS:  # records between the sharded operators carry the shard in 2 bytes
        raise ConfigError(f"config key job.shards must be at most {MAX_SHARDS}, got {cfg['job']['shards']!r}")
    for key in ("model.history_cap", "job.checkpoint_interval_ms", "job.max_out_of_orderness_ms", "job.settle_ms",
                "job.idle_partition_ms", "job.restart_attempts", "job.restart_delay_ms"):
        integer(key, minimum=0)
    for key in ("job.buffer_timeout_ms", "job.event_buffer_timeout_ms"):  # network buffer timeouts (jobs.flink_env)
        integer(key, minimum=-1, what="an integer >= -1 (-1: only full buffers)")
    choices = {"job.python_mode": ("thread", "process"), "job.state_backend": ("hashmap", "rocksdb"),
               "job.starting_offsets": ("committed", "earliest", "latest"), "job.late_events": ("apply", "dlq"),
               "job.delivery": ("exactly_once", "at_least_once")}
    for dotted, allowed in choices.items():
        section, key = dotted.split(".")
        if cfg[section][key] not in allowed:
            raise ConfigError(f"config key {dotted} must be one of {', '.join(allowed)}, got {cfg[section][key]!r}")
    lo, hi = cfg["model"]["min_rating"], cfg["model"]["max_rating"]
    if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and 0 < lo < hi):
        raise ConfigError(f"config keys model.min_rating/max_rating must satisfy 0 < min < max, got {lo!r}, {hi!r}")
    for etype, w in cfg["model"]["weights"].items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not w > 0:
            raise ConfigError(f"config key model.weights.{etype} must be a positive number, got {w!r}")
    port_range(cfg["metrics"]["prometheus_port"], "metrics.prometheus_port")
    if cfg["experiments"]["name"] is not None:
        experiment(cfg)


def experiment(cfg: Mapping[str, Any]) -> Any:
    """The config's :class:`core.v2.experiments.Experiment` (None when ``experiments.name`` is null); a
    :class:`ConfigError` names the key and value it refuses."""
    if cfg["experiments"]["name"] is None:
        return None
    from core.v2.experiments import Experiment
    from core.v2.settings import Settings

    try:
        return Experiment.from_config(cfg["experiments"], Settings.from_config(cfg["model"]))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def port_range(value: Any, key: str) -> tuple[int, int] | None:
    """A port setting: a port, or a range ``"first-last"`` (the first free one is taken); 0 or null: off (None)."""
    if value is None or (not isinstance(value, bool) and str(value).strip() == "0"):
        return None
    text = str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    first, sep, last = text.partition("-")
    if first.isdigit() and (last.isdigit() if sep else True):
        ports = (int(first), int(last) if sep else int(first))
        if 1 <= ports[0] <= ports[1] <= 65535:
            return ports
    raise ConfigError(f"config key {key} must be a port (1-65535), a range like 9249-9259, or 0/null (off), "
                      f"got {value!r}")


def resolve_path(value: str | os.PathLike[str]) -> Path:
    """A path from the config: relative paths are relative to the project root."""
    p = Path(value)
    return p if p.is_absolute() else PROJECT_ROOT / p
