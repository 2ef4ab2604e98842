"""The Kubernetes manifests and the job image (deploy/k8s/) against the project they deploy.

Nothing here talks to a cluster: every YAML is parsed, the FlinkDeployment is validated against a schema of
the Flink Kubernetes Operator's CRD fields it uses (no JSON schema of the CRD ships on PyPI), and every
reference is checked against the repository: the entry point exists and is copied into the image, ``--set``
keys and ConfigMap variables are valid config keys, the image name and versions match pyproject.toml, the
connector jar is the one deploy/maven/pom.xml fetches, topics match config/default.yaml, Services select
the pods they front, and the volumes, config maps and service accounts referenced exist.
"""

from __future__ import annotations

import re
import shlex
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

from config import PROJECT_ROOT, load_config

K8S = PROJECT_ROOT / "deploy" / "k8s"
USRLIB = PurePosixPath("/opt/flink/usrlib")
POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


# --- what the project says ------------------------------------------------------------------------------
def pyproject() -> dict[str, Any]:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def pinned() -> dict[str, str]:
    """Dependency name -> the requirement string as written in pyproject.toml."""
    return {Requirement(d).name.lower(): d for d in pyproject()["project"]["dependencies"]}


def flink_version() -> str:
    spec = Requirement(pinned()["apache-flink"]).specifier
    (only,) = list(spec)
    assert only.operator == "==", "apache-flink must be pinned exactly"
    return only.version


def pom() -> tuple[dict[str, str], ET.Element]:
    root = ET.parse(PROJECT_ROOT / "deploy" / "maven" / "pom.xml").getroot()
    props = {el.tag.split("}")[1]: (el.text or "").strip() for el in root.find("m:properties", POM_NS) or []}
    return props, root


def pom_artifact(artifact: str) -> tuple[str, str]:
    """(artifactId, version) of a dependency of the pom, ``${...}`` resolved."""
    props, root = pom()
    for dep in root.iter(f"{{{POM_NS['m']}}}dependency"):
        if dep.findtext("m:artifactId", namespaces=POM_NS) == artifact:
            version = dep.findtext("m:version", namespaces=POM_NS) or ""
            return artifact, re.sub(r"\$\{([^}]+)\}", lambda m: props[m.group(1)], version)
    raise AssertionError(f"deploy/maven/pom.xml has no dependency {artifact}")


def connector_jar_name() -> str:
    artifact, version = pom_artifact("flink-sql-connector-kafka")
    return f"{artifact}-{version}.jar"


# --- what deploy/k8s says -------------------------------------------------------------------------------
def yaml_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("*.yml"))


def documents() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for f in yaml_files():
        for doc in yaml.safe_load_all(f.read_text()):
            if doc is not None:
                out.append((f, doc))
    return out


def resources() -> list[dict[str, Any]]:
    return [d for f, d in documents() if f.name != "kustomization.yaml"]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in resources() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def flinkdeployment() -> dict[str, Any]:
    return one("FlinkDeployment")


def configmap_env() -> dict[str, str]:
    fd = flinkdeployment()
    (container,) = [c for c in fd["spec"]["podTemplate"]["spec"]["containers"] if c["name"] == "flink-main-container"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(one("ConfigMap", source["configMapRef"]["name"])["data"])
    return env


def job_args() -> list[str]:
    return [str(a) for a in flinkdeployment()["spec"]["job"]["args"]]


def arg_value(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from spec.job.args"
    return args[args.index(flag) + 1]


def set_overrides(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == "--set"]


def dockerfile() -> str:
    return (K8S / "Dockerfile").read_text()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(ln for ln in dockerfile().splitlines() if not ln.lstrip().startswith("#")))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_copies() -> list[tuple[str, str]]:
    copies: list[tuple[str, str]] = []
    for word, rest in dockerfile_instructions():
        if word == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            copies.extend((src, parts[-1]) for src in parts[:-1])
    return copies


def image_from_comment() -> str:
    m = re.search(r"^#\s*image:\s*(\S+)\s*$", dockerfile(), re.M)
    assert m, "deploy/k8s/Dockerfile must name its image in a '# image: NAME:TAG' comment"
    return m.group(1)


# --- a schema of the FlinkDeployment fields this project uses (flink.apache.org/v1beta1) ------------------
MEMORY = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|g|Mi|Gi|M|G)$"}
RESOURCE = {"type": "object", "required": ["memory", "cpu"], "additionalProperties": False,
            "properties": {"memory": MEMORY, "cpu": {"type": "number", "exclusiveMinimum": 0},
                           "ephemeralStorage": {"type": "string"}}}
FLINK_DEPLOYMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "flink.apache.org/v1beta1"},
        "kind": {"const": "FlinkDeployment"},
        "metadata": {"type": "object", "required": ["name", "namespace"],
                     "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}}},
        "spec": {
            "type": "object",
            "required": ["image", "flinkVersion", "serviceAccount", "flinkConfiguration", "jobManager",
                         "taskManager", "job"],
            "additionalProperties": False,
            "properties": {
                "image": {"type": "string"},
                "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                "flinkVersion": {"type": "string", "pattern": r"^v[0-9]+_[0-9]+$"},
                "serviceAccount": {"type": "string"},
                "flinkConfiguration": {"type": "object", "additionalProperties": {"type": "string"}},
                "logConfiguration": {"type": "object", "additionalProperties": {"type": "string"}},
                "podTemplate": {"type": "object"},
                "ingress": {"type": "object"},
                "mode": {"enum": ["native", "standalone"]},
                "restartNonce": {"type": "integer"},
                "jobManager": {"type": "object", "required": ["resource"], "additionalProperties": False,
                               "properties": {"replicas": {"type": "integer", "minimum": 1}, "resource": RESOURCE,
                                              "podTemplate": {"type": "object"}}},
                "taskManager": {"type": "object", "required": ["resource"], "additionalProperties": False,
                                "properties": {"replicas": {"type": "integer", "minimum": 1}, "resource": RESOURCE,
                                               "podTemplate": {"type": "object"}}},
                "job": {
                    "type": "object",
                    "required": ["jarURI", "entryClass", "args", "parallelism", "upgradeMode", "state"],
                    "additionalProperties": False,
                    "properties": {
                        "jarURI": {"type": "string", "pattern": r"^local:///"},
                        "entryClass": {"type": "string"},
                        "args": {"type": "array", "items": {"type": "string"}},
                        "parallelism": {"type": "integer", "minimum": 1},
                        "upgradeMode": {"enum": ["stateless", "savepoint", "last-state"]},
                        "state": {"enum": ["running", "suspended"]},
                        "allowNonRestoredState": {"type": "boolean"},
                        "initialSavepointPath": {"type": "string"},
                        "savepointTriggerNonce": {"type": "integer"},
                        "checkpointTriggerNonce": {"type": "integer"},
                        "savepointRedeployNonce": {"type": "integer"},
                    },
                },
            },
        },
    },
}


# --- the tests ------------------------------------------------------------------------------------------
def test_every_manifest_parses_and_is_a_named_kubernetes_object() -> None:
    docs = documents()
    assert {f.name for f, _ in docs} >= {"flinkdeployment.yaml", "kafka.yaml", "redis.yaml", "configmap.yaml",
                                         "kustomization.yaml"}
    for f, doc in docs:
        assert isinstance(doc, dict), f"{f.name}: a document that is not a mapping"
        assert doc.get("apiVersion") and doc.get("kind"), f"{f.name}: apiVersion and kind are required"
        if doc["kind"] != "Kustomization":
            assert doc.get("metadata", {}).get("name"), f"{f.name}: {doc['kind']} without metadata.name"
    names = [(d["kind"], d["metadata"]["name"]) for d in resources()]
    assert len(names) == len(set(names)), "two objects of the same kind and name"


def test_kustomization_lists_every_manifest_and_one_namespace() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kust["resources"]
    assert sorted(listed) == sorted(f.name for f in yaml_files() if f.name != "kustomization.yaml")
    namespace = kust["namespace"]
    assert one("Namespace")["metadata"]["name"] == namespace
    for doc in resources():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, f"{doc['kind']} {doc['metadata']['name']}"


def test_flinkdeployment_has_the_operator_fields_it_needs() -> None:
    fd = flinkdeployment()
    jsonschema.validate(fd, FLINK_DEPLOYMENT_SCHEMA)
    major, minor = flink_version().split(".")[:2]
    assert fd["spec"]["flinkVersion"] == f"v{major}_{minor}"
    job = fd["spec"]["job"]
    assert job["upgradeMode"] == "savepoint"
    assert job["state"] == "running"
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    assert job["jarURI"] == f"local:///opt/flink/opt/flink-python-{flink_version()}.jar"
    conf = fd["spec"]["flinkConfiguration"]
    for key in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir", "state.backend.type",
                "taskmanager.numberOfTaskSlots", "python.executable"):
        assert conf.get(key), f"flinkConfiguration.{key} is required"
    assert int(conf["taskmanager.numberOfTaskSlots"]) >= 1


def test_the_entry_point_and_its_arguments_exist_in_the_project() -> None:
    args = job_args()
    entry = PurePosixPath(arg_value(args, "-py"))
    rel = entry.relative_to(USRLIB)
    assert (PROJECT_ROOT / rel).is_file(), f"{entry} is {rel} in the repository, which does not exist"
    copied = {dst.rstrip("/"): src for src, dst in dockerfile_copies()}
    assert copied.get(str(USRLIB / rel.parts[0])) == rel.parts[0], f"the Dockerfile does not copy {rel.parts[0]}/"
    cfg = load_config(overrides=set_overrides(args), env=configmap_env())  # unknown keys raise
    assert cfg["job"]["parallelism"] == flinkdeployment()["spec"]["job"]["parallelism"], \
        "--set job.parallelism must equal spec.job.parallelism (the job's config wins over -p)"
    python = arg_value(args, "-pyclientexec")
    conf = flinkdeployment()["spec"]["flinkConfiguration"]
    assert python == conf["python.client.executable"] == conf["python.executable"]


def test_the_image_has_every_package_the_job_imports_and_the_interpreter_it_names() -> None:
    from deploy.submit import PROJECT_PACKAGES

    copied = {src: dst for src, dst in dockerfile_copies()}
    for pkg in PROJECT_PACKAGES:
        assert copied.get(pkg, "").rstrip("/") == str(USRLIB / pkg), f"the image lacks {pkg}/ under {USRLIB}"
    text = dockerfile()
    python = flinkdeployment()["spec"]["flinkConfiguration"]["python.executable"]
    venv = str(PurePosixPath(python).parent.parent)
    m = re.search(r"python(3\.\d+) -m venv (\S+?);", text)
    assert m and m.group(2) == venv, f"the Dockerfile must create the venv {venv}"
    py = m.group(1)
    major_minor = tuple(int(x) for x in py.split("."))
    lo, hi = re.findall(r"3\.(\d+)", pyproject()["project"]["requires-python"])[:2]
    assert int(lo) <= major_minor[1] < int(hi), f"python{py} is outside requires-python"
    pythonpath = flinkdeployment()["spec"]["flinkConfiguration"].get("python.pythonpath", "")
    assert f"{venv}/lib/python{py}/site-packages" in pythonpath.split(":"), \
        "thread mode (pemja) needs the venv's site-packages in python.pythonpath"
    assert f"PYTHONPATH={USRLIB}" in text


def test_the_image_pins_the_same_versions_as_pyproject() -> None:
    text = dockerfile()
    instructions = dockerfile_instructions()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert froms == ["${FLINK_IMAGE}"]
    m = re.search(r"^ARG FLINK_IMAGE=(\S+)$", text, re.M)
    assert m and m.group(1) == f"flink:{flink_version()}-scala_2.12-java17"
    installs = [rest for word, rest in instructions
                if word == "RUN" and "pip install" in rest and "apache-flink" in rest]
    assert len(installs) == 1, "one RUN installs the job's packages"
    reqs: dict[str, str] = {}
    for command in installs[0].split(";"):
        if "pip install" in command and "--upgrade" not in command:
            reqs.update({Requirement(q).name.lower(): q for q in re.findall(r'"([^"]+)"', command)})
    pins = pinned()
    for name, spec in reqs.items():
        assert name in pins, f"the image installs {name}, which pyproject.toml does not list"
        assert spec.replace(" ", "") == pins[name].replace(" ", ""), \
            f"{name}: image {spec!r} != pyproject {pins[name]!r}"
    assert {"apache-flink", "redis", "numpy", "pyyaml"} <= set(reqs), "the job's runtime packages"
    assert f"/opt/flink/opt/flink-python-{flink_version()}.jar /opt/flink/lib/" in text


def test_image_name_matches_between_dockerfile_and_manifests() -> None:
    image = image_from_comment()
    assert flinkdeployment()["spec"]["image"] == image
    name, tag = image.rsplit(":", 1)
    assert tag == pyproject()["project"]["version"]
    assert f"docker build -f deploy/k8s/Dockerfile -t {image} ." in dockerfile()
    assert f'org.opencontainers.image.version="{tag}"' in dockerfile()
    assert name == "flinkrec-job"


def test_the_connector_jar_is_the_one_the_pom_fetches_and_where_the_job_looks() -> None:
    from jobs.flink_env import CONNECTOR_JAR

    jar = connector_jar_name()
    assert jar == CONNECTOR_JAR, "jobs/flink_env.py and deploy/maven/pom.xml name different connector jars"
    # the job looks for it at PROJECT_ROOT/var/jars/flink/ (jobs/flink_env.py); in the image PROJECT_ROOT is usrlib
    src = f"var/jars/flink/{jar}"
    assert (src, str(USRLIB / "var" / "jars" / "flink" / jar)) in dockerfile_copies()


def test_configmap_overrides_are_valid_config_and_match_the_flink_configuration() -> None:
    env = configmap_env()
    assert env and all(k.startswith("FLINKREC_") and "__" in k for k in env)
    assert all(isinstance(v, str) for v in env.values()), "ConfigMap values must be strings"
    cfg = load_config(env=env)
    conf = flinkdeployment()["spec"]["flinkConfiguration"]
    # the job sets its checkpoint (and savepoint) dir itself; they must be the cluster's shared ones
    assert cfg["job"]["checkpoint_dir"] == conf["execution.checkpointing.dir"]
    if "savepoint_dir" in cfg["job"]:
        assert cfg["job"]["savepoint_dir"] == conf["execution.checkpointing.savepoint-dir"]
    if cfg["job"].get("delivery") == "exactly_once":
        assert cfg["job"]["checkpoint_interval_ms"] > 0, "exactly-once Kafka output needs checkpoints"


def test_state_dirs_are_on_a_shared_volume_that_exists() -> None:
    fd = flinkdeployment()
    pod = fd["spec"]["podTemplate"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "flink-main-container"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    conf = fd["spec"]["flinkConfiguration"]
    for key in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir", "high-availability.storageDir"):
        uri = conf.get(key)
        if uri is None:
            continue
        assert uri.startswith("file:///"), f"{key}: only file:// is checked here, got {uri}"
        path = uri[len("file://"):]
        hits = [name for name, mount in mounts.items() if path.startswith(mount.rstrip("/") + "/")]
        assert hits, f"{key} ({path}) is on no mounted volume"
        claim = volumes[hits[0]]["persistentVolumeClaim"]["claimName"]
        pvc = one("PersistentVolumeClaim", claim)
        assert "ReadWriteMany" in pvc["spec"]["accessModes"], "JobManager and TaskManagers share the state dirs"


def test_service_account_and_its_permissions_exist() -> None:
    sa = flinkdeployment()["spec"]["serviceAccount"]
    one("ServiceAccount", sa)
    bindings = [b for b in resources() if b["kind"] == "RoleBinding"
                and any(s["kind"] == "ServiceAccount" and s["name"] == sa for s in b["subjects"])]
    assert bindings, f"no RoleBinding for {sa}"
    role = one(bindings[0]["roleRef"]["kind"], bindings[0]["roleRef"]["name"])
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert {("", "pods"), ("", "configmaps"), ("apps", "deployments")} <= granted


def workloads() -> list[dict[str, Any]]:
    return [d for d in resources() if d["kind"] in ("StatefulSet", "Deployment")]


@pytest.mark.parametrize("service", ["kafka", "kafka-headless", "redis"])
def test_services_select_pods_that_listen_on_their_ports(service: str) -> None:
    svc = one("Service", service)
    selector = svc["spec"]["selector"]
    matching = [w for w in workloads()
                if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
    assert len(matching) == 1, f"Service {service} selects {len(matching)} workloads"
    w = matching[0]
    assert selector.items() <= w["spec"]["selector"]["matchLabels"].items()
    ports = {p["containerPort"] for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    for port in svc["spec"]["ports"]:
        assert port.get("targetPort", port["port"]) in ports


def test_the_job_reaches_kafka_and_redis_through_those_services() -> None:
    cfg = load_config(env=configmap_env())
    namespace = flinkdeployment()["metadata"]["namespace"]
    for address, service in ((cfg["kafka"]["bootstrap"], "kafka"),
                             (f"{cfg['redis']['host']}:{cfg['redis']['port']}", "redis")):
        host, port = address.rsplit(":", 1)
        assert host in (service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
                        f"{service}.{namespace}.svc.cluster.local"), f"{address} is not Service {service}"
        assert int(port) in {p["port"] for p in one("Service", service)["spec"]["ports"]}


def kafka_env() -> dict[str, str]:
    sts = one("StatefulSet", "kafka")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    return {e["name"]: str(e["value"]) for e in container["env"]}


def test_kafka_is_the_version_of_the_pom_and_advertises_its_pod_dns_name() -> None:
    _, version = pom_artifact("kafka_2.13")
    sts = one("StatefulSet", "kafka")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"apache/kafka:{version}"
    env = kafka_env()
    namespace = sts["metadata"]["namespace"]
    host = f"{sts['metadata']['name']}-0.{sts['spec']['serviceName']}.{namespace}.svc.cluster.local"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{host}:9092"
    assert one("Service", sts["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"]), "a KRaft cluster id is 16 bytes, base64url"
    cfg = load_config(env=configmap_env())
    if "transaction_timeout_ms" in cfg["job"]:
        assert cfg["job"]["transaction_timeout_ms"] < int(env["KAFKA_TRANSACTION_MAX_TIMEOUT_MS"])


def test_the_topic_job_creates_the_configured_topics() -> None:
    cfg = load_config(env=configmap_env())
    (container,) = one("Job", "flinkrec-topics")["spec"]["template"]["spec"]["containers"]
    script = container["command"][-1]
    created = dict(re.findall(r"^\s*create (\S+)(.*)$", script, re.M))
    topics = cfg["kafka"]["topics"]
    assert set(created) == set(topics.values())
    assert "cleanup.policy=compact" in created[topics["items"]]
    assert f"--partitions {cfg['kafka']['partitions']}" in script
    assert cfg["kafka"]["bootstrap"] in script


def test_the_image_has_the_jvm_jar_where_the_job_looks() -> None:
    from jobs.flink_env import JVM_JAR

    assert (JVM_JAR, str(USRLIB / JVM_JAR)) in dockerfile_copies()


def test_the_shipped_packages_import_only_each_other() -> None:
    """Every project package an import in the shipped packages names (at module level or inside a function, as the
    job's client imports ``ingest.kafka_admin``) is shipped too: with -pyfs and in the image."""
    import ast

    from deploy.submit import PROJECT_PACKAGES

    project = {p.parent.name for p in PROJECT_ROOT.glob("*/__init__.py")}
    missing: dict[str, set[str]] = {}
    for pkg in PROJECT_PACKAGES:
        for path in sorted((PROJECT_ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                         else [])
                for name in names:
                    top = name.split(".")[0]
                    if top in project and top not in PROJECT_PACKAGES:
                        missing.setdefault(top, set()).add(str(path.relative_to(PROJECT_ROOT)))
    assert not missing, f"imported but not shipped (deploy.submit.PROJECT_PACKAGES): {missing}"
