"""The Helm chart: lint, render with every CI values file, validate each object against the
Kubernetes schemas (built-in kinds) and the CRD schemas (Prometheus Operator, KEDA), and check
the properties operators rely on (docs/deploy.md): restricted pods, static membership, state
on a volume, probes on the health endpoints, secrets never in the ConfigMap, bounded autoscaling.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.helpers import (
    CHART,
    CI_VALUES,
    CRD_VALIDATOR,
    RULE_FILE,
    TOOLS,
    Rendered,
    helm_template,
    load_yaml,
    node,
    render,
    run,
    tool,
    values_args,
)

IDS = [path.stem for path in CI_VALUES]
CI = {path.stem: path for path in CI_VALUES}
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas known.
KUBERNETES_VERSIONS = ["1.25.0", "1.37.0"]
CUSTOM_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}
DATA_DIR = "/var/lib/eqlstream"
TLS_DIR = "/etc/eqlstream/kafka-tls"
# Parameters of KEDA's kafka scaler the chart may set (anything else is a typo KEDA ignores).
KEDA_KAFKA_PARAMETERS = {
    "bootstrapServers",
    "consumerGroup",
    "topic",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "sasl",
    "tls",
}


def workloads(rendered: Rendered) -> list[dict[str, Any]]:
    return rendered.of_kind("StatefulSet")


def pod_specs(rendered: Rendered) -> list[tuple[str, dict[str, Any]]]:
    """Every pod the release can start: each StatefulSet's template and the helm test pod."""
    specs = [(sts["metadata"]["name"], sts["spec"]["template"]["spec"]) for sts in workloads(rendered)]
    specs += [(pod["metadata"]["name"], pod["spec"]) for pod in rendered.of_kind("Pod")]
    return specs


def container(statefulset: dict[str, Any]) -> dict[str, Any]:
    (only,) = statefulset["spec"]["template"]["spec"]["containers"]
    return only


def env(statefulset: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container(statefulset).get("env", [])}


def config_data(rendered: Rendered) -> dict[str, str]:
    return rendered.one("ConfigMap", "-config")["data"]


# -- the tools' verdicts ---------------------------------------------------------------------


@pytest.mark.parametrize("values_file", CI_VALUES, ids=IDS)
def test_helm_lint_strict_passes(values_file: Path) -> None:
    result = run([tool("helm"), "lint", "--strict", str(CHART), *values_args(values_file)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values_file", CI_VALUES, ids=IDS)
def test_rendered_objects_match_the_kubernetes_schemas(
    rendered: Callable[[Path | None], Rendered], values_file: Path, kubernetes_version: str
) -> None:
    manifests = rendered(values_file)
    result = run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "--kubernetes-version", kubernetes_version, "-"],
        stdin=manifests.text,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # kubernetes-validate only warns about kinds it has no schema for: those must be exactly the
    # custom resources, which validate-crds.mjs checked while parsing.
    said = (result.stdout + result.stderr).splitlines()
    unknown = {line.split(" for kind ")[1].split()[0] for line in said if "Couldn't find schema" in line}
    custom = {doc["kind"] for doc in manifests.documents if doc["kind"] in CUSTOM_KINDS}
    assert unknown == custom
    assert sorted(manifests.validated_custom_resources) == sorted(
        f"{doc['kind']}/{doc['metadata']['name']}" for doc in manifests.documents if doc["kind"] in CUSTOM_KINDS
    )


def test_the_validators_catch_a_broken_object(rendered: Callable[[Path | None], Rendered]) -> None:
    """Both validators can fail: a misspelt StatefulSet field, a mistyped ScaledObject field and a
    custom resource kind without a known schema are each refused."""
    text = rendered(CI["monitoring-keda"]).text
    misspelt = text.replace("  podManagementPolicy: Parallel", "  podManagmentPolicy: Parallel", 1)
    result = run([tool("kubernetes-validate"), "--strict", "--quiet", "-"], stdin=misspelt)
    assert result.returncode != 0
    assert "'podManagmentPolicy' was unexpected" in result.stdout + result.stderr

    mistyped = text.replace("  minReplicaCount: 2\n", '  minReplicaCount: "two"\n', 1)
    assert mistyped != text
    result = run([node(), str(CRD_VALIDATOR), str(TOOLS / "npm")], stdin=mistyped)
    assert result.returncode == 1
    assert "ScaledObject/eqlstream-ingest is invalid" in result.stderr and "minReplicaCount" in result.stderr

    unknown = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n"
    result = run([node(), str(CRD_VALIDATOR), str(TOOLS / "npm")], stdin=unknown)
    assert result.returncode == 1
    assert "no schema known for example.com/v1/Widget" in result.stderr


def test_every_custom_resource_kind_is_exercised(rendered: Callable[[Path | None], Rendered]) -> None:
    seen = {doc["kind"] for path in CI_VALUES for doc in rendered(path).documents}
    assert seen >= CUSTOM_KINDS


# -- values the schema or the chart's checks refuse ------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaz=3"], "additional properties 'replicaz' not allowed"),
        (["--set", "config.logLevl=DEBUG"], "additional properties 'logLevl' not allowed"),
        (["--set", "sequence.persistance.enabled=false"], "additional properties 'persistance' not allowed"),
        (["--set", "ingest.replicas=-1"], "/ingest/replicas"),
        (["--set", "sequence.replicas=0"], "/sequence/replicas"),
        (["--set", "config.candidatesPartitions=0"], "/config/candidatesPartitions"),
        (["--set", "kafka.securityProtocol=TLS"], "/kafka/securityProtocol"),
        (["--set-string", "config.sessionTimeout=45sec"], "/config/sessionTimeout"),
        (["--set", "config.webPort=70000"], "/config/webPort"),
        (["--set", "mode=both"], "/mode"),
        (["--set", "ingest.autoscaling.minReplicaCount=0"], "/ingest/autoscaling/minReplicaCount"),
        (["--set", "sequence.resources.limits=null"], "/sequence/resources"),
        (["--set", "ingest.terminationGracePeriodSeconds=10"], "/ingest/terminationGracePeriodSeconds"),
        (["--set", "image.digest=latest"], "/image/digest"),
        (["--set", "config.singleRecordBatches=true"], "additional properties 'singleRecordBatches' not allowed"),
        (["--set-string", "config.sessionTimeout=45000us"], "/config/sessionTimeout"),
        (["--set-string", "config.candidatesRetention=1w"], "/config/candidatesRetention"),
        (["--set", "config.topicReplicationFactor=0"], "/config/topicReplicationFactor"),
        (["--set", "config.maxJoinKeys=0"], "/config/maxJoinKeys"),
        (["--set", "config.alertsIndex=Eqlstream-Alerts"], "/config/alertsIndex"),
        (["--set", "config.logFormat=ecs"], "/config/logFormat"),
        (["--set", "metrics.podMonitor.interval=1.5s"], "/metrics/podMonitor/interval"),
        (["--set-string", "rules.files.rule\\.txt=x"], "invalid propertyName 'rule.txt'"),
    ],
    ids=lambda value: value if isinstance(value, str) else " ".join(value),
)
def test_schema_rejects_bad_values(args: list[str], message: str) -> None:
    result = helm_template(*args)
    assert result.returncode != 0, f"{args} rendered:\n{result.stdout[:500]}"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "sequence.autoscaling.enabled=true", "--set", "sequence.autoscaling.maxReplicaCount=9"],
            "sequence.autoscaling.maxReplicaCount=9 exceeds config.candidatesPartitions=8",
        ),
        (["--set", "sequence.replicas=9"], "sequence.replicas=9 exceeds config.candidatesPartitions=8"),
        (
            ["--set", "ingest.autoscaling.enabled=true", "--set", "ingest.autoscaling.minReplicaCount=5"],
            "ingest.autoscaling.minReplicaCount exceeds its maxReplicaCount",
        ),
        (
            ["--set", "kafka.securityProtocol=SASL_SSL", "--set", "kafka.sasl.username=u"],
            "needs kafka.sasl.existingSecret",
        ),
        (
            ["--set", "kafka.securityProtocol=SASL_PLAINTEXT", "--set", "kafka.sasl.existingSecret=s"],
            "needs kafka.sasl.username",
        ),
        (["--set", "kafka.tls.existingSecret=tls"], "uses no TLS"),
        (["--set", "kafka.tls.certificateKey=tls.crt"], "name keys of kafka.tls.existingSecret"),
        (
            [
                "--set",
                "kafka.securityProtocol=SSL",
                "--set",
                "kafka.tls.existingSecret=tls",
                "--set",
                "kafka.tls.keyKey=k",
            ],
            "needs both kafka.tls.certificateKey and kafka.tls.keyKey",
        ),
        (
            ["--set", "metrics.podMonitor.enabled=true", "--set", "metrics.serviceMonitor.enabled=true"],
            "not both",
        ),
        (["--set", "rules.path=/r.toml", "--set-string", "rules.files.a\\.toml=x"], "set rules.path or rules.files"),
        (["--set", "mode=all", "--set", "sequence.autoscaling.enabled=true"], "autoscaling is for mode=split"),
        (
            ["--set", "config.topicReplicationFactor=1"],
            "config.topicMinInsyncReplicas=2 exceeds config.topicReplicationFactor=1",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else " ".join(value),
)
def test_inconsistent_values_fail_with_the_value_to_change(args: list[str], message: str) -> None:
    result = helm_template(*args)
    assert result.returncode != 0, f"{args} rendered:\n{result.stdout[:500]}"
    assert message in result.stderr


def test_an_install_without_an_image_fails_at_once_and_says_what_to_do() -> None:
    """Nobody publishes the image: a default would only give pods stuck in ImagePullBackOff."""
    refused = helm_template(image=False)
    assert refused.returncode != 0
    assert "image.repository is required: the chart ships no image" in refused.stderr
    assert 'docs/deploy.md, "Build the image"' in refused.stderr
    # helm lint treats a missing required value as information, but names it
    linted = run([tool("helm"), "lint", "--strict", str(CHART)])
    assert "image.repository is required" in linted.stdout + linted.stderr
    given = helm_template("--set", "image.repository=registry.example.com/eqlstream", image=False)
    assert given.returncode == 0, given.stderr
    assert "image: registry.example.com/eqlstream:0.2.0" in given.stdout


def test_helm_lint_applies_the_schema_too() -> None:
    result = run([tool("helm"), "lint", "--strict", str(CHART), "--set", "sequence.replicas=-2"])
    assert result.returncode != 0
    assert "/sequence/replicas" in result.stdout + result.stderr


def test_autoscaling_up_to_exactly_the_partition_count_is_allowed() -> None:
    result = helm_template(
        "--set", "config.candidatesPartitions=6", "--set", "sequence.autoscaling.enabled=true",
        "--set", "sequence.autoscaling.maxReplicaCount=6",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


# -- workloads --------------------------------------------------------------------------------


def test_split_mode_runs_each_stage_as_its_own_statefulset(rendered: Callable[[Path | None], Rendered]) -> None:
    manifests = rendered(CI["defaults"])
    roles = {sts["metadata"]["name"]: env(sts)["EQLSTREAM_ROLE"]["value"] for sts in workloads(manifests)}
    assert roles == {"eqlstream-ingest": "ingest", "eqlstream-sequence": "sequence"}


def test_mode_all_runs_one_statefulset_with_both_stages(rendered: Callable[[Path | None], Rendered]) -> None:
    (sts,) = workloads(rendered(CI["mode-all"]))
    assert env(sts)["EQLSTREAM_ROLE"]["value"] == "all"
    assert sts["spec"]["replicas"] == 2
    assert [claim["metadata"]["name"] for claim in sts["spec"]["volumeClaimTemplates"]] == ["data"]


@pytest.mark.parametrize("values_file", CI_VALUES, ids=IDS)
def test_static_membership_from_the_pod_name(rendered: Callable[[Path | None], Rendered], values_file: Path) -> None:
    manifests = rendered(values_file)
    services = {svc["metadata"]["name"]: svc for svc in manifests.of_kind("Service")}
    for sts in workloads(manifests):
        assert env(sts)["EQLSTREAM_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert sts["spec"]["podManagementPolicy"] == "Parallel"
        governing = services[sts["spec"]["serviceName"]]
        assert governing["spec"]["clusterIP"] == "None"
        assert governing["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
        # Pod names (the instance ids) stay valid DNS labels with the revision hash appended.
        assert len(sts["metadata"]["name"]) <= 52


def test_sequence_state_on_a_claim_per_pod(rendered: Callable[[Path | None], Rendered]) -> None:
    manifests = rendered(CI["monitoring-keda"])
    sequence = manifests.one("StatefulSet", "-sequence")
    (claim,) = sequence["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    mounts = {mount["name"]: mount["mountPath"] for mount in container(sequence)["volumeMounts"]}
    assert mounts["data"] == DATA_DIR == config_data(manifests)["EQLSTREAM_DATA_DIR"]
    assert "data" not in {volume["name"] for volume in sequence["spec"]["template"]["spec"]["volumes"]}
    ingest = manifests.one("StatefulSet", "-ingest")
    assert "volumeClaimTemplates" not in ingest["spec"]
    assert {mount["mountPath"] for mount in container(ingest)["volumeMounts"]} == {"/tmp"}


def test_persistence_off_keeps_state_in_a_bounded_emptydir(rendered: Callable[[Path | None], Rendered]) -> None:
    sequence = rendered(CI["persistence-off"]).one("StatefulSet", "-sequence")
    assert "volumeClaimTemplates" not in sequence["spec"]
    volumes = {volume["name"]: volume for volume in sequence["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["emptyDir"] == {"sizeLimit": "1Gi"}
    assert volumes["tmp"]["emptyDir"]["sizeLimit"]


def test_storage_class_dash_means_no_class(rendered: Callable[[Path | None], Rendered]) -> None:
    (sts,) = workloads(rendered(CI["mode-all"]))
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == ""


@pytest.mark.parametrize("values_file", CI_VALUES, ids=IDS)
def test_pods_run_restricted(rendered: Callable[[Path | None], Rendered], values_file: Path) -> None:
    for name, spec in pod_specs(rendered(values_file)):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (10001, 10001, 10001), name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for box in spec["containers"]:
            context = box["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            writable = {mount["mountPath"] for mount in box.get("volumeMounts", []) if not mount.get("readOnly")}
            assert writable <= {"/tmp", DATA_DIR}, name
            assert box["resources"]["requests"].keys() >= {"cpu", "memory"}, name
            assert "memory" in box["resources"]["limits"], name


@pytest.mark.parametrize("values_file", CI_VALUES, ids=IDS)
def test_probes_use_the_health_endpoints(rendered: Callable[[Path | None], Rendered], values_file: Path) -> None:
    for sts in workloads(rendered(values_file)):
        box = container(sts)
        assert box["ports"] == [{"name": "http-metrics", "containerPort": 6066, "protocol": "TCP"}]
        probes = {kind: box[f"{kind}Probe"] for kind in ("startup", "liveness", "readiness")}
        paths = {kind: (probe["httpGet"]["path"], probe["httpGet"]["port"]) for kind, probe in probes.items()}
        assert paths == {
            "startup": ("/livez", "http-metrics"),
            "liveness": ("/livez", "http-metrics"),
            "readiness": ("/readyz", "http-metrics"),
        }
        # A state recovery may take minutes: the startup probe allows ten before liveness applies.
        assert probes["startup"]["periodSeconds"] * probes["startup"]["failureThreshold"] >= 600
        # Longer than the ~30 s worst clean shutdown (drain, commit, leave the group, flush).
        assert sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 30


MIB = 1024 * 1024
# The memory bench's highest peak RSS of a sequence process, RocksDB included, in a flood of
# 1,000,000 new keys within one minute (bench/RESULTS.md; 1,152 to 1,277 MB over three runs).
MEASURED_PEAK = 1_277_000_000


def quantity(value: str) -> int:
    """A Kubernetes memory quantity in bytes (the binary suffixes the chart uses)."""
    factors = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB}
    suffix = value[-2:]
    return int(value[:-2]) * factors[suffix] if suffix in factors else int(value)


@pytest.mark.parametrize("values_file", [CI["defaults"], CI["mode-all"]], ids=["split", "all"])
def test_memory_limits_cover_rocksdb_at_its_worst(
    rendered: Callable[[Path | None], Rendered], values_file: Path
) -> None:
    """RocksDB holds, per state partition on a pod (active or standby: each partition at most
    once), its block cache and two write buffers; the request covers all of them at once, and the
    limit the whole process in a flood of new keys, or the flood ends in an OOM kill."""
    manifests = rendered(values_file)
    data = config_data(manifests)
    partitions = int(data["EQLSTREAM_CANDIDATES_PARTITIONS"])
    per_partition = int(data["EQLSTREAM_ROCKSDB_BLOCK_CACHE"]) + 2 * int(data["EQLSTREAM_ROCKSDB_WRITE_BUFFER"])
    rocksdb = partitions * per_partition
    assert rocksdb == 384 * MIB  # 8 x (16 + 2 x 16) MiB, as docs/deploy.md states
    (values,) = load_yaml((CHART / "values.yaml").read_text())
    ingest_share = quantity(values["ingest"]["resources"]["limits"]["memory"]) if values_file == CI["mode-all"] else 0
    stateful = [sts for sts in workloads(manifests) if env(sts)["EQLSTREAM_ROLE"]["value"] != "ingest"]
    assert stateful
    for sts in stateful:
        resources = container(sts)["resources"]
        # the measured peak with a fifth to spare for run-to-run variation
        assert quantity(resources["limits"]["memory"]) >= 1.2 * MEASURED_PEAK + ingest_share
        # the scheduler reserves at least what RocksDB alone may come to hold
        assert quantity(resources["requests"]["memory"]) >= rocksdb


def test_one_disruption_at_a_time_per_stage(rendered: Callable[[Path | None], Rendered]) -> None:
    manifests = rendered(CI["defaults"])
    budgets = {pdb["metadata"]["name"]: pdb["spec"] for pdb in manifests.of_kind("PodDisruptionBudget")}
    for sts in workloads(manifests):
        budget = budgets[sts["metadata"]["name"]]
        assert budget["maxUnavailable"] == 1
        assert budget["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]


def test_config_checksum_rolls_the_pods_when_settings_change(rendered: Callable[[Path | None], Rendered]) -> None:
    def checksums(manifests: Rendered) -> set[str]:
        return {sts["spec"]["template"]["metadata"]["annotations"]["checksum/config"] for sts in workloads(manifests)}

    before = checksums(rendered(CI["defaults"]))
    assert len(before) == 1
    assert checksums(render()) == before
    assert checksums(render("--set", "config.logLevel=DEBUG")).isdisjoint(before)


def test_settings_come_from_the_configmap(rendered: Callable[[Path | None], Rendered]) -> None:
    manifests = rendered(CI["defaults"])
    name = manifests.one("ConfigMap", "-config")["metadata"]["name"]
    for sts in workloads(manifests):
        assert container(sts)["envFrom"] == [{"configMapRef": {"name": name}}]


def test_scrape_annotations_follow_the_values(rendered: Callable[[Path | None], Rendered]) -> None:
    for sts in workloads(rendered(CI["defaults"])):
        annotations = sts["spec"]["template"]["metadata"]["annotations"]
        assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", "6066")
        assert annotations["prometheus.io/path"] == "/metrics"
    for sts in workloads(rendered(CI["persistence-off"])):
        assert not any(key.startswith("prometheus.io/") for key in sts["spec"]["template"]["metadata"]["annotations"])


# -- Kafka credentials -------------------------------------------------------------------------


def test_sasl_password_and_tls_files_come_from_existing_secrets(rendered: Callable[[Path | None], Rendered]) -> None:
    manifests = rendered(CI["sasl-tls"])
    data = config_data(manifests)
    assert not [key for key in data if "PASSWORD" in key]
    assert not manifests.of_kind("Secret"), "the chart must not create or copy secrets"
    assert data["EQLSTREAM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["EQLSTREAM_KAFKA_SASL_USERNAME"] == "eqlstream"
    for sts in workloads(manifests):
        variables = env(sts)
        assert variables["EQLSTREAM_KAFKA_SASL_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": "eqlstream-kafka", "key": "sasl-password"}
        }
        assert variables["EQLSTREAM_KAFKA_SSL_KEY_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": "eqlstream-kafka-tls", "key": "tls-key-password"}
        }
        (mount,) = [m for m in container(sts)["volumeMounts"] if m["name"] == "kafka-tls"]
        assert mount == {"name": "kafka-tls", "mountPath": TLS_DIR, "readOnly": True}
        (volume,) = [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "kafka-tls"]
        assert volume["secret"]["secretName"] == "eqlstream-kafka-tls"
        files = {f"{TLS_DIR}/{item['path']}" for item in volume["secret"]["items"]}
        locations = {
            data[f"EQLSTREAM_KAFKA_SSL_{kind}_LOCATION"] for kind in ("CA", "CERTIFICATE", "KEY")
        }  # every location points at a file the volume provides
        assert locations == files == {f"{TLS_DIR}/ca.crt", f"{TLS_DIR}/tls.crt", f"{TLS_DIR}/tls.key"}
        assert volume["secret"]["defaultMode"] == 0o440


def test_plaintext_kafka_mounts_and_references_no_secret(rendered: Callable[[Path | None], Rendered]) -> None:
    manifests = rendered(CI["defaults"])
    for sts in workloads(manifests):
        assert set(env(sts)) == {"EQLSTREAM_ROLE", "EQLSTREAM_INSTANCE_ID"}
        assert {volume["name"] for volume in sts["spec"]["template"]["spec"]["volumes"]} <= {"tmp", "data"}
    assert not [key for key in config_data(manifests) if "_SSL_" in key]


def test_rule_files_from_values_are_mounted_and_selected(rendered: Callable[[Path | None], Rendered]) -> None:
    manifests = rendered(CI["mode-all"])
    rules = manifests.one("ConfigMap", "-rules")
    assert rules["data"]["mshta.toml"] == RULE_FILE.read_text()
    assert config_data(manifests)["EQLSTREAM_RULE_PATH"] == "/etc/eqlstream/rules"
    (sts,) = workloads(manifests)
    (mount,) = [m for m in container(sts)["volumeMounts"] if m["name"] == "rules"]
    assert mount == {"name": "rules", "mountPath": "/etc/eqlstream/rules", "readOnly": True}
    assert "checksum/rules" in sts["spec"]["template"]["metadata"]["annotations"]


# -- monitoring and autoscaling -----------------------------------------------------------------


def test_monitors_select_the_pods_metrics_port(rendered: Callable[[Path | None], Rendered]) -> None:
    keda = rendered(CI["monitoring-keda"])
    monitor = keda.one("ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "http-metrics"
    selected = [
        svc
        for svc in keda.of_kind("Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    ]
    assert {svc["metadata"]["name"] for svc in selected} == {f"{sts['spec']['serviceName']}" for sts in workloads(keda)}
    assert all(svc["spec"]["publishNotReadyAddresses"] for svc in selected), "not-ready pods must still be scraped"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"

    pod_monitor = rendered(CI["persistence-off"]).one("PodMonitor")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http-metrics"
    for sts in workloads(rendered(CI["persistence-off"])):
        labels = sts["spec"]["template"]["metadata"]["labels"]
        assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_scaled_objects_follow_consumer_lag_within_the_partitions(rendered: Callable[[Path | None], Rendered]) -> None:
    manifests = rendered(CI["monitoring-keda"])
    data = config_data(manifests)
    scaled = {obj["metadata"]["name"]: obj["spec"] for obj in manifests.of_kind("ScaledObject")}
    assert set(scaled) == {sts["metadata"]["name"] for sts in workloads(manifests)}
    for sts in workloads(manifests):
        spec = scaled[sts["metadata"]["name"]]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": sts["metadata"]["name"],
        }
        assert "replicas" not in sts["spec"], "an upgrade must not reset what KEDA scaled"
        assert spec["minReplicaCount"] >= 1
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        assert set(trigger["metadata"]) <= KEDA_KAFKA_PARAMETERS
        assert trigger["metadata"]["allowIdleConsumers"] == "false"
        assert trigger["metadata"]["bootstrapServers"] == data["EQLSTREAM_KAFKA_BOOTSTRAP_SERVERS"]
    sequence = scaled["eqlstream-sequence"]
    assert sequence["maxReplicaCount"] <= int(data["EQLSTREAM_CANDIDATES_PARTITIONS"]) == 12
    assert sequence["triggers"][0]["metadata"]["consumerGroup"] == f"{data['EQLSTREAM_CONSUMER_GROUP']}-sequence"
    assert sequence["triggers"][0]["metadata"]["topic"] == data["EQLSTREAM_CANDIDATES_TOPIC"]
    ingest = scaled["eqlstream-ingest"]
    assert ingest["triggers"][0]["metadata"]["consumerGroup"] == data["EQLSTREAM_CONSUMER_GROUP"]
    assert ingest["triggers"][0]["metadata"]["topic"] == data["EQLSTREAM_INPUT_TOPICS"] == "winlogbeat"
    assert not manifests.of_kind("TriggerAuthentication"), "plaintext Kafka needs no credentials"


def test_scaled_objects_authenticate_like_the_pods(rendered: Callable[[Path | None], Rendered]) -> None:
    manifests = rendered(CI["sasl-tls"])
    (scaled,) = manifests.of_kind("ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert (trigger["metadata"]["sasl"], trigger["metadata"]["tls"]) == ("scram_sha512", "enable")
    assert "topic" in trigger["metadata"]
    auth = manifests.one("TriggerAuthentication")
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    refs = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    assert refs == {
        "password": ("eqlstream-kafka", "sasl-password"),
        "ca": ("eqlstream-kafka-tls", "ca.crt"),
        "cert": ("eqlstream-kafka-tls", "tls.crt"),
        "key": ("eqlstream-kafka-tls", "tls.key"),
        "keyPassword": ("eqlstream-kafka-tls", "tls-key-password"),
    }
    (username,) = auth["spec"]["env"]
    assert username["name"] == "EQLSTREAM_KAFKA_SASL_USERNAME"
    assert username["containerName"] == container(manifests.one("StatefulSet", "-sequence"))["name"]


def test_ingest_lag_over_every_topic_with_a_pattern() -> None:
    manifests = render("--set", "ingest.autoscaling.enabled=true", "--set", "config.inputTopicPattern=^beats-.*")
    (scaled,) = manifests.of_kind("ScaledObject")
    assert "topic" not in scaled["spec"]["triggers"][0]["metadata"]


# -- helm test ----------------------------------------------------------------------------------


class _Endpoints(BaseHTTPRequestHandler):
    """Answers like eqlstream's web server: ready or not, as the class attribute says."""

    ready = True

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        body, status = {
            "/livez": (b"ok", 200),
            "/readyz": (b"ready", 200) if self.ready else (b'{"reasons": ["no partitions"]}', 503),
            "/metrics": (b'eqlstream_build_info{version="0.1.0"} 1.0\n', 200),
        }.get(self.path, (b"not found", 404))
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_pod() -> Iterator[tuple[str, type[_Endpoints]]]:
    handler = type("Handler", (_Endpoints,), {"ready": True})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_helm_test_pod_checks_each_stage_and_fails_on_a_not_ready_pod(
    rendered: Callable[[Path | None], Rendered], fake_pod: tuple[str, type[_Endpoints]]
) -> None:
    manifests = rendered(CI["defaults"])
    (pod,) = manifests.of_kind("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (box,) = pod["spec"]["containers"]
    assert box["image"] == container(workloads(manifests)[0])["image"]
    interpreter, flag, script, *targets = box["command"]
    assert (interpreter, flag) == ("python", "-c")
    assert targets == [
        f"http://{sts['metadata']['name']}-0.{sts['spec']['serviceName']}.detection.svc:6066"
        for sts in workloads(manifests)
    ]
    base, handler = fake_pod
    passing = subprocess.run([sys.executable, "-c", script, base], capture_output=True, text=True, timeout=60)
    assert passing.returncode == 0, passing.stdout + passing.stderr
    handler.ready = False
    failing = subprocess.run([sys.executable, "-c", script, base], capture_output=True, text=True, timeout=60)
    assert failing.returncode == 1
    assert "no partitions" in failing.stdout
