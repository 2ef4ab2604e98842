"""The job's metrics out of Flink's Prometheus reporter, the Grafana dashboard and the Prometheus alert rules.

* The list of the job's metrics (:mod:`operators.metrics_catalog`) is what the operators' code registers, and
  docs/metrics.md documents every entry of it.
* deploy/grafana/flinkrec.json and deploy/prometheus/alerts.yml use no metric name outside that list, Flink's own
  metrics listed there and Prometheus's ``up`` (a test shows the check failing on an unknown name); the rules pass
  ``promtool check rules`` and their unit tests (``promtool test rules``) when Debian's prometheus package is
  installed.
* The reporter is configured alike in the local mini-cluster, the standalone cluster and Kubernetes.
* A job in the mini-cluster, reading a Kafka topic, serves its counters on the configured port, and they move
  between two scrapes as events arrive; every selector of the dashboard and the rules selects some of its series,
  and a Prometheus server scraping it (Debian's prometheus, where installed) answers every dashboard query.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import unavailable

from config import PROJECT_ROOT, ConfigError, load_config
from jobs.metrics import REPORTER_FACTORY, first_free_port, reporter_jar, reporter_port, reporter_settings
from operators.metrics_catalog import (
    FLINK_METRICS,
    JOB_METRICS,
    OPERATOR_SCOPE,
    PROMETHEUS_METRICS,
    RANKING_MS_BOUNDS,
    Histogram,
    bucket_counts,
    counter_adder,
    family_regexes,
    gauge_setter,
    known,
)

DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "flinkrec.json"
ALERTS = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DOC = PROJECT_ROOT / "docs" / "metrics.md"


# -- PromQL: the metric names an expression selects ------------------------------------------------------------
PROMQL_WORDS = {
    # aggregations, their modifiers, binary operators and keywords
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "atan2", "inf", "nan",
}
LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
SELECTOR = re.compile(r"\{[^}]*\}")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
NAME_REGEX = re.compile(r'__name__\s*=~\s*"((?:[^"\\]|\\.)*)"')
IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
DURATION = re.compile(r"\[[^\]]*\]")
GRAFANA_VARS = re.compile(r"\$\{?\w+\}?|\$__\w+")


def metric_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, ``__name__`` regexes) an expression selects. Function names (followed by ``(``), keywords,
    label names (inside ``{}`` and ``by (...)`` lists), strings and durations are not metric names."""
    expr = GRAFANA_VARS.sub("1m", expr)
    regexes = set(NAME_REGEX.findall(expr))
    rest = DURATION.sub(" ", SELECTOR.sub(" ", LABEL_LISTS.sub(" ", STRING.sub('""', expr))))
    names = {m for m in IDENT.findall(rest) if m.lower() not in PROMQL_WORDS and not re.fullmatch(r"\d\w*", m)}
    return names, regexes


def unknown_names(exprs: list[str]) -> list[str]:
    """Metric names (and ``__name__`` regexes) of ``exprs`` that no exporter in the catalog provides."""
    bad: list[str] = []
    families = family_regexes()
    for expr in exprs:
        names, regexes = metric_names(expr)
        bad += sorted(n for n in names if not known(n))
        bad += sorted(f"__name__=~{r}" for r in regexes if r not in families)
    return bad


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard: its panels' (and rows' panels') targets and its query variables."""
    exprs: list[str] = []
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        exprs += [t["expr"] for t in panel.get("targets", []) if "expr" in t]
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if var.get("type") == "query" and query:
            found = re.fullmatch(r"label_values\((.*),\s*\w+\)", query.strip())
            exprs.append(found.group(1) if found else query)
    return exprs


def alert_rules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_metric_names_of_promql() -> None:
    expr = ('sum by (reason) (rate(label_replace({__name__=~"flink_x_dlq_.+", job_name=~"$job"}, "reason", "$1", '
            '"__name__", "flink_x_dlq_(.+)")[5m:])) / ignoring(le) histogram_quantile(0.99, sum by (le) '
            '(rate(flink_a_le_bucket{operator_name="ranker"}[$__rate_interval]))) + on(job_id) up offset 5m '
            '> bool 2 and absent(flink_b)')
    assert metric_names(expr) == ({"flink_a_le_bucket", "up", "flink_b"}, {"flink_x_dlq_.+"})


# -- the catalog and the code ------------------------------------------------------------------------------------
REGISTERED_PY = re.compile(r'\.(?:counter|gauge|distribution|meter|add_group)\(\s*"(\w+)"'
                           r'|(?:gauge_setter|counter_adder|Histogram)\(\s*[^,]+,\s*"(\w+)"')
REGISTERED_JAVA = re.compile(r'\.(?:counter|gauge|histogram|meter|addGroup)\(\s*"(\w+)"')
HELPER_PARTS = {"le", "bucket"}  # the groups and counters Histogram itself registers under the histogram's name


def project_module(name: str) -> Path | None:
    """The project's source file of module ``name`` (a package: its ``__init__.py``), None if it is not ours."""
    base = PROJECT_ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def job_operator_modules() -> list[Path]:
    """The modules under operators/ that jobs/recommend.py imports, directly or through the project's other
    modules: the code of the job's operators (a module no longer in the job registers nothing it exports)."""
    seen: set[Path] = set()
    todo = [PROJECT_ROOT / "jobs" / "recommend.py"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            todo += [found for name in names if (found := project_module(name)) is not None]
    operators = PROJECT_ROOT / "operators"
    return sorted(path for path in seen if path.parent == operators)


def registered_in_code() -> set[str]:
    """Every metric or group name the job's operators' code registers with a literal name."""
    found: set[str] = set()
    for path in job_operator_modules():
        if path.name != "metrics_catalog.py":
            found |= {a or b for a, b in REGISTERED_PY.findall(path.read_text())}
    for path in sorted((PROJECT_ROOT / "jvm" / "src").rglob("*.java")):
        found |= set(REGISTERED_JAVA.findall(path.read_text()))
    return found


def catalog_parts() -> set[str]:
    return {part for m in JOB_METRICS for part in m.registered.split(".") if not part.startswith("<")}


def test_the_job_operator_modules_are_those_the_job_imports() -> None:
    names = {path.stem for path in job_operator_modules()}
    assert {"front", "intake", "late", "model", "parse", "redis_sink", "metrics_catalog"} <= names
    assert not names & {"windows", "ranker"}  # no longer in the job


def test_the_catalog_is_what_the_code_registers() -> None:
    code = registered_in_code()
    assert code - HELPER_PARTS == catalog_parts(), (
        f"registered but not in operators/metrics_catalog.py: {sorted(code - HELPER_PARTS - catalog_parts())}; "
        f"listed but registered nowhere: {sorted(catalog_parts() - code)}")


def test_catalog_names_are_unique_and_well_formed() -> None:
    names = [m.prometheus for m in JOB_METRICS]
    assert len(names) == len(set(names))
    for m in JOB_METRICS:
        assert m.kind in ("counter", "gauge", "histogram") and m.operators and m.meaning
        assert re.fullmatch(r"[a-z_]+(\.([a-z_]+|<[a-z_]+>))*", m.registered), m.registered
        assert m.prometheus.startswith(OPERATOR_SCOPE)
        assert not any(n in FLINK_METRICS for n in names)
    assert known("flink_taskmanager_job_task_operator_dlq_bad_json")
    assert not known("flink_taskmanager_job_task_operator_dlq_")
    assert not known("flink_taskmanager_job_task_operator_no_such_metric")


def test_docs_list_every_metric() -> None:
    text = DOC.read_text()
    missing = [m.prometheus for m in JOB_METRICS if f"`{m.prometheus}`" not in text]
    missing += [n for n in FLINK_METRICS if f"`{n}`" not in text]
    assert not missing, f"docs/metrics.md does not list {missing}"


# -- the helpers the operators register metrics with --------------------------------------------------------------
class FakeCounter:
    def __init__(self) -> None:
        self.n = 0
        self.calls = 0

    def inc(self, n: int = 1) -> None:
        self.n += n
        self.calls += 1


class FakeGroup:
    """A PyFlink metric group as the process mode has it: records its groups, counters and gauges by path."""

    def __init__(self, registry: dict[str, Any] | None = None, path: str = "") -> None:
        self.registry = {} if registry is None else registry
        self.path = path

    def add_group(self, name: str, extra: str | None = None) -> FakeGroup:
        return FakeGroup(self.registry, f"{self.path}{name}" + (f"={extra}" if extra is not None else "") + ".")

    def counter(self, name: str) -> FakeCounter:
        return self.registry.setdefault(self.path + name, FakeCounter())  # type: ignore[no-any-return]

    def gauge(self, name: str, obj: Any) -> None:
        self.registry[self.path + name] = obj


def test_bucket_counts_are_cumulative() -> None:
    values = [0.2, 1.0, 1.5, 4.9, 5.0, 5.1, 7000.0, 20.0]
    expected = [sum(v <= b for v in values) for b in RANKING_MS_BOUNDS] + [len(values)]
    assert bucket_counts(values, RANKING_MS_BOUNDS) == expected
    assert bucket_counts([], (1, 2)) == [0, 0, 0]


def test_histogram_counts_each_bucket_once_per_batch() -> None:
    """Process mode: each bucket is a gauge of its running count, registered (at 0) before any observation, so
    every bucket is exported from the start; a batch adds to each bucket once."""
    group = FakeGroup()
    hist = Histogram(group, "ranking_ms", (1, 10))
    assert sorted(group.registry) == ["ranking_ms.le=1.bucket", "ranking_ms.le=10.bucket", "ranking_ms.le=Inf.bucket"]
    assert [group.registry[f"ranking_ms.le={b}.bucket"]() for b in ("1", "10", "Inf")] == [0, 0, 0]
    hist.observe([0.5, 3.0, 3.0, 50.0])
    hist.observe([])
    hist.observe([10.0])
    assert [group.registry[f"ranking_ms.le={b}.bucket"]() for b in ("1", "10", "Inf")] == [1, 4, 5]


def test_counter_adder_in_both_modes() -> None:
    """Process mode: a gauge of the running total (a counter's updates made in a timer never reach Flink there);
    thread mode: PyFlink's counter, one update per call."""
    group = FakeGroup()
    add = counter_adder(group, "rankings")
    add(3)
    add(4)
    assert group.registry["rankings"]() == 7

    class EmbeddedGroup(FakeGroup):
        pass

    EmbeddedGroup.__module__ = "pyflink.fn_execution.metrics.embedded.metric_impl"
    embedded = EmbeddedGroup()
    add = counter_adder(embedded, "rankings")
    add(3)
    add(4)
    counter = embedded.registry["rankings"]
    assert (counter.n, counter.calls) == (7, 2)


def test_gauge_setter_in_both_modes() -> None:
    group = FakeGroup()
    set_waiting = gauge_setter(group, "events_waiting")
    set_waiting(17.9)
    assert group.registry["events_waiting"]() == 17

    class Distribution:
        value = -1

        def update(self, value: int) -> None:
            self.value = value

    class EmbeddedGroup:  # thread mode: the value is held on the JVM side, no Python callable is registered
        def __init__(self) -> None:
            self.distribution_of: dict[str, Distribution] = {}

        def distribution(self, name: str) -> Distribution:
            return self.distribution_of.setdefault(name, Distribution())

    EmbeddedGroup.__module__ = "pyflink.fn_execution.metrics.embedded.metric_impl"
    embedded = EmbeddedGroup()
    gauge_setter(embedded, "users_held")(42)
    assert embedded.distribution_of["users_held"].value == 42


# -- configuration -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "port"), [("9249", "9249"), ("9249-9259", "9249-9259"), ("9300-9300", "9300"),
                                             ("0", None), ("null", None)])
def test_prometheus_port_setting(value: str, port: str | None) -> None:
    cfg = load_config(overrides=[f"metrics.prometheus_port={value}"], env={})
    assert reporter_port(cfg) == port


@pytest.mark.parametrize("value", ["9259-9249", "70000", "-1", "abc", "9249-", "true", "false", "[9249]", "00"])
def test_bad_prometheus_port_is_refused_naming_key_and_value(value: str) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.prometheus_port .*got"):
        load_config(overrides=[f"metrics.prometheus_port={value}"], env={})


def test_a_range_starts_at_its_first_free_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        assert first_free_port(port, port) is None
        found = first_free_port(port, port + 20)
        assert found is not None and port < found <= port + 20


def test_the_wheel_ships_the_reporter() -> None:
    jar = reporter_jar()
    with zipfile.ZipFile(jar) as z:
        services = z.read("META-INF/services/org.apache.flink.metrics.reporter.MetricReporterFactory").decode()
    assert REPORTER_FACTORY in services.split()
    import pyflink.version

    assert jar.name == f"flink-metrics-prometheus-{pyflink.version.__version__}.jar"


def test_cluster_and_kubernetes_configure_the_same_reporter(monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy import cluster

    monkeypatch.setattr(cluster, "check_node_python", lambda python: ["/site-packages"])
    text = cluster.render_conf(cluster.Settings.from_env({}), Path("/node/python"))
    conf = dict(line.split(": ", 1) for line in text.splitlines() if line.startswith("metrics."))
    assert conf == reporter_settings("9250-9259")  # one port per JVM; 9249 stays the mini-cluster's
    text = cluster.render_conf(cluster.Settings.from_env({"CLUSTER_PROM_PORTS": "9300"}), Path("/node/python"))
    assert "metrics.reporter.prom.port: 9300\n" in text
    for bad in ("0", "9300-9200", "x"):
        with pytest.raises(cluster.ClusterError, match="CLUSTER_PROM_PORTS"):
            cluster.Settings.from_env({"CLUSTER_PROM_PORTS": bad})
    k8s = PROJECT_ROOT / "deploy" / "k8s"
    deployment = yaml.safe_load((k8s / "flinkdeployment.yaml").read_text())
    flink_conf = deployment["spec"]["flinkConfiguration"]
    assert {k: v for k, v in flink_conf.items() if k.startswith("metrics.")} == reporter_settings("9249")
    pod = deployment["spec"]["podTemplate"]
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "flink-main-container"]
    assert {"name": "metrics", "containerPort": 9249, "protocol": "TCP"} in container["ports"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9249"
    monitor = yaml.safe_load((PROJECT_ROOT / "deploy" / "prometheus" / "podmonitor.yaml").read_text())
    assert monitor["kind"] == "PodMonitor"
    assert monitor["metadata"]["namespace"] == yaml.safe_load((k8s / "kustomization.yaml").read_text())["namespace"]
    assert monitor["spec"]["selector"]["matchLabels"] == {"app": deployment["metadata"]["name"]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    assert {"targetLabel": "job", "replacement": "flinkrec"} in endpoint["relabelings"]
    scrape = yaml.safe_load((PROJECT_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["job_name"] == "flinkrec" and scrape["rule_files"] == ["alerts.yml"]
    first = (reporter_port(load_config(env={})) or "").partition("-")[0]
    assert job["static_configs"][0]["targets"] == [f"127.0.0.1:{first}"]


# -- the dashboard -----------------------------------------------------------------------------------------------
def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def test_dashboard_uses_only_exported_metrics() -> None:
    dashboard = load_dashboard()
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) >= 12
    assert unknown_names(exprs) == []


def test_a_panel_naming_an_unknown_metric_fails_the_check() -> None:
    dashboard = load_dashboard()
    broken = copy.deepcopy(dashboard)
    panel = next(p for p in broken["panels"] if p.get("targets"))
    panel["targets"][0]["expr"] = "sum(rate(flink_taskmanager_job_task_operator_events_inn[1m]))"
    assert unknown_names(dashboard_exprs(broken)) == ["flink_taskmanager_job_task_operator_events_inn"]
    panel["targets"][0]["expr"] = 'sum(rate({__name__=~"flink_taskmanager_job_task_operator_dl.+"}[1m]))'
    assert unknown_names(dashboard_exprs(broken)) == ["__name__=~flink_taskmanager_job_task_operator_dl.+"]


def test_dashboard_shows_what_an_operator_watches() -> None:
    dashboard = load_dashboard()
    text = "\n".join(dashboard_exprs(dashboard))
    job = {m.registered: m.prometheus for m in JOB_METRICS}
    for name in (job["events_in"], job["events_valid"], job["late"], job["duplicates"], job["rankings"],
                 job["ranking_ms"], job["events_waiting"], job["events_learned"], job["model_bytes"],
                 job["redis_sink.retries"], job["redis_sink.backoff_ms"], job["users_held"],
                 "flink_jobmanager_job_numRestarts", "flink_jobmanager_job_lastCheckpointDuration",
                 "flink_jobmanager_job_lastCheckpointFullSize", "flink_taskmanager_job_task_operator_pendingRecords"):
        assert name in text, name
    dlq = next(m for m in JOB_METRICS if m.registered == "dlq.<reason>").name_regex
    assert dlq is not None and dlq in text
    titles = []
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        titles.append(panel["title"])
        if panel.get("type") != "row":
            assert panel.get("datasource", {}).get("uid") == "${datasource}", panel["title"]
    assert len(titles) == len(set(titles))
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# -- the alert rules ---------------------------------------------------------------------------------------------
def load_alerts() -> dict[str, Any]:
    return yaml.safe_load(ALERTS.read_text())  # type: ignore[no-any-return]


def test_alert_rules_use_only_exported_metrics_and_are_complete() -> None:
    rules = alert_rules(load_alerts())
    assert unknown_names([r["expr"] for r in rules]) == []
    names = {r["alert"] for r in rules}
    assert {"FlinkrecJobDown", "FlinkrecDeadLetters", "FlinkrecStale", "FlinkrecNoRankings",
            "FlinkrecInputLag"} <= names
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
    broken = copy.deepcopy(rules)
    broken[0]["expr"] = "flink_jobmanager_numRunningJob < 1"
    assert unknown_names([r["expr"] for r in broken]) == ["flink_jobmanager_numRunningJob"]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        unavailable("promtool not installed (`make promtool`: Debian's prometheus); the parser checks above still run")
    return found


def test_promtool_checks_the_rules_and_the_scrape_config() -> None:
    out = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_rules(load_alerts()))} rules found" in out.stdout
    out = subprocess.run([promtool(), "check", "config", str(ALERTS.parent / "prometheus.yml")], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_of_the_alerts() -> None:
    """deploy/prometheus/alerts.test.yml: each alert fires on the series it watches, and stays quiet otherwise."""
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    tested = {case["alertname"] for t in tests["tests"] for case in t.get("alert_rule_test", [])}
    assert tested == {r["alert"] for r in alert_rules(load_alerts())}
    assert unknown_names([s["series"].split("{")[0] for t in tests["tests"] for s in t["input_series"]]) == []
    out = subprocess.run([promtool(), "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True,
                         cwd=ALERT_TESTS.parent)
    assert out.returncode == 0, out.stdout + out.stderr


# -- a running job's endpoint ------------------------------------------------------------------------------------
Samples = dict[str, list[tuple[dict[str, str], float]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Samples:
    """The reporter's samples by metric name: [(labels, value)]."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def label_value(text: str) -> str:
    """A label value as the reporter shows it (it keeps only ``[a-zA-Z0-9:_]``)."""
    return re.sub(r"[^a-zA-Z0-9:_]", "_", text)


def total(samples: Samples, name: str, job: str) -> float:
    return sum(v for labels, v in samples.get(name, []) if labels.get("job_name") == label_value(job))


def wait_for(port: int, job: str, name: str, at_least: float, deadline_s: float = 300) -> Samples:
    """Scrape until ``name`` (summed over the job's series) reaches ``at_least``; a hang guard, not a speed test."""
    end = time.monotonic() + deadline_s
    samples: Samples = {}
    while time.monotonic() < end:
        try:
            samples = scrape(port)
        except OSError:  # the MiniCluster (and its reporter) is still starting
            samples = {}
        if total(samples, name, job) >= at_least:
            return samples
        time.sleep(1)
    artifacts = PROJECT_ROOT / "var" / "test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "metrics-scrape-timeout.json").write_text(json.dumps(samples, indent=1))
    raise AssertionError(f"{name} of job {job} did not reach {at_least} on port {port}: {total(samples, name, job)}")


def start_prometheus(target_port: int, folder: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    """Debian's Prometheus server scraping the job every second with the alert rules loaded; None without it."""
    binary = shutil.which("prometheus")
    if binary is None:
        return None
    port = free_port()
    targets = [{"targets": [f"127.0.0.1:{target_port}"]}]
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": [str(ALERTS)],
              "scrape_configs": [{"job_name": "flinkrec", "static_configs": targets}]}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([binary, f"--config.file={folder / 'prometheus.yml'}",
                             f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=(folder / "prometheus.log").open("wb"))
    return proc, port


def prometheus_query(port: int, expr: str) -> list[dict[str, Any]]:
    from urllib.parse import urlencode

    url = f"http://127.0.0.1:{port}/api/v1/query?" + urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"Prometheus refused {expr!r}: {exc.read().decode()}") from exc
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def live_job(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The job on its own topics and Redis prefix, unbounded, with the reporter on a free port (and a Prometheus
    scraping it, where Debian's prometheus is installed): 600 events, a scrape once rankings came out, 600 more
    events and 3 bad records, a second scrape once the job has read them all. Cancelled after."""
    from conftest import connect_redis

    from ingest import kafka_admin
    from ingest.movielens import load_events
    from ingest.producer import bad_records, produce_events
    from jobs.flink_env import make_env
    from jobs.recommend import catalog_source, kafka_sink, kafka_source, recommend
    from operators.front import catalog_watermarks, source_watermarks
    from udfs.events import Limits

    tag = uuid.uuid4().hex[:8]
    port = free_port()
    overrides = [f"kafka.topics.{name}={name}-metrics-{tag}" for name in ("events", "items", "dlq", "recommendations")]
    overrides += [f"kafka.bootstrap={kafka_bootstrap}", f"kafka.group_id=metrics-{tag}",
                  f"redis.prefix=metrics-{tag}:", f"job.name=flinkrec-metrics-{tag}", "job.checkpoint_interval_ms=1000",
                  f"job.checkpoint_dir=var/test-checkpoints/metrics-{tag}",
                  f"job.transactional_id_prefix=metrics-{tag}", "job.starting_offsets=earliest",
                  "job.delivery=at_least_once", f"metrics.prometheus_port={port}",
                  "model.compare_modes=[learned]"]  # the combiner trains: combiner_examples moves
    cfg = load_config(overrides=overrides, env={})
    job, topic = cfg["job"]["name"], cfg["kafka"]["topics"]["events"]
    topics = kafka_admin.project_topics(cfg)
    kafka_admin.ensure_topics(kafka_bootstrap, topics, partitions=2)
    prometheus = start_prometheus(port, tmp_path_factory.mktemp("prometheus"))
    env = make_env(cfg)
    job_cfg = cfg["job"]  # the sources as the job wires them (jobs.recommend.recommend_job)
    watermarks = source_watermarks(job_cfg["max_out_of_orderness_ms"], Limits.from_config(cfg),
                                   job_cfg["idle_partition_ms"], job_cfg["settle_ms"])
    events = env.from_source(kafka_source(cfg), watermarks, "kafka-events")
    catalog = env.from_source(catalog_source(cfg), catalog_watermarks(), "kafka-items")
    out = recommend(events, cfg, catalog=catalog, source_watermarks=True)
    names = cfg["kafka"]["topics"]
    out.recommendations.sink_to(kafka_sink(cfg, names["recommendations"], "recs", "/user_id")) \
        .name("kafka-recommendations")
    out.dlq.sink_to(kafka_sink(cfg, names["dlq"], "dlq", "/source/key_b64", key_is_base64=True)).name("kafka-dlq")
    client = env.execute_async(job)
    redis = connect_redis()
    try:
        movielens = load_events(limit=1200)
        produce_events(movielens[:600], kafka_bootstrap, topic, progress=False)
        wait_for(port, job, OPERATOR_SCOPE + "events_in", 600)
        first = wait_for(port, job, OPERATOR_SCOPE + "rankings", 1)
        produce_events([*movielens[600:], *bad_records(3)], kafka_bootstrap, topic, progress=False)
        second = wait_for(port, job, OPERATOR_SCOPE + "events_in", 1203)
        second = wait_for(port, job, OPERATOR_SCOPE + "rankings", total(first, OPERATOR_SCOPE + "rankings", job) + 1)
        yield {"cfg": cfg, "job": job, "port": port, "first": first, "second": second,
               "prometheus": prometheus[1] if prometheus else None}
    finally:
        def stop_prometheus() -> None:
            if prometheus:
                prometheus[0].terminate()
                prometheus[0].wait(timeout=30)

        def clear_redis() -> None:
            for key in redis.scan_iter(match=f"{cfg['redis']['prefix']}*", count=1000):
                redis.unlink(key)
            redis.close()

        errors = []
        for step in (stop_prometheus, lambda: client.cancel().result(),
                     lambda: kafka_admin.delete_topics(kafka_bootstrap, list(topics)), clear_redis,
                     lambda: shutil.rmtree(PROJECT_ROOT / "var" / "test-checkpoints" / f"metrics-{tag}",
                                           ignore_errors=True)):
            try:  # every step runs; the first failure is reported
                step()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.mark.flink
@pytest.mark.integration
def test_a_running_job_serves_its_counters_and_they_move(live_job: dict[str, Any]) -> None:
    job, first, second = live_job["job"], live_job["first"], live_job["second"]
    artifacts = PROJECT_ROOT / "var" / "test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "metrics-scrape.json").write_text(json.dumps(second, indent=1))

    def moved(name: str) -> tuple[float, float]:
        return total(first, OPERATOR_SCOPE + name, job), total(second, OPERATOR_SCOPE + name, job)

    before, after = moved("events_in")
    assert 600 <= before < after == 1203
    before, after = moved("events_valid")
    assert before <= 600 < after <= 1200
    before, after = moved("rankings")
    assert 0 < before < after
    before, after = moved("events_learned")  # one model subtask (job.parallelism 1): each event learned once
    assert 0 < before < after <= 1200
    assert moved("front_rechecked") == (0, 0)  # with the front's source watermarks each record is checked once
    dlq = next(m for m in JOB_METRICS if m.registered == "dlq.<reason>")
    refused = {name: total(second, name, job) for name in second if dlq.matches(name)}
    assert sum(refused.values()) == 3, refused  # the three bad records, one counter per reason
    # every metric of the catalog is exported (the DLQ family by the reasons seen), under the operators it names
    for m in JOB_METRICS:
        if m.registered.startswith("arm."):  # only while an experiment runs; this job runs none
            continue
        series = [labels for name, rows in second.items() if m.matches(name) for labels, _ in rows
                  if labels.get("job_name") == label_value(job)]
        assert series, f"{m.prometheus} is not exported"
        operators = {labels["operator_name"] for labels in series}
        expected = {op for op in m.operators if "experiments" not in op}  # this job runs no experiment
        assert operators <= set(m.operators) and (m.lazy or operators == expected), (m.registered, operators)
        if m.kind == "histogram":
            assert {labels["le"] for labels in series} == {*map(str, RANKING_MS_BOUNDS), "Inf"}
    buckets = [v for labels, v in second[OPERATOR_SCOPE + "ranking_ms_le_bucket"] if labels["le"] == "Inf"]
    assert sum(buckets) == total(second, OPERATOR_SCOPE + "rankings", job)  # every ranking timed once
    for name in FLINK_METRICS:
        rows = second.get(name, [])
        assert any(labels.get("job_name", label_value(job)) == label_value(job) for labels, _ in rows), name


SELECTOR_WITH_NAME = re.compile(r"([A-Za-z_:][\w:]*)?\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def unmatched_selectors(exprs: list[str], samples: Samples) -> list[str]:
    """Selectors of ``exprs`` that select no series of a scrape (label matchers on the job's name, Prometheus's target
    labels and the label label_replace adds are left out)."""
    bad = []
    for expr in exprs:
        for name, body in SELECTOR_WITH_NAME.findall(STRING.sub(lambda m: m.group(0).replace("{", "("), expr)):
            matchers = MATCHER.findall(body)
            names = [name] if name else [n for n in samples if any(k == "__name__" and re.fullmatch(v, n)
                                                                     for k, _, v in matchers)]
            wanted = [(k, op, v) for k, op, v in matchers if k not in ("__name__", "job_name", "job", "instance")]

            def ok(labels: dict[str, str], wanted: list[tuple[str, str, str]] = wanted) -> bool:
                return all({"=": labels.get(k) == v, "!=": labels.get(k) != v,
                            "=~": re.fullmatch(v, labels.get(k, "")) is not None,
                            "!~": re.fullmatch(v, labels.get(k, "")) is None}[op] for k, op, v in wanted)

            if name in PROMETHEUS_METRICS:
                continue
            if not any(ok(labels) for n in names for labels, _ in samples.get(n, [])):
                bad.append(f"{name}{{{body}}}")
    return bad


@pytest.mark.flink
@pytest.mark.integration
def test_the_dashboard_and_alerts_select_the_running_jobs_series(live_job: dict[str, Any]) -> None:
    exprs = dashboard_exprs(load_dashboard())
    rules = [r["expr"] for r in alert_rules(load_alerts())]
    assert unmatched_selectors(exprs + rules, live_job["second"]) == []
    assert unmatched_selectors(['flink_taskmanager_job_task_operator_events_waiting{operator_name="modle"}'],
                               live_job["second"])  # a wrong label value is caught
    port = live_job["prometheus"]
    if port is None:
        unavailable("Debian's prometheus is not installed (`make promtool`): the queries were not evaluated")
    job = label_value(live_job["job"])
    queries = [expr.replace("$__rate_interval", "30s").replace("$job", job) for expr in exprs]
    end = time.monotonic() + 120  # a rate needs two scrapes of a series (the DLQ counters appear on first use)
    while True:
        empty = [query for query in queries if not prometheus_query(port, query)]
        if not empty or time.monotonic() > end:
            break
        time.sleep(1)
    assert empty == [], "dashboard queries without a result"
    for expr in rules:  # every rule evaluates (most select nothing while the job is healthy)
        prometheus_query(port, expr)
    firing = prometheus_query(port, 'ALERTS{alertstate="firing"}')
    assert not [a for a in firing if a["metric"].get("job_name") == job], firing
