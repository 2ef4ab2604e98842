"""Flink's Prometheus reporter in the local mini-cluster (``metrics.prometheus_port``; docs/metrics.md).

The reporter (``flink-metrics-prometheus``, ``PrometheusReporterFactory``) ships with Flink: the apache-flink
wheel has it as a plugin (``pyflink/plugins/metrics-prometheus/``), as the Flink distribution and the
``flink:2.2.1`` image do, so nothing is fetched for it. A standalone cluster and the Kubernetes deployment load
it from their plugins folder and take ``metrics.reporter.prom.*`` from their own configuration
(deploy/flink-conf/config.yaml.in, deploy/k8s/flinkdeployment.yaml); a job submitted to them cannot change it.

The mini-cluster of ``make run``, ``make live``, the tests and ``make bench`` runs inside the JVM PyFlink starts.
Its MiniCluster loads reporters when it starts (at ``execute``) without the plugin manager: with a
``ServiceLoader`` on the thread's context class loader. ``pipeline.jars`` only reaches the job's user-code class
loader, so :func:`configure_metrics` puts the reporter jar on the gateway thread's context class loader itself
(PyFlink's ``add_jars_to_context_class_loader``, the call PyFlink makes for ``pipeline.jars`` in local runs) and
sets the reporter in the Configuration the environment is created from. As with ``pipeline.jars``, the job must then
be executed from the same Python thread (py4j serves a thread's calls on the JVM thread of its connection).

The reporter listens on every interface of the host. A range ``first-last`` (the default, 9249-9259: tests and
benchmarks run mini-clusters too) is narrowed here to its first port free now, which is logged with the URL; the
reporter still falls back to the next ones if that port is taken before the MiniCluster starts. A port taken by the
time the reporter starts is logged by Flink as an error, and the job runs without the endpoint.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from config import port_range

logger = logging.getLogger(__name__)

REPORTER = "prom"  # the reporter's name in the metrics.reporter.<name>.* keys
REPORTER_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
PLUGIN_DIR = "plugins/metrics-prometheus"  # inside the wheel's Flink home (pyflink/)


def reporter_settings(port: str) -> dict[str, str]:
    """The Flink configuration of the Prometheus reporter on ``port`` (a port or a range ``first-last``)."""
    return {f"metrics.reporter.{REPORTER}.factory.class": REPORTER_FACTORY,
            f"metrics.reporter.{REPORTER}.port": port}


def reporter_port(cfg: Mapping[str, Any]) -> str | None:
    """``metrics.prometheus_port`` as Flink takes it ("9249" or "9249-9259"); None: no reporter."""
    ports = port_range(cfg["metrics"]["prometheus_port"], "metrics.prometheus_port")
    if ports is None:
        return None
    first, last = ports
    return str(first) if first == last else f"{first}-{last}"


def reporter_jar() -> Path:
    """The reporter jar the apache-flink wheel ships (``pyflink/plugins/metrics-prometheus/``)."""
    spec = importlib.util.find_spec("pyflink")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pyflink is not importable: the Prometheus reporter comes with apache-flink")
    folder = Path(next(iter(spec.submodule_search_locations))) / PLUGIN_DIR
    jars = sorted(folder.glob("flink-metrics-prometheus-*.jar"))
    if not jars:
        raise FileNotFoundError(f"{folder} has no flink-metrics-prometheus-*.jar: is apache-flink installed whole? "
                                "(set metrics.prometheus_port=null to run without the reporter)")
    return jars[-1]


def first_free_port(first: int, last: int) -> int | None:
    """The first port of ``first..last`` nothing listens on now (bound as the reporter binds: every interface)."""
    for port in range(first, last + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
            return port
    return None


def configure_metrics(conf: Any, cfg: Mapping[str, Any], *, submitted: bool) -> str | None:
    """Set the Prometheus reporter of the local mini-cluster in ``conf`` (a pyflink Configuration, before the
    environment is created from it); returns the port (range) handed to it, None when there is none: ``submitted``
    (a cluster's own configuration decides), ``metrics.prometheus_port`` 0 or null, or no port of its range free."""
    port = reporter_port(cfg)
    if submitted or port is None:
        return None
    first, _, last = port.partition("-")
    if last:  # a range: from its first free port on
        free = first_free_port(int(first), int(last))
        if free is None:
            logger.warning("no free port in metrics.prometheus_port %s: the job runs without its metrics endpoint",
                           port)
            return None
        first, port = str(free), f"{free}-{last}"
    from pyflink.util.java_utils import add_jars_to_context_class_loader

    add_jars_to_context_class_loader([reporter_jar().as_uri()])
    for key, value in reporter_settings(port).items():
        conf.set_string(key, value)
    logger.info("job metrics: http://127.0.0.1:%s/metrics (Flink's Prometheus reporter)", first)
    return port
