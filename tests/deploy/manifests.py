"""deploy/ as data: the Kubernetes documents, the compose file, and the settings they may name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from broker.admin.settings import AdminSettings
from broker.console.settings import ConsoleSettings
from broker.settings import BrokerSettings
from broker.webhooks.settings import WebhookSettings
from cache.settings import CacheSettings
from consent.settings import ConsentSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"

SETTINGS_CLASSES = (
    BrokerSettings,
    CacheSettings,
    ConsentSettings,
    ConsoleSettings,
    AdminSettings,
    WebhookSettings,
)

Document = dict[str, Any]


def k8s_documents() -> list[Document]:
    documents: list[Document] = []
    for path in sorted(K8S.glob("*.yaml")):
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


def of_kind(kind: str) -> list[Document]:
    return [doc for doc in k8s_documents() if doc["kind"] == kind]


def pod_templates() -> Iterator[tuple[Document, Document]]:
    """(workload, pod spec) of every Deployment, StatefulSet, DaemonSet and Job."""
    for doc in k8s_documents():
        if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield doc, doc["spec"]["template"]["spec"]


def compose() -> Document:
    loaded: Document = yaml.safe_load(COMPOSE.read_text())
    return loaded


def setting_names() -> set[str]:
    """Every environment variable a broker process reads as a setting."""
    names: set[str] = set()
    for settings in SETTINGS_CLASSES:
        prefix = str(settings.model_config.get("env_prefix", ""))
        names.update((prefix + field).upper() for field in settings.model_fields)
    return names


def secret_setting_names() -> set[str]:
    """The settings typed SecretStr: they may only come from a Secret."""
    names: set[str] = set()
    for settings in SETTINGS_CLASSES:
        prefix = str(settings.model_config.get("env_prefix", ""))
        for field, info in settings.model_fields.items():
            if "SecretStr" in str(info.annotation):
                names.add((prefix + field).upper())
    return names
