"""deploy.cluster.render_conf: the local cluster's config.yaml from its template and the CLUSTER_* settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import cluster


def conf(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> dict[str, str]:
    monkeypatch.setattr(cluster, "check_node_python", lambda python: ["/site-packages"])
    text = cluster.render_conf(cluster.Settings.from_env(env), Path("/node/python"))
    return dict(line.split(": ", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_the_jvms_run_c1_only_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    default = conf(monkeypatch, {})
    assert default["env.java.opts.jobmanager"] == default["env.java.opts.taskmanager"] == "-XX:TieredStopAtLevel=1"
    assert conf(monkeypatch, {"CLUSTER_JVM_OPTS": "-Xss2m"})["env.java.opts.taskmanager"] == "-Xss2m"
    assert conf(monkeypatch, {"CLUSTER_JVM_OPTS": ""})["env.java.opts.taskmanager"] == '""'
    assert default["taskmanager.numberOfTaskSlots"] == "2" and default["python.executable"] == "/node/python"
