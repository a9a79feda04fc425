"""deploy/k8s: valid for a pinned Kubernetes, and shaped as operating the broker needs.

Validation is kubernetes-validate's strict mode (unknown fields are errors) against the
schemas it ships for KUBERNETES_VERSION: no cluster and no network.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.manifests import (
    Document,
    k8s_documents,
    of_kind,
    pod_templates,
    secret_setting_names,
    setting_names,
)

# The oldest minor version the manifests promise to work on.
KUBERNETES_VERSION = "1.34.0"
LONG_RUNNING = {"misbroker-api", "misbroker-worker", "misbroker-beat"}


def containers(pod: Document) -> list[Document]:
    found: list[Document] = [*pod.get("initContainers", []), *pod["containers"]]
    return found


def deployments() -> dict[str, Document]:
    return {doc["metadata"]["name"]: doc for doc in of_kind("Deployment")}


def command_of(workload: Document) -> list[str]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    command: list[str] = container["command"]
    return command


@pytest.mark.parametrize(
    "document", k8s_documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_every_document_is_valid_for_the_pinned_kubernetes(document: Document) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_an_invalid_document_is_caught() -> None:
    """The validator is not a rubber stamp: a misspelt field fails."""
    (api,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "misbroker-api"]
    broken: dict[str, Any] = {**api, "spec": {**api["spec"], "replicaz": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_long_running_processes_are_there() -> None:
    assert set(deployments()) == LONG_RUNNING
    assert command_of(deployments()["misbroker-api"])[:3] == ["python", "-m", "broker.serve"]
    assert command_of(deployments()["misbroker-worker"])[:4] == [
        "celery",
        "-A",
        "broker.worker",
        "worker",
    ]


def test_every_long_running_container_has_readiness_and_liveness_probes() -> None:
    for name, workload in deployments().items():
        for container in containers(workload["spec"]["template"]["spec"]):
            assert "readinessProbe" in container, name
            assert "livenessProbe" in container, name
    (api,) = deployments()["misbroker-api"]["spec"]["template"]["spec"]["containers"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_every_container_has_resource_requests_and_limits() -> None:
    for workload, pod in pod_templates():
        for container in containers(pod):
            resources = container["resources"]
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert {"cpu", "memory"} <= set(resources["limits"]), where


def test_every_container_runs_as_non_root_on_a_read_only_root_filesystem() -> None:
    for workload, pod in pod_templates():
        pod_security = pod.get("securityContext", {})
        for container in containers(pod):
            where = f"{workload['metadata']['name']}/{container['name']}"
            security = {**pod_security, **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, where
            assert security.get("runAsUser", 0) != 0, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where


def test_secrets_come_from_secrets_and_nothing_else_is_a_literal_secret() -> None:
    secrets = secret_setting_names()
    known = setting_names()
    assert of_kind("Secret") == []  # created out of band, never committed
    for (config_map,) in [of_kind("ConfigMap")]:
        for name in config_map["data"]:
            assert name in known, f"{name} in the ConfigMap is not a setting"
            assert name not in secrets, f"{name} is a secret and sits in a ConfigMap"
    for workload, pod in pod_templates():
        for container in containers(pod):
            where = f"{workload['metadata']['name']}/{container['name']}"
            for source in container.get("envFrom", []):
                assert set(source) <= {"configMapRef", "secretRef"}, where
            for variable in container.get("env", []):
                name = variable["name"]
                assert name in known, f"{where}: {name} is not a setting"
                if name in secrets:
                    assert "value" not in variable, f"{where}: {name} is a literal"
                    assert "secretKeyRef" in variable["valueFrom"], f"{where}: {name}"
            given = {v["name"] for v in container.get("env", [])}
            # Each process gets the database, both Redis, the key and the bucket's keys.
            assert {
                "MISBROKER_DATABASE_URL",
                "MISBROKER_REDIS_URL",
                "MISBROKER_CELERY_BROKER_URL",
                "MISBROKER_KEK",
            } <= given, where


def test_the_cold_tier_is_the_bucket() -> None:
    (config_map,) = of_kind("ConfigMap")
    assert config_map["data"]["MISBROKER_BLOB_URL"].startswith("s3://")


def test_the_api_keeps_a_quorum_through_voluntary_disruptions() -> None:
    (budget,) = [
        pdb
        for pdb in of_kind("PodDisruptionBudget")
        if pdb["spec"]["selector"]["matchLabels"] == {"app": "misbroker-api"}
    ]
    api = deployments()["misbroker-api"]
    assert api["spec"]["template"]["metadata"]["labels"]["app"] == "misbroker-api"
    assert 1 <= budget["spec"]["minAvailable"] < api["spec"]["replicas"]


def test_exactly_one_beat() -> None:
    beats = [
        (workload, container)
        for workload, pod in pod_templates()
        for container in containers(pod)
        if "beat" in container.get("command", [])
        or "--beat" in container.get("command", [])
        or "-B" in container.get("command", [])
    ]
    assert len(beats) == 1
    ((workload, _),) = beats
    assert workload["kind"] == "Deployment"
    assert workload["spec"]["replicas"] == 1
    # A rolling update would run the new beat beside the old one for a while.
    assert workload["spec"]["strategy"]["type"] == "Recreate"


def test_tls_terminates_at_the_ingress() -> None:
    (ingress,) = of_kind("Ingress")
    (tls,) = ingress["spec"]["tls"]
    assert tls["secretName"]
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert hosts == set(tls["hosts"])
    (config_map,) = of_kind("ConfigMap")
    assert config_map["data"]["MISBROKER_HSTS"] == "true"
    assert config_map["data"]["MISBROKER_PUBLIC_URL"].startswith("https://")
