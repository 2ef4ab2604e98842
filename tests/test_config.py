"""config.load_config: defaults, files, environment variables and --set overrides, and its errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config import ConfigError, load_config


def test_defaults_load_and_validate() -> None:
    cfg = load_config(env={})
    assert cfg["kafka"]["topics"]["events"] == "events"
    assert cfg["model"]["top_n"] == 10
    assert cfg["job"]["python_mode"] == "thread"


def test_file_env_and_overrides_in_order(tmp_path: Path) -> None:
    f = tmp_path / "my.yaml"
    f.write_text("model:\n  top_n: 20\n  top_k: 7\nkafka:\n  bootstrap: a:1\n")
    env = {"FLINKREC_MODEL__TOP_K": "9", "FLINKREC_KAFKA__BOOTSTRAP": "b:2"}
    cfg = load_config(f, overrides=["model.top_n=30"], env=env)
    assert cfg["model"]["top_n"] == 30  # --set beats the file
    assert cfg["model"]["top_k"] == 9  # the environment beats the file
    assert cfg["kafka"]["bootstrap"] == "b:2"


def test_values_keep_their_types() -> None:
    cfg = load_config(overrides=["job.bounded=true", "model.min_rating=1", "redis.prefix=demo:"], env={})
    assert cfg["job"]["bounded"] is True
    assert cfg["model"]["min_rating"] == 1.0 and isinstance(cfg["model"]["min_rating"], float)
    assert cfg["redis"]["prefix"] == "demo:"  # a string setting is not parsed into a YAML mapping


def test_defaults_are_not_shared_between_calls() -> None:
    a = load_config(env={})
    a["model"]["weights"]["view"] = 99.0
    assert load_config(env={})["model"]["weights"]["view"] == 1.0


@pytest.mark.parametrize(
    ("overrides", "env", "message"),
    [
        (["model.nope=1"], {}, "unknown config key 'model.nope'"),
        (["model.top_n=0"], {}, "model.top_n must be a positive integer, got 0"),
        (["model.stored_n=5"], {}, "model.stored_n must be an integer from model.top_n (10) to 1000, got 5"),
        (["job.python_mode=fiber"], {}, "job.python_mode must be one of thread, process, got 'fiber'"),
        (["model.top_n"], {}, "must look like section.key=value"),
        ([], {"FLINKREC_KAFKA__NOPE": "x"}, "environment variable FLINKREC_KAFKA__NOPE"),
        (["model=3"], {}, "is a section"),
        (["model.weights.view=-1"], {}, "model.weights.view must be a positive number, got -1"),
    ],
)
def test_errors_name_the_key_and_value(overrides: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_config(overrides=overrides, env=env)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml", env={})


def test_local_jvm_heap_goes_to_jvm_args_once_and_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.flink_env import _export_jvm_memory

    monkeypatch.setenv("JVM_ARGS", "-Dfoo=1")
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    _export_jvm_memory({"local_jvm_heap": "1536m"})
    _export_jvm_memory({"local_jvm_heap": "2g"})  # an -Xmx already there (the user's, or ours) wins
    assert os.environ["JVM_ARGS"] == "-Dfoo=1 -Xmx1536m"
    assert os.environ["MALLOC_ARENA_MAX"] == "2"
    monkeypatch.setenv("JVM_ARGS", "")
    _export_jvm_memory({"local_jvm_heap": None})
    assert os.environ["JVM_ARGS"] == ""
    with pytest.raises(ValueError, match=r"job\.local_jvm_heap 2048 must be a size"):
        _export_jvm_memory({"local_jvm_heap": 2048})


def test_jvm_options_go_to_jvm_args_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.flink_env import _export_jvm_memory

    monkeypatch.setenv("JVM_ARGS", "-Dfoo=1")
    job = {"local_jvm_heap": "1280m", "jvm_options": "-XX:TieredStopAtLevel=1 -Dbar=2"}
    _export_jvm_memory(job)
    _export_jvm_memory(job)  # a second environment in the same process adds nothing
    assert os.environ["JVM_ARGS"] == "-Dfoo=1 -Xmx1280m -XX:TieredStopAtLevel=1 -Dbar=2"
    assert load_config(env={})["job"]["jvm_options"] == "-XX:TieredStopAtLevel=1"  # the default
    unset = load_config(overrides=["job.jvm_options=null", "job.local_jvm_heap=null"], env={})["job"]
    assert unset["jvm_options"] is None and unset["local_jvm_heap"] is None  # null unsets a string setting
    with pytest.raises(ValueError, match=r"job\.jvm_options \['-Xss1m'\] must be a string"):
        _export_jvm_memory({"local_jvm_heap": None, "jvm_options": ["-Xss1m"]})


@pytest.mark.parametrize("key", ["buffer_timeout_ms", "event_buffer_timeout_ms"])
@pytest.mark.parametrize("value", ["-2", "1.5", "true"])
def test_buffer_timeouts_are_integers_from_minus_one(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"job\.{key} must be an integer >= -1"):
        load_config(overrides=[f"job.{key}={value}"], env={})
    assert load_config(overrides=[f"job.{key}=-1"], env={})["job"][key] == -1


def test_watermark_defaults_and_settle_ms_is_validated() -> None:
    job = load_config(env={})["job"]
    assert (job["window_ms"], job["max_out_of_orderness_ms"], job["settle_ms"], job["idle_partition_ms"]) == (
        200, 500, 500, 5000)
    assert load_config(overrides=["job.settle_ms=0"], env={})["job"]["settle_ms"] == 0  # 0: never settle
    for value in ("-1", "1.5", "true", "soon"):
        with pytest.raises(ConfigError, match=r"job\.settle_ms must be a non-negative integer, got"):
            load_config(overrides=[f"job.settle_ms={value}"], env={})


@pytest.mark.parametrize("key", ["model_window_ms", "rank_delay_ms", "rank_budget_ms", "refresh_budget_ms",
                                 "state_compact_windows", "refresh_on_norms"])
def test_keys_of_no_operator_are_unknown(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"unknown config key 'job\.{key}'"):
        load_config(overrides=[f"job.{key}=1"], env={})
