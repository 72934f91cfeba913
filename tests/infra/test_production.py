"""The production deployment on paper (infra/production/), checked by tools, offline.

Kubernetes' own kinds are validated against the API's JSON schemas that the kubernetes-validate
package bundles (strict: an unknown field fails); Strimzi's kinds against the vendored CRDs' own
schemas (pinned by checksum), made as strict as the API server's field validation. Beyond the
schemas, the tests check what the schemas cannot know: the topics match the catalog, a Pi's ACLs
match infra/kafka.py, the settings file loads, and the image puts the jars where Spark looks.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.errors import NeurolakeError
from core.settings import load_settings
from infra.production import manifests
from schemas.catalog import DEVICE_READS, DEVICE_WRITES, EDGE_CONTROL_GROUP, TOPICS

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "infra" / "production"
KUBERNETES = PRODUCTION / "kubernetes"
CRDS = PRODUCTION / "crds"
KUBERNETES_VERSION = "1.33"  # the oldest Kubernetes the manifests are meant for
STRIMZI_VERSION = "1.2.0"
# Kafka settings Strimzi manages itself and refuses in spec.kafka.config (Strimzi 1.2.0,
# KafkaClusterSpec.FORBIDDEN_PREFIXES); a manifest naming one would be rejected by the operator.
STRIMZI_FORBIDDEN_PREFIXES = (
    "listeners",
    "advertised.",
    "broker.",
    "listener.",
    "host.name",
    "port",
    "inter.broker.listener.name",
    "sasl.",
    "ssl.",
    "security.",
    "password.",
    "log.dir",
    "authorizer.",
    "super.user",
    "node.id",
    "process.roles",
    "controller.",
    "metadata.log.dir",
)


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[Path]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    return [KUBERNETES / name for name in kustomization["resources"]]


def all_resources() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in documents(path)]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in all_resources() if doc["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in by_kind(kind) if doc["metadata"]["name"] == name]
    return found


# --- schemas ---------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """A CRD's structural schema made strict like the API server's field validation: an object
    with declared properties takes no others, unless it says it keeps unknown fields."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the strict schema of each vendored CRD's served versions."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version["served"]:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                # Object metadata is the API server's (validated as ObjectMeta below), not the CRD's.
                schema["properties"]["metadata"] = {"type": "object"}
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def test_vendored_crds_are_the_pinned_strimzi_release():
    sums = dict(
        reversed(line.split(None, 1)) for line in (CRDS / "SHA256SUMS").read_text().splitlines() if line.strip()
    )
    files = sorted(path.name for path in CRDS.glob("*.yaml"))
    assert files == sorted(sums), "every vendored CRD is pinned, and nothing pinned is missing"
    for name in files:
        assert name.startswith(f"strimzi-{STRIMZI_VERSION}-")
        assert hashlib.sha256((CRDS / name).read_bytes()).hexdigest() == sums[name], name
    kinds = {kind for _, kind in crd_schemas()}
    assert kinds == {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}


def test_kustomization_lists_every_manifest_and_its_files_exist():
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {str(p.relative_to(KUBERNETES)) for p in KUBERNETES.rglob("*.yaml")}
    generated = {name for gen in kustomization["configMapGenerator"] for name in gen["files"]}
    assert on_disk - {"kustomization.yaml"} == listed | {name for name in generated if name.endswith(".yaml")}
    for name in listed | generated:
        assert (KUBERNETES / name).is_file(), name
        # kustomize refuses files outside the kustomization's folder by default.
        assert not name.startswith(".."), name


def test_every_manifest_validates_offline():
    """Kubernetes kinds against the bundled API schemas (strict), Strimzi kinds against the CRDs."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    import jsonschema

    strimzi = crd_schemas()
    seen = set()
    resources = [*all_resources(), *documents(KUBERNETES / "executor-pod.yaml"), manifests.device_user("pi-3")]
    for doc in resources:
        key = (doc["apiVersion"], doc["kind"])
        seen.add(doc["kind"])
        where = f"{doc['kind']}/{doc['metadata'].get('name', '(template)')}"
        if key in strimzi:
            errors = sorted(jsonschema.Draft7Validator(strimzi[key]).iter_errors(doc), key=str)
            assert not errors, f"{where}: {[f'{list(e.path)}: {e.message}' for e in errors]}"
            labels = doc["metadata"].get("labels", {})
            assert doc["kind"] == "Kafka" or labels.get("strimzi.io/cluster") == manifests.CLUSTER, where
        else:
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where}: {list(exc.path)}: {exc.message}")
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "StatefulSet", "Deployment", "Job"} <= seen


def test_the_validators_reject_what_the_api_server_would():
    """The checks above have teeth: a misspelt field fails in either kind of schema."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    import jsonschema

    statefulset = named("StatefulSet", "neurolake-lake")
    broken = yaml.safe_load(yaml.safe_dump(statefulset))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    topic = manifests.topic_manifest("eeg.raw")
    topic["spec"]["replication"] = 3
    schema = crd_schemas()[("kafka.strimzi.io/v1", "KafkaTopic")]
    assert list(jsonschema.Draft7Validator(schema).iter_errors(topic))
    pool = named("KafkaNodePool", "broker")
    pool = {**pool, "spec": {**pool["spec"], "roles": ["zookeeper"]}}
    schema = crd_schemas()[("kafka.strimzi.io/v1", "KafkaNodePool")]
    assert list(jsonschema.Draft7Validator(schema).iter_errors(pool))


# --- Kafka -------------------------------------------------------------------------------------


def test_topics_file_is_generated_from_the_catalog():
    assert manifests.main(["topics", "--check"]) == 0, "run `python -m infra.production.manifests topics`"
    topics = {doc["spec"]["topicName"]: doc for doc in documents(manifests.TOPICS_FILE)}
    assert set(topics) == set(TOPICS)
    assert set(manifests.TOPIC_LOADS) == set(TOPICS), "every catalog topic has its load assumptions"
    for name, doc in topics.items():
        spec = doc["spec"]
        assert spec["replicas"] == 3
        assert spec["config"]["min.insync.replicas"] == 2
        assert spec["partitions"] % manifests.BROKERS == 0
        assert spec["partitions"] >= TOPICS[name].default_partitions
        if TOPICS[name].compacted:
            assert spec["config"]["cleanup.policy"] == "compact"
        else:
            assert spec["config"]["cleanup.policy"] == "delete" and spec["config"]["retention.ms"] >= 3_600_000
    # 1,000 headsets: bronze's EEG can be spread over enough executor cores.
    assert topics["eeg.raw"]["spec"]["partitions"] >= 60


def test_a_changed_catalog_makes_the_check_fail(monkeypatch, tmp_path):
    stale = tmp_path / "topics.yaml"
    stale.write_text(manifests.render_topics().replace("partitions: 60", "partitions: 6"))
    monkeypatch.setattr(manifests, "TOPICS_FILE", stale)
    assert manifests.main(["topics", "--check"]) == 1


def test_cluster_is_kraft_with_three_replicas_two_in_sync_and_racks():
    kafka = named("Kafka", manifests.CLUSTER)["spec"]["kafka"]
    config = kafka["config"]
    assert config["default.replication.factor"] == 3 and config["min.insync.replicas"] == 2
    assert config["offsets.topic.replication.factor"] == 3
    assert config["transaction.state.log.min.isr"] == 2
    assert config["unclean.leader.election.enable"] is False
    assert config["auto.create.topics.enable"] is False
    forbidden = [key for key in config if key.startswith(STRIMZI_FORBIDDEN_PREFIXES)]
    assert not forbidden, f"Strimzi refuses these in spec.kafka.config: {forbidden}"
    assert kafka["rack"]["topologyKey"] == "topology.kubernetes.io/zone"
    # Every listener authenticates with TLS client certificates: no plaintext way in.
    assert all(listener["tls"] and listener["authentication"]["type"] == "tls" for listener in kafka["listeners"])
    assert kafka["authorization"] == {"type": "simple", "superUsers": [f"CN={manifests.HUB_USER}"]}
    pools = {pool["metadata"]["name"]: pool["spec"] for pool in by_kind("KafkaNodePool")}
    assert pools["controller"]["roles"] == ["controller"] and pools["controller"]["replicas"] == 3
    assert pools["broker"]["roles"] == ["broker"] and pools["broker"]["replicas"] == manifests.BROKERS


def _bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    number, unit = re.fullmatch(r"([0-9.]+)([KMGT]i)", quantity).groups()  # type: ignore[union-attr]
    return float(number) * units[unit]


def test_broker_disks_hold_the_retention_the_topics_ask_for():
    (volume,) = named("KafkaNodePool", "broker")["spec"]["storage"]["volumes"]
    need = sum(manifests.retained_bytes_per_broker(topic) for topic in TOPICS)
    assert _bytes(volume["size"]) >= 1.15 * need, f"{volume['size']} for {need / 1e12:.1f} TB of retention"


def test_device_user_has_exactly_the_embedded_brokers_acls():
    from infra.kafka import device_acls

    user = manifests.device_user("pi-3")
    assert user["metadata"]["name"] == "pi-3" and user["spec"]["authentication"] == {"type": "tls"}
    ours = {
        (rule["resource"]["type"], rule["resource"]["name"], operation.upper())
        for rule in user["spec"]["authorization"]["acls"]
        for operation in rule["operations"]
    }
    embedded = {(binding.restype.name.lower(), binding.name, binding.operation.name) for binding in device_acls("pi-3")}
    assert ours == embedded
    # And in words: write the data topics and devices.acks, read devices.control, nothing else.
    assert {name for kind, name, op in ours if op == "WRITE"} == set(DEVICE_WRITES)
    assert {name for kind, name, op in ours if op == "READ" and kind == "topic"} == set(DEVICE_READS)
    assert ("group", EDGE_CONTROL_GROUP, "READ") in ours
    assert "devices.control" not in {name for _, name, op in ours if op == "WRITE"}


@pytest.mark.parametrize("device", ["Pi_3", "../pi", "pi-", ""])
def test_device_user_refuses_ids_that_cannot_name_a_certificate(device):
    with pytest.raises(ValueError):
        manifests.device_user(device)


def test_readme_shows_the_generated_sizing_table():
    assert manifests.sizing_table() in (PRODUCTION / "README.md").read_text()


# --- settings, the lake, the image ------------------------------------------------------------


def production_settings(**environ: str):
    return load_settings(config_file=KUBERNETES / "neurolake.toml", environ=environ, cwd=Path("/"))


def test_production_settings_load_and_agree_with_the_manifests():
    settings = production_settings()
    assert not settings.broker.embedded
    assert settings.kafka.security_protocol == "SSL"
    assert settings.topics.replication_factor == 3 and settings.topics.min_insync_replicas == 2
    assert {topic: settings.topics.partitions_for(topic) for topic in TOPICS} == {
        topic: manifests.partitions(topic) for topic in TOPICS
    }
    assert settings.spark.master.startswith("k8s://")
    conf = settings.spark.conf
    assert conf["spark.kubernetes.driver.pod.name"] == "neurolake-lake-0"
    assert conf["spark.driver.host"].startswith("neurolake-lake-0.neurolake-lake.")
    # The state's partitions are fixed by its checkpoint: sized for the largest cluster.
    assert settings.lake.silver_tasks >= manifests.partitions("eeg.raw")
    assert conf["spark.delta.logStore.s3a.impl"] == "io.delta.storage.S3SingleDriverLogStore"


def test_driver_pod_mounts_every_file_the_settings_name():
    settings = production_settings()
    pod = named("StatefulSet", "neurolake-lake")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = [mount["mountPath"] for mount in container["volumeMounts"]]
    files = [
        settings.kafka.ssl_ca_location,
        settings.kafka.ssl_certificate_location,
        settings.kafka.ssl_key_location,
        settings.security.keyring,
        settings.paths.lake_root / "x",
        KUBERNETES_CONFIG / "neurolake.toml",
        KUBERNETES_CONFIG / "executor-pod.yaml",
    ]
    for path in files:
        assert any(str(path).startswith(mount + "/") for mount in mounts), path
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["NEUROLAKE_CONFIG"] == str(KUBERNETES_CONFIG / "neurolake.toml")
    assert named("Service", "neurolake-lake")["spec"]["clusterIP"] == "None"
    assert named("StatefulSet", "neurolake-lake")["spec"]["replicas"] == 1
    ports = {port["containerPort"] for port in container["ports"]}
    conf = settings.spark.conf
    assert {int(conf["spark.driver.port"]), int(conf["spark.driver.blockManager.port"])} <= ports


KUBERNETES_CONFIG = Path("/etc/neurolake/config")


def test_executors_find_what_the_driver_hands_them_by_path():
    """Executors read the Kafka truststore, the keyring and the lake at the driver's paths."""
    settings = production_settings()
    conf = settings.spark.conf
    secret_mounts = {
        value: key.removeprefix("spark.kubernetes.executor.secrets.")
        for key, value in conf.items()
        if key.startswith("spark.kubernetes.executor.secrets.")
    }
    for path in (settings.kafka.ssl_ca_location, settings.security.keyring):
        assert str(path.parent) in secret_mounts, path
    pvc = "spark.kubernetes.executor.volumes.persistentVolumeClaim.lake"
    assert conf[f"{pvc}.mount.path"] == str(settings.paths.lake_root)
    assert conf[f"{pvc}.options.claimName"] == named("PersistentVolumeClaim", "neurolake-lake")["metadata"]["name"]
    assert "ReadWriteMany" in named("PersistentVolumeClaim", "neurolake-lake")["spec"]["accessModes"]
    template = documents(KUBERNETES / "executor-pod.yaml")[0]
    assert template["spec"]["containers"][0]["name"] == conf["spark.kubernetes.executor.podTemplateContainerName"]


def test_an_object_storage_lake_root_is_refused_by_name():
    """Until the lake's paths are URIs, an s3a:// root is an error naming the setting, not a local
    folder called 's3a:'."""
    with pytest.raises(NeurolakeError, match=r"paths.lake_root must be a local path.*mount"):
        production_settings(NEUROLAKE_PATHS__LAKE_ROOT="s3a://neurolake-lake/")


def dockerfile() -> str:
    return (PRODUCTION / "image" / "Dockerfile").read_text()


def test_image_puts_the_spark_jars_where_the_settings_look():
    text = dockerfile()
    env = dict(re.findall(r"(NEUROLAKE_[A-Z_]+)=(\S+)", text))
    jars = Path(env["NEUROLAKE_PATHS__JARS"])
    assert production_settings().paths.jars == jars
    # infra/spark.py puts every jar of <paths.jars>/spark on spark.{driver,executor}.extraClassPath.
    assert re.search(rf"^COPY --from=jars /jvm/spark {re.escape(str(jars / 'spark'))}$", text, re.M)
    # The jars are fetched as `make setup` fetches them: every pom, checksums checked.
    assert "infra/scripts/fetch_jars.sh" in text and "COPY infra/jvm infra/jvm" in text
    assert env["NEUROLAKE_CONFIG"] == str(KUBERNETES_CONFIG / "neurolake.toml")


def test_image_installs_the_hash_checked_lock_on_python_311():
    text = dockerfile()
    assert re.search(r"^FROM python:3\.11[-.\w]*$", text, re.M)
    assert "--require-hashes -r requirements.lock" in text
    setup = (ROOT / "infra" / "scripts" / "setup.sh").read_text()
    uv = re.search(r"UV_VERSION=(\S+)", setup).group(1)  # type: ignore[union-attr]
    assert f'"uv=={uv}"' in text, "the image installs with the uv that setup.sh pins"
    lock = (ROOT / "requirements.lock").read_text()
    # What the image's MLflow and Airflow need for PostgreSQL and S3 artifacts is locked.
    for package in ("psycopg2-binary", "boto3", "apache-airflow", "mlflow"):
        assert re.search(rf"^{package}==", lock, re.M), package
    # SPARK_HOME names the pyspark package inside the image's venv (python3.11).
    assert "SPARK_HOME=/opt/neurolake/.venv/lib/python3.11/site-packages/pyspark" in text


def test_entrypoint_starts_an_executor_as_spark_describes_it(tmp_path):
    """Spark starts executor pods as `<entrypoint> executor` with SPARK_* variables; our script
    (the wheel ships none) must turn them into the executor backend's command line."""
    java_home = tmp_path / "jdk"
    (java_home / "bin").mkdir(parents=True)
    fake_java = java_home / "bin" / "java"
    fake_java.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake_java.chmod(0o755)
    env = {
        "PATH": os.environ["PATH"],
        "JAVA_HOME": str(java_home),
        "SPARK_HOME": "/spark",
        "SPARK_CLASSPATH": "/opt/neurolake/.jvm/spark/a.jar:/opt/neurolake/.jvm/spark/b.jar",
        "SPARK_JAVA_OPT_1": "-Dsecond=2",
        "SPARK_JAVA_OPT_0": "-Dfirst=1",
        "SPARK_EXECUTOR_MEMORY": "4g",
        "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@neurolake-lake-0:7078",
        "SPARK_EXECUTOR_ID": "7",
        "SPARK_EXECUTOR_CORES": "2",
        "SPARK_APPLICATION_ID": "spark-app",
        "SPARK_EXECUTOR_POD_IP": "10.0.0.7",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_EXECUTOR_POD_NAME": "neurolake-exec-7",
    }
    script = PRODUCTION / "image" / "entrypoint.sh"
    result = subprocess.run(["bash", str(script), "executor"], env=env, capture_output=True, text=True, check=True)
    args = result.stdout.splitlines()
    assert args[:4] == ["-Dfirst=1", "-Dsecond=2", "-Xms4g", "-Xmx4g"]
    assert args[args.index("-cp") + 1] == env["SPARK_CLASSPATH"] + ":/spark/jars/*"
    assert "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend" in args
    flags = dict(zip(args[-14::2], args[-13::2]))
    assert flags == {
        "--driver-url": env["SPARK_DRIVER_URL"],
        "--executor-id": "7",
        "--cores": "2",
        "--app-id": "spark-app",
        "--hostname": "10.0.0.7",
        "--resourceProfileId": "0",
        "--podName": "neurolake-exec-7",
    }
    passthrough = subprocess.run(["bash", str(script), "echo", "hello"], env=env, capture_output=True, text=True)
    assert passthrough.stdout == "hello\n"
